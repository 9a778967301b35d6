"""sae-serve on a Ray Serve cluster: the same app (service.app.create_app) in every replica, behind Ray Serve's
proxies, one on each node.

Each replica is one process with one model set, as a compose replica is (`SAE_WORKERS` does not apply: Ray places
the replicas). Its settings come from the replica's environment (the config's `runtime_env`); gRPC is off, as Ray
Serve's proxies carry HTTP here. Ray Serve's own bounds replace the worker's: `max_ongoing_requests` and
`max_queued_requests` in the config (deploy/ray/serve.yaml) refuse what a replica cannot take, with 503.

Reloading: the config's `user_config` is `{"generation": N}`; a new generation (`serve deploy` again, or
`serve.run` with a new config) has every replica read the artifacts folder anew, as SIGHUP or /admin/reload does on
one machine, with no replica restarted and no request refused. /admin/reload and the repository API change only
the replica that answers them: on a cluster, roll out through the config.
"""

import asyncio
import logging
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from service.app import create_app
from service.core.dataplane import DataPlane
from service.core.settings import Settings
from service.workers.logs import configure_logging

log = logging.getLogger("sae_serve")
# The app of this replica's process, once Ray has built it: a replica is one process, and holds one app. Read through
# replica_plane(), never from the deployment class: Ray ships the class by value, with copies of the globals it
# names, while this module's functions it imports by name.
_apps: list[FastAPI] = []


def build_app() -> FastAPI:
    """The replica's app, with its settings from the environment, gRPC off, and as many intra-op threads as the CPUs
    Ray gave the replica (`ray_actor_options.num_cpus`)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)  # type: ignore[no-untyped-call]
    settings = Settings(grpc_port=0, workers=1, intra_op_threads=max(1, round(cpus)))
    configure_logging(settings)
    app = create_app(settings)
    _apps.append(app)
    return app


def replica_plane() -> DataPlane | None:
    """The data plane of this replica's app, once built."""
    return _apps[-1].state.plane if _apps else None


@serve.deployment(name="sae-serve")
@serve.ingress(build_app)
class SaeServe:
    """One replica: Ray Serve runs the app's lifespan (loading the models) when the replica starts."""

    def __init__(self) -> None:
        self.generation: int | None = None  # the config's, once it is known

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """A new `generation`: load every model anew from the artifacts folder (the first config only records it)."""
        generation = int(user_config.get("generation", 0))
        first, self.generation = self.generation is None, generation
        plane = replica_plane()
        if first or plane is None:
            return
        for _ in range(600):  # the app's lifespan may still be loading the first set
            if plane.ready:
                break
            await asyncio.sleep(0.1)
        fresh, swapped = await plane.repository.reload()
        log.info("generation %d: models reloaded (%s)", generation, "swapped in" if swapped else fresh.failures)


app = SaeServe.bind()  # type: ignore[attr-defined]
