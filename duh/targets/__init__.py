"""Engine plugins (ONNX Runtime, OpenVINO, TVM, TensorRT) and target-name resolution."""

from __future__ import annotations

from duh.targets._base import (
    DEVICES,
    PRECISIONS,
    CompileContext,
    CompileResult,
    PassSpec,
    TargetPlugin,
    TargetSpec,
    get_target,
    register_target,
    target_plugins,
)
from duh.targets._resolve import (
    SHORT_NAMES,
    TargetRequest,
    TargetStatus,
    candidates,
    list_targets,
    parse_target,
)
from duh.targets._util import import_engine, package_version, save_onnx

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "SHORT_NAMES",
    "CompileContext",
    "CompileResult",
    "PassSpec",
    "TargetPlugin",
    "TargetRequest",
    "TargetSpec",
    "TargetStatus",
    "candidates",
    "get_target",
    "import_engine",
    "list_targets",
    "package_version",
    "parse_target",
    "register_target",
    "save_onnx",
    "target_plugins",
]
