"""``duh export kserve``: a ServingRuntime, an InferenceService per model, and a Dockerfile.

The runtime runs ``duh serve`` as an Open Inference Protocol (v2) server on KServe's model
directory. KServe's storage initializer copies a model's ``storageUri`` into ``/mnt/models``, so
``storageUri`` points at one artifact directory (the contents of ``NAME.duh/``); the container
takes that directory as the model ``{{.Name}}`` (KServe fills in the InferenceService's name).
Ports come from the environment: Knative's ``PORT`` where it sets it, else ``DUH_HTTP_PORT``,
and ``GRPC_PORT`` for gRPC, as ``duh serve`` reads them.

Two versions of one model give a canary: ``NAME.yaml`` sends ``canary_percent`` of the traffic
to the newer version once ``NAME.stable.yaml`` (the older one) has been applied and is ready,
which is how KServe rolls out (it keeps the last ready revision beside the canary).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duh._version import __version__
from duh.errors import ConfigError, MissingDependencyError
from duh.runtime import MANIFEST_NAME, Manifest, read_manifest

__all__ = [
    "GRPC_PORT",
    "HTTP_PORT",
    "MODEL_DIR",
    "RUNTIME_NAME",
    "KServeExport",
    "KServeRequest",
    "ModelVersion",
    "export_kserve",
    "find_versions",
    "runtime_container",
    "service_name",
]

log = logging.getLogger(__name__)

MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri's contents
HTTP_PORT = 8080
GRPC_PORT = 8081
RUNTIME_NAME = "duh-runtime"
# Pip extras an engine needs inside the image (ONNX Runtime comes with duh itself).
_ENGINE_EXTRAS = {"onnxruntime": (), "openvino": ("openvino",), "tvm": ("tvm",),
                  "tensorrt": ("gpu",)}
# Node Feature Discovery labels for the CPU flags an artifact requires.
_NFD = "feature.node.kubernetes.io/cpu-cpuid.{}"


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One artifact of a model: its name, version, path and manifest."""

    name: str
    version: str
    path: Path
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class KServeRequest:
    """What to export, and the deployment settings the artifacts do not carry."""

    source: Path
    output: Path
    image: str = field(default=f"duh-serve:{__version__}", metadata={"help": "container image"})
    storage_uri: str = field(
        default="pvc://duh-models",
        metadata={"help": "where the artifacts are stored: URI/NAME/VERSION is one artifact"},
    )
    min_replicas: int = field(default=1, metadata={"help": "fewest replicas (0: scale to zero)"})
    max_replicas: int = field(default=3, metadata={"help": "most replicas"})
    canary_percent: int = field(
        default=10, metadata={"help": "traffic to the newer version when a model has two"}
    )
    cpu: str = field(default="1", metadata={"help": "CPU request per replica"})
    namespace: str | None = field(default=None, metadata={"help": "namespace of the resources"})
    name: str | None = field(
        default=None, metadata={"help": "InferenceService name of a single artifact"}
    )

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(
                f"replicas: need 0 <= --min-replicas ({self.min_replicas}) <= --max-replicas "
                f"({self.max_replicas}) and --max-replicas >= 1"
            )
        if not 0 < self.canary_percent < 100:
            raise ConfigError(f"--canary-percent must be 1..99, got {self.canary_percent}")


@dataclass(frozen=True, slots=True)
class KServeExport:
    """The files written, and the documents in them (already validated)."""

    output: Path
    files: tuple[Path, ...]
    documents: tuple[Mapping[str, Any], ...]


_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def service_name(name: str) -> str:
    """``name`` as a Kubernetes resource name (lowercase, ``-`` for ``_`` and ``.``)."""
    fixed = name.lower().replace("_", "-").replace(".", "-")
    if not _DNS_LABEL.match(fixed) or len(fixed) > 45:
        raise ConfigError(
            f"model name {name!r} cannot name an InferenceService (letters, digits and '-', "
            "starting with a letter, at most 45 characters); give one with --name"
        )
    return fixed


def find_versions(source: Path, name: str | None = None) -> list[list[ModelVersion]]:
    """The models at ``source``: one artifact, or a repository ``DIR/<model>/<version>/``.

    Returns, per model, its last two versions (oldest first): one version is a plain service,
    two make a canary.
    """
    if (source / MANIFEST_NAME).is_file():
        own = service_name(name or source.name.split(".")[0])
        return [[ModelVersion(own, "1", source, read_manifest(source))]]
    if name is not None:
        raise ConfigError("--name names a single artifact; a repository's models keep theirs")
    if not source.is_dir():
        raise ConfigError(f"{source} is neither an artifact nor a model repository directory")
    from duh.serve import discover

    by_model: dict[str, list[ModelVersion]] = {}
    for found in discover(source):
        if found.path.suffix == ".onnx":
            raise ConfigError(
                f"{found.path}: KServe export needs built artifacts (duh build), not plain .onnx"
            )
        manifest = read_manifest(found.path)
        version = ModelVersion(service_name(found.name), found.version, found.path, manifest)
        by_model.setdefault(found.name, []).append(version)
    if not by_model:
        raise ConfigError(f"{source} holds no artifacts (expected DIR/<model>/<version>/)")
    key = lambda v: (int(v.version) if v.version.isdigit() else 0, v.version)  # noqa: E731
    return [sorted(versions, key=key)[-2:] for _, versions in sorted(by_model.items())]


def runtime_container(image: str) -> dict[str, Any]:
    """The ServingRuntime's container: ``duh serve`` on KServe's model directory."""
    return {
        "name": "kserve-container",
        "image": image,
        "command": ["duh"],
        "args": ["serve", "{{.Name}}=$(DUH_MODEL_DIR)", "--host", "0.0.0.0"],
        "env": [
            {"name": "DUH_MODEL_DIR", "value": MODEL_DIR},
            {"name": "DUH_HTTP_PORT", "value": str(HTTP_PORT)},
            {"name": "GRPC_PORT", "value": str(GRPC_PORT)},
        ],
        "ports": [{"containerPort": HTTP_PORT, "name": "http1", "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT},
            "periodSeconds": 5,
        },
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": HTTP_PORT}},
    }


def _metadata(name: str, request: KServeRequest, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **extra}
    if request.namespace:
        meta["namespace"] = request.namespace
    return meta


def _serving_runtime(request: KServeRequest) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": _metadata(RUNTIME_NAME, request),
        "spec": {
            "supportedModelFormats": [{"name": "duh", "version": "1", "autoSelect": True}],
            "protocolVersions": ["v2", "grpc-v2"],
            "multiModel": False,
            "containers": [runtime_container(request.image)],
        },
    }


def _artifact_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _resources(version: ModelVersion, request: KServeRequest) -> dict[str, Any]:
    # The engine holds the weights (and ORT an optimized copy) plus the server: twice the
    # artifact and 512 MiB, rounded up to whole MiB.
    mib = -(-(2 * _artifact_bytes(version.path)) // (1 << 20)) + 512
    requests = {"cpu": request.cpu, "memory": f"{mib}Mi"}
    limits = {"memory": f"{mib}Mi"}
    if version.manifest.target.get("device") == "cuda" or version.manifest.engine == "tensorrt":
        limits["nvidia.com/gpu"] = "1"
    return {"requests": requests, "limits": limits}


def _affinity(manifest: Manifest) -> dict[str, Any] | None:
    flags = sorted(manifest.host_requirements.get("cpu_flags", []))
    if not flags:
        return None
    expressions = [
        {"key": _NFD.format(f.upper()), "operator": "In", "values": ["true"]} for f in flags
    ]
    terms = [{"matchExpressions": expressions}]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                             {"nodeSelectorTerms": terms}}}


def _inference_service(
    version: ModelVersion, request: KServeRequest, canary: bool
) -> dict[str, Any]:
    uri = f"{request.storage_uri.rstrip('/')}/{version.name}/{version.version}"
    predictor: dict[str, Any] = {
        "minReplicas": request.min_replicas,
        "maxReplicas": request.max_replicas,
        "model": {
            "modelFormat": {"name": "duh"},
            "runtime": RUNTIME_NAME,
            "protocolVersion": "v2",
            "storageUri": uri,
            "resources": _resources(version, request),
        },
    }
    if canary:
        predictor["canaryTrafficPercent"] = request.canary_percent
    if (affinity := _affinity(version.manifest)) is not None:
        predictor["affinity"] = affinity
    labels = {"duh.version": version.version, "duh.target": str(version.manifest.target.get(
        "resolved", "")).replace(":", "_")}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(version.name, request, labels=labels),
        "spec": {"predictor": predictor},
    }


def _dockerfile(models: Sequence[Sequence[ModelVersion]]) -> str:
    engines = sorted({v.manifest.engine for versions in models for v in versions})
    extras = sorted({"serve", *(e for engine in engines for e in _ENGINE_EXTRAS.get(engine, ()))})
    gpu = "gpu" in extras
    base = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04" if gpu else "python:3.11-slim"
    python = (
        "RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip "
        "&& rm -rf /var/lib/apt/lists/*\n" if gpu else ""
    )
    return (
        f"# duh serve as a KServe Open Inference Protocol runtime, for engines: "
        f"{', '.join(engines)}\n"
        f"FROM {base}\n{python}"
        f"ARG DUH_SPEC=\"duh[{','.join(extras)}]=={__version__}\"\n"
        "RUN python3 -m pip install --no-cache-dir \"$DUH_SPEC\"\n"
        "ENV DUH_MODEL_DIR=/mnt/models DUH_HTTP_PORT=8080 GRPC_PORT=8081\n"
        "EXPOSE 8080 8081\n"
        "USER 1000\n"
        'ENTRYPOINT ["duh"]\n'
        'CMD ["serve", "model=/mnt/models", "--host", "0.0.0.0"]\n'
    )


def _yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("pyyaml", "kserve", "duh export kserve") from None
    return yaml.safe_dump_all([json.loads(json.dumps(d)) for d in documents], sort_keys=False)


def export_kserve(request: KServeRequest) -> KServeExport:
    """Write the runtime, the InferenceServices and the Dockerfile into ``request.output``.

    Every document is validated against KServe's models first (``duh[kserve]``); the folder is
    written whole or not at all.
    """
    from duh.export._kserve_schema import validate

    models = find_versions(request.source, request.name)
    files: dict[str, list[dict[str, Any]]] = {"serving-runtime.yaml": [_serving_runtime(request)]}
    for versions in models:
        name = versions[-1].name
        if len(versions) == 2:
            files[f"{name}.stable.yaml"] = [_inference_service(versions[0], request, False)]
        files[f"{name}.yaml"] = [_inference_service(versions[-1], request, len(versions) == 2)]
    documents = [d for docs in files.values() for d in docs]
    for document in documents:
        validate(document)
    texts = {name: _yaml(docs) for name, docs in files.items()}
    texts["Dockerfile"] = _dockerfile(models)
    output = request.output
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"output folder {output} is not empty; pick an empty or new one")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}."))
    try:
        for name, text in texts.items():
            (staging / name).write_text(text)
        if output.exists():
            output.rmdir()
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("kserve: wrote %d files to %s", len(texts), output)
    return KServeExport(output, tuple(output / n for n in texts), tuple(documents))
