"""ONNX Runtime sessions spin as a plain session would unless the caller says otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

import duh
from duh.runtime import EngineOptions
from duh.targets.onnxruntime import session_options

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
KEY = "session.intra_op.allow_spinning"


def _entry(options: EngineOptions) -> str | None:
    so = session_options(options)
    try:
        return so.get_session_config_entry(KEY)
    except RuntimeError:  # ORT raises for a key that was never set
        return None


def test_default_keeps_ort_spinning_default() -> None:
    assert _entry(EngineOptions()) is None


@pytest.mark.parametrize(("spin", "value"), [(False, "0"), (True, "1")])
def test_spin_sets_allow_spinning(spin: bool, value: str) -> None:
    assert _entry(EngineOptions(spin=spin)) == value


def test_explicit_engine_option_wins_over_spin() -> None:
    assert _entry(EngineOptions(spin=False, extra={KEY: "1"})) == "1"


def test_load_with_spin_off_still_runs(tmp_path: Path) -> None:
    import numpy as np

    session = duh.load(FIXTURES / "digits_cnn.onnx", spin=False)
    spec = session.inputs[0]
    feed = {spec.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in spec.shape],
                                dtype=spec.dtype)}
    out = session.run(feed)
    assert all(np.isfinite(v).all() for v in out.values())
