"""Train one stacked-autoencoder classifier from a data set, a pretraining scheme and a recipe."""

import platform
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from models import (
    PREPROCESSING,
    Calibration,
    Metrics,
    ModelCard,
    SAEConfig,
    StackedAutoencoder,
    save_checkpoint,
    to_model_input,
)
from models.card import Embedding
from training.calibration import expected_calibration_error, fit_temperature, nll, validation_split
from training.data import Dataset
from training.evaluate import evaluate, logits_and_errors
from training.loop import StageHistory
from training.ood import fit_ood
from training.recipes import Recipe
from training.reference import BuiltReference, build_reference
from training.schemes import finetune, pretrain, refit_decoders
from training.teacher import teacher_logits, train_teacher
from training.views import build_views, cache_path, load_views, save_views, view_seeds

DRY_RUN_BATCHES = 2
DRY_RUN_TEST_IMAGES = 1000


@dataclass
class TrainResult:
    model: StackedAutoencoder
    history: list[StageHistory]
    metrics: dict[str, Any]
    card: ModelCard  # its weights_sha256 is filled in by save_checkpoint
    test_x: torch.Tensor
    test_y: torch.Tensor
    validation_accuracy: float  # on the held-out split, for choosing recipes without the test set
    ood_tensors: dict[str, torch.Tensor]  # the out-of-distribution score's means and precision, for save_checkpoint
    reference: BuiltReference  # the training images' embeddings, labels and pixels, for save_checkpoint

    def save(self, directory: Path, graph: bool = True) -> ModelCard:
        """Write the checkpoint into `directory` (models.checkpoint.save_checkpoint); its card."""
        return save_checkpoint(self.model, self.card, directory, self.ood_tensors, graph, self.reference.arrays)


def training_split(data: Dataset, recipe: Recipe, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices) of the data set's training images: the recipe's validation images, at
    most a tenth of them, held out by the seed."""
    held_out = min(recipe.validation_images, len(data.train_labels) // 10)
    return validation_split(data.train_labels, held_out, seed)


def train(
    data: Dataset,
    scheme: str,
    recipe: Recipe,
    seed: int,
    device: torch.device,
    finetune_epochs: int | None = None,
    pretrain_epochs: int | None = None,
    dry_run: bool = False,
    teacher_cache: Path | None = None,
) -> TrainResult:
    """Pretrain, fine-tune and evaluate; same seed and machine give the same metrics.

    With `teacher_cache` (a folder) and a recipe with consistent views, a teacher's views made for the same data,
    seed and teacher-side settings are loaded from it instead of trained (and saved there when they are not): for
    sweeps over the student's settings. The student's draws then differ from an uncached run's.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    max_batches = DRY_RUN_BATCHES if dry_run else None
    if dry_run:
        pretrain_epochs, finetune_epochs = 1, 1
    recipe = replace(
        recipe,
        pretrain_epochs=recipe.pretrain_epochs if pretrain_epochs is None else pretrain_epochs,
        finetune_epochs=recipe.finetune_epochs if finetune_epochs is None else finetune_epochs,
    )
    config = SAEConfig(num_classes=len(data.class_names), input_dropout=recipe.input_dropout, dropout=recipe.dropout)
    model = StackedAutoencoder(config).to(device)
    train_index, validation_index = training_split(data, recipe, seed)
    all_x = to_model_input(data.train_images).to(device)  # (60000, 784), moved once
    train_x, train_y = all_x[train_index.to(device)], data.train_labels[train_index].to(device)
    validation_x, validation_y = all_x[validation_index.to(device)], data.train_labels[validation_index]
    del all_x
    test_count = DRY_RUN_TEST_IMAGES if dry_run else len(data.test_labels)
    test_x = to_model_input(data.test_images[:test_count]).to(device)
    test_y = data.test_labels[:test_count].to(device)

    start = time.perf_counter()
    history = pretrain(model, scheme, train_x, recipe, generator, max_batches=max_batches)
    teacher, soft_targets, views, teacher_accuracy, live = None, None, None, None, None
    cache = None
    consistent = recipe.teacher_epochs and recipe.distill_views and not recipe.distill_live
    if teacher_cache is not None and consistent and not dry_run:
        cache = cache_path(teacher_cache, data.md5, seed, recipe)
    cached = cache is not None and cache.exists()
    if cache is not None and cached:
        views, teacher_accuracy, _ = load_views(cache, device)
    elif recipe.teacher_epochs:
        teacher, teacher_history = train_teacher(
            train_x, train_y, len(data.class_names), recipe, generator, max_batches=max_batches
        )
        history.append(teacher_history)
        if recipe.distill_live:
            live = teacher
        elif recipe.distill_views:
            labelled = time.perf_counter()
            views = build_views(teacher, train_x, recipe, view_seeds(seed, recipe.distill_views))
            history.append(StageHistory("teacher views", seconds=time.perf_counter() - labelled))
        else:
            soft_targets = teacher_logits(teacher, train_x)
    tuned = finetune(
        model,
        train_x,
        train_y,
        recipe,
        generator,
        max_batches=max_batches,
        teacher_logits=soft_targets,
        views=views,
        teacher=live,
    )
    history.append(tuned)
    history += refit_decoders(model, train_x, recipe, generator, epochs=1 if dry_run else None, max_batches=max_batches)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    # Measured, not trained: outside the training seconds.
    if teacher is not None:
        teacher_accuracy = (teacher_logits(teacher, test_x).argmax(1) == test_y).double().mean().item()
        if cache is not None and views is not None:
            save_views(cache, views, teacher_accuracy, sum(h.seconds for h in history if h.name.startswith("teacher")))
        del teacher, soft_targets, live
    view_seeds_used = None if views is None else views.seeds
    del views
    metrics = evaluate(model, test_x, test_y, data.class_names)
    validation_logits, validation_errors = logits_and_errors(model, validation_x)
    calibration = calibrate(model, validation_logits, validation_errors, validation_y, test_x, test_y)
    detector, ood_tensors = fit_ood(model, train_x, train_y, validation_x)
    embedding = Embedding(config.depth, config.hidden_dims[-1])
    reference = build_reference(
        model,
        embedding,
        (train_x, data.train_images[train_index], data.train_labels[train_index], train_index),
        (validation_x, validation_y),
        (test_x, test_y),
    )
    settings = recipe.to_dict()
    card = ModelCard(
        dataset=data.name,
        class_names=data.class_names,
        framing=data.framing,
        config=config,
        metrics=Metrics(**metrics),
        pretraining=scheme,
        recipe_name=settings.pop("name"),
        recipe=settings,
        weights_sha256="",
        provenance=provenance(data, seed, dry_run, seconds, history, device, teacher_accuracy, view_seeds_used, cached),
        calibration=calibration,
        ood=detector.params,
        embedding=embedding,
        reference=reference.section,
    )
    validation_accuracy = (validation_logits.argmax(1) == validation_y).double().mean().item()
    return TrainResult(model, history, metrics, card, test_x, test_y, validation_accuracy, ood_tensors, reference)


def calibrate(
    model: StackedAutoencoder,
    validation_logits: torch.Tensor,
    validation_errors: torch.Tensor,
    validation_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
) -> Calibration:
    """The temperature and in-distribution threshold from the validation split's logits and reconstruction
    errors; ECE and NLL on the test set."""
    temperature = fit_temperature(validation_logits, validation_y)
    test_logits, _ = logits_and_errors(model, test_x)
    labels = test_y.cpu()
    return Calibration(
        temperature=round(temperature, 6),
        validation_examples=len(validation_y),
        in_distribution_threshold=torch.quantile(validation_errors.double(), 0.99).item(),
        test_ece_before=expected_calibration_error(test_logits.softmax(1), labels),
        test_ece_after=expected_calibration_error((test_logits / temperature).softmax(1), labels),
        test_nll_before=nll(test_logits, labels),
        test_nll_after=nll(test_logits, labels, temperature),
    )


def provenance(
    data: Dataset,
    seed: int,
    dry_run: bool,
    seconds: float,
    history: list[StageHistory],
    device: torch.device,
    teacher_accuracy: float | None = None,
    view_seeds: list[int] | None = None,
    teacher_cached: bool = False,
) -> dict[str, Any]:
    """How the model was made: recorded in the card, shown, never relied on."""
    extra: dict[str, Any] = {} if teacher_accuracy is None else {"teacher_test_accuracy": teacher_accuracy}
    if view_seeds is not None:  # each stored view is views.draw_view(train images, recipe, seed)
        extra["teacher_view_seeds"] = view_seeds
    if teacher_cached:  # the teacher's views came from a sweep's cache: its seconds are not in training_seconds
        extra["teacher_cached"] = True
    return {
        **extra,
        "preprocessing": PREPROCESSING,
        "seed": seed,
        "dry_run": dry_run,
        "data_md5": data.md5,
        "training_seconds": round(seconds, 2),
        "stages": [
            {"name": h.name, "losses": h.losses, "train_accuracies": h.accuracies, "seconds": round(h.seconds, 2)}
            for h in history
        ],
        "device": str(device),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
