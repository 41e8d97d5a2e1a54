"""``duh export``: deployment files for platforms that run artifacts (``duh export kserve``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from duh.cli._common import JsonFlag, console, handle_errors, print_json
from duh.export import KServeRequest, export_kserve

__all__ = ["app"]

app = typer.Typer(help="Write deployment files for KServe.", no_args_is_help=True)

_FIELDS = {f.name: f for f in dataclasses.fields(KServeRequest)}
_DEFAULTS = KServeRequest(Path("."), Path("."))


def _opt(name: str, *flags: str) -> typer.models.OptionInfo:
    return typer.Option(*(flags or (f"--{name.replace('_', '-')}",)),
                        help=str(_FIELDS[name].metadata["help"]))


@app.command("kserve")
@handle_errors
def kserve(
    source: Path = typer.Argument(
        ..., help="an artifact (NAME.duh) or a model repository DIR/<model>/<version>/"
    ),
    output: Path = typer.Option(..., "--output", "-o", help="folder to write (new or empty)"),
    image: Annotated[str, _opt("image")] = _DEFAULTS.image,
    storage_uri: Annotated[str, _opt("storage_uri")] = _DEFAULTS.storage_uri,
    min_replicas: Annotated[int, _opt("min_replicas")] = _DEFAULTS.min_replicas,
    max_replicas: Annotated[int, _opt("max_replicas")] = _DEFAULTS.max_replicas,
    canary_percent: Annotated[int, _opt("canary_percent")] = _DEFAULTS.canary_percent,
    cpu: Annotated[str, _opt("cpu")] = _DEFAULTS.cpu,
    namespace: Annotated[str | None, _opt("namespace")] = None,
    name: Annotated[str | None, _opt("name")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a KServe ServingRuntime, an InferenceService per model and a Dockerfile.

    The runtime is duh serve (Open Inference Protocol v2); a model with two versions gets a
    canary; every file is validated against KServe's schema (duh[kserve]).
    """
    result = export_kserve(KServeRequest(
        source, output, image=image, storage_uri=storage_uri, min_replicas=min_replicas,
        max_replicas=max_replicas, canary_percent=canary_percent, cpu=cpu, namespace=namespace,
        name=name,
    ))
    if as_json:
        print_json({"output": str(result.output), "files": [str(f) for f in result.files]})
        return
    for path in result.files:
        console.print(f"wrote {path}", soft_wrap=True)
    console.print(f"apply with: kubectl apply -f {result.output}/serving-runtime.yaml, then each "
                  "model's .stable.yaml (if any) and .yaml", soft_wrap=True)
