"""Stream v2 is specified precisely enough to reimplement in numpy (docs/stream.md).

`stream_v2.py` is that reimplementation; here it must reproduce reinit's f32 values bit for
bit: the library's golden values (crates/reinit-schemes/tests/determinism.rs) and the
Philox known answers. Only numpy.
"""
from __future__ import annotations

import numpy as np

import stream_v2 as s


def test_philox_known_answers():
    # Random123 kat_vectors, philox4x32 with 10 rounds
    got = s.philox(0, 0, 0, 0, (0, 0))
    assert [int(x) for x in got] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    got = s.philox(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, (0xA4093822, 0x299F31D0))
    assert [int(x) for x in got] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_sequential_draws_match_the_library_goldens():
    q = s.Sequential(s.digest(2, 42, "layer.weight", "he"))
    assert [q.u64() for _ in range(3)] == [
        15014661651682406220, 15949276213882210724, 17056551749346435789]
    assert [q.uniform() for _ in range(3)] == [
        0.8364293790118185, 0.6813508102592631, 0.8302563768237443]
    assert [q.normal() for _ in range(4)] == [
        -1.5051323175430298, 0.9805276989936829, -0.7550545334815979, -2.4043796062469482]


def test_bulk_fills_match_the_library_goldens():
    d = s.digest(2, 42, "layer.weight", "he")
    normal = s.fill(d, 1, "normal", 3 * s.CHUNK, std=1.0)
    assert normal[:4].tolist() == [
        0.7709770798683167, -1.2196093797683716, -1.151179552078247, 0.7005748152732849]
    assert normal[s.CHUNK + 5:s.CHUNK + 8].tolist() == [
        -0.6010944247245789, 1.1575236320495605, 1.6112401485443115]
    uniform = s.fill(d, 2, "uniform", 40, lo=-1.0, hi=2.0)
    assert uniform[:4].tolist() == [
        -0.587861450156197, 1.7362800093833357, 1.7079056878574193, 0.4331867378205061]
    truncated = s.fill(d, 3, "truncated_normal", s.CHUNK + 10, std=0.5)
    assert truncated[s.CHUNK:s.CHUNK + 4].tolist() == [
        -0.3825168013572693, 0.18707244098186493, 0.4091823101043701, 0.43661293387413025]


def test_the_normal_sequence_is_standard_normal():
    z = s.chunk_normals(s.digest(2, 1, "w", "he"), 1, 0, 1 << 15).astype(np.float64)
    n = len(z)
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert np.abs(z).max() < 6.67


def _weights_and_metadata(path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return weights, {p.key: p.value for p in m.metadata_props}


def test_reinit_he_weights_are_the_numpy_reimplementation_bit_for_bit(tmp_path):
    """The CLI's `--stream v2` He weights (gain 1: std = 1/√fan_in, f32 storage, i.i.d.
    draws in stored order) equal numpy's from docs/stream.md, every bit; v1 is another
    stream, and only v2 records itself in the metadata."""
    from conftest import fixture_path, run_reinit

    src = fixture_path("mlp_relu.onnx")
    outs = {}
    for stream in ("v1", "v2"):
        outs[stream] = tmp_path / f"{stream}.onnx"
        run_reinit([src, "--scheme", "he", "--gain", "1", "--seed", "7", "--stream", stream,
                    "-q", "-o", outs[stream]])
    got, meta = _weights_and_metadata(outs["v2"])
    assert meta["reinit.stream"] == "2"
    checked = 0
    for name in ("net.0.weight", "net.2.weight", "net.22.weight"):
        w = got[name]
        fan_in = w.shape[1]  # Gemm transB=1: [out, in]
        d = s.digest(2, 7, name, "he")
        want = s.fill(d, 1, "normal", w.size, std=1.0 / np.sqrt(float(fan_in)))
        want = want.astype(np.float32).reshape(w.shape)
        assert w.dtype == np.float32
        assert np.array_equal(w.view(np.uint32), want.view(np.uint32)), name
        checked += w.size
    assert checked == 48 * 64 + 48 * 48 + 10 * 48
    v1, meta1 = _weights_and_metadata(outs["v1"])
    assert "reinit.stream" not in meta1
    assert not np.array_equal(v1["net.0.weight"], got["net.0.weight"])


def test_an_unknown_stream_is_a_usage_error(tmp_path):
    from conftest import fixture_path, run_reinit

    cp = run_reinit([fixture_path("mlp_relu.onnx"), "--scheme", "he", "--stream", "v3",
                     "-q", "-o", tmp_path / "o.onnx"], check=False)
    assert cp.returncode == 2
    assert "--stream" in cp.stderr and "v3" in cp.stderr
