"""Accuracy-aware bf16 for OpenVINO's CPU plugin: keep the ops bf16 hurts most in f32.

Under a bf16 inference precision hint the CPU plugin lowers the float ops between the graph's
inputs and its last convolutions/matrix products, and keeps an op in f32 when the op carries the
``precise`` runtime attribute (``ov::DisableFP16Compression``). The attribute takes effect once
it is in the IR the plugin reads (set from Python it is a plain string until the IR is written
and read again), which is how duh's artifacts are loaded anyway.

The search: run the model in f32 and in bf16 on the check feeds; when the bf16 outputs stray
from f32 beyond a margin inside duh's bf16 criteria, keep the shortest prefix of the float ops
in f32 that brings them back (bisected: about log2(ops) compilations).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PRECISE", "Bf16Plan", "keep_f32_for_accuracy", "mark_precise"]

log = logging.getLogger(__name__)

# The runtime-info key of ov::DisableFP16Compression (RTTI "precise", version "0").
PRECISE = "precise_0"
# Held tighter than duh's bf16 criteria (atol 5e-2, rtol 8e-2 of the largest magnitude, cosine
# 0.99), so that the artifact passes them against ONNX Runtime and not only against OpenVINO f32.
_ATOL, _RTOL, _MIN_COSINE = 2.5e-2, 4e-2, 0.995

Feed = Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Bf16Plan:
    """The outcome of the search: the ops kept in f32 and how far bf16 then is from f32."""

    kept_f32: tuple[str, ...]
    worst: str
    passed: bool
    rounds: int


def mark_precise(model: Any, names: Sequence[str]) -> int:
    """Mark the ops of ``model`` named in ``names`` to run in f32; returns how many were found."""
    wanted = set(names)
    found = 0
    for op in model.get_ops():
        if op.get_friendly_name() in wanted:
            op.get_rt_info()[PRECISE] = ""
            found += 1
    return found


def _float_ops(model: Any) -> list[Any]:
    """The ops computing with float values (what the hint can lower), in topological order:
    those with a float output (a Convert too: under the hint an input's f64 -> f32 Convert
    yields bf16), and comparisons of floats (a lowered tree's splits)."""
    skip = {"Parameter", "Result", "Constant", "ShapeOf"}

    def real(op: Any) -> bool:
        outputs = op.get_output_size() > 0 and op.get_output_element_type(0).is_real()
        return outputs or any(
            op.input(i).get_element_type().is_real() for i in range(op.get_input_size())
        )

    return [op for op in model.get_ordered_ops() if op.get_type_name() not in skip and real(op)]


def _mismatch(refs: list[list[np.ndarray]], gots: list[list[np.ndarray]], names: list[str]) -> str:
    """Why ``gots`` are not close to ``refs`` (one string), or "" when they are."""
    for k, name in enumerate(names):
        ref = np.concatenate([np.ravel(r[k]).astype(np.float64) for r in refs])
        got = np.concatenate([np.ravel(g[k]).astype(np.float64) for g in gots])
        if not np.issubdtype(refs[0][k].dtype, np.floating):
            if not np.array_equal(ref, got):
                return f"{name}: {int(np.sum(ref != got))} integer values differ"
            continue
        diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        denom = float(np.linalg.norm(ref) * np.linalg.norm(got))
        cosine = float(ref @ got) / denom if denom > 0 else 1.0
        if diff > _ATOL + _RTOL * scale or cosine < _MIN_COSINE:
            return f"{name}: max abs {diff:.3g}, cosine {cosine:.4f}"
    return ""


def _run(
    ov: Any, model: Any, hint: str, feeds: Sequence[Feed], workdir: Path
) -> list[list[np.ndarray]]:
    """The model's outputs on every feed, compiled with ``hint``.

    The model goes through an IR file so that the ``precise`` marks reach the plugin (extra
    outputs would not do to look inside: the plugin keeps in f32 whatever feeds an output).
    """
    xml = workdir / "bf16-search.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    try:
        compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint})
        outs = []
        for feed in feeds:
            result = compiled(dict(feed))
            outs.append([np.array(result[i]) for i in range(len(compiled.outputs))])
        return outs
    finally:
        xml.unlink(missing_ok=True)
        xml.with_suffix(".bin").unlink(missing_ok=True)


def _passes(
    ov: Any, model: Any, keep: Sequence[str], refs: list[list[np.ndarray]], run: _Run
) -> str:
    """Why ``model`` with ``keep`` in f32 strays from ``refs`` in bf16 ("" when it does not)."""
    marked = model.clone()
    mark_precise(marked, keep)
    outs = _run(ov, marked, "bf16", run.feeds, run.workdir)
    return _mismatch(refs, outs, run.names)


@dataclass(frozen=True, slots=True)
class _Run:
    feeds: Sequence[Feed]
    workdir: Path
    names: list[str]


def keep_f32_for_accuracy(ov: Any, model: Any, feeds: Sequence[Feed], workdir: Path) -> Bf16Plan:
    """Find the ops to keep in f32 so that bf16 stays close to f32 on ``feeds``; marks ``model``.

    Measured on these models, bf16's harm comes from the first layers (raw bytes, pixels, an
    embedding and its normalization): errors made there grow through the rest. So the search
    keeps a prefix of the float ops (in topological order) in f32 and bisects its length: the
    shortest prefix whose bf16 outputs stay within the margin, in about log2(ops) compilations.
    When only every op in f32 stays close, every op is marked: the artifact then computes as
    f32, and the plan says it failed. When even that strays, nothing is marked.
    """
    run = _Run(feeds, workdir, [port.get_any_name() for port in model.outputs])
    ops = [op.get_friendly_name() for op in _float_ops(model)]
    refs = _run(ov, model, "f32", feeds, workdir)
    worst = _passes(ov, model, (), refs, run)
    rounds = 1
    if not worst:
        return Bf16Plan((), "", True, rounds)
    good, bad = len(ops), 0
    while good - bad > 1:
        mid = (good + bad) // 2
        why = _passes(ov, model, ops[:mid], refs, run)
        rounds += 1
        log.info("bf16 with the first %d of %d ops in f32: %s", mid, len(ops), why or "close")
        if why:
            bad, worst = mid, why
        else:
            good = mid
    if good >= len(ops):
        # Marks do not reach ops inside loop bodies (an LSTM's TensorIterator): every op marked
        # may still stray, and then bf16 cannot hold the model at all.
        if why := _passes(ov, model, ops, refs, run):
            return Bf16Plan((), why, False, rounds + 1)
        mark_precise(model, ops)
        return Bf16Plan(tuple(ops), worst, False, rounds + 1)
    kept = tuple(ops[:good])
    mark_precise(model, kept)
    return Bf16Plan(kept, "", True, rounds)
