"""Writing artifacts atomically: build in a temp dir beside the output, rename at the end."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from duh.errors import ConfigError
from duh.runtime import MANIFEST_NAME, Manifest

__all__ = ["staging", "work_prefix", "write_manifest"]

log = logging.getLogger(__name__)


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (atomically within the directory)."""
    path = directory / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    os.replace(tmp, path)
    return path


def work_prefix() -> str:
    """The prefix of a build's scratch folder beside its output (it names the build's pid)."""
    return f".duh-work-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Remove what killed builds left beside ``name``: staging, old and scratch folders.

    A build killed with SIGKILL (or by a power cut) runs no cleanup; each folder names the pid
    of the build that made it, so those of builds no longer running are removed here, and
    those of a build running beside this one are left alone.
    """
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\..*\.(tmp|old)|\.duh-work-(\d+)-.*")
    for entry in parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match[1] or match[3])
        if pid != os.getpid() and not _alive(pid):
            log.info("removing %s, left by a build that was killed", entry)
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def staging(output: Path) -> Iterator[Path]:
    """Yield an empty temp dir beside ``output``; on success it replaces ``output`` in one rename.

    On any error or interrupt (Ctrl-C included) the temp dir is removed and ``output`` is left as
    it was, so a failed build never leaves a partial artifact.
    """
    output = output.absolute()
    parent = output.parent
    if output.exists() and not output.is_dir():
        raise ConfigError(
            f"output {str(output)!r} exists and is not a directory; choose another -o"
        )
    if output.exists() and any(output.iterdir()) and not (output / MANIFEST_NAME).exists():
        raise ConfigError(
            f"output {str(output)!r} is a non-empty directory that is not a duh artifact; "
            "refusing to replace it: choose another -o"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output directory {str(parent)!r}: {exc.strerror}"
        ) from None
    _remove_stale(parent, output.name)
    temp = Path(tempfile.mkdtemp(prefix=f".{output.name}.{os.getpid()}.", suffix=".tmp",
                                 dir=parent))
    try:
        yield temp
        temp.chmod(0o755)
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.{os.getpid()}.", suffix=".old",
                                        dir=parent))
            os.replace(output, old / "a")
            os.replace(temp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, output)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
