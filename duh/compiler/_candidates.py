"""Building, verifying and measuring the candidate targets of one build."""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import duh
from duh.calibration import CalibrationSet
from duh.compiler.artifact import write_manifest
from duh.compiler.cache import cache_dir
from duh.compiler.ingest import SourceModel, normalize_for_engine
from duh.compiler.pipeline import PassManager, PassRecord
from duh.compiler.verify import Tolerance, VerifyReport, compare, synthetic_feeds, tolerance_for
from duh.errors import ModelError, TargetError
from duh.host import HostInfo
from duh.passes import PassContext
from duh.runtime import FORMAT_VERSION, Manifest, Session, load
from duh.runtime._manifest import hash_files
from duh.targets import CompileContext, TargetSpec, get_target
from duh.targets._util import save_onnx

__all__ = ["CandidateResult", "build_candidates", "lossy"]

log = logging.getLogger(__name__)

# What the reference runtime (ONNX Runtime) reads: verification and the passes run on it.
_ORT_MAX_OPSET = 26
_ORT_MAX_IR = 13


@dataclass(frozen=True, slots=True)
class CandidateResult:
    """One target tried by a build: its pipeline, and (unless a dry run) its checks and speed."""

    spec: TargetSpec
    passes: tuple[dict[str, Any], ...]
    records: tuple[PassRecord, ...] = ()
    report: VerifyReport | None = None
    median_ms: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The form stored in the manifest's ``selection`` section."""
        return {
            "target": self.spec.name,
            "median_ms": None if self.median_ms is None else round(self.median_ms, 4),
            "verified": None if self.report is None else self.report.passed,
            "error": self.error,
        }


def lossy(pipeline: PassManager) -> bool:
    """Whether a pass of ``pipeline`` changes results on purpose (pruning): checked like INT8."""
    return any(getattr(p, "lossy", False) for p in pipeline.passes)


def _measure(
    sessions: Sequence[Session], feed: Mapping[str, np.ndarray], budget_s: float
) -> list[float]:
    """Median latency (ms) of each session on ``feed``, measured in interleaved rounds."""
    times: list[list[float]] = [[] for _ in sessions]
    for session in sessions:
        for _ in range(3):
            session.run(feed)
    deadline = time.perf_counter() + budget_s
    rounds = 0
    while rounds < 5 or (time.perf_counter() < deadline and rounds < 200):
        for i, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(feed)
            times[i].append((time.perf_counter() - start) * 1000)
        rounds += 1
    return [statistics.median(t) for t in times]


def _check_feeds(
    source: SourceModel,
    calibration: CalibrationSet | None,
    count: int,
    shapes: Mapping[str, tuple[int, ...]],
) -> tuple[list[dict[str, np.ndarray]], str]:
    if calibration is not None and calibration.check and not calibration.synthetic:
        return list(
            calibration.check
        ), f"{len(calibration.check)} held-out samples of {calibration.source}"
    feeds = synthetic_feeds(source.inputs, count, shapes)
    if any(s.is_dynamic for s in source.inputs):
        # A second batch size proves the artifact kept its dynamic dimensions.
        feeds += synthetic_feeds(source.inputs, 1, shapes, seed=1, batch=2)
    return feeds, "seeded synthetic inputs"


def _build_candidate(
    index: int,
    spec: TargetSpec,
    source: SourceModel,
    pipeline: PassManager,
    work: Path,
    host: HostInfo,
    calibration: CalibrationSet | None,
    shapes: Mapping[str, tuple[int, ...]],
    target_options: Mapping[str, str],
) -> tuple[Path, list[PassRecord], Any]:
    plugin = get_target(spec.engine)
    passes_dir = work / f"passes-{index}"
    passes_dir.mkdir()
    ctx = PassContext(
        engine=spec.engine,
        device=spec.device,
        precision=spec.precision,
        workdir=passes_dir,
        calibration=calibration,
        cache_dir=cache_dir("passes"),
        shapes=dict(shapes),
    )
    model = onnx.ModelProto()
    model.CopyFrom(source.model)
    # Passes run ONNX Runtime (onnxsim, quantization): give them a model it reads.
    model = normalize_for_engine(model, "onnxruntime", _ORT_MAX_OPSET, _ORT_MAX_IR)
    model, records = pipeline.run(model, ctx)
    model = normalize_for_engine(model, spec.engine, plugin.max_opset, plugin.max_ir_version)
    out_dir = work / f"candidate-{index}-{spec.engine}"
    out_dir.mkdir()
    log.info("compiling for %s", spec.name)
    compiled = plugin.compile(
        model,
        CompileContext(spec, host, cache_dir(spec.engine), dict(shapes), dict(target_options)),
        out_dir,
    )
    shutil.rmtree(passes_dir, ignore_errors=True)
    return out_dir, records, compiled


def build_candidates(
    specs: Sequence[TargetSpec],
    pipelines: Sequence[PassManager],
    source: SourceModel,
    work: Path,
    host: HostInfo,
    calibration: CalibrationSet | None,
    shapes: Mapping[str, tuple[int, ...]],
    target_options: Mapping[str, str],
    verify: bool,
    check_samples: int,
    tolerance: Tolerance | None,
    budget: float,
    requested: str,
) -> tuple[CandidateResult, Path, Any, list[CandidateResult], str]:
    reference: Session | None = None
    feeds, feed_source = _check_feeds(source, calibration, check_samples, shapes)
    if verify:
        ref_path = work / "source.onnx"
        save_onnx(
            normalize_for_engine(source.model, "onnxruntime", _ORT_MAX_OPSET, _ORT_MAX_IR), ref_path
        )
        try:
            reference = load(ref_path)
        except TargetError as exc:
            raise ModelError(
                f"ONNX Runtime, the reference duh verifies builds against, cannot run "
                f"{source.path.name}: {str(exc).split(': ', 1)[-1]}; the model uses an operator "
                "or type it lacks: build with --no-verify to skip the comparison"
            ) from None
    results: list[CandidateResult] = []
    built: list[tuple[int, Path, Any, Session]] = []
    for i, (spec, pipeline) in enumerate(zip(specs, pipelines, strict=True)):
        base = CandidateResult(spec, tuple(pipeline.describe()))
        try:
            out_dir, records, compiled = _build_candidate(
                i, spec, source, pipeline, work, host, calibration, shapes, target_options
            )
            session = _load_candidate(out_dir, source, spec, compiled)
        except TargetError as exc:
            if len(specs) == 1:
                raise
            log.info("candidate %s failed: %s", spec.name, exc)
            results.append(replace(base, error=str(exc)))
            continue
        report = None
        if reference is not None:
            log.info("verifying %s on %d inputs", spec.name, len(feeds))
            tol = tolerance or tolerance_for(spec.precision, lossy=lossy(pipeline))
            report = compare(reference, session, feeds, spec.precision, tol, feed_source)
        results.append(replace(base, records=tuple(records), report=report))
        if report is not None and not report.passed:
            session.close()
            continue
        built.append((len(results) - 1, out_dir, compiled, session))
    if not built and all(r.error for r in results):
        raise TargetError(
            f"no engine could build {requested!r}: "
            + "; ".join(f"{r.spec.name}: {r.error}" for r in results)
        )
    if not built:
        failed = [r for r in results if r.report is not None and not r.report.passed]
        detail = "; ".join(
            f"{r.spec.name}: {r.report.failure_text()}" for r in failed if r.report is not None
        ) or "; ".join(f"{r.spec.name}: {r.error}" for r in results)
        raise TargetError(
            f"no candidate for {requested!r} passed verification against the source ({detail}); "
            "check the model, loosen the tolerance, or build with --no-verify to skip the check"
        )
    method = "only candidate"
    if len(built) > 1:
        log.info("measuring %d candidates", len(built))
        medians = _measure([b[3] for b in built], feeds[0], budget)
        for (idx, *_rest), median in zip(built, medians, strict=True):
            results[idx] = replace(results[idx], median_ms=median)
        method = "measured: lowest median latency among verified candidates"
    best = min(built, key=lambda b: results[b[0]].median_ms or 0.0)
    for _idx, _dir, _compiled, session in built:
        session.close()
    return results[best[0]], best[1], best[2], results, method


def _load_candidate(out_dir: Path, source: SourceModel, spec: TargetSpec, compiled: Any) -> Session:
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        duh_version=duh.__version__,
        engine=spec.engine,
        engine_version=compiled.engine_version,
        target={"engine": spec.engine, "device": spec.device, "precision": spec.precision},
        inputs=source.inputs,
        outputs=source.outputs,
        files=hash_files(out_dir),
        engine_config=dict(compiled.engine_config),
        host_requirements=dict(compiled.host_requirements),
    )
    write_manifest(out_dir, manifest)
    session = load(out_dir)
    (out_dir / "manifest.json").unlink()
    return session
