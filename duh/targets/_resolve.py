"""Target names as users type them, and their resolution to engines on this host."""

from __future__ import annotations

from dataclasses import dataclass

from duh.errors import ConfigError, TargetError
from duh.host import HostInfo
from duh.targets._base import DEVICES, PRECISIONS, TargetSpec, get_target, target_plugins

__all__ = [
    "AUTO_PRECISIONS",
    "SHORT_NAMES",
    "Resolution",
    "TargetRequest",
    "TargetStatus",
    "candidates",
    "list_targets",
    "parse_target",
    "resolve",
]

SHORT_NAMES = (
    "cpu",
    "cpu-fp32",
    "cpu-int8",
    "cpu-bf16",
    "cpu-fp16",
    "cuda",
    "cuda-fp16",
    "cuda-int8",
    "auto",
)

# The precisions that compete in a precision-aware build (``auto``, and ``cpu`` under an accuracy
# budget), per device. The CPU's reduced float is bf16: ONNX Runtime has no fp16 CPU kernels (its
# cpu-fp16 only halves the weights), so cpu-fp16 is built only when asked for by name.
AUTO_PRECISIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("fp32", "bf16", "int8"),
    "cuda": ("fp32", "fp16", "int8"),
}


@dataclass(frozen=True, slots=True)
class TargetRequest:
    """A parsed target name: ``None`` fields are for duh to choose."""

    text: str
    engine: str | None
    device: str | None
    precision: str | None


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """A target name and whether it can be built here (``reason`` is None when it can)."""

    name: str
    engines: tuple[str, ...]
    reason: str | None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The candidates a target name builds on this host.

    ``precision_aware``: several precisions compete (``auto``, or ``cpu`` under an accuracy
    budget); ``not_tried`` says, one line each, why a precision or device of theirs is left out.
    """

    specs: tuple[TargetSpec, ...]
    precision_aware: bool = False
    not_tried: tuple[str, ...] = ()


def _device_precision(text: str, original: str) -> tuple[str, str]:
    device, _, precision = text.partition("-")
    precision = precision or "fp32"
    if device not in DEVICES or precision not in PRECISIONS:
        raise ConfigError(
            f"unknown target {original!r}; use one of {', '.join(SHORT_NAMES)} or "
            "ENGINE:DEVICE-PRECISION such as openvino:cpu-int8 (see `duh targets`)"
        )
    return device, precision


def parse_target(text: str) -> TargetRequest:
    """Parse ``cpu-int8``, ``auto`` or ``openvino:cpu-bf16`` into a request."""
    text = text.strip().lower()
    if text == "auto":
        return TargetRequest(text, None, None, None)
    engine, sep, rest = text.rpartition(":")
    if sep:
        get_target(engine)
        device, precision = _device_precision(rest, text)
        return TargetRequest(text, engine, device, precision)
    device, precision = _device_precision(text, text)
    return TargetRequest(text, None, device, precision)


def candidates(request: TargetRequest, host: HostInfo) -> list[TargetSpec]:
    """The targets this request may build here, in preference order.

    A pinned engine gives one candidate (or a ``TargetError`` saying why it cannot build); a
    short name gives every engine that can build it on this host, to be measured; ``auto``
    gives every device and precision on offer.
    """
    wanted = _offered(request)
    if not wanted:
        raise TargetError(
            f"no engine builds {request.text!r}; see `duh targets` for what each engine offers"
        )
    available = [s for s in wanted if _reason(s, host) is None]
    if not available:
        reasons = "; ".join(f"{s.name}: {_reason(s, host)}" for s in wanted)
        raise TargetError(f"target {request.text!r} cannot be built on this host ({reasons})")
    return available


def resolve(
    request: TargetRequest, host: HostInfo, *, budget: bool = False, calibrated: bool = False
) -> Resolution:
    """The candidates of ``request`` here, precision by precision where several compete.

    ``auto`` (and ``cpu`` when ``budget``, an accuracy budget, is given) builds fp32, bf16 and
    int8 on every engine of each device that has them (``AUTO_PRECISIONS``); int8 only when
    ``calibrated`` (INT8 scales need calibration data), bf16 only where the CPU runs it. What is
    left out is said in ``not_tried``. Any other name resolves as ``candidates`` does.
    """
    aware = request.text == "auto" or (request.text == "cpu" and budget)
    if not aware:
        return Resolution(tuple(candidates(request, host)))
    devices = [request.device] if request.device else list(DEVICES)
    specs: list[TargetSpec] = []
    not_tried: list[str] = []
    for device in devices:
        found: list[TargetSpec] = []
        missing: list[tuple[str, str]] = []  # (precision, why no engine builds it here)
        uncalibrated = False
        for precision in AUTO_PRECISIONS.get(device, ()):
            offered = _offered(TargetRequest(request.text, None, device, precision))
            if precision == "int8" and not calibrated:
                uncalibrated = uncalibrated or bool(offered)
                continue
            why = {s: _reason(s, host) for s in offered}
            ok = [s for s, reason in why.items() if reason is None]
            found.extend(ok)
            if offered and not ok:
                missing.append((precision, _grouped(why)))
        if not found:
            if missing:  # a device this host lacks is one line, not one per precision
                not_tried.append(f"{device} not tried: {missing[0][1]}")
            continue
        specs.extend(found)
        not_tried.extend(f"{device}-{p} not tried: {why}" for p, why in missing)
        if uncalibrated:
            not_tried.append(
                f"{device}-int8 not tried: no calibration data (INT8 scales are fitted to it); "
                "give --calib PATH"
            )
    if not specs:
        raise TargetError(
            f"target {request.text!r} cannot be built on this host ({'; '.join(not_tried)})"
        )
    return Resolution(tuple(specs), True, tuple(not_tried))


def _offered(request: TargetRequest) -> list[TargetSpec]:
    """Every target some engine offers for ``request``, available here or not."""
    wanted: list[TargetSpec] = []
    devices = [request.device] if request.device else list(DEVICES)
    precisions = [request.precision] if request.precision else list(PRECISIONS)
    for plugin in target_plugins():
        if request.engine and plugin.name != request.engine:
            continue
        if not request.engine and not plugin.short_name_candidate:
            continue
        for device in devices:
            for precision in precisions:
                if device in plugin.devices and precision in plugin.precisions:
                    wanted.append(TargetSpec(plugin.name, device, precision))
    return wanted


def _grouped(reasons: dict[TargetSpec, str | None]) -> str:
    """``engine: reason`` per engine, engines that give the same reason named together."""
    by_reason: dict[str, list[str]] = {}
    for spec, reason in reasons.items():
        by_reason.setdefault(reason or "available", []).append(spec.engine)
    return "; ".join(f"{', '.join(engines)}: {why}" for why, engines in by_reason.items())


def _reason(spec: TargetSpec, host: HostInfo) -> str | None:
    return get_target(spec.engine).unavailable_reason(spec.device, spec.precision, host)


def list_targets(host: HostInfo) -> list[TargetStatus]:
    """Every short name and every pinned engine target, with availability here."""
    rows: list[TargetStatus] = []
    for short in SHORT_NAMES:
        offered = _offered(parse_target(short))
        reasons = {s: _reason(s, host) for s in offered}
        engines = tuple(dict.fromkeys(s.engine for s, why in reasons.items() if why is None))
        why_not = "; ".join(f"{s.name}: {why}" for s, why in reasons.items()) or "no engine"
        rows.append(TargetStatus(short, engines, None if engines else why_not))
    for plugin in target_plugins():
        for device in plugin.devices:
            for precision in plugin.precisions:
                spec = TargetSpec(plugin.name, device, precision)
                rows.append(TargetStatus(spec.name, (plugin.name,), _reason(spec, host)))
    return rows
