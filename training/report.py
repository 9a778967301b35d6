"""PNG plots written beside a checkpoint: loss curves, confusion matrix, reconstructions, reliability diagram."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from models import Calibration, ModelCard, StackedAutoencoder
from training.calibration import reliability
from training.loop import StageHistory


def plot_losses(history: list[StageHistory], path: Path) -> None:
    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.2), squeeze=False)
    for ax, stage in zip(axes[0], history, strict=True):
        epochs = range(1, len(stage.losses) + 1)
        steps = torch.arange(1, len(stage.batch_losses) + 1) / max(stage.batches_per_epoch, 1)
        ax.plot(steps.numpy(), stage.batch_losses, color="tab:blue", alpha=0.35, linewidth=0.7, label="batch loss")
        ax.plot(epochs, stage.losses, color="tab:blue", marker="o", label="epoch mean")
        ax.set_title(stage.name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("NLL" if stage.name == "fine-tune" else "MSE")
        if stage.accuracies:
            twin = ax.twinx()
            twin.plot(epochs, [100 * a for a in stage.accuracies], color="tab:green", marker=".", label="train acc")
            twin.set_ylabel("train accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(metrics: dict[str, Any], class_names: tuple[str, ...], path: Path) -> None:
    matrix = torch.tensor(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(matrix.log1p().numpy(), cmap="Blues")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            value = int(matrix[i, j])
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color="white" if i == j else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {100 * metrics['test_accuracy']:.2f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.inference_mode()
def plot_reconstructions(model: StackedAutoencoder, x: torch.Tensor, path: Path, count: int = 12) -> None:
    originals = x[:count]
    rebuilt = model.reconstruct(originals)
    fig, axes = plt.subplots(2, count, figsize=(count, 2.3))
    for i in range(count):
        for row, images in enumerate((originals, rebuilt)):
            axes[row, i].imshow(images[i].view(28, 28).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("test images", loc="left", fontsize=9)
    axes[1, 0].set_title("reconstructions", loc="left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.inference_mode()
def plot_reliability(
    model: StackedAutoencoder, x: torch.Tensor, y: torch.Tensor, calibration: Calibration, path: Path
) -> None:
    """Accuracy against confidence over the test set's 15 confidence bins, without and with the temperature."""
    model.eval()
    logits = torch.cat([model.classify(chunk).cpu() for chunk in x.split(5000)])
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8, label="perfectly calibrated")
    for temperature, ece, style in (
        (1.0, calibration.test_ece_before, "o-"),
        (calibration.temperature, calibration.test_ece_after, "s-"),
    ):
        rows = reliability((logits / temperature).softmax(1), y.cpu())
        ax.plot(
            [r[0] for r in rows],
            [r[1] for r in rows],
            style,
            markersize=4,
            label=f"T = {temperature:.3g}: ECE {100 * ece:.2f}%",
        )
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"test set, temperature fitted on {calibration.validation_examples:,} validation images", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(
    directory: Path,
    model: StackedAutoencoder,
    history: list[StageHistory],
    card: ModelCard,
    metrics: dict[str, Any],
    test_x: torch.Tensor,
    test_y: torch.Tensor,
) -> list[Path]:
    paths = [directory / "loss_curves.png", directory / "confusion_matrix.png", directory / "reconstructions.png"]
    plot_losses(history, paths[0])
    plot_confusion(metrics, card.class_names, paths[1])
    plot_reconstructions(model, test_x, paths[2])
    if card.calibration is not None:
        paths.append(directory / "reliability.png")
        plot_reliability(model, test_x, test_y, card.calibration, paths[3])
    return paths
