"""What ``duh batch`` reads: numpy files, image folders and tables, as rows of model inputs.

A source is a frozen, picklable description (paths, counts, the model's input specs); each worker
reads the rows of its shard itself with ``read(start, stop)``, so that decoding images or files
runs in parallel and the parent never holds the whole data set.

- ``.npy``/``.npz`` files (one file, or a folder of them in name order, their rows concatenated):
  an array whose rank equals the input's has its samples on the first axis (the batch axis); one
  rank lower is a single sample. ``.npz`` arrays are named after the inputs (any one name for a
  one-input model).
- a folder of images, preprocessed as for calibration (``duh.calibration.PreprocessSpec``), for a
  model with one float rank-4 input;
- a ``.csv`` or ``.parquet`` table: one column per input (named after it), one row per sample; a
  cell holds a scalar, or a list (CSV: numbers separated by spaces) reshaped to the sample shape.
"""

from __future__ import annotations

import csv
import functools
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import ConfigError, InputError, MissingDependencyError
from duh.runtime import DATA_SUFFIXES, TensorSpec

__all__ = ["TABLE_SUFFIXES", "ArraySource", "ImageSource", "Source", "TableSource", "open_source"]

TABLE_SUFFIXES = (".csv", ".parquet")


def _cast(spec: TensorSpec, array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.name == spec.dtype or spec.dtype in ("object", "bfloat16"):
        return array
    want = np.dtype(spec.dtype)
    kinds_agree = array.dtype.kind == want.kind or (array.dtype.kind in "iub" and want.kind in "iu")
    if not kinds_agree and not (array.dtype.kind in "iu" and want.kind == "f"):
        raise InputError(
            f"{where}: input {spec.name!r} is {array.dtype.name}, the model wants {spec.dtype}; "
            f"convert the data with .astype(np.{spec.dtype})"
        )
    return array.astype(want)


def _sample_shape(spec: TensorSpec, count: int, flat: np.ndarray, where: str) -> tuple[int, ...]:
    """The per-sample shape for ``flat`` (count rows of equal size) under ``spec``'s dims."""
    dims = list(spec.shape[1:])
    per_row = flat.size // max(count, 1)
    fixed = int(np.prod([d for d in dims if isinstance(d, int)], dtype=np.int64))
    unknown = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if len(unknown) > 1 or (not unknown and fixed != per_row) or per_row % max(fixed, 1):
        raise InputError(
            f"{where}: column {spec.name!r} has {per_row} values per row, which does not fit the "
            f"input's sample shape {TensorSpec(spec.name, spec.dtype, spec.shape[1:]).shape_text()}"
        )
    for i in unknown:
        dims[i] = per_row // max(fixed, 1)
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ArraySource:
    """Rows of ``.npy``/``.npz`` files: ``files`` with their row counts, in order."""

    files: tuple[tuple[Path, int], ...]
    inputs: tuple[TensorSpec, ...]

    @property
    def count(self) -> int:
        """How many samples there are."""
        return sum(n for _, n in self.files)

    def describe(self) -> str:
        """What was read, for the summary and the job record."""
        return f"{len(self.files)} array file(s), {self.count} samples"

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The samples ``start:stop`` as one batched array per input."""
        parts: dict[str, list[np.ndarray]] = {s.name: [] for s in self.inputs}
        offset = 0
        for path, n in self.files:
            lo, hi = max(start, offset), min(stop, offset + n)
            if lo < hi:
                arrays = _load_arrays(path, self.inputs)
                for name, array in arrays.items():
                    parts[name].append(array[lo - offset : hi - offset])
            offset += n
        return {name: np.ascontiguousarray(np.concatenate(p)) for name, p in parts.items()}


def _as_rows(spec: TensorSpec, array: np.ndarray, where: str) -> np.ndarray:
    rank = len(spec.shape)
    if rank and array.ndim == rank - 1:
        array = array[None]
    if rank == 0 or array.ndim != rank:
        raise InputError(
            f"{where}: array for input {spec.name!r} has shape {list(array.shape)}, which does not "
            f"fit {spec.shape_text()} (the first axis counts samples)"
        )
    return _cast(spec, array, where)


@functools.lru_cache(maxsize=2)
def _load_arrays(path: Path, inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """One file's arrays, one per input, rows first (kept for the next shard of the same file)."""
    names = [s.name for s in inputs]
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if path.suffix == ".npy" else None)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"cannot read {path} as numpy data ({exc})") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise InputError(
                f"{path.name} holds one array, but the model has {len(names)} inputs "
                f"({', '.join(names)}); save an .npz with one array per input name"
            )
        raw = {names[0]: loaded}
    else:
        with loaded as archive:
            keys = list(archive.files)
            if len(names) == 1 and len(keys) == 1:
                raw = {names[0]: archive[keys[0]]}
            elif missing := [n for n in names if n not in keys]:
                raise InputError(
                    f"{path.name} has arrays {', '.join(keys) or '(none)'} but none for input "
                    f"{', '.join(map(repr, missing))}; name the arrays after the model's inputs"
                )
            else:
                raw = {n: archive[n] for n in names}
    arrays = {s.name: _as_rows(s, raw[s.name], path.name) for s in inputs}
    counts = {len(a) for a in arrays.values()}
    if len(counts) > 1:
        raise InputError(
            f"{path.name}: the inputs hold different numbers of samples "
            f"({', '.join(f'{n}: {len(a)}' for n, a in arrays.items())}); the first axes must agree"
        )
    return arrays


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Image files in name order, preprocessed by ``spec`` for the one image input."""

    files: tuple[Path, ...]
    input: TensorSpec
    spec: Any  # duh.calibration.PreprocessSpec (imported where images are read)
    size: tuple[int, int] | None

    @property
    def count(self) -> int:
        """How many samples there are."""
        return len(self.files)

    def describe(self) -> str:
        """What was read, for the summary and the job record."""
        return f"{len(self.files)} images"

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The images ``start:stop`` as one batch."""
        from duh.calibration import load_image

        pixels = [load_image(p, self.spec, self.size) for p in self.files[start:stop]]
        return {self.input.name: np.stack(pixels).astype(self.input.dtype, copy=False)}


@dataclass(frozen=True, slots=True)
class TableSource:
    """A CSV or Parquet table whose columns are named after the model's inputs."""

    path: Path
    rows: int
    inputs: tuple[TensorSpec, ...]

    @property
    def count(self) -> int:
        """How many samples there are."""
        return self.rows

    def describe(self) -> str:
        """What was read, for the summary and the job record."""
        return f"table {self.path.name}, {self.rows} rows"

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The rows ``start:stop`` as one batched array per input."""
        columns = _read_table(self.path, self.inputs)
        return {name: np.ascontiguousarray(a[start:stop]) for name, a in columns.items()}


Source = ArraySource | ImageSource | TableSource


def _csv_columns(path: Path, names: Sequence[str]) -> dict[str, list[Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [n for n in names if n not in header]
        if missing:
            raise InputError(
                f"{path.name} has columns {', '.join(header) or '(none)'} but none for input "
                f"{', '.join(map(repr, missing))}; name the columns after the model's inputs"
            )
        columns: dict[str, list[Any]] = {n: [] for n in names}
        for row in reader:
            for n in names:
                cell = row[n] or ""
                columns[n].append([float(v) for v in cell.split()] if " " in cell.strip() else cell)
    return columns


def _parquet_columns(path: Path, names: Sequence[str]) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("pyarrow", "tables", "reading Parquet tables") from None
    table = pq.read_table(path)
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise InputError(
            f"{path.name} has columns {', '.join(table.column_names)} but none for input "
            f"{', '.join(map(repr, missing))}; name the columns after the model's inputs"
        )
    return {n: table.column(n).to_pylist() for n in names}


@functools.lru_cache(maxsize=1)
def _read_table(path: Path, inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    names = [s.name for s in inputs]
    reader = _parquet_columns if path.suffix.lower() == ".parquet" else _csv_columns
    try:
        columns = reader(path, names)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read table {path}: {exc}") from None
    out = {}
    for spec in inputs:
        cells = columns[spec.name]
        try:
            flat = np.asarray(cells, dtype=np.float64 if spec.dtype.startswith("float") else None)
        except ValueError:
            raise InputError(
                f"{path.name}: column {spec.name!r} holds cells that are not numbers or lists "
                "of one length"
            ) from None
        if flat.dtype.kind in "US" and spec.dtype != "object":
            try:
                flat = flat.astype(spec.dtype)
            except ValueError:
                raise InputError(
                    f"{path.name}: column {spec.name!r} holds text, the model wants {spec.dtype}"
                ) from None
        shape = _sample_shape(spec, len(cells), flat, path.name) if spec.shape else ()
        out[spec.name] = _cast(spec, flat.reshape(len(cells), *shape), path.name)
    return out


def _array_files(path: Path, inputs: tuple[TensorSpec, ...]) -> ArraySource:
    files = (
        sorted(p for p in path.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
        if path.is_dir()
        else [path]
    )
    counted = tuple((p, len(next(iter(_load_arrays(p, inputs).values())))) for p in files)
    _load_arrays.cache_clear()  # the parent only counts; workers read what they need
    return ArraySource(counted, inputs)


def open_source(
    path: str | Path,
    inputs: Sequence[TensorSpec],
    preprocess: Mapping[str, Any] | str | Path | None = None,
) -> Source:
    """The source at ``path`` for a model with ``inputs``; ``preprocess`` applies to images."""
    path = Path(path)
    specs = tuple(inputs)
    if not path.exists():
        raise ConfigError(
            f"input {str(path)!r} does not exist; pass a .npz/.npy file or folder, a folder of "
            "images, or a .csv/.parquet table"
        )
    if path.is_file() and path.suffix in DATA_SUFFIXES:
        return _array_files(path, specs)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        rows = len(next(iter(_read_table(path, specs).values())))
        return TableSource(path, rows, specs)
    if path.is_dir():
        entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if any(p.suffix in DATA_SUFFIXES for p in entries):
            return _array_files(path, specs)
        from duh.calibration import IMAGE_SUFFIXES

        images = tuple(p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            return _image_source(images, specs, preprocess)
        raise ConfigError(f"folder {path} holds no .npy/.npz files and no images")
    raise ConfigError(
        f"input {path.name} is not .npz, .npy, .csv, .parquet or a folder of those or of images"
    )


def _image_source(
    images: tuple[Path, ...],
    inputs: tuple[TensorSpec, ...],
    preprocess: Mapping[str, Any] | str | Path | None,
) -> ImageSource:
    from duh.calibration import preprocess_spec

    if len(inputs) != 1 or not inputs[0].dtype.startswith("float") or len(inputs[0].shape) != 4:
        raise ConfigError(
            "images need a model with one float input of rank 4 (an image batch); this model's "
            f"inputs are {', '.join(s.name + s.shape_text() for s in inputs)}: give a .npz instead"
        )
    spec = preprocess_spec(preprocess)
    dims = inputs[0].shape[2:] if spec.layout == "nchw" else inputs[0].shape[1:3]
    size = (dims[0], dims[1]) if all(isinstance(d, int) for d in dims) else None
    if size is None and not spec.resize and spec.crop is None:
        raise ConfigError(
            f"input {inputs[0].name!r} has a dynamic height/width: give the images a size with "
            "--preprocess resize=HxW (or crop=HxW)"
        )
    return ImageSource(images, inputs[0], spec, size)  # type: ignore[arg-type]
