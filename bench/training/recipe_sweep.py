"""Search a recipe's settings: train many variants, several at a time, and print each one's accuracy.

Each variant is a recipe (`default` or `best`, tuned per data set) with some fields replaced. Variants are chosen
on the validation split's accuracy; the test accuracy is printed beside it, only measured. Results go to a JSON
Lines file as they finish, so a run cut short keeps what it had.

    .venv/bin/python -m bench.training.recipe_sweep --grid default-mnist [--samples 40] [--seeds 0] [--jobs 1]
        [--device cpu] [--data-dir data] [--out sweep.jsonl]

On a GPU, several jobs share it (each its own process); on a CPU, give each job cores / jobs threads.
"""

import argparse
import json
import os
import platform
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from models import resolve_device
from training.data import Dataset, load_dataset
from training.recipes import recipe_for
from training.train import train

# Each grid: (data set, recipe, {field: choices}); a variant takes one choice per field at random. The recipe
# itself is run too, with BASES' fields replaced for the grids named there.
GRIDS: dict[str, tuple[str, str, dict[str, list[Any]]]] = {
    "default-mnist": (
        "mnist",
        "default",
        {
            "finetune_epochs": [20, 25, 30],
            "batch_size": [128, 256, 512],
            "finetune_lr": [2e-3, 3e-3, 5e-3],
            "dropout": [0.0, 0.1, 0.2, 0.3],
            "input_dropout": [0.0, 0.1, 0.2],
            "max_shift": [1, 2],
            "max_rotation": [0.0, 10.0, 15.0],
            "max_scale": [0.0, 0.1],
            "elastic_alpha": [0.0, 0.0, 20.0, 34.0],
            "ema_decay": [0.0, 0.998, 0.999],
            "label_smoothing": [0.0, 0.1],
            "weight_decay": [0.0, 0.05],
        },
    ),
    "default-fashion": (
        "fashion-mnist",
        "default",
        {
            "finetune_epochs": [20, 30, 40],
            "batch_size": [64, 128, 256],
            "finetune_lr": [1e-3, 2e-3, 4e-3],
            "dropout": [0.0, 0.1, 0.2],
            "input_dropout": [0.0, 0.1],
            "max_shift": [0, 0, 1],
            "hflip": [False, True],
            "erasing": [0.0, 0.25],
            "ema_decay": [0.0, 0.998, 0.999],
            "label_smoothing": [0.0, 0.1],
            "weight_decay": [0.0, 0.05, 0.2],
            "masking_noise": [0.0, 0.2],
        },
    ),
    "best-mnist": (
        "mnist",
        "best",
        {
            "finetune_epochs": [100, 200, 300],
            "batch_size": [128, 256],
            "finetune_lr": [2e-3, 3e-3],
            "dropout": [0.0, 0.1, 0.2],
            "input_dropout": [0.0, 0.1],
            "elastic_alpha": [20.0, 34.0],
            "label_smoothing": [0.0, 0.1],
            "ema_decay": [0.999, 0.9995],
        },
    ),
    "best-fashion": (
        "fashion-mnist",
        "best",
        {
            "finetune_epochs": [60, 100, 200],
            "batch_size": [64, 128, 256],
            "finetune_lr": [1e-3, 2e-3],
            "dropout": [0.0, 0.1, 0.2],
            "input_dropout": [0.0, 0.1],
            "max_shift": [0, 1, 2],
            "erasing": [0.0, 0.25, 0.5],
            "hflip": [False, True],
            "label_smoothing": [0.0, 0.1],
            "weight_decay": [0.0, 0.05],
        },
    ),
    "distill-mnist": (
        "mnist",
        "best",
        {
            "teacher_epochs": [5, 10, 15],
            "teacher_channels": [16, 32],
            "distill_weight": [0.5, 0.7, 0.9],
            "distill_temperature": [2.0, 4.0],
            "finetune_epochs": [60, 100, 150],
            "dropout": [0.0, 0.1],
            "elastic_alpha": [0.0, 34.0],
        },
    ),
    "distill-fashion": (
        "fashion-mnist",
        "best",
        {
            "teacher_epochs": [10, 15, 20],
            "teacher_channels": [16, 32, 48],
            "distill_weight": [0.5, 0.7, 0.9],
            "distill_temperature": [2.0, 4.0],
            "finetune_epochs": [40, 60, 100, 150],
            "batch_size": [128, 256],
            "max_shift": [0, 1, 2],
            "erasing": [0.0, 0.25],
            "hflip": [False, True],
        },
    ),
}

BASES: dict[str, dict[str, Any]] = {
    "distill-mnist": {"teacher_epochs": 10, "teacher_channels": 16, "distill_weight": 0.7},
    "distill-fashion": {"teacher_epochs": 15, "teacher_channels": 32, "distill_weight": 0.7},
}

_data: dict[str, Dataset] = {}


def variants(grid: str, samples: int, rng: random.Random) -> list[dict[str, Any]]:
    """The recipe (with BASES' fields) first, then `samples` distinct random variants."""
    fields = GRIDS[grid][2]
    base = BASES.get(grid, {})
    chosen: list[dict[str, Any]] = [base]
    seen: set[str] = set()
    for _ in range(samples * 20):
        if len(chosen) > samples:
            break
        variant = {**base, **{name: rng.choice(choices) for name, choices in fields.items()}}
        key = json.dumps(variant, sort_keys=True)
        if key not in seen:
            seen.add(key)
            chosen.append(variant)
    return chosen


def start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_one(
    grid: str, overrides: dict[str, Any], seed: int, device_name: str, data_dir: str, teacher_cache: Path | None = None
) -> dict[str, Any]:
    dataset, recipe_name, _ = GRIDS[grid]
    if dataset not in _data:
        _data[dataset] = load_dataset(dataset, Path(data_dir))
    data = _data[dataset]
    recipe = replace(recipe_for(recipe_name, dataset), **overrides)
    device = resolve_device(device_name)
    result = train(data, "greedy", recipe, seed, device, teacher_cache=teacher_cache)
    calibration = result.card.calibration
    return {
        "grid": grid,
        "overrides": overrides,
        "seed": seed,
        "validation_accuracy": result.validation_accuracy,
        "test_accuracy": result.metrics["test_accuracy"],
        "test_ece_after": calibration.test_ece_after if calibration else None,
        "seconds": result.card.provenance["training_seconds"],
        "teacher_test_accuracy": result.card.provenance.get("teacher_test_accuracy"),
        "teacher_cached": result.card.provenance.get("teacher_cached", False),
        "stage_seconds": {stage.name: round(stage.seconds, 2) for stage in result.history},
        "device": str(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    grids = ", ".join(GRIDS)
    parser.add_argument("--grid", nargs="+", required=True, help=f"GRID or GRID:SAMPLES, GRID one of {grids}")
    parser.add_argument("--samples", type=int, default=40, help="random variants per grid, beside the recipe itself")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--baseline-seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the recipe itself")
    parser.add_argument("--variants", default=None, help="a JSON list of field overrides to run instead of samples")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", type=Path, default=Path("sweep.jsonl"))
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument(
        "--teacher-cache",
        type=Path,
        default=None,
        help="a folder: variants with consistent views (distill_views) that differ only in the student's settings "
        "share one teacher, trained by the first and replayed by the others (their seconds leave it out)",
    )
    args = parser.parse_args()

    rng = random.Random(args.sample_seed)
    queues = []
    for spec in args.grid:
        grid, _, samples = spec.partition(":")
        if grid not in GRIDS:
            parser.error(f"unknown grid {grid!r}; choose from {', '.join(GRIDS)}")
        queue = []
        if args.variants is not None:  # only the given variants, over --seeds
            given = [{**BASES.get(grid, {}), **v} for v in json.loads(args.variants)]
            queue = [(grid, overrides, seed) for overrides in given for seed in args.seeds]
        else:
            for i, overrides in enumerate(variants(grid, int(samples or args.samples), rng)):
                for seed in args.baseline_seeds if i == 0 else args.seeds:
                    queue.append((grid, overrides, seed))
        queues.append(queue)
    # Round robin over the grids, so that a run cut short has some of each.
    tasks = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.device == "cpu" else 1
    print(f"{platform.machine()}, {len(tasks)} runs, {args.jobs} at a time, {threads} threads each, {args.device}")
    start = time.perf_counter()
    context = get_context("spawn")
    pool = ProcessPoolExecutor(args.jobs, mp_context=context, initializer=start_worker, initargs=(threads,))
    with pool, args.out.open("a") as out:
        futures = [pool.submit(run_one, *task, args.device, args.data_dir, args.teacher_cache) for task in tasks]
        for future in as_completed(futures):
            row = future.result()
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(
                f"{time.perf_counter() - start:7.1f} s  {row['grid']} seed {row['seed']}: validation "
                f"{100 * row['validation_accuracy']:.2f}%, test {100 * row['test_accuracy']:.2f}%, "
                f"{row['seconds']:.1f} s  {json.dumps(row['overrides'], sort_keys=True)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
