"""The Open Inference Protocol over HTTP (aiohttp), with Triton's binary tensor extension.

Routes: ``/v2``, ``/v2/health/{live,ready}``, ``/v2/models/{m}[/versions/{v}]`` with ``/ready``,
``/infer``, ``/config`` and ``/stats``, the repository extension (``/v2/repository/index``,
``/v2/repository/models/{m}/load|unload``), async ``/jobs`` and Prometheus ``/metrics``.
Errors are ``{"error": "..."}`` with 400, 404, 413 or 503 (with Retry-After when worth retrying).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

import duh
from duh.serve._codec import decode_http_request, encode_http_response, json_dumps
from duh.serve._errors import BodyTooLargeError, ServeError, UnavailableError
from duh.serve._extras import Extras
from duh.serve._frontend import Frontend
from duh.serve._logging import RECORD_KEY
from duh.serve._metrics import Metrics

__all__ = ["EXTENSIONS", "build_app"]

EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository", "model_configuration"]
_JSON = "application/json"
_HEADER = "Inference-Header-Content-Length"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json_dumps(data), status=status, content_type=_JSON)


def error_response(exc: ServeError, draining: bool = False) -> web.Response:
    """``{"error": message}`` with the status of ``exc`` (and Retry-After for a full queue)."""
    response = _json({"error": str(exc)}, exc.status)
    if isinstance(exc, UnavailableError) and exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    if draining:
        response.headers["Connection"] = "close"
    return response


class _Routes:
    def __init__(
        self, frontend: Frontend, metrics: Metrics, max_body_bytes: int, extras: Extras | None
    ) -> None:
        self.frontend = frontend
        self.extras = extras
        self.repository = frontend.repository
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def infer(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        frontend = self.frontend
        match = request.match_info
        try:
            frontend.security.check_infer(request.headers)
            frontend.rate_limit(request.headers, request.remote, match["model"])
        except ServeError as exc:
            return error_response(exc)
        try:
            frontend.admit()
        except ServeError as exc:
            return error_response(exc, draining=True)
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise BodyTooLargeError(
                    f"request body is larger than the server's limit of {self.max_body_bytes} "
                    "bytes (--max-body-mb); send fewer rows per request"
                ) from None
            header = request.headers.get(_HEADER)
            version, decoded, outputs = await frontend.infer(
                match["model"], match.get("version"),
                lambda: decode_http_request(body, header), started,
            )
            wanted = {o.name: o.binary for o in decoded.outputs or ()}
            binary = [
                decoded.binary_output if wanted.get(n) is None else bool(wanted[n])
                for n in outputs
            ]
            payload, json_size = encode_http_response(
                version.name, version.version, decoded.id, outputs, binary
            )
            frontend.succeeded(version, started)
            if self.extras is not None:
                self.extras.observe(version, decoded, outputs)
        except ServeError as exc:
            request[RECORD_KEY] = {"model": match["model"], "error": exc.reason}
            return error_response(exc, frontend.draining)
        finally:
            frontend.release()
        request[RECORD_KEY] = {"model": version.name, "version": version.version}
        if json_size is None:
            return web.Response(body=payload, content_type=_JSON)
        return web.Response(body=payload, content_type="application/octet-stream",
                            headers={_HEADER: str(json_size)})

    async def server_metadata(self, request: web.Request) -> web.StreamResponse:
        return _json({"name": "duh", "version": duh.__version__, "extensions": EXTENSIONS})

    async def live(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.StreamResponse:
        if self.frontend.ready:
            return web.Response(status=200)
        reason = "the server is shutting down" if self.frontend.draining else "no model loaded"
        return _json({"error": f"not ready: {reason}"}, 503)

    def _version(self, request: web.Request) -> Any:
        match = request.match_info
        return self.repository.route(match["model"], match.get("version"))[0]

    async def model_metadata(self, request: web.Request) -> web.StreamResponse:
        version = self._version(request)
        return _json(version.metadata_json(self.repository.versions(version.name)))

    async def model_ready(self, request: web.Request) -> web.StreamResponse:
        self._version(request)
        if self.frontend.draining:
            return _json({"error": "the server is shutting down"}, 503)
        return web.Response(status=200)

    async def model_config(self, request: web.Request) -> web.StreamResponse:
        return _json(self._version(request).config_json())

    async def model_stats(self, request: web.Request) -> web.StreamResponse:
        match = request.match_info
        name, version = match.get("model"), match.get("version")
        if name is None:
            versions = self.repository.all_versions()
        elif version is not None:
            versions = [self.repository.route(name, version)[0]]
        else:
            self.repository.route(name, None)
            versions = [self.repository.route(name, v)[0] for v in self.repository.versions(name)]
        stats = [v.metrics.stats_json() for v in versions]
        if self.extras is not None:
            for entry in stats:
                drift = self.extras.stats(entry["name"], entry["version"])
                if drift is not None:
                    entry["drift"] = drift
        return _json({"model_stats": stats})

    async def repository_index(self, request: web.Request) -> web.StreamResponse:
        return _json(self.repository.index())

    async def repository_load(self, request: web.Request) -> web.StreamResponse:
        self.frontend.security.check_admin(request.headers)
        # Shielded: a client that hangs up cancels its handler, never a load half done.
        await asyncio.shield(self.repository.load(request.match_info["model"]))
        return _json({})

    async def repository_unload(self, request: web.Request) -> web.StreamResponse:
        self.frontend.security.check_admin(request.headers)
        await asyncio.shield(self.repository.unload(request.match_info["model"]))
        return _json({})

    async def prometheus(self, request: web.Request) -> web.StreamResponse:
        if self.extras is not None:
            self.extras.drift.flush()
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        return _json({"error": f"no endpoint {request.method} {request.path}; see /v2"}, 404)


def _guard(handler: Handler) -> Handler:
    """Turn a ``ServeError`` raised by a non-infer handler into its error response."""
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ServeError as exc:
            return error_response(exc)

    return guarded


def build_app(
    frontend: Frontend, metrics: Metrics, max_body_bytes: int, extras: Extras | None = None
) -> web.Application:
    """The aiohttp application serving ``frontend`` (and ``extras``' jobs, drift, samples)."""
    routes = _Routes(frontend, metrics, max_body_bytes, extras)
    app = web.Application(client_max_size=max_body_bytes)
    add = app.router.add_route
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    add("POST", f"{model}/infer", routes.infer)
    add("POST", f"{versioned}/infer", routes.infer)
    add("GET", "/v2", _guard(routes.server_metadata))
    add("GET", "/v2/health/live", _guard(routes.live))
    add("GET", "/v2/health/ready", _guard(routes.ready))
    add("GET", "/v2/models/stats", _guard(routes.model_stats))
    for prefix in (model, versioned):
        add("GET", prefix, _guard(routes.model_metadata))
        add("GET", f"{prefix}/ready", _guard(routes.model_ready))
        add("GET", f"{prefix}/config", _guard(routes.model_config))
        add("GET", f"{prefix}/stats", _guard(routes.model_stats))
        if extras is not None:
            add("POST", f"{prefix}/jobs", _guard(extras.jobs.submit))
            add("GET", f"{prefix}/jobs/{{job}}", _guard(extras.jobs.status))
    add("POST", "/v2/repository/index", _guard(routes.repository_index))
    add("GET", "/v2/repository/index", _guard(routes.repository_index))
    add("POST", "/v2/repository/models/{model}/load", _guard(routes.repository_load))
    add("POST", "/v2/repository/models/{model}/unload", _guard(routes.repository_unload))
    add("GET", "/metrics", routes.prometheus)
    add("*", "/{tail:.*}", routes.not_found)
    return app
