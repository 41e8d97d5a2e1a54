"""ONNX Runtime's exception classes, which do not derive from RuntimeError."""

from __future__ import annotations

import functools

__all__ = ["ort_errors"]


@functools.cache
def ort_errors() -> tuple[type[BaseException], ...]:
    """The exceptions ORT raises for models and inputs it rejects (plus RuntimeError)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:
        return (RuntimeError,)
    names = (
        "Fail",
        "InvalidArgument",
        "InvalidGraph",
        "InvalidProtobuf",
        "NoSuchFile",
        "NotImplemented",
        "RuntimeException",
        "EPFail",
        "NoModel",
    )
    found = [getattr(state, n) for n in names if isinstance(getattr(state, n, None), type)]
    return (RuntimeError, *found)
