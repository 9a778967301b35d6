"""The Docker engine for the deployment tests (deploy/testbed), and the figures they measure, printed at the end."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.figures import FIGURES
from tests.deploy.project import ROOT

TESTBED = ROOT / "deploy" / "testbed" / "testbed.py"


@pytest.fixture(scope="session")
def docker_env() -> Iterator[dict[str, str]]:
    """Environment for docker and docker compose commands against the testbed's engine, started if needed."""
    directory = Path(os.environ.get("SAE_TESTBED_DIR", "/var/lib/sae-serve-testbed"))
    already_running = (directory / "started-by-testbed.pid").exists()
    result = subprocess.run([sys.executable, str(TESTBED), "up"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"testbed up failed:\n{result.stderr}")
    yield {**os.environ, **json.loads(result.stdout)}
    if not already_running:  # stop the engine only if this run started it
        subprocess.run([sys.executable, str(TESTBED), "down"], check=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("deployment figures (this machine, this run)")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
