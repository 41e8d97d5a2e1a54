"""What travels through a build: the request, each candidate tried, and the selection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duh.calibration import CalibrationSet
from duh.compiler._accuracy import EvalSet
from duh.compiler._feeds import CheckFeeds
from duh.compiler._stage_cache import StageCache
from duh.compiler.ingest import SourceModel
from duh.compiler.pipeline import PassManager, PassRecord
from duh.compiler.verify import Tolerance, VerifyReport
from duh.errors import DuhError
from duh.host import HostInfo
from duh.targets import CompileResult, TargetSpec

__all__ = ["BudgetScore", "BuildRequest", "Candidate", "Plan", "Selection"]


@dataclass(frozen=True, slots=True)
class Plan:
    """One target a build tries, and the pass pipeline it runs for it."""

    spec: TargetSpec
    pipeline: PassManager


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """Everything a build resolved before it starts building: one value, handed to each step."""

    source: SourceModel
    requested: str
    plans: tuple[Plan, ...]
    host: HostInfo
    calibration: CalibrationSet | None
    shapes: Mapping[str, tuple[int, ...]]
    target_options: Mapping[str, str]
    verify: bool
    checks: CheckFeeds
    tolerance: Tolerance | None
    budget_s: float
    # The quantization ops of an already-quantized source: it is checked by INT8's criteria.
    quantized_source: tuple[str, ...] = ()
    # The source computes in float16: fp32 candidates are checked by fp16's tolerances.
    float16_source: bool = False
    # The build cache (disabled: nothing looked up or stored); it records every lookup.
    cache: StageCache = field(default_factory=lambda: StageCache(Path(), enabled=False))
    # The accuracy budget (--eval, --metric, --max-drop): its eval data and fp32's outputs.
    evaluation: EvalSet | None = None
    # A front end's source: its export record, and the framework's own outputs on the checks.
    frontend: Mapping[str, Any] | None = None
    framework: tuple[dict[str, np.ndarray], ...] | None = None
    # Several precisions compete (auto, or cpu under a budget); why some were not tried.
    precision_aware: bool = False
    not_tried: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetScore:
    """A candidate's metric on the eval data, and whether its drop is within the budget.

    ``how`` says what it took (``2 of 12 quantized layers in float``) or why no build of it met
    the budget; empty for a candidate evaluated as it was built.
    """

    metric: str
    value: float
    drop: float
    max_drop: float
    met: bool
    how: str = ""

    def text(self) -> str:
        """``top1 drop 0.0012 <= 0.005``: the drop against the budget."""
        sign = "<=" if self.met else ">"
        return f"{self.metric} drop {self.drop:.4g} {sign} {self.max_drop:g}"

    def to_json(self) -> dict[str, Any]:
        """The form stored with each candidate in the manifest's ``selection``."""
        return {
            "metric": self.metric,
            "value": round(self.value, 6),
            "drop": round(self.drop, 6),
            "max_drop": self.max_drop,
            "within_budget": self.met,
            "how": self.how,
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """One target tried by a build: its pipeline and, once built, what it did and how it fared.

    ``error`` is why it failed (one line, as the DuhError said it); ``out_dir`` is where it was
    built during the build (a temporary directory).
    """

    spec: TargetSpec
    passes: tuple[dict[str, Any], ...]
    records: tuple[PassRecord, ...] = ()
    compiled: CompileResult | None = None
    out_dir: Path | None = None
    report: VerifyReport | None = None
    median_ms: float | None = None
    error: str | None = None
    # The INT8 fallback's rebuilds (what each kept in float and the cosine it reached).
    fallback: tuple[str, ...] = ()
    # Under an accuracy budget: both metrics, the drop, the layers kept in float (the manifest's
    # build.accuracy).
    accuracy: Mapping[str, Any] | None = None
    failure: DuhError | None = field(default=None, compare=False, repr=False)
    # Against the original framework's outputs (a front end's source), besides the ONNX check.
    framework_report: VerifyReport | None = None
    # Under an accuracy budget: its metric and drop as kept (or as dropped).
    score: BudgetScore | None = None

    @property
    def usable(self) -> bool:
        """Built, loaded, and verified (or not checked): a candidate selection may keep."""
        framework = self.framework_report is None or self.framework_report.passed
        return self.error is None and (self.report is None or self.report.passed) and framework

    def to_json(self) -> dict[str, Any]:
        """The form stored in the manifest's ``selection`` section."""
        return {
            "target": self.spec.name,
            "median_ms": None if self.median_ms is None else round(self.median_ms, 4),
            "verified": None if self.report is None else self.report.passed,
            "error": self.error,
            "int8_fallback": list(self.fallback),
            "budget": None if self.score is None else self.score.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """The candidate a build keeps, every candidate it tried, and how it chose.

    ``reason`` says why the winner won and why each other candidate lost, in one line;
    ``not_tried`` what the build left out (a precision this host lacks, INT8 without data).
    """

    chosen: Candidate
    candidates: tuple[Candidate, ...]
    method: str
    reason: str = ""
    not_tried: tuple[str, ...] = ()
