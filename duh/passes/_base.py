"""The pass contract: a frozen dataclass config with ``run(model, ctx)``, and its registration.

Looking passes up by name lives in ``_registry`` (which loads the built-ins), so that this module,
which every pass imports, imports no pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import onnx
from google.protobuf.message import Error as ProtobufError

from duh._ort_errors import ort_errors

if TYPE_CHECKING:
    from duh.calibration import CalibrationSet

__all__ = [
    "Pass",
    "PassBase",
    "PassContext",
    "PassResult",
    "one_line",
    "pass_config",
    "register_pass",
    "tool_errors",
]


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
    """A configured pass. The dataclass fields are its config; ``name`` is its registry key.

    ``lossy``: the pass changes results on purpose (pruning), so the build checks the pipeline
    like INT8 whatever the precision. ``needs_calibration(model)``: running on ``model`` needs
    calibration data (static quantization of a model not quantized yet).
    """

    name: ClassVar[str]
    lossy: ClassVar[bool]

    def needs_calibration(self, model: onnx.ModelProto) -> bool:
        """Whether running on ``model`` needs calibration data."""
        ...

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Transform ``model``; raise ``PassError`` with the reason when it cannot."""
        ...


class PassBase:
    """What every registered pass inherits: it names ``lossy`` and asks for no data by default.

    ``lossy`` has no default: each pass says whether it changes results on purpose.
    """

    __slots__ = ()
    name: ClassVar[str]
    lossy: ClassVar[bool]

    def needs_calibration(self, model: onnx.ModelProto) -> bool:
        """Whether running on ``model`` needs calibration data (no, unless a pass says so)."""
        return False


_PASSES: dict[str, type[Any]] = {}
P = TypeVar("P")


def register_pass(name: str) -> Callable[[type[P]], type[P]]:
    """Class decorator: register a frozen dataclass as the pass called ``name``."""

    def add(cls: type[P]) -> type[P]:
        if name in _PASSES:
            raise ValueError(f"pass {name!r} is registered twice ({_PASSES[name]!r} and {cls!r})")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"pass {name!r} must be a dataclass")
        # The contract is checked once, here, so the compiler reads it without probing.
        if not isinstance(getattr(cls, "lossy", None), bool):
            raise TypeError(
                f"pass {name!r} ({cls.__qualname__}) declares no `lossy: ClassVar[bool]`; "
                "say whether it changes results on purpose"
            )
        if not callable(getattr(cls, "needs_calibration", None)) or not callable(
            getattr(cls, "run", None)
        ):
            raise TypeError(
                f"pass {name!r} ({cls.__qualname__}) lacks needs_calibration(model) or "
                "run(model, ctx); derive it from PassBase"
            )
        cls.name = name  # type: ignore[attr-defined]
        _PASSES[name] = cls
        return cls

    return add


def pass_config(p: Pass) -> dict[str, Any]:
    """A pass's config as plain JSON values (for manifests, dry runs and recipes)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(p):  # type: ignore[arg-type]
        value = getattr(p, f.name)
        if isinstance(value, (tuple, frozenset)):
            value = sorted(value) if isinstance(value, frozenset) else list(value)
        out[f.name] = value
    return out


def tool_errors() -> tuple[type[BaseException], ...]:
    """What the tools passes drive (onnx, onnxsim, graphsurgeon, ORT's quantizer and optimizer)
    raise on a model they cannot handle: their own classes and Python's for bad input and the
    asserts and lookups of their pattern code. Not ``Exception``: ``DuhError``, ``OSError``,
    ``ImportError`` and ``MemoryError`` still surface as what they are."""
    return (
        ArithmeticError,
        AssertionError,
        AttributeError,
        LookupError,
        RuntimeError,
        TypeError,
        ValueError,
        onnx.checker.ValidationError,
        onnx.shape_inference.InferenceError,
        onnx.defs.SchemaError,
        onnx.version_converter.ConvertError,
        ProtobufError,
        *ort_errors(),
    )


def one_line(exc: BaseException) -> str:
    """``exc`` as one line for a note or an error message: its type and first line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
