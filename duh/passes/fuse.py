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
from typing import ClassVar

import onnx

from duh.passes._base import PassBase, PassContext, PassResult, register_pass
from duh.passes._graph import (
    convert_opset,
    copy_model,
    default_opset,
    graph_fingerprint,
    infer_shapes,
)
from duh.passes._ort_fusion import bert_fusions, looks_like_transformer
from duh.passes._rules import Rule, RuleStats, apply_rules
from duh.passes._rules_linear import ConvBatchNorm, MatMulAddToGemm
from duh.passes._rules_norm import GeluErf, LayerNorm

__all__ = ["RULES", "Fuse", "looks_like_transformer"]

log = logging.getLogger(__name__)

RULES: dict[str, Rule] = {
    rule.name: rule for rule in (ConvBatchNorm(), MatMulAddToGemm(), LayerNorm(), GeluErf())
}
_TRANSFORMER_MODES = ("auto", "bert", "off")


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
            found = bert_fusions(out, self.num_heads, self.hidden_size)
            if isinstance(found, str):
                notes.append(f"onnxruntime transformer fusions skipped: {found}")
            else:
                out = found.model
                notes += found.notes
                notes.append(
                    "onnxruntime transformer fusions: "
                    + (", ".join(f"{k} {v}" for k, v in found.counts.items()) or "none matched")
                )
        elif self.transformer == "auto" and looks_like_transformer(out):
            log.debug(
                "transformer fusions skipped: they emit com.microsoft ops only onnxruntime runs"
            )
        return PassResult(out, graph_fingerprint(out) != before, tuple(notes))
