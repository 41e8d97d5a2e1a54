"""Ed25519 signatures over an artifact's manifest (``duh build --sign``, ``duh verify``).

The manifest lists the sha256 of every other file of the artifact, so a signature over the
manifest's bytes covers them all: ``verify_signature`` checks the signature, and ``duh.load``
then checks each file against the signed digests. The signature is ``manifest.sig`` beside the
manifest (64 raw bytes). Keys are PEM files: a PKCS#8 private key and its SubjectPublicKeyInfo
public key, as ``duh keygen`` or ``openssl genpkey -algorithm ed25519`` write them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from duh.errors import ArtifactError, ConfigError, MissingDependencyError
from duh.runtime._manifest import MANIFEST_NAME, SIGNATURE_NAME

__all__ = ["check_signing_key", "generate_keypair", "sign_artifact", "verify_signature"]

_MAX_KEY_BYTES = 64 << 10


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise MissingDependencyError("cryptography", "sign", "artifact signatures") from None
    return serialization


def _read_key_file(path: Path, what: str) -> bytes:
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_KEY_BYTES:
            raise ConfigError(f"{what} {str(path)!r} is too large to be a PEM key file")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None


def _private_key(path: Path) -> Any:
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{str(path)!r} is not an unencrypted PEM private key ({exc}); make one with "
            "`duh keygen KEY` or `openssl genpkey -algorithm ed25519 -out KEY`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{str(path)!r} is a {type(key).__name__}; duh signs with Ed25519 keys")
    return key


def _public_key(path: Path) -> Any:
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(
            f"{str(path)!r} is not a PEM public key ({exc}); give the .pub file `duh keygen` "
            "wrote, or `openssl pkey -in KEY -pubout`"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{str(path)!r} is a {type(key).__name__}; duh verifies Ed25519 keys")
    return key


def generate_keypair(path: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to ``path`` (mode 0600) and its public key to PATH.pub."""
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Path(path)
    public = private.with_name(private.name + ".pub")
    for target in (private, public):
        if target.exists():
            raise ConfigError(f"{str(target)!r} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(private)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def check_signing_key(key: str | Path) -> None:
    """Raise ``ConfigError`` unless ``key`` is an Ed25519 private key duh can sign with.

    ``duh build --sign`` calls it before building, so that a wrong key fails at once.
    """
    _private_key(Path(key))


def sign_artifact(artifact: str | Path, key: str | Path) -> Path:
    """Sign ``artifact``'s manifest with the Ed25519 private key in ``key``; the .sig's path.

    The signature is written beside the artifact and renamed into it, so an interrupted
    signing leaves the artifact as it was (unsigned), never with a stray temp file inside.
    """
    artifact = Path(artifact)
    signature = _private_key(Path(key)).sign((artifact / MANIFEST_NAME).read_bytes())
    path = artifact / SIGNATURE_NAME
    tmp = artifact.parent / f".{artifact.name}.{os.getpid()}.sig.tmp"
    tmp.write_bytes(signature)
    os.replace(tmp, path)
    return path


def verify_signature(artifact: str | Path, public_key: str | Path) -> None:
    """Check ``artifact``'s manifest signature against ``public_key``; ``ArtifactError`` if not.

    Checks the signature only: ``duh.load`` (or ``verify_files``) then checks every file
    against the digests the signed manifest lists.
    """
    artifact = Path(artifact)
    key = _public_key(Path(public_key))
    from cryptography.exceptions import InvalidSignature

    sig_path = artifact / SIGNATURE_NAME
    if sig_path.is_symlink() or not sig_path.is_file():
        raise ArtifactError(
            f"artifact {artifact.name} is not signed (no {SIGNATURE_NAME}) and a signed one is "
            "required; build it with `duh build --sign KEY`"
        )
    signature = sig_path.read_bytes()[:1024]
    manifest = artifact / MANIFEST_NAME
    if manifest.is_symlink() or not manifest.is_file():
        raise ArtifactError(f"artifact {artifact.name} has no {MANIFEST_NAME} to verify")
    try:
        key.verify(signature, manifest.read_bytes())
    except InvalidSignature:
        raise ArtifactError(
            f"artifact {artifact.name}: the signature does not match its manifest under "
            f"{Path(public_key).name}; the manifest was changed after signing or was signed by "
            "another key: do not use this artifact"
        ) from None
