from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models import SAEConfig, StackedAutoencoder, to_model_input
from training.data import load_dataset
from training.recipes import DEFAULT, recipe_for
from training.schemes import finetune, pretrain
from training.teacher import Teacher, distillation_loss
from training.train import train

FAST = replace(DEFAULT, batch_size=64, pretrain_epochs=1, finetune_epochs=3, max_shift=0, max_rotation=0.0)


def test_distillation_loss_is_temperature_squared_kl_and_zero_when_the_student_agrees() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(8, 10) * 3
    agreeing = torch.log_softmax(teacher + 5.0, dim=1)  # same softmax: the student's log-probs
    assert distillation_loss(agreeing, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.log_softmax(torch.randn(8, 10), dim=1)
    p = torch.softmax(teacher / 2.0, dim=1)
    q = torch.log_softmax(student / 2.0, dim=1)
    expected = 4.0 * (p * (p.log() - q)).sum(1).mean()
    assert distillation_loss(student, teacher, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_teacher_maps_pixel_rows_to_class_logits() -> None:
    assert Teacher(channels=4, classes=10)(torch.rand(3, 784)).shape == (3, 10)


def test_fine_tuning_follows_the_teachers_soft_targets(tiny_data_dir: Path) -> None:
    data = load_dataset("mnist")
    x, y = to_model_input(data.train_images), data.train_labels
    wrong = (y + 1) % 10  # a teacher sure of the next class: only its targets can teach the student that
    teacher = F.one_hot(wrong, 10).float() * 10.0
    torch.manual_seed(0)
    model = StackedAutoencoder(SAEConfig())
    gen = torch.Generator().manual_seed(0)
    pretrain(model, "greedy", x, FAST, gen)
    finetune(
        model, x, y, replace(FAST, distill_weight=1.0, distill_temperature=2.0), gen, epochs=8, teacher_logits=teacher
    )
    with torch.no_grad():
        predicted = model.classify(x).argmax(1)
    assert (predicted == wrong).float().mean().item() > 0.9


def test_a_recipe_with_a_teacher_trains_it_first_and_keeps_only_the_autoencoder(tiny_data_dir: Path) -> None:
    data = load_dataset("mnist")
    taught = replace(FAST, teacher_epochs=5, teacher_channels=8, teacher_lr=1e-2, distill_weight=0.5)
    result = train(data, "greedy", taught, 0, torch.device("cpu"))
    plain = train(data, "greedy", FAST, 0, torch.device("cpu"))
    assert [h.name for h in result.history] == [
        "pretrain 784-400",
        "pretrain 784-400-256",
        "teacher",
        "fine-tune",
        "refit decoders",
    ]
    assert result.history[2].seconds > 0
    assert result.card.provenance["teacher_test_accuracy"] > 0.5  # the toy classes are easy
    assert "teacher_test_accuracy" not in plain.card.provenance
    assert result.model.state_dict().keys() == plain.model.state_dict().keys()
    assert result.card.recipe["teacher_epochs"] == 5


def test_the_best_garment_recipe_distills_and_the_default_does_not() -> None:
    assert recipe_for("best", "fashion-mnist").teacher_epochs > 0
    assert recipe_for("best", "fashion-mnist").distill_weight > 0
    assert recipe_for("default", "fashion-mnist").teacher_epochs == 0
    assert recipe_for("default", "mnist").teacher_epochs == 0
