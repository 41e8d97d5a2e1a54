"""Building a serialized TensorRT engine from an ONNX file with the TensorRT Python API.

The network is strongly typed (every tensor keeps the type the ONNX model gives it: float32,
the float16 of the ``fp16`` pass, or the int8 of explicit Q/DQ nodes); TensorRT 11 only builds
strongly typed networks, and TensorRT 10 builds them the same way, so both take one route.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duh.errors import TargetError
from duh.targets._gpu import InputProfile, TrtSettings

__all__ = ["build_engine", "make_logger", "network_flags"]

log = logging.getLogger(__name__)

_LOGGERS: dict[int, Any] = {}
_LOGGER_LOCK = threading.Lock()


def make_logger(trt: Any) -> Any:
    """The process's one TensorRT logger (per tensorrt module), its last error cleared.

    TensorRT keeps the first logger it is given while any builder or runtime lives, so a fresh
    logger per build would never hear the errors (and one freed early can crash it): every
    builder and runtime gets this one, and each call resets ``last_error`` for its own messages.
    """
    with _LOGGER_LOCK:
        logger = _LOGGERS.get(id(trt))
        if logger is None:
            logger = _LOGGERS[id(trt)] = _new_logger(trt)
        logger.last_error = ""
        return logger


def _new_logger(trt: Any) -> Any:
    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.last_error = ""

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.last_error = msg
                log.info("TensorRT error: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.info("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def _progress_monitor(trt: Any) -> Any | None:
    """Phase/step progress as INFO logs (the CLI shows the latest on its status line)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Progress(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            log.info("TensorRT: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            log.info("TensorRT: %s, step %d", phase_name, step + 1)
            return True

        def phase_finish(self, phase_name: str) -> None:
            log.debug("TensorRT: %s done", phase_name)

    return _Progress()


def network_flags(trt: Any) -> int:
    """Creation flags for a strongly typed network, right for TensorRT 10 and 11.

    TensorRT 10 builds strongly typed networks on request (``STRONGLY_TYPED``, bit 1 << value);
    TensorRT 11 builds nothing else and deprecates the flag with value 0, which would set the
    EXPLICIT_BATCH bit 0 it also removed: it is left out there.
    """
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None and int(strongly) > 0:
        flags |= 1 << int(strongly)
    return flags


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
        detail = errors[0].splitlines()[0] if errors else logger.last_error
        raise TargetError(
            f"TensorRT's ONNX parser rejects the model: {detail}; {len(errors)} error(s) in all "
            "(-vv shows TensorRT's log)"
        )
    return network, parser


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def build_engine(
    trt: Any,
    onnx_path: Path,
    precision: str,
    profiles: Sequence[InputProfile],
    settings: TrtSettings,
    timing_cache: Path,
) -> tuple[bytes, list[str]]:
    """Build a serialized engine for the ONNX file; returns its bytes and notes for the report.

    The timing cache (kernel timings of earlier builds on this GPU and TensorRT) is read from
    and written back to ``timing_cache``, so later builds skip the timings they share.
    """
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    notes: list[str] = []
    if settings.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 matmuls keep 10 mantissa bits: fp32 targets promise fp32 results.
        config.clear_flag(trt.BuilderFlag.TF32)
    if settings.optimization_level is not None:
        config.builder_optimization_level = settings.optimization_level
    if settings.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        notes.append("hardware-compatible engine: runs on compute capability 8.0 and newer")
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        notes.append("version-compatible engine: later TensorRT releases of this major run it")
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    if profiles:
        profile = builder.create_optimization_profile()
        for p in profiles:
            profile.set_shape(p.name, p.range.min, p.range.opt, p.range.max)
        config.add_optimization_profile(profile)
    cached = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(cached)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise TargetError(
            f"TensorRT refused the timing cache {timing_cache}: "
            f"{logger.last_error or 'no reason given'}; delete it and build again"
        )
    notes.append(
        f"timing cache {'reused' if cached else 'started'}: {timing_cache.name} "
        f"({len(cached)} bytes before the build)"
    )
    log.info("TensorRT: building the %s engine", precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TargetError(
            "TensorRT could not build an engine for this model: "
            f"{logger.last_error or 'no reason given'}; -vv shows TensorRT's log"
        )
    _write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), notes
