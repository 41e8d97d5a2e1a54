"""Run fuzz cases through ``duh inspect`` and ``duh build``, in this process, one after another.

``python -m benchmarks._fuzz_worker --fd N --memory-mb M``: reads one case folder per line on
stdin and writes ``{"case": DIR, "event": "start"}`` then ``{"case": DIR, "event": "end",
"commands": {...}}`` on file descriptor N. The parent (``benchmarks.fuzz_ingest``) times each case
from its start line and counts a worker that dies or hangs as that case's failure.

Each command runs as a user runs it (the typer app, stderr captured). Its outcome is ``ok`` (exit
0), ``refused`` (non-zero exit, the last line ``error: ...``, no traceback) or ``other``: an
exception that escaped, a traceback, an open of the case's ``secret.bin`` (seen by an audit hook,
which catches Python's opens; the engines' C++ opens are not seen), a change to the model's
folder, or files left in the output folder by a refused build.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmarks._fuzz_mutations import SECRET_NAME

_opened: list[str] = []
_watch: dict[str, str] = {}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _watch and args and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(args[0])
        if os.path.realpath(path) == _watch.get("secret"):
            _opened.append(path)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _run_cli(args: list[str]) -> tuple[int | None, str, str]:
    """Exit code, stderr, and the traceback of an exception that escaped (else "")."""
    from duh.cli import app

    err = io.StringIO()
    escaped = ""
    code: int | None = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            result = app(args, prog_name="duh", standalone_mode=False)
            code = int(result) if isinstance(result, int) else 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 (the point: anything that escapes is a finding)
            escaped = traceback.format_exc()
    return code, err.getvalue(), escaped


def _outcome(code: int | None, stderr: str, escaped: str) -> tuple[str, str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    if escaped:
        return "other", "exception escaped: " + escaped.strip().splitlines()[-1]
    if "Traceback (most recent call last)" in stderr:
        return "other", "traceback on stderr: " + (lines[-1] if lines else "")
    if code == 0:
        return "ok", ""
    if lines and lines[-1].startswith("error: "):
        return "refused", lines[-1]
    return "other", f"exit {code} without a one-line error: {' | '.join(lines[-3:])}"


def run_case(case_dir: Path) -> dict[str, Any]:
    """Both commands' outcomes on one case folder."""
    model_dir = case_dir / "model"
    out_dir = case_dir / "out"
    out_dir.mkdir(exist_ok=True)
    _watch["secret"] = os.path.realpath(case_dir / SECRET_NAME)
    before = _snapshot(model_dir)
    results: dict[str, Any] = {}
    commands = {
        "inspect": ["inspect", str(model_dir / "model.onnx"), "--json"],
        "build": [
            "build", str(model_dir / "model.onnx"), "-o", str(out_dir / "model.duh"),
            "--target", "cpu", "--check-samples", "2",
        ],
    }
    for name, args in commands.items():
        _opened.clear()
        code, stderr, escaped = _run_cli(args)
        status, detail = _outcome(code, stderr, escaped)
        if _opened:
            status, detail = "other", f"read {SECRET_NAME}, outside the model's folder ({detail})"
        if _snapshot(model_dir) != before:
            status, detail = "other", f"the model's folder changed ({detail})"
        left = sorted(p.name for p in out_dir.iterdir())
        if status != "ok" and left:
            status, detail = "other", f"a refused build left {left} ({detail})"
        results[name] = {"status": status, "exit": code, "detail": detail[:400]}
    _watch.clear()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, default=4096)
    args = parser.parse_args()
    limit = args.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.addaudithook(_audit)
    import duh.cli  # noqa: F401  (imported once, before the first case's clock starts)

    with os.fdopen(args.fd, "w", buffering=1) as out:
        for line in sys.stdin:
            case_dir = Path(line.strip())
            out.write(json.dumps({"case": str(case_dir), "event": "start"}) + "\n")
            record = {"case": str(case_dir), "event": "end", "commands": run_case(case_dir)}
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
