"""The candidates of one build, in three steps: build each, verify each, select one.

A candidate that fails (its pipeline, its engine's compile, its load, its check) is recorded
with its reason and the others carry on; a build fails only when no candidate is left.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from duh._version import __version__
from duh.compiler._budget import meet_budget
from duh.compiler._fallback import FallbackConfig, rescue
from duh.compiler._request import BuildRequest, Candidate, Plan, Selection
from duh.compiler._selection import select
from duh.compiler.artifact import write_manifest
from duh.compiler.cache import cache_dir
from duh.compiler.ingest import _first_line, normalize_for_engine
from duh.compiler.pipeline import PassManager
from duh.compiler.verify import compare_outputs, tolerance_for
from duh.errors import DuhError, ModelError, TargetError
from duh.passes import PassContext
from duh.runtime import FORMAT_VERSION, Manifest, Session, TensorSpec, hash_files, load
from duh.targets import CompileContext, get_target, save_onnx
from duh.targets.onnxruntime import exact_int8_copy

__all__ = [
    "build_candidate",
    "lossy",
    "reference_outputs",
    "run_candidates",
    "select",
    "verify_candidate",
]

log = logging.getLogger(__name__)

# What the reference runtime (ONNX Runtime) reads: verification and the passes run on it.
_ORT_MAX_OPSET = 26
_ORT_MAX_IR = 13

Outputs = dict[str, np.ndarray]


def lossy(pipeline: PassManager) -> bool:
    """Whether a pass of ``pipeline`` changes results on purpose (pruning): checked like INT8."""
    return any(p.lossy for p in pipeline.passes)


def reference_outputs(request: BuildRequest, work: Path) -> list[Outputs] | None:
    """The source model's outputs on the check feeds, run on ONNX Runtime (None: no verify)."""
    if not request.verify:
        return None
    source, checks = request.source, request.checks
    ref_path = work / "source.onnx"
    save_onnx(_reference_model(source.model), ref_path)
    try:
        reference = load(ref_path)
    except TargetError as exc:
        reason = str(exc).split(": ", 1)[-1]
        # A reason that names its own fix (a missing locale) needs no guess at the cause.
        guess = "" if "install" in reason else "; the model uses an operator or type it lacks"
        raise ModelError(
            f"ONNX Runtime, the reference duh verifies builds against, cannot run "
            f"{source.path.name}: {reason}{guess}; or build with --no-verify to skip the comparison"
        ) from None
    try:
        return [reference.run(feed) for feed in checks.feeds]
    except DuhError as exc:
        if checks.synthetic:
            raise ModelError(
                f"ONNX Runtime, the reference duh verifies builds against, fails on "
                f"{source.path.name} with synthetic inputs ({_first_line(exc)}); "
                f"{_synthetic_advice(source.inputs, checks.feeds[0], str(exc))}give sample "
                "inputs with --check-data FILE (an .npz with one array per input, named after "
                "it), or build with --no-verify"
            ) from None
        raise ModelError(
            f"ONNX Runtime, the reference duh verifies builds against, fails on "
            f"{source.path.name} with {checks.source} ({_first_line(exc)}); check that the data "
            "fits the model's inputs"
        ) from None
    finally:
        reference.close()


def _reference_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` as the reference runs it: in an opset ONNX Runtime reads, its full-range int8
    weights as uint8 (ORT's u8 x s8 kernels saturate on CPUs without VNNI; u8 x u8 ones are
    exact). A copy only where a weight moves: ``model`` is the source, kept as it is."""
    normalized = normalize_for_engine(model, "onnxruntime", _ORT_MAX_OPSET, _ORT_MAX_IR)
    exact, moved = exact_int8_copy(normalized)
    if moved:
        log.info("reference: %d int8 weight tensors run as uint8, which ONNX Runtime "
                 "multiplies exactly on every x86 CPU", moved)  # fmt: skip
    return exact


# What ONNX Runtime says when a size does not fit: a weight's shape, a Concat's or Reshape's.
_SIZE_WORDS = re.compile(r"shape|dimension|dims|rank|reshape|broadcast", re.IGNORECASE)


def _synthetic_advice(
    inputs: Sequence[TensorSpec], feed: Mapping[str, np.ndarray], error: str
) -> str:
    """The fix to name first for a reference run that failed on synthetic inputs: where the
    error is about sizes and the model has dynamic dimensions, the sizes guessed for them."""
    dynamic = [s for s in inputs if s.is_dynamic and s.name in feed]
    if not dynamic or not _SIZE_WORDS.search(error):
        return "the model needs inputs that mean something (ids, lengths, rates): "
    guessed = ", ".join(
        f"{s.name}{list(s.shape)} ran as {'x'.join(map(str, feed[s.name].shape))}" for s in dynamic
    )
    return (
        f"the sizes guessed for its dynamic dimensions may not fit ({guessed}): fix them with "
        "--shape NAME=AxBxC (the sizes the model runs on, e.g. a feature count its weights "
        "fix), or "
    )


def _pass_context(request: BuildRequest, plan: Plan, workdir: Path) -> PassContext:
    spec = plan.spec
    return PassContext(
        engine=spec.engine,
        device=spec.device,
        precision=spec.precision,
        workdir=workdir,
        calibration=request.calibration,
        cache_dir=cache_dir("passes"),
        shapes=dict(request.shapes),
    )


def build_candidate(request: BuildRequest, index: int | str, plan: Plan, work: Path) -> Candidate:
    """Run ``plan``'s pipeline on the source and compile it; a failure is the result's error."""
    spec, pipeline = plan.spec, plan.pipeline
    base = Candidate(spec, tuple(pipeline.describe()))
    plugin = get_target(spec.engine)
    passes_dir = work / f"passes-{index}"
    passes_dir.mkdir()
    ctx = _pass_context(request, plan, passes_dir)
    model = onnx.ModelProto()
    model.CopyFrom(request.source.model)
    out_dir = work / f"candidate-{index}-{spec.engine}"
    out_dir.mkdir()
    try:
        # Passes run ONNX Runtime (onnxsim, quantization): give them a model it reads.
        model = normalize_for_engine(model, "onnxruntime", _ORT_MAX_OPSET, _ORT_MAX_IR)
        model, records = pipeline.run(model, ctx)
        model = normalize_for_engine(model, spec.engine, plugin.max_opset, plugin.max_ir_version)
        log.info("compiling for %s", spec.name)
        compile_ctx = CompileContext(
            spec, request.host, cache_dir(spec.engine), dict(request.shapes),
            dict(request.target_options), tuple(request.checks.feeds),
        )  # fmt: skip
        compiled = plugin.compile(model, compile_ctx, out_dir)
    except DuhError as exc:
        log.info("candidate %s failed: %s", spec.name, exc)
        return replace(base, error=str(exc), failure=exc)
    finally:
        shutil.rmtree(passes_dir, ignore_errors=True)
    return replace(base, records=tuple(records), compiled=compiled, out_dir=out_dir)


def _open(request: BuildRequest, candidate: Candidate) -> Session:
    """Load a built candidate through the runtime, as its artifact will be loaded."""
    assert candidate.out_dir is not None and candidate.compiled is not None
    spec, compiled, out_dir = candidate.spec, candidate.compiled, candidate.out_dir
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        duh_version=__version__,
        engine=spec.engine,
        engine_version=compiled.engine_version,
        target={"engine": spec.engine, "device": spec.device, "precision": spec.precision},
        inputs=request.source.inputs,
        outputs=request.source.outputs,
        files=hash_files(out_dir),
        engine_config=dict(compiled.engine_config),
        host_requirements=dict(compiled.host_requirements),
    )
    write_manifest(out_dir, manifest)
    try:
        # Candidates are measured interleaved: no idle spinning pool may take the next one's cores.
        return load(out_dir, spin=False)
    finally:
        (out_dir / "manifest.json").unlink()


def _criteria(request: BuildRequest, candidate: Candidate, pipeline: PassManager) -> str:
    if request.tolerance is not None or candidate.spec.precision == "int8":
        return ""
    if request.quantized_source:
        return (
            "INT8 criteria (cosine, top-1): the source is already quantized "
            f"({', '.join(request.quantized_source)})"
        )
    if lossy(pipeline):
        return "INT8 criteria (cosine, top-1): the pipeline changes results on purpose"
    return ""


def verify_candidate(
    request: BuildRequest, candidate: Candidate, plan: Plan, expected: Sequence[Outputs] | None
) -> tuple[Candidate, Session | None]:
    """Load a built candidate and compare it with the source's ``expected`` outputs.

    Returns the candidate with its report (or its error) and, when it may be kept, its open
    session; a candidate that failed its check comes back without one.
    """
    if candidate.error is not None:
        return candidate, None
    spec = candidate.spec
    try:
        session = _open(request, candidate)
    except DuhError as exc:
        log.info("candidate %s does not load: %s", spec.name, exc)
        return replace(candidate, error=str(exc), failure=exc), None
    if expected is None:
        return candidate, session
    log.info("verifying %s on %d inputs", spec.name, len(expected))
    criteria = _criteria(request, candidate, plan.pipeline)
    tol = request.tolerance or tolerance_for(spec.precision, lossy=bool(criteria))
    if request.float16_source and spec.precision == "fp32" and not (request.tolerance or criteria):
        # Engines round a float16 graph differently (some compute it in float32).
        tol, criteria = tolerance_for("fp16"), "fp16 tolerances: the source computes in float16"
    try:
        report = compare_outputs(
            expected, session, request.checks.feeds, spec.precision, tol,
            request.checks.source, criteria,
        )  # fmt: skip
    except DuhError as exc:
        session.close()
        return replace(candidate, error=f"fails on the check inputs: {exc}", failure=exc), None
    candidate = replace(candidate, report=report)
    if report.passed and request.framework is not None:
        # A front end's source: the artifact answers for the framework's outputs too, not
        # only for the ONNX the front end exported.
        log.info("verifying %s against the original framework", spec.name)
        framework = compare_outputs(
            request.framework, session, request.checks.feeds, spec.precision, tol,
            request.checks.source, criteria,
        )  # fmt: skip
        candidate = replace(candidate, framework_report=framework)
    if not candidate.usable:
        session.close()
        return candidate, None
    return candidate, session


def _fall_back(
    request: BuildRequest,
    work: Path,
    expected: Sequence[Outputs] | None,
    candidates: list[Candidate],
    sessions: dict[int, Session],
    config: FallbackConfig,
) -> None:
    """No candidate passed: retry the static INT8 ones that failed their check, best first,
    with their most sensitive ops kept in float; stop at the first that passes."""
    failed = [
        i
        for i, c in enumerate(candidates)
        if c.error is None and c.report is not None and not c.report.passed
    ]
    failed.sort(key=lambda i: -min((o.cosine for o in candidates[i].report.outputs), default=0))  # type: ignore[union-attr]
    for i in failed:
        plan = request.plans[i]
        ranking_dir = work / f"ranking-{i}"
        ranking_dir.mkdir()

        def attempt(
            retry: Plan, retry_request: BuildRequest, tag: str, i: int = i
        ) -> tuple[Candidate, Session | None]:
            built = build_candidate(retry_request, f"{i}-{tag}", retry, work)
            return verify_candidate(retry_request, built, retry, expected)

        try:
            rescued, session = rescue(
                request, plan, candidates[i], _pass_context(request, plan, ranking_dir),
                attempt, config,
            )  # fmt: skip
        finally:
            shutil.rmtree(ranking_dir, ignore_errors=True)
        candidates[i] = rescued
        if session is not None:
            sessions[i] = session
            return


def _within_budget(
    request: BuildRequest,
    index: int,
    plan: Plan,
    candidate: Candidate,
    session: Session | None,
    work: Path,
    expected: Sequence[Outputs] | None,
) -> tuple[Candidate, Session | None]:
    """Hold a candidate to the accuracy budget, rebuilding a static INT8 one with its most
    sensitive ops in float until it meets it (``duh.compiler._budget``)."""

    def opened(built: Candidate, kept: Session | None) -> Session | None:
        # A candidate that failed its check is still evaluated: its metric is in the numbers.
        if kept is not None or built.error is not None or built.out_dir is None:
            return kept
        try:
            return _open(request, built)
        except DuhError:
            return None

    def attempt(
        retry: Plan, retry_request: BuildRequest, tag: str
    ) -> tuple[Candidate, Session | None]:
        built = build_candidate(retry_request, f"{index}-{tag}", retry, work)
        checked, kept = verify_candidate(retry_request, built, retry, expected)
        return checked, opened(checked, kept)

    ranking_dir = work / f"budget-{index}"
    ranking_dir.mkdir()
    try:
        return meet_budget(
            request, plan, candidate, opened(candidate, session),
            _pass_context(request, plan, ranking_dir), attempt,
        )  # fmt: skip
    finally:
        shutil.rmtree(ranking_dir, ignore_errors=True)


def run_candidates(
    request: BuildRequest, work: Path, fallback: FallbackConfig = FallbackConfig()
) -> Selection:
    """Build, verify and select among the request's candidates, in ``work``.

    When none passes, static INT8 candidates that failed their check are retried with their
    most sensitive ops kept in float (``fallback``).
    """
    expected = reference_outputs(request, work)
    candidates: list[Candidate] = []
    sessions: dict[int, Session] = {}
    try:
        for index, plan in enumerate(request.plans):
            built = build_candidate(request, index, plan, work)
            checked, session = verify_candidate(request, built, plan, expected)
            if request.evaluation is not None:
                checked, session = _within_budget(
                    request, index, plan, checked, session, work, expected
                )
            candidates.append(checked)
            if session is not None:
                sessions[index] = session
        if not sessions and request.evaluation is None:
            _fall_back(request, work, expected, candidates, sessions, fallback)
        return select(request, candidates, sessions)
    finally:
        for session in sessions.values():
            session.close()
