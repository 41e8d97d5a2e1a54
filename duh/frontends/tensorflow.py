"""TensorFlow and Keras into ONNX: SavedModel directories, ``.keras`` and ``.h5`` files (tf2onnx).

A SavedModel is a graph: loading it runs no Python from the file. A Keras file is a config that
Keras turns back into objects; Keras' ``safe_mode`` refuses the parts that are Python code
(``Lambda`` layers holding a lambda's bytecode), and duh loads with ``safe_mode`` on unless the
user passes ``--trust-code``. Custom layer classes are never imported from anywhere.

A Keras model is exported to a SavedModel first (``model.export``), so both forms take the same
way: tf2onnx converts the serving signature, whose input and output names (``output_0``, ...)
become the ONNX names, the batch axis kept dynamic. The reference runs the Keras model itself,
or the SavedModel's signature, on the same inputs.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import zipfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from duh.errors import ConfigError, MissingDependencyError, ModelError
from duh.frontends._base import Exported, Frontend, FrontendOptions, Reference, frontend

__all__ = ["TENSORFLOW"]

_KERAS = (".keras",)
_HDF5 = (".h5", ".hdf5")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_DEFAULT_OPSET = 17
_SIGNATURE = "serving_default"
# TF's errors while reading a model: the file, not duh, is at fault.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, KeyError, OSError, AttributeError, IndexError
)


def _claims(path: str) -> bool:
    p = Path(path)
    if p.suffix.lower() in _KERAS + _HDF5:
        return True
    return p.is_dir() and any((p / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt"))


def _need(module: str, what: str) -> Any:
    # TF's C++ start-up logs (CPU features, oneDNN) are noise for a build: keep warnings only.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module.split(".")[0], "tf", what) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _check_keras_file(file: Path) -> None:
    """A truncated or foreign file gets its own error before Keras reads it."""
    if file.suffix.lower() in _KERAS:
        ok = zipfile.is_zipfile(file)
        kind = "a zip archive"
    else:
        with file.open("rb") as stream:
            ok = stream.read(len(_HDF5_MAGIC)) == _HDF5_MAGIC
        kind = "an HDF5 file"
    if not ok:
        raise ModelError(
            f"{file.name} is not a readable Keras file (not {kind}); the file is truncated, "
            "corrupt or of another format: save it again with model.save"
        )


def _load_keras(file: Path, options: FrontendOptions) -> Any:
    keras = _need("keras", "Keras models")
    _check_keras_file(file)
    try:
        return keras.saving.load_model(file, compile=False, safe_mode=not options.trust_code)
    except _READ_ERRORS as exc:
        if "safe_mode" in str(exc):
            raise ConfigError(
                f"{file} holds Python code (a Lambda layer's function): loading it runs code "
                "from the file; build it only if you trust where it came from, with --trust-code"
            ) from None
        raise ModelError(
            f"Keras cannot load {file.name} ({_first_line(exc)}); a model with custom layers "
            "needs them rewritten as built-in layers, or exported to a SavedModel or ONNX"
        ) from None


def _convert(saved: Path, options: FrontendOptions) -> tuple[onnx.ModelProto, list[str]]:
    """tf2onnx on the serving signature; returns the model and the signature's input names."""
    tf2onnx = _need("tf2onnx", "TensorFlow models")
    from tf2onnx import tf_loader

    opset = options.opset or _DEFAULT_OPSET
    try:
        graph, inputs, outputs, _tables, renames = tf_loader.from_saved_model(
            str(saved), None, None, None, [_SIGNATURE], None, False,
            return_initialized_tables=True, return_tensors_to_rename=True,
        )
    except _READ_ERRORS as exc:
        raise ModelError(
            f"tf2onnx cannot read the SavedModel {saved.name} ({_first_line(exc)}); it needs a "
            f"{_SIGNATURE!r} signature"
        ) from None
    by_onnx = {v: k for k, v in renames.items()}
    shape_override = {by_onnx[n]: list(s) for n, s in options.shapes.items() if n in by_onnx}
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph, input_names=inputs, output_names=outputs, opset=opset,
            tensors_to_rename=renames, shape_override=shape_override or None,
        )
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise ModelError(
            f"tf2onnx cannot convert {saved.name} to ONNX opset {opset} ({_first_line(exc)})"
        ) from None
    _name_batch_axis(model)
    return model, [renames.get(n, n) for n in inputs]


def _name_batch_axis(model: onnx.ModelProto) -> None:
    """tf2onnx names an unknown leading axis ``unk__N``, one per tensor: they are the batch."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param.startswith("unk__"):
            dims[0].dim_param = "batch"


def _keras_reference(model: Any, tf: Any, onnx_model: onnx.ModelProto) -> Reference:
    names = [t.name.split(":")[0] for t in model.inputs]
    onnx_outputs = [o.name for o in onnx_model.graph.output]
    # model.export names outputs output_0, output_1, ... in the flattened order of the model's.
    by_index = {f"output_{i}": i for i in range(len(onnx_outputs))}
    order = [by_index[n] for n in onnx_outputs] if set(onnx_outputs) == set(by_index) else None

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = [tf.constant(np.asarray(feeds[n])) for n in names]
        result = model(xs[0] if len(xs) == 1 else xs, training=False)
        flat = [np.asarray(t) for t in tf.nest.flatten(result)]
        picks = order if order is not None else list(range(len(flat)))
        return {name: flat[i] for name, i in zip(onnx_outputs, picks, strict=True)}

    return run


def _signature_reference(signature: Any, tf: Any) -> Reference:
    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = signature(**{k: tf.constant(np.asarray(v)) for k, v in feeds.items()})
        return {k: np.asarray(v) for k, v in result.items()}

    return run


def _load_saved_model(directory: Path, tf: Any) -> Any:
    try:
        loaded = tf.saved_model.load(str(directory))
    except (*_READ_ERRORS, tf.errors.OpError) as exc:
        raise ModelError(
            f"TensorFlow cannot load the SavedModel {directory.name} ({_first_line(exc)}); the "
            "directory is incomplete or corrupt: save it again"
        ) from None
    signatures = dict(loaded.signatures)
    if _SIGNATURE not in signatures:
        raise ModelError(
            f"the SavedModel {directory.name} has no {_SIGNATURE!r} signature (it has "
            f"{sorted(signatures) or 'none'}); save it with a serving signature"
        )
    return loaded, signatures[_SIGNATURE]


def _export(path: str, options: FrontendOptions) -> Exported:
    source = Path(path)
    if not source.exists():
        raise ModelError(f"model {path!r} does not exist; check the path")
    tf = _need("tensorflow", "TensorFlow and Keras models")
    record: dict[str, Any] = {
        "frontend": "tensorflow",
        "version": tf.__version__,
        "tf2onnx": _version("tf2onnx"),
        "opset": options.opset or _DEFAULT_OPSET,
        "signature": _SIGNATURE,
    }
    if source.is_dir():
        loaded, signature = _load_saved_model(source, tf)
        model, _ = _convert(source, options)
        reference = _signature_reference(signature, tf)
        record["format"] = "saved_model"
        keep: Any = loaded  # the signature's variables live as long as the object that owns them
    else:
        keras_model = _load_keras(source, options)
        record["format"] = source.suffix.lower().lstrip(".")
        record["keras"] = _version("keras")
        with tempfile.TemporaryDirectory(prefix="duh-keras-") as tmp:
            saved = Path(tmp) / "saved_model"
            try:
                keras_model.export(str(saved), format="tf_saved_model", verbose=False)
            except _READ_ERRORS as exc:
                raise ModelError(
                    f"Keras cannot export {source.name} as a SavedModel ({_first_line(exc)})"
                ) from None
            model, _ = _convert(saved, options)
        reference = _keras_reference(keras_model, tf, model)
        keep = keras_model
    record["inputs"] = [i.name for i in model.graph.input]
    record["outputs"] = [o.name for o in model.graph.output]

    def run(feeds: Mapping[str, np.ndarray], _keep: Any = keep) -> dict[str, np.ndarray]:
        return reference(feeds)

    return Exported(model=model, record=record, reference=run)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


TENSORFLOW = frontend(
    Frontend(
        name="tensorflow",
        extra="tf",
        summary="TensorFlow / Keras (SavedModel directories, .keras, .h5)",
        claims=_claims,
        export=_export,
    )
)
