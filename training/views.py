"""Consistent views for distillation: the student learns the teacher's answer for the very image it sees.

Beyer et al. (2022) found that a student distils well only when the teacher labels the same augmented view the
student trains on; targets computed once on the clean image, given to its distorted copies, teach less. A live
teacher on every batch does that on a GPU; on a CPU it would cost the teacher's forward pass at every step of a long
schedule. Here the teacher runs once per view instead: `count` augmented views of every training image, each view of
the set drawn from a seed of its own, kept as float16 pixels beside the teacher's logits for them. Fine-tuning then
replays exactly those views, each row of a batch a random one of its image's views, with that view's targets.

View v of a set is `draw_view(x, recipe, seeds[v])`: the recipe's augmentation of `x` in chunks of CHUNK rows, in
order, from a generator seeded with seeds[v]; the seeds go in the card, so any view can be drawn again.

A sweep over the student's settings can keep a teacher's views on disk (cache_path, save_views, load_views) and
train only students; the card then says so (`teacher_cached`), and its training seconds leave the teacher out.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from training.augment import augment
from training.recipes import Recipe
from training.teacher import teacher_logits

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
    """Draw a view of `x` for each seed and label every one with the teacher (teacher_logits: in eval mode)."""
    pixels = torch.empty((len(seeds), *x.shape), dtype=torch.float16, device=x.device)
    logits: list[torch.Tensor] = []
    for v, seed in enumerate(seeds):
        pixels[v] = draw_view(x, recipe, seed)
        logits.append(teacher_logits(teacher, pixels[v]))
    return ViewBank(seeds, pixels, torch.stack(logits))


# Raised when the teacher's arithmetic changes, so that views cached by an earlier teacher are not replayed:
# 2 is the channels-last teacher labelling in batches of teacher.LABEL_BATCH.
TEACHER_CODE = 2

# What the teacher and its views do not depend on: the student's own settings. Everything else in the recipe (the
# pretraining, whose draws come first from the same generator; the teacher's settings; the augmentation; the
# optimizer and batches the teacher trains with) is in the cache's key.
STUDENT_ONLY = frozenset(
    {
        "name",
        "optimizer",  # pretraining's (its draws do not depend on it); the teacher trains with teacher_optimizer
        "finetune_optimizer",
        "finetune_lr",
        "finetune_epochs",
        "dropout",
        "input_dropout",
        "label_smoothing",
        "ema_decay",
        "max_norm",
        "refit_decoder_epochs",
        "distill_weight",
        "distill_temperature",
        "distill_live",  # a live teacher keeps no views
        "distill_mixup",
    }
)


def cache_path(directory: Path, data_md5: dict[str, str], seed: int, recipe: Recipe) -> Path:
    """Where a sweep keeps the views (and the teacher's test accuracy) that this data, seed and recipe make."""
    teacher_side = {k: v for k, v in recipe.to_dict().items() if k not in STUDENT_ONLY}
    key = json.dumps({"data": data_md5, "seed": seed, "recipe": teacher_side, "teacher": TEACHER_CODE}, sort_keys=True)
    return directory / f"views-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def save_views(path: Path, bank: ViewBank, teacher_accuracy: float, teacher_seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    state = {"seeds": bank.seeds, "pixels": bank.pixels.cpu(), "logits": bank.logits.cpu()}
    torch.save({**state, "teacher_accuracy": teacher_accuracy, "teacher_seconds": teacher_seconds}, partial)
    partial.replace(path)


def load_views(path: Path, device: torch.device) -> tuple[ViewBank, float, float]:
    """The bank, the teacher's test accuracy and the seconds it took to train and label, as saved."""
    state = torch.load(path, map_location=device)
    bank = ViewBank(list(state["seeds"]), state["pixels"], state["logits"])
    return bank, float(state["teacher_accuracy"]), float(state["teacher_seconds"])
