"""bench/gpu/gpu_check.py, the check a GPU machine runs, as a dry run on the CPU (slow), so it cannot rot here."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from models.layout import newest_version
from tests.servers import require_trained_artifacts

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def dry_run(out: Path, reference: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    command = [sys.executable, "-m", "bench.gpu.gpu_check", "--device", "cpu", "--quick"]
    command += ["--out", str(out), "--reference", str(reference)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done, json.loads((out / "gpu.json").read_text())


def test_every_part_runs_and_passes_on_the_cpu(tmp_path: Path) -> None:
    done, result = dry_run(tmp_path, require_trained_artifacts())
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    checks = {c["name"]: c for c in result["checks"]}
    assert all(c["passed"] for c in checks.values())
    assert {"mnist trains on cpu", "fashion-mnist trains on cpu"} <= set(checks)
    assert set(result["parity"]) == {
        f"{name} {kind}" for name in ("mnist", "fashion-mnist") for kind in ("reference", "device-trained")
    }
    assert all(figures["images"] == 10_000 and figures["labels_differ"] == 0 for figures in result["parity"].values())
    assert set(result["http_accuracy_cpu"]) == {"mnist", "fashion-mnist", "mnist-reference", "fashion-mnist-reference"}
    throughput = result["throughput"]
    assert set(throughput["servers"]) == {"1 worker(s)", "2 worker(s)"}
    assert set(throughput["servers"]["1 worker(s)"]) >= {"batch_raw c8", "batch_png c8", "one_png c1", "one_png c64"}
    assert all(rate > 0 for rate in throughput["ceilings"].values())
    assert result["environment"]["device"] == "cpu" and result["environment"]["torch"]


def test_a_card_that_does_not_match_its_weights_fails_the_check(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    for name in ("mnist", "fashion-mnist"):
        shutil.copytree(require_trained_artifacts() / name, reference / name)
    card_path = newest_version(reference / "mnist") / "card.json"
    card = json.loads(card_path.read_text())
    card["metrics"]["test_accuracy"] = round(card["metrics"]["test_accuracy"] - 0.001, 4)  # ten images fewer
    card_path.write_text(json.dumps(card))

    done, result = dry_run(tmp_path / "out", reference)
    assert done.returncode == 1
    failed = [c["name"] for c in result["checks"] if not c["passed"]]
    assert failed == ["mnist-reference over HTTP on cpu"], done.stdout[-5000:]
