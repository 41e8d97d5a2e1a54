"""The options of ``duh bench``, declared once, and the ``BenchSettings`` they make.

``BenchOptions`` holds the options as typed on the command line (its fields are the command's
parameters); ``BenchOptions.plan()`` checks them and turns them into what the library takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from duh.cli._common import parse_key_values, parse_shapes
from duh.errors import ConfigError

if TYPE_CHECKING:
    from duh.bench import BenchSettings, Gate

__all__ = ["BenchOptions", "BenchPlan"]

Paths = Annotated[
    list[Path] | None,
    typer.Argument(help="artifacts (NAME.duh) and/or .onnx models; the first is the baseline"),
]
Scenario = Annotated[
    str | None,
    typer.Option(
        "--scenario",
        "-s",
        help="single-stream, offline, multi-stream, server (comma-separated); default: implied "
        "by --batch, --streams/--concurrency, --qps",
    ),
]
Batch = Annotated[
    str | None, typer.Option("--batch", "-b", help="offline batch sizes, e.g. 1,8,32")
]
Streams = Annotated[
    str | None,
    typer.Option("--streams", help="multi-stream: concurrent streams, N or a sweep 1:8:1"),
]
Concurrency = Annotated[
    str | None,
    typer.Option("--concurrency", help="multi-stream sweep as perf_analyzer: FIRST:LAST:STEP"),
]
Qps = Annotated[
    str | None, typer.Option("--qps", help="server: Poisson arrival rate(s), e.g. 100 or 50,100")
]
LatencyBound = Annotated[
    float | None, typer.Option("--latency-bound", help="server: p99 bound in ms to check")
]
FindPeak = Annotated[
    bool, typer.Option("--find-peak", help="server: highest QPS whose p99 holds --latency-bound")
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", help="server: requests in flight (default 1; 16 with --url)"),
]
Data = Annotated[
    Path | None,
    typer.Option("--data", help="real inputs: .npz (arrays named after inputs), .npy, or a dir"),
]
Seed = Annotated[int, typer.Option("--seed", help="seed of synthetic inputs and arrivals")]
Feeds = Annotated[
    int,
    typer.Option(
        "--feeds", help="distinct synthetic inputs cycled through (1, as the engines' tools)"
    ),
]
WarmupOpt = Annotated[
    str,
    typer.Option("--warmup", help="warm-up per configuration: runs (20) or time (2s, 500ms)"),
]
Window = Annotated[float, typer.Option("--window", help="measurement window in seconds")]
MinWindows = Annotated[
    int,
    typer.Option("--min-windows", help="windows that must agree (their samples make the figures)"),
]
MaxWindows = Annotated[
    int, typer.Option("--max-windows", help="stop after this many windows even if not stable")
]
Stability = Annotated[
    float,
    typer.Option(
        "--stability", help="stable when the last medians are within this % of their mean"
    ),
]
Profile = Annotated[
    bool, typer.Option("--profile", help="per-operator times from the engine's profiler")
]
Top = Annotated[int, typer.Option("--top", help="operators shown per profile")]
ProfileRuns = Annotated[int, typer.Option("--profile-runs", help="inferences to profile")]
NoMemory = Annotated[
    bool,
    typer.Option("--no-memory", help="skip peak memory (measured in a fresh process per subject)"),
]
Url = Annotated[
    str | None,
    typer.Option("--url", help="a running Open Inference Protocol server, http://HOST:PORT"),
]
Model = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", help="with --url: the served model name (repeatable)"),
]
ModelVersion = Annotated[
    str | None, typer.Option("--model-version", help="with --url: the model version")
]
WireProtocol = Annotated[
    str,
    typer.Option("--protocol", help="with --url: binary (Triton's tensor extension) or json"),
]
JsonFile = Annotated[
    Path | None,
    typer.Option("--json", help="write every figure as JSON to FILE ('-' for stdout)"),
]
Plot = Annotated[
    Path | None, typer.Option("--plot", help="write latency and throughput charts to FILE.png")
]
FailIf = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-if",
        help="CI gate such as 'p99_ms>20' or 'speedup<1.5'; exit 10 when one trips (repeatable)",
    ),
]


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """What one ``duh bench`` run does: measure these subjects with these settings, then gate."""

    settings: BenchSettings
    gates: tuple[Gate, ...]
    paths: tuple[Path, ...]
    url: str | None
    models: tuple[str, ...]
    model_version: str | None
    binary: bool


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """The options of ``duh bench`` as given; the field names are the command's parameters."""

    paths: list[Path] | None
    scenario: str | None
    batch: str | None
    streams: str | None
    concurrency: str | None
    qps: str | None
    latency_bound: float | None
    find_peak: bool
    workers: int | None
    data: Path | None
    shape: list[str] | None
    seed: int
    feeds: int
    warmup: str
    window: float
    min_windows: int
    max_windows: int
    stability: float
    threads: int | None
    option: list[str] | None
    profile: bool
    top: int
    profile_runs: int
    no_memory: bool
    url: str | None
    model: list[str] | None
    model_version: str | None
    protocol: str
    json_file: Path | None
    plot: Path | None
    fail_if: list[str] | None

    @property
    def json_to_stdout(self) -> bool:
        """``--json -``: the JSON document is the only output."""
        return self.json_file is not None and str(self.json_file) == "-"

    def plan(self) -> BenchPlan:
        """Check the options and make the run's settings; raises ``ConfigError``."""
        from duh.bench import parse_gate

        gates = tuple(parse_gate(g) for g in self.fail_if or [])
        if self.protocol not in ("binary", "json"):
            raise ConfigError(f"--protocol {self.protocol!r}: use binary or json")
        if self.url is None and (self.model or self.model_version):
            raise ConfigError("--model and --model-version go with --url")
        if self.url is not None and self.paths:
            raise ConfigError("give either artifact paths or --url, not both")
        return BenchPlan(
            settings=self.settings(),
            gates=gates,
            paths=tuple(self.paths or ()),
            url=self.url,
            models=tuple(self.model or ()),
            model_version=self.model_version,
            binary=self.protocol == "binary",
        )

    def settings(self) -> BenchSettings:
        """The ``BenchSettings`` these options ask for."""
        from duh.bench import BenchSettings, Warmup, group_shapes, parse_range

        sweep = self.concurrency or self.streams
        shape_items = [next(iter(parse_shapes([v]).items())) for v in self.shape or []]
        return BenchSettings(
            scenarios=_scenarios(self.scenario, self.batch, sweep, self.qps, self.find_peak),
            batches=parse_range(self.batch, "--batch") if self.batch else (1, 8, 32),
            streams=parse_range(sweep, "--concurrency" if self.concurrency else "--streams")
            if sweep
            else (min(os.cpu_count() or 2, 4),),
            qps=_floats(self.qps, "--qps"),
            latency_bound_ms=self.latency_bound,
            find_peak=self.find_peak,
            server_workers=self.workers or (16 if self.url else 1),
            shapes=tuple(group_shapes(shape_items)),
            data=self.data,
            seed=self.seed,
            feeds=self.feeds,
            warmup=Warmup.parse(self.warmup),
            window_s=self.window,
            min_windows=self.min_windows,
            max_windows=self.max_windows,
            stability=self.stability / 100,
            threads=self.threads,
            engine_options=parse_key_values(self.option, "--option"),
            memory=not self.no_memory,
            profile=self.profile,
            profile_runs=self.profile_runs,
            top=self.top,
        )


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
