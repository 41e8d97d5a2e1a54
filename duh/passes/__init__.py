"""Graph passes: each a registered, configured transformation of an ONNX model."""

from __future__ import annotations

from duh.passes._base import Pass, PassBase, PassContext, PassResult, pass_config, register_pass
from duh.passes._graph import node_count, op_histogram
from duh.passes._registry import config_help, create_pass, pass_names
from duh.passes._upcast import computes_in_float16

__all__ = [
    "Pass",
    "PassBase",
    "PassContext",
    "PassResult",
    "computes_in_float16",
    "config_help",
    "create_pass",
    "node_count",
    "op_histogram",
    "pass_config",
    "pass_names",
    "register_pass",
]
