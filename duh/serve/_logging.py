"""Structured access logs: one JSON line per request on the ``duh.serve.access`` logger.

Off by default (formatting a line per request costs throughput); ``duh serve --access-log``
turns it on. Infer handlers leave the model, version and failure reason on the request.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

__all__ = ["ACCESS_LOGGER", "JsonAccessLogger", "access_record"]

ACCESS_LOGGER = "duh.serve.access"
# Key under which handlers store what the log line should add (model, version, error reason).
RECORD_KEY = "duh.access"


def access_record(
    method: str, path: str, status: int, seconds: float, remote: str | None, extra: dict[str, Any]
) -> str:
    """One access-log line as compact JSON."""
    record = {
        "ts": round(time.time(), 6),
        "remote": remote,
        "method": method,
        "path": path,
        "status": status,
        "ms": round(seconds * 1000, 3),
        **extra,
    }
    return json.dumps(record, separators=(",", ":"))


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook writing ``access_record`` lines at INFO."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write one line for a finished request."""
        extra = request.get(RECORD_KEY) or {}
        self.logger.info(
            access_record(request.method, request.path, response.status, time, request.remote,
                          extra)
        )

    @property
    def enabled(self) -> bool:
        """Log only when the logger would emit INFO."""
        return self.logger.isEnabledFor(logging.INFO)
