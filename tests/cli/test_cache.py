"""``duh cache ls|info|prune`` and ``duh build --no-cache`` through the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duh.cli import app
from duh.cli.cache import parse_age, parse_size
from duh.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("DUH_CACHE_DIR", str(root))
    return root


def _build(tmp_path: Path, name: str, *flags: str) -> dict[str, object]:
    model = str(FIXTURES / "digits_cnn.onnx")
    out = str(tmp_path / name)
    code, stdout, err = _run(
        "build", model, "-t", "onnxruntime:cpu-fp32", "-o", out, *flags, "--json"
    )
    assert code == 0, err
    return dict(json.loads(stdout))


def test_ls_info_and_a_cached_rebuild(cache: Path, tmp_path: Path) -> None:
    assert not _build(tmp_path, "a.duh")["cached"]
    assert _build(tmp_path, "b.duh")["cached"]
    code, out, _ = _run("cache", "ls", "--json")
    assert code == 0
    entries = json.loads(out)
    kinds = {e["kind"] for e in entries}
    assert kinds == {"pass", "artifact", "inputs"}
    assert all(len(e["key"]) == 64 for e in entries)  # full sha256, never cut short
    code, out, _ = _run("cache", "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["root"] == str(cache) and info["builds"]["artifact"]["entries"] == 1
    assert info["total_bytes"] > 0
    code, out, _ = _run("cache", "ls")
    assert code == 0 and "artifact" in out


def test_no_cache_builds_afresh_and_stores_nothing(cache: Path, tmp_path: Path) -> None:
    _build(tmp_path, "a.duh")
    report = _build(tmp_path, "b.duh", "--no-cache")
    assert not report["cached"]
    manifest = report["manifest"]
    assert isinstance(manifest, dict) and manifest["build"]["cache"] == {"enabled": False}


def test_prune_by_age_and_by_size(cache: Path, tmp_path: Path) -> None:
    _build(tmp_path, "a.duh")
    code, out, _ = _run("cache", "ls", "--json")
    entries = json.loads(out)
    old = time.time() - 40 * 86400
    artifact = next(e for e in entries if e["kind"] == "artifact")
    for shard in (cache / "builds").iterdir():
        entry = shard / artifact["key"]
        if entry.is_dir():
            os.utime(entry / "entry.json", (old, old))
    code, out, _ = _run("cache", "prune", "--older-than", "30d", "--json")
    assert code == 0
    result = json.loads(out)
    # The old artifact goes, and the input key that led to it.
    assert [e["kind"] for e in result["removed"]] == ["artifact", "inputs"]
    assert result["removed"][0]["key"] == artifact["key"]
    assert result["kept"] == len(entries) - 2
    code, out, _ = _run("cache", "prune", "--max-size", "0", "--json")
    assert code == 0 and json.loads(out)["bytes_left"] == 0
    code, out, _ = _run("cache", "ls", "--json")
    assert json.loads(out) == []
    # With the artifact gone the same build runs again, and is stored again.
    assert not _build(tmp_path, "b.duh")["cached"]


def test_prune_needs_a_criterion_and_checks_its_values(cache: Path) -> None:
    code, _, err = _run("cache", "prune")
    assert code == 2 and "--older-than" in err
    code, _, err = _run("cache", "prune", "--max-size", "ten gigs")
    assert code == 2 and "not a size like 10G" in err
    assert parse_size("10G") == 10 << 30 and parse_size("500M") == 500 << 20
    assert parse_age("30d") == 30 * 86400 and parse_age("12h") == 12 * 3600
    with pytest.raises(ConfigError):
        parse_age("soon")
