import json
from pathlib import Path

import pytest
import torch

from models import CheckpointError, SAEConfig, StackedAutoencoder, load_checkpoint, save_checkpoint
from models.checkpoint import CARD_FILE, WEIGHTS_FILE


def saved(tmp_path: Path) -> tuple[StackedAutoencoder, Path]:
    torch.manual_seed(1)
    model = StackedAutoencoder(SAEConfig(hidden_dims=(64, 32), dropout=0.2)).eval()
    return model, save_checkpoint(model, {"dataset": "mnist"}, tmp_path / "ckpt")


def test_round_trip_rebuilds_the_same_model_from_the_card(tmp_path: Path) -> None:
    model, directory = saved(tmp_path)
    loaded = load_checkpoint(directory)
    assert loaded.model.config == model.config
    assert loaded.card["dataset"] == "mnist"
    assert len(loaded.card["weights_sha256"]) == 64
    x = torch.rand(3, 784)
    assert torch.equal(loaded.model.classify(x), model.classify(x))
    assert torch.equal(loaded.model.reconstruct(x), model.reconstruct(x))
    assert not loaded.model.training


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    _, directory = saved(tmp_path)
    weights = directory / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its card: sha256"):
        load_checkpoint(directory)


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    _, directory = saved(tmp_path)
    weights = directory / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_checkpoint(directory)


def test_missing_or_broken_card_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"card\.json not found"):
        load_checkpoint(tmp_path)
    _, directory = saved(tmp_path)
    (directory / CARD_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(directory)


def test_card_config_that_does_not_fit_the_weights_is_refused(tmp_path: Path) -> None:
    _, directory = saved(tmp_path)
    card = json.loads((directory / CARD_FILE).read_text())
    card["config"]["hidden_dims"] = [65, 32]
    (directory / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="weights do not fit the card's config"):
        load_checkpoint(directory)
