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
    AUTO_PRECISIONS,
    SHORT_NAMES,
    Resolution,
    TargetRequest,
    TargetStatus,
    candidates,
    list_targets,
    parse_target,
    resolve,
)
from duh.targets._util import import_engine, package_version, save_onnx

__all__ = [
    "AUTO_PRECISIONS",
    "DEVICES",
    "PRECISIONS",
    "SHORT_NAMES",
    "CompileContext",
    "CompileResult",
    "PassSpec",
    "Resolution",
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
    "resolve",
    "save_onnx",
    "target_plugins",
]
