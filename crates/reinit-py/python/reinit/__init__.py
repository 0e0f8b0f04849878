"""reinit: re-initialize the weights of ONNX models with schemes from recent research.

The Rust engine of the ``reinit`` command line tool, for Python export pipelines::

    import reinit
    report = reinit.apply("model.onnx", "auto", seed=0, output="model.auto.onnx")
    print(report.summary())

    new_proto = reinit.apply(onnx_model_proto, "orthogonal", seed=1).result
    doc = reinit.inspect("model.onnx")          # the `reinit inspect --json` document

    reinit.torch.load_into(module, "model.auto.onnx")   # weights back into a torch.nn.Module

``reinit.torch`` is imported on first use, and imports torch only when ``load_into``
runs: ``import reinit`` never loads torch.

Same seed and parameters give byte-identical files to ``reinit apply --seed N``.
Errors are :class:`ReinitError` subclasses carrying the CLI's messages. The GIL is
released while the engine works.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import _reinit as _native
from ._errors import (
    InvalidModelError,
    LoadIntoError,
    ReinitError,
    ReinitIOError,
    UnsafeModelError,
    UnsupportedError,
    UsageError,
)

__all__ = [
    "apply",
    "inspect",
    "verify",
    "Report",
    "ReinitError",
    "UsageError",
    "InvalidModelError",
    "UnsafeModelError",
    "ReinitIOError",
    "UnsupportedError",
    "LoadIntoError",
    "PARAMETERS",
    "__version__",
]

__version__: str = _native._engine_version()


def __getattr__(name: str) -> Any:
    """``reinit.torch`` on first use (PEP 562): ``import reinit`` alone never imports
    the submodule, and the submodule imports torch only when ``load_into`` runs."""
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | {"torch"})


#: Scheme parameters `apply` accepts as keywords: every parameter of the scheme table
#: (``reinit schemes`` lists them per scheme), the CLI flags with ``_`` for ``-``.
#: Read from the engine, so a scheme added there is a keyword here.
SCHEME_PARAMETERS = tuple(name for name, _kind in _native._scheme_parameters())
#: Every keyword `apply` accepts besides `seed` and `output`.
PARAMETERS = SCHEME_PARAMETERS + (
    "rules",
    "only",
    "exclude",
    "fallback",
    "zero_init_last_gamma",
    "reset_norms",
    "calibration_data",
    "lsuv_data",
    "force",
    "in_place",
    "dry_run",
    "mask_out",
    "stream",
)

ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any]


def _source(model: Any) -> "tuple[Any, str]":
    """(what the native layer takes, kind) for a path, bytes or ModelProto."""
    if isinstance(model, Report):
        if model.result is not None:
            return _source(model.result)
        if model.output is not None:
            return model.output, "path"
        raise UsageError("this report has no rewritten model (dry run?)")
    if isinstance(model, bytes):
        return model, "bytes"
    if isinstance(model, (bytearray, memoryview)):
        return bytes(model), "bytes"
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model), "path"
    serialize = getattr(model, "SerializeToString", None)
    if callable(serialize):
        return serialize(), "proto"
    raise TypeError(
        "model must be a path (str or os.PathLike), bytes, or an onnx.ModelProto, "
        f"not {type(model).__name__}"
    )


class Report:
    """The report of one `apply` run: the same document as ``reinit apply --json``.

    Attributes mirror the JSON keys (``seed``, ``scheme``, ``weights``, ``kept``,
    ``warnings``, ``timings_ms``, …). :attr:`result` holds the rewritten model in
    the form it was given: an ``onnx.ModelProto`` for a ModelProto, ``bytes`` for
    bytes or for a path without ``output``; ``None`` when it was written to
    ``output`` or for a dry run.
    """

    schema_version: int
    tool_version: str
    model: str
    output: Optional[str]
    seed: int
    scheme: str
    dry_run: bool
    weights: List[Dict[str, Any]]
    kept: List[Dict[str, str]]
    warnings: List[str]
    timings_ms: Dict[str, float]
    result: Any

    def __init__(self, doc: Dict[str, Any], summary: str, table: str, result: Any = None):
        self._doc = doc
        self._summary = summary
        self._table = table
        self.schema_version = doc["schema_version"]
        self.tool_version = doc["tool_version"]
        self.model = doc["model"]
        self.output = doc.get("output")
        self.seed = doc["seed"]
        self.scheme = doc["scheme"]
        self.dry_run = doc["dry_run"]
        self.weights = doc["weights"]
        self.kept = doc["kept"]
        self.warnings = doc["warnings"]
        self.timings_ms = doc["timings_ms"]
        #: LSUV's data pass: the data it ran on and each layer's scale, output variance and
        #: iterations (``None`` without LSUV weights).
        self.lsuv = doc.get("lsuv")
        #: Norm layers reset (``reset_norms``, or ``auto``).
        self.norms_reset = doc.get("norms_reset", [])
        self.result = result

    def to_dict(self) -> Dict[str, Any]:
        """The ``reinit apply --json`` document as a dict."""
        return json.loads(json.dumps(self._doc))

    def to_json(self, indent: Optional[int] = 2) -> str:
        """The ``reinit apply --json`` document as text."""
        return json.dumps(self._doc, indent=indent)

    def summary(self) -> str:
        """The short summary the CLI prints on stderr."""
        return self._summary

    def table(self) -> str:
        """The plan as the table ``reinit apply --dry-run`` prints."""
        return self._table

    def __getitem__(self, key: str) -> Any:
        return self._doc[key]

    def __repr__(self) -> str:
        changed = sum(1 for w in self.weights if w.get("kind") != "bias")
        return (
            f"<reinit.Report scheme={self.scheme!r} seed={self.seed} weights={changed} "
            f"kept={len(self.kept)} output={self.output!r}>"
        )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    raise UsageError(f"rules: unsupported value {value!r} (strings, numbers and booleans only)")


def _rules_toml(rules: Sequence[Mapping[str, Any]]) -> str:
    lines: List[str] = []
    for rule in rules:
        if not isinstance(rule, Mapping):
            raise UsageError(f"rules: each rule must be a dict, not {type(rule).__name__}")
        lines.append("[[rule]]")
        for key, value in rule.items():
            key = str(key).replace("_", "-")
            lines.append(f"{json.dumps(key)} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def apply(
    model: ModelLike,
    scheme: str,
    *,
    seed: Optional[int] = None,
    output: Union[str, "os.PathLike[str]", None] = None,
    **params: Any,
) -> Report:
    """Re-initialize the weights of an ONNX model, as ``reinit apply`` does.

    Args:
        model: a path to a ``.onnx`` file, the serialized model as ``bytes``, or an
            ``onnx.ModelProto``; or a directory, whose ``.onnx`` files are rewritten with
            one seed (the CLI's directory mode; returns a list of :class:`Report`, one per
            file, written into ``output``, over the inputs with ``in_place``, or into
            ``<dir>.<scheme>`` beside it).
        scheme: a scheme name (``reinit schemes`` lists them) or ``"auto"``.
        seed: random seed (0 ≤ seed < 2**64). The same seed and parameters give the
            same bytes as the CLI. Default: drawn at random and recorded in the report
            and in the file's ``metadata_props``.
        output: write the rewritten model to this file (atomically; an existing file
            needs ``force=True``). Without it nothing is written and the rewritten model
            is returned in :attr:`Report.result`.
        **params: the CLI's options with ``_`` for ``-``:

            - scheme parameters: :data:`SCHEME_PARAMETERS` (``density``, ``gain``,
              ``base``, …); one the scheme does not take is a :class:`UsageError`,
              as in the CLI;
            - ``rules``: a TOML rules file (path), or a list of dicts
              ``[{"pattern": "^layer1", "scheme": "idinit", "tau": 0.5}, …]``;
            - ``only`` / ``exclude``: regexes on tensor or node names;
            - ``fallback``: ``"keep"`` (default) or a scheme for uncovered layers;
            - ``reset_norms``: every normalization layer to γ = 1, β = 0, running
              mean 0, running variance 1 (``auto`` does it by default);
            - ``calibration_data`` (alias ``lsuv_data``): the samples LSUV calibrates
              on, a numpy float array (first axis = samples, the model's first
              input), a dict ``{input name: array}``, or a ``.npy``/``.npz`` path;
              default: the task ``reinit verify`` would use;
            - ``zero_init_last_gamma``, ``force``, ``in_place`` (rewrite the input
              path), ``dry_run`` (plan only), ``mask_out`` (EOI masks, safetensors;
              written with ``output`` or ``in_place``);
            - ``stream``: the random stream, ``"v2"`` (default) or ``"v1"`` (the values
              of releases before stream v2, so earlier seeds reproduce; docs/stream.md).

    Returns:
        The :class:`Report`. Its :attr:`~Report.result` is a new ``onnx.ModelProto``
        when ``model`` was one, ``bytes`` when ``model`` was bytes or a path without
        ``output``, and ``None`` for a dry run or a path with ``output``.

    Raises:
        UsageError: unknown scheme or keyword, a parameter the scheme does not take,
            bad values, bad rules (CLI exit code 2).
        InvalidModelError: unreadable or invalid model (3).
        UnsafeModelError: unsafe external data (4).
        ReinitIOError: the output could not be written (5).
    """
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise UsageError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(expected one of: seed, output, {', '.join(PARAMETERS)})"
        )
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a str, not {type(scheme).__name__}")
    source, kind = _source(model)
    kwargs: Dict[str, Any] = {k: params[k] for k in PARAMETERS if k in params and params[k] is not None}
    kwargs["params"] = {k: kwargs.pop(k) for k in SCHEME_PARAMETERS if k in kwargs}
    if "calibration_data" in kwargs and "lsuv_data" in kwargs:
        raise UsageError("give calibration_data or its alias lsuv_data, not both")
    data = kwargs.pop("calibration_data", kwargs.pop("lsuv_data", None))
    if data is not None:
        kwargs.update(_calibration(data))
    rules = kwargs.pop("rules", None)
    if rules is not None:
        if isinstance(rules, (str, os.PathLike)):
            kwargs["rules"] = os.fspath(rules)
        else:
            kwargs["rules_toml"] = _rules_toml(rules)
    for key in ("output", "mask_out"):
        value = output if key == "output" else kwargs.get(key)
        if value is not None:
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{key} must be a path, not {type(value).__name__}")
            kwargs[key] = os.fspath(value)
    want_bytes = kind != "path" or output is None
    if kind != "path" and kwargs.get("in_place"):
        raise UsageError("in_place needs a model given as a path")
    if kwargs.get("in_place"):
        want_bytes = False
    doc, summary, table, data = _native._apply(source, scheme, seed=seed, want_bytes=want_bytes, **kwargs)
    parsed = json.loads(doc)
    if "files" in parsed:
        # Directory mode: one report per .onnx file (written into `output`, over the
        # inputs with in_place, or into `<dir>.<scheme>` beside it), as the CLI does.
        return [Report(d, "", "", None) for d in parsed["files"]]  # type: ignore[return-value]
    result: Any = data
    if data is not None and kind == "proto":
        result = type(model)()
        result.ParseFromString(data)
    return Report(parsed, summary, table, result)


def _calibration(data: Any) -> Dict[str, Any]:
    """``calibration_data`` as the native layer takes it: a path, or a list of
    (input name or None, contiguous float32 array)."""
    if isinstance(data, (str, os.PathLike)):
        return {"calibration_file": os.fspath(data)}
    import numpy as np

    def array(name: Optional[str], value: Any) -> Any:
        a = np.asarray(value)
        if a.dtype.kind != "f":
            what = f"calibration_data[{name!r}]" if name else "calibration_data"
            raise UsageError(f"{what}: expected a float array, got dtype {a.dtype}")
        return np.ascontiguousarray(a, dtype=np.float32)

    if isinstance(data, dict):
        if not data:
            raise UsageError("calibration_data: the dict holds no arrays")
        return {"calibration_data": [(str(k), array(str(k), v)) for k, v in sorted(data.items())]}
    return {"calibration_data": [(None, array(None, data))]}


def inspect(model: ModelLike) -> Dict[str, Any]:
    """The layers, activations, residual blocks and norms reinit finds in ``model``.

    Returns the same document as ``reinit inspect --json`` (``model`` is the path
    as given, or ``"<memory>"`` for bytes / ModelProto).

    Raises:
        InvalidModelError, UnsafeModelError: as for :func:`apply`.
    """
    source, _ = _source(model)
    return json.loads(_native._inspect(source))


def verify(
    model: ModelLike,
    schemes: Optional[List[str]] = None,
    *,
    seed: int = 0,
    steps: Optional[int] = None,
    lr: Optional[float] = None,
    batch: Optional[int] = None,
    optimizer: Optional[str] = None,
    lr_schedule: Optional[str] = None,
    device: str = "cpu",
    input_shape: Optional[str] = None,
    input_q: Optional[float] = None,
    plot: Optional[Union[str, "os.PathLike[str]"]] = None,
    report: Optional[Union[str, "os.PathLike[str]"]] = None,
    **params: Any,
) -> Dict[str, Any]:
    """Trains ``model`` briefly with each of ``schemes`` side by side (same seed, same
    data order) and measures trainability.

    Returns the same document as ``reinit verify --json``: ``runs`` holds one entry per
    scheme with ``loss`` (per step), ``final_loss``, ``heldout``, ``verdict``, ``signal``
    (per-layer second moments), ``grad_norms`` and ``jacobian``. Without ``schemes`` the
    weights as stored are verified. ``params`` are scheme parameters as for :func:`apply`
    (``density``, ``submatrix``, ...); ``plot`` names a directory for the plots (loss,
    signal, Jacobian singular values, gradient norms; each SVG and PNG); ``report`` a file
    for the self-contained HTML report (``--report``: plots inline, the side-by-side
    table, the settings, the model's summary, each verdict with its reason).
    ``lr_schedule`` is ``"constant"`` or ``"cosine"`` (``--lr-schedule``).
    ``input_shape`` is ``--input-shape`` (``"3x224x224"``, ``"2x3x224x224"`` or
    ``"input_ids:2x128,attention_mask:2x128"``); ``input_q`` scales the float task
    input to that second moment (``--input-q``).

    Raises:
        UsageError: unknown scheme, parameter or setting.
        InvalidModelError, UnsafeModelError: as for :func:`apply`.
        UnsupportedError: the graph uses ops the trainer cannot run (all listed).
        ReinitIOError: the report could not be written.
    """
    unknown = sorted(set(params) - set(SCHEME_PARAMETERS))
    if unknown:
        raise UsageError(
            f"unknown scheme parameter(s) {', '.join(unknown)} (known: {', '.join(SCHEME_PARAMETERS)})"
        )
    source, _ = _source(model)
    params_json = json.dumps({k.replace("_", "-"): v for k, v in params.items() if v is not None}) if params else None
    settings = dict(
        steps=steps,
        lr=lr,
        batch=batch,
        optimizer=optimizer,
        lr_schedule=lr_schedule,
        device=device,
        input_shape=input_shape,
        input_q=input_q,
        plot=None if plot is None else os.fspath(plot),
    )
    return json.loads(
        _native._verify(
            source,
            list(schemes or []),
            seed=seed,
            params_json=params_json,
            report=None if report is None else os.fspath(report),
            command=_verify_call(model, schemes, seed, {**settings, **params}) if report is not None else "",
            **settings,
        )
    )


def _verify_call(model: Any, schemes: Optional[List[str]], seed: int, keywords: Mapping[str, Any]) -> str:
    """The call as Python text, for the report's "reproduce with" line."""
    if isinstance(model, (str, os.PathLike)):
        shown = repr(os.fspath(model))
    else:
        shown = f"<{type(model).__name__}>"
    parts = [shown, repr(list(schemes or [])), f"seed={seed!r}"]
    parts += [f"{k}={v!r}" for k, v in keywords.items() if v is not None and not (k == "device" and v == "cpu")]
    return f"reinit.verify({', '.join(parts)})"

