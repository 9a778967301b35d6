"""What a fine-tuning batch's distortions cost: the elastic field smoothed by convolution (reflect padding, the
separable 25-tap Gaussian) against the same field as a 28x28 matrix product (augment.smoothing_matrix), and each
recipe's whole augment() beside one training step of the 784-400-256-10 net, per batch of 256 images.

    .venv/bin/python -m bench.training.augment_speed [--repeats 200] [--threads 2]
"""

import argparse
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from models import SAEConfig, StackedAutoencoder
from training.augment import augment, elastic_field, gaussian_kernel
from training.recipes import recipe_for

BATCH = 256


def convolved_field(b: int, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """The field as it was smoothed before the matrix product: two reflect-padded 1-d convolutions."""
    field = torch.rand(b * 2, 1, 28, 28, generator=generator) * 2 - 1
    kernel = gaussian_kernel(sigma, field.device)
    pad = len(kernel) // 2
    field = F.conv2d(F.pad(field, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
    return (field.view(b, 2, 28, 28) * alpha * (2.0 / 28)).permute(0, 2, 3, 1)


def milliseconds(work: Callable[[], object], repeats: int) -> float:
    for _ in range(5):
        work()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="batches timed per row")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads, batch {BATCH}, ms per batch")
    generator = torch.Generator().manual_seed(0)
    best = recipe_for("best", "mnist")
    alpha, sigma = best.elastic_alpha, best.elastic_sigma
    conv = milliseconds(lambda: convolved_field(BATCH, alpha, sigma, generator), args.repeats)
    matrix = milliseconds(lambda: elastic_field(BATCH, best, generator, torch.device("cpu")), args.repeats)
    print(f"{'elastic field, convolution':<34}{conv:6.2f}")
    print(f"{'elastic field, matrix product':<34}{matrix:6.2f}   ({conv / matrix:.1f}x)")
    x = torch.rand(BATCH, 784, generator=generator)
    for dataset in ("mnist", "fashion-mnist"):
        for name in ("default", "best"):
            recipe = recipe_for(name, dataset)
            cost = milliseconds(lambda recipe=recipe: augment(x, recipe, generator), args.repeats)
            print(f"{f'augment(), {dataset} {name}':<34}{cost:6.2f}")
    model = StackedAutoencoder(SAEConfig(dropout=0.1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    y = torch.randint(0, 10, (BATCH,), generator=generator)

    def step() -> None:
        loss = F.nll_loss(model.classify(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    print(f"{'one training step (AdamW)':<34}{milliseconds(step, args.repeats):6.2f}")


if __name__ == "__main__":
    main()
