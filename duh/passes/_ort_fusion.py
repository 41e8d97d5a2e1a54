"""ONNX Runtime's transformer optimizer (model_type "bert": Attention, SkipLayerNormalization,
Gelu) on BERT-class encoders, told apart by their graph, with the rewrites of
``_rules_attention`` first so that its attention fusion sees PyTorch's sdpa export.

The optimizer is an optimisation: where it fails, fuses nothing, or writes ops the model's opset
lacks, the caller gets the reason and keeps the model as it was. Inputs keep their dims (the
optimizer leaves the graph's inputs and outputs alone; batch and sequence stay symbolic).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import onnx

from duh.errors import MissingDependencyError
from duh.passes._base import one_line, tool_errors
from duh.passes._graph import copy_model, default_opset, missing_ops
from duh.passes._rules import GraphView, Rule, apply_rules
from duh.passes._rules_attention import (
    BoolMaskBias,
    KTransposeChain,
    MaskUnsqueeze,
    SdpaScale,
    SoftmaxNanGuard,
    head_size,
    restore_nan_guards,
)

__all__ = ["BertFusion", "bert_fusions", "looks_like_transformer"]

log = logging.getLogger(__name__)

_MS_ATTENTION = ("Attention", "MultiHeadAttention")


@dataclass(frozen=True, slots=True)
class BertFusion:
    """The fused model, the fused-op counts ORT reports, and notes for the build report."""

    model: onnx.ModelProto
    counts: dict[str, int]
    notes: tuple[str, ...]


def _attention_softmaxes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Softmax nodes over MatMul scores (through up to 4 Add/Div/Mul/Where/Sub)."""
    made = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        seen, current = 0, made.get(node.input[0])
        while current is not None and seen < 4:
            if current.op_type == "MatMul":
                found.append(node)
                break
            if current.op_type not in ("Add", "Div", "Mul", "Where", "Sub"):
                break
            current, seen = made.get(current.input[0]), seen + 1
    return found


def looks_like_transformer(model: onnx.ModelProto) -> bool:
    """Whether the graph has attention: a Softmax over MatMul scores, and several MatMuls."""
    matmuls = sum(1 for n in model.graph.node if n.op_type == "MatMul")
    return matmuls >= 4 and bool(_attention_softmaxes(model))


def _canonical(
    model: onnx.ModelProto, bool_masks: bool
) -> tuple[onnx.ModelProto, set[str], list[str]]:
    """``model`` with the sdpa rewrites (``bool_masks``: boolean masks as additive ones too),
    the Softmax outputs whose NaN guard was taken off, and notes naming what was rewritten."""
    out = copy_model(model)
    made = {o: n for n in out.graph.node for o in n.output}
    guards = {
        n.output[0]
        for n in out.graph.node
        if n.op_type == "Where" and getattr(made.get(n.input[0]), "op_type", "") == "IsNaN"
    }
    rules: list[Rule] = [KTransposeChain(), MaskUnsqueeze(), SdpaScale(), SoftmaxNanGuard()]
    stats = apply_rules(out, [*rules, BoolMaskBias()] if bool_masks else rules, "onnxruntime")
    taken = {n.output[0] for n in out.graph.node if n.op_type == "Softmax"} & guards
    notes = [f"{rule}: {n}" for rule, n in stats.applied.items()]
    return out, taken, notes


def _heads_and_hidden(model: onnx.ModelProto) -> tuple[int, int]:
    """Heads and hidden size of the first attention block, from q's head size and the width of
    its projection's weight; (0, 0) where the graph does not tell (ORT then looks itself).

    ORT reads them from the q Reshape's constant [0, 0, heads, head]; torch's sdpa export
    writes [batch, seq, -1, head] there, and without them ORT fuses nothing."""
    view = GraphView(model)
    for softmax in _attention_softmaxes(model):
        scores = view.producers.get(softmax.input[0])
        while scores is not None and scores.op_type != "MatMul":
            scores = view.producers.get(scores.input[0])
        if scores is None:
            continue
        head = head_size(view, scores.input[0])
        node = view.producer(scores.input[0], "Transpose")
        for op in ("Reshape", "Add"):
            node = None if node is None else view.producer(node.input[0], op)
        if node is None or head is None:
            continue
        matmul = next(
            (view.producer(n, "MatMul") for n in node.input if view.producer(n, "MatMul")), None
        )
        weight = None if matmul is None else view.const(matmul.input[1])
        if weight is not None and weight.ndim == 2 and weight.shape[1] % head == 0:
            return weight.shape[1] // head, int(weight.shape[1])
    return 0, 0


def _drop_noop_reshapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the Reshapes whose output shape is their input's (ORT's own clean-up,
    by its symbolic shape inference; transformers' sdpa path writes one after each attention,
    where ORT's fusion looks for the Transpose)."""
    from onnxruntime.transformers.fusion_utils import FusionUtils
    from onnxruntime.transformers.onnx_model import OnnxModel

    wrapped = OnnxModel(model)
    FusionUtils(wrapped).remove_useless_reshape_nodes()
    wrapped.prune_graph()
    return wrapped.model


def _optimize(
    model: onnx.ModelProto, heads: int, hidden: int, bool_masks: bool
) -> tuple[onnx.ModelProto, dict[str, int], list[str]] | str:
    """The canonical form of ``model`` through ORT's optimizer: the fused model, the fused-op
    counts and notes; or why it failed."""
    from onnxruntime.transformers.optimizer import optimize_model

    canonical, guarded, notes = _canonical(model, bool_masks)
    if not heads and not hidden:
        heads, hidden = _heads_and_hidden(canonical)
    # ImportError too: the optimizer loads some of its helpers lazily.
    failures: tuple[type[BaseException], ...] = (ImportError, *tool_errors())
    try:
        canonical = _drop_noop_reshapes(canonical)
        optimized = optimize_model(
            canonical,  # a copy: it edits what it is given, the input must survive a failure
            model_type="bert",
            num_heads=heads,
            hidden_size=hidden,
            opt_level=0,
            only_onnxruntime=False,
        )
        stats: dict[str, Any] = optimized.get_fused_operator_statistics()
    # The optimizer is Python pattern code run on graphs it was not written for: it raises
    # what its fusions raise (KeyError, IndexError, AssertionError, ...). It is an
    # optimisation, so a failure leaves the model unfused, with the reason in the report.
    except failures as exc:
        log.warning("onnxruntime's transformer optimizer failed: %s", one_line(exc))
        return f"its optimizer failed ({one_line(exc)})"
    fused: onnx.ModelProto = optimized.model
    restored = restore_nan_guards(fused, guarded)
    if restored:
        notes.append(f"softmax-nan-guard: {restored} put back where attention stayed unfused")
    return fused, {k: int(v) for k, v in stats.items() if v}, notes


def _declare_domains(model: onnx.ModelProto) -> None:
    """Import every node domain the optimizer wrote (it leaves out com.microsoft where it fuses
    only SkipLayerNormalization: ONNX Runtime loads that, onnx's checker does not)."""
    declared = {o.domain or "" for o in model.opset_import} | {"ai.onnx"}
    for node in model.graph.node:
        if node.domain not in declared:
            model.opset_import.add(domain=node.domain, version=1)
            declared.add(node.domain)


def bert_fusions(model: onnx.ModelProto, heads: int, hidden: int) -> BertFusion | str:
    """ORT's BERT fusions of ``model``, or why the model goes on without them."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("onnxruntime", "core", "transformer fusions") from None
    if any(n.op_type in _MS_ATTENTION and n.domain == "com.microsoft" for n in model.graph.node):
        return "the model holds com.microsoft attention already"
    blocks = len(_attention_softmaxes(model))
    found = _optimize(model, heads, hidden, bool_masks=True)
    if isinstance(found, str):
        return found

    def attention(counts: dict[str, int]) -> int:
        return sum(counts.get(op, 0) for op in _MS_ATTENTION)

    if any(n.startswith("bool-mask-bias") for n in found[2]) and attention(found[1]) < blocks:
        # A boolean mask made additive differs on fully masked rows: only a fused graph,
        # whose Attention does the same, may keep it.
        found = _optimize(model, heads, hidden, bool_masks=False)
        if isinstance(found, str):
            return found
    fused, counts, notes = found
    _declare_domains(fused)
    # Only what the fusions added counts (a model ORT optimized before may carry such ops).
    lacking = sorted(set(missing_ops(fused)) - set(missing_ops(model)))
    if lacking:
        return (
            f"they emit {', '.join(lacking)}, which opset {default_opset(fused)} lacks "
            "(fuse opset=17 converts the model first)"
        )
    if fused.ByteSize() < 2**31 - 1:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            ort.InferenceSession(
                fused.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except tool_errors() as exc:
            return f"onnxruntime cannot load the fused model ({one_line(exc)})"
    if blocks and attention(counts) < blocks:
        # ORT says nothing of why a pattern did not match; the attention MatMuls stay float.
        notes.append(
            f"attention: {blocks - attention(counts)} of {blocks} attention block(s) left "
            "unfused (not a pattern onnxruntime's bert fusion knows)"
        )
    return BertFusion(fused, counts, tuple(notes))
