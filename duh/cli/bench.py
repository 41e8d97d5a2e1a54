"""``duh bench``: measure artifacts, ONNX models or a running server, side by side.

The options and the settings they make are in ``_bench_options``, the tables in ``_bench_render``;
this command parses, calls ``duh.bench.bench`` (or ``bench_url``), and renders.
"""

from __future__ import annotations

import json

import typer

from duh.cli._bench_options import (
    Batch,
    BenchOptions,
    Concurrency,
    Data,
    FailIf,
    Feeds,
    FindPeak,
    JsonFile,
    LatencyBound,
    MaxWindows,
    MinWindows,
    Model,
    ModelVersion,
    NoMemory,
    Paths,
    Plot,
    Profile,
    ProfileRuns,
    Qps,
    Scenario,
    Seed,
    Stability,
    Streams,
    Top,
    Url,
    WarmupOpt,
    Window,
    WireProtocol,
    Workers,
)
from duh.cli._bench_render import (
    progress_bar,
    render_gate_failures,
    render_gates,
    render_report,
)
from duh.cli._common import EngineOptions, Shapes, Threads, console, handle_errors, print_json

__all__ = ["bench"]


@handle_errors
def bench(
    ctx: typer.Context,
    paths: Paths = None,
    scenario: Scenario = None,
    batch: Batch = None,
    streams: Streams = None,
    concurrency: Concurrency = None,
    qps: Qps = None,
    latency_bound: LatencyBound = None,
    find_peak: FindPeak = False,
    workers: Workers = None,
    data: Data = None,
    shape: Shapes = None,
    seed: Seed = 0,
    feeds: Feeds = 1,
    warmup: WarmupOpt = "0.5s",
    window: Window = 1.0,
    min_windows: MinWindows = 3,
    max_windows: MaxWindows = 10,
    stability: Stability = 5.0,
    threads: Threads = None,
    option: EngineOptions = None,
    profile: Profile = False,
    top: Top = 15,
    profile_runs: ProfileRuns = 100,
    no_memory: NoMemory = False,
    url: Url = None,
    model: Model = None,
    model_version: ModelVersion = None,
    protocol: WireProtocol = "binary",
    json_file: JsonFile = None,
    plot: Plot = None,
    fail_if: FailIf = None,
) -> None:
    """Measure artifacts, ONNX models or a served model: latency percentiles, throughput, memory."""
    from duh.bench import GATE_EXIT_CODE, bench_url, evaluate_gates, plot_report
    from duh.bench import bench as run_bench

    # The parameters above declare the options; typer hands all of them over in ctx.params.
    options = BenchOptions(**ctx.params)
    plan = options.plan()
    with progress_bar() as progress:
        if plan.url is not None:
            report = bench_url(plan.url, plan.models, plan.settings, version=plan.model_version,
                               binary=plan.binary, progress=progress)
        else:
            report = run_bench(plan.paths, plan.settings, progress=progress)
    results = evaluate_gates(report, list(plan.gates))
    document = {**report.to_json(), "gates": [r.to_json() for r in results]}
    if options.json_to_stdout:
        print_json(document)
    else:
        render_report(report, top)
        render_gates(results)
        if json_file is not None:
            json_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            console.print(f"wrote {json_file}")
    if plot is not None:
        written = plot_report(report, plot)
        if not options.json_to_stdout:
            console.print(f"wrote {written}")
    render_gate_failures(results)
    if any(not r.passed for r in results):
        raise typer.Exit(GATE_EXIT_CODE)
