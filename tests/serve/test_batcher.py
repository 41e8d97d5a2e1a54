"""The dynamic batcher, driven on an event loop against a real ONNX Runtime session."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import duh
from duh.serve._batcher import BatchConfig, Batcher, Pending
from duh.serve._errors import InternalServeError, UnavailableError


class Recorder:
    """Runs the ``scale`` model (y = 2x) and records the shape of every engine call."""

    def __init__(self, model: Path, gate: threading.Event | None = None) -> None:
        self.session = duh.load(model)
        self.shapes: list[tuple[int, ...]] = []
        self.gate = gate
        self.entered = threading.Event()  # set when the first engine call has begun

    def __call__(self, instance: int, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.shapes.append(feed["x"].shape)
        return self.session.run(feed)


def _pending(loop: asyncio.AbstractEventLoop, x: np.ndarray, deadline: float | None = None
             ) -> Pending:
    return Pending({"x": x}, x.shape[0], x.shape[1:], loop.create_future(), deadline)


def _note(done: list[int], index: int, _future: object) -> None:
    done.append(index)


def _run(test: Callable[[asyncio.AbstractEventLoop], object]) -> None:
    async def main() -> None:
        await test(asyncio.get_running_loop())  # type: ignore[misc]

    asyncio.run(main())


def test_equal_shapes_share_batches_and_each_caller_gets_its_rows(
    serve_models: dict[str, Path],
) -> None:
    # The engine is held at a gate until every request is queued: the batches that follow are
    # made from a full queue, however the threads are scheduled.
    gate = threading.Event()
    recorder = Recorder(serve_models["scale"], gate)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((int(rng.integers(1, 4)), int(rng.choice([3, 5]))))
              .astype(np.float32) for _ in range(60)]

    async def test(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher("scale", recorder, BatchConfig(max_batch_size=8), loop)
        done: list[int] = []
        items = [_pending(loop, x) for x in inputs]
        for i, item in enumerate(items):
            item.future.add_done_callback(functools.partial(_note, done, i))
            batcher.submit(item)
        gate.set()
        results = await asyncio.gather(*(p.future for p in items))
        for x, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result["y"], 2 * x)
        # arrival order holds among requests that could share a batch
        for width in (3, 5):
            order = [i for i in done if inputs[i].shape[1] == width]
            assert order == sorted(order)
        assert batcher.close(5)

    _run(test)
    assert all(rows <= 8 for rows, _ in recorder.shapes)
    assert len(recorder.shapes) < len(inputs)  # requests were combined
    assert max(rows for rows, _ in recorder.shapes) > 3  # more than one request per batch


def test_a_request_larger_than_the_batch_limit_runs_in_slices(
    serve_models: dict[str, Path],
) -> None:
    recorder = Recorder(serve_models["scale"])
    x = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)

    async def test(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher("scale", recorder, BatchConfig(max_batch_size=8), loop)
        item = _pending(loop, x)
        batcher.submit(item)
        np.testing.assert_array_equal((await item.future)["y"], 2 * x)
        batcher.close(5)

    _run(test)
    assert [rows for rows, _ in recorder.shapes] == [8, 8, 4]


def test_full_queue_refuses_at_once_and_accepted_requests_still_finish(
    serve_models: dict[str, Path],
) -> None:
    gate = threading.Event()
    recorder = Recorder(serve_models["scale"], gate)
    x = np.ones((1, 3), dtype=np.float32)

    async def test(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher("scale", recorder, BatchConfig(max_batch_size=1, max_queue_size=2),
                          loop)
        first = _pending(loop, x)
        batcher.submit(first)
        # the worker has taken the first one and waits at the gate
        assert await asyncio.to_thread(recorder.entered.wait, 10)
        queued = [_pending(loop, x), _pending(loop, x)]
        for item in queued:
            batcher.submit(item)
        with pytest.raises(UnavailableError, match="2 requests queued") as info:
            batcher.submit(_pending(loop, x))
        assert info.value.reason == "queue_full" and info.value.status == 503
        gate.set()
        for item in [first, *queued]:
            np.testing.assert_array_equal((await item.future)["y"], 2 * x)
        assert batcher.close(5)

    _run(test)


def test_a_request_past_its_deadline_is_not_computed(serve_models: dict[str, Path]) -> None:
    gate = threading.Event()
    recorder = Recorder(serve_models["scale"], gate)
    x = np.ones((1, 3), dtype=np.float32)

    async def test(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher("scale", recorder, BatchConfig(max_batch_size=1), loop)
        first = _pending(loop, x)
        batcher.submit(first)
        late = _pending(loop, 2 * x, deadline=loop.time() * 0)  # deadline already passed
        batcher.submit(late)
        gate.set()
        await first.future
        with pytest.raises(UnavailableError, match="timeout passed") as info:
            await late.future
        assert info.value.reason == "timeout"
        batcher.close(5)

    _run(test)
    assert len(recorder.shapes) == 1


def test_engine_failure_reaches_every_caller_and_the_batcher_goes_on(
    serve_models: dict[str, Path],
) -> None:
    session = duh.load(serve_models["scale"])

    def run(instance: int, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feed["x"][0, 0] < 0:
            raise RuntimeError("engine exploded")
        return session.run(feed)

    async def test(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher("scale", run, BatchConfig(max_batch_size=4, max_queue_delay_ms=20),
                          loop)
        bad = [_pending(loop, -np.ones((1, 3), dtype=np.float32)) for _ in range(2)]
        for item in bad:
            batcher.submit(item)
        for item in bad:
            with pytest.raises(InternalServeError, match="engine exploded"):
                await item.future
        good = _pending(loop, np.ones((1, 3), dtype=np.float32))
        batcher.submit(good)
        np.testing.assert_array_equal((await good.future)["y"], 2 * np.ones((1, 3)))
        batcher.close(5)

    _run(test)


def test_preferred_batch_sizes_shape_the_batches(serve_models: dict[str, Path]) -> None:
    gate = threading.Event()
    recorder = Recorder(serve_models["scale"], gate)
    x = np.ones((1, 3), dtype=np.float32)

    async def test(loop: asyncio.AbstractEventLoop) -> None:
        # A delay far longer than the test: the first batch goes because it reaches the
        # preferred size, and the 2-row tail waits for it until close() flushes the queue.
        config = BatchConfig(max_batch_size=8, preferred_batch_sizes=(4,),
                             max_queue_delay_ms=600_000)
        batcher = Batcher("scale", recorder, config, loop)
        items = [_pending(loop, x) for _ in range(6)]
        for item in items:
            batcher.submit(item)
        gate.set()
        await asyncio.gather(*(p.future for p in items[:4]))
        assert batcher.depth == 2
        assert await asyncio.to_thread(batcher.close, 10)
        await asyncio.gather(*(p.future for p in items[4:]))

    _run(test)
    assert [rows for rows, _ in recorder.shapes] == [4, 2]


def test_close_finishes_queued_requests(serve_models: dict[str, Path]) -> None:
    recorder = Recorder(serve_models["scale"])
    x = np.ones((2, 3), dtype=np.float32)

    async def test(loop: asyncio.AbstractEventLoop) -> None:
        batcher = Batcher("scale", recorder, BatchConfig(max_batch_size=2, instances=2), loop)
        items = [_pending(loop, x) for _ in range(10)]
        for item in items:
            batcher.submit(item)
        assert await asyncio.to_thread(batcher.close, 10)
        with pytest.raises(UnavailableError, match="unloading"):
            batcher.submit(_pending(loop, x))
        for item in items:
            np.testing.assert_array_equal((await item.future)["y"], 2 * x)

    _run(test)
