"""The uvicorn internals service.workers.uvicorn_internals relies on still have the shape it expects.

An upgrade of uvicorn that moves or renames one of them fails here, by name, rather than at start-up.
"""

import inspect
import signal
import socket

import uvicorn.supervisors.multiprocess as uvicorn_multiprocess
from uvicorn._subprocess import subprocess_started
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.supervisors import Multiprocess

from service.workers import uvicorn_internals
from service.workers.http1 import OneWriteHttpToolsProtocol


def parameters(function: object) -> list[str]:
    assert callable(function)
    return list(inspect.signature(function).parameters)


def test_the_supervisor_makes_its_processes_through_get_subprocess() -> None:
    assert parameters(uvicorn_multiprocess.get_subprocess) == ["config", "target", "sockets"]  # type: ignore[attr-defined]
    source = inspect.getsource(uvicorn_multiprocess.Process.__init__)
    assert "get_subprocess(" in source  # looked up in the module when a process is made, so it can be replaced


def test_the_supervisor_dispatches_signals_by_name_to_handle_methods() -> None:
    names = uvicorn_multiprocess.SIGNALS
    assert isinstance(names, dict)
    assert names[signal.SIGTERM] == "TERM" and names[signal.SIGHUP] == "HUP"
    assert names[signal.SIGUSR1] == "USR1" and names[signal.SIGUSR2] == "USR2"  # the supervisor's handle_usr1/2
    assert "handle_{sig_name.lower()}" in inspect.getsource(Multiprocess.handle_signals).replace('"', "")
    assert callable(Multiprocess.handle_term) and callable(Multiprocess.handle_hup)


def test_a_worker_starts_through_subprocess_started() -> None:
    assert parameters(subprocess_started) == ["config", "target", "sockets", "stdin_fileno"]


def test_the_supervisor_keeps_its_processes_and_sockets() -> None:
    listening = socket.socket()
    try:
        supervisor = Multiprocess(Config("service.workers.main:worker_app", workers=2), sockets=[listening])
        assert supervisor.sockets == [listening] and supervisor.processes == []
    finally:
        listening.close()


def test_a_worker_process_names_its_pid() -> None:
    assert isinstance(inspect.getattr_static(uvicorn_multiprocess.Process, "pid"), property)


def test_subclassing_the_supervisor_installs_the_forking_process_maker() -> None:
    original = uvicorn_multiprocess.get_subprocess  # type: ignore[attr-defined]
    listening = socket.socket()
    try:

        def make_process(config: Config, target: object, sockets: list[socket.socket]) -> object:
            raise AssertionError("not called while constructing")

        supervisor = uvicorn_internals.SupervisorBase(Config("x:y", workers=2), [listening], make_process)  # type: ignore[arg-type]
        assert uvicorn_multiprocess.get_subprocess is make_process  # type: ignore[attr-defined]
        assert supervisor.worker_pids() == []
        supervisor.close_sockets()
        assert listening.fileno() == -1
    finally:
        uvicorn_multiprocess.get_subprocess = original  # type: ignore[attr-defined]
        listening.close()


def test_a_response_cycle_writes_through_its_transport_attribute() -> None:
    assert parameters(HttpToolsProtocol._start_asgi_task) == ["self", "cycle", "app"]
    assert "self.loop = " in inspect.getsource(HttpToolsProtocol.__init__)
    cycle_parameters = parameters(RequestResponseCycle.__init__)
    assert "transport" in cycle_parameters
    assert "self.transport.write(" in inspect.getsource(RequestResponseCycle.send)
    assert "self.response_started = True" in inspect.getsource(RequestResponseCycle.send)
    assert issubclass(OneWriteHttpToolsProtocol, HttpToolsProtocol)
