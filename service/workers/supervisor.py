"""The supervisor of several workers: it holds the listening socket, forks the workers, replaces one that dies,
and passes signals on (SIGHUP reloads every worker's models, as does SIGUSR2 from a worker that answered
/admin/reload; SIGUSR1 shares a repository change; SIGTERM drains)."""

import logging
import multiprocessing
import os
import signal
from pathlib import Path
from socket import socket

from uvicorn.config import Config

from service.workers.uvicorn_internals import SupervisorBase, WorkerTarget, forking, start_worker, supervised_signals

log = logging.getLogger("sae_serve")


def forked_worker_started(config: Config, target: WorkerTarget, sockets: list[socket]) -> None:
    # Until uvicorn installs its own handlers, a worker takes signals the default way, not the supervisor's.
    for signum in supervised_signals():
        signal.signal(signum, signal.SIG_DFL)
    # Until the app takes them: a new worker reads the repository's changes and its models anyway.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    start_worker(config, target, sockets)


class Supervisor(SupervisorBase):
    """uvicorn's worker supervisor, forking its workers from this process instead of spawning new interpreters.
    SIGHUP reloads every worker's models in place instead of restarting it, and SIGTERM closes the supervisor's
    copy of the listening socket, so that once the draining workers have closed theirs new connections are
    refused (a load balancer then tries another replica at once) rather than left waiting in the backlog."""

    def __init__(self, config: Config, sockets: list[socket], repository_state: Path, reload_on_sighup: bool) -> None:
        super().__init__(config, sockets, forking(multiprocessing.get_context("fork"), forked_worker_started))
        self.repository_state = repository_state
        self.reload_on_sighup = reload_on_sighup

    def handle_term(self) -> None:
        self.close_sockets()
        super().handle_term()

    def handle_hup(self) -> None:
        if not self.reload_on_sighup:
            log.info("SIGHUP ignored: SAE_RELOAD_ON_SIGHUP is off")
            return
        log.info("SIGHUP: every worker reloads its models")
        self.reload_workers()

    def handle_usr2(self) -> None:
        """A worker answered /admin/reload: every worker reloads, whatever SAE_RELOAD_ON_SIGHUP says."""
        self.reload_workers()

    def reload_workers(self) -> None:
        # A reload drops the repository API's changes (service.workers.sync), in the workers started later too.
        self.repository_state.unlink(missing_ok=True)
        self.forward(signal.SIGUSR2)

    def handle_usr1(self) -> None:
        """A worker changed the model repository: every worker applies the change (service.core.sync)."""
        self.forward(signal.SIGUSR1)

    def forward(self, signum: int) -> None:
        for pid in self.worker_pids():
            os.kill(pid, signum)
