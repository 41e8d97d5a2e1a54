"""The runtime shim: ``load(artifact)`` gives a ``Session`` with one API for every engine.

The runtime never imports the compiler: serving and benchmarking depend on this package only.
"""

from __future__ import annotations

from duh.runtime._engine import Engine, EngineOptions, OpTiming
from duh.runtime._manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    read_manifest,
    verify_files,
)
from duh.runtime._session import Session, load
from duh.runtime._signature import TensorSpec, check_feed

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Engine",
    "EngineOptions",
    "Manifest",
    "OpTiming",
    "Session",
    "TensorSpec",
    "check_feed",
    "load",
    "read_manifest",
    "verify_files",
]
