"""Image preprocessing for calibration: resize, crop, scale, mean/std, channel order and layout.

A spec comes from a small TOML file (``--calib-config``), from ``key=value`` text on the command
line (``--calib-preprocess "resize=256,crop=224,order=bgr"``), or from both (the text wins).
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import CalibrationError, MissingDependencyError

__all__ = ["IMAGE_SUFFIXES", "PreprocessSpec", "load_image", "preprocess_spec"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
)
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box")
_ORDERS = ("rgb", "bgr", "gray")
_LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """How an image file becomes one model input (without the batch axis)."""

    resize: tuple[int, ...] = field(
        default=(),
        metadata={
            "help": "N: shorter side to N (keeps aspect); HxW: exact size; empty: the input's size"
        },
    )
    crop: tuple[int, int] | None = field(
        default=None, metadata={"help": "center crop HxW after the resize"}
    )
    interpolation: str = field(
        default="bilinear", metadata={"help": f"resampling filter: {', '.join(_INTERPOLATIONS)}"}
    )
    scale: float = field(default=1 / 255, metadata={"help": "pixel values are multiplied by this"})
    mean: tuple[float, ...] = field(
        default=(0.0,), metadata={"help": "subtracted after scaling, in the model's channel order"}
    )
    std: tuple[float, ...] = field(
        default=(1.0,), metadata={"help": "divided by after the mean, in the model's channel order"}
    )
    order: str = field(default="rgb", metadata={"help": "channel order: rgb, bgr or gray"})
    layout: str = field(default="nchw", metadata={"help": "nchw or nhwc"})

    def __post_init__(self) -> None:
        problems = []
        if len(self.resize) not in (0, 1, 2) or any(s <= 0 for s in self.resize):
            problems.append(f"resize {list(self.resize)} is not N or HxW with positive sizes")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) <= 0):
            problems.append(f"crop {self.crop} is not HxW with positive sizes")
        if self.interpolation not in _INTERPOLATIONS:
            problems.append(
                f"interpolation {self.interpolation!r} is not one of {', '.join(_INTERPOLATIONS)}"
            )
        if self.order not in _ORDERS:
            problems.append(f"order {self.order!r} is not one of {', '.join(_ORDERS)}")
        if self.layout not in _LAYOUTS:
            problems.append(f"layout {self.layout!r} is not one of {', '.join(_LAYOUTS)}")
        if any(s == 0 for s in self.std):
            problems.append("std has a zero")
        if problems:
            raise CalibrationError(f"bad image preprocessing: {'; '.join(problems)}")

    @property
    def channels(self) -> int:
        """3 for rgb/bgr, 1 for gray."""
        return 1 if self.order == "gray" else 3

    def to_json(self) -> dict[str, Any]:
        """Plain values (for the data digest and the manifest)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _ints(value: Any, key: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        parts = value.lower().replace("/", "x").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise CalibrationError(
            f"preprocessing {key}={value!r} is not a size such as 224 or 224x224"
        )
    try:
        return tuple(int(p) for p in parts if str(p).strip())
    except ValueError:
        raise CalibrationError(
            f"preprocessing {key}={value!r} is not a size such as 224 or 224x224"
        ) from None


def _floats(value: Any, key: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),)
    parts = value.split("/") if isinstance(value, str) else value
    try:
        return tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise CalibrationError(
            f"preprocessing {key}={value!r} is not a number or a list such as 0.485/0.456/0.406"
        ) from None


def _from_mapping(values: Mapping[str, Any], where: str) -> PreprocessSpec:
    known = {f.name for f in dataclasses.fields(PreprocessSpec)}
    aliases = {"channel_order": "order", "size": "resize", "center_crop": "crop"}
    kwargs: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = aliases.get(raw_key, raw_key)
        if key not in known:
            raise CalibrationError(
                f"{where}: unknown preprocessing key {raw_key!r}; "
                f"the keys are {', '.join(sorted(known))}"
            )
        if key == "resize":
            kwargs[key] = _ints(value, key)
        elif key == "crop":
            size = _ints(value, key)
            kwargs[key] = (size[0], size[0]) if len(size) == 1 else size
        elif key in ("mean", "std"):
            kwargs[key] = _floats(value, key)
        elif key == "scale":
            scale = _floats(value, key)
            if len(scale) != 1:
                raise CalibrationError(f"{where}: scale must be one number, got {value!r}")
            kwargs[key] = scale[0]
        else:
            kwargs[key] = str(value).lower()
    return PreprocessSpec(**kwargs)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(
            f"preprocessing file {str(path)!r} does not exist; check --calib-config"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"preprocessing file {path.name} is not valid TOML: {exc}") from None
    section = data.get("preprocess", data)
    if not isinstance(section, dict):
        raise CalibrationError(f"{path.name}: [preprocess] must be a table of keys")
    return section


def _parse_text(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.replace(";", ",").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CalibrationError(
                f"preprocessing {item.strip()!r} is not KEY=VALUE "
                "(e.g. resize=256,crop=224,order=bgr)"
            )
        out[key.strip().lower()] = value.strip()
    return out


def preprocess_spec(
    value: PreprocessSpec | Mapping[str, Any] | str | Path | None,
) -> PreprocessSpec:
    """A spec from a TOML path, ``key=value`` text, a mapping, or None (the defaults).

    A mapping holds the keys themselves, or ``config`` (a TOML path) and ``spec`` (text) that
    override it.
    """
    if value is None:
        return PreprocessSpec()
    if isinstance(value, PreprocessSpec):
        return value
    if isinstance(value, Path) or (isinstance(value, str) and value.lower().endswith(".toml")):
        path = Path(value)
        return _from_mapping(_read_toml(path), path.name)
    if isinstance(value, str):
        return _from_mapping(_parse_text(value), "--calib-preprocess")
    merged: dict[str, Any] = {}
    rest = dict(value)
    config = rest.pop("config", None)
    text = rest.pop("spec", None)
    if config:
        merged.update(_read_toml(Path(config)))
    merged.update(rest)
    if text:
        merged.update(_parse_text(str(text)))
    return _from_mapping(merged, "preprocessing")


def _resample(name: str) -> Any:
    from PIL import Image

    return {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
        "box": Image.Resampling.BOX,
    }[name]


def load_image(path: Path, spec: PreprocessSpec, size: tuple[int, int] | None) -> np.ndarray:
    """Read ``path`` and apply ``spec``; ``size`` (H, W) is used when the spec sets no size.

    Returns a float32 array in the spec's layout without the batch axis (CHW or HWC).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise MissingDependencyError("pillow", "images", "calibrating on image files") from None
    try:
        with Image.open(path) as opened:
            image = opened.convert("L" if spec.order == "gray" else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise CalibrationError(
            f"calibration image {path.name} cannot be read ({exc}); remove it"
        ) from None
    resample = _resample(spec.interpolation)
    if len(spec.resize) == 1:
        short = spec.resize[0]
        ratio = short / min(image.width, image.height)
        image = image.resize((round(image.width * ratio), round(image.height * ratio)), resample)
    elif len(spec.resize) == 2:
        image = image.resize((spec.resize[1], spec.resize[0]), resample)
    elif spec.crop is None and size is not None:
        image = image.resize((size[1], size[0]), resample)
    if spec.crop is not None:
        height, width = spec.crop
        if image.height < height or image.width < width:
            raise CalibrationError(
                f"calibration image {path.name} is {image.height}x{image.width} after the resize, "
                f"smaller than the crop {height}x{width}; resize to at least the crop size"
            )
        top, left = (image.height - height) // 2, (image.width - width) // 2
        image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if spec.order == "bgr":
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    for name, values in (("mean", mean), ("std", std)):
        if values.size not in (1, pixels.shape[2]):
            raise CalibrationError(
                f"preprocessing {name} has {values.size} values for {pixels.shape[2]} channels; "
                f"give 1 or {pixels.shape[2]}"
            )
    pixels = (pixels * np.float32(spec.scale) - mean) / std
    if spec.layout == "nchw":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.float32)
