"""Who may do what on a server: model control, keys, request limits, TLS.

Like Triton's ``--model-control-mode`` and ``--http-restricted-api``: the repository's load and
unload endpoints (the only ones that change the server's state) are off unless model control is
``explicit``, and then may require an admin key, sent as the ``admin-key`` HTTP header or gRPC
metadata. An API key, when set, is required on every inference request as ``authorization:
Bearer KEY``. Health, metadata and metrics stay open (load balancers probe them).
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duh.errors import ConfigError
from duh.serve._codec import InferRequest
from duh.serve._errors import ForbiddenError, RequestError, UnauthorizedError

__all__ = ["ADMIN_HEADER", "API_HEADER", "MODEL_CONTROL_MODES", "Security", "ssl_context"]

ADMIN_HEADER = "admin-key"
API_HEADER = "authorization"
MODEL_CONTROL_MODES = ("none", "explicit")


@dataclass(frozen=True, slots=True)
class Security:
    """The server's access rules and per-request limits."""

    model_control: str = field(
        default="none",
        metadata={"help": "none: the repository's load/unload endpoints are off; explicit: on"},
    )
    admin_key: str | None = field(
        default=None, metadata={"help": "key load/unload need (admin-key header or metadata)"}
    )
    api_key: str | None = field(
        default=None, metadata={"help": "key inference needs (authorization: Bearer KEY)"}
    )
    max_elements: int = field(
        default=1 << 27, metadata={"help": "most elements one input tensor may have"}
    )
    max_string_bytes: int = field(
        default=1 << 20, metadata={"help": "longest BYTES element of an input, in bytes"}
    )

    def __post_init__(self) -> None:
        if self.model_control not in MODEL_CONTROL_MODES:
            raise ConfigError(
                f"--model-control {self.model_control!r}: choose {' or '.join(MODEL_CONTROL_MODES)}"
            )
        if self.admin_key is not None and self.model_control != "explicit":
            raise ConfigError("--admin-key guards load/unload: it needs --model-control explicit")
        for name in ("admin_key", "api_key"):
            key = getattr(self, name)
            if key is not None and len(key) < 16:
                raise ConfigError(f"--{name.replace('_', '-')} is shorter than 16 characters")

    def check_admin(self, headers: Mapping[str, str]) -> None:
        """Refuse a load/unload request unless model control is explicit and the key matches."""
        if self.model_control != "explicit":
            raise ForbiddenError(
                "model control is off on this server (loading and unloading models); start it "
                "with --model-control explicit to allow it"
            )
        if self.admin_key is not None and not _same(headers.get(ADMIN_HEADER), self.admin_key):
            raise UnauthorizedError(
                f"loading and unloading models needs the server's admin key in the "
                f"{ADMIN_HEADER!r} header (gRPC: metadata)"
            )

    def check_infer(self, headers: Mapping[str, str]) -> None:
        """Refuse an inference request without the API key (when the server has one)."""
        if self.api_key is None:
            return
        given = headers.get(API_HEADER) or ""
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not _same(token.strip(), self.api_key):
            raise UnauthorizedError(
                "inference on this server needs its API key: send 'authorization: Bearer KEY'"
            )

    def check_limits(self, request: InferRequest) -> None:
        """Refuse an input with more elements, or a longer string, than the server takes."""
        for name, array in request.inputs.items():
            if array.size > self.max_elements:
                raise RequestError(
                    f"input {name!r} has {array.size} elements, more than this server's limit "
                    f"of {self.max_elements} (--max-elements); send fewer rows per request"
                )
            if array.dtype == object and array.size:
                longest = max(
                    (len(v) for v in np.ravel(array) if isinstance(v, bytes | str)), default=0
                )
                if longest > self.max_string_bytes:
                    raise RequestError(
                        f"input {name!r} holds a string of {longest} bytes, more than this "
                        f"server's limit of {self.max_string_bytes} (--max-string-bytes)"
                    )


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or newer) from PEM certificate chain and key files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot use --tls-cert {str(cert)!r} / --tls-key {str(key)!r}: {exc}; give a PEM "
            "certificate (chain) and its private key"
        ) from None
    return context
