"""The model repository: which versions are loaded, how traffic splits, load and unload.

Without a memory budget every model loads at start. With one (``MemoryConfig.budget_bytes``),
models load on their first request (or at start, when preloaded or pinned) and the least recently
used one unloads when a load would not fit; the accounting is ``Residency``'s. Requests for a
model that is loading wait for it, a bounded number of them (``max_queue_size``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from duh.errors import ArtifactError, ConfigError
from duh.serve._errors import InternalServeError, ModelNotFoundError, RequestError, UnavailableError
from duh.serve._metrics import Metrics
from duh.serve._model import LoadOptions, ModelSource, ModelVersion, load_version
from duh.serve._modelcache import (
    MemoryConfig,
    Residency,
    disk_bytes,
    process_rss,
    release_free_memory,
)
from duh.serve._sources import (
    RoutedModel,
    Routing,
    discover,
    parse_artifact,
    parse_shadow,
    parse_split,
)

__all__ = [
    "Repository",
    "Routing",
    "discover",
    "parse_artifact",
    "parse_shadow",
    "parse_split",
]

log = logging.getLogger(__name__)


class _PendingLoad:
    """A load on request under way, and how many requests wait for it."""

    __slots__ = ("task", "waiters")

    def __init__(self) -> None:
        self.task: asyncio.Task[RoutedModel]
        self.waiters = 0


class Repository:
    """Every served model; loading runs in threads so the event loop keeps serving."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        root: Path | None,
        options: LoadOptions,
        metrics: Metrics,
        routing: Mapping[str, Routing] | None = None,
        memory: MemoryConfig | None = None,
    ) -> None:
        self.root = root
        self.options = options
        self.metrics = metrics
        self.memory = memory or MemoryConfig()
        self.residency = Residency(self.memory)
        self._policy = metrics.policy
        self._sources = list(sources)
        self._routing = dict(routing or {})
        self._models: dict[str, RoutedModel] = {}
        self._known: set[str] = set()
        self._lock = asyncio.Lock()
        self._closing: set[ModelVersion] = set()
        self._loading: dict[str, _PendingLoad] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._unloaded: set[str] = set()  # by the unload API: requests do not load it again
        self._engines: set[str] = set()  # engines loaded once in this process
        self._policy.budget.set(self.memory.budget_bytes or 0)

    @property
    def ready(self) -> bool:
        """Whether inference can be served: a model is loaded, or loads on its first request."""
        return bool(self._models) or (self.memory.lazy and bool(self._known - self._unloaded))

    def names(self) -> list[str]:
        """The served model names: loaded ones, and with a budget those that load on request."""
        if self.memory.lazy:
            return sorted(set(self._models) | (self._known - self._unloaded))
        return sorted(self._models)

    def serves(self, name: str) -> bool:
        """Whether ``name`` is a served model (loaded, or loading on its first request)."""
        return name in self._models or (self.memory.lazy and name in self._known
                                        and name not in self._unloaded)

    def _sources_of(self, name: str | None) -> list[ModelSource]:
        """The versions to load for ``name`` (all models when None); the repository wins."""
        found = discover(self.root, name) if self.root is not None else []
        in_repository = {s.name for s in found}
        found += [s for s in self._sources
                  if name in (None, s.name) and s.name not in in_repository]
        return found

    async def start(self) -> None:
        """Load the models due at start; an artifact that fails to load stops the start.

        Without a budget that is every model; with one, the pinned models and (preload) those
        that fit.
        """
        sources = self._sources_of(None)
        if not sources:
            where = f"repository {self.root}" if self.root else "the command line"
            raise ConfigError(f"no model to serve: {where} names no artifact")
        self._known = {s.name for s in sources}
        unknown = sorted(set(self._routing) - self._known)
        if unknown:
            raise ConfigError(f"--split/--shadow name model {unknown[0]!r}, which is not served")
        unknown = sorted(set(self.memory.pin) - self._known)
        if unknown:
            raise ConfigError(f"--pin names model {unknown[0]!r}, which is not served")
        names = sorted(self._known)
        for name in names:
            group = [s for s in sources if s.name == name]
            if not self.memory.lazy:
                await self._load(group, name)
            elif name in self.residency.pinned:
                if self.residency.victims(self._estimate(group, name), name) != []:
                    raise ConfigError(
                        f"--pin {name}: the pinned models do not fit --memory-budget "
                        f"{self.memory.budget_bytes} bytes; raise it or pin fewer"
                    )
                await self._load(group, name)
        if self.memory.lazy and self.memory.preload:
            for name in names:
                group = [s for s in sources if s.name == name]
                if name in self._models:
                    continue
                if self.residency.victims(self._estimate(group, name), name) == []:
                    await self._load(group, name)
                    if self.residency.victims(0, name) == []:
                        continue
                    await self._evict(name)  # it measured larger than its files
                log.info("model %s is not preloaded: it would exceed --memory-budget; it "
                         "loads on its first request", name)

    def _estimate(self, sources: Sequence[ModelSource], name: str) -> int:
        return self.residency.estimate(name, [s.path for s in sources])

    async def _open(
        self, sources: Sequence[ModelSource], name: str
    ) -> tuple[RoutedModel, int, float]:
        """Load every version of ``name``: the model, how much RSS grew, and the seconds taken."""
        loop = asyncio.get_running_loop()
        versions: dict[str, ModelVersion] = {}
        await asyncio.to_thread(release_free_memory)
        before = process_rss()
        started = time.perf_counter()
        try:
            for source in sources:
                if source.version in versions:
                    raise ConfigError(f"model {name} version {source.version} is given twice")
                versions[source.version] = await asyncio.to_thread(
                    load_version, source, self.options, loop, self.metrics
                )
            model = RoutedModel(name, versions, self._routing.get(name, Routing()))
        except BaseException:
            for version in versions.values():
                await asyncio.to_thread(version.close)
            raise
        elapsed = time.perf_counter() - started
        after = process_rss()
        grown = after - before if after is not None and before is not None else 0
        return model, grown, elapsed

    async def _load(self, sources: Sequence[ModelSource], name: str) -> None:
        model, grown, elapsed = await self._open(sources, name)
        engines = {v.engine for v in model.versions.values()} - self._engines
        if engines:
            # The first load on an engine also brought the engine's library and pools into the
            # process: measure again, so that no model is charged for them.
            self._engines |= engines
            await self._retire(model.versions.values())
            model, grown, elapsed = await self._open(sources, name)
        size = max(grown, sum(disk_bytes(s.path) for s in sources))
        old = self._models.get(name)
        self._models[name] = model
        self._unloaded.discard(name)
        self.residency.loaded(name, size)
        self._policy.loads.labels(name).inc()
        self._policy.load_duration.labels(name).observe(elapsed)
        self._policy.resident.labels(name).set(size)
        log.info("model %s resident: %d bytes (RSS grew %d), loaded in %.2fs", name, size, grown,
                 elapsed)
        if old is not None:
            await self._retire(old.versions.values())

    async def _retire(self, versions: Iterable[ModelVersion]) -> None:
        """Close versions after their queued and running requests finish."""
        for version in versions:
            self._closing.add(version)
            try:
                await asyncio.to_thread(version.close)
            finally:
                self._closing.discard(version)

    async def _fit(self, sources: Sequence[ModelSource], name: str) -> None:
        """Unload least recently used models until ``name`` fits the budget, then load it."""
        need = self._estimate(sources, name)
        await self._make_room(need, name)
        await self._load(sources, name)
        await self._make_room(0, name)  # it measured larger than estimated: make up for it

    async def _make_room(self, need: int, keep: str) -> None:
        victims = self.residency.victims(need, keep)
        if victims is None:
            pinned = sum(self.residency.bytes_of(n) for n in self.residency.pinned)
            raise UnavailableError(
                f"model {keep} needs about {need} bytes, which --memory-budget "
                f"{self.memory.budget_bytes} cannot hold beside the pinned models ({pinned} "
                "bytes); raise the budget or pin fewer models", "memory_budget", None,
            )
        for victim in victims:
            await self._evict(victim)

    async def _evict(self, name: str) -> None:
        """Stop routing to ``name``, wait for its requests in flight, then unload it."""
        model = self._models.pop(name, None)
        if model is None:
            return
        log.info("unloading model %s (%d bytes) to keep within --memory-budget", name,
                 self.residency.bytes_of(name))
        while self.residency.inflight(name) > 0:
            event = self._idle.setdefault(name, asyncio.Event())
            event.clear()
            await event.wait()
        await self._retire(model.versions.values())
        self._unresident(name)
        self._policy.evictions.labels(name).inc()

    def _unresident(self, name: str) -> None:
        self.residency.unloaded(name)
        self._policy.resident.labels(name).set(0)
        release_free_memory()

    def route(self, name: str, version: str | None) -> tuple[ModelVersion, ModelVersion | None]:
        """The version that answers a request, and the shadow version that mirrors it."""
        model = self._models.get(name)
        if model is None:
            if self.memory.lazy and name in self._known and name not in self._unloaded:
                raise ModelNotFoundError(
                    f"model {name!r} is not loaded now; it loads on its first inference request"
                )
            raise self._unknown(name)
        return self._pick(model, version)

    @staticmethod
    def _pick(model: RoutedModel, version: str | None) -> tuple[ModelVersion, ModelVersion | None]:
        chosen = model.pick(version)
        shadow = model.shadow if version is None and model.shadow is not chosen else None
        return chosen, shadow

    def _unknown(self, name: str) -> ModelNotFoundError:
        if name in self._unloaded:
            return ModelNotFoundError(
                f"unknown model {name!r}: it was unloaded; load it with POST "
                f"/v2/repository/models/{name}/load"
            )
        return ModelNotFoundError(
            f"unknown model {name!r}; served models: {', '.join(self.names()) or 'none'}"
        )

    async def acquire(
        self, name: str, version: str | None
    ) -> tuple[ModelVersion, ModelVersion | None]:
        """``route`` for a request, loading the model first when it is not resident.

        The request counts as in flight for ``name`` until ``release``: the model is not unloaded
        under it.
        """
        model = self._models.get(name)
        if model is None:
            model = await self._wait_for_load(name)  # returns with the request counted in
        else:
            self.residency.acquire(name)
        try:
            return self._pick(model, version)
        except BaseException:
            self.release(name)
            raise

    def release(self, name: str) -> None:
        """A request ``acquire`` let in is answered."""
        self.residency.release(name)
        if self.residency.inflight(name) == 0:
            event = self._idle.get(name)
            if event is not None:
                event.set()

    async def _wait_for_load(self, name: str) -> RoutedModel:
        if not self.memory.lazy or name in self._unloaded or name not in self._known:
            raise self._unknown(name)
        load = self._loading.get(name)
        if load is None:
            load = self._loading[name] = _PendingLoad()
            load.task = asyncio.get_running_loop().create_task(self._load_on_request(name, load))
            load.task.add_done_callback(lambda _: self._loading.pop(name, None))
        limit = self.options.batch.max_queue_size
        if load.waiters >= limit:
            raise UnavailableError(
                f"model {name} is loading and {load.waiters} requests already wait for it, the "
                f"limit (--max-queue-size {limit}); retry later", "loading_queue_full",
            )
        gauge = self._policy.load_waiting.labels(name)
        load.waiters += 1
        gauge.inc()
        try:
            return await asyncio.shield(load.task)
        except asyncio.CancelledError:
            task = load.task
            if task.done() and not task.cancelled() and task.exception() is None:
                self.release(name)  # the load had counted this request in
            raise
        finally:
            load.waiters -= 1
            gauge.dec()

    async def _load_on_request(self, name: str, load: _PendingLoad) -> RoutedModel:
        async with self._lock:
            if name not in self._models:
                sources = self._sources_of(name)
                if not sources:
                    raise ModelNotFoundError(f"no artifact for model {name!r} in the repository")
                try:
                    await self._fit(sources, name)
                except (ArtifactError, ConfigError) as exc:
                    raise InternalServeError(f"loading model {name} failed: {exc}") from None
            # Count the waiting requests in before the next load may pick this model to unload:
            # they are served by it first.
            for _ in range(load.waiters):
                self.residency.acquire(name)
            return self._models[name]

    def versions(self, name: str) -> list[str]:
        """The loaded versions of ``name``, lowest first."""
        return list(self._models[name].order) if name in self._models else []

    async def load(self, name: str) -> None:
        """(Re)load every version of ``name``; requests already accepted finish on the old one."""
        async with self._lock:
            sources = self._sources_of(name)
            if not sources:
                raise ModelNotFoundError(f"no artifact for model {name!r} in the repository")
            self._known.add(name)
            try:
                if self.memory.lazy and name not in self._models:
                    await self._fit(sources, name)
                else:
                    await self._load(sources, name)
            except (ArtifactError, ConfigError) as exc:
                raise RequestError(f"loading model {name} failed: {exc}") from None

    async def unload(self, name: str) -> None:
        """Stop routing to ``name``, then close it once its accepted requests have finished."""
        async with self._lock:
            model = self._models.pop(name, None)
            if model is None:
                raise ModelNotFoundError(f"model {name!r} is not loaded")
            self._unloaded.add(name)
            await self._retire(model.versions.values())
            self._unresident(name)

    def index(self) -> list[dict[str, Any]]:
        """The repository index: every model version with its state."""
        rows = []
        loaded = {(m.name, v) for m in self._models.values() for v in m.versions}
        for source in self._sources_of(None):
            ready = (source.name, source.version) in loaded
            reason = "unloaded"
            if self.memory.lazy and source.name not in self._unloaded:
                reason = "not resident: loads on its first request"
            rows.append({"name": source.name, "version": source.version,
                         "state": "READY" if ready else "UNAVAILABLE",
                         **({} if ready else {"reason": reason})})
        return rows

    def all_versions(self) -> list[ModelVersion]:
        """Every loaded version."""
        return [v for m in self._models.values() for v in m.versions.values()]

    async def close(self, timeout_s: float) -> bool:
        """Finish every queued request and release the engines; False if ``timeout_s`` passed."""
        versions = self.all_versions()
        self._models.clear()
        results = await asyncio.gather(
            *(asyncio.to_thread(v.close, timeout_s) for v in versions)
        )
        return all(results)
