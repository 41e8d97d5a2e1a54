"""``duh serve`` option errors: one red line and the error's exit code, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from duh.cli import app


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "nothing to serve"),
        (["m=x.duh", "--split", "m:1"], 2, "--split 'm:1' is not MODEL:VERSION=WEIGHT"),
        (["m=x.duh", "--shadow", "m"], 2, "--shadow 'm' is not MODEL:VERSION"),
        (["m=x.duh", "--preferred-batch-sizes", "4,x"], 2, "--preferred-batch-sizes"),
        (["m=x.duh", "--engine-option", "novalue"], 2, "--engine-option 'novalue' is not KEY=VALUE"),
        (["m=does-not-exist.duh", "--port", "0"], 7, "does not exist"),
        (["--repository", "no-such-dir", "--port", "0"], 2, "is not a directory"),
    ],
)
def test_option_errors(args: list[str], code: int, message: str, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
