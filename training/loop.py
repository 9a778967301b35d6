"""One generic training loop: it knows batches, optimizers and schedules, not what the model means."""

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from training.recipes import Recipe

# (batch indices) -> (mean loss, number of correct predictions or None)
BatchStep = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class StageHistory:
    name: str
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    batch_losses: list[float] = field(default_factory=list)  # for the plots, not the card
    batches_per_epoch: int = 0
    seconds: float = 0.0


def make_optimizer(parameters: Iterable[nn.Parameter], recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    params = list(parameters)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


@dataclass(frozen=True)
class StageConfig:
    """How one stage trains; what it trains and on which rows are run_stage's other arguments."""

    name: str  # in the progress lines and the card's provenance
    epochs: int
    lr: float  # the peak of the one-cycle schedule, when the recipe has one
    recipe: Recipe  # optimizer, weight decay, batch size and schedule
    max_batches: int | None = None  # per epoch: the dry run's cap
    ema_decay: float = 0.0  # 0: no moving average
    max_norm: float = 0.0  # > 0: every matrix's rows longer than this L2 norm are scaled back to it after each step


def run_stage(
    config: StageConfig,
    parameters: Iterable[nn.Parameter],
    step: BatchStep,
    num_examples: int,
    generator: torch.Generator,
    device: torch.device,
) -> StageHistory:
    """Train `parameters` for `config.epochs` passes over shuffled batches, `step` giving each batch's loss.

    With `config.ema_decay`, the parameters end as the exponential moving average of their values after each step.
    With `config.max_norm`, each row of every matrix among them (a unit's incoming weights) is scaled back to that
    L2 norm after each step when it is longer; vectors (biases) are left alone.
    """
    name, epochs, lr, recipe, ema_decay = config.name, config.epochs, config.lr, config.recipe, config.ema_decay
    params = list(parameters)
    optimizer = make_optimizer(params, recipe, lr)
    averages = [p.detach().clone() for p in params] if ema_decay else []
    matrices = [p for p in params if p.dim() == 2] if config.max_norm else []
    batches = math.ceil(num_examples / recipe.batch_size)
    if config.max_batches is not None:
        batches = min(batches, config.max_batches)
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * batches, pct_start=0.2)
        if recipe.schedule == "onecycle"
        else None
    )
    history = StageHistory(name, batches_per_epoch=batches)
    start = time.perf_counter()
    bar = tqdm(total=epochs * batches, desc=name, unit="batch", leave=False, file=sys.stderr, disable=None)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(num_examples, generator=generator).to(device)
        losses: list[torch.Tensor] = []
        correct_sum = torch.zeros((), device=device)
        for b in range(batches):
            indices = order[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            loss, correct = step(indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if matrices:
                with torch.no_grad():
                    for matrix in matrices:
                        matrix.renorm_(2, 0, config.max_norm)
            if scheduler is not None:
                scheduler.step()
            if averages:
                with torch.no_grad():
                    torch._foreach_lerp_(averages, [p.detach() for p in params], 1.0 - ema_decay)
            losses.append(loss.detach())
            if correct is not None:
                correct_sum += correct
            bar.update()
        seen = min(num_examples, batches * recipe.batch_size)
        batch_losses = torch.stack(losses).cpu()  # one device sync per epoch
        history.batch_losses += batch_losses.tolist()
        sizes = torch.full((batches,), float(recipe.batch_size))
        sizes[-1] = seen - recipe.batch_size * (batches - 1)
        history.losses.append(float((batch_losses * sizes).sum() / seen))
        line = f"{name} epoch {epoch}/{epochs}: loss {history.losses[-1]:.4f}"
        if correct is not None:
            history.accuracies.append(correct_sum.item() / seen)
            line += f", train accuracy {100 * history.accuracies[-1]:.2f}%"
        bar.set_postfix_str(line.split(": ", 1)[1])
        tqdm.write(line, file=sys.stderr)
    bar.close()
    if averages:
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in params], averages)
            # The average starts from the weights before the stage, which the bound did not hold; its share fades
            # (decay ** steps), and this holds the bound on what is left of it.
            for matrix in matrices:
                matrix.renorm_(2, 0, config.max_norm)
    history.seconds = time.perf_counter() - start
    return history
