"""How close one output of a subject stays to the reference's, over every feed.

The numbers are those of ``duh build``'s verification (max abs difference, the same relative
to the reference's largest magnitude, cosine, top-1 agreement where the output holds class
scores), plus the mean abs difference, the count of elements out of tolerance and the worst
elements with their position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from duh.errors import ConfigError

__all__ = [
    "EXACT",
    "PRECISIONS",
    "OutputComparison",
    "Tolerance",
    "Worst",
    "compare_output",
    "default_tolerance",
    "loosest",
    "with_overrides",
]

# Loosest last: a pair of subjects is held to the looser precision of the two.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True, slots=True)
class Tolerance:
    """What one output must meet. ``atol``/``rtol`` apply elementwise when ``elementwise``:
    ``|a - b| <= atol + rtol * max|a|`` (``a`` the reference)."""

    atol: float = field(metadata={"help": "absolute tolerance, elementwise"})
    rtol: float = field(
        metadata={"help": "tolerance relative to the reference's largest magnitude"}
    )
    min_cosine: float = field(default=0.0, metadata={"help": "lowest cosine similarity allowed"})
    min_top1: float = field(default=0.0, metadata={"help": "lowest top-1 agreement allowed"})
    elementwise: bool = field(default=True, metadata={"help": "apply atol/rtol elementwise"})

    def to_json(self) -> dict[str, Any]:
        """The form in reports, golden files and manifests."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tolerance:
        """Read the form ``to_json`` writes (a manifest's ``checks.tolerance``)."""
        return cls(
            atol=float(data["atol"]),
            rtol=float(data["rtol"]),
            min_cosine=float(data.get("min_cosine", 0.0)),
            min_top1=float(data.get("min_top1", 0.0)),
            elementwise=bool(data.get("elementwise", True)),
        )


# The numbers `duh build` verifies each precision with (README, "What duh build does").
_DEFAULTS = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999),
    "fp16": Tolerance(atol=1e-2, rtol=2e-2, min_cosine=0.999),
    "bf16": Tolerance(atol=5e-2, rtol=8e-2, min_cosine=0.99),
    "int8": Tolerance(atol=0.0, rtol=0.0, min_cosine=0.98, min_top1=0.95, elementwise=False),
}
# Integer, bool and string outputs (class ids, masks, labels) must be equal.
EXACT = Tolerance(atol=0.0, rtol=0.0)


def default_tolerance(precision: str) -> Tolerance:
    """The default tolerance of a precision (fp32, fp16, bf16, int8)."""
    if precision not in _DEFAULTS:
        raise ConfigError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    return _DEFAULTS[precision]


def loosest(a: Tolerance, b: Tolerance) -> Tolerance:
    """The looser of two subjects' tolerances, taken whole (each precision's criteria belong
    together: INT8's cosine and top-1 replace fp32's elementwise bound, they do not add to it)."""
    if a.elementwise != b.elementwise:
        return b if a.elementwise else a
    return b if (b.atol, b.rtol, -b.min_cosine) > (a.atol, a.rtol, -a.min_cosine) else a


@dataclass(frozen=True, slots=True)
class Worst:
    """One element far from the reference: the feed it came from, its index in that feed's
    output, and both values."""

    feed: int
    index: tuple[int, ...]
    reference: float
    subject: float
    abs_diff: float

    def to_json(self) -> dict[str, Any]:
        """JSON form (non-finite values as strings)."""
        return {
            "feed": self.feed,
            "index": list(self.index),
            "reference": _number(self.reference),
            "subject": _number(self.subject),
            "abs_diff": _number(self.abs_diff),
        }


@dataclass(frozen=True, slots=True)
class OutputComparison:
    """One output of a subject against the reference, over every feed."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    elements: int
    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    top1: float | None
    mismatched: int | None
    worst: tuple[Worst, ...]
    tolerance: Tolerance
    passed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        """JSON form (non-finite values as strings)."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "elements": self.elements,
            "max_abs": _number(self.max_abs),
            "mean_abs": _number(self.mean_abs),
            "max_rel": _number(self.max_rel),
            "cosine": _number(self.cosine),
            "top1": self.top1,
            "mismatched": self.mismatched,
            "worst": [w.to_json() for w in self.worst],
            "tolerance": self.tolerance.to_json(),
            "passed": self.passed,
            "reason": self.reason,
        }


def _number(value: float) -> float | str:
    return value if np.isfinite(value) else str(value)


def _scores(refs: Sequence[np.ndarray]) -> bool:
    """Whether every row along the last axis is a probability distribution (softmax scores)."""
    return all(
        r.size > 0 and bool(np.all(r >= 0)) and np.allclose(r.sum(axis=-1), 1.0, atol=1e-3)
        for r in refs
    )


def _top1(refs: Sequence[np.ndarray], gots: Sequence[np.ndarray]) -> float | None:
    """Top-1 agreement, for outputs that look like class scores: [batch, classes] or softmax."""
    first = refs[0]
    if first.dtype.kind != "f" or first.ndim < 2 or first.shape[-1] < 2:
        return None
    if first.ndim != 2 and not _scores(refs):
        return None
    r1 = np.concatenate([np.argmax(r, axis=-1).ravel() for r in refs])
    g1 = np.concatenate([np.argmax(g, axis=-1).ravel() for g in gots])
    return float(np.mean(r1 == g1)) if r1.size else None


def _diffs(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """|a - b| elementwise; 0 where both hold the same NaN/Inf, Inf where only one does."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(ref - got)
    same_special = (np.isnan(ref) & np.isnan(got)) | (np.isinf(ref) & (ref == got))
    diff[same_special] = 0.0
    diff[np.isnan(diff)] = np.inf
    return diff


def _worst(
    diffs: Sequence[np.ndarray],
    refs: Sequence[np.ndarray],
    gots: Sequence[np.ndarray],
    count: int,
) -> tuple[Worst, ...]:
    flat = np.concatenate([d.ravel() for d in diffs])
    if count <= 0 or flat.size == 0:
        return ()
    count = min(count, flat.size)
    top = np.argpartition(-flat, count - 1)[:count]
    top = top[np.argsort(-flat[top], kind="stable")]
    offsets = np.cumsum([0] + [d.size for d in diffs])
    out = []
    for position in top.tolist():
        if flat[position] == 0:
            break
        feed = int(np.searchsorted(offsets, position, side="right") - 1)
        index = np.unravel_index(position - int(offsets[feed]), diffs[feed].shape)
        out.append(
            Worst(
                feed,
                tuple(int(i) for i in index),
                float(refs[feed][index]),
                float(gots[feed][index]),
                float(flat[position]),
            )
        )
    return tuple(out)


def _exact(
    name: str, refs: Sequence[np.ndarray], gots: Sequence[np.ndarray], tol: Tolerance
) -> OutputComparison:
    """Strings and other non-numeric outputs: equal or not."""
    unequal = sum(int(np.sum(r != g)) for r, g in zip(refs, gots, strict=True))
    elements = sum(r.size for r in refs)
    same = unequal == 0
    return OutputComparison(
        name, refs[0].dtype.name, tuple(refs[0].shape), elements,
        0.0 if same else float("inf"), 0.0 if same else float("inf"), 0.0 if same else 1.0,
        1.0 if same else 0.0, None, unequal, (), tol, same,
        "equal" if same else f"{unequal} of {elements} elements differ",
    )  # fmt: skip


def compare_output(
    name: str,
    refs: Sequence[np.ndarray],
    gots: Sequence[np.ndarray],
    tolerance: Tolerance,
    worst: int = 5,
) -> OutputComparison:
    """Compare output ``name`` over every feed: ``refs[k]`` against ``gots[k]``.

    A feed whose shapes differ fails the output, saying where. ``worst`` elements with the
    largest abs difference are kept with their feed and index.
    """
    for k, (r, g) in enumerate(zip(refs, gots, strict=True)):
        if r.shape != g.shape:
            return OutputComparison(
                name, r.dtype.name, tuple(r.shape), r.size, float("inf"), float("inf"),
                float("inf"), 0.0, None, r.size, (), tolerance, False,
                f"feed {k}: shape {list(g.shape)} differs from the reference's {list(r.shape)}",
            )  # fmt: skip
    if refs[0].dtype.kind not in "biuf" or gots[0].dtype.kind not in "biuf":
        return _exact(name, refs, gots, tolerance)
    ref64 = [np.asarray(r, dtype=np.float64) for r in refs]
    got64 = [np.asarray(g, dtype=np.float64) for g in gots]
    diffs = [_diffs(r, g) for r, g in zip(ref64, got64, strict=True)]
    ref = np.concatenate([r.ravel() for r in ref64])
    got = np.concatenate([g.ravel() for g in got64])
    diff = np.concatenate([d.ravel() for d in diffs])
    elements = int(ref.size)
    finite = np.isfinite(ref) & np.isfinite(got)
    scale = float(np.max(np.abs(ref[finite]))) if finite.any() else 0.0
    max_abs = float(np.max(diff)) if diff.size else 0.0
    mean_abs = float(np.mean(diff[finite])) if finite.any() else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    a, b = ref[finite], got[finite]
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(np.dot(a, b) / denom) if denom > 0 else (1.0 if max_abs == 0 else 0.0)
    top1 = _top1(refs, gots)
    bound = tolerance.atol + tolerance.rtol * scale
    reasons: list[str] = []
    # Elements out of tolerance, where the tolerance is elementwise (INT8 is judged as a whole).
    mismatched = int(np.sum(diff > bound)) if tolerance.elementwise else None
    if not np.all(np.isfinite(diff)):
        reasons.append("NaN or Inf where the other side has a number")
    if tolerance.elementwise and mismatched:
        reasons.append(
            f"{mismatched} of {elements} elements out of tolerance: max abs diff {max_abs:.3g} "
            f"> {tolerance.atol:g} + {tolerance.rtol:g} x {scale:.3g}"
        )
    if cosine < tolerance.min_cosine:
        reasons.append(f"cosine {cosine:.6f} < {tolerance.min_cosine:g}")
    if top1 is not None and top1 < tolerance.min_top1:
        reasons.append(f"top-1 agreement {top1:.4f} < {tolerance.min_top1:g}")
    return OutputComparison(
        name, refs[0].dtype.name, tuple(refs[0].shape), elements, max_abs, mean_abs, max_rel,
        cosine, top1, mismatched, _worst(diffs, ref64, got64, worst), tolerance, not reasons,
        "; ".join(reasons) or "within tolerance",
    )  # fmt: skip


def with_overrides(tolerance: Tolerance, overrides: Mapping[str, float]) -> Tolerance:
    """``tolerance`` with the fields the user set; an explicit atol or rtol is elementwise."""
    if not overrides:
        return tolerance
    return replace(
        tolerance,
        atol=float(overrides.get("atol", tolerance.atol)),
        rtol=float(overrides.get("rtol", tolerance.rtol)),
        min_cosine=float(overrides.get("min_cosine", tolerance.min_cosine)),
        min_top1=float(overrides.get("min_top1", tolerance.min_top1)),
        elementwise=tolerance.elementwise or "atol" in overrides or "rtol" in overrides,
    )
