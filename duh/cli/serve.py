"""``duh serve``: serve artifacts over the Open Inference Protocol (HTTP, optionally gRPC)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from duh.cli._common import (
    EngineOptions,
    JsonFlag,
    Threads,
    console,
    handle_errors,
    parse_key_values,
)
from duh.errors import ConfigError, MissingDependencyError
from duh.serve import BatchConfig

__all__ = ["serve"]

# Batching options take their defaults and help from BatchConfig, where they are stated once.
_BATCH = {f.name: f for f in dataclasses.fields(BatchConfig)}


def _batch_option(name: str) -> Any:
    """A typer option ``--NAME`` (dashes for underscores) described by BatchConfig's field."""
    return typer.Option(f"--{name.replace('_', '-')}", help=_BATCH[name].metadata["help"])


def _batch_default(name: str) -> Any:
    return _BATCH[name].default


MaxBatchSize = Annotated[int, _batch_option("max_batch_size")]
MaxQueueDelayMs = Annotated[float, _batch_option("max_queue_delay_ms")]
PreferredBatchSizes = Annotated[
    str | None,
    typer.Option(
        "--preferred-batch-sizes",
        help=f"{_BATCH['preferred_batch_sizes'].metadata['help']}, e.g. 8,16,32",
    ),
]
MaxQueueSize = Annotated[int, _batch_option("max_queue_size")]
Instances = Annotated[int, _batch_option("instances")]


def _sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--preferred-batch-sizes {text!r} is not a comma-separated list of ints"
        ) from None
    if any(s < 1 for s in sizes):
        raise ConfigError(f"--preferred-batch-sizes {text!r}: sizes must be at least 1")
    return sizes


def _json_line(event: dict[str, Any]) -> None:
    """One JSON line on stdout (--json: startup and shutdown as events, like --access-log)."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _access_log_handler() -> None:
    logger = logging.getLogger("duh.serve.access")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


@handle_errors
def serve(
    artifacts: list[str] | None = typer.Argument(
        None, help="artifacts to serve: PATH, NAME=PATH or NAME:VERSION=PATH"
    ),
    repository: Path | None = typer.Option(
        None, "--repository", "-r",
        help="model repository DIR/<model>/<version>/ (highest version is the default)",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    # PORT is what Knative (KServe's serverless mode) and similar platforms set; DUH_HTTP_PORT and
    # GRPC_PORT are what `duh export kserve`'s runtime sets.
    port: int = typer.Option(
        8000, "--port", envvar=["PORT", "DUH_HTTP_PORT"], help="HTTP port (0: any free port)"
    ),
    grpc_port: int | None = typer.Option(
        None, "--grpc-port", envvar="GRPC_PORT",
        help="also serve gRPC (inference.GRPCInferenceService) on this port",
    ),
    max_batch_size: MaxBatchSize = _batch_default("max_batch_size"),
    max_queue_delay_ms: MaxQueueDelayMs = _batch_default("max_queue_delay_ms"),
    preferred_batch_sizes: PreferredBatchSizes = None,
    max_queue_size: MaxQueueSize = _batch_default("max_queue_size"),
    instances: Instances = _batch_default("instances"),
    threads: Threads = None,
    engine_option: EngineOptions = None,
    split: list[str] | None = typer.Option(
        None, "--split", help="weighted traffic split, e.g. m:1=90,2=10 (repeatable)"
    ),
    shadow: list[str] | None = typer.Option(
        None, "--shadow", help="mirror requests to a version, e.g. m:2 (answers discarded)"
    ),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="largest request body in MiB"),
    drain_timeout: float = typer.Option(
        30.0, "--drain-timeout", help="seconds shutdown may take to finish accepted requests"
    ),
    access_log: bool = typer.Option(
        False, "--access-log", help="one JSON line per request on stdout"
    ),
    job_ttl_s: float = typer.Option(
        600.0, "--job-ttl-s", help="seconds an async job's result is kept after it finishes"
    ),
    max_jobs: int = typer.Option(
        1000, "--max-jobs", help="async jobs held at most (queued, running, finished): 503 beyond"
    ),
    allow_webhook_hosts: str | None = typer.Option(
        None, "--allow-webhook-hosts",
        help="comma-separated hosts job webhooks may go to (default: loopback addresses only)",
    ),
    drift_window: int = typer.Option(
        1024, "--drift-window",
        help="rows of live inputs a drift score covers (0: no drift monitoring)",
    ),
    drift_alert: float | None = typer.Option(
        None, "--drift-alert",
        help="log a warning (once per window) when an input's drift PSI passes this, e.g. 0.2",
    ),
    log_samples: float = typer.Option(
        0.0, "--log-samples",
        help="share of answered requests logged with their answers to JSONL, e.g. 0.01",
    ),
    log_samples_file: Path = typer.Option(
        Path("duh-samples.jsonl"), "--log-samples-file", help="the JSONL file of --log-samples"
    ),
    log_samples_max_mb: float = typer.Option(
        64.0, "--log-samples-max-mb", help="the samples file rotates to FILE.1 beyond this size"
    ),
    model_control: str = typer.Option(
        "none", "--model-control",
        help="none: the repository load/unload endpoints are off; explicit: they are on",
    ),
    admin_key: str | None = typer.Option(
        None, "--admin-key", envvar="DUH_ADMIN_KEY",
        help="key that load/unload need, as the admin-key header / gRPC metadata "
        "(with --model-control explicit; $DUH_ADMIN_KEY keeps it out of ps)",
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="DUH_API_KEY",
        help="key every inference request needs: 'authorization: Bearer KEY' ($DUH_API_KEY)",
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="PEM certificate (chain): serve HTTPS, and gRPC over TLS"
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert"),
    max_elements: int = typer.Option(
        1 << 27, "--max-elements", help="most elements one input tensor of a request may have"
    ),
    max_string_bytes: int = typer.Option(
        1 << 20, "--max-string-bytes", help="longest BYTES element of a request, in bytes"
    ),
    require_signed: Path | None = typer.Option(
        None, "--require-signed",
        help="Ed25519 public key: serve only artifacts whose signature it verifies",
    ),
    memory_budget: str | None = typer.Option(
        None, "--memory-budget",
        help="resident memory all models may take (e.g. 8G): models load on first request and "
        "the least recently used idle one unloads when a load would not fit",
    ),
    preload: bool = typer.Option(
        False, "--preload", help="with --memory-budget: load models at start, as many as fit"
    ),
    pin: list[str] | None = typer.Option(
        None, "--pin", help="keep this model resident (loaded at start; repeatable)"
    ),
    cache: list[str] | None = typer.Option(
        None, "--cache",
        help="response cache for a model, NAME:SIZE, e.g. digits:64M (repeatable)",
    ),
    rate_limit: str | None = typer.Option(
        None, "--rate-limit",
        help="per-client token bucket (API key, else address), e.g. 100/s,burst=200: 429 beyond",
    ),
    max_concurrency: list[str] | None = typer.Option(
        None, "--max-concurrency",
        help="most requests in flight for a model, NAME:N, e.g. digits:4: 429 beyond (repeatable)",
    ),
    watchdog_s: float | None = typer.Option(
        None, "--watchdog-s",
        help="an engine call running longer fails (500) and its instance is replaced; an "
        "instance whose engine call raises is replaced too",
    ),
    as_json: JsonFlag = False,
) -> None:
    """Serve artifacts with dynamic batching over the Open Inference Protocol (as Triton does)."""
    try:
        from duh import serve as duh_serve

        serve_forever = duh_serve.serve
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "aiohttp", "serve", "duh serve") from None

    if not artifacts and repository is None:
        raise ConfigError("nothing to serve: name artifacts or pass --repository DIR")
    routing: dict[str, Any] = {}
    splits = dict(duh_serve.parse_split(s) for s in split or [])
    shadows = dict(duh_serve.parse_shadow(s) for s in shadow or [])
    for name in set(splits) | set(shadows):
        routing[name] = duh_serve.Routing(splits.get(name, ()), shadows.get(name))
    options = duh_serve.LoadOptions(
        batch=BatchConfig(
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            preferred_batch_sizes=_sizes(preferred_batch_sizes),
            max_queue_size=max_queue_size,
            instances=instances,
        ),
        threads=threads,
        engine_options=parse_key_values(engine_option, "--option/--engine-option"),
        public_key=require_signed,
        response_cache=dict(duh_serve.parse_cache(c) for c in cache or []),
        watchdog_s=watchdog_s,
    )
    memory = duh_serve.MemoryConfig(
        budget_bytes=duh_serve.parse_size(memory_budget) if memory_budget else None,
        preload=preload, pin=tuple(pin or ()),
    )
    limits = duh_serve.Limits(
        rate=duh_serve.parse_rate_limit(rate_limit) if rate_limit else None,
        concurrency=dict(duh_serve.parse_concurrency(c) for c in max_concurrency or []),
    )
    security = duh_serve.Security(
        model_control=model_control, admin_key=admin_key, api_key=api_key,
        max_elements=max_elements, max_string_bytes=max_string_bytes,
    )
    config = duh_serve.ServeConfig(
        host=host, port=port, grpc_port=grpc_port, max_body_bytes=int(max_body_mb * (1 << 20)),
        drain_timeout_s=drain_timeout, access_log=access_log, security=security,
        tls_cert=tls_cert, tls_key=tls_key,
    )
    extras = duh_serve.ExtrasConfig(
        jobs=duh_serve.JobConfig(
            ttl_s=job_ttl_s, max_jobs=max_jobs,
            webhook_hosts=tuple(h.strip() for h in (allow_webhook_hosts or "").split(",")
                                if h.strip()),
        ),
        drift=duh_serve.DriftConfig(window=drift_window, alert=drift_alert),
        samples=duh_serve.SampleConfig(
            rate=log_samples, path=log_samples_file,
            max_bytes=int(log_samples_max_mb * (1 << 20)),
        ),
    )
    if access_log:
        _access_log_handler()

    def ready(addresses: Any) -> None:
        if as_json:
            event = {"event": "ready", "http": addresses.http, "grpc": addresses.grpc}
            _json_line({**event, "models": list(addresses.models)})
            return
        grpc = f", grpc {addresses.grpc}" if addresses.grpc else ""
        models = ", ".join(addresses.models)
        console.print(f"serving {models} on {addresses.http}{grpc}", soft_wrap=True)
        sys.stdout.flush()

    request = duh_serve.ServeRequest(
        extras=extras,
        sources=tuple(duh_serve.parse_artifact(a) for a in artifacts or []),
        repository=repository, options=options, config=config, routing=routing,
        memory=memory, limits=limits,
    )
    clean = serve_forever(request, on_ready=ready)
    if as_json:
        _json_line({"event": "stopped", "clean": clean})
    if duh_serve.abandoned_instances():
        # A hung engine call is still running in an abandoned thread: the engine's teardown at
        # interpreter exit would run under it (and abort), so leave without it.
        if not as_json:
            console.print("stopped (an engine call abandoned by --watchdog-s was still running)")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if clean else 1)
    if not clean:
        raise typer.Exit(1)
    if not as_json:
        console.print("stopped: every accepted request was answered")
