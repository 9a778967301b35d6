"""A small convolutional teacher for distillation: it is trained first, and its softened predictions become extra
targets for the autoencoder's classifier (Hinton et al. 2015). Only the 784-400-256-10 student is saved or served.
"""

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


def train_teacher(
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    recipe: Recipe,
    generator: torch.Generator,
    max_batches: int | None = None,
) -> tuple[Teacher, StageHistory]:
    """Train the teacher on the same (augmented) training images as the student, with the recipe's optimizer."""
    teacher = Teacher(recipe.teacher_channels, classes).to(x.device)

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = teacher(augment(x[indices], recipe, generator))  # (B, classes)
        target = y[indices]
        return F.cross_entropy(logits, target), (logits.argmax(1) == target).sum()

    teacher.train()
    config = StageConfig("teacher", recipe.teacher_epochs, recipe.teacher_lr, recipe, max_batches=max_batches)
    history = run_stage(config, teacher.parameters(), step, len(x), generator, x.device)
    teacher.eval()
    return teacher, history


@torch.no_grad()
def teacher_logits(teacher: Teacher, x: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """The teacher's logits for every row of `x`, (N, classes)."""
    return torch.cat([teacher(x[i : i + batch]) for i in range(0, len(x), batch)])


def distillation_loss(log_probs: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(teacher ‖ student), both softened by `temperature`; `log_probs` is the student's log-softmax output,
    whose log-softmax at a temperature equals that of its logits."""
    student = F.log_softmax(log_probs / temperature, dim=1)
    target = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(student, target, log_target=True, reduction="batchmean") * temperature**2
