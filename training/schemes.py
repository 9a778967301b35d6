"""Pretraining schemes (greedy, end-to-end, none) and supervised fine-tuning, all on in-memory tensors."""

from collections.abc import Iterable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from models import StackedAutoencoder
from training.augment import augment
from training.loop import BatchStep, StageConfig, StageHistory, run_stage
from training.recipes import Recipe
from training.teacher import distillation_loss
from training.views import ViewBank

SCHEMES = ("greedy", "end-to-end", "none")


def train_modules(
    config: StageConfig, modules: Iterable[nn.Module], step: BatchStep, x: torch.Tensor, generator: torch.Generator
) -> StageHistory:
    """One stage over the rows of `x`, training the parameters of `modules` and nothing else."""
    parameters = [p for module in modules for p in module.parameters()]
    return run_stage(config, parameters, step, len(x), generator, x.device)


def autoencoder_stage(
    model: StackedAutoencoder,
    depth: int,
    x: torch.Tensor,
    epochs: int,
    recipe: Recipe,
    generator: torch.Generator,
    max_batches: int | None = None,
) -> StageHistory:
    """Train the depth-`depth` autoencoder (every layer up to `depth`) to reconstruct its input pixels."""
    layers: list[nn.Module] = [*model.encoders[:depth], *model.decoders[:depth]]

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, None]:
        clean = x[indices]  # (B, 784)
        noisy = clean
        if recipe.masking_noise:
            keep = torch.rand(clean.shape, generator=generator).to(clean.device) >= recipe.masking_noise
            noisy = clean * keep
        return F.mse_loss(model.reconstruct(noisy, depth), clean), None

    model.train()
    name = f"pretrain {'-'.join(str(w) for w in model.config.widths[: depth + 1])}"
    config = StageConfig(name, epochs, recipe.pretrain_lr, recipe, max_batches=max_batches)
    return train_modules(config, layers, step, x, generator)


def refit_decoders(
    model: StackedAutoencoder,
    x: torch.Tensor,
    recipe: Recipe,
    generator: torch.Generator,
    epochs: int | None = None,
    max_batches: int | None = None,
) -> list[StageHistory]:
    """Train only the decoders to reconstruct the input from the fine-tuned, frozen encoders' code."""
    epochs = recipe.refit_decoder_epochs if epochs is None else epochs
    if epochs == 0:
        return []

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, None]:
        clean = x[indices]  # (B, 784)
        with torch.no_grad():
            code = model.encode(clean)  # (B, 256)
        return F.mse_loss(model.decode(code), clean), None

    model.eval()  # no dropout in the frozen encoders; the decoders have none
    config = StageConfig("refit decoders", epochs, recipe.pretrain_lr, recipe, max_batches=max_batches)
    return [train_modules(config, model.decoders, step, x, generator)]


def pretrain(
    model: StackedAutoencoder,
    scheme: str,
    x: torch.Tensor,
    recipe: Recipe,
    generator: torch.Generator,
    epochs: int | None = None,
    max_batches: int | None = None,
) -> list[StageHistory]:
    """Greedy grows the net a layer at a time; end-to-end trains the whole stack for as many epochs in all."""
    epochs = recipe.pretrain_epochs if epochs is None else epochs
    depth = model.config.depth
    if scheme == "greedy":
        return [autoencoder_stage(model, d, x, epochs, recipe, generator, max_batches) for d in range(1, depth + 1)]
    if scheme == "end-to-end":
        return [autoencoder_stage(model, depth, x, epochs * depth, recipe, generator, max_batches)]
    if scheme == "none":
        return []
    raise ValueError(f"unknown pretraining scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def classification_loss(log_probs: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """NLL of the log-softmax head; with smoothing, against (1 - s) one-hot + s uniform targets."""
    loss = F.nll_loss(log_probs, target)
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing * log_probs.mean(1).mean()
    return loss


def finetune(
    model: StackedAutoencoder,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    generator: torch.Generator,
    epochs: int | None = None,
    max_batches: int | None = None,
    teacher_logits: torch.Tensor | None = None,
    views: ViewBank | None = None,
    teacher: nn.Module | None = None,
) -> StageHistory:
    """Supervised NLL training of the encoders and the head; the decoders are left as pretrained.

    With `teacher_logits` (a teacher's logits for every row of `x`), the loss mixes in distillation towards them,
    weighted by the recipe's distill_weight; an augmented image takes its original's soft targets. With `views`
    instead (views.py), each row of a batch is one of its image's stored views, with the teacher's logits for that
    very view, and nothing is augmented further. With `teacher` (a live one), it labels each batch as the student
    sees it, mixed first when the recipe has distill_mixup.
    """
    beta = torch.distributions.Beta(recipe.distill_mixup, recipe.distill_mixup) if recipe.distill_mixup else None
    if teacher is not None:
        teacher.eval()

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        soft_targets = None
        target = y[indices]
        if views is not None:
            images, soft_targets = views.batch(indices, generator)
        else:
            images = augment(x[indices], recipe, generator)
            if teacher_logits is not None:
                soft_targets = teacher_logits[indices]
        weight, partner = None, None
        if teacher is not None:
            if beta is not None:
                weight = beta.sample((len(indices), 1)).to(images.device)  # (B, 1), from torch's global generator
                partner = torch.randperm(len(indices), generator=generator).to(images.device)
                images = weight * images + (1 - weight) * images[partner]
            with torch.no_grad():
                soft_targets = teacher(images)
        log_probs = model.classify(images)  # (B, 10)
        if weight is not None and partner is not None:  # the labels mixed as the images were (no smoothing)
            w = weight.squeeze(1)
            own = F.nll_loss(log_probs, target, reduction="none")
            loss = (w * own + (1 - w) * F.nll_loss(log_probs, target[partner], reduction="none")).mean()
        else:
            loss = classification_loss(log_probs, target, recipe.label_smoothing)
        if soft_targets is not None:
            soft = distillation_loss(log_probs, soft_targets, recipe.distill_temperature)
            loss = (1 - recipe.distill_weight) * loss + recipe.distill_weight * soft
        return loss, (log_probs.argmax(1) == target).sum()

    model.train()
    epochs = recipe.finetune_epochs if epochs is None else epochs
    own = replace(recipe, optimizer=recipe.finetune_optimizer or recipe.optimizer)
    config = StageConfig(
        "fine-tune",
        epochs,
        recipe.finetune_lr,
        own,
        max_batches=max_batches,
        ema_decay=own.ema_decay,
        max_norm=own.max_norm,
    )
    history = train_modules(config, [*model.encoders, model.head], step, x, generator)
    model.eval()
    return history
