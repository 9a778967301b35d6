"""What the distillation teacher costs on this machine: a training step and labelling (eval-mode forward passes),
per image, with its convolutions' activations in the default (channels first) layout and in channels last, and
labelling in batches of 4,096 against teacher.LABEL_BATCH.

    .venv/bin/python -m bench.training.teacher_speed [--images 8192] [--threads 2] [--arch conv] [--channels 32]
"""

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from training.teacher import LABEL_BATCH, TEACHERS

TRAIN_BATCH = 256


def layout(model: nn.Module, channels_last: bool) -> nn.Module:
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def train_us(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Microseconds an image for a pass of AdamW steps over `x`, after one warm-up step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(i: int) -> None:
        loss = F.cross_entropy(model(x[i : i + TRAIN_BATCH]), y[i : i + TRAIN_BATCH])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)
    start = time.perf_counter()
    for i in range(0, len(x), TRAIN_BATCH):
        step(i)
    return (time.perf_counter() - start) / len(x) * 1e6


@torch.no_grad()
def label_us(model: nn.Module, x: torch.Tensor, batch: int) -> float:
    model.eval()
    model(x[:batch])
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    return (time.perf_counter() - start) / len(x) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8192, help="images per timed pass")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--arch", choices=sorted(TEACHERS), default="conv")
    parser.add_argument("--channels", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 784, generator=generator)
    y = torch.randint(0, 10, (args.images,), generator=generator)
    print(
        f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads, teacher {args.arch} "
        f"{args.channels} channels, {args.images} images a pass, microseconds an image"
    )
    print(f"{'layout':<16}{'train step':>12}{'label 4096':>12}{f'label {LABEL_BATCH}':>12}")
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = layout(TEACHERS[args.arch](args.channels, 10), channels_last)
        train = train_us(model, x, y)
        big, small = label_us(model, x, 4096), label_us(model, x, LABEL_BATCH)
        name = "channels last" if channels_last else "channels first"
        print(f"{name:<16}{train:>12.0f}{big:>12.0f}{small:>12.0f}")


if __name__ == "__main__":
    main()
