"""Rules that put the attention PyTorch's exporters write into the form ONNX Runtime's BERT
attention fusion matches: ``Softmax(Add(Mul(MatMul(q, k), scale), mask)) @ v``.

``torch.onnx`` writes ``scaled_dot_product_attention`` (which transformers' sdpa attention calls)
with the scale split as sqrt(scale) over q and over k, and with a guard that turns the NaN a
fully masked row's Softmax gives into 0; ORT's fusion knows neither, so it fused no Attention in
such exports (all-MiniLM-L6-v2 among them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from duh.passes._rules import GraphView, Match, Replacement, attr

__all__ = [
    "BoolMaskBias",
    "KTransposeChain",
    "MaskUnsqueeze",
    "SdpaScale",
    "SoftmaxNanGuard",
    "head_size",
    "restore_nan_guards",
]


def head_size(view: GraphView, name: str) -> int | None:
    """The last dim of the [batch, heads, seq, head] tensor ``name``: from its inferred shape,
    else from the Transpose(Reshape(x, Concat(..., heads, head))) that writes it."""
    shape = view.shapes.get(name)
    if shape and isinstance(shape[-1], int):
        return shape[-1]
    transpose = view.producer(name, "Transpose")
    if transpose is None:
        return None
    perm = attr(transpose, "perm")
    reshape = view.producer(transpose.input[0], "Reshape")
    if not perm or reshape is None:
        return None
    axis = int(perm[-1])
    target = view.const(reshape.input[1])
    if target is not None and target.ndim == 1 and len(target) > axis and target[axis] > 0:
        return int(target[axis])
    concat = view.producer(reshape.input[1], "Concat")
    if concat is None or len(concat.input) <= axis:
        return None
    value = view.scalar(concat.input[axis])
    return int(value) if value is not None and value > 0 else None


@dataclass(frozen=True, slots=True)
class SdpaScale:
    """MatMul(Mul(q, a), Mul(k, b)) -> Div(MatMul(q, k), 1/(a*b)), a*b = 1/sqrt(head size).

    A Div, as BERT exports write it: ORT takes the first Mul above the mask Add for the mask's
    ``(1 - mask) * -10000``, so a Mul there would hide a mask written that way."""

    name: str = "sdpa-scale"
    anchor: str = "MatMul"
    emits: str = "MatMul"

    def opset(self, view: GraphView) -> int:
        """Any: the rewrite writes the ops it takes."""
        return 0

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """Both operands scaled by a constant scalar, each scaled value read only here."""
        muls: list[onnx.NodeProto] = []
        operands: list[str] = []
        scale = 1.0
        for name in node.input:
            mul = view.producer(name, "Mul")
            if mul is None or not view.only_feeds(name):
                return "an operand is not a Mul read only by this MatMul"
            scalars = [view.scalar(n) for n in mul.input]
            if scalars.count(None) != 1:
                return "a Mul does not scale by one constant scalar"
            muls.append(mul)
            operands.append(mul.input[scalars.index(None)])
            scale *= next(s for s in scalars if s is not None)
        return Match((*muls, node), {"q": operands[0], "k": operands[1], "scale": scale})

    def check(self, view: GraphView, match: Match) -> str | None:
        """Attention scores (read by Add or Softmax); the scale is ORT Attention's default."""
        out = match.nodes[-1].output[0]
        readers = {n.op_type for n in view.consumers.get(out, ())}
        if not readers or not readers <= {"Add", "Softmax"}:
            return "the product is not read by a mask Add or a Softmax"
        head = head_size(view, str(match.values["q"]))
        if head is None:
            return "the head size of q is unknown"
        scale = float(match.values["scale"])
        if not math.isclose(scale, 1 / math.sqrt(head), rel_tol=1e-4):
            return f"scale {scale:g} is not 1/sqrt({head}), which ORT's Attention assumes"
        for mul in match.nodes[:2]:
            const = next(n for n in mul.input if view.scalar(n) is not None)
            value = view.const(const)
            if value is None or value.dtype != np.float32:
                return "the scale is not float32"
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """One MatMul of the unscaled operands, then one Div by sqrt(head size)."""
        node = match.nodes[-1]
        scores = view.fresh(f"{node.output[0]}_unscaled")
        scale = numpy_helper.from_array(
            np.array(1 / float(match.values["scale"]), np.float32),
            view.fresh(f"{node.name}_sqrt_d"),
        )
        return Replacement(
            (
                onnx.helper.make_node(
                    "MatMul",
                    [str(match.values["q"]), str(match.values["k"])],
                    [scores],
                    name=view.fresh(f"{node.name}_qk"),
                ),
                onnx.helper.make_node(
                    "Div", [scores, scale.name], [node.output[0]], name=view.fresh(node.name)
                ),
            ),
            (scale,),
        )


@dataclass(frozen=True, slots=True)
class SoftmaxNanGuard:
    """Where(IsNaN(s), 0, s), s = Softmax(x) -> Softmax(x).

    The guard matters only for a row whose every score is -inf (every key masked); ORT's
    Attention adds a finite mask value there instead. Where the fusion leaves the Softmax,
    ``restore_nan_guards`` puts the guard back.
    """

    name: str = "softmax-nan-guard"
    anchor: str = "Where"
    emits: str = "Softmax"

    def opset(self, view: GraphView) -> int:
        """Any: the rewrite keeps the model's own Softmax."""
        return 0

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """A Where choosing 0 where the Softmax it passes on is NaN."""
        isnan = view.producer(node.input[0], "IsNaN")
        if isnan is None or list(node.input[2:]) != [isnan.input[0]]:
            return "not Where(IsNaN(s), 0, s)"
        softmax = view.producer(isnan.input[0], "Softmax")
        fill = view.const(node.input[1])
        if softmax is None or fill is None or fill.size != 1 or fill.dtype != np.float32:
            return "the guarded value is not a Softmax, or the fill not a float32 scalar"
        if float(fill.reshape(-1)[0]) != 0.0:
            return "the fill is not 0"
        if not view.only_feeds(softmax.output[0], 2) or not view.only_feeds(isnan.output[0]):
            return "the Softmax or its IsNaN has other readers"
        return Match((softmax, isnan, node))

    def check(self, view: GraphView, match: Match) -> str | None:
        """Nothing beyond the match."""
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """The Softmax alone, writing the guard's output."""
        softmax, _isnan, where = match.nodes
        node = onnx.helper.make_node(
            "Softmax",
            list(softmax.input),
            [where.output[0]],
            name=view.fresh(softmax.name),
            axis=int(attr(softmax, "axis", -1)),
        )
        return Replacement((node,))


def restore_nan_guards(model: onnx.ModelProto, guarded: set[str]) -> int:
    """Put ``Where(IsNaN(s), 0, s)`` back after each Softmax writing a name in ``guarded`` (the
    outputs ``SoftmaxNanGuard`` took over); return how many were put back."""
    restored = 0
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        if node.output[0] not in guarded:
            nodes.append(node)
            continue
        out = node.output[0]
        raw, nan, zero = f"{out}_unguarded", f"{out}_isnan", f"{out}_nan_fill"
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.output[0] = raw
        model.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), zero))
        nodes += [
            copy,
            onnx.helper.make_node("IsNaN", [raw], [nan], name=f"{node.name}_isnan"),
            onnx.helper.make_node("Where", [nan, zero, raw], [out], name=f"{node.name}_guard"),
        ]
        restored += 1
    if restored:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return restored


def _dims_of(view: GraphView, name: str, source: str) -> list[int | str] | None:
    """A shape tensor ``name`` as a list of entries: ints, or ``"d<i>"`` for dim i of tensor
    ``source`` (read through Shape, Slice, Gather, Unsqueeze and Concat); None where unknown."""
    value = view.const(name)
    if value is not None:
        return [int(v) for v in value.reshape(-1)]
    node = view.producers.get(name)
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    rank = view.rank(source)
    if node.op_type == "Shape" and node.input[0] == source and rank is not None:
        start, end = int(attr(node, "start", 0)), attr(node, "end", None)
        return [f"d{i}" for i in range(rank)[start : None if end is None else int(end)]]
    if node.op_type == "Concat":
        parts = [_dims_of(view, i, source) for i in node.input]
        return None if any(p is None for p in parts) else [d for p in parts for d in p or ()]
    if node.op_type == "Unsqueeze":
        return _dims_of(view, node.input[0], source)
    if node.op_type == "Slice" and len(node.input) in (3, 4):
        data = _dims_of(view, node.input[0], source)
        starts, ends = view.const(node.input[1]), view.const(node.input[2])
        if data is None or starts is None or ends is None or starts.size != 1 or ends.size != 1:
            return None
        return data[int(starts.reshape(-1)[0]) : int(ends.reshape(-1)[0])]
    return None


@dataclass(frozen=True, slots=True)
class KTransposeChain:
    """Reshape(Transpose(Reshape(k, [-1, S, D]), [0, 2, 1]), [B, H, D, S]) -> Transpose(k,
    [0, 1, 3, 2]): torch's dynamo export transposes k for the scores on 3-D views."""

    name: str = "sdpa-k-transpose"
    anchor: str = "Reshape"
    emits: str = "Transpose"

    def opset(self, view: GraphView) -> int:
        """Any: Transpose exists at every opset."""
        return 0

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """Reshape(Transpose(Reshape(k, s1), perm [0, 2, 1]), s2), each read only once."""
        transpose = view.producer(node.input[0], "Transpose")
        if transpose is None or list(attr(transpose, "perm") or ()) != [0, 2, 1]:
            return "the input is not a Transpose swapping the last two of three axes"
        inner = view.producer(transpose.input[0], "Reshape")
        if inner is None or not view.only_feeds(inner.output[0]):
            return "the Transpose does not take a Reshape read only by it"
        if not view.only_feeds(transpose.output[0]):
            return "the Transpose has other readers"
        return Match((inner, transpose, node), {"k": inner.input[0]})

    def check(self, view: GraphView, match: Match) -> str | None:
        """k is 4-D; the first Reshape merges its leading two dims, the second splits them back."""
        inner, _transpose, outer = match.nodes
        k = str(match.values["k"])
        if view.rank(k) != 4:
            return "k is not known to be 4-D"
        head = head_size(view, k)
        first, second = _dims_of(view, inner.input[1], k), _dims_of(view, outer.input[1], k)
        if first is None or second is None:
            return "the reshape targets are not made from k's shape"

        def same(got: list[int | str], want: list[str]) -> bool:
            return len(got) == len(want) and all(
                g == w or (w == "d3" and head is not None and g == head)
                for g, w in zip(got, want, strict=True)
            )

        if not (
            (first[0] == -1 and same(first[1:], ["d2", "d3"])) or same(first, ["d0", "d2", "d3"])
        ):
            return f"the first Reshape {first} does not merge k's two leading dims"
        if not same(second, ["d0", "d1", "d3", "d2"]):
            return f"the second Reshape {second} does not split them back"
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """One Transpose of k's last two axes."""
        outer = match.nodes[-1]
        node = onnx.helper.make_node(
            "Transpose",
            [str(match.values["k"])],
            [outer.output[0]],
            name=view.fresh(f"{outer.name}_kt"),
            perm=[0, 1, 3, 2],
        )
        return Replacement((node,))


@dataclass(frozen=True, slots=True)
class MaskUnsqueeze:
    """Unsqueeze(mask, [1, 2]) -> Unsqueeze(Unsqueeze(mask, [1]), [2]) for a 2-D graph input:
    ORT's BERT fusion finds the mask through two Unsqueezes (``mask[:, None, None, :]``)."""

    name: str = "mask-unsqueeze"
    anchor: str = "Unsqueeze"
    emits: str = "Unsqueeze"

    def opset(self, view: GraphView) -> int:
        """13, where Unsqueeze takes its axes as an input."""
        return 13

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """An Unsqueeze of a 2-D graph input over the constant axes [1, 2]."""
        axes = view.const(node.input[1]) if len(node.input) > 1 else None
        if axes is None or sorted(int(a) for a in axes.reshape(-1)) != [1, 2]:
            return "the axes are not the constant [1, 2]"
        inputs = {i.name for i in view.model.graph.input}
        if node.input[0] not in inputs or view.rank(node.input[0]) != 2:
            return "the input is not a 2-D graph input"
        return Match((node,), {"mask": node.input[0]})

    def check(self, view: GraphView, match: Match) -> str | None:
        """Nothing beyond the match."""
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """Two Unsqueezes, one axis each."""
        node = match.nodes[0]
        one, two = (
            numpy_helper.from_array(np.array([a], np.int64), view.fresh(f"{node.name}_axis{a}"))
            for a in (1, 2)
        )
        middle = view.fresh(f"{node.output[0]}_1")
        return Replacement(
            (
                onnx.helper.make_node(
                    "Unsqueeze", [node.input[0], one.name], [middle], name=view.fresh(node.name)
                ),
                onnx.helper.make_node(
                    "Unsqueeze", [middle, two.name], [node.output[0]], name=view.fresh(node.name)
                ),
            ),
            (one, two),
        )


def _mask_input(view: GraphView, name: str) -> tuple[str, list[onnx.NodeProto]] | None:
    """The 2-D graph input that ``Unsqueeze(Unsqueeze(m, [1]), [2])`` (``m[:, None, None, :]``)
    writing ``name`` reads, and those two nodes; None where ``name`` is not that."""
    outer = view.producer(name, "Unsqueeze")
    inner = None if outer is None else view.producer(outer.input[0], "Unsqueeze")
    if outer is None or inner is None:
        return None
    axes = [view.const(n.input[1]) if len(n.input) > 1 else None for n in (inner, outer)]
    if any(a is None or a.size != 1 for a in axes) or [
        int(a.reshape(-1)[0]) for a in axes if a is not None
    ] != [1, 2]:
        return None
    inputs = {i.name for i in view.model.graph.input}
    if inner.input[0] not in inputs or view.rank(inner.input[0]) != 2:
        return None
    return inner.input[0], [inner, outer]


@dataclass(frozen=True, slots=True)
class BoolMaskBias:
    """Where(Cast(m[:, None, None, :], bool), 0, -inf) -> (1 - float(bool(m))[:, None, None, :])
    * lowest: the additive mask ORT's BERT fusion reads, from a boolean one.

    The same numbers but where every key of a row is masked (-inf gives NaN, then the sdpa
    guard's 0; lowest gives uniform weights, as ORT's Attention does): ``bert_fusions`` keeps
    it only where every attention block fuses."""

    name: str = "bool-mask-bias"
    anchor: str = "Where"
    emits: str = "Mul"

    def opset(self, view: GraphView) -> int:
        """13, where Unsqueeze takes its axes as an input."""
        return 13

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """Where(Cast(Unsqueeze(Unsqueeze(m)), to=bool), 0, -inf) with m a 2-D graph input."""
        cast = view.producer(node.input[0], "Cast")
        if cast is None or attr(cast, "to") != onnx.TensorProto.BOOL:
            return "the condition is not a Cast to bool"
        found = _mask_input(view, cast.input[0])
        if found is None:
            return "the Cast does not take m[:, None, None, :] of a 2-D graph input"
        keep, drop = view.const(node.input[1]), view.const(node.input[2])
        if keep is None or drop is None or keep.size != 1 or drop.size != 1:
            return "the branches are not constant scalars"
        if keep.dtype != np.float32 or float(keep.reshape(-1)[0]) != 0.0:
            return "the kept branch is not float32 0"
        if not np.isneginf(drop.reshape(-1)[0]):
            return "the masked branch is not -inf"
        return Match((node,), {"mask": found[0]})

    def check(self, view: GraphView, match: Match) -> str | None:
        """Nothing beyond the match."""
        return None

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """bool, back to float, m[:, None, None, :], then (1 - it) * lowest."""
        node = match.nodes[0]
        base = view.fresh(f"{node.output[0]}_additive")
        one = numpy_helper.from_array(np.array(1.0, np.float32), f"{base}_one")
        low = numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), f"{base}_low")
        ax1 = numpy_helper.from_array(np.array([1], np.int64), f"{base}_axis1")
        ax2 = numpy_helper.from_array(np.array([2], np.int64), f"{base}_axis2")
        make = onnx.helper.make_node
        nodes = (
            make("Cast", [str(match.values["mask"])], [f"{base}_bool"], name=f"{base}_bool",
                 to=onnx.TensorProto.BOOL),
            make("Unsqueeze", [f"{base}_bool", ax1.name], [f"{base}_u1"], name=f"{base}_u1"),
            make("Unsqueeze", [f"{base}_u1", ax2.name], [f"{base}_u2"], name=f"{base}_u2"),
            make("Cast", [f"{base}_u2"], [f"{base}_keep"], name=f"{base}_keep",
                 to=onnx.TensorProto.FLOAT),
            make("Sub", [one.name, f"{base}_keep"], [f"{base}_masked"], name=f"{base}_masked"),
            make("Mul", [f"{base}_masked", low.name], [node.output[0]], name=base),
        )  # fmt: skip
        return Replacement(nodes, (one, low, ax1, ax2))
