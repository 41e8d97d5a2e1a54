"""The built-in passes, listed explicitly; importing this module registers them."""

from __future__ import annotations

from duh.passes.cleanup import Cleanup
from duh.passes.fold import FoldConstants
from duh.passes.fuse import Fuse
from duh.passes.lower_ml import LowerMl
from duh.passes.lower_sequences import LowerSequences
from duh.passes.precision import Bf16, Fp16
from duh.passes.prune import Prune
from duh.passes.quantize import Quantize
from duh.passes.simplify import Simplify

__all__ = ["BUILTIN_PASSES"]

BUILTIN_PASSES = (
    Cleanup,
    FoldConstants,
    Fuse,
    LowerMl,
    LowerSequences,
    Fp16,
    Bf16,
    Prune,
    Quantize,
    Simplify,
)
