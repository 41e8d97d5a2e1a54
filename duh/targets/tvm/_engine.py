"""Running a TVM-compiled artifact: the shared library through the Relax virtual machine.

A virtual machine runs one call at a time, so the engine keeps a pool of them (one per thread
that runs concurrently). TVM sizes its CPU thread pools from ``TVM_NUM_THREADS`` and, without it,
assumes hyper-threading and uses half the cores; the engine sets it to its thread count (physical
cores by default). It is one setting per process: the engine loaded last sets it. (TVM's own
``config_threadpool`` is not used: it pins the calling thread, and every thread it later starts,
to the cores it is given.)
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import TargetError
from duh.runtime.contract import EngineOptions, OpTiming
from duh.targets._util import import_engine

__all__ = ["TVM_ERRORS", "TvmEngine", "tvm_module"]

log = logging.getLogger(__name__)

# TVM reports failures as these builtin exception types (through tvm-ffi).
TVM_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    NotImplementedError,
    AssertionError,
)


def tvm_module() -> Any:
    """``tvm``, or ``MissingDependencyError`` naming the ``tvm`` extra."""
    return import_engine("tvm", "apache-tvm", "tvm", "the tvm engine")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (TVM's messages carry whole tracebacks)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _flatten(value: Any) -> list[Any]:
    if hasattr(value, "numpy"):
        return [value]
    out: list[Any] = []
    for item in value:
        out.extend(_flatten(item))
    return out


class TvmEngine:
    """A TVM shared library behind the runtime's engine contract."""

    engine_name = "tvm"

    def __init__(
        self,
        library: Path,
        inputs: Sequence[str],
        outputs: Sequence[str],
        options: EngineOptions,
        default_threads: int,
        entry: str = "main",
    ) -> None:
        tvm = tvm_module()
        from tvm import relax

        self._tvm, self._relax = tvm, relax
        try:
            self._lib = tvm.runtime.load_module(str(library))
        except TVM_ERRORS as exc:
            raise TargetError(
                f"tvm cannot load {library.name}: {first_line(exc)}; rebuild the artifact"
            ) from None
        self._entry = entry
        self._inputs = list(inputs)
        self._outputs = list(outputs)
        self._threads = options.threads or default_threads
        os.environ["TVM_NUM_THREADS"] = str(self._threads)
        self._pool: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self._local = threading.local()
        self._profiled = options.profile
        self._times: dict[str, list[float]] = {}
        self._times_lock = threading.Lock()

    def _instrument(self, func: Any, symbol: str, before: bool, ret: Any, *args: Any) -> int:
        if before:
            self._local.started = time.perf_counter()
            return 0
        elapsed = (time.perf_counter() - getattr(self._local, "started", time.perf_counter())) * 1e6
        name = str(symbol)
        if not name.startswith("vm.builtin."):
            with self._times_lock:
                entry = self._times.setdefault(name, [0.0, 0])
                entry[0] += elapsed
                entry[1] += 1
        return 0

    def _machine(self) -> tuple[Any, Any]:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            vm = self._relax.VirtualMachine(self._lib, self._tvm.cpu())
            if self._profiled:
                vm.set_instrument(self._tvm.runtime.convert(self._instrument))
            return vm, vm[self._entry]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference on a free virtual machine (thread-safe)."""
        vm, main = self._machine()
        try:
            args = [self._tvm.runtime.tensor(feed[name]) for name in self._inputs]
            values = _flatten(main(*args))
            return {n: v.numpy() for n, v in zip(self._outputs, values, strict=True)}
        except TVM_ERRORS as exc:
            shapes = ", ".join(f"{n}{list(np.shape(feed[n]))}" for n in self._inputs)
            raise TargetError(
                f"tvm failed to run the model on {shapes}: {first_line(exc)}; if an input has a "
                "dynamic dimension, rebuild with it fixed (--shape NAME=DxDxD)"
            ) from None
        finally:
            self._pool.put((vm, main))

    def op_profile(self) -> list[OpTiming]:
        """Time in each compiled function (fused operators), summed over every run so far."""
        if not self._profiled:
            raise TargetError("profiling was not enabled; load with EngineOptions(profile=True)")
        with self._times_lock:
            timings = [
                OpTiming(name, re.sub(r"\d+$", "", name), us, int(calls))
                for name, (us, calls) in self._times.items()
            ]
        return sorted(timings, key=lambda t: t.total_us, reverse=True)

    def close(self) -> None:
        """Drop the virtual machines and the library."""
        while True:
            try:
                self._pool.get_nowait()
            except queue.Empty:
                break
        self._lib = None
