"""The exceptions `reinit` raises.

Each engine error maps to the class of the exit code the `reinit` CLI would
exit with, and carries the message the CLI prints after ``reinit: error:``.
"""

from __future__ import annotations

__all__ = [
    "ReinitError",
    "UsageError",
    "InvalidModelError",
    "UnsafeModelError",
    "ReinitIOError",
    "UnsupportedError",
    "LoadIntoError",
]


class ReinitError(Exception):
    """Base class of every error raised by reinit (CLI exit code 1: an internal error)."""

    exit_code: int = 1


class UsageError(ReinitError, ValueError):
    """Bad arguments: unknown scheme, a parameter the scheme does not take, a bad
    regex or rules file, conflicting options (CLI exit code 2)."""

    exit_code = 2


class InvalidModelError(ReinitError, ValueError):
    """The model could not be read or is not a valid ONNX model (CLI exit code 3)."""

    exit_code = 3


class UnsafeModelError(ReinitError, ValueError):
    """The model was refused as unsafe: external-data paths that leave the model's
    directory, symlinks, hard links, declared sizes out of bounds (CLI exit code 4)."""

    exit_code = 4


class ReinitIOError(ReinitError, OSError):
    """Writing the output failed, or would overwrite a file without ``force=True``
    (CLI exit code 5)."""

    exit_code = 5


class UnsupportedError(ReinitError):
    """The model uses something this operation cannot handle (CLI exit code 6)."""

    exit_code = 6


class LoadIntoError(ReinitError, ValueError):
    """`reinit.torch.load_into` cannot copy the ONNX weights into the module: a
    BatchNorm-folded export, parameters left unset with ``strict=True``, or shapes
    that do not fit."""

    exit_code = 2
