import torch

from bench.training.augment_speed import convolved_field
from training.augment import elastic_field
from training.recipes import recipe_for


def test_the_convolved_field_it_times_is_the_field_training_draws() -> None:
    best = recipe_for("best", "mnist")
    convolved = convolved_field(16, best.elastic_alpha, best.elastic_sigma, torch.Generator().manual_seed(3))
    drawn = elastic_field(16, best, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert convolved.shape == drawn.shape == (16, 28, 28, 2)
    assert torch.allclose(convolved, drawn, atol=1e-6)
