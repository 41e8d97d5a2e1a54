"""Sample files: the input data formats shared by calibration and benchmarking.

A sample is one feed with a batch of one. Accepted files:

- ``.npz`` with one array per model input, named after the input (a single-input model may use
  any one array name, e.g. ``np.savez``'s ``arr_0``); the first axis counts samples;
- ``.npy`` holding the samples of a single-input model, first axis = samples;
- a directory of ``.npy``/``.npz`` files read in name order, their samples concatenated.

An array whose rank equals the input's rank is split along its first axis into samples that keep
a batch axis of one (``(200, 1, 8, 8)`` gives 200 samples of ``(1, 1, 8, 8)``); an array one rank
higher holds whole feeds along its first axis; one rank lower is a single sample without its
batch axis.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duh.errors import ConfigError, InputError
from duh.runtime._signature import TensorSpec

__all__ = [
    "DATA_SUFFIXES",
    "ValueRange",
    "batch_axis",
    "read_samples",
    "synthetic_feed",
    "synthetic_shapes",
]

DATA_SUFFIXES = (".npz", ".npy")


def _split(spec: TensorSpec, array: np.ndarray, where: str) -> list[np.ndarray]:
    rank = len(spec.shape)
    if array.ndim == rank + 1:
        return list(array)
    if array.ndim == rank:
        first = spec.shape[0] if rank else None
        if rank == 0 or (isinstance(first, int) and first > 1 and array.shape[0] == first):
            # The model fixes its first axis at this size (a shape vector, a [3, 1] matrix):
            # the array is one whole feed, not samples to split.
            return [array]
        return [array[i : i + 1] for i in range(array.shape[0])]
    if array.ndim == rank - 1:
        return [array[None]]
    raise InputError(
        f"{where}: array for input {spec.name!r} has shape {list(array.shape)}, which does not fit "
        f"{spec.shape_text()} (expected rank {rank}, with the first axis counting samples)"
    )


def _cast(spec: TensorSpec, array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.name == spec.dtype:
        return array
    want = np.dtype(spec.dtype) if spec.dtype != "object" else np.dtype(object)
    same_kind = (array.dtype.kind == want.kind) or (array.dtype.kind in "iu" and want.kind in "iu")
    if not same_kind:
        raise InputError(
            f"{where}: array for input {spec.name!r} has dtype {array.dtype.name}, expected "
            f"{spec.dtype}; save it with .astype(np.{spec.dtype})"
        )
    return array.astype(want)


def _arrays(path: Path, inputs: Sequence[TensorSpec]) -> Mapping[str, np.ndarray]:
    names = [s.name for s in inputs]
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"cannot read {path} as numpy data ({exc}); pass .npz or .npy files"
        ) from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise InputError(
                f"{path} holds one array, but the model has {len(names)} inputs "
                f"({', '.join(names)}); save an .npz with one array per input name"
            )
        return {names[0]: loaded}
    with loaded as archive:
        keys = list(archive.files)
        if len(names) == 1 and len(keys) == 1:
            return {names[0]: archive[keys[0]]}
        missing = [n for n in names if n not in keys]
        if missing:
            raise InputError(
                f"{path} has arrays {', '.join(keys) or '(none)'} but no array for input "
                f"{', '.join(map(repr, missing))}; name the arrays after the model's inputs"
            )
        return {n: archive[n] for n in names}


def _file_samples(path: Path, inputs: Sequence[TensorSpec]) -> list[dict[str, np.ndarray]]:
    arrays = _arrays(path, inputs)
    per_input = {s.name: _split(s, _cast(s, arrays[s.name], str(path)), str(path)) for s in inputs}
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) > 1:
        raise InputError(
            f"{path}: the inputs hold different numbers of samples "
            f"({', '.join(f'{n}: {c}' for n, c in counts.items())}); the first axes must agree"
        )
    count = next(iter(counts.values()), 0)
    return [{name: per_input[name][i] for name in per_input} for i in range(count)]


def read_samples(
    path: str | Path, inputs: Sequence[TensorSpec], limit: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Read samples for a model with ``inputs`` from an .npz/.npy file or a directory of them.

    Returns at most ``limit`` feeds, each with a batch axis of one, with dtypes cast to the
    model's where the kind agrees (float64 to float32, int32 to int64). Raises ``ConfigError``
    when the path is missing or unreadable, ``InputError`` when the arrays do not fit the model.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
        if not files:
            raise ConfigError(f"directory {path} has no .npy or .npz files")
    elif path.is_file():
        if path.suffix not in DATA_SUFFIXES:
            raise ConfigError(f"{path} is not an .npz or .npy file (or a directory of them)")
        files = [path]
    else:
        raise ConfigError(f"data path {str(path)!r} does not exist")
    samples: list[dict[str, np.ndarray]] = []
    for file in files:
        samples.extend(_file_samples(file, inputs))
        if limit is not None and len(samples) >= limit:
            return samples[:limit]
    if not samples:
        raise InputError(f"{path} holds no samples (the arrays' first axes are empty)")
    return samples


# Any dynamic dimension but the batch axis (a sequence, an image side) gets this size times the
# batch: big enough for strided convolutions and pooling, divisible by feature pyramids' 32.
_DYNAMIC_SIZE = 32


# Dimension names that say "not a batch" (a sequence length, an image side, audio samples).
_NOT_BATCH = re.compile(
    r"(^|_)(seq|sequence|len|length|time|frames?|steps?|tokens?|samples|height|width|h|w|"
    r"x|y|rows|cols|channels?|c|d|dim|hidden|features?)(_|$|\d)",
    re.IGNORECASE,
)


# Names an exporter numbers its dynamic dimensions with, which say nothing of what they are
# (paddle2onnx's d0, d1; dim_0; torch.export's s0; ONNX shape inference's unk__12).
_NUMBERED = re.compile(r"(d|dim|s|unk_*|dyn\w*|axis)_?\d+", re.IGNORECASE)


def batch_axis(shape: Sequence[object]) -> int | None:
    """The axis of ``shape`` synthetic inputs treat as the batch, or None (all fixed, or its
    dynamic dimensions are sizes)."""
    dynamic = [i for i, d in enumerate(shape) if not isinstance(d, int) or d <= 0]
    for axis in dynamic:
        if "batch" in str(shape[axis]).lower():
            return axis
    if not dynamic or dynamic[0] > 1:
        return None
    first = shape[dynamic[0]]
    if isinstance(first, str) and not _NUMBERED.fullmatch(first) and _NOT_BATCH.search(first):
        return None
    return dynamic[0]


def synthetic_shapes(
    specs: Sequence[TensorSpec],
    batch: int = 1,
    fixed: Mapping[str, tuple[int, ...]] | None = None,
    size: int = _DYNAMIC_SIZE,
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for synthetic inputs; ``fixed`` gives an input's whole shape.

    An input's batch axis becomes ``batch``: a dimension named like ``batch``, else its first
    dynamic dimension when that is axis 0 or 1 (an image batch, an RNN state [directions, batch,
    hidden]) and not named like a length or a side. Any other dynamic dimension becomes ``size x
    batch`` (32): the height and width of an image [1, 3, H, W] whose batch is fixed are sizes,
    not a batch of 1. Inputs that share a named dimension get one size for it.
    """
    fixed = fixed or {}
    named: dict[str, int] = {}
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        if spec.name in fixed:
            out[spec.name] = tuple(fixed[spec.name])
            continue
        axis_of_batch = batch_axis(spec.shape)
        sizes = []
        for axis, d in enumerate(spec.shape):
            if isinstance(d, int) and d > 0:
                sizes.append(d)
                continue
            chosen = batch if axis == axis_of_batch else size * batch
            sizes.append(named.setdefault(d, chosen) if isinstance(d, str) else chosen)
        out[spec.name] = tuple(sizes)
    return out


@dataclass(frozen=True, slots=True)
class ValueRange:
    """The values an input should take: ``[low, high)`` (integers for integer inputs).

    ``reason`` says what in the model asks for it (``indexes a Gather table of 30``).
    """

    low: float
    high: float
    reason: str = ""
    # Whole numbers even for a float input (ids a model holds as floats and casts to integers).
    integral: bool = False


def _checked_shape(spec: TensorSpec, shape: Sequence[object]) -> tuple[int, ...]:
    sizes = tuple(d for d in shape if isinstance(d, int) and d >= 0)
    if len(sizes) != len(shape) or len(shape) != len(spec.shape):
        example = "x".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in spec.shape)
        raise ConfigError(
            f"input {spec.name!r} {spec.shape_text()} has no usable size for synthetic data "
            f"(got {list(shape)}); give every dynamic dimension a size, e.g. "
            f"--shape {spec.name}={example}"
        )
    return sizes


def synthetic_feed(
    specs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    rng: np.random.Generator,
    ranges: Mapping[str, ValueRange] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded random values of each input's dtype and shape.

    ``ranges`` (input name -> ValueRange) bounds an input's values, e.g. token ids below the
    vocabulary size; without one, floats are standard normal, integers small and non-negative,
    and integer inputs named like a mask are ones. A shape with a negative or missing size is a
    ``ConfigError``.
    """
    ranges = ranges or {}
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = _checked_shape(spec, shapes[spec.name])
        kind = np.dtype(spec.dtype).kind if spec.dtype != "object" else "O"
        bound = ranges.get(spec.name)
        if kind == "f":
            if bound is None:
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif bound.integral:
                high = max(int(bound.high), int(bound.low) + 1)
                feed[spec.name] = rng.integers(int(bound.low), high, shape).astype(spec.dtype)
            else:
                feed[spec.name] = rng.uniform(bound.low, bound.high, shape).astype(spec.dtype)
        elif kind in "iu" and bound is not None:
            high = max(int(bound.high), int(bound.low) + 1)
            feed[spec.name] = rng.integers(int(bound.low), high, size=shape).astype(spec.dtype)
        elif kind in "iu" and "mask" in spec.name.lower():
            # Attention masks are 0/1; other values break fused attention kernels' contract.
            feed[spec.name] = np.ones(shape, dtype=spec.dtype)
        elif kind in "iu":
            # Token ids and indices: small values are valid for most models.
            feed[spec.name] = rng.integers(0, 10, size=shape).astype(spec.dtype)
        elif kind == "b":
            feed[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feed[spec.name] = np.array(rng.choice(["a", "b"], size=shape), dtype=object)
    return feed
