"""``quantize`` mode ``nncf``: static INT8 by NNCF's ONNX backend (transformer-aware).

NNCF's ``ModelType.TRANSFORMER`` keeps the ops that break INT8 on transformers in float (the
mask arithmetic, Softmax inputs, LayerNorm), migrates activation outliers into the weights
(SmoothQuant) and corrects biases; its Q/DQ graph runs on OpenVINO (as FakeQuantize) and on
ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import onnx
from onnx import numpy_helper

from duh.calibration import CalibrationSet
from duh.errors import MissingDependencyError, PassError
from duh.passes._base import PassResult, one_line, tool_errors
from duh.passes._graph import copy_model, name_nodes, used_names

__all__ = ["nncf_available", "nncf_int8"]

log = logging.getLogger(__name__)


def nncf_available() -> bool:
    """Whether NNCF can be imported here (``pip install 'duh[nncf]'``)."""
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def _nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("nncf", "nncf", "quantize mode=nncf") from None
    return nncf


@contextlib.contextmanager
def _nncf_warnings_only() -> Iterator[None]:
    """NNCF's logger, for the call, passes only warnings on, and through duh's handlers.

    NNCF gives its logger a handler of its own at INFO, which prints a line per tensor whose
    shape it does not know; a build's output keeps duh's one format and its warnings.
    """
    logger = logging.getLogger("nncf")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    logger.setLevel(logging.WARNING)
    logger.propagate = True
    for handler in saved[2]:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        for handler in saved[2]:
            logger.addHandler(handler)


def _with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with ONNX's inferred shapes (NNCF places and sizes statistics by them)."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        return model


def _fold_weight_casts(model: onnx.ModelProto) -> int:
    """Replace each Cast of an initializer (weight-only int8 models store their weights so) by
    the initializer it computes; how many. NNCF 3.4's nop-cast pass reads ``.type`` of the
    Cast's input as if it were a value info and fails on an initializer ("AttributeError:
    type")."""
    graph = model.graph
    inputs = {v.name for v in graph.input}  # an initializer listed as an input is a default
    weights = {t.name: t for t in graph.initializer if t.name not in inputs}
    folded: list[onnx.NodeProto] = []
    for node in graph.node:
        cast = node.op_type == "Cast" and node.domain in ("", "ai.onnx")
        if not cast or node.input[0] not in weights:
            continue
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(to) if to else None
        except KeyError:
            dtype = None
        if dtype is None or dtype.kind not in "fiub":
            continue
        value = numpy_helper.to_array(weights[node.input[0]]).astype(dtype)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = used_names(model) | inputs
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return len(folded)


def nncf_int8(
    model: onnx.ModelProto,
    calibration: CalibrationSet,
    exclude_nodes: Sequence[str],
    transformer: bool,
    subset_size: int = 300,
) -> PassResult:
    """Static INT8 Q/DQ by ``nncf.quantize`` (TRANSFORMER model type when ``transformer``)."""
    nncf = _nncf()
    work = copy_model(model)
    casts = _fold_weight_casts(work)
    name_nodes(work, "q")
    feeds = list(calibration.feeds)
    known = {n.name for n in work.graph.node}
    ignored = [n for n in exclude_nodes if n in known]
    options: dict[str, Any] = {"subset_size": min(subset_size, len(feeds))}
    if transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    if ignored:
        options["ignored_scope"] = nncf.IgnoredScope(names=ignored, validate=False)
    try:
        # NNCF's progress bars print to stdout, which `duh build --json` keeps for its report.
        with contextlib.redirect_stdout(sys.stderr), _nncf_warnings_only():
            out = nncf.quantize(_with_shapes(work), nncf.Dataset(feeds), **options)
    except (*tool_errors(), nncf.errors.InternalError, nncf.errors.ValidationError) as exc:
        raise PassError(
            f"NNCF's quantizer failed on this model: {one_line(exc)}; use quantize mode=static "
            "or mode=dynamic"
        ) from exc
    qdq = sum(1 for n in out.graph.node if n.op_type == "QuantizeLinear")
    kind = "TRANSFORMER (SmoothQuant, bias correction)" if transformer else "default"
    notes = [
        f"static INT8 by NNCF {nncf.__version__} ({kind}): {qdq} Q/DQ pairs, calibrated on "
        f"{options['subset_size']} samples of {calibration.source}",
    ]
    if ignored:
        notes.append(f"{len(ignored)} node(s) kept in float")
    if casts:
        notes.append(f"{casts} Cast(s) of weights folded into the weights they compute")
    if calibration.synthetic:
        notes.append("calibrated on SYNTHETIC data: accuracy is likely poor")
    log.info("%s", notes[0])
    return PassResult(out, True, tuple(notes))
