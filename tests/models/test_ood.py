"""The out-of-distribution score: fitted on training images with its threshold on the validation split, stored in
the card and `ood.safetensors`, checked when loaded, and the same as the plain Mahalanobis formula."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models import CheckpointError, ModelCard, SAEConfig, StackedAutoencoder, load_checkpoint, save_checkpoint
from models.ood import Detector, ReconstructionOnly, judged, reconstruction_errors
from tests.checkpoints import make_card
from training.ood import fit_ood


def blobs(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] of 10 classes, each a bright square in its own place on a dark, slightly noisy frame."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    x = torch.rand(count, 28, 28, generator=generator) * 0.1
    for c in range(10):
        row, col = 2 + (c // 5) * 12, 2 + (c % 5) * 5
        x[labels == c, row : row + 10, col : col + 5] += 0.8
    return x.clamp(0, 1).view(count, 784), labels


@pytest.fixture(scope="module")
def fitted() -> tuple[StackedAutoencoder, Detector, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = StackedAutoencoder(SAEConfig()).eval()
    train_x, train_y = blobs(2000, 0)
    validation_x, _ = blobs(1000, 1)
    detector, tensors = fit_ood(model, train_x, train_y, validation_x, false_flag_rate=0.05)
    return model, detector, tensors


def judge(model: StackedAutoencoder, detector: Detector, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        return judged(model, detector, x)


def test_the_threshold_flags_the_stated_share_of_the_validation_split(fitted) -> None:  # type: ignore[no-untyped-def]
    model, detector, _ = fitted
    validation_x, _ = blobs(1000, 1)
    scores, _ = judge(model, detector, validation_x)
    assert (scores > detector.threshold).float().mean().item() == pytest.approx(0.05, abs=0.002)
    assert detector.params.validation_examples == 1000 and detector.params.false_flag_rate == 0.05
    held_out, _ = blobs(1000, 2)  # images of the same kind, never seen: flagged near the stated rate
    assert judge(model, detector, held_out)[1].float().mean().item() < 0.12


def test_flat_images_are_flagged_whatever_their_score(fitted) -> None:  # type: ignore[no-untyped-def]
    model, detector, _ = fitted
    flat = torch.stack([torch.full((784,), level) for level in (0.0, 0.05, 0.5, 1.0)])
    _, flagged = judge(model, detector, flat)
    assert flagged.all()
    train_x, _ = blobs(2000, 0)
    assert detector.params.flat_std == pytest.approx(train_x.std(1).min().item() / 2)


def test_the_fast_distance_is_the_plain_mahalanobis_formula(fitted) -> None:  # type: ignore[no-untyped-def]
    model, detector, tensors = fitted
    x, _ = blobs(50, 3)
    with torch.inference_mode():
        layers = model.encode_layers(x)
        fast = detector.distances(x, layers)
    for k, (h, distance) in enumerate(zip([x, *layers], fast, strict=True)):
        means, precision = tensors[f"means.{k}"].double(), tensors[f"precision.{k}"].double()
        direct = torch.stack([((h.double() - m) @ precision * (h.double() - m)).sum(1) for m in means], 1)
        torch.testing.assert_close(distance.double(), direct.min(1).values, rtol=1e-3, atol=1e-2)


def test_the_card_and_tensors_round_trip_and_are_checked(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, detector, tensors = fitted
    card = replace(make_card("blobs", [str(c) for c in range(10)]), ood=detector.params)
    with pytest.raises(ValueError, match="needs its tensors"):
        save_checkpoint(model, card, tmp_path / "none")
    written = save_checkpoint(model, card, tmp_path / "ok", tensors)
    assert written.ood is not None and len(written.ood.sha256) == 64
    assert ModelCard.from_dict(written.to_dict()) == written
    loaded = load_checkpoint(tmp_path / "ok")
    assert isinstance(loaded.judge, Detector) and loaded.judge.params == written.ood
    x, _ = blobs(20, 4)
    torch.testing.assert_close(judge(model, loaded.judge, x)[0], judge(model, detector, x)[0])

    (tmp_path / "ok" / "ood.safetensors").write_bytes(b"not the tensors")
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_checkpoint(tmp_path / "ok")
    card_path = tmp_path / "ok" / "card.json"  # a damaged file whose sha256 the card was made to match
    damaged = json.loads(card_path.read_text())
    damaged["ood"]["sha256"] = hashlib.sha256(b"not the tensors").hexdigest()
    card_path.write_text(json.dumps(damaged))
    with pytest.raises(CheckpointError, match="not the card's out-of-distribution tensors"):
        load_checkpoint(tmp_path / "ok")
    raw = written.to_dict()
    for key, value, phrase in (
        ("file", "../model.safetensors", "a file name in the checkpoint's folder"),
        ("layer_log_stds", [1.0, 1.0], "a list of 3 numbers"),
        ("layer_log_stds", [1.0, 0.0, 1.0], "above 0"),
        ("threshold", "high", "a finite number"),
        ("score", "energy", "not one this sae-serve computes"),
        ("false_flag_rate", 1.5, "between 0 and 1"),
    ):
        bad = json.loads(json.dumps(raw))
        bad["ood"][key] = value
        with pytest.raises(CheckpointError, match=phrase):
            ModelCard.from_dict(bad)


def test_a_score_that_is_not_a_number_is_flagged(fitted) -> None:  # type: ignore[no-untyped-def]
    model, detector, _ = fitted
    x, _ = blobs(3, 5)
    with torch.inference_mode():
        layers = model.encode_layers(x)
        layers[0][1] = float("nan")  # as an overflow inside the model would leave it
        scores, flagged = detector(x, layers, reconstruction_errors(x, model.decode(layers[-1])))
    assert torch.isnan(scores[1]) and bool(flagged[1])


def test_a_card_without_a_score_flags_by_reconstruction_error(tmp_path: Path) -> None:
    save_checkpoint(StackedAutoencoder(SAEConfig()), make_card("mnist", [str(c) for c in range(10)]), tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert isinstance(loaded.judge, ReconstructionOnly) and loaded.judge.threshold == 0.08  # the card's p99
