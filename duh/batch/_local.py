"""``run_batch``: a job's pending shards on this host, in this process or on a process pool.

One worker (the default) runs in this process with every core for the engine's own threads: an
engine such as ONNX Runtime already spreads one batch over the cores, so more processes add no
compute, only start-up (each imports duh and loads the engine: seconds) and memory. While the
engine runs a shard, one thread reads the next shard's rows and another writes the previous
shard's file, so the engine is not kept waiting on decoding, ``fsync`` or the record.

``workers > 1`` starts that many spawned processes, one engine each with ``cores / workers``
threads: worth it only where one engine cannot use the cores (rows that are slow to decode, an
engine that does not scale over threads) and the job is long enough to amortize the start-up.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from duh.batch._job import BatchPlan, BatchRequest, BatchResult, Ledger, cores, failure, plan_batch
from duh.batch._shards import ShardDone, ShardJob, ShardRunner, WorkerSpec, write_shard
from duh.errors import DuhError

__all__ = ["local_workers", "run_batch", "worker_counts"]

log = logging.getLogger(__name__)

OnShard = Callable[[ShardDone], None]


def worker_counts(request: BatchRequest, cpus: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) on ``cpus`` (Ray): one per CPU unless told, CPUs shared out."""
    cpus = cpus or cores()
    workers = request.workers or cpus
    return workers, request.threads or max(1, cpus // workers)


def local_workers(request: BatchRequest, cpus: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) on this host: one worker unless told, the cores shared out."""
    cpus = cpus or cores()
    workers = request.workers or 1
    return workers, request.threads or max(1, cpus // workers)


def run_batch(
    request: BatchRequest, on_shard: OnShard | None = None, plan: BatchPlan | None = None
) -> BatchResult:
    """Run the job's pending shards on this host (see the module's text), skipping finished ones.

    ``on_shard`` is called in this process after each shard is written and recorded.
    """
    plan = plan or plan_batch(request)
    ledger = Ledger(plan)
    workers, threads = local_workers(request)
    workers = max(1, min(workers, len(plan.pending) or 1))
    # In this process the engine shares the cores with the shard reader and writer threads.
    spin = False if workers == 1 else None
    spec = WorkerSpec(request.artifact, threads, dict(request.engine_options), spin)
    began = time.perf_counter()
    ran = 0
    if plan.pending:
        log.info("batch: %d shards to run on %d worker(s), %d thread(s) each",
                 len(plan.pending), workers, threads)
        run = _in_process if workers == 1 else _on_pool
        ran = run(plan, ledger, spec, workers, on_shard)
    return BatchResult(
        request.output, plan.total, len(plan.shards), len(plan.pending), len(plan.done), ran,
        time.perf_counter() - began, workers, "local",
    )


def _read(job: ShardJob) -> tuple[dict[str, np.ndarray], float]:
    began = time.perf_counter()
    return job.source.read(job.start, job.stop), began


def _write(
    job: ShardJob, outputs: dict[str, np.ndarray], began: float, ledger: Ledger
) -> ShardDone:
    done = write_shard(job, outputs, began)
    ledger.record(done)
    return done


def _in_process(
    plan: BatchPlan, ledger: Ledger, spec: WorkerSpec, workers: int, on_shard: OnShard | None
) -> int:
    """Shards in order on one engine here; reading shard k+1 and writing k-1 overlap running k.

    At most one read and one write are in flight, so the ledger has one writer at a time and
    memory holds three shards. Stopped (an error, Ctrl-C), the write in flight is finished and
    recorded before this returns: a shard on disk always has its record.
    """
    runner = ShardRunner(spec)
    jobs = [plan.job(i) for i in plan.pending]
    ran = 0
    with ThreadPoolExecutor(2, thread_name_prefix="duh-batch-io") as io:
        reading = io.submit(_read, jobs[0])
        writing: Future[ShardDone] | None = None
        try:
            for k, job in enumerate(jobs):
                try:
                    arrays, began = reading.result()
                    if k + 1 < len(jobs):
                        reading = io.submit(_read, jobs[k + 1])
                    outputs = runner.infer(job, arrays)
                except DuhError as exc:
                    raise failure(ShardDone(job.index, 0, error=str(exc),
                                            exit_code=exc.exit_code)) from None
                if writing is not None:
                    ran += _finished(writing.result(), on_shard)
                writing = io.submit(_write, job, outputs, began, ledger)
            if writing is not None:
                ran += _finished(writing.result(), on_shard)
        finally:
            reading.cancel()
            runner.close()
    return ran


def _finished(done: ShardDone, on_shard: OnShard | None) -> int:
    if on_shard is not None:
        on_shard(done)
    return done.count


_RUNNER: list[ShardRunner] = []


def _init_worker(worker: WorkerSpec) -> None:
    _RUNNER.append(ShardRunner(worker))


def _run_in_worker(job: ShardJob) -> ShardDone:
    return _RUNNER[0](job)


def _on_pool(
    plan: BatchPlan, ledger: Ledger, spec: WorkerSpec, workers: int, on_shard: OnShard | None
) -> int:
    """Shards on ``workers`` spawned processes, each reading, running and writing its own."""
    ran = 0
    context = multiprocessing.get_context("spawn")  # no engine state forked from this process
    with ProcessPoolExecutor(workers, context, _init_worker, (spec,)) as pool:
        futures: set[Future[ShardDone]] = {
            pool.submit(_run_in_worker, plan.job(i)) for i in plan.pending
        }
        try:
            while futures:
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    try:
                        done = future.result()
                    except BrokenProcessPool:
                        raise DuhError(
                            "a batch worker process died (out of memory?); the finished "
                            "shards are kept: run the same command again to resume"
                        ) from None
                    if done.error:
                        raise failure(done)
                    ledger.record(done)
                    ran += _finished(done, on_shard)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return ran
