"""What ``compare`` reports: the subjects, each one's per-output comparison, the verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duh._version import __version__
from duh.compare._metrics import OutputComparison, Tolerance

__all__ = ["CompareReport", "SubjectInfo", "SubjectResult"]


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    """A model, artifact or golden file, and the tolerance its own precision brings."""

    label: str
    kind: str
    engine: str | None
    target: str | None
    precision: str
    tolerance: Tolerance

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "label": self.label,
            "kind": self.kind,
            "engine": self.engine,
            "target": self.target,
            "precision": self.precision,
            "tolerance": self.tolerance.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], tolerance: Tolerance) -> SubjectInfo:
        """Read the form a golden file records."""
        return cls(
            str(data["label"]),
            str(data["kind"]),
            data.get("engine"),
            data.get("target"),
            str(data["precision"]),
            tolerance,
        )


@dataclass(frozen=True, slots=True)
class SubjectResult:
    """One subject against the reference: every output's comparison."""

    subject: SubjectInfo
    outputs: tuple[OutputComparison, ...]

    @property
    def passed(self) -> bool:
        """Whether every output is within tolerance."""
        return all(o.passed for o in self.outputs)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "subject": self.subject.to_json(),
            "passed": self.passed,
            "outputs": [o.to_json() for o in self.outputs],
        }


@dataclass(frozen=True, slots=True)
class CompareReport:
    """The reference, the data, each subject's result, and the golden file written (if any)."""

    reference: SubjectInfo
    data: Mapping[str, Any]
    results: tuple[SubjectResult, ...]
    saved: Path | None = None

    @property
    def passed(self) -> bool:
        """Whether every subject matches the reference."""
        return all(r.passed for r in self.results)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (schema ``duh.compare/1``)."""
        return {
            "schema": "duh.compare/1",
            "duh_version": __version__,
            "passed": self.passed,
            "reference": self.reference.to_json(),
            "data": dict(self.data),
            "results": [r.to_json() for r in self.results],
            "saved_outputs": None if self.saved is None else str(self.saved),
        }
