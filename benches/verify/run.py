#!/usr/bin/env python3
"""`reinit verify` against PyTorch on the real-size models (run by hand).

    python3 benches/verify/export_models.py /tmp/verify-models
    cargo build --release -p reinit --bin reinit
    python3 benches/verify/run.py [--models resnet50,bert_base] [--rounds 2] [--steps 5]
        [--baseline-bin /path/to/older/reinit]

For each model and round, interleaved (ours, torch, ours, torch, ...: the
machine is shared, so ratios come from neighbouring runs; with --baseline-bin
an older binary runs in the same rounds, third):
  ours:  reinit verify M --schemes he --steps S --batch B --json --input-shape ...
         under /usr/bin/time -f %M and an address-space limit (--limit-gib);
         step_seconds, probe_seconds from the JSON, peak RSS from time.
  torch: torch_step.py M --batch B --steps S --threads T, the same.
The 1-minute load average is read before every run. Prints a markdown table
(medians over rounds; the step ratio is the median of each round's ours/torch)
and writes --out JSON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from export_models import MODELS  # noqa: E402


def timed(cmd, limit_kib, env=None):
    """(exit code, stdout, peak RSS KiB) of `cmd` under an address-space limit."""
    shell = f"ulimit -v {limit_kib}; exec /usr/bin/time -f 'PEAK_RSS_KIB %M' " + " ".join(cmd)
    p = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env)
    rss = None
    for line in p.stderr.splitlines():
        if line.startswith("PEAK_RSS_KIB"):
            rss = int(line.split()[1])
    return p.returncode, p.stdout, rss, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--dir", default="/tmp/verify-models")
    ap.add_argument("--bin", default="target/release/reinit")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-gib", type=float, default=12)
    ap.add_argument("--out", default="/tmp/verify-bench.json")
    ap.add_argument("--baseline-bin", default=None, help="an older reinit, run in the same rounds")
    args = ap.parse_args()
    limit = int(args.limit_gib * 2**20)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    rows = []
    for name in args.models.split(","):
        shape = "x".join(str(d) for d in MODELS[name][0])
        model = os.path.join(args.dir, f"{name}.onnx")
        ours_cmd = [args.bin, "verify", model, "--schemes", "he", "--steps", str(args.steps),
                    "--batch", str(args.batch), "--json", "--input-shape", shape]
        torch_cmd = [sys.executable, os.path.join(HERE, "torch_step.py"), name, "--batch",
                     str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
        res = {"model": name, "shape": shape, "ours": [], "torch": [], "baseline": []}

        def ours(cmd, key):
            load = os.getloadavg()[0]
            rc, out, rss, err = timed(cmd, limit, env)
            if rc == 0:
                run = json.loads(out)["runs"][0]
                res[key].append({"step": run["step_seconds"], "probe": run["probe_seconds"],
                                 "total": run["seconds"], "rss_kib": rss, "load": load,
                                 "estimated": run.get("estimated_bytes")})
            else:
                res[key].append({"rc": rc, "rss_kib": rss, "load": load,
                                 "error": err.strip()[-300:]})

        for _ in range(args.rounds):
            ours(ours_cmd, "ours")
            load = os.getloadavg()[0]
            rc, out, rss, err = timed(torch_cmd, limit, env)
            if rc == 0:
                res["torch"].append({"step": json.loads(out.splitlines()[-1])["step_seconds"],
                                     "rss_kib": rss, "load": load})
            else:
                res["torch"].append({"rc": rc, "rss_kib": rss, "load": load,
                                     "error": err.strip()[-300:]})
            if args.baseline_bin:
                ours([args.baseline_bin] + ours_cmd[1:], "baseline")
            print(json.dumps(res), file=sys.stderr, flush=True)
        rows.append(res)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)

    def med(runs, key):
        vals = [r[key] for r in runs if key in r and r[key] is not None]
        return statistics.median(vals) if vals else None

    fmt = lambda v, f="{:.3f}": f.format(v) if v is not None else "–"
    print(f"threads {args.threads}, batch {args.batch}, {args.steps} steps per run, "
          f"{args.rounds} interleaved rounds; binary {args.bin}")
    print()
    print("| model | batch | input | our step s | PyTorch step s | ratio | probe s (÷ step) "
          "| peak RSS ours / PyTorch MiB | load (1 min) |"
          + (" baseline step s |" if args.baseline_bin else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.baseline_bin else ""))
    for r in rows:
        s, t = med(r["ours"], "step"), med(r["torch"], "step")
        p = med(r["ours"], "probe")
        m, mt = med(r["ours"], "rss_kib"), med(r["torch"], "rss_kib")
        ratios = [o["step"] / q["step"] for o, q in zip(r["ours"], r["torch"])
                  if "step" in o and "step" in q]
        loads = [x["load"] for x in r["ours"] + r["torch"] + r["baseline"]]
        line = (f"| {r['model']} | {args.batch} | {r['shape']} | {fmt(s)} | {fmt(t)} | "
                f"{fmt(statistics.median(ratios) if ratios else None, '{:.2f}×')} | "
                f"{fmt(p, '{:.2f}')} ({fmt(p / s if p and s else None, '{:.1f}')}) | "
                f"{fmt(m / 1024 if m else None, '{:.0f}')} / {fmt(mt / 1024 if mt else None, '{:.0f}')} | "
                f"{min(loads):.1f}–{max(loads):.1f} |")
        if args.baseline_bin:
            line += f" {fmt(med(r['baseline'], 'step'))} |"
        print(line)


if __name__ == "__main__":
    main()
