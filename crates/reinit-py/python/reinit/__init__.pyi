import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import torch as torch
from ._errors import (
    InvalidModelError as InvalidModelError,
    LoadIntoError as LoadIntoError,
    ReinitError as ReinitError,
    ReinitIOError as ReinitIOError,
    UnsafeModelError as UnsafeModelError,
    UnsupportedError as UnsupportedError,
    UsageError as UsageError,
)

__version__: str
SCHEME_PARAMETERS: Tuple[str, ...]
PARAMETERS: Tuple[str, ...]

PathLike = Union[str, "os.PathLike[str]"]
#: a path, the serialized model, an ``onnx.ModelProto`` (or a Report, for load_into)
ModelLike = Union[PathLike, bytes, bytearray, memoryview, Any]

class Report:
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
    lsuv: Optional[Dict[str, Any]]
    norms_reset: List[Dict[str, Any]]
    #: the rewritten model: ModelProto (for a ModelProto), bytes (bytes, or a path without output), or None
    result: Any
    def __init__(self, doc: Dict[str, Any], summary: str, table: str, result: Any = ...) -> None: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_json(self, indent: Optional[int] = ...) -> str: ...
    def summary(self) -> str: ...
    def table(self) -> str: ...
    def __getitem__(self, key: str) -> Any: ...

def apply(
    model: ModelLike,
    scheme: str,
    *,
    seed: Optional[int] = ...,
    output: Optional[PathLike] = ...,
    stream: Optional[str] = ...,
    density: Optional[float] = ...,
    sparsity_distribution: Optional[str] = ...,
    gain: Optional[float] = ...,
    distribution: Optional[str] = ...,
    fan_mode: Optional[str] = ...,
    sigma_b: Optional[float] = ...,
    tau: Optional[float] = ...,
    epsilon: Optional[float] = ...,
    q_star: Optional[float] = ...,
    submatrix: Optional[str] = ...,
    more_nonzeros: Optional[bool] = ...,
    mask_mode: Optional[str] = ...,
    base: Optional[str] = ...,
    rules: Union[PathLike, Sequence[Mapping[str, Any]], None] = ...,
    only: Optional[str] = ...,
    exclude: Optional[str] = ...,
    fallback: str = ...,
    zero_init_last_gamma: bool = ...,
    reset_norms: bool = ...,
    calibration_data: Union[PathLike, Any, Mapping[str, Any], None] = ...,
    lsuv_data: Union[PathLike, Any, Mapping[str, Any], None] = ...,
    force: bool = ...,
    in_place: bool = ...,
    dry_run: bool = ...,
    mask_out: Optional[PathLike] = ...,
) -> Report: ...
def inspect(model: ModelLike) -> Dict[str, Any]: ...

def verify(
    model: ModelLike,
    schemes: Optional[List[str]] = ...,
    *,
    seed: int = ...,
    steps: Optional[int] = ...,
    lr: Optional[float] = ...,
    batch: Optional[int] = ...,
    optimizer: Optional[str] = ...,
    lr_schedule: Optional[str] = ...,
    device: str = ...,
    input_shape: Optional[str] = ...,
    input_q: Optional[float] = ...,
    plot: Optional[Union[str, "os.PathLike[str]"]] = ...,
    report: Optional[Union[str, "os.PathLike[str]"]] = ...,
    **params: Any,
) -> Dict[str, Any]: ...
