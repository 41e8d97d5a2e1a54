"""``build``: ingest → pass pipeline → target → verification → artifact."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from duh.calibration import CalibrationSet
from duh.compiler._accuracy import AccuracyBudget, load_eval
from duh.compiler._artifact_cache import (
    alias,
    artifact_key,
    cached_result_parts,
    input_key,
    remember,
    restore,
)
from duh.compiler._candidates import run_candidates
from duh.compiler._datastats import write_data_stats
from duh.compiler._fallback import quantized_nothing
from duh.compiler._feeds import (
    check_feeds,
    input_ranges,
    quantized_ops,
)
from duh.compiler._nncf import int8_variants
from duh.compiler._record import build_manifest, reference_sources
from duh.compiler._request import BuildRequest, Candidate, Plan
from duh.compiler._sources import (
    framework_outputs,
    frontend_options,
    quantize_source,
    read_source,
)
from duh.compiler._stage_cache import StageCache
from duh.compiler.artifact import staging, work_prefix, write_manifest
from duh.compiler.ingest import SourceModel
from duh.compiler.pipeline import PassManager, parse_pass_list
from duh.compiler.verify import Tolerance
from duh.errors import CalibrationError
from duh.host import host_info
from duh.passes import computes_in_float16
from duh.runtime import Manifest
from duh.targets import (
    PassSpec,
    TargetSpec,
    get_target,
    parse_target,
    resolve,
)

__all__ = ["BuildResult", "build", "default_output"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did: the artifact (None for a dry run), its manifest, every candidate."""

    output: Path | None
    requested: str
    chosen: TargetSpec | None
    candidates: tuple[Candidate, ...]
    source: SourceModel
    manifest: Manifest | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    dry_run: bool = False
    # The artifact was copied from the build cache (same inputs, versions and host class).
    cached: bool = False
    # Why the kept candidate won (one line), and what the build did not try and why.
    reason: str = ""
    not_tried: tuple[str, ...] = ()


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
        ranges=input_ranges(source.model, source.inputs) if str(calib) == "synthetic" else None,
    )


def _pipeline(
    spec: TargetSpec,
    passes: Sequence[PassSpec] | None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    cache: StageCache | None = None,
) -> PassManager:
    steps = list(passes) if passes is not None else get_target(spec.engine).default_passes(spec)
    # Options such as --calib-method or --keep-io-types set fields of the passes that have them.
    overrides = overrides or {}
    return PassManager(
        [PassSpec(s.name, {**s.config, **overrides.get(s.name, {})}) for s in steps], cache
    )


def _needs_calibration(pipeline: PassManager, model: onnx.ModelProto) -> bool:
    """Whether a pass of ``pipeline`` (static quantization) needs calibration data on ``model``."""
    return any(p.needs_calibration(model) for p in pipeline.passes)


def _warnings(request: BuildRequest, chosen: Candidate) -> list[str]:
    spec = chosen.spec
    out = []
    if spec.precision == "int8" and not request.quantized_source and quantized_nothing(chosen):
        out.append(
            f"nothing in {request.source.path.name} was quantized (no op its INT8 pass takes): "
            f"the {spec.name} artifact computes in float, as --target {spec.device} would"
        )
    if spec.precision == "bf16" and spec.device == "cpu" and not request.host.has("amx_bf16"):
        out.append(
            "this CPU has no AMX: bf16 runs on AVX-512 BF16 only and is likely slower than fp32"
        )
    if request.calibration is not None and request.calibration.synthetic:
        out.append(
            "calibrated on SYNTHETIC data: INT8 ranges do not reflect real inputs and accuracy "
            "is likely poor; calibrate with real samples (--calib PATH)"
        )
    out.extend(u.note() for u in request.source.unzipped)
    if request.verify and request.quantized_source and request.tolerance is None:
        out.append(
            "the source is already quantized ("
            + ", ".join(request.quantized_source)
            + "): verified by INT8 criteria (cosine, top-1 agreement), not fp32 tolerances"
        )
    elif request.verify and request.float16_source and request.tolerance is None:
        out.append(
            "the source computes in float16: fp32 builds are verified by fp16 tolerances, "
            "since engines round float16 differently"
        )
    return out


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
    check_data: str | Path | None = None,
    tolerance: Tolerance | None = None,
    dry_run: bool = False,
    target_options: Mapping[str, str] | None = None,
    select_budget_s: float = 2.0,
    pass_options: Mapping[str, Mapping[str, Any]] | None = None,
    cache: bool = True,
    accuracy: AccuracyBudget | None = None,
    trust_code: bool = False,
    dynamic: Mapping[str, tuple[int, ...]] | None = None,
    quantizer: str | None = None,
) -> BuildResult:
    """Compile ``model`` for ``target`` into an artifact directory, verified against the source.

    A short target name builds every engine that offers it here, verifies each, measures them
    interleaved, and keeps the fastest that passes; a candidate that fails is recorded with its
    reason and the build fails only when none is left. ``auto`` (and ``cpu`` with ``accuracy``)
    makes precisions compete too: fp32, bf16 (where the CPU has it) and int8 (with ``calib``) on
    every engine; the result's ``reason`` says why the winner won, ``not_tried`` what was left
    out. ``check_data`` (the formats of ``calib``)
    gives real inputs to verify on; without it, held-out calibration samples or synthetic inputs
    that respect what the graph says of them (index ranges, masks). ``dry_run`` resolves
    everything and writes nothing. ``pass_options`` (pass name -> field -> value) sets options of
    the passes that run, e.g. ``{"quantize": {"calibrator": "entropy"}}``. Raises a ``DuhError``
    subclass for anything a user can fix. With ``cache`` (default), every stage's output is kept
    in the build cache (``$DUH_CACHE_DIR``) and reused when its inputs come again.
    ``accuracy`` (eval data, metric, max drop) holds every candidate to the budget and makes
    INT8 accuracy-aware: ops are kept in float until the metric's drop meets it; a candidate over
    it is dropped, and the build fails with the numbers when none is left.

    ``model`` may also be a front end's source (a PyTorch ``.pt2``, ``module.py:factory``, ...;
    see ``duh.frontends``): it is exported to ONNX and the artifact is verified against the
    framework's own outputs too. ``trust_code`` allows sources whose reading runs code
    (pickle, TorchScript, Python); ``dynamic`` (input -> axes) keeps axes dynamic in the export;
    ``quantizer`` (``inc``, ``inc:RECIPE``) quantizes in the framework before the export.
    """
    started = time.perf_counter()
    shapes = dict(shapes or {})
    host = host_info()
    stages = StageCache.default(enabled=cache)
    inputs = None
    if cache and not dry_run and accuracy is None:
        options = {
            "target": target, "passes": passes, "calib": calib, "calib_samples": calib_samples,
            "calib_options": calib_options, "shapes": shapes, "verify": verify,
            "check_samples": check_samples, "check_data": check_data, "tolerance": tolerance,
            "target_options": target_options, "select_budget_s": select_budget_s,
            "pass_options": pass_options, "trust_code": trust_code, "dynamic": dynamic,
            "quantizer": quantizer,
        }  # fmt: skip
        inputs = input_key(Path(model), options, host)
        hit = _reuse(stages, inputs, "inputs", Path(model), output, target, started)
        if hit is not None:
            return hit
    log.info("reading %s", Path(model).name)
    source, exported = read_source(
        model, shapes, frontend_options(shapes, target_options, trust_code, dynamic)
    )
    # auto (and cpu under a budget) builds fp32, bf16 and int8 (with --calib) on every engine.
    resolution = resolve(
        parse_target(target), host, budget=accuracy is not None, calibrated=calib is not None
    )
    specs = list(resolution.specs)
    if isinstance(passes, str):
        passes = parse_pass_list(passes)
    plans = tuple(Plan(s, _pipeline(s, passes, pass_options, stages)) for s in specs)
    # Transformers on OpenVINO also try NNCF's static INT8 graph; the measurement decides.
    plans = int8_variants(plans, source.model, calib is not None)
    if calib is None and any(_needs_calibration(p.pipeline, source.model) for p in plans):
        raise CalibrationError(
            "an INT8 build needs calibration data (--calib PATH): INT8 scales are fitted to the "
            "ranges the calibration inputs produce, and random inputs give ranges unlike real "
            "data, which ruins accuracy; pass real samples, or --calib synthetic to accept that"
        )
    out_path = Path(output) if output is not None else default_output(source.path, target)
    if dry_run:
        return BuildResult(
            None,
            target,
            specs[0] if len(specs) == 1 else None,
            tuple(Candidate(p.spec, tuple(p.pipeline.describe())) for p in plans),
            source,
            dry_run=True,
            seconds=time.perf_counter() - started,
            not_tried=resolution.not_tried,
        )
    options = dict(calib_options or {})
    options.setdefault("shapes", shapes)
    holdout = max(check_samples, 1) if verify and check_data is None else 0
    if str(calib) == "synthetic" and quantizer is None and accuracy is None:
        if not any(_needs_calibration(p.pipeline, source.model) for p in plans):
            # nothing is calibrated (an already-quantized source): no synthetic ranges to warn of
            calib = None
    calibration = _load_calibration(calib, source, calib_samples, holdout, options)
    if quantizer is not None:
        drop = None if accuracy is None else accuracy.max_drop
        source, exported = quantize_source(
            model, source, exported, quantizer, calibration, shapes, drop
        )
    checks = check_feeds(
        source, check_samples, shapes, calibration, check_data, options.get("preprocess")
    )
    evaluation = None
    if accuracy is not None:
        evaluation = load_eval(
            accuracy, source.model, source.inputs, shapes, options.get("preprocess"), trust_code
        )
    request = BuildRequest(
        source=source,
        requested=target,
        plans=plans,
        host=host,
        calibration=calibration,
        shapes=shapes,
        target_options=dict(target_options or {}),
        verify=verify,
        checks=checks,
        tolerance=tolerance,
        budget_s=select_budget_s,
        quantized_source=quantized_ops(source.model),
        float16_source=computes_in_float16(source.model),
        cache=stages,
        evaluation=evaluation,
        frontend=None if exported is None else dict(exported.record),
        framework=framework_outputs(exported, checks.feeds) if verify else None,
        precision_aware=resolution.precision_aware,
        not_tried=resolution.not_tried,
    )
    key = artifact_key(request)
    # A budgeted build is rebuilt (its stages still come from the cache): its key would need
    # the eval data and the metric too.
    hit = None
    if accuracy is None:
        hit = _reuse(stages, key, "artifact", source.path, out_path, target, started)
    if hit is not None:
        alias(stages, inputs, key, out_path.name)
        return hit
    with (
        staging(out_path) as stage,
        tempfile.TemporaryDirectory(prefix=work_prefix(), dir=stage.parent) as work_name,
    ):
        selection = run_candidates(request, Path(work_name))
        assert selection.chosen.out_dir is not None
        for item in selection.chosen.out_dir.iterdir():
            os.replace(item, stage / item.name)
        write_data_stats(stage, source.inputs, reference_sources(calibration, checks, check_data))
        warnings = _warnings(request, selection.chosen)
        seconds = time.perf_counter() - started
        manifest = build_manifest(request, selection, stage, warnings, seconds)
        write_manifest(stage, manifest)
        if accuracy is None:
            remember(stages, key, inputs, stage, out_path.name)
    # The candidates' build directories are gone with the work directory.
    tried = tuple(replace(c, out_dir=None) for c in selection.candidates)
    return BuildResult(
        out_path, target, selection.chosen.spec, tried, source, manifest, tuple(warnings), seconds,
        reason=selection.reason, not_tried=selection.not_tried,
    )  # fmt: skip


def _reuse(
    stages: StageCache,
    key: str | None,
    stage_name: str,
    model: Path,
    output: str | Path | None,
    target: str,
    started: float,
) -> BuildResult | None:
    """The artifact the cache holds under ``key`` (an input key's alias followed), copied to the
    output; None when it holds none."""
    if key is None:
        return None
    with stages.lookup(key, stage_name) as entry:
        if entry is not None and entry.kind == "inputs":
            return _reuse(
                stages, str(entry.payload["artifact"]), "artifact", model, output, target, started
            )
        if entry is None:
            return None
        out_path = Path(output) if output is not None else default_output(model, target)
        with staging(out_path) as stage:
            manifest = restore(entry, stages, stage)
    chosen, tried, source = cached_result_parts(manifest, model)
    seconds = time.perf_counter() - started
    picked = manifest.selection
    return BuildResult(
        out_path, target, chosen, tried, source, manifest, manifest.warnings, seconds, cached=True,
        reason=str(picked.get("reason", "")), not_tried=tuple(picked.get("not_tried", ())),
    )  # fmt: skip
