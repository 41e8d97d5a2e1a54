"""``duh bench``: measure artifacts, ONNX models or a running server, side by side."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from duh.cli._common import (
    console,
    err_console,
    handle_errors,
    parse_shapes,
    print_json,
    show_progress,
)
from duh.errors import ConfigError

__all__ = ["bench", "render_report"]


def _options(values: list[str] | None) -> dict[str, str]:
    out = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {value!r} is not KEY=VALUE")
        out[key.strip()] = val.strip()
    return out


def _floats(text: str | None, what: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a number or a comma-separated list") from None


def _scenarios(
    scenario: str | None, batch: str | None, streams: str | None, qps: str | None, find_peak: bool
) -> tuple[str, ...]:
    if scenario:
        return tuple(s.strip() for s in scenario.split(",") if s.strip())
    implied = [
        name
        for name, given in (
            ("offline", batch),
            ("multi-stream", streams),
            ("server", qps or find_peak),
        )
        if given
    ]
    return tuple(implied) or ("single-stream",)


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.4f}" if value < 1 else f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _rate(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.1f}"


def _speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _subjects_table(report: Any) -> Table:
    table = Table(title="subjects (#1 is the baseline)", title_justify="left")
    for col in ("#", "subject", "engine / target", "threads", "load s", "peak RSS MB"):
        table.add_column(
            col,
            justify="right" if col in ("#", "load s", "peak RSS MB") else "left",
            overflow="fold",
        )
    for i, s in enumerate(report.subjects, start=1):
        table.add_row(
            str(i),
            escape(s.name),
            escape(s.target if s.kind != "url" else f"{s.engine}, {s.target}"),
            "-" if s.kind == "url" else "engine default" if s.threads is None else str(s.threads),
            "-" if s.load_s is None else f"{s.load_s:.2f}",
            "-" if s.peak_rss_mb is None else f"{s.peak_rss_mb:.1f}",
        )
    return table


def _results_tables(report: Any, scenario: str) -> list[Table]:
    """One table per configuration: figures as rows, subjects as columns (fits 80 columns)."""
    from duh.bench import HEADLINES

    headline = HEADLINES[scenario][0]
    configs = list(dict.fromkeys(m.config for m in report.measurements if m.scenario == scenario))
    tables = []
    for config in configs:
        rows = [m for m in report.measurements if m.scenario == scenario and m.config == config]
        table = Table(
            title=escape(f"{scenario} · {config} (headline {headline})"), title_justify="left"
        )
        table.add_column("")
        for i, m in enumerate(rows, start=1):
            table.add_column(escape(f"#{i} {m.subject}"), justify="right", overflow="fold")
        figures: list[tuple[str, str, list[str]]] = [
            ("min_ms", "min ms", [_ms(m.latency.min_ms) for m in rows]),
            ("p50_ms", "p50 ms", [_ms(m.latency.p50_ms) for m in rows]),
            ("p90_ms", "p90 ms", [_ms(m.latency.p90_ms) for m in rows]),
            ("p95_ms", "p95 ms", [_ms(m.latency.p95_ms) for m in rows]),
            ("p99_ms", "p99 ms", [_ms(m.latency.p99_ms) for m in rows]),
            ("max_ms", "max ms", [_ms(m.latency.max_ms) for m in rows]),
            (
                "mean",
                "mean ± std ms",
                [f"{_ms(m.latency.mean_ms)} ± {_ms(m.latency.std_ms)}" for m in rows],
            ),
            ("cv", "cv", [f"{m.latency.cv:.2f}" for m in rows]),
            ("inferences_per_s", "inferences/s", [_rate(m.inferences_per_s) for m in rows]),
            ("samples_per_s", "samples/s", [_rate(m.samples_per_s) for m in rows]),
        ]
        if scenario == "server":
            figures.append(
                ("offered", "offered qps", [_rate(m.offered_qps or math.nan) for m in rows])
            )
            figures.append(
                (
                    "bound",
                    "p99 bound",
                    [
                        "-"
                        if m.bound_met is None
                        else ("[green]held[/]" if m.bound_met else "[red]missed[/]")
                        for m in rows
                    ],
                )
            )
        figures.append(
            (
                "stable",
                "stable",
                [
                    f"yes ±{m.window_spread:.1%}"
                    if m.stable
                    else f"[yellow]NO ±{m.window_spread:.1%}[/]"
                    for m in rows
                ],
            )
        )
        figures.append(("speedup", "speedup vs #1", [_speedup(m.speedup) for m in rows]))
        for key, label, cells in figures:
            if key == headline:
                table.add_row(f"[bold]{label}[/]", *[f"[bold]{c}[/]" for c in cells])
            else:
                table.add_row(label, *cells)
        tables.append(table)
    return tables


def _server_side_table(report: Any) -> Table | None:
    rows = [m for m in report.measurements if m.server]
    if not rows:
        return None
    table = Table(title="server-side means (from the server's statistics)", title_justify="left")
    for col in (
        "subject",
        "scenario",
        "config",
        "requests",
        "queue ms",
        "compute ms",
        "mean batch",
    ):
        table.add_column(
            col, justify="left" if col in ("subject", "scenario", "config") else "right"
        )
    for m in rows:
        s = m.server
        compute = sum(s.get(f"compute_{k}_ms_mean", 0.0) for k in ("input", "infer", "output"))
        table.add_row(
            escape(m.subject),
            m.scenario,
            escape(m.config),
            f"{s.get('requests', 0):.0f}",
            _ms(s.get("queue_ms_mean", math.nan)),
            _ms(compute),
            f"{s['mean_batch']:.2f}" if "mean_batch" in s else "-",
        )
    return table


def render_report(report: Any, top: int) -> None:
    """Print a report as rich tables."""
    settings = report.settings
    threads = settings["threads"] or "engine default"
    options = ", ".join(f"{k}={v}" for k, v in settings["engine_options"].items()) or "none"
    console.print(
        f"[bold]duh bench[/] on {report.host['cpu']} ({report.host['cores']} cores): threads "
        f"{threads}, engine options {options}; warm-up {settings['warmup']}; windows of "
        f"{settings['window_s']:g} s until the last {settings['min_windows']} medians agree "
        f"within ±{settings['stability']:.0%} (at most {settings['max_windows']})",
        soft_wrap=True,
    )
    console.print(_subjects_table(report))
    for scenario in settings["scenarios"]:
        for table in _results_tables(report, scenario):
            console.print(table)
    server = _server_side_table(report)
    if server is not None:
        console.print(server)
    if report.peaks:
        table = Table(title="server: find-peak (Poisson arrivals)", title_justify="left")
        for col in (
            "subject",
            "p99 bound ms",
            "peak qps",
            "p99 at peak",
            "closed-loop qps",
            "trials",
            "speedup",
        ):
            table.add_column(col, justify="left" if col == "subject" else "right")
        for p in report.peaks:
            table.add_row(
                escape(p.subject),
                f"{p.latency_bound_ms:g}",
                _rate(p.peak_qps),
                _ms(p.p99_ms_at_peak if p.p99_ms_at_peak is not None else math.nan),
                _rate(p.capacity_qps),
                str(len(p.trials)),
                _speedup(p.speedup),
            )
        console.print(table)
    for prof in report.profiles:
        table = Table(
            title=f"profile of {escape(prof.subject)}: top {top} of {len(prof.ops)} ops, "
            f"{prof.total_us_per_run:.1f} µs per inference in ops ({prof.source}, "
            f"{prof.runs} runs)",
            title_justify="left",
        )
        for col in ("op", "type", "µs / inference", "share"):
            table.add_column(col, justify="left" if col in ("op", "type") else "right")
        for op in prof.ops[:top]:
            table.add_row(escape(op.name), escape(op.op_type), f"{op.us_per_run:.2f}",
                          f"{op.share:.1%}")
        console.print(table)
        by_type = escape(", ".join(f"{t} {share:.0%}" for t, _us, share in prof.by_type[:8]))
        console.print(f"  by op type: {by_type}")
    for warning in report.warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", soft_wrap=True)


@contextmanager
def _progress() -> Iterator[Any]:
    if not show_progress():
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda text: bar.update(task, description=text)


@handle_errors
def bench(
    paths: list[Path] | None = typer.Argument(
        None, help="artifacts (NAME.duh) and/or .onnx models; the first is the baseline"),
    scenario: str | None = typer.Option(
        None, "--scenario", "-s", help="single-stream, offline, multi-stream, server "
        "(comma-separated); default: implied by --batch, --streams/--concurrency, --qps"),
    batch: str | None = typer.Option(
        None, "--batch", "-b", help="offline batch sizes, e.g. 1,8,32"),
    streams: str | None = typer.Option(
        None, "--streams", help="multi-stream: concurrent streams, N or a sweep 1:8:1"),
    concurrency: str | None = typer.Option(
        None, "--concurrency", help="multi-stream sweep as perf_analyzer: FIRST:LAST:STEP"),
    qps: str | None = typer.Option(
        None, "--qps", help="server: Poisson arrival rate(s), e.g. 100 or 50,100"),
    latency_bound: float | None = typer.Option(
        None, "--latency-bound", help="server: p99 bound in ms to check"),
    find_peak: bool = typer.Option(
        False, "--find-peak", help="server: highest QPS whose p99 holds --latency-bound"),
    workers: int | None = typer.Option(
        None, "--workers", help="server: requests in flight (default 1; 16 with --url)"),
    data: Path | None = typer.Option(
        None, "--data", help="real inputs: .npz (arrays named after inputs), .npy, or a dir"),
    shape: list[str] | None = typer.Option(
        None, "--shape", help="input shape NAME=1x3x224x224; repeat a name for a mix"),
    seed: int = typer.Option(0, "--seed", help="seed of synthetic inputs and arrivals"),
    feeds: int = typer.Option(
        1, "--feeds", help="distinct synthetic inputs cycled through (1, as the engines' tools)"),
    warmup: str = typer.Option(
        "0.5s", "--warmup", help="warm-up per configuration: runs (20) or time (2s, 500ms)"),
    window: float = typer.Option(1.0, "--window", help="measurement window in seconds"),
    min_windows: int = typer.Option(
        3, "--min-windows", help="windows that must agree (their samples make the figures)"),
    max_windows: int = typer.Option(
        10, "--max-windows", help="stop after this many windows even if not stable"),
    stability: float = typer.Option(
        5.0, "--stability", help="stable when the last medians are within this % of their mean"),
    threads: int | None = typer.Option(
        None, "--threads", "-j", help="engine intra-op threads (default: the engine's)"),
    option: list[str] | None = typer.Option(
        None, "--option", help="engine option KEY=VALUE passed to duh.load (repeatable)"),
    profile: bool = typer.Option(
        False, "--profile", help="per-operator times from the engine's profiler"),
    top: int = typer.Option(15, "--top", help="operators shown per profile"),
    profile_runs: int = typer.Option(100, "--profile-runs", help="inferences to profile"),
    no_memory: bool = typer.Option(
        False, "--no-memory", help="skip peak memory (measured in a fresh process per subject)"),
    url: str | None = typer.Option(
        None, "--url", help="a running Open Inference Protocol server, http://HOST:PORT"),
    model: list[str] | None = typer.Option(
        None, "--model", "-m", help="with --url: the served model name (repeatable)"),
    model_version: str | None = typer.Option(
        None, "--model-version", help="with --url: the model version"),
    protocol: str = typer.Option(
        "binary", "--protocol", help="with --url: binary (Triton's tensor extension) or json"),
    json_file: Path | None = typer.Option(
        None, "--json", help="write every figure as JSON to FILE ('-' for stdout)"),
    plot: Path | None = typer.Option(
        None, "--plot", help="write latency and throughput charts to FILE.png"),
    fail_if: list[str] | None = typer.Option(
        None, "--fail-if", help="CI gate such as 'p99_ms>20' or 'speedup<1.5'; exit 10 "
        "when one trips (repeatable)"),
) -> None:
    """Measure artifacts, ONNX models or a served model: latency percentiles, throughput, memory."""
    from duh.bench import (
        GATE_EXIT_CODE,
        BenchSettings,
        Warmup,
        bench_url,
        evaluate_gates,
        group_shapes,
        parse_gate,
        parse_range,
        plot_report,
    )
    from duh.bench import bench as run_bench

    gates = [parse_gate(g) for g in fail_if or []]
    if protocol not in ("binary", "json"):
        raise ConfigError(f"--protocol {protocol!r}: use binary or json")
    if url is None and (model or model_version):
        raise ConfigError("--model and --model-version go with --url")
    if url is not None and paths:
        raise ConfigError("give either artifact paths or --url, not both")
    sweep = concurrency or streams
    shape_items = [next(iter(parse_shapes([v]).items())) for v in shape or []]
    settings = BenchSettings(
        scenarios=_scenarios(scenario, batch, sweep, qps, find_peak),
        batches=parse_range(batch, "--batch") if batch else (1, 8, 32),
        streams=parse_range(sweep, "--concurrency" if concurrency else "--streams")
        if sweep
        else (min(os.cpu_count() or 2, 4),),
        qps=_floats(qps, "--qps"),
        latency_bound_ms=latency_bound,
        find_peak=find_peak,
        server_workers=workers or (16 if url else 1),
        shapes=tuple(group_shapes(shape_items)),
        data=data,
        seed=seed,
        feeds=feeds,
        warmup=Warmup.parse(warmup),
        window_s=window,
        min_windows=min_windows,
        max_windows=max_windows,
        stability=stability / 100,
        threads=threads,
        engine_options=_options(option),
        memory=not no_memory,
        profile=profile,
        profile_runs=profile_runs,
        top=top,
    )
    with _progress() as progress:
        if url is not None:
            report = bench_url(
                url,
                model or [],
                settings,
                version=model_version,
                binary=protocol == "binary",
                progress=progress,
            )
        else:
            report = run_bench(paths or [], settings, progress=progress)
    results = evaluate_gates(report, gates)
    document = {**report.to_json(), "gates": [r.to_json() for r in results]}
    to_stdout = json_file is not None and str(json_file) == "-"
    if to_stdout:
        print_json(document)
    else:
        render_report(report, top)
        for r in results:
            mark = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
            text = escape(repr(r.gate.text))
            console.print(f"gate {text}: {mark} ({r.checked} figure(s) checked)")
    if json_file is not None and not to_stdout:
        json_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_file}")
    if plot is not None:
        written = plot_report(report, plot)
        if not to_stdout:
            console.print(f"wrote {written}")
    failed = [r for r in results if not r.passed]
    for r in failed:
        for failure in r.failures:
            text = f"{escape(repr(r.gate.text))}: {escape(failure)}"
            err_console.print(f"[bold red]gate failed:[/] {text}", soft_wrap=True)
    if failed:
        raise typer.Exit(GATE_EXIT_CODE)
