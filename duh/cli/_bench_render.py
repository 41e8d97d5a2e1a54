"""How ``duh bench`` shows a report: rich tables, a progress line, and the gates' verdicts."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from duh.cli._common import console, err_console, show_progress

if TYPE_CHECKING:
    from duh.bench import BenchReport, GateResult
    from duh.bench import Progress as ProgressFn

__all__ = ["progress_bar", "render_gate_failures", "render_gates", "render_report"]


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.4f}" if value < 1 else f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _rate(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.1f}"


def _speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _subjects_table(report: BenchReport) -> Table:
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


def _results_tables(report: BenchReport, scenario: str) -> list[Table]:
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


def _server_side_table(report: BenchReport) -> Table | None:
    rows = [(m, m.server) for m in report.measurements if m.server]
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
    for m, s in rows:
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


def render_report(report: BenchReport, top: int) -> None:
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
def progress_bar() -> Iterator[ProgressFn | None]:
    """A transient spinner with the current step, fed by the bench progress callback (on a
    terminal only); yields that callback, or None."""
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


def render_gates(results: Sequence[GateResult]) -> None:
    """One line per gate on stdout (pass or FAIL)."""
    for r in results:
        mark = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        console.print(f"gate {escape(repr(r.gate.text))}: {mark} ({r.checked} figure(s) checked)")


def render_gate_failures(results: Sequence[GateResult]) -> None:
    """Every figure that tripped a gate, on stderr."""
    for r in results:
        if r.passed:
            continue
        for failure in r.failures:
            text = f"{escape(repr(r.gate.text))}: {escape(failure)}"
            err_console.print(f"[bold red]gate failed:[/] {text}", soft_wrap=True)
