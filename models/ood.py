"""The out-of-distribution score: how unlike its training images an image is, and whether the service flags it.

score = the sum, over the input and the encoder's layers (784 pixels, the 400-d first layer, the 256-d code), of
z(log Mahalanobis distance to the nearest class mean, one covariance per layer shared by the classes), plus z(log
reconstruction error); each log standardised by its mean and standard deviation over the training images, and the
parts weighed alike. That is Lee et al. 2018's Mahalanobis score with its feature ensemble over layers, and the
autoencoder's own error beside it. They fail apart:
an autoencoder rebuilds a dim image well (a low error, as likelihoods fail in Nalisnick et al. 2019) while its code
lies far from every class; the other data set's images lie near some class but rebuild badly.
bench/training/ood_bench.py measured it against each part alone, the energy score and the k-NN distance
(docs/benchmarks.md).

An image is flagged when its score is above the threshold (the validation split's quantile at the card's stated
false-flag rate) or when it is flat: its pixels' standard deviation under half the lowest of any training image,
so a blank or one-grey image is flagged whatever its score. Fitted on the training images, the threshold on the
validation split only: training/ood.py. Each layer's class means and precision matrix are in `ood.safetensors`
beside the weights; everything else in the card's `ood` section.

Cards written before the score (format 3 and earlier) flag by reconstruction error alone, at the card's
in-distribution threshold: `ReconstructionOnly`.
"""

from typing import Protocol

import torch

from models.card import TINY, OutOfDistribution
from models.sae import StackedAutoencoder


class Judge(Protocol):
    """Scores and flags a batch from its model input, its encoder layers' outputs and its reconstruction errors:
    what the model's one pass has already computed."""

    threshold: float

    def __call__(
        self, x: torch.Tensor, layers: list[torch.Tensor], errors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def reconstruction_errors(x: torch.Tensor, rebuilt: torch.Tensor) -> torch.Tensor:
    """(N,) mean squared error per image, pixels in [0, 1]."""
    return (rebuilt - x).pow(2).mean(1)


def judged(model: StackedAutoencoder, judge: Judge, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, flagged) of model input `x` (N, 784), for callers that run no pass of their own."""
    layers = model.encode_layers(x)
    return judge(x, layers, reconstruction_errors(x, model.decode(layers[-1])))


class Gaussians(torch.nn.Module):
    """Class means (C, D) and one precision (D, D): the squared Mahalanobis distance to the nearest mean."""

    precision: torch.Tensor
    projected: torch.Tensor
    offsets: torch.Tensor

    def __init__(self, means: torch.Tensor, precision: torch.Tensor) -> None:
        super().__init__()
        precision, means = precision.float(), means.float()
        # d_c(z) = z'Pz - 2 z'P m_c + m_c'P m_c: one (D, D) product per image, not one per class
        self.register_buffer("precision", precision)
        self.register_buffer("projected", (precision @ means.T).contiguous())  # (D, C)
        self.register_buffer("offsets", (means @ precision * means).sum(1))  # (C,)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        quadratic = (features @ self.precision * features).sum(1, keepdim=True)  # (N, 1)
        return (quadratic - 2 * features @ self.projected + self.offsets).min(1).values.clamp_min(TINY)


class Detector(torch.nn.Module):
    """The fitted score: one `Gaussians` for the input and one per encoder layer, with the card's scalars."""

    def __init__(self, params: OutOfDistribution, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.params = params
        self.threshold = params.threshold
        self.layers = torch.nn.ModuleList(
            Gaussians(tensors[f"means.{k}"], tensors[f"precision.{k}"]) for k in range(len(params.layer_log_means))
        )

    def distances(self, x: torch.Tensor, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        """The input's and each encoder layer's (N,) squared distance to its nearest class mean."""
        return [gaussians(h) for gaussians, h in zip(self.layers, [x, *layers], strict=True)]

    def score(self, x: torch.Tensor, layers: list[torch.Tensor], errors: torch.Tensor) -> torch.Tensor:
        p = self.params
        total = (errors.clamp_min(TINY).log() - p.reconstruction_log_mean) / p.reconstruction_log_std
        for distance, mean, std in zip(self.distances(x, layers), p.layer_log_means, p.layer_log_stds, strict=True):
            total = total + (distance.log() - mean) / std
        return total

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.std(1) < self.params.flat_std

    def forward(
        self, x: torch.Tensor, layers: list[torch.Tensor], errors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (N,), flagged (N,) bool)."""
        scores = self.score(x, layers, errors)
        return scores, (scores > self.threshold) | self.flat(x) | ~torch.isfinite(scores)


class ReconstructionOnly:
    """The flag of cards without a fitted score: reconstruction error above the card's threshold."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(
        self, x: torch.Tensor, layers: list[torch.Tensor], errors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return errors, errors > self.threshold
