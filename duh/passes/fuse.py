"""``fuse``: rewrite rules (Conv+BatchNormalization, MatMul+Add -> Gemm, Gelu, LayerNorm) and,
for BERT-like models on ONNX Runtime, its transformer fusions (attention, skip-layernorm).

A rule that does not apply says why in the debug log (``duh -vv build ...``); numerics are
checked after the pipeline by the build's verification.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import onnx

from duh.errors import MissingDependencyError, PassError
from duh.passes._base import PassContext, PassResult, register_pass
from duh.passes._graph import copy_model, graph_fingerprint
from duh.passes._rules import Rule, apply_rules
from duh.passes._rules_linear import ConvBatchNorm, MatMulAddToGemm
from duh.passes._rules_norm import GeluErf, LayerNorm

__all__ = ["RULES", "Fuse", "looks_like_transformer"]

log = logging.getLogger(__name__)

RULES: dict[str, Rule] = {
    rule.name: rule for rule in (ConvBatchNorm(), MatMulAddToGemm(), LayerNorm(), GeluErf())
}
_TRANSFORMER_MODES = ("auto", "bert", "off")


def looks_like_transformer(model: onnx.ModelProto) -> bool:
    """Whether the graph has attention: a Softmax over MatMul scores, and several MatMuls."""
    made = {o: n for n in model.graph.node for o in n.output}
    matmuls = sum(1 for n in model.graph.node if n.op_type == "MatMul")
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        seen, current = 0, made.get(node.input[0])
        while current is not None and seen < 4:
            if current.op_type == "MatMul":
                return matmuls >= 4
            if current.op_type not in ("Add", "Div", "Mul", "Where", "Sub"):
                break
            current, seen = made.get(current.input[0]), seen + 1
    return False


def _transformer_fusions(
    model: onnx.ModelProto, heads: int, hidden: int
) -> tuple[onnx.ModelProto, dict[str, int]]:
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        raise MissingDependencyError("onnxruntime", "core", "transformer fusions") from None
    try:
        optimized = optimize_model(
            model,
            model_type="bert",
            num_heads=heads,
            hidden_size=hidden,
            opt_level=0,
            only_onnxruntime=False,
        )
    except (ValueError, RuntimeError, KeyError, AssertionError, AttributeError) as exc:
        raise PassError(f"onnxruntime's transformer optimizer failed on this model: {exc}") from exc
    stats: dict[str, Any] = optimized.get_fused_operator_statistics()
    return optimized.model, {k: int(v) for k, v in stats.items() if v}


@register_pass("fuse")
@dataclass(frozen=True, slots=True)
class Fuse:
    """Apply fusion rules; on ONNX Runtime also its BERT fusions (attention, skip-layernorm)."""

    rules: tuple[str, ...] = field(
        default=tuple(RULES), metadata={"help": f"rules to apply: {', '.join(RULES)}"}
    )
    transformer: str = field(
        default="auto",
        metadata={
            "help": "onnxruntime.transformers fusions: auto (ORT target and attention "
            "found), bert (always), off"
        },
    )
    num_heads: int = field(default=0, metadata={"help": "attention heads (0: detect)"})
    hidden_size: int = field(default=0, metadata={"help": "hidden size (0: detect)"})

    def __post_init__(self) -> None:
        unknown = [r for r in self.rules if r not in RULES]
        if unknown:
            raise ValueError(f"unknown rules {unknown}; the rules are {', '.join(RULES)}")
        if self.transformer not in _TRANSFORMER_MODES:
            raise ValueError(f"transformer must be one of {', '.join(_TRANSFORMER_MODES)}")

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Run the rules, then (when it applies) ORT's transformer optimizer."""
        before = graph_fingerprint(model)
        out = copy_model(model)
        if out.ByteSize() < 2**31 - 1:
            out = onnx.shape_inference.infer_shapes(out)
        stats = apply_rules(out, [RULES[r] for r in self.rules], ctx.engine)
        notes = [f"{rule}: {n}" for rule, n in stats.applied.items()]
        for rule, reasons in stats.skipped.items():
            if rule in stats.applied or not reasons:
                continue
            reason, count = reasons.most_common(1)[0]
            log.debug("rule %s never applied; most common reason (%d): %s", rule, count, reason)
        wanted = self.transformer == "bert" or (
            self.transformer == "auto"
            and ctx.engine == "onnxruntime"
            and looks_like_transformer(out)
        )
        if wanted:
            out, fused = _transformer_fusions(out, self.num_heads, self.hidden_size)
            notes.append(
                "onnxruntime transformer fusions: "
                + (", ".join(f"{k} {v}" for k, v in fused.items()) or "none matched")
            )
        elif self.transformer == "auto" and looks_like_transformer(out):
            log.debug(
                "transformer fusions skipped: they emit com.microsoft ops only onnxruntime runs"
            )
        return PassResult(out, graph_fingerprint(out) != before, tuple(notes))
