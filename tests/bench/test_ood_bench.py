"""The out-of-distribution benchmark's own arithmetic: its AUROC and its foreign image sets."""

import torch

from bench.training.ood_bench import auroc, foreign_sets


def test_auroc_is_the_share_of_pairs_the_outside_image_wins_ties_counting_half() -> None:
    assert auroc(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 4.0])) == 1.0
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.5
    assert auroc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == 0.75  # 3 of the 4 pairs


def test_the_foreign_sets_are_images_and_the_blank_one_is_blank() -> None:
    own = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    sets = foreign_sets(torch.zeros(7, 28, 28, dtype=torch.uint8), own, count=20)
    assert all(images.dtype == torch.uint8 and images.shape[1:] == (28, 28) for images in sets.values())
    assert sets["blank"].max() == 0 and len(sets["other data set"]) == 7
    assert torch.equal(sets["inverted"], 255 - own[:20])
    assert len(sets["constant grey"].flatten(1).unique(dim=0)) == len(sets["constant grey"])  # each one grey level
