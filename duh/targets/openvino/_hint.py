"""The float precision an OpenVINO INT8 artifact runs its float ops in, picked by measurement.

An INT8 graph leaves ops in float (Softmax, LayerNorm, GELU, the residual adds, the mask
arithmetic, whatever the quantizer skipped). Where the CPU has AMX or AVX-512 BF16, OpenVINO's
own default runs them in bf16, which is faster there (AMX: several times on transformers' float
ops, ~5% on a CNN whose convolutions are all INT8). So bf16 is the default on such hosts, and
the build measures both hints on the check inputs: f32 is kept instead when bf16's outputs stray
from f32's (cosine below 0.999 on any output) or when f32 is clearly faster (10%). The build then
verifies the artifact against the source by INT8's criteria, as always.

The margin keeps the choice reproducible: the hint the engine defaults to is kept unless the
other is faster by more than the noise, so two builds of one model choose alike. The timings
go to the build log, not the manifest. ``--option int8_float_hint=f32|bf16`` pins the choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import ConfigError
from duh.host import HostInfo
from duh.runtime import measure_interleaved

__all__ = ["HINT_OPTION", "HintChoice", "choose_int8_hint", "pinned_hint"]

log = logging.getLogger(__name__)

# bf16 of the float ops must stay this close (cosine of every output) to the f32 hint's results.
_MIN_COSINE = 0.999
# f32 replaces the bf16 default only when it is at least this much faster.
_MIN_GAIN = 1.10

# The --option that pins the hint instead of measuring.
HINT_OPTION = "int8_float_hint"
_PINNABLE = ("f32", "bf16")

Feed = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class HintChoice:
    """The hint chosen, and what the measurement saw (for the compile notes)."""

    hint: str
    note: str


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y) / denom if denom > 0 else float(np.array_equal(x, y))


def pinned_hint(options: Mapping[str, str], host: HostInfo) -> HintChoice | None:
    """The hint ``--option int8_float_hint=`` pins, or None for ``auto`` (measure)."""
    text = str(options.get(HINT_OPTION, "auto")).strip().lower()
    if text == "auto":
        return None
    if text not in _PINNABLE:
        raise ConfigError(f"--option {HINT_OPTION}={text!r}: give auto, f32 or bf16")
    if text == "bf16" and not (host.has("amx_bf16") or host.has("avx512_bf16")):
        raise ConfigError(
            f"--option {HINT_OPTION}=bf16: this CPU has no AVX-512 BF16 or AMX; give f32 or auto"
        )
    return HintChoice(text, f"float ops of the INT8 graph run in {text} (--option {HINT_OPTION})")


def choose_int8_hint(
    ov: Any, xml: Path, host: HostInfo, feeds: Sequence[Feed], threads: int = 0
) -> HintChoice:
    """bf16 for the float ops of the INT8 IR at ``xml`` where the CPU has it, unless bf16
    strays from f32 or f32 is clearly faster."""
    if not feeds or not (host.has("amx_bf16") or host.has("avx512_bf16")):
        return HintChoice("f32", "")
    core = ov.Core()
    compiled = {}
    for hint in ("f32", "bf16"):
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled[hint] = core.compile_model(str(xml), "CPU", config)
    requests = {h: c.create_infer_request() for h, c in compiled.items()}

    def outputs(hint: str, feed: Feed) -> list[np.ndarray]:
        result = requests[hint].infer(dict(feed))
        return [np.array(v, copy=True) for v in result.values()]

    cosine = 1.0
    for feed in feeds:
        for a, b in zip(outputs("f32", feed), outputs("bf16", feed), strict=True):
            if np.issubdtype(a.dtype, np.floating):
                cosine = min(cosine, _cosine(a, b))
            elif not np.array_equal(a, b):
                cosine = min(cosine, 0.0)
    def runner(hint: str) -> Callable[[Feed], object]:
        return lambda feed: requests[hint].infer(dict(feed))

    timings = measure_interleaved(
        [runner("f32"), runner("bf16")],
        list(feeds[:1]),
        warmup=2,
        rounds=7,
    )
    f32_ms, bf16_ms = timings.medians_ms
    log.info(
        "INT8 float-op hint: f32 %.2f ms, bf16 %.2f ms, bf16 cosine to f32 %.5f",
        f32_ms, bf16_ms, cosine,
    )
    if cosine < _MIN_COSINE:
        return HintChoice(
            "f32", f"float ops of the INT8 graph stay f32: bf16 strays (cosine {cosine:.4f})"
        )
    if bf16_ms >= f32_ms * _MIN_GAIN:
        return HintChoice(
            "f32", f"float ops of the INT8 graph run in f32: {_MIN_GAIN:.2f}x faster than bf16 here"
        )
    return HintChoice(
        "bf16",
        f"float ops of the INT8 graph run in bf16 (OpenVINO's default on this CPU; cosine to "
        f"f32 {cosine:.4f}, f32 not {_MIN_GAIN:.2f}x faster)",
    )
