"""Prometheus metrics (``/metrics``) and the statistics extension (``/v2/models/{m}/stats``).

Names follow Triton's ``nv_inference_*`` with a ``duh_`` prefix; every series carries the
model and version, so A/B splits and shadow traffic show side by side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics", "PolicyMetrics", "VersionMetrics"]

_LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_LABELS = ("model", "version")


class Metrics:
    """Every metric of one server, in its own registry (servers in one process do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.success = Counter(
            "duh_inference_request_success", "Inference requests answered with outputs",
            _LABELS, registry=r)
        self.failure = Counter(
            "duh_inference_request_failure",
            "Inference requests that failed, by reason (bad_request, queue_full, timeout, "
            "unavailable, internal, ...)", (*_LABELS, "reason"), registry=r)
        self.inferences = Counter(
            "duh_inference_count", "Rows inferred (a batch of 8 counts 8)", _LABELS, registry=r)
        self.executions = Counter(
            "duh_inference_exec_count", "Engine calls (batches executed)", _LABELS, registry=r)
        self.request_duration = Histogram(
            "duh_inference_request_duration_seconds",
            "End-to-end time in the server per request (decode, queue, compute, encode)",
            _LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram(
            "duh_inference_queue_duration_seconds", "Time a request waited for a batch",
            _LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_duration = Histogram(
            "duh_inference_compute_infer_duration_seconds", "Engine time per batch",
            _LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "duh_inference_batch_size", "Rows per engine call", _LABELS,
            buckets=_BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge(
            "duh_inference_pending_request_count", "Requests waiting in the queue", _LABELS,
            registry=r)
        self.shadow = Counter(
            "duh_inference_shadow_request", "Requests mirrored to a shadow version, by outcome",
            (*_LABELS, "outcome"), registry=r)
        self.policy = PolicyMetrics(r)

    def version(self, model: str, version: str) -> VersionMetrics:
        """The metrics of one model version, with label children bound once."""
        return VersionMetrics(self, model, version)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Duration:
    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class VersionMetrics:
    """Recording side for one model version; safe to call from the loop and worker threads."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.model = model
        self.version = version
        labels = (model, version)
        self._metrics = metrics
        self._success = metrics.success.labels(*labels)
        self._request = metrics.request_duration.labels(*labels)
        self._queue = metrics.queue_duration.labels(*labels)
        self._compute = metrics.compute_duration.labels(*labels)
        self._batch = metrics.batch_size.labels(*labels)
        self._inferences = metrics.inferences.labels(*labels)
        self._executions = metrics.executions.labels(*labels)
        self.queue_depth = metrics.queue_depth.labels(*labels)
        self._lock = threading.Lock()
        self._stats = {k: _Duration() for k in ("success", "fail", "queue", "compute_infer")}
        self._cache = {k: _Duration() for k in ("cache_hit", "cache_miss")}
        self._batches: dict[int, _Duration] = {}
        self._inference_count = 0
        self._execution_count = 0
        self._last_inference_ms = 0

    def succeeded(self, seconds: float) -> None:
        """A request answered with outputs after ``seconds`` in the server."""
        self._success.inc()
        self._request.observe(seconds)
        with self._lock:
            self._stats["success"].add(seconds)

    def failed(self, reason: str, seconds: float) -> None:
        """A request that failed for ``reason``."""
        self._metrics.failure.labels(self.model, self.version, reason).inc()
        with self._lock:
            self._stats["fail"].add(seconds)

    def restarted(self, reason: str) -> None:
        """An engine instance was replaced after an engine ``error`` or a ``hang``."""
        self._metrics.policy.restarts.labels(self.model, self.version, reason).inc()

    def instances(self, ready: int) -> None:
        """How many engine instances take requests now."""
        self._metrics.policy.instances_ready.labels(self.model, self.version).set(ready)

    def shadowed(self, outcome: str) -> None:
        """A request mirrored to this (shadow) version: ``ok``, ``failed`` or ``dropped``."""
        self._metrics.shadow.labels(self.model, self.version, outcome).inc()

    def cached(self, hit: bool, seconds: float) -> None:
        """A response-cache lookup (a hit), or a lookup and insert (a miss), took ``seconds``."""
        with self._lock:
            self._cache["cache_hit" if hit else "cache_miss"].add(seconds)

    def batch(self, rows: int, waits: Sequence[float], compute_s: float) -> None:
        """One engine call of ``rows`` rows for requests that waited ``waits`` seconds."""
        for wait in waits:
            self._queue.observe(wait)
        self._compute.observe(compute_s)
        self._batch.observe(rows)
        self._inferences.inc(rows)
        self._executions.inc()
        with self._lock:
            self._stats["queue"].add(sum(waits), len(waits))
            self._stats["compute_infer"].add(compute_s, len(waits))
            self._batches.setdefault(rows, _Duration()).add(compute_s)
            self._inference_count += rows
            self._execution_count += 1
            self._last_inference_ms = int(time.time() * 1000)

    def stats_json(self) -> dict[str, Any]:
        """This version's entry in the statistics extension's ``model_stats`` list."""
        with self._lock:
            zero = {"count": 0, "ns": 0}
            return {
                "name": self.model,
                "version": self.version,
                "last_inference": self._last_inference_ms,
                "inference_count": self._inference_count,
                "execution_count": self._execution_count,
                "inference_stats": {
                    **{k: v.to_json() for k, v in self._stats.items()},
                    "compute_input": dict(zero),
                    "compute_output": dict(zero),
                    **{k: v.to_json() for k, v in self._cache.items()},
                },
                "batch_stats": [
                    {"batch_size": size, "compute_infer": d.to_json()}
                    for size, d in sorted(self._batches.items())
                ],
            }


class PolicyMetrics:
    """Metrics of the model cache, the response cache, rate limits and instance failover."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        model = ("model",)
        self.loads = Counter(
            "duh_model_loads", "Model loads (at start, on first request, by the load API)",
            model, registry=r)
        self.evictions = Counter(
            "duh_model_evictions", "Models unloaded to keep within --memory-budget", model,
            registry=r)
        self.load_duration = Histogram(
            "duh_model_load_duration_seconds", "Time to load and warm up every version of a model",
            model, buckets=_LATENCY_BUCKETS, registry=r)
        self.resident = Gauge(
            "duh_model_resident_bytes", "Measured resident memory of a loaded model (0: unloaded)",
            model, registry=r)
        self.budget = Gauge(
            "duh_model_memory_budget_bytes", "The --memory-budget (0: none)", registry=r)
        self.load_waiting = Gauge(
            "duh_model_load_waiting_requests", "Requests waiting for their model to load", model,
            registry=r)
        self.cache_hits = Counter(
            "duh_response_cache_hits", "Requests answered from the response cache", _LABELS,
            registry=r)
        self.cache_misses = Counter(
            "duh_response_cache_misses", "Requests the response cache did not hold", _LABELS,
            registry=r)
        self.cache_bytes = Gauge(
            "duh_response_cache_bytes", "Bytes held by a model's response cache", model,
            registry=r)
        self.cache_entries = Gauge(
            "duh_response_cache_entries", "Responses held by a model's response cache", model,
            registry=r)
        self.cache_evictions = Counter(
            "duh_response_cache_evictions", "Responses dropped to keep within the cache's size",
            model, registry=r)
        self.rate_limited = Counter(
            "duh_rate_limited_requests",
            "Requests refused with 429: limit=rate (a client's token bucket) or concurrency "
            "(a model's --max-concurrency)", ("limit", "model"), registry=r)
        self.restarts = Counter(
            "duh_instance_restarts",
            "Engine instances replaced: reason=error (the engine call raised) or hang (it ran "
            "past --watchdog-s)", (*_LABELS, "reason"), registry=r)
        self.instances_ready = Gauge(
            "duh_instances_ready", "Engine instances taking requests", _LABELS, registry=r)
