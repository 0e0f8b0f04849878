"""CI smoke version of the experiment suite (experiments/, docs/results.md).

Each experiment module runs its reduced `smoke` configuration (small depth, few steps,
one or two seeds) through the reinit CLI and every qualitative check of the full
experiment must hold: the same orderings and isometry tolerances that docs/results.md
reports at full scale. A regression in a scheme or in the trainer that loses a paper's
effect fails here. Needs onnx, onnxruntime, numpy (not matplotlib: no plots are drawn).
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from conftest import find_reinit_bin, repo_root

sys.path.insert(0, str(repo_root() / "experiments"))

EXPERIMENTS = ["exp_eoi_isometry", "exp_eoi_deep", "exp_pennington", "exp_burkholz",
               "exp_resnet", "exp_lsuv", "exp_puzzle"]


@pytest.fixture(scope="module", autouse=True)
def _binary(tmp_path_factory):
    b = find_reinit_bin()
    if b is None:
        pytest.skip("reinit binary not built (set REINIT_BIN or cargo build)")
    old = {k: os.environ.get(k) for k in ("REINIT_BIN", "REINIT_EXPERIMENTS_WORK")}
    os.environ["REINIT_BIN"] = str(b)
    os.environ["REINIT_EXPERIMENTS_WORK"] = str(tmp_path_factory.mktemp("experiments"))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke(name):
    mod = importlib.import_module(name)
    res = mod.run(mod.CONFIGS["smoke"])
    failed = [f"{claim}: {detail}" for claim, ok, detail in mod.checks(res) if not ok]
    assert not failed, f"{name}: the paper's effect is lost:\n  " + "\n  ".join(failed)


def test_models_are_valid_and_fast():
    """The builders give checker-valid models with a dynamic batch; 200 layers in < 1 s is
    the design target (not asserted: timing in tests is noise)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    import models

    for m, shape in [(models.mlp(5, 16, "relu", bn=True), (3, 64)),
                     (models.cnn(3, 4, "tanh", bn=True), (2, 1, 8, 8)),
                     (models.resnet(2, 2, 4, norm=False), (2, 1, 8, 8)),
                     (models.resnet(1, 3, 4, norm=True), (5, 1, 8, 8))]:
        onnx.checker.check_model(m, full_check=True)
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        (y,) = s.run(None, {"input": np.ones(shape, np.float32)})
        assert y.shape == (shape[0], 10) and np.isfinite(y).all()
    a, b = models.mlp(10).SerializeToString(), models.mlp(10).SerializeToString()
    assert a == b, "builders must be deterministic"
    gemm = [n for n in models.mlp(3).graph.node if n.op_type == "Gemm"]
    assert all(any(a.name == "transB" and a.i == 1 for a in n.attribute) for n in gemm)
