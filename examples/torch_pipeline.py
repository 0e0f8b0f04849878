"""Export → re-initialize → back into PyTorch → train.

    pip install ./crates/reinit-py torch onnx
    python3 examples/torch_pipeline.py [--scheme auto] [--steps 30]

1. build a small torchvision-style ResNet (BasicBlocks with BatchNorm, projection shortcut);
2. export it with `torch.onnx.export`, keeping BatchNorm (TRAINING mode, no constant folding),
   so the conv weights in the file are the module's parameters;
3. `reinit.apply(..., scheme="auto")` rewrites the weights in the file;
4. `reinit.torch.load_into` copies them back into the module;
5. train a few SGD steps on a synthetic task and print the loss next to the default init.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

import reinit
import reinit.torch


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class SmallResNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def synthetic_task(n: int = 512, classes: int = 10, seed: int = 0):
    """Images whose class is a fixed random 3×32×32 template plus noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(classes, 3, 32, 32, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = templates[y] + 1.5 * torch.randn(n, 3, 32, 32, generator=g)
    return x, y


def train(model: nn.Module, x, y, steps: int, lr: float, batch: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheme", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(2)

    torch.manual_seed(args.seed)
    model = SmallResNet()
    baseline = copy.deepcopy(model)

    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / "resnet.onnx"
        # Keep BatchNorm and the state_dict names: a BN-folded export cannot be loaded back.
        warnings.filterwarnings("ignore", category=UserWarning)  # exporter chatter about BN mutation
        torch.onnx.export(
            model, (torch.randn(1, 3, 32, 32),), str(exported),
            input_names=["input"], output_names=["logits"], opset_version=17, dynamo=False,
            training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
        )
        report = reinit.apply(exported, args.scheme, seed=args.seed, output=Path(tmp) / "resnet.reinit.onnx")
        print(report.summary(), end="")
        for w in report.weights[:6]:
            print(f"  {w['name']:<28} {w['scheme']:<16} {w['reason']}")
        result = reinit.torch.load_into(model, report)
        print(f"load_into: {len(result.set)} parameters set, {len(result.not_set)} not set, "
              f"{len(result.buffers)} buffers")

    x, y = synthetic_task(seed=args.seed)
    ours = train(model, x, y, args.steps, args.lr)
    default = train(baseline, x, y, args.steps, args.lr)
    print(f"\n{'step':>4}  {'torch default':>13}  {'reinit ' + args.scheme:>13}")
    for step in sorted({0, *range(4, args.steps, 5), args.steps - 1}):
        print(f"{step:>4}  {default[step]:>13.4f}  {ours[step]:>13.4f}")


if __name__ == "__main__":
    main()
