"""``duh serve``: a batching inference server for artifacts, speaking the Open Inference Protocol.

The stock ``tritonclient`` (HTTP with JSON or binary tensors, and gRPC) works against it. It loads
artifacts with ``duh.load`` and never imports the compiler.

``BatchConfig`` is imported eagerly (the CLI reads its defaults and help to declare its options);
everything else loads on first use, because it needs the ``serve`` extra (aiohttp, prometheus).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from duh.serve._batching import BatchConfig

if TYPE_CHECKING:
    from duh.serve._drift import DriftConfig
    from duh.serve._extras import ExtrasConfig
    from duh.serve._instances import abandoned_instances
    from duh.serve._jobs import JobConfig
    from duh.serve._model import LoadOptions, ModelSource
    from duh.serve._modelcache import MemoryConfig, parse_size
    from duh.serve._ratelimit import Limits, parse_concurrency, parse_rate_limit
    from duh.serve._repository import (
        Routing,
        discover,
        parse_artifact,
        parse_shadow,
        parse_split,
    )
    from duh.serve._respcache import parse_cache
    from duh.serve._samples import SampleConfig
    from duh.serve._security import Security
    from duh.serve._server import Addresses, ServeConfig, ServeRequest, run, serve

__all__ = [
    "Addresses",
    "BatchConfig",
    "DriftConfig",
    "ExtrasConfig",
    "JobConfig",
    "Limits",
    "LoadOptions",
    "MemoryConfig",
    "ModelSource",
    "Routing",
    "SampleConfig",
    "Security",
    "ServeConfig",
    "ServeRequest",
    "abandoned_instances",
    "discover",
    "parse_artifact",
    "parse_cache",
    "parse_concurrency",
    "parse_rate_limit",
    "parse_shadow",
    "parse_size",
    "parse_split",
    "run",
    "serve",
]

_LAZY = {
    "DriftConfig": "_drift",
    "ExtrasConfig": "_extras",
    "JobConfig": "_jobs",
    "SampleConfig": "_samples",
    "LoadOptions": "_model",
    "ModelSource": "_model",
    "abandoned_instances": "_instances",
    "MemoryConfig": "_modelcache",
    "parse_size": "_modelcache",
    "Limits": "_ratelimit",
    "parse_concurrency": "_ratelimit",
    "parse_rate_limit": "_ratelimit",
    "parse_cache": "_respcache",
    "Routing": "_repository",
    "discover": "_repository",
    "parse_artifact": "_repository",
    "parse_shadow": "_repository",
    "parse_split": "_repository",
    "Security": "_security",
    "Addresses": "_server",
    "ServeConfig": "_server",
    "ServeRequest": "_server",
    "run": "_server",
    "serve": "_server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'duh.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"duh.serve.{module}"), name)
