"""The settings of a benchmark run: scenarios, inputs, stability windows, engine options."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duh.bench._loop import Warmup
from duh.bench._report import SCENARIOS
from duh.errors import ConfigError

__all__ = ["BenchSettings", "parse_range"]


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """How to measure. Defaults suit a quick, trustworthy single-stream comparison."""

    scenarios: tuple[str, ...] = field(
        default=("single-stream",),
        metadata={"help": "single-stream, offline, multi-stream and/or server"},
    )
    batches: tuple[int, ...] = field(default=(1, 8, 32), metadata={"help": "offline batch sizes"})
    streams: tuple[int, ...] = field(
        default=(2,),
        metadata={"help": "concurrent streams for multi-stream (a sweep when several)"},
    )
    qps: tuple[float, ...] = field(default=(), metadata={"help": "server: Poisson arrival rates"})
    latency_bound_ms: float | None = field(
        default=None, metadata={"help": "server: p99 latency bound to check (and find-peak's)"}
    )
    find_peak: bool = field(
        default=False, metadata={"help": "server: search the highest QPS whose p99 holds the bound"}
    )
    server_workers: int = field(
        default=1, metadata={"help": "server: requests in flight at once (workers or connections)"}
    )
    shapes: tuple[Mapping[str, tuple[int, ...]], ...] = field(
        default=(), metadata={"help": "input shape sets; several make a mix of shapes"}
    )
    data: Path | None = field(
        default=None, metadata={"help": ".npz/.npy file or directory of them"}
    )
    seed: int = field(default=0, metadata={"help": "seed of synthetic inputs and arrivals"})
    feeds: int = field(default=1, metadata={"help": "distinct synthetic feeds cycled through"})
    warmup: Warmup = field(default_factory=Warmup, metadata={"help": "warm-up per configuration"})
    window_s: float = field(default=1.0, metadata={"help": "length of a measurement window"})
    min_windows: int = field(
        default=3, metadata={"help": "windows that must agree (and the ones the figures use)"}
    )
    max_windows: int = field(default=10, metadata={"help": "give up on stability after these"})
    stability: float = field(
        default=0.05, metadata={"help": "largest relative spread of the last window medians"}
    )
    min_runs: int = field(default=10, metadata={"help": "inferences per window at the least"})
    threads: int | None = field(default=None, metadata={"help": "engine intra-op threads"})
    engine_options: Mapping[str, str] = field(
        default_factory=dict, metadata={"help": "engine settings passed to duh.load"}
    )
    memory: bool = field(
        default=True, metadata={"help": "peak RSS of each subject, in a fresh process"}
    )
    profile: bool = field(default=False, metadata={"help": "per-operator times from the engine"})
    profile_runs: int = field(default=100, metadata={"help": "profiled inferences per subject"})
    top: int = field(default=15, metadata={"help": "operators shown in the profile table"})

    def validate(self) -> None:
        """Raise ``ConfigError`` for settings that cannot work."""
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ConfigError(
                f"unknown scenario {', '.join(map(repr, unknown)) or '(none)'}; the scenarios "
                f"are {', '.join(SCENARIOS)}"
            )
        if any(b < 1 for b in self.batches):
            raise ConfigError(f"--batch values must be positive, got {list(self.batches)}")
        if any(s < 1 for s in self.streams) or not self.streams:
            raise ConfigError(f"--streams/--concurrency must be positive, got {list(self.streams)}")
        if "server" in self.scenarios:
            if not self.qps and not self.find_peak:
                raise ConfigError("the server scenario needs --qps N or --find-peak")
            if self.find_peak and self.latency_bound_ms is None:
                raise ConfigError("--find-peak needs --latency-bound MS (the p99 bound to hold)")
            if any(not (q > 0 and math.isfinite(q)) for q in self.qps):
                raise ConfigError(f"--qps values must be positive, got {list(self.qps)}")
        if self.latency_bound_ms is not None and self.latency_bound_ms <= 0:
            raise ConfigError(f"--latency-bound must be positive, got {self.latency_bound_ms:g}")
        if self.window_s <= 0 or self.min_windows < 1 or self.max_windows < self.min_windows:
            raise ConfigError(
                f"windows: need --window > 0 and 1 <= --min-windows <= --max-windows, got "
                f"{self.window_s:g} s, {self.min_windows}, {self.max_windows}"
            )
        if not 0 < self.stability < 1:
            raise ConfigError(f"--stability is a fraction in (0, 1), got {self.stability:g}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be positive, got {self.threads}")
        if self.feeds < 1:
            raise ConfigError(f"--feeds must be positive, got {self.feeds}")
        if self.server_workers < 1:
            raise ConfigError(f"server workers must be positive, got {self.server_workers}")

    def to_json(self) -> dict[str, Any]:
        """The settings as recorded in the JSON report."""
        return {
            "scenarios": list(self.scenarios),
            "batches": list(self.batches),
            "streams": list(self.streams),
            "qps": list(self.qps),
            "latency_bound_ms": self.latency_bound_ms,
            "find_peak": self.find_peak,
            "server_workers": self.server_workers,
            "shapes": [{k: list(v) for k, v in s.items()} for s in self.shapes],
            "data": None if self.data is None else str(self.data),
            "seed": self.seed,
            "feeds": self.feeds,
            "warmup": self.warmup.describe(),
            "window_s": self.window_s,
            "min_windows": self.min_windows,
            "max_windows": self.max_windows,
            "stability": self.stability,
            "min_runs": self.min_runs,
            "threads": self.threads,
            "engine_options": dict(self.engine_options),
            "memory": self.memory,
            "profile": self.profile,
            "profile_runs": self.profile_runs,
        }


def parse_range(text: str, what: str) -> tuple[int, ...]:
    """``"4"``, ``"1,2,8"`` or perf_analyzer's ``start:end:step`` (``1:16:2`` is 1, 3, ..., 15)."""
    value = text.strip()
    try:
        if ":" in value:
            parts = [int(p) for p in value.split(":")]
            if len(parts) == 2:
                parts.append(1)
            start, end, step = parts
            if step < 1 or start < 1 or end < start:
                raise ValueError
            return tuple(range(start, end + 1, step))
        items = tuple(int(p) for p in value.split(",") if p.strip())
        if not items or any(i < 1 for i in items):
            raise ValueError
        return items
    except ValueError:
        raise ConfigError(
            f"{what} {text!r} is not N, N,M,... or START:END[:STEP] of positive integers"
        ) from None
