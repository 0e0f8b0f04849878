"""EOI isometry (Nowak et al. 2024, §5.5 of schemes.md): on linear and tanh MLPs of width 64,
EOI keeps the input–output Jacobian an isometry at any density; a random mask on a dense
orthogonal init shrinks the singular values roughly as d^(L/2); He spreads them."""
from __future__ import annotations

import math

from common import Q_STAR_TANH, fmt, mean, model_file, plt, save_fig, spread, table, verify

TITLE = "EOI: exact isometry at any density (Nowak et al., ICML 2024)"
CLAIM = ("Exact orthogonal initialization builds sparse orthogonal matrices (Givens rotations "
         "from the identity), so a linear network's input–output Jacobian keeps every singular "
         "value at 1 at any density; a random mask on an orthogonal init does not (singular "
         "values shrink about √d per layer, d^(L/2) overall), and He's Gaussian init spreads them.")
SETUP = ("MLPs of 8 Gemm layers, width 64, 64 inputs and 64 outputs (a square Jacobian, all "
         "64 singular values exact from `verify`'s probe, `--steps 0`), linear and tanh "
         "activations; densities 0.03–1; arms `eoi` (σw 1), `random-mask --base orthogonal` "
         "(same density, uniform per layer) and dense `he`; tanh inputs at q* = 0.0259, linear "
         "inputs standardized; 3 seeds.")

CONFIGS = {
    "full": dict(depth=8, width=64, seeds=[0, 1, 2],
                 densities=[0.03, 0.0625, 0.125, 0.25, 0.5, 1.0], acts=["linear", "tanh"]),
    "smoke": dict(depth=4, width=64, seeds=[0], densities=[0.0625, 0.5], acts=["linear"]),
}


def _sv(run):
    j = run["jacobian"]
    return dict(s_min=j["min_sv"], s_max=j["max_sv"], mean_sq=j["mean_sq_sv"], var_sq=j["var_sq_sv"])


def run(cfg):
    res = {"cfg": cfg, "points": []}
    for act in cfg["acts"]:
        m = model_file("mlp", depth=cfg["depth"], width=cfg["width"], act=act,
                       n_classes=cfg["width"])
        q = Q_STAR_TANH if act == "tanh" else None
        for seed in cfg["seeds"]:
            r = verify(m, "he", steps=0, seed=seed, input_q=q)
            res["points"].append(dict(act=act, arm="he", density=1.0, seed=seed, **_sv(r)))
            for d in cfg["densities"]:
                for arm, params in (("eoi", {"density": d}),
                                    ("random-mask", {"density": d, "base": "orthogonal"})):
                    r = verify(m, arm, steps=0, seed=seed, input_q=q, params=params)
                    res["command"] = r["command"]
                    res["points"].append(dict(act=act, arm=arm, density=d, seed=seed, **_sv(r)))
    return res


def _pts(res, act, arm, d=None):
    return [p for p in res["points"] if p["act"] == act and p["arm"] == arm
            and (d is None or p["density"] == d)]


def shrink_exponent(res, act, d):
    """log(mean s²) / (L·log d) for random-mask: 1 when s² shrinks as d^L (s as d^(L/2))."""
    L = res["cfg"]["depth"]
    vals = [math.log(p["mean_sq"]) / (L * math.log(d)) for p in _pts(res, act, "random-mask", d)]
    return mean(vals)


def checks(res):
    L = res["cfg"]["depth"]
    eoi_lin = _pts(res, "linear", "eoi")
    worst = max(max(abs(p["s_min"] - 1), abs(p["s_max"] - 1)) for p in eoi_lin)
    ds = [d for d in res["cfg"]["densities"] if d <= 0.5]
    exps = [shrink_exponent(res, "linear", d) for d in ds]
    he = _pts(res, "linear", "he")
    he_ratio = min(p["s_max"] / max(p["s_min"], 1e-30) for p in he)
    out = [
        ("linear EOI: every singular value is 1 at every density", worst < 1e-3,
         f"max |s − 1| = {fmt(worst)} over densities {res['cfg']['densities']}, L = {L}"),
        ("linear random mask: s² shrinks like d^L (exponent log(E s²)/(L log d) in 0.7–1.3)",
         all(0.7 <= e <= 1.3 for e in exps),
         "exponents " + ", ".join(f"d={d}: {fmt(e)}" for d, e in zip(ds, exps))),
        ("linear He: the spectrum spreads (s_max/s_min > 10)", he_ratio > 10,
         f"smallest s_max/s_min over seeds {fmt(he_ratio)}"),
    ]
    if "tanh" in res["cfg"]["acts"]:
        e = _pts(res, "tanh", "eoi")
        cond_e = max(p["s_max"] / p["s_min"] for p in e)
        cond_h = min(p["s_max"] / max(p["s_min"], 1e-30) for p in _pts(res, "tanh", "he"))
        out.append(("tanh (inputs at q*): EOI stays near-isometric at every density "
                    "(s_max/s_min < 10), He does not (≥ 1000× EOI's)",
                    cond_e < 10 and cond_h > 1000 * cond_e,
                    f"EOI worst s_max/s_min {fmt(cond_e)}, He best {fmt(cond_h)}"))
    return out


def report(res, img_dir):
    rows = []
    for act in res["cfg"]["acts"]:
        for arm in ("eoi", "random-mask"):
            for d in res["cfg"]["densities"]:
                ps = _pts(res, act, arm, d)
                rows.append([act, arm, d, mean([p["s_min"] for p in ps]),
                             mean([p["s_max"] for p in ps]), mean([p["mean_sq"] for p in ps]),
                             mean([p["var_sq"] for p in ps])])
        ps = _pts(res, act, "he")
        rows.append([act, "he (dense)", 1.0, mean([p["s_min"] for p in ps]),
                     mean([p["s_max"] for p in ps]), mean([p["mean_sq"] for p in ps]),
                     mean([p["var_sq"] for p in ps])])
    md = f"Jacobian singular values at init, depth {res['cfg']['depth']}, mean over seeds:\n\n"
    md += table(["act", "arm", "density", "s_min", "s_max", "E[s²]", "Var[s²]"], rows)
    ds = [d for d in res["cfg"]["densities"] if d <= 0.5]
    md += "\nRandom-mask shrink exponent log(E[s²]) / (L·log d) (1 = the d^(L/2) law for s): "
    md += ", ".join(f"d = {d}: {fmt(shrink_exponent(res, 'linear', d))}" for d in ds) + "\n"
    p = plt()
    if p is not None:
        acts = res["cfg"]["acts"]
        fig, axes = p.subplots(1, len(acts), figsize=(4.2 * len(acts), 3.3), squeeze=False)
        for ax, act in zip(axes[0], acts):
            dens = res["cfg"]["densities"]
            for arm, style in (("eoi", "-"), ("random-mask", "--")):
                for key, mk in (("s_max", "^"), ("s_min", "v")):
                    ys = [[p_[key] for p_ in _pts(res, act, arm, d)] for d in dens]
                    ln, = ax.plot(dens, [mean(y) for y in ys], style, marker=mk, label=f"{arm} {key}")
                    ax.fill_between(dens, [spread(y)[0] for y in ys], [spread(y)[1] for y in ys],
                                    alpha=0.2, color=ln.get_color())
            he = _pts(res, act, "he")
            for key in ("s_max", "s_min"):
                ax.axhline(mean([p_[key] for p_ in he]), color="grey", ls=":", lw=1)
            ax.text(dens[0], mean([p_["s_max"] for p_ in he]), " He s_max", fontsize=7, va="bottom")
            ax.text(dens[0], mean([p_["s_min"] for p_ in he]), " He s_min", fontsize=7, va="bottom")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("density d")
            ax.set_ylabel("Jacobian singular value")
            ax.set_title(f"{act} MLP, L = {res['cfg']['depth']}, width {res['cfg']['width']}")
        axes[0][0].legend(fontsize=7, loc="center right")
        md += f"\n![EOI isometry](img/results/{save_fig(fig, img_dir, 'eoi_isometry.png')})\n"
    return md

NOTES = """
Linear nets: EOI's singular values are 1 to f32 precision at every density (max |s − 1| =
5.9e-7; the construction is exactly orthogonal); the random mask's mean squared singular
value follows d^L almost exactly (exponent 0.99–1.02), with s_min at 0 (masked-out
rows/columns) below d = 0.5; He's product of Gaussians spans eight orders of magnitude
(s_min 1.2e-8, s_max 4.1). Tanh nets (inputs at q* of the critical pair): EOI with its
default σw = 1 is slightly sub-critical for tanh (E[s²] 0.75–0.78 after 8 layers, condition
number ≤ 3.81), still near-isometric at every density; the random mask on an orthogonal init
with the tanh gain 5/3 goes from vanishing (E[s²] ≤ 8e-5 at d ≤ 0.125) to expanding (1.8 at
d = 0.5, 36 at d = 1, s_max up to 15), and He (gain 5/3) is chaotic (E[s²] 27, s_min 0).
"""
