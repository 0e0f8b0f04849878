#!/usr/bin/env python3
"""PyTorch's CPU training step for one benchmark model, the reference for
`reinit verify`'s `step_seconds` (run by run.py, or by hand):

    /usr/bin/time -f %M python3 benches/verify/torch_step.py resnet50 --batch 2 --steps 5 --threads 2

Same architecture as the exported ONNX (export_models.py, train mode, BN in
training mode), same batch and per-sample shape; step = forward + loss +
backward + AdamW (lr 3e-3), cross-entropy on random labels for class outputs,
MSE otherwise. Prints one JSON line: median step seconds after one warm-up.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from export_models import build, example  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = build(args.model).train()
    x = example(args.model, args.batch)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        out = net(x)
        if out.dim() == 2:
            loss = F.cross_entropy(out, torch.arange(args.batch) % out.shape[1])
        else:
            loss = F.mse_loss(out, torch.zeros_like(out))
        loss.backward()
        opt.step()
        if i >= 1:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"model": args.model, "batch": args.batch, "threads": args.threads,
                      "torch": torch.__version__, "step_seconds": times[len(times) // 2]}))


if __name__ == "__main__":
    main()
