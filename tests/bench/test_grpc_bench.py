"""bench/serving/grpc_bench.py as a smoke run of a few seconds on the trained models (slow), so that it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import require_trained_artifacts

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_every_cell_is_measured_and_answered_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "grpc_bench.txt"
    command = [sys.executable, "-m", "bench.serving.grpc_bench", "--seconds", "0.3", "--warmup", "0.1"]
    command += ["--artifacts", str(require_trained_artifacts().resolve()), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    cells = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    one_image = ["gRPC ModelInfer, 1", "REST /v2 infer (binary), 1", "REST /classify (raw), 1"]
    loads = [*one_image, "gRPC ModelInfer, 256", "REST /v2 infer (binary), 256"]
    assert [(c["load"].split(" image")[0], c["concurrency"]) for c in cells] == [
        (load, level) for load in loads for level in (1, 64)
    ]
    assert all(c["requests"] > 0 and c["errors"] == 0 for c in cells)
    assert len([row for row in out.read_text().splitlines() if row.startswith("| ")]) == 1 + len(cells)
