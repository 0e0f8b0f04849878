#!/usr/bin/env python3
"""Run every experiment and regenerate experiments/results/*.json, the plots under
docs/img/results/ and docs/results.md.

    python3 experiments/run_all.py                 # everything, full scale (needs matplotlib for plots)
    python3 experiments/run_all.py --only puzzle   # one experiment (others keep their saved JSON)
    python3 experiments/run_all.py --from-json     # rewrite the page and plots from the saved JSON
    python3 experiments/run_all.py --scale smoke   # the CI-sized configurations
    python3 experiments/run_all.py --only real_models  # opt-in: needs /tmp/verify-models

Uses $REINIT_BIN, else target/release/reinit, else target/debug/reinit (build the release
binary first: `cargo build --release -p reinit`; the debug one is ~5-10x slower).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

EXPERIMENTS = [
    "exp_eoi_isometry",
    "exp_eoi_deep",
    "exp_pennington",
    "exp_burkholz",
    "exp_resnet",
    "exp_lsuv",
    "exp_puzzle",
    "exp_real_models",  # opt-in (OPT_IN): runs only when named in --only
]
RESULTS = HERE / "results"
DOCS = common.ROOT / "docs"
IMG = DOCS / "img" / "results"


def short(name: str) -> str:
    return name.removeprefix("exp_")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def section(mod, res: dict) -> str:
    checks = mod.checks(res)
    md = f"## {mod.TITLE}\n\n**Paper's claim.** {mod.CLAIM}\n\n**Setup.** {mod.SETUP}\n\n"
    md += f"**Command.** `python3 experiments/run_all.py --only {short(mod.__name__)}` "
    cpu = f" ({res['_cpu_s']:.0f} s CPU)" if "_cpu_s" in res else ""
    md += f"(one of its runs: `{res.get('command', '')}`); wall time {res['_wall_s']:.0f} s{cpu}, "
    md += f"load average before/after {res['_load'][0]} / {res['_load'][1]}.\n\n"
    md += mod.report(res, IMG) + "\n" + common.verdict_line(checks) + "\n"
    notes = getattr(mod, "NOTES", "")
    if notes:
        md += notes.strip() + "\n\n"
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="experiment name(s), e.g. puzzle")
    ap.add_argument("--scale", choices=["full", "smoke"], default="full")
    ap.add_argument("--from-json", action="store_true", help="do not run; rebuild the page from results/*.json")
    a = ap.parse_args(argv)
    names = [n for n in EXPERIMENTS if not a.only or short(n) in a.only]
    unknown = set(a.only) - {short(n) for n in EXPERIMENTS}
    if unknown:
        ap.error(f"unknown experiment(s) {sorted(unknown)}; known: {[short(n) for n in EXPERIMENTS]}")
    RESULTS.mkdir(exist_ok=True)
    t_all = time.time()
    for name in names:
        mod = importlib.import_module(name)
        path = RESULTS / f"{short(name)}.json"
        if a.from_json:
            continue
        if getattr(mod, "OPT_IN", False) and short(name) not in a.only:
            print(f"[{time.strftime('%H:%M:%S')}] {short(name)}: opt-in, not run "
                  f"(`--only {short(name)}`); its saved JSON is kept", flush=True)
            continue
        if a.scale not in mod.CONFIGS:
            print(f"[{time.strftime('%H:%M:%S')}] {short(name)}: no {a.scale} scale, not run", flush=True)
            continue
        why = mod.available() if hasattr(mod, "available") else None
        if why:
            print(f"[{time.strftime('%H:%M:%S')}] {short(name)}: skipped: {why}", flush=True)
            continue
        t0, l0 = time.time(), load_avg()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"[{time.strftime('%H:%M:%S')}] {short(name)} ({a.scale}) ...", flush=True)
        res = mod.run(mod.CONFIGS[a.scale])
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res["_wall_s"], res["_load"], res["_scale"] = time.time() - t0, [l0, load_avg()], a.scale
        res["_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        res["_binary"] = common.reinit_bin()
        path.write_text(json.dumps(res, indent=1) + "\n")
        ok = sum(c[1] for c in mod.checks(res))
        print(f"    {res['_wall_s']:.0f} s, {ok}/{len(mod.checks(res))} checks hold", flush=True)
    # the page, from every saved result
    body, total, summary = [], 0.0, []
    for name in EXPERIMENTS:
        mod = importlib.import_module(name)
        path = RESULTS / f"{short(name)}.json"
        if not path.exists():
            body.append(f"## {mod.TITLE}\n\n_Not run yet._\n\n")
            continue
        res = json.loads(path.read_text())
        if not getattr(mod, "OPT_IN", False):  # the opt-in ones are outside the suite's budget
            total += res["_wall_s"]
        body.append(section(mod, res))
        checks = mod.checks(res)
        ok = sum(1 for c in checks if c[1])
        v = "reproduced" if ok == len(checks) else ("partly" if ok else "not reproduced")
        anchor = mod.TITLE.lower()
        anchor = "".join(ch for ch in anchor if ch.isalnum() or ch in " -").replace(" ", "-")
        summary.append(f"| [{mod.TITLE}](#{anchor}) | {v} ({ok}/{len(checks)}) |")
    head = (HERE / "results_head.md").read_text()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=common.ROOT).stdout.strip()
    head = head.replace("{{machine}}", machine()).replace("{{total}}", f"{total / 60:.1f}")
    head = head.replace("{{rev}}", rev or "?")
    table = "| experiment | verdict (checks holding) |\n|---|---|\n" + "\n".join(summary) + "\n\n"
    (DOCS / "results.md").write_text(head + "\n" + table + "".join(body))
    print(f"docs/results.md written ({time.time() - t_all:.0f} s this call, experiments total {total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
