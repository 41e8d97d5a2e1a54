"""What an engine plugin implements and is handed: the runtime names ``duh.targets`` uses.

The same names as ``duh.runtime`` exports, from a module that stays below the plugins:
``duh.runtime`` itself also holds ``load``, which looks the plugins up, so a plugin importing
``duh.runtime`` would close an import cycle through it.
"""

from __future__ import annotations

from duh.runtime._engine import Engine, EngineOptions, OpTiming
from duh.runtime._manifest import Manifest, hash_files
from duh.runtime._signature import Dim, TensorSpec, dtype_name

__all__ = [
    "Dim",
    "Engine",
    "EngineOptions",
    "Manifest",
    "OpTiming",
    "TensorSpec",
    "dtype_name",
    "hash_files",
]
