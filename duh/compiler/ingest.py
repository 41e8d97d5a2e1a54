"""Ingest: read an ONNX model, check it, infer shapes, and normalize it for an engine."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from duh.compiler._ingest_checks import check_initializers, check_io_sizes, refuse_outside
from duh.compiler._mlops import UnzippedOutput, unzip_outputs
from duh.compiler._pinned import pin_weight_dims
from duh.errors import ModelError
from duh.runtime import Dim, TensorSpec

__all__ = [
    "KNOWN_DOMAINS",
    "SourceModel",
    "default_opset",
    "ingest",
    "model_signature",
    "normalize_for_engine",
]

log = logging.getLogger(__name__)

# Operator domains some engine of duh's runs. A node from any other domain is a custom op.
KNOWN_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}
)
_MIN_OPSET = 7


@dataclass(frozen=True, slots=True)
class SourceModel:
    """A checked source model and what was learned about it."""

    model: onnx.ModelProto
    path: Path
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    ir_version: int
    external_data: tuple[str, ...]
    unzipped: tuple[UnzippedOutput, ...] = ()  # ZipMap outputs now served as matrices


def default_opset(model: onnx.ModelProto) -> int:
    """The model's ai.onnx opset version (0 when it imports none)."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _dtype(elem_type: int) -> str:
    if elem_type == onnx.TensorProto.STRING:
        return "object"
    if elem_type == onnx.TensorProto.BFLOAT16:
        return "bfloat16"
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


def _kind(value_type: onnx.TypeProto) -> str:
    """A value type as a user reads it: ``sequence<map<int64, tensor(float)>>``."""
    which = value_type.WhichOneof("value")
    if which == "sequence_type":
        return f"sequence<{_kind(value_type.sequence_type.elem_type)}>"
    if which == "map_type":
        key = onnx.TensorProto.DataType.Name(value_type.map_type.key_type).lower()
        return f"map<{key}, {_kind(value_type.map_type.value_type)}>"
    if which == "tensor_type" and value_type.tensor_type.elem_type:
        return f"tensor({onnx.TensorProto.DataType.Name(value_type.tensor_type.elem_type).lower()})"
    return which.removesuffix("_type") if which else "untyped"


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.elem_type:
        # e.g. ZipMap's sequence<map<...>>: the runtime and the artifact's signature are tensors
        raise ModelError(
            f"graph input/output {value.name!r} is a {_kind(value.type)}, not a typed tensor; duh "
            "compiles models whose inputs and outputs are tensors: re-export without ZipMap "
            "(skl2onnx: options={'zipmap': False}) or make that value a tensor"
        )
    tensor = value.type.tensor_type
    if tensor.elem_type not in onnx.TensorProto.DataType.values():
        raise ModelError(
            f"graph input/output {value.name!r} has element type {tensor.elem_type}, which ONNX "
            "does not define; the model is corrupt: export it again"
        )
    dims: list[Dim] = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and _is_name(d.dim_param):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorSpec(value.name, _dtype(tensor.elem_type), tuple(dims))


def _is_name(dim_param: str) -> bool:
    """Whether a dim_param names a dimension ("batch"), rather than marking it unknown ("?")."""
    return any(c.isalnum() for c in dim_param)


def _dedupe_opsets(model: onnx.ModelProto) -> int:
    """Drop opset imports that repeat an earlier (domain, version); return how many."""
    seen: set[tuple[str, int]] = set()
    keep = []
    for entry in model.opset_import:
        key = ("" if entry.domain == "ai.onnx" else entry.domain, int(entry.version))
        if key not in seen:
            seen.add(key)
            keep.append(entry)
    dropped = len(model.opset_import) - len(keep)
    if dropped:
        kept = [onnx.helper.make_opsetid(e.domain, e.version) for e in keep]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return dropped


def _clear_unknown_dims(model: onnx.ModelProto) -> int:
    """Make dims written as ``-1``/``0`` or named ``?`` plain unknowns; return how many.

    Exporters (paddle2onnx) write a dynamic size as ``dim_value: -1`` and others as
    ``dim_param: "?"``: the first reads as a fixed size of -1, the second as one name that every
    such axis would have to share.
    """
    cleared = 0
    graph = model.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        if not value.type.HasField("tensor_type"):
            continue
        for d in value.type.tensor_type.shape.dim:
            value_unknown = d.HasField("dim_value") and d.dim_value <= 0
            if value_unknown or (d.HasField("dim_param") and not _is_name(d.dim_param)):
                d.Clear()
                cleared += 1
    return cleared


def model_signature(
    model: onnx.ModelProto,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Graph inputs (initializers excluded) and outputs as TensorSpecs."""
    weights = {init.name for init in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in weights)
    outputs = tuple(_spec(v) for v in model.graph.output)
    return inputs, outputs


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _external_files(model: onnx.ModelProto) -> list[str]:
    files = []
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            files.append(info.get("location", ""))
    return sorted(set(files))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _declare_missing_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], filename: str
) -> None:
    """Give the graph's inputs and outputs that declare no shape at all (not even a rank) one.

    The ONNX checker wants a shape on every graph input and output, and ONNX Runtime runs a
    model without: onnx-graphsurgeon and hand-built graphs leave outputs shapeless. An output
    takes the shape inference gives it; an input takes its rank from ``--shape``, else the build
    asks for it (no synthetic input can be made without a rank).
    """
    weights = {init.name for init in model.graph.initializer}

    def shapeless(v: onnx.ValueInfoProto) -> bool:
        return v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")

    for value in model.graph.input:
        if value.name in weights or not shapeless(value):
            continue
        if value.name not in shapes:
            raise ModelError(
                f"{filename}: input {value.name!r} declares no shape, not even its rank; give "
                f"it with --shape {value.name}=AxBxC (the sizes the model runs on)"
            )
        for _ in shapes[value.name]:
            value.type.tensor_type.shape.dim.add()  # unknown sizes: --shape fills them in
    missing = [v for v in model.graph.output if shapeless(v)]
    # paddle2onnx declares outputs it knows nothing of as scalars (rank 0, no dims)
    scalars = [
        v for v in model.graph.output
        if v.type.HasField("tensor_type") and not shapeless(v) and not v.type.tensor_type.shape.dim
    ]  # fmt: skip
    if not missing and not scalars:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared_scalar = {v.name for v in scalars}
    for value in probe.graph.output:
        if value.name in declared_scalar:
            value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(probe)
    except (onnx.shape_inference.InferenceError, RuntimeError):
        inferred = probe
    found = {v.name: v for v in inferred.graph.output if not shapeless(v)}
    for value in scalars:
        shape = found[value.name].type.tensor_type.shape if value.name in found else None
        if shape is not None and shape.dim:
            log.info("%s: output %s is declared a scalar but has rank %d: the inferred shape "
                     "is kept", filename, value.name, len(shape.dim))  # fmt: skip
            value.type.tensor_type.shape.CopyFrom(shape)
    unknown = [v.name for v in missing if v.name not in found]
    if unknown:
        raise ModelError(
            f"{filename}: output {unknown[0]!r} declares no shape and shape inference finds none "
            "(not even its rank); export the model with its outputs' shapes declared"
        )
    for value in missing:
        value.type.tensor_type.shape.CopyFrom(found[value.name].type.tensor_type.shape)


def _fix_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> None:
    by_name = {v.name: v for v in model.graph.input}
    for name, shape in shapes.items():
        if name not in by_name:
            raise ModelError(
                f"--shape names input {name!r}, but the model's inputs are "
                f"{', '.join(by_name)}; use one of those names"
            )
        dims = by_name[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ModelError(
                f"--shape {name}={'x'.join(map(str, shape))} has rank {len(shape)}, "
                f"but input {name!r} has rank {len(dims)}"
            )
        for dim, size in zip(dims, shape, strict=True):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise ModelError(
                    f"--shape {name}: dimension fixed at {dim.dim_value} in the model, got {size}"
                )
            dim.Clear()
            dim.dim_value = size


def _copy_if_branching(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of a model with control flow (If/Loop/Scan) of loadable size, else None."""
    if model.ByteSize() >= 2**31 - 1 or not any(
        n.op_type in ("If", "Loop", "Scan") for n in model.graph.node
    ):
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _ort_load_error(model: onnx.ModelProto) -> str | None:
    """Why ONNX Runtime refuses to load ``model`` (its optimizer infers every branch), or None."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    options = ort.SessionOptions()
    options.log_severity_level = 3
    refusals = (state.Fail, state.InvalidGraph, state.InvalidArgument, state.NotImplemented)
    try:
        ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    except refusals as exc:
        return _first_line(exc).split("FAIL : ", 1)[-1]
    return None


def _refuse_shapes_that_break_branches(
    model: onnx.ModelProto,
    unfixed: onnx.ModelProto,
    shapes: Mapping[str, tuple[int, ...]],
    name: str,
) -> None:
    """Refuse ``--shape`` sizes that leave a branch of the graph invalid.

    Branches compute shapes from input sizes (silero-vad: one per sample rate, each valid for
    its own window length). Once a size is fixed, ONNX Runtime's optimizer folds the size tests
    inside a branch the inputs never take at that size, infers it, and refuses the whole model
    when that branch is invalid there; onnx's own shape inference says nothing. Left dynamic,
    the same model loads.
    """
    reason = _ort_load_error(model)
    if reason is None or _ort_load_error(unfixed) is not None:
        return
    given = " ".join(f"{n}={'x'.join(map(str, s))}" for n, s in shapes.items())
    raise ModelError(
        f"{name}: with --shape {given}, ONNX Runtime cannot load the model ({reason}): a "
        "branch of its If/Loop the inputs do not take at these sizes becomes invalid; build "
        "without --shape (the dims stay dynamic)"
    )


def ingest(path: str | Path, shapes: Mapping[str, tuple[int, ...]] | None = None) -> SourceModel:
    """Read, check and shape-infer the model at ``path``; ``shapes`` fixes dynamic input dims."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise ModelError(f"{str(path)!r} is a directory; pass the .onnx file")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(
            f"{path.name} is not a readable ONNX model ({_first_line(exc)}); the file is "
            "truncated, corrupt or of another format: export it again as .onnx"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(
            f"{path.name} parses as an empty ONNX model (no nodes, no outputs); it is not an "
            "ONNX model or it is truncated: export it again"
        )
    if not model.opset_import:
        raise ModelError(f"{path.name} imports no opset; it is not a valid ONNX model")
    if _dedupe_opsets(model):
        # skl2onnx writes the default domain twice; onnxruntime's quantizer refuses that
        log.info("%s: opset imports listed twice are listed once", path.name)
    external = _external_files(model)
    for location in external:
        refuse_outside(path, location)
        if not (path.parent / location).is_file():
            raise ModelError(
                f"{path.name} keeps weights in external file {location!r}, which is not in "
                f"{path.parent}; put it beside the model"
            )
    if external:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelError(
                f"external data of {path.name} cannot be read: {_first_line(exc)}; the data "
                "file is truncated or does not belong to this model"
            ) from None
    check_initializers(model, path.name)
    unknown = sorted({n.domain for n in model.graph.node if n.domain not in KNOWN_DOMAINS})
    if unknown:
        ops = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain in unknown})
        raise ModelError(
            f"{path.name} uses custom operators no duh engine runs: {', '.join(ops)}; export the "
            "model with standard ONNX operators"
        )
    unzipped = unzip_outputs(model)
    _declare_missing_shapes(model, shapes or {}, path.name)
    opset = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelError(
            f"{path.name} uses opset {opset}, newer than the {newest} this onnx "
            f"{onnx.__version__} knows; export the model with opset {newest} or older, or "
            "upgrade onnx"
        )
    if opset and opset < _MIN_OPSET:
        model = _convert_opset(model, 13, path.name)
    if model.ir_version < 4:
        # IR 3 wants every initializer listed as a graph input; passes that turn weights into
        # constants drop them from the inputs, which is valid from IR 4 on (same meaning else).
        model.ir_version = 4
    if _clear_unknown_dims(model):
        log.info("%s: dimensions written as -1 or '?' are dynamic", path.name)
    for pin in pin_weight_dims(model):
        log.info("%s: %s", path.name, pin.describe())
    if shapes:
        unfixed = _copy_if_branching(model)
        _fix_shapes(model, shapes)
        if unfixed is not None:
            _refuse_shapes_that_break_branches(model, unfixed, shapes, path.name)
    try:
        if model.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"{path.name} fails the ONNX checker: {_first_line(exc)}") from None
    except UnicodeDecodeError as exc:  # protobuf's Python parser leaves strings unchecked
        raise ModelError(
            f"{path.name} holds a name or string that is not valid UTF-8 ({exc.reason} at byte "
            f"{exc.start}); the file is corrupt: export the model again"
        ) from None
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        log.warning("shape inference failed on %s, going on without it: %s", path.name, exc)
        inferred = model
    inputs, outputs = model_signature(inferred)
    check_io_sizes(inputs + outputs, path.name)
    return SourceModel(
        model=inferred,
        path=path,
        sha256=_sha256(path),
        inputs=inputs,
        outputs=outputs,
        opset=opset,
        ir_version=int(model.ir_version),
        external_data=tuple(external),
        unzipped=unzipped,
    )


def _convert_opset(model: onnx.ModelProto, version: int, name: str) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, version)
        converted.ir_version = max(converted.ir_version, _min_ir_for_opset(version))
        return converted
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
        direction = "or newer" if version > default_opset(model) else "or older"
        raise ModelError(
            f"{name} uses opset {default_opset(model)}, and converting it to opset {version} "
            f"failed ({_first_line(exc)}); export the model with opset {version} {direction}"
        ) from None


def _min_ir_for_opset(opset: int) -> int:
    for _release, ir, ai_onnx, *_rest in onnx.helper.VERSION_TABLE:
        if ai_onnx >= opset:
            return int(ir)
    return int(onnx.IR_VERSION)


def normalize_for_engine(
    model: onnx.ModelProto, engine: str, max_opset: int, max_ir_version: int
) -> onnx.ModelProto:
    """Bring the opset and IR version within what ``engine`` accepts (converting the opset)."""
    opset = default_opset(model)
    if opset > max_opset:
        log.info("converting opset %d to %d for %s", opset, max_opset, engine)
        model = _convert_opset(model, max_opset, f"the model (for {engine})")
        opset = max_opset
    needed = _min_ir_for_opset(opset)
    if needed > max_ir_version:
        # The opset needs a newer IR than the engine reads: convert it down to the newest
        # opset that IR holds (an opset-23 export for an engine that reads IR 10: opset 22).
        fits = _max_opset_for_ir(max_ir_version)
        log.info(
            "converting opset %d to %d: %s reads ONNX IR up to %d", opset, fits, engine,
            max_ir_version,
        )  # fmt: skip
        model = _convert_opset(
            model, fits, f"the model (for {engine}, which reads ONNX IR up to {max_ir_version})"
        )
        opset, needed = fits, _min_ir_for_opset(fits)
    if model.ir_version > max_ir_version:
        model.ir_version = max(needed, min(model.ir_version, max_ir_version))
    return model


def _max_opset_for_ir(ir_version: int) -> int:
    """The newest default-domain opset that ONNX IR ``ir_version`` holds."""
    return max(
        int(ai_onnx)
        for _release, ir, ai_onnx, *_rest in onnx.helper.VERSION_TABLE
        if int(ir) <= ir_version
    )
