"""Accuracy-aware INT8 under a user's budget, the same for every engine that runs Q/DQ graphs.

Quantize, evaluate the built candidate on the eval data with its own engine, and while the
metric's drop is over the budget: rank the quantized ops by sensitivity (the error each adds on
a few eval samples, measured on the Q/DQ graph, so the ranking is the same for ONNX Runtime,
OpenVINO and TensorRT), and return the fewest of them to float: the smallest prefix of the
ranking that meets the budget, found by doubling and then bisection, each step a rebuild and an
evaluation on the candidate's engine. An op kept in float takes along what its Q/DQ placement
needs (on op outputs, ONNX Runtime's, the readers of its output too). When even every op in
float misses the budget, the build fails with the numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import onnx

from duh.compiler._accuracy import EvalSet
from duh.compiler._fallback import (
    _changes,
    _prefix,
    _quantize_index,
    _Setting,
    _with,
    by_output,
)
from duh.compiler._request import BudgetScore, BuildRequest, Candidate, Plan
from duh.errors import DuhError
from duh.passes import PassContext
from duh.passes.quantize import OpSensitivity, Quantize, float_readers, rank_sensitivity
from duh.runtime import Session

__all__ = ["BudgetError", "meet_budget"]

log = logging.getLogger(__name__)

# attempt(plan, request, tag) -> the built candidate and its open session (None: it did not
# load); a candidate that failed its check comes back open too, so that its metric is known.
Attempt = Callable[[Plan, BuildRequest, str], tuple[Candidate, Session | None]]

_RANK_SAMPLES = 16
_MEASURED = 16  # the most sensitive ops whose gain at the outputs is measured
_MAX_ROUNDS = 10


class BudgetError(DuhError):
    """No build of the target meets the accuracy budget."""


@dataclass(frozen=True, slots=True)
class _Round:
    ops: int
    kept: tuple[str, ...]
    metric: float
    drop: float
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "ranked_ops": self.ops,
            "float_layers": len(self.kept),
            "metric": round(self.metric, 6),
            "drop": round(self.drop, 6),
            "accepted": self.passed,
        }


def _evaluate(evaluation: EvalSet, session: Session) -> tuple[float, float]:
    value = evaluation.score(evaluation.run(session))
    return value, evaluation.drop(value)


def _numbers(evaluation: EvalSet, value: float, drop: float) -> str:
    budget = evaluation.budget
    kind = "relative " if budget.drop_type == "relative" else ""
    return (
        f"{budget.metric} {value:.4f} vs fp32 {evaluation.fp32:.4f}: {kind}drop {drop:.4f} "
        f"{'<=' if drop <= budget.max_drop else '>'} {budget.max_drop:g}"
    )


def _score(
    evaluation: EvalSet, numbers: tuple[float, float], met: bool, how: str = ""
) -> BudgetScore:
    budget = evaluation.budget
    return BudgetScore(budget.metric, numbers[0], numbers[1], budget.max_drop, met, how)


def _section(
    evaluation: EvalSet,
    precision: str,
    plain: tuple[float, float],
    final: tuple[float, float],
    kept: Sequence[str],
    ranked: Sequence[OpSensitivity],
    quantized: int,
    rounds: Sequence[_Round],
) -> dict[str, Any]:
    """The manifest's ``build.accuracy``: the budget, both metrics, the layers kept in float."""
    floats = set(kept)
    return {
        **evaluation.budget.to_json(),
        # The candidate's precision: the int8* keys below hold its metric whatever it is.
        "precision": precision,
        "eval": evaluation.source,
        "samples": len(evaluation.feeds),
        "labels_used": evaluation.labels is not None,
        "fp32": round(evaluation.fp32, 6),
        "int8_plain": round(plain[0], 6),
        "int8_plain_drop": round(plain[1], 6),
        "int8": round(final[0], 6),
        "drop": round(final[1], 6),
        "met": True,
        "float_layers": sorted(kept),
        "quantized_layers": quantized,
        "float_fraction": round(len(kept) / quantized, 4) if quantized else 0.0,
        "sensitivity": [{**s.to_json(), "float": s.node in floats} for s in ranked],
        "rounds": [r.to_json() for r in rounds],
    }


def _ranking(
    request: BuildRequest, plan: Plan, index: int, ctx: PassContext, evaluation: EvalSet
) -> tuple[onnx.ModelProto, list[Any], tuple[OpSensitivity, ...], onnx.ModelProto, str]:
    """The float model before quantize, its pass records, the ranked ops, the Q/DQ model ranked
    and the placement of its Q/DQ pairs."""
    quantize = plan.pipeline.passes[index]
    assert isinstance(quantize, Quantize)
    float_model, records = _prefix(request, plan, index, ctx)
    qdq = quantize.run(float_model, ctx).model
    placement = quantize.resolved_placement(plan.spec.engine)
    feeds = evaluation.feeds[:_RANK_SAMPLES]
    ranked = rank_sensitivity(
        float_model, qdq, feeds, blame_inputs=placement == "inputs", per_channel=True
    )
    setting = _Setting(quantize.calibrator, tuple(quantize.op_types))
    proxy = ranked

    def regions(node: str) -> list[list[str]]:
        readers = _kept(qdq, proxy, [node], placement)
        return [[node]] if readers == [node] else [[node], readers]

    ranked = by_output(
        plan, index, ctx, float_model, setting, qdq, ranked, feeds, _MEASURED, regions
    )
    return float_model, records, ranked, qdq, placement


def _kept(
    qdq: onnx.ModelProto, ranked: Sequence[OpSensitivity], top: Sequence[str], placement: str
) -> list[str]:
    """The ops kept in float for the sensitive ops ``top``: what an op's gain was measured
    with, else the op (and on outputs its readers too)."""
    quantized = {s.node for s in ranked}
    measured = {s.node: s.float_with for s in ranked if s.gain is not None and s.float_with}
    kept: set[str] = set()
    for node in top:
        if node in measured:
            kept.update(measured[node])
            continue
        region = [node] if placement == "inputs" else float_readers(qdq, node)
        kept.update(n for n in region if n in quantized)
    return sorted(kept)


def meet_budget(
    request: BuildRequest,
    plan: Plan,
    first: Candidate,
    session: Session | None,
    ctx: PassContext,
    attempt: Attempt,
) -> tuple[Candidate, Session | None]:
    """Hold ``first`` (built and loaded, its check done) to the request's accuracy budget.

    Returns the candidate that meets it (with ``accuracy`` and ``score`` filled in and its
    session), or a failed candidate whose error and ``score`` give the numbers: one that is not
    static INT8 comes back with its session still open, so that selection can say how fast the
    candidate over the budget was; a static INT8 one comes back with none.
    """
    evaluation = request.evaluation
    assert evaluation is not None
    if first.error is not None or session is None:
        return first, session
    budget = evaluation.budget
    plain = _evaluate(evaluation, session)
    log.info("accuracy budget: %s: %s", first.spec.name, _numbers(evaluation, *plain))
    index = _quantize_index(plan)
    quantize = None if index is None else plan.pipeline.passes[index]
    static = (
        isinstance(quantize, Quantize)
        and first.spec.precision == "int8"
        and request.calibration is not None
        and quantize.resolved_mode(request.source.model) == "static"
    )
    ranked: tuple[OpSensitivity, ...] = ()
    if evaluation.within(plain[0]) and first.usable:
        if static and budget.report_layers:
            assert index is not None
            ranked = _ranking(request, plan, index, ctx, evaluation)[2]
        section = _section(evaluation, first.spec.precision, plain, plain, (), ranked,
                           len(ranked), ())  # fmt: skip
        return replace(first, accuracy=section, score=_score(evaluation, plain, True)), session
    if not static:
        why = "" if first.usable else f"; and its check failed: {_failure(first)}"
        failed = _failed(first, f"{first.spec.name} misses the accuracy budget: "
                         f"{_numbers(evaluation, *plain)}{why}")  # fmt: skip
        score = _score(evaluation, plain, evaluation.within(plain[0]))
        return replace(failed, score=score), session
    session.close()
    assert index is not None and isinstance(quantize, Quantize)
    float_model, records, ranked, qdq, placement = _ranking(request, plan, index, ctx, evaluation)
    retry_request = replace(request, source=replace(request.source, model=float_model))
    setting = _Setting(quantize.calibrator, tuple(quantize.op_types))
    rounds: list[_Round] = []
    opened: dict[int, tuple[Candidate, Session | None]] = {}

    def build_with(k: int) -> bool:
        top = [s.node for s in ranked[:k]]
        kept = _kept(qdq, ranked, top, placement) if k < len(ranked) else [s.node for s in ranked]
        if k >= len(ranked):  # every op in float: nothing the quantizer may touch is left
            kept = sorted({n.name for n in float_model.graph.node})
        exclude = sorted({*quantize.exclude_nodes, *kept})
        pipeline = _with(plan, index, **_changes(setting, exclude))
        built, opened_session = attempt(Plan(plan.spec, pipeline), retry_request, f"ab{k}")
        if built.error is not None or opened_session is None:
            raise BudgetError(
                f"accuracy budget: {first.spec.name} with the {k} most sensitive op(s) in "
                f"float did not build: {built.error}"
            )
        value, drop = _evaluate(evaluation, opened_session)
        ok = evaluation.within(value) and built.usable
        shown = kept if k < len(ranked) else [s.node for s in ranked]
        rounds.append(_Round(k, tuple(shown), value, drop, ok))
        log.info("accuracy budget round %d: %d op(s) in float: %s", len(rounds), len(shown),
                 _numbers(evaluation, value, drop))  # fmt: skip
        if ok:
            opened[k] = (built, opened_session)
        else:
            opened_session.close()
        return ok

    try:
        chosen = _search(build_with, len(ranked))
    except BudgetError as exc:
        _close(opened)
        score = _score(evaluation, plain, False, "a rebuild with layers in float failed")
        return replace(_failed(first, str(exc)), score=score), None
    if chosen is None or chosen >= len(ranked):
        _close(opened)
        last = rounds[-1] if rounds else None
        numbers = "" if last is None else _numbers(evaluation, last.metric, last.drop)
        how = "plain INT8 over the budget"
        if chosen is None:
            how += ", and still over it with every layer in float"
            text = (
                f"accuracy budget missed even with every layer of {first.spec.name} in float "
                f"({numbers}; plain INT8 {plain[0]:.4f}): the float pipeline itself loses more "
                f"than --max-drop {budget.max_drop:g}; loosen the budget or drop the lossy passes"
            )
        else:
            how += ", and met only with every layer in float"
            text = (
                f"accuracy budget met only with every layer of {first.spec.name} in float "
                f"({numbers}; plain INT8 {plain[0]:.4f}): no INT8 build is left; loosen "
                "--max-drop or build an fp32/bf16 target"
            )
        return replace(_failed(first, text), score=_score(evaluation, plain, False, how)), None
    built, kept_session = opened.pop(chosen)
    _close(opened)
    final = rounds[[r.ops for r in rounds].index(chosen)]
    kept = list(final.kept)
    section = _section(evaluation, first.spec.precision, plain, (final.metric, final.drop), kept,
                       ranked, len(ranked), rounds)  # fmt: skip
    note = (
        f"accuracy budget: plain INT8 {_numbers(evaluation, *plain)}; met with "
        f"{len(kept)} of {len(ranked)} quantized op(s) in float ({', '.join(kept)}): "
        f"{_numbers(evaluation, final.metric, final.drop)}"
    )
    out = list(built.records)
    for i, record in enumerate(out):
        if record.name == "quantize":
            out[i] = replace(record, notes=(*record.notes, note))
    how = (
        f"{len(kept)} of {len(ranked)} quantized layers in float (plain INT8: "
        f"{_score(evaluation, plain, False).text()})"
    )
    score = _score(evaluation, (final.metric, final.drop), True, how)
    result = replace(built, records=(*records, *out), accuracy=section, score=score)
    return result, kept_session


def _search(build_with: Callable[[int], bool], n: int) -> int | None:
    """The smallest k in 1..n with ``build_with(k)`` true, assuming it stays true once it is:
    doubling, then bisection. None when not even n is."""
    if n == 0:
        return None
    lo, k, rounds = 0, 1, 0
    hi: int | None = None
    while hi is None and rounds < _MAX_ROUNDS:
        rounds += 1
        if build_with(k):
            hi = k
        elif k >= n:
            return None
        else:
            lo, k = k, min(2 * k, n)
    if hi is None:
        return None
    while hi - lo > 1 and rounds < _MAX_ROUNDS:
        rounds += 1
        mid = (lo + hi) // 2
        if build_with(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _close(opened: dict[int, tuple[Candidate, Session | None]]) -> None:
    for _, s in opened.values():
        if s is not None:
            s.close()
    opened.clear()


def _failure(candidate: Candidate) -> str:
    report = candidate.report
    return report.failure_text() if report is not None and not report.passed else "?"


def _failed(candidate: Candidate, text: str) -> Candidate:
    return replace(candidate, error=text, failure=BudgetError(text))
