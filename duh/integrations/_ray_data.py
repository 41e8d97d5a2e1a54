"""``duh batch --ray``: the same shards as the local pool, on Ray Data with an actor pool.

The dataset is the list of pending shards; ``map_batches`` hands them to a pool of actors, each
holding one ``ShardRunner`` (one engine, loaded once). Each actor reads its shard's rows and
writes the shard file atomically itself, as a local worker does, so the job resumes the same way
and scales to a cluster unchanged (the input and output folders must then be on storage that
every node sees).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from duh.batch import (
    BatchPlan,
    BatchRequest,
    BatchResult,
    Ledger,
    ShardDone,
    ShardRunner,
    WorkerSpec,
    failure,
    plan_batch,
    worker_counts,
)
from duh.errors import MissingDependencyError

__all__ = ["run_batch_on_ray"]

log = logging.getLogger(__name__)


class _ShardActor:
    """An actor of the pool: one engine, a shard per call."""

    def __init__(self, worker: WorkerSpec, plan: BatchPlan) -> None:
        self.runner = ShardRunner(worker)
        self.plan = plan

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = [self.runner(self.plan.job(int(i))) for i in batch["shard"]]
        return {
            "shard": np.asarray([d.index for d in done], dtype=np.int64),
            "count": np.asarray([d.count for d in done], dtype=np.int64),
            "sha256": np.asarray([d.sha256 for d in done], dtype=object),
            "seconds": np.asarray([d.seconds for d in done], dtype=np.float64),
            "error": np.asarray([d.error for d in done], dtype=object),
            "exit_code": np.asarray([d.exit_code for d in done], dtype=np.int64),
        }


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "ray", "ray", "duh batch --ray") from None
    return ray


def run_batch_on_ray(
    request: BatchRequest,
    on_shard: Callable[[ShardDone], None] | None = None,
    *,
    plan: BatchPlan | None = None,
    address: str | None = None,
) -> BatchResult:
    """Run the job's pending shards on Ray Data (``address``: a cluster; None: a local Ray).

    ``workers`` actors (default: one per CPU Ray reports) each hold one engine.
    """
    ray = _ray()
    plan = plan or plan_batch(request)
    ledger = Ledger(plan)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        cores = int(ray.cluster_resources().get("CPU", 1))
        workers, threads = worker_counts(request, cores)
        workers = max(1, min(workers, len(plan.pending) or 1))
        worker = WorkerSpec(request.artifact, threads, dict(request.engine_options))
        began = time.perf_counter()
        ran = 0
        if plan.pending:
            # One shard per block, made here (no read tasks that would wait for the CPUs the
            # actors hold).
            dataset = ray.data.from_items(
                [{"shard": i} for i in plan.pending], override_num_blocks=len(plan.pending)
            )
            results = dataset.map_batches(
                _ShardActor, fn_constructor_args=(worker, plan), batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
                batch_format="numpy",
            )
            for row in results.iter_rows():
                done = ShardDone(int(row["shard"]), int(row["count"]), str(row["sha256"]),
                                 float(row["seconds"]), str(row["error"] or ""),
                                 int(row["exit_code"]))
                if done.error:
                    raise failure(done)
                ledger.record(done)
                ran += done.count
                if on_shard is not None:
                    on_shard(done)
        seconds = time.perf_counter() - began
    finally:
        if started_here:
            ray.shutdown()
    return BatchResult(request.output, plan.total, len(plan.shards), len(plan.pending),
                       len(plan.done), ran, seconds, workers, "ray")
