"""IDInit (Pan et al., ICLR 2025) and Fixup (Zhang et al., ICLR 2019) on ResNets without
normalization: He init's residual sum grows with depth and diverges at a learning rate at
which IDInit and Fixup train; IDInit with ε = 0 (branch-last exactly zero) as ablation; every
identity-skip block of an IDInit / Fixup net is the identity at init (block output = input
within ε), checked with onnxruntime on the rewritten model."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh

from common import apply, band, fmt, mean, model_file, plt, save_fig, spread, table, verify

TITLE = "IDInit and Fixup on normalization-free ResNets (Pan et al. 2025; Zhang et al. 2019)"
CLAIM = ("Without normalization a ResNet's residual sum grows with the number of blocks under "
         "He init, which then diverges at a learning rate where identity-preserving inits train: "
         "Fixup (branch-last layers and classifier zero, other branch layers He·L^(−1/(2m−2))) "
         "and IDInit (identity-like weights, branch-last ε = 1e-6). IDInit keeps every block the "
         "identity at init; its ε is what lets the first branch layers receive gradient at step 1.")
SETUP = ("CIFAR-style basic-block ResNets without BatchNorm (convs with biases; "
         "`models.resnet(n, stages=2, channels=16)`: stem, 2 stages of n blocks, 16→32 channels, "
         "stride-2 projection, global average pool, linear head), n ∈ {1, 4, 8} blocks per stage, "
         "on the 1×8×8 digits; SGD (momentum 0.9) at one lr for all arms, 300 steps, batch 16, "
         "3 seeds; arms `he`, `fixup`, `idinit`, `idinit --epsilon 0`. Identity check: "
         "`reinit apply` then onnxruntime on 8 random non-negative inputs, "
         "‖block output − block input‖ / ‖block input‖ for every identity-skip block.")

ARMS = [
    ("he", "he", {}),
    ("fixup", "fixup", {}),
    ("idinit", "idinit", {}),
    ("idinit ε=0", "idinit", {"epsilon": 0}),
]
CONFIGS = {
    "full": dict(blocks=[1, 4, 8], channels=16, steps=300, lr=0.1, seeds=[0, 1, 2],
                 identity_blocks=4, min_acc=0.5),
    "smoke": dict(blocks=[3], channels=8, steps=150, lr=0.1, seeds=[0], identity_blocks=2,
                  min_acc=0.2),
}


def block_identity_errors(path: str) -> list:
    """max over 8 random inputs of ‖Add output − skip input‖/‖skip input‖ for every Add
    whose skip input is the block input itself (identity shortcut)."""
    import onnxruntime as ort

    m = onnx.load(path)
    adds = [n for n in m.graph.node if n.op_type == "Add"]
    produced_by_conv = {o for n in m.graph.node if n.op_type == "Conv" for o in n.output}
    pairs = [(n.output[0], n.input[1]) for n in adds if n.input[1] not in produced_by_conv]
    for name in {t for p in pairs for t in p}:
        m.graph.output.append(oh.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.abs(np.random.default_rng(0).standard_normal((8, 1, 8, 8))).astype(np.float32)
    names = [o.name for o in sess.get_outputs()]
    vals = dict(zip(names, sess.run(None, {"input": x})))
    errs = []
    for out, skip in pairs:
        d = (vals[out] - vals[skip]).reshape(8, -1)
        s = vals[skip].reshape(8, -1)
        errs.append(float(np.max(np.linalg.norm(d, axis=1) / np.maximum(np.linalg.norm(s, axis=1), 1e-30))))
    return errs


def run(cfg):
    res = {"cfg": cfg, "train": [], "identity": {}}
    m = model_file("resnet", blocks_per_stage=cfg["identity_blocks"], channels=cfg["channels"])
    for label, scheme, params in ARMS:
        _, out = apply(m, scheme, seed=0, params=params)
        res["identity"][label] = block_identity_errors(out)
    for n in cfg["blocks"]:
        m = model_file("resnet", blocks_per_stage=n, channels=cfg["channels"])
        for label, scheme, params in ARMS:
            for seed in cfg["seeds"]:
                r = verify(m, scheme, steps=cfg["steps"], seed=seed, lr=cfg["lr"], params=params)
                if label == "idinit":
                    res["command"] = r["command"]
                res["train"].append(dict(blocks=n, arm=label, seed=seed, loss=r["loss"],
                                         verdict=r["verdict"], heldout=r["heldout"]["value"],
                                         initial=r["initial_loss"], final=r["final_loss"],
                                         q_ratio=r["signal"].get("q_ratio") if isinstance(r["signal"], dict) else None))
    return res


def _tr(res, n, arm):
    return [r for r in res["train"] if r["blocks"] == n and r["arm"] == arm]


def checks(res):
    idm = res["identity"]
    nmax = max(res["cfg"]["blocks"])
    lim = res["cfg"]["min_acc"]
    he = _tr(res, nmax, "he")
    acc = lambda n, arm: [r["heldout"] for r in _tr(res, n, arm)]  # noqa: E731
    learns = lambda arm: all(min(acc(n, arm)) >= lim for n in res["cfg"]["blocks"])  # noqa: E731
    return [
        ("IDInit: every identity-skip block is the identity at init within 1e-4 (ε = 1e-6)",
         max(idm["idinit"]) <= 1e-4, f"max relative deviation {fmt(max(idm['idinit']))}"),
        ("IDInit ε = 0 and Fixup: blocks exactly the identity", max(idm["idinit ε=0"]) == 0 and
         max(idm["fixup"]) == 0, f"{fmt(max(idm['idinit ε=0']))}, {fmt(max(idm['fixup']))}"),
        ("He: blocks are not the identity (deviation > 0.1)", min(idm["he"]) > 0.1,
         f"min relative deviation {fmt(min(idm['he']))}"),
        (f"{nmax} blocks/stage at lr {res['cfg']['lr']}: He diverges or learns nothing (held-out < 0.3 every seed)",
         all(r["verdict"] == "diverged" or r["heldout"] < 0.3 for r in he),
         f"verdicts {[r['verdict'] for r in he]}, held-out {[fmt(r['heldout']) for r in he]}"),
        (f"IDInit learns at every depth (held-out ≥ {lim} every seed)", learns("idinit"),
         ", ".join(f"{n}: {[fmt(a) for a in acc(n, 'idinit')]}" for n in res["cfg"]["blocks"])),
        (f"Fixup learns at every depth (held-out ≥ {lim} every seed)", learns("fixup"),
         ", ".join(f"{n}: {[fmt(a) for a in acc(n, 'fixup')]}" for n in res["cfg"]["blocks"])),
    ]


def report(res, img_dir):
    md = "Identity at init (onnxruntime, max over blocks of ‖y − x‖/‖x‖, "
    md += f"{res['cfg']['identity_blocks']} blocks per stage):\n\n"
    md += table(["arm", "identity-skip blocks", "max deviation", "min deviation"],
                [[a, len(v), max(v), min(v)] for a, v in res["identity"].items()])
    rows = []
    for n in res["cfg"]["blocks"]:
        for label, _, _ in ARMS:
            rs = _tr(res, n, label)
            acc = [r["heldout"] for r in rs]
            rows.append([n, label, ", ".join(r["verdict"] for r in rs),
                         mean([r["initial"] for r in rs]), mean([r["final"] for r in rs]),
                         f"{fmt(mean(acc))} [{fmt(spread(acc)[0])}–{fmt(spread(acc)[1])}]"])
    md += f"\nTraining at SGD lr {res['cfg']['lr']}:\n\n"
    md += table(["blocks/stage", "arm", "verdicts", "loss0", "final loss", "held-out acc [min–max]"], rows)
    p = plt()
    if p is not None:
        bs = res["cfg"]["blocks"]
        fig, axes = p.subplots(1, len(bs), figsize=(3.6 * len(bs), 3.2), squeeze=False)
        for ax, n in zip(axes[0], bs):
            for label, _, _ in ARMS:
                rs = _tr(res, n, label)
                curves = [[10.0 if x is None or x != x else min(x, 10.0) for x in r["loss"]] for r in rs]
                band(ax, list(range(1, len(curves[0]) + 1)), curves, label)
            ax.set_ylim(0, 10.5)
            ax.set_title(f"{n} block{'s' if n > 1 else ''} per stage")
            ax.set_xlabel("step")
        axes[0][0].set_ylabel("training loss (NaN, > 10: at 10)")
        axes[0][0].legend(fontsize=7)
        md += f"\n![ResNets](img/results/{save_fig(fig, img_dir, 'resnet.png')})\n"
    return md

NOTES = """
Partly reproduced. The structural claims hold exactly: every identity-skip block of an
IDInit net is the identity within 8.3e-7 (ε = 1e-6) and exactly with ε = 0, Fixup's blocks
are exactly the identity, He's are not (0.58–0.84). The training claim holds at depth: at 8
blocks per stage and lr 0.1 He diverges in every seed (initial loss 8.9, then NaN) and at 4
blocks learns nothing (held-out 0.06), while the loss of every IDInit run falls (`trains`,
9/9). The two failed checks are single seeds under the 0.5 held-out bar set before the run.
IDInit at 4 blocks, seed 1, ends at 0.125: its 10-step mean loss reached 0.79 at step 138,
but held-out accuracy is taken once, after the last step, and at lr 0.1 with momentum on a
net without normalization the loss swings (0.6 to 2.7 over this run's last 30 steps; 2.71
at the last one), so that snapshot landed on a spike; the other eight IDInit runs end at
0.57–0.82. Fixup is the weaker arm at depth: at 8 blocks seed 0 stalls at chance (0.047,
loss ≈ 2.3 throughout), and at 4 blocks one seed ends exactly at the bar (0.5). Likely
reasons, not separated in this run: reinit writes Fixup's weights only — the scalar biases
and multipliers of the paper are architecture, not inserted (they are no-ops at init but
give the zero-initialized branches a fast-learning scale); and 300 steps at batch 16 is
short for a net whose classifier and branch-last layers all start at zero. With one block
per stage every arm trains (held-out 0.78–0.91, Fixup best, He 0.82): the divergence is a
depth effect, as Fixup's paper says. The ε = 0 ablation trains as well as ε = 1e-6 here
(0.75 vs 0.50 at 4 blocks, 0.70 vs 0.70 at 8): with SGD momentum the zero branch-last layer
receives gradient from step 1 and unblocks the rest after one step, so the ε's symmetry
breaking does not show at this scale.
"""
