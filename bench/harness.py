"""What the benchmarks and the tests share: free loopback ports, PNG and multipart bodies, a real server process.

Standard library only at import (PIL comes in when a PNG is made): bench/serving/fork_memory.py imports this
module into the bare parent process whose memory it measures.
"""

import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BOUNDARY = "saebenchboundary"
MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


# Ports this process handed out: the kernel may give the same free port to two asks in a row, and a server given
# one port for HTTP and the same for gRPC would not start.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, and one this process has not handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def png_bytes(pixels: "np.ndarray") -> bytes:
    """A (28, 28) uint8 image as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(pngs: list[bytes]) -> bytes:
    """A multipart/form-data body (boundary BOUNDARY) with each PNG as a field `file`."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(pngs)
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def answers_ready(port: int) -> bool:
    """GET /health/ready on the loopback port answers 200 (a plain socket: no proxy, no HTTP client imported)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s, s.makefile("rb") as answer:
            s.sendall(b"GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status_line = answer.readline()
    except OSError:
        return False
    return status_line.split()[1:2] == [b"200"]


class Server:
    """A server process on 127.0.0.1:`port`, returned once GET /health/ready answers 200.

    It runs in a session of its own, so that `stop()` ends its worker processes too and `pids()` finds them.
    Its stderr goes to `log` when given, else to a file nobody keeps: a pipe nobody reads fills up under load,
    and the server then blocks on its next line.
    """

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        env: Mapping[str, str],
        log: Path | None = None,
        ready_within: float = 120.0,
    ) -> None:
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        self.started = time.monotonic()
        # The server keeps writing to its copy of the file once this one is closed.
        with log.open("w+b") if log else tempfile.TemporaryFile() as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=out,
                start_new_session=True,
            )
            deadline = time.monotonic() + ready_within
            while not answers_ready(port):
                exited = self.process.poll() is not None
                if exited or time.monotonic() > deadline:
                    self.stop()
                    out.seek(0)
                    tail = out.read().decode(errors="replace")[-5000:]
                    why = f"exited with {self.process.returncode}" if exited else f"not ready in {ready_within:g} s"
                    raise RuntimeError(f"{name} {why}: {tail}")
                time.sleep(0.1)
        self.ready_seconds = time.monotonic() - self.started

    def pids(self) -> set[int]:
        return session_pids(self.process.pid)

    def stop(self) -> None:
        """SIGTERM to every process of the session; SIGKILL after 30 s."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def sae_serve_command() -> list[str]:
    """The installed `sae-serve`; `python -m service` where the project is only on PYTHONPATH (bench/gpu)."""
    script = Path(sys.executable).parent / "sae-serve"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "service"]


def start_sae_serve(
    artifacts: Path, settings: Mapping[str, str], log: Path | None = None, ready_within: float = 120.0
) -> Server:
    """`sae-serve` on a free loopback port serving `artifacts`, with these SAE_* variables over its defaults."""
    port = free_port()
    env = {"SAE_HOST": "127.0.0.1", "SAE_PORT": str(port), "SAE_ARTIFACTS_DIR": str(artifacts.resolve()), **settings}
    return Server("sae-serve", sae_serve_command(), port, env, log, ready_within)


def session_pids(leader: int) -> set[int]:
    """Every process of the session `leader` started (the supervisor, its workers and helpers), from /proc."""
    found = {leader}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == leader:  # field 6: session id
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def memory_mb(pids: Iterable[int]) -> dict[str, float]:
    """PSS, USS and RSS in MB, summed over the processes (one that has exited counts nothing)."""
    totals = {"pss": 0.0, "uss": 0.0, "rss": 0.0}
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", rollup, re.M)}
        totals["pss"] += fields.get("Pss", 0) / 1024
        totals["uss"] += (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024
        totals["rss"] += fields.get("Rss", 0) / 1024
    return totals
