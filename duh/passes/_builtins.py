"""The built-in passes, listed explicitly; importing this module registers them."""

from __future__ import annotations

from duh.passes import cleanup, fold, fuse, precision, prune, quantize, simplify

__all__ = ["cleanup", "fold", "fuse", "precision", "prune", "quantize", "simplify"]
