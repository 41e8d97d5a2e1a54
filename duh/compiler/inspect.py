"""``inspect``: what a model or an artifact holds, as plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from duh.compiler.ingest import default_opset, ingest
from duh.errors import ArtifactError
from duh.passes import op_histogram
from duh.runtime import read_manifest, verify_files

__all__ = ["inspect_path", "model_summary"]


def model_summary(model: onnx.ModelProto) -> dict[str, Any]:
    """Opset, IR version, op histogram, parameter count and bytes of a model."""
    params = 0
    nbytes = 0
    for init in model.graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        params += count
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        nbytes += count * dtype.itemsize if init.data_type != onnx.TensorProto.STRING else 0
    return {
        "opset": default_opset(model),
        "opsets": {e.domain or "ai.onnx": int(e.version) for e in model.opset_import},
        "ir_version": int(model.ir_version),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(model.graph.node),
        "ops": op_histogram(model),
        "parameters": params,
        "parameter_bytes": nbytes,
    }


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Describe an ONNX model file or a duh artifact directory."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        integrity = "ok"
        try:
            verify_files(path, manifest)
        except ArtifactError as exc:  # reported, not raised: inspect shows the damage
            integrity = str(exc)
        out: dict[str, Any] = {
            "kind": "artifact",
            "path": str(path),
            "inputs": [s.to_json() for s in manifest.inputs],
            "outputs": [s.to_json() for s in manifest.outputs],
            "integrity": integrity,
            "size_bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
            "manifest": manifest.to_json(),
        }
        engine_model = path / str(manifest.engine_config.get("model", ""))
        if integrity == "ok" and engine_model.suffix == ".onnx" and engine_model.is_file():
            out["model"] = model_summary(onnx.load_model(str(engine_model)))
        return out
    source = ingest(path)
    return {
        "kind": "model",
        "path": str(path),
        "sha256": source.sha256,
        "inputs": [s.to_json() for s in source.inputs],
        "outputs": [s.to_json() for s in source.outputs],
        "external_data": list(source.external_data),
        "size_bytes": path.stat().st_size
        + sum((path.parent / f).stat().st_size for f in source.external_data),
        "model": model_summary(source.model),
    }
