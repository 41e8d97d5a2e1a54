"""What a build killed with SIGKILL leaves beside its output is removed by the next build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from duh.compiler.artifact import staging


def test_folders_of_killed_builds_go_and_those_of_live_ones_stay(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".m.duh.{dead.pid}.x1.tmp", tmp_path / f".m.duh.{dead.pid}.x2.old",
             tmp_path / f".duh-work-{dead.pid}-x3"]
    live = [tmp_path / f".m.duh.{os.getppid()}.x4.tmp", tmp_path / f".duh-work-{os.getppid()}-x5"]
    unrelated = [tmp_path / f".other.duh.{dead.pid}.x6.tmp", tmp_path / "keep"]
    for folder in (*stale, *live, *unrelated):
        folder.mkdir()
        (folder / "engine.bin").write_bytes(b"partial")
    with staging(tmp_path / "m.duh") as stage:
        (stage / "manifest.json").write_text("{}")
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in (*live, *unrelated))
    assert (tmp_path / "m.duh" / "manifest.json").is_file()
