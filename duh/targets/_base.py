"""The target plugin contract and the registry of engines."""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from duh.errors import ConfigError, TargetError
from duh.host import HostInfo

if TYPE_CHECKING:
    import onnx

    from duh.runtime.contract import Engine, EngineOptions, Manifest

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "CompileContext",
    "CompileResult",
    "PassSpec",
    "TargetPlugin",
    "TargetSpec",
    "get_target",
    "register_target",
    "target_plugins",
]

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

# Built-in engines, in the order `duh targets` lists them; third parties use the entry point group.
_BUILTIN_MODULES = (
    "duh.targets.onnxruntime",
    "duh.targets.openvino",
    "duh.targets.tvm",
    "duh.targets.tensorrt",
)
ENTRY_POINT_GROUP = "duh.targets"


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A resolved target: one engine, one device, one precision."""

    engine: str
    device: str
    precision: str

    @property
    def name(self) -> str:
        """The pinned form, ``engine:device-precision``."""
        return f"{self.engine}:{self.device}-{self.precision}"


@dataclass(frozen=True, slots=True)
class PassSpec:
    """One step of a pipeline: a pass name and its config."""

    name: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompileContext:
    """What a target's ``compile`` may use besides the model."""

    spec: TargetSpec
    host: HostInfo
    cache_dir: Path
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    # The inputs the build is verified on (real data or synthetic): a reduced-precision target
    # may measure itself on them (OpenVINO's bf16 keeps the ops that stray in f32).
    check_feeds: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, slots=True)
class CompileResult:
    """What a target reports after writing its engine files into the output directory."""

    engine_version: str
    engine_config: Mapping[str, Any] = field(default_factory=dict)
    host_requirements: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class TargetPlugin(Protocol):
    """An engine plugin. Heavy engine imports happen inside the methods, never at module import.

    Every field below is declared by every plugin, built-in or third-party (an entry point in
    the ``duh.targets`` group): ``register_target`` refuses a class that lacks one, naming it.
    ``short_name_candidate`` says whether the short names (``cpu``, ``cuda-int8``, ``auto``) may
    resolve to this engine; an engine that is only ever pinned (``tvm:cpu``) sets it False.
    """

    name: str
    pip_extra: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    max_ir_version: int
    max_opset: int
    short_name_candidate: bool

    def unavailable_reason(self, device: str, precision: str, host: HostInfo) -> str | None:
        """Why this engine cannot build/run (device, precision) here, or None when it can."""
        ...

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        """The pipeline a build for ``spec`` runs unless the user names passes."""
        ...

    def compile(self, model: onnx.ModelProto, ctx: CompileContext, out_dir: Path) -> CompileResult:
        """Write the engine's files for ``model`` into ``out_dir`` (which exists and is empty)."""
        ...

    def load(self, artifact: Path, manifest: Manifest, options: EngineOptions) -> Engine:
        """Load an artifact this plugin compiled."""
        ...


_TARGETS: dict[str, TargetPlugin] = {}
_loaded = False
T = TypeVar("T")


def _protocol_members() -> tuple[str, ...]:
    """The fields and methods ``TargetPlugin`` declares, in declaration order."""
    methods = [n for n, v in vars(TargetPlugin).items() if inspect.isfunction(v) and n[0] != "_"]
    return (*TargetPlugin.__annotations__, *methods)


def register_target(cls: type[T]) -> type[T]:
    """Class decorator: register an engine plugin (instantiated once) under its ``name``.

    Raises ``TargetError`` naming the ``TargetPlugin`` fields the class does not declare.
    """
    plugin: Any = cls()
    missing = [m for m in _protocol_members() if not hasattr(plugin, m)]
    if missing:
        raise TargetError(
            f"target plugin {cls.__module__}.{cls.__qualname__} lacks the TargetPlugin "
            f"field(s) {', '.join(missing)}; declare them on the class (see "
            "duh.targets.TargetPlugin), or update or uninstall the package that provides it"
        )
    name = plugin.name
    if name in _TARGETS:
        raise ValueError(f"target engine {name!r} is registered twice")
    _TARGETS[name] = plugin
    return cls


def _load_plugins() -> dict[str, TargetPlugin]:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            loader: Callable[[], Any] = ep.load
            try:
                loader()
            except ImportError as exc:
                log.warning("target plugin %s could not be imported: %s", ep.value, exc)
    return _TARGETS


def target_plugins() -> Sequence[TargetPlugin]:
    """Every registered engine plugin, built-ins first."""
    return list(_load_plugins().values())


def get_target(engine: str) -> TargetPlugin:
    """The plugin for ``engine``; a ``ConfigError`` listing the engines when there is none."""
    plugins = _load_plugins()
    if engine not in plugins:
        raise ConfigError(f"unknown engine {engine!r}; the engines are: {', '.join(plugins)}")
    return plugins[engine]
