"""``kill -9`` of ``duh build`` at random points: nothing half-written stays, the next build works.

Each trial starts ``duh build`` of ``fixtures/digits_cnn.onnx`` for ``cpu-int8`` (calibration,
quantization, engine build, verification, artifact write) with a build cache shared by every
trial, kills it with SIGKILL after a random delay within the length of a whole build, then
looks at the output folder, and builds again without a kill. A trial's outcome:

- ``nothing``: no artifact at the output path (killed before the rename);
- ``complete``: an artifact that ``duh.load`` accepts (killed after the rename);
- ``half``: anything at the output path that ``duh.load`` refuses (a failure);

and, apart, whether hidden temp folders were left beside it (``leftover``: SIGKILL runs no
cleanup), whether the next build removed them (a failure if not), and whether it succeeded and
its artifact loads (``rebuilt``; a failure if not: a broken cache entry shows here).

    python -m benchmarks.fault_build [--trials N] [--seed S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _command(output: Path) -> list[str]:
    return [
        sys.executable, "-m", "duh", "build", str(ROOT / "fixtures" / "digits_cnn.onnx"),
        "--target", "cpu-int8", "--calib", str(ROOT / "fixtures" / "digits_calib.npz"),
        "--calib-samples", "64", "--check-samples", "4", "-o", str(output),
    ]


def _build(output: Path, env: dict[str, str], kill_after: float | None) -> tuple[int, float]:
    started = time.monotonic()
    proc = subprocess.Popen(_command(output), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    code = proc.wait()
    return code, time.monotonic() - started


def _state(output: Path) -> str:
    import duh
    from duh.errors import DuhError

    if not output.exists():
        return "nothing"
    try:
        duh.load(output).close()
    except DuhError:
        return "half"
    return "complete"


def _hidden(work: Path) -> list[Path]:
    """What a build stages beside its output: ``.NAME.*.tmp`` and its ``.duh-work-*`` folder."""
    return [*work.glob(".digits.duh.*"), *work.glob(".duh-work-*")]


def trial(work: Path, env: dict[str, str], delay: float) -> dict[str, Any]:
    """One kill at ``delay`` seconds, what it left, and the build after it."""
    output = work / "digits.duh"
    shutil.rmtree(output, ignore_errors=True)
    # A cold cache for each killed build (else a cached artifact makes it finish at once); the
    # build after it reuses what the killed one left in that cache.
    env = {**env, "DUH_CACHE_DIR": str(work / f"cache-{delay:.3f}")}
    for stale in _hidden(work):
        shutil.rmtree(stale, ignore_errors=True)
    code, _ = _build(output, env, delay)
    state = _state(output)
    leftover = sorted(p.name for p in _hidden(work))
    again, _ = _build(output, env, None)
    rebuilt = again == 0 and _state(output) == "complete"
    return {"delay_s": round(delay, 2), "exit": code, "state": state, "leftover": leftover,
            "rebuilt": rebuilt, "left_after_rebuild": sorted(p.name for p in _hidden(work))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    import os

    with tempfile.TemporaryDirectory(prefix="duh-faults-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "DUH_CACHE_DIR": str(work / "cache"), "CI": "1"}
        code, whole = _build(work / "first.duh", env, None)
        if code != 0:
            print("the build itself fails; nothing to measure")
            return 1
        records = [trial(work, env, rng.uniform(0.0, whole)) for _ in range(args.trials)]
    states = Counter(r["state"] for r in records)
    failures = [r for r in records
                if r["state"] == "half" or not r["rebuilt"] or r["left_after_rebuild"]]
    print(f"{len(records)} kill -9 trials (a whole build takes {whole:.1f} s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
          + f"; temp folders left by the kill {sum(bool(r['leftover']) for r in records)}, "
          f"still there after the next build {sum(bool(r['left_after_rebuild']) for r in records)}"
          f"; next build ok {sum(r['rebuilt'] for r in records)}/{len(records)}")
    for r in records:
        print(f"  killed at {r['delay_s']:>6.2f} s: {r['state']:<9} leftover {r['leftover']} "
              f"rebuilt {r['rebuilt']}")
    if args.json is not None:
        args.json.write_text(json.dumps({"build_s": whole, "records": records}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
