"""Fit the out-of-distribution score (models/ood.py) of a trained model: its Gaussians and standardisation on the
training images, its threshold on the validation split alone."""

import torch

from models.card import SCORE_NAME, TINY, OutOfDistribution
from models.ood import Detector, Gaussians, reconstruction_errors
from models.sae import StackedAutoencoder

FALSE_FLAG_RATE = 0.03  # the share of the validation split flagged; measured: bench/training/ood_bench.py
RIDGE = 1e-4  # added to each covariance's diagonal, so that it inverts
CHUNK = 8192


def _passes(model: StackedAutoencoder, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(each encoder layer's outputs (N, D_k), reconstruction errors (N,)), in chunks."""
    layers: list[list[torch.Tensor]] = [[] for _ in model.encoders]
    errors = []
    for chunk in x.split(CHUNK):
        outputs = model.encode_layers(chunk)
        for k, h in enumerate(outputs):
            layers[k].append(h)
        errors.append(reconstruction_errors(chunk, model.decode(outputs[-1])))
    return [torch.cat(h) for h in layers], torch.cat(errors)


def _gaussians(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class means (C, D), the precision of the covariance the classes share (D, D)), in float64."""
    classes = labels.unique()
    means = torch.stack([features[labels == c].double().mean(0) for c in classes])
    centred = features.double() - means[torch.searchsorted(classes, labels)]
    eye = torch.eye(features.shape[1], dtype=torch.float64, device=features.device)
    return means, torch.linalg.inv(centred.T @ centred / len(features) + RIDGE * eye)


def _log_spread(values: torch.Tensor) -> tuple[float, float]:
    logs = values.double().clamp_min(TINY).log()
    return logs.mean().item(), logs.std().item()


@torch.inference_mode()
def fit_ood(
    model: StackedAutoencoder,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    validation_x: torch.Tensor,
    false_flag_rate: float = FALSE_FLAG_RATE,
) -> tuple[Detector, dict[str, torch.Tensor]]:
    """The detector and the tensors `ood.safetensors` holds (the input's and each layer's class means and
    precision: `means.0`, `precision.0` the input's), fitted on the
    training images; the threshold is the validation split's (1 - false_flag_rate) quantile of the score."""
    model.eval()
    layers, errors = _passes(model, train_x)
    labels = train_y.to(errors.device)
    tensors: dict[str, torch.Tensor] = {}
    spreads = []
    for k, features in enumerate([train_x, *layers]):
        means, precision = _gaussians(features, labels)
        tensors[f"means.{k}"], tensors[f"precision.{k}"] = means.float().cpu(), precision.float().cpu()
        spreads.append(_log_spread(Gaussians(means, precision).to(features.device)(features)))
    del layers
    error_mean, error_std = _log_spread(errors)

    def fitted(threshold: float, validation_examples: int) -> OutOfDistribution:
        return OutOfDistribution(
            SCORE_NAME,
            false_flag_rate,
            threshold,
            layer_log_means=tuple(mean for mean, _ in spreads),
            layer_log_stds=tuple(std for _, std in spreads),
            reconstruction_log_mean=error_mean,
            reconstruction_log_std=error_std,
            flat_std=train_x.std(1).min().item() / 2,
            validation_examples=validation_examples,
        )

    standardised = Detector(fitted(0.0, 0), tensors).to(errors.device)
    scores = []
    for chunk in validation_x.split(CHUNK):
        outputs = model.encode_layers(chunk)
        scores.append(standardised.score(chunk, outputs, reconstruction_errors(chunk, model.decode(outputs[-1]))))
    threshold = torch.quantile(torch.cat(scores).double(), 1 - false_flag_rate).item()
    params = fitted(threshold, len(validation_x))
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return Detector(params, tensors), tensors
