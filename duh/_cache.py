"""The build cache (calibration ranges, tuning records, timing caches) under one directory.

Kept outside ``duh.compiler`` so that the calibration code, which the compiler calls, can use it
without importing the compiler.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from duh.errors import ConfigError

__all__ = ["cache_dir", "cache_key", "parse_size"]

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, what: str = "--max-size") -> int:
    """``10G``, ``500M``, ``2048`` (bytes) as bytes; anything else is a ``ConfigError``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if match is None:
        raise ConfigError(f"{what} {text!r} is not a size like 10G, 500M or 2048")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


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
