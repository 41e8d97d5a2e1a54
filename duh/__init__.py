"""duh: compile, check, serve and measure ML models on ONNX Runtime, OpenVINO, TVM and TensorRT.

``duh.load`` (the runtime shim) is imported eagerly; ``duh.build`` pulls in the compiler on
first use, so serving and benchmarking never load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from duh._version import __version__
from duh.errors import DuhError
from duh.runtime import Session, load

if TYPE_CHECKING:
    from duh.compiler import build


__all__ = ["DuhError", "Session", "__version__", "build", "load"]


def __getattr__(name: str) -> Any:
    if name == "build":
        from duh.compiler import build

        return build
    raise AttributeError(f"module 'duh' has no attribute {name!r}")
