"""``duh doctor``: engines and versions, host CPU flags, CUDA, the cache, and what is missing."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from duh.cli._common import JsonFlag, console, handle_errors, print_json

__all__ = ["doctor"]


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@handle_errors
def doctor(as_json: JsonFlag = False) -> None:
    """Show engines and versions, CPU flags, CUDA, the cache, and how to install what is missing."""
    from duh.doctor import diagnose

    report = diagnose()
    if as_json:
        print_json(report.to_json())
        return
    console.print(f"duh {report.duh_version}, Python {report.python}, {escape(report.platform)}")
    table = Table(title="engines and libraries", title_justify="left")
    for col in ("package", "version", "for"):
        table.add_column(col)
    for c in report.components:
        version = (
            f"[green]{escape(c.version)}[/]"
            if c.version
            else f"[red]missing[/]: {escape(c.install)}"
        )
        detail = c.detail.replace("ExecutionProvider", "")
        table.add_row(c.name, version, escape(c.purpose + (f" ({detail})" if detail else "")))
    console.print(table)
    flags = " ".join(
        f"[green]{f.flag}[/]" if f.present else f"[dim]-{f.flag}[/]" for f in report.cpu_features
    )
    console.print(f"CPU: {escape(report.cpu_model)}, {report.cores} cores; {flags}", soft_wrap=True)
    cuda = report.cuda
    devices = (
        ", ".join(f"{d['name']} (sm {d['compute_capability']})" for d in cuda["devices"]) or "none"
    )
    console.print(
        f"CUDA: {escape(devices)}; driver {cuda['driver_version'] or '-'}, runtime "
        f"{cuda['cuda_runtime'] or '-'}, TensorRT {cuda['tensorrt'] or '-'}",
        soft_wrap=True,
    )
    cache = report.cache
    where = "DUH_CACHE_DIR" if cache.source == "DUH_CACHE_DIR" else "default; set DUH_CACHE_DIR"
    console.print(
        f"cache: {escape(cache.path)} ({where}): {_size(cache.bytes)} in {cache.files} files"
        + "".join(f"; {escape(k)} {_size(v)}" for k, v in cache.kinds.items()),
        soft_wrap=True,
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if report.missing:
        console.print(
            "missing: " + "; ".join(f"{c.name} ({escape(c.install)})" for c in report.missing),
            soft_wrap=True,
        )
