"""The last stage of the build cache: a whole verified artifact, reused when nothing changed.

Its key covers the source's bytes (external data included), every candidate's target and
pipeline, the calibration and check data, the verification settings, the versions of duh and
of every engine and pass library involved, and the host class. A hit copies the stored files
into the new artifact and records the reuse in its manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from duh.compiler._cache_keys import engine_versions, feeds_digest, host_class, pass_versions
from duh.compiler._cache_keys import stage_key as _stage_key
from duh.compiler._request import BuildRequest
from duh.compiler._stage_cache import CacheEntry, StageCache
from duh.compiler.artifact import write_manifest
from duh.runtime import MANIFEST_NAME, Manifest, read_manifest

__all__ = ["artifact_key", "cache_section", "remember", "restore"]


def _source_digest(request: BuildRequest) -> str:
    """The source file's sha256 and that of each external data file beside it."""
    source = request.source
    digest = hashlib.sha256(source.sha256.encode())
    for name in sorted(source.external_data):
        digest.update(name.encode() + b"\0")
        with open(source.path.parent / name, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def artifact_key(request: BuildRequest) -> str:
    """The cache key of the artifact ``request`` builds."""
    specs = [p.spec for p in request.plans]
    names = [str(step["name"]) for p in request.plans for step in p.pipeline.describe()]
    config: dict[str, Any] = {
        "requested": request.requested,
        "plans": [[p.spec.name, p.pipeline.describe()] for p in request.plans],
        "calibration": None if request.calibration is None else request.calibration.digest,
        "shapes": {k: list(v) for k, v in request.shapes.items()},
        "target_options": dict(request.target_options),
        "verify": request.verify,
        "checks": [request.checks.source, feeds_digest(request.checks.feeds)],
        "tolerance": None if request.tolerance is None else request.tolerance.to_json(),
        "budget_s": request.budget_s,
        "versions": {**pass_versions(names), **engine_versions(s.engine for s in specs)},
        "host": host_class(request.host, cuda=any(s.device == "cuda" for s in specs)),
    }
    return _stage_key("artifact", _source_digest(request), config)


def cache_section(cache: StageCache, artifact: str) -> dict[str, Any]:
    """The manifest's ``build.cache``: whether it was on, the artifact's reuse, every lookup."""
    if not cache.enabled:
        return {"enabled": False}
    return {
        "enabled": True,
        "artifact": artifact,
        "lookups": [e.to_json() for e in cache.events],
    }


def restore(entry: CacheEntry, cache: StageCache, stage: Path) -> Manifest:
    """Copy a cached artifact into ``stage``; its manifest records the reuse."""
    for item in entry.files_dir.iterdir():
        if item.is_dir():
            shutil.copytree(item, stage / item.name)
        else:
            shutil.copy2(item, stage / item.name)
    manifest = read_manifest(stage)
    build = {**manifest.build, "cache": cache_section(cache, "hit")}
    manifest = replace(manifest, build=build)
    write_manifest(stage, manifest)
    return manifest


def remember(cache: StageCache, key: str, stage: Path, name: str) -> None:
    """Store the finished artifact in ``stage`` (manifest included) under ``key``."""
    document = json.loads((stage / MANIFEST_NAME).read_text(encoding="utf-8"))
    cache.store(key, "artifact", name, stage, {"target": document.get("target", {})})
