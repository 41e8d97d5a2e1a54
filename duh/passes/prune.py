"""``prune``: magnitude pruning of Conv/Gemm/MatMul weights.

``unstructured`` zeroes the smallest-magnitude weights of each tensor (or under one global
threshold) up to the target sparsity: the graph keeps its shapes, so dense engines run it no
faster, but it compresses and sparse kernels can use it. ``channels`` removes whole output
channels (smallest L1 norm) of a Conv or Gemm whose output reaches exactly one Conv/Gemm through
per-channel ops only, and the matching input channels of that consumer: a smaller, faster graph.

Pruning changes results on purpose: the build checks a pipeline with ``prune`` like INT8
(cosine and top-1 agreement against the source), which reports the accuracy effect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from duh.passes._base import PassBase, PassContext, PassResult, register_pass
from duh.passes._graph import consumers, copy_model, infer_shapes, initializer_map, producers
from duh.passes._rules import attr

__all__ = ["Prune"]

log = logging.getLogger(__name__)

_MODES = ("unstructured", "channels")
# Ops that act on each channel on its own: a removed channel can pass through them.
_PER_CHANNEL = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Clip",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Elu",
        "Selu",
        "Softplus",
        "Mish",
        "Gelu",
        "BatchNormalization",
        "Identity",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
    }
)


def _weight_axis(node: onnx.NodeProto, weight: np.ndarray) -> tuple[int | None, int] | None:
    """(output-channel axis, input-channel axis) of a node's weight ``weight``, or None; a
    vector MatMul weight has an input axis only."""
    if node.op_type == "Conv":
        return (0, 1) if attr(node, "group", 1) == 1 and weight.ndim >= 3 else None
    if node.op_type == "Gemm" and weight.ndim == 2:
        return (0, 1) if attr(node, "transB", 0) else (1, 0)
    if node.op_type == "MatMul":
        return (-1, -2) if weight.ndim >= 2 else (None, 0)
    return None


@dataclass
class _Weights:
    model: onnx.ModelProto
    values: dict[str, np.ndarray]

    def set(self, name: str, value: np.ndarray) -> None:
        inits = initializer_map(self.model)
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(self.values[name].dtype), name))
        self.values[name] = value


def _unstructured(
    model: onnx.ModelProto, targets: list[tuple[onnx.NodeProto, str]], sparsity: float, scope: str
) -> list[str]:
    values = {name: numpy_helper.to_array(initializer_map(model)[name]) for _, name in targets}
    names = list(dict.fromkeys(name for _, name in targets))
    threshold = None
    if scope == "global" and names:
        magnitudes = np.concatenate([np.abs(values[n]).ravel() for n in names])
        k = round(sparsity * magnitudes.size)
        threshold = np.partition(magnitudes, k - 1)[k - 1] if k else -1.0
    weights = _Weights(model, values)
    zeroed = total = 0
    for name in names:
        value = values[name]
        flat = np.abs(value).ravel()
        if threshold is None:
            k = round(sparsity * flat.size)
            if k == 0:
                continue
            order = np.argsort(flat, kind="stable")[:k]
            mask = np.ones(flat.size, dtype=bool)
            mask[order] = False
        else:
            mask = flat > threshold
        pruned = (value.ravel() * mask).reshape(value.shape)
        weights.set(name, pruned)
        zeroed += int(np.count_nonzero(pruned == 0))
        total += value.size
    return [
        f"unstructured ({scope}): {len(names)} weight tensors at "
        f"{zeroed / max(total, 1):.1%} zeros; shapes unchanged (dense engines run no faster)"
    ]


def _chain(
    model: onnx.ModelProto, start: onnx.NodeProto, values: dict[str, np.ndarray]
) -> tuple[list[onnx.NodeProto], onnx.NodeProto] | str:
    """The per-channel nodes after ``start`` and the Conv/Gemm/MatMul they end at, or why not."""
    readers = consumers(model)
    outputs = {o.name for o in model.graph.output}
    path: list[onnx.NodeProto] = []
    tensor = start.output[0]
    for _ in range(16):
        if tensor in outputs:
            return "the output is a graph output"
        nexts = readers.get(tensor, [])
        if len(nexts) != 1:
            return f"the output has {len(nexts)} readers (a branch or residual join)"
        node = nexts[0]
        if node.input[0] != tensor:
            return f"{node.op_type} {node.name!r} reads the channels as a parameter"
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            if len(node.input) < 2 or node.input[1] not in values:
                return f"{node.op_type} {node.name!r} has no constant weight"
            if _weight_axis(node, values[node.input[1]]) is None:
                return f"{node.op_type} {node.name!r} is grouped or its weight is not plain"
            return path, node
        if node.op_type == "BatchNormalization" and any(
            n not in values for n in node.input[1:] if n
        ):
            return f"BatchNormalization {node.name!r} has statistics that are not constants"
        pooled = bool(path) and path[-1].op_type in ("GlobalAveragePool", "GlobalMaxPool")
        # After a global pool, Flatten maps channel c to feature c.
        if node.op_type not in _PER_CHANNEL and not (node.op_type == "Flatten" and pooled):
            return f"{node.op_type} {node.name!r} mixes channels"
        path.append(node)
        tensor = node.output[0]
    return "the per-channel chain is too long"


def _unprunable(
    node: onnx.NodeProto, consumer: onnx.NodeProto, values: dict[str, np.ndarray], channels: int
) -> str | None:
    """Why removing output channels of ``node`` (and inputs of ``consumer``) is not safe."""
    if len(node.input) > 2 and node.input[2]:
        bias = values.get(node.input[2])
        if bias is None:
            return "its bias is not a constant"
        if bias.size != 1 and (bias.size != channels or bias.shape[-1] != channels):
            return f"its bias of shape {list(bias.shape)} is not one value per channel"
    weight = values[consumer.input[1]]
    axes = _weight_axis(consumer, weight)
    if axes is None or weight.shape[axes[1]] != channels:
        return f"{consumer.op_type} {consumer.name!r} does not read {channels} channels"
    return None


def _channels(
    model: onnx.ModelProto, targets: list[tuple[onnx.NodeProto, str]], sparsity: float
) -> list[str]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = _Weights(model, values)
    pruned_layers, removed, kept_reasons = 0, 0, 0
    shared = {n for n, readers in consumers(model).items() if len(readers) > 1}
    for node, name in targets:
        axes = _weight_axis(node, values[name])
        plain = axes is not None and axes[0] is not None
        found = _chain(model, node, values) if plain else "grouped, or no output channels"
        if isinstance(found, str):
            log.debug("prune: %s %r keeps its channels: %s", node.op_type, node.name, found)
            kept_reasons += 1
            continue
        path, consumer = found
        params = [n for p in path if p.op_type == "BatchNormalization" for n in p.input[1:] if n]
        if name in shared or any(n in shared for n in params) or consumer.input[1] in shared:
            log.debug("prune: %s %r shares weights with another node", node.op_type, node.name)
            kept_reasons += 1
            continue
        assert axes is not None and axes[0] is not None
        out_axis = axes[0]
        weight = values[name]
        channels = weight.shape[out_axis]
        reason = _unprunable(node, consumer, values, channels)
        if reason is not None:
            log.debug("prune: %s %r keeps its channels: %s", node.op_type, node.name, reason)
            kept_reasons += 1
            continue
        drop = min(round(sparsity * channels), channels - 1)
        if drop <= 0:
            continue
        norms = np.abs(np.moveaxis(weight, out_axis, 0)).reshape(channels, -1).sum(axis=1)
        keep = np.sort(np.argsort(norms, kind="stable")[drop:])
        weights.set(name, np.take(weight, keep, axis=out_axis))
        if len(node.input) > 2 and node.input[2] and values[node.input[2]].size > 1:
            weights.set(node.input[2], values[node.input[2]].reshape(-1)[keep])
        for p in params:
            if values[p].ndim >= 1 and values[p].shape[0] == channels:
                weights.set(p, values[p][keep])
        consumer_axes = _weight_axis(consumer, values[consumer.input[1]])
        assert consumer_axes is not None
        weights.set(
            consumer.input[1], np.take(values[consumer.input[1]], keep, axis=consumer_axes[1])
        )
        pruned_layers += 1
        removed += drop
    del model.graph.value_info[:]
    return [
        f"channels: {removed} output channels removed from {pruned_layers} layers; "
        f"{kept_reasons} layers kept theirs (branches, grouped convs, graph outputs)"
    ]


@register_pass("prune")
@dataclass(frozen=True, slots=True)
class Prune(PassBase):
    """Magnitude pruning: unstructured zeros, or removal of whole Conv/Gemm output channels."""

    lossy: ClassVar[bool] = True

    sparsity: float = field(
        default=0.5, metadata={"help": "fraction of weights zeroed, or of channels removed"}
    )
    mode: str = field(default="unstructured", metadata={"help": "unstructured or channels"})
    scope: str = field(
        default="layer",
        metadata={"help": "unstructured: per tensor (layer) or one global threshold"},
    )
    op_types: tuple[str, ...] = field(
        default=("Conv", "Gemm", "MatMul"), metadata={"help": "ops whose weights are pruned"}
    )
    min_elements: int = field(
        default=1024, metadata={"help": "leave weights smaller than this (first layers, heads)"}
    )
    exclude_nodes: tuple[str, ...] = field(default=(), metadata={"help": "node names left alone"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), not {self.sparsity}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, not {self.mode!r}")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"scope must be layer or global, not {self.scope!r}")

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Prune the constant weights of the chosen ops."""
        out = copy_model(model)
        inits = initializer_map(out)
        made = producers(out)
        targets = []
        for node in out.graph.node:
            if (
                node.op_type not in self.op_types
                or node.name in self.exclude_nodes
                or len(node.input) < 2
            ):
                continue
            name = node.input[1]
            if name not in inits or name in made:
                continue
            tensor = inits[name]
            if (
                tensor.data_type != onnx.TensorProto.FLOAT
                or int(np.prod(tensor.dims)) < self.min_elements
            ):
                continue
            targets.append((node, name))
        if not targets or self.sparsity == 0:
            return PassResult(model, False, ("no weights to prune",))
        if self.mode == "unstructured":
            notes = _unstructured(out, targets, self.sparsity, self.scope)
        else:
            notes = _channels(out, targets, self.sparsity)
            out = infer_shapes(out)
        return PassResult(
            out, True, (*notes, "accuracy effect: see the build's checks (cosine, top-1)")
        )
