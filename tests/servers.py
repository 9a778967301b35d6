"""Real `sae-serve` processes on free loopback ports, for the tests that need a real server."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from models.checkpoint import checkpoint_versions

# The checkpoints `make models` trains; the slow tests serve them.
TRAINED_ARTIFACTS = Path(os.environ.get("SAE_TEST_ARTIFACTS", "artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(artifacts: Path, log_file: Path | None = None, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `sae-serve` on a free port with the given artifacts and SAE_* variables; return it once ready. Its log
    goes to `log_file` when given (for the test to read), else to a file nobody keeps."""
    port = free_port()
    variables = {
        **os.environ,
        "SAE_HOST": "127.0.0.1",
        "SAE_PORT": str(port),
        "SAE_ARTIFACTS_DIR": str(artifacts),
        "SAE_DEVICE": "cpu",
        "SAE_WORKERS": "1",
        "SAE_GRPC_PORT": "0",  # gRPC off unless a test asks for it on a port of its own
        **env,
    }
    script = Path(sys.executable).parent / "sae-serve"
    # The log goes to a file: a pipe nobody reads fills up under load, and the server then blocks on its next line.
    # The server keeps writing to its copy of the file once this one is closed.
    with log_file.open("w+b") if log_file else tempfile.TemporaryFile() as log:
        process = subprocess.Popen([str(script)], env=variables, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"sae-serve exited: {log.read().decode(errors='replace')[-5000:]}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    return process, url
            except httpx.TransportError:
                time.sleep(0.1)
        process.kill()
    pytest.fail("sae-serve did not become ready within 60 s")


def require_trained_artifacts() -> Path:
    for name in ("mnist", "fashion-mnist"):
        if not checkpoint_versions(TRAINED_ARTIFACTS / name):
            pytest.fail(f"no trained checkpoint in {TRAINED_ARTIFACTS / name}; run `make models` (make test does)")
    return TRAINED_ARTIFACTS
