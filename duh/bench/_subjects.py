"""Subjects: the things a run measures side by side, behind one small interface.

A local subject is a session from ``duh.load`` (an artifact, or a plain ``.onnx`` on ONNX Runtime
FP32 as the baseline); the URL subject in ``_http`` talks to a running server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from duh.bench._inputs import Workload
from duh.bench._loop import Runner
from duh.bench._report import SubjectInfo
from duh.errors import InputError
from duh.runtime import Session, TensorSpec, check_feed, load

__all__ = ["LocalSubject", "Subject", "first_line", "unique_names"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (engines raise multi-line messages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with a ``#2``, ``#3`` suffix on repeats, so every subject has its own row."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


class Subject(Protocol):
    """Something to measure: it prepares payloads for a workload and runs them."""

    name: str
    inputs: tuple[TensorSpec, ...]

    def info(self) -> SubjectInfo:
        """What the report says about this subject."""
        ...

    def payloads(self, workload: Workload) -> list[Any]:
        """The workload's feeds, checked and prepared for ``runner``."""
        ...

    def runner(self) -> Runner:
        """A thread-safe callable running one payload."""
        ...

    def server_stats(self) -> Mapping[str, Any] | None:
        """The server's own statistics (URL subjects), or None."""
        ...

    def close(self) -> None:
        """Release what the subject holds."""
        ...


class LocalSubject:
    """An artifact or plain ONNX model loaded in this process with ``duh.load``."""

    def __init__(
        self,
        path: Path,
        name: str,
        threads: int | None,
        options: Mapping[str, str],
        spin: bool | None = None,
    ) -> None:
        started = time.perf_counter()
        self.session: Session = load(
            path, threads=threads, engine_options=dict(options), spin=spin
        )
        self.load_s = time.perf_counter() - started
        self.name = name
        self.path = path
        self.threads = threads
        self.options = dict(options)
        self.inputs = self.session.inputs

    def info(self) -> SubjectInfo:
        """Kind, engine, resolved target, threads and options."""
        manifest = self.session.manifest
        if manifest is None:
            kind, target = "onnx", "onnxruntime:cpu-fp32 (plain ONNX baseline)"
        else:
            kind = "artifact"
            target = str(manifest.target.get("resolved") or manifest.target.get("engine", "?"))
        return SubjectInfo(
            name=self.name,
            kind=kind,
            location=str(self.path),
            engine=self.session.engine_name,
            target=target,
            threads=self.threads,
            options=self.options,
            load_s=self.load_s,
        )

    def payloads(self, workload: Workload) -> list[Any]:
        """The feeds checked against this session's signature (once, outside the timed loop)."""
        try:
            return [check_feed(self.inputs, feed) for feed in workload.feeds]
        except InputError as exc:
            raise InputError(f"{self.name}: {exc}") from None

    def runner(self) -> Runner:
        """The engine's own run call: the feeds were checked when they were prepared."""
        return self.session.engine.run

    def server_stats(self) -> Mapping[str, Any] | None:
        """Local subjects have no server."""
        return None

    def close(self) -> None:
        """Release the session."""
        self.session.close()
