"""Split a model between OpenVINO and ONNX Runtime when OpenVINO cannot convert some of its ops.

ONNX Runtime's OpenVINO execution provider runs the nodes OpenVINO supports on OpenVINO and the
rest on ONNX Runtime's CPU kernels, inside one session. duh does the same at build time: the
nodes that OpenVINO's ONNX frontend leaves unconverted (``convert_partially`` keeps them as
framework nodes; string ops such as StringNormalizer, some ``ai.onnx.ml`` ops) go to ONNX Runtime,
and the graph is cut into stages, each a self-contained ONNX model for one engine, run in order.

Only nodes of the main graph are placed: a framework node inside an If or Loop body is not
found here, and the conversion error stands.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from duh.targets._base import CompileContext, CompileResult
from duh.targets._util import save_onnx
from duh.targets.openvino._convert import check_inputs, compiled, convert

__all__ = ["Stage", "compile_stages", "split_stages", "stage_feeds", "unconvertible_nodes"]


OPENVINO = "openvino"
ONNXRUNTIME = "onnxruntime"
# A node name duh gives every node of the probe copy, so that a framework node maps back to it.
_TAG = "duh.partition."
# How the CPU plugin names an op it has no kernel for (Convert to string, say).
_NO_KERNEL = re.compile(r"Unsupported operation of type: (\S+) name: (\S+)")
# Each round moves one op the plugin cannot compile to ONNX Runtime; past this many, give up.
_MAX_ROUNDS = 16
# Saves an OpenVINO model as IR with its precision settings: (ov, model, ctx, feeds, xml path).
CompileIR = Callable[
    [Any, Any, CompileContext, Sequence[Mapping[str, Any]], Path],
    tuple[dict[str, Any], list[str]],
]


@dataclass(frozen=True, slots=True)
class Stage:
    """One engine's part of the model: an ONNX model whose inputs come from the feed or from
    earlier stages, and whose outputs are the model's outputs or later stages' inputs."""

    engine: str
    model: onnx.ModelProto
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def op_types(self) -> list[str]:
        """The distinct op types of the stage, in order of first use."""
        return list(dict.fromkeys(node.op_type for node in self.model.graph.node))


def unconvertible_nodes(model: onnx.ModelProto, scratch: Path) -> list[int]:
    """Indices of the main-graph nodes that OpenVINO's ONNX frontend cannot convert.

    Empty when it converts every node, or when the failure is not one of placing (it lies in a
    subgraph, or the frontend cannot even read the model partially).
    """
    from openvino.frontend import FrontEndManager

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    owner: dict[str, int] = {}
    for index, node in enumerate(probe.graph.node):
        node.name = f"{_TAG}{index}"
        owner[node.name] = index
        # The frontend names the node that feeds a graph output after that output.
        owner.update({out: index for out in node.output if out})
    written = save_onnx(probe, scratch)
    try:
        frontend = FrontEndManager().load_by_framework("onnx")
        partial = frontend.convert_partially(frontend.load(str(scratch)))
        names = [
            op.get_friendly_name()
            for op in partial.get_ordered_ops()
            if op.get_type_name().endswith("FrameworkNode")
        ]
    except Exception:  # noqa: BLE001 - OpenVINO's frontend raises untyped errors
        return []
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    found = {owner.get(name) for name in names}
    if None in found:  # a framework node duh cannot place (inside a body, or renamed)
        return []
    return sorted(i for i in found if i is not None)


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """The names a graph reads from its enclosing scope (used, not defined inside)."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    read: set[str] = set()
    for node in graph.node:
        read.update(name for name in _reads(node) if name not in defined)
        defined.update(node.output)
    read.update(v.name for v in graph.output if v.name not in defined)
    return read


def _reads(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads: its inputs and what its subgraphs take from the outer scope."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for body in bodies:
            names.extend(sorted(_subgraph_reads(body)))
    return names


def _stage_indices(nodes: Sequence[onnx.NodeProto], on_ort: set[int]) -> list[int]:
    """The stage of each node: even stages run on OpenVINO, odd ones on ONNX Runtime.

    A node goes to the earliest stage of its engine that comes no earlier than any producer's,
    and strictly later than a producer's of the other engine.
    """
    producer: dict[str, int] = {}
    stages: list[int] = []
    for index, node in enumerate(nodes):
        kind = 1 if index in on_ort else 0
        stage = 0
        for name in _reads(node):
            if name in producer:
                source = producer[name]
                stage = max(stage, stages[source] + (0 if (source in on_ort) == kind else 1))
        if stage % 2 != kind:
            stage += 1
        stages.append(stage)
        producer.update({out: index for out in node.output if out})
    return stages


def split_stages(model: onnx.ModelProto, on_ort: Iterable[int]) -> list[Stage] | None:
    """The model cut into stages, ONNX Runtime running the nodes ``on_ort``; None when the cut
    would need a tensor whose type shape inference cannot tell (a stage's input or output)."""
    graph = model.graph
    if graph.sparse_initializer:
        return None
    placed = set(on_ort)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v for v in [*inferred.graph.value_info, *graph.input, *graph.output]}
    weights = {t.name: t for t in graph.initializer}
    feed_names = {v.name for v in graph.input if v.name not in weights}
    stage_of = _stage_indices(graph.node, placed)
    order = sorted(set(stage_of))
    produced_in = {
        out: stage_of[i] for i, node in enumerate(graph.node) for out in node.output if out
    }
    wanted_later: dict[str, int] = {}  # tensor -> the last stage that reads it
    for i, node in enumerate(graph.node):
        for name in _reads(node):
            wanted_later[name] = max(wanted_later.get(name, -1), stage_of[i])
    final = {v.name for v in graph.output}
    if any(name not in produced_in and name not in feed_names for name in final):
        return None  # an output that is a weight: no stage would hold it
    stages: list[Stage] = []
    for number in order:
        members = [node for i, node in enumerate(graph.node) if stage_of[i] == number]
        reads = list(dict.fromkeys(name for node in members for name in _reads(node)))
        own = {out for node in members for out in node.output if out}
        inputs = [n for n in reads if n not in own and n not in weights]
        outputs = [
            out
            for node in members
            for out in node.output
            if out and (out in final or wanted_later.get(out, -1) > number)
        ]
        boundary = [*inputs, *outputs]
        if any(
            name not in types or not types[name].type.HasField("tensor_type") for name in boundary
        ):
            return None
        sub = onnx.helper.make_graph(
            members,
            f"{graph.name}_stage{len(stages)}",
            [types[n] for n in inputs],
            [types[n] for n in outputs],
            initializer=[weights[n] for n in reads if n in weights and n not in own],
            value_info=[
                v for v in inferred.graph.value_info if v.name in own and v.name not in outputs
            ],
        )
        stage_model = onnx.helper.make_model(
            sub, opset_imports=list(model.opset_import), ir_version=model.ir_version
        )
        stage_model.functions.extend(model.functions)
        engine = ONNXRUNTIME if number % 2 else OPENVINO
        stages.append(Stage(engine, stage_model, tuple(inputs), tuple(outputs)))
    return stages


def stage_feeds(
    stages: Sequence[Stage], feeds: Sequence[dict[str, Any]]
) -> list[list[dict[str, Any]]]:
    """Each stage's inputs for each feed, computed by ONNX Runtime running the stages in order
    (the float32 reference); empty lists when ONNX Runtime cannot run them."""
    import onnxruntime as ort

    per_stage: list[list[dict[str, Any]]] = [[] for _ in stages]
    sessions = []
    try:
        for stage in stages:
            so = ort.SessionOptions()
            so.log_severity_level = 4
            sessions.append(ort.InferenceSession(stage.model.SerializeToString(), so))
        for feed in feeds:
            values = dict(feed)
            for index, (stage, session) in enumerate(zip(stages, sessions, strict=True)):
                inputs = {name: values[name] for name in stage.inputs}
                per_stage[index].append(inputs)
                results = session.run(list(stage.outputs), inputs)
                values.update(zip(stage.outputs, results, strict=True))
    except Exception:  # noqa: BLE001 - ORT's errors are untyped; the stages then go unmeasured
        return [[] for _ in stages]
    return per_stage


def _owners(model: onnx.ModelProto) -> dict[str, int]:
    """Main-graph node indices by the names OpenVINO gives ops: a node's own, or its outputs'."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.name] = counts.get(node.name, 0) + 1
    owner = {n.name: i for i, n in enumerate(model.graph.node) if n.name and counts[n.name] == 1}
    owner.update({out: i for i, n in enumerate(model.graph.node) for out in n.output if out})
    return owner


def _without_kernel(ov: Any, converted: Any) -> str | None:
    """The name of an op the CPU plugin has no kernel for, or None when the model compiles."""
    try:
        ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as exc:
        found = _NO_KERNEL.search(str(exc))
        if found is None:
            raise
        return found.group(2)
    return None


def _plan(ov: Any, model: onnx.ModelProto, scratch: Path) -> list[tuple[Stage, Any]] | None:
    """The stages and each OpenVINO stage's converted model, or None when no main-graph node
    is to blame for the failure: the frontend's framework nodes go to ONNX Runtime first, then,
    one per round, the ops the CPU plugin has no kernel for."""
    placed = set(unconvertible_nodes(model, scratch.with_name(scratch.name + ".probe.onnx")))
    if not placed:
        return None
    owner = _owners(model)
    for _ in range(_MAX_ROUNDS):
        stages = split_stages(model, placed)
        if stages is None:
            return None
        planned: list[tuple[Stage, Any]] = []
        for stage in stages:
            converted = None
            if stage.engine == OPENVINO:
                converted, _ = convert(ov, stage.model, scratch)
                check_inputs(converted, stage.model)
                blocked = _without_kernel(ov, converted)
                if blocked is not None:
                    if owner.get(blocked) is None or owner[blocked] in placed:
                        return None
                    placed.add(owner[blocked])
                    break
            planned.append((stage, converted))
        else:
            return planned
    return None


def compile_stages(
    ov: Any, model: onnx.ModelProto, ctx: CompileContext, out_dir: Path, compile_ir: CompileIR
) -> CompileResult | None:
    """Write the model in stages (IR for OpenVINO's, ONNX for ONNX Runtime's) and the stage
    list, or None when no main-graph node is to blame (the conversion error then stands)."""
    scratch = out_dir.parent / (out_dir.name + ".stage")
    planned = _plan(ov, model, scratch)
    if planned is None:
        return None
    stages = [stage for stage, _ in planned]
    feeds = stage_feeds(stages, [dict(f) for f in ctx.check_feeds])
    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    for index, (stage, converted) in enumerate(planned):
        entry: dict[str, Any] = {"engine": stage.engine}
        if converted is None:
            entry["model"] = f"stage{index}.onnx"
            save_onnx(stage.model, out_dir / entry["model"])
        else:
            entry["model"] = f"stage{index}.xml"
            config, stage_notes = compile_ir(
                ov, converted, ctx, feeds[index], out_dir / entry["model"]
            )
            entry.update(config)
            notes.extend(f"stage {index}: {note}" for note in stage_notes)
        entries.append({**entry, "inputs": list(stage.inputs), "outputs": list(stage.outputs)})
    on_ort = [s for s in stages if s.engine == ONNXRUNTIME]
    count = sum(len(s.model.graph.node) for s in on_ort)
    total = len(model.graph.node)
    kinds = ", ".join(dict.fromkeys(t for s in on_ort for t in s.op_types))
    if count == total:
        notes.insert(
            0,
            f"openvino runs none of the model's {total} ops ({kinds}): the whole "
            "model runs on ONNX Runtime",
        )
    else:
        notes.insert(
            0,
            f"openvino cannot run {count} of the model's {total} ops ({kinds}): "
            f"they run on ONNX Runtime and the rest on OpenVINO, in {len(stages)} stages "
            "(engine_config.stages)",
        )
    return compiled(ov, {"stages": entries}, notes)
