"""``fuse``: rewrite rules (Conv+BatchNormalization, MatMul+Add -> Gemm, Gelu, LayerNorm) and,
for BERT-like models on ONNX Runtime, its transformer fusions (attention, skip-layernorm).

A rule that does not apply says why in the debug log (``duh -vv build ...``); one whose op the
model's opset lacks says so in the build report. The pass is an optimisation: where ONNX Runtime's
transformer optimizer fails or writes ops the opset lacks, the model goes on without its fusions.
Numerics are checked after the pipeline by the build's verification.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx

from duh.errors import MissingDependencyError
from duh.passes._base import (
    PassBase,
    PassContext,
    PassResult,
    one_line,
    register_pass,
    tool_errors,
)
from duh.passes._graph import (
    convert_opset,
    copy_model,
    default_opset,
    graph_fingerprint,
    infer_shapes,
    missing_ops,
)
from duh.passes._rules import Rule, RuleStats, apply_rules
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
) -> tuple[onnx.ModelProto, dict[str, int]] | str:
    """ORT's BERT fusions of ``model`` and their counts, or why the model goes on without them."""
    try:
        import onnxruntime as ort
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        raise MissingDependencyError("onnxruntime", "core", "transformer fusions") from None
    # ImportError too: the optimizer loads some of its helpers lazily.
    failures: tuple[type[BaseException], ...] = (ImportError, *tool_errors())
    try:
        optimized = optimize_model(
            copy_model(model),  # it edits what it is given; the input must survive a failure
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
    return fused, {k: int(v) for k, v in stats.items() if v}


def _rule_notes(stats: RuleStats) -> list[str]:
    notes = [f"{rule}: {n}" for rule, n in stats.applied.items()]
    for rule, (reason, count) in stats.unavailable.items():
        notes.append(f"{rule}: {count} match(es) left as they were: {reason}")
    for rule, reasons in stats.skipped.items():
        if rule in stats.applied or not reasons:
            continue
        reason, count = reasons.most_common(1)[0]
        log.debug("rule %s never applied; most common reason (%d): %s", rule, count, reason)
    return notes


@register_pass("fuse")
@dataclass(frozen=True, slots=True)
class Fuse(PassBase):
    """Apply fusion rules; on ONNX Runtime also its BERT fusions (attention, skip-layernorm)."""

    lossy: ClassVar[bool] = False

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
    opset: int = field(
        default=0,
        metadata={
            "help": "convert to this opset first, where onnx's converter can (0: keep); "
            "e.g. 17 gives an older model LayerNormalization"
        },
    )

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
        notes: list[str] = []
        current = default_opset(out)
        if self.opset and current < self.opset:
            converted = convert_opset(out, self.opset)
            if isinstance(converted, str):
                notes.append(f"opset {current} kept (conversion to {self.opset}: {converted})")
            else:
                out = converted
                notes.append(f"opset {current} -> {self.opset}")
        out = infer_shapes(out)
        notes += _rule_notes(apply_rules(out, [RULES[r] for r in self.rules], ctx.engine))
        wanted = self.transformer == "bert" or (
            self.transformer == "auto"
            and ctx.engine == "onnxruntime"
            and looks_like_transformer(out)
        )
        if wanted:
            found = _transformer_fusions(out, self.num_heads, self.hidden_size)
            if isinstance(found, str):
                notes.append(f"onnxruntime transformer fusions skipped: {found}")
            else:
                out, fused = found
                notes.append(
                    "onnxruntime transformer fusions: "
                    + (", ".join(f"{k} {v}" for k, v in fused.items()) or "none matched")
                )
        elif self.transformer == "auto" and looks_like_transformer(out):
            log.debug(
                "transformer fusions skipped: they emit com.microsoft ops only onnxruntime runs"
            )
        return PassResult(out, graph_fingerprint(out) != before, tuple(notes))
