"""Issue 15 item 5: relu-share's mirrored pairing on conv chains, checked in onnxruntime.

Where the pairing holds (equal group counts; an odd channel count only where no Flatten
spreads a channel over several inputs) the rewritten network is exactly linear at init: its
output on a random input equals the linear map read off its outputs on the basis vectors.
Where it would silently break (neighbouring layers with different group counts, an odd
channel count before a Flatten) reinit refuses relu-share and names both layers.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_reinit

SIDE = 6  # input is 1×3×6×6


def _chain(convs, head, pool=False, in_ch=3):
    """Conv+ReLU layers `convs` = [(c_out, c_in_per_group, groups)] on a 1×in_ch×6×6
    input, then Flatten (after a GlobalAveragePool with `pool`) and a Gemm head with
    `head` outputs; `head=None`: the last conv is the output (no ReLU after it)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "input"
    for k, (c_out, c_in, groups) in enumerate(convs):
        w = f"conv{k}.weight"
        b = f"conv{k}.bias"
        last = head is None and k + 1 == len(convs)
        inits.append(numpy_helper.from_array(rng.normal(size=(c_out, c_in, 3, 3)).astype(np.float32), w))
        inits.append(numpy_helper.from_array(rng.normal(size=(c_out,)).astype(np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], ["output" if last else f"c{k}"], pads=[1, 1, 1, 1],
                                      group=groups, kernel_shape=[3, 3], name=f"Conv_{k}"))
        if not last:
            nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"Relu_{k}"))
            x = f"r{k}"
    if head is None:
        out_shape = ["N", convs[-1][0], SIDE, SIDE]
    else:
        channels = convs[-1][0]
        if pool:
            nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="Pool"))
            x = "pooled"
            features = channels
        else:
            features = channels * SIDE * SIDE
        nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1, name="Flatten"))
        inits.append(numpy_helper.from_array(rng.normal(size=(head, features)).astype(np.float32), "fc.weight"))
        inits.append(numpy_helper.from_array(np.zeros(head, np.float32), "fc.bias"))
        nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["output"], transB=1, name="Gemm"))
        out_shape = ["N", head]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", in_ch, SIDE, SIDE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _rewrite(tmp_path, model, name):
    src = tmp_path / f"{name}.onnx"
    out = tmp_path / f"{name}.relu-share.onnx"
    onnx.save(model, src)
    cp = run_reinit([src, "--scheme", "relu-share", "--seed", "5", "--json", "-q", "-o", out])
    return json.loads(cp.stdout), out


# convs, head, pool, input channels
PAIRING_HOLDS = {
    "even_channels_then_flatten": ([(8, 3, 1), (8, 8, 1)], 5, False, 3),
    "equal_groups_conv_head": ([(8, 2, 2), (8, 4, 2), (6, 4, 2)], None, False, 4),
    "odd_channels_then_pool": ([(7, 3, 1), (9, 7, 1)], 5, True, 3),
}


@pytest.mark.parametrize("case", sorted(PAIRING_HOLDS))
def test_relu_share_is_exactly_linear_where_the_pairing_holds(reinit_bin, tmp_path, case):
    convs, head, pool, in_ch = PAIRING_HOLDS[case]
    report, out = _rewrite(tmp_path, _chain(convs, head, pool, in_ch), case)
    assert not report["kept"], report["kept"]
    assert {w["scheme"] for w in report["weights"]} == {"relu-share"}
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    n = in_ch * SIDE * SIDE
    basis = np.eye(n, dtype=np.float32).reshape(n, in_ch, SIDE, SIDE)
    linear_map = sess.run(None, {"input": basis})[0].reshape(n, -1)  # row i: f(e_i)
    x = np.random.default_rng(1).normal(size=(4, in_ch, SIDE, SIDE)).astype(np.float32)
    got = sess.run(None, {"input": x})[0].reshape(4, -1)
    want = x.reshape(4, n) @ linear_map
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale * np.sqrt(n))
    # f(−x) = −f(x): the ReLUs see both signs, the mirrored halves undo them
    np.testing.assert_allclose(sess.run(None, {"input": -x})[0].reshape(4, -1), -got, rtol=0,
                               atol=1e-5 * scale * np.sqrt(n))


PAIRING_BREAKS = {
    "groups_differ": ([(8, 3, 1), (8, 4, 2), (8, 8, 1)], ["conv0.weight", "conv1.weight", "groups"]),
    "odd_channels_before_flatten": ([(8, 3, 1), (7, 8, 1)], ["conv1.weight", "fc.weight", "odd"]),
}


@pytest.mark.parametrize("case", sorted(PAIRING_BREAKS))
def test_relu_share_refuses_where_the_pairing_breaks(reinit_bin, tmp_path, case):
    convs, words = PAIRING_BREAKS[case]
    report, _ = _rewrite(tmp_path, _chain(convs, 5), case)
    assert not report["weights"], [w["name"] for w in report["weights"]]
    reasons = {k["reason"] for k in report["kept"]}
    assert reasons, report
    for reason in reasons:
        for word in words:
            assert word in reason, (word, reason)
    # auto does not pick relu-share there either
    src = tmp_path / f"{case}.onnx"
    cp = run_reinit([src, "--scheme", "auto", "--seed", "5", "--json", "-q", "--dry-run"])
    auto = json.loads(cp.stdout)
    assert auto["weights"] and all(w["scheme"] != "relu-share" for w in auto["weights"])
