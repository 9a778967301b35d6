"""docs/embeddings.md's recipe, run as written: `sae-train embed` into Parquet, LanceDB loading it, the service's
OpenAI API giving the query's embedding, and LanceDB's answers equal to /similar's."""

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.docs.scripts import DOCS, load_script
from tests.images import digit_like, png_bytes
from tests.servers import require_trained_artifacts, start_server
from training.cli import main as sae_train
from training.data import load_dataset

RECIPE = DOCS / "recipes" / "vector_database.py"


def compare(url: str, artifacts: Path, model: str, images: list[bytes], tmp_path: Path) -> None:
    """For each image: LanceDB's ten nearest over the export equal /similar's, index for index, distance for
    distance (both exact searches over the same vectors with the same query)."""
    recipe = load_script(RECIPE)
    parquet = tmp_path / f"{model}.parquet"
    assert sae_train(["embed", "--checkpoint", str(artifacts / model), "--out", str(parquet), "--device", "cpu"]) == 0
    table, version = recipe.load(parquet, tmp_path / "vectors.lancedb")
    assert version == f"{model}:1"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    for png in images:
        found = recipe.nearest(table, recipe.embedding(client, version, png), 10)
        answer = httpx.post(f"{url}/similar?model={model}&k=10", content=png, headers={"Content-Type": "image/png"})
        neighbours = answer.json()["results"][0]["neighbours"]
        assert [row["index"] for row in found] == [n["index"] for n in neighbours]
        assert [row["class_name"] for row in found] == [n["class_name"] for n in neighbours]
        np.testing.assert_allclose([row["distance"] for row in found], [n["distance"] for n in neighbours], atol=2e-6)


def test_the_recipe_answers_as_similar_does(tiny_artifacts: Path, tmp_path: Path) -> None:
    process, url = start_server(tiny_artifacts)
    try:
        compare(url, tiny_artifacts, "mnist", [png_bytes(digit_like(seed)) for seed in range(5)], tmp_path)
        parquet = tmp_path / "mnist.parquet"
        run = subprocess.run(
            [sys.executable, str(RECIPE), str(parquet), str(DOCS / "samples" / "digit-7.png"), "--url", url],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert len(run.stdout.splitlines()) == 5 and all(line.startswith("index") for line in run.stdout.splitlines())
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_the_recipe_answers_as_similar_does_on_the_trained_models(tmp_path: Path) -> None:
    artifacts = require_trained_artifacts()
    process, url = start_server(artifacts)
    try:
        for model in ("mnist", "fashion-mnist"):
            test_images = load_dataset(model).test_images[:20].numpy()
            (tmp_path / model).mkdir()
            compare(url, artifacts, model, [png_bytes(image) for image in test_images], tmp_path / model)
    finally:
        process.terminate()
        process.wait(timeout=30)
