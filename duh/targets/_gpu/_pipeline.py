"""The default GPU pipeline and the int8 preparation TensorRT needs.

Both GPU routes build TensorRT engines from the pipeline's ONNX (the ``tensorrt`` engine itself,
and ONNX Runtime through its TensorRT execution provider), so both run this pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from duh.errors import TargetError
from duh.targets._base import PassSpec, TargetSpec
from duh.targets._gpu._placement import misplaced_qdq, place_for_tensorrt
from duh.targets._gpu._qdq import check_qdq, fold_bias_dequantize, qdq_counts

if TYPE_CHECKING:
    import onnx

__all__ = ["float_passes", "gpu_default_passes", "int8_quantize_config", "prepare_int8"]


def int8_quantize_config() -> dict[str, Any]:
    """The ``quantize`` pass config TensorRT needs: static, symmetric int8, per-channel weights."""
    return {"mode": "static", "symmetric_activations": True, "per_channel": True}


def float_passes() -> list[PassSpec]:
    """Graph clean-up before TensorRT; its own builder does the fusions (no ``fuse`` pass, whose
    onnxruntime-specific operators TensorRT's parser does not know)."""
    return [PassSpec("simplify"), PassSpec("fold-constants"), PassSpec("cleanup")]


def gpu_default_passes(spec: TargetSpec) -> list[PassSpec]:
    """Clean-up passes; then fp16 conversion (fp16) or symmetric Q/DQ quantization (int8)."""
    passes = float_passes()
    if spec.precision == "fp16":
        passes.append(PassSpec("fp16"))
    elif spec.precision == "int8":
        passes.append(PassSpec("quantize", int8_quantize_config()))
    return passes


def prepare_int8(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Make a Q/DQ model TensorRT-ready (int32 biases back to float) and check TensorRT's rules.

    Raises ``TargetError`` listing the violations, or when the model has no Q/DQ nodes at all.
    """
    counts = qdq_counts(model)
    if not counts["QuantizeLinear"] and not counts["DequantizeLinear"]:
        raise TargetError(
            "an int8 TensorRT build needs a model with explicit Q/DQ nodes and this one has none; "
            "keep the quantize pass in the pipeline (the default for cuda-int8) and give --calib"
        )
    model, folded = fold_bias_dequantize(model)
    notes = []
    if folded:
        notes.append(f"{folded} int32 bias DequantizeLinear node(s) folded to float biases")
    model, rewired = place_for_tensorrt(model)
    if rewired:
        notes.append(
            f"TensorRT placement: {rewired} activation Q/DQ input(s) off ReLU/Clip/pooling "
            "(Q/DQ kept on weighted-op inputs and residual Add inputs)"
        )
    misplaced = misplaced_qdq(model)
    if misplaced:
        raise TargetError(f"Q/DQ placement left for TensorRT: {misplaced[0]}")
    counts = qdq_counts(model)
    problems = check_qdq(model)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise TargetError(
            f"the Q/DQ model breaks TensorRT's quantization rules: {shown}{more}; quantize with "
            "symmetric int8 activations and per-channel weights (the default cuda-int8 pipeline)"
        )
    notes.append(
        f"explicit Q/DQ meets TensorRT's rules: {counts['QuantizeLinear']} Q, "
        f"{counts['DequantizeLinear']} DQ"
    )
    return model, notes
