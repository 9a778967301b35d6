"""Accuracy and coverage of the served models on the test set when the service abstains under min_confidence.

Coverage is the share of test images answered; accuracy is over those. The service abstains where the top
probability is under min_confidence and, for any min_confidence above 0, where the image is flagged out of
distribution (models/ood.py); the table shows both, and the flag's share of the abstentions. The probabilities are
the calibrated ones the service serves (the card's temperature).

    .venv/bin/python -m bench.training.risk_coverage [--artifacts artifacts] [--thresholds 0 0.5 0.9 0.99]
"""

import argparse
from pathlib import Path

import torch

from bench.harness import ROOT
from models import load_checkpoint, to_model_input
from models.ood import reconstruction_errors
from training.data import load_dataset


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.0, 0.5, 0.9, 0.99])
    args = parser.parse_args()
    columns = ["model", "min_confidence", "coverage", "accuracy of the answered", "errors answered"]
    print("| " + " | ".join([*columns, "abstained for the flag alone"]) + " |")
    print("|---|---|---|---|---|---|")
    for name in ("mnist", "fashion-mnist"):
        checkpoint = load_checkpoint(args.artifacts / name)
        data = load_dataset(name)
        model, x = checkpoint.model.eval(), to_model_input(data.test_images)
        layers = model.encode_layers(x)
        logits = model.classify_code(layers[-1])
        _, flagged = checkpoint.judge(x, layers, reconstruction_errors(x, model.decode(layers[-1])))
        probabilities = (logits / checkpoint.card.temperature).softmax(1)
        confidence, predicted = probabilities.max(1)
        right = predicted == data.test_labels
        for threshold in args.thresholds:
            answered = confidence >= threshold
            if threshold > 0:
                answered &= ~flagged
            count = int(answered.sum())
            accuracy = right[answered].double().mean().item() if count else float("nan")
            errors = int((answered & ~right).sum())
            by_flag = int((flagged & (confidence >= threshold)).sum()) if threshold > 0 else 0
            print(
                f"| {name} (T {checkpoint.card.temperature:.3f}) | {threshold:g} | {100 * count / len(right):.2f}% "
                f"| {100 * accuracy:.2f}% | {errors} | {by_flag} |"
            )


if __name__ == "__main__":
    main()
