"""One model version's Triton configuration: its instance kind follows the artifact's device."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

import duh
from duh.serve import BatchConfig, ModelSource
from duh.serve._metrics import Metrics
from duh.serve._model import ModelVersion


def _instance_kind(path: Path, device: str | None) -> str:
    session = duh.load(path)
    if device is not None:  # the manifest as a build for this device writes it
        assert session.manifest is not None
        target = {**session.manifest.target, "device": device}
        session.manifest = dataclasses.replace(session.manifest, target=target)

    async def main() -> str:
        version = ModelVersion(
            ModelSource("m", "1", path),
            [session],
            BatchConfig(),
            asyncio.get_running_loop(),
            Metrics().version("m", "1"),
        )
        try:
            return str(version.config_json()["instance_group"][0]["kind"])
        finally:
            assert version.close(5)

    return asyncio.run(main())


@pytest.mark.parametrize(("device", "kind"), [(None, "KIND_CPU"), ("cuda", "KIND_GPU")])
def test_instance_kind_follows_the_artifacts_target_device(
    serve_models: dict[str, Path], device: str | None, kind: str
) -> None:
    with duh.load(serve_models["light"]) as session:  # a CPU build, as the fixture makes it
        assert session.manifest is not None and session.manifest.target["device"] == "cpu"
    assert _instance_kind(serve_models["light"], device) == kind


def test_a_plain_onnx_model_runs_on_the_cpu(serve_models: dict[str, Path]) -> None:
    assert _instance_kind(serve_models["scale"], None) == "KIND_CPU"
