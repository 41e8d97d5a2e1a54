"""The package version, importable without importing the root package (no import cycle)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
