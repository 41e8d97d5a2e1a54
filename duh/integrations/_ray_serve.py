"""A Ray Serve deployment of an artifact: ``duh.load`` per replica, ``@serve.batch``, v2 JSON.

Each replica loads the artifact once. Requests (Open Inference Protocol JSON at
``/v2/models/NAME/infer``, plus ``/v2/health/ready`` and the model's metadata at
``/v2/models/NAME``) are batched by Ray Serve's ``@serve.batch`` along the first axis, run as one
engine call, and split back per request.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import ConfigError, DuhError, MissingDependencyError
from duh.runtime import MANIFEST_NAME, TensorSpec, read_manifest

__all__ = ["DeploymentConfig", "actor_options", "deployment"]

# Open Inference Protocol datatypes <-> numpy (the v2 "tensor data types" table).
_DATATYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
    "FP32": "float32", "FP64": "float64", "BYTES": "object",
}
_NAMES = {v: k for k, v in _DATATYPES.items()}


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    """Ray Serve settings of a duh deployment."""

    name: str
    num_replicas: int | str = field(default=1, metadata={"help": "replicas, or 'auto'"})
    autoscaling_config: Mapping[str, Any] | None = field(
        default=None, metadata={"help": "Ray Serve autoscaling (min_replicas, max_replicas...)"}
    )
    ray_actor_options: Mapping[str, Any] = field(
        default_factory=dict, metadata={"help": "num_cpus / num_gpus per replica"}
    )
    max_batch_size: int = field(default=32, metadata={"help": "rows per engine call"})
    batch_wait_timeout_s: float = field(
        default=0.005, metadata={"help": "how long a batch waits to fill"}
    )
    threads: int | None = field(default=None, metadata={"help": "engine threads per replica"})


def actor_options(artifact: Path, num_cpus: float | None = None) -> dict[str, Any]:
    """``num_cpus``/``num_gpus`` per replica from the artifact's device (a GPU for CUDA)."""
    options: dict[str, Any] = {"num_cpus": 1.0 if num_cpus is None else num_cpus}
    if (artifact / MANIFEST_NAME).is_file():
        manifest = read_manifest(artifact)
        if manifest.target.get("device") == "cuda" or manifest.engine == "tensorrt":
            options["num_gpus"] = 1.0
    return options


def decode(doc: Any, inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """A v2 JSON inference request as one array per input."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ConfigError('the request is not v2 JSON: {"inputs": [{name, datatype, shape, data}]}')
    feed = {}
    for tensor in doc["inputs"]:
        try:
            dtype = _DATATYPES[tensor["datatype"]]
            array = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"input tensor {tensor.get('name')!r} is malformed ({exc})") from None
        feed[str(tensor["name"])] = array
    known = {s.name for s in inputs}
    if set(feed) != known:
        raise ConfigError(f"inputs {sorted(feed)} given, the model takes {sorted(known)}")
    return feed


def encode(name: str, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One answer as v2 JSON."""
    return {
        "model_name": name,
        "outputs": [
            {"name": n, "datatype": _NAMES.get(a.dtype.name, "BYTES"), "shape": list(a.shape),
             "data": a.ravel().tolist()}
            for n, a in outputs.items()
        ],
    }


class _Replica:
    """One replica: a loaded session behind ``@serve.batch`` (wrapped by ``deployment``)."""

    def __init__(self, artifact: str, config: DeploymentConfig) -> None:
        import duh

        self.name = config.name
        self.session = duh.load(artifact, threads=config.threads)
        self.batched.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]
        self.batched.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]

    def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
        """Run requests as one engine call and split the answers per request."""
        sizes = [len(next(iter(f.values()))) for f in feeds]
        try:
            joined = {n: np.concatenate([f[n] for f in feeds]) for n in feeds[0]}
            result = self.session.run(joined)
        except (DuhError, ValueError):
            # Requests that cannot share a batch (other sizes, a bad one) are answered one by one.
            return [self._single(f) for f in feeds]
        bounds = np.cumsum([0, *sizes])
        return [
            encode(self.name, {n: a[lo:hi] for n, a in result.items()})
            for lo, hi in itertools.pairwise(bounds)
        ]

    def _single(self, feed: dict[str, np.ndarray]) -> Any:
        try:
            return encode(self.name, self.session.run(feed))
        except DuhError as exc:
            return {"error": str(exc)}

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata document."""
        def spec(s: TensorSpec) -> dict[str, Any]:
            shape = [d if isinstance(d, int) else -1 for d in s.shape]
            return {"name": s.name, "datatype": _NAMES.get(s.dtype, "BYTES"), "shape": shape}

        return {"name": self.name, "platform": f"duh_{self.session.engine_name}",
                "inputs": [spec(s) for s in self.session.inputs],
                "outputs": [spec(s) for s in self.session.outputs]}


def deployment(artifact: str | Path, config: DeploymentConfig) -> Any:
    """A Ray Serve application serving ``artifact`` (bind-ready: pass it to ``serve.run``)."""
    try:
        from ray import serve
        from starlette.requests import Request
        from starlette.responses import JSONResponse
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "ray", "ray", "Ray Serve deployments") from None
    path = Path(artifact)
    if not path.exists():
        raise ConfigError(f"artifact {str(path)!r} does not exist")
    options = dict(config.ray_actor_options) or actor_options(path)

    class DuhDeployment(_Replica):
        @serve.batch
        async def batched(self, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
            return self.run_batch(feeds)

        async def __call__(self, request: Request) -> JSONResponse:
            route = request.url.path.rstrip("/")
            if route in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{self.name}/ready"):
                return JSONResponse({})
            if route == f"/v2/models/{self.name}" and request.method == "GET":
                return JSONResponse(self.metadata())
            if route != f"/v2/models/{self.name}/infer" or request.method != "POST":
                return JSONResponse({"error": f"no route {request.method} {route}"}, 404)
            try:
                feed = decode(await request.json(), self.session.inputs)
            except (ConfigError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, 400)
            answer = await self.batched(feed)
            if "error" in answer:
                return JSONResponse(answer, 400)
            # Which replica answered (v2 allows response parameters): for logs and tests.
            replica = serve.get_replica_context().replica_id.unique_id
            return JSONResponse({**answer, "parameters": {"replica": replica}})

    kwargs: dict[str, Any] = {"name": config.name, "ray_actor_options": options}
    if config.autoscaling_config is not None:
        kwargs["autoscaling_config"] = dict(config.autoscaling_config)
    else:
        kwargs["num_replicas"] = config.num_replicas
    return serve.deployment(**kwargs)(DuhDeployment).bind(str(path.resolve()), config)
