"""``duh serve``: a batching inference server for artifacts, speaking the Open Inference Protocol.

The stock ``tritonclient`` (HTTP with JSON or binary tensors, and gRPC) works against it. It loads
artifacts with ``duh.load`` and never imports the compiler.
"""

from __future__ import annotations

from duh.serve._batcher import BatchConfig
from duh.serve._model import LoadOptions, ModelSource
from duh.serve._repository import Routing, discover, parse_artifact, parse_shadow, parse_split
from duh.serve._server import Addresses, ServeConfig, run, serve

__all__ = [
    "Addresses",
    "BatchConfig",
    "LoadOptions",
    "ModelSource",
    "Routing",
    "ServeConfig",
    "discover",
    "parse_artifact",
    "parse_shadow",
    "parse_split",
    "run",
    "serve",
]
