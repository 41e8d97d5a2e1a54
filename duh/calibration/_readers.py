"""Reading calibration data: a .npz, a directory of .npy/.npz files or of images, or 'synthetic'.

Every reader yields one array per model input with the samples on the first axis. The samples are
shuffled with a fixed seed, a few are held out as verification inputs, and the rest (up to
``samples``) are what the calibrators see.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duh.calibration._data import CalibrationSet
from duh.calibration._images import IMAGE_SUFFIXES, PreprocessSpec, load_image, preprocess_spec
from duh.errors import CalibrationError
from duh.runtime import TensorSpec, ValueRange, synthetic_shapes

__all__ = ["load_calibration"]

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
_CALIBRATION = "calibration data"
_SEED = 0


def _sample_shape(
    spec: TensorSpec, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[int | None, ...]:
    """The input's shape without the batch axis; None where any size is allowed."""
    full = shapes.get(spec.name) or spec.shape
    return tuple(d if isinstance(d, int) and d > 0 else None for d in full[1:])


def _batch_size(spec: TensorSpec, shapes: Mapping[str, tuple[int, ...]]) -> int:
    full = shapes.get(spec.name) or spec.shape
    return full[0] if full and isinstance(full[0], int) and full[0] > 0 else 1


def _read_npz(path: Path, purpose: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise CalibrationError(
            f"{purpose} file {path.name} is not a readable .npz ({exc})"
        ) from None


def _read_npy(path: Path, purpose: str) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise CalibrationError(
            f"{purpose} file {path.name} is not a readable .npy ({exc})"
        ) from None


def _by_input(
    arrays: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec], where: str
) -> dict[str, np.ndarray]:
    names = [s.name for s in inputs]
    if all(n in arrays for n in names):
        extra = sorted(set(arrays) - set(names))
        if extra:
            log.debug("%s: ignoring arrays %s that are not model inputs", where, extra)
        return {n: arrays[n] for n in names}
    if len(names) == 1 and len(arrays) == 1:
        (only,) = arrays.values()
        return {names[0]: only}
    missing = [n for n in names if n not in arrays]
    raise CalibrationError(
        f"{where} has arrays {', '.join(sorted(arrays)) or '(none)'} but the model's inputs are "
        f"{', '.join(names)} (missing {', '.join(missing)}); name the arrays after the inputs"
    )


def _stack_samples(
    arrays: dict[str, np.ndarray],
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """Give every array one leading samples axis (a single sample may come without one)."""
    out = {}
    for spec in inputs:
        array = arrays[spec.name]
        rank = len(spec.shape)
        # A scalar input (rank 0) has no batch axis: a 0-d array is its one sample.
        if array.ndim == rank - 1 or (rank == 0 and array.ndim == 0):
            array = array[None]
        elif array.ndim == rank + 1 and rank > 0:
            # Whole feeds along the first axis (as benchmarks read them): their batches in a row.
            array = array.reshape(-1, *array.shape[2:])
        out[spec.name] = array
    return out


def _whole_feeds(
    arrays: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec]
) -> list[dict[str, np.ndarray]] | None:
    """Whole feeds, when every array is a stack of them and the inputs share no batch axis.

    Inputs such as Expand's target shape ``[2]`` beside ``X [3, 1]`` have no common axis to cut
    samples along: given with one extra leading axis each (N whole feeds), they are used as
    they are. Otherwise (None) the first axis of each input counts samples, as usual.
    """
    if not inputs or any(arrays[s.name].ndim != len(s.shape) + 1 for s in inputs):
        return None
    counts = {len(arrays[s.name]) for s in inputs}
    rows = {arrays[s.name].shape[1] for s in inputs if s.shape}
    if len(counts) != 1 or len(rows) <= 1:
        return None  # one count of feeds and one batch size: the usual reading fits
    return [
        {s.name: np.ascontiguousarray(arrays[s.name][k]) for s in inputs}
        for k in range(counts.pop())
    ]


def _feed_set(
    feeds: Sequence[dict[str, np.ndarray]],
    source: str,
    samples: int,
    holdout: int,
    purpose: str,
) -> CalibrationSet:
    held = min(holdout, len(feeds) // 2)
    if not feeds:
        raise CalibrationError(f"{purpose} {source} holds no feeds (its first axes are empty)")
    stacked = {name: np.stack([f[name] for f in feeds]) for name in feeds[0]}
    return CalibrationSet(
        tuple(feeds[held : held + samples]) or tuple(feeds),
        tuple(feeds[:held]),
        f"{source} ({len(feeds)} whole feeds)",
        _digest(stacked, {"whole_feeds": True, "held": held}),
    )


def _read_directory(
    directory: Path,
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    spec: PreprocessSpec,
    limit: int,
    purpose: str,
) -> tuple[dict[str, np.ndarray], str]:
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    arrays_files = [p for p in files if p.suffix.lower() in (".npy", ".npz")]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if arrays_files and images:
        raise CalibrationError(
            f"{purpose} directory {directory.name} mixes {len(arrays_files)} array files and "
            f"{len(images)} images; keep one kind per directory"
        )
    if arrays_files:
        parts: dict[str, list[np.ndarray]] = {s.name: [] for s in inputs}
        for path in arrays_files:
            if path.suffix.lower() == ".npz":
                found = _by_input(_read_npz(path, purpose), inputs, path.name)
            else:
                if len(inputs) != 1:
                    raise CalibrationError(
                        f"{path.name}: a .npy file holds one array but the model has "
                        f"{len(inputs)} inputs; use .npz files with arrays named after the inputs"
                    )
                found = {inputs[0].name: _read_npy(path, purpose)}
            for name, array in _stack_samples(found, inputs, shapes).items():
                parts[name].append(array)
        merged = {}
        for name, chunks in parts.items():
            try:
                merged[name] = np.concatenate(chunks)
            except ValueError as exc:
                raise CalibrationError(
                    f"the array files in {directory.name} give input {name!r} different "
                    f"shapes ({exc}); "
                    "every sample must have the same shape"
                ) from None
        total = len(next(iter(merged.values())))
        return merged, f"{len(arrays_files)} array files in {directory.name}/ ({total} samples)"
    if images:
        used = min(len(images), limit)
        shown = f"{used} of {len(images)}" if used < len(images) else f"{len(images)}"
        return _read_images(images, inputs, shapes, spec, limit), (
            f"{shown} images in {directory.name}/"
        )
    raise CalibrationError(
        f"{purpose} directory {directory.name} holds no .npy/.npz files and no images "
        f"({', '.join(sorted(IMAGE_SUFFIXES))}); point to the directory that holds the data"
    )


def _read_images(
    images: list[Path],
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    spec: PreprocessSpec,
    limit: int,
) -> dict[str, np.ndarray]:
    if len(inputs) != 1 or not inputs[0].dtype.startswith("float") or len(inputs[0].shape) != 4:
        raise CalibrationError(
            "image data needs a model with one float input of rank 4 (an image batch); "
            f"this model's inputs are {', '.join(s.name + s.shape_text() for s in inputs)}: "
            "give a .npz instead"
        )
    target = inputs[0]
    sample = _sample_shape(target, shapes)
    channels, size = (sample[0], sample[1:]) if spec.layout == "nchw" else (sample[2], sample[:2])
    if channels is not None and channels != spec.channels:
        raise CalibrationError(
            f"input {target.name!r} has {channels} channels ({spec.layout}), the preprocessing "
            f"gives {spec.channels} (order={spec.order}); set order=gray for 1 channel, or layout"
        )
    height, width = size
    hw = (height, width) if isinstance(height, int) and isinstance(width, int) else None
    if hw is None and not spec.resize and spec.crop is None:
        raise CalibrationError(
            f"input {target.name!r} has dynamic height/width, so the images need a size: "
            "give resize=HxW or crop=HxW in the preprocessing"
        )
    rng = np.random.default_rng(_SEED)
    # Read only as many images as will be used: decoding is the slow part.
    chosen = (
        sorted(rng.permutation(len(images))[:limit]) if len(images) > limit else range(len(images))
    )
    pixels = np.stack([load_image(images[i], spec, hw) for i in chosen])
    return {target.name: pixels}


def _conform(
    arrays: dict[str, np.ndarray],
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    source: str,
) -> dict[str, np.ndarray]:
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise CalibrationError(
            f"{source}: inputs have different sample counts {counts}; each input needs one "
            "array row per sample"
        )
    out = {}
    for spec in inputs:
        array = arrays[spec.name]
        want = _sample_shape(spec, shapes)
        got = array.shape[1:]
        if len(got) != len(want) or any(
            w is not None and w != g for w, g in zip(want, got, strict=False)
        ):
            shown = "[" + ", ".join("?" if w is None else str(w) for w in want) + "]"
            raise CalibrationError(
                f"{source}: input {spec.name!r} samples have shape {list(got)}, the model expects "
                f"{shown} per sample (first axis = samples); reshape the data"
            )
        dtype = np.dtype(spec.dtype) if spec.dtype not in ("object", "bfloat16") else None
        if dtype is not None and array.dtype != dtype:
            same_kind = array.dtype.kind == dtype.kind or (
                array.dtype.kind in "iub" and dtype.kind in "iu"
            )
            if not same_kind or (
                dtype.kind in "iu" and not np.array_equal(array.astype(dtype), array)
            ):
                raise CalibrationError(
                    f"{source}: input {spec.name!r} is {array.dtype}, the model wants {dtype}; "
                    f"convert the data with .astype(np.{dtype.name})"
                )
            log.info("%s: converting %s from %s to %s", source, spec.name, array.dtype, dtype)
            array = array.astype(dtype)
        out[spec.name] = np.ascontiguousarray(array)
    return out


def _synthetic(
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    count: int,
    ranges: Mapping[str, ValueRange],
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(_SEED)
    # The sizes verification's synthetic inputs take, so that INT8 ranges fit what is checked.
    full = synthetic_shapes(inputs, 1, shapes)
    out = {}
    for spec in inputs:
        # Each input at its own whole shape: inputs whose fixed first sizes differ ([2, 3, 4]
        # beside [1, 3, 4]) share no batch axis to cut rows along.
        shape = full[spec.name]
        kind = np.dtype(spec.dtype).kind if spec.dtype not in ("object", "bfloat16") else "O"
        if kind == "f":
            out[spec.name] = rng.standard_normal((count, *shape)).astype(spec.dtype)
        elif kind in "iu":
            # Indices stay inside the table they index (what the graph tells, as for the
            # verification inputs); other integers small and non-negative.
            bound = ranges.get(spec.name)
            low, high = (
                (int(bound.low), max(int(bound.high), int(bound.low) + 1)) if bound else (0, 10)
            )
            out[spec.name] = rng.integers(low, high, size=(count, *shape)).astype(spec.dtype)
        elif kind == "b":
            out[spec.name] = rng.integers(0, 2, size=(count, *shape)).astype(bool)
        else:
            raise CalibrationError(
                f"cannot make synthetic data for input {spec.name!r} of type {spec.dtype}; "
                "give real samples with --calib PATH"
            )
    return out


def _digest(arrays: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps(dict(extra), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _feeds(
    arrays: Mapping[str, np.ndarray],
    rows: Sequence[int],
    batch: int,
    scalars: frozenset[str] = frozenset(),
) -> tuple[dict[str, np.ndarray], ...]:
    """Feeds of ``batch`` rows each; inputs in ``scalars`` (rank 0) take their first row alone."""
    feeds = []
    for start in range(0, len(rows) - batch + 1, batch):
        index = np.asarray(rows[start : start + batch])
        feeds.append(
            {
                name: np.array(a[index[0]]) if name in scalars else np.ascontiguousarray(a[index])
                for name, a in arrays.items()
            }
        )
    return tuple(feeds)


def load_calibration(
    calib: str | Path,
    inputs: Sequence[TensorSpec],
    *,
    samples: int = 256,
    holdout: int = 0,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    preprocess: PreprocessSpec | Mapping[str, Any] | str | Path | None = None,
    purpose: str = _CALIBRATION,
    ranges: Mapping[str, ValueRange] | None = None,
) -> CalibrationSet:
    """Read calibration data for a model with ``inputs``.

    ``calib`` is a .npz (arrays named after the inputs, first axis = samples), a .npy (one-input
    models), a directory of .npy/.npz files or of images (preprocessed by ``preprocess``), or
    ``"synthetic"`` (seeded random data; INT8 accuracy will suffer). Up to ``holdout`` samples
    are held out as verification inputs; up to ``samples`` of the rest are for calibration.
    ``purpose`` names the data in error messages (``"check data"`` for verification inputs).
    ``ranges`` bounds synthetic integer inputs (token ids below the vocabulary size).
    """
    shapes = dict(shapes or {})
    if samples < 1:
        raise CalibrationError(f"--calib-samples must be at least 1, got {samples}")
    if not inputs:
        raise CalibrationError("the model has no inputs to calibrate")
    batch = max(_batch_size(s, shapes) for s in inputs)
    scalars = frozenset(s.name for s in inputs if not s.shape)
    spec = preprocess_spec(preprocess)
    if str(calib) == SYNTHETIC:
        log.warning(
            "calibrating on SYNTHETIC random data: INT8 ranges will not match real inputs and "
            "accuracy is likely poor; pass real samples with --calib PATH"
        )
        arrays = _synthetic(inputs, shapes, samples, ranges or {})
        return CalibrationSet(
            tuple({n: np.array(a[k]) for n, a in arrays.items()} for k in range(samples)),
            (),
            SYNTHETIC,
            _digest(arrays, {"synthetic": _SEED}),
            True,
        )
    path = Path(calib)
    if not path.exists():
        raise CalibrationError(
            f"{purpose} {str(path)!r} does not exist; pass a .npz, a directory of "
            ".npy/.npz files or images" + (", or 'synthetic'" if purpose == _CALIBRATION else "")
        )
    limit = (samples + holdout) * batch
    if path.is_dir():
        raw, source = _read_directory(path, inputs, shapes, spec, limit, purpose)
    elif path.suffix.lower() == ".npz":
        given = _by_input(_read_npz(path, purpose), inputs, path.name)
        whole = _whole_feeds(given, inputs)
        if whole is not None:
            return _feed_set(whole, path.name, samples, holdout, purpose)
        raw, source = _stack_samples(given, inputs, shapes), path.name
    elif path.suffix.lower() == ".npy":
        if len(inputs) != 1:
            raise CalibrationError(
                f"{path.name} holds one array but the model has {len(inputs)} inputs; use a .npz "
                "with arrays named after the inputs"
            )
        npy = _read_npy(path, purpose)
        raw, source = _stack_samples({inputs[0].name: npy}, inputs, shapes), path.name
    else:
        raise CalibrationError(
            f"{purpose} {path.name} is neither .npz, .npy nor a directory; convert it to "
            ".npz with arrays named after the model's inputs (first axis = samples)"
        )
    arrays = _conform(raw, inputs, shapes, source)
    total = len(next(iter(arrays.values())))
    if not path.is_dir():
        source = f"{source} ({total} samples)"
    units = total // batch
    if units == 0:
        raise CalibrationError(f"{source} holds {total} samples; the model's batch needs {batch}")
    held = min(holdout, units // 2)
    if held < holdout:
        log.warning(
            "%s: only %d samples, holding out %d (not %d) for verification",
            source,
            total,
            held,
            holdout,
        )
    order = np.random.default_rng(_SEED).permutation(units * batch).tolist()
    check_rows, calib_rows = order[: held * batch], order[held * batch : (held + samples) * batch]
    digest = _digest(arrays, {"preprocess": spec.to_json(), "order": [calib_rows, check_rows]})
    calibration = CalibrationSet(
        _feeds(arrays, calib_rows, batch, scalars),
        _feeds(arrays, check_rows, batch, scalars),
        source,
        digest,
    )
    log.info(
        "calibration data %s: %d calibration feeds, %d held out",
        source,
        len(calibration.feeds),
        len(calibration.check),
    )
    return calibration
