"""The last stage of the build cache: a whole verified artifact, reused when nothing changed.

Two keys lead to it. The *input key* is computed before anything is read but bytes: the model
file and its external data, the calibration and check data files, every build option, the
versions of duh, of every installed engine and pass library, and the host class; a hit skips
ingest and calibration altogether (an unchanged rebuild is a hash and a copy). The *artifact
key* is computed once the build is resolved and covers the source's bytes (external data
included), every candidate's target and pipeline, the calibration and check data as loaded, the
verification settings, the versions of duh and of every engine and pass library involved, and
the host class. A hit copies the stored files into the new artifact and records the reuse in
its manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import Error as ProtobufError

from duh.compiler._cache_keys import (
    engine_versions,
    feeds_digest,
    host_class,
    pass_versions,
    source_file_digest,
)
from duh.compiler._cache_keys import stage_key as _stage_key
from duh.compiler._ingest_checks import refuse_outside
from duh.compiler._request import BuildRequest, Candidate
from duh.compiler._stage_cache import CacheEntry, StageCache
from duh.compiler.artifact import write_manifest
from duh.compiler.ingest import SourceModel
from duh.errors import ModelError
from duh.host import HostInfo
from duh.runtime import MANIFEST_NAME, Manifest, read_manifest
from duh.targets import TargetSpec

__all__ = [
    "alias",
    "artifact_key",
    "cache_section",
    "cached_result_parts",
    "input_key",
    "remember",
    "restore",
]


def _file_digest(digest: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)


def _data_digest(value: Any) -> Any:
    """A data argument (file, directory, 'synthetic', preprocessing) as a digest of its bytes."""
    if isinstance(value, Mapping):
        return {k: _data_digest(v) for k, v in sorted(value.items())}
    if value is None or str(value) == "synthetic" or not Path(value).exists():
        return None if value is None else str(value)
    path, digest = Path(value), hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" if path.is_dir() else b"")
        _file_digest(digest, file)
    return digest.hexdigest()


def _model_digest(path: Path) -> str:
    """sha256 over the model file and each external data file it names (read, not loaded)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    if path.suffix.lower() != ".onnx":
        # A front end's source (.pt2, module.py:factory, a SavedModel directory): its bytes.
        head, sep, name = str(path).rpartition(":")
        file = Path(head) if sep and head.endswith(".py") else path
        return _stage_key("source", source_file_digest(file), {"factory": name if sep else None})
    digest = hashlib.sha256()
    _file_digest(digest, path)
    model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for t in _get_all_tensors(model)
        if uses_external_data(t)
        for entry in t.external_data
        if entry.key == "location"
    }
    for name in sorted(locations):
        # A hostile model names ../x, /dev/zero or a symlink out of its folder: never read
        # those (ingest refuses the model with the reason).
        refuse_outside(path, name)
        digest.update(name.encode() + b"\0")
        _file_digest(digest, path.parent / name)
    return digest.hexdigest()


def _installed_engines() -> dict[str, str]:
    """The version of every engine duh knows and of every ``duh.targets`` plugin installed."""
    from importlib.metadata import entry_points

    versions = engine_versions(["onnxruntime", "openvino", "tvm", "tensorrt"])
    for ep in entry_points(group="duh.targets"):
        versions[f"plugin:{ep.name}"] = (
            "" if ep.dist is None else f"{ep.dist.name}=={ep.dist.version}"
        )
    return versions


def input_key(model: Path, options: Mapping[str, Any], host: HostInfo) -> str | None:
    """The input key of a build of ``model`` with ``options`` (``build``'s keyword arguments);
    None when the model file cannot be read (ingest then says why)."""
    data = {k: _data_digest(options[k]) for k in ("calib", "check_data", "calib_options")}
    rest = {k: v for k, v in options.items() if k not in data}
    passes = rest.get("passes")
    if passes is not None and not isinstance(passes, str):
        rest["passes"] = [[p.name, dict(p.config)] for p in passes]
    if rest.get("tolerance") is not None:
        rest["tolerance"] = rest["tolerance"].to_json()
    config = {
        "options": rest,
        "data": data,
        "versions": {**pass_versions(["simplify", "bf16"]), **_installed_engines()},
        "host": host_class(host, cuda=True),
    }
    try:
        source = _model_digest(model)
    except (OSError, ValueError, ProtobufError, ModelError):
        return None  # not a readable model: ingest says what is wrong
    return _stage_key("inputs", source, config)


def cached_result_parts(
    manifest: Manifest, path: Path
) -> tuple[TargetSpec, tuple[Candidate, ...], SourceModel]:
    """What a build result holds, as a cached artifact's manifest records it."""
    t = manifest.target
    chosen = TargetSpec(str(t["engine"]), str(t["device"]), str(t["precision"]))
    passes = tuple({"name": p["name"], "config": dict(p["config"])} for p in manifest.passes)
    tried = []
    for c in manifest.selection.get("candidates", []):
        engine, _, rest = str(c["target"]).partition(":")
        device, _, precision = rest.rpartition("-")
        spec = TargetSpec(engine, device, precision)
        error = None if c.get("error") is None else str(c["error"])
        tried.append(Candidate(spec, passes, median_ms=c.get("median_ms"), error=error))
    src = manifest.source
    source = SourceModel(
        onnx.ModelProto(), path, str(src.get("sha256", "")), manifest.inputs,
        manifest.outputs, int(src.get("opset", 0)), int(src.get("ir_version", 0)),
        tuple(src.get("external_data", ())),
    )  # fmt: skip
    return chosen, tuple(tried) or (Candidate(chosen, passes),), source


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
        "frontend": None if request.frontend is None else dict(request.frontend),
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


def remember(cache: StageCache, key: str, inputs: str | None, stage: Path, name: str) -> None:
    """Store the finished artifact in ``stage`` (manifest included) under ``key``, and an alias
    to it under the input key ``inputs``."""
    document = json.loads((stage / MANIFEST_NAME).read_text(encoding="utf-8"))
    cache.store(key, "artifact", name, stage, {"target": document.get("target", {})})
    alias(cache, inputs, key, name)


def alias(cache: StageCache, inputs: str | None, key: str, name: str) -> None:
    """Point the input key ``inputs`` at the artifact entry ``key``."""
    if inputs is None or not cache.enabled:
        return
    with tempfile.TemporaryDirectory(prefix="duh-alias-") as empty:
        cache.store(inputs, "inputs", name, Path(empty), {"artifact": key})
