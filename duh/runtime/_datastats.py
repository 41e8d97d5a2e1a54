"""Reference statistics of an artifact's inputs (``datastats.json``), for drift monitoring.

At build time the compiler records, per input, quantile sketches of the real data the build saw
(calibration and check samples): per feature for tabular inputs ``[N, F]``, per channel for
images (``[N, C, H, W]`` or ``[N, H, W, C]``), or one sketch of every value pooled. A sketch is
the values at the deciles (the bin edges) and the share of reference values in each bin. A
server bins live values against the same edges (``bin_counts``) and compares the shares.

The file is one of the artifact's hashed files: the manifest lists its sha256 and a signed
manifest covers it, so ``read_data_stats`` checks it against the manifest before trusting it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import ArtifactError
from duh.runtime._manifest import MANIFEST_NAME, read_manifest

__all__ = [
    "DATA_STATS_NAME",
    "MAX_FEATURES",
    "DataStats",
    "InputStats",
    "bin_counts",
    "feature_axis",
    "feature_rows",
    "read_data_stats",
]

DATA_STATS_NAME = "datastats.json"
_STATS_VERSION = 1
# More features than this (a sequence of 768-wide embeddings, a wide image axis) pool into one
# sketch: thousands of sketches would make the file large and each live request slow to bin.
MAX_FEATURES = 256
# A channel axis is short; a longer axis 1 or last axis is spatial, not channels.
_MAX_CHANNELS = 64
_MAX_FILE_BYTES = 16 << 20


def feature_axis(shape: Sequence[int | str | None]) -> int | None:
    """The axis whose entries get a sketch each, for an input of ``shape`` (batch first).

    ``[N, F]``: axis 1 (features). Rank 3 and more: axis 1 when it is a short fixed axis
    (channels first, NCHW), else the last when it is (NHWC). Otherwise None: values pooled.
    """
    dims = [d if isinstance(d, int) else None for d in shape]
    if len(dims) == 2:
        return 1 if dims[1] is not None and dims[1] <= MAX_FEATURES else None
    if len(dims) >= 3:
        if dims[1] is not None and dims[1] <= _MAX_CHANNELS:
            return 1
        if dims[-1] is not None and dims[-1] <= _MAX_CHANNELS:
            return len(dims) - 1
    return None


def feature_rows(array: np.ndarray, axis: int | None, max_rows: int | None = None) -> np.ndarray:
    """``array`` as a float64 matrix ``[values, features]`` (one column per entry of ``axis``, or
    one column for all values), keeping at most ``max_rows`` rows, evenly strided."""
    a = np.asarray(array)
    if axis is None or a.ndim <= axis:
        flat = a.reshape(-1, 1)
        if max_rows is not None and flat.shape[0] > max_rows:
            flat = flat[:: -(-flat.shape[0] // max_rows)]
        return flat.astype(np.float64)
    lead = math.prod(a.shape[:axis])
    tail = math.prod(a.shape[axis + 1 :])
    # A C-contiguous array reshapes to [lead, F, tail] as a view; only the sample is copied.
    cube = a.reshape(lead, a.shape[axis], tail)
    if max_rows is not None and lead * tail > max_rows:
        step = -(-(lead * tail) // max_rows)
        if tail >= step:
            cube = cube[:, :, ::step]
        else:
            cube = cube[:: -(-step // max(tail, 1))]
    return np.ascontiguousarray(cube.transpose(0, 2, 1)).reshape(-1, a.shape[axis]).astype(
        np.float64, copy=False
    )


def bin_counts(rows: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts ``[features, bins]`` of ``rows`` ``[values, features]`` in the bins that ``edges``
    ``[features, bins - 1]`` (ascending per feature) bound; a value equal to an edge falls in the
    bin above it, a NaN in the lowest."""
    features, inner = edges.shape
    bins = inner + 1
    # One whole-matrix comparison per edge (a handful), with a small index type: measured the
    # fastest of the vectorised ways (a 3-D comparison summed over its last axis is 5x slower).
    dtype = np.int16 if features * bins < (1 << 15) else np.int64
    bounds = np.ascontiguousarray(edges.T)
    index = np.zeros(rows.shape, dtype=dtype)
    for e in range(inner):
        np.add(index, rows >= bounds[e], out=index, casting="unsafe")
    index += (np.arange(features) * bins).astype(dtype)
    return np.bincount(index.ravel(), minlength=features * bins).reshape(features, bins)


@dataclass(frozen=True, slots=True, eq=False)
class InputStats:
    """The reference sketch of one input: bin edges and the reference share in each bin."""

    name: str
    axis: int | None  # the input's feature axis (None: every value pooled into one sketch)
    edges: np.ndarray  # [features, bins - 1], ascending per feature
    reference: np.ndarray  # [features, bins], shares summing to 1 per feature
    rows: int  # reference samples (batch rows) the sketch was made from

    @property
    def features(self) -> int:
        """How many sketches (features or channels) the input has."""
        return int(self.edges.shape[0])

    def to_json(self) -> dict[str, Any]:
        """The input's entry in ``datastats.json``."""
        return {
            "axis": self.axis,
            "rows": self.rows,
            "edges": self.edges.tolist(),
            "reference": self.reference.tolist(),
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> InputStats:
        """Parse an entry; raises ``ValueError``/``KeyError``/``TypeError`` when malformed."""
        axis = data["axis"]
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int) or axis < 1):
            raise ValueError(f"axis {axis!r}")
        edges = np.asarray(data["edges"], dtype=np.float64)
        reference = np.asarray(data["reference"], dtype=np.float64)
        if (
            edges.ndim != 2
            or reference.shape != (edges.shape[0], edges.shape[1] + 1)
            or not np.all(np.isfinite(edges))
            or np.any(np.diff(edges, axis=1) < 0)
        ):
            raise ValueError(f"edges {edges.shape} and reference {reference.shape} do not match")
        return cls(name, axis, edges, reference, int(data["rows"]))


@dataclass(frozen=True, slots=True)
class DataStats:
    """Reference statistics of an artifact's inputs and where the data came from."""

    inputs: Mapping[str, InputStats]
    source: str

    def to_json(self) -> dict[str, Any]:
        """The ``datastats.json`` document."""
        return {
            "version": _STATS_VERSION,
            "source": self.source,
            "inputs": {name: s.to_json() for name, s in self.inputs.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataStats:
        """Parse the document; raises ``ValueError``/``KeyError``/``TypeError`` when malformed."""
        if data.get("version") != _STATS_VERSION:
            raise ValueError(f"version {data.get('version')!r}, this duh reads {_STATS_VERSION}")
        inputs = {str(k): InputStats.from_json(str(k), v) for k, v in data["inputs"].items()}
        return cls(inputs, str(data.get("source", "")))


def read_data_stats(artifact: str | Path) -> DataStats | None:
    """The reference statistics an artifact records, checked against its manifest's sha256;
    None for an artifact built without real calibration or check data (or a plain ``.onnx``)."""
    path = Path(artifact)
    if not (path / MANIFEST_NAME).is_file():
        return None
    manifest = read_manifest(path)
    expected = manifest.files.get(DATA_STATS_NAME)
    if expected is None:
        return None
    file = path / DATA_STATS_NAME
    if not file.is_file() or file.is_symlink() or file.stat().st_size > _MAX_FILE_BYTES:
        raise ArtifactError(
            f"artifact {path.name}: {DATA_STATS_NAME}, listed in its manifest, is missing or not a "
            "plain file; rebuild the artifact"
        )
    raw = file.read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise ArtifactError(
            f"artifact {path.name}: {DATA_STATS_NAME} has sha256 {actual[:16]}…, the manifest says "
            f"{expected[:16]}…; the file was modified after the build: rebuild the artifact"
        )
    try:
        return DataStats.from_json(json.loads(raw.decode("utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(
            f"artifact {path.name}: {DATA_STATS_NAME} is malformed ({str(exc)[:200]}); rebuild "
            "the artifact"
        ) from None
