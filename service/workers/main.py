"""`sae-serve`: run the service under uvicorn with the settings from the environment, in one or several processes.

With SAE_WORKERS above 1, a supervisor process (service.workers.supervisor) holds the listening socket and runs
that many worker processes, each a whole service with its own models. Prometheus metrics are then kept in
files that /metrics sums over the workers.

The supervisor imports the app and the runtime its workers will use once, then forks the workers (uvicorn would
spawn fresh interpreters that import everything again): they share those pages copy-on-write (the memory saved
is measured, with torch, by `python -m bench.serving.fork_memory`). It never runs a forward, starts a thread pool
or touches CUDA before forking; each worker does all of that itself.
"""

import gc
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from service.core.runtime import installed, nvidia_driver
from service.core.settings import (
    METRICS_DIR_ENV,
    REPOSITORY_STATE_ENV,
    SUPERVISOR_ENV,
    WORKERS_ENV,
    Settings,
    get_settings,
)
from service.workers.http1 import OneWriteHttpToolsProtocol
from service.workers.logs import configure_logging
from service.workers.supervisor import Supervisor

if TYPE_CHECKING:
    from fastapi import FastAPI

    from service.core.dataplane import DataPlane

# Asking torch about CUDA initialises the CUDA driver, which a forked worker then cannot use, and the worker
# count is needed before anything is imported: so a process of its own asks for the GPU's memory in MiB
# (0: no usable CUDA).
CUDA_PROBE = (
    "import torch; print(torch.cuda.get_device_properties(0).total_memory // 2**20 if torch.cuda.is_available() else 0)"
)
# On CUDA the forward pass is cheap and decoding, HTTP and JSON are the work, all on the CPU: throughput peaks
# near half the cores (docs/benchmarks/gpu-workers.json, docs/benchmarks.md). Each worker holds this much GPU
# memory, and the workers take at most half of it.
CUDA_WORKER_MIB = 832


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def cuda_memory_mib() -> int:
    """The GPU's memory in MiB, asked of torch in a process of its own; 0 if CUDA is unusable."""
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
    if settings.device == "cpu" or settings.runtime == "onnxruntime":  # ONNX Runtime serves on the CPU
        return usable_cores()
    memory = cuda_memory_mib() if nvidia_driver() else 0
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
    from service.app import create_app
    from service.workers.sync import WorkerSync

    # A forked worker inherits the supervisor's cached settings, read before it set SAE_WORKERS: read them anew.
    get_settings.cache_clear()
    settings = get_settings()  # uvicorn's own SIGTERM handler is in place by now: leave it be
    configure_logging(settings)
    threads = max(1, usable_cores() // max(1, settings.workers))
    settings = settings.model_copy(update={"intra_op_threads": threads})
    logging.getLogger("sae_serve").info("worker of %d: %d intra-op threads", settings.workers, threads)
    peers = WorkerSync(settings.repository_state, max(1, settings.workers), settings.supervisor_pid)
    return create_app(settings, peers, partial(follow_signals, settings, True))


def follow_signals(settings: Settings, shared: bool, plane: "DataPlane") -> None:
    """The process's signals, once it serves (service.workers.sync.watch_signals)."""
    from service.workers.sync import watch_signals

    watch_signals(plane.repository, settings.reload_on_sighup, shared)


def preload(settings: Settings) -> None:
    """What every worker imports, imported once in the supervisor so that the forked workers share it.

    Importing starts no thread pool and does not initialise CUDA; the workers set their threads and load their
    models after the fork. Only the runtime the models will run in is imported: a server of ONNX graphs never
    imports torch."""
    import service.app  # noqa: F401

    for runtime in runtimes_to_preload(settings):
        importlib.import_module(runtime)

    # The collector then leaves these objects alone: a worker scanning them would copy their pages.
    gc.freeze()


def runtimes_to_preload(settings: Settings) -> list[str]:
    """The runtime packages the workers will import (service.core.runtime.place): torch where it serves, on CUDA
    or by choice, ONNX Runtime otherwise where it is installed (a checkpoint without its graph then has a worker
    import torch for itself)."""
    on_cuda = settings.runtime != "onnxruntime" and (
        settings.device == "cuda" or (settings.device == "auto" and nvidia_driver() and installed("torch"))
    )
    onnx = installed("onnxruntime") and settings.runtime != "torch" and not on_cuda
    torch = installed("torch") and not onnx
    return [name for name, wanted in (("onnxruntime", onnx), ("torch", torch)) if wanted]


def uvicorn_options(settings: Settings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "log_config": None,  # uvicorn's loggers go through the service's handler
        "access_log": False,  # the service writes its own access line for each request
        "http": OneWriteHttpToolsProtocol,  # a response's head and body in one send (service/workers/http1.py)
    }


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    workers = worker_count(settings)
    if workers == 1:
        from service.app import create_app

        serve_forever_quietly_on_sigterm()
        app = create_app(settings, on_serving=partial(follow_signals, settings, False))
        uvicorn.run(app, **uvicorn_options(settings))  # type: ignore[arg-type]
        return
    metrics_dir = tempfile.mkdtemp(prefix="sae-metrics-")
    repository_state = Path(metrics_dir) / "repository.json"
    # What the workers' Settings read (service.core.settings): set before the fork, so every worker inherits it.
    os.environ.update(
        {
            WORKERS_ENV: str(workers),
            SUPERVISOR_ENV: str(os.getpid()),
            METRICS_DIR_ENV: metrics_dir,
            REPOSITORY_STATE_ENV: str(repository_state),
        }
    )
    options = uvicorn_options(settings)
    config = uvicorn.Config("service.workers.main:worker_app", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    preload(settings)
    try:
        Supervisor(config, [config.bind_socket()], repository_state, settings.reload_on_sighup).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
