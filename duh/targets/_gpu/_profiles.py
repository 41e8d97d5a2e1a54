"""Optimization profiles for TensorRT: the min/opt/max shape of each dynamic input.

Users give them as ``--shape NAME=MIN:OPT:MAX`` (each ``DxDxD``); the CLI passes them to the
target as options ``profile.NAME``. An input whose only dynamic dimension is the batch gets
``1:1:max_batch`` when none is given; any other dynamic dimension needs a range from the user.
Pure data: nothing here needs TensorRT or a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from duh.errors import ConfigError
from duh.runtime.contract import Dim

__all__ = [
    "PROFILE_PREFIX",
    "InputProfile",
    "ShapeRange",
    "dynamic_inputs",
    "input_profiles",
    "parse_shape_range",
    "profile_ranges",
    "trt_ep_profile_options",
]

PROFILE_PREFIX = "profile."


@dataclass(frozen=True, slots=True)
class ShapeRange:
    """The smallest, typical and largest shape an input takes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def text(self) -> str:
        """The form users type: ``1x3x224x224:8x3x224x224:32x3x224x224``."""
        return ":".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))


@dataclass(frozen=True, slots=True)
class InputProfile:
    """One input's range in the engine's optimization profile, and where it came from."""

    name: str
    range: ShapeRange
    source: str

    def to_json(self) -> dict[str, object]:
        """The form recorded in the manifest."""
        return {
            "name": self.name,
            "min": list(self.range.min),
            "opt": list(self.range.opt),
            "max": list(self.range.max),
            "source": self.source,
        }


def _dims(text: str, what: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.strip().lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"{what}: {text!r} is not a shape DxDxD (e.g. 1x3x224x224)"
        ) from None
    if any(d < 1 for d in dims):
        raise ConfigError(f"{what}: {text!r} has a dimension below 1")
    return dims


def parse_shape_range(text: str, name: str) -> ShapeRange:
    """Parse ``MIN:OPT:MAX`` (or one shape for all three), the range of input ``name``."""
    what = f"--shape {name}={text}"
    parts = text.split(":")
    if len(parts) == 1:
        shape = _dims(parts[0], what)
        return ShapeRange(shape, shape, shape)
    if len(parts) != 3:
        raise ConfigError(
            f"{what} is not NAME=MIN:OPT:MAX (e.g. x=1x3x224x224:8x3x224x224:32x3x224x224)"
        )
    low, opt, high = (_dims(p, what) for p in parts)
    if not len(low) == len(opt) == len(high):
        raise ConfigError(f"{what}: min, opt and max have different ranks")
    for axis, (a, b, c) in enumerate(zip(low, opt, high, strict=True)):
        if not a <= b <= c:
            raise ConfigError(
                f"{what}: axis {axis} has min {a}, opt {b}, max {c}; it needs min <= opt <= max"
            )
    return ShapeRange(low, opt, high)


def profile_ranges(options: Mapping[str, str]) -> dict[str, ShapeRange]:
    """The ``profile.NAME`` target options, parsed."""
    return {
        key[len(PROFILE_PREFIX) :]: parse_shape_range(value, key[len(PROFILE_PREFIX) :])
        for key, value in options.items()
        if key.startswith(PROFILE_PREFIX)
    }


def dynamic_inputs(model: onnx.ModelProto) -> dict[str, tuple[Dim, ...]]:
    """Graph inputs (weights excluded) with at least one dimension that is not fixed."""
    weights = {init.name for init in model.graph.initializer}
    out: dict[str, tuple[Dim, ...]] = {}
    for value in model.graph.input:
        if value.name in weights:
            continue
        dims: list[Dim] = []
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        if any(not isinstance(d, int) for d in dims):
            out[value.name] = tuple(dims)
    return out


def _shape_text(dims: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _check_given(name: str, dims: Sequence[Dim], given: ShapeRange) -> None:
    if len(given.min) != len(dims):
        raise ConfigError(
            f"--shape {name}={given.text()} has rank {len(given.min)}, but input {name!r} is "
            f"{_shape_text(dims)} (rank {len(dims)})"
        )
    for axis, dim in enumerate(dims):
        sizes = {given.min[axis], given.opt[axis], given.max[axis]}
        if isinstance(dim, int) and sizes != {dim}:
            raise ConfigError(
                f"--shape {name}={given.text()}: axis {axis} of {name!r} is fixed at {dim} in "
                "the model; give that size for min, opt and max"
            )


def input_profiles(
    model: onnx.ModelProto, ranges: Mapping[str, ShapeRange], max_batch: int
) -> tuple[InputProfile, ...]:
    """The optimization profile of ``model``: one range per dynamic input.

    Raises ``ConfigError`` for a range that does not fit its input, a range for an input the
    model lacks or that is not dynamic, and a dynamic dimension other than the batch left without
    a range; inputs that share a named dimension must give it the same range.
    """
    dynamic = dynamic_inputs(model)
    names = [v.name for v in model.graph.input]
    unknown = sorted(set(ranges) - set(names))
    if unknown:
        raise ConfigError(
            f"--shape names input {', '.join(map(repr, unknown))}, but the model's inputs are "
            f"{', '.join(names)}"
        )
    profiles: list[InputProfile] = []
    for name, dims in dynamic.items():
        if name in ranges:
            _check_given(name, dims, ranges[name])
            profiles.append(InputProfile(name, ranges[name], "--shape"))
            continue
        loose = [axis for axis, d in enumerate(dims) if not isinstance(d, int)]
        if loose != [0]:
            example = "x".join("1" if not isinstance(d, int) else str(d) for d in dims)
            raise ConfigError(
                f"input {name!r} {_shape_text(dims)} has dynamic dimensions besides the batch; "
                f"TensorRT needs their range: give --shape {name}=MIN:OPT:MAX "
                f"(e.g. {name}={example}:{example}:{example} with your sizes)"
            )
        rest = tuple(int(d) for d in dims[1:] if isinstance(d, int))
        shape_range = ShapeRange((1, *rest), (1, *rest), (max_batch, *rest))
        profiles.append(InputProfile(name, shape_range, f"default: batch 1..{max_batch}"))
    _check_shared_dims(dynamic, profiles)
    fixed = sorted(set(ranges) - set(dynamic))
    if fixed:
        raise ConfigError(
            f"--shape gives a range for {', '.join(map(repr, fixed))}, whose shape is fixed in "
            "the model; give its shape as NAME=DxDxD or drop the option"
        )
    return tuple(profiles)


def _check_shared_dims(
    dynamic: Mapping[str, tuple[Dim, ...]], profiles: Sequence[InputProfile]
) -> None:
    seen: dict[str, tuple[str, tuple[int, int, int]]] = {}
    for profile in profiles:
        for axis, dim in enumerate(dynamic[profile.name]):
            if not isinstance(dim, str):
                continue
            r = profile.range
            sizes = (r.min[axis], r.opt[axis], r.max[axis])
            first = seen.setdefault(dim, (profile.name, sizes))
            if first[1] != sizes:
                raise ConfigError(
                    f"dimension {dim!r} is {':'.join(map(str, first[1]))} in input "
                    f"{first[0]!r} but {':'.join(map(str, sizes))} in input {profile.name!r}; "
                    "inputs sharing a "
                    "dimension name need the same range"
                )


def trt_ep_profile_options(profiles: Sequence[InputProfile]) -> dict[str, str]:
    """ORT's TensorRT provider options for ``profiles`` (``trt_profile_min_shapes``, ...)."""
    if not profiles:
        return {}

    def join(pick: str) -> str:
        return ",".join(
            f"{p.name}:{'x'.join(map(str, getattr(p.range, pick)))}" for p in profiles
        )

    return {
        "trt_profile_min_shapes": join("min"),
        "trt_profile_opt_shapes": join("opt"),
        "trt_profile_max_shapes": join("max"),
    }
