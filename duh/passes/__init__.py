"""Graph passes: each a registered, configured transformation of an ONNX model."""

from __future__ import annotations

from duh.passes._base import (
    Pass,
    PassContext,
    PassResult,
    config_help,
    create_pass,
    pass_config,
    pass_names,
    register_pass,
)
from duh.passes._graph import node_count, op_histogram

__all__ = [
    "Pass",
    "PassContext",
    "PassResult",
    "config_help",
    "create_pass",
    "node_count",
    "op_histogram",
    "pass_config",
    "pass_names",
    "register_pass",
]
