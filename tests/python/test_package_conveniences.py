"""The Python package as users touch it: `reinit.torch` imported lazily (and torch only
when `load_into` runs), type stubs that match the runtime, and error classes that
survive the lazy path and pickling. Needs the installed wheel (see .ci/run)."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

reinit = pytest.importorskip("reinit")

from conftest import fixtures_dir  # noqa: E402


def _run(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (this one may have torch loaded already)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_reinit_loads_neither_the_submodule_nor_torch():
    out = _run(
        "import sys, reinit\n"
        "assert 'reinit.torch' not in sys.modules, 'submodule imported eagerly'\n"
        "assert 'torch' not in sys.modules, 'torch imported by import reinit'\n"
        "m = reinit.torch\n"
        "assert m is sys.modules['reinit.torch']\n"
        "assert 'torch' not in sys.modules, 'torch imported by reinit.torch'\n"
        "from reinit import torch as again\n"
        "assert again is m and callable(m.load_into)\n"
        "assert 'torch' in dir(reinit)\n"
        "print('lazy ok')\n"
    )
    assert out.returncode == 0, out.stderr
    assert "lazy ok" in out.stdout


def test_load_into_is_what_imports_torch():
    fixture = fixtures_dir() / "mlp_relu.onnx"
    out = _run(
        "import sys, reinit\n"
        "load_into = reinit.torch.load_into\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n"
        f"    load_into(None, {str(fixture)!r})\n"
        "except ModuleNotFoundError as e:\n"
        "    assert e.name == 'torch', e\n"
        "    print('no torch: load_into says so')\n"
        "except Exception:\n"
        "    assert 'torch' in sys.modules, 'load_into ran without importing torch'\n"
        "    print('torch imported by load_into')\n"
    )
    assert out.returncode == 0, out.stderr
    has_torch = importlib.util.find_spec("torch") is not None
    expected = "torch imported by load_into" if has_torch else "no torch: load_into says so"
    assert expected in out.stdout, out.stdout


def test_unknown_attributes_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        reinit.nonexistent  # noqa: B018
    assert not hasattr(reinit, "tensorflow")


def test_errors_keep_their_classes_through_the_lazy_path_and_pickling():
    torch_mod = reinit.torch
    assert torch_mod.LoadIntoError is reinit.LoadIntoError
    with pytest.raises(reinit.UsageError) as info:
        reinit.apply(fixtures_dir() / "mlp_relu.onnx", "no-such-scheme", seed=0)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, reinit.ReinitError)
    assert err.exit_code == 2
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is reinit.UsageError and str(back) == str(err)
    with pytest.raises(reinit.InvalidModelError):
        reinit.inspect(b"not a model")


# --------------------------------------------------------------------------- stubs


def _package_dir() -> Path:
    return Path(reinit.__file__).parent


def _stub_names(path: Path) -> dict:
    """Top-level names a stub declares: {name: ast node}."""
    names = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names[t.id] = node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname:  # re-exports only (`import x as x`)
                    names[alias.asname] = node
    return names


def _stub_params(fn: ast.FunctionDef) -> list:
    a = fn.args
    params = [(p.arg, "positional") for p in a.posonlyargs + a.args]
    if a.vararg:
        params.append((a.vararg.arg, "var_positional"))
    params += [(p.arg, "keyword_only") for p in a.kwonlyargs]
    if a.kwarg:
        params.append((a.kwarg.arg, "var_keyword"))
    return params


def _runtime_params(fn) -> list:
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.VAR_POSITIONAL: "var_positional",
        inspect.Parameter.KEYWORD_ONLY: "keyword_only",
        inspect.Parameter.VAR_KEYWORD: "var_keyword",
    }
    return [(p.name, kinds[p.kind]) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("stub, module_name", [("__init__.pyi", "reinit"), ("torch.pyi", "reinit.torch")])
def test_stubs_declare_every_public_name_with_the_runtime_signature(stub, module_name):
    module = importlib.import_module(module_name)
    declared = _stub_names(_package_dir() / stub)
    public = set(module.__all__) | ({"torch"} if module_name == "reinit" else set())
    missing = sorted(public - set(declared))
    assert not missing, f"{stub} lacks {missing}"
    for name in sorted(public):
        node, value = declared[name], getattr(module, name)
        if isinstance(node, ast.FunctionDef):
            stub_params, runtime = _stub_params(node), _runtime_params(value)
            if runtime[-1:] == [("params", "var_keyword")] and name == "apply":
                # The stub spells out what `**params` takes: exactly PARAMETERS.
                extra = [p for p in stub_params if p not in runtime]
                assert {n for n, _ in extra} == set(module.PARAMETERS), f"{stub}: apply keywords"
                assert all(kind == "keyword_only" for _, kind in extra)
                stub_params = [p for p in stub_params if p in runtime] + [runtime[-1]]
            assert stub_params == runtime, f"{stub}: {name}"
        if isinstance(node, ast.ClassDef):
            methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
            for method, fn in methods.items():
                assert _stub_params(fn) == _runtime_params(getattr(value, method)), f"{stub}: {name}.{method}"
            fields = getattr(value, "__dataclass_fields__", None)
            if fields:
                stub_fields = [n.target.id for n in node.body if isinstance(n, ast.AnnAssign)]
                assert stub_fields == list(fields), f"{stub}: {name} fields"


def test_native_stub_names_every_native_function():
    declared = _stub_names(_package_dir() / "_reinit.pyi")
    native = {n for n in dir(reinit._native) if not n.startswith("__") and callable(getattr(reinit._native, n))}
    assert native <= set(declared), f"_reinit.pyi lacks {sorted(native - set(declared))}"
