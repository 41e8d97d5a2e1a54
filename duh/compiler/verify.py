"""Verification: run the source model and the artifact on the same inputs and compare."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from duh.runtime import Session, TensorSpec, ValueRange, synthetic_feed, synthetic_shapes

__all__ = [
    "OutputCheck",
    "Tolerance",
    "VerifyReport",
    "compare",
    "compare_outputs",
    "synthetic_feeds",
    "tolerance_for",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How close an artifact must stay to the source. INT8 is judged by cosine and top-1."""

    atol: float = field(metadata={"help": "absolute tolerance (elementwise checks)"})
    rtol: float = field(metadata={"help": "tolerance relative to the output's largest magnitude"})
    min_cosine: float = field(default=0.0, metadata={"help": "lowest cosine similarity allowed"})
    min_top1: float = field(default=0.0, metadata={"help": "lowest top-1 agreement allowed"})
    elementwise: bool = field(default=True, metadata={"help": "apply atol/rtol elementwise"})

    def to_json(self) -> dict[str, object]:
        """The form stored in the manifest."""
        return asdict(self)


_TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999),
    "fp16": Tolerance(atol=1e-2, rtol=2e-2, min_cosine=0.999),
    "bf16": Tolerance(atol=5e-2, rtol=8e-2, min_cosine=0.99),
    "int8": Tolerance(atol=0.0, rtol=0.0, min_cosine=0.98, min_top1=0.95, elementwise=False),
}


def tolerance_for(precision: str, lossy: bool = False) -> Tolerance:
    """The default tolerance for a precision; ``lossy`` pipelines (pruning) are held to INT8's."""
    if lossy and precision != "int8":
        return _TOLERANCES["int8"]
    return _TOLERANCES[precision]


@dataclass(frozen=True, slots=True)
class OutputCheck:
    """The comparison of one output over every check input."""

    name: str
    max_abs: float
    max_rel: float
    cosine: float
    top1: float | None
    passed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """All outputs' checks and the tolerance they were held to."""

    precision: str
    tolerance: Tolerance
    samples: int
    input_source: str
    outputs: tuple[OutputCheck, ...]
    criteria: str = ""

    @property
    def passed(self) -> bool:
        """Whether every output is within tolerance."""
        return all(o.passed for o in self.outputs)

    def to_json(self) -> dict[str, object]:
        """The form stored in the manifest's ``checks`` section."""
        return {
            "passed": self.passed,
            "precision": self.precision,
            "tolerance": self.tolerance.to_json(),
            "samples": self.samples,
            "input_source": self.input_source,
            "criteria": self.criteria or f"{self.precision} tolerances",
            "outputs": [asdict(o) for o in self.outputs],
        }

    def failure_text(self) -> str:
        """One line naming each failing output and its numbers."""
        bad = [o for o in self.outputs if not o.passed]
        return "; ".join(f"{o.name}: {o.reason}" for o in bad)


def synthetic_feeds(
    inputs: Sequence[TensorSpec],
    count: int,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    batch: int = 1,
    ranges: Mapping[str, ValueRange] | None = None,
    size: int = 32,
) -> list[dict[str, np.ndarray]]:
    """Seeded random feeds for ``inputs``, values within ``ranges`` where given.

    Dynamic dimensions take the sizes ``synthetic_shapes`` gives them (``size`` for those
    other than the batch); ``shapes`` fixes an input's whole shape.
    """
    rng = np.random.default_rng(seed)
    concrete = synthetic_shapes(inputs, batch, shapes, size)
    return [synthetic_feed(inputs, concrete, rng, ranges) for _ in range(count)]


_MIN_LOGITS = 10
_INT8_STEP = 1 / 255  # one step of an 8-bit code over [0, 1]
# Output names that say what an output's last axis holds: class scores (judged by top-1 at any
# rank and any class count: [N, 4] orientations, [batch, seq, 15] per-character logits), or
# features (an embedding, a hidden state: their argmax is one feature among many, not a class).
_CLASS_NAMES = re.compile(r"logit|logprob|prob|softmax|(^|_)cls|class|label", re.IGNORECASE)
_FEATURE_NAMES = re.compile(
    r"emb|feature|feat(_|$)|hidden|latent|memory|fingerprint|encod|repr|vector|state|pool"
    r"|^z$|^h$|lstm|gru",
    re.IGNORECASE,
)


def _class_scores(name: str, refs: list[np.ndarray]) -> bool:
    """Whether output ``name`` holds class scores along its last axis (so top-1 means
    something): named so, else probability rows, else [N, k] rows with k >= 10 that are not
    named like features or normalized like an embedding."""
    if refs[0].ndim < 2 or refs[0].shape[-1] < 2:
        return False
    if _FEATURE_NAMES.search(name):
        return False
    if _CLASS_NAMES.search(name) or _scores(refs):
        return True
    # Raw rows count as a classifier's logits only where there are many of them: a few
    # columns that are not probabilities are as often scores of their own (DNSMOS's three
    # mean-opinion scores, a box's four corners), whose argmax means nothing.
    return refs[0].ndim == 2 and refs[0].shape[-1] >= _MIN_LOGITS and not _unit_rows(refs)


def _scores(refs: list[np.ndarray]) -> bool:
    """Whether each row along the last axis is a probability distribution (class scores).

    Top-1 agreement means something for a classifier's [batch, classes] output or softmax
    scores; over the last axis of a detection map, an embedding or a spectrogram it does not.
    """
    return all(r.size > 0 and (_probabilities(r) or _log_probabilities(r)) for r in refs)


def _probabilities(r: np.ndarray) -> bool:
    return bool(np.all(r >= 0)) and np.allclose(r.sum(axis=-1), 1.0, atol=1e-3)


def _log_probabilities(r: np.ndarray) -> bool:
    """Rows a LogSoftmax made: at most 0, and their exponents sum to 1."""
    if not bool(np.all(r <= 0)):
        return False
    return np.allclose(np.exp(r.astype(np.float64)).sum(axis=-1), 1.0, atol=1e-3)


def _unit_rows(refs: list[np.ndarray]) -> bool:
    """Whether every row along the last axis has unit L2 norm (a normalized embedding, such as
    a sentence encoder's): its argmax is one feature among hundreds, not a class."""
    return all(
        r.size > 0 and np.allclose(np.linalg.norm(r.astype(np.float64), axis=-1), 1.0, atol=1e-3)
        for r in refs
    )


def _check_output(
    name: str, refs: list[np.ndarray], gots: list[np.ndarray], tol: Tolerance
) -> OutputCheck:
    if any(r.shape != g.shape for r, g in zip(refs, gots, strict=True)):
        shapes = next(
            (r.shape, g.shape) for r, g in zip(refs, gots, strict=True) if r.shape != g.shape
        )
        return OutputCheck(
            name,
            float("inf"),
            float("inf"),
            0.0,
            None,
            False,
            f"shape {list(shapes[1])} differs from the source's {list(shapes[0])}",
        )
    if refs and refs[0].dtype.kind not in "fc":
        same = all(np.array_equal(r, g) for r, g in zip(refs, gots, strict=True))
        if same or tol.elementwise or refs[0].dtype.kind not in "iub":
            return OutputCheck(
                name,
                0.0 if same else 1.0,
                0.0,
                1.0 if same else 0.0,
                None,
                same,
                "equal" if same else "values differ from the source",
            )
        # INT8's criteria: labels (an argmax, a class id) may flip where two scores are close,
        # as top-1 may; the share of equal elements is held to top-1's bar.
        agree = float(
            np.mean(np.concatenate([(r == g).ravel() for r, g in zip(refs, gots, strict=True)]))
        )
        ok = agree >= tol.min_top1
        detail = f"{agree:.3f} of its values equal the source's"
        return OutputCheck(
            name, 1.0, 0.0, agree, agree, ok, detail if ok else f"only {detail} < {tol.min_top1}"
        )
    ref = np.concatenate([r.astype(np.float64).ravel() for r in refs])
    got = np.concatenate([g.astype(np.float64).ravel() for g in gots])
    # NaN and Inf must sit where the source has them (sqrt of a negative input is NaN on every
    # engine); the numbers are compared where the source's are finite.
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(got)) or not np.array_equal(
        ref[~finite], got[~finite], equal_nan=True
    ):
        where = "artifact" if np.any(finite & ~np.isfinite(got)) else "source"
        other = "source" if where == "artifact" else "artifact"
        return OutputCheck(
            name,
            float("inf"),
            float("inf"),
            0.0,
            None,
            False,
            f"{where} produced NaN or Inf where the {other} did not",
        )
    ref, got = ref[finite], got[finite]
    diff = np.abs(ref - got)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_abs = float(np.max(diff)) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    denom = float(np.linalg.norm(ref) * np.linalg.norm(got))
    cosine = float(np.dot(ref, got) / denom) if denom > 0 else (1.0 if max_abs == 0 else 0.0)
    top1 = None
    if _class_scores(name, refs):
        r1 = np.concatenate([np.argmax(r, axis=-1).ravel() for r in refs])
        g1 = np.concatenate([np.argmax(g, axis=-1).ravel() for g in gots])
        top1 = float(np.mean(r1 == g1))
    reasons = []
    if tol.elementwise and max_abs > tol.atol + tol.rtol * scale:
        reasons.append(f"max abs diff {max_abs:.3g} > {tol.atol:g} + {tol.rtol:g} x {scale:.3g}")
    # Differences under the absolute floor are rounding, whatever their direction: on an
    # output of near-zeros (a detector's probability map on random input) they alone set the
    # cosine, which then says nothing about the model.
    noise = tol.elementwise and 0 < tol.atol and max_abs <= tol.atol
    # An output bounded in [0, 1] (a detector's probability map) that INT8 keeps within one
    # 8-bit step of that range is as close as 8 bits allow: on synthetic inputs such a map is
    # near zero everywhere, and its cosine then says nothing.
    bounded = ref.size > 0 and float(ref.min()) >= 0.0 and float(ref.max()) <= 1.0
    noise = noise or (not tol.elementwise and bounded and max_abs <= _INT8_STEP)
    if cosine < tol.min_cosine and not noise:
        reasons.append(f"cosine {cosine:.5f} < {tol.min_cosine}")
    if top1 is not None and top1 < tol.min_top1:
        reasons.append(f"top-1 agreement {top1:.3f} < {tol.min_top1}")
    return OutputCheck(
        name, max_abs, max_rel, cosine, top1, not reasons, "; ".join(reasons) or "within tolerance"
    )


def compare_outputs(
    expected: Sequence[Mapping[str, np.ndarray]],
    artifact: Session,
    feeds: Sequence[Mapping[str, np.ndarray]],
    precision: str,
    tolerance: Tolerance,
    input_source: str,
    criteria: str = "",
) -> VerifyReport:
    """Run ``artifact`` on ``feeds`` and check its outputs against the ``expected`` ones."""
    names = list(expected[0]) if expected else [o.name for o in artifact.outputs]
    refs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    gots: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for want, feed in zip(expected, feeds, strict=True):
        have = artifact.run(feed)
        for name in names:
            refs[name].append(np.asarray(want[name]))
            gots[name].append(np.asarray(have[name]))
    checks = tuple(_check_output(n, refs[n], gots[n], tolerance) for n in names)
    return VerifyReport(precision, tolerance, len(feeds), input_source, checks, criteria)


def compare(
    reference: Session,
    artifact: Session,
    feeds: Sequence[Mapping[str, np.ndarray]],
    precision: str,
    tolerance: Tolerance,
    input_source: str,
) -> VerifyReport:
    """Run both sessions on ``feeds`` and check every output against ``tolerance``."""
    names = [o.name for o in reference.outputs]
    expected = [{n: v for n, v in reference.run(f).items() if n in names} for f in feeds]
    return compare_outputs(expected, artifact, feeds, precision, tolerance, input_source)
