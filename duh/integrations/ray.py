"""Ray: a Ray Serve deployment of an artifact, and ``duh batch`` on Ray Data (``duh[ray]``).

``deployment(ART, DeploymentConfig(name="m", num_replicas=2))`` gives an application for
``ray.serve.run``: each replica loads the artifact with ``duh.load``, batches requests with
``@serve.batch`` and speaks the Open Inference Protocol's v2 JSON. ``run_batch_on_ray`` runs a
``duh batch`` job's shards on an actor pool (``map_batches``), one engine per actor.
"""

from __future__ import annotations

from duh.integrations._ray_data import run_batch_on_ray
from duh.integrations._ray_serve import DeploymentConfig, actor_options, deployment

__all__ = ["DeploymentConfig", "actor_options", "deployment", "run_batch_on_ray", "serve_forever"]


def serve_forever(app: object, host: str = "127.0.0.1", port: int = 8000,
                  address: str | None = None) -> None:
    """Start (or join) Ray, run ``app`` on Ray Serve's HTTP proxy at host:port, block until
    interrupted."""
    import threading

    from duh.integrations._ray_data import _ray

    ray = _ray()
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app)  # type: ignore[arg-type]
    try:
        threading.Event().wait()
    finally:
        serve.shutdown()
        ray.shutdown()
