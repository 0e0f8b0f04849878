"""Interop checks on the committed fixtures (onnx, onnxruntime, numpy; no torch)."""
from __future__ import annotations

import struct

import numpy as np
import onnx
import pytest

from conftest import (diff_initializers, fixture_path, fixtures_dir, load_manifest, random_inputs, run_ort,
                      tensor_arrays)

MANIFEST = load_manifest()
FIXTURES = MANIFEST["fixtures"]
NAMES = sorted(FIXTURES)
MB = 1024 * 1024


def _files_of(name):
    e = FIXTURES[name]
    return [name] + list(e.get("external_data_files", []))


def test_manifest_lists_every_onnx_file():
    on_disk = {p.name for p in fixtures_dir().glob("*.onnx")}
    assert on_disk == set(FIXTURES), on_disk ^ set(FIXTURES)
    for name in NAMES:
        for f in _files_of(name):
            assert fixture_path(f).is_file(), f


def test_size_budget():
    total = 0
    for name in NAMES:
        size = sum(fixture_path(f).stat().st_size for f in _files_of(name))
        assert size < 2 * MB, f"{name}: {size} bytes"
    for p in fixtures_dir().iterdir():
        if p.is_file():
            total += p.stat().st_size
    assert total < 20 * MB, total


@pytest.mark.parametrize("name", [n for n in NAMES if FIXTURES[n]["checker"]])
def test_checker_full(name):
    onnx.checker.check_model(str(fixture_path(name)), full_check=True)


@pytest.mark.parametrize("name", [n for n in NAMES if FIXTURES[n]["ort"]])
def test_onnxruntime_output_shapes(name):
    e = FIXTURES[name]
    outs = run_ort(fixture_path(name), seed=0)
    assert [o["name"] for o in e["outputs"]] == list(outs)
    for spec, (oname, val) in zip(e["outputs"], outs.items()):
        assert list(val.shape) == spec["shape"], (oname, val.shape, spec["shape"])
        assert np.isfinite(val.astype(np.float64)).all()
    # deterministic inputs -> deterministic outputs
    again = run_ort(fixture_path(name), seed=0)
    for k in outs:
        np.testing.assert_array_equal(outs[k], again[k])


@pytest.mark.parametrize("name", NAMES)
def test_manifest_io_matches_model(name):
    e = FIXTURES[name]
    m = onnx.load(str(fixture_path(name)), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    assert [i.name for i in m.graph.input if i.name not in inits] == [i["name"] for i in e["inputs"]]
    assert [o.name for o in m.graph.output] == [o["name"] for o in e["outputs"]]
    assert m.ir_version == e["ir_version"]
    feeds = random_inputs(fixture_path(name)) if e["ort"] else {}
    for spec in e["inputs"]:
        if spec["name"] in feeds:
            assert list(feeds[spec["name"]].shape) == spec["shape"]


def _torch_fans(shape):
    """Same formula as torch.nn.init._calculate_fan_in_and_fan_out."""
    rf = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * rf, shape[0] * rf


@pytest.mark.parametrize("name", NAMES)
def test_manifest_layers_consistent(name):
    e = FIXTURES[name]
    arrays = tensor_arrays(fixture_path(name))
    plain = {k.split("/")[-1].replace("Constant:", ""): v for k, v in arrays.items()}
    assert e["num_weight_layers"] == len(e["layers"])
    for layer in e["layers"]:
        w = layer["weight"]
        assert w in plain, f"{name}: weight {w} not found"
        assert list(plain[w].shape) == layer["stored_shape"], (w, plain[w].shape)
        ts = layer["torch_shape"]
        if layer["stored_as"] == "transposed":
            assert list(reversed(ts)) == layer["stored_shape"]
        else:
            assert ts == layer["stored_shape"]
        assert (layer["fan_in"], layer["fan_out"]) == _torch_fans(ts), layer
        if layer["bias"] is not None:
            assert layer["bias"] in plain
        assert layer["activation"] == layer["activation"].lower()
    assert e["num_residual_blocks"] == len(e["residual_blocks"])
    weights = {l["weight"] for l in e["layers"]}
    for b in e["residual_blocks"]:
        assert b["skip"] in ("identity", "projection")
        assert (b["skip"] == "projection") == bool(b["shortcut_weights"])
        assert len(b["branch_weights"]) == b["num_branch_layers"]
        assert set(b["branch_weights"]) <= weights and set(b["shortcut_weights"]) <= weights


def test_expected_structure_counts():
    f = FIXTURES
    for v in ("tiny_resnet_fused.onnx", "tiny_resnet_bn.onnx", "tiny_resnet_dynamo.onnx",
              "tiny_resnet_bn_external.onnx", "tiny_resnet_fused_fp16.onnx"):
        blocks = f[v]["residual_blocks"]
        assert [b["skip"] for b in blocks] == ["identity", "projection", "identity"], v
        assert all(b["num_branch_layers"] == 2 for b in blocks)
        assert sum(l["kind"] == "conv" for l in f[v]["layers"]) == 8
    for v in ("tiny_transformer.onnx", "tiny_transformer_nofold.onnx", "torch_transformer.onnx"):
        assert f[v]["num_residual_blocks"] == 4  # 2 per layer, 2 layers
    for v in ("mlp_relu.onnx", "mlp_tanh.onnx"):
        acts = [l["activation"] for l in f[v]["layers"]]
        assert f[v]["num_residual_blocks"] == 0
        assert acts[-1] == "none" and set(acts[:-1]) == {v[4:8]}
    # fused and kept exports describe the same blocks
    for base in ("tiny_resnet", "tiny_mobilenetv2"):
        a, b = f[f"{base}_fused.onnx"], f[f"{base}_bn.onnx"]
        strip = lambda e: [(x["skip"], x["num_branch_layers"], x["branch_roles"]) for x in e["residual_blocks"]]
        assert strip(a) == strip(b)
        assert [(l["param"], l["fan_in"], l["fan_out"], l["activation"]) for l in a["layers"]] == \
               [(l["param"], l["fan_in"], l["fan_out"], l["activation"]) for l in b["layers"]]


def test_bn_fused_vs_kept():
    for name, e in FIXTURES.items():
        m = onnx.load(str(fixture_path(name)), load_external_data=False)
        ops = {n.op_type for n in m.graph.node}
        bn = e["producer"]["bn"]
        if bn == "kept":
            assert "BatchNormalization" in ops, name
        elif bn == "fused" and not name.startswith("conv_transpose2d"):
            assert "BatchNormalization" not in ops, name


def test_dtypes():
    for name, e in FIXTURES.items():
        dtype = e["producer"]["dtype"]
        m = onnx.load(str(fixture_path(name)), load_external_data=False)
        want = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16,
                "bfloat16": onnx.TensorProto.BFLOAT16, "float64": onnx.TensorProto.DOUBLE}[dtype]
        types = {t.data_type for t in m.graph.initializer if t.name in {l["weight"] for l in e["layers"]}}
        assert types <= {want}, (name, types)


def test_storage_fields():
    def field(name, tensor):
        m = onnx.load(str(fixture_path(name)), load_external_data=False)
        t = [t for t in m.graph.initializer if t.name == tensor][0]
        return t
    assert len(field("helper_float_data.onnx", "W1").float_data) == 8 * 16
    t = field("helper_fp16_int32_data.onnx", "W1")
    assert t.data_type == onnx.TensorProto.FLOAT16 and len(t.int32_data) == 128 and not t.raw_data
    t = field("helper_bf16_int32_data.onnx", "W1")
    assert t.data_type == onnx.TensorProto.BFLOAT16 and len(t.int32_data) == 128 and not t.raw_data
    assert len(field("helper_float64_double_data.onnx", "W1").double_data) == 128
    t = field("tiny_resnet_bn_external.onnx", "conv1.weight")
    assert t.data_location == onnx.TensorProto.EXTERNAL
    assert {e.key: e.value for e in t.external_data}["location"] == "tiny_resnet_bn_external.onnx.data"


def test_external_copy_equals_embedded():
    assert diff_initializers(fixture_path("tiny_resnet_bn.onnx"), fixture_path("tiny_resnet_bn_external.onnx"),
                             check_storage=False) == set()
    a = run_ort(fixture_path("tiny_resnet_bn.onnx"))
    b = run_ort(fixture_path("tiny_resnet_bn_external.onnx"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_unknown_fields_present():
    for name, e in FIXTURES.items():
        for uf in e.get("unknown_fields", []):
            data = fixture_path(name).read_bytes()
            assert bytes.fromhex(uf["bytes_hex"]) in data, (name, uf)
            # protobuf keeps unknown fields through parse + serialize
            m = onnx.ModelProto()
            m.ParseFromString(data)
            assert bytes.fromhex(uf["bytes_hex"]) in m.SerializeToString()


def test_diff_initializers_detects_one_change(tmp_path):
    src = fixture_path("helper_if_subgraph.onnx")
    m = onnx.load(str(src))
    then_g = [a.g for a in m.graph.node[0].attribute if a.name == "then_branch"][0]
    t = then_g.initializer[0]
    arr = onnx.numpy_helper.to_array(t).copy()
    arr[0, 0] += 1.0
    t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
    out = tmp_path / "edited.onnx"
    onnx.save(m, str(out))
    assert diff_initializers(src, out) == {"if_node/then_branch/W_then"}
    assert diff_initializers(src, src) == set()
    # a structural change must be caught
    m.graph.node[1].op_type = "Sigmoid"
    onnx.save(m, str(out))
    with pytest.raises(AssertionError):
        diff_initializers(src, out)


def test_digits_bin():
    data = fixture_path("digits.bin").read_bytes()
    assert data[:8] == b"DIGITS01"
    (count,) = struct.unpack("<I", data[8:12])
    assert count == 1797
    assert len(data) == 12 + count * 65
    rec = np.frombuffer(data[12:], dtype=np.uint8).reshape(count, 65)
    pixels, labels = rec[:, :64], rec[:, 64]
    assert pixels.max() == 16 and pixels.min() == 0
    assert set(labels.tolist()) == set(range(10))
    info = MANIFEST["data"]["digits.bin"]
    assert info["count"] == count
    assert np.bincount(labels, minlength=10).tolist() == info["class_counts"]


def test_digits_runs_through_mlp():
    data = fixture_path("digits.bin").read_bytes()
    rec = np.frombuffer(data[12:], dtype=np.uint8).reshape(-1, 65)
    x = (rec[:1, :64].astype(np.float32) / 16.0)
    out = run_ort(fixture_path("mlp_relu.onnx"), feeds={"input": x})
    assert out["logits"].shape == (1, 10)


def test_tied_weights():
    # no folding: one tensor feeds the embedding Gather and the head MatMul
    e = FIXTURES["tiny_transformer_tied_nofold.onnx"]
    assert e["shared_weights"] == [{"weight": "tok.weight", "nodes": ["/tok/Gather", "/head/MatMul"]}]
    assert e["layers"][-1]["weight"] == "tok.weight" and e["layers"][-1]["via"] == ["Transpose"]
    # constant folding broke the tie: a transposed duplicate with the same values
    e = FIXTURES["tiny_transformer_tied.onnx"]
    assert e["shared_weights"] == []
    head = e["layers"][-1]
    arrays = tensor_arrays(fixture_path("tiny_transformer_tied.onnx"))
    np.testing.assert_array_equal(arrays[head["weight"]].T, arrays["tok.weight"])
    assert FIXTURES["helper_shared_weight.onnx"]["shared_weights"][0]["nodes"] == ["matmul1", "matmul2"]


def test_diff_initializers_catches_dropped_unknown_fields(tmp_path):
    src = fixture_path("helper_unknown_field_tensor.onnx")
    m = onnx.load(str(src))
    m.DiscardUnknownFields()
    out = tmp_path / "dropped.onnx"
    onnx.save(m, str(out))
    with pytest.raises(AssertionError):
        diff_initializers(src, out)


def test_diff_initializers_metadata(tmp_path):
    src = fixture_path("mlp_relu.onnx")
    m = onnx.load(str(src))
    m.metadata_props.add(key="reinit", value="scheme=test")
    out = tmp_path / "meta.onnx"
    onnx.save(m, str(out))
    assert diff_initializers(src, out) == set()  # added metadata is allowed
    with pytest.raises(AssertionError):
        diff_initializers(src, out, allow_new_metadata=False)
    m.producer_name = "something-else"
    onnx.save(m, str(out))
    with pytest.raises(AssertionError):
        diff_initializers(src, out)


MASKED = load_manifest().get("attention_masks", {})


def test_attention_mask_fixtures_are_listed_and_small():
    on_disk = {f"attention_masks/{p.name}" for p in (fixtures_dir() / "attention_masks").glob("*.onnx")}
    assert on_disk == set(MASKED), on_disk ^ set(MASKED)
    for name, e in MASKED.items():
        assert fixture_path(name).stat().st_size < 2 * MB, name
        assert e["num_residual_blocks"] == 2 * e["transformer_layers"] == len(e["residual_blocks"])


@pytest.mark.parametrize("name", sorted(MASKED))
def test_attention_mask_fixtures_run_with_a_padding_mask(name):
    onnx.checker.check_model(str(fixture_path(name)), full_check=True)
    feeds = random_inputs(fixture_path(name), seed=0)
    feeds["attention_mask"][..., -2:] = 0  # padding: the mask path is live, not constant
    outs = run_ort(fixture_path(name), feeds=feeds)
    assert all(np.isfinite(v).all() for v in outs.values())
