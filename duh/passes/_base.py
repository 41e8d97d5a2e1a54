"""The pass contract (a frozen dataclass config with ``run(model, ctx)``) and its registry."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import onnx

from duh.errors import ConfigError

if TYPE_CHECKING:
    from duh.calibration import CalibrationSet

__all__ = [
    "Pass",
    "PassContext",
    "PassResult",
    "config_help",
    "create_pass",
    "pass_config",
    "pass_names",
    "register_pass",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PassContext:
    """What a pass may know about the build: the target and the data it can calibrate on."""

    engine: str
    device: str
    precision: str
    workdir: Path
    calibration: CalibrationSet | None = None
    cache_dir: Path | None = None
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PassResult:
    """A pass's output model, whether it changed anything, and notes for the build report."""

    model: onnx.ModelProto
    changed: bool
    notes: tuple[str, ...] = ()


class Pass(Protocol):
    """A configured pass. The dataclass fields are its config; ``name`` is its registry key."""

    name: str

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Transform ``model``; raise ``PassError`` with the reason when it cannot."""
        ...


_PASSES: dict[str, type[Any]] = {}
P = TypeVar("P")


def register_pass(name: str) -> Callable[[type[P]], type[P]]:
    """Class decorator: register a frozen dataclass as the pass called ``name``."""

    def add(cls: type[P]) -> type[P]:
        if name in _PASSES:
            raise ValueError(f"pass {name!r} is registered twice ({_PASSES[name]!r} and {cls!r})")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"pass {name!r} must be a dataclass")
        cls.name = name  # type: ignore[attr-defined]
        _PASSES[name] = cls
        return cls

    return add


def _registry() -> dict[str, type[Any]]:
    from duh.passes import _builtins  # noqa: F401  (fills the registry)

    return _PASSES


def pass_names() -> list[str]:
    """Names of every registered pass, sorted."""
    return sorted(_registry())


def create_pass(name: str, config: Mapping[str, Any] | None = None) -> Pass:
    """Instantiate pass ``name`` with ``config`` (field name → value), validating both."""
    passes = _registry()
    if name not in passes:
        raise ConfigError(f"unknown pass {name!r}; the passes are: {', '.join(sorted(passes))}")
    cls = passes[name]
    config = dict(config or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ConfigError(
            f"pass {name!r} has no option {', '.join(map(repr, unknown))}; its options are: "
            f"{', '.join(fields) or '(none)'}"
        )
    # Recipes (TOML) give lists; configs are frozen, so list options become tuples.
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    try:
        instance: Pass = cls(**config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"pass {name!r}: {exc}") from None
    return instance


def pass_config(p: Pass) -> dict[str, Any]:
    """A pass's config as plain JSON values (for manifests, dry runs and recipes)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(p):  # type: ignore[arg-type]
        value = getattr(p, f.name)
        if isinstance(value, (tuple, frozenset)):
            value = sorted(value) if isinstance(value, frozenset) else list(value)
        out[f.name] = value
    return out


def config_help(name: str) -> list[tuple[str, str, str]]:
    """(field, default, help) for each option of pass ``name``."""
    cls = _registry()[name]
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((f.name, repr(default), str(f.metadata.get("help", ""))))
    return rows
