"""Issue 5 acceptance: the `reinit` binary on every fixture, checked with onnx, onnxruntime and numpy.

Needs the binary (`cargo build -p reinit`, or REINIT_BIN); every test skips without it.
The fixture x scheme matrix runs one reinit process per case; all processes are started up front on a
small thread pool (`_matrix_results`), so the matrix costs seconds, not minutes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import (diff_initializers, find_reinit_bin, fixture_path, load_manifest, run_ort, run_reinit,
                      tensor_arrays)

MANIFEST = load_manifest()
FIXTURES = MANIFEST["fixtures"]
NAMES = sorted(FIXTURES)


def _schemes_of_the_binary():
    """Every scheme the binary's table holds (and auto): a new scheme joins the matrix by
    itself. Empty without a binary (the tests that use it then skip)."""
    exe = find_reinit_bin()
    if exe is None:
        return []
    out = subprocess.run([str(exe), "schemes", "--json"], capture_output=True, text=True, check=True).stdout
    return [e["name"] for e in json.loads(out)]


SCHEMES = _schemes_of_the_binary()
REINIT_KEYS = {"reinit.version", "reinit.scheme", "reinit.seed", "reinit.options"}


def _files_of(name):
    return [name] + list(FIXTURES[name].get("external_data_files", []))


def _copy_fixture(name, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in _files_of(name):
        shutil.copyfile(fixture_path(f), dest / f)
    return dest / name


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _env(**extra):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --------------------------------------------------------------------------- the matrix

@lru_cache(maxsize=1)
def _matrix_results(root: str) -> dict:
    """Runs reinit once per (fixture, scheme), in parallel; returns {(fixture, scheme): (rc, stdout, stderr, out)}."""
    exe = find_reinit_bin()
    root = Path(root)

    def one(case):
        name, scheme = case
        d = root / f"{Path(name).stem}__{scheme}"
        src = _copy_fixture(name, d / "in")
        out = d / "out" / f"model.{scheme}.onnx"
        out.parent.mkdir(parents=True)
        cp = subprocess.run([str(exe), str(src), "--scheme", scheme, "--seed", "7", "--json", "-q",
                             "-o", str(out)], capture_output=True, text=True, timeout=120)
        return case, (cp.returncode, cp.stdout, cp.stderr, out)

    cases = [(n, s) for n in NAMES for s in SCHEMES]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(pool.map(one, cases))


@pytest.fixture(scope="session")
def matrix(reinit_bin, tmp_path_factory):
    return _matrix_results(str(tmp_path_factory.mktemp("matrix")))


def _key_name(key: str) -> str:
    """The tensor name in a diff_initializers key ('a/b/W' -> 'W', 'Constant:x/y' -> 'y')."""
    if key.startswith("Constant:"):
        key = key[len("Constant:"):]
    return key.rsplit("/", 1)[-1]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", NAMES)
def test_every_fixture_every_scheme(matrix, name, scheme):
    rc, stdout, stderr, out = matrix[(name, scheme)]
    assert rc == 0, f"reinit {name} --scheme {scheme} exited {rc}:\n{stderr}"
    report = json.loads(stdout)
    assert report["scheme"] == scheme and report["seed"] == 7 and not report["dry_run"]
    src = fixture_path(name)
    e = FIXTURES[name]
    # 1. checker (where the input passes it)
    if e["checker"]:
        onnx.checker.check_model(str(out), full_check=True)
    # 2. only the planned weights changed, plus reinit's metadata
    changed = diff_initializers(src, out)
    planned = {w["name"] for w in report["weights"]}
    # norm parameters reset (`auto` resets norms) are reported in `norms_reset`
    planned |= {t for n in report.get("norms_reset", []) for t in n["tensors"]}
    for key in changed:
        # a Constant node's tensor is reported under the node's output name
        assert _key_name(key) in planned, f"{key} changed but is not in the report ({sorted(planned)})"
    assert changed or not any(w["after"] != w["before"] for w in report["weights"]), "report says changed, file equal"
    # every weight reported with a density change really changed (the report describes the file)
    for w in report["weights"]:
        if w["before"]["density"] != w["after"]["density"] or abs(w["before"]["std"] - w["after"]["std"]) > 1e-3:
            assert any(_key_name(k) == w["name"] for k in changed), f"{w['name']} reported changed, file equal"
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert REINIT_KEYS <= set(meta), meta
    assert meta["reinit.scheme"] == scheme and meta["reinit.seed"] == "7"
    json.loads(meta["reinit.options"])
    # 3. onnxruntime: same output names and shapes
    if e["ort"]:
        a = run_ort(src, seed=0)
        b = run_ort(out, seed=0)
        assert list(a) == list(b)
        for k in a:
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k


def test_the_catalog_lists_every_scheme_with_typed_parameters(reinit_bin):
    listed = json.loads(run_reinit(["schemes", "--json"]).stdout)
    assert "auto" in SCHEMES and "random-mask" in SCHEMES
    for entry in listed:
        for p in entry["params"]:
            assert p["type"] in ("number", "bool", "choice"), (entry["name"], p)
            assert p["help"] and p["default"], (entry["name"], p)


# --------------------------------------------------------------------------- determinism

DET_FIXTURES = ["tiny_resnet_bn.onnx", "tiny_resnet_bn_external.onnx", "tiny_transformer.onnx",
                "mlp_tanh_bf16.onnx", "helper_if_subgraph.onnx"]


@pytest.mark.parametrize("name", DET_FIXTURES)
@pytest.mark.parametrize("scheme", ["he", "eoi", "orthogonal", "auto"])
def test_same_seed_byte_identical_across_thread_counts(reinit_bin, tmp_path, name, scheme):
    src = _copy_fixture(name, tmp_path / "in")
    hashes = []
    for threads in (1, 2, 2):
        out = tmp_path / f"run{len(hashes)}" / "out.onnx"  # same name: the data file name is recorded
        out.parent.mkdir()
        run_reinit([src, "--scheme", scheme, "--seed", "123", "-q", "-o", out], env=_env(RAYON_NUM_THREADS=threads))
        h = _sha(out)
        if FIXTURES[name].get("external_data_files"):
            h += _sha(str(out) + ".data")
        hashes.append(h)
    assert len(set(hashes)) == 1, hashes


@pytest.mark.parametrize("scheme", ["he", "eoi", "orthogonal", "xavier"])
def test_different_seeds_give_different_weights(reinit_bin, tmp_path, scheme):
    src = fixture_path("mlp_tanh.onnx")
    outs = []
    for seed in (1, 2):
        out = tmp_path / f"s{seed}.onnx"
        run_reinit([src, "--scheme", scheme, "--seed", seed, "-q", "-o", out])
        outs.append(out)
    a, b = tensor_arrays(outs[0]), tensor_arrays(outs[1])
    weights = [k for k in a if k.endswith(".weight")]
    assert weights
    for k in weights:
        assert a[k].tobytes() != b[k].tobytes(), k


# --------------------------------------------------------------------------- default output, dry run, json

def test_default_output_name_verbatim(reinit_bin, tmp_path):
    shutil.copyfile(fixture_path("tiny_resnet_bn.onnx"), tmp_path / "model.onnx")
    cp = subprocess.run([str(reinit_bin), "model.onnx", "--scheme", "eoi"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.eoi.onnx", "model.onnx"]
    onnx.checker.check_model(str(tmp_path / "model.eoi.onnx"), full_check=True)
    # the seed was drawn at random and recorded
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.eoi.onnx")).metadata_props}
    assert meta["reinit.scheme"] == "eoi" and meta["reinit.seed"].isdigit()
    assert "model.onnx" in cp.stderr  # human summary on stderr
    assert cp.stdout == ""


def test_dry_run_writes_nothing(reinit_bin, tmp_path):
    src = _copy_fixture("tiny_resnet_bn_external.onnx", tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    cp = run_reinit([src, "--scheme", "he", "--dry-run", "--mask-out", tmp_path / "m.safetensors"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert "conv1.weight" in cp.stderr  # the plan table
    cp = run_reinit([src, "--scheme", "he", "--dry-run", "-o", tmp_path / "x.onnx", "--json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert json.loads(cp.stdout)["dry_run"] is True


@pytest.mark.parametrize("name", ["tiny_resnet_bn.onnx", "tiny_transformer_tied_nofold.onnx",
                                  "helper_if_subgraph.onnx", "helper_constant_node.onnx", "torch_transformer.onnx"])
def test_json_lists_every_planned_weight(reinit_bin, name):
    cp = run_reinit([fixture_path(name), "--scheme", "he", "--seed", "1", "--dry-run", "--json"])
    report = json.loads(cp.stdout)  # stdout is exactly one JSON document
    listed = {w["name"] for w in report["weights"]}
    # every layer weight the manifest knows is either planned or kept with a reason
    kept = {k["name"] for k in report["kept"]}
    for layer in FIXTURES[name]["layers"]:
        assert layer["weight"] in listed | kept, (layer["weight"], listed, kept)
    for w in report["weights"]:
        for field in ("name", "node", "kind", "role", "shape", "dtype", "scheme", "params", "reason",
                      "before", "after"):
            assert field in w, (field, w)
        for s in ("before", "after"):
            assert set(w[s]) == {"mean", "std", "density"}
    # the plan is the same whether or not we write
    out = run_reinit([fixture_path(name), "--scheme", "he", "--seed", "1", "--json", "-o",
                      Path(os.environ.get("TMPDIR", "/tmp")) / f"reinit-json-{os.getpid()}.onnx", "--force"])
    written = json.loads(out.stdout)
    assert [w["name"] for w in written["weights"]] == [w["name"] for w in report["weights"]]
    assert [w["after"] for w in written["weights"]] == [w["after"] for w in report["weights"]]
    os.unlink(written["output"])


# --------------------------------------------------------------------------- exit codes

@pytest.mark.parametrize("args, needle", [
    (["--scheme", "nope"], "unknown scheme"),
    (["--scheme", "eoi", "--density", "2"], "density"),
    (["--scheme", "eoi", "--density", "0"], "density"),
    (["--scheme", "eoi", "--sparsity-distribution", "zipf"], "zipf"),
    (["--scheme", "idinit", "--tau", "abc"], "tau"),
    (["--scheme", "he", "--only", "(unclosed"], "--only"),
    (["--scheme", "he", "--fallback", "nope"], "nope"),
    ([], "--scheme"),
])
def test_usage_errors_exit_2(reinit_bin, tmp_path, args, needle):
    cp = run_reinit([fixture_path("mlp_tanh.onnx"), *args, "-o", tmp_path / "o.onnx"], check=False)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert needle in cp.stderr, cp.stderr
    assert "panicked" not in cp.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_unknown_scheme_lists_the_known_ones(reinit_bin, tmp_path):
    cp = run_reinit([fixture_path("mlp_tanh.onnx"), "--scheme", "orthgonal", "-o", tmp_path / "o.onnx"],
                    check=False)
    assert cp.returncode == 2 and "orthogonal" in cp.stderr and "eoi" in cp.stderr


@pytest.mark.parametrize("make", ["missing", "garbage", "empty", "directory_file", "truncated"])
def test_unreadable_input_exits_3(reinit_bin, tmp_path, make):
    p = tmp_path / "bad.onnx"
    if make == "garbage":
        p.write_bytes(b"\xff" * 100)
    elif make == "empty":
        p.write_bytes(b"")
    elif make == "truncated":
        p.write_bytes(fixture_path("mlp_tanh.onnx").read_bytes()[:5000])
    elif make == "directory_file":
        p = tmp_path / "empty_dir"
        p.mkdir()
        (p / "notes.txt").write_text("x")
    cp = run_reinit([p, "--scheme", "he", "-o", tmp_path / "o.onnx"], check=False)
    expected = 2 if make == "directory_file" else 3  # a directory without .onnx files is a usage error
    assert cp.returncode == expected, (cp.returncode, cp.stderr)
    assert "bad.onnx" in cp.stderr or make == "directory_file"
    assert not (tmp_path / "o.onnx").exists()
    cp = run_reinit(["inspect", p], check=False)
    assert cp.returncode in (2, 3) and "panicked" not in cp.stderr


def _external_model(tmp_path: Path, location: str, extra=None) -> Path:
    """tiny_resnet_bn_external.onnx with every location rewritten (and extra entries added)."""
    m = onnx.load(str(fixture_path("tiny_resnet_bn_external.onnx")), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
        for k, v in (extra or {}).items():
            t.external_data.add(key=k, value=v)
    out = tmp_path / "model" / "evil.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "hardlink", "unknown_key", "short_file",
                                  "huge_length", "negative_offset"])
def test_unsafe_external_data_exits_4(reinit_bin, tmp_path, case):
    data = fixture_path("tiny_resnet_bn_external.onnx.data")
    shutil.copyfile(data, tmp_path / "outside.data")
    extra = None
    if case == "dotdot":
        model = _external_model(tmp_path, "../outside.data")
    elif case == "absolute":
        model = _external_model(tmp_path, str(tmp_path / "outside.data"))
    elif case == "symlink":
        model = _external_model(tmp_path, "link.data")
        os.symlink(tmp_path / "outside.data", model.parent / "link.data")
    elif case == "hardlink":
        model = _external_model(tmp_path, "hard.data")
        os.link(tmp_path / "outside.data", model.parent / "hard.data")
    elif case == "short_file":
        model = _external_model(tmp_path, "short.data")
        (model.parent / "short.data").write_bytes(data.read_bytes()[:1000])
    else:
        extra = {"unknown_key": {"sneaky": "1"}, "huge_length": {}, "negative_offset": {}}[case]
        model = _external_model(tmp_path, "ok.data", extra)
        shutil.copyfile(data, model.parent / "ok.data")
        if case in ("huge_length", "negative_offset"):
            m = onnx.load(str(model), load_external_data=False)
            t = m.graph.initializer[0]
            for e in t.external_data:
                if case == "huge_length" and e.key == "length":
                    e.value = str(1 << 62)
                if case == "negative_offset" and e.key == "offset":
                    e.value = "-4096"
            onnx.save(m, str(model))
    before = {p: _sha(p) for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}
    out = tmp_path / "out.onnx"
    cp = run_reinit([model, "--scheme", "he", "--seed", "1", "-o", out], check=False)
    assert cp.returncode == 4, (case, cp.returncode, cp.stderr)
    assert "unsafe external data" in cp.stderr and "'" in cp.stderr, cp.stderr  # names tensor and path
    assert not out.exists() and not Path(str(out) + ".data").exists()
    cp = run_reinit(["inspect", model], check=False)
    assert cp.returncode == 4, (case, cp.returncode, cp.stderr)
    after = {p: _sha(p) for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}
    assert before == after


def test_existing_output_without_force_exits_5(reinit_bin, tmp_path):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"precious")
    cp = run_reinit([fixture_path("mlp_tanh.onnx"), "--scheme", "he", "-o", out], check=False)
    assert cp.returncode == 5, (cp.returncode, cp.stderr)
    assert "force" in cp.stderr
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.onnx"]
    run_reinit([fixture_path("mlp_tanh.onnx"), "--scheme", "he", "-o", out, "--force"])
    onnx.checker.check_model(str(out), full_check=True)


def test_output_over_input_needs_in_place(reinit_bin, tmp_path):
    src = _copy_fixture("mlp_tanh.onnx", tmp_path)
    h = _sha(src)
    cp = run_reinit([src, "--scheme", "he", "-o", src, "--force"], check=False)
    assert cp.returncode == 5 and _sha(src) == h, cp.stderr
    run_reinit([src, "--scheme", "he", "--seed", "3", "--in-place"])
    assert _sha(src) != h
    onnx.checker.check_model(str(src), full_check=True)


# --------------------------------------------------------------------------- directory mode

def _variant(src: Path, dest: Path):
    """A second file sharing every weight with src, in the same context: an extra Identity on the output."""
    m = onnx.load(str(src))
    m.graph.name = "decoder"
    out = m.graph.output[0]
    old = out.name
    for n in m.graph.node:
        n.output[:] = [o if o != old else old + "_pre" for o in n.output]
    m.graph.node.append(onnx.helper.make_node("Identity", [old + "_pre"], [old], name="extra_identity"))
    onnx.save(m, str(dest))


def test_directory_mode_shares_values_by_name_and_shape(reinit_bin, tmp_path):
    d = tmp_path / "export"
    d.mkdir()
    shutil.copyfile(fixture_path("mlp_tanh.onnx"), d / "encoder.onnx")
    _variant(fixture_path("mlp_tanh.onnx"), d / "decoder.onnx")
    cp = run_reinit([d, "--scheme", "he", "--seed", "5", "--json", "-q"])
    report = json.loads(cp.stdout)
    assert len(report["files"]) == 2
    out = tmp_path / "export.he"
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx"]
    a, b = tensor_arrays(out / "encoder.onnx"), tensor_arrays(out / "decoder.onnx")
    shared = [k for k in a if k in b and a[k].shape == b[k].shape and k.endswith("weight")]
    assert len(shared) == 12
    for k in shared:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    orig = tensor_arrays(fixture_path("mlp_tanh.onnx"))
    assert all(orig[k].tobytes() != a[k].tobytes() for k in shared)
    onnx.checker.check_model(str(out / "decoder.onnx"), full_check=True)


def test_directory_mode_same_stream_for_same_name_in_other_context(reinit_bin, tmp_path):
    """Same name and shape but a different activation after the layer (tanh vs relu): the values come from
    the same stream, so they differ only by the activation gain (He: 5/3 vs sqrt 2)."""
    d = tmp_path / "export"
    d.mkdir()
    shutil.copyfile(fixture_path("mlp_tanh.onnx"), d / "a.onnx")
    shutil.copyfile(fixture_path("mlp_relu.onnx"), d / "b.onnx")
    run_reinit([d, "--scheme", "he", "--seed", "5", "-q", "-o", tmp_path / "out"])
    a, b = tensor_arrays(tmp_path / "out" / "a.onnx"), tensor_arrays(tmp_path / "out" / "b.onnx")
    for k in [k for k in a if k.endswith("weight")]:
        ratio = a[k].astype(np.float64) / b[k].astype(np.float64)
        want = 1.0 if k == "net.22.weight" else (5 / 3) / np.sqrt(2)
        np.testing.assert_allclose(ratio, want, rtol=1e-5, err_msg=k)


# --------------------------------------------------------------------------- scheme properties in numpy

def _linear_weights(report):
    return [w for w in report["weights"] if w["kind"] == "linear"]


@pytest.mark.parametrize("name", ["mlp_tanh.onnx", "mlp_relu.onnx", "helper_gemm_transb1.onnx"])
def test_eoi_density_linear(reinit_bin, tmp_path, name):
    out = tmp_path / "o.onnx"
    cp = run_reinit([fixture_path(name), "--scheme", "eoi", "--density", "0.1", "--seed", "3", "--json", "-q",
                     "-o", out])
    report = json.loads(cp.stdout)
    arrays = tensor_arrays(out)
    lin = _linear_weights(report)
    assert lin
    for w in lin:
        a = arrays[w["name"]]
        if min(a.shape) < 8:
            continue  # too small for a density target (EOI needs at least one rotation per row)
        density = np.count_nonzero(a) / a.size
        assert abs(density - 0.1) <= 0.01, (w["name"], a.shape, density)
        assert abs(w["after"]["density"] - density) < 1e-9


def _eoi_masks(tmp_path, tag, *extra):
    out = tmp_path / f"{tag}.onnx"
    masks = tmp_path / f"{tag}.safetensors"
    run_reinit([fixture_path("tiny_resnet_bn.onnx"), "--scheme", "eoi", "--density", "0.1", "--seed", "3", "-q",
                "-o", out, "--mask-out", masks, *extra])
    header, data = _read_safetensors(masks)
    arrays = tensor_arrays(out)
    assert header, "no masks written"
    result = {}
    for name, info in header.items():
        assert info["dtype"] == "U8", info
        start, end = info["data_offsets"]
        mask = np.frombuffer(data[start:end], dtype=np.uint8).reshape(info["shape"])
        assert set(np.unique(mask)) <= {0, 1}
        w = arrays[name]
        assert list(w.shape) == info["shape"], name
        result[name] = (mask.astype(bool), w)
    return result


def test_eoi_mask_out_is_the_reference_trainable_mask(reinit_bin, tmp_path):
    # Issue 15 item 1: every k×k conv mask at density 0.1 ± 1/numel (the EOI
    # reference's unfreeze_zeros), covering the written non-zeros; linear masks
    # are the non-zeros.
    convs = 0
    for name, (mask, w) in _eoi_masks(tmp_path, "trainable").items():
        assert not np.any((w != 0) & ~mask), name
        if w.ndim == 4 and w.shape[2] * w.shape[3] > 1:
            convs += 1
            assert abs(mask.mean() - 0.1) <= 1.0 / mask.size + 1e-12, (name, mask.mean())
        else:
            np.testing.assert_array_equal(mask, w != 0, err_msg=name)
    assert convs >= 4


def test_eoi_mask_mode_support_is_the_nonzero_pattern(reinit_bin, tmp_path):
    for name, (mask, w) in _eoi_masks(tmp_path, "support", "--mask-mode", "support").items():
        np.testing.assert_array_equal(mask, w != 0, err_msg=name)


@pytest.mark.parametrize("dist", ["uniform", "erk"])
def test_random_mask_exact_density_and_mask_out_is_the_zero_pattern(reinit_bin, tmp_path, dist):
    """random-mask (issue 15 item 8): every layer keeps round(d·numel) weights (± one), the
    exported mask is exactly the zero pattern in the stored layout, and one seed gives one file."""
    out, again = tmp_path / "o.onnx", tmp_path / "again.onnx"
    masks = tmp_path / "masks.safetensors"
    args = [fixture_path("tiny_resnet_bn.onnx"), "--scheme", "random-mask", "--density", "0.2",
            "--sparsity-distribution", dist, "--seed", "3", "-q", "--json"]
    report = json.loads(run_reinit(args + ["-o", out, "--mask-out", masks]).stdout)
    run_reinit(args + ["-o", again])
    assert out.read_bytes() == again.read_bytes()
    header, data = _read_safetensors(masks)
    arrays = tensor_arrays(out)
    planned = [w for w in report["weights"] if w.get("kind") != "bias"]
    assert header and len(header) == len(planned)
    for name, info in header.items():
        start, end = info["data_offsets"]
        mask = np.frombuffer(data[start:end], dtype=np.uint8).reshape(info["shape"]).astype(bool)
        w = arrays[name]
        np.testing.assert_array_equal(mask, w != 0, err_msg=name)
        if dist == "uniform":
            assert abs(mask.sum() - 0.2 * mask.size) <= 1, (name, mask.sum(), mask.size)


def _read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    assert end == len(data), "safetensors data length does not match the header"
    return header, data


@pytest.mark.parametrize("gain", [None, "1.5"])
def test_orthogonal_rows_are_orthonormal_times_gain(reinit_bin, tmp_path, gain):
    out = tmp_path / "o.onnx"
    args = [fixture_path("mlp_tanh.onnx"), "--scheme", "orthogonal", "--seed", "9", "--json", "-q", "-o", out]
    if gain:
        args += ["--gain", gain]
    report = json.loads(run_reinit(args).stdout)
    arrays = tensor_arrays(out)
    lin = _linear_weights(report)
    assert len(lin) == 12
    for w in lin:
        a = arrays[w["name"]].astype(np.float64)  # Gemm transB=1: [out, in]
        # default gain: the activation after the layer (tanh 5/3; none after the classifier: 1)
        g = float(gain) if gain else (1.0 if w["name"] == "net.22.weight" else 5 / 3)
        if a.shape[0] <= a.shape[1]:
            gram, n = a @ a.T, a.shape[0]
        else:
            gram, n = a.T @ a, a.shape[1]
        np.testing.assert_allclose(gram, g * g * np.eye(n), atol=1e-5 * max(1.0, g * g), err_msg=w["name"])

