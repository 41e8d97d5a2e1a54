"""The contract between the runtime and an engine plugin's loaded model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["Engine", "EngineOptions", "OpTiming"]


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Options a caller may pass when loading; each engine maps them onto its own settings."""

    threads: int | None = field(
        default=None, metadata={"help": "intra-op threads; None lets the engine choose"}
    )
    profile: bool = field(default=False, metadata={"help": "collect per-operator timings (slower)"})
    spin: bool | None = field(
        default=None,
        metadata={
            "help": "let idle pool threads spin-wait between runs (lower single-stream latency, "
            "busy cores); None keeps the engine's own default"
        },
    )
    extra: Mapping[str, str] = field(
        default_factory=dict, metadata={"help": "engine-specific settings, passed through"}
    )


@dataclass(frozen=True, slots=True)
class OpTiming:
    """Time spent in one operator (or layer) over a profiled run."""

    name: str
    op_type: str
    total_us: float
    calls: int


class Engine(Protocol):
    """A loaded model. ``run`` takes checked numpy inputs and returns every output by name."""

    engine_name: str

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; may be called from several threads at once."""
        ...

    def op_profile(self) -> list[OpTiming]:
        """Per-operator timings collected since load (requires ``EngineOptions.profile``)."""
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...
