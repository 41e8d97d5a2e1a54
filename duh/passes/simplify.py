"""``simplify``: onnxsim's constant propagation and redundancy removal."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

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
from duh.passes._graph import graph_fingerprint
from duh.passes._ort_fusion import looks_like_transformer

__all__ = ["Simplify"]

log = logging.getLogger(__name__)

# What ONNX Runtime's attention fusion needs left alone: MatMul+Add (not Reshape+Gemm+Reshape)
# and the mask's Unsqueeze(Unsqueeze(mask)) (not one Unsqueeze over two axes).
_KEEP_FOR_ATTENTION = ("fuse_matmul_add_bias_into_gemm_batched", "fuse_consecutive_unsqueezes")
_MODES = ("auto", "keep", "merge")


@register_pass("simplify")
@dataclass(frozen=True, slots=True)
class Simplify(PassBase):
    """Simplify the graph with onnxsim; if onnxsim fails on a model, keep the input and warn."""

    lossy: ClassVar[bool] = False

    skip_fuse_bn: bool = field(
        default=False, metadata={"help": "leave Conv+BatchNormalization pairs unfused"}
    )
    skip_constant_folding: bool = field(
        default=False, metadata={"help": "do not fold constant subgraphs"}
    )
    attention_patterns: str = field(
        default="auto",
        metadata={
            "help": "keep (skip onnxsim's rank-3 MatMul+Add -> Reshape+Gemm+Reshape and its "
            "Unsqueeze merging, which hide attention from onnxruntime's fusion), merge, or auto "
            "(keep on onnxruntime for a graph with attention)"
        },
    )
    check_n: int = field(
        default=0,
        metadata={"help": "random-input checks onnxsim runs itself (duh verifies after the build)"},
    )

    def __post_init__(self) -> None:
        if self.attention_patterns not in _MODES:
            raise ValueError(f"attention_patterns must be one of {', '.join(_MODES)}")

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Run onnxsim; where it cannot handle the model, return the input with a note."""
        try:
            import onnxsim
        except ImportError:
            raise MissingDependencyError("onnxsim", "core", "the simplify pass") from None
        skipped = ["fuse_bn_into_conv"] if self.skip_fuse_bn else []
        if self.attention_patterns == "keep" or (
            self.attention_patterns == "auto"
            and ctx.engine == "onnxruntime"
            and looks_like_transformer(model)
        ):
            skipped += _KEEP_FOR_ATTENTION
        try:
            simplified, ok = onnxsim.simplify(
                model,
                check_n=self.check_n,
                skip_fuse_bn=self.skip_fuse_bn,
                skip_constant_folding=self.skip_constant_folding,
                skipped_optimizers=skipped or None,
            )
        # onnxsim raises what its C++ core and Python helpers raise on models they cannot
        # handle (RuntimeError, ValueError, onnx's checker and inference errors, protobuf's
        # EncodeError, ORT's classes, ...). The pass is an optimisation: the build goes on
        # with the input, and the report says why.
        except tool_errors() as exc:
            message = one_line(exc)
            log.warning("onnxsim failed, keeping the model as it was: %s", message)
            return PassResult(model, False, (f"onnxsim failed, model kept as it was: {message}",))
        if not ok:
            log.warning("onnxsim's own check failed; keeping the model as it was")
            return PassResult(model, False, ("onnxsim's check failed, model kept as it was",))
        simplified.ir_version = model.ir_version
        changed = graph_fingerprint(simplified) != graph_fingerprint(model)
        return PassResult(simplified, changed)
