"""`duh keygen`, `duh build --sign` and `duh verify --key` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duh.cli import app

pytest.importorskip("cryptography")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_keygen_build_sign_and_verify(tmp_path: Path) -> None:
    key = tmp_path / "duh.pem"
    code, out, _ = _run("keygen", str(key))
    assert code == 0 and key.is_file() and (tmp_path / "duh.pem.pub").is_file()
    assert key.stat().st_mode & 0o077 == 0
    art = tmp_path / "m.duh"
    code, _, err = _run("build", str(FIXTURES / "multi_io.onnx"), "-o", str(art),
                        "--check-samples", "2", "--sign", str(key))
    assert code == 0, err
    assert (art / "manifest.sig").is_file()
    code, out, err = _run("verify", str(art), "--key", str(tmp_path / "duh.pem.pub"), "--json")
    assert code == 0, err
    assert json.loads(out)["signature_verified"] is True
    # One byte of the manifest changed: verify fails in one line, with the artifact's exit code.
    manifest = art / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"warnings": [', '"warnings": ["x"', 1))
    code, _, err = _run("verify", str(art), "--key", str(tmp_path / "duh.pem.pub"))
    assert code == 7
    assert err.strip().startswith("error:") and "signature does not match" in err
    assert len(err.strip().splitlines()) == 1


def test_build_with_a_bad_key_fails_before_building(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("nope\n")
    art = tmp_path / "m.duh"
    code, _, err = _run("build", str(FIXTURES / "multi_io.onnx"), "-o", str(art), "--sign",
                        str(bad))
    assert code == 2 and "not an unencrypted PEM private key" in err
    assert not art.exists()


def test_verify_without_key_checks_the_files(tmp_path: Path) -> None:
    art = tmp_path / "m.duh"
    assert _run("build", str(FIXTURES / "multi_io.onnx"), "-o", str(art),
                "--check-samples", "2")[0] == 0
    code, out, _ = _run("verify", str(art))
    assert code == 0 and "not signed" in out
    (art / "model.onnx").write_bytes(b"x")
    code, _, err = _run("verify", str(art))
    assert code == 7 and "modified after the build" in err
