"""bench/training/recipe_sweep.py: its variants and one run, in-process on the tiny data set."""

import random
from pathlib import Path

import pytest

from bench.training import recipe_sweep


@pytest.mark.parametrize("grid", list(recipe_sweep.GRIDS))
def test_variants_start_with_the_recipe_and_are_distinct_draws_from_the_grid(grid: str) -> None:
    chosen = recipe_sweep.variants(grid, 12, random.Random(0))
    base = recipe_sweep.BASES.get(grid, {})
    assert chosen[0] == base and len(chosen) == 13
    assert len({str(sorted(v.items())) for v in chosen}) == 13
    fields = recipe_sweep.GRIDS[grid][2]
    for variant in chosen[1:]:
        assert all(variant[name] in choices for name, choices in fields.items())
        assert set(variant) == set(fields) | set(base)


def test_a_run_reports_validation_and_test_accuracy_apart(tiny_data_dir: Path) -> None:
    overrides = {"finetune_epochs": 8, "batch_size": 32, "max_shift": 0, "max_rotation": 0.0}  # toy bands: 2 px apart
    row = recipe_sweep.run_one("default-mnist", overrides, 0, "cpu", str(tiny_data_dir))
    assert row["overrides"] == overrides and row["seed"] == 0 and row["device"] == "cpu"
    assert 0.5 < row["validation_accuracy"] <= 1 and 0.5 < row["test_accuracy"] <= 1  # toy classes are easy
    assert row["stage_seconds"].keys() == {"pretrain 784-400", "pretrain 784-400-256", "fine-tune", "refit decoders"}
    assert row["teacher_test_accuracy"] is None
