"""Peak memory of a subject, measured in a fresh process.

In the benchmarking process every subject shares one heap and the engine libraries are imported
by whichever subject loads first, so in-process growth cannot be charged fairly. Instead a child
process loads the subject alone, runs one feed of every measured configuration (with as many
threads as the run's widest concurrency), and reports its resident-set high-water mark: the
memory a process serving this subject needs, engine library included.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["peak_rss_mb"]

log = logging.getLogger(__name__)

_RUNS = 3
_TIMEOUT_S = 600


def peak_rss_mb(
    path: Path,
    threads: int | None,
    options: Mapping[str, str],
    feeds: Sequence[Mapping[str, np.ndarray]],
    streams: int = 1,
) -> float | None:
    """The peak RSS (MiB) of a fresh process loading ``path`` and running ``feeds``; None when
    this OS cannot tell or the child failed (logged)."""
    with tempfile.TemporaryDirectory(prefix="duh-bench-mem-") as tmp:
        files: list[str] = []
        for i, feed in enumerate(feeds):
            file = Path(tmp) / f"feed{i}.npz"
            arrays: dict[str, Any] = {k: np.asarray(v) for k, v in feed.items()}
            np.savez(file, **arrays)
            files += ["--feed", str(file)]
        main = "import sys; from duh.bench._memory import _main; sys.exit(_main())"
        cmd = [sys.executable, "-c", main, str(path), "--streams", str(streams)]
        if threads:
            cmd += ["--threads", str(threads)]
        for key, value in options.items():
            cmd += ["--option", f"{key}={value}"]
        try:
            proc = subprocess.run(
                [*cmd, *files], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("peak memory of %s not measured: %s", path.name, exc)
            return None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        log.warning("peak memory of %s not measured: the child process failed: %s", path.name, tail)
        return None
    value = json.loads(proc.stdout.strip().splitlines()[-1]).get("peak_rss_bytes")
    return None if value is None else value / 2**20


def _peak_rss_bytes() -> int | None:
    # VmHWM belongs to this process image; getrusage's ru_maxrss survives exec on Linux and would
    # carry the parent's high-water mark from the fork.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duh.bench._memory")
    parser.add_argument("subject")
    parser.add_argument("--feed", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--option", action="append", default=[])
    args = parser.parse_args(argv)
    from duh.runtime import load

    options = dict(o.split("=", 1) for o in args.option)
    session = load(args.subject, threads=args.threads, engine_options=options)
    for file in args.feed:
        with np.load(file, allow_pickle=True) as data:
            feed = {k: data[k] for k in data.files}

        def work(feed: Mapping[str, np.ndarray] = feed) -> None:
            for _ in range(_RUNS):
                session.run(feed)

        workers = [threading.Thread(target=work) for _ in range(max(1, args.streams))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    session.close()
    sys.stdout.write(json.dumps({"peak_rss_bytes": _peak_rss_bytes()}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
