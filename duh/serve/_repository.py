"""The model repository: which versions are loaded, how traffic splits, load and unload.

A repository directory is laid out ``DIR/<model>/<version>/``, where the version directory is an
artifact (it holds manifest.json) or holds one (``*.duh`` directory or ``model.onnx``); the
highest version is a model's default. Artifacts can also be named one by one.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duh.errors import ArtifactError, ConfigError
from duh.runtime import MANIFEST_NAME
from duh.serve._errors import ModelNotFoundError, RequestError
from duh.serve._metrics import Metrics
from duh.serve._model import LoadOptions, ModelSource, ModelVersion, load_version

__all__ = [
    "Repository",
    "Routing",
    "discover",
    "parse_artifact",
    "parse_shadow",
    "parse_split",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Routing:
    """Traffic rules for one model: weighted split over versions, and a shadow version."""

    split: tuple[tuple[str, float], ...] = ()
    shadow: str | None = None


def version_order(version: str) -> tuple[int, int | str]:
    """Sort key: numeric versions by value, after any non-numeric names."""
    return (1, int(version)) if version.isdigit() else (0, version)


def parse_artifact(text: str) -> ModelSource:
    """``PATH``, ``NAME=PATH`` or ``NAME:VERSION=PATH``; the name defaults to the path's stem."""
    spec, sep, path = text.rpartition("=")
    if not sep:
        spec, path = "", text
    location = Path(path)
    name, _, version = spec.partition(":")
    name = name or location.name.split(".")[0]
    if not name or not (version or "1").replace("_", "").isalnum():
        raise ConfigError(f"artifact argument {text!r} is not PATH, NAME=PATH or NAME:VERSION=PATH")
    return ModelSource(name, version or "1", location)


def _artifact_in(version_dir: Path) -> Path | None:
    if (version_dir / MANIFEST_NAME).is_file():
        return version_dir
    found = sorted(p for p in version_dir.glob("*.duh") if (p / MANIFEST_NAME).is_file())
    if len(found) == 1:
        return found[0]
    if not found and (version_dir / "model.onnx").is_file():
        return version_dir / "model.onnx"
    return None


def discover(root: Path, only: str | None = None) -> list[ModelSource]:
    """Every version found under a repository directory (of model ``only`` when given)."""
    if not root.is_dir():
        raise ConfigError(f"--repository {str(root)!r} is not a directory")
    sources = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if only is not None and model_dir.name != only:
            continue
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            artifact = _artifact_in(version_dir)
            if artifact is None:
                log.warning("%s holds no artifact (manifest.json, one *.duh or model.onnx); "
                            "skipped", version_dir)
                continue
            sources.append(ModelSource(model_dir.name, version_dir.name, artifact))
    return sources


def parse_split(text: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """``m:1=90,2=10`` -> ("m", (("1", 90.0), ("2", 10.0)))."""
    model, sep, rest = text.partition(":")
    try:
        if not sep or not model:
            raise ValueError
        weights = []
        for part in rest.split(","):
            version, eq, weight = part.partition("=")
            if not eq or not version.strip():
                raise ValueError
            weights.append((version.strip(), float(weight)))
        if not weights or any(w < 0 for _, w in weights) or sum(w for _, w in weights) <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"--split {text!r} is not MODEL:VERSION=WEIGHT,VERSION=WEIGHT (e.g. m:1=90,2=10)"
        ) from None
    return model, tuple(weights)


def parse_shadow(text: str) -> tuple[str, str]:
    """``m:2`` -> ("m", "2")."""
    model, sep, version = text.partition(":")
    if not sep or not model or not version:
        raise ConfigError(f"--shadow {text!r} is not MODEL:VERSION (e.g. m:2)")
    return model, version


class _Model:
    """The loaded versions of one model name and how requests pick among them."""

    def __init__(self, name: str, versions: Mapping[str, ModelVersion], routing: Routing) -> None:
        self.name = name
        self.versions = dict(versions)
        self.order = sorted(self.versions, key=version_order)
        self.default = self.order[-1]
        for version, _ in routing.split:
            self._require(version, "--split")
        if routing.shadow is not None:
            self._require(routing.shadow, "--shadow")
        self.shadow = self.versions[routing.shadow] if routing.shadow else None
        total, cumulative = 0.0, []
        for _, weight in routing.split:
            total += weight
            cumulative.append(total)
        self._split = [v for v, _ in routing.split]
        self._cumulative = [c / total for c in cumulative] if routing.split else []

    def _require(self, version: str, option: str) -> None:
        if version not in self.versions:
            raise ConfigError(
                f"{option} names version {version!r} of model {self.name}, which has versions "
                f"{', '.join(self.order)}"
            )

    def pick(self, version: str | None) -> ModelVersion:
        if version is not None:
            try:
                return self.versions[version]
            except KeyError:
                raise ModelNotFoundError(
                    f"model {self.name} has no version {version!r}; loaded versions: "
                    f"{', '.join(self.order)}"
                ) from None
        if self._split:
            index = bisect.bisect_left(self._cumulative, random.random())
            return self.versions[self._split[min(index, len(self._split) - 1)]]
        return self.versions[self.default]


class Repository:
    """Every served model; loading runs in threads so the event loop keeps serving."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        root: Path | None,
        options: LoadOptions,
        metrics: Metrics,
        routing: Mapping[str, Routing] | None = None,
    ) -> None:
        self.root = root
        self.options = options
        self.metrics = metrics
        self._sources = list(sources)
        self._routing = dict(routing or {})
        self._models: dict[str, _Model] = {}
        self._lock = asyncio.Lock()
        self._closing: set[ModelVersion] = set()

    @property
    def ready(self) -> bool:
        """Whether at least one model is loaded."""
        return bool(self._models)

    def names(self) -> list[str]:
        """The loaded model names."""
        return sorted(self._models)

    def _sources_of(self, name: str | None) -> list[ModelSource]:
        """The versions to load for ``name`` (all models when None); the repository wins."""
        found = discover(self.root, name) if self.root is not None else []
        in_repository = {s.name for s in found}
        found += [s for s in self._sources
                  if name in (None, s.name) and s.name not in in_repository]
        return found

    async def start(self) -> None:
        """Load every model found; an artifact that fails to load stops the start."""
        sources = self._sources_of(None)
        if not sources:
            where = f"repository {self.root}" if self.root else "the command line"
            raise ConfigError(f"no model to serve: {where} names no artifact")
        unknown = sorted(set(self._routing) - {s.name for s in sources})
        if unknown:
            raise ConfigError(f"--split/--shadow name model {unknown[0]!r}, which is not served")
        for name in sorted({s.name for s in sources}):
            await self._load([s for s in sources if s.name == name], name)

    async def _load(self, sources: Sequence[ModelSource], name: str) -> None:
        loop = asyncio.get_running_loop()
        versions: dict[str, ModelVersion] = {}
        try:
            for source in sources:
                if source.version in versions:
                    raise ConfigError(f"model {name} version {source.version} is given twice")
                versions[source.version] = await asyncio.to_thread(
                    load_version, source, self.options, loop, self.metrics
                )
            model = _Model(name, versions, self._routing.get(name, Routing()))
        except BaseException:
            for version in versions.values():
                await asyncio.to_thread(version.close)
            raise
        old = self._models.get(name)
        self._models[name] = model
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

    def route(self, name: str, version: str | None) -> tuple[ModelVersion, ModelVersion | None]:
        """The version that answers a request, and the shadow version that mirrors it."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(
                f"unknown model {name!r}; served models: {', '.join(self.names()) or 'none'}"
            )
        chosen = model.pick(version)
        shadow = model.shadow if version is None and model.shadow is not chosen else None
        return chosen, shadow

    def versions(self, name: str) -> list[str]:
        """The loaded versions of ``name``, lowest first."""
        return list(self._models[name].order) if name in self._models else []

    async def load(self, name: str) -> None:
        """(Re)load every version of ``name``; requests already accepted finish on the old one."""
        async with self._lock:
            sources = self._sources_of(name)
            if not sources:
                raise ModelNotFoundError(f"no artifact for model {name!r} in the repository")
            try:
                await self._load(sources, name)
            except (ArtifactError, ConfigError) as exc:
                raise RequestError(f"loading model {name} failed: {exc}") from None

    async def unload(self, name: str) -> None:
        """Stop routing to ``name``, then close it once its accepted requests have finished."""
        async with self._lock:
            model = self._models.pop(name, None)
            if model is None:
                raise ModelNotFoundError(f"model {name!r} is not loaded")
            await self._retire(model.versions.values())

    def index(self) -> list[dict[str, Any]]:
        """The repository index: every model version with its state."""
        rows = []
        loaded = {(m.name, v) for m in self._models.values() for v in m.versions}
        for source in self._sources_of(None):
            ready = (source.name, source.version) in loaded
            rows.append({"name": source.name, "version": source.version,
                         "state": "READY" if ready else "UNAVAILABLE",
                         **({} if ready else {"reason": "unloaded"})})
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
