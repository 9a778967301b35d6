import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from models import MNIST_FRAMING, CheckpointError, SAEConfig, StackedAutoencoder, load_checkpoint, save_checkpoint
from models.card import FORMAT_VERSION, Framing, ModelCard
from models.layout import CARD_FILE, WEIGHTS_FILE
from tests.checkpoints import make_card


def saved(tmp_path: Path) -> tuple[StackedAutoencoder, Path]:
    torch.manual_seed(1)
    model = StackedAutoencoder(SAEConfig(hidden_dims=(64, 32), dropout=0.2)).eval()
    directory = tmp_path / "ckpt"
    save_checkpoint(model, make_card("mnist", [str(d) for d in range(10)]), directory)
    return model, directory


def test_round_trip_rebuilds_the_same_model_from_the_card(tmp_path: Path) -> None:
    model, directory = saved(tmp_path)
    loaded = load_checkpoint(directory)
    assert loaded.model.config == model.config == loaded.card.config
    assert loaded.card.dataset == "mnist" and loaded.card.framing == MNIST_FRAMING
    assert len(loaded.card.weights_sha256) == 64
    assert json.loads((directory / CARD_FILE).read_text())["format_version"] == FORMAT_VERSION
    x = torch.rand(3, 784)
    assert torch.equal(loaded.model.classify(x), model.classify(x))
    assert torch.equal(loaded.model.reconstruct(x), model.reconstruct(x))
    assert not loaded.model.training


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_the_weights_get_the_mode_the_card_gets_from_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        _, directory = saved(tmp_path)
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE((directory / name).stat().st_mode) for name in (WEIGHTS_FILE, CARD_FILE)}
    assert modes == {WEIGHTS_FILE: mode, CARD_FILE: mode}


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


CALIBRATION = {
    "temperature": 1.5,
    "validation_examples": 5000,
    "in_distribution_threshold": 0.07,
    "test_ece_before": 0.02,
    "test_ece_after": 0.01,
    "test_nll_before": 0.1,
    "test_nll_after": 0.08,
}


def test_a_card_with_calibration_carries_its_temperature_and_threshold(tmp_path: Path) -> None:
    _, directory = saved(tmp_path)
    edit_card(directory, lambda c: c.update(calibration=CALIBRATION))
    card = load_checkpoint(directory).card
    assert card.temperature == 1.5 and card.error_threshold == 0.07
    assert card.calibration is not None and card.to_dict()["calibration"] == CALIBRATION


def test_a_card_without_calibration_loads_with_temperature_1_and_the_test_threshold(tmp_path: Path) -> None:
    _, directory = saved(tmp_path)
    edit_card(directory, lambda c: (c.pop("calibration", None), c.update(format_version=2)))
    card = load_checkpoint(directory).card
    assert card.calibration is None and card.temperature == 1.0
    assert card.error_threshold == card.metrics.reconstruction_error_percentiles["p99"]


def edit_card(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    card = json.loads((directory / CARD_FILE).read_text())
    change(card)
    (directory / CARD_FILE).write_text(json.dumps(card))


def format_1(card: dict[str, Any]) -> None:
    """The card as the first version of this project wrote it: no framing, provenance at the top level."""
    card["format_version"] = 1
    del card["framing"]
    card.update(card.pop("provenance"))
    card["seed"] = 0


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (lambda c: c.update(format_version=FORMAT_VERSION + 1), "was written by a newer sae-serve"),
        (
            lambda c: c.update(calibration={**CALIBRATION, "temperature": 0}),
            "'temperature' must be above 0",
        ),
        (lambda c: c.update(calibration={"temperature": 1.5}), "'validation_examples' is missing"),
        (lambda c: c.pop("class_names"), "'class_names' is missing"),
        (lambda c: c.update(class_names=["a", "b"]), "2 class names for a model of 10 classes"),
        (lambda c: c["metrics"].update(test_accuracy="high"), "'test_accuracy' must be a finite number"),
        (lambda c: c["metrics"]["reconstruction_error_percentiles"].pop("p99"), "'p99' is missing"),
        (lambda c: c["framing"].update(centre_by_mass="yes"), "'centre_by_mass' must be true or false"),
        (lambda c: c.update(config=[1, 2]), "'config': expected a JSON object"),
        (lambda c: (format_1(c), c.update(dataset="letters")), "card format 1 of data set 'letters'"),
    ],
    ids=[
        "newer",
        "zero temperature",
        "half calibration",
        "no class names",
        "class count",
        "metric type",
        "no p99",
        "framing type",
        "config",
        "old unknown",
    ],
)
def test_an_old_damaged_or_newer_card_is_refused_saying_what_is_wrong(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], phrase: str
) -> None:
    _, directory = saved(tmp_path)
    edit_card(directory, change)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(directory)
    assert phrase in str(caught.value) and str(directory / CARD_FILE) in str(caught.value)


def test_a_format_1_card_of_a_known_data_set_loads_with_its_framing(tmp_path: Path) -> None:
    _, directory = saved(tmp_path)
    edit_card(directory, format_1)
    card = load_checkpoint(directory).card
    assert card.framing == MNIST_FRAMING and card.provenance["seed"] == 0 and card.recipe_name == "test"


def test_the_card_round_trips_through_json() -> None:
    card = make_card("letters", ["a", "b", "c"], Framing(box=24, centre_by_mass=False))
    card = ModelCard.from_dict(json.loads(json.dumps({**card.to_dict(), "weights_sha256": "0" * 64})))
    assert card.class_names == ("a", "b", "c") and card.framing == Framing(24, False) and card.config.num_classes == 3


def test_saving_again_replaces_the_files_whole_with_the_umasks_mode(tmp_path: Path) -> None:
    _, directory = saved(tmp_path)
    weights = directory / WEIGHTS_FILE
    weights.chmod(0o600)  # as an earlier version left them
    before = weights.stat().st_ino
    previous = os.umask(0o022)
    try:
        saved(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(weights.stat().st_mode) == 0o644
    assert weights.stat().st_ino != before  # a new file renamed over the old one, not the old one rewritten
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]
    load_checkpoint(directory)
