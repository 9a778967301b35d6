"""One fine-tuning epoch on MNIST: the project's in-memory data path vs the lecture's torchvision DataLoader path.

Both train the same 784-400-256-10 net with plain SGD at batch 1000 (the lecture's settings), on the
same machine and thread count; only the way batches reach the model differs.

    .venv/bin/python -m bench.training.train_speed [--data-dir data] [--repeats 3]
"""

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from models import SAEConfig, StackedAutoencoder, to_model_input
from training.data import FILES, default_data_dir, fetch, load_dataset

BATCH = 1000


def train_epoch(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    torch.manual_seed(0)
    model = StackedAutoencoder(SAEConfig())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    start = time.perf_counter()
    for x, y in batches:
        loss = F.nll_loss(model.classify(x.view(len(x), 784)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def project_batches(x: torch.Tensor, y: torch.Tensor) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(x))
    for i in range(0, len(x), BATCH):
        idx = order[i : i + BATCH]
        yield x[idx], y[idx]


def lecture_loader(data_dir: Path, root: Path) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for file in FILES:
        source = data_dir / "mnist" / file
        (raw / file).symlink_to(source.resolve())
    dataset = datasets.MNIST(str(root), train=True, transform=transforms.ToTensor(), download=False)
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (default: $SAE_DATA_DIR or ./data)")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per path; the best is reported")
    args = parser.parse_args()
    data_dir = args.data_dir or default_data_dir()
    fetch("mnist", data_dir, log=lambda _: None)
    if any(not (data_dir / "mnist" / f).is_file() for f in FILES):
        raise SystemExit(f"bench needs the raw (not .gz) IDX files in {data_dir / 'mnist'}")

    load_start = time.perf_counter()
    data = load_dataset("mnist", data_dir)
    x, y = to_model_input(data.train_images), data.train_labels
    load_seconds = time.perf_counter() - load_start
    ours = min(train_epoch(project_batches(x, y)) for _ in range(args.repeats))
    with tempfile.TemporaryDirectory() as tmp:
        loader = lecture_loader(data_dir, Path(tmp))
        theirs = min(train_epoch(loader) for _ in range(args.repeats))

    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads")
    print(f"one-off load of both splits into memory:       {load_seconds:6.2f} s")
    print(f"epoch, project path (in-memory tensors):        {ours:6.2f} s")
    print(f"epoch, lecture path (torchvision DataLoader):   {theirs:6.2f} s")
    print(f"speed-up: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
