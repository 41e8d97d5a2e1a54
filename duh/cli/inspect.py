"""``duh inspect``: signature, graph statistics and (for artifacts) the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from duh.cli._common import JsonFlag, console, handle_errors, print_json

__all__ = ["inspect"]


def _shape(spec: dict[str, Any]) -> str:
    # escaped: "[batch, 3, 224, 224]" is rich markup (a style tag) and would print as nothing
    return escape("[" + ", ".join("?" if d is None else str(d) for d in spec["shape"]) + "]")


@handle_errors
def inspect(
    path: Path = typer.Argument(..., help="an .onnx model or a .duh artifact directory"),
    as_json: JsonFlag = False,
) -> None:
    """Show inputs/outputs, opset, op histogram and parameters; for an artifact, its manifest."""
    from duh.compiler.inspect import inspect_path

    info = inspect_path(path)
    if as_json:
        print_json(info)
        return
    console.print(
        f"[bold]{info['kind']}[/] {escape(str(info['path']))}  ({info['size_bytes'] / 1e6:.2f} MB)"
    )
    io = Table(title="signature", title_justify="left")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for spec in info[kind]:
            io.add_row(kind[:-1], escape(spec["name"]), spec["dtype"], _shape(spec))
    console.print(io)
    model = info.get("model")
    if model:
        console.print(
            f"opset {model['opset']} (IR {model['ir_version']}), {model['nodes']} nodes, "
            f"{model['parameters']:,} parameters ({model['parameter_bytes'] / 1e6:.2f} MB)"
            + (f", producer {escape(model['producer'])}" if model["producer"] else "")
        )
        ops = Table(title="ops", title_justify="left")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for op, count in model["ops"].items():
            ops.add_row(escape(op), str(count))
        console.print(ops)
    manifest = info.get("manifest")
    if manifest:
        target = manifest["target"]
        console.print(
            f"target {target.get('requested')!r} → {target.get('resolved')} "
            f"({manifest['engine']['name']} {manifest['engine']['version']}); "
            f"built by duh {manifest['duh_version']} in {manifest['build'].get('seconds')}s"
        )
        checks = manifest["checks"]
        passed, skipped = checks.get("passed"), checks.get("skipped")
        status = "passed" if passed else "skipped" if skipped else "FAILED"
        console.print(
            f"checks: {status}"
            + (
                f" on {checks['samples']} inputs ({checks['input_source']})"
                if checks.get("samples")
                else ""
            )
        )
        for step in manifest["passes"]:
            console.print(
                f"  pass {step['name']}: {step['nodes_before']} → {step['nodes_after']} nodes, "
                f"{step['seconds']}s"
            )
        for note in manifest["build"].get("compile_notes", ()):
            console.print(f"engine: {escape(str(note))}")
        console.print(f"integrity: {info['integrity']}")
        files = Table(title="files", title_justify="left")
        files.add_column("file")
        files.add_column("sha256")
        for name, digest in manifest["files"].items():
            files.add_row(escape(name), digest)
        console.print(files)
        for warning in manifest["warnings"]:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
