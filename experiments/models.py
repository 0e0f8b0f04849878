"""ONNX model builders for the experiments, without PyTorch (onnx.helper + numpy only).

The graphs have the shapes PyTorch's exporter produces, so reinit analyses them as it
would a real export:

* MLP:    [Gemm(transB=1, bias) -> (BatchNormalization) -> act] x (depth-1) -> Gemm head
* CNN:    [Conv 3x3 pad 1 (bias unless BN) -> (BatchNormalization) -> act] x depth
          -> GlobalAveragePool -> Flatten -> Gemm head
* ResNet: Conv stem -> act -> stages of basic blocks
          (x + conv-(BN)-relu-conv-(BN), then relu; the first block of a later stage
          halves the side with stride 2 and has a 1x1 projection shortcut)
          -> GlobalAveragePool -> Flatten -> Gemm head

Every model has a dynamic batch axis (`batch`). Weights are placeholders (scaled
Gaussians from a fixed seed, so the file is deterministic and still a sensible network);
`reinit` overwrites them. Batch-norm parameters are the PyTorch defaults (gamma 1, beta 0,
running mean 0, running variance 1).

Command line (one model):
    python3 experiments/models.py mlp --depth 64 --width 64 --act tanh -o /tmp/m.onnx
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as onh

OPSET = 17
ACTS = {"relu": "Relu", "tanh": "Tanh", "linear": None}


class _Graph:
    """Accumulates nodes and initializers with exporter-like names."""

    def __init__(self, seed: int):
        self.nodes: list = []
        self.inits: list = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"/{stem}/out_{self.count}"

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(onh.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def weight(self, name: str, shape: tuple, fan_in: int) -> str:
        w = self.rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))
        return self.init(name, w)

    def node(self, op: str, inputs: list, name: str, **attrs) -> str:
        out = self.fresh(name)
        self.nodes.append(oh.make_node(op, inputs, [out], name=f"/{name}/{op}", **attrs))
        return out

    def act(self, x: str, act: str, name: str) -> str:
        op = ACTS[act]
        return x if op is None else self.node(op, [x], name)

    def gemm(self, x: str, n_in: int, n_out: int, name: str) -> str:
        w = self.weight(f"{name}.weight", (n_out, n_in), n_in)
        b = self.init(f"{name}.bias", np.zeros(n_out))
        return self.node("Gemm", [x, w, b], name, alpha=1.0, beta=1.0, transB=1)

    def conv(self, x, c_in, c_out, k, stride, name, bias=True) -> str:
        w = self.weight(f"{name}.weight", (c_out, c_in, k, k), c_in * k * k)
        ins = [x, w]
        if bias:
            ins.append(self.init(f"{name}.bias", np.zeros(c_out)))
        p = (k - 1) // 2
        return self.node(
            "Conv", ins, name, dilations=[1, 1], group=1, kernel_shape=[k, k],
            pads=[p, p, p, p], strides=[stride, stride],
        )

    def bn(self, x: str, c: int, name: str) -> str:
        ins = [x] + [
            self.init(f"{name}.{n}", v)
            for n, v in (
                ("weight", np.ones(c)), ("bias", np.zeros(c)),
                ("running_mean", np.zeros(c)), ("running_var", np.ones(c)),
            )
        ]
        return self.node("BatchNormalization", ins, name, epsilon=1e-5, momentum=0.9)

    def model(self, x_shape: list, out: str, n_classes: int, doc: str) -> onnx.ModelProto:
        self.nodes.append(oh.make_node("Identity", [out], ["logits"], name="/output/Identity"))
        g = oh.make_graph(
            self.nodes, "main_graph",
            [oh.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *x_shape])],
            [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_classes])],
            self.inits,
        )
        m = oh.make_model(g, opset_imports=[oh.make_opsetid("", OPSET)],
                          producer_name="reinit-experiments", doc_string=doc)
        m.ir_version = 8
        return m


def mlp(depth: int, width: int = 64, act: str = "tanh", bn: bool = False,
        in_dim: int = 64, n_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """`depth` Gemm layers (depth-1 hidden, each followed by `act`), input `in_dim`
    (64 = the 8x8 digits), a linear head of `n_classes`."""
    assert depth >= 1 and act in ACTS
    g = _Graph(seed)
    x, n = "input", in_dim
    for i in range(depth - 1):
        x = g.gemm(x, n, width, f"layers.{i}")
        if bn:
            x = g.bn(x, width, f"norms.{i}")
        x = g.act(x, act, f"act.{i}")
        n = width
    x = g.gemm(x, n, n_classes, "head")
    return g.model([in_dim], x, n_classes, f"mlp depth={depth} width={width} act={act} bn={bn}")


def cnn(depth: int, channels: int = 16, act: str = "tanh", bn: bool = False,
        in_ch: int = 1, side: int = 8, n_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """`depth` 3x3 stride-1 convs (same padding) each followed by `act`, then global
    average pooling and a linear head. Input `in_ch x side x side` (1x8x8 = the digits)."""
    g = _Graph(seed)
    x, c = "input", in_ch
    for i in range(depth):
        x = g.conv(x, c, channels, 3, 1, f"features.{i}", bias=not bn)
        if bn:
            x = g.bn(x, channels, f"features.{i}.bn")
        x = g.act(x, act, f"features.{i}.act")
        c = channels
    x = g.node("GlobalAveragePool", [x], "pool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.gemm(x, c, n_classes, "fc")
    return g.model([in_ch, side, side], x, n_classes,
                   f"cnn depth={depth} channels={channels} act={act} bn={bn}")


def resnet(blocks_per_stage: int, stages: int = 2, channels: int = 16, norm: bool = False,
           in_ch: int = 1, side: int = 8, n_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """A CIFAR-style ResNet of basic blocks, `stages` stages of `blocks_per_stage` blocks,
    channels doubling per stage. Without `norm` the convs have biases (a normalization-free
    ResNet, Fixup's and IDInit's setting); with it each conv is followed by BatchNorm."""
    g = _Graph(seed)
    x = g.conv("input", in_ch, channels, 3, 1, "conv1", bias=not norm)
    if norm:
        x = g.bn(x, channels, "bn1")
    x = g.node("Relu", [x], "relu")
    c = channels
    for s in range(stages):
        c_out = channels * 2 ** s
        for b in range(blocks_per_stage):
            stride = 2 if (s > 0 and b == 0) else 1
            p = f"layer{s + 1}.{b}"
            y = g.conv(x, c, c_out, 3, stride, f"{p}.conv1", bias=not norm)
            if norm:
                y = g.bn(y, c_out, f"{p}.bn1")
            y = g.node("Relu", [y], f"{p}.relu1")
            y = g.conv(y, c_out, c_out, 3, 1, f"{p}.conv2", bias=not norm)
            if norm:
                y = g.bn(y, c_out, f"{p}.bn2")
            short = x
            if stride != 1 or c != c_out:
                short = g.conv(x, c, c_out, 1, stride, f"{p}.downsample.0", bias=not norm)
                if norm:
                    short = g.bn(short, c_out, f"{p}.downsample.1")
            x = g.node("Add", [y, short], f"{p}.add")
            x = g.node("Relu", [x], f"{p}.relu2")
            c = c_out
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.gemm(x, c, n_classes, "fc")
    return g.model([in_ch, side, side], x, n_classes,
                   f"resnet blocks_per_stage={blocks_per_stage} stages={stages} "
                   f"channels={channels} norm={norm}")


def save(model: onnx.ModelProto, path: str) -> str:
    onnx.save(model, path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["mlp", "cnn", "resnet"])
    ap.add_argument("--depth", type=int, default=8, help="mlp/cnn: layers; resnet: blocks per stage")
    ap.add_argument("--width", type=int, default=64, help="mlp width / cnn and resnet channels")
    ap.add_argument("--act", choices=sorted(ACTS), default="tanh")
    ap.add_argument("--bn", action="store_true", help="BatchNormalization after each layer")
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    if a.kind == "mlp":
        m = mlp(a.depth, a.width, a.act, a.bn, seed=a.seed)
    elif a.kind == "cnn":
        m = cnn(a.depth, a.width, a.act, a.bn, seed=a.seed)
    else:
        m = resnet(a.depth, a.stages, a.width, a.bn, seed=a.seed)
    save(m, a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
