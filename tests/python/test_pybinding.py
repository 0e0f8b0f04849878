"""The `reinit` Python package (crates/reinit-py): apply / inspect against the CLI,
ModelProto round trips, errors, and reinit.torch.load_into.

Skips cleanly when the package is not installed (`pip install ./crates/reinit-py`);
the CLI comparisons skip when the `reinit` binary is not built; the load_into tests
need torch (not installed in CI: run them by hand, see README).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import diff_initializers, find_reinit_bin, fixtures_dir, random_inputs, run_ort, run_reinit

reinit = pytest.importorskip("reinit")

FIXTURES = sorted(p.name for p in fixtures_dir().glob("*.onnx"))
EMBEDDED = [f for f in FIXTURES if "external" not in f]

# (scheme, keyword parameters, CLI flags)
RUNS = [
    ("auto", {}, []),
    ("orthogonal", {}, []),
    ("eoi", {"density": 0.3, "sparsity_distribution": "erk"}, ["--density", "0.3", "--sparsity-distribution", "erk"]),
    ("he", {"distribution": "uniform", "fan_mode": "fan-out", "exclude": "fc|head"},
     ["--distribution", "uniform", "--fan-mode", "fan-out", "--exclude", "fc|head"]),
    ("relu-share", {"fallback": "he"}, ["--fallback", "he"]),
    ("random-mask", {"density": 0.3, "base": "orthogonal"}, ["--density", "0.3", "--base", "orthogonal"]),
]


@pytest.fixture(scope="module")
def cli():
    exe = find_reinit_bin()
    if exe is None:
        pytest.skip("reinit binary not built (set REINIT_BIN or cargo build)")
    return exe


def _approx(doc):
    """The report with floats rounded to 9 significant digits: the statistics are
    f64 sums over the unrounded values and may differ in the last ulp between builds
    (the file bytes may not)."""
    if isinstance(doc, float):
        return float(f"{doc:.9g}")
    if isinstance(doc, dict):
        return {k: _approx(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_approx(v) for v in doc]
    return doc


def _cli_message(stderr: str) -> str:
    text = stderr.strip()
    assert text.startswith("reinit: error: "), text
    return text[len("reinit: error: "):]


# --------------------------------------------------------------------------- apply vs CLI


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("run", range(len(RUNS)), ids=[r[0] for r in RUNS])
def test_apply_is_byte_identical_to_the_cli(cli, tmp_path, fixture, run):
    scheme, params, flags = RUNS[run]
    src = fixtures_dir() / fixture
    # the same file name: a model with external data records its data file's name
    (tmp_path / "py").mkdir()
    (tmp_path / "cli").mkdir()
    ours, theirs = tmp_path / "py" / "out.onnx", tmp_path / "cli" / "out.onnx"
    cp = run_reinit(["apply", src, "--scheme", scheme, "--seed", "11", "-o", theirs, "-q", "--json", *flags],
                    check=False)
    if cp.returncode != 0:
        with pytest.raises(reinit.ReinitError) as info:
            reinit.apply(src, scheme, seed=11, output=ours, **params)
        assert info.value.exit_code == cp.returncode
        assert str(info.value) == _cli_message(cp.stderr)
        return
    report = reinit.apply(src, scheme, seed=11, output=ours, **params)
    assert ours.read_bytes() == theirs.read_bytes()
    if Path(str(theirs) + ".data").exists():
        assert Path(str(ours) + ".data").read_bytes() == Path(str(theirs) + ".data").read_bytes()
    cli_doc = json.loads(cp.stdout)
    ours_doc = report.to_dict()
    for doc in (cli_doc, ours_doc):
        doc.pop("timings_ms")
        doc.pop("output")
    assert _approx(ours_doc) == _approx(cli_doc)
    if fixture in EMBEDDED:
        # the same model from bytes and from a ModelProto
        data = reinit.apply(src.read_bytes(), scheme, seed=11, **params).result
        assert data == theirs.read_bytes()
        proto = reinit.apply(onnx.load(str(src)), scheme, seed=11, **params).result
        assert isinstance(proto, onnx.ModelProto)
        assert proto == onnx.load_from_string(theirs.read_bytes())


@pytest.mark.parametrize("fixture", FIXTURES)
def test_inspect_is_the_cli_document(cli, fixture):
    src = fixtures_dir() / fixture
    cp = run_reinit(["inspect", src, "--json"])
    assert reinit.inspect(src) == json.loads(cp.stdout)
    assert reinit.inspect(str(src)) == json.loads(cp.stdout)


def test_rules_inline_equal_rules_file(cli, tmp_path):
    src = fixtures_dir() / "tiny_resnet_bn.onnx"
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]]\npattern = '^layer1'\nscheme = 'idinit'\ntau = 0.5\n\n"
                     "[[rule]]\npattern = 'fc'\nscheme = 'keep'\n")
    run_reinit(["apply", src, "--scheme", "he", "--rules", rules, "--seed", "5", "-o", tmp_path / "cli.onnx", "-q"])
    from_file = reinit.apply(src, "he", seed=5, rules=rules).result
    inline = reinit.apply(src, "he", seed=5, rules=[
        {"pattern": "^layer1", "scheme": "idinit", "tau": 0.5},
        {"pattern": "fc", "scheme": "keep"},
    ]).result
    assert from_file == inline == (tmp_path / "cli.onnx").read_bytes()


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("fixture", [f for f in EMBEDDED if not f.startswith("helper_unknown_field")])
def test_modelproto_round_trip_keeps_everything_but_the_planned_weights(tmp_path, fixture):
    src = fixtures_dir() / fixture
    report = reinit.apply(onnx.load(str(src)), "auto", seed=3)
    out = tmp_path / "out.onnx"
    out.write_bytes(report.result.SerializeToString())
    # keys of subgraph / Constant tensors carry a prefix ('if_node/then_branch/W', 'Constant:W')
    changed = {k.rsplit("/", 1)[-1].removeprefix("Constant:") for k in diff_initializers(src, out)}
    planned = {w["name"] for w in report.weights}
    # auto resets norms: their tensors are listed in `norms_reset`
    assert changed <= planned | {t for n in report.norms_reset for t in n["tensors"]}
    # every weight the report says changed did change (unless the scheme reproduced it)
    assert len(changed) >= len(planned) - sum(1 for w in report.weights if w["before"] == w["after"])
    meta = {p.key: p.value for p in report.result.metadata_props}
    assert meta["reinit.seed"] == "3"


def test_unknown_fields_survive_bytes_round_trip():
    # A ModelProto round trip through the onnx package may drop unknown fields, bytes keep them.
    for name in ("helper_unknown_field_model.onnx", "helper_unknown_field_tensor.onnx"):
        src = fixtures_dir() / name
        data = reinit.apply(src.read_bytes(), "he", seed=1).result
        assert len(data) >= src.stat().st_size


def test_seed_is_recorded_and_deterministic():
    src = fixtures_dir() / "mlp_relu.onnx"
    a = reinit.apply(src, "orthogonal", seed=2**64 - 1)
    b = reinit.apply(src, "orthogonal", seed=2**64 - 1)
    assert a.result == b.result and a.seed == 2**64 - 1
    c = reinit.apply(src, "orthogonal")
    assert isinstance(c.seed, int) and 0 <= c.seed < 1_000_000_007


def test_dry_run_and_output(tmp_path):
    src = fixtures_dir() / "mlp_relu.onnx"
    r = reinit.apply(src, "he", seed=1, dry_run=True)
    assert r.dry_run and r.result is None and r.weights
    assert "weight" in r.table() and "planned" in r.summary()
    out = tmp_path / "m.onnx"
    r = reinit.apply(src, "he", seed=1, output=out)
    assert r.result is None and r.output == str(out) and out.exists()
    with pytest.raises(reinit.ReinitIOError) as info:
        reinit.apply(src, "he", seed=1, output=out)
    assert info.value.exit_code == 5 and isinstance(info.value, OSError)
    reinit.apply(src, "he", seed=1, output=out, force=True)
    masks = tmp_path / "masks.safetensors"
    reinit.apply(src, "eoi", seed=1, output=tmp_path / "e.onnx", density=0.5, mask_out=masks)
    assert masks.stat().st_size > 0


# --------------------------------------------------------------------------- errors


def _error_cases(tmp_path):
    mlp = fixtures_dir() / "mlp_tanh.onnx"
    ext = fixtures_dir() / "tiny_resnet_bn_external.onnx"
    return [
        # (CLI args, python call)
        (["apply", mlp, "--scheme", "nope"], lambda: reinit.apply(mlp, "nope")),
        (["apply", mlp, "--scheme", "he", "--density", "0.3"], lambda: reinit.apply(mlp, "he", density=0.3)),
        (["apply", mlp, "--scheme", "orthogonal", "--base", "he"], lambda: reinit.apply(mlp, "orthogonal", base="he")),
        (["apply", mlp, "--scheme", "random-mask", "--base", "nope"],
         lambda: reinit.apply(mlp, "random-mask", base="nope")),
        (["apply", mlp, "--scheme", "eoi", "--density", "1.5"], lambda: reinit.apply(mlp, "eoi", density=1.5)),
        (["apply", mlp, "--scheme", "he", "--only", "("], lambda: reinit.apply(mlp, "he", only="(")),
        (["apply", mlp, "--scheme", "he", "--fan-mode", "sideways"], lambda: reinit.apply(mlp, "he", fan_mode="sideways")),
        (["apply", mlp, "--scheme", "he", "--fallback", "nope"], lambda: reinit.apply(mlp, "he", fallback="nope")),
        (["apply", tmp_path / "missing.onnx", "--scheme", "he"], lambda: reinit.apply(tmp_path / "missing.onnx", "he")),
        (["apply", tmp_path / "junk.onnx", "--scheme", "he"], lambda: reinit.apply(tmp_path / "junk.onnx", "he")),
        (["apply", mlp, "--scheme", "he", "--rules", tmp_path / "bad.toml"],
         lambda: reinit.apply(mlp, "he", rules=tmp_path / "bad.toml")),
        (["inspect", tmp_path / "junk.onnx"], lambda: reinit.inspect(tmp_path / "junk.onnx")),
        (["apply", ext, "--scheme", "he", "--dry-run"], None),
    ]


def test_errors_match_the_cli(cli, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage" * 10)
    (tmp_path / "bad.toml").write_text("[[rule]]\npattern = 'a'\nscheme = 'he'\ndensity = 0.1\n")
    for args, call in _error_cases(tmp_path):
        cp = run_reinit(args, check=False)
        if call is None:
            assert cp.returncode == 0
            continue
        assert cp.returncode != 0, args
        with pytest.raises(reinit.ReinitError) as info:
            call()
        assert str(info.value) == _cli_message(cp.stderr), args
        assert info.value.exit_code == cp.returncode, args


def test_bad_inputs_raise_python_exceptions(tmp_path):
    mlp = fixtures_dir() / "mlp_tanh.onnx"
    cases = [
        (lambda: reinit.apply(b"", "he"), reinit.InvalidModelError),
        (lambda: reinit.apply(b"\xff" * 100, "he"), reinit.InvalidModelError),
        (lambda: reinit.apply(mlp.read_bytes()[:500], "he"), reinit.InvalidModelError),
        (lambda: reinit.apply(tmp_path, "he"), reinit.UsageError),
        (lambda: reinit.apply(42, "he"), TypeError),
        (lambda: reinit.apply(mlp, 3), TypeError),
        (lambda: reinit.apply(mlp, "he", densty=0.1), reinit.UsageError),
        (lambda: reinit.apply(mlp, "eoi", density="much"), TypeError),
        (lambda: reinit.apply(mlp, "eoi", density=True), TypeError),
        (lambda: reinit.apply(mlp, "eoi", more_nonzeros="yes"), TypeError),
        (lambda: reinit.apply(mlp, "random-mask", base=3), TypeError),
        (lambda: reinit.apply(mlp, "he", seed=-1), OverflowError),
        (lambda: reinit.apply(mlp, "he", rules=[{"pattern": "("}]), reinit.UsageError),
        (lambda: reinit.apply(mlp, "he", rules=[{"pattern": "a", "scheme": "he", "x": [1]}]), reinit.UsageError),
        (lambda: reinit.apply(mlp.read_bytes(), "he", in_place=True), reinit.UsageError),
        (lambda: reinit.apply(mlp, "he", output=tmp_path / "no" / "such" / "dir.onnx"), reinit.ReinitIOError),
        (lambda: reinit.apply((fixtures_dir() / "tiny_resnet_bn_external.onnx").read_bytes(), "he"),
         reinit.UnsafeModelError),
        (lambda: reinit.inspect(None), TypeError),
    ]
    for call, exc in cases:
        with pytest.raises(exc):
            call()


def test_external_data_needs_an_output_file(tmp_path):
    ext = fixtures_dir() / "tiny_resnet_bn_external.onnx"
    with pytest.raises(reinit.UsageError, match="external data"):
        reinit.apply(ext, "he", seed=1)
    r = reinit.apply(ext, "he", seed=1, output=tmp_path / "x.onnx")
    assert (tmp_path / "x.onnx.data").exists() and r.output


def test_garbage_never_crashes_the_interpreter():
    # Random byte flips of a real model: every outcome is a result or a ReinitError.
    code = (
        "import random, reinit, sys\n"
        f"data = bytearray(open({str(fixtures_dir() / 'tiny_resnet_bn.onnx')!r}, 'rb').read())\n"
        "rng = random.Random(0)\n"
        "for i in range(200):\n"
        "    d = bytearray(data)\n"
        "    for _ in range(rng.randint(1, 20)):\n"
        "        d[rng.randrange(len(d))] = rng.randrange(256)\n"
        "    if i % 3 == 0: d = d[: rng.randrange(len(d))]\n"
        "    try:\n"
        "        reinit.apply(bytes(d), 'auto', seed=i)\n"
        "        reinit.inspect(bytes(d))\n"
        "    except reinit.ReinitError:\n"
        "        pass\n"
        "print('ok')\n"
    )
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0 and cp.stdout.strip() == "ok", cp.stderr[-2000:]


def test_the_gil_is_released_during_work():
    src = (fixtures_dir() / "tiny_transformer.onnx").read_bytes()
    ticks = 0
    done = threading.Event()

    def work():
        for _ in range(20):
            reinit.apply(src, "orthogonal", seed=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    assert ticks > 0


# --------------------------------------------------------------------------- reinit.torch


def _fixture_module(cls_name, seed, **kw):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(fixtures_dir()))
    try:
        spec = importlib.util.spec_from_file_location("make_fixtures", fixtures_dir() / "make_fixtures.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.pop(0)
    importlib.import_module("reinit.torch")
    return torch, mod.make(getattr(mod, cls_name), seed, **kw)


def _torch_vs_ort(torch, module, path, train=False):
    feeds = random_inputs(path, seed=0)
    expected = run_ort(path, feeds=feeds)
    module.train(train)
    with torch.no_grad():
        got = module(*[torch.from_numpy(v) for v in feeds.values()])
    got = got if isinstance(got, (tuple, list)) else (got,)
    for g, e in zip(got, expected.values()):
        np.testing.assert_allclose(g.numpy(), e, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fixture,cls,seed,kw,train", [
    ("tiny_resnet_bn.onnx", "TinyResNet", 1, {}, True),
    ("tiny_transformer.onnx", "TinyTransformer", 20, {}, False),
    ("tiny_transformer_nofold.onnx", "TinyTransformer", 20, {}, False),
    ("torch_transformer.onnx", "TorchTransformer", 22, {}, False),
    ("tiny_transformer_tied_nofold.onnx", "TinyTransformer", 23, {"tied": True}, False),
])
def test_load_into_sets_every_weight_and_matches_onnxruntime(tmp_path, fixture, cls, seed, kw, train):
    torch, module = _fixture_module(cls, seed, **kw)
    out = tmp_path / "re.onnx"
    report = reinit.apply(fixtures_dir() / fixture, "auto", seed=9, output=out)
    assert report.weights
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    result = reinit.torch.load_into(module, out)
    assert result.not_set == [] and not result.conflicts
    names = [n for n, _ in module.named_parameters(remove_duplicate=False)]
    assert sorted(result.set) == sorted(names)
    changed = {w["name"] for w in report.weights if w["before"] != w["after"]}
    for name, m in result.matches.items():
        if m.initializer in changed:
            assert not torch.equal(before[name] if name in before else before[names[0]],
                                   dict(module.named_parameters(remove_duplicate=False))[name].detach())
    _torch_vs_ort(torch, module, out, train=train)


def test_load_into_folded_matmul_names_and_transposes(tmp_path):
    torch, module = _fixture_module("TinyTransformer", 20)
    result = reinit.torch.load_into(module, reinit.apply(fixtures_dir() / "tiny_transformer.onnx", "he", seed=1))
    m = result.matches["blocks.0.attn.q.weight"]
    assert m.initializer.startswith("onnx::MatMul_") and m.transposed and m.method == "scope"
    assert result.matches["blocks.0.attn.q.bias"].method == "name"


def test_load_into_tied_duplicate_reports_the_conflict(tmp_path):
    torch, module = _fixture_module("TinyTransformer", 23, tied=True)
    rewritten = reinit.apply(fixtures_dir() / "tiny_transformer_tied.onnx", "orthogonal", seed=2)
    with pytest.warns(UserWarning, match="tied"):
        result = reinit.torch.load_into(module, rewritten)
    assert module.head.weight is module.tok.weight
    assert result.matches["tok.weight"].initializer == "tok.weight"
    assert result.conflicts and "head.weight" in result.set


@pytest.mark.parametrize("fixture,cls,seed", [
    ("tiny_resnet_fused.onnx", "TinyResNet", 1),
    ("tiny_resnet_dynamo.onnx", "TinyResNet", 1),
    ("tiny_mobilenetv2_fused.onnx", "TinyMobileNetV2", 2),
])
def test_load_into_refuses_bn_folded_exports(fixture, cls, seed):
    torch, module = _fixture_module(cls, seed)
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(reinit.LoadIntoError, match="BatchNorm folded"):
        reinit.torch.load_into(module, fixtures_dir() / fixture)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_load_into_strict_and_non_strict():
    torch = pytest.importorskip("torch")
    importlib.import_module("reinit.torch")
    module = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 7))
    with pytest.raises(reinit.LoadIntoError, match="nothing was changed"):
        reinit.torch.load_into(module, fixtures_dir() / "mlp_relu.onnx")
    result = reinit.torch.load_into(module, fixtures_dir() / "mlp_relu.onnx", strict=False)
    assert "2.weight" in result.not_set or "0.weight" in result.set


# --------------------------------------------------------------------------- verify


def test_verify_matches_the_cli_document(cli, tmp_path):
    model = str(fixtures_dir() / "mlp_relu.onnx")
    ours = reinit.verify(model, ["he", "relu-share"], seed=3, steps=20, submatrix="orthogonal", plot=tmp_path / "plots")
    out = subprocess.run(
        [str(cli), "verify", model, "--schemes", "he,relu-share", "--seed", "3", "--steps", "20",
         "--submatrix", "orthogonal", "--json", "-q"],
        capture_output=True, text=True, check=True,
    )
    theirs = json.loads(out.stdout)
    assert [r["scheme"] for r in ours["runs"]] == ["he", "relu-share"]
    for a, b in zip(ours["runs"], theirs["runs"]):
        assert a["loss"] == b["loss"] and a["verdict"] == b["verdict"]
    # The mirrored init is an isometry: every Jacobian singular value is 1.
    jac = ours["runs"][1]["jacobian"]
    assert abs(jac["min_sv"] - 1) < 1e-4 and abs(jac["max_sv"] - 1) < 1e-4
    assert (tmp_path / "plots" / "loss.svg").exists()


def test_verify_rejects_bad_settings():
    model = str(fixtures_dir() / "mlp_relu.onnx")
    with pytest.raises(reinit.UsageError):
        reinit.verify(model, ["he"], lr=-1.0)
    with pytest.raises(reinit.UsageError):
        reinit.verify(model, ["nope"])
    with pytest.raises(reinit.UsageError):
        reinit.verify(model, ["he"], densty=0.1)


def test_verify_lr_schedule_is_the_cli_flag(cli):
    model = str(fixtures_dir() / "mlp_relu.onnx")
    common = dict(seed=1, steps=12, optimizer="sgd", lr=0.05)
    constant = reinit.verify(model, ["he"], lr_schedule="constant", **common)
    cosine = reinit.verify(model, ["he"], lr_schedule="cosine", **common)
    assert constant["lr_schedule"] != cosine["lr_schedule"]
    out = subprocess.run(
        [str(cli), "verify", model, "--schemes", "he", "--seed", "1", "--steps", "12",
         "--optimizer", "sgd", "--lr", "0.05", "--lr-schedule", "constant", "--json", "-q"],
        capture_output=True, text=True, check=True,
    )
    assert constant["runs"][0]["loss"] == json.loads(out.stdout)["runs"][0]["loss"]
    # Same first step (same weights and batch), then the decayed rate moves the weights less.
    a, b = constant["runs"][0]["loss"], cosine["runs"][0]["loss"]
    assert a[0] == b[0] and a[1:] != b[1:]
    with pytest.raises(reinit.UsageError, match="lr-schedule"):
        reinit.verify(model, ["he"], lr_schedule="linear", steps=2)


def test_verify_report_writes_the_self_contained_page(tmp_path):
    model = str(fixtures_dir() / "mlp_tanh.onnx")
    page = tmp_path / "report.html"
    doc = reinit.verify(model, ["he", "orthogonal"], seed=2, steps=12, report=page)
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    # Every plot inline (loss, signal, Jacobian, gradient norms), nothing fetched from outside.
    assert html.count('src="data:image/png;base64,') == 4
    assert "http://" not in html and "https://" not in html
    # The call that reproduces the run, and each scheme's verdict.
    assert f"reinit.verify({model!r}, ['he', 'orthogonal'], seed=2, steps=12)" in html
    for run in doc["runs"]:
        assert run["scheme"] in html and run["verdict"] in html
    assert oct(page.stat().st_mode & 0o777) == oct(0o644)


def test_verify_report_failures_leave_no_page(tmp_path):
    model = str(fixtures_dir() / "mlp_tanh.onnx")
    with pytest.raises(reinit.ReinitIOError):
        reinit.verify(model, ["he"], steps=2, report=tmp_path / "missing-dir" / "r.html")
    with pytest.raises(reinit.UsageError):
        reinit.verify(model, ["nope"], steps=2, report=tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- keywords vs the scheme table


def test_apply_keywords_and_stubs_follow_the_scheme_table():
    """Every parameter of the scheme table is an `apply` keyword (the engine lists them)
    and a typed keyword of the `apply` stub, and the stub declares no scheme parameter
    the table lacks: a scheme or parameter added to the table without the stub fails here."""
    import ast

    table = dict(reinit._native._scheme_parameters())
    assert set(reinit.SCHEME_PARAMETERS) == set(table)
    assert set(reinit.SCHEME_PARAMETERS) <= set(reinit.PARAMETERS)
    stub = Path(reinit.__file__).with_name("__init__.pyi")
    tree = ast.parse(stub.read_text())
    apply = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "apply")
    declared = {a.arg: ast.unparse(a.annotation) for a in apply.args.kwonlyargs}
    others = set(reinit.PARAMETERS) - set(reinit.SCHEME_PARAMETERS) | {"seed", "output"}
    assert set(declared) - others == set(table), "apply's stub and the scheme table differ"
    expected = {"number": "Optional[float]", "flag": "Optional[bool]", "choice": "Optional[str]"}
    for name, kind in table.items():
        assert declared[name] == expected[kind], (name, kind, declared[name])
    assert set(declared) == others | set(table)

