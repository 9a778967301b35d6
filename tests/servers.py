"""Real `sae-serve` processes on free loopback ports (bench.harness starts them), for the tests that need one."""

import os
import subprocess
from pathlib import Path

import pytest

from bench.harness import free_port, start_sae_serve
from models.layout import checkpoint_versions

__all__ = ["TRAINED_ARTIFACTS", "free_port", "require_trained_artifacts", "start_server"]

# The checkpoints `make models` trains; the slow tests serve them.
TRAINED_ARTIFACTS = Path(os.environ.get("SAE_TEST_ARTIFACTS", "artifacts"))


def start_server(artifacts: Path, log_file: Path | None = None, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `sae-serve` on a free port with the given artifacts and SAE_* variables; return it once ready. Its log
    goes to `log_file` when given (for the test to read). One worker on the CPU and gRPC off unless a test asks."""
    settings = {"SAE_DEVICE": "cpu", "SAE_WORKERS": "1", "SAE_GRPC_PORT": "0", **env}
    try:
        server = start_sae_serve(artifacts, settings, log_file, ready_within=60)
    except RuntimeError as e:
        pytest.fail(str(e))
    return server.process, server.url


def require_trained_artifacts() -> Path:
    for name in ("mnist", "fashion-mnist"):
        if not checkpoint_versions(TRAINED_ARTIFACTS / name):
            pytest.fail(f"no trained checkpoint in {TRAINED_ARTIFACTS / name}; run `make models` (make test does)")
    return TRAINED_ARTIFACTS
