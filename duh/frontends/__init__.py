"""Front ends: PyTorch, TensorFlow/Keras and scikit-learn models into ONNX, for ``duh build``.

Each front end is an optional extra, its framework imported only when a model of its kind is
built. ``find(path)`` says which front end a path belongs to (None for ONNX, which duh reads
itself); ``export(path, options)`` runs it.
"""

from __future__ import annotations

import importlib

from duh.errors import ModelError
from duh.frontends._base import (
    Exported,
    Frontend,
    FrontendOptions,
    QuantizeRequest,
    Reference,
    frontend,
    is_onnx,
    registered,
)

__all__ = [
    "Exported",
    "Frontend",
    "FrontendOptions",
    "QuantizeRequest",
    "Reference",
    "export",
    "find",
    "frontend",
    "registered",
]

# The built-in front ends, by module; each registers itself when imported (imports no framework).
_BUILTINS: tuple[str, ...] = ("sklearn", "tensorflow", "torch")
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for name in _BUILTINS:
            importlib.import_module(f"duh.frontends.{name}")
        _loaded = True


def find(path: str) -> Frontend | None:
    """The front end that reads ``path``; None when duh reads it as ONNX itself."""
    if is_onnx(path):
        return None
    _load_builtins()
    for entry in registered().values():
        if entry.claims(path):
            return entry
    return None


def export(path: str, options: FrontendOptions) -> Exported:
    """Export the model at ``path`` to ONNX with the front end that claims it."""
    entry = find(path)
    if entry is None:
        kinds = "; ".join(e.summary for e in registered().values())
        raise ModelError(
            f"{path!r} is not a model duh reads: give an .onnx file or a model of a front end "
            f"({kinds or 'none installed'})"
        )
    return entry.export(path, options)
