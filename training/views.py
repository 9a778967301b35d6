"""Consistent views for distillation: the student learns the teacher's answer for the very image it sees.

Beyer et al. (2022) found that a student distils well only when the teacher labels the same augmented view the
student trains on; targets computed once on the clean image, given to its distorted copies, teach less. A live
teacher on every batch does that on a GPU; on a CPU it would cost the teacher's forward pass at every step of a long
schedule. Here the teacher runs once per view instead: `count` augmented views of every training image, each view of
the set drawn from a seed of its own, kept as float16 pixels beside the teacher's logits for them. Fine-tuning then
replays exactly those views, each row of a batch a random one of its image's views, with that view's targets.

View v of a set is `draw_view(x, recipe, seeds[v])`: the recipe's augmentation of `x` in chunks of CHUNK rows, in
order, from a generator seeded with seeds[v]; the seeds go in the card, so any view can be drawn again.
"""

from dataclasses import dataclass

import torch
from torch import nn

from training.augment import augment
from training.recipes import Recipe

CHUNK = 4096


@dataclass
class ViewBank:
    seeds: list[int]
    pixels: torch.Tensor  # (views, N, 784), float16
    logits: torch.Tensor  # (views, N, classes), the teacher's for each view

    def batch(self, indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random view of each indexed image, (B, 784) float32, and the teacher's logits for it, (B, classes)."""
        choice = torch.randint(len(self.seeds), (len(indices),), generator=generator).to(indices.device)
        return self.pixels[choice, indices].float(), self.logits[choice, indices]


def view_seeds(seed: int, count: int) -> list[int]:
    """The views' seeds for a training seed: apart from each other and from the training generator's."""
    return [1_000_003 * (seed + 1) + v for v in range(count)]


def draw_view(x: torch.Tensor, recipe: Recipe, seed: int) -> torch.Tensor:
    """One augmented view of every row of `x`, (N, 784) float16; the same seed draws the same view."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([augment(x[i : i + CHUNK], recipe, generator).half() for i in range(0, len(x), CHUNK)])


@torch.no_grad()
def build_views(teacher: nn.Module, x: torch.Tensor, recipe: Recipe, seeds: list[int]) -> ViewBank:
    """Draw a view of `x` for each seed and label every one with the teacher (in eval mode)."""
    teacher.eval()
    pixels = torch.empty((len(seeds), *x.shape), dtype=torch.float16, device=x.device)
    logits: list[torch.Tensor] = []
    for v, seed in enumerate(seeds):
        pixels[v] = draw_view(x, recipe, seed)
        logits.append(torch.cat([teacher(pixels[v, i : i + CHUNK].float()) for i in range(0, len(x), CHUNK)]))
    return ViewBank(seeds, pixels, torch.stack(logits))
