"""``quantize``: INT8 with ONNX Runtime's quantization tools.

- ``static``: Q/DQ pairs (QDQ format) with per-channel int8 weights and activation ranges from
  duh's calibrators (cached by model, data and method). ``symmetric_activations`` gives int8
  activations with zero point 0, what TensorRT needs.
- ``dynamic``: int8 weights, activations quantized at run time (transformers, RNNs); no data.
- ``int4``: weight-only 4-bit blocks for large MatMuls (ONNX Runtime's MatMulNBits).

A model that is already quantized (QDQ, QLinear*, ConvInteger, ...) is left as it is, and the
build report says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx

from duh.calibration import calibrate
from duh.errors import CalibrationError, PassError
from duh.host import int8_dot_saturates
from duh.passes._base import (
    PassBase,
    PassContext,
    PassResult,
    one_line,
    register_pass,
    tool_errors,
)
from duh.passes._graph import (
    consumers,
    default_opset,
    infer_shapes,
    initializer_map,
    name_nodes,
    producers,
)
from duh.passes._nncf import nncf_int8
from duh.passes._quantize_modes import (
    QUANTIZED_OPS,
    dynamic_int8,
    int4_weight_only,
    mask_arithmetic,
    ort_quantization,
    quantized_op_counts,
)
from duh.passes._quantize_opset import qdq_opset
from duh.passes._quantize_prep import exact_comparison_feeders, unshare_biases
from duh.passes._sensitivity import (
    OpSensitivity,
    float_readers,
    float_region,
    rank_sensitivity,
    rerank_by_output,
)
from duh.passes._upcast import computes_in_float16, computes_in_float64, to_float32

__all__ = [
    "QUANTIZED_OPS",
    "OpSensitivity",
    "Quantize",
    "float_readers",
    "float_region",
    "quantized_op_counts",
    "rank_sensitivity",
    "rerank_by_output",
]

log = logging.getLogger(__name__)

_MODES = ("auto", "static", "dynamic", "int4", "nncf")
_METHODS = ("minmax", "entropy", "percentile")
_PLACEMENTS = ("auto", "outputs", "inputs")
_RNN_OPS = frozenset({"LSTM", "GRU", "RNN"})
# Sources computing in another float type: (name, detector, element type), quantized as float32.
_NOT_FLOAT32 = (
    ("float16", computes_in_float16, onnx.TensorProto.FLOAT16),
    ("float64", computes_in_float64, onnx.TensorProto.DOUBLE),
)
_TRANSFORMER_HINTS = frozenset(
    {
        "Softmax",
        "LayerNormalization",
        "Attention",
        "MultiHeadAttention",
        "SkipLayerNormalization",
        "Erf",
        "Gelu",
        "FastGelu",
        "BiasGelu",
    }
)
_DYNAMIC_OPS = ("MatMul", "Gemm", "Attention", "LSTM", "GRU")


@register_pass("quantize")
@dataclass(frozen=True, slots=True)
class Quantize(PassBase):
    """INT8 (static QDQ or dynamic) or INT4 weight-only quantization with onnxruntime's tools."""

    # In a pipeline whose precision is not int8 (a recipe), it is checked by INT8's criteria.
    lossy: ClassVar[bool] = True

    mode: str = field(
        default="auto",
        metadata={
            "help": "static (QDQ, calibrated), dynamic, int4 (weight-only MatMulNBits), nncf "
            "(static QDQ by NNCF, transformer-aware), or auto: dynamic for transformers and "
            "RNNs, static otherwise"
        },
    )
    calibrator: str = field(
        default="minmax",
        metadata={"help": "static: minmax, entropy or percentile (--calib-method)"},
    )
    percentile: float = field(default=99.999, metadata={"help": "percentile calibrator's cut"})
    per_channel: bool = field(
        default=True, metadata={"help": "one weight scale per output channel"}
    )
    symmetric_activations: bool = field(
        default=False,
        metadata={
            "help": "int8 activations with zero point 0 (TensorRT needs them); default uint8"
        },
    )
    reduce_range: bool | None = field(
        default=None,
        metadata={
            "help": "7-bit weights; None (auto): on for CPU engines when this CPU lacks VNNI/AMX, "
            "whose u8 x s8 kernels saturate 8-bit products (NNCF calls it the overflow fix)"
        },
    )
    op_types: tuple[str, ...] = field(
        default=(), metadata={"help": "op types to quantize; empty: all the quantizer supports"}
    )
    exclude_op_types: tuple[str, ...] = field(
        default=("Softmax",), metadata={"help": "op types kept in float"}
    )
    exclude_nodes: tuple[str, ...] = field(
        default=(), metadata={"help": "node names kept in float"}
    )
    placement: str = field(
        default="auto",
        metadata={
            "help": "static: 'outputs' puts Q/DQ on the inputs and outputs of every quantized op "
            "(ONNX Runtime fuses them into QLinear kernels); 'inputs' only on their inputs, as "
            "NNCF does (OpenVINO keeps float results until the next int8 op, which is more "
            "accurate); 'auto': inputs for openvino, outputs otherwise"
        },
    )
    float_outputs: bool = field(
        default=True,
        metadata={"help": "static: keep graph outputs float (no Q/DQ right before them)"},
    )
    block_size: int = field(default=128, metadata={"help": "int4: weights per quantization block"})
    int4_min_weights: int = field(
        default=65536, metadata={"help": "int4: only MatMuls whose weight has this many elements"}
    )
    accuracy_level: int = field(
        default=4, metadata={"help": "int4: MatMulNBits compute type (4 = int8, 0 = as the input)"}
    )

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, not {self.mode!r}")
        if self.placement not in _PLACEMENTS:
            raise ValueError(
                f"placement must be one of {', '.join(_PLACEMENTS)}, not {self.placement!r}"
            )
        if self.calibrator not in _METHODS:
            raise ValueError(
                f"calibrator must be one of {', '.join(_METHODS)}, not {self.calibrator!r}"
            )
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 16, not {self.block_size}")

    def resolved_mode(self, model: onnx.ModelProto) -> str:
        """The mode this config uses on ``model`` (``auto`` decided by its operators)."""
        if self.mode != "auto":
            return self.mode
        ops = {n.op_type for n in model.graph.node}
        if ops & _RNN_OPS:
            return "dynamic"
        if "Conv" not in ops and ops & _TRANSFORMER_HINTS and ops & {"MatMul", "Gemm", "Attention"}:
            return "dynamic"
        return "static"

    def resolved_placement(self, engine: str) -> str:
        """Where static Q/DQ pairs go for ``engine`` (``auto`` decided by the engine)."""
        if self.placement != "auto":
            return self.placement
        return "inputs" if engine == "openvino" else "outputs"

    def resolved_reduce_range(self, ctx: PassContext) -> bool:
        """Whether weights use 7 bits: as set, or (auto) on a CPU without int8 dot products."""
        if self.reduce_range is not None:
            return self.reduce_range
        if ctx.device != "cpu" or ctx.engine not in ("onnxruntime", "openvino"):
            return False
        # Without VNNI/AMX, full 8-bit weights overflow and accuracy collapses on such hosts.
        return int8_dot_saturates()

    def needs_calibration(self, model: onnx.ModelProto) -> bool:
        """Whether running on ``model`` needs calibration data (static mode, not yet quantized)."""
        return not quantized_op_counts(model) and self.resolved_mode(model) in ("static", "nncf")

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Quantize ``model``; leave an already-quantized model unchanged, with a note."""
        found = quantized_op_counts(model)
        if found:
            summary = ", ".join(f"{n} {op}" for op, n in found.items())
            note = f"model is already quantized ({summary}); not quantized again"
            log.info(note)  # the build warns once of a quantized source, not once per candidate
            return PassResult(model, False, (note,))
        notes: tuple[str, ...] = ()
        for kind, computes, elem_type in _NOT_FLOAT32:
            if computes(model):
                # The quantizers take float32 tensors only: quantize the graph's float32 form.
                model, cast = to_float32(model, elem_type)
                notes = (
                    f"the {kind} model is quantized from its float32 form ({cast} tensors and "
                    f"types cast; {kind} inputs and outputs kept)",
                )
                log.info("quantize: %s", notes[0])
                break
        model, copies = unshare_biases(model)
        if copies:
            log.info("quantize: %d shared bias initializer(s) copied, one per node", copies)
        result = self._quantize(model, ctx)
        return PassResult(result.model, result.changed or bool(notes), (*notes, *result.notes))

    def _quantize(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        mode = self.resolved_mode(model)
        if mode == "static":
            return self._static(model, ctx)
        if mode == "nncf":
            if ctx.calibration is None:
                raise CalibrationError(
                    "quantize mode=nncf needs calibration data (--calib PATH); or use mode=dynamic"
                )
            transformer = Quantize(mode="auto").resolved_mode(model) == "dynamic"
            # NNCF puts weights per tensor below opset 13: raise the opset first, where it holds.
            work, _, converted = qdq_opset(model, True, ctx.calibration.feeds[0])
            result = nncf_int8(work, ctx.calibration, self._excluded(work), transformer)
            return PassResult(result.model, result.changed, (*converted, *result.notes))
        if mode == "dynamic":
            op_types = [
                t for t in (self.op_types or _DYNAMIC_OPS) if t not in self.exclude_op_types
            ]
            reduce_range = self.resolved_reduce_range(ctx)
            result = dynamic_int8(
                model, ctx.workdir, op_types, self._excluded(model), self.per_channel, reduce_range
            )
            notes = (*result.notes, *_reduce_range_note(self, reduce_range))
            return PassResult(result.model, result.changed, notes)
        return int4_weight_only(
            model, self.block_size, self.int4_min_weights, self.accuracy_level, self.exclude_nodes
        )

    def _excluded(self, model: onnx.ModelProto) -> list[str]:
        return sorted(
            {n.name for n in model.graph.node if n.op_type in self.exclude_op_types}
            | set(self.exclude_nodes)
            | exact_comparison_feeders(model)  # an Equal on a rounded value is never true
        )

    def _static(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if ctx.calibration is None:
            raise CalibrationError(
                "static INT8 quantization needs calibration data (--calib PATH): scales are fitted "
                "to the ranges real inputs produce; or use quantize mode=dynamic"
            )
        quantization = ort_quantization()
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
        from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
        from onnxruntime.quantization.quant_utils import update_opset_version
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        QuantType = quantization.QuantType
        work, per_channel, converted = qdq_opset(model, self.per_channel, ctx.calibration.feeds[0])
        weight_type = QuantType.QInt8
        activation_type = QuantType.QInt8 if self.symmetric_activations else QuantType.QUInt8
        try:
            work = update_opset_version(work, weight_type, activation_type)
        except tool_errors() as exc:
            raise PassError(
                f"onnxruntime's quantizer needs opset 10 or more and could not convert this "
                f"model's opset {default_opset(work)}: {one_line(exc)}"
            ) from exc
        name_nodes(work, "q")
        _flat_gemm_biases(work)
        work = infer_shapes(work)
        cache = ctx.cache_dir / "calibration" if ctx.cache_dir is not None else None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        ranges = calibrate(
            work, ctx.calibration, self.calibrator, percentile=self.percentile, cache_dir=cache
        )
        tensors = TensorsData(
            CalibrationMethod.MinMax,
            {
                k: (np.array(lo, dtype=np.float32), np.array(hi, dtype=np.float32))
                for k, (lo, hi) in ranges.ranges.items()
            },
        )
        op_types = list(self.op_types) or sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
        op_types = [t for t in op_types if t not in self.exclude_op_types]
        extra: dict[str, Any] = {
            "ActivationSymmetric": self.symmetric_activations,
            "WeightSymmetric": True,
            # ORT drops a Relu/Clip whose output it quantizes (the range clips); where
            # float_outputs then drops that Q/DQ pair at a graph output, the clip would be lost.
            "QDQKeepRemovableActivations": self.float_outputs and _clipped_outputs(work),
        }
        placement = self.resolved_placement(ctx.engine)
        reduce_range = self.resolved_reduce_range(ctx)
        if placement == "inputs":
            extra["OpTypesToExcludeOutputQuantization"] = op_types
        try:
            quantizer = QDQQuantizer(
                work,
                per_channel,
                reduce_range,
                weight_type,
                activation_type,
                tensors,
                [],
                # Attention-mask arithmetic (-inf constants) stays float: no 8-bit range holds it.
                sorted({*self._excluded(work), *mask_arithmetic(work)}),
                op_types,
                extra,
            )
            quantizer.quantize_model()
            quantizer.model.topological_sort()
        except tool_errors() as exc:
            raise PassError(
                f"onnxruntime's static quantizer failed on this model: {one_line(exc)}; "
                "try quantize mode=dynamic, or keep the failing ops float (exclude_op_types)"
            ) from exc
        out: onnx.ModelProto = quantizer.model.model
        dropped = _float_outputs(out) if self.float_outputs else 0
        counts = quantized_op_counts(out)
        stored = initializer_map(out)
        weights = sum(
            1 for n in out.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in stored
        )
        reused = " (cached ranges reused)" if ranges.cached else ""
        notes = [
            *converted,
            f"static INT8 QDQ: {weights} quantized weight/bias tensors "
            f"({'per-channel' if per_channel else 'per-tensor'}), "
            f"{'int8 symmetric' if self.symmetric_activations else 'uint8 asymmetric'} "
            "activations, "
            f"{counts.get('QuantizeLinear', 0)} activation Q/DQ pairs on op {placement}",
            f"calibration: {ranges.method} over {ranges.samples} samples of "
            f"{ctx.calibration.source}{reused}",
        ]
        notes.extend(_reduce_range_note(self, reduce_range))
        if ctx.calibration.synthetic:
            notes.append("calibrated on SYNTHETIC data: accuracy is likely poor")
        if dropped:
            notes.append(f"{dropped} graph output(s) kept in float")
        return PassResult(out, True, tuple(notes))


def _clipped_outputs(model: onnx.ModelProto) -> bool:
    """Whether a graph output comes straight from a Relu or Clip."""
    made = producers(model)
    return any(
        (node := made.get(o.name)) is not None and node.op_type in ("Relu", "Clip")
        for o in model.graph.output
    )


def _flat_gemm_biases(model: onnx.ModelProto) -> int:
    """Gemm(A, B, C[1, N]) -> Gemm(A, B, C[N]): the same sum, and the bias shape onnxruntime's
    quantizer needs (it indexes a per-channel bias by channel and fails on a [1, N] one)."""
    graph = model.graph
    weights = initializer_map(model)
    readers = consumers(model)
    listed = {v.name for v in (*graph.input, *graph.value_info)}
    flattened = 0
    for node in graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3:
            continue
        bias = weights.get(node.input[2])
        if bias is None or len(bias.dims) != 2 or bias.dims[0] != 1 or bias.name in listed:
            continue
        if len(readers[bias.name]) != 1:  # shared with another reader that may need the rank
            continue
        width = bias.dims[1]
        del bias.dims[:]
        bias.dims.append(width)
        flattened += 1
    return flattened


def _float_outputs(model: onnx.ModelProto) -> int:
    """Drop QuantizeLinear -> DequantizeLinear pairs right before graph outputs; return how many."""
    graph = model.graph
    made = producers(model)
    readers = consumers(model)
    dropped = 0
    for output in graph.output:
        dq = made.get(output.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = made.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(readers[q.output[0]]) != 1:
            continue
        value = q.input[0]
        source = made.get(value)
        if source is None or any(o.name == value for o in graph.output):
            continue
        # Rename the float tensor to the output's name, so the output keeps its name.
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == value:
                    node.input[i] = output.name
        for i, name in enumerate(source.output):
            if name == value:
                source.output[i] = output.name
        for info in [v for v in graph.value_info if v.name == value]:
            graph.value_info.remove(info)
        graph.node.remove(q)
        graph.node.remove(dq)
        dropped += 1
    if dropped:
        used = {i for n in graph.node for i in n.input}
        for init in list(graph.initializer):
            if init.name not in used:
                graph.initializer.remove(init)
    return dropped


def _reduce_range_note(config: Quantize, reduce_range: bool) -> list[str]:
    if not reduce_range or config.reduce_range is not None:
        return []
    return [
        "7-bit weights (reduce_range): this CPU has no VNNI/AMX int8 dot product, and its "
        "u8 x s8 kernels saturate full-range weights"
    ]
