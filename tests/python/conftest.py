"""Shared helpers for the Python interop tests (need onnx, onnxruntime, numpy, pytest; not torch).

Helpers (import them with `from conftest import ...` or use the fixtures):
  repo_root()                      -> Path of the repository root
  fixtures_dir()                   -> Path of fixtures/
  load_manifest()                  -> dict from fixtures/manifest.json
  fixture_path(name)               -> Path of fixtures/<name>
  find_reinit_bin()                -> Path of the reinit binary or None
                                      ($REINIT_BIN, else target/release/reinit, else target/debug/reinit)
  run_reinit(args, ...)            -> subprocess.CompletedProcess of `reinit *args`
  random_inputs(model_path, seed)  -> {input name: deterministic random array}
  run_ort(model_path, seed=0, feeds=None) -> {output name: array}
  tensor_arrays(model_path)        -> {key: numpy array} for every initializer (also in subgraphs) and
                                      every Constant-node tensor
  diff_initializers(a, b, ...)     -> set of tensor keys whose values differ; asserts that everything
                                      else (graph, nodes, attributes, names, dtypes, shapes, storage
                                      field, metadata) is equal
pytest fixtures: `manifest`, `reinit_bin` (skips the test when the binary is not built yet).
"""
from __future__ import annotations

import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

# --------------------------------------------------------------------------- paths


def repo_root() -> Path:
    p = Path(__file__).resolve()
    for parent in p.parents:
        if (parent / "fixtures").is_dir() and (parent / "tests").is_dir():
            return parent
    raise RuntimeError("cannot find the repository root from " + str(p))


def fixtures_dir() -> Path:
    return repo_root() / "fixtures"


def fixture_path(name: str) -> Path:
    return fixtures_dir() / name


@lru_cache(maxsize=1)
def _manifest_cached() -> str:
    return (fixtures_dir() / "manifest.json").read_text()


def load_manifest() -> dict:
    return json.loads(_manifest_cached())


def find_reinit_bin():
    env = os.environ.get("REINIT_BIN")
    if env:
        p = Path(env)
        return p if p.is_file() else None
    for profile in ("release", "debug"):
        p = repo_root() / "target" / profile / "reinit"
        if p.is_file():
            return p
    return None


def run_reinit(args, check=True, timeout=300, **kw) -> subprocess.CompletedProcess:
    exe = find_reinit_bin()
    if exe is None:
        pytest.skip("reinit binary not built (set REINIT_BIN or cargo build)")
    cp = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise AssertionError(f"reinit {args} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
    return cp


@pytest.fixture(scope="session")
def manifest() -> dict:
    return load_manifest()


@pytest.fixture(scope="session")
def reinit_bin():
    exe = find_reinit_bin()
    if exe is None:
        pytest.skip("reinit binary not built (set REINIT_BIN or cargo build)")
    return exe


# --------------------------------------------------------------------------- onnxruntime

_ORT_TO_NP = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
}


def _session(model_path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])


def random_inputs(model_path, seed: int = 0, int_high: int = 10) -> dict:
    """Deterministic inputs for every graph input: floats ~ N(0,1), ints in [0, int_high), bools True.
    Symbolic dimensions become 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in _session(model_path).get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dt = _ORT_TO_NP.get(i.type)
        if dt is None:
            raise ValueError(f"unsupported input type {i.type} for {i.name}")
        if dt is np.bool_:
            feeds[i.name] = np.ones(shape, dtype=bool)
        elif np.issubdtype(dt, np.integer):
            feeds[i.name] = rng.integers(0, int_high, size=shape).astype(dt)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(dt)
    return feeds


def run_ort(model_path, seed: int = 0, feeds: dict | None = None) -> dict:
    sess = _session(model_path)
    if feeds is None:
        feeds = random_inputs(model_path, seed)
    outs = sess.run(None, feeds)
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


# --------------------------------------------------------------------------- tensor comparison

_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                "string_data")


def _storage_field(t: TensorProto) -> str:
    if t.data_location == TensorProto.EXTERNAL:
        return "external"
    for f in _DATA_FIELDS:
        if t.HasField(f) if f == "raw_data" else len(getattr(t, f)) > 0:
            return f
    return "empty"


def _walk_graphs(graph, prefix=""):
    """Yield (prefix, graph) for the graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield prefix, graph
    for i, n in enumerate(graph.node):
        for a in n.attribute:
            nid = n.name or f"node{i}"
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk_graphs(a.g, f"{prefix}{nid}/{a.name}/")
            elif a.type == onnx.AttributeProto.GRAPHS:
                for j, g in enumerate(a.graphs):
                    yield from _walk_graphs(g, f"{prefix}{nid}/{a.name}[{j}]/")


def _tensor_slots(model):
    """Yield (key, TensorProto) for every initializer and Constant-node tensor.
    Keys: top-level initializer -> its name; subgraph initializer -> '<node>/<attr>/<name>';
    Constant node -> 'Constant:<prefix><output name>'."""
    for prefix, g in _walk_graphs(model.graph):
        for t in g.initializer:
            yield prefix + t.name, t
        for n in g.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.TENSOR:
                        yield f"Constant:{prefix}{n.output[0]}", a.t


def _load_with_data(path):
    """Return (model without external data loaded, {key: numpy array}, {key: storage field})."""
    path = Path(path)
    m = onnx.load(str(path), load_external_data=False)
    storage = {k: _storage_field(t) for k, t in _tensor_slots(m)}
    full = onnx.load(str(path), load_external_data=False)
    onnx.external_data_helper.load_external_data_for_model(full, str(path.parent))
    arrays = {k: onnx.numpy_helper.to_array(t) for k, t in _tensor_slots(full)}
    return m, arrays, storage


def tensor_arrays(model_path) -> dict:
    return _load_with_data(model_path)[1]


def _strip(model, keep_metadata_keys=None):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for _, t in _tensor_slots(m):
        for f in _DATA_FIELDS:
            t.ClearField(f)
        del t.external_data[:]
        t.ClearField("data_location")
    if keep_metadata_keys is not None:
        props = [(p.key, p.value) for p in m.metadata_props if p.key in keep_metadata_keys]
        del m.metadata_props[:]
        for k, v in props:
            m.metadata_props.add(key=k, value=v)
    return m


def diff_initializers(a_path, b_path, *, allow_new_metadata: bool = True, check_storage: bool = True) -> set:
    """Compare two ONNX files tensor by tensor.

    Returns the set of tensor keys (see _tensor_slots) whose values differ (byte-wise, so NaN-safe).
    Asserts that the set of tensors, their dtypes, shapes and (if check_storage) storage field
    (raw_data / float_data / int32_data / ... / external) are equal, and that everything else in the
    model (graph structure, nodes, attributes, inputs/outputs, opsets, ir_version, producer,
    graph/node metadata) is identical. With allow_new_metadata, model-level metadata_props present in
    b but not in a are ignored (reinit may record what it did); existing entries must be unchanged.
    """
    ma, va, sa = _load_with_data(a_path)
    mb, vb, sb = _load_with_data(b_path)
    assert list(va) == list(vb), f"tensor sets differ: {set(va) ^ set(vb)}"
    changed = set()
    for k in va:
        x, y = va[k], vb[k]
        assert x.dtype == y.dtype, f"{k}: dtype {x.dtype} -> {y.dtype}"
        assert x.shape == y.shape, f"{k}: shape {x.shape} -> {y.shape}"
        if check_storage:
            ea, eb = sa[k], sb[k]
            assert ea == eb, f"{k}: storage field {ea} -> {eb}"
        if x.tobytes() != y.tobytes():
            changed.add(k)
    keep = None
    if allow_new_metadata:
        keys_a = [p.key for p in ma.metadata_props]
        keep = set(keys_a)
    sa_m, sb_m = _strip(ma), _strip(mb, keep)
    if sa_m.SerializeToString(deterministic=True) != sb_m.SerializeToString(deterministic=True):
        # find a readable difference
        for field in ("ir_version", "opset_import", "producer_name", "producer_version", "domain",
                      "model_version", "doc_string", "metadata_props", "functions", "training_info"):
            assert getattr(sa_m, field) == getattr(sb_m, field), f"model field {field} differs"
        ga, gb = sa_m.graph, sb_m.graph
        assert len(ga.node) == len(gb.node), "node count differs"
        for i, (na, nb) in enumerate(zip(ga.node, gb.node)):
            assert na == nb, f"node {i} ({na.name or na.op_type}) differs:\n{na}\n---\n{nb}"
        for field in ("input", "output", "value_info", "initializer", "name", "doc_string",
                      "sparse_initializer", "metadata_props"):
            assert getattr(ga, field) == getattr(gb, field), f"graph field {field} differs"
        raise AssertionError("models differ outside tensor payloads (unknown fields?)")
    return changed
