"""OpenVINO on the CPU: the artifact holds OpenVINO IR (model.xml/model.bin)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from duh.errors import TargetError
from duh.host import HostInfo
from duh.runtime.contract import EngineOptions, OpTiming, TensorSpec
from duh.targets._base import CompileContext, CompileResult, PassSpec, TargetSpec, register_target
from duh.targets._util import package_version
from duh.targets.openvino._bf16 import Bf16Plan, keep_f32_for_accuracy
from duh.targets.openvino._convert import (
    check_inputs,
    compile_error,
    compiled,
    convert,
    ov_module,
    reason,
)
from duh.targets.openvino._hint import HintChoice, choose_int8_hint, pinned_hint
from duh.targets.openvino._partition import compile_stages
from duh.targets.openvino._specialize import distinct_outputs, scalar_if_conditions
from duh.targets.openvino._staged import StagedEngine

if TYPE_CHECKING:
    import onnx

    from duh.runtime.contract import Manifest

__all__ = ["OpenVinoEngine", "OpenVinoTarget"]


XML_FILE = "model.xml"
# The CPU plugin's INFERENCE_PRECISION_HINT for each duh precision. fp32 must be explicit: on CPUs
# with AVX-512 BF16 or AMX, OpenVINO's default is bf16.
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def _output(tensor: Any) -> np.ndarray:
    """An output tensor as numpy: strings as str objects (what ONNX Runtime gives), not bytes."""
    if tensor.element_type != ov_module().Type.string:
        return np.array(tensor.data, copy=True)
    return np.array(tensor.str_data, dtype=object).reshape(tuple(tensor.shape))


def _bf16_note(plan: Bf16Plan, feeds: int) -> str:
    """What the accuracy-aware bf16 search did, for the compile notes."""
    if not plan.passed and plan.kept_f32:
        return (
            f"bf16 strays from f32 on the {feeds} check inputs ({plan.worst}) unless every op "
            "is kept in f32: every op is kept in f32, so the artifact computes as "
            "openvino:cpu-fp32 does"
        )
    if not plan.passed:
        return (
            f"bf16 strays from f32 on the {feeds} check inputs even with every op it can mark "
            f"kept in f32 ({plan.worst}; ops inside loop bodies cannot be marked): left "
            "all-bf16 (build for openvino:cpu-fp32 instead)"
        )
    if not plan.kept_f32:
        return f"bf16 stays close to f32 on the {feeds} check inputs: every op in bf16"
    return (
        f"bf16 kept the first {len(plan.kept_f32)} float ops in f32 (up to "
        f"{plan.kept_f32[-1]!r}) to stay close to f32 on the {feeds} check inputs "
        f"({plan.rounds} trial compilations); the list is engine_config.kept_f32"
    )


def _compile_ir(
    ov: Any, converted: Any, ctx: CompileContext, feeds: Sequence[Mapping[str, Any]], xml: Path
) -> tuple[dict[str, Any], list[str]]:
    """Save ``converted`` as ``xml``, with its precision settings (measured on ``feeds``)."""
    plan = None
    if ctx.spec.precision == "bf16" and feeds:
        plan = keep_f32_for_accuracy(ov, converted, feeds, xml.parent.parent)
    # fp16/bf16 run at that precision anyway: store the float weights as fp16 (half size; the
    # weights of ops kept in f32 stay f32).
    compress = ctx.spec.precision in ("fp16", "bf16")
    ov.save_model(converted, str(xml), compress_to_fp16=compress)
    hint: HintChoice | None = None
    if ctx.spec.precision == "int8":
        # The float ops an INT8 graph keeps: f32 or bf16, whichever is faster here.
        hint = pinned_hint(ctx.options, ctx.host) or choose_int8_hint(ov, xml, ctx.host, feeds)
    config: dict[str, Any] = {
        "inference_precision_hint": hint.hint if hint else _PRECISION_HINT[ctx.spec.precision]
    }
    notes: list[str] = []
    if plan is not None:
        config["kept_f32"] = list(plan.kept_f32)
        notes.append(_bf16_note(plan, len(feeds)))
    if hint is not None and hint.note:
        notes.append(hint.note)
    return config, notes


@register_target
class OpenVinoTarget:
    """OpenVINO's CPU plugin; precision set through the inference precision hint."""

    name = "openvino"
    pip_extra = "openvino"
    devices = ("cpu",)
    precisions = ("fp32", "bf16", "fp16", "int8")
    max_ir_version = 10
    max_opset = 26
    short_name_candidate = True

    def unavailable_reason(self, device: str, precision: str, host: HostInfo) -> str | None:
        """Why OpenVINO cannot build (device, precision) here, or None."""
        if package_version("openvino") is None:
            return "package openvino missing: pip install 'duh[openvino]'"
        if device != "cpu":
            return "the openvino plugin here targets the CPU only"
        if precision == "bf16" and not (host.has("avx512_bf16") or host.has("amx_bf16")):
            return "CPU lacks AVX-512 BF16 and AMX-BF16; bf16 would run as fp32"
        if precision == "fp16" and not (host.has("avx512_fp16") or host.has("amx_fp16")):
            return "CPU lacks AVX-512 FP16 and AMX-FP16; OpenVINO's CPU plugin runs fp16 as fp32"
        return None

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        """lower-ml, lower-sequences, simplify, fold-constants, fuse and cleanup; int8 adds
        static QDQ quantization.

        fp16 and bf16 need no pass: the CPU plugin converts the graph itself at load time (the
        precision hint), keeping the ops that need float32 in float32.
        """
        passes = [
            PassSpec("lower-ml"),
            PassSpec("lower-sequences"),
            PassSpec("simplify"),
            PassSpec("fold-constants"),
            PassSpec("fuse"),
            PassSpec("cleanup"),
        ]
        if spec.precision == "int8":
            passes.append(PassSpec("quantize"))
        return passes

    def compile(self, model: onnx.ModelProto, ctx: CompileContext, out_dir: Path) -> CompileResult:
        """Convert the ONNX model to IR; precision is a load-time hint.

        For bf16, the ops whose bf16 results stray from f32 on the check inputs are marked to
        stay f32 (``engine_config.kept_f32`` and a compile note say which). For int8, the hint
        of the float ops left (f32 or bf16) is picked by timing both on the check inputs. When
        the frontend cannot convert some ops of the main graph, those run on ONNX Runtime and
        the rest on OpenVINO, in stages (``engine_config.stages``).
        """
        ov = ov_module()
        scratch = out_dir.parent / (out_dir.name + ".in")
        model, scalars = scalar_if_conditions(model)
        first: list[str] = []
        if scalars:
            first.append(
                f"If conditions of more than one dimension reshaped to scalars, as openvino "
                f"requires (ONNX Runtime takes any one-element condition): {scalars}"
            )
        distinct, renamed = distinct_outputs(model)
        try:
            try:
                converted, specialized = convert(ov, distinct, scratch)
            except Exception:
                staged = compile_stages(ov, model, ctx, out_dir, _compile_ir)
                if staged is None:
                    raise
                return dataclasses.replace(staged, notes=(*first, *staged.notes))
            check_inputs(converted, model)
            config, notes = _compile_ir(ov, converted, ctx, ctx.check_feeds, out_dir / XML_FILE)
        except TargetError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO's frontend raises untyped errors
            raise TargetError(
                f"openvino cannot convert the model: {reason(exc)}; build for ONNX Runtime "
                "instead (--target cpu or onnxruntime:cpu-fp32)"
            ) from None
        if specialized:
            first.append(
                f"If nodes that squeeze a dimension only when its size is 1 (how PyTorch exports "
                f"x.squeeze(d)) made Squeeze, so that openvino knows the ranks: {specialized}"
            )
        if renamed:  # an IR read back renames an output port that repeats an input's name
            config["output_ports"] = renamed
        return compiled(ov, {"model": XML_FILE, **config}, [*first, *notes])

    def load(
        self, artifact: Path, manifest: Manifest, options: EngineOptions
    ) -> OpenVinoEngine | StagedEngine:
        """Compile the IR for the CPU with the recorded precision hint."""
        config = manifest.engine_config
        if "stages" in config:
            return StagedEngine(artifact, manifest, options, OpenVinoEngine)
        return OpenVinoEngine(
            artifact / str(config.get("model", XML_FILE)),
            str(config.get("inference_precision_hint", "f32")),
            [o.name for o in manifest.outputs],
            options,
            inputs=manifest.inputs,
            ports=dict(config.get("output_ports", {})),
        )


class OpenVinoEngine:
    """A compiled OpenVINO model with a pool of infer requests, so threads can share it."""

    engine_name = "openvino"

    def __init__(
        self,
        xml: Path,
        precision_hint: str,
        outputs: list[str],
        options: EngineOptions,
        *,
        inputs: Sequence[TensorSpec] = (),
        ports: Mapping[str, str] | None = None,
    ) -> None:
        """Compile ``xml``; ``inputs`` (the model's) let a refusal say which ``--shape`` cures
        it (a stage of a staged artifact has none of its own); ``ports`` names the IR's port
        of an output whose own name it could not keep (an input passed through)."""
        ov = ov_module()
        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision_hint,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = options.threads
        if options.profile:
            config["PERF_COUNT"] = True
        config.update(options.extra)
        try:
            self._compiled = core.compile_model(str(xml), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises untyped errors
            raise compile_error(exc, inputs) from None
        renamed = dict(ports or {})
        indices = {
            name: i for i, port in enumerate(self._compiled.outputs) for name in port.get_names()
        }
        missing = [name for name in outputs if renamed.get(name, name) not in indices]
        if missing:
            raise TargetError(f"openvino model lacks outputs {missing}; rebuild the artifact")
        self._output_indices = [(name, indices[renamed.get(name, name)]) for name in outputs]
        # Idle infer requests. list.pop/append are atomic under the GIL and cheaper than a queue
        # on the hot path of tiny models.
        self._idle: list[Any] = []
        self._all_requests: list[Any] = []
        self._profiled = options.profile

    def _request(self) -> Any:
        try:
            return self._idle.pop()
        except IndexError:
            request = self._compiled.create_infer_request()
            self._all_requests.append(request)
            return request

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference on a free infer request (thread-safe)."""
        request = self._request()
        try:
            # share_outputs: no OVDict of copies; we copy each output once, below, because the
            # request's output memory is reused by its next inference.
            request.infer(feed, share_inputs=True, share_outputs=True)
            return {
                name: _output(request.get_output_tensor(index))
                for name, index in self._output_indices
            }
        except RuntimeError as exc:  # what OpenVINO raises for a feed it cannot run
            shapes = ", ".join(f"{n}{list(np.shape(v))}" for n, v in feed.items())
            raise TargetError(
                f"openvino failed to run the model on {shapes}: {reason(exc)}; check that the "
                "input values fit the model"
            ) from None
        finally:
            self._idle.append(request)

    def op_profile(self) -> list[OpTiming]:
        """Per-layer times from OpenVINO's counters: the latest inference of each infer request."""
        if not self._profiled:
            raise TargetError("profiling was not enabled; load with EngineOptions(profile=True)")
        totals: dict[str, list[Any]] = {}
        for request in self._all_requests:
            for info in request.profiling_info:
                if info.status.name != "EXECUTED":
                    continue
                entry = totals.setdefault(info.node_name, [info.node_type, 0.0, 0])
                entry[1] += info.real_time.total_seconds() * 1e6
                entry[2] += 1
        timings = [OpTiming(name, op, us, n) for name, (op, us, n) in totals.items()]
        return sorted(timings, key=lambda t: t.total_us, reverse=True)

    def close(self) -> None:
        """Release the compiled model."""
        self._all_requests.clear()
        self._compiled = None
