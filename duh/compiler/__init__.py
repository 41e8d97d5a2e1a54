"""The compiler: ingest, pass pipeline, target build, verification and artifact writing."""

from __future__ import annotations

from duh.compiler._accuracy import METRICS, AccuracyBudget, plot_sensitivity
from duh.compiler._build import BuildResult, build, default_output
from duh.compiler._request import BuildRequest, Candidate, Selection
from duh.compiler._selection import candidate_labels
from duh.compiler.ingest import SourceModel, ingest
from duh.compiler.pipeline import PassManager, PassRecord

__all__ = [
    "METRICS",
    "AccuracyBudget",
    "BuildRequest",
    "BuildResult",
    "Candidate",
    "PassManager",
    "PassRecord",
    "Selection",
    "SourceModel",
    "build",
    "candidate_labels",
    "default_output",
    "ingest",
    "plot_sensitivity",
]
