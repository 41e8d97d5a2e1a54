"""``duh batch``: offline inference over a folder or table, sharded, resumable, in parallel."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from duh.batch import BatchPlan, BatchRequest, BatchResult, ShardDone, plan_batch, run_batch
from duh.cli._common import (
    EngineOptions,
    JsonFlag,
    console,
    err_console,
    handle_errors,
    parse_key_values,
    print_json,
    show_progress,
)

__all__ = ["batch"]

_FIELDS = {f.name: f for f in dataclasses.fields(BatchRequest)}


def _help(name: str) -> str:
    return str(_FIELDS[name].metadata["help"])


@contextmanager
def _progress(plan: BatchPlan) -> Iterator[Callable[[ShardDone], None] | None]:
    """A bar of samples done with rate and ETA, on a terminal only (quiet in CI logs)."""
    if not show_progress():
        yield None
        return
    columns = (
        TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("batch", total=plan.total, completed=plan.skipped_samples, rate="")

        def advance(done: ShardDone) -> None:
            bar.advance(task, done.count)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:,.0f} samples/s" if speed else "")

        yield advance


def _render(result: BatchResult) -> None:
    skipped = f", {result.shards_skipped} already done" if result.shards_skipped else ""
    console.print(
        f"{result.samples_run} samples in {result.shards_run} shard(s) on {result.workers} "
        f"{result.runner} worker(s) in {result.seconds:.2f} s: "
        f"[bold]{result.samples_per_s:,.1f} samples/s[/]{skipped}"
    )
    console.print(f"outputs: {result.output}/shard-*.npz ({result.shards} shards, "
                  f"{result.samples} samples)", soft_wrap=True)


@handle_errors
def batch(
    artifact: Path = typer.Argument(..., help="the artifact (NAME.duh) or .onnx model to run"),
    input: Path = typer.Option(
        ..., "--input", "-i",
        help=".npz/.npy file or folder, a folder of images, or a .csv/.parquet table",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="output folder (shard-NNNNN.npz and batch.json); resumable"
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help=_help("batch_size"))] = 64,
    shard_size: Annotated[int, typer.Option("--shard-size", help=_help("shard_size"))] = 1024,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help=_help("workers"))] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-j", help=_help("threads"))] = None,
    engine_option: EngineOptions = None,
    preprocess: Annotated[
        str | None, typer.Option("--preprocess", help=_help("preprocess"))
    ] = None,
    ray: bool = typer.Option(False, "--ray", help="run the shards on Ray Data (duh[ray])"),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join (default: a local Ray on this host)"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Run an artifact over a data set in batches; re-running resumes at the first missing shard."""
    request = BatchRequest(
        artifact=artifact, input=input, output=output, batch_size=batch_size,
        shard_size=shard_size, workers=workers, threads=threads,
        engine_options=parse_key_values(engine_option, "--option/--engine-option"),
        preprocess=preprocess,
    )
    plan = plan_batch(request)
    runner: Any = run_batch
    if ray or ray_address:
        from duh.integrations.ray import run_batch_on_ray

        def runner(req: BatchRequest, on_shard: Any, plan: BatchPlan) -> BatchResult:
            return run_batch_on_ray(req, on_shard, plan=plan, address=ray_address)

    try:
        with _progress(plan) as on_shard:
            result = runner(request, on_shard, plan=plan)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: the finished shards are kept; run the same "
                          "command again to resume")
        raise typer.Exit(130) from None
    if as_json:
        print_json(result.to_json())
    else:
        _render(result)
