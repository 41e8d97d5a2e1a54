"""``duh targets``: every target name and whether it can be built here."""

from __future__ import annotations

from rich.table import Table

from duh.cli._common import JsonFlag, console, handle_errors, print_json

__all__ = ["targets"]


@handle_errors
def targets(as_json: JsonFlag = False) -> None:
    """List every target with 'available' or the reason it is not."""
    from duh._cuda import cuda_info
    from duh.host import host_info
    from duh.targets import list_targets
    from duh.targets.tvm import speed_note

    host = host_info()
    cuda = cuda_info()
    rows = list_targets(host)
    # A note on an available target's speed here (TVM on a host class where it was measured slow).
    tvm_note = speed_note(host)
    notes = {r.name: tvm_note for r in rows if r.reason is None and r.engines == ("tvm",)}
    if as_json:
        print_json(
            {
                "host": {
                    "cpu": host.cpu_model,
                    "cores": host.cores,
                    "cpu_flags": host.notable_flags,
                    "cuda": [d.name for d in host.cuda],
                    "cuda_detail": cuda.to_json(),
                },
                "targets": [
                    {
                        "name": r.name,
                        "available": r.reason is None,
                        "engines": list(r.engines),
                        "reason": r.reason,
                        "note": notes.get(r.name),
                        "slow": notes.get(r.name) is not None,
                    }
                    for r in rows
                ],
            }
        )
        return
    console.print(
        f"host: {host.cpu_model}, {host.cores} cores; {' '.join(host.notable_flags)}; "
        f"CUDA: {', '.join(f'{d.name} (sm {d.compute_capability})' for d in host.cuda) or 'none'}"
    )
    console.print(
        f"CUDA driver {cuda.driver_version or '-'}, runtime {cuda.cuda_runtime or '-'}, "
        f"TensorRT {cuda.tensorrt or '-'}" + (f"; {cuda.reason}" if cuda.reason else "")
    )
    table = Table()
    table.add_column("target")
    table.add_column("status")
    table.add_column("engines / reason")
    for r in rows:
        if r.reason is None and notes.get(r.name):
            engines = ", ".join(r.engines)
            table.add_row(r.name, "[yellow]available, slow[/]", f"{engines}: {notes[r.name]}")
        elif r.reason is None:
            table.add_row(r.name, "[green]available[/]", ", ".join(r.engines))
        else:
            table.add_row(r.name, "[red]unavailable[/]", r.reason)
    console.print(table)
