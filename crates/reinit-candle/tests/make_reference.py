#!/usr/bin/env python3
"""Reference outputs from onnxruntime for every fixture (run by hand).

    python3 crates/reinit-candle/tests/make_reference.py

Writes tests/reference.json next to this script. For each fixture and each graph
input (initializers excluded) the input is deterministic:
  float inputs:   x[i] = sin(0.1 * i + 0.3) over the flattened tensor
  integer inputs: x[i] = i mod m, m = rows of the Gather table the input indexes
                  (2 when it indexes none; booleans are i mod 2)
Per output it stores the shape, sum, sum of |x|, sum of squares and the first 16
values; `tests/reference.rs` rebuilds the inputs and compares.
"""
import glob
import json
import os

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "..", "fixtures")

NP = {1: np.float32, 10: np.float16, 11: np.float64, 16: np.float32,
      6: np.int32, 7: np.int64, 9: np.bool_}


def modulus(model, name):
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == name and n.input[0] in inits:
            return int(inits[n.input[0]].dims[0])
    return 2


def main():
    out = {}
    # fixtures/ops/: one-op graphs from fixtures/make_op_fixtures.py (int_only.onnx
    # holds ops the executor refuses on purpose)
    paths = sorted(glob.glob(os.path.join(FIXTURES, "*.onnx"))) + sorted(
        p for p in glob.glob(os.path.join(FIXTURES, "ops", "*.onnx"))
        if not p.endswith("int_only.onnx"))
    for path in paths:
        name = os.path.relpath(path, FIXTURES)
        model = onnx.load(path)
        inits = {i.name for i in model.graph.initializer}
        feeds, specs = {}, []
        for inp in model.graph.input:
            if inp.name in inits:
                continue
            tt = inp.type.tensor_type
            shape = [d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim]
            n = int(np.prod(shape)) if shape else 1
            dtype = NP[tt.elem_type]
            if np.issubdtype(dtype, np.floating):
                v = np.sin(0.1 * np.arange(n, dtype=np.float64) + 0.3)
                spec = {"name": inp.name, "shape": shape, "kind": "sin"}
            else:
                m = modulus(model, inp.name)
                v = np.arange(n) % m
                spec = {"name": inp.name, "shape": shape, "kind": "mod", "modulus": m}
            feeds[inp.name] = v.astype(dtype).reshape(shape)
            specs.append(spec)
        bn_training = any(
            n.op_type == "BatchNormalization"
            and any(a.name == "training_mode" and a.i == 1 for a in n.attribute)
            for n in model.graph.node
        )
        # onnxruntime computes these in fp16; we compute in f32
        half = any(v.type.tensor_type.elem_type in (10, 16)
                   for v in list(model.graph.input) + list(model.graph.output))
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in model.graph.output]
        results = sess.run(names, feeds)
        outputs = []
        for oname, r in zip(names, results):
            r = np.asarray(r, dtype=np.float64)
            flat = r.ravel()
            outputs.append({
                "name": oname,
                "shape": list(r.shape),
                "sum": float(flat.sum()),
                "sum_abs": float(np.abs(flat).sum()),
                "sum_sq": float((flat ** 2).sum()),
                "first": [float(x) for x in flat[:16]],
            })
        out[name] = {"inputs": specs, "bn_training": bn_training,
                     "half_precision": bool(half), "outputs": outputs}
        print(f"{name}: {[o['shape'] for o in outputs]}")
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump({"onnxruntime": ort.__version__, "fixtures": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
