"""Issue 15 items 2 and 3, checked with onnxruntime (not reinit's own executor).

- LSUV calibrates: after `reinit M --scheme lsuv --calibration-data x.npy`, every weighted
  layer's output variance on x is 1 ± 0.1, on a deep tanh MLP and on a conv net, through the
  CLI (embedded and external data) and the Python package (`calibration_data=` / `lsuv_data=`).
- `--reset-norms`: every BatchNormalization / LayerNormalization / GroupNormalization /
  InstanceNormalization gets γ = 1, β = 0 (running mean 0, variance 1), recorded in metadata.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_reinit

WEIGHTED = ("Gemm", "Conv", "MatMul")


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _save(graph, path: Path, opset=18, external=False):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def deep_tanh_mlp(path: Path, depth=8, width=32, external=False):
    """Gemm (transB=1, bias) + Tanh, `depth` times; weights trained-looking (badly scaled)."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(depth):
        inits += [_init(f"w{i}", rng.standard_normal((width, width)) * 0.5),
                  _init(f"b{i}", rng.standard_normal(width) * 0.3)]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}", transB=1))
        nodes.append(helper.make_node("Tanh", [f"h{i}"], [f"a{i}"], name=f"tanh{i}"))
        x = f"a{i}"
    graph = helper.make_graph(
        nodes, "deep_tanh", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width])], inits)
    return _save(graph, path, external=external)


def conv_net(path: Path):
    """Conv 3→8→16→16 (3×3, pad 1, bias) + ReLU, then Flatten + Gemm → 10."""
    rng = np.random.default_rng(1)
    nodes, inits, x, cin = [], [], "x", 3
    for i, cout in enumerate([8, 16, 16]):
        inits += [_init(f"cw{i}", rng.standard_normal((cout, cin, 3, 3)) * 0.2),
                  _init(f"cb{i}", rng.standard_normal(cout) * 0.1)]
        nodes.append(helper.make_node("Conv", [x, f"cw{i}", f"cb{i}"], [f"c{i}"], name=f"conv{i}",
                                      pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x, cin = f"r{i}", cout
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten"))
    inits += [_init("fw", rng.standard_normal((10, cin * 8 * 8)) * 0.05), _init("fb", np.zeros(10))]
    nodes.append(helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return _save(graph, path)


def layer_output_variances(model_path: Path, x: np.ndarray) -> dict:
    """Variance over the data of every weighted node's output, computed by onnxruntime."""
    import onnxruntime as ort
    model = onnx.load(str(model_path))
    outs = [n.output[0] for n in model.graph.node if n.op_type in WEIGHTED]
    known = {o.name for o in model.graph.output}
    for o in outs:
        if o not in known:
            model.graph.output.append(helper.make_empty_tensor_value_info(o))
    probe = model_path.with_name(model_path.stem + ".probe.onnx")
    onnx.save_model(model, str(probe))
    sess = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    values = sess.run(outs, {"x": x})
    return {o: float(np.var(v)) for o, v in zip(outs, values)}


def assert_calibrated(model_path: Path, x: np.ndarray):
    variances = layer_output_variances(model_path, x)
    assert len(variances) >= 3
    bad = {k: v for k, v in variances.items() if abs(v - 1.0) > 0.1}
    assert not bad, f"output variance not 1 ± 0.1: {bad} (all: {variances})"


def calibration_samples(shape, seed=3):
    # Not standardized (mean 0.5, std 2): calibrating on other data would miss the target.
    return (0.5 + 2.0 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("kind", ["mlp", "mlp-external", "conv"])
def test_cli_lsuv_calibrates_on_the_given_data(tmp_path, kind, reinit_bin):
    if kind == "conv":
        model, x = conv_net(tmp_path / "m.onnx"), calibration_samples((64, 3, 8, 8))
    else:
        model = deep_tanh_mlp(tmp_path / "m.onnx", external=kind == "mlp-external")
        x = calibration_samples((128, 32))
    before = layer_output_variances(model, x)
    assert any(abs(v - 1.0) > 0.1 for v in before.values()), before
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.onnx"
    cp = run_reinit([model, "--scheme", "lsuv", "--seed", "5", "--calibration-data", tmp_path / "x.npy",
                     "-o", out, "--json", "-q"])
    report = json.loads(cp.stdout)
    assert report["lsuv"]["data"].startswith(str(tmp_path / "x.npy")), report["lsuv"]
    assert len(report["lsuv"]["layers"]) == len(before)
    for layer in report["lsuv"]["layers"]:
        assert abs(layer["output_variance"] - 1.0) < 0.1 and layer["iterations"] >= 0, layer
    assert_calibrated(out, x)


def test_npz_keyed_by_input_name(tmp_path, reinit_bin):
    model = deep_tanh_mlp(tmp_path / "m.onnx", depth=4)
    x = calibration_samples((64, 32), seed=8)
    np.savez(tmp_path / "x.npz", x=x, unused=np.zeros(3, dtype=np.float32))
    cp = run_reinit([model, "--scheme", "lsuv", "--seed", "5", "--calibration-data", tmp_path / "x.npz",
                     "-o", tmp_path / "out.onnx", "-q"], check=False)
    # An array for no graph input is refused, with the input names.
    assert cp.returncode != 0 and "unused" in cp.stderr, cp.stderr
    np.savez(tmp_path / "x.npz", x=x)
    run_reinit([model, "--scheme", "lsuv", "--seed", "5", "--calibration-data", tmp_path / "x.npz",
                "-o", tmp_path / "out.onnx", "-q"])
    assert_calibrated(tmp_path / "out.onnx", x)


def test_without_data_the_report_names_the_task(tmp_path, reinit_bin):
    model = deep_tanh_mlp(tmp_path / "m.onnx", depth=4)
    # Static batch-free shape so the task can be built from the input.
    cp = run_reinit([model, "--scheme", "lsuv", "--seed", "5", "-o", tmp_path / "o.onnx", "--json", "-q"])
    report = json.loads(cp.stdout)
    assert "task" in report["lsuv"]["data"], report["lsuv"]
    assert all("lsuv: scaled by" in " ".join(w["notes"]) for w in report["weights"] if w["kind"] != "bias")


def test_python_calibration_data_and_alias(tmp_path):
    reinit = pytest.importorskip("reinit")
    model = deep_tanh_mlp(tmp_path / "m.onnx")
    x = calibration_samples((128, 32), seed=4)
    a = reinit.apply(str(model), "lsuv", seed=5, calibration_data=x, output=tmp_path / "a.onnx")
    assert_calibrated(tmp_path / "a.onnx", x)
    assert a.lsuv["data"].startswith("calibration_data"), a.lsuv
    assert all(abs(layer["output_variance"] - 1) < 0.1 for layer in a.lsuv["layers"])
    reinit.apply(str(model), "lsuv", seed=5, lsuv_data={"x": x.astype(np.float64)},
                 output=tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    with pytest.raises(reinit.UsageError):
        reinit.apply(str(model), "lsuv", seed=5, calibration_data=x, lsuv_data=x)


def trained_norms(path: Path):
    """BatchNorm, InstanceNorm, GroupNorm and LayerNorm, each with trained-looking parameters."""
    rng = np.random.default_rng(2)
    c = 4

    def affine(prefix, n):
        return [_init(f"{prefix}_g", 1 + 0.3 * rng.standard_normal(n)),
                _init(f"{prefix}_b", 0.2 * rng.standard_normal(n))]

    inits = affine("bn", c) + [_init("bn_m", 0.1 * rng.standard_normal(c)),
                               _init("bn_v", 1 + 0.5 * rng.random(c))]
    inits += affine("in", c) + affine("gn", c) + affine("ln", 8)
    inits += [_init("cw", 0.3 * rng.standard_normal((c, 3, 3, 3)))]
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn"),
        helper.make_node("InstanceNormalization", ["bn", "in_g", "in_b"], ["in"], name="inorm"),
        helper.make_node("GroupNormalization", ["in", "gn_g", "gn_b"], ["gn"], name="gnorm", num_groups=2),
        helper.make_node("LayerNormalization", ["gn", "ln_g", "ln_b"], ["y"], name="lnorm", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "norms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, 8, 8])], inits)
    return _save(graph, path, opset=21)


def test_reset_norms_on_every_norm_kind(tmp_path, reinit_bin):
    model = trained_norms(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    cp = run_reinit([model, "--scheme", "he", "--seed", "1", "--reset-norms", "-o", out, "--json", "-q"])
    report = json.loads(cp.stdout)
    assert sorted(n["node"] for n in report["norms_reset"]) == ["bn", "gnorm", "inorm", "lnorm"]
    got = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    for prefix in ("bn", "in", "gn", "ln"):
        assert np.all(got[f"{prefix}_g"] == 1) and np.all(got[f"{prefix}_b"] == 0), prefix
    assert np.all(got["bn_m"] == 0) and np.all(got["bn_v"] == 1)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert sorted(json.loads(meta["reinit.norms_reset"])) == ["bn", "gnorm", "inorm", "lnorm"]
    # Without the flag the norms stay as they were.
    run_reinit([model, "--scheme", "he", "--seed", "1", "-o", tmp_path / "keep.onnx", "-q"])
    kept = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "keep.onnx")).graph.initializer}
    src = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}
    assert all(np.array_equal(kept[k], src[k]) for k in src if k != "cw")


def test_python_directory_mode_is_the_clis(tmp_path, reinit_bin):
    """Directory mode lives in the library: Python's apply(dir) writes what the CLI writes."""
    reinit = pytest.importorskip("reinit")
    src = tmp_path / "export"
    src.mkdir()
    for i, depth in enumerate([3, 4]):
        deep_tanh_mlp(src / f"part{i}.onnx", depth=depth)
    reports = reinit.apply(str(src), "orthogonal", seed=4, output=tmp_path / "py")
    assert [Path(r.model).name for r in reports] == ["part0.onnx", "part1.onnx"]
    run_reinit([src, "--scheme", "orthogonal", "--seed", "4", "-o", tmp_path / "cli", "-q"])
    for name in ("part0.onnx", "part1.onnx"):
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
