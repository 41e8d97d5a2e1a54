"""Rewrite rules: a pattern anchored at one node, a legality check, and a rewrite.

``match`` walks back from the anchor and returns a ``Match`` (or a string saying why the
pattern is not there); ``check`` returns why a match may not be rewritten (or None); ``rewrite``
returns the nodes that replace the match. Rules are stateless: everything ``rewrite`` needs
travels in the ``Match``.

Each rule declares the op it emits and the default-domain opset that op needs on a model and
engine (``opset``): where the model's opset is lower, a match is left as it is and the reason is
reported, since a model whose ops its opset lacks fails to load (LayerNormalization at opset 11).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import numpy_helper

from duh.passes._graph import consumers, default_opset, infer_shapes, name_nodes, used_names

__all__ = ["GraphView", "Match", "Replacement", "Rule", "RuleStats", "apply_rules", "attr"]

log = logging.getLogger(__name__)

_ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True, slots=True)
class Match:
    """The nodes a pattern covers (the anchor last) and the values the rewrite needs."""

    nodes: tuple[onnx.NodeProto, ...]
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Replacement:
    """What replaces a match: new nodes (in order) and the initializers they read."""

    nodes: tuple[onnx.NodeProto, ...]
    initializers: tuple[onnx.TensorProto, ...] = ()
    opsets: Mapping[str, int] = field(default_factory=dict)


class Rule(Protocol):
    """A rewrite rule. ``anchor`` is the op type of the node the pattern ends at."""

    @property
    def name(self) -> str:
        """The rule's name, as ``fuse(rules=...)`` takes it."""
        ...

    @property
    def anchor(self) -> str:
        """The op type of the node the pattern ends at."""
        ...

    @property
    def emits(self) -> str:
        """The op type the rewrite writes (named in the note when the opset lacks it)."""
        ...

    def opset(self, view: GraphView) -> int:
        """The default-domain opset the rewrite emits into on this model and engine (0: any)."""
        ...

    def match(self, view: GraphView, node: onnx.NodeProto) -> Match | str:
        """The match ending at ``node``, or why there is none."""
        ...

    def check(self, view: GraphView, match: Match) -> str | None:
        """Why ``match`` may not be rewritten, or None when it may."""
        ...

    def rewrite(self, view: GraphView, match: Match) -> Replacement:
        """The nodes replacing ``match``; they must write the anchor's outputs."""
        ...


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` of ``node`` (``default`` when absent)."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class GraphView:
    """Read-only lookups over a model's main graph, for patterns and checks."""

    def __init__(self, model: onnx.ModelProto, engine: str = "") -> None:
        self.model = model
        self.engine = engine
        self.opset = default_opset(model)
        self.producers = {o: n for n in model.graph.node for o in n.output if o}
        # An If/Loop body reading a tensor counts as a reader: its producer must stay.
        self.consumers = consumers(model)
        self.initializers = {i.name: i for i in model.graph.initializer}
        self.outputs = {o.name for o in model.graph.output}
        self.shapes: dict[str, list[int | str | None]] = {}
        for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
            tensor = value.type.tensor_type
            if value.type.HasField("tensor_type") and tensor.HasField("shape"):
                # Exporters write -1 or 0 for a dynamic size (paddle2onnx): not a size.
                self.shapes[value.name] = [
                    d.dim_value
                    if d.HasField("dim_value") and d.dim_value > 0
                    else (d.dim_param or None)
                    for d in tensor.shape.dim
                ]
        for init in model.graph.initializer:
            self.shapes[init.name] = list(init.dims)
        self._names = (
            {n.name for n in model.graph.node} | set(self.producers) | set(self.initializers)
        )

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is an initializer or a Constant node's output."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            value = attr(node, "value")
            if isinstance(value, onnx.TensorProto):
                return numpy_helper.to_array(value)
        return None

    def scalar(self, name: str) -> float | None:
        """The single value of a constant ``name`` (any shape of one element), else None."""
        value = self.const(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def producer(self, name: str, op_type: str | Sequence[str]) -> onnx.NodeProto | None:
        """The node writing ``name`` if its op type is ``op_type`` (or one of them)."""
        node = self.producers.get(name)
        types = (op_type,) if isinstance(op_type, str) else tuple(op_type)
        if node is None or node.op_type not in types or node.domain not in _ONNX_DOMAINS:
            return None  # a contrib op of the same name is not the ONNX op
        return node

    def only_feeds(self, name: str, count: int = 1) -> bool:
        """Whether ``name`` is read by exactly ``count`` nodes and is not a graph output."""
        return name not in self.outputs and len(self.consumers.get(name, ())) == count

    def rank(self, name: str) -> int | None:
        """The rank of ``name`` if known."""
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def fresh(self, base: str) -> str:
        """A tensor/node name not used in the graph yet."""
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name


@dataclass
class RuleStats:
    """How often each rule fired, why it did not where its anchor op appeared, and the rules
    whose matches were left because the model's opset lacks the op they emit (with why)."""

    applied: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    unavailable: dict[str, tuple[str, int]] = field(default_factory=dict)


def _apply(model: onnx.ModelProto, plans: list[tuple[Match, Replacement]]) -> None:
    # Nodes are told apart by name: apply_rules names every node first.
    anchors = {m.nodes[-1].name: r for m, r in plans}
    removed = {n.name for m, _ in plans for n in m.nodes}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name in anchors:
            nodes.extend(anchors[node.name].nodes)
        elif node.name not in removed:
            nodes.append(node)
    kept = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(kept, nodes, strict=True):
        copy.CopyFrom(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    opsets = {o.domain: o for o in model.opset_import}
    for _, replacement in plans:
        model.graph.initializer.extend(replacement.initializers)
        for domain, version in replacement.opsets.items():
            if domain not in opsets:
                opsets[domain] = model.opset_import.add(domain=domain, version=version)
    used = used_names(model) | {i.name for i in model.graph.input}
    for init in list(model.graph.initializer):
        if init.name not in used:
            model.graph.initializer.remove(init)
    # A replacement computes what its match did: the match's own outputs keep their types and
    # shapes (which shape inference cannot give the output of a com.microsoft op, and ORT's
    # quantizer needs); other names its nodes write may be new values.
    kept_outputs = {o for m, _ in plans for o in m.nodes[-1].output}
    stale = {o for _, r in plans for n in r.nodes for o in n.output} - kept_outputs
    for info in [v for v in model.graph.value_info if v.name in stale]:
        model.graph.value_info.remove(info)


def apply_rules(
    model: onnx.ModelProto, rules: Sequence[Rule], engine: str = "", max_rounds: int = 8
) -> RuleStats:
    """Apply each rule until it no longer matches, editing ``model`` in place."""
    stats = RuleStats()
    name_nodes(model, "n")
    opset = default_opset(model)
    for rule in rules:
        needed = rule.opset(GraphView(model, engine))
        lacking = f"opset {opset} has no {rule.emits} (needs {needed})" if opset < needed else None
        for _ in range(max_rounds):
            view = GraphView(model, engine)
            plans: list[tuple[Match, Replacement]] = []
            claimed: set[str] = set()
            for node in model.graph.node:
                if node.op_type != rule.anchor or node.domain not in _ONNX_DOMAINS:
                    continue
                found = rule.match(view, node)
                if isinstance(found, str):
                    log.debug(
                        "rule %s at %s %r: no match: %s", rule.name, node.op_type, node.name, found
                    )
                    stats.skipped[rule.name][found] += 1
                    continue
                if any(n.name in claimed for n in found.nodes):
                    continue
                if lacking is not None:
                    log.debug("rule %s at %r: not applied: %s", rule.name, node.name, lacking)
                    _, count = stats.unavailable.get(rule.name, (lacking, 0))
                    stats.unavailable[rule.name] = (lacking, count + 1)
                    continue
                reason = rule.check(view, found)
                if reason is not None:
                    log.debug("rule %s at %r: not applied: %s", rule.name, node.name, reason)
                    stats.skipped[rule.name][reason] += 1
                    continue
                plans.append((found, rule.rewrite(view, found)))
                claimed.update(n.name for n in found.nodes)
            if not plans:
                break
            _apply(model, plans)
            stats.applied[rule.name] += len(plans)
            # Later rules check ranks: give the rewritten tensors their shapes back.
            inferred = infer_shapes(model)
            if inferred is not model:
                model.CopyFrom(inferred)
    return stats
