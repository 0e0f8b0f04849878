#!/usr/bin/env python3
"""PyTorch CPU time per training step for an ONNX fixture, to compare with
`cargo run --release -p reinit-candle --example train_step` (run by hand).

    python3 benches/train_step_torch.py fixtures/tiny_resnet_bn.onnx 32 10 --threads 1
    cargo build -p reinit-candle --example train_step
    RAYON_NUM_THREADS=1 target/debug/examples/train_step fixtures/tiny_resnet_bn.onnx 32 10

(the workspace dev profile builds candle at opt-level 3). Figures and the
stock-kernel switches (REINIT_CONV=candle, REINIT_POOL=taps,
REINIT_BN=composed) are in docs/candle-notes.md.

The network is rebuilt in torch from the ONNX graph for the ops of the tiny
ResNet (Conv, BatchNormalization in training mode, Relu, MaxPool, Add,
GlobalAveragePool, Flatten, Gemm), with the stored weights; the step is
forward + cross-entropy + backward + AdamW, median of N after 2 warm-ups.
"""
import argparse
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


class OnnxNet(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.graph = model.graph
        self.params = torch.nn.ParameterDict()
        self.buffers_ = {}
        self.names = {}
        bn_stats = {n.input[i] for n in self.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
        for i, init in enumerate(self.graph.initializer):
            t = torch.from_numpy(numpy_helper.to_array(init).astype(np.float32).copy())
            key = f"p{i}"
            self.names[init.name] = key
            if init.name in bn_stats:
                self.register_buffer(key, t)
            else:
                self.params[key] = torch.nn.Parameter(t)

    def value(self, env, name):
        if name in env:
            return env[name]
        key = self.names[name]
        return self.params[key] if key in self.params else getattr(self, key)

    def forward(self, x):
        env = {self.graph.input[0].name: x}
        for n in self.graph.node:
            a = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
            ins = [self.value(env, i) for i in n.input if i]
            op = n.op_type
            if op == "Conv":
                p = a.get("pads", [0, 0, 0, 0])
                y = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                             stride=a.get("strides", [1, 1]), padding=(p[0], p[1]),
                             dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
            elif op == "BatchNormalization":
                y = F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], training=True,
                                 momentum=1 - a.get("momentum", 0.9), eps=a.get("epsilon", 1e-5))
            elif op == "Relu":
                y = F.relu(ins[0])
            elif op == "MaxPool":
                p = a.get("pads", [0, 0, 0, 0])
                y = F.max_pool2d(ins[0], a["kernel_shape"], a.get("strides", [1, 1]), (p[0], p[1]))
            elif op == "Add":
                y = ins[0] + ins[1]
            elif op == "GlobalAveragePool":
                y = ins[0].mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                y = torch.flatten(ins[0], a.get("axis", 1))
            elif op == "Gemm":
                w = ins[1].t() if a.get("transB", 0) else ins[1]
                y = ins[0] @ w + (ins[2] if len(ins) > 2 else 0)
            else:
                raise NotImplementedError(op)
            env[n.output[0]] = y
        return env[self.graph.output[0].name]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="fixtures/tiny_resnet_bn.onnx")
    ap.add_argument("batch", nargs="?", type=int, default=32)
    ap.add_argument("steps", nargs="?", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = OnnxNet(onnx.load(args.model))
    dims = [d.dim_value for d in net.graph.input[0].type.tensor_type.shape.dim]
    x = torch.randn(args.batch, *dims[1:])
    y = torch.arange(args.batch) % 10
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    times = []
    for i in range(args.steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    print(f"{args.model} batch {args.batch} torch {torch.__version__} threads {args.threads}: "
          f"train step median {sorted(times)[len(times) // 2]:.4f} s over {args.steps} steps")


if __name__ == "__main__":
    main()
