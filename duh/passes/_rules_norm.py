"""Rules for transformer building blocks written out as elementwise ops: Gelu and LayerNorm."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from duh.passes._rules import GraphView, Match, Replacement, attr

__all__ = ["GeluErf", "LayerNorm"]

_SQRT2 = math.sqrt(2.0)


def _close(value: float | None, target: float, tol: float = 1e-3) -> bool:
    return value is not None and abs(value - target) <= tol * max(1.0, abs(target))


def _other(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def _factors(view: GraphView, node: onnx.NodeProto) -> tuple[list[str], list[onnx.NodeProto]]:
    """The operands of a product of up to two Muls, and the Mul nodes (the anchor last)."""
    factors, nodes = [], [node]
    for name in node.input:
        inner = view.producer(name, "Mul")
        if inner is not None and view.only_feeds(name) and view.scalar(name) is None:
            factors.extend(inner.input)
            nodes.insert(0, inner)
        else:
            factors.append(name)
    return factors, nodes


@dataclass(frozen=True, slots=True)
class GeluErf:
    """x * 0.5 * (1 + Erf(x / sqrt(2))) -> Gelu(x) (ONNX opset 20, else com.microsoft on ORT)."""

    name: str = "gelu"
    anchor: str = "Mul"
    emits: str = "Gelu"

    def opset(self, view: GraphView) -> int:
        """20 (ONNX's Gelu); on ONNX Runtime any, its contrib Gelu standing in before 20."""
        return 0 if view.engine == "onnxruntime" else 20

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """A product of x, 0.5 and Add(Erf(x/sqrt2), 1), in any order and grouping."""
        factors, muls = _factors(view, node)
        if len(factors) != 3:
            return "not a product of three factors"
        half = [f for f in factors if _close(view.scalar(f), 0.5)]
        if not half:
            return "no factor 0.5"
        rest = list(factors)
        rest.remove(half[0])
        for add_name, x in ((rest[0], rest[1]), (rest[1], rest[0])):
            add = view.producer(add_name, "Add")
            if add is None or not view.only_feeds(add_name):
                continue
            erf_name = next((n for n in add.input if view.producer(n, "Erf") is not None), None)
            if erf_name is None or not _close(view.scalar(_other(add, erf_name)), 1.0):
                continue
            erf = view.producer(erf_name, "Erf")
            assert erf is not None
            scale = view.producer(erf.input[0], ("Div", "Mul"))
            if scale is None or x not in scale.input:
                continue
            factor = view.scalar(_other(scale, x))
            ok = _close(factor, _SQRT2) if scale.op_type == "Div" else _close(factor, 1 / _SQRT2)
            if ok and view.only_feeds(erf_name) and view.only_feeds(erf.input[0]):
                return Match((scale, erf, add, *muls), {"x": x})
        return "no Add(Erf(x / sqrt(2)), 1) factor with the same x"

    def check(self, view: GraphView, match: Match) -> str | None:
        """Nothing beyond the match and the opset (checked by ``apply_rules``)."""
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """One Gelu node writing the product's output."""
        out = match.nodes[-1].output[0]
        name = view.fresh(f"{match.nodes[-1].name}_gelu")
        if view.opset >= 20:
            return Replacement(
                (onnx.helper.make_node("Gelu", [str(match.values["x"])], [out], name=name),)
            )
        node = onnx.helper.make_node(
            "Gelu", [str(match.values["x"])], [out], name=name, domain="com.microsoft"
        )
        return Replacement((node,), opsets={"com.microsoft": 1})


def _axes(view: GraphView, node: onnx.NodeProto) -> list[int] | None:
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = view.const(node.input[1])
        axes = None if value is None else value.reshape(-1).tolist()
    return None if axes is None else [int(a) for a in axes]


@dataclass(frozen=True, slots=True)
class LayerNorm:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis -> LayerNormalization."""

    name: str = "layernorm"
    anchor: str = "Add"
    emits: str = "LayerNormalization"

    def opset(self, view: GraphView) -> int:
        """17, where ONNX added LayerNormalization."""
        return 17

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """Add(Mul(Div(d = Sub(x, ReduceMean(x)), Sqrt(ReduceMean(d ** 2) + eps)), gamma), beta)."""
        mul = next((view.producer(n, "Mul") for n in node.input if view.producer(n, "Mul")), None)
        if mul is None or not view.only_feeds(mul.output[0]):
            return "no Mul (gamma) input read only by this Add"
        beta = _other(node, mul.output[0])
        div = next((view.producer(n, "Div") for n in mul.input if view.producer(n, "Div")), None)
        if div is None or not view.only_feeds(div.output[0]):
            return "the Mul does not scale a Div read only by it"
        gamma = _other(mul, div.output[0])
        sub = view.producer(div.input[0], "Sub")
        sqrt = view.producer(div.input[1], "Sqrt")
        if sub is None or sqrt is None or not view.only_feeds(sqrt.output[0]):
            return "the Div is not (x - mean) / Sqrt(...)"
        eps_add = view.producer(sqrt.input[0], "Add")
        if eps_add is None or not view.only_feeds(eps_add.output[0]):
            return "Sqrt does not take var + eps"
        var = next(
            (
                view.producer(n, "ReduceMean")
                for n in eps_add.input
                if view.producer(n, "ReduceMean")
            ),
            None,
        )
        if var is None or not view.only_feeds(var.output[0]):
            return "no ReduceMean (variance) under the Sqrt"
        eps = view.scalar(_other(eps_add, var.output[0]))
        square = view.producer(var.input[0], ("Pow", "Mul"))
        if square is None or not view.only_feeds(square.output[0]):
            return "the variance does not average a square"
        if square.op_type == "Pow" and not (
            square.input[0] == sub.output[0] and view.scalar(square.input[1]) == 2.0
        ):
            return "the variance's Pow is not (x - mean) ** 2"
        if square.op_type == "Mul" and list(square.input) != [sub.output[0]] * 2:
            return "the variance's Mul is not (x - mean) * (x - mean)"
        mean = view.producer(sub.input[1], "ReduceMean")
        if mean is None or mean.input[0] != sub.input[0] or not view.only_feeds(mean.output[0]):
            return "Sub does not take x - ReduceMean(x)"
        if not view.only_feeds(sub.output[0], 2):
            return "x - mean has readers beyond the square and the Div"
        nodes = (mean, sub, square, var, eps_add, sqrt, div, mul, node)
        return Match(nodes, {"x": sub.input[0], "gamma": gamma, "beta": beta, "eps": eps})

    def check(self, view: GraphView, match: Match) -> str | None:
        """Last-axis means, constant 1-D gamma/beta."""
        mean, _sub, _sq, var = match.nodes[:4]
        if match.values["eps"] is None:
            return "epsilon is not a constant"
        rank = view.rank(str(match.values["x"]))
        axes_mean, axes_var = _axes(view, mean), _axes(view, var)
        if rank is None or rank < 1 or axes_mean is None:
            return "the input rank or the reduced axes are unknown"
        if (
            {a % rank for a in axes_mean} != {rank - 1}
            or axes_var is None
            or {a % rank for a in axes_var} != {rank - 1}
        ):
            return f"the means reduce axes {axes_mean}/{axes_var}, not only the last axis"
        if not attr(mean, "keepdims", 1) or not attr(var, "keepdims", 1):
            return "a ReduceMean drops the reduced axis"
        for key in ("gamma", "beta"):
            value = view.const(str(match.values[key]))
            if value is None or value.ndim != 1 or value.dtype != np.float32:
                return f"{key} is not a 1-D float32 constant"
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """One LayerNormalization over the last axis."""
        values = match.values
        node = onnx.helper.make_node(
            "LayerNormalization",
            [str(values["x"]), str(values["gamma"]), str(values["beta"])],
            [match.nodes[-1].output[0]],
            name=view.fresh(f"{match.nodes[-1].name}_layernorm"),
            axis=-1,
            epsilon=float(values["eps"]),
        )
        return Replacement((node,))
