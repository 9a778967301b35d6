"""Random distortions of training images, all on (B, 784) tensors on the data's device, drawn from one generator."""

import math
from dataclasses import replace
from functools import lru_cache

import torch
import torch.nn.functional as F

from training.recipes import SEED, Recipe


def gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


@lru_cache(maxsize=8)
def smoothing_matrix(sigma: float, size: int, device: torch.device) -> torch.Tensor:
    """(size, size) S with S @ v equal to v convolved with gaussian_kernel(sigma) under reflect padding: the
    convolution of the identity's columns, so that a field is smoothed by two small matrix products
    (bench/training/augment_speed.py times it against the convolution)."""
    kernel = gaussian_kernel(sigma, device)
    pad = len(kernel) // 2
    if pad >= size:  # reflect padding needs pad < size; a kernel this wide is flat over the image anyway
        raise ValueError(f"elastic_sigma {sigma} is too wide for a {size}-pixel image (at most {(size - 1) / 3:.1f})")
    identity = torch.eye(size, device=device).view(size, 1, size)  # each row a unit signal
    columns = F.conv1d(F.pad(identity, (pad, pad), mode="reflect"), kernel.view(1, 1, -1))  # (size, 1, size)
    return columns.view(size, size).T.contiguous()


def elastic_field(b: int, recipe: Recipe, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Simard et al.'s elastic distortion: a random displacement per pixel, smoothed by a Gaussian of
    `elastic_sigma` pixels and scaled by `elastic_alpha`, as a (B, 28, 28, 2) offset in grid units."""
    field = (torch.rand(b * 2, 28, 28, generator=generator) * 2 - 1).to(device)
    smoothing = smoothing_matrix(recipe.elastic_sigma, 28, device)
    field = smoothing @ field @ smoothing.T  # along columns, then rows
    return (field.view(b, 2, 28, 28) * recipe.elastic_alpha * (2.0 / 28)).permute(0, 2, 3, 1)


def elastic_rms(alpha: float, sigma: float, samples: int = 512) -> float:
    """The root-mean-square length of elastic_field's displacements, in pixels, for these settings (a fixed draw).
    Settings compare by it: this field at Simard et al.'s alpha 34, sigma 4 moves pixels 2.4 px on average, more
    than theirs; alpha 20 at sigma 4 is 1.4 px."""
    recipe = replace(SEED, elastic_alpha=alpha, elastic_sigma=sigma)
    field = elastic_field(samples, recipe, torch.Generator().manual_seed(0), torch.device("cpu")) * 14  # in pixels
    return float(field.pow(2).sum(-1).mean().sqrt())


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
