"""What the out-of-distribution score costs the forward pass: the service's classify forward with the checkpoint's
score, and with the reconstruction error alone (the flag of cards before the score), at batch sizes 1, 32 and 256.

Each cell is the median over `--rounds` rounds of the mean time of `--repeats` forwards, on the CPU with torch's
default threads (or `--threads`).

    .venv/bin/python -m bench.serving.ood_cost [--artifacts artifacts] [--rounds 5] [--repeats 200] [--threads N]
"""

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.harness import ROOT
from models import load_checkpoint
from models.ood import ReconstructionOnly
from service.core.forward import classify
from service.core.repository import ServedModel
from service.core.run_torch import TorchRunner
from training.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.artifacts / "mnist")
    cpu = torch.device("cpu")
    with_score = ServedModel(
        "mnist", checkpoint.card, TorchRunner(checkpoint.model, checkpoint.card, checkpoint.judge, cpu)
    )
    reconstruction_only = ReconstructionOnly(checkpoint.card.error_threshold)
    without = replace(with_score, runner=TorchRunner(checkpoint.model, checkpoint.card, reconstruction_only, cpu))
    images = load_dataset("mnist").test_images.numpy()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per classify forward, median of rounds")
    print("| batch | reconstruction error only | with the score | added |")
    print("|---|---|---|---|")
    for batch in (1, 32, 256):
        pixels = images[:batch]
        cells = {}
        for label, served in (("without", without), ("with", with_score)):
            rounds = []
            for _ in range(args.rounds):
                classify(served, pixels)  # warm
                start = time.perf_counter()
                for _ in range(args.repeats):
                    classify(served, pixels)
                rounds.append(1000 * (time.perf_counter() - start) / args.repeats)
            cells[label] = statistics.median(rounds)
        added = cells["with"] / cells["without"] - 1
        print(f"| {batch} | {cells['without']:.3f} | {cells['with']:.3f} | {added:+.0%} |")


if __name__ == "__main__":
    main()
