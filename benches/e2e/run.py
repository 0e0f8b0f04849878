#!/usr/bin/env python3
"""End-to-end benchmark: `reinit` vs the Python route (onnx + numpy) vs the copy floor.

    CARGO_TARGET_DIR=target-bench cargo build --release -p reinit
    python3 benches/e2e/run.py [--dir /tmp/reinit-e2e] [--reinit target-bench/release/reinit]
        [--models resnet50,bert_base,gpt_ext] [--schemes he,orthogonal,eoi,idinit]
        [--repeats 3] [--python-repeats 3] [--python-budget-s gpt_ext=120]
        [--blas-threads 1] [--json benches/e2e/results.json]

Generates the models with make_models.py when missing.  For every model, in one run:
the copy floors (`cp` of the model and its data file, an in-kernel copy_file_range; `dd bs=4M`,
a copy through user space; each also followed by an fsync of the copies, since reinit syncs its
outputs), then for each scheme `reinit MODEL --scheme S [--density 0.1]
--seed 1 -o OUT --force -q` and `python_route.py` doing the same job.  Wall time and peak RSS
(GNU time's %M; wait4's ru_maxrss, an overstatement, without it) and CPU time (user + sys) of each run; the median of the repeats; the load
average (/proc/loadavg) before each run is recorded next to it.  Outputs are deleted after
each run.  The page cache is not controlled (no root drop_caches on a shared machine): the
input is hot after the first run, the outputs go to the page cache and only reinit (and the
cp+fsync floor) wait for the disk.

Python route compute beyond --python-budget-s is extrapolated from measured weights of the
same shape (see python_route.py); the extrapolated seconds are added to its wall time and
reported.  OpenBLAS threads default to 1 for the Python route: on this shared 2-core machine
multi-threaded OpenBLAS QR was 10-20x slower under load (spin-waiting threads), so 1 thread is
the stronger baseline; pass --blas-threads default to leave it unset.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MiB = 1 << 20


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def measure(cmd, env=None):
    """(wall seconds, peak RSS bytes, load before, CPU seconds user+sys) of one command.

    Peak RSS comes from GNU time (`%M`) when it is installed: the child of a fork inherits
    this harness's high-water mark, so wait4's ru_maxrss overstates a small child (by
    hundreds of MiB here); GNU time forks from a tiny process.  Without it, wait4's figure
    is used and the RSS column is an upper bound."""
    load = loadavg()
    report = None
    if GNU_TIME:
        report = f"/tmp/reinit-e2e-time-{os.getpid()}.txt"
        cmd = [GNU_TIME, "-f", "%M %U %S", "-o", report] + list(cmd)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {p.returncode}: {err.decode(errors='replace')[-2000:]}")
    if report:
        with open(report) as f:
            kib, user, sys_s = f.read().split()[-3:]
        os.remove(report)
        return wall, int(kib) * 1024, load, float(user) + float(sys_s)
    return wall, ru.ru_maxrss * 1024, load, ru.ru_utime + ru.ru_stime


def model_paths(d):
    return {
        "resnet50": os.path.join(d, "resnet50.onnx"),
        "bert_base": os.path.join(d, "bert_base.onnx"),
        "gpt_ext": os.path.join(d, "gpt_ext", "gpt_ext.onnx"),
    }


def describe(path):
    m = onnx.load(path, load_external_data=False)
    sizes = {}
    for t in m.graph.initializer:
        n = 1
        for x in t.dims:
            n *= x
        sizes[t.name] = n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    weights = set()
    for node in m.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in sizes:
            weights.add(node.input[1])
    data = path + ".data"
    external = os.path.exists(data)
    return {
        "model_bytes": os.path.getsize(path),
        "data_bytes": os.path.getsize(data) if external else 0,
        "file_bytes": os.path.getsize(path) + (os.path.getsize(data) if external else 0),
        "external": external,
        "largest_tensor_bytes": max(sizes.values()),
        "largest_weight_bytes": max(sizes[w] for w in weights),
        "weights": len(weights),
    }


def cleanup(out):
    for f in (out, out + ".data"):
        if os.path.exists(f):
            os.remove(f)


def repeat(n, cmd, out, env=None, stats=None):
    runs = []
    for _ in range(n):
        wall, rss, load, cpu = measure(cmd, env)
        run = {"wall_s": wall, "rss_bytes": rss, "load": load, "cpu_s": cpu}
        if stats:
            with open(stats) as f:
                run["route"] = json.load(f)
            run["extrapolated_s"] = run["route"]["extrapolated_s"]
            run["wall_s"] = wall + run["extrapolated_s"]
            run["cpu_s"] = cpu + run["extrapolated_s"]
            os.remove(stats)
        cleanup(out)
        runs.append(run)
    return {
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "rss_bytes": statistics.median(r["rss_bytes"] for r in runs),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "load": statistics.median(r["load"] for r in runs),
        "extrapolated_s": statistics.median(r.get("extrapolated_s", 0.0) for r in runs),
        "runs": runs,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/reinit-e2e")
    ap.add_argument("--reinit", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target-bench")), "release", "reinit"))
    ap.add_argument("--models", default="resnet50,bert_base,gpt_ext")
    ap.add_argument("--schemes", default="he,orthogonal,eoi,idinit")
    ap.add_argument("--repeats", default="3", help="N, or per model: resnet50=3,gpt_ext=1")
    ap.add_argument("--python-repeats", default="3",
                    help="N, or per model: resnet50=3,gpt_ext=1")
    ap.add_argument("--python-budget-s", default="",
                    help="per model compute budget of the Python route, e.g. gpt_ext=120")
    ap.add_argument("--python-schemes", default=None, help="default: --schemes")
    ap.add_argument("--blas-threads", default="1")
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"))
    args = ap.parse_args()

    def per_model(spec, cast, default):
        out = {}
        for part in filter(None, spec.split(",")):
            if "=" in part:
                k, v = part.split("=")
                out[k] = cast(v)
            else:
                out["*"] = cast(part)
        return lambda m: out.get(m, out.get("*", default))

    py_repeats = per_model(args.python_repeats, int, 3)
    repeats = per_model(args.repeats, int, 3)
    py_budget = per_model(args.python_budget_s, float, float("inf"))
    paths = model_paths(args.dir)
    models = args.models.split(",")
    missing = [m for m in models if not os.path.exists(paths[m])]
    if missing:
        subprocess.run([sys.executable, os.path.join(HERE, "make_models.py"), args.dir,
                        "--only", ",".join(missing)], check=True)
    env = dict(os.environ)
    if args.blas_threads != "default":
        env["OPENBLAS_NUM_THREADS"] = args.blas_threads
        env["OMP_NUM_THREADS"] = args.blas_threads
    version = subprocess.run([args.reinit, "--version"], capture_output=True, text=True).stdout.strip()
    results = {
        "reinit": args.reinit, "reinit_version": version,
        "git": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip(),
        "cpus": os.cpu_count(), "argv": sys.argv, "blas_threads": args.blas_threads,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": {},
    }
    schemes = [x for x in args.schemes.split(",") if x and x != "none"]
    py_schemes = [x for x in (args.python_schemes or args.schemes).split(",") if x and x != "none"]
    for name in models:
        src = paths[name]
        info = describe(src)
        out_dir = os.path.join(os.path.dirname(src), f"out_{name}")
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "out.onnx")
        print(f"== {name}: {info['file_bytes'] / 1e6:.1f} MB, {info['weights']} weights, "
              f"largest tensor {info['largest_tensor_bytes'] / MiB:.1f} MiB", flush=True)
        r = {"info": info, "floor": {}, "reinit": {}, "python": {}}
        cp = f"cp '{src}' '{out}'"
        if info["external"]:
            cp += f" && cp '{src}.data' '{out}.data'"
        r["floor"]["cp"] = repeat(repeats(name), ["sh", "-c", cp], out)
        synced = f" && sync '{out}'" + (f" '{out}.data'" if info["external"] else "")
        r["floor"]["cp_fsync"] = repeat(repeats(name), ["sh", "-c", cp + synced], out)
        # cp (and coreutils >= 9 cat) use copy_file_range: an in-kernel copy, no bytes through
        # user space.  dd bs=4M reads and writes through user space, as any tool that changes
        # the bytes must.
        dd = f"dd if='{src}' of='{out}' bs=4M status=none"
        if info["external"]:
            dd += f" && dd if='{src}.data' of='{out}.data' bs=4M status=none"
        r["floor"]["dd"] = repeat(repeats(name), ["sh", "-c", dd], out)
        r["floor"]["dd_fsync"] = repeat(repeats(name), ["sh", "-c", dd + synced], out)
        for k, v in r["floor"].items():
            print(f"   floor {k:9s} {v['wall_s']:8.2f} s  cpu {v['cpu_s']:8.2f} s  (load {v['load']:.1f})",
                  flush=True)
        for s in schemes:
            cmd = [args.reinit, src, "--scheme", s, "--seed", "1", "-o", out, "--force", "-q"]
            if s == "eoi":
                cmd[4:4] = ["--density", "0.1"]
            r["reinit"][s] = repeat(repeats(name), cmd, out)
            v = r["reinit"][s]
            print(f"   reinit {s:10s} {v['wall_s']:8.2f} s  cpu {v['cpu_s']:8.2f} s  {v['rss_bytes'] / MiB:8.1f} MiB  "
                  f"(load {v['load']:.1f})", flush=True)
        for s in py_schemes:
            stats = os.path.join(out_dir, "route.json")
            cmd = [sys.executable, os.path.join(HERE, "python_route.py"), src, "--scheme", s,
                   "--seed", "1", "-o", out, "--stats", stats, "--budget-s", str(py_budget(name))]
            r["python"][s] = repeat(py_repeats(name), cmd, out, env=env, stats=stats)
            v = r["python"][s]
            print(f"   python {s:10s} {v['wall_s']:8.2f} s  cpu {v['cpu_s']:8.2f} s  {v['rss_bytes'] / MiB:8.1f} MiB  "
                  f"(load {v['load']:.1f}; extrapolated {v['extrapolated_s']:.1f} s)", flush=True)
        shutil.rmtree(out_dir, ignore_errors=True)
        results["models"][name] = r
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    print(table(results))


def table(results, floors=None):
    """Markdown table; `floors` (a floors-only run's JSON) supplies the dd floors when given."""
    lines = [
        "| model | scheme | reinit s (CPU s) | Python s (CPU s) | Python / reinit wall (CPU) | reinit / cp | reinit / dd "
        "| reinit / dd+fsync | reinit peak RSS MiB | RSS / file | RSS / (largest + 64 MiB) "
        "| Python peak RSS MiB | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        info = r["info"]
        cp = r["floor"]["cp"]["wall_s"]
        cps = r["floor"]["cp_fsync"]["wall_s"]
        fl = floors["models"][name]["floor"] if floors else r["floor"]
        dd = fl["dd"]["wall_s"]
        dds = fl["dd_fsync"]["wall_s"]
        for s, v in r["reinit"].items():
            py = r["python"].get(s)
            py_s = (f"{py['wall_s']:.2f} ({py['cpu_s']:.2f})" + ("*" if py["extrapolated_s"] > 0 else "")
                    if py else "–")
            ratio = f"{py['wall_s'] / v['wall_s']:.1f}× ({py['cpu_s'] / v['cpu_s']:.1f}×)" if py else "–"
            rss = v["rss_bytes"]
            ext = (f"{rss / (info['largest_tensor_bytes'] + 64 * MiB):.2f}" if info["external"] else "–")
            lines.append(
                f"| {name} | {s} | {v['wall_s']:.2f} ({v['cpu_s']:.2f}) | {py_s} | {ratio} | {v['wall_s'] / cp:.1f}× | "
                f"{v['wall_s'] / dd:.1f}× | {v['wall_s'] / dds:.1f}× | {rss / MiB:.0f} | "
                f"{rss / info['file_bytes']:.2f} | {ext} | "
                f"{py['rss_bytes'] / MiB if py else float('nan'):.0f} | {v['load']:.1f} |")
        lines.append(f"| {name} | copy floor | cp {cp:.2f}, cp+fsync {cps:.2f}, dd {dd:.2f}, "
                     f"dd+fsync {dds:.2f} | | | | | | | file {info['file_bytes'] / MiB:.0f} MiB | "
                     f"largest tensor {info['largest_tensor_bytes'] / MiB:.0f} MiB | | "
                     f"{r['floor']['cp']['load']:.1f} (dd: {fl['dd']['load']:.1f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        # --table RESULTS.json [FLOORS.json]
        with open(sys.argv[2]) as f:
            res = json.load(f)
        fl = None
        if len(sys.argv) > 3:
            with open(sys.argv[3]) as f:
                fl = json.load(f)
        print(table(res, fl))
    else:
        main()
