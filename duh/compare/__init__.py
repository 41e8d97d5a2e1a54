"""``duh compare``: hold models and artifacts (any engine) to a reference's outputs on real data.

The reference is the first subject or golden outputs recorded once (``--save-outputs``); each
subject is run through ``duh.runtime.load`` (a plain ``.onnx`` on ONNX Runtime's CPU provider)
on inputs read by the same reader as ``duh build --check-data``.
"""

from __future__ import annotations

from duh.compare._compare import ALL_OUTPUTS, MISMATCH_EXIT_CODE, CompareRequest, compare
from duh.compare._golden import GOLDEN_FORMAT, Golden, read_golden, write_golden
from duh.compare._metrics import (
    PRECISIONS,
    OutputComparison,
    Tolerance,
    Worst,
    compare_output,
    default_tolerance,
)
from duh.compare._report import CompareReport, SubjectInfo, SubjectResult

__all__ = [
    "ALL_OUTPUTS",
    "GOLDEN_FORMAT",
    "MISMATCH_EXIT_CODE",
    "PRECISIONS",
    "CompareReport",
    "CompareRequest",
    "Golden",
    "OutputComparison",
    "SubjectInfo",
    "SubjectResult",
    "Tolerance",
    "Worst",
    "compare",
    "compare_output",
    "default_tolerance",
    "read_golden",
    "write_golden",
]
