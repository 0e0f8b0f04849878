"""Weights back into PyTorch: :func:`load_into` copies the (re-initialized)
initializers of an ONNX export into the ``torch.nn.Module`` it was exported from.

Exporters change names and layouts, and `load_into` undoes what it can:

- **names**: an initializer named like a parameter (``layer1.0.conv1.weight``)
  is that parameter; an ``Identity`` node's output named like a parameter (the
  TorchScript exporter deduplicates equal initializers that way) reads its input.
- **lost names** (``onnx::MatMul_123``, ``onnx::Conv_7``, ``onnx::Gemm_9``): the
  consuming node's scope (``/blocks/blocks.0/attn/q/MatMul``) names the module
  (``blocks.0.attn.q``); its parameter of the right shape is taken. Left-overs
  are matched by value correlation with the module's current parameters, then by
  export order among parameters of the same shape.
- **layouts**: ``MatMul(x, W)`` and ``Gemm(transB=0)`` hold Wᵀ of ``nn.Linear``'s
  ``[out, in]`` weight; it is transposed back.
- **tied weights**: every alias of one tensor gets one value. When the export
  duplicated the tie (``tok.weight`` and a transposed ``onnx::MatMul_*`` copy) and
  the copies now differ, the parameter's own name wins and the conflict is reported.
- **BatchNorm folded into Conv** (the default eval export, or the dynamo
  optimizer): refused, because the conv weight in the file is W·γ/√(σ²+ε), not the
  module's parameter.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _native, _source
from ._errors import LoadIntoError

__all__ = ["load_into", "LoadResult", "Match"]

# Priority of the ways a parameter can be matched (lower wins).
_EXACT, _ALIAS, _SCOPE, _CORRELATION, _ORDER = range(5)
_METHOD = {_EXACT: "name", _ALIAS: "identity", _SCOPE: "scope", _CORRELATION: "correlation", _ORDER: "order"}


@dataclass
class Match:
    """How one parameter was matched."""

    initializer: str
    """The ONNX initializer the value came from."""
    method: str
    """``name``, ``identity``, ``scope``, ``correlation`` or ``order``."""
    transposed: bool
    """True when the initializer held the transpose (``MatMul`` / ``Gemm transB=0``)."""


@dataclass
class LoadResult:
    """What :func:`load_into` did."""

    set: List[str] = field(default_factory=list)
    """Parameter names that were set (every alias of a tied parameter)."""
    not_set: List[str] = field(default_factory=list)
    """Parameter names no initializer was found for (kept as they were)."""
    buffers: List[str] = field(default_factory=list)
    """Buffers set by exact name (e.g. BatchNorm running statistics)."""
    unused: List[str] = field(default_factory=list)
    """Float initializers that went into no parameter or buffer."""
    matches: Dict[str, Match] = field(default_factory=dict)
    """Parameter name → how it was matched."""
    conflicts: List[str] = field(default_factory=list)
    """Tied parameters whose ONNX copies disagree, and which copy was used."""


@dataclass
class _Candidate:
    priority: int
    initializer: str
    transposed: bool
    value: np.ndarray


def _module_path(scopes: List[str], modules: Dict[str, Any]) -> Optional[str]:
    """Module path for the scopes of a TorchScript node name
    (``/layer2/layer2.0/downsample/downsample.0/Conv`` → ``layer2.0.downsample.0``)."""
    cur = ""
    found = False
    for comp in scopes:
        if not comp:
            continue
        parent = cur.rsplit(".", 1)[0] if "." in cur else ""
        options = [f"{cur}.{comp}" if cur else comp, f"{parent}.{comp}" if parent else comp, comp]
        for option in options:
            if option in modules:
                cur, found = option, True
                break
        else:
            return None
    return cur if found else None


def _transposed_for(op: str, index: int, trans_b: int) -> Optional[bool]:
    """Whether an initializer at input `index` of `op` holds Wᵀ of a Linear weight."""
    if op == "MatMul" and index == 1:
        return True
    if op == "Gemm" and index == 1:
        return trans_b == 0
    return None


def _fit(value: np.ndarray, shape: Tuple[int, ...], transposed: Optional[bool]) -> Optional[Tuple[bool, np.ndarray]]:
    """`value` (or its transpose) shaped like `shape`, with whether it was transposed."""
    if transposed is not True and tuple(value.shape) == shape:
        return False, value
    if transposed is not False and value.ndim == 2 and tuple(value.shape[::-1]) == shape:
        return True, value.T
    return None


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    if a.size < 2:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _folded_batchnorm(module: Any, weights: Dict[str, np.ndarray], nodes: List[tuple]) -> List[str]:
    import torch

    bns = [name for name, m in module.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return []
    bn_nodes = sum(1 for n in nodes if n[1] == "BatchNormalization")
    missing = [
        name
        for name in bns
        if not any(f"{name}.{k}" in weights for k in ("weight", "bias", "running_mean", "running_var"))
    ]
    if missing and bn_nodes < len(bns):
        return missing
    return []


def load_into(module: Any, onnx_model: Any, strict: bool = True) -> LoadResult:
    """Copy the weights of an ONNX export into ``module`` (in place, under ``no_grad``).

    Args:
        module: the ``torch.nn.Module`` the model was exported from (or one of the
            same architecture).
        onnx_model: a path, ``bytes``, an ``onnx.ModelProto``, or a
            :class:`reinit.Report` (its rewritten model or output file).
        strict: raise :class:`LoadIntoError` (and change nothing) when a parameter
            of ``module`` has no counterpart in the file or an initializer named like
            a parameter has the wrong shape. With ``strict=False`` those parameters
            are left as they were and listed in :attr:`LoadResult.not_set`.

    Returns:
        A :class:`LoadResult`: which parameters were set, which were not, how each
        was matched, which initializers went unused, and tie conflicts.

    Raises:
        LoadIntoError: a BatchNorm-folded export (always), or missing / misshapen
            parameters with ``strict=True``.
        ReinitError: the model cannot be read (as for :func:`reinit.apply`).
    """
    import torch

    source, _ = _source(onnx_model)
    weights, nodes = _native._weights(source)
    nodes = [tuple(n) for n in nodes]

    folded = _folded_batchnorm(module, weights, nodes)
    if folded:
        raise LoadIntoError(
            f"this export has BatchNorm folded into the convolutions: the module's BatchNorm "
            f"layer{'s' if len(folded) > 1 else ''} {', '.join(folded)} "
            f"{'have' if len(folded) > 1 else 'has'} no parameters and no BatchNormalization node in "
            "the graph, so each conv weight in the file is W·γ/√(σ²+ε) (with a new bias), not the "
            "module's parameter. Re-export keeping BatchNorm: torch.onnx.export(..., "
            "training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False), or fold the "
            "module first (torch.nn.utils.fusion.fuse_conv_bn_eval) so it matches the file."
        )

    # Parameters grouped by tensor identity (tied weights are one group), in registration order.
    groups: Dict[int, List[str]] = {}
    tensors: Dict[int, Any] = {}
    owner: Dict[str, int] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        key = id(p)
        groups.setdefault(key, []).append(name)
        tensors[key] = p
        owner[name] = key
    shape_of = {key: tuple(t.shape) for key, t in tensors.items()}
    modules = dict(module.named_modules())

    # Consumers of each initializer, and Identity aliases (output name → initializer).
    consumers: Dict[str, List[Tuple[str, str, int, int]]] = {}
    alias: Dict[str, str] = {}
    first_use: Dict[str, int] = {}
    for pos, (node_name, op, inputs, outputs, _trans_a, trans_b) in enumerate(nodes):
        for i, inp in enumerate(inputs):
            if inp in weights:
                consumers.setdefault(inp, []).append((node_name, op, i, trans_b))
                first_use.setdefault(inp, pos)
        if op == "Identity" and inputs and inputs[0] in weights:
            for out in outputs:
                alias[out] = inputs[0]

    candidates: Dict[int, List[_Candidate]] = {}
    used: Dict[str, int] = {}
    errors: List[str] = []

    def take(key: int, priority: int, init: str, transposed: bool, value: np.ndarray) -> None:
        candidates.setdefault(key, []).append(_Candidate(priority, init, transposed, value))
        used.setdefault(init, key)

    # 1. names (and Identity aliases of them)
    for name, key in owner.items():
        init, priority = (name, _EXACT) if name in weights else (alias.get(name), _ALIAS)
        if init is None:
            continue
        fit = _fit(weights[init], shape_of[key], None)
        if fit is None:
            errors.append(
                f"{name}: initializer '{init}' has shape {list(weights[init].shape)}, "
                f"the parameter {list(shape_of[key])}"
            )
            continue
        take(key, priority, init, fit[0], fit[1])

    # 2. lost names: the consuming node's scope names the module
    for init in sorted((w for w in weights if w not in used), key=lambda w: first_use.get(w, 1 << 30)):
        for node_name, op, index, trans_b in consumers.get(init, []):
            parts = node_name.split("/")
            if len(parts) < 3 or parts[0] != "":
                continue
            path = _module_path(parts[1:-1], modules)
            if path is None:
                continue
            own = [n for n, _ in modules[path].named_parameters(recurse=False, prefix=path) if n in owner]
            transposed = _transposed_for(op, index, trans_b)
            fits = []
            for pname in own:
                key = owner[pname]
                fit = _fit(weights[init], shape_of[key], transposed)
                if fit is not None:
                    fits.append((key, fit))
            fresh = [f for f in fits if not candidates.get(f[0])]
            chosen = fresh if len(fresh) == 1 else fits if len(fits) == 1 else []
            if chosen:
                key, (was_t, value) = chosen[0]
                take(key, _SCOPE, init, was_t, value)
                break

    # 3. value correlation with the module's current parameters (weights left unchanged)
    def open_keys() -> List[int]:
        return [k for k in groups if k not in candidates]

    def open_inits() -> List[str]:
        return sorted((w for w in weights if w not in used), key=lambda w: first_use.get(w, 1 << 30))

    scored = []
    for key in open_keys():
        current = tensors[key].detach().cpu().float().numpy()
        for init in open_inits():
            transposed = None
            for _, op, index, trans_b in consumers.get(init, []):
                transposed = _transposed_for(op, index, trans_b)
                if transposed is not None:
                    break
            fit = _fit(weights[init], shape_of[key], transposed)
            if fit is None or fit[1].size < 16:
                continue
            c = _corr(current, fit[1])
            if c > 0.999:
                scored.append((c, key, init, fit))
    for c, key, init, fit in sorted(scored, key=lambda s: -s[0]):
        if key in candidates or init in used:
            continue
        take(key, _CORRELATION, init, fit[0], fit[1])

    # 4. export order among parameters and initializers of the same shape
    by_shape: Dict[Tuple[int, ...], List[int]] = {}
    for key in open_keys():
        by_shape.setdefault(shape_of[key], []).append(key)
    for shape, keys in by_shape.items():
        inits = []
        for init in open_inits():
            transposed = None
            for _, op, index, trans_b in consumers.get(init, []):
                transposed = _transposed_for(op, index, trans_b)
                if transposed is not None:
                    break
            fit = _fit(weights[init], shape, transposed)
            if fit is not None and init not in used:
                inits.append((init, fit))
        if len(inits) == len(keys):
            for key, (init, fit) in zip(keys, inits):
                take(key, _ORDER, init, fit[0], fit[1])

    result = LoadResult()
    plan: List[Tuple[Any, np.ndarray]] = []
    for key, names in groups.items():
        cands = sorted(candidates.get(key, []), key=lambda c: c.priority)
        if not cands:
            result.not_set.extend(names)
            continue
        best = cands[0]
        for other in cands[1:]:
            if other.value.shape != best.value.shape or not np.array_equal(other.value, best.value):
                result.conflicts.append(
                    f"{' = '.join(names)}: tied parameter has {len(cands)} copies in the file that differ "
                    f"('{best.initializer}' and '{other.initializer}'); used '{best.initializer}' "
                    f"(matched by {_METHOD[best.priority]})"
                )
        plan.append((tensors[key], best.value))
        result.set.extend(names)
        for n in names:
            result.matches[n] = Match(best.initializer, _METHOD[best.priority], best.transposed)

    buffer_plan = []
    for name, buf in module.named_buffers():
        if name in weights and tuple(weights[name].shape) == tuple(buf.shape) and buf.is_floating_point():
            buffer_plan.append((buf, weights[name]))
            result.buffers.append(name)
            used.setdefault(name, -1)

    used_inits = {m.initializer for m in result.matches.values()} | set(result.buffers)
    for key in groups:
        for c in candidates.get(key, []):
            used_inits.add(c.initializer)
    result.unused = [w for w in open_inits_all(weights, first_use) if w not in used_inits]

    if strict and (errors or result.not_set):
        problems = list(errors)
        if result.not_set:
            problems.append(
                f"no initializer found for {len(result.not_set)} parameter"
                f"{'s' if len(result.not_set) > 1 else ''}: {', '.join(result.not_set)}"
            )
        raise LoadIntoError(
            "cannot load the ONNX weights into the module (nothing was changed): "
            + "; ".join(problems)
            + ". Pass strict=False to set the parameters that were found."
        )
    for message in result.conflicts:
        warnings.warn(message, stacklevel=2)
    with torch.no_grad():
        for tensor, value in plan + buffer_plan:
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(dtype=tensor.dtype, device=tensor.device))
    return result


def open_inits_all(weights: Dict[str, np.ndarray], first_use: Dict[str, int]) -> List[str]:
    return sorted(weights, key=lambda w: first_use.get(w, 1 << 30))
