"""Mutations of real ONNX models for the ingest fuzzer: each writes one hostile case folder.

A case folder holds ``model/`` (the mutated ``model.onnx`` and whatever files it names) and,
beside it, ``secret.bin``: a file outside the model's folder that a mutation points the model's
external data at (``..`` paths, absolute paths, symlinks). Reading it is a failure of the case,
whatever duh answers. ``secret.bin`` holds float32 bytes, so a reader that does not check where
a path leads would load it as weights without complaint.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

__all__ = ["KINDS", "SECRET_NAME", "Mutation", "mutate"]

SECRET_NAME = "secret.bin"
_SECRET_BYTES = 1 << 20
_HUGE = (2**31, 2**40, 2**62, 2**63 - 1)
_ODD = (-(2**63), -(2**31), -2, -1, 0, 1, 2**31 - 1, *_HUGE)


@dataclass(frozen=True, slots=True)
class Mutation:
    """What a mutation did to its seed model, as the report shows it."""

    kind: str
    detail: str


def _load(seed: Path) -> onnx.ModelProto:
    """The seed with its external data inside (so mutations can move it around)."""
    return onnx.load_model(str(seed), load_external_data=True)


def _save(model: onnx.ModelProto, folder: Path) -> None:
    (folder / "model.onnx").write_bytes(model.SerializeToString())


def _seed_bytes(seed: Path) -> bytes:
    """The seed's bytes as one file (external data folded in, so the bytes stand alone)."""
    return _load(seed).SerializeToString()


def _point_external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make ``tensor`` say its bytes are at ``location`` (any path, unchecked: that is the test)."""
    for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                 "uint64_data", "string_data", "external_data"):
        tensor.ClearField(name)
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _bitflip(rng: random.Random, seed: Path, folder: Path) -> str:
    data = bytearray(_seed_bytes(seed))
    flips = rng.choice((1, 2, 4, 8, 32))
    for _ in range(flips):
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
    (folder / "model.onnx").write_bytes(bytes(data))
    return f"{flips} bit(s) flipped in {len(data)} bytes"


def _truncate(rng: random.Random, seed: Path, folder: Path) -> str:
    data = _seed_bytes(seed)
    # Classes of cut: nothing, inside the header, anywhere, just short of the end.
    where = rng.choice(("empty", "header", "random", "random", "tail"))
    cut = {
        "empty": 0,
        "header": rng.randrange(1, min(64, len(data))),
        "random": rng.randrange(len(data)),
        "tail": len(data) - rng.randrange(1, min(16, len(data))),
    }[where]
    (folder / "model.onnx").write_bytes(data[:cut])
    return f"cut at byte {cut} of {len(data)} ({where})"


def _splice(rng: random.Random, seed: Path, folder: Path) -> str:
    data = bytearray(_seed_bytes(seed))
    start = rng.randrange(len(data))
    size = rng.choice((1, 4, 16, 256))
    how = rng.choice(("random", "0xff", "duplicate"))
    if how == "random":
        data[start : start + size] = rng.randbytes(size)
    elif how == "0xff":
        data[start : start + size] = b"\xff" * size
    else:
        data[start:start] = data[start : start + size]
    (folder / "model.onnx").write_bytes(bytes(data))
    return f"{how} bytes over {size} at {start}"


def _field_edit(rng: random.Random, seed: Path, folder: Path) -> str:
    model = _load(seed)
    graph = model.graph
    edits: list[Callable[[], str]] = []

    def input_dim() -> str:
        value = rng.choice(list(graph.input))
        dims = value.type.tensor_type.shape.dim
        if not dims:
            value.type.tensor_type.shape.dim.add().dim_value = 1
        d = rng.choice(list(value.type.tensor_type.shape.dim))
        d.dim_value = rng.choice(_ODD)
        return f"input {value.name!r} dim set to {d.dim_value}"

    def elem_type() -> str:
        value = rng.choice([*graph.input, *graph.output])
        value.type.tensor_type.elem_type = rng.choice((0, 8, 17, 23, 25, 99, 2**31 - 1))
        return f"{value.name!r} elem_type {value.type.tensor_type.elem_type}"

    def op_type() -> str:
        node = rng.choice(list(graph.node))
        node.op_type = rng.choice(("", "NoSuchOp", "If", "Loop", node.op_type.lower()))
        return f"node {node.name!r} op_type {node.op_type!r}"

    def node_input() -> str:
        node = rng.choice([n for n in graph.node if n.input] or list(graph.node))
        if node.input:
            node.input[rng.randrange(len(node.input))] = rng.choice(("", "missing", "x" * 5000))
        else:
            node.input.append("missing")
        return f"node {node.name!r} input renamed"

    def attribute() -> str:
        nodes = [n for n in graph.node if n.attribute]
        if not nodes:
            return op_type()
        attr = rng.choice(list(rng.choice(nodes).attribute))
        if attr.type == onnx.AttributeProto.INT:
            attr.i = rng.choice(_ODD)
        elif attr.type == onnx.AttributeProto.INTS:
            attr.ints[:] = [rng.choice(_ODD) for _ in range(max(1, len(attr.ints)))]
        elif attr.type == onnx.AttributeProto.FLOAT:
            attr.f = rng.choice((float("nan"), float("inf"), -1e38))
        else:
            attr.type = onnx.AttributeProto.UNDEFINED
        return f"attribute {attr.name!r} edited"

    def versions() -> str:
        if rng.random() < 0.5:
            model.ir_version = rng.choice((0, 1, 2, 99, 2**62))
            return f"ir_version {model.ir_version}"
        model.opset_import[0].version = rng.choice((0, 1, 6, 99, 2**62))
        return f"opset {model.opset_import[0].version}"

    def initializer() -> str:
        if not graph.initializer:
            return input_dim()
        init = rng.choice(list(graph.initializer))
        if rng.random() < 0.5:
            init.dims[:] = [rng.choice(_ODD) for _ in range(rng.randrange(1, 4))]
            return f"initializer {init.name!r} dims {list(init.dims)}"
        init.data_type = rng.choice((0, 8, 16, 23, 99))
        return f"initializer {init.name!r} data_type {init.data_type}"

    def drop() -> str:
        what = rng.choice(("output", "node", "initializer"))
        items = {"output": graph.output, "node": graph.node, "initializer": graph.initializer}
        field = items[what]
        if field:
            del field[rng.randrange(len(field))]
        return f"one {what} removed"

    edits = [input_dim, elem_type, op_type, node_input, attribute, versions, initializer, drop]
    text = rng.choice(edits)()
    _save(model, folder)
    return text


def _cycle(rng: random.Random, seed: Path, folder: Path) -> str:
    model = _load(seed)
    nodes = list(model.graph.node)
    later = rng.randrange(len(nodes))
    earlier = rng.randrange(later + 1)
    if not nodes[earlier].input or not nodes[later].output:
        nodes[earlier].input.append(nodes[later].output[0] if nodes[later].output else "x")
    else:
        nodes[earlier].input[0] = nodes[later].output[0]
    _save(model, folder)
    return f"node {earlier} reads the output of node {later}"


def _huge_tensor(rng: random.Random, seed: Path, folder: Path) -> str:
    model = _load(seed)
    dims = [rng.choice(_HUGE), rng.choice((1, 2**20, 2**31))]
    how = rng.choice(("raw", "external", "constant"))
    tensor = onnx.TensorProto(name="duh_fuzz_huge", data_type=onnx.TensorProto.FLOAT, dims=dims)
    if how == "raw":
        tensor.raw_data = b"\0" * 16
    elif how == "external":
        (folder / "huge.bin").write_bytes(b"\0" * 64)
        _point_external(
            tensor, "huge.bin", offset=rng.choice((0, 2**40)), length=rng.choice((2**40, 2**62))
        )
    if how == "constant":
        node = onnx.helper.make_node("Constant", [], ["duh_fuzz_huge"], value=tensor)
        model.graph.node.insert(0, node)
    else:
        model.graph.initializer.append(tensor)
    if model.graph.node and model.graph.node[-1].input:
        model.graph.node[-1].input.append("duh_fuzz_huge")
    _save(model, folder)
    return f"{how} tensor of dims {dims}"


def _external_path(rng: random.Random, seed: Path, folder: Path) -> str:
    model = _load(seed)
    secret = (folder.parent / SECRET_NAME).resolve()
    inits = list(model.graph.initializer) or [None]
    init = rng.choice(inits)
    if init is None:
        return _huge_tensor(rng, seed, folder)
    how = rng.choice(("dotdot", "absolute", "nested-dotdot", "symlink-file", "symlink-dir"))
    location = {
        "dotdot": f"../{SECRET_NAME}",
        "absolute": str(secret),
        "nested-dotdot": f"sub/../../{SECRET_NAME}",
        "symlink-file": "weights.bin",
        "symlink-dir": f"linked/{SECRET_NAME}",
    }[how]
    if how == "nested-dotdot":
        (folder / "sub").mkdir()
    elif how == "symlink-file":
        os.symlink(secret, folder / "weights.bin")
    elif how == "symlink-dir":
        os.symlink(folder.parent, folder / "linked")
    count = 1
    for d in init.dims:
        count *= max(int(d), 0)
    nbytes = count * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    _point_external(init, location, offset=0, length=min(nbytes, _SECRET_BYTES))
    _save(model, folder)
    return f"initializer {init.name!r} at {location!r} ({how})"


_MUTATORS: dict[str, Callable[[random.Random, Path, Path], str]] = {
    "bitflip": _bitflip,
    "truncate": _truncate,
    "splice": _splice,
    "field": _field_edit,
    "cycle": _cycle,
    "huge": _huge_tensor,
    "path": _external_path,
}
KINDS = tuple(_MUTATORS)


def mutate(kind: str, rng: random.Random, seed: Path, case_dir: Path) -> Mutation:
    """Write case ``case_dir`` (``model/model.onnx`` and ``secret.bin``) mutated from ``seed``."""
    folder = case_dir / "model"
    folder.mkdir(parents=True)
    (case_dir / SECRET_NAME).write_bytes(random.Random(0).randbytes(_SECRET_BYTES))
    return Mutation(kind, _MUTATORS[kind](rng, seed, folder))
