"""The INT8 candidates a build adds for transformers: static graphs made for the engine.

Dynamic INT8 (what ``quantize`` picks for transformers on its own) suits ONNX Runtime, whose
MatMulInteger kernels quantize activations at run time; OpenVINO runs that graph slower than its
own FP32. So for an OpenVINO int8 target, a calibrated build of a transformer also tries NNCF's
static, transformer-aware Q/DQ graph, and the measurement among verified candidates decides.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import onnx

from duh.compiler._request import Plan
from duh.compiler.pipeline import PassManager
from duh.passes import pass_config
from duh.passes.quantize import Quantize
from duh.targets import PassSpec

__all__ = ["int8_variants"]

# Engines whose int8 candidates get an NNCF variant: OpenVINO is what NNCF's graphs are made for.
_NNCF_ENGINES = ("openvino",)


# Passes the NNCF variant leaves out. onnxsim's Gemm fusion (made for ORT's CPU kernels) turns
# MatMul+Add on 3-D activations into Reshape -> Gemm -> Reshape; OpenVINO then cannot fold
# NNCF's FakeQuantize ops into its FullyConnected (MiniLM: 18 stayed separate, ~20% slower).
_NNCF_SKIPS = frozenset({"simplify"})


def _variant(plan: Plan, index: int) -> Plan:
    specs = []
    for i, p in enumerate(plan.pipeline.passes):
        config = pass_config(p)
        if i == index:
            config["mode"] = "nncf"
        elif p.name in _NNCF_SKIPS:
            continue
        specs.append(PassSpec(p.name, config))
    return Plan(plan.spec, PassManager(specs, plan.pipeline.cache))


def int8_variants(
    plans: Sequence[Plan], model: onnx.ModelProto, calibrated: bool
) -> tuple[Plan, ...]:
    """``plans`` and, after each OpenVINO int8 plan whose quantize pass would go dynamic on this
    transformer, the same plan with NNCF's static INT8 (needs calibration data and nncf)."""
    if not calibrated or importlib.util.find_spec("nncf") is None:
        return tuple(plans)
    out: list[Plan] = []
    for plan in plans:
        out.append(plan)
        if plan.spec.precision != "int8" or plan.spec.engine not in _NNCF_ENGINES:
            continue
        found = [(i, p) for i, p in enumerate(plan.pipeline.passes) if isinstance(p, Quantize)]
        if len(found) != 1:
            continue
        index, quantize = found[0]
        if quantize.mode == "auto" and quantize.resolved_mode(model) == "dynamic":
            out.append(_variant(plan, index))
    return tuple(out)
