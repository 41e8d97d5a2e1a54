"""The build cache (stage outputs, calibration ranges, tuning records, timing caches) under one
directory: ``$DUH_CACHE_DIR`` or ``~/.cache/duh``.

The key helpers live in ``duh._cache`` so that layers below the compiler can use them too; the
content-addressed store of build stages is ``StageCache`` (``<root>/builds``).
"""

from __future__ import annotations

from duh._cache import cache_dir, cache_key
from duh.compiler._stage_cache import CacheEntry, CacheEvent, PruneResult, StageCache

__all__ = ["CacheEntry", "CacheEvent", "PruneResult", "StageCache", "cache_dir", "cache_key"]
