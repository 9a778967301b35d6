"""Every uvicorn internal that sae-serve relies on, in this one module; uvicorn is pinned to the minor version
they were tested with (pyproject.toml), and tests/service/workers/test_uvicorn_internals.py fails when their
shape changes.

- `uvicorn.supervisors.multiprocess.get_subprocess`: how the supervisor makes a worker process; replaced so
  that workers are forked, not spawned.
- `uvicorn.supervisors.multiprocess.SIGNALS`: the signals the supervisor takes (HUP, USR1 and USR2 among
  them), each handled by its `handle_<name>` method.
- `uvicorn._subprocess.subprocess_started`: what a worker process runs first.
- `Multiprocess.processes` and `Multiprocess.sockets`: the supervisor's workers and listening sockets.
- `HttpToolsProtocol._start_asgi_task` and `.loop`, `RequestResponseCycle.transport` and `.response_started`:
  where a response's writes go.
"""

import asyncio
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from socket import socket
from typing import Any

import uvicorn.supervisors.multiprocess as uvicorn_multiprocess
from uvicorn._subprocess import subprocess_started
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.supervisors import Multiprocess

WorkerTarget = Callable[..., None]
Cycle = RequestResponseCycle  # one request's response, as uvicorn's httptools protocol keeps it
MakeProcess = Callable[[Config, WorkerTarget, list[socket]], BaseProcess]


def supervised_signals() -> list[int]:
    """The signals uvicorn's supervisor takes (and a worker must reset until its own server takes them)."""
    return list(uvicorn_multiprocess.SIGNALS)


def start_worker(config: Config, target: WorkerTarget, sockets: list[socket]) -> None:
    """Run a worker's server in this process, as a worker process uvicorn made would (stdin left closed)."""
    subprocess_started(config, target, sockets, stdin_fileno=None)


class SupervisorBase(Multiprocess):
    """uvicorn's worker supervisor, whose processes are made by `make_process`; uvicorn dispatches each signal it
    takes to `handle_<name>`."""

    def __init__(
        self,
        config: Config,
        sockets: list[socket],
        make_process: MakeProcess,
    ) -> None:
        uvicorn_multiprocess.get_subprocess = make_process  # type: ignore[attr-defined,assignment]
        super().__init__(config, sockets=sockets)

    def worker_pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()


def forking(context: BaseContext, start: Callable[[Config, WorkerTarget, list[socket]], None]) -> MakeProcess:
    """A `make_process` for SupervisorBase: a process of `context` running `start(config, target, sockets)`."""

    def make_process(config: Config, target: WorkerTarget, sockets: list[socket]) -> BaseProcess:
        process: BaseProcess = context.Process(target=start, args=(config, target, sockets))  # type: ignore[attr-defined]
        return process

    return make_process


class CycleTransportProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response cycle's writes going through `cycle_transport`."""

    def cycle_transport(
        self, transport: asyncio.Transport, cycle: Cycle, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Transport:
        return transport

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.transport = self.cycle_transport(self.transport, cycle, self.loop)
        super()._start_asgi_task(cycle, app)


def response_started(cycle: Cycle) -> bool:
    """Whether the cycle has begun its response (its head is the next write)."""
    return bool(cycle.response_started)
