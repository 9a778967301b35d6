"""The reference set training writes, `sae-train export` adding it to an older checkpoint, and `sae-train embed`."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models import load_checkpoint, to_model_input
from models.card import REFERENCE_FILE
from models.layout import CARD_FILE, read_card, write_card
from models.reference import map_reference, normalised
from training.calibration import validation_split
from training.cli import main
from training.data import load_dataset
from training.reference import VOTE_KS


def test_training_writes_the_reference_set_of_its_training_images(tiny_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    assert main(["train", "--dataset", "mnist", "--dry-run", "--out", str(out), "--device", "cpu"]) == 0
    checkpoint = load_checkpoint(out / "mnist")
    card, data = checkpoint.card, load_dataset("mnist", tiny_data_dir)
    assert card.reference is not None and card.embedding is not None
    assert (card.embedding.layer, card.embedding.dim) == (2, 256) and card.reference.vote_k in VOTE_KS
    assert card.calibration is not None
    train_index, validation_index = validation_split(data.train_labels, card.calibration.validation_examples, 0)
    reference = map_reference(checkpoint.path / REFERENCE_FILE, 256, 10)
    assert reference.indices.tolist() == train_index.tolist()  # the training images, the validation split held out
    assert not set(reference.indices.tolist()) & set(validation_index.tolist())
    np.testing.assert_array_equal(reference.labels, data.train_labels[train_index].numpy())
    np.testing.assert_array_equal(reference.images, data.train_images[train_index].reshape(-1, 784).numpy())
    with torch.inference_mode():
        codes = checkpoint.model.encode(to_model_input(data.train_images[train_index]))
    np.testing.assert_allclose(reference.vectors, normalised(codes.numpy()), atol=1e-6)
    assert 0 <= card.reference.vote_test_accuracy <= 1 and card.reference.size == len(train_index)


def test_export_adds_the_reference_set_to_a_checkpoint_written_before_them(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "artifacts"
    assert main(["train", "--dataset", "mnist", "--dry-run", "--out", str(out), "--device", "cpu"]) == 0
    folder = out / "mnist" / "1"
    written = map_reference(folder / REFERENCE_FILE, 256, 10)
    expected = (written.indices.copy(), written.vectors.copy())
    del written
    (folder / REFERENCE_FILE).unlink()
    write_card(folder, replace(read_card(folder), embedding=None, reference=None))  # as a format 5 card was
    raw = json.loads((folder / CARD_FILE).read_text())
    assert "reference" not in raw and "embedding" not in raw
    assert main(["export", str(out / "mnist"), "--device", "cpu"]) == 0
    assert "reference set of" in capsys.readouterr().out
    card = read_card(folder)
    assert card.reference is not None and card.embedding is not None
    again = map_reference(folder / REFERENCE_FILE, 256, 10)
    np.testing.assert_array_equal(again.indices, expected[0])
    np.testing.assert_allclose(again.vectors, expected[1], atol=1e-6)
    assert main(["export", str(out / "mnist"), "--device", "cpu"]) == 0
    assert "has its graph and reference set; not exported again" in capsys.readouterr().out


def test_embed_writes_parquet_with_its_manifest_equal_to_the_reference_file(
    tiny_artifacts: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mnist.parquet"
    assert main(["embed", "--checkpoint", str(tiny_artifacts / "mnist"), "--out", str(out), "--device", "cpu"]) == 0
    table = pq.read_table(out)
    manifest = json.loads(table.schema.metadata[b"sae_serve"])
    assert manifest["model"] == "mnist" and manifest["version"] == 1 and manifest["split"] == "reference"
    assert manifest["embedding"] == {"layer": 2, "dim": 256, "normalisation": "l2", "metric": "cosine"}
    reference = map_reference(tiny_artifacts / "mnist" / REFERENCE_FILE, 256, 10)
    assert table.column("index").to_pylist() == reference.indices.tolist()
    assert table.column("class_name").to_pylist() == [str(label) for label in reference.labels.tolist()]
    np.testing.assert_array_equal(np.array(table.column("vector").to_pylist(), np.float32), reference.vectors)


def test_embed_writes_npy_arrays_of_a_split_computed_afresh(
    tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "artifacts"
    assert main(["train", "--dataset", "mnist", "--dry-run", "--out", str(out), "--device", "cpu"]) == 0
    monkeypatch.setenv("SAE_ARTIFACTS_DIR", str(out))
    target = tmp_path / "test-embeddings"
    args = [
        "embed",
        "--dataset",
        "mnist",
        "--split",
        "test",
        "--format",
        "npy",
        "--out",
        str(target),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    data = load_dataset("mnist", tiny_data_dir)
    vectors = np.load(target / "vectors.npy")
    assert vectors.shape == (len(data.test_labels), 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(np.load(target / "labels.npy"), data.test_labels.numpy())
    np.testing.assert_array_equal(np.load(target / "indices.npy"), np.arange(len(data.test_labels)))
    assert json.loads((target / "manifest.json").read_text())["split"] == "test"
    version_folder = [
        "embed",
        "--checkpoint",
        str(out / "mnist" / "1"),
        "--format",
        "npy",
        "--out",
        str(tmp_path / "v"),
    ]
    assert main([*version_folder, "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "v" / "manifest.json").read_text())["version"] == 1


def test_embed_names_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", "--checkpoint", str(tmp_path), "--device", "cpu"]) == 1
    assert "holds no checkpoint" in capsys.readouterr().err
