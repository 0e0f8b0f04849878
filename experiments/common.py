"""Shared plumbing of the experiments: the reinit binary, model files, `reinit verify
--json` / `reinit apply --json` runs with an on-disk cache, statistics, markdown tables and
(optional) matplotlib plots.

Every experiment module exposes
    CONFIGS = {"full": {...}, "smoke": {...}}
    run(cfg) -> dict            # measurements (JSON-serialisable)
    checks(res) -> [(claim, ok: bool, detail: str)]   # the paper's qualitative effect
    report(res, img_dir) -> str # markdown: table (+ plot written into img_dir)
so `run_all.py` and the CI smoke test (tests/python/test_experiments_smoke.py) assert the
same claims, at two scales.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402

Q_STAR_TANH = 0.025921  # q* of tanh at (σw², σb²) = (1.05, 2.01e-5), as `verify` reports it


def reinit_bin() -> str:
    """$REINIT_BIN, else target/release/reinit, else target/debug/reinit."""
    env = os.environ.get("REINIT_BIN")
    if env:
        return env
    for prof in ("release", "debug"):
        p = ROOT / "target" / prof / "reinit"
        if p.exists():
            return str(p)
    raise RuntimeError("no reinit binary: build with `cargo build --release -p reinit` or set REINIT_BIN")


def work_dir() -> Path:
    d = Path(os.environ.get("REINIT_EXPERIMENTS_WORK", Path(tempfile.gettempdir()) / "reinit-experiments"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def model_file(kind: str, **kw) -> str:
    """Builds (once per process) the model `models.<kind>(**kw)` into the work dir."""
    key = kind + "_" + "_".join(f"{k}{v}" for k, v in sorted(kw.items()))
    path = work_dir() / f"{key}.onnx"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        models.save(getattr(models, kind)(**kw), str(tmp))
        os.replace(tmp, path)
    return str(path)


def _run_json(args: list, timeout: int) -> dict:
    cmd = [reinit_bin(), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout)


_CACHE: dict = {}


def verify(model: str, scheme: str, *, steps: int, seed: int, lr: float | None = None,
           batch: int = 16, optimizer: str = "sgd", input_q: float | None = None,
           params: dict | None = None, timeout: int = 1800) -> dict:
    """One `reinit verify MODEL --schemes SCHEME ... --json` run; returns its only run
    (plus the top-level `task`). Scheme parameters go in `params` ({"density": 0.125})."""
    args = ["verify", model, "--schemes", scheme, "--steps", steps, "--batch", batch,
            "--seed", seed, "--optimizer", optimizer, "--json", "-q"]
    if lr is not None:
        args += ["--lr", lr]
    if input_q is not None:
        args += ["--input-q", input_q]
    for k, v in (params or {}).items():
        args += [f"--{k.replace('_', '-')}", v]
    key = tuple(map(str, args))
    if key not in _CACHE:
        out = _run_json(args, timeout)
        run = out["runs"][0]
        run["task"] = out.get("task")
        run["command"] = "reinit " + " ".join(map(str, args[:-2] if args[-1] == "-q" else args))
        _CACHE[key] = run
    return _CACHE[key]


def apply(model: str, scheme: str, *, seed: int, params: dict | None = None,
          output: str | None = None) -> tuple[dict, str]:
    """`reinit apply MODEL --scheme SCHEME --json -o OUT`; returns (report, OUT)."""
    out = output or str(work_dir() / f"{Path(model).stem}.{scheme}.s{seed}.{os.getpid()}.onnx")
    args = ["apply", model, "--scheme", scheme, "--seed", seed, "--json", "--force", "-o", out]
    for k, v in (params or {}).items():
        args += [f"--{k.replace('_', '-')}", v]
    return _run_json(args, 600), out


# ------------------------------------------------------------------ statistics


def mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def spread(xs):
    """(min, max) of the finite values."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))


def sq_sv_stats(run: dict) -> tuple[float, float]:
    """Mean and variance of the squared singular values of the run's Jacobian."""
    j = run["jacobian"]
    return j["mean_sq_sv"], j["var_sq_sv"]


def steps_to(loss: list, threshold: float, window: int = 10):
    """First step at which the moving mean (over `window` steps) of the loss is
    <= threshold; None if never."""
    acc = 0.0
    for i, x in enumerate(loss):
        if x is None or not math.isfinite(x):
            return None
        acc += x
        if i >= window:
            acc -= loss[i - window]
        if i + 1 >= window and acc / window <= threshold:
            return i + 1
    return None


def slope(xs, ys) -> float:
    """Least-squares slope of ys on xs."""
    mx, my = mean(xs), mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")


# ------------------------------------------------------------------ output


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def table(header: list, rows: list) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def plt():
    """matplotlib.pyplot (Agg), or None when matplotlib is not installed (CI)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as p

        return p
    except ImportError:
        return None


def save_fig(fig, img_dir: Path, name: str) -> str:
    img_dir.mkdir(parents=True, exist_ok=True)
    path = img_dir / name
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    import matplotlib.pyplot as p

    p.close(fig)
    return name


def band(ax, xs, runs_ys, label, **kw):
    """Mean line with a min–max band over seeds; runs_ys: list (per seed) of lists."""
    n = min(len(r) for r in runs_ys)
    cols = [[r[i] for r in runs_ys] for i in range(n)]
    m = [mean(c) for c in cols]
    lo = [spread(c)[0] for c in cols]
    hi = [spread(c)[1] for c in cols]
    line, = ax.plot(xs[:n], m, label=label, **kw)
    ax.fill_between(xs[:n], lo, hi, alpha=0.2, color=line.get_color())
    return line


def verdict_line(checks: list) -> str:
    ok = sum(1 for _, good, _ in checks if good)
    v = "reproduced" if ok == len(checks) else ("partly reproduced" if ok else "not reproduced")
    lines = [f"**Verdict: {v}** ({ok}/{len(checks)} checks hold)\n"]
    lines += [f"- {'✅' if good else '❌'} {claim} — {detail}" for claim, good, detail in checks]
    return "\n".join(lines) + "\n"
