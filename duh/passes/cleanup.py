"""``cleanup``: drop dead nodes, unused initializers and pass-through Identity nodes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx

from duh.errors import MissingDependencyError
from duh.passes._base import PassBase, PassContext, PassResult, register_pass
from duh.passes._graph import graph_fingerprint

__all__ = ["Cleanup"]

log = logging.getLogger(__name__)


@register_pass("cleanup")
@dataclass(frozen=True, slots=True)
class Cleanup(PassBase):
    """Remove Identity nodes, nodes no output depends on, and unused tensors; sort topologically."""

    lossy: ClassVar[bool] = False

    remove_identity: bool = field(
        default=True, metadata={"help": "bypass Identity nodes that do not feed a graph output"}
    )
    fold_constants: bool = field(
        default=False, metadata={"help": "also let graphsurgeon fold constant subgraphs"}
    )

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Clean the graph with onnx-graphsurgeon; where it cannot, keep the model, with a note."""
        try:
            import onnx_graphsurgeon as gs
        except ImportError:
            raise MissingDependencyError("onnx-graphsurgeon", "core", "the cleanup pass") from None
        try:
            cleaned = self._clean(gs, model)
        # graphsurgeon raises its own exception class, and KeyError/IndexError/TypeError from
        # its importer, on graphs it does not follow (exporters' odd dtypes, subgraphs). Cleanup
        # is an optimisation: the build goes on with the input, and the report says why.
        except Exception as exc:  # noqa: BLE001
            text = str(exc).strip()
            message = (
                f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
            )
            log.warning("graphsurgeon failed, keeping the model as it was: %s", message)
            return PassResult(model, False, (f"cleanup failed, model kept as it was: {message}",))
        changed = graph_fingerprint(cleaned) != graph_fingerprint(model)
        return PassResult(cleaned, changed)

    def _clean(self, gs: Any, model: onnx.ModelProto) -> onnx.ModelProto:
        graph = gs.import_onnx(model)
        if self.remove_identity:
            outputs = {t.name for t in graph.outputs}
            for node in list(graph.nodes):
                if node.op != "Identity" or node.outputs[0].name in outputs:
                    continue
                source, produced = node.inputs[0], node.outputs[0]
                for consumer in list(produced.outputs):
                    for i, tensor in enumerate(consumer.inputs):
                        if tensor is produced:
                            consumer.inputs[i] = source
                node.outputs.clear()
        if self.fold_constants:
            graph.fold_constants()
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        cleaned: onnx.ModelProto = gs.export_onnx(graph, do_type_check=False)
        cleaned.ir_version = model.ir_version
        del cleaned.opset_import[:]
        cleaned.opset_import.extend(model.opset_import)
        for prop in model.metadata_props:
            cleaned.metadata_props.add().CopyFrom(prop)
        cleaned.producer_name = model.producer_name
        cleaned.producer_version = model.producer_version
        return cleaned
