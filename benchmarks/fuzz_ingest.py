"""Fuzz model ingest: hostile mutations of real models through ``duh inspect`` and ``duh build``.

Seeds are the committed fixtures (``fixtures/*.onnx``) and, when ``fixtures/fetch_models.py`` has
fetched them, the zoo models under ``~/.cache/duh/models`` up to ``--max-seed-mb``. Each case is
one mutation (``benchmarks._fuzz_mutations``: bit flips, truncation, spliced bytes, field edits,
cyclic graphs, huge declared tensors, external data at ``..``/absolute paths or behind symlinks)
written to its own folder, then run by a worker process (``benchmarks._fuzz_worker``) under an
address-space limit; a case that takes longer than ``--timeout`` seconds is killed and counted.

Every command must end ``ok`` or ``refused`` (one line ``error: ...``); ``other`` (a traceback,
a read outside the model's folder, a change to it, a half-written output), ``crash`` (the worker
died: a segfault, an abort, memory) and ``timeout`` are findings.

    python -m benchmarks.fuzz_ingest [--cases N] [--seed S] [--json FILE] [--timeout S]
                                     [--memory-mb M] [--kinds K,...] [--max-seed-mb MB]

Exit status 1 when any case is a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._fuzz_mutations import KINDS, mutate
from benchmarks._subprocess import kill_group, read_lines

ROOT = Path(__file__).resolve().parent.parent
ZOO = Path(os.environ.get("DUH_MODELS_DIR", "~/.cache/duh/models")).expanduser()
COMMANDS = ("inspect", "build")
STATUSES = ("ok", "refused", "other", "crash", "timeout")


def seeds(max_mb: float) -> list[Path]:
    """The seed models: the fixtures, then the zoo's models no larger than ``max_mb``."""
    found = sorted((ROOT / "fixtures").glob("*.onnx"))
    if ZOO.is_dir():
        found += [p for p in sorted(ZOO.glob("*.onnx")) if p.stat().st_size <= max_mb * 1e6]
    return found



def _worker(
    cases: Sequence[Path], timeout: float, memory_mb: int, cache: Path
) -> dict[str, dict[str, Any]]:
    """Run ``cases`` in one worker until it ends, dies or hangs; the records it got to."""
    results: dict[str, dict[str, Any]] = {}
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "DUH_CACHE_DIR": str(cache), "CI": "1", "COLUMNS": "4000"}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._fuzz_worker", "--fd", str(write_fd),
             "--memory-mb", str(memory_mb)],
            cwd=ROOT, env=env, pass_fds=(write_fd,), stdin=subprocess.PIPE, stdout=err,
            stderr=err, start_new_session=True,
        )
        os.close(write_fd)
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{c}\n" for c in cases).encode())
        proc.stdin.close()
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=read_lines, args=(read_fd, lines), daemon=True).start()
        current = str(cases[0])
        deadline = time.monotonic() + timeout + 60.0  # the worker's imports come first
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                kill_group(proc)
                results[current] = _failed("timeout", f"no answer in {timeout:g} s")
                break
            if line is None:
                code = proc.wait()
                if current not in results:
                    err.seek(0)
                    tail = err.read().decode("utf-8", "replace")[-600:]
                    results[current] = _failed("crash", f"worker exited {code}: {tail}")
                break
            record = json.loads(line)
            if record["event"] == "start":
                current = record["case"]
                deadline = time.monotonic() + timeout
            else:
                results[record["case"]] = record["commands"]
    return results


def _failed(status: str, detail: str) -> dict[str, Any]:
    return {name: {"status": status, "exit": None, "detail": detail} for name in COMMANDS}


def run(
    n_cases: int, seed: int, timeout: float, memory_mb: int, kinds: Sequence[str],
    max_seed_mb: float, workdir: Path,
) -> list[dict[str, Any]]:
    """Make ``n_cases`` cases under ``workdir`` and run them; one record per case."""
    rng = random.Random(seed)
    models = seeds(max_seed_mb)
    cases: list[Path] = []
    made: dict[str, dict[str, Any]] = {}
    for i in range(n_cases):
        model = models[i % len(models)]
        kind = kinds[(i // len(models)) % len(kinds)] if i < len(models) * len(kinds) else (
            rng.choice(kinds)
        )
        case_dir = workdir / f"case{i:05d}"
        mutation = mutate(kind, random.Random(rng.getrandbits(64)), model, case_dir)
        cases.append(case_dir)
        made[str(case_dir)] = {"case": i, "seed_model": model.name, "kind": mutation.kind,
                               "mutation": mutation.detail}
    results: dict[str, dict[str, Any]] = {}
    cache = workdir / "cache"
    while remaining := [c for c in cases if str(c) not in results]:
        results.update(_worker(remaining, timeout, memory_mb, cache))
    return [{**made[str(c)], "commands": results[str(c)]} for c in cases]


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per command and status, per kind, and the cases that are findings."""
    per_command = {
        name: dict(Counter(r["commands"][name]["status"] for r in records)) for name in COMMANDS
    }
    findings = [r for r in records if any(
        r["commands"][n]["status"] not in ("ok", "refused") for n in COMMANDS)]
    per_kind: dict[str, Counter[str]] = {}
    for r in records:
        for n in COMMANDS:
            per_kind.setdefault(r["kind"], Counter())[r["commands"][n]["status"]] += 1
    return {
        "cases": len(records),
        "runs": len(records) * len(COMMANDS),
        "refused_cleanly": sum(
            r["commands"][n]["status"] == "refused" for r in records for n in COMMANDS),
        "accepted": sum(r["commands"][n]["status"] == "ok" for r in records for n in COMMANDS),
        "other": sum(
            r["commands"][n]["status"] not in ("ok", "refused") for r in records for n in COMMANDS
        ),
        "per_command": per_command,
        "per_kind": {k: dict(v) for k, v in sorted(per_kind.items())},
        "findings": findings,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    parser.add_argument("--memory-mb", type=int, default=6144, help="the worker's address space")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--max-seed-mb", type=float, default=4.0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the case folders here")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown --kinds {unknown}; choose from {', '.join(KINDS)}")
    workdir = Path(tempfile.mkdtemp(prefix="duh-fuzz-")) if args.keep is None else args.keep
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        records = run(args.cases, args.seed, args.timeout, args.memory_mb, kinds,
                      args.max_seed_mb, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(records)
    summary["seconds"] = round(time.monotonic() - started, 1)
    print(f"{summary['cases']} cases, {summary['runs']} command runs in {summary['seconds']} s: "
          f"{summary['refused_cleanly']} refused cleanly, {summary['accepted']} accepted, "
          f"{summary['other']} other")
    for kind, counts in summary["per_kind"].items():
        print(f"  {kind:<10}" + "  ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES))
    for r in summary["findings"]:
        for name in COMMANDS:
            rec = r["commands"][name]
            if rec["status"] not in ("ok", "refused"):
                print(f"FINDING case {r['case']} {r['seed_model']} {r['kind']} ({r['mutation']}) "
                      f"{name}: {rec['status']}: {rec['detail'][:300]}")
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "records": records}, indent=2))
    return 1 if summary["other"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
