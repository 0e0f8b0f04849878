#!/usr/bin/env python3
"""reinit's own phase timings (--json timings_ms) and its peak anonymous vs file-backed RSS
(polled from /proc/PID/status every 50 ms), one run per model and scheme.

    python3 benches/e2e/phases.py [--dir /tmp/reinit-e2e] [--reinit PATH] [--models ...] [--schemes ...]
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "RssAnon", "RssFile"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/reinit-e2e")
    ap.add_argument("--reinit", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(run.ROOT, "target-bench")), "release", "reinit"))
    ap.add_argument("--models", default="resnet50,bert_base,gpt_ext")
    ap.add_argument("--schemes", default="he,orthogonal,eoi,idinit")
    args = ap.parse_args()
    paths = run.model_paths(args.dir)
    rows = []
    print("| model | scheme | wall s | load s | analyze+plan s | init s | write s | "
          "peak RssAnon MiB | peak RssFile MiB | load avg |\n|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        src = paths[name]
        out = os.path.join(os.path.dirname(src), f"phases_{name}.onnx")
        for s in args.schemes.split(","):
            cmd = [args.reinit, src, "--scheme", s, "--seed", "1", "-o", out, "--force", "-q", "--json"]
            if s == "eoi":
                cmd[4:4] = ["--density", "0.1"]
            load = run.loadavg()
            t = time.perf_counter()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            peak = {"RssAnon": 0, "RssFile": 0}
            import threading

            def poll():
                while p.poll() is None:
                    st = status(p.pid)
                    for k in peak:
                        peak[k] = max(peak[k], st.get(k, 0))
                    time.sleep(0.05)

            th = threading.Thread(target=poll)
            th.start()
            report = json.loads(p.stdout.read())
            p.wait()
            th.join()
            wall = time.perf_counter() - t
            run.cleanup(out)
            tm = report["timings_ms"]
            rows.append({"model": name, "scheme": s, "wall_s": wall, "loadavg": load,
                         **{k: v / 1e3 for k, v in tm.items()},
                         "peak_rss_anon_mib": peak["RssAnon"] / run.MiB,
                         "peak_rss_file_mib": peak["RssFile"] / run.MiB})
            r = rows[-1]
            print(f"| {name} | {s} | {wall:.2f} | {tm['load'] / 1e3:.2f} | "
                  f"{r['analyze_and_plan']:.2f} | {r['init']:.2f} | {r['write']:.2f} | "
                  f"{r['peak_rss_anon_mib']:.0f} | {r['peak_rss_file_mib']:.0f} | {load:.1f} |", flush=True)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "phases.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
