"""``lower-ml``: ai.onnx.ml classifiers and regressors as standard ONNX ops, for engines without
the ML domain (OpenVINO, TVM).

Tree ensembles take the GEMM form (as Hummingbird does): gather each internal node's feature,
compare with its threshold by its mode (a NaN takes the node's missing-value track), one batched
MatMul of the decisions with each tree's path matrix finds the leaf each row reaches, a second
sums the leaves' values; then base values, the post transform, and the label of the best
column. ``LinearClassifier``/``LinearRegressor`` become a MatMul, ``Normalizer`` a division;
the preprocessing of scikit-learn pipelines, ``Scaler`` ((x - offset) * scale), ``Binarizer``
and ``Imputer``, elementwise ops.
A node in a form the lowering does not reproduce exactly is a ``PassError`` naming why (the
engine could not run it anyway).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from duh.errors import PassError
from duh.passes._base import PassBase, PassContext, PassResult, register_pass
from duh.passes._tree_ml5 import as_regressor
from duh.passes._trees import ModeSet, padded_size, read_forest

__all__ = ["LowerMl"]

_OPSET = 13
_COMPARE = {
    "BRANCH_LEQ": ("LessOrEqual", False),
    "BRANCH_LT": ("Less", False),
    "BRANCH_GTE": ("GreaterOrEqual", False),
    "BRANCH_GT": ("Greater", False),
    "BRANCH_EQ": ("Equal", False),
    "BRANCH_NEQ": ("Equal", True),
}


class _Emitter:
    """Appends nodes and constants under unique names derived from the lowered node's name."""

    def __init__(
        self, base: str, features: dict[str, int], types: dict[str, int] | None = None
    ) -> None:
        self.base = base
        self.types = types or {}  # value name -> its elem type, where the graph declares it
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.features = features  # value name -> its last dim, where fixed
        self.notes: list[str] = []  # what a lowering chose that the user should know
        self._count = itertools.count()

    def name(self, hint: str) -> str:
        return f"{self.base}/{hint}_{next(self._count)}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name in (name, name + "_as_tensor"):
            value = helper.get_attribute_value(a)
            if isinstance(value, onnx.TensorProto):
                return numpy_helper.to_array(value).tolist()
            if isinstance(value, bytes):
                return value.decode("utf-8")
            if isinstance(value, list) and value and isinstance(value[0], bytes):
                return [v.decode("utf-8") for v in value]
            return value
    return default


def _post(e: _Emitter, scores: str, transform: str) -> str | None:
    if transform == "NONE":
        return scores
    if transform == "SOFTMAX":
        return e.op("Softmax", [scores], axis=1)
    if transform == "LOGISTIC":
        return e.op("Sigmoid", [scores])
    return None


def _labels(e: _Emitter, node: onnx.NodeProto, scores: str, out: str) -> int:
    ints, strings = _attr(node, "classlabels_int64s"), _attr(node, "classlabels_strings")
    labels = np.array(strings, dtype=object) if strings else np.array(ints or [], np.int64)
    best = e.op("ArgMax", [scores], axis=1, keepdims=0)
    e.op("Gather", [e.const("labels", labels), best], out, axis=0)
    return len(labels)


def _as_float(e: _Emitter, x: str) -> str:
    return e.op("Cast", [x], to=onnx.TensorProto.FLOAT)


def _lower_trees(e: _Emitter, node: onnx.NodeProto) -> str:
    classifier = node.op_type == "TreeEnsembleClassifier"
    transform = str(_attr(node, "post_transform", "NONE"))
    binary = positive = False
    if classifier:
        ints, strings = _attr(node, "classlabels_int64s"), _attr(node, "classlabels_strings")
        columns = len(strings or ints or [])
        ids = set(_attr(node, "class_ids", []))
        binary = columns == 2 and len(ids) == 1
        positive = min(_attr(node, "class_weights", [0.0])) >= 0
        if binary and transform == "LOGISTIC" and positive:
            return "a binary classifier with one positive score column under LOGISTIC"
    else:
        columns = int(_attr(node, "n_targets", 1))
    aggregate = str(_attr(node, "aggregate_function", "SUM"))
    if aggregate not in ("SUM", "AVERAGE"):
        return f"aggregate_function {aggregate} is not lowered"
    if transform not in ("NONE", "SOFTMAX", "LOGISTIC") or (not classifier and transform != "NONE"):
        return f"post_transform {transform} is not lowered"
    forest, why = read_forest(node, columns)
    if forest is None:
        return why
    t, i = forest.features.shape
    x = _as_float(e, node.input[0])
    picked = e.op("Gather", [x, e.const("features", forest.features.reshape(-1))], axis=1)
    thresholds = e.const("thresholds", forest.thresholds.reshape(-1))
    decision: str | None = None
    flat_modes = forest.modes.reshape(-1)
    for m in sorted(set(flat_modes.tolist())):
        op, negate = _COMPARE[ModeSet[m]]
        hit = e.op(op, [picked, thresholds])
        if negate:
            hit = e.op("Not", [hit])
        if decision is None:
            decision = hit
        else:
            decision = e.op("Where", [e.const("mode", flat_modes == m), hit, decision])
    assert decision is not None
    if forest.missing_true.any():
        track = e.const("track", forest.missing_true.reshape(-1))
        nan = e.op("And", [e.op("IsNaN", [picked]), track])
        decision = e.op("Or", [decision, nan])
    d = e.op("Cast", [decision], to=onnx.TensorProto.FLOAT)
    d = e.op("Reshape", [d, e.const("shape", np.array([-1, t, i], np.int64))])
    d = e.op("Transpose", [d], perm=[1, 0, 2])  # [T, N, I]
    turns = e.op("MatMul", [d, e.const("paths", forest.paths)])  # [T, N, L]
    reached = e.op("Equal", [turns, e.const("true_counts", forest.true_counts)])
    reached = e.op("Cast", [reached], to=onnx.TensorProto.FLOAT)
    values = e.op("MatMul", [reached, e.const("leaf_values", forest.leaf_values)])  # [T, N, K]
    # a vote of exactly 0.5 (binary forests) hangs on the sum's rounding: exact there only
    scores = _sum_trees(e, values, t if binary and positive and transform == "NONE" else 0)
    if aggregate == "AVERAGE":
        scores = e.op("Div", [scores, e.const("trees", np.array(t, np.float32))])
    base = _attr(node, "base_values")
    if binary:
        _binary_scores(e, node, scores, int(next(iter(ids))), positive, transform)
        return ""
    if base:
        scores = e.op("Add", [scores, e.const("base", np.array(base, np.float32))])
    if classifier:
        out = _post(e, scores, transform)
        assert out is not None
        e.op("Identity", [out], node.output[1])
        _labels(e, node, scores, node.output[0])
    else:
        e.op("Identity", [scores], node.output[0])
    return ""


def _sum_trees(e: _Emitter, values: str, trees: int) -> str:
    """The trees' [T, N, K] values summed over T as ONNX Runtime does, in double: float32 adds
    with Knuth's TwoSum carry the rounding error and add it once at the end. Ties hang on it
    (a forest's vote of exactly 0.5). ``trees`` 0 (or past 512): one ReduceSum, in float32."""
    axes = e.const("axes", np.array([0], np.int64))
    if not trees or trees > 512:
        return e.op("ReduceSum", [values, axes], keepdims=0)
    parts = [e.name("tree") for _ in range(trees)]
    e.nodes.append(helper.make_node("Split", [values], parts, name=e.name("split"), axis=0))
    total = e.op("Squeeze", [parts[0], axes])
    carry = None
    for part in parts[1:]:
        b = e.op("Squeeze", [part, axes])
        s = e.op("Add", [total, b])
        bb = e.op("Sub", [s, total])
        err = e.op("Add", [e.op("Sub", [total, e.op("Sub", [s, bb])]), e.op("Sub", [b, bb])])
        carry = err if carry is None else e.op("Add", [carry, err])
        total = s
    return total if carry is None else e.op("Add", [total, carry])


def _binary_scores(
    e: _Emitter, node: onnx.NodeProto, scores: str, column: int, positive: bool, transform: str
) -> None:
    """Two classes, one score column s (skl2onnx's binary trees), as ONNX Runtime reads them:
    probabilities [1 - s, s] with label 1 when s > 0.5 (weights all >= 0, no transform), else
    [-s, s] (or their logistic) with label 1 when s > 0."""
    base = list(_attr(node, "base_values", []) or [])
    s = e.op("Gather", [scores, e.const("column", np.array([column], np.int64))], axis=1)
    if len(base) == 1:
        s = e.op("Add", [s, e.const("base", np.array(base, np.float32))])
    if positive and transform == "NONE":
        other = e.op("Sub", [e.const("one", np.array(1.0, np.float32)), s])
        cut = 0.5
    else:
        other = e.op("Neg", [s])
        cut = 0.0
    pair = e.op("Concat", [other, s], axis=1)
    _ = _post(e, pair, transform)
    assert _ is not None
    e.op("Identity", [_], node.output[1])
    ints, strings = _attr(node, "classlabels_int64s"), _attr(node, "classlabels_strings")
    labels = np.array(strings, dtype=object) if strings else np.array(ints, np.int64)
    above = e.op("Greater", [s, e.const("cut", np.array(cut, np.float32))])
    index = e.op(
        "Cast",
        [e.op("Squeeze", [above, e.const("axes", np.array([1], np.int64))])],
        to=onnx.TensorProto.INT64,
    )
    e.op("Gather", [e.const("labels", labels), index], node.output[0], axis=0)


def _lower_linear(e: _Emitter, node: onnx.NodeProto) -> str:
    coefficients = np.array(_attr(node, "coefficients", []), np.float32)
    intercepts = np.array(_attr(node, "intercepts", []) or [], np.float32)
    transform = str(_attr(node, "post_transform", "NONE"))
    if node.op_type == "LinearClassifier":
        ints, strings = _attr(node, "classlabels_ints"), _attr(node, "classlabels_strings")
        rows = len(strings or ints or [])
        if rows < 2 or coefficients.size % rows:
            return "a binary classifier with one coefficient row (ONNX leaves its scores vague)"
    else:
        rows = int(_attr(node, "targets", 1))
        if transform != "NONE":
            return f"post_transform {transform} is not lowered"
    width = e.features.get(node.input[0])
    if width is not None and coefficients.size != rows * width:
        if coefficients.size < rows * width:
            return f"{coefficients.size} coefficients do not fit {rows} outputs x {width} features"
        # More weights than the input has features (a model trained on more columns than it
        # declares): ONNX Runtime, the reference, reads the first C x F with the input's stride.
        e.notes.append(
            f"{node.op_type} {node.name!r}: {coefficients.size} coefficients for {rows} outputs x "
            f"{width} features; the first {rows * width} read as ONNX Runtime reads them"
        )
        coefficients = coefficients[: rows * width]
    weights = coefficients.reshape(rows, -1).T.copy()
    x = _as_float(e, node.input[0])
    scores = e.op("MatMul", [x, e.const("coefficients", weights)])
    if intercepts.size:
        scores = e.op("Add", [scores, e.const("intercepts", intercepts)])
    if node.op_type == "LinearRegressor":
        e.op("Identity", [scores], node.output[0])
        return ""
    out = _post(e, scores, transform)
    if out is None:
        return f"post_transform {transform} is not lowered"
    e.op("Identity", [out], node.output[1])
    labels = np.array(strings, dtype=object) if strings else np.array(ints, np.int64)
    best = e.op("ArgMax", [scores], axis=1, keepdims=0)
    e.op("Gather", [e.const("labels", labels), best], node.output[0], axis=0)
    return ""


def _lower_normalizer(e: _Emitter, node: onnx.NodeProto) -> str:
    norm = str(_attr(node, "norm", "MAX"))
    x = _as_float(e, node.input[0])
    axes = e.const("axes", np.array([1], np.int64))
    if norm == "MAX":
        scale = e.op("ReduceMax", [x, axes], keepdims=1)
    elif norm == "L1":
        scale = e.op("ReduceSum", [e.op("Abs", [x]), axes], keepdims=1)
    elif norm == "L2":
        scale = e.op("Sqrt", [e.op("ReduceSum", [e.op("Mul", [x, x]), axes], keepdims=1)])
    else:
        return f"norm {norm} is not lowered"
    e.op("Div", [x, scale], node.output[0])
    return ""


def _lower_tree_ensemble(e: _Emitter, node: onnx.NodeProto) -> str:
    scores = e.name("scores")
    regressor, transform, why = as_regressor(node, scores)
    if regressor is None:
        return why
    if transform not in ("NONE", "SOFTMAX", "LOGISTIC"):
        return f"post_transform {transform} is not lowered"
    why = _lower_trees(e, regressor)
    if why:
        return why
    out = _post(e, scores, transform) or scores
    kind = e.types.get(node.output[0], onnx.TensorProto.FLOAT)
    if kind == onnx.TensorProto.FLOAT:
        e.op("Identity", [out], node.output[0])
    else:  # the scores take the input's type (double): computed in float, cast back
        e.op("Cast", [out], node.output[0], to=kind)
    return ""


def _lower_scaler(e: _Emitter, node: onnx.NodeProto) -> str:
    offset = np.asarray(_attr(node, "offset", [0.0]), np.float32)
    scale = np.asarray(_attr(node, "scale", [1.0]), np.float32)
    x = _as_float(e, node.input[0])
    shifted = e.op("Sub", [x, e.const("offset", offset)])
    e.op("Mul", [shifted, e.const("scale", scale)], node.output[0])
    return ""


def _lower_binarizer(e: _Emitter, node: onnx.NodeProto) -> str:
    kind = e.types.get(node.input[0], onnx.TensorProto.FLOAT)
    if kind not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        return "an input that is not float or double is not lowered"
    dtype = onnx.helper.tensor_dtype_to_np_dtype(kind)
    threshold = e.const("threshold", np.asarray(float(_attr(node, "threshold", 0.0)), dtype))
    e.op("Cast", [e.op("Greater", [node.input[0], threshold])], node.output[0], to=kind)
    return ""


def _lower_imputer(e: _Emitter, node: onnx.NodeProto) -> str:
    if e.types.get(node.input[0], onnx.TensorProto.FLOAT) != onnx.TensorProto.FLOAT:
        return "an input that is not float is not lowered"
    imputed = np.asarray(_attr(node, "imputed_value_floats", []), np.float32)
    if imputed.size == 0:
        return "integer imputed values are not lowered"
    replaced = float(_attr(node, "replaced_value_float", 0.0))
    x = node.input[0]
    if np.isnan(replaced):
        missing = e.op("IsNaN", [x])
    else:
        missing = e.op("Equal", [x, e.const("replaced", np.asarray(replaced, np.float32))])
    e.op("Where", [missing, e.const("imputed", imputed), x], node.output[0])
    return ""


_LOWERINGS = {
    "TreeEnsemble": _lower_tree_ensemble,  # ai.onnx.ml 5
    "TreeEnsembleClassifier": _lower_trees,
    "TreeEnsembleRegressor": _lower_trees,
    "LinearClassifier": _lower_linear,
    "LinearRegressor": _lower_linear,
    "Normalizer": _lower_normalizer,
    "Scaler": _lower_scaler,
    "Binarizer": _lower_binarizer,
    "Imputer": _lower_imputer,
}


def _ensure_opset(model: onnx.ModelProto) -> None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = max(entry.version, _OPSET)
            break
    else:
        model.opset_import.append(helper.make_opsetid("", _OPSET))
    model.ir_version = max(model.ir_version, 7)


@register_pass("lower-ml")
@dataclass(frozen=True, slots=True)
class LowerMl(PassBase):
    """Rewrite ai.onnx.ml tree ensembles, linear models, normalizers, scalers, binarizers and
    imputers into standard ops."""

    lossy: ClassVar[bool] = False

    max_path_mb: int = field(
        default=1024,
        metadata={
            "help": "largest tree path matrix (trees x internal nodes x leaves, float32) to "
            "build, in MiB; a larger forest is refused, not lowered"
        },
    )

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Lower every ML node; raise ``PassError`` for one it cannot reproduce exactly."""
        graph = model.graph
        if not any(n.domain == "ai.onnx.ml" and n.op_type in _LOWERINGS for n in graph.node):
            return PassResult(model, False)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        nodes, inits, notes, lowered = [], [], [], 0
        widths, types = {}, {}
        for v in (*out.graph.input, *out.graph.value_info, *out.graph.output):
            if v.type.tensor_type.elem_type:
                types[v.name] = int(v.type.tensor_type.elem_type)
            dims = v.type.tensor_type.shape.dim
            if dims and dims[-1].dim_value > 0:
                widths[v.name] = int(dims[-1].dim_value)
        for index, node in enumerate(out.graph.node):
            if node.domain != "ai.onnx.ml" or node.op_type not in _LOWERINGS:
                nodes.append(node)
                continue
            if node.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
                self._refuse_oversized(node, ctx)
            e = _Emitter(node.name or f"{node.op_type}_{index}", widths, types)
            why = _LOWERINGS[node.op_type](e, node)
            if why:
                # the engines this pass serves have no ai.onnx.ml: a kept node cannot run there
                raise PassError(
                    f"{node.op_type} {node.name!r} cannot be lowered to standard ONNX ops ({why})"
                    f" and {ctx.engine} has no ai.onnx.ml operators; build for ONNX Runtime "
                    "(--target cpu or onnxruntime:cpu-fp32)"
                )
            nodes.extend(e.nodes)
            inits.extend(e.inits)
            lowered += 1
            notes.append(f"{node.op_type} {node.name!r} lowered to {len(e.nodes)} standard ops")
            notes.extend(e.notes)
        if not lowered:
            return PassResult(model, False, tuple(notes))
        del out.graph.node[:]
        out.graph.node.extend(nodes)
        out.graph.initializer.extend(inits)
        _ensure_opset(out)
        if not any(n.domain == "ai.onnx.ml" for n in out.graph.node):
            kept = [o for o in out.opset_import if o.domain != "ai.onnx.ml"]
            del out.opset_import[:]
            out.opset_import.extend(kept)
        return PassResult(out, True, tuple(notes))

    def _refuse_oversized(self, node: onnx.NodeProto, ctx: PassContext) -> None:
        # The GEMM form pads every tree to the largest: a LightGBM model of 10k trees of 700
        # leaves would allocate a 20 GB path matrix (and multiply through it for every row).
        trees, internal, leaves = padded_size(node)
        mib = trees * internal * leaves * 4 / 2**20
        if mib > self.max_path_mb:
            raise PassError(
                f"{node.op_type} {node.name!r} is too large to lower to standard ONNX ops: "
                f"{trees} trees of up to {leaves} leaves make a {trees} x {internal} x {leaves} "
                f"path matrix of {mib / 1024:.1f} GiB (max_path_mb={self.max_path_mb}), and "
                f"{ctx.engine} has no ai.onnx.ml operators; build for ONNX Runtime (--target cpu "
                "or onnxruntime:cpu-fp32), which runs the ensemble natively"
            )
