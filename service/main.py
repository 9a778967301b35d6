"""`sae-serve`: run the service under uvicorn with the settings from the environment, in one or several processes.

With SAE_WORKERS above 1, a supervisor process holds the listening socket and runs that many worker
processes, each a whole service with its own models: it replaces a worker that dies, forwards SIGHUP
to every worker (each reloads its models), and on SIGTERM lets every worker finish its requests.
Prometheus metrics are then kept in files that /metrics sums over the workers.

The supervisor imports torch and the app once, then forks the workers (uvicorn would spawn fresh
interpreters that import everything again): they share those pages copy-on-write, 278 MB less PSS
with two workers (bench/fork_memory.py). It never runs a forward, starts a thread pool or touches
CUDA before forking; each worker does all of that itself.
"""

import gc
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
import uvicorn.supervisors.multiprocess as uvicorn_multiprocess
from uvicorn._subprocess import subprocess_started
from uvicorn.config import Config
from uvicorn.supervisors import Multiprocess

from service.http1 import OneWriteHttpToolsProtocol
from service.logs import configure_logging
from service.settings import REPOSITORY_STATE_ENV, SUPERVISOR_ENV, Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.context import ForkProcess
    from socket import socket

    from fastapi import FastAPI

# Asking torch about CUDA initialises the CUDA driver, which a forked worker then cannot use, and the worker
# count is needed before anything is imported: so a process of its own asks for the GPU's memory in MiB
# (0: no usable CUDA).
CUDA_PROBE = (
    "import torch; print(torch.cuda.get_device_properties(0).total_memory // 2**20 if torch.cuda.is_available() else 0)"
)
# Without the NVIDIA driver's control device or proc entry, CUDA cannot be available: no need to ask torch.
NVIDIA_DRIVER_PATHS = ("/dev/nvidiactl", "/proc/driver/nvidia")
# On CUDA the forward pass is cheap and decoding, HTTP and JSON are the work, all on the CPU. Measured on
# an H200 with 16 cores (docs/benchmarks/gpu-workers.json): single images peaked at 8 workers (6,229 req/s
# against 1,496 for one, 4,102 for 16), each worker holding 832 MiB of GPU memory. So half the cores, and
# at most half the GPU's memory.
CUDA_WORKER_MIB = 832

# Set by the supervisor for its workers: how many there are, and where their metrics go.
WORKERS_ENV = "SAE_WORKERS"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def cuda_memory_mib() -> int:
    """The GPU's memory in MiB, asked of torch in a process of its own (1.4 s here); 0 if CUDA is unusable."""
    done = subprocess.run([sys.executable, "-c", CUDA_PROBE], capture_output=True, text=True)
    try:
        return int(done.stdout.strip()) if done.returncode == 0 else 0
    except ValueError:
        return 0


def cuda_workers(memory_mib: int) -> int:
    return max(1, min(usable_cores() // 2, memory_mib // (2 * CUDA_WORKER_MIB)))


def worker_count(settings: Settings) -> int:
    """SAE_WORKERS, or by default one worker per core on the CPU, and on CUDA half the cores (see CUDA_WORKER_MIB)."""
    if settings.workers:
        return settings.workers
    if settings.device == "cpu":
        return usable_cores()
    memory = cuda_memory_mib() if any(Path(p).exists() for p in NVIDIA_DRIVER_PATHS) else 0
    if memory:
        return cuda_workers(memory)
    # SAE_DEVICE=cuda without a GPU: one worker, which refuses to start with the reason.
    return 1 if settings.device == "cuda" else usable_cores()


def serve_forever_quietly_on_sigterm() -> None:
    # uvicorn finishes in-flight requests on SIGTERM, then re-raises the signal to the previous
    # handler; a graceful shutdown is a clean exit, so that handler does nothing and we exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)


def worker_app() -> "FastAPI":
    """The app of one worker process (uvicorn's factory): its share of the cores, its logging, its models."""
    import torch

    from service.app import create_app

    # A forked worker inherits the supervisor's cached settings, read before it set SAE_WORKERS: read them anew.
    get_settings.cache_clear()
    settings = get_settings()  # uvicorn's own SIGTERM handler is in place by now: leave it be
    configure_logging(settings)
    threads = max(1, usable_cores() // max(1, settings.workers))
    torch.set_num_threads(threads)
    logging.getLogger("sae_serve").info("worker of %d: %d torch threads", settings.workers, threads)
    return create_app(settings)


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, but SIGHUP reloads every worker's models in place instead of restarting it,
    and SIGTERM closes the supervisor's copy of the listening socket, so that once the draining workers have
    closed theirs new connections are refused (a load balancer then tries another replica at once) rather
    than left waiting in the backlog."""

    def handle_term(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().handle_term()

    def handle_hup(self) -> None:
        logging.getLogger("sae_serve").info("SIGHUP: every worker reloads its models")
        # A reload drops the repository API's changes (service.registry), in the workers started later too.
        Path(os.environ[REPOSITORY_STATE_ENV]).unlink(missing_ok=True)
        self.forward(signal.SIGHUP)

    def handle_usr1(self) -> None:
        """A worker changed the model repository: every worker applies the change (service.registry)."""
        self.forward(signal.SIGUSR1)

    def forward(self, signum: int) -> None:
        for process in self.processes:
            if process.pid is not None:
                os.kill(process.pid, signum)


def preload() -> None:
    """What every worker imports, imported once in the supervisor so that the forked workers share it.

    Importing starts no thread pool and does not initialise CUDA; the workers set their torch threads
    and load their models after the fork."""
    import torch  # noqa: F401

    import service.app  # noqa: F401

    # The collector then leaves these objects alone: a worker scanning them would copy their pages.
    gc.freeze()


def _forked_worker_started(config: Config, target: "Callable[..., None]", sockets: "list[socket]") -> None:
    # Until uvicorn installs its own handlers, a worker takes signals the default way, not the supervisor's.
    for signum in uvicorn_multiprocess.SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the app takes it: a new worker reads the changes anyway
    subprocess_started(config, target, sockets, stdin_fileno=None)


def forked_subprocess(config: Config, target: "Callable[..., None]", sockets: "list[socket]") -> "ForkProcess":
    """uvicorn's get_subprocess, forking the supervisor instead of spawning a new interpreter."""
    fork = multiprocessing.get_context("fork")
    return fork.Process(target=_forked_worker_started, args=(config, target, sockets))


def uvicorn_options(settings: Settings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "log_config": None,  # uvicorn's loggers go through the service's handler
        "access_log": False,  # the service writes its own access line for each request
        "http": OneWriteHttpToolsProtocol,  # a response's head and body in one send (service/http1.py)
    }


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    workers = worker_count(settings)
    if workers == 1:
        from service.app import create_app

        serve_forever_quietly_on_sigterm()
        uvicorn.run(create_app(settings), **uvicorn_options(settings))  # type: ignore[arg-type]
        return
    metrics_dir = tempfile.mkdtemp(prefix="sae-metrics-")
    os.environ.update(
        {
            WORKERS_ENV: str(workers),
            SUPERVISOR_ENV: str(os.getpid()),
            METRICS_DIR_ENV: metrics_dir,
            REPOSITORY_STATE_ENV: str(Path(metrics_dir) / "repository.json"),
        }
    )
    config = uvicorn.Config("service.main:worker_app", factory=True, workers=workers, **uvicorn_options(settings))  # type: ignore[arg-type]
    preload()
    uvicorn_multiprocess.get_subprocess = forked_subprocess  # type: ignore[attr-defined,assignment]
    uvicorn_multiprocess.SIGNALS[signal.SIGUSR1] = "USR1"  # Supervisor.handle_usr1
    try:
        Supervisor(config, sockets=[config.bind_socket()]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
