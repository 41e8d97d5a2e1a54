"""The dynamic INT8 and weight-only INT4 modes of ``quantize`` (no calibration data needed), and
the attention-mask arithmetic static INT8 keeps in float."""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from duh.errors import MissingDependencyError, PassError
from duh.passes._base import PassResult, one_line, tool_errors
from duh.passes._graph import consumers, copy_model, initializer_map, name_nodes, producers

__all__ = [
    "QUANTIZED_OPS",
    "dynamic_int8",
    "int4_weight_only",
    "mask_arithmetic",
    "ort_quantization",
    "quantized_op_counts",
    "save_model",
]

log = logging.getLogger(__name__)

# Operators that only appear in a model someone has quantized already.
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearConcat",
        "QLinearSoftmax",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearReduceMean",
        "QLinearWhere",
        "QGemm",
        "QAttention",
        "ConvInteger",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "MatMulNBits",
        "MatMulBnb4",
        "GatherBlockQuantized",
    }
)


def quantized_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each already-quantized op type the model holds."""
    counts = collections.Counter(n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS)
    return dict(counts.most_common())


def ort_quantization() -> Any:
    try:
        import onnxruntime.quantization as quantization
    except ImportError:
        raise MissingDependencyError("onnxruntime", "core", "quantization") from None
    return quantization


def dynamic_int8(
    model: onnx.ModelProto,
    workdir: Path,
    op_types: list[str],
    exclude_nodes: list[str],
    per_channel: bool,
    reduce_range: bool,
) -> PassResult:
    """Dynamic INT8: int8 weights, activations quantized at run time (no calibration data)."""
    quantization = ort_quantization()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    work = copy_model(model)
    name_nodes(work, "q")
    source, prepared, target = (workdir / f"quantize-{n}.onnx" for n in ("in", "pre", "out"))
    save_model(work, source)
    started = time.time() - 1.0  # file times are coarser than the clock on some filesystems
    try:
        quant_pre_process(str(source), str(prepared), skip_optimization=True)
    # The symbolic shape inference raises bare Exceptions on models it cannot follow (seen on
    # BERT exports); onnx's own inference, which the fallback uses, is enough for the quantizer.
    except Exception as exc:  # noqa: BLE001
        log.info("symbolic shape inference failed (%s); using onnx shape inference", exc)
        _remove_symbolic_leftovers(started)
        try:
            quant_pre_process(
                str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True
            )
        except tool_errors() as again:
            raise PassError(
                f"onnxruntime's quantization pre-processing failed on this model: {one_line(again)}"
            ) from again
    try:
        quantization.quantize_dynamic(
            str(prepared),
            str(target),
            op_types_to_quantize=op_types,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=exclude_nodes,
            extra_options={"MatMulConstBOnly": True},
        )
    except tool_errors() as exc:
        raise PassError(
            f"onnxruntime's dynamic quantizer failed on this model: {one_line(exc)}; "
            "keep the failing ops float (exclude_op_types)"
        ) from exc
    out = onnx.load_model(str(target))
    for path in (source, prepared, target):
        path.unlink(missing_ok=True)
        Path(str(path) + ".data").unlink(missing_ok=True)
    counts = quantized_op_counts(out)
    if not counts:
        return PassResult(
            model, False, ("dynamic INT8: no MatMul/Gemm with constant weights to quantize",)
        )
    summary = ", ".join(f"{n} {op}" for op, n in counts.items())
    return PassResult(
        out, True, (f"dynamic INT8 (int8 weights, activations at run time): {summary}",)
    )


def _remove_symbolic_leftovers(since: float) -> None:
    """Delete what ORT's failing symbolic shape inference saved in the working directory since
    ``since`` (``sym_shape_infer_temp.onnx`` and its external data): a build must not litter it."""
    leftover = Path("sym_shape_infer_temp.onnx")
    if not leftover.is_file() or leftover.stat().st_mtime < since:
        return
    unreadable: tuple[type[BaseException], ...] = (OSError, *tool_errors())
    try:
        saved = onnx.load_model(str(leftover), load_external_data=False)
    except unreadable:
        return  # not the file ORT writes: leave it
    locations = {
        e.value for t in saved.graph.initializer for e in t.external_data if e.key == "location"
    }
    for name in locations:
        if Path(name).name == name:  # only files next to it, as ORT writes them
            Path(name).unlink(missing_ok=True)
    leftover.unlink(missing_ok=True)


def int4_weight_only(
    model: onnx.ModelProto,
    block_size: int,
    min_weights: int,
    accuracy_level: int,
    exclude_nodes: tuple[str, ...],
) -> PassResult:
    """4-bit blocked weights for MatMuls with a large constant weight (ORT's MatMulNBits)."""
    ort_quantization()
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    work = copy_model(model)
    name_nodes(work, "q")
    weights = initializer_map(work)
    chosen, skipped = [], list(exclude_nodes)
    for node in work.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        dims = list(weights[node.input[1]].dims)
        if len(dims) == 2 and int(np.prod(dims)) >= min_weights and node.name not in skipped:
            chosen.append(node.name)
        else:
            log.debug("int4: MatMul %s (weight %s) stays float", node.name, dims)
            skipped.append(node.name)
    if not chosen:
        return PassResult(
            model,
            False,
            (
                "int4: no MatMul with a 2-D constant weight of at least "
                f"{min_weights} "
                "elements; nothing quantized",
            ),
        )
    try:
        quantizer = MatMulNBitsQuantizer(
            work,
            bits=4,
            block_size=block_size,
            is_symmetric=True,
            accuracy_level=accuracy_level or None,
            nodes_to_exclude=skipped,
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
        quantizer.model.topological_sort()
    except tool_errors() as exc:
        raise PassError(
            f"onnxruntime's int4 weight quantizer failed on this model: {one_line(exc)}"
        ) from exc
    out: onnx.ModelProto = quantizer.model.model
    done = sum(1 for n in out.graph.node if n.op_type == "MatMulNBits")
    return PassResult(
        out,
        True,
        (
            f"int4 weight-only: {done} MatMul(s) -> MatMulNBits (block {block_size}, "
            f"accuracy level {accuracy_level}); runs on onnxruntime only",
        ),
    )


def save_model(model: onnx.ModelProto, path: Path) -> None:
    large = model.ByteSize() > 1_800_000_000
    onnx.save_model(model, str(path), save_as_external_data=large, location=path.name + ".data")


# A constant this large (or infinite) is a mask's "minus infinity", not a value to quantize.
_MASK_MAGNITUDE = 1e4
# Ops through which a mask travels on its way to the attention scores (broadcast, cast, scale).
_MASK_PATH_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Neg", "Where", "Cast", "Expand", "Unsqueeze", "Squeeze",
        "Reshape", "Concat", "Slice", "Tile", "Transpose", "Max", "Min", "Clip",
    }
)  # fmt: skip


def _huge(array: np.ndarray) -> bool:
    if array.dtype.kind != "f" or array.size == 0:
        return False
    return bool(np.any(~np.isfinite(array)) or np.max(np.abs(array)) >= _MASK_MAGNITUDE)


def _huge_constants(model: onnx.ModelProto) -> set[str]:
    """Names of float constants (initializers, Constant/ConstantOfShape values) that hold a
    mask's -inf or a finfo.min-like magnitude."""
    from onnx import numpy_helper

    found = {t.name for t in model.graph.initializer if _huge(numpy_helper.to_array(t))}
    for node in model.graph.node:
        if node.op_type not in ("Constant", "ConstantOfShape"):
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and _huge(numpy_helper.to_array(attr.t)):
                found.add(node.output[0])
    return found


def mask_arithmetic(model: onnx.ModelProto) -> list[str]:
    """Nodes on the path of an attention mask, which static INT8 must leave in float.

    Additive masks (``scores + (1 - mask) * -3.4e38``, ``Where(mask, 0, -inf)``) hold values no
    8-bit range can carry next to the scores: quantizing them (minmax takes -inf's range) wipes
    out the scores. Such a path starts at a huge or infinite constant and runs through
    elementwise and shape ops up to the Softmax it feeds; the ``Where`` that PyTorch's
    scaled-dot-product export puts after the Softmax (NaN rows -> 0) is excluded too.
    """
    tainted = _huge_constants(model)
    made = producers(model)
    readers = consumers(model)
    chosen: list[str] = []
    for node in model.graph.node:
        if node.op_type in _MASK_PATH_OPS and any(i in tainted for i in node.input if i):
            tainted.update(node.output)
            chosen.append(node.name)
        elif node.op_type == "Where":
            around = [made.get(i) for i in node.input if i]
            around += [r for o in node.output for r in readers.get(o, [])]
            if any(n is not None and n.op_type in ("Softmax", "IsNaN") for n in around):
                chosen.append(node.name)
    return [n for n in chosen if n]
