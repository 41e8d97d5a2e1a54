"""Which quantized ops cost INT8 its accuracy: a cheap per-op sensitivity proxy.

The float model and its QDQ form run side by side on ONNX Runtime with every quantized op's
output exposed. An op's error is the relative RMS difference of what its readers see (the
dequantized value where its output is quantized); its *sensitivity* is the error it adds, its
output's error less the largest error of its inputs, so that ops far down the graph are not
blamed for what they inherit. Ranking by it (not by the error each op sees) is what lets a few
ops kept in float rescue a model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from duh.errors import DuhError, PassError
from duh.passes._base import one_line, tool_errors
from duh.passes._graph import copy_model, producers

__all__ = [
    "OpSensitivity",
    "float_readers",
    "float_region",
    "rank_sensitivity",
    "rerank_by_output",
]

log = logging.getLogger(__name__)

_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
# A rise in cosine below this is noise, not a reason to keep an op in float.
_NO_GAIN = 1e-4


@dataclass(frozen=True, slots=True)
class OpSensitivity:
    """One quantized op: the error its output carries and the part of it the op adds."""

    node: str
    op_type: str
    error: float
    added: float
    # The rise in the model outputs' lowest cosine with the float model when ``float_with``
    # (this op, alone or with the ops its Q/DQ pairs tie it to) computes in float (None: not
    # measured).
    gain: float | None = None
    float_with: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The form stored in pass notes and the manifest."""
        out: dict[str, object] = {
            "node": self.node,
            "op_type": self.op_type,
            "error": round(self.error, 5),
            "added": round(self.added, 5),
        }
        if self.gain is not None:
            out["gain"] = round(self.gain, 5)
            out["float_with"] = list(self.float_with)
        return out

    @property
    def gains(self) -> bool:
        """Whether computing this op in float was measured to raise the outputs' cosine."""
        return self.gain is not None and self.gain > _NO_GAIN

    def describe(self) -> str:
        """``name (OpType, ...)``: what the ranking measured for this op, for build notes."""
        if self.gain is not None:
            others = [n for n in self.float_with if n != self.node]
            more = f" with {len(others)} more" if others else ""
            return (
                f"{self.node} ({self.op_type}, in float{more} raises the cosine "
                f"{self.gain:+.4f})"
            )
        return f"{self.node} ({self.op_type}, adds {self.added:.3f})"


def _seen(qdq: onnx.ModelProto) -> dict[str, str]:
    """Float tensor name -> the name its readers see in ``qdq`` (its DequantizeLinear's output)."""
    made = producers(qdq)
    seen: dict[str, str] = {}
    for node in qdq.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = made.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            seen[q.input[0]] = node.output[0]
    return seen


def _quantized_nodes(qdq: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The ops of ``qdq`` that read a dequantized value (an int8 activation or weight)."""
    dq_outputs = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    return [
        n
        for n in qdq.graph.node
        if n.op_type not in _QDQ and n.output and any(i in dq_outputs for i in n.input)
    ]


def _run(
    model: onnx.ModelProto, names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """Run ``model`` on ONNX Runtime's CPU with ``names`` exposed as outputs."""
    import onnxruntime as ort

    exposed = copy_model(model)
    listed = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in listed:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Fused kernels would hide the tensors compared here; the comparison is of values, not speed.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(
            exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name for i in session.get_inputs()}
        return [
            dict(
                zip(
                    names,
                    session.run(list(names), {k: v for k, v in f.items() if k in inputs}),
                    strict=True,
                )
            )
            for f in feeds
        ]
    except tool_errors() as exc:
        raise PassError(
            f"INT8 sensitivity: ONNX Runtime could not run the model with its quantized ops' "
            f"outputs exposed: {one_line(exc)}"
        ) from exc


def _nrmse(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    a = np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r in ref])
    b = np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in got])
    if a.shape != b.shape or not np.all(np.isfinite(b)):
        return float("inf")
    finite = np.isfinite(a)
    a, b = a[finite], b[finite]
    scale = float(np.sqrt(np.mean(a * a))) if a.size else 0.0
    err = float(np.sqrt(np.mean((a - b) ** 2))) if a.size else 0.0
    return err / scale if scale > 0 else err


def _channel_nrmse(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    """The relative RMS difference of each channel (axis 1), averaged over the channels: one
    channel of huge values cannot hide what quantization did to the others."""
    if any(np.ndim(r) < 2 for r in ref) or len({np.shape(r)[1] for r in ref}) != 1:
        return _nrmse(ref, got)
    if any(np.shape(r) != np.shape(g) for r, g in zip(ref, got, strict=True)):
        return float("inf")
    channels = np.shape(ref[0])[1]
    a = np.concatenate(
        [np.moveaxis(np.asarray(r, np.float64), 1, 0).reshape(channels, -1) for r in ref], 1
    )
    b = np.concatenate(
        [np.moveaxis(np.asarray(g, np.float64), 1, 0).reshape(channels, -1) for g in got], 1
    )
    if not np.all(np.isfinite(b)):
        return float("inf")
    scale = np.sqrt(np.mean(a * a, axis=1))
    err = np.sqrt(np.mean((a - b) ** 2, axis=1))
    live = scale > 0
    return float(np.mean(err[live] / scale[live])) if live.any() else float(np.mean(err))


def rank_sensitivity(
    float_model: onnx.ModelProto,
    qdq_model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    blame_inputs: bool = False,
    per_channel: bool = False,
) -> tuple[OpSensitivity, ...]:
    """Rank ``qdq_model``'s quantized ops by the error each adds to ``float_model``'s values.

    ``feeds`` are a few calibration samples; the most sensitive op comes first. Tensor names are
    those both models share (the quantizer keeps the float names and adds Q/DQ outputs). With
    ``blame_inputs`` an op answers for the quantization of its inputs too (what it inherits is
    measured before their Q/DQ pair): where Q/DQ pairs sit on op inputs only (OpenVINO's
    placement), the pair belongs to the op that reads it. With ``per_channel`` errors are
    taken per channel and averaged, so that an outlier channel does not hide the others.
    """
    nrmse = _channel_nrmse if per_channel else _nrmse
    seen = _seen(qdq_model)
    float_names = {o for n in float_model.graph.node for o in n.output} | {
        i.name for i in float_model.graph.input
    }
    # An input of a quantized op is read through its DequantizeLinear: its name in the op is the
    # DQ output; ``back`` maps it to the float tensor it stands for.
    back = {dq: t for t, dq in seen.items()}
    nodes = [n for n in _quantized_nodes(qdq_model) if n.output[0] in float_names]
    tensors: set[str] = set()
    for node in nodes:
        tensors.add(node.output[0])
        tensors.update(t for i in node.input if (t := back.get(i, i)) in float_names)
    wanted = sorted(tensors)
    fetch = {seen.get(t, t) for t in wanted}
    if blame_inputs:
        made = {o for n in qdq_model.graph.node for o in n.output}
        fetch |= {t for t in wanted if t in made or t in {i.name for i in qdq_model.graph.input}}
    reference = _run(float_model, wanted, feeds)
    quantized = _run(qdq_model, sorted(fetch), feeds)
    error = {
        t: nrmse([r[t] for r in reference], [q[seen.get(t, t)] for q in quantized]) for t in wanted
    }
    before = (
        {
            t: _nrmse([r[t] for r in reference], [q[t] for q in quantized])
            for t in wanted
            if t in fetch
        }
        if blame_inputs
        else error
    )
    ranked = []
    for node in nodes:
        inherited = [before.get(back.get(i, i), 0.0) for i in node.input]
        inherited = [e for e in inherited if np.isfinite(e)]
        out = error[node.output[0]]
        added = out - max(inherited, default=0.0)
        ranked.append(OpSensitivity(node.name, node.op_type, out, added))
    ranked.sort(key=lambda s: (-s.added, -s.error, s.node))
    return tuple(ranked)


def _min_cosine(
    reference: Sequence[Mapping[str, np.ndarray]], got: Sequence[Mapping[str, np.ndarray]]
) -> float:
    """The lowest cosine, over the outputs, between ``got`` and ``reference`` (all samples)."""
    lowest = 1.0
    for name in reference[0]:
        a = np.concatenate([np.asarray(r[name], np.float64).ravel() for r in reference])
        b = np.concatenate([np.asarray(g[name], np.float64).ravel() for g in got])
        if a.shape != b.shape or not np.all(np.isfinite(b)):
            return -1.0
        keep = np.isfinite(a)
        a, b = a[keep], b[keep]
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        cosine = float(np.dot(a, b) / denom) if denom > 0 else float(np.allclose(a, b))
        lowest = min(lowest, cosine)
    return lowest


def rerank_by_output(
    float_model: onnx.ModelProto,
    qdq_model: onnx.ModelProto,
    ranked: Sequence[OpSensitivity],
    feeds: Sequence[Mapping[str, np.ndarray]],
    without: Callable[[Sequence[str]], onnx.ModelProto],
    regions: Callable[[str], Sequence[Sequence[str]]],
    top: int = 24,
) -> tuple[OpSensitivity, ...]:
    """``ranked`` with its first ``top`` ops re-ranked by what each costs the model's outputs.

    The proxy ranking measures each op where it sits; an error a later op amplifies (a Log
    after a quantized mel filterbank, a Softmax after a quantized score) counts for little
    there and for everything at the outputs. For each op, ``regions(node)`` are the sets of
    ops that may be kept in float for it, smallest first (the op alone, then it with the ops
    its Q/DQ pairs tie it to), and ``without(ops)`` is the model quantized with them left out
    (the quantizer's own exclusion). The rise in the outputs' lowest cosine with the float
    model, on ``feeds``, is the gain, the way NNCF's accuracy control ranks ops by the metric
    they cost; a larger set is kept only where it gains clearly more. Ops that gain come
    first, most first; the rest keep their proxy order.
    """
    if not ranked or not feeds:
        return tuple(ranked)
    names = [o.name for o in float_model.graph.output]
    reference = _run(float_model, names, feeds)
    base = _min_cosine(reference, _run(qdq_model, names, feeds))
    tried: dict[tuple[str, ...], float | None] = {}

    def gain(ops: Sequence[str]) -> float | None:
        key = tuple(sorted(ops))
        if key not in tried:
            try:
                tried[key] = _min_cosine(reference, _run(without(key), names, feeds)) - base
            except DuhError as exc:
                log.info("INT8 sensitivity: the model without %s quantized failed: %s", key, exc)
                tried[key] = None
        return tried[key]

    measured: list[OpSensitivity] = []
    for op in ranked[:top]:
        best = op
        for ops in regions(op.node):
            got = gain(ops)
            if got is None:
                continue
            if best.gain is None or got - best.gain > max(_NO_GAIN, 0.1 * abs(got)):
                best = replace(op, gain=got, float_with=tuple(sorted(ops)))
        measured.append(best)
    order = {op.node: i for i, op in enumerate(ranked)}
    gaining = sorted(
        (op for op in measured if op.gains),
        key=lambda op: (-(op.gain or 0.0), order[op.node]),
    )
    rest = [op for op in measured if op not in gaining]
    return (*gaining, *rest, *ranked[top:])


def float_region(qdq_model: onnx.ModelProto, nodes: Sequence[str], depth: int = 12) -> list[str]:
    """``nodes`` and the quantized ops upstream of them, up to ``depth`` steps back.

    Keeping only the op that adds the error in float rarely helps: its inputs stay quantized
    by their producers (a Log reads a quantized power spectrum). Its inputs must be float too,
    so the ops that feed it, through Q/DQ pairs, are kept in float with it.
    """
    made = producers(qdq_model)
    by_name = {n.name: n for n in qdq_model.graph.node}
    kept: set[str] = set()
    for name in nodes:
        start = by_name.get(name)
        if start is None:
            continue
        kept.add(name)
        frontier = [(i, 0) for i in start.input]
        while frontier:
            tensor, steps = frontier.pop()
            node = made.get(tensor)
            if node is None:
                continue
            if node.op_type in _QDQ:  # a Q/DQ pair is no step: go on to the value it carries
                frontier.append((node.input[0], steps))
                continue
            if steps >= depth or node.name in kept:
                continue
            kept.add(node.name)
            frontier.extend((i, steps + 1) for i in node.input)
    return sorted(kept)


# Ops that carry their input's values (and its quantization) on: a float value must stay float
# through them to reach the next op that computes with it.
_CARRIERS = frozenset(
    {"Relu", "Clip", "MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
     "Identity", "Slice", "Split", "Concat", "Resize", "Gather"}
)  # fmt: skip


def float_readers(qdq_model: onnx.ModelProto, node: str) -> list[str]:
    """``node`` and the ops that read its outputs through Q/DQ pairs (and through ops that carry
    values on, such as MaxPool or Reshape), up to the next op that computes with them.

    Where Q/DQ pairs sit on op outputs (ONNX Runtime's placement), the pair after an op is
    inserted for it and for its readers alike: its output stays float only when they are all
    kept in float with it.
    """
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in qdq_model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    by_name = {n.name: n for n in qdq_model.graph.node}
    start = by_name.get(node)
    if start is None:
        return []
    kept = {node}
    frontier = list(start.output)
    while frontier:
        for reader in readers.get(frontier.pop(), []):
            if reader.op_type in _QDQ:
                frontier.extend(reader.output)
            elif reader.name not in kept:
                kept.add(reader.name)
                if reader.op_type in _CARRIERS:
                    frontier.extend(reader.output)
    return sorted(kept)
