"""ONNX Runtime's exception classes, which do not derive from RuntimeError."""

from __future__ import annotations

import functools
import re

__all__ = ["ort_errors", "ort_reason"]


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


_LOCALE = re.compile(r"Failed to construct locale with name:\s*([^:\s]+)")


def ort_reason(exc: BaseException) -> str:
    """The line of an ORT error worth showing: its first, or, for a StringNormalizer that
    cannot make its locale, what is missing and how to install it."""
    text = str(exc).strip()
    missing = _LOCALE.search(text)
    if missing:
        name = missing.group(1)
        return (
            f"its StringNormalizer needs the locale {name!r}, which this machine lacks: install "
            f"it (Debian/Ubuntu: apt-get install locales, then locale-gen {name}) or set the "
            "node's locale attribute to one that `locale -a` lists"
        )
    return text.splitlines()[0] if text else type(exc).__name__
