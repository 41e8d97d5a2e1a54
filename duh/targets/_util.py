"""Helpers shared by engine plugins."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from types import ModuleType

import onnx

from duh.errors import MissingDependencyError

__all__ = ["import_engine", "package_version", "save_onnx"]

# Models at or above this size are written with their weights in an external data file.
_EXTERNAL_DATA_BYTES = 1_800_000_000


def import_engine(module: str, package: str, extra: str, what: str) -> ModuleType:
    """Import an optional engine, or raise ``MissingDependencyError`` naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package, extra, what) from None


def package_version(package: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def save_onnx(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save ``model`` at ``path`` (weights beside it when large); return the files written."""
    if model.ByteSize() < _EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path))
        return [path]
    data = path.with_suffix(path.suffix + ".data")
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
    )
    return [path, data]

