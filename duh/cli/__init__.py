"""The ``duh`` command line: one thin module per command over the library API."""

from __future__ import annotations

import typer

from duh.cli import batch as _batch
from duh.cli import bench as _bench
from duh.cli import build as _build
from duh.cli import cache as _cache
from duh.cli import compare as _compare
from duh.cli import doctor as _doctor
from duh.cli import export as _export
from duh.cli import inspect as _inspect
from duh.cli import ray as _ray
from duh.cli import serve as _serve
from duh.cli import targets as _targets
from duh.cli import verify as _verify
from duh.cli._common import Quiet, Verbose, setup_logging

__all__ = ["app", "main"]

app = typer.Typer(
    name="duh",
    help="Compile, check, serve and measure ML models on ONNX Runtime, OpenVINO, TVM and TensorRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: Verbose = 0, quiet: Quiet = False) -> None:
    setup_logging(verbose, quiet)


app.command("build")(_build.build)
app.command("targets")(_targets.targets)
app.command("bench")(_bench.bench)
app.command("inspect")(_inspect.inspect)
app.command("serve")(_serve.serve)
app.command("verify")(_verify.verify)
app.command("keygen")(_verify.keygen)
app.command("batch")(_batch.batch)
app.add_typer(_export.app, name="export")
app.add_typer(_ray.app, name="ray")
app.add_typer(_cache.app, name="cache")
app.command("compare")(_compare.compare)
app.command("doctor")(_doctor.doctor)


def main() -> None:
    """Entry point of the ``duh`` console script."""
    app()
