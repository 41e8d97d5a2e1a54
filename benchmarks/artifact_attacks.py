"""Attacks on a built artifact, each of which ``duh.load`` must refuse with one ``ArtifactError``.

Builds (or takes) a signed artifact of ``fixtures/digits_cnn.onnx``, then for each attack damages
a fresh copy (manifest entries leading out of the artifact, ``..`` and absolute names, symlinks,
a swapped engine file under a re-hashed (forged) manifest, signatures missing or made by another
key, manifests that are huge, nested past the parser or malformed) and loads it.

    python -m benchmarks.artifact_attacks [--json FILE]

An attack that needs a signature to be caught loads with the public key (as ``duh serve
--require-signed PUB`` does): without one, a manifest re-hashed by whoever can write the
artifact is indistinguishable from the build's. Exit status 1 when any attack loads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Scene:
    """One attack's copy of the artifact, a folder outside it, and the keys."""

    artifact: Path
    outside: Path
    public_key: Path
    other_key: Path


def _manifest(scene: Scene) -> dict[str, Any]:
    return json.loads((scene.artifact / "manifest.json").read_text())


def _write(scene: Scene, data: dict[str, Any] | str) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    (scene.artifact / "manifest.json").write_text(text)


def _sha(path: Path) -> str:
    from duh.runtime import sha256_file

    return sha256_file(path)


def _outside_model(scene: Scene) -> Path:
    target = scene.outside / "evil.onnx"
    shutil.copy(scene.artifact / "model.onnx", target)
    return target


def dotdot_entry(scene: Scene) -> None:
    """The manifest lists ../evil.onnx (hash matching) and the engine loads it."""
    evil = _outside_model(scene)
    data = _manifest(scene)
    rel = os.path.relpath(evil, scene.artifact)
    data["files"][rel] = _sha(evil)
    data["engine_config"]["model"] = rel
    _write(scene, data)


def absolute_entry(scene: Scene) -> None:
    """The manifest lists an absolute path and the engine loads it."""
    evil = _outside_model(scene)
    data = _manifest(scene)
    data["files"][str(evil)] = _sha(evil)
    data["engine_config"]["model"] = str(evil)
    _write(scene, data)


def engine_file_unlisted(scene: Scene) -> None:
    """engine_config names a file outside, which the files list does not cover."""
    evil = _outside_model(scene)
    data = _manifest(scene)
    data["engine_config"]["model"] = os.path.relpath(evil, scene.artifact)
    _write(scene, data)


def symlinked_engine_file(scene: Scene) -> None:
    """model.onnx becomes a symlink to an identical file outside (the hash still matches)."""
    evil = _outside_model(scene)
    (scene.artifact / "model.onnx").unlink()
    os.symlink(evil, scene.artifact / "model.onnx")


def symlinked_folder(scene: Scene) -> None:
    """A folder of the artifact is a symlink out of it."""
    os.symlink(scene.outside, scene.artifact / "extra")


def symlinked_manifest(scene: Scene) -> None:
    """manifest.json is a symlink to a manifest kept elsewhere."""
    target = scene.outside / "manifest.json"
    shutil.move(scene.artifact / "manifest.json", target)
    os.symlink(target, scene.artifact / "manifest.json")


def backslash_name(scene: Scene) -> None:
    """A Windows-style ..\\ name."""
    data = _manifest(scene)
    data["files"]["..\\evil.onnx"] = "0" * 64
    _write(scene, data)


def _swap(scene: Scene) -> None:
    """Replace the engine file with another model and re-hash it into the manifest."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model(str(scene.artifact / "model.onnx"))
    for init in model.graph.initializer:  # all-zero weights: a different model
        zeros = np.zeros_like(numpy_helper.to_array(init))
        init.CopyFrom(numpy_helper.from_array(zeros, init.name))
    onnx.save_model(model, str(scene.artifact / "model.onnx"))
    data = _manifest(scene)
    data["files"]["model.onnx"] = _sha(scene.artifact / "model.onnx")
    _write(scene, data)


def forged_manifest(scene: Scene) -> None:
    """The engine file is swapped and the manifest re-hashed to match (needs the signature)."""
    _swap(scene)


def resigned_by_another_key(scene: Scene) -> None:
    """Swapped, re-hashed, and signed with the attacker's own key."""
    from duh.runtime import sign_artifact

    _swap(scene)
    sign_artifact(scene.artifact, scene.other_key)


def signature_removed(scene: Scene) -> None:
    """Swapped, re-hashed, and the signature deleted."""
    _swap(scene)
    (scene.artifact / "manifest.sig").unlink()


def huge_manifest(scene: Scene) -> None:
    """A manifest of 9 MiB (a warning field padded)."""
    data = _manifest(scene)
    data["warnings"] = ["x" * (9 << 20)]
    _write(scene, data)


def deep_nesting(scene: Scene) -> None:
    """A manifest nested 200,000 levels deep (past the JSON parser's recursion)."""
    data = json.dumps(_manifest(scene))
    _write(scene, data[:-1] + ', "checks": ' + "[" * 200_000 + "]" * 200_000 + "}")


def huge_integer(scene: Scene) -> None:
    """A format_version with 100,000 digits."""
    text = (scene.artifact / "manifest.json").read_text()
    _write(scene, text.replace('"format_version": 1', '"format_version": 1' + "0" * 100_000, 1))


def many_files(scene: Scene) -> None:
    """A files list of 100,000 entries."""
    data = _manifest(scene)
    data["files"].update({f"f{i}": "0" * 64 for i in range(100_000)})
    _write(scene, data)


def bad_digest(scene: Scene) -> None:
    """A digest that is not 64 hex digits."""
    data = _manifest(scene)
    data["files"]["model.onnx"] = "../../etc/passwd"
    _write(scene, data)


def wrong_types(scene: Scene) -> None:
    """files is a list, engine a string."""
    data = _manifest(scene)
    data["files"] = list(data["files"])
    data["engine"] = "onnxruntime"
    _write(scene, data)


def extra_file(scene: Scene) -> None:
    """A file the manifest does not list."""
    (scene.artifact / "payload.so").write_bytes(b"\x7fELF")


Attack = Callable[[Scene], None]
# Attacks only a signature catches (loaded with the public key).
NEEDS_KEY = ("forged_manifest", "resigned_by_another_key", "signature_removed")
ATTACKS: dict[str, Attack] = {
    f.__name__: f
    for f in (
        dotdot_entry, absolute_entry, engine_file_unlisted, symlinked_engine_file,
        symlinked_folder, symlinked_manifest, backslash_name, forged_manifest,
        resigned_by_another_key, signature_removed, huge_manifest, deep_nesting, huge_integer,
        many_files, bad_digest, wrong_types, extra_file,
    )
}


def try_attack(name: str, signed: Path, keys: tuple[Path, Path, Path], work: Path) -> str:
    """Apply attack ``name`` to a copy of ``signed``; what ``duh.load`` said (``LOADED`` if not)."""
    import duh
    from duh.errors import ArtifactError

    _, public, other = keys
    folder = work / name
    folder.mkdir()
    (folder / "outside").mkdir()
    scene = Scene(folder / "model.duh", folder / "outside", public, other)
    shutil.copytree(signed, scene.artifact)
    ATTACKS[name](scene)
    try:
        duh.load(scene.artifact, public_key=public if name in NEEDS_KEY else None).close()
    except ArtifactError as exc:
        return str(exc)
    return "LOADED"


def prepare(work: Path) -> tuple[Path, tuple[Path, Path, Path]]:
    """A signed artifact of the digits fixture and the keys (the signer's and another)."""
    import duh
    from duh.runtime import generate_keypair, sign_artifact

    private, public = generate_keypair(work / "signer.pem")
    other, _ = generate_keypair(work / "attacker.pem")
    artifact = work / "digits.duh"
    duh.build(ROOT / "fixtures" / "digits_cnn.onnx", "onnxruntime:cpu-fp32", artifact,
              check_samples=2)
    sign_artifact(artifact, private)
    return artifact, (private, public, other)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="duh-attacks-") as tmp:
        work = Path(tmp)
        artifact, keys = prepare(work)
        results = {name: try_attack(name, artifact, keys, work) for name in ATTACKS}
    loaded = [n for n, r in results.items() if r == "LOADED"]
    print(f"{len(results)} artifact attacks tried, {len(results) - len(loaded)} refused, "
          f"{len(loaded)} loaded")
    for name, said in results.items():
        print(f"  {name:<26}{'LOADED' if said == 'LOADED' else 'refused'}: {said[:150]}")
    if args.json is not None:
        args.json.write_text(json.dumps({"tried": len(results), "loaded": loaded,
                                         "results": results}, indent=2))
    return 1 if loaded else 0


if __name__ == "__main__":
    raise SystemExit(main())
