from dataclasses import replace

import pytest
import torch

from bench.training.augment_speed import convolved_field
from training.augment import elastic_field
from training.recipes import recipe_for


@pytest.mark.parametrize("sigma", [1.0, 4.0, 6.0])
def test_the_matrix_product_field_is_the_reflect_padded_convolution_it_is_timed_against(sigma: float) -> None:
    recipe = replace(recipe_for("best", "mnist"), elastic_sigma=sigma)
    convolved = convolved_field(16, recipe.elastic_alpha, sigma, torch.Generator().manual_seed(3))
    drawn = elastic_field(16, recipe, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert convolved.shape == drawn.shape == (16, 28, 28, 2)
    assert torch.allclose(convolved, drawn, atol=1e-6)
