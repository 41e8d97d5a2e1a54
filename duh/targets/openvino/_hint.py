"""The float precision an OpenVINO INT8 artifact runs its float ops in, picked by measurement.

An INT8 graph leaves ops in float (Softmax, LayerNorm, GELU, the mask arithmetic, whatever the
quantizer skipped). On CPUs with AMX or AVX-512 BF16, running them in bf16 is often faster than
f32 (AMX: several times on transformers), and sometimes not (without AMX). So where the host has
bf16, both hints are compiled and timed on the check inputs, and bf16 is kept only when it is
faster and its outputs stay close to the f32 hint's (the build then verifies the artifact
against the source by INT8's criteria, as always).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duh.host import HostInfo
from duh.runtime import measure_interleaved

__all__ = ["HintChoice", "choose_int8_hint"]

log = logging.getLogger(__name__)

# bf16 of the float ops must stay this close (cosine of every output) to the f32 hint's results.
_MIN_COSINE = 0.999
# ... and be at least this much faster, or f32 (the exact one) is kept.
_MIN_GAIN = 1.03

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


def choose_int8_hint(
    ov: Any, xml: Path, host: HostInfo, feeds: Sequence[Feed], threads: int = 0
) -> HintChoice:
    """f32 or bf16 for the float ops of the INT8 IR at ``xml``, by speed within accuracy."""
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
    seen = f"f32 {f32_ms:.2f} ms, bf16 {bf16_ms:.2f} ms (cosine to f32 {cosine:.5f})"
    if cosine >= _MIN_COSINE and f32_ms >= bf16_ms * _MIN_GAIN:
        choice = HintChoice("bf16", f"float ops of the INT8 graph run in bf16: {seen}")
    elif cosine < _MIN_COSINE:
        choice = HintChoice("f32", f"float ops of the INT8 graph stay f32 (bf16 strays): {seen}")
    else:
        choice = HintChoice("f32", f"float ops of the INT8 graph stay f32 (bf16 no faster): {seen}")
    log.info("%s", choice.note)
    return choice
