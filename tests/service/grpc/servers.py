"""A real `sae-serve` with gRPC on a free loopback port, and the JSON lines of its log."""

import json
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, start_server

MAX_IMAGES = 8  # SAE_MAX_BATCH_IMAGES of the servers here


@dataclass
class Server:
    url: str  # HTTP
    address: str  # gRPC, host:port
    process: subprocess.Popen[bytes]
    log_file: Path

    def log_lines(self) -> list[dict[str, object]]:
        text = self.log_file.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{") and line.endswith("}")]


@contextmanager
def serve(artifacts: Path, **env: str) -> Iterator[Server]:
    """A real `sae-serve` with gRPC on a free loopback port; stopped with SIGTERM, which must exit 0."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        log_file = Path(folder) / "server.log"
        process, url = start_server(
            artifacts, log_file, SAE_GRPC_PORT=str(port), SAE_MAX_BATCH_IMAGES=str(MAX_IMAGES), **env
        )
        try:
            yield Server(url, f"127.0.0.1:{port}", process, log_file)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=40) == 0
