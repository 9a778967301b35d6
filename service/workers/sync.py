"""Model repository changes and reloads shared by the worker processes of one `sae-serve`.

The worker that takes a load or unload writes every model's plan to a state file the workers share (written
whole and renamed into place, under a lock), then asks the supervisor to signal the others (SIGUSR1); each
applies the plans and notes the change's number beside the file, and the first worker answers once every live
worker has. A worker started later (a replacement) reads the file at start. A reload (SIGHUP) drops the
changes: the supervisor removes the file before it signals the workers. With one process there is no file
and nothing to share. The supervisor and its environment are service.workers'; what a worker knows of them
comes from its Settings. A WorkerSync is the peers (service.core.repository.Peers) of a worker's repository.
"""

import asyncio
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from service.core.repository import ModelRepository
from service.core.versions import Plan

log = logging.getLogger("sae_serve")
# How long a load or unload waits for the other workers to apply it before answering.
WORKERS_APPLY_TIMEOUT_S = 30.0


class WorkerSync:
    def __init__(self, state_file: Path | None, workers: int = 1, supervisor_pid: int | None = None) -> None:
        self.state_file = state_file
        self.workers = workers
        self.supervisor_pid = supervisor_pid
        self.generation = 0  # the number of the last change this worker applied

    def reload_all(self) -> None:
        """Ask the supervisor to have every worker, this one included, reload its models (SIGUSR2)."""
        if self.supervisor_pid is not None and self.workers > 1:
            os.kill(self.supervisor_pid, signal.SIGUSR2)

    def plans(self) -> dict[str, Plan]:
        """The plans every worker is to serve, as last written (none where nothing was changed)."""
        if self.state_file is None or not self.state_file.exists():
            return {}
        raw = json.loads(self.state_file.read_text())  # written whole and renamed into place: never half
        self.generation = int(raw["generation"])
        return {name: Plan.from_dict(plan) for name, plan in raw["plans"].items()}

    def applied(self) -> None:
        """Note that this worker serves the plans of change `generation`."""
        if self.state_file is not None:
            note = self.state_file.parent / f"applied-{os.getpid()}"
            staged = note.with_suffix(".tmp")
            staged.write_text(str(self.generation))
            staged.replace(note)

    async def publish(self, plans: dict[str, Plan]) -> None:
        """Write this worker's new plans for the others, have them apply it, and wait until every one has."""
        if self.state_file is None:
            return
        self.generation = self._write(plans)
        self.applied()
        if self.supervisor_pid is not None:
            os.kill(self.supervisor_pid, signal.SIGUSR1)  # every other worker applies the change too
            await self._wait_for_workers(self.generation)

    def _write(self, plans: dict[str, Plan]) -> int:
        assert self.state_file is not None
        with self.state_file.with_suffix(".lock").open("a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            generation = self.generation
            if self.state_file.exists():
                generation = max(generation, int(json.loads(self.state_file.read_text())["generation"]))
            generation += 1
            staged = self.state_file.with_suffix(".tmp")
            raw = {name: plan.to_dict() for name, plan in plans.items()}
            staged.write_text(json.dumps({"generation": generation, "plans": raw}))
            staged.replace(self.state_file)
        return generation

    async def _wait_for_workers(self, generation: int) -> None:
        assert self.state_file is not None
        deadline = time.monotonic() + WORKERS_APPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            applied = 0
            for note in self.state_file.parent.glob("applied-*"):
                pid = note.name.removeprefix("applied-")
                if pid.isdigit() and _alive(int(pid)) and int(note.read_text() or 0) >= generation:
                    applied += 1
            if applied >= self.workers:
                return
            await asyncio.sleep(0.01)
        log.warning(
            "repository change %d: not every worker applied it within %.0f s", generation, WORKERS_APPLY_TIMEOUT_S
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_signals(repository: ModelRepository, reload_on_sighup: bool, shared: bool) -> None:
    """On this process's event loop: SIGHUP reloads the models (ignored, and said so, with
    SAE_RELOAD_ON_SIGHUP=false); with several workers, from the supervisor, SIGUSR1 applies another worker's
    repository change and SIGUSR2 reloads. Where the server does not run in the main thread (an embedding
    program), signals stay that program's own."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()

    def run(work: Callable[[], Coroutine[Any, Any, object]]) -> None:
        task = loop.create_task(work())
        tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(tasks.discard)

    def on_sighup() -> None:
        if reload_on_sighup:
            run(repository.reload)
        else:
            log.info("SIGHUP ignored: SAE_RELOAD_ON_SIGHUP is off")

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (RuntimeError, ValueError, NotImplementedError):
        log.info("SIGHUP reloading is off: the server does not run in the main thread")
        return
    if shared:
        loop.add_signal_handler(signal.SIGUSR1, run, repository.sync)
        loop.add_signal_handler(signal.SIGUSR2, run, repository.reload)  # every worker, from the supervisor
