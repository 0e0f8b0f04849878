"""LSUV (Mishkin & Matas, ICLR 2016): after orthonormal pre-init, each layer is rescaled in
forward order until its output variance on a calibration batch is 1 (± 0.1); the paper says
such nets train at least as fast as orthogonal-only init."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh

from common import apply, band, fmt, mean, model_file, plt, save_fig, spread, steps_to, table, verify, work_dir

TITLE = "LSUV: layer-sequential unit variance (Mishkin & Matas, ICLR 2016)"
CLAIM = ("Orthonormal init followed by a per-layer rescaling to unit output variance on one "
         "data batch gives every layer variance 1 (± tol 0.1) and trains deep thin nets at least "
         "as fast as orthogonal init alone.")
SETUP = ("Variance: 20-layer MLPs (width 64, tanh and ReLU) and a 10-layer ReLU CNN (16 "
         "channels, 1×8×8), `reinit apply --scheme lsuv --calibration-data X.npy` with 64 "
         "Gaussian samples; every Gemm/Conv output variance re-measured on the same samples "
         "with onnxruntime (independent of reinit's own report); 2 seeds. Training: the two MLPs, "
         "digits, SGD (momentum 0.9) lr 0.01, 300 steps, 3 seeds, `lsuv` vs `orthogonal`; steps "
         "until the 10-step mean loss reaches 1.0.")

CONFIGS = {
    "full": dict(mlp_depth=20, cnn_depth=10, width=64, seeds=[0, 1, 2], steps=300, lr=0.01,
                 threshold=1.0, threshold2=0.5, var_seeds=[0, 1]),
    "smoke": dict(mlp_depth=8, cnn_depth=4, width=32, seeds=[0], steps=120, lr=0.01,
                  threshold=1.0, threshold2=None, var_seeds=[0]),
}


def _models(cfg):
    return {
        "tanh MLP": (model_file("mlp", depth=cfg["mlp_depth"], width=cfg["width"], act="tanh"), (64,)),
        "relu MLP": (model_file("mlp", depth=cfg["mlp_depth"], width=cfg["width"], act="relu"), (64,)),
        "relu CNN": (model_file("cnn", depth=cfg["cnn_depth"], channels=16, act="relu"), (1, 8, 8)),
    }


def ort_layer_variances(path: str, x: np.ndarray) -> list:
    """Variance of every Gemm/Conv output (pre-activation) on x, in graph order."""
    import onnxruntime as ort

    m = onnx.load(path)
    outs = [n.output[0] for n in m.graph.node if n.op_type in ("Gemm", "Conv")]
    known = {o.name for o in m.graph.output}
    for o in outs:
        if o not in known:
            m.graph.output.append(oh.make_tensor_value_info(o, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    vals = dict(zip(names, sess.run(None, {"input": x})))
    return [float(np.var(vals[o].astype(np.float64))) for o in outs]


def run(cfg):
    res = {"cfg": cfg, "variance": [], "train": []}
    for name, (m, shape) in _models(cfg).items():
        for seed in cfg["var_seeds"]:
            x = np.random.default_rng(100 + seed).standard_normal((64, *shape)).astype(np.float32)
            cal = work_dir() / f"lsuv_cal_{seed}_{'x'.join(map(str, shape))}.npy"
            np.save(cal, x)
            rep, out = apply(m, "lsuv", seed=seed, params={"calibration_data": str(cal)})
            res["variance"].append(dict(model=name, seed=seed,
                                        reported=[l["output_variance"] for l in rep["lsuv"]["layers"]],
                                        iterations=[l["iterations"] for l in rep["lsuv"]["layers"]],
                                        measured=ort_layer_variances(out, x)))
    for name in ("tanh MLP", "relu MLP"):
        m = _models(cfg)[name][0]
        for scheme in ("lsuv", "orthogonal"):
            for seed in cfg["seeds"]:
                r = verify(m, scheme, steps=cfg["steps"], seed=seed, lr=cfg["lr"])
                if scheme == "lsuv":
                    res["command"] = r["command"]
                res["train"].append(dict(model=name, arm=scheme, seed=seed, loss=r["loss"],
                                         verdict=r["verdict"], heldout=r["heldout"]["value"],
                                         to_threshold=steps_to(r["loss"], cfg["threshold"])))
    return res


def _to(res, r, key="threshold"):
    return steps_to(r["loss"], res["cfg"][key])


def _steps(res, model, arm, key="threshold"):
    n = res["cfg"]["steps"] + 1
    return mean([_to(res, r, key) or n for r in res["train"]
                 if r["model"] == model and r["arm"] == arm])


def checks(res):
    worst_m = max(abs(v - 1) for p in res["variance"] for v in p["measured"])
    worst_r = max(abs(v - 1) for p in res["variance"] for v in p["reported"])
    out = [
        ("every layer's output variance is 1 ± 0.1 (onnxruntime, same samples)", worst_m <= 0.1,
         f"max |Var − 1| measured {fmt(worst_m)}, reported by reinit {fmt(worst_r)}"),
    ]
    # Steps to a loss threshold differ within the seed spread (see the notes below), so a
    # one-seed run (the CI smoke config) cannot test the ordering: it is asserted with ≥ 3 seeds.
    if len(res["cfg"].get("seeds", [])) < 3:
        return out
    for model in ("tanh MLP", "relu MLP"):
        sl, so = _steps(res, model, "lsuv"), _steps(res, model, "orthogonal")
        out.append((f"{model}: LSUV reaches the loss threshold at least as fast as orthogonal (≤ 1.2×)",
                    sl <= 1.2 * so, f"mean steps lsuv {fmt(sl)}, orthogonal {fmt(so)}"))
    t2 = res["cfg"].get("threshold2")
    if t2:
        sl, so = _steps(res, "tanh MLP", "lsuv", "threshold2"), _steps(res, "tanh MLP", "orthogonal", "threshold2")
        out.append((f"tanh MLP: ... and to the lower loss {t2} (≤ 1.2×)", sl <= 1.2 * so,
                    f"mean steps lsuv {fmt(sl)}, orthogonal {fmt(so)}"))
    return out


def report(res, img_dir):
    rows = []
    for p in res["variance"]:
        rows.append([p["model"], p["seed"], len(p["measured"]), min(p["measured"]), max(p["measured"]),
                     min(p["reported"]), max(p["reported"]), max(p["iterations"])])
    md = "Per-layer output variance after LSUV (64 Gaussian calibration samples):\n\n"
    md += table(["model", "seed", "layers", "min Var (ORT)", "max Var (ORT)", "min (reported)",
                 "max (reported)", "max iterations"], rows)
    rows = []
    for model in ("tanh MLP", "relu MLP"):
        for arm in ("lsuv", "orthogonal"):
            rs = [r for r in res["train"] if r["model"] == model and r["arm"] == arm]
            acc = [r["heldout"] for r in rs]
            rows.append([model, arm, ", ".join(r["verdict"] for r in rs),
                         ", ".join(fmt(_to(res, r)) for r in rs), _steps(res, model, arm),
                         _steps(res, model, arm, "threshold2") if res["cfg"].get("threshold2") else "–",
                         f"{fmt(mean(acc))} [{fmt(spread(acc)[0])}–{fmt(spread(acc)[1])}]"])
    md += f"\nTraining (steps to loss {res['cfg']['threshold']}; – = not reached):\n\n"
    md += table(["model", "arm", "verdicts", "steps to threshold", "mean (unreached = steps+1)",
                 f"mean steps to {res['cfg'].get('threshold2')}", "held-out acc [min–max]"], rows)
    p = plt()
    if p is not None:
        fig, axes = p.subplots(1, 3, figsize=(12, 3.2))
        # distinct markers and dashes: the models' variances coincide, one line hid another
        styles = iter([("o", "-", 7), ("x", "--", 6), ("s", ":", 4)])
        for p_ in res["variance"]:
            if p_["seed"] == res["cfg"]["var_seeds"][0]:
                mk, ls, ms = next(styles, (".", "-", 4))
                axes[0].plot(range(1, len(p_["measured"]) + 1), p_["measured"], marker=mk, ls=ls,
                             ms=ms, mfc="none", label=p_["model"])
        axes[0].axhspan(0.9, 1.1, color="grey", alpha=0.2)
        axes[0].set_xlabel("layer")
        axes[0].set_ylabel("output variance (ORT)")
        axes[0].legend(fontsize=7)
        for ax, model in zip(axes[1:], ("tanh MLP", "relu MLP")):
            for arm in ("lsuv", "orthogonal"):
                rs = [r for r in res["train"] if r["model"] == model and r["arm"] == arm]
                band(ax, list(range(1, len(rs[0]["loss"]) + 1)), [r["loss"] for r in rs], arm)
            ax.set_title(model)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        axes[1].set_ylabel("training loss")
        md += f"\n![LSUV](img/results/{save_fig(fig, img_dir, 'lsuv.png')})\n"
    return md

NOTES = """
The variance claim is reproduced exactly: every Gemm/Conv output variance, re-measured with
onnxruntime on the calibration samples, is within 0.015 of 1 (one rescaling per layer
suffices with zero biases), and agrees with reinit's own `lsuv` report to the printed digits.
Training: partly, and which comparison fails depends on the draw. On the tanh MLP LSUV
reaches loss 1.0 as fast as orthogonal-only init (36 vs 37 steps, mean) and loss 0.5 within
the 1.2× allowance (71 vs 64), held-out 0.88–0.95 against 0.88–0.90. On the ReLU MLP it is
slower (209 vs 171 steps to loss 1.0, the failed check), and the mean is decided by one seed:
LSUV's seeds take 193, 134 and more than 300 steps, orthogonal's 229, 147 and 138 — the two
inits' per-seed steps overlap. On these 20-layer width-64 nets the two inits differ only by
per-layer scalars close to the gain formula (the hidden layers' LSUV scales, measured with
`reinit apply` on Gaussian calibration samples: ≈ 1.59 for tanh against the gain 5/3,
1.23–1.59 for ReLU around √2), so "at least as fast" is within the seed spread here; the
paper's gains were on deeper, thinner nets (FitNets) with data-dependent scales far from
the gain formula.
"""
