"""Offline (batch) inference: ``duh batch ART --input PATH --output DIR``.

The rows of the input (numpy files, an image folder, a CSV/Parquet table) are cut into shards;
each shard runs in batches on a worker holding one engine (``duh.load``) and its outputs are
written atomically as ``shard-NNNNN.npz``, so that a job resumes where it was stopped. Locally
one engine in this process runs the shards on every core (``workers=N``: a pool of N processes);
``duh.integrations.ray`` runs the same shards on Ray Data. This package uses the runtime only,
never the compiler.
"""

from __future__ import annotations

from duh.batch._job import (
    RECORD_NAME,
    BatchPlan,
    BatchRequest,
    BatchResult,
    Ledger,
    cores,
    failure,
    plan_batch,
    read_outputs,
)
from duh.batch._local import local_workers, run_batch, worker_counts
from duh.batch._shards import ShardDone, ShardJob, ShardRunner, WorkerSpec, shard_name, write_shard
from duh.batch._sources import TABLE_SUFFIXES, Source, open_source

__all__ = [
    "RECORD_NAME",
    "TABLE_SUFFIXES",
    "BatchPlan",
    "BatchRequest",
    "BatchResult",
    "Ledger",
    "ShardDone",
    "ShardJob",
    "ShardRunner",
    "Source",
    "WorkerSpec",
    "cores",
    "failure",
    "local_workers",
    "open_source",
    "plan_batch",
    "read_outputs",
    "run_batch",
    "shard_name",
    "worker_counts",
    "write_shard",
]

