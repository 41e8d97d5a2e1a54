"""``inference.GRPCInferenceService`` (KServe v2 / Triton gRPC) on grpc.aio, beside the HTTP app.

The message classes are the ones the ``tritonclient[grpc]`` package ships (generated from
Triton's grpc_service.proto, a superset of the Open Inference Protocol's), so a plain
``pip install 'duh[serve]'`` brings working stubs and the wire format matches tritonclient's.
Requests share the HTTP side's batcher, queue limits, metrics and drain.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

import duh
from duh.errors import MissingDependencyError
from duh.serve._codec import (
    DATATYPES,
    InferRequest,
    RequestedOutput,
    datatype_of,
    tensor_from_raw,
    tensor_to_raw,
)
from duh.serve._errors import RequestError, ServeError, UnavailableError
from duh.serve._extras import Extras
from duh.serve._frontend import Frontend
from duh.serve._http import EXTENSIONS
from duh.serve._metrics import Metrics

__all__ = ["SERVICE", "start_grpc"]

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
# datatype -> the InferTensorContents field that carries it when not sent as raw bytes
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _protos() -> tuple[Any, Any]:
    try:
        import grpc  # noqa: F401
        from tritonclient.grpc import model_config_pb2, service_pb2
    except ImportError as exc:
        raise MissingDependencyError(
            exc.name or "tritonclient", "serve", "the gRPC endpoint"
        ) from None
    return service_pb2, model_config_pb2


def _status(exc: ServeError) -> Any:
    import grpc

    if exc.reason == "timeout":  # the request's timeout or the call's deadline passed
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        401: grpc.StatusCode.UNAUTHENTICATED,
        403: grpc.StatusCode.PERMISSION_DENIED,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
        429: grpc.StatusCode.RESOURCE_EXHAUSTED,
        503: grpc.StatusCode.UNAVAILABLE,
    }.get(exc.status, grpc.StatusCode.INTERNAL)


def _parameter(value: Any) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return None if kind is None else getattr(value, kind)


def _input_array(tensor: Any, raw: bytes | None) -> np.ndarray:
    name, datatype, shape = tensor.name, tensor.datatype, tuple(int(d) for d in tensor.shape)
    where = f"input {name!r}"
    if datatype not in DATATYPES:
        raise RequestError(
            f"{where} has datatype {datatype!r}, expected one of {', '.join(DATATYPES)}"
        )
    if any(d < 0 for d in shape):
        raise RequestError(f"{where} has shape {list(shape)}; dimensions must be >= 0")
    if raw is not None:
        return tensor_from_raw(name, datatype, shape, raw)
    field = _CONTENTS.get(datatype)
    if field is None:
        raise RequestError(f"{where} is {datatype}, which must be sent in raw_input_contents")
    values = list(getattr(tensor.contents, field))
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(values) != count:
        raise RequestError(
            f"{where} has {len(values)} elements but shape {list(shape)} needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu" and values:
        info = np.iinfo(dtype)
        if min(values) < info.min or max(values) > info.max:
            raise RequestError(f"{where} has values outside the {datatype} range")
    return np.array(values, dtype=dtype).reshape(shape)


def decode_grpc_request(message: Any) -> InferRequest:
    """An InferRequest from a ModelInferRequest (raw_input_contents or typed contents)."""
    raws = list(message.raw_input_contents)
    if raws and len(raws) != len(message.inputs):
        raise RequestError(
            f"raw_input_contents has {len(raws)} entries for {len(message.inputs)} inputs; "
            "send one per input, in input order"
        )
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for i, tensor in enumerate(message.inputs):
        if tensor.name in inputs:
            raise RequestError(f"input {tensor.name!r} is given twice")
        inputs[tensor.name] = _input_array(tensor, raws[i] if raws else None)
        datatypes[tensor.name] = tensor.datatype
    if not inputs:
        raise RequestError("request has no inputs")
    params = {k: _parameter(v) for k, v in message.parameters.items()}
    timeout = params.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0
    ):
        raise RequestError(
            f"parameter 'timeout' is {timeout!r}, expected microseconds (an int >= 0)"
        )
    outputs = tuple(RequestedOutput(o.name, True) for o in message.outputs) or None
    return InferRequest(inputs, datatypes, message.id or None, outputs, True, timeout or None)


class _Service:
    def __init__(self, frontend: Frontend, pb: Any, config_pb: Any,
                 extras: Extras | None = None) -> None:
        self.frontend = frontend
        self.extras = extras
        self.repository = frontend.repository
        self.pb = pb
        self.config_pb = config_pb

    async def server_live(self, request: Any, context: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        return self.pb.ServerReadyResponse(ready=self.frontend.ready)

    async def model_ready(self, request: Any, context: Any) -> Any:
        try:
            self.repository.route(request.name, request.version or None)
        except ServeError:
            return self.pb.ModelReadyResponse(ready=False)
        return self.pb.ModelReadyResponse(ready=not self.frontend.draining)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        return self.pb.ServerMetadataResponse(name="duh", version=duh.__version__,
                                              extensions=EXTENSIONS)

    async def model_metadata(self, request: Any, context: Any) -> Any:
        version = self.repository.route(request.name, request.version or None)[0]
        meta = version.metadata_json(self.repository.versions(version.name))
        tensor = self.pb.ModelMetadataResponse.TensorMetadata
        return self.pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def model_config(self, request: Any, context: Any) -> Any:
        from google.protobuf import json_format

        version = self.repository.route(request.name, request.version or None)[0]
        config = json_format.ParseDict(version.config_json(), self.config_pb.ModelConfig(),
                                       ignore_unknown_fields=True)
        return self.pb.ModelConfigResponse(config=config)

    async def model_statistics(self, request: Any, context: Any) -> Any:
        from google.protobuf import json_format

        if request.name:
            self.repository.route(request.name, request.version or None)
            names = [request.version] if request.version else self.repository.versions(request.name)
            versions = [self.repository.route(request.name, v)[0] for v in names]
        else:
            versions = self.repository.all_versions()
        return json_format.ParseDict(
            {"model_stats": [v.metrics.stats_json() for v in versions]},
            self.pb.ModelStatisticsResponse(), ignore_unknown_fields=True,
        )

    async def repository_load(self, request: Any, context: Any) -> Any:
        self.frontend.security.check_admin(_metadata(context))
        await self.repository.load(request.model_name)
        return self.pb.RepositoryModelLoadResponse()

    async def repository_unload(self, request: Any, context: Any) -> Any:
        self.frontend.security.check_admin(_metadata(context))
        await self.repository.unload(request.model_name)
        return self.pb.RepositoryModelUnloadResponse()

    async def model_infer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        metadata = _metadata(context)
        self.frontend.security.check_infer(metadata)
        peer = (context.peer() or "").rpartition(":")[0] or None  # ipv4:HOST:PORT, port dropped
        self.frontend.rate_limit(metadata, peer, request.model_name)
        self.frontend.admit()
        try:
            version, decoded, outputs = await self.frontend.infer(
                request.model_name, request.model_version or None,
                lambda: _with_deadline(decode_grpc_request(request), context), started,
            )
            tensor = self.pb.ModelInferResponse.InferOutputTensor
            response = self.pb.ModelInferResponse(
                model_name=version.name, model_version=version.version, id=decoded.id or "",
                outputs=[tensor(name=n, datatype=datatype_of(a.dtype), shape=list(a.shape))
                         for n, a in outputs.items()],
                raw_output_contents=[tensor_to_raw(a) for a in outputs.values()],
            )
            self.frontend.succeeded(version, started)
            if self.extras is not None:  # drift and sample logging see gRPC requests too
                self.extras.observe(version, decoded, outputs)
            return response
        finally:
            self.frontend.release()


def _metadata(context: Any) -> dict[str, str]:
    """The call's metadata as a dict (keys arrive lower-case, as HTTP/2 sends them)."""
    return {
        str(k): v if isinstance(v, str) else v.decode("utf-8", "replace")
        for k, v in (context.invocation_metadata() or ())
    }


def _with_deadline(request: InferRequest, context: Any) -> InferRequest:
    """The call's gRPC deadline as the request's timeout, so an expired call is never run."""
    remaining = context.time_remaining()
    if remaining is None or request.timeout_us is not None:
        return request
    if remaining <= 0:
        raise UnavailableError("the call's deadline passed before it ran", "timeout", None)
    return dataclasses.replace(request, timeout_us=max(1, int(remaining * 1e6)))


def _guard(handler: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def guarded(request: Any, context: Any) -> Any:
        try:
            return await handler(request, context)
        except ServeError as exc:
            await context.abort(_status(exc), str(exc))

    return guarded


async def start_grpc(frontend: Frontend, metrics: Metrics, host: str, port: int,
                     max_message_bytes: int = 64 << 20,
                     tls: tuple[bytes, bytes] | None = None,
                     extras: Extras | None = None) -> tuple[Any, int]:
    """Start the gRPC server; returns it (``stop(grace)`` to drain) and the port it bound.

    ``tls`` (PEM key, PEM certificate chain) serves over TLS instead of plaintext.
    """
    pb, config_pb = _protos()
    import grpc
    from grpc import aio

    service = _Service(frontend, pb, config_pb, extras)
    methods = {
        "ServerLive": (service.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (service.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (service.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (service.server_metadata, pb.ServerMetadataRequest,
                           pb.ServerMetadataResponse),
        "ModelMetadata": (service.model_metadata, pb.ModelMetadataRequest,
                          pb.ModelMetadataResponse),
        "ModelConfig": (service.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
        "ModelStatistics": (service.model_statistics, pb.ModelStatisticsRequest,
                            pb.ModelStatisticsResponse),
        "RepositoryModelLoad": (service.repository_load, pb.RepositoryModelLoadRequest,
                                pb.RepositoryModelLoadResponse),
        "RepositoryModelUnload": (service.repository_unload, pb.RepositoryModelUnloadRequest,
                                  pb.RepositoryModelUnloadResponse),
        "ModelInfer": (service.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _guard(fn), request_deserializer=req.FromString,
            response_serializer=resp.SerializeToString,
        )
        for name, (fn, req, resp) in methods.items()
    }
    server = aio.server(options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", grpc.ssl_server_credentials([tls]))
    await server.start()
    log.info("gRPC %s on %s:%d", SERVICE, host, bound)
    return server, bound
