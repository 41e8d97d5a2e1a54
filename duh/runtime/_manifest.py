"""manifest.json: what an artifact holds and what it needs, and the checks ``load`` makes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duh.errors import ArtifactError
from duh.host import HostInfo
from duh.runtime._signature import TensorSpec

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "SIGNATURE_NAME",
    "Manifest",
    "check_host",
    "hash_files",
    "read_manifest",
    "sha256_file",
    "verify_files",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# The Ed25519 signature over manifest.json's bytes (``duh build --sign``); the one file besides
# the manifest that the manifest does not list (it cannot list its own signature).
SIGNATURE_NAME = "manifest.sig"
# A real manifest is a few KiB (the largest, with INT8 fallback notes, some 100 KiB); a bigger
# one is refused before it is parsed, and so is one that nests deeper than JSON's parser goes.
MAX_MANIFEST_BYTES = 8 << 20
_MAX_FILES = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")
# engine_config keys whose value names a file of the artifact that the engine opens.
_FILE_KEYS = ("model", "library", "engine")


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parsed manifest of an artifact. Sections the runtime does not need stay plain dicts."""

    format_version: int
    duh_version: str
    engine: str
    engine_version: str
    target: Mapping[str, Any]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: Mapping[str, str]
    engine_config: Mapping[str, Any] = field(default_factory=dict)
    host_requirements: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    passes: tuple[Mapping[str, Any], ...] = ()
    checks: Mapping[str, Any] = field(default_factory=dict)
    selection: Mapping[str, Any] = field(default_factory=dict)
    build: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON document written as manifest.json."""
        return {
            "format_version": self.format_version,
            "duh_version": self.duh_version,
            "engine": {"name": self.engine, "version": self.engine_version},
            "target": dict(self.target),
            "signature": {
                "inputs": [s.to_json() for s in self.inputs],
                "outputs": [s.to_json() for s in self.outputs],
            },
            "engine_config": dict(self.engine_config),
            "host_requirements": dict(self.host_requirements),
            "source": dict(self.source),
            "passes": [dict(p) for p in self.passes],
            "checks": dict(self.checks),
            "selection": dict(self.selection),
            "build": dict(self.build),
            "warnings": list(self.warnings),
            "files": dict(sorted(self.files.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        """Parse a manifest document; raises ``KeyError``/``TypeError`` when malformed."""
        return cls(
            format_version=int(data["format_version"]),
            duh_version=str(data["duh_version"]),
            engine=str(data["engine"]["name"]),
            engine_version=str(data["engine"]["version"]),
            target=dict(data["target"]),
            inputs=tuple(TensorSpec.from_json(s) for s in data["signature"]["inputs"]),
            outputs=tuple(TensorSpec.from_json(s) for s in data["signature"]["outputs"]),
            files={str(k): str(v) for k, v in data["files"].items()},
            engine_config=dict(data.get("engine_config", {})),
            host_requirements=dict(data.get("host_requirements", {})),
            source=dict(data.get("source", {})),
            passes=tuple(dict(p) for p in data.get("passes", [])),
            checks=dict(data.get("checks", {})),
            selection=dict(data.get("selection", {})),
            build=dict(data.get("build", {})),
            warnings=tuple(str(w) for w in data.get("warnings", [])),
        )


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` but the manifest and its signature, by POSIX path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in (MANIFEST_NAME, SIGNATURE_NAME)
    }


def _check_names(path: Path, manifest: Manifest) -> None:
    """Refuse file names that would lead out of the artifact, and malformed digests."""
    if len(manifest.files) > _MAX_FILES:
        raise ArtifactError(
            f"{path} lists {len(manifest.files)} files, more than the {_MAX_FILES} an artifact "
            "holds; the manifest is not one duh wrote: rebuild the artifact"
        )
    for rel, digest in manifest.files.items():
        parts = rel.split("/")
        if (
            not rel
            or rel.startswith("/")
            or "\\" in rel
            or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts)
            or rel in (MANIFEST_NAME, SIGNATURE_NAME)
        ):
            raise ArtifactError(
                f"{path} lists file {rel[:200]!r}, which is not a plain relative path inside "
                "the artifact ('..', absolute or empty parts are refused); the manifest was "
                "tampered with: rebuild the artifact"
            )
        if not _SHA256.fullmatch(digest):
            raise ArtifactError(
                f"{path}: the sha256 of {rel!r} is {digest[:80]!r}, not 64 hex digits; the "
                "manifest is damaged: rebuild the artifact"
            )
    for key in _FILE_KEYS:
        named = manifest.engine_config.get(key)
        if named is not None and str(named) not in manifest.files:
            raise ArtifactError(
                f"{path}: engine_config.{key} names {str(named)[:200]!r}, which is not one of "
                "the artifact's hashed files; the manifest was tampered with: rebuild the artifact"
            )


def read_manifest(artifact: Path) -> Manifest:
    """Read and parse ``artifact/manifest.json`` with a clear error for each way it can fail."""
    if not artifact.exists():
        raise ArtifactError(
            f"artifact {str(artifact)!r} does not exist; build one with `duh build`"
        )
    if not artifact.is_dir():
        raise ArtifactError(
            f"{str(artifact)!r} is not an artifact directory; pass the NAME.duh directory "
            "that `duh build` wrote"
        )
    path = artifact / MANIFEST_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ArtifactError(
            f"{path} is a link or not a plain file; an artifact's manifest is a file of its "
            "own: rebuild the artifact"
        )
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ArtifactError(
                f"{path} is {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may be; "
                "it is not one duh wrote: rebuild the artifact"
            )
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            f"{str(artifact)!r} has no {MANIFEST_NAME}; it is not a duh artifact or it was "
            "damaged: rebuild it with `duh build`"
        ) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge ints, nesting
        raise ArtifactError(
            f"{path} is not valid JSON ({_first_line(exc)}); the artifact was damaged: rebuild it"
        ) from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise ArtifactError(f"{path} is not a duh manifest; rebuild the artifact with `duh build`")
    if data["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format version {data['format_version']!r}, this duh reads "
            f"{FORMAT_VERSION}; rebuild the artifact with this duh"
        )
    try:
        manifest = Manifest.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(
            f"{path} is malformed (missing or wrong field {_first_line(exc)[:200]}); rebuild the "
            "artifact"
        ) from None
    _check_names(path, manifest)
    return manifest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def verify_files(artifact: Path, manifest: Manifest) -> None:
    """Check that every listed file exists with its recorded sha256, and nothing else was added."""
    root = artifact.resolve()
    links = sorted(
        p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_symlink()
    )
    if links:
        raise ArtifactError(
            f"artifact {artifact.name} holds symbolic links ({', '.join(links[:5])}); an "
            "artifact holds its own files, never links that may lead out of it: rebuild it"
        )
    for rel, expected in manifest.files.items():
        path = artifact / rel
        if not path.resolve().is_relative_to(root):
            raise ArtifactError(
                f"artifact {artifact.name}: {rel!r} leads outside the artifact; rebuild it"
            )
        if not path.is_file():
            raise ArtifactError(
                f"artifact {artifact.name} is missing {rel}, listed in its manifest; "
                "the artifact is incomplete: rebuild it"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"artifact {artifact.name}: {rel} has sha256 {actual[:16]}…, the manifest says "
                f"{expected[:16]}…; the file was modified after the build: rebuild the artifact"
            )
    extra = sorted(set(hash_files(artifact)) - set(manifest.files))
    if extra:
        raise ArtifactError(
            f"artifact {artifact.name} holds files its manifest does not list: "
            f"{', '.join(extra)}; remove them or rebuild the artifact"
        )


def check_host(manifest: Manifest, host: HostInfo) -> None:
    """Check the artifact's host requirements (CPU flags, CUDA capability) against ``host``."""
    req = manifest.host_requirements
    missing = [f for f in req.get("cpu_flags", []) if not host.has(f)]
    if missing:
        raise ArtifactError(
            f"this artifact was built for a CPU with {', '.join(missing)}, which this host lacks; "
            "rebuild it on this host "
            f"(duh build --target {manifest.target.get('requested', 'cpu')})"
        )
    capability = req.get("cuda_compute_capability")
    if capability:
        have = sorted({d.compute_capability for d in host.cuda})
        if not have:
            raise ArtifactError(
                f"this artifact needs a CUDA device (compute capability {capability}) and this "
                "host has none; build for a CPU target instead"
            )
        if capability not in have and not req.get("hardware_compatible", False):
            raise ArtifactError(
                f"this artifact was built for compute capability {capability}, this host has "
                f"{', '.join(have)}; rebuild it on this host or build it hardware-compatible"
            )
