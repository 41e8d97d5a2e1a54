"""A full disk is one line naming the file and the fix, not a traceback."""

from __future__ import annotations

import errno

import pytest
import typer

from duh.cli._common import handle_errors


def test_no_space_left_is_one_line_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    @handle_errors
    def build() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/out/.duh-work/model.onnx")

    with pytest.raises(typer.Exit) as exited:
        build()
    assert exited.value.exit_code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no space left on the device writing /out/.duh-work/model.onnx" in err
    assert "duh cache prune" in err and "Traceback" not in err


def test_other_os_errors_are_not_taken_for_a_full_disk() -> None:
    @handle_errors
    def build() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/out")

    with pytest.raises(PermissionError):
        build()
