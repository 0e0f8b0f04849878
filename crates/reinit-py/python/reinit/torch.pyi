from dataclasses import dataclass
from typing import Any, Dict, List

__all__ = ["load_into", "LoadResult", "Match"]

@dataclass
class Match:
    initializer: str
    method: str
    transposed: bool

@dataclass
class LoadResult:
    set: List[str]
    not_set: List[str]
    buffers: List[str]
    unused: List[str]
    matches: Dict[str, Match]
    conflicts: List[str]

def load_into(module: Any, onnx_model: Any, strict: bool = ...) -> LoadResult: ...
