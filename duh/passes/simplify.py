"""``simplify``: onnxsim's constant propagation and redundancy removal."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx

from duh.errors import ConfigError, MissingDependencyError
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
from duh.runtime import TensorSpec, synthetic_feed, synthetic_shapes

__all__ = ["Simplify", "changed_outputs"]

log = logging.getLogger(__name__)

# What ONNX Runtime's attention fusion needs left alone: MatMul+Add (not Reshape+Gemm+Reshape)
# and the mask's Unsqueeze(Unsqueeze(mask)) (not one Unsqueeze over two axes).
_KEEP_FOR_ATTENTION = ("fuse_matmul_add_bias_into_gemm_batched", "fuse_consecutive_unsqueezes")
_MODES = ("auto", "keep", "merge")
# Ops whose outputs differ run to run: two runs of such a model disagree whatever onnxsim did.
_RANDOM = frozenset(
    {"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
     "RandomUniformLike"}
)  # fmt: skip
# What protobuf serializes: a larger model is not run twice just to check the rewrite.
_PROTO_LIMIT = 2**31 - 1


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
        if graph_fingerprint(simplified) == graph_fingerprint(model):
            return PassResult(simplified, False)
        # onnxsim folds some Shape values wrongly (an opset-10 Unsqueeze(Gather(Shape(Conv)))
        # of a 5-D input becomes 11, not 1), and check_n=0 leaves that unseen until the engine
        # fails or, worse, computes something else.
        difference = changed_outputs(model, simplified, ctx.shapes)
        if difference is not None:
            log.warning(
                "onnxsim's result changed the model's outputs (%s); keeping it as it was",
                difference,
            )
            return PassResult(
                model,
                False,
                (
                    f"onnxsim's result changed the model's outputs ({difference}); kept the "
                    "unsimplified graph",
                ),
            )
        return PassResult(simplified, True)


def changed_outputs(
    original: onnx.ModelProto,
    rewritten: onnx.ModelProto,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> str | None:
    """How ``rewritten`` computes other outputs than ``original`` on one seeded synthetic feed
    (``shapes`` fixes an input's whole shape), or None where they agree.

    None too where the check proves nothing: the original fails on that feed as well (ids past
    a table, a size the model cannot take), holds random ops, or is too large to run twice.
    """
    if original.ByteSize() >= _PROTO_LIMIT or any(
        n.op_type in _RANDOM for n in original.graph.node
    ):
        return None
    unrunnable: tuple[type[BaseException], ...] = (*tool_errors(), ConfigError)
    try:
        specs = _input_specs(original)
        feed = synthetic_feed(specs, synthetic_shapes(specs, 1, shapes), np.random.default_rng(0))
        expected = _run(original, feed)
    except unrunnable:
        return None  # no evidence against the rewrite: the build's own checks say why
    try:
        got = _run(rewritten, feed)
    except tool_errors() as exc:
        return f"it fails to run: {one_line(exc)}"
    for name, want in expected.items():
        if name not in got:
            return f"output {name!r} is gone"
        have = got[name]
        if have.shape != want.shape:
            return f"output {name!r} has shape {list(have.shape)}, not {list(want.shape)}"
        if not _close(want, have):
            return f"output {name!r} differs by up to {_max_diff(want, have):.3g}"
    return None


def _input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The graph's inputs that are not initializers, as the synthetic-input helpers read them."""
    weights = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        dims = tuple(
            int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
            else (d.dim_param or None)
            for d in tensor.shape.dim
        )  # fmt: skip
        specs.append(TensorSpec(value.name, "object" if dtype == "object" else dtype, dims))
    return specs


def _run(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs of ``model`` on ``feed``, by name, from ONNX Runtime's CPU as written."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failed run is an answer here, not an error to print
    # The graphs are compared as written: ORT's own rewrites must not hide onnxsim's.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session: Any = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feed)), strict=True))


def _close(want: np.ndarray, have: np.ndarray) -> bool:
    if want.dtype.kind not in "fc":
        return bool(np.array_equal(want, have))
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(have)):
        return False
    # fp32 with folded BatchNorms and reassociated constants: relative to the output's scale.
    scale = float(np.max(np.abs(want[finite]))) if finite.any() else 0.0
    return bool(np.allclose(want[finite], have[finite], rtol=1e-3, atol=1e-4 * max(scale, 1.0)))


def _max_diff(want: np.ndarray, have: np.ndarray) -> float:
    diff = np.abs(want.astype(np.float64) - have.astype(np.float64))
    return float(np.nanmax(diff)) if diff.size else 0.0
