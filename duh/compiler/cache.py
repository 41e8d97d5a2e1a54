"""The build cache (calibration results, tuning records, timing caches) under one directory.

The helpers live in ``duh._cache`` so that layers below the compiler can use them too.
"""

from __future__ import annotations

from duh._cache import cache_dir, cache_key

__all__ = ["cache_dir", "cache_key"]
