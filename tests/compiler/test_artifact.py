from __future__ import annotations

from pathlib import Path

import pytest

from duh.compiler.artifact import staging


def test_an_interrupt_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a.duh"
    with pytest.raises(KeyboardInterrupt), staging(out) as stage:
        (stage / "model.onnx").write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_an_error_keeps_the_previous_artifact(tmp_path: Path) -> None:
    out = tmp_path / "a.duh"
    with staging(out) as stage:
        (stage / "manifest.json").write_text("{}")
        (stage / "v").write_text("1")
    with pytest.raises(RuntimeError), staging(out) as stage:
        (stage / "v").write_text("2")
        raise RuntimeError("engine crashed")
    assert (out / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.duh"]


def test_success_renames_into_place_readable(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "a.duh"
    with staging(out) as stage:
        (stage / "f").write_text("x")
    assert (out / "f").read_text() == "x"
    assert out.stat().st_mode & 0o755 == 0o755
