"""Rules for linear layers: BatchNormalization folded into Conv, MatMul+Add as Gemm."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from duh.passes._rules import GraphView, Match, Replacement, attr

__all__ = ["ConvBatchNorm", "MatMulAddToGemm"]


@dataclass(frozen=True, slots=True)
class ConvBatchNorm:
    """BatchNorm(Conv(x, W, b)) -> Conv(x, W*s, (b - mean)*s + beta), s = scale/sqrt(var + eps)."""

    name: str = "conv-bn"
    anchor: str = "BatchNormalization"
    emits: str = "Conv"

    def opset(self, view: GraphView) -> int:
        """Any: the rewrite keeps the model's own Conv node."""
        return 0

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """A BatchNormalization whose input is a Conv read by nothing else."""
        conv = view.producer(node.input[0], "Conv")
        if conv is None:
            return "input is not produced by a Conv"
        if not view.only_feeds(conv.output[0]):
            return f"Conv {conv.name!r} output has other readers or is a graph output"
        return Match((conv, node))

    def check(self, view: GraphView, match: Match) -> str | None:
        """Weights and statistics must be constants; inference mode only."""
        conv, bn = match.nodes
        if attr(bn, "training_mode", 0):
            return "BatchNormalization is in training mode"
        if len([o for o in bn.output if o]) != 1:
            return "BatchNormalization also writes running statistics"
        if view.const(conv.input[1]) is None:
            return "Conv weight is not a constant"
        if len(conv.input) > 2 and conv.input[2] and view.const(conv.input[2]) is None:
            return "Conv bias is not a constant"
        if any(view.const(n) is None for n in bn.input[1:5]):
            return "BatchNormalization scale/bias/mean/var are not all constants"
        weight = view.const(conv.input[1])
        if weight is None or weight.dtype != np.float32 or weight.ndim < 3:
            return "Conv weight is not a float32 tensor of rank 3 or more"
        if not attr(bn, "spatial", 1):
            return "BatchNormalization normalizes per activation (spatial=0), not per channel"
        shapes = {tuple(v.shape) for v in (view.const(n) for n in bn.input[1:5]) if v is not None}
        if shapes != {(weight.shape[0],)}:
            return f"BatchNormalization parameters {sorted(shapes)} are not [{weight.shape[0]}]"
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """Scale the weight per output channel and fold the shift into the bias."""
        conv, bn = match.nodes
        weight = view.const(conv.input[1])
        scale, beta, mean, var = (view.const(n) for n in bn.input[1:5])
        assert weight is not None and scale is not None and beta is not None
        assert mean is not None and var is not None
        eps = float(attr(bn, "epsilon", 1e-5))
        factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        bias = view.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        bias64 = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
        new_weight = (weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
        new_bias = ((bias64 - mean) * factor + beta).astype(np.float32)
        w_name, b_name = view.fresh(f"{conv.name}_W_bn"), view.fresh(f"{conv.name}_B_bn")
        fused = onnx.NodeProto()
        fused.CopyFrom(conv)
        del fused.input[:]
        fused.input.extend([conv.input[0], w_name, b_name])
        del fused.output[:]
        fused.output.append(bn.output[0])
        return Replacement(
            (fused,),
            (
                numpy_helper.from_array(new_weight, w_name),
                numpy_helper.from_array(new_bias, b_name),
            ),
        )


@dataclass(frozen=True, slots=True)
class MatMulAddToGemm:
    """Add(MatMul(A, B), C) -> Gemm(A, B, C) when A is 2-D and B, C are constants."""

    name: str = "matmul-add-gemm"
    anchor: str = "Add"
    emits: str = "Gemm"

    def opset(self, view: GraphView) -> int:
        """7: before it, Gemm broadcasts a row bias only with its old ``broadcast`` attribute."""
        return 7

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """An Add of a MatMul (read only by it) and a constant."""
        for i in (0, 1):
            matmul = view.producer(node.input[i], "MatMul")
            if matmul is not None:
                if not view.only_feeds(matmul.output[0]):
                    return f"MatMul {matmul.name!r} output has other readers or is a graph output"
                return Match((matmul, node), {"bias": node.input[1 - i]})
        return "no input is produced by a MatMul"

    def check(self, view: GraphView, match: Match) -> str | None:
        """Gemm takes a 2-D A, a 2-D B and a C that broadcasts to [M, N]."""
        matmul, _add = match.nodes
        rank = view.rank(matmul.input[0])
        if rank != 2:
            return (
                f"MatMul input A has rank {rank if rank is not None else 'unknown'}; Gemm needs 2"
            )
        weight = view.const(matmul.input[1])
        if weight is None or weight.ndim != 2:
            return "MatMul input B is not a 2-D constant"
        bias = view.const(str(match.values["bias"]))
        if bias is None:
            return "the added value is not a constant"
        n = weight.shape[1]
        if (
            bias.ndim > 2
            or (bias.ndim >= 1 and bias.shape[-1] not in (1, n))
            or (bias.ndim == 2 and bias.shape[0] != 1)
        ):
            return f"bias of shape {list(bias.shape)} does not broadcast to [M, {n}] as a row"
        if weight.dtype != np.float32 or bias.dtype != np.float32:
            return "weights are not float32"
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """One Gemm writing the Add's output."""
        matmul, add = match.nodes
        gemm = onnx.helper.make_node(
            "Gemm",
            [matmul.input[0], matmul.input[1], str(match.values["bias"])],
            [add.output[0]],
            name=view.fresh(f"{matmul.name}_gemm"),
        )
        return Replacement((gemm,))
