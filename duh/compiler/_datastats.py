"""Reference statistics of the real inputs a build saw, written into the artifact.

``duh serve`` compares live inputs against them (drift). Only real data counts: synthetic
calibration or check inputs describe nothing a model will meet, so they record nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duh.runtime import (
    DATA_STATS_NAME,
    DataStats,
    InputStats,
    TensorSpec,
    bin_counts,
    feature_axis,
    feature_rows,
)

__all__ = ["BINS", "reference_stats", "write_data_stats"]

log = logging.getLogger(__name__)

BINS = 10  # deciles: a population stability index over 10 bins is the usual reading
# Values per sketch at most (strided): quantiles of 200k values are as good as of millions.
_MAX_VALUES = 200_000


def _sig(values: np.ndarray) -> np.ndarray:
    """Round to 6 significant digits: what the JSON file holds is what gets compared against."""
    return np.array([float(f"{v:.6g}") for v in values.ravel()]).reshape(values.shape)


def _sketch(spec: TensorSpec, arrays: Sequence[np.ndarray]) -> InputStats | None:
    axis = feature_axis(spec.shape)
    rows = sum(int(a.shape[0]) if a.ndim else 1 for a in arrays)
    width = arrays[0].shape[axis] if axis is not None and arrays[0].ndim > axis else None
    if axis is not None and any(a.ndim <= axis or a.shape[axis] != width for a in arrays):
        axis = None  # samples disagree on the feature axis: pool every value
    per_array = max(1, _MAX_VALUES // len(arrays))
    values = np.concatenate([feature_rows(a, axis, per_array) for a in arrays])
    finite = values[np.all(np.isfinite(values), axis=1)]
    if finite.shape[0] < BINS:
        return None
    quantiles = np.linspace(0.0, 1.0, BINS + 1)[1:-1]
    edges = _sig(np.quantile(finite, quantiles, axis=0).T)
    edges = np.maximum.accumulate(edges, axis=1)  # rounding must not unsort them
    counts = bin_counts(finite, edges)
    reference = np.round(counts / counts.sum(axis=1, keepdims=True), 6)
    return InputStats(spec.name, axis, edges, reference, rows)


def reference_stats(
    inputs: Sequence[TensorSpec], feeds: Sequence[Mapping[str, Any]], source: str
) -> DataStats | None:
    """Quantile sketches of every numeric input over ``feeds``; None when none has enough."""
    sketches = {}
    for spec in inputs:
        arrays = [np.asarray(f[spec.name]) for f in feeds if spec.name in f]
        arrays = [a for a in arrays if a.size and a.dtype.kind in "biuf"]
        if not arrays:
            continue
        sketch = _sketch(spec, arrays)
        if sketch is not None:
            sketches[spec.name] = sketch
    return DataStats(sketches, source) if sketches else None


def write_data_stats(
    stage: Path,
    inputs: Sequence[TensorSpec],
    sources: Sequence[tuple[str, Sequence[Mapping[str, Any]], bool]],
) -> DataStats | None:
    """Write ``datastats.json`` into the artifact being staged (before its files are hashed),
    from the real ones of ``sources`` (description, feeds, synthetic); None when none is real."""
    real = [(name, feeds) for name, feeds, synthetic in sources if feeds and not synthetic]
    if not real:
        return None
    feeds = [f for _, fs in real for f in fs]
    stats = reference_stats(inputs, feeds, "; ".join(name for name, _ in real))
    if stats is None:
        return None
    text = json.dumps(stats.to_json(), separators=(",", ":"))
    (stage / DATA_STATS_NAME).write_text(text + "\n", encoding="utf-8")
    log.info("recorded reference statistics of %s (%d bytes)", ", ".join(stats.inputs), len(text))
    return stats
