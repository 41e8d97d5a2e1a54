"""The build cache (calibration ranges, tuning records, timing caches) under one directory.

Kept outside ``duh.compiler`` so that the calibration code, which the compiler calls, can use it
without importing the compiler.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_dir", "cache_key"]


def cache_dir(kind: str) -> Path:
    """The cache directory for ``kind`` (``$DUH_CACHE_DIR`` or ``~/.cache/duh``), created."""
    root = os.environ.get("DUH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "duh"
    )
    path = Path(root) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(*parts: str) -> str:
    """A full sha256 over ``parts`` (never cut short: short ids collide)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()
