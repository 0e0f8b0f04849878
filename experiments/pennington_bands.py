#!/usr/bin/env python3
"""Where one draw's mean squared Jacobian singular value E[s²] lies on the tanh critical
line, at the Pennington experiment's scale (width 64): the numpy model behind the bands of
exp_pennington.py's first two checks.

    python3 experiments/pennington_bands.py            # 400 draws per depth (~2 min CPU)
    python3 experiments/pennington_bands.py --draws 100

The nets are those of exp_pennington.py: L tanh layers of width 64, (σw², σb²) = (1.05,
2.01e-5) with Haar-orthogonal weights (`critical`), or Gaussian weights of variance σw²/N
and zero biases (`he --gain 1.0247 --distribution normal`). The input is one sample of
verify's teacher task: N(0, q*) entries, so its own second moment is q*·χ²₆₄/64 (the task
scales the whole training set, not each sample, to q*). `--gain` multiplies σw (a broken
scheme: 1.02 = 2 % too large, 0.9759 = the gain 1 instead of 1.0247).

For each depth it prints the mean of E[s²], its 0.5 % and 99.5 % quantiles, the standard
deviation of ln E[s²], the fraction of single draws outside 2/3–3/2 and 0.5–2, and the
fraction of 3-seed means outside 0.5–2; then the per-layer factor exp(mean ln E[s²]/L) over
3 seeds × L ∈ {8, 16, 32} (the full run) and 2 seeds × L ∈ {4, 16} (the smoke run).
"""
from __future__ import annotations

import argparse

import numpy as np

N, Q_STAR, SW2, SB2 = 64, 0.025921, 1.05, 2.01e-5


def haar(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def draw(rng, depth: int, arm: str, gain: float) -> float:
    x = rng.standard_normal(N) * np.sqrt(Q_STAR)
    jac = np.eye(N)
    for _ in range(depth):
        if arm == "orthogonal":
            w, b = gain * np.sqrt(SW2) * haar(rng, N), np.sqrt(SB2) * rng.standard_normal(N)
        else:
            w, b = gain * np.sqrt(SW2 / N) * rng.standard_normal((N, N)), 0.0
        x = np.tanh(w @ x + b)
        jac = (1 - x ** 2)[:, None] * (w @ jac)
    return float((jac ** 2).sum() / N)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--gain", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=2)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    print(f"gain ×{a.gain}, {a.draws} draws per depth")
    for arm in ("orthogonal", "Gaussian"):
        by_depth = {}
        for depth in (4, 8, 16, 32):
            m = np.array([draw(rng, depth, arm, a.gain) for _ in range(a.draws)])
            by_depth[depth] = m
            m3 = m[: len(m) // 3 * 3].reshape(-1, 3).mean(1)
            lo, hi = np.quantile(m, [0.005, 0.995])
            print(f"{arm:10} L={depth:2}  mean {m.mean():.3f}  99% {lo:.3f}–{hi:.3f}  "
                  f"sd ln {np.log(m).std():.3f}  outside 2/3–3/2 {np.mean((m < 2 / 3) | (m > 1.5)):.3f}  "
                  f"outside 0.5–2 {np.mean((m < 0.5) | (m > 2)):.3f}  "
                  f"3-seed mean outside 0.5–2 {np.mean((m3 < 0.5) | (m3 > 2)):.3f}")
        for name, depths, seeds in (("full", (8, 16, 32), 3), ("smoke", (4, 16), 2)):
            runs = len(by_depth[4]) // seeds
            f = np.exp(np.array([np.mean([np.log(by_depth[d][r * seeds + s]) / d
                                          for d in depths for s in range(seeds)])
                                 for r in range(runs)]))
            print(f"{arm:10} per-layer factor, {name} run: {f.mean():.4f} ± {f.std():.4f}, "
                  f"outside 0.9662–1.035 in {np.mean((f < 1 / 1.035) | (f > 1.035)):.3f} of {runs} runs")


if __name__ == "__main__":
    main()
