"""Calibrators: the range of every float tensor of a model over the calibration data.

``minmax`` keeps the extremes; ``percentile`` clips each tail at a percentile of a histogram;
``entropy`` picks the clipping threshold whose 128-level quantized distribution is closest (in
KL divergence) to the observed one, as TensorRT does. Results are cached on disk, keyed by the
model's bytes, the data digest and the method, so a later build of the same model reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from duh._cache import cache_key
from duh._ort_errors import ort_errors
from duh.calibration._data import CalibrationSet
from duh.errors import CalibrationError, MissingDependencyError

__all__ = ["METHODS", "TensorRanges", "calibrate", "float_tensors"]

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
_FORMAT = "duh-calibration/1"
_QUANTIZED_BINS = 128
_ENTROPY_STRIDE = 8


@dataclass(frozen=True, slots=True)
class TensorRanges:
    """The calibrated (low, high) of each tensor, and where they came from."""

    method: str
    ranges: Mapping[str, tuple[float, float]]
    samples: int
    key: str
    cached: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the float32 activations of the main graph (graph inputs and node outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model) if model.ByteSize() < 2**31 - 1 else model
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
        if v.type.HasField("tensor_type")
    }
    weights = {i.name for i in model.graph.initializer}
    names: list[str] = []
    seen: set[str] = set()
    candidates = [v.name for v in model.graph.input]
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        candidates.extend(node.output)
    for name in candidates:
        if (
            name
            and name not in seen
            and name not in weights
            and types.get(name) == onnx.TensorProto.FLOAT
        ):
            seen.add(name)
            names.append(name)
    return names


def _model_digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


class _Runner:
    """Runs the model with every calibrated tensor added as a graph output."""

    def __init__(self, model: onnx.ModelProto, names: list[str]) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime", "core", "calibration") from None
        augmented = onnx.ModelProto()
        augmented.CopyFrom(model)
        existing = {o.name for o in augmented.graph.output}
        for name in names:
            if name not in existing:
                augmented.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Basic optimizations only: fusions may not drop a graph output, but keep it obvious.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self.names = names
        with tempfile.TemporaryDirectory(prefix="duh-calib-") as tmp:
            path = os.path.join(tmp, "augmented.onnx")
            onnx.save_model(
                augmented, path, save_as_external_data=augmented.ByteSize() > 1_800_000_000
            )
            try:
                self._session = ort.InferenceSession(
                    path, options, providers=["CPUExecutionProvider"]
                )
            except ort_errors() as exc:
                raise CalibrationError(
                    f"onnxruntime cannot run the model to calibrate it: {exc}"
                ) from None

    def outputs(self, calibration: CalibrationSet) -> Iterator[list[np.ndarray]]:
        feed_errors: tuple[type[BaseException], ...] = (*ort_errors(), ValueError)
        for feed in calibration.feeds:
            try:
                yield self._session.run(self.names, dict(feed))
            except feed_errors as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CalibrationError(
                    f"running the model on calibration data failed: {first}; check that the data "
                    "matches the model's inputs"
                ) from None


def _minmax(runner: _Runner, calibration: CalibrationSet) -> dict[str, tuple[float, float]]:
    low = {n: np.inf for n in runner.names}
    high = {n: -np.inf for n in runner.names}
    for values in runner.outputs(calibration):
        for name, value in zip(runner.names, values, strict=True):
            if value.size:
                low[name] = min(low[name], float(np.min(value)))
                high[name] = max(high[name], float(np.max(value)))
    return {n: (low[n], high[n]) if low[n] <= high[n] else (0.0, 0.0) for n in runner.names}


def _histograms(
    runner: _Runner,
    calibration: CalibrationSet,
    bounds: Mapping[str, tuple[float, float]],
    bins: int,
    absolute: bool,
) -> dict[str, np.ndarray]:
    """Counts per tensor: of |x| over [0, max|x|] when ``absolute``, else of x over [low, high]."""
    hists = {n: np.zeros(bins, dtype=np.int64) for n in runner.names}
    spans = {}
    for name, (low, high) in bounds.items():
        start = 0.0 if absolute else low
        stop = max(abs(low), abs(high)) if absolute else high
        spans[name] = (start, (stop - start) or 1.0)
    for values in runner.outputs(calibration):
        for name, value in zip(runner.names, values, strict=True):
            # Exact zeros (ReLU outputs: often half the values) are exact at any scale; counted,
            # their spike would drag the entropy threshold down.
            flat = np.abs(value[value != 0]) if absolute else value.ravel()
            start, width = spans[name]
            index = ((flat - start) * (bins / width)).astype(np.int64)
            np.clip(index, 0, bins - 1, out=index)
            hists[name] += np.bincount(index, minlength=bins)
    return hists


def _percentile_range(
    hist: np.ndarray, low: float, high: float, percentile: float
) -> tuple[float, float]:
    total = hist.sum()
    if total == 0 or high <= low:
        return low, high
    edges = np.linspace(low, high, len(hist) + 1)
    cdf = np.cumsum(hist) / total
    tail = 1.0 - percentile / 100.0
    lo = low if low >= 0 else float(edges[int(np.searchsorted(cdf, tail, side="right"))])
    hi = float(edges[min(int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1, len(hist))])
    return min(lo, 0.0) if low < 0 else lo, max(hi, lo)


def _smooth(p: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """A distribution with a little mass on every bin, so KL stays finite."""
    p = p + eps
    return p / p.sum()


def _entropy_threshold(hist: np.ndarray, amax: float) -> float:
    """The |x| clipping threshold minimising KL(observed || 128-level quantized)."""
    bins = len(hist)
    if hist.sum() == 0 or amax <= 0 or bins <= _QUANTIZED_BINS:
        return amax
    counts = hist.astype(np.float64)
    best_kl, best_i = float("inf"), bins
    for i in range(_QUANTIZED_BINS, bins + 1, _ENTROPY_STRIDE):
        # p: the histogram clipped at bin i, the clipped tail piled into its last bin.
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()
        nonzero = p > 0
        # q: the same bins merged into 128 levels, each level spread over its non-empty bins.
        group = np.arange(i) * _QUANTIZED_BINS // i
        sums = np.bincount(group, weights=counts[:i], minlength=_QUANTIZED_BINS)
        filled = np.bincount(group, weights=nonzero, minlength=_QUANTIZED_BINS)
        q = np.where(nonzero, sums[group] / np.maximum(filled[group], 1), 0.0)
        if q.sum() <= 0:
            continue
        ps, qs = _smooth(p / p.sum()), _smooth(q / q.sum())
        divergence = float(np.sum(ps * np.log(ps / qs)))
        if divergence < best_kl:
            best_kl, best_i = divergence, i
    return amax * best_i / bins


def _entropy_range(hist: np.ndarray, low: float, high: float) -> tuple[float, float]:
    amax = max(abs(low), abs(high))
    threshold = _entropy_threshold(hist, amax)
    if low >= 0:
        return low, min(high, threshold)
    return max(low, -threshold), min(high, threshold)


def _compute(
    model: onnx.ModelProto,
    calibration: CalibrationSet,
    method: str,
    names: list[str],
    percentile: float,
    bins: int,
) -> dict[str, tuple[float, float]]:
    runner = _Runner(model, names)
    bounds = _minmax(runner, calibration)
    if method == "minmax":
        return bounds
    hists = _histograms(runner, calibration, bounds, bins, absolute=method == "entropy")
    if method == "percentile":
        return {n: _percentile_range(hists[n], *bounds[n], percentile) for n in names}
    return {n: _entropy_range(hists[n], *bounds[n]) for n in names}


def calibrate(
    model: onnx.ModelProto,
    calibration: CalibrationSet,
    method: str = "minmax",
    *,
    percentile: float = 99.999,
    bins: int = 2048,
    cache_dir: Path | None = None,
) -> TensorRanges:
    """The range of every float activation of ``model`` over ``calibration.feeds``.

    With ``cache_dir``, a result computed earlier for the same model bytes, data and method is
    read back instead of running the model again.
    """
    if method not in METHODS:
        raise CalibrationError(
            f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}"
        )
    if not 0 < percentile <= 100:
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
    if not calibration.feeds:
        raise CalibrationError(
            "the calibration data has no samples left after the hold-out; give more"
        )
    options: dict[str, Any] = {}
    if method == "percentile":
        options = {"percentile": percentile, "bins": bins}
    elif method == "entropy":
        options = {"bins": bins, "quantized_bins": _QUANTIZED_BINS}
    key = cache_key(
        _FORMAT,
        _model_digest(model),
        calibration.digest,
        method,
        json.dumps(options, sort_keys=True),
    )
    path = cache_dir / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ranges = {str(k): (float(v[0]), float(v[1])) for k, v in data["ranges"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning(
                "calibration cache %s is unreadable (%s); calibrating again", path.name, exc
            )
        else:
            log.info("calibration: reusing cached %s ranges (%s)", method, path.name)
            return TensorRanges(method, ranges, int(data.get("samples", 0)), key, True, options)
    names = float_tensors(model)
    if not names:
        raise CalibrationError(
            "the model has no float32 activations to calibrate (it computes in integers or "
            "strings only); INT8 quantizes float math: build --target cpu"
        )
    log.info(
        "calibration: %s on %d samples, %d tensors", method, len(calibration.feeds), len(names)
    )
    ranges = _compute(model, calibration, method, names, percentile, bins)
    if path is not None:
        document = {
            "format": _FORMAT,
            "method": method,
            "options": options,
            "samples": len(calibration.feeds),
            "data": calibration.source,
            "ranges": {n: [lo, hi] for n, (lo, hi) in ranges.items()},
        }
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(document), encoding="utf-8")
        os.replace(tmp, path)
    return TensorRanges(method, ranges, len(calibration.feeds), key, False, options)
