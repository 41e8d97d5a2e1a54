"""``load(artifact) -> Session``: one API over every engine."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import ArtifactError, ConfigError, InputError
from duh.host import host_info
from duh.runtime._engine import Engine, EngineOptions, OpTiming
from duh.runtime._manifest import Manifest, check_host, read_manifest, verify_files
from duh.runtime._signature import Dim, TensorSpec, check_feed
from duh.runtime._signing import verify_signature

__all__ = ["Session", "load"]

log = logging.getLogger(__name__)


class Session:
    """A loaded model: ``run(feed)`` checks the feed against the signature and returns a dict."""

    def __init__(
        self,
        engine: Engine,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        manifest: Manifest | None = None,
        path: Path | None = None,
    ) -> None:
        self._engine = engine
        self.inputs: tuple[TensorSpec, ...] = tuple(inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(outputs)
        self.manifest = manifest
        self.path = path

    @property
    def engine(self) -> Engine:
        """The engine behind this session (for profiling and engine-specific settings)."""
        return self._engine

    @property
    def engine_name(self) -> str:
        """Which engine runs this session (``onnxruntime``, ``openvino``, ...)."""
        return self._engine.engine_name

    def run(
        self, feed: Mapping[str, Any], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one inference. Raises ``InputError`` for a wrong name, dtype or shape."""
        arrays = check_feed(self.inputs, feed)
        result = self._engine.run(arrays)
        if outputs is None:
            return result
        unknown = [n for n in outputs if n not in result]
        if unknown:
            raise InputError(
                f"unknown output {', '.join(map(repr, unknown))}; this model's outputs are "
                f"{', '.join(o.name for o in self.outputs)}"
            )
        return {n: result[n] for n in outputs}

    def op_profile(self) -> list[OpTiming]:
        """Per-operator timings (load with ``profile=True``)."""
        return self._engine.op_profile()

    def close(self) -> None:
        """Release the engine."""
        self._engine.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"<duh.Session {self.engine_name}{where}>"


def _dim(value: Any) -> Dim:
    """A dimension as ONNX Runtime reports it; exporters write -1, 0 or "?" for "dynamic"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip() not in ("", "?"):
        return value
    return None


def _onnx_signature(session: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(arg: Any) -> TensorSpec:
        type_name = str(arg.type)  # e.g. "tensor(float)"
        inner = type_name[type_name.find("(") + 1 : -1] if "(" in type_name else type_name
        dtype = {
            "float": "float32",
            "double": "float64",
            "float16": "float16",
            "string": "object",
            "bool": "bool",
        }.get(inner, inner)
        return TensorSpec(arg.name, dtype, tuple(_dim(d) for d in arg.shape))

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def load(
    path: str | Path,
    *,
    threads: int | None = None,
    profile: bool = False,
    engine_options: Mapping[str, str] | None = None,
    spin: bool | None = None,
    public_key: str | Path | None = None,
) -> Session:
    """Load a duh artifact (``NAME.duh``) or a plain ``.onnx`` model (run on ONNX Runtime FP32).

    For an artifact, the sha256 of every file and the host requirements are checked first;
    with ``public_key`` (a PEM Ed25519 public key) the manifest's signature is checked before
    them, and an unsigned artifact or a plain ``.onnx`` model is refused.
    ``spin`` (None: the engine's default, as a plain session would run) sets whether idle pool
    threads spin-wait; servers and interleaved measurements turn it off so that one session's
    idle threads do not take the cores the others need.
    """
    path = Path(path)
    options = EngineOptions(
        threads=threads, profile=profile, spin=spin, extra=dict(engine_options or {})
    )
    if public_key is not None and not path.is_dir():
        raise ArtifactError(
            f"{str(path)!r} is not a duh artifact, and a signed artifact is required; build "
            "one with `duh build --sign KEY`"
        )
    if path.is_file() and path.suffix == ".onnx":
        from duh.targets.onnxruntime import OnnxRuntimeEngine

        ort_engine = OnnxRuntimeEngine(path, options)
        inputs, outputs = _onnx_signature(ort_engine.session)
        return Session(ort_engine, inputs, outputs, None, path)
    manifest = read_manifest(path)
    if public_key is not None:
        verify_signature(path, public_key)
    verify_files(path, manifest)
    check_host(manifest, host_info())
    from duh.targets import get_target

    try:
        plugin = get_target(manifest.engine)
    except ConfigError:
        raise ArtifactError(
            f"artifact {path.name} needs engine {manifest.engine!r}, which this duh does not "
            "have; install the plugin that provides it"
        ) from None
    engine = plugin.load(path, manifest, options)
    return Session(engine, manifest.inputs, manifest.outputs, manifest, path)
