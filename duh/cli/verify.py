"""``duh verify`` and ``duh keygen``: check an artifact's files and signature; make a key pair."""

from __future__ import annotations

from pathlib import Path

import typer

from duh.cli._common import JsonFlag, console, handle_errors, print_json

__all__ = ["keygen", "verify"]


@handle_errors
def verify(
    artifact: Path = typer.Argument(..., help="the NAME.duh artifact directory"),
    key: Path | None = typer.Option(
        None, "--key", help="Ed25519 public key (PEM); the artifact must carry its signature"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Check every file of ARTIFACT against its manifest, and its signature with --key."""
    from duh.runtime import SIGNATURE_NAME, read_manifest, verify_files, verify_signature

    manifest = read_manifest(artifact)
    if key is not None:
        verify_signature(artifact, key)
    verify_files(artifact, manifest)
    signed = (artifact / SIGNATURE_NAME).is_file()
    result = {
        "artifact": str(artifact),
        "files": len(manifest.files),
        "signed": signed,
        "signature_verified": key is not None,
        "key": None if key is None else str(key),
    }
    if as_json:
        print_json(result)
        return
    how = (
        f"signature verified with {key}"
        if key is not None
        else ("signed, signature not checked (pass --key)" if signed else "not signed")
    )
    console.print(f"[green]ok[/]: {artifact} — {len(manifest.files)} files match; {how}")


@handle_errors
def keygen(
    key: Path = typer.Argument(..., help="private key file to write; the public key is KEY.pub"),
) -> None:
    """Write a new Ed25519 key pair for `duh build --sign KEY` and `--key KEY.pub`."""
    from duh.runtime import generate_keypair

    private, public = generate_keypair(key)
    console.print(f"wrote {private} (private, mode 600) and {public} (public)")
