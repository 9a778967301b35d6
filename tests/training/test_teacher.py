from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models import SAEConfig, StackedAutoencoder, to_model_input
from training.data import load_dataset
from training.recipes import DEFAULT, recipe_for
from training.schemes import finetune, pretrain
from training.teacher import Teacher, distillation_loss, make_teacher, teacher_logits, train_teacher
from training.train import train
from training.views import build_views, cache_path, draw_view, view_seeds

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


def test_a_view_is_drawn_again_from_its_seed_and_each_seed_draws_another() -> None:
    x = torch.rand(300, 784)
    recipe = replace(FAST, max_shift=2, max_rotation=10.0, erasing=0.5)
    first = draw_view(x, recipe, 7)
    assert first.dtype == torch.float16 and first.shape == x.shape
    assert torch.equal(first, draw_view(x, recipe, 7))
    assert not torch.equal(first, draw_view(x, recipe, 8))
    assert not torch.equal(first.float(), x.half().float())  # augmented, not the clean images
    seeds = view_seeds(0, 4)
    assert len(set(seeds)) == 4 and not set(seeds) & set(view_seeds(1, 4))


def test_each_stored_view_carries_the_teachers_logits_for_that_very_view() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(784, 10)  # any function of the pixels
    x = torch.rand(200, 784)
    recipe = replace(FAST, max_shift=2, max_rotation=10.0)
    bank = build_views(teacher, x, recipe, view_seeds(0, 3))
    assert bank.pixels.shape == (3, 200, 784) and bank.logits.shape == (3, 200, 10)
    for v, seed in enumerate(bank.seeds):
        assert torch.equal(bank.pixels[v], draw_view(x, recipe, seed))
    indices = torch.arange(0, 200, 3)
    images, logits = bank.batch(indices, torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(logits, teacher(images), atol=1e-5, rtol=1e-4)
    # Each row is one of its own image's views, and rows of one image do not all take the same view.
    matches = [[torch.equal(images[r].half(), bank.pixels[v, i]) for v in range(3)] for r, i in enumerate(indices)]
    assert all(any(row) for row in matches)
    assert len({row.index(True) for row in matches}) > 1


def test_students_taught_on_stored_views_or_live_learn_the_teachers_answer_for_each_view(tiny_data_dir: Path) -> None:
    """A teacher whose answer moves with the pixels (a random linear map): a student taught on stored views, or by
    the teacher live, agrees with it on fresh views of the images far more often than one whose distorted copies
    took the clean image's targets."""
    data = load_dataset("mnist")
    x, y = to_model_input(data.train_images), data.train_labels
    torch.manual_seed(0)
    teacher = torch.nn.Linear(784, 10)
    with torch.no_grad():
        teacher.weight.mul_(20.0)
    recipe = replace(FAST, max_shift=3, max_rotation=30.0, distill_weight=1.0, distill_temperature=2.0)
    fresh = draw_view(x, recipe, 12345).float()
    with torch.no_grad():
        answers = teacher(fresh).argmax(1)
        clean_targets = teacher(x)
    ways = {
        "views": {"views": build_views(teacher, x, recipe, view_seeds(0, 8))},
        "live": {"teacher": teacher},
        "clean": {"teacher_logits": clean_targets},
    }
    agreement = {}
    for name, taught in ways.items():
        torch.manual_seed(0)
        model = StackedAutoencoder(SAEConfig())
        gen = torch.Generator().manual_seed(0)
        pretrain(model, "greedy", x, FAST, gen)
        finetune(model, x, y, recipe, gen, epochs=15, **taught)  # type: ignore[arg-type]
        with torch.no_grad():
            agreement[name] = (model.classify(fresh).argmax(1) == answers).float().mean().item()
    assert agreement["views"] > agreement["clean"] + 0.1, agreement
    assert agreement["live"] > agreement["clean"] + 0.1, agreement


def test_a_recipe_with_views_trains_the_batch_normalised_teacher_and_records_the_seeds(tiny_data_dir: Path) -> None:
    data = load_dataset("mnist")
    taught = replace(
        FAST,
        teacher_epochs=8,
        teacher_channels=8,
        teacher_lr=1e-2,
        teacher_arch="bn",
        distill_weight=0.5,
        distill_views=2,
        max_shift=1,
    )
    result = train(data, "greedy", taught, 3, torch.device("cpu"))
    names = [h.name for h in result.history]
    assert names == [
        "pretrain 784-400",
        "pretrain 784-400-256",
        "teacher",
        "teacher views",
        "fine-tune",
        "refit decoders",
    ]
    assert result.card.provenance["teacher_view_seeds"] == view_seeds(3, 2)
    assert result.card.provenance["teacher_test_accuracy"] > 0.5
    assert result.card.recipe["teacher_arch"] == "bn" and result.card.recipe["distill_views"] == 2


def test_the_batch_normalised_teacher_maps_pixel_rows_to_logits_and_unknown_teachers_are_refused() -> None:
    assert make_teacher("bn", 4, 10)(torch.rand(3, 784)).shape == (3, 10)
    assert isinstance(make_teacher("conv", 4, 10), Teacher)
    with pytest.raises(ValueError, match="unknown teacher 'resnet'"):
        make_teacher("resnet", 4, 10)


@pytest.mark.parametrize("arch", ["conv", "bn"])
def test_the_channels_last_layout_and_small_labelling_batches_give_the_teachers_own_answers(arch: str) -> None:
    torch.manual_seed(0)
    teacher = make_teacher(arch, 4, 10).eval()
    first = make_teacher(arch, 4, 10).to(memory_format=torch.contiguous_format).eval()
    first.load_state_dict(teacher.state_dict())
    # The second convolution has 4 input channels, so its layout tells the two apart (the first's one does not).
    assert teacher.features[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not first.features[3].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(600, 784)
    with torch.no_grad():
        expected = first(x)
    assert torch.allclose(teacher_logits(teacher, x), expected, atol=1e-5)
    assert torch.allclose(teacher_logits(teacher, x, batch=7), expected, atol=1e-5)  # a ragged last batch
    recipe = replace(FAST, hflip=True, erasing=0.5)
    bank = build_views(teacher, x, recipe, view_seeds(0, 2))
    with torch.no_grad():
        for v in range(2):  # each view's targets are the channels-first teacher's answers for that float16 view
            assert torch.allclose(bank.logits[v], first(bank.pixels[v].float()), atol=1e-5)


def test_a_sweep_trains_a_teacher_once_and_later_students_replay_its_cached_views(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    data = load_dataset("mnist")
    taught = replace(FAST, teacher_epochs=2, teacher_channels=4, distill_weight=0.5, distill_views=2, max_shift=1)
    first = train(data, "greedy", taught, 0, torch.device("cpu"), teacher_cache=tmp_path)
    (saved,) = tmp_path.glob("views-*.pt")
    # Another student (its own settings only) finds the teacher's views; another teacher setting does not.
    student = replace(taught, finetune_epochs=2, distill_weight=0.9)
    second = train(data, "greedy", student, 0, torch.device("cpu"), teacher_cache=tmp_path)
    assert "teacher" not in [h.name for h in second.history]
    assert second.card.provenance["teacher_cached"] is True and "teacher_cached" not in first.card.provenance
    assert second.card.provenance["teacher_test_accuracy"] == first.card.provenance["teacher_test_accuracy"]
    assert second.card.provenance["teacher_view_seeds"] == first.card.provenance["teacher_view_seeds"]
    assert cache_path(tmp_path, data.md5, 0, replace(taught, max_shift=2)) != saved
    assert cache_path(tmp_path, data.md5, 1, taught) != saved
    assert cache_path(tmp_path, data.md5, 0, student) == saved
    assert cache_path(tmp_path, data.md5, 0, replace(student, optimizer="nesterov", finetune_lr=0.05)) == saved
    assert cache_path(tmp_path, data.md5, 0, replace(student, max_norm=3.0)) == saved
    assert cache_path(tmp_path, data.md5, 0, replace(taught, teacher_optimizer="nesterov")) != saved


def test_mixup_gives_the_live_teacher_mixtures_of_two_images(tiny_data_dir: Path) -> None:
    data = load_dataset("mnist")
    x, y = to_model_input(data.train_images), data.train_labels
    seen: list[torch.Tensor] = []

    class Recording(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            seen.append(images.clone())
            return torch.zeros(len(images), 10)

    model = StackedAutoencoder(SAEConfig())
    recipe = replace(FAST, distill_weight=0.5, distill_mixup=0.4)
    finetune(model, x, y, recipe, torch.Generator().manual_seed(0), epochs=1, teacher=Recording())
    batch = seen[0]
    originals = x.view(len(x), 1, -1)
    # No row is one of the training images: each is a blend of two (the recipe has no other augmentation).
    exact = (batch.view(1, len(batch), -1) - originals).abs().amax(2).min(0).values
    assert (exact > 1e-3).float().mean().item() > 0.9
    assert batch.min().item() >= 0.0 and batch.max().item() <= 1.0


def test_a_recipe_with_a_live_teacher_trains_it_and_stores_no_views(tiny_data_dir: Path) -> None:
    data = load_dataset("mnist")
    live = replace(FAST, teacher_epochs=2, teacher_channels=4, distill_weight=0.5, distill_live=True, distill_mixup=0.2)
    result = train(data, "greedy", live, 0, torch.device("cpu"))
    assert [h.name for h in result.history][2:] == ["teacher", "fine-tune", "refit decoders"]
    assert "teacher_view_seeds" not in result.card.provenance and result.card.recipe["distill_live"] is True


def test_the_teacher_trains_without_the_students_max_norm() -> None:
    x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))
    recipe = replace(FAST, teacher_epochs=1, teacher_channels=4, max_norm=1e-3)
    teacher, _ = train_teacher(x, y, 10, recipe, torch.Generator().manual_seed(0))
    matrices = [p for p in teacher.parameters() if p.dim() == 2]
    assert matrices and all(m.norm(dim=1).max().item() > 0.01 for m in matrices)  # ten times the bound and more
