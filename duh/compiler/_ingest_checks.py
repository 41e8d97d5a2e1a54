"""Ingest's checks against corrupt and hostile models, each ending in one ``ModelError``.

The ONNX checker validates structure; these cover what it leaves to later readers: external
data that leads out of the model's folder, weights whose bytes do not fill their dims or whose
data type does not exist, and fixed input sizes no feed could have (the build's check inputs
would try to allocate them).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from duh.errors import ModelError
from duh.runtime import TensorSpec

__all__ = ["check_initializers", "check_io_sizes", "refuse_outside"]

def refuse_outside(path: Path, location: str) -> None:
    """Refuse an external-data location that leaves the model's folder (``..``, absolute, links).

    A model names its weights' files; a hostile one names ``../../etc/shadow`` or a symlink out
    of its folder, and a reader that follows it hands another file's bytes on as weights.
    """
    folder = path.parent.resolve()
    pure = Path(location)
    resolved = (folder / pure).resolve()
    if not location or pure.is_absolute() or ".." in pure.parts or not resolved.is_relative_to(
        folder
    ):
        raise ModelError(
            f"{path.name} keeps weights at {location!r}, outside the model's folder "
            f"{str(folder)!r} (an absolute path, '..' or a symlink out of it); duh reads "
            "external data only from files inside that folder: put them beside the model"
        )


# Elements of one graph input or output with static dims: 2**31 float32s are 8 GiB, more than
# any one inference feed; sizes past it are a corrupt or hostile model, not a real one.
_MAX_IO_ELEMENTS = 2**31
# Fields holding one element per entry, by data type (the rest are packed or paired).
_ONE_PER_ENTRY = {
    onnx.TensorProto.FLOAT: "float_data",
    onnx.TensorProto.DOUBLE: "double_data",
    onnx.TensorProto.INT64: "int64_data",
    **{
        t: "int32_data"
        for t in (
            onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
            onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.BOOL,
            onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
        )
    },
}


def check_initializers(model: onnx.ModelProto, name: str) -> None:
    """Refuse weights whose data type is unknown or whose bytes do not fill their dims.

    The ONNX checker leaves both to whoever reads the tensor later (a reshape deep in a pass,
    a ``KeyError`` in a dtype table); here they are one error that names the tensor.
    """
    known = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    for init in model.graph.initializer:
        if init.data_type not in known:
            raise ModelError(
                f"{name}: weight {init.name!r} has data type {init.data_type}, which ONNX does "
                "not define; the model is corrupt: export it again"
            )
        if any(d < 0 for d in init.dims):
            raise ModelError(
                f"{name}: weight {init.name!r} has negative dims {list(init.dims)}; the model is "
                "corrupt: export it again"
            )
        if init.data_location == onnx.TensorProto.EXTERNAL or init.data_type in (
            onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED
        ):
            continue
        count = 1
        for d in init.dims:
            count *= int(d)
        bits = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize * 8
        if init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            bits = 4
        field = _ONE_PER_ENTRY.get(init.data_type)
        if init.HasField("raw_data"):
            have, want = len(init.raw_data), (count * bits + 7) // 8
        elif field is not None:
            have, want = len(getattr(init, field)), count
        else:
            continue
        if have != want:
            raise ModelError(
                f"{name}: weight {init.name!r} of dims {list(init.dims)} holds {have} "
                f"{'bytes' if init.HasField('raw_data') else 'values'}, its dims need {want}; "
                "the model is truncated or corrupt: export it again"
            )


def check_io_sizes(specs: tuple[TensorSpec, ...], name: str) -> None:
    """Refuse a graph input or output whose fixed dims hold more elements than any feed."""
    for spec in specs:
        count = 1
        for d in spec.shape:
            count *= d if isinstance(d, int) else 1
        if count > _MAX_IO_ELEMENTS:
            raise ModelError(
                f"{name}: input/output {spec.name!r} has fixed shape {list(spec.shape)} "
                f"({count} elements, more than {_MAX_IO_ELEMENTS}); no inference feed is that "
                "large: the model is corrupt, or export it with that dim dynamic"
            )
