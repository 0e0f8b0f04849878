#!/usr/bin/env python3
"""numpy baselines for crates/reinit-schemes/benches/schemes.rs (same sizes).

* orthogonal: the QR route (standard normal n×n, np.linalg.qr, columns times sign(diag R)),
  as torch.nn.init.orthogonal_ does it;
* EOI: a straightforward numpy Givens loop to density 0.1 (random column pair, angle, rotate
  two columns with numpy vector ops), with the same incremental non-zero count as the Rust
  code (count_nonzero of the two touched columns) — the EOI repo's own loop recomputes the
  density of the whole matrix every step and is far slower still;
* He: rng.normal(0, sqrt(2/fan_in), 25M).

Prints one line per case: `name seconds` (median of the repeats).
Run: python3 benches/schemes_numpy.py [--4096]
"""
import sys
import time

import numpy as np


def median_time(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def orthogonal(n, rng):
    g = rng.standard_normal((n, n))
    q, r = np.linalg.qr(g)
    q *= np.sign(np.diag(r))
    return q


def eoi(n, d, rng):
    a = np.zeros((n, n))
    np.fill_diagonal(a, 1.0)
    nnz = n
    total = n * n
    while nnz < d * total:
        i, j = rng.choice(n, 2, replace=False)
        theta = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(theta), np.sin(theta)
        before = np.count_nonzero(a[:, i]) + np.count_nonzero(a[:, j])
        ai = a[:, i].copy()
        a[:, i] = c * ai + s * a[:, j]
        a[:, j] = -s * ai + c * a[:, j]
        nnz += np.count_nonzero(a[:, i]) + np.count_nonzero(a[:, j]) - before
    return a


def main():
    rng = np.random.default_rng(0)
    sizes = [256, 1024, 2048] + ([4096] if "--4096" in sys.argv else [])
    for n in sizes:
        reps = 10 if n <= 1024 else 3
        print(f"orthogonal/{n} {median_time(lambda: orthogonal(n, rng), reps):.6f}", flush=True)
    for n in [1024, 4096]:
        reps = 3 if n <= 1024 else 1
        print(f"eoi_d0.1/{n} {median_time(lambda: eoi(n, 0.1, rng), reps):.6f}", flush=True)
    std = np.sqrt(2.0 / 5000)
    print(f"he_normal/25M {median_time(lambda: rng.normal(0.0, std, 25_000_000), 5):.6f}", flush=True)


if __name__ == "__main__":
    main()
