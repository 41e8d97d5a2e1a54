"""Where served models come from: artifact arguments, repository directories, routing options.

A repository directory is laid out ``DIR/<model>/<version>/``, where the version directory is an
artifact (it holds manifest.json) or holds one (``*.duh`` directory or ``model.onnx``); the
highest version is a model's default. Artifacts can also be named one by one.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from duh.errors import ConfigError
from duh.runtime import MANIFEST_NAME
from duh.serve._errors import ModelNotFoundError
from duh.serve._model import ModelSource, ModelVersion

__all__ = [
    "RoutedModel",
    "Routing",
    "discover",
    "parse_artifact",
    "parse_shadow",
    "parse_split",
    "version_order",
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


class RoutedModel:
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
