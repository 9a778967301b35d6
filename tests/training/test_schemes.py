from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from models import SAEConfig, StackedAutoencoder, to_model_input
from training.augment import augment, elastic_field, elastic_rms, erase, smoothing_matrix
from training.data import load_dataset
from training.recipes import DEFAULT, SEED, recipe_for
from training.schemes import autoencoder_stage, finetune, pretrain, refit_decoders
from training.train import train

FAST = replace(DEFAULT, batch_size=64, pretrain_epochs=2, finetune_epochs=3)


@pytest.fixture
def tiny_x(tiny_data_dir: Path) -> torch.Tensor:
    return to_model_input(load_dataset("mnist").train_images)


def reconstruction_error(model: StackedAutoencoder, x: torch.Tensor, depth: int) -> float:
    with torch.no_grad():
        return (model.reconstruct(x, depth) - x).pow(2).mean().item()


def test_greedy_stacking_keeps_the_trained_first_layer(tiny_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = StackedAutoencoder(SAEConfig())
    fresh_error = reconstruction_error(model, tiny_x, 1)
    gen = torch.Generator().manual_seed(0)
    autoencoder_stage(model, 1, tiny_x, 3, FAST, gen)
    trained_first = model.encoders[0].weight.detach().clone()
    first_error = reconstruction_error(model, tiny_x, 1)
    assert first_error < 0.5 * fresh_error
    frozen = replace(SEED, batch_size=64, pretrain_lr=0.0)  # stacking alone, no learning
    history = autoencoder_stage(model, 2, tiny_x, 1, frozen, gen)
    assert history.name == "pretrain 784-400-256"
    assert torch.equal(model.encoders[0].weight, trained_first)
    assert reconstruction_error(model, tiny_x, 1) == pytest.approx(first_error)


def test_greedy_runs_one_stage_per_layer_and_end_to_end_one(tiny_x: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    greedy = pretrain(StackedAutoencoder(SAEConfig()), "greedy", tiny_x, FAST, gen)
    assert [h.name for h in greedy] == ["pretrain 784-400", "pretrain 784-400-256"]
    assert all(len(h.losses) == 2 for h in greedy)
    model = StackedAutoencoder(SAEConfig())
    before = reconstruction_error(model, tiny_x, 2)
    e2e = pretrain(model, "end-to-end", tiny_x, FAST, gen)
    assert [h.name for h in e2e] == ["pretrain 784-400-256"] and len(e2e[0].losses) == 4
    assert reconstruction_error(model, tiny_x, 2) < 0.5 * before
    assert pretrain(StackedAutoencoder(SAEConfig()), "none", tiny_x, FAST, gen) == []
    with pytest.raises(ValueError, match="unknown pretraining scheme 'layerwise'"):
        pretrain(StackedAutoencoder(SAEConfig()), "layerwise", tiny_x, FAST, gen)


def test_finetuning_learns_and_leaves_the_decoders_alone(tiny_data_dir: Path) -> None:
    data = load_dataset("mnist")
    x, y = to_model_input(data.train_images), data.train_labels
    torch.manual_seed(0)
    model = StackedAutoencoder(SAEConfig(dropout=0.1))
    decoders = [d.weight.detach().clone() for d in model.decoders]
    unshifted = replace(FAST, max_shift=0)  # the toy classes are bands 2 pixels apart
    history = finetune(model, x, y, unshifted, torch.Generator().manual_seed(0), epochs=6)
    assert history.accuracies[-1] > 0.9
    assert not model.training
    assert all(torch.equal(d.weight, before) for d, before in zip(model.decoders, decoders, strict=True))


def test_shift_augmentation_moves_whole_pixels_and_keeps_values() -> None:
    image = torch.zeros(1, 784)
    image[0, 14 * 28 + 14] = 1.0
    recipe = replace(DEFAULT, max_shift=2, max_rotation=0.0)
    shifted = augment(image.repeat(200, 1), recipe, torch.Generator().manual_seed(0))
    assert torch.allclose(shifted.sum(1), torch.ones(200))  # a shift of at most 2 keeps the pixel inside
    assert set(shifted.max(1).values.tolist()) == {1.0}  # exact, not blurred
    positions = {divmod(int(i), 28) for i in shifted.argmax(1)}
    assert positions <= {(r, c) for r in range(12, 17) for c in range(12, 17)} and len(positions) > 10
    flipped = augment(image, replace(DEFAULT, max_shift=0, hflip=True), torch.Generator().manual_seed(1))
    assert flipped.argmax().item() in (14 * 28 + 14, 14 * 28 + 13)
    assert torch.equal(augment(image, SEED, torch.Generator()), image)


def test_elastic_distortion_moves_strokes_by_a_pixel_or_two_and_smoothly() -> None:
    recipe = replace(DEFAULT, max_shift=0, max_rotation=0.0, elastic_alpha=34.0, elastic_sigma=4.0)
    field = elastic_field(64, recipe, torch.Generator().manual_seed(0), torch.device("cpu")) * (28 / 2.0)  # pixels
    size = field.norm(dim=3)
    assert 0.3 < size.mean().item() < 3.0 and size.max().item() < 8.0  # Simard's strength: a pixel or two
    neighbours = (field[:, 1:, :, :] - field[:, :-1, :, :]).norm(dim=3)
    assert neighbours.mean().item() < 0.25 * size.mean().item()  # smooth: next pixels move nearly alike
    image = torch.zeros(1, 784)
    image[0, 10 * 28 + 8 : 10 * 28 + 20] = 1.0  # a horizontal stroke
    distorted = augment(image.repeat(32, 1), recipe, torch.Generator().manual_seed(1))
    assert not torch.allclose(distorted, image.repeat(32, 1))
    # The ink moves and a thin stroke stretches or thins here and there; on average about as much of it stays.
    assert abs(distorted.sum(1).mean().item() - 12) < 3


def test_smoothing_wider_than_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="too wide"):
        smoothing_matrix(9.5, 28, torch.device("cpu"))


def test_erasing_blacks_out_one_rectangle_in_the_chosen_share_of_images() -> None:
    images = torch.ones(400, 1, 28, 28)
    erased = erase(images, 0.5, torch.Generator().manual_seed(0))
    touched = (erased == 0).flatten(1).any(1)
    assert 0.4 < touched.float().mean().item() < 0.6
    for image in erased[touched][:20, 0]:
        rows, cols = (image == 0).nonzero().unbind(1)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert int((image == 0).sum()) == int(height * width)  # one whole rectangle
        assert 0.02 * 784 - 28 <= height * width <= 0.25 * 784 + 28


def test_the_best_recipe_distorts_digits_and_erases_garments() -> None:
    digits, garments = recipe_for("best", "mnist"), recipe_for("best", "fashion-mnist")
    assert digits.name == garments.name == "best"
    assert digits.elastic_alpha and digits.max_scale and digits.finetune_epochs > DEFAULT.finetune_epochs
    assert garments.erasing and garments.hflip and not garments.elastic_alpha


def test_each_data_set_gets_its_own_default_recipe() -> None:
    digits, garments = recipe_for("default", "mnist"), recipe_for("default", "fashion-mnist")
    assert digits.name == garments.name == "default"
    assert digits.max_shift and digits.dropout and not garments.max_shift and garments.ema_decay
    assert recipe_for("seed", "fashion-mnist") == recipe_for("seed", "mnist") == SEED


@pytest.mark.parametrize("name", ["default", "best"])
def test_garments_are_not_given_the_digits_geometric_distortions(name: str) -> None:
    """The garment recipes derive from the digit ones: a distortion added for digits must not leak into them."""
    garments = recipe_for(name, "fashion-mnist")
    assert (garments.max_shift, garments.max_rotation, garments.max_scale, garments.elastic_alpha) == (0, 0.0, 0.0, 0.0)


def test_same_seed_gives_the_same_metrics(tiny_data_dir: Path) -> None:
    data = load_dataset("mnist")
    runs = [train(data, "greedy", FAST, 7, torch.device("cpu"), finetune_epochs=1, pretrain_epochs=1) for _ in range(2)]
    other = train(data, "greedy", FAST, 8, torch.device("cpu"), finetune_epochs=1, pretrain_epochs=1)
    assert runs[0].metrics == runs[1].metrics
    assert [h.losses for h in runs[0].history] == [h.losses for h in runs[1].history]
    assert [h.losses for h in other.history] != [h.losses for h in runs[0].history]


def test_refitting_decoders_restores_reconstruction_and_keeps_the_classifier(tiny_data_dir: Path) -> None:
    data = load_dataset("mnist")
    x, y = to_model_input(data.train_images), data.train_labels
    torch.manual_seed(0)
    model = StackedAutoencoder(SAEConfig())
    gen = torch.Generator().manual_seed(0)
    pretrain(model, "end-to-end", x, FAST, gen)
    finetune(model, x, y, replace(FAST, max_shift=0, max_rotation=0.0), gen, epochs=6)
    before = reconstruction_error(model, x, 2)
    with torch.no_grad():
        logits = model.classify(x)
    history = refit_decoders(model, x, FAST, gen, epochs=5)
    assert [h.name for h in history] == ["refit decoders"]
    assert reconstruction_error(model, x, 2) < 0.7 * before
    with torch.no_grad():
        assert torch.equal(model.classify(x), logits)
    assert refit_decoders(model, x, SEED, gen) == []  # the lecture's recipe has no refit


def test_elastic_settings_compare_by_their_rms_displacement_in_pixels() -> None:
    assert elastic_rms(34.0, 4.0) == pytest.approx(2.42, abs=0.05)  # this field at Simard et al.'s settings
    assert elastic_rms(20.0, 4.0) == pytest.approx(1.42, abs=0.05)
    assert elastic_rms(17.0, 4.0) == pytest.approx(elastic_rms(34.0, 4.0) / 2, rel=1e-4)  # linear in alpha
    assert elastic_rms(34.0, 8.0) < elastic_rms(34.0, 4.0)  # smoother fields move pixels less


def test_fine_tuning_takes_its_own_optimizer_when_the_recipe_names_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import training.loop

    made: list[str] = []
    original = training.loop.make_optimizer

    def recording(parameters, recipe, lr):  # type: ignore[no-untyped-def]
        made.append(recipe.optimizer)
        return original(parameters, recipe, lr)

    monkeypatch.setattr(training.loop, "make_optimizer", recording)
    x, y = torch.rand(64, 784), torch.randint(0, 10, (64,))
    recipe = replace(FAST, finetune_optimizer="nesterov", finetune_lr=0.05, pretrain_epochs=1)
    model = StackedAutoencoder(SAEConfig())
    gen = torch.Generator().manual_seed(0)
    pretrain(model, "greedy", x, recipe, gen)
    finetune(model, x, y, recipe, gen, epochs=1)
    assert made == ["adamw", "adamw", "nesterov"]
    optimizer = original(model.head.parameters(), replace(FAST, optimizer="nesterov"), 0.05)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"] is True
    assert optimizer.defaults["momentum"] == 0.9


def test_max_norm_bounds_the_classifier_path_in_fine_tuning_only() -> None:
    x, y = torch.rand(64, 784), torch.randint(0, 10, (64,))
    model = StackedAutoencoder(SAEConfig())
    gen = torch.Generator().manual_seed(0)
    bounded = replace(FAST, pretrain_epochs=1, max_norm=1.5)

    def lengthen(layers: list[nn.Linear]) -> None:  # rows far over the bound, so that only the bound brings them under
        with torch.no_grad():
            for layer in layers:
                layer.weight.mul_(10.0 / layer.weight.norm(dim=1, keepdim=True))

    everything = [*model.encoders, model.head, *model.decoders]
    lengthen(everything)
    pretrain(model, "greedy", x, bounded, gen)  # pretraining is not bounded
    assert all(layer.weight.norm(dim=1).min().item() > 5.0 for layer in everything)
    lengthen(everything)
    finetune(model, x, y, bounded, gen, epochs=1)
    for layer in [*model.encoders, model.head]:
        assert layer.weight.norm(dim=1).max().item() <= 1.5 + 1e-4
    for layer in model.decoders:  # not fine-tuned, not bounded
        assert layer.weight.norm(dim=1).min().item() == pytest.approx(10.0, rel=1e-4)
    refit_decoders(model, x, replace(bounded, refit_decoder_epochs=1), gen)  # nor refitted under the bound
    assert all(layer.weight.norm(dim=1).min().item() > 5.0 for layer in model.decoders)
    # With a moving average, which starts from the unbounded weights before fine-tuning, the bound still holds.
    lengthen([*model.encoders, model.head])
    finetune(model, x, y, replace(bounded, ema_decay=0.9), gen, epochs=1)
    for layer in [*model.encoders, model.head]:
        assert layer.weight.norm(dim=1).max().item() <= 1.5 + 1e-4


def test_a_negative_max_norm_is_refused_before_any_training() -> None:
    with pytest.raises(ValueError, match="max_norm must be 0"):
        replace(FAST, max_norm=-1.0)
