"""``duh ray serve``: serve an artifact on Ray Serve (replicas, autoscaling), v2 JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from duh.cli._common import Threads, console, handle_errors
from duh.errors import ConfigError

__all__ = ["app"]

app = typer.Typer(help="Run artifacts on Ray (duh[ray]).", no_args_is_help=True)


@app.command("serve")
@handle_errors
def ray_serve(
    artifact: Path = typer.Argument(..., help="the artifact (NAME.duh) or .onnx model to serve"),
    name: str | None = typer.Option(None, "--name", help="model name (default: the file's stem)"),
    replicas: int = typer.Option(1, "--replicas", help="Ray Serve replicas"),
    autoscaling: str | None = typer.Option(
        None, "--autoscaling", help='Ray Serve autoscaling_config as JSON, e.g. '
        '\'{"min_replicas": 1, "max_replicas": 4}\' (instead of --replicas)',
    ),
    num_cpus: float | None = typer.Option(None, "--num-cpus", help="CPUs per replica (default 1)"),
    max_batch_size: int = typer.Option(32, "--max-batch-size", help="rows per engine call"),
    threads: Threads = None,
    host: str = typer.Option("127.0.0.1", "--host", help="address of Ray Serve's HTTP proxy"),
    port: int = typer.Option(8000, "--port", help="port of Ray Serve's HTTP proxy"),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (default: start a local Ray)"
    ),
) -> None:
    """Serve an artifact on Ray Serve: an engine per replica, @serve.batch, v2 JSON."""
    from duh.integrations.ray import DeploymentConfig, actor_options, deployment, serve_forever

    scaling = None
    if autoscaling:
        try:
            scaling = json.loads(autoscaling)
        except ValueError as exc:
            raise ConfigError(f"--autoscaling is not JSON ({exc})") from None
    model = name or artifact.name.split(".")[0]
    config = DeploymentConfig(
        name=model, num_replicas=replicas, autoscaling_config=scaling,
        ray_actor_options=actor_options(artifact, num_cpus) if artifact.exists() else {},
        max_batch_size=max_batch_size, threads=threads,
    )
    app_ = deployment(artifact, config)
    console.print(f"serving {model} on http://{host}:{port} (Ray Serve)", soft_wrap=True)
    try:
        serve_forever(app_, host=host, port=port, address=address)
    except KeyboardInterrupt:
        console.print("stopped")
