"""The errors a request can meet, each with the HTTP status the protocol gives it."""

from __future__ import annotations

from duh.errors import DuhError, InputError

__all__ = [
    "BodyTooLargeError",
    "ForbiddenError",
    "InternalServeError",
    "ModelNotFoundError",
    "RateLimitedError",
    "RequestError",
    "ServeError",
    "UnauthorizedError",
    "UnavailableError",
]


class ServeError(DuhError):
    """A request failed; ``status`` is the HTTP status and ``reason`` the metrics label."""

    status: int = 500
    reason: str = "internal"


class RequestError(ServeError, InputError):
    """The request is malformed or does not fit the model (HTTP 400)."""

    status = 400
    reason = "bad_request"


class BodyTooLargeError(RequestError):
    """The request body is larger than the server accepts (HTTP 413)."""

    status = 413
    reason = "too_large"


class ModelNotFoundError(RequestError):
    """No such model or version is loaded (HTTP 404)."""

    status = 404
    reason = "not_found"


class UnavailableError(ServeError):
    """The server cannot take the request now: queue full, timed out, draining (HTTP 503)."""

    status = 503
    reason = "unavailable"

    def __init__(self, message: str, reason: str = "unavailable", retry_after_s: int | None = 1):
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class InternalServeError(ServeError):
    """The engine failed on a request that passed every check (HTTP 500)."""

    status = 500
    reason = "internal"


class UnauthorizedError(ServeError):
    """The request lacks the key this endpoint needs (HTTP 401)."""

    status = 401
    reason = "unauthorized"


class ForbiddenError(ServeError):
    """The endpoint is turned off on this server (HTTP 403)."""

    status = 403
    reason = "forbidden"


class RateLimitedError(UnavailableError):
    """The client or the model is over its rate or concurrency limit (HTTP 429)."""

    status = 429
    reason = "rate_limited"
