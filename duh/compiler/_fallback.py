"""Accuracy-aware INT8: a static INT8 candidate that fails verification is retried, not dropped.

The way NNCF's accuracy control and neural-compressor's tuning go about it: rank the quantized
ops by sensitivity (the error each adds between the float model and its QDQ form, on a few
calibration samples), keep the most sensitive ones in float, with the ops that feed them, and
rebuild, in a bounded number of rounds (1, 2, 4, ... ops, at most a fraction of them); when
minmax ranges fail, the percentile calibrator is tried too, and for OpenVINO, NNCF's quantizer
(its own ranges and bias correction, which undoes the mean shift many small errors add up to
where no op stands out). The first round that passes is kept
and the quantize pass's notes say which ops stayed in float and why. A candidate that passes at
once never comes here: the fallback costs nothing on a model INT8 suits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from duh.compiler._request import BuildRequest, Candidate, Plan
from duh.compiler.pipeline import PassManager, PassRecord
from duh.compiler.verify import VerifyReport
from duh.errors import DuhError
from duh.passes import PassContext, pass_config
from duh.passes.quantize import (
    OpSensitivity,
    Quantize,
    float_region,
    rank_sensitivity,
    rerank_by_output,
)
from duh.runtime import Session
from duh.targets import PassSpec

__all__ = ["FallbackConfig", "by_output", "quantized_nothing", "rescue"]

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
Attempt = Callable[[Plan, BuildRequest, str], tuple[Candidate, Session | None]]


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """How hard a failed static INT8 candidate is retried before it is given up."""

    enabled: bool = field(
        default=True, metadata={"help": "retry a failed static INT8 candidate with ops in float"}
    )
    max_rounds: int = field(
        default=8, metadata={"help": "rebuilds at most (each one a compile and a check)"}
    )
    max_fraction: float = field(
        default=0.25, metadata={"help": "share of the quantized ops that may be kept in float"}
    )
    min_ops: int = field(
        default=16,
        metadata={"help": "ops that may be kept in float whatever the share (small models)"},
    )
    samples: int = field(
        default=4, metadata={"help": "calibration samples the sensitivity ranking runs on"}
    )
    nncf_rounds: int = field(
        default=5,
        metadata={"help": "OpenVINO: rebuilds by NNCF's quantizer at most, besides max_rounds"},
    )
    measured: int = field(
        default=16,
        metadata={"help": "most sensitive ops whose gain is measured (each one re-quantized)"},
    )

    def limit(self, quantized: int) -> int:
        """How many of ``quantized`` ops may be kept in float."""
        return max(self.min_ops, int(quantized * self.max_fraction))


def _cosine(report: VerifyReport | None) -> float:
    if report is None or not report.outputs:
        return float("-inf")
    return min(o.cosine for o in report.outputs)


def _quantize_index(plan: Plan) -> int | None:
    for i, p in enumerate(plan.pipeline.passes):
        if isinstance(p, Quantize):
            return i
    return None


def _with(plan: Plan, index: int, **changes: object) -> PassManager:
    """The passes of ``plan`` from its quantize pass on, that pass's config changed."""
    specs = []
    for i, p in enumerate(plan.pipeline.passes[index:], start=index):
        config = pass_config(p)
        if i == index:
            config.update(changes)
        specs.append(PassSpec(p.name, config))
    return PassManager(specs)


# The ops NNCF quantizes first in a CNN: those with weights. Leaving the elementwise ops of an
# activation (a decomposed hardswish: Add, Clip, Mul, Div) float spares a Q/DQ pair per step.
_WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True, slots=True)
class _Setting:
    """One way to quantize: the calibrator and the op types (empty: all the quantizer has), by
    onnxruntime's static quantizer or (``mode`` "nncf") by NNCF's."""

    calibrator: str
    op_types: tuple[str, ...]
    mode: str = "static"

    def describe(self) -> str:
        if self.mode == "nncf":
            return "NNCF (bias-corrected), all ops"
        ops = "weighted ops only" if self.op_types else "all ops"
        return f"{self.calibrator} ranges, {ops}"


def _prefix(
    request: BuildRequest, plan: Plan, index: int, ctx: PassContext
) -> tuple[onnx.ModelProto, list[PassRecord]]:
    """The float model the quantize pass reads, and the records of the passes before it."""
    from duh.compiler.ingest import normalize_for_engine

    model = onnx.ModelProto()
    model.CopyFrom(request.source.model)
    model = normalize_for_engine(model, "onnxruntime", 26, 13)
    specs = [PassSpec(p.name, pass_config(p)) for p in plan.pipeline.passes[:index]]
    return PassManager(specs).run(model, ctx)


def _ranking(
    request: BuildRequest,
    plan: Plan,
    index: int,
    ctx: PassContext,
    float_model: onnx.ModelProto,
    setting: _Setting,
    config: FallbackConfig,
) -> tuple[tuple[OpSensitivity, ...], onnx.ModelProto]:
    """The quantized ops of ``setting`` ranked by sensitivity, and the QDQ model ranked: the
    proxy ranking first, then its top ops by what leaving each one (with its region, as the
    rounds keep it) out of INT8 gains."""
    quantize = _with(plan, index, **_changes(setting, ())).passes[0]
    qdq = quantize.run(float_model, ctx).model
    assert request.calibration is not None
    feeds = request.calibration.feeds[: config.samples]
    ranked = rank_sensitivity(float_model, qdq, feeds)
    quantized = {s.node for s in ranked}
    limit = config.limit(len(ranked))

    def regions(node: str) -> list[list[str]]:
        upstream = float_region(qdq, [node])
        wide = len(upstream) > limit or quantized <= set(upstream)
        return [[node]] if wide else [[node], upstream]

    return (
        by_output(
            plan, index, ctx, float_model, setting, qdq, ranked, feeds, config.measured, regions
        ),
        qdq,
    )


def _promise(
    ranked: Sequence[OpSensitivity], cosine: float, wanted: float
) -> tuple[bool, float, float]:
    """How well op rounds under a ranking promise to do, best highest: whether its top op in
    float is measured to pass (``cosine``, the setting's own, plus its gain), then, for one
    that passes, the fewest weighted ops that takes into float, else the cosine it reaches."""
    if not ranked or ranked[0].gain is None:
        return (False, cosine, 0.0)
    top = ranked[0]
    reached = cosine + (top.gain or 0.0)
    kinds = {s.node: s.op_type for s in ranked}
    weighted = sum(1 for n in top.float_with if kinds.get(n) in _WEIGHTED)
    if reached >= wanted:
        return (True, -float(weighted), reached)
    return (False, reached, -float(weighted))


def _region(
    qdq: onnx.ModelProto, top: Sequence[OpSensitivity], quantized: set[str], limit: int
) -> list[str]:
    """What a round that blames ``top`` keeps in float: for an op whose gain was measured,
    what it was measured with; for the others, the op and its quantized feeders (its inputs
    would stay quantized by their producers). The ops alone where that is too wide, or where
    it is every quantized op."""
    kept = {n for s in top if s.gain is not None for n in (s.float_with or (s.node,))}
    kept.update(float_region(qdq, [s.node for s in top if s.gain is None]))
    if len(kept) > limit or quantized <= kept:
        return [s.node for s in top]
    return sorted(kept)


def by_output(
    plan: Plan,
    index: int,
    ctx: PassContext,
    float_model: onnx.ModelProto,
    setting: _Setting,
    qdq: onnx.ModelProto,
    ranked: Sequence[OpSensitivity],
    feeds: Sequence[dict[str, np.ndarray]],
    measured: int,
    regions: Callable[[str], Sequence[Sequence[str]]],
) -> tuple[OpSensitivity, ...]:
    """``ranked`` with its top ``measured`` ops ranked again by what leaving each one out of
    INT8 gains at the model's outputs: the quantize pass of ``plan`` run with each of
    ``regions(op)`` excluded (the op alone, the op with the ops its Q/DQ pairs tie it to)."""
    if ctx.cache_dir is None:  # each op left out re-quantizes: on the ranges calibrated once
        ctx = replace(ctx, cache_dir=ctx.workdir / "fallback-cache")

    def without(ops: Sequence[str]) -> onnx.ModelProto:
        excluded = _with(plan, index, **_changes(setting, ops)).passes[0]
        return excluded.run(float_model, ctx).model

    return rerank_by_output(float_model, qdq, ranked, feeds, without, regions, measured)


def _changes(setting: _Setting, exclude: Sequence[str]) -> dict[str, object]:
    return {
        "mode": setting.mode,
        "calibrator": setting.calibrator,
        "op_types": list(setting.op_types),
        "exclude_nodes": list(exclude),
    }


def rescue(
    request: BuildRequest,
    plan: Plan,
    failed: Candidate,
    ctx: PassContext,
    attempt: Attempt,
    config: FallbackConfig = FallbackConfig(),
) -> tuple[Candidate, Session | None]:
    """Retry ``failed`` (a static INT8 candidate that failed its check) with ops kept in float.

    ``attempt(plan, request, tag)`` builds and verifies one retry. The rounds: weighted ops only;
    the percentile calibrator (when minmax failed), with all ops and with weighted ones; then,
    under the best of those, the most sensitive 1, 2, 4, ... ops and their feeders in float.
    Returns the first retry that passes, with its session; or ``failed`` with its rounds and
    the best cosine reached in ``fallback``.
    """
    index = _quantize_index(plan)
    if (
        not config.enabled
        or index is None
        or failed.report is None
        or failed.spec.precision != "int8"
        or request.calibration is None
    ):
        return failed, None
    quantize = plan.pipeline.passes[index]
    assert isinstance(quantize, Quantize)
    if quantize.resolved_mode(request.source.model) != "static":
        return failed, None
    plain = _Setting(quantize.calibrator, tuple(quantize.op_types))
    settings = []
    if not quantize.op_types and failed.spec.engine == "openvino" and _has_nncf():
        settings.append(_Setting(quantize.calibrator, (), "nncf"))
    if not quantize.op_types:
        settings.append(_Setting(quantize.calibrator, _WEIGHTED))
    if quantize.calibrator == "minmax":
        settings.append(_Setting("percentile", plain.op_types))
        if not quantize.op_types:
            settings.append(_Setting("percentile", _WEIGHTED))
    tried: list[str] = []
    best = (_cosine(failed.report), plain, f"{plain.describe()}, no op in float")
    cosines = {plain: best[0]}  # each setting's cosine with no op in float
    rounds = 0
    try:
        float_model, records = _prefix(request, plan, index, ctx)
    except DuhError as exc:
        log.info("INT8 fallback for %s: the passes before quantize failed: %s", failed.spec, exc)
        return failed, None
    retry_request = replace(request, source=replace(request.source, model=float_model))

    # Rebuilds by quantizer: onnxruntime's static rounds and NNCF's each have their own cap.
    spent = {"static": 0, "nncf": 0}
    caps = {"static": config.max_rounds, "nncf": config.nncf_rounds}

    def one(setting: _Setting, kept: Sequence[str], why: str) -> tuple[Candidate, Session | None]:
        nonlocal rounds, best
        rounds += 1
        spent[setting.mode] += 1
        exclude = sorted({*quantize.exclude_nodes, *kept})
        pipeline = _with(plan, index, **_changes(setting, exclude))
        log.info("INT8 fallback round %d for %s: %s", rounds, failed.spec.name, why)
        built, session = attempt(Plan(plan.spec, pipeline), retry_request, f"fb{rounds}")
        cosine = _cosine(built.report)
        if not kept:
            cosines[setting] = cosine
        tried.append(f"{why}: cosine {cosine:.4f}")
        if cosine > best[0]:
            best = (cosine, setting, why)
        return built, session

    # NNCF first: where its graph passes as it is, no static round is needed.
    for setting in sorted(settings, key=lambda s: s.mode != "nncf"):
        if spent[setting.mode] >= caps[setting.mode]:
            continue
        built, session = one(setting, (), f"{setting.describe()}, no op in float")
        if session is not None:
            return _passed(built, records, failed, tried), session
    # The op rounds run under the setting that came closest, or under its weighted-ops-only
    # form where leaving one op out gains more there (fewer quantized ops, fewer of them whose
    # error a float op downstream still reads quantized). Where that is NNCF's graph, the
    # static setting that came closest follows it when its rounds fail.
    start = max((s for s in cosines if s.mode == "static"), key=lambda s: cosines[s])
    nncf = [s for s in cosines if s.mode == "nncf" and cosines[s] > cosines[start]]
    stopped = ""

    def ranked_under(
        base: _Setting,
    ) -> tuple[_Setting, tuple[OpSensitivity, ...], onnx.ModelProto]:
        forms = [base]
        if base.mode == "static" and not base.op_types and not quantize.op_types:
            forms.append(_Setting(base.calibrator, _WEIGHTED))
        chosen, qdq = base, float_model
        ranked: tuple[OpSensitivity, ...] = ()
        score: tuple[bool, float, float] = (False, float("-inf"), float("-inf"))
        for setting in forms:
            # NNCF's graph is ranked by its static form: each op measured under NNCF would
            # cost an NNCF run.
            measured_as = _Setting(setting.calibrator, setting.op_types)
            try:
                got, made = _ranking(request, plan, index, ctx, float_model, measured_as, config)
            except DuhError as exc:
                log.info("INT8 fallback for %s: no sensitivity ranking: %s", failed.spec.name, exc)
                continue
            wanted = failed.report.tolerance.min_cosine  # type: ignore[union-attr]
            reached = _promise(got, cosines.get(setting, best[0]), wanted)
            if reached > score:
                chosen, ranked, qdq, score = setting, got, made, reached
        return chosen, ranked, qdq

    def op_rounds(
        setting: _Setting, ranked: tuple[OpSensitivity, ...], qdq: onnx.ModelProto
    ) -> tuple[Candidate, Session] | None:
        """Rounds under ``setting`` with the top 1, 2, 4, ... ops of ``ranked`` in float."""
        nonlocal best, stopped
        limit = config.limit(len(ranked))
        k = 1
        quantized = {s.node for s in ranked}
        while ranked and spent[setting.mode] < caps[setting.mode] and k <= limit:
            kept = _region(qdq, ranked[:k], quantized, limit)
            if quantized <= set(kept):
                # Nothing would stay quantized: an fp32 model under an INT8 name is no rescue.
                stopped = (
                    "; the next round would keep every quantized op in float, so it stopped: "
                    "INT8 cannot hold this model's outputs, build --target cpu-bf16 (where the "
                    "CPU has it) or cpu instead"
                )
                return None
            names = ", ".join(s.describe() for s in ranked[:k])
            ops = f"{len(kept)} op{'' if len(kept) == 1 else 's'}"
            why = f"{setting.describe()}, {ops} in float around the most sensitive {names}"
            before = best
            built, session = one(setting, kept, why)
            if session is not None and quantized_nothing(built):
                best = before  # an all-float round is no INT8 result to quote
                # Everything quantizable was in float (ops the ranking never saw, such as
                # Unsqueeze or Transpose, are quantized only beside quantized neighbours).
                session.close()
                stopped = "; its last round left no op quantized, so it stopped"
                return None
            if session is not None:
                return _passed(built, records, failed, tried, kept, ranked[:k]), session
            k *= 2
        return None

    for base in (*nncf[:1], start):
        passed = op_rounds(*ranked_under(base))
        if passed is not None:
            return passed
    summary = (
        f"INT8 fallback: {rounds} rebuild(s) with ops kept in float did not pass (best cosine "
        f"{best[0]:.4f}, with {best[2]}{stopped})"
    )
    return replace(failed, fallback=(*tried, summary)), None


def _has_nncf() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def quantized_nothing(built: Candidate) -> bool:
    """Whether the quantize pass of ``built`` inserted no Q/DQ node (an fp32 model by any name)."""
    records = [r for r in built.records if r.name == "quantize"]
    return bool(records) and all(r.nodes_after <= r.nodes_before for r in records)


def _passed(
    built: Candidate,
    prefix: Sequence[PassRecord],
    failed: Candidate,
    tried: Sequence[str],
    kept: Sequence[str] = (),
    blamed: Sequence[OpSensitivity] = (),
) -> Candidate:
    """The retry that passed, its records whole again (the passes before quantize included)."""
    notes = [
        f"INT8 fallback: plain static INT8 failed verification (cosine "
        f"{_cosine(failed.report):.4f}); passed after {len(tried)} rebuild(s): {tried[-1]}",
    ]
    if kept:
        notes.append(
            "kept in float: "
            + ", ".join(kept)
            + " (sensitivity: "
            + ", ".join(s.describe() for s in blamed)
            + ")"
        )
    records = list(built.records)
    for i, record in enumerate(records):
        if record.name == "quantize":
            records[i] = replace(record, notes=(*record.notes, *notes))
    return replace(built, records=(*prefix, *records), fallback=tuple(tried))
