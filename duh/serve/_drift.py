"""Drift monitoring: live inputs binned against the artifact's reference sketches.

Per model version and input, a window of the last ``window`` rows is kept as four sub-windows
of bin counts (a ring: the oldest quarter drops as a new one fills). When the window is full,
each completed quarter updates the scores: the population stability index (PSI, mean over the
input's features, and its worst feature) and the largest Kolmogorov-Smirnov distance between
the binned distributions. Scores go to Prometheus gauges and ``/v2/models/{m}/stats``.

Cost: a request only appends its arrays to a buffer; every 64 requests (or a quarter window)
the buffer is binned in one vectorised pass, at most ``max_values`` values per feature and
request (strided), so an image costs no more than a short tabular row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from duh.errors import ConfigError
from duh.runtime import DataStats, InputStats, bin_counts, feature_rows, read_data_stats

__all__ = ["DriftConfig", "DriftMonitors"]

log = logging.getLogger(__name__)

_SLOTS = 4
_FLUSH_REQUESTS = 64
_FLOOR = 1e-4  # shares below this count as this: an empty bin must not make PSI infinite
_LABELS = ("model", "version", "input")


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """How live inputs are compared with the artifact's reference statistics."""

    window: int = field(
        default=1024,
        metadata={"help": "rows of live inputs a drift score covers (0: no drift monitoring)"},
    )
    alert: float | None = field(
        default=None,
        metadata={"help": "log a warning (once per window) when an input's PSI passes this"},
    )
    max_values: int = field(
        default=512, metadata={"help": "values per feature and request that are binned at most"}
    )

    def __post_init__(self) -> None:
        if self.window < 0 or (0 < self.window < _SLOTS * 4):
            raise ConfigError(
                f"--drift-window {self.window}: give at least {_SLOTS * 4} rows, or 0 to turn "
                "drift monitoring off"
            )
        if self.alert is not None and not (self.alert > 0 and math.isfinite(self.alert)):
            raise ConfigError(f"--drift-alert {self.alert}: give a PSI above 0, e.g. 0.2")
        if self.max_values < 1:
            raise ConfigError("the drift monitor needs max_values of at least 1")


def _scores(counts: np.ndarray, reference: np.ndarray) -> tuple[float, float, float, int]:
    """(mean PSI, worst feature's PSI, largest KS distance, worst feature) of ``counts``."""
    live = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    p = np.maximum(reference, _FLOOR)
    q = np.maximum(live, _FLOOR)
    psi = ((q - p) * np.log(q / p)).sum(axis=1)
    ks = np.abs(np.cumsum(live, axis=1) - np.cumsum(reference, axis=1)).max(axis=1)
    worst = int(np.argmax(psi))
    return float(psi.mean()), float(psi[worst]), float(ks.max()), worst


class _InputWindow:
    """The ring of bin counts of one input and its latest scores."""

    def __init__(self, stats: InputStats, config: DriftConfig) -> None:
        self.stats = stats
        self.slot_rows = max(1, config.window // _SLOTS)
        self.counts = np.zeros((_SLOTS, *stats.reference.shape), dtype=np.int64)
        self.rows = np.zeros(_SLOTS, dtype=np.int64)
        self.slot = 0
        self.filled = 0  # completed quarters (up to _SLOTS)
        self.pending: list[np.ndarray] = []  # small requests' arrays, binned together later
        self.sampled: list[np.ndarray] = []  # large requests' values, sampled on arrival
        self.pending_rows = 0
        self.seen = 0
        self.psi: float | None = None
        self.psi_max: float | None = None
        self.ks: float | None = None
        self.worst = 0
        self.scored_rows = 0  # rows the scores cover
        self.since_alert: int | None = None  # rows since the last warning (None: none yet)

    def add(self, rows: np.ndarray, batch_rows: int) -> bool:
        """Count ``rows`` (``batch_rows`` of the model's batch); True when a quarter completed."""
        self.counts[self.slot] += bin_counts(rows, self.stats.edges)
        self.rows[self.slot] += batch_rows
        self.seen += batch_rows
        if self.since_alert is not None:
            self.since_alert += batch_rows
        if self.rows[self.slot] < self.slot_rows:
            return False
        self.filled = min(_SLOTS, self.filled + 1)
        if self.filled == _SLOTS:
            total = self.counts.sum(axis=0)
            self.psi, self.psi_max, self.ks, self.worst = _scores(total, self.stats.reference)
            self.scored_rows = int(self.rows.sum())
        self.slot = (self.slot + 1) % _SLOTS
        self.counts[self.slot] = 0
        self.rows[self.slot] = 0
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "psi": self.psi,
            "psi_max": self.psi_max,
            "ks": self.ks,
            "worst_feature": self.worst if self.psi is not None else None,
            "window_rows": self.scored_rows,
            "rows_seen": int(self.seen),
            "features": self.stats.features,
            "axis": self.stats.axis,
        }


class _Monitor:
    """Drift monitoring of one model version."""

    def __init__(self, model: str, version: str, stats: DataStats, config: DriftConfig,
                 gauges: _Gauges) -> None:
        self.model = model
        self.version = version
        self.config = config
        self.source = stats.source
        self.windows = {name: _InputWindow(s, config) for name, s in stats.inputs.items()}
        self.gauges = gauges
        self.requests = 0
        limit = config.max_values
        self._plan = [(name, w, w.stats.axis, w.stats.features, limit * w.stats.features)
                      for name, w in self.windows.items()]

    def observe(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Buffer one request's inputs; bin the buffer when it is large enough."""
        full = False
        for name, window, axis, width, most in self._plan:
            array = inputs.get(name)
            if array is None or array.dtype.kind not in "biuf":
                continue
            if axis is not None and (array.ndim <= axis or array.shape[axis] != width):
                continue  # a shape the reference does not describe
            if array.size > most:  # an image: keep a strided sample, not the whole tensor
                window.sampled.append(feature_rows(array, axis, self.config.max_values))
            else:
                window.pending.append(array)
            window.pending_rows += array.shape[0] if array.ndim else 1
            full = full or window.pending_rows >= window.slot_rows
        self.requests += 1
        if full or self.requests % _FLUSH_REQUESTS == 0:
            self.flush()

    def flush(self) -> None:
        """Bin every buffered request, update scores, gauges and warnings."""
        for name, window in self.windows.items():
            if not (window.pending or window.sampled):
                continue
            arrays, parts, batch_rows = window.pending, window.sampled, window.pending_rows
            window.pending, window.sampled, window.pending_rows = [], [], 0
            axis, limit = window.stats.axis, self.config.max_values
            if arrays and len({a.shape[1:] for a in arrays}) == 1 and arrays[0].ndim:
                # One shape (the common case): one concatenation, one binning pass.
                parts.append(feature_rows(np.concatenate(arrays), axis, limit * len(arrays)))
            else:
                parts.extend(feature_rows(a, axis, limit) for a in arrays)
            rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if window.add(rows, batch_rows) and window.psi is not None:
                self._publish(name, window)

    def _publish(self, name: str, window: _InputWindow) -> None:
        labels = (self.model, self.version, name)
        assert window.psi is not None and window.psi_max is not None and window.ks is not None
        self.gauges.psi.labels(*labels).set(window.psi)
        self.gauges.psi_max.labels(*labels).set(window.psi_max)
        self.gauges.ks.labels(*labels).set(window.ks)
        alert = self.config.alert
        if alert is None or window.psi <= alert:
            return
        if window.since_alert is not None and window.since_alert < self.config.window:
            return  # warned already within this window
        window.since_alert = 0
        self.gauges.alerts.labels(*labels).inc()
        log.warning(
            "drift: model %s version %s input %r: PSI %.3f over the last %d rows is above "
            "--drift-alert %g (worst feature %d: PSI %.3f; KS %.3f); live inputs no longer "
            "look like the reference data (%s)",
            self.model, self.version, name, window.psi, window.scored_rows, alert,
            window.worst, window.psi_max, window.ks, self.source,
        )

    def to_json(self) -> dict[str, Any]:
        self.flush()
        return {
            "window": self.config.window,
            "reference": self.source,
            "inputs": {name: w.to_json() for name, w in self.windows.items()},
        }


@dataclass(frozen=True, slots=True)
class _Gauges:
    psi: Gauge
    psi_max: Gauge
    ks: Gauge
    alerts: Counter


class DriftMonitors:
    """Every model version's drift monitor, made on its first request from its artifact."""

    def __init__(self, config: DriftConfig, registry: CollectorRegistry) -> None:
        self.config = config
        r = registry
        self.gauges = _Gauges(
            Gauge("duh_input_drift_psi",
                  "Population stability index of an input's last --drift-window rows against "
                  "the artifact's reference data (mean over its features or channels)",
                  _LABELS, registry=r),
            Gauge("duh_input_drift_psi_max",
                  "PSI of the input's most drifted feature or channel", _LABELS, registry=r),
            Gauge("duh_input_drift_ks",
                  "Largest Kolmogorov-Smirnov distance (binned) of an input's features",
                  _LABELS, registry=r),
            Counter("duh_input_drift_alerts",
                    "Windows whose PSI passed --drift-alert (one warning each)", _LABELS,
                    registry=r),
        )
        # (model, version) -> (artifact id, monitor): a reloaded other artifact starts afresh.
        self._monitors: dict[tuple[str, str], tuple[str, _Monitor | None]] = {}

    @property
    def enabled(self) -> bool:
        """Whether drift is monitored at all (``--drift-window`` above 0)."""
        return self.config.window > 0

    def monitor(self, model: str, version: str, path: Any, artifact_id: str) -> _Monitor | None:
        """The monitor of a version (None when its artifact records no reference statistics)."""
        key = (model, version)
        found = self._monitors.get(key)
        if found is None or found[0] != artifact_id:
            stats = read_data_stats(path)
            if stats is None:
                log.info("model %s version %s: its artifact records no reference statistics "
                         "(built without real calibration or check data): drift not monitored",
                         model, version)
                found = (artifact_id, None)
            else:
                found = (artifact_id, _Monitor(model, version, stats, self.config, self.gauges))
            self._monitors[key] = found
        return found[1]

    def observe(self, model: str, version: str, path: Any, artifact_id: str,
                inputs: Mapping[str, np.ndarray]) -> None:
        """Count one answered request's inputs."""
        if self.config.window <= 0:
            return
        found = self.monitor(model, version, path, artifact_id)
        if found is not None:
            found.observe(inputs)

    def flush(self) -> None:
        """Bin every buffered request (before metrics are read)."""
        for _, found in self._monitors.values():
            if found is not None:
                found.flush()

    def to_json(self, model: str, version: str) -> dict[str, Any] | None:
        """The ``drift`` entry of a version's statistics; None when it is not monitored."""
        found = self._monitors.get((model, version))
        return found[1].to_json() if found is not None and found[1] is not None else None
