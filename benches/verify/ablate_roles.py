#!/usr/bin/env python3
"""Which layers of an init make a residual net without normalization blow up?
Mixes, per layer role, the weights of two schemes' rewrites of one model and
trains each mix with `reinit verify` on the stored weights (issue 14, README
"Session 8").

    python3 benches/verify/ablate_roles.py /tmp/verify-models/resnet18_nonorm.onnx \
        --input-shape 3x32x32 --grid idinit,fixup            # all 2^5 mixes
    python3 benches/verify/ablate_roles.py MODEL --input-shape 3x32x32 \
        --variant "first=idinit*0.354" --variant "first=idinit,classifier=zero"

Roles come from `reinit inspect`: stem (layers outside every block but the
classifier), first (every branch layer but the last), last (the last layer of
each branch), shortcut (projection shortcuts), classifier (the linear layer).
A variant is `role=SOURCE[*SCALE]` pairs; SOURCE is a scheme name (its rewrite
with --seed 0), `zero`, or `cm` (channel-maintain identity: 1 at the kernel
centre for input channel o mod C_in). Unnamed roles keep the weights of
--base (default idinit; with --grid A,B, of A). Every run: `reinit verify MIX --input-shape S --json -q [--lr LR]`,
the default recipe otherwise; one line per run with verdict, loss at step 0,
the loss at step 1, its peak, the mean of the first twentieth and last
tenth, held-out accuracy.
Needs onnx and numpy; the mixes are written to a temporary directory.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

ROLES = ["stem", "first", "last", "shortcut", "classifier"]


def roles_of(reinit, model):
    out = subprocess.run([reinit, "inspect", model], capture_output=True, text=True, check=True).stdout
    roles = {r: [] for r in ROLES}
    for line in out.splitlines()[1:]:
        f = line.split()
        if len(f) < 8 or not f[0].isdigit():
            continue
        name, kind = f[1], f[2]
        if kind == "linear":
            roles["classifier"].append(name)
        elif " first" in line:
            roles["first"].append(name)
        elif " last" in line:
            roles["last"].append(name)
        elif " shortcut" in line:
            roles["shortcut"].append(name)
        else:
            roles["stem"].append(name)
    return roles


def channel_maintain(shape):
    a = np.zeros(shape, np.float32)
    centre = tuple(k // 2 for k in shape[2:])
    for o in range(shape[0]):
        a[(o, o % shape[1]) + centre] = 1.0
    return a


def parse_variant(text):
    spec = {}
    for part in filter(None, text.split(",")):
        role, _, src = part.partition("=")
        if role not in ROLES:
            sys.exit(f"unknown role {role!r}: one of {ROLES}")
        src, _, scale = src.partition("*")
        spec[role] = (src, float(scale or 1.0))
    return spec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--input-shape", required=True)
    ap.add_argument("--reinit", default="target/release/reinit")
    ap.add_argument("--grid", help="two schemes A,B: every mix of their roles")
    ap.add_argument("--base", default="idinit", help="scheme of unnamed roles (default idinit)")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--lr", action="append", default=[], help="also run each mix at this lr")
    args = ap.parse_args()

    roles = roles_of(args.reinit, args.model)
    variants = [(v, parse_variant(v)) for v in args.variant]
    if args.grid:
        a, b = args.grid.split(",")
        args.base = a
        for combo in itertools.product([a, b], repeat=len(ROLES)):
            label = " ".join(f"{r}={s}" for r, s in zip(ROLES, combo))
            variants.append((label, {r: (s, 1.0) for r, s in zip(ROLES, combo)}))
    schemes = {args.base} | {s for _, v in variants for s, _ in v.values()} - {"zero", "cm"}
    role_of = {n: r for r, ns in roles.items() for n in ns}

    with tempfile.TemporaryDirectory() as tmp:
        arrays = {}
        for s in sorted(schemes):
            path = os.path.join(tmp, f"{s}.onnx")
            subprocess.run([args.reinit, "apply", args.model, "--scheme", s, "--seed", "0", "-o", path],
                           check=True, capture_output=True)
            arrays[s] = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
        for label, spec in variants or [("base", {})]:
            m = onnx.load(os.path.join(tmp, f"{args.base}.onnx"))
            for t in m.graph.initializer:
                if t.name not in role_of:
                    continue
                src, scale = spec.get(role_of[t.name], (args.base, 1.0))
                base = arrays[args.base][t.name]
                if src == "zero":
                    a = np.zeros_like(base)
                elif src == "cm":
                    a = channel_maintain(base.shape)
                else:
                    a = arrays[src][t.name]
                t.CopyFrom(numpy_helper.from_array((a * scale).astype(np.float32), t.name))
            mix = os.path.join(tmp, "mix.onnx")
            onnx.save(m, mix)
            for lr in args.lr or [None]:
                cmd = [args.reinit, "verify", mix, "--input-shape", args.input_shape, "--json", "-q"]
                cmd += ["--lr", lr] if lr else []
                d = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
                r = d["runs"][0]
                loss = [float("nan") if x is None else x for x in r["loss"]]
                n = len(loss)
                first = np.nanmean(loss[: max(1, n // 20)])
                last = np.mean(loss[-max(1, n // 10):])
                print(f"{label:60s} lr {d['lr']:<6} {r['verdict']:9s} L0 {loss[0]:.3g} L1 {loss[1]:.3g} peak {np.nanmax(loss):.3g} "
                      f"{first:.3g} -> {last:.3g} held-out {r['heldout']['value']:.3f} | {r['verdict_reason']}",
                      flush=True)


if __name__ == "__main__":
    main()
