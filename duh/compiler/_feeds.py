"""What the graph tells about its inputs' values, and the feeds a build is verified on.

Random inputs break models whose inputs carry meaning: a token id past the embedding table, a
mask of 7s, a sample rate the model branches on. A small walk from each integer input through
value-preserving ops (Cast, Unsqueeze, Reshape, ...) finds the ops that give it meaning:

- the indices of a ``Gather``/``Scatter*`` (or ``OneHot``) on a table of N rows: values in
  ``[0, N)``, 0 when N is a dynamic dimension;
- a ``Where`` condition or a ``Mul``/``Sub``/logic op after a ``Cast`` (a mask): 0 or 1;
- an ``Equal``/``Greater``/``Less`` against a constant (``sr == 16000``): that constant, unless
  the input also indexes a table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from duh._ort_errors import ort_errors
from duh.calibration import CalibrationSet, load_calibration
from duh.compiler.ingest import SourceModel, normalize_for_engine
from duh.compiler.verify import synthetic_feeds
from duh.errors import ConfigError
from duh.runtime import TensorSpec, ValueRange, batch_axis, synthetic_shapes

__all__ = ["CheckFeeds", "check_feeds", "input_ranges", "quantized_ops"]

log = logging.getLogger(__name__)

# Ops whose output holds the input's values (reshaped, cast, gathered from).
_PASS_THROUGH = frozenset(
    {
        "Cast", "Concat", "Expand", "Flatten", "Identity", "Reshape", "Slice", "Split",
        "Squeeze", "Tile", "Transpose", "Unsqueeze",
    }
)  # fmt: skip
# Ops whose input 1 indexes input 0 along an axis (an index past it fails the run), and the
# ones without one axis (ND indices: 0 is the safe value).
_AXIS_INDEXERS = frozenset({"Gather", "GatherElements", "ScatterElements", "Scatter"})
_INDEXERS = _AXIS_INDEXERS | {"GatherND", "ScatterND"}
_GATHERS = frozenset({"Gather", "GatherElements", "GatherND"})
_INT_TYPES = frozenset(
    {
        onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32,
        onnx.TensorProto.INT64, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
    }
)  # fmt: skip
_MASK_USERS = frozenset({"Mul", "Sub", "And", "Or", "Not", "Xor"})
_COMPARE = frozenset({"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"})
_QUANTIZED = frozenset(
    {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
        "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
        "QGemm", "DynamicQuantizeLSTM",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CheckFeeds:
    """The inputs a build verifies its candidates on, and where they come from."""

    feeds: tuple[dict[str, np.ndarray], ...]
    source: str
    synthetic: bool


def quantized_ops(model: onnx.ModelProto) -> tuple[str, ...]:
    """The quantization ops an already-quantized model holds (QDQ, QLinear*, *Integer), sorted."""
    return tuple(
        sorted(
            {
                n.op_type
                for n in _nodes(model.graph)
                if n.op_type in _QUANTIZED or n.op_type.startswith("QLinear")
            }
        )
    )


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs (If branches, Loop and Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _nodes(sub)


def _constants(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto]) -> dict[str, np.ndarray]:
    out = {t.name: t for t in model.graph.initializer}
    values: dict[str, np.ndarray] = {}
    for name, tensor in out.items():
        if int(np.prod(tensor.dims)) <= 16:
            values[name] = numpy_helper.to_array(tensor)
    for node in nodes:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name in ("value_int", "value_float"):
                    values[node.output[0]] = np.asarray(onnx.helper.get_attribute_value(attr))
    return values


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    shapes: dict[str, tuple[int | None, ...]] = {
        t.name: tuple(int(d) for d in t.dims) for t in model.graph.initializer
    }
    graph = model.graph
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.name in shapes or not value.type.tensor_type.HasField("shape"):
            continue
        shapes[value.name] = tuple(
            int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim
        )
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(onnx.helper.get_attribute_value(attr))
    return default


def _scalar(values: Mapping[str, np.ndarray], name: str) -> float | None:
    value = values.get(name)
    if value is None or value.size != 1 or value.dtype.kind not in "iuf":
        return None
    return float(value.reshape(()))


def _analyse(
    name: str,
    users: Mapping[str, list[tuple[onnx.NodeProto, int]]],
    values: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int | None, ...]],
) -> ValueRange | None:
    """The range one integer input must stay in, from the ops its values reach."""
    low, high, reasons = 0.0, float("inf"), []
    constant: ValueRange | None = None
    seen, todo = {name}, [(name, False)]
    while todo:
        tensor, cast = todo.pop()
        for node, index in users.get(tensor, []):
            op = node.op_type
            if op in _PASS_THROUGH and (index == 0 or op == "Concat"):
                for out in node.output:
                    if out and out not in seen:
                        seen.add(out)
                        todo.append((out, cast or op == "Cast"))
            elif op in _GATHERS and index == 0:
                # values gathered from: still the input's values (edge_index[0] of a graph net)
                for out in node.output:
                    if out and out not in seen:
                        seen.add(out)
                        todo.append((out, cast))
            elif op in _INDEXERS and index == 1:
                table = shapes.get(node.input[0], ())
                axis = _attr(node, "axis", 0)
                size = (
                    table[axis]
                    if -len(table) <= axis < len(table) and op in _AXIS_INDEXERS
                    else None
                )
                # A table sized by a dynamic dimension (another input's rows): synthetic inputs
                # give such dims size 1 or more, so 0 is the one index that always fits.
                high = min(high, float(size) if size else 1.0)
                reasons.append(f"indexes a {op} table of {size or 'dynamic size'}")
            elif op == "OneHot" and index == 0:
                depth = _scalar(values, node.input[1])
                if depth:
                    high = min(high, depth)
                    reasons.append(f"OneHot depth {depth:g}")
            elif (op == "Where" and index == 0 and cast) or (op in _MASK_USERS and cast):
                high = min(high, 2.0)
                reasons.append(f"a mask ({op} after Cast)")
            elif op in _COMPARE and constant is None:
                other = _scalar(values, node.input[1 - index]) if len(node.input) == 2 else None
                if other is not None:
                    constant = ValueRange(other, other + 1, f"compared ({op}) with {other:g}")
    # An index keeps its table's range even when it is also compared (ids == pad id): a constant
    # there would make every token padding. A compared value without a table (a sample rate
    # the model branches on) takes the constant.
    indexes = any(not r.startswith("a mask") for r in reasons)
    if constant is not None and not indexes:
        return constant
    if reasons:
        return ValueRange(low, high, "; ".join(reasons))
    return None


def _ids_held_as_floats(
    name: str,
    users: Mapping[str, list[tuple[onnx.NodeProto, int]]],
    values: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int | None, ...]],
) -> ValueRange | None:
    """A float input every use of which casts it to an integer type: ids a model (a Keras
    Embedding through tf2onnx) holds as floats. Fractions there round to another id where
    engines' precisions differ (a bf16 input), so it takes whole numbers."""
    uses = users.get(name, [])
    if not uses or not all(
        node.op_type == "Cast" and _attr(node, "to", 0) in _INT_TYPES for node, _ in uses
    ):
        return None
    found = [_analyse(node.output[0], users, values, shapes) for node, _ in uses]
    ranges = [r for r in found if r is not None and r.reason.startswith(("indexes", "OneHot"))]
    if ranges:
        low = max(r.low for r in ranges)
        high = min(r.high for r in ranges)
        return ValueRange(low, high, "; ".join(r.reason for r in ranges), integral=True)
    return ValueRange(0, 10, "ids held as floats: every use casts them to integers", True)


def input_ranges(model: onnx.ModelProto, inputs: Sequence[TensorSpec]) -> dict[str, ValueRange]:
    """Integer inputs whose values the graph constrains, with the range each must keep."""
    nodes = list(_nodes(model.graph))
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in nodes:
        for index, name in enumerate(node.input):
            if name:
                users.setdefault(name, []).append((node, index))
    values = _constants(model, nodes)
    shapes = _shapes(model)
    ranges = {}
    for spec in inputs:
        if spec.dtype != "object" and np.dtype(spec.dtype).kind == "f":
            held = _ids_held_as_floats(spec.name, users, values, shapes)
            if held is not None:
                log.info(
                    "synthetic %s: whole numbers in [%g, %g): %s",
                    spec.name, held.low, held.high, held.reason,
                )  # fmt: skip
                ranges[spec.name] = held
            continue
        if spec.dtype == "object" or np.dtype(spec.dtype).kind not in "iu":
            continue
        found = _analyse(spec.name, users, values, shapes)
        if found is not None and found.high == 2 and "mask" in spec.name.lower():
            found = ValueRange(1, 2, "an attention mask: all ones, so that no row is all masked")
        if found is not None:
            log.info("synthetic %s in [%g, %g): %s", spec.name, found.low, found.high, found.reason)
            ranges[spec.name] = found
    return ranges


def check_feeds(
    source: SourceModel,
    count: int,
    shapes: Mapping[str, tuple[int, ...]],
    calibration: CalibrationSet | None = None,
    check_data: str | Path | None = None,
    preprocess: Any = None,
) -> CheckFeeds:
    """The verification inputs: ``check_data``, else held-out calibration samples, else synthetic.

    Synthetic inputs follow ``input_ranges``; a model with dynamic dimensions also gets a feed
    of batch 2, which proves the artifact kept them.
    """
    if check_data is not None:
        if str(check_data) == "synthetic":
            raise ConfigError(
                "--check-data needs real samples (a .npz, a directory of .npy/.npz files or of "
                "images); leave it out to verify on synthetic inputs"
            )
        data = load_calibration(
            check_data,
            source.inputs,
            samples=max(count, 1),
            shapes=shapes,
            preprocess=preprocess,
            purpose="check data",
        )
        return CheckFeeds(data.feeds, f"{len(data.feeds)} samples of {data.source}", False)
    if calibration is not None and calibration.check and not calibration.synthetic:
        held = calibration.check
        return CheckFeeds(held, f"{len(held)} held-out samples of {calibration.source}", False)
    ranges = input_ranges(source.model, source.inputs)
    reference = _Reference(source)
    size = _dynamic_size(source, shapes, ranges, reference)
    feeds = synthetic_feeds(source.inputs, count, shapes, ranges=ranges, size=size)
    described = "seeded synthetic inputs"
    if any(s.is_dynamic for s in source.inputs):
        # A second batch size proves the artifact kept its dynamic dimensions: batch 2 with the
        # other dynamic sizes doubled, else batch 2 alone (a length tied to a fixed state or a
        # bit count a Reshape fixes cannot double, and that is no fault of the batch).
        [doubled] = synthetic_feeds(
            source.inputs, 1, shapes, seed=1, batch=2, ranges=ranges, size=size
        )
        [batch_only] = synthetic_feeds(
            source.inputs,
            1,
            _batch_two_shapes(source.inputs, feeds[0], shapes),
            seed=1,
            ranges=ranges,
        )
        second = _second_batch(source, feeds[0], (doubled, batch_only), reference)
        if second is not None:
            feeds.append(second)
        else:
            # An exporter that baked batch 1 into a Reshape still names the dim "batch": the
            # source itself cannot run batch 2, so the artifact is held to batch 1 only.
            log.warning(
                "%s declares a dynamic batch but ONNX Runtime cannot run it at batch 2 (or "
                "gives NaN or Inf there): verified at batch 1 only", source.path.name,
            )  # fmt: skip
            described += " (batch 1 only: the source fails, or gives NaN or Inf, at batch 2)"
    return CheckFeeds(tuple(feeds), described, True)


class _Reference:
    """The source on ONNX Runtime for the synthetic-input probes: made on first use, once."""

    def __init__(self, source: SourceModel) -> None:
        self._source = source
        self._made = False
        self._session: Any = None

    def session(self) -> Any:
        """The session, or None where the source cannot load."""
        if not self._made:
            self._session, self._made = _reference_session(self._source), True
        return self._session


def _reference_session(source: SourceModel) -> Any:
    """An ONNX Runtime session on the source, or None where it cannot load (the reference run
    says why, with its own error)."""
    import onnxruntime as ort

    errors: tuple[type[BaseException], ...] = (*ort_errors(), ValueError)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a probe's failed run is an answer, not an error to print
    try:
        model = normalize_for_engine(source.model, "onnxruntime", 26, 13)
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except errors:
        return None


def _batch_two_shapes(
    inputs: Sequence[TensorSpec],
    first: Mapping[str, np.ndarray],
    fixed: Mapping[str, tuple[int, ...]],
) -> dict[str, tuple[int, ...]]:
    """The shapes of ``first`` (batch 1) with each input's batch axis at 2, every other size
    kept, and the inputs ``fixed`` gives a shape as they are; a dimension named like a batch
    axis is 2 wherever it appears."""
    axes = {s.name: None if s.name in fixed else batch_axis(s.shape) for s in inputs}
    names = {s.shape[a] for s in inputs if (a := axes[s.name]) is not None}
    out = {}
    for spec in inputs:
        sizes = list(first[spec.name].shape)
        if spec.name in fixed:
            out[spec.name] = tuple(sizes)
            continue
        for i, d in enumerate(spec.shape):
            if not _fixed(d) and (i == axes[spec.name] or (isinstance(d, str) and d in names)):
                sizes[i] = 2
        out[spec.name] = tuple(sizes)
    return out


def _second_batch(
    source: SourceModel,
    first: Mapping[str, np.ndarray],
    candidates: Sequence[dict[str, np.ndarray]],
    reference: _Reference,
) -> dict[str, np.ndarray] | None:
    """The first of ``candidates`` ONNX Runtime runs the source on with finite outputs; None
    when it runs ``first`` (batch 1) but none of them that way.

    A feed the source answers with NaN or Inf (a graph batch whose second slot is empty, a
    mean over nothing) checks nothing an artifact should match: quantized engines spread such
    values through a shared scale, and real inputs do not have them.
    """
    session = reference.session()
    strayed = False
    for feed in candidates:
        if session is None or all(first[k].shape == v.shape for k, v in feed.items()):
            return feed  # no input has a dimension to change, or nothing to run it on
        try:
            outputs = session.run(None, feed)
        except ort_errors():
            continue
        if all(_finite(o) for o in outputs):
            return feed
        strayed = True
    if strayed:
        log.info("the source gives NaN or Inf at batch 2 on synthetic inputs")
        return None
    try:
        session.run(None, dict(first))
    except ort_errors():
        return candidates[0]  # fails at batch 1 too: the reference run reports it
    return None


def _finite(value: object) -> bool:
    array = np.asarray(value)
    return array.dtype.kind not in "fc" or bool(np.all(np.isfinite(array)))


# Sizes tried for dynamic dimensions other than the batch: 32 first, larger where the model
# cannot run on it (audio nets that pad a window of 512 samples, detectors that downsample 64x).
_SIZES = (32, 256, 2048)
_MAX_PROBE_ELEMENTS = 1 << 25  # 128 MB of float32 over all inputs


def _dynamic_size(
    source: SourceModel,
    shapes: Mapping[str, tuple[int, ...]],
    ranges: Mapping[str, ValueRange],
    reference: _Reference,
) -> int:
    """The smallest of ``_SIZES`` that ONNX Runtime runs the source on (32 without a guess)."""
    # One dynamic dimension may be the batch; any other one is a guess (a length, a height).
    if not any(s.name not in shapes and _sizes_to_guess(s.shape) for s in source.inputs):
        return _SIZES[0]
    session = reference.session()
    if session is None:
        return _SIZES[0]  # the reference run says why, with its own error
    for size in _SIZES:
        concrete = synthetic_shapes(source.inputs, 1, shapes, size)
        if sum(math.prod(s) for s in concrete.values()) > _MAX_PROBE_ELEMENTS:
            break  # several dims of 2048: gigabytes of input, and no model needs them all
        [feed] = synthetic_feeds(source.inputs, 1, shapes, ranges=ranges, size=size)
        try:
            session.run(None, feed)
        except ort_errors() as exc:
            if "indices" in str(exc):
                break  # ids past a table, not a size: larger inputs fail the same way
            continue
        if size != _SIZES[0]:
            log.info("synthetic inputs: dynamic dimensions of %d (the model fails on less)", size)
        return size
    return _SIZES[0]


def _sizes_to_guess(shape: Sequence[object]) -> bool:
    """Whether ``shape`` has a dynamic dimension other than its batch axis."""
    batch = batch_axis(shape)
    return any(not _fixed(d) and i != batch for i, d in enumerate(shape))


def _fixed(dim: object) -> bool:
    return isinstance(dim, int) and dim > 0
