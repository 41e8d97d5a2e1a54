"""What serving adds around inference: async jobs, drift monitoring, sampled request logging.

``Extras`` is made once per server; the HTTP and gRPC front ends hand it every answered request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from duh.serve._codec import InferRequest
from duh.serve._drift import DriftConfig, DriftMonitors
from duh.serve._frontend import Frontend
from duh.serve._jobs import JobConfig, JobStore
from duh.serve._model import ModelVersion
from duh.serve._samples import SampleConfig, SampleLog

__all__ = ["Extras", "ExtrasConfig"]


@dataclass(frozen=True, slots=True)
class ExtrasConfig:
    """Settings of async jobs, drift monitoring and sample logging."""

    jobs: JobConfig = field(default_factory=JobConfig, metadata={"help": "async jobs"})
    drift: DriftConfig = field(default_factory=DriftConfig, metadata={"help": "drift"})
    samples: SampleConfig = field(
        default_factory=SampleConfig, metadata={"help": "sampled request/response logging"}
    )


class Extras:
    """The job store, the drift monitors and the sample log of one server."""

    def __init__(self, config: ExtrasConfig, frontend: Frontend, registry: CollectorRegistry):
        self.drift = DriftMonitors(config.drift, registry)
        self.samples = SampleLog(config.samples, registry)
        self.jobs = JobStore(config.jobs, frontend, registry, self.observe)

    def observe(
        self, version: ModelVersion, request: InferRequest, outputs: dict[str, np.ndarray]
    ) -> None:
        """An answered request: count its inputs for drift, maybe log it with its answer."""
        self.drift.observe(version.name, version.version, version.path, version.artifact_id,
                           request.inputs)
        self.samples.offer(version.name, version.version, request.id, request.inputs, outputs)

    def stats(self, model: str, version: str) -> dict[str, Any] | None:
        """The ``drift`` entry of a version's statistics (None when it is not monitored)."""
        return self.drift.to_json(model, version)

    async def close(self) -> None:
        """Finish webhooks and the sample writer (after the drain)."""
        await self.jobs.close()
        self.samples.close()
