"""How good a distillation teacher is on its own, and what it costs: a recipe's teacher, with overrides, trained as
`train` trains it (the same training split, augmentation, optimizer and schedule), then measured on the validation
split, where a teacher is chosen, and on the test set, only measured. The teacher's random draws here do not follow a
pretraining's, so a seed's figures differ from that seed's teacher inside a whole run.

    .venv/bin/python -m bench.training.teacher_accuracy --dataset fashion-mnist [--recipe best] [--seeds 0 1 2] \
        [--threads 2] [--variants '[{}, {"teacher_arch": "bn", "teacher_channels": 24}]'] [--out teachers.jsonl]
"""

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from models import to_model_input
from training.data import DATASETS, Dataset, load_dataset
from training.recipes import RECIPES, recipe_for
from training.teacher import teacher_logits, train_teacher
from training.train import training_split


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).double().mean().item()


def measure(data: Dataset, recipe_name: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """One teacher: its validation and test accuracy and its training seconds."""
    recipe = replace(recipe_for(recipe_name, data.name), **overrides)
    if not recipe.teacher_epochs:
        raise ValueError(f"the {recipe_name} recipe with {overrides} trains no teacher (teacher_epochs 0)")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_index, validation_index = training_split(data, recipe, seed)
    all_x = to_model_input(data.train_images)
    start = time.perf_counter()
    teacher, _ = train_teacher(
        all_x[train_index], data.train_labels[train_index], len(data.class_names), recipe, generator
    )
    seconds = time.perf_counter() - start
    return {
        "dataset": data.name,
        "recipe": recipe_name,
        "overrides": overrides,
        "seed": seed,
        "validation_accuracy": accuracy(
            teacher_logits(teacher, all_x[validation_index]), data.train_labels[validation_index]
        ),
        "test_accuracy": accuracy(teacher_logits(teacher, to_model_input(data.test_images)), data.test_labels),
        "seconds": round(seconds, 2),
        "parameters": sum(p.numel() for p in teacher.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--recipe", choices=list(RECIPES), default="best")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="[{}]", help="a JSON list of recipe field overrides, {} the recipe's own")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=None, help="also append each row as JSON Lines here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = json.loads(args.variants)
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        parser.error("--variants: a JSON list of objects")
    data = load_dataset(args.dataset, args.data_dir)
    print(f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads, {args.dataset}, {args.recipe}")
    for overrides in variants:
        for seed in args.seeds:
            row = measure(data, args.recipe, overrides, seed)
            print(
                f"seed {seed}: validation {100 * row['validation_accuracy']:.2f}%, test "
                f"{100 * row['test_accuracy']:.2f}%, {row['seconds']:.1f} s, {row['parameters']:,} parameters  "
                f"{json.dumps(overrides, sort_keys=True)}",
                flush=True,
            )
            if args.out is not None:
                with args.out.open("a") as out:
                    out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
