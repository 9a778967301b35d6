"""Out-of-distribution detectors measured on the served models: which score tells a model's own test images from
the other data set's, blank, constant, noise and inverted images.

First the served score and flag, as the checkpoint holds them (models/ood.py: the card's threshold, and flat
images flagged whatever their score), then the same score without the flat-image rule, then the candidates it was
chosen from. Scores (higher: less like the training data), each fitted on the model's training images (the split its
card was trained on, validation images held out) and thresholded on its validation split at the served false-flag
rate (training/ood.py):

- reconstruction: the autoencoder's mean squared error, what the service flags today;
- energy: -logsumexp of the head's logits (Liu et al. 2020);
- mahalanobis: the smallest Mahalanobis distance of the 256-d code to a class mean, one covariance shared by the
  classes (Lee et al. 2018);
- knn: 1 - the cosine similarity of the normalised 256-d code to its k-th nearest training code (Sun et al. 2022,
  k = 50);
- mahalanobis+reconstruction: the sum of both scores, each standardised on the validation split;
- max(mahalanobis, reconstruction): the larger of the two standardised scores, so that either alone can flag;
- mahalanobis at the first layer: the same distance over the 400-d first hidden layer;
- mahalanobis(input, layers)+reconstruction, served: the standardised logs of the input's and both layers' distances and
  of the reconstruction error summed (models/ood.py).

For each model and score it prints the AUROC of the other data set's test images against the model's own, the
false-flag rate on the model's own test images, and the flag rate on each foreign set, as OpenOOD reports them.

    .venv/bin/python -m bench.training.ood_bench [--artifacts artifacts] [--k 50] [--dataset mnist fashion-mnist]
"""

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from bench.harness import ROOT
from models import StackedAutoencoder, load_checkpoint, to_model_input
from models.ood import Judge, judged
from training.calibration import validation_split
from training.data import load_dataset
from training.ood import FALSE_FLAG_RATE

Score = Callable[[torch.Tensor], torch.Tensor]
Flag = Callable[[torch.Tensor], torch.Tensor]
FALSE_FLAGS = FALSE_FLAG_RATE  # the share of the validation split flagged: the threshold's one parameter
OTHER = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


def foreign_sets(other_test: torch.Tensor, own_test: torch.Tensor, count: int = 1000) -> dict[str, torch.Tensor]:
    """(N, 28, 28) uint8 images that are not the model's data."""
    generator = torch.Generator().manual_seed(0)
    sparse = (torch.rand(count, 28, 28, generator=generator) < 0.05).to(torch.uint8) * 255
    return {
        "other data set": other_test,
        "blank": torch.zeros(1, 28, 28, dtype=torch.uint8),
        "constant grey": torch.arange(1, 256, 4, dtype=torch.uint8).view(-1, 1, 1).expand(-1, 28, 28).contiguous(),
        "uniform noise": torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8),
        "sparse noise": sparse,
        "inverted": 255 - own_test[:count],
    }


def auroc(inside: torch.Tensor, outside: torch.Tensor) -> float:
    """The probability that an outside image scores above an inside one, ties counting half (Mann-Whitney)."""
    scores = torch.cat([inside, outside]).double()
    _, inverse, counts = scores.unique(return_inverse=True, return_counts=True)
    average_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2  # 1-based, over each run of ties
    n_in, n_out = len(inside), len(outside)
    return float((average_rank[inverse][n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def gaussians(features: torch.Tensor, labels: torch.Tensor) -> Score:
    """The smallest squared Mahalanobis distance to a class mean, one covariance shared by the classes."""
    classes = labels.unique()
    means = torch.stack([features[labels == c].mean(0) for c in classes])  # (C, D)
    centred = features - means[torch.searchsorted(classes, labels)]
    covariance = centred.T @ centred / len(features) + 1e-4 * torch.eye(features.shape[1])
    precision = torch.linalg.inv(covariance.double()).float()

    def distance(f: torch.Tensor) -> torch.Tensor:
        return torch.stack([((f - m) @ precision * (f - m)).sum(1) for m in means], dim=1).min(1).values

    return distance


@torch.inference_mode()
def detectors(model: StackedAutoencoder, train: torch.Tensor, labels: torch.Tensor, k: int) -> dict[str, Score]:
    """Every score, fitted on these training images."""
    x = to_model_input(train)
    codes = model.encode(x)  # (N, 256)
    bank = torch.nn.functional.normalize(codes, dim=1)
    code_distance, first_distance = gaussians(codes, labels), gaussians(model.encode(x, 1), labels)

    def reconstruction(x: torch.Tensor) -> torch.Tensor:
        return (model.reconstruct(x) - x).pow(2).mean(1)

    def energy(x: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(model.head(model.encode(x)), dim=1)  # the head's logits, before its log-softmax

    def mahalanobis(x: torch.Tensor) -> torch.Tensor:
        return code_distance(model.encode(x))

    def mahalanobis_first_layer(x: torch.Tensor) -> torch.Tensor:
        return first_distance(model.encode(x, 1))

    def knn(x: torch.Tensor) -> torch.Tensor:
        query = torch.nn.functional.normalize(model.encode(x), dim=1)
        similarity = torch.cat([(chunk @ bank.T).topk(k, dim=1).values[:, -1] for chunk in query.split(1000)])
        return 1 - similarity

    return {
        "reconstruction": reconstruction,
        "energy": energy,
        "mahalanobis": mahalanobis,
        "mahalanobis at the first layer": mahalanobis_first_layer,
        "knn": knn,
    }


def served(model: StackedAutoencoder, judge: Judge) -> tuple[Score, Flag]:
    """The checkpoint's score and flag, from the one pass the service makes."""

    return (lambda x: judged(model, judge, x)[0]), (lambda x: judged(model, judge, x)[1])


def combinations(mahalanobis: Score, reconstruction: Score, validation: torch.Tensor) -> dict[str, Score]:
    """The two scores standardised on the validation split, summed, and the larger of the two."""
    fitted = [(score, score(validation)) for score in (mahalanobis, reconstruction)]
    standard = [(score, values.mean(), values.std()) for score, values in fitted]

    def standardised(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([(score(x) - mean) / std for score, mean, std in standard])  # (2, N)

    return {
        "mahalanobis+reconstruction": lambda x: standardised(x).sum(0),
        "max(mahalanobis, reconstruction)": lambda x: standardised(x).max(0).values,
    }


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts", help="trained checkpoints")
    parser.add_argument("--k", type=int, default=50, help="the neighbour whose distance the knn score takes")
    parser.add_argument(
        "--dataset", nargs="+", choices=list(OTHER), default=list(OTHER), help="which models to measure (default: both)"
    )
    args = parser.parse_args()
    print(f"threshold: the validation split's {100 * (1 - FALSE_FLAGS):.0f}th percentile of each score")
    for name in args.dataset:
        checkpoint = load_checkpoint(args.artifacts / name)
        model = checkpoint.model.eval()
        if checkpoint.card.ood is None:
            raise SystemExit(f"{checkpoint.path}: a card without a fitted out-of-distribution score; retrain it")
        data, other = load_dataset(name), load_dataset(OTHER[name])
        seed = int(checkpoint.card.provenance.get("seed", 0))  # type: ignore[call-overload]
        train_index, validation_index = validation_split(data.train_labels, 5000, seed)
        scores = detectors(model, data.train_images[train_index], data.train_labels[train_index], args.k)
        validation = to_model_input(data.train_images[validation_index])
        own = to_model_input(data.test_images)
        foreign = foreign_sets(other.test_images, data.test_images)
        sets = {key: to_model_input(images) for key, images in foreign.items()}
        scores |= combinations(scores["mahalanobis"], scores["reconstruction"], validation)
        ood = checkpoint.card.ood
        print(
            f"\n{name} (seed {seed}, {checkpoint.path}): own test images, {OTHER[name]} test images, and synthetic "
            f"sets; served: {ood.score}, threshold {ood.threshold:.4f} ({ood.false_flag_rate:.0%} of "
            f"{ood.validation_examples:,} validation images), flat under pixel std {ood.flat_std:.4f}"
        )
        columns = ["AUROC vs other", "own flagged", *[f"{key} flagged" for key in sets]]
        print("| score | " + " | ".join(columns) + " |")
        print("|---|" + "---|" * len(columns))
        served_score, served_flag = served(model, checkpoint.judge)
        rows: list[tuple[str, Score, Flag]] = [
            ("served: score and flat images", served_score, served_flag),
            ("served score alone", served_score, lambda x, s=served_score, t=ood.threshold: s(x) > t),  # type: ignore[misc]
        ]
        for score_name, score in scores.items():
            threshold = torch.quantile(score(validation), 1 - FALSE_FLAGS)
            rows.append((score_name, score, lambda x, s=score, t=threshold: s(x) > t))  # type: ignore[misc]
        for row_name, score, flag in rows:
            cells = [
                f"{auroc(score(own), score(sets['other data set'])):.4f}",
                f"{flag(own).float().mean():.1%}",
            ]
            cells += [f"{flag(images).float().mean():.1%}" for images in sets.values()]
            print(f"| {row_name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
