"""Classifier outputs as tensors: a trailing ZipMap is replaced by the probability matrix it zips.

skl2onnx and onnxmltools end a classifier with ``ZipMap``, which turns the ``[N, C]`` probability
tensor into a ``sequence<map<label, float>>`` (one dict per row). duh's runtime and its serving
protocol (KServe v2) carry tensors only, so at ingest a ZipMap whose output is a graph output
becomes an ``Identity`` of its input: the same numbers, as the matrix, under the same output
name. The class labels (ZipMap's ``classlabels_*``) say which column is which class; they go to
the manifest (``source.output_labels``) and the build report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

__all__ = ["UnzippedOutput", "unzip_outputs", "zipmap_matrix"]


@dataclass(frozen=True, slots=True)
class UnzippedOutput:
    """A graph output that was a ZipMap: now the ``[N, C]`` matrix, column j = ``labels[j]``."""

    name: str
    labels: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        """The form stored in the manifest."""
        return {"was": "ZipMap (sequence<map>)", "columns": list(self.labels)}

    def note(self) -> str:
        """One line for the build report."""
        shown = ", ".join(map(str, self.labels[:8])) + (", ..." if len(self.labels) > 8 else "")
        return (
            f"output {self.name!r} was a ZipMap (sequence<map>, one dict per row): it is the "
            f"[N, {len(self.labels)}] probability matrix, columns are classes [{shown}] "
            "(manifest: source.output_labels)"
        )


def _labels(node: onnx.NodeProto) -> tuple[int | str, ...]:
    for attr in node.attribute:
        if attr.name == "classlabels_int64s":
            return tuple(int(v) for v in attr.ints)
        if attr.name == "classlabels_strings":
            return tuple(v.decode("utf-8") for v in attr.strings)
    return ()


def unzip_outputs(model: onnx.ModelProto) -> tuple[UnzippedOutput, ...]:
    """Replace, in place, each ZipMap that makes a graph output by an Identity of its input.

    Only ZipMaps whose output nothing else reads are replaced; the output's type becomes
    ``tensor(float)`` of shape ``[N, C]`` (N as ZipMap's input declares it, when it does).
    """
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    read = {name for node in graph.node for name in node.input}
    shapes = {v.name: v for v in (*graph.value_info, *graph.input)}
    done = []
    for index, node in enumerate(graph.node):
        if node.op_type != "ZipMap" or node.domain != "ai.onnx.ml":
            continue
        name = node.output[0]
        if name not in outputs or name in read:
            continue
        labels = _labels(node)
        identity = onnx.helper.make_node("Identity", [node.input[0]], [name], name=node.name)
        graph.node[index].CopyFrom(identity)
        batch: int | str | None = None
        declared = shapes.get(node.input[0])
        if declared is not None and declared.type.tensor_type.shape.dim:
            first = declared.type.tensor_type.shape.dim[0]
            batch = first.dim_value or first.dim_param or None
        value = onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, [batch, len(labels) or None]
        )
        outputs[name].CopyFrom(value)
        done.append(UnzippedOutput(name, labels))
    if done and not any(e.domain in ("", "ai.onnx") for e in model.opset_import):
        # Identity is a default-domain op; skl2onnx's pure-ML graphs import ai.onnx.ml only.
        model.opset_import.append(onnx.helper.make_opsetid("", 13))
        model.ir_version = max(model.ir_version, 7)
    return tuple(done)


def zipmap_matrix(rows: Sequence[Mapping[Any, float]], labels: Sequence[int | str]) -> np.ndarray:
    """ZipMap's output (one dict per row, as ONNX Runtime returns it) as the ``[N, C]`` matrix
    with columns in ``labels`` order: what the unzipped model outputs."""
    return np.array([[row[label] for label in labels] for row in rows], dtype=np.float32)
