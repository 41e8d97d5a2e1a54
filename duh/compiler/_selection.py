"""Selection: keep the fastest usable candidate, and say why in one line (report, manifest).

``openvino:cpu-bf16: 1.2 ms, fastest within the budget (top1 drop 0 <= 0.005);
onnxruntime:cpu-fp32 2.3 ms slower; openvino:cpu-int8 0.9 ms dropped: top1 drop 0.04 > 0.005``
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

from duh.compiler._budget import BudgetError
from duh.compiler._request import BuildRequest, Candidate, Selection
from duh.errors import DuhError, TargetError
from duh.runtime import Session, measure_interleaved

__all__ = ["candidate_labels", "explain", "select"]

log = logging.getLogger(__name__)

# A candidate's error in the one-line reason is cut here; the report and manifest keep it whole.
_ERROR_CHARS = 120


def _label(candidate: Candidate, names: Counter[str]) -> str:
    """The candidate's target name, with its quantize mode where two share the name (NNCF's
    INT8 graph beside duh's on OpenVINO)."""
    name = candidate.spec.name
    if names[name] < 2:
        return name
    quantize = [p["config"] for p in candidate.passes if p["name"] == "quantize"]
    mode = quantize[0].get("mode") if quantize else None
    return f"{name} ({mode or 'no quantize'})"


def candidate_labels(candidates: Sequence[Candidate]) -> list[str]:
    """Each candidate's name as reports show it: with its quantize mode where two share one."""
    names = Counter(c.spec.name for c in candidates)
    return [_label(c, names) for c in candidates]


def _ms(candidate: Candidate) -> str:
    return "" if candidate.median_ms is None else f" {candidate.median_ms:.3g} ms"


def _short(text: str) -> str:
    """The first line of ``text``, cut at a word's end near ``_ERROR_CHARS``."""
    line = text.splitlines()[0] if text else "?"
    if len(line) <= _ERROR_CHARS:
        return line
    cut = line.rfind(" ", _ERROR_CHARS // 2, _ERROR_CHARS)
    return line[: cut if cut > 0 else _ERROR_CHARS - 1].rstrip(" ,;:(") + "…"


def _loser(candidate: Candidate, label: str) -> str:
    """Why ``candidate`` (not kept) lost: slower, over the budget, failed its check or build."""
    score, report = candidate.score, candidate.report
    if candidate.usable:
        if candidate.median_ms is None:
            return f"{label} not timed"
        return f"{label}{_ms(candidate)} slower"
    if score is not None and not score.met:
        how = f" ({score.how})" if score.how else ""
        return f"{label}{_ms(candidate)} dropped: {score.text()}{how}"
    if report is not None and not report.passed:
        return f"{label} failed verification: {_short(report.failure_text())}"
    framework = candidate.framework_report
    if framework is not None and not framework.passed:
        return f"{label} failed against the original framework: {_short(framework.failure_text())}"
    return f"{label} failed: {_short(candidate.error or '?')}"


def explain(candidates: Sequence[Candidate], best: int, *, budgeted: bool, verified: bool) -> str:
    """Why ``candidates[best]`` won, then why each other one lost, in one line.

    ``budgeted``: an accuracy budget held every candidate; ``verified``: each was checked
    against the source.
    """
    names = Counter(c.spec.name for c in candidates)
    chosen = candidates[best]
    score = chosen.score
    if budgeted and score is not None:
        how = f"; {score.how}" if score.how else ""
        within = f"within the budget ({score.text()}{how})"
    elif verified:
        within = "that passed verification (its precision's criteria)"
    else:
        within = "built (not verified: --no-verify)"
    usable = sum(1 for c in candidates if c.usable)
    head = f"the only candidate {within}" if usable == 1 else f"fastest {within}"
    timing = f"{_ms(chosen)}," if chosen.median_ms is not None else ""
    parts = [f"{_label(chosen, names)}:{timing} {head}"]
    parts.extend(_loser(c, _label(c, names)) for i, c in enumerate(candidates) if i != best)
    return "; ".join(parts)


def _failure(candidate: Candidate) -> str:
    """Why a built candidate failed its check (against the ONNX source or the framework)."""
    report, framework = candidate.report, candidate.framework_report
    if report is not None and not report.passed:
        return report.failure_text()
    if framework is not None and not framework.passed:
        return f"against the original framework: {framework.failure_text()}"
    return "?"


def _no_candidate(request: BuildRequest, candidates: Sequence[Candidate]) -> DuhError:
    """The error of a build whose every candidate failed, naming each one's reason."""
    if len(candidates) == 1 and candidates[0].failure is not None:
        return candidates[0].failure
    reasons = "; ".join(
        f"{c.spec.name}: {c.error or _failure(c)}"
        + (f"; {c.fallback[-1]}" if c.fallback else "")
        for c in candidates
    )
    if all(isinstance(c.failure, BudgetError) for c in candidates):
        return BudgetError(
            f"no candidate for {request.requested!r} meets the accuracy budget ({reasons}); "
            "loosen --max-drop or drop the lossy passes"
        )
    if all(c.error for c in candidates):
        return TargetError(f"no engine could build {request.requested!r}: {reasons}")
    if request.checks.synthetic:
        # Random inputs drive some models (recurrent nets, log-mel front ends) where no real
        # input goes, and engines' float differences grow there: real inputs settle it.
        fix = (
            "the check ran on synthetic inputs: verify on real inputs with --check-data FILE "
            "(an .npz with one array per input, named after it), or build with --no-verify"
        )
    else:
        fix = "check the model, loosen the tolerance, or build with --no-verify to skip the check"
    return TargetError(
        f"no candidate for {request.requested!r} passed verification against the source "
        f"({reasons}); {fix}"
    )


def select(
    request: BuildRequest, candidates: Sequence[Candidate], sessions: Mapping[int, Session]
) -> Selection:
    """Keep the fastest usable candidate (``sessions``: index -> open session of each usable one,
    and of each one over the accuracy budget that still loaded).

    More than one is measured interleaved on the first check input (those over the budget too,
    so that the reason can say what the budget cost); none usable is an error that names every
    candidate's reason. The selection's ``reason`` says why the winner won.
    """
    usable = [i for i, c in enumerate(candidates) if c.usable and i in sessions]
    if not usable:
        raise _no_candidate(request, candidates)
    over = [
        i
        for i, c in enumerate(candidates)
        if i in sessions and not c.usable and c.score is not None and not c.score.met
    ]
    timed = usable + over
    results = list(candidates)
    method = "only candidate"
    if len(timed) > 1:
        log.info("measuring %d candidates", len(timed))
        timings = measure_interleaved(
            [sessions[i].run for i in timed],
            request.checks.feeds[:1],
            warmup=3,
            rounds=5,
            max_rounds=200,
            budget_s=request.budget_s,
        )
        for i, median in zip(timed, timings.medians_ms, strict=True):
            results[i] = replace(results[i], median_ms=median)
        method = "measured: lowest median latency among verified candidates"
        if request.evaluation is not None:
            method += " within the accuracy budget"
    if len(usable) < len(candidates):
        failed = len(candidates) - len(usable)
        if len(usable) == 1:
            method = "the only candidate that built and passed verification"
        method += f" ({failed} of {len(candidates)} failed: see their errors)"
    best = min(usable, key=lambda i: results[i].median_ms or 0.0)
    reason = explain(
        results, best, budgeted=request.evaluation is not None, verified=request.verify
    )
    log.info("selected %s", reason)
    return Selection(results[best], tuple(results), method, reason, request.not_tried)
