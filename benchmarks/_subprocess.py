"""Helpers the benchmarks share for worker processes they start and stop by process group."""

from __future__ import annotations

import os
import queue
import signal
import subprocess

__all__ = ["kill_group", "read_lines"]


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group (it and whatever it started), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def read_lines(fd: int, lines: queue.Queue[str | None]) -> None:
    """Put each line read from ``fd`` on ``lines``, then None at end of file (a reader thread)."""
    with os.fdopen(fd, "r") as stream:
        for line in stream:
            lines.put(line)
    lines.put(None)
