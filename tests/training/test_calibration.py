"""The validation split, temperature scaling and calibration error."""

from pathlib import Path

import pytest
import torch

from models import load_checkpoint, to_model_input
from tests.servers import require_trained_artifacts
from training.calibration import expected_calibration_error, fit_temperature, nll, reliability, validation_split
from training.cli import main
from training.data import load_dataset
from training.evaluate import logits_and_errors


def test_the_validation_split_is_disjoint_stratified_and_fixed_by_the_seed() -> None:
    labels = torch.arange(60_000) % 10
    labels[:3000] = 3  # one class larger than the others
    train, validation = validation_split(labels, 5000, seed=0)
    assert len(validation) == 5000 and len(train) == 55_000
    assert not set(train.tolist()) & set(validation.tolist())
    assert sorted(train.tolist() + validation.tolist()) == list(range(60_000))
    for c in range(10):  # each class keeps its share, to the image
        share = (labels == c).double().mean().item()
        assert abs((labels[validation] == c).sum().item() - 5000 * share) < 1
    real_like = torch.randint(0, 10, (60_000,), generator=torch.Generator().manual_seed(5))
    assert len(validation_split(real_like, 5000, seed=0)[1]) == 5000  # shares that do not round evenly
    assert torch.equal(validation_split(labels, 5000, seed=0)[1], validation)
    assert not torch.equal(validation_split(labels, 5000, seed=1)[1], validation)


def overconfident(count: int = 20_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits three times too sharp for labels drawn from softmax(logits / 3)."""
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(count, 10, generator=generator) * 2
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=generator).flatten()
    return true_logits * 3, labels


def test_the_fitted_temperature_undoes_overconfidence_and_lowers_nll_and_ece() -> None:
    logits, labels = overconfident()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    held_out_logits, held_out_labels = overconfident(seed=1)  # measured on other examples
    assert nll(held_out_logits, held_out_labels, temperature) < nll(held_out_logits, held_out_labels)
    before = expected_calibration_error(held_out_logits.softmax(1), held_out_labels)
    after = expected_calibration_error((held_out_logits / temperature).softmax(1), held_out_labels)
    assert after < 0.02 < 0.1 < before


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy() -> None:
    # Two bins: 4 images at confidence 0.9 with 2 right, 4 at 0.6 with 3 right -> (4*0.4 + 4*0.15) / 8.
    probabilities = torch.tensor([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 0, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx((4 * 0.4 + 4 * 0.15) / 8)
    assert reliability(probabilities, labels) == [(pytest.approx(0.6), 0.75, 4), (pytest.approx(0.9), 0.5, 4)]


def test_training_fits_and_records_the_calibration(tiny_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    assert main(["train", "--dataset", "mnist", "--dry-run", "--out", str(out), "--device", "cpu"]) == 0
    card = load_checkpoint(out / "mnist").card
    calibration = card.calibration
    assert calibration is not None and calibration.temperature > 0 and calibration.validation_examples > 0
    assert card.error_threshold == calibration.in_distribution_threshold
    assert (out / "mnist" / "1" / "reliability.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_the_cards_calibration_holds_on_the_trained_model(name: str) -> None:
    """The card's test NLL before and after its temperature, recomputed from the real model and data. On
    Fashion-MNIST, whose raw probabilities are overconfident (test ECE 3.3%), the temperature lowers the NLL;
    MNIST's are calibrated already (ECE 0.2%), and its temperature, fitted on the validation split, leaves the
    test NLL within 2% (it raised it from 0.0349 to 0.0352 in the served run): no gain there, and no harm."""
    checkpoint = load_checkpoint(require_trained_artifacts() / name)
    calibration = checkpoint.card.calibration
    assert calibration is not None, "the trained card has no calibration: retrain (make models)"
    data = load_dataset(name)
    logits, _ = logits_and_errors(checkpoint.model, to_model_input(data.test_images))
    before, after = nll(logits, data.test_labels), nll(logits, data.test_labels, calibration.temperature)
    assert before == pytest.approx(calibration.test_nll_before, abs=1e-6)
    assert after == pytest.approx(calibration.test_nll_after, abs=1e-6)
    if name == "fashion-mnist":
        assert after < 0.95 * before
    else:
        assert abs(after - before) <= 0.02 * before
