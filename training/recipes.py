"""Training recipes: the lecture's settings (`seed`) and the project's best for the same net (`default`)."""

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    optimizer: str  # "sgd" or "adamw"
    pretrain_lr: float
    finetune_lr: float
    batch_size: int
    pretrain_epochs: int  # per greedy stage; the whole end-to-end run
    finetune_epochs: int
    schedule: str = "constant"  # or "onecycle"
    weight_decay: float = 0.0
    masking_noise: float = 0.0  # share of input pixels zeroed while pretraining (denoising)
    input_dropout: float = 0.0
    dropout: float = 0.0
    max_shift: int = 0  # random translation of training images while fine-tuning, in pixels
    hflip: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SEED = Recipe(
    name="seed",
    optimizer="sgd",
    pretrain_lr=0.98,
    finetune_lr=0.1,
    batch_size=1000,
    pretrain_epochs=10,
    finetune_epochs=10,
)

DEFAULT = Recipe(
    name="default",
    optimizer="adamw",
    pretrain_lr=3e-3,
    finetune_lr=3e-3,
    batch_size=256,
    pretrain_epochs=1,
    finetune_epochs=20,
    schedule="onecycle",
    masking_noise=0.2,
    input_dropout=0.1,
    dropout=0.2,
    max_shift=2,
)

RECIPES = {r.name: r for r in (DEFAULT, SEED)}


def recipe_for(name: str, dataset: str) -> Recipe:
    """The named recipe, with the augmentations that suit the data set."""
    recipe = RECIPES[name]
    if recipe.name == "default" and dataset == "fashion-mnist":
        # Garments are left-right symmetric classes; digits are not.
        recipe = replace(recipe, hflip=True)
    return recipe
