"""What the HTTP and gRPC front ends share: routing, shadow traffic, drain accounting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import numpy as np

from duh.errors import ConfigError
from duh.serve._codec import InferRequest
from duh.serve._errors import ServeError, UnavailableError
from duh.serve._model import ModelVersion
from duh.serve._ratelimit import Limiter, Limits, client_key
from duh.serve._repository import Repository
from duh.serve._respcache import ResponseCache, request_key
from duh.serve._security import Security

__all__ = ["Frontend"]


class Frontend:
    """Runs requests against the repository and counts those in flight, for a clean drain."""

    def __init__(
        self, repository: Repository, security: Security | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.repository = repository
        self.security = security or Security()
        policy = repository.metrics.policy
        self.limiter = Limiter(limits or Limits(), policy)
        self._caches = {
            name: ResponseCache(name, size, policy)
            for name, size in repository.options.response_cache.items()
        }
        for option, names in (("--cache", self._caches), ("--max-concurrency",
                                                          self.limiter.limits.concurrency)):
            unknown = sorted(n for n in names if not repository.serves(n))
            if unknown:
                raise ConfigError(f"{option} names model {unknown[0]!r}, which is not served")
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._shadows: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """Whether the server takes inference requests (models loaded, not draining)."""
        return self.repository.ready and not self.draining

    def rate_limit(self, headers: Mapping[str, str], peer: str | None, model: str) -> None:
        """Take a token of the client's bucket (429 when empty); see ``Limiter.take``.

        With the server's own ``--api-key`` every client sends the same key: they are told
        apart by address then.
        """
        if self.limiter.limits.rate is None:
            return
        client = client_key({} if self.security.api_key else headers, peer)
        self.limiter.take(client, model if self.repository.serves(model) else "")

    def admit(self) -> None:
        """Count a request in; refuse it once the server drains."""
        if self.draining:
            raise UnavailableError("the server is shutting down; send the request elsewhere",
                                   "draining")
        self._inflight += 1
        self._idle.clear()

    def release(self) -> None:
        """Count a request out."""
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def infer(
        self,
        model: str,
        version: str | None,
        decode: Callable[[], InferRequest],
        started: float,
    ) -> tuple[ModelVersion, InferRequest, dict[str, np.ndarray]]:
        """Route (loading the model when it is not resident), decode, mirror to the shadow
        version, answer from the response cache or run; records success or failure."""
        self.limiter.enter(model)
        try:
            chosen, shadow = await self.repository.acquire(model, version)
        except BaseException:
            self.limiter.leave(model)
            raise
        try:
            request = decode()
            self.security.check_limits(request)
            if shadow is not None:
                self._mirror(shadow, request)
            cache = self._caches.get(chosen.name)
            if cache is None:
                outputs = await chosen.infer(request)
            else:
                outputs = await self._cached(cache, chosen, request)
        except ServeError as exc:
            chosen.metrics.failed(exc.reason, time.perf_counter() - started)
            raise
        finally:
            self.repository.release(chosen.name)
            self.limiter.leave(model)
        return chosen, request, outputs

    async def _cached(
        self, cache: ResponseCache, chosen: ModelVersion, request: InferRequest
    ) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        key = request_key(chosen.name, chosen.version, chosen.artifact_id, request)
        found = cache.get(key)
        if found is not None:
            chosen.metrics.cached(True, time.perf_counter() - started)
            return found
        looked_up = time.perf_counter() - started
        outputs = await chosen.infer(request)
        inserting = time.perf_counter()
        cache.put(key, outputs)
        chosen.metrics.cached(False, looked_up + time.perf_counter() - inserting)
        return outputs

    def succeeded(self, version: ModelVersion, started: float) -> None:
        """Record a request answered (after its response was encoded)."""
        version.metrics.succeeded(time.perf_counter() - started)

    def _mirror(self, shadow: ModelVersion, request: InferRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._run_shadow(shadow, request))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _run_shadow(self, shadow: ModelVersion, request: InferRequest) -> None:
        started = time.perf_counter()
        try:
            await shadow.infer(request)
        except ServeError as exc:
            shadow.metrics.failed(exc.reason, time.perf_counter() - started)
            shadow.metrics.shadowed("dropped" if exc.reason == "queue_full" else "failed")
            return
        shadow.metrics.succeeded(time.perf_counter() - started)
        shadow.metrics.shadowed("ok")

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for those accepted; False if ``timeout_s`` passed."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            if self._shadows:
                await asyncio.wait(list(self._shadows), timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def inflight(self) -> int:
        """Requests accepted and not yet answered."""
        return self._inflight
