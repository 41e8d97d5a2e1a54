"""``build``: ingest → pass pipeline → target → verification → artifact."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import duh
from duh.calibration import CalibrationSet
from duh.compiler.artifact import staging, write_manifest
from duh.compiler.cache import cache_dir
from duh.compiler.ingest import SourceModel, ingest, normalize_for_engine
from duh.compiler.pipeline import PassManager, PassRecord, parse_pass_list
from duh.compiler.verify import Tolerance, VerifyReport, compare, synthetic_feeds, tolerance_for
from duh.errors import CalibrationError, ModelError, TargetError
from duh.host import HostInfo, host_info
from duh.passes import PassContext
from duh.runtime import FORMAT_VERSION, Manifest, Session, load
from duh.runtime._manifest import hash_files
from duh.targets import (
    CompileContext,
    PassSpec,
    TargetSpec,
    candidates,
    get_target,
    parse_target,
)
from duh.targets._util import save_onnx

__all__ = ["BuildResult", "CandidateResult", "build", "default_output"]

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


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did: the artifact (None for a dry run), its manifest, every candidate."""

    output: Path | None
    requested: str
    chosen: TargetSpec | None
    candidates: tuple[CandidateResult, ...]
    source: SourceModel
    manifest: Manifest | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    dry_run: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def default_output(model: Path, target: str) -> Path:
    """``model.onnx`` with ``--target cpu-int8`` builds ``model.cpu-int8.duh`` beside it."""
    safe = target.replace(":", "_")
    return model.with_name(f"{model.stem}.{safe}.duh")


def _load_calibration(
    calib: str | Path | None,
    source: SourceModel,
    samples: int,
    holdout: int,
    options: Mapping[str, Any],
) -> CalibrationSet | None:
    if calib is None:
        return None
    from duh.calibration import load_calibration

    return load_calibration(
        calib,
        source.inputs,
        samples=samples,
        holdout=holdout,
        shapes=options.get("shapes") or {},
        preprocess=options.get("preprocess"),
    )


def _pipeline(
    spec: TargetSpec,
    passes: Sequence[PassSpec] | None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> PassManager:
    steps = list(passes) if passes is not None else get_target(spec.engine).default_passes(spec)
    # Options such as --calib-method or --keep-io-types set fields of the passes that have them.
    overrides = overrides or {}
    return PassManager([PassSpec(s.name, {**s.config, **overrides.get(s.name, {})}) for s in steps])


def _needs_calibration(pipeline: PassManager, model: onnx.ModelProto) -> bool:
    """Whether a pass of ``pipeline`` (static quantization) needs calibration data on ``model``."""
    return any(getattr(p, "needs_calibration", None) and p.needs_calibration(model)  # type: ignore[attr-defined]
               for p in pipeline.passes)


def _lossy(pipeline: PassManager) -> bool:
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


def _warnings(spec: TargetSpec, host: HostInfo, calibration: CalibrationSet | None) -> list[str]:
    out = []
    if spec.precision == "bf16" and spec.device == "cpu" and not host.has("amx_bf16"):
        out.append(
            "this CPU has no AMX: bf16 runs on AVX-512 BF16 only and is likely slower than fp32"
        )
    if calibration is not None and calibration.synthetic:
        out.append(
            "calibrated on SYNTHETIC data: INT8 ranges do not reflect real inputs and accuracy "
            "is likely poor; calibrate with real samples (--calib PATH)"
        )
    return out


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


def build(
    model: str | Path,
    target: str = "cpu",
    output: str | Path | None = None,
    *,
    passes: Sequence[PassSpec] | str | None = None,
    calib: str | Path | None = None,
    calib_samples: int = 256,
    calib_options: Mapping[str, Any] | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    verify: bool = True,
    check_samples: int = 8,
    tolerance: Tolerance | None = None,
    dry_run: bool = False,
    target_options: Mapping[str, str] | None = None,
    select_budget_s: float = 2.0,
    pass_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> BuildResult:
    """Compile ``model`` for ``target`` into an artifact directory, verified against the source.

    A short target name builds every engine that offers it here, verifies each, measures them
    interleaved, and keeps the fastest that passes. ``dry_run`` resolves everything and writes
    nothing. ``pass_options`` (pass name -> field -> value) sets options of the passes that run,
    e.g. ``{"quantize": {"calibrator": "entropy"}}``. Raises a ``DuhError`` subclass for anything
    a user can fix.
    """
    started = time.perf_counter()
    shapes = dict(shapes or {})
    log.info("reading %s", Path(model).name)
    source = ingest(model, shapes)
    host = host_info()
    request = parse_target(target)
    specs = candidates(request, host)
    if isinstance(passes, str):
        passes = parse_pass_list(passes)
    if request.precision is None and calib is None:
        # auto: INT8 needs calibration data; without it, only float precisions are candidates.
        specs = [s for s in specs if s.precision != "int8"] or specs
    pipelines = [_pipeline(s, passes, pass_options) for s in specs]
    if calib is None and any(_needs_calibration(p, source.model) for p in pipelines):
        raise CalibrationError(
            "an INT8 build needs calibration data (--calib PATH): INT8 scales are fitted to the "
            "ranges the calibration inputs produce, and random inputs give ranges unlike real "
            "data, which ruins accuracy; pass real samples, or --calib synthetic to accept that"
        )
    plans = tuple(
        CandidateResult(s, tuple(p.describe())) for s, p in zip(specs, pipelines, strict=True)
    )
    out_path = Path(output) if output is not None else default_output(source.path, target)
    if dry_run:
        return BuildResult(
            None,
            target,
            specs[0] if len(specs) == 1 else None,
            plans,
            source,
            dry_run=True,
            seconds=time.perf_counter() - started,
        )
    options = dict(calib_options or {})
    options.setdefault("shapes", shapes)
    holdout = max(check_samples, 1) if verify else 0
    calibration = _load_calibration(calib, source, calib_samples, holdout, options)
    with (
        staging(out_path) as stage,
        tempfile.TemporaryDirectory(prefix=".duh-work-", dir=stage.parent) as work_name,
    ):
        work = Path(work_name)
        built = _build_all(
            specs,
            pipelines,
            source,
            work,
            host,
            calibration,
            shapes,
            dict(target_options or {}),
            verify,
            check_samples,
            tolerance,
            select_budget_s,
            target,
        )
        chosen, chosen_dir, compiled, results, method = built
        for item in chosen_dir.iterdir():
            os.replace(item, stage / item.name)
        warnings = _warnings(chosen.spec, host, calibration)
        seconds = time.perf_counter() - started
        manifest = _manifest(
            stage,
            source,
            target,
            chosen,
            compiled,
            results,
            method,
            host,
            warnings,
            calibration,
            seconds,
        )
        write_manifest(stage, manifest)
    return BuildResult(
        out_path, target, chosen.spec, tuple(results), source, manifest, tuple(warnings), seconds
    )


def _build_all(
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
            tol = tolerance or tolerance_for(spec.precision, lossy=_lossy(pipeline))
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


def _manifest(
    stage: Path,
    source: SourceModel,
    requested: str,
    chosen: CandidateResult,
    compiled: Any,
    results: Sequence[CandidateResult],
    method: str,
    host: HostInfo,
    warnings: Sequence[str],
    calibration: CalibrationSet | None,
    seconds: float,
) -> Manifest:
    spec = chosen.spec
    calib_info: dict[str, Any] | None = None
    if calibration is not None:
        calib_info = {
            "source": calibration.source,
            "sha256": calibration.digest,
            "samples": len(calibration.feeds),
            "held_out": len(calibration.check),
            "synthetic": calibration.synthetic,
        }
    return Manifest(
        format_version=FORMAT_VERSION,
        duh_version=duh.__version__,
        engine=spec.engine,
        engine_version=compiled.engine_version,
        target={
            "requested": requested,
            "resolved": spec.name,
            "engine": spec.engine,
            "device": spec.device,
            "precision": spec.precision,
        },
        inputs=source.inputs,
        outputs=source.outputs,
        files=hash_files(stage),
        engine_config=dict(compiled.engine_config),
        host_requirements=dict(compiled.host_requirements),
        source={
            "file": source.path.name,
            "sha256": source.sha256,
            "opset": source.opset,
            "ir_version": source.ir_version,
            "producer": f"{source.model.producer_name} {source.model.producer_version}".strip(),
            "external_data": list(source.external_data),
        },
        passes=tuple(r.to_json() for r in chosen.records),
        checks=chosen.report.to_json()
        if chosen.report is not None
        else {"passed": None, "skipped": True},
        selection={
            "method": method,
            "chosen": spec.name,
            "candidates": [r.to_json() for r in results],
        },
        build={
            "seconds": round(seconds, 3),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "host": {"cpu": host.cpu_model, "cores": host.cores, "cpu_flags": host.notable_flags},
            "calibration": calib_info,
            "compile_notes": list(compiled.notes),
        },
        warnings=tuple(warnings),
    )
