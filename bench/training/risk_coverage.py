"""Accuracy and coverage of the served models on the test set when the service abstains under min_confidence.

Coverage is the share of test images answered (top probability at or over the threshold); accuracy is over
those. The probabilities are the calibrated ones the service serves (the card's temperature).

    .venv/bin/python -m bench.training.risk_coverage [--artifacts artifacts] [--thresholds 0 0.5 0.9 0.99]
"""

import argparse
from pathlib import Path

import torch

from bench.harness import ROOT
from models import load_checkpoint, to_model_input
from training.data import load_dataset


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.0, 0.5, 0.9, 0.99])
    args = parser.parse_args()
    print("| model | min_confidence | coverage | accuracy of the answered | errors answered |")
    print("|---|---|---|---|---|")
    for name in ("mnist", "fashion-mnist"):
        checkpoint = load_checkpoint(args.artifacts / name)
        data = load_dataset(name)
        logits = checkpoint.model.eval().classify(to_model_input(data.test_images))
        probabilities = (logits / checkpoint.card.temperature).softmax(1)
        confidence, predicted = probabilities.max(1)
        right = predicted == data.test_labels
        for threshold in args.thresholds:
            answered = confidence >= threshold
            count = int(answered.sum())
            accuracy = right[answered].double().mean().item() if count else float("nan")
            errors = int((answered & ~right).sum())
            print(
                f"| {name} (T {checkpoint.card.temperature:.3f}) | {threshold:g} | {100 * count / len(right):.2f}% "
                f"| {100 * accuracy:.2f}% | {errors} |"
            )


if __name__ == "__main__":
    main()
