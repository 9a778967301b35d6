"""A small convolutional teacher for distillation: it is trained first, and its softened predictions become extra
targets for the autoencoder's classifier (Hinton et al. 2015). Only the 784-400-256-10 student is saved or served.
"""

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from training.augment import augment
from training.loop import StageConfig, StageHistory, run_stage
from training.recipes import Recipe


class Teacher(nn.Module):
    """Two 5x5 convolutions with max pooling, then a hidden layer: (B, 784) pixels -> (B, classes) logits."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, C, 14, 14)
            nn.Conv2d(channels, 2 * channels, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2C, 7, 7)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(2 * channels * 49, 256), nn.ReLU(), nn.Linear(256, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x.view(-1, 1, 28, 28)))
        return logits


class BatchNormTeacher(nn.Module):
    """Two pairs of 3x3 convolutions with batch normalisation, each pair then max pooling, then a hidden layer:
    (B, 784) pixels -> (B, classes) logits."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]

        c = channels
        self.features = nn.Sequential(
            *block(1, c), *block(c, c), nn.MaxPool2d(2), *block(c, 2 * c), *block(2 * c, 2 * c), nn.MaxPool2d(2)
        )  # (B, 2C, 7, 7)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(2 * c * 49, 256, bias=False),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Linear(256, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x.view(-1, 1, 28, 28)))
        return logits


TEACHERS: dict[str, type[nn.Module]] = {"conv": Teacher, "bn": BatchNormTeacher}


# Convolutions on this machine's CPU run faster with channels last (bench/training/teacher_speed.py measures it); the
# input's one channel is laid out alike either way. Only the floating-point sums' order differs from channels first.
def make_teacher(arch: str, channels: int, classes: int) -> nn.Module:
    if arch not in TEACHERS:
        raise ValueError(f"unknown teacher {arch!r}; choose one of {', '.join(TEACHERS)}")
    return TEACHERS[arch](channels, classes).to(memory_format=torch.channels_last)


def train_teacher(
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    recipe: Recipe,
    generator: torch.Generator,
    max_batches: int | None = None,
) -> tuple[nn.Module, StageHistory]:
    """Train the recipe's teacher on the same (augmented) training images as the student, with its own optimizer
    (teacher_optimizer) and the recipe's batches and schedule."""
    teacher = make_teacher(recipe.teacher_arch, recipe.teacher_channels, classes).to(x.device)

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = teacher(augment(x[indices], recipe, generator))  # (B, classes)
        target = y[indices]
        return F.cross_entropy(logits, target), (logits.argmax(1) == target).sum()

    teacher.train()
    own = replace(recipe, optimizer=recipe.teacher_optimizer)
    config = StageConfig("teacher", recipe.teacher_epochs, recipe.teacher_lr, own, max_batches=max_batches)
    history = run_stage(config, teacher.parameters(), step, len(x), generator, x.device)
    teacher.eval()
    return teacher, history


# On this machine's CPU, labelling in batches of 256 costs less an image than in batches of 4,096
# (bench/training/teacher_speed.py).
LABEL_BATCH = 256


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, batch: int = LABEL_BATCH) -> torch.Tensor:
    """The teacher's logits for every row of `x`, (N, classes), in eval mode; float16 rows are widened a batch at a
    time."""
    teacher.eval()
    return torch.cat([teacher(x[i : i + batch].float()) for i in range(0, len(x), batch)])


def distillation_loss(log_probs: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(teacher ‖ student), both softened by `temperature`; `log_probs` is the student's log-softmax output,
    whose log-softmax at a temperature equals that of its logits."""
    student = F.log_softmax(log_probs / temperature, dim=1)
    target = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(student, target, log_target=True, reduction="batchmean") * temperature**2
