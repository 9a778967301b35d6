"""The runtime choice (service/core/runtime.py): torch and ONNX Runtime answer alike, each where it is chosen, and a
server without torch serves the ONNX graphs."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.layout import GRAPH_FILE, read_card, write_card
from service.app import create_app
from service.core.runtime import place
from tests.images import digit_like, png_bytes
from tests.servers import start_server
from tests.service.apps import make_settings

# Imported first by any Python started with this folder on its PYTHONPATH: torch cannot be found, as in the slim image.
NO_TORCH = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
"""


def without_graph(artifacts: Path, name: str) -> None:
    """Make the model's checkpoint one written before there were graphs."""
    directory = artifacts / name
    write_card(directory, replace(read_card(directory), graph=None))
    (directory / GRAPH_FILE).unlink()


def classify(client: TestClient | httpx.Client, model: str, pixels: np.ndarray) -> list[dict[str, object]]:
    response = client.post(
        f"/classify?model={model}&top_k=10",
        content=pixels.tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def runtimes(client: TestClient | httpx.Client) -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["runtime"], m["device"]) for m in client.get("/models").json()["models"] if m["runtime"]}


def test_the_choices_resolve_or_are_refused_with_the_reason() -> None:
    assert (place("auto", "cpu").runtime, place("auto", "cpu").device) == ("auto", "cpu")
    assert place("torch", "cpu").runtime == "torch"
    assert place("onnxruntime", "auto").device == "cpu"
    with pytest.raises(ValueError, match="SAE_RUNTIME=onnxruntime runs on the CPU"):
        place("onnxruntime", "cuda")


def test_torch_and_onnxruntime_give_the_same_answers_and_say_which_serves(tiny_artifacts: Path) -> None:
    pixels = np.stack([digit_like(seed) for seed in range(40)] + [np.zeros((28, 28), np.uint8)])
    answers = {}
    for runtime in ("torch", "onnxruntime", "auto"):
        with TestClient(create_app(make_settings(tiny_artifacts, runtime=runtime))) as client:
            expected = "torch" if runtime == "torch" else "onnxruntime"
            assert runtimes(client) == {"mnist": (expected, "cpu"), "fashion-mnist": (expected, "cpu")}
            answers[runtime] = classify(client, "mnist", pixels)
    for ours, theirs in zip(answers["onnxruntime"], answers["torch"], strict=True):
        assert ours["label"] == theirs["label"] and ours["in_distribution"] == theirs["in_distribution"]
        for field in ("reconstruction_error", "ood_score"):
            assert ours[field] == pytest.approx(theirs[field], abs=1e-5)
        probabilities = ours["probabilities"]
        assert isinstance(probabilities, dict) and isinstance(theirs["probabilities"], dict)
        assert probabilities == pytest.approx(theirs["probabilities"], abs=1e-5)
    assert answers["auto"] == answers["onnxruntime"]


def test_a_checkpoint_without_its_graph_runs_in_torch_under_auto_and_is_refused_by_onnxruntime(
    tiny_artifacts: Path,
) -> None:
    without_graph(tiny_artifacts, "fashion-mnist")
    with TestClient(create_app(make_settings(tiny_artifacts, runtime="auto"))) as client:
        assert runtimes(client) == {"mnist": ("onnxruntime", "cpu"), "fashion-mnist": ("torch", "cpu")}
    with TestClient(create_app(make_settings(tiny_artifacts, runtime="onnxruntime"))) as client:
        assert runtimes(client)["mnist"] == ("onnxruntime", "cpu")
        failed = next(m for m in client.get("/models").json()["models"] if m["name"] == "fashion-mnist")
        assert "names no ONNX graph" in failed["error"] and "sae-train export" in failed["error"]


def test_a_server_that_cannot_import_torch_serves_the_graphs(tiny_artifacts: Path, tmp_path: Path) -> None:
    hook = tmp_path / "no-torch"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_TORCH)
    blocked = subprocess.run(
        [sys.executable, "-c", "import torch"], env={"PYTHONPATH": str(hook)}, capture_output=True, text=True
    )
    assert "No module named 'torch'" in blocked.stderr  # the hook works
    without_graph(tiny_artifacts, "fashion-mnist")
    process, url = start_server(tiny_artifacts, PYTHONPATH=str(hook), SAE_WORKERS="2")
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert runtimes(client) == {"mnist": ("onnxruntime", "cpu")}
            response = client.post("/classify", files={"file": ("d.png", png_bytes(digit_like(3)), "image/png")})
            assert response.status_code == 200 and response.json()["predictions"][0]["in_distribution"] in (True, False)
            failed = next(m for m in client.get("/models").json()["models"] if m["name"] == "fashion-mnist")
            assert "torch is not installed" in failed["error"] and "sae-train export" in failed["error"]
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_the_supervisor_preloads_only_the_runtime_its_workers_will_use() -> None:
    probe = (
        "import json, sys; from service.workers.main import get_settings, preload; preload(get_settings()); "
        "print(json.dumps([m for m in ('torch', 'onnxruntime') if m in sys.modules]))"
    )
    for runtime, expected in (("auto", ["onnxruntime"]), ("onnxruntime", ["onnxruntime"]), ("torch", ["torch"])):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env={"SAE_RUNTIME": runtime, "SAE_DEVICE": "cpu", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == expected, runtime


def test_without_the_nvidia_driver_auto_serves_the_graphs_without_importing_torch(tiny_artifacts: Path) -> None:
    """torch is installed here; with no driver there is no CUDA to ask it about, so it is never imported."""
    probe = (
        "import json, sys; from pathlib import Path; from service.core import runtime; "
        "runtime.NVIDIA_DRIVER_PATHS = ('/nonexistent/nvidiactl',); "
        "from service.core.repository import load_models; "
        f"loaded = load_models(Path({str(tiny_artifacts)!r}), runtime.place('auto', 'auto')); "
        "print(json.dumps([sorted(loaded.models), 'torch' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["fashion-mnist", "mnist"], False]


def test_a_graph_that_does_not_take_pixels_fails_its_version_alone(tiny_artifacts: Path) -> None:
    """A graph that matches its card's sha256 but not the pass (another input) is that version's failure, with the
    reason; the other models serve."""
    import onnx

    from models.layout import sha256_file

    directory = tiny_artifacts / "fashion-mnist"
    graph = onnx.load(str(directory / GRAPH_FILE))
    graph.graph.input[0].name = "image"
    for node in graph.graph.node:
        node.input[:] = ["image" if name == "pixels" else name for name in node.input]
    onnx.save(graph, str(directory / GRAPH_FILE))
    card = read_card(directory)
    assert card.graph is not None
    write_card(directory, replace(card, graph=replace(card.graph, sha256=sha256_file(directory / GRAPH_FILE))))
    with TestClient(create_app(make_settings(tiny_artifacts, runtime="onnxruntime"))) as client:
        assert runtimes(client) == {"mnist": ("onnxruntime", "cpu")}
        failed = next(m for m in client.get("/models").json()["models"] if m["name"] == "fashion-mnist")
        assert "the graph takes" in failed["error"] and "'pixels'" in failed["error"]


def test_torch_asked_for_where_it_is_not_installed_is_refused_with_the_reason(tmp_path: Path) -> None:
    hook = tmp_path / "no-torch"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_TORCH)
    probe = "from service.core.runtime import place; place('torch', 'cpu')"
    done = subprocess.run(
        [sys.executable, "-c", probe], env={"PYTHONPATH": str(hook)}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "SAE_RUNTIME=torch but torch is not installed" in done.stderr
