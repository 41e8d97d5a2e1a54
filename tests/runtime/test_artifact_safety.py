"""duh.load refuses artifacts that lead out of themselves, are forged, or are malformed."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

import duh
from benchmarks.artifact_attacks import ATTACKS, NEEDS_KEY, try_attack
from duh.errors import ArtifactError, ConfigError
from duh.runtime import generate_keypair, sign_artifact, verify_signature


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The signer's private and public key, and another (an attacker's) private key."""
    work = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(work / "signer.pem")
    other, _ = generate_keypair(work / "attacker.pem")
    return private, public, other


@pytest.fixture
def signed(built: Callable[..., Path], keys: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "signed.duh"
    shutil.copytree(built("digits_cnn.onnx", "onnxruntime:cpu-fp32"), copy)
    sign_artifact(copy, keys[0])
    return copy


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_attack_is_refused_at_load(
    attack: str, signed: Path, keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    said = try_attack(attack, signed, keys, tmp_path)
    assert said != "LOADED"
    assert "\n" not in said and ("rebuild" in said or "signature" in said or "signed" in said)


def test_a_signed_artifact_loads_with_its_key_and_verifies(
    signed: Path, keys: tuple[Path, Path, Path]
) -> None:
    verify_signature(signed, keys[1])
    with duh.load(signed, public_key=keys[1]) as session:
        assert session.inputs[0].name == "input"


def test_without_a_key_a_forged_manifest_is_indistinguishable(
    signed: Path, keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    # What signing is for: re-hashed by whoever can write the artifact, it loads unsigned.
    from benchmarks.artifact_attacks import Scene, forged_manifest

    (tmp_path / "out").mkdir()
    forged_manifest(Scene(signed, tmp_path / "out", keys[1], keys[2]))
    duh.load(signed).close()
    with pytest.raises(ArtifactError, match="signature does not match"):
        duh.load(signed, public_key=keys[1])
    assert set(NEEDS_KEY) <= set(ATTACKS)


def test_a_plain_onnx_model_is_refused_when_a_signature_is_required(
    digits_model: Path, keys: tuple[Path, Path, Path]
) -> None:
    with pytest.raises(ArtifactError, match="a signed artifact is required"):
        duh.load(digits_model, public_key=keys[1])


def test_keys_that_are_not_ed25519_pem_are_config_errors(signed: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key\n")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        verify_signature(signed, bogus)
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        sign_artifact(signed, bogus)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keypair(bogus)


def test_openssl_keys_work(signed: Path, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl on this host")
    import subprocess

    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run([openssl, "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    sign_artifact(signed, key)
    verify_signature(signed, pub)
