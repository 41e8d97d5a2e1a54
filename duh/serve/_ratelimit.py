"""Rate limits: a token bucket per client, and a cap on each model's requests in flight.

A client is its API key (the ``authorization`` header, or gRPC metadata), else its peer address.
Each client's bucket holds ``burst`` tokens and refills at ``rate`` per second; a request takes
one, and a client whose bucket is empty gets 429 with ``Retry-After`` (whole seconds until a
token is back). Buckets of clients not seen for a while are dropped beyond ``MAX_CLIENTS`` (a
dropped client comes back to a full bucket, as it would have after waiting).

``--max-concurrency NAME:N`` lets at most N requests for a model be in flight (queued or
computing); the next one gets 429 at once.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from duh.errors import ConfigError
from duh.serve._errors import RateLimitedError
from duh.serve._metrics import PolicyMetrics

__all__ = [
    "Limiter",
    "Limits",
    "RateLimit",
    "client_key",
    "parse_concurrency",
    "parse_rate_limit",
]

MAX_CLIENTS = 65536
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|min)\s*(?:,\s*burst\s*=\s*(\d+)\s*)?$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``rate`` requests per second on average, ``burst`` at once."""

    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's per-client rate limit and per-model concurrency limits."""

    rate: RateLimit | None = field(
        default=None, metadata={"help": "per-client token bucket, e.g. 100/s,burst=200"}
    )
    concurrency: Mapping[str, int] = field(
        default_factory=dict, metadata={"help": "most requests in flight per model"}
    )


def parse_rate_limit(text: str) -> RateLimit:
    """``100/s,burst=200`` (or ``600/m``); the burst defaults to the rate per second, at least 1."""
    match = _RATE.match(text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(
            f"--rate-limit {text!r} is not RATE/s[,burst=N] (e.g. 100/s,burst=200 or 600/m)"
        )
    rate = float(match[1]) / (60.0 if match[2] in ("m", "min") else 1.0)
    burst = int(match[3]) if match[3] else max(1, math.ceil(rate))
    if burst < 1:
        raise ConfigError(f"--rate-limit {text!r}: burst must be at least 1")
    return RateLimit(rate, burst)


def parse_concurrency(text: str) -> tuple[str, int]:
    """``digits:4`` -> ("digits", 4)."""
    name, sep, count = text.rpartition(":")
    if not sep or not name or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--max-concurrency {text!r} is not NAME:N with N >= 1 (e.g. digits:4)")
    return name, int(count)


def client_key(headers: Mapping[str, str], peer: str | None) -> str:
    """Who a request comes from: a digest of its API key, else its peer address."""
    key = headers.get("authorization")
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()
    return "peer:" + (peer or "unknown")


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Limiter:
    """Applies ``Limits``; called on the event loop only (no locks)."""

    def __init__(self, limits: Limits, metrics: PolicyMetrics) -> None:
        self.limits = limits
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._inflight: dict[str, int] = {}
        self._metrics = metrics

    def take(self, client: str, model: str, now: float | None = None) -> None:
        """Take a token of ``client``'s bucket; raises ``RateLimitedError`` when it is empty."""
        limit = self.limits.rate
        if limit is None:
            return
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(float(limit.burst), now)
            if len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(limit.burst, bucket.tokens + (now - bucket.stamp) * limit.rate)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            self._metrics.rate_limited.labels("rate", model).inc()
            wait = math.ceil((1.0 - bucket.tokens) / limit.rate)
            raise RateLimitedError(
                f"this client sent more than {limit.rate:g} requests/s (burst {limit.burst}), "
                f"the server's --rate-limit; retry after {wait} s",
                "rate_limited", retry_after_s=max(1, wait),
            )
        bucket.tokens -= 1.0

    def enter(self, model: str) -> None:
        """Count a request for ``model`` in; raises ``RateLimitedError`` over its limit."""
        cap = self.limits.concurrency.get(model)
        if cap is None:
            return
        count = self._inflight.get(model, 0)
        if count >= cap:
            self._metrics.rate_limited.labels("concurrency", model).inc()
            raise RateLimitedError(
                f"model {model} has {count} requests in flight, its --max-concurrency; retry",
                "concurrency_limited",
            )
        self._inflight[model] = count + 1

    def leave(self, model: str) -> None:
        """Count a request for ``model`` out."""
        if model in self.limits.concurrency:
            self._inflight[model] = self._inflight.get(model, 1) - 1
