"""Pretraining schemes (greedy, end-to-end, none) and supervised fine-tuning, all on in-memory tensors."""

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from models import StackedAutoencoder
from training.loop import BatchStep, StageHistory, run_stage
from training.recipes import Recipe
from training.teacher import distillation_loss

SCHEMES = ("greedy", "end-to-end", "none")


def gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def elastic_field(b: int, recipe: Recipe, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Simard et al.'s elastic distortion: a random displacement per pixel, smoothed by a Gaussian of
    `elastic_sigma` pixels and scaled by `elastic_alpha`, as a (B, 28, 28, 2) offset in grid units."""
    field = (torch.rand(b * 2, 1, 28, 28, generator=generator) * 2 - 1).to(device)
    kernel = gaussian_kernel(recipe.elastic_sigma, device)
    pad = len(kernel) // 2
    field = F.conv2d(F.pad(field, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
    return (field.view(b, 2, 28, 28) * recipe.elastic_alpha * (2.0 / 28)).permute(0, 2, 3, 1)


def erase(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing: with `probability`, a rectangle of 2-25% of the image (aspect 0.3-3.3) set to black."""
    b = images.shape[0]
    area = (torch.rand(b, generator=generator) * 0.23 + 0.02) * 28 * 28
    aspect = torch.exp((torch.rand(b, generator=generator) * 2 - 1) * math.log(3.3))
    height = (area * aspect).sqrt().clamp(1, 28).long()
    width = (area / aspect).sqrt().clamp(1, 28).long()
    top = (torch.rand(b, generator=generator) * (29 - height)).long()
    left = (torch.rand(b, generator=generator) * (29 - width)).long()
    rows, cols = torch.arange(28).view(1, 28, 1), torch.arange(28).view(1, 1, 28)
    in_rows = (rows >= top.view(b, 1, 1)) & (rows < (top + height).view(b, 1, 1))
    inside = in_rows & (cols >= left.view(b, 1, 1)) & (cols < (left + width).view(b, 1, 1))
    chosen = torch.rand(b, generator=generator) < probability
    mask = (inside & chosen.view(b, 1, 1)).to(images.device).view(b, 1, 28, 28)
    return images.masked_fill(mask, 0.0)


def augment(x: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """Random shifts, rotations, scaling, elastic distortions, mirror images and erasing, as the recipe says, of a
    (B, 784) batch."""
    geometric = recipe.max_shift or recipe.max_rotation or recipe.max_scale or recipe.elastic_alpha
    if not geometric and not recipe.hflip and not recipe.erasing:
        return x
    b = x.shape[0]
    images = x.view(b, 1, 28, 28)
    if recipe.hflip:
        flip = torch.rand(b, generator=generator).to(x.device) < 0.5
        images = torch.where(flip.view(b, 1, 1, 1), images.flip(3), images)
    if geometric:
        shift = torch.randint(-recipe.max_shift, recipe.max_shift + 1, (b, 2), generator=generator).to(x)
        angle = (torch.rand(b, generator=generator).to(x) * 2 - 1) * math.radians(recipe.max_rotation)
        scale = 1 + (torch.rand(b, generator=generator).to(x) * 2 - 1) * recipe.max_scale
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = angle.cos() / scale
        theta[:, 0, 1], theta[:, 1, 0] = -angle.sin() / scale, angle.sin() / scale
        theta[:, :, 2] = shift * (2.0 / 28)  # whole pixels in grid units: without rotation, sampling stays exact
        grid = F.affine_grid(theta, [b, 1, 28, 28], align_corners=False)
        if recipe.elastic_alpha:
            grid = grid + elastic_field(b, recipe, generator, x.device)
        images = F.grid_sample(images, grid, align_corners=False)
    if recipe.erasing:
        images = erase(images, recipe.erasing, generator)
    return images.reshape(b, 784)


def train_modules(
    name: str,
    modules: Iterable[nn.Module],
    step: BatchStep,
    x: torch.Tensor,
    epochs: int,
    lr: float,
    recipe: Recipe,
    generator: torch.Generator,
    max_batches: int | None = None,
    ema_decay: float = 0.0,
) -> StageHistory:
    """One stage over the rows of `x`, training the parameters of `modules` and nothing else."""
    parameters = [p for module in modules for p in module.parameters()]
    return run_stage(name, parameters, step, len(x), epochs, lr, recipe, generator, x.device, max_batches, ema_decay)


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
    return train_modules(name, layers, step, x, epochs, recipe.pretrain_lr, recipe, generator, max_batches)


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
    return [
        train_modules(
            "refit decoders", model.decoders, step, x, epochs, recipe.pretrain_lr, recipe, generator, max_batches
        )
    ]


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
) -> StageHistory:
    """Supervised NLL training of the encoders and the head; the decoders are left as pretrained.

    With `teacher_logits` (a teacher's logits for every row of `x`), the loss mixes in distillation towards them,
    weighted by the recipe's distill_weight; an augmented image takes its original's soft targets.
    """

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs = model.classify(augment(x[indices], recipe, generator))  # (B, 10)
        target = y[indices]
        loss = classification_loss(log_probs, target, recipe.label_smoothing)
        if teacher_logits is not None:
            soft = distillation_loss(log_probs, teacher_logits[indices], recipe.distill_temperature)
            loss = (1 - recipe.distill_weight) * loss + recipe.distill_weight * soft
        return loss, (log_probs.argmax(1) == target).sum()

    model.train()
    history = train_modules(
        "fine-tune",
        [*model.encoders, model.head],
        step,
        x,
        recipe.finetune_epochs if epochs is None else epochs,
        recipe.finetune_lr,
        recipe,
        generator,
        max_batches,
        recipe.ema_decay,
    )
    model.eval()
    return history
