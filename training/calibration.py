"""Calibration: a validation split held out of the training set, one temperature fitted on it, and how well
the probabilities match the accuracy (expected calibration error, negative log-likelihood) on the test set.

Temperature scaling divides the logits by one scalar T before the softmax: the labels (the arg max) do not
change, only how confident the probabilities are. T is fitted on the validation split alone, so the test
set is only measured.
"""

import torch
from torch.nn import functional as F

ECE_BINS = 15


def validation_split(labels: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices): exactly `count` images held out, each class in its share of the
    training set (largest remainders round), chosen by the seed; both sorted, disjoint, together every index."""
    generator = torch.Generator().manual_seed(seed)
    classes = labels.unique().tolist()
    sizes = [int((labels == c).sum()) for c in classes]
    shares = [count * size / len(labels) for size in sizes]
    takes = [int(share) for share in shares]
    by_remainder = sorted(range(len(classes)), key=lambda i: (takes[i] - shares[i], i))
    for i in by_remainder[: count - sum(takes)]:
        takes[i] += 1
    held: list[torch.Tensor] = []
    for c, take in zip(classes, takes, strict=True):
        members = (labels == c).nonzero().flatten()
        held.append(members[torch.randperm(len(members), generator=generator)[:take]])
    validation = torch.cat(held).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[validation] = False
    return mask.nonzero().flatten(), validation


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on these (validation) examples."""
    logits, labels = logits.detach().double().cpu(), labels.cpu()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.exp().item())


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """The mean gap between confidence and accuracy over equal-width confidence bins, weighted by their sizes."""
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence.double(), edges[1:-1])  # bin i holds (edge i, edge i+1]
    confident = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence.double())
    right = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    return float(((confident - right).abs().sum() / len(labels)).item())


def reliability(
    probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) of each non-empty confidence bin, for the reliability diagram."""
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence.double(), edges[1:-1])
    rows = []
    for b in range(bins):
        members = index == b
        if members.any():
            rows.append(
                (confidence[members].double().mean().item(), correct[members].mean().item(), int(members.sum()))
            )
    return rows


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double().cpu() / temperature, labels.cpu()).item())
