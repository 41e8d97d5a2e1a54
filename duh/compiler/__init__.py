"""The compiler: ingest, pass pipeline, target build, verification and artifact writing."""

from __future__ import annotations

from duh.compiler._build import BuildResult, build, default_output
from duh.compiler._candidates import CandidateResult
from duh.compiler.ingest import SourceModel, ingest
from duh.compiler.pipeline import PassManager, PassRecord

__all__ = [
    "BuildResult",
    "CandidateResult",
    "PassManager",
    "PassRecord",
    "SourceModel",
    "build",
    "default_output",
    "ingest",
]
