"""Input/output signatures and the checks a feed must pass before an engine sees it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from duh.errors import InputError

__all__ = ["Dim", "TensorSpec", "check_feed", "dtype_name"]

# A dimension: a fixed size, a symbolic name (e.g. "batch"), or None when nothing is known.
Dim = int | str | None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, dtype (numpy name, e.g. ``float32``) and shape of one input or output."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def is_dynamic(self) -> bool:
        """Whether any dimension is not a fixed size."""
        return any(not isinstance(d, int) for d in self.shape)

    def shape_text(self) -> str:
        """The shape as people write it: ``[batch, 3, 224, 224]``."""
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_json(self) -> dict[str, Any]:
        """The form stored in manifest.json."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Read the form stored in manifest.json."""
        shape = tuple(
            d if isinstance(d, (int, str)) or d is None else int(d) for d in data["shape"]
        )
        return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=shape)


def dtype_name(dtype: Any) -> str:
    """The numpy name of a dtype (``float32``, ``int64``, ``bool``, ``object`` for strings)."""
    return np.dtype(dtype).name


def _as_text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _texts(name: str, array: np.ndarray) -> np.ndarray:
    try:
        return np.vectorize(_as_text, otypes=[object])(array) if array.size else array
    except UnicodeDecodeError:
        raise InputError(f"input {name!r} holds bytes that are not UTF-8 text") from None


def check_feed(specs: Sequence[TensorSpec], feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check a feed against the input signature and return it as numpy arrays.

    Names must match exactly, dtypes must be equal, ranks and fixed dimensions must agree, and
    a symbolic dimension must take the same value in every input that names it.
    """
    expected = {s.name: s for s in specs}
    unknown = sorted(set(feed) - set(expected))
    if unknown:
        raise InputError(
            f"unknown input {', '.join(map(repr, unknown))}; this model's inputs are "
            f"{', '.join(map(repr, expected))}"
        )
    missing = [n for n in expected if n not in feed]
    if missing:
        raise InputError(
            f"missing input {', '.join(map(repr, missing))}; this model needs "
            + ", ".join(f"{s.name}: {s.dtype}{s.shape_text()}" for s in specs)
        )
    arrays: dict[str, np.ndarray] = {}
    bound: dict[str, tuple[int, str]] = {}
    for spec in specs:
        value = feed[spec.name]
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        given = array.dtype.name
        if given != spec.dtype and not (spec.dtype == "object" and array.dtype.kind in "USO"):
            raise InputError(
                f"input {spec.name!r} has dtype {given}, expected {spec.dtype}; "
                f"convert it with .astype(np.{spec.dtype})"
            )
        if array.ndim != len(spec.shape):
            raise InputError(
                f"input {spec.name!r} has shape {list(array.shape)} (rank {array.ndim}), "
                f"expected {spec.shape_text()} (rank {len(spec.shape)})"
            )
        for axis, (size, dim) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if isinstance(dim, int) and size != dim:
                raise InputError(
                    f"input {spec.name!r} has shape {list(array.shape)}, expected "
                    f"{spec.shape_text()}: axis {axis} must be {dim}, got {size}"
                )
            if isinstance(dim, str):
                if dim in bound and bound[dim][0] != size:
                    first_size, first_input = bound[dim]
                    raise InputError(
                        f"dimension {dim!r} is {first_size} in input {first_input!r} but {size} "
                        f"in input {spec.name!r}; inputs sharing a dimension name must agree"
                    )
                bound.setdefault(dim, (size, spec.name))
        if spec.dtype == "object" and array.dtype.kind in "SO":
            # Engines take str elements; ORT would silently turn bytes into "b'...'".
            array = _texts(spec.name, array)
        # np.require keeps a scalar's rank 0; np.ascontiguousarray would make it rank 1.
        arrays[spec.name] = np.require(array, requirements="C")
    return arrays
