from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.loop import StageConfig, run_stage
from training.recipes import SEED
from training.schemes import classification_loss


def test_ema_leaves_the_moving_average_of_the_weights() -> None:
    weight = nn.Parameter(torch.zeros(1))

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -weight.sum(), None  # gradient -1: plain SGD at lr 1 moves the weight to 1, 2, 3

    recipe = replace(SEED, batch_size=1)
    config = StageConfig("toy", epochs=1, lr=1.0, recipe=recipe, ema_decay=0.5)
    run_stage(config, [weight], step, 3, torch.Generator(), torch.device("cpu"))
    assert weight.item() == pytest.approx(2.125)  # 0 -> 0.5 -> 1.25 -> 2.125


def test_label_smoothing_matches_cross_entropy_with_smoothed_targets() -> None:
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    target = torch.arange(8)
    log_probs = logits.log_softmax(1)
    assert classification_loss(log_probs, target) == pytest.approx(F.cross_entropy(logits, target).item())
    expected = F.cross_entropy(logits, target, label_smoothing=0.1).item()
    assert classification_loss(log_probs, target, 0.1).item() == pytest.approx(expected, rel=1e-6)


def test_max_norm_scales_back_each_long_row_and_leaves_vectors() -> None:
    # Rows of norm 5 (3, 4) and 0.5; the gradient of -sum grows every entry by lr 1 a step.
    weight = nn.Parameter(torch.tensor([[3.0, 4.0], [0.3, 0.4]]))
    bias = nn.Parameter(torch.zeros(2))

    def step(indices: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -(weight.sum() + bias.sum()), None

    recipe = replace(SEED, batch_size=1)
    free = StageConfig("toy", epochs=1, lr=1.0, recipe=recipe)
    run_stage(free, [weight, bias], step, 1, torch.Generator(), torch.device("cpu"))
    assert weight.norm(dim=1)[0].item() == pytest.approx(41**0.5)  # (4, 5): no bound without max_norm
    weight.data = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    bias.data.zero_()
    bounded = replace(free, max_norm=2.0)
    run_stage(bounded, [weight, bias], step, 1, torch.Generator(), torch.device("cpu"))
    norms = weight.norm(dim=1)
    assert norms[0].item() == pytest.approx(2.0, rel=1e-5)  # (4, 5) scaled back to norm 2, direction kept
    assert weight[0, 1].item() / weight[0, 0].item() == pytest.approx(5 / 4)
    assert weight[1].tolist() == pytest.approx([1.3, 1.4])  # norm 1.91: under the bound, untouched
    assert bias.tolist() == [1.0, 1.0]  # vectors are not bounded
