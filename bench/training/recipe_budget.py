"""The `default` recipe's training time against the `seed` recipe's, measured in the same run on this machine.

The goal for `default` is at most twice `seed`'s time on each data set, so the budget follows the machine's
speed. Both train the same net (greedy pretraining) with the same seed; the times are the card's training
seconds (pretraining, fine-tuning and the decoder refit; not loading data or evaluating).

    .venv/bin/python -m bench.training.recipe_budget [--dataset mnist fashion-mnist] [--seed 0] [--device cpu]
"""

import argparse
import platform

import torch

from models import resolve_device
from training.data import DATASETS, fetch, load_dataset
from training.recipes import recipe_for
from training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {device}")
    print("| data set | seed: seconds, test accuracy | default: seconds, test accuracy | default / seed |")
    print("|---|---|---|---|")
    for name in args.dataset:
        fetch(name)
        data = load_dataset(name)
        figures = {}
        for recipe in ("seed", "default"):
            result = train(data, "greedy", recipe_for(recipe, name), args.seed, device)
            figures[recipe] = (result.card.provenance["training_seconds"], result.metrics["test_accuracy"])
        (seed_s, seed_acc), (default_s, default_acc) = figures["seed"], figures["default"]
        print(
            f"| {name} | {seed_s:.1f} s, {100 * seed_acc:.2f}% | {default_s:.1f} s, {100 * default_acc:.2f}% "
            f"| {default_s / seed_s:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
