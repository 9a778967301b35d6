"""Test-set metrics: accuracy, per-class accuracy, confusion matrix and reconstruction error."""

from typing import Any

import torch

from models import StackedAutoencoder

ERROR_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile_key(q: float) -> str:
    return f"p{q:g}"


@torch.inference_mode()
def logits_and_errors(model: StackedAutoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (N, classes) and per-image reconstruction MSE (N,), on the CPU."""
    model.eval()
    logits, errors = [], []
    for chunk in x.split(5000):
        code = model.encode(chunk)
        logits.append(model.classify_code(code).cpu())
        errors.append((model.decode(code) - chunk).pow(2).mean(1).cpu())
    return torch.cat(logits), torch.cat(errors)


def predict(model: StackedAutoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted labels and per-image reconstruction MSE for (N, 784) inputs."""
    logits, errors = logits_and_errors(model, x)
    return logits.argmax(1), errors


def evaluate(
    model: StackedAutoencoder, x: torch.Tensor, y: torch.Tensor, class_names: tuple[str, ...]
) -> dict[str, Any]:
    predicted, errors = predict(model, x)
    n = len(class_names)
    confusion = torch.bincount(y.cpu() * n + predicted.cpu(), minlength=n * n).view(n, n)
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1).double()
    quantiles = torch.quantile(errors.double().cpu(), torch.tensor(ERROR_PERCENTILES, dtype=torch.float64) / 100)
    return {
        "test_accuracy": (predicted.cpu() == y.cpu()).double().mean().item(),
        "test_examples": len(y),
        "per_class_accuracy": {name: per_class[i].item() for i, name in enumerate(class_names)},
        "confusion_matrix": confusion.tolist(),
        "reconstruction_mse": errors.double().mean().item(),
        "reconstruction_error_percentiles": {
            percentile_key(q): v for q, v in zip(ERROR_PERCENTILES, quantiles.tolist(), strict=True)
        },
    }
