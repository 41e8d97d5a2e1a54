"""GPU build settings from ``--option KEY=VALUE``, read by TensorRT and ORT's TensorRT provider.

Pure data: nothing here needs TensorRT or a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from duh.errors import ConfigError

__all__ = ["TrtSettings", "settings_from_options"]

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_KNOWN = (
    "workspace_mb",
    "max_batch",
    "hardware_compatible",
    "version_compatible",
    "optimization_level",
    "device",
    "ep",
)


@dataclass(frozen=True, slots=True)
class TrtSettings:
    """Engine build settings, from ``--option KEY=VALUE``."""

    workspace_mb: int | None = field(
        default=None, metadata={"help": "workspace memory limit in MiB (default: TensorRT's)"}
    )
    max_batch: int = field(
        default=32, metadata={"help": "largest batch of the default profile of a dynamic batch"}
    )
    hardware_compatible: bool = field(
        default=False,
        metadata={"help": "build for every GPU from Ampere (compute capability 8.0) on"},
    )
    version_compatible: bool = field(
        default=False,
        metadata={"help": "let later TensorRT releases of the same major version run the engine"},
    )
    optimization_level: int | None = field(
        default=None, metadata={"help": "builder optimization level 0-5 (default 3)"}
    )
    device: int = field(default=0, metadata={"help": "CUDA device ordinal to build on"})

    def to_json(self) -> dict[str, object]:
        """The form recorded in the manifest."""
        return {
            "workspace_mb": self.workspace_mb,
            "max_batch": self.max_batch,
            "hardware_compatible": self.hardware_compatible,
            "version_compatible": self.version_compatible,
            "optimization_level": self.optimization_level,
            "device": self.device,
        }


def _flag(key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"--option {key}={value!r} is not a boolean; use true or false")


def _int(key: str, value: str, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"--option {key}={value!r} is not an integer") from None
    if number < low or (high is not None and number > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"--option {key}={number} is out of range; use {bounds}")
    return number


def settings_from_options(options: Mapping[str, str]) -> TrtSettings:
    """Parse the target options TensorRT understands (unknown keys are logged and ignored)."""
    unknown = [k for k in options if k not in _KNOWN and not k.startswith("profile.")]
    if unknown:
        log.warning("tensorrt ignores option(s) %s; it knows %s", unknown, ", ".join(_KNOWN))

    def number(key: str, low: int, high: int | None = None) -> int | None:
        return _int(key, options[key], low, high) if options.get(key) else None

    def flag(key: str) -> bool:
        return _flag(key, options.get(key, "false"))

    return TrtSettings(
        workspace_mb=number("workspace_mb", 1),
        max_batch=number("max_batch", 1) or 32,
        hardware_compatible=flag("hardware_compatible"),
        version_compatible=flag("version_compatible"),
        optimization_level=number("optimization_level", 0, 5),
        device=number("device", 0) or 0,
    )
