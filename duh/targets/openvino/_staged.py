"""An artifact in stages: OpenVINO runs the parts it converts, ONNX Runtime the ops it cannot."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import ArtifactError
from duh.runtime.contract import Engine, EngineOptions, Manifest, OpTiming
from duh.targets.onnxruntime import OnnxRuntimeEngine

__all__ = ["StagedEngine", "check_stages"]

_ENGINES = ("openvino", "onnxruntime")


def _tampered(what: str) -> ArtifactError:
    return ArtifactError(
        f"engine_config.stages {what}; the manifest was tampered with: rebuild the artifact"
    )


def check_stages(manifest: Manifest) -> list[Mapping[str, Any]]:
    """The manifest's stages, each naming an engine, a hashed file of the artifact and the
    tensors it reads and writes; an ArtifactError for anything else."""
    stages = manifest.engine_config.get("stages")
    if not isinstance(stages, list) or not stages:
        raise _tampered("is not a list of stages")
    known = {s.name for s in manifest.inputs}
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict) or stage.get("engine") not in _ENGINES:
            raise _tampered(f"entry {index} names no engine duh runs in stages")
        if str(stage.get("model")) not in manifest.files:
            raise _tampered(f"entry {index} names a file that is not one of the artifact's")
        names = [stage.get("inputs"), stage.get("outputs")]
        if not all(isinstance(n, list) and all(isinstance(x, str) for x in n) for n in names):
            raise _tampered(f"entry {index} lacks its lists of input and output names")
        if any(name not in known for name in stage["inputs"]):
            raise _tampered(f"entry {index} reads a tensor no earlier stage writes")
        known.update(stage["outputs"])
    if any(spec.name not in known for spec in manifest.outputs):
        raise _tampered("write none of some of the model's outputs")
    return stages


def _canonical(value: np.ndarray) -> np.ndarray:
    """``value`` with numpy's canonical dtype object: ONNX Runtime returns int64 as C ``long
    long``, a dtype OpenVINO's bindings do not recognize, on platforms where int64 is ``long``."""
    canonical = np.dtype(value.dtype.str) if value.dtype.kind in "biuf" else value.dtype
    return value if canonical is value.dtype else value.view(canonical)


class StagedEngine:
    """The stages of an artifact run in order, each on its engine, tensors passed by name."""

    engine_name = "openvino"

    def __init__(
        self,
        artifact: Path,
        manifest: Manifest,
        options: EngineOptions,
        open_openvino: Callable[[Path, str, list[str], EngineOptions], Engine],
    ) -> None:
        # openvino's pass-through settings are not ONNX Runtime's.
        ort_options = dataclasses.replace(options, extra={})
        self._stages: list[tuple[Engine, Sequence[str]]] = []
        for stage in check_stages(manifest):
            path = artifact / str(stage["model"])
            engine: Engine
            if stage["engine"] == "onnxruntime":
                engine = OnnxRuntimeEngine(path, ort_options, where=" (a stage of the artifact)")
            else:
                hint = str(stage.get("inference_precision_hint", "f32"))
                engine = open_openvino(path, hint, list(stage["outputs"]), options)
            self._stages.append((engine, tuple(stage["inputs"])))
        self._outputs = [spec.name for spec in manifest.outputs]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference through every stage (thread-safe: each engine is)."""
        values: dict[str, np.ndarray] = dict(feed)
        for engine, inputs in self._stages:
            values.update(
                (name, _canonical(value))
                for name, value in engine.run({name: values[name] for name in inputs}).items()
            )
        return {name: values[name] for name in self._outputs}

    def op_profile(self) -> list[OpTiming]:
        """Every stage's per-op timings, slowest first."""
        timings = [t for engine, _ in self._stages for t in engine.op_profile()]
        return sorted(timings, key=lambda t: t.total_us, reverse=True)

    def close(self) -> None:
        """Release every stage's engine."""
        for engine, _ in self._stages:
            engine.close()
        self._stages.clear()
