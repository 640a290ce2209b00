"""Optimisers by name and the learning-rate schedule (warm-up, then cosine / step / constant)."""
from __future__ import annotations

import math

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULES = ("cosine", "step", "constant")


def build_optimizer(name: str, params, **kwargs) -> torch.optim.Optimizer:
    """An optimiser by name; the error lists the valid names."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, **kwargs)


def lr_factor(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    schedule: str = "cosine",
    milestones=(),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at iteration ``step``.

    Linear warm-up from 1% over ``warmup_epochs``, then ``cosine`` decay to 0 at
    the end, ``step`` decay by ``gamma`` at each epoch in ``milestones``, or
    ``constant``.

    Examples:
        >>> [round(lr_factor(s, 10, 4, warmup_epochs=1, schedule="cosine"), 3) for s in (0, 5, 10, 25, 39)]
        [0.01, 0.505, 1.0, 0.5, 0.003]
    """
    warm = warmup_epochs * steps_per_epoch
    if step < warm:
        return 0.01 + 0.99 * step / warm
    epoch = step / steps_per_epoch
    if schedule == "cosine":
        total = epochs * steps_per_epoch - warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(total, 1))))
    if schedule == "step":
        return gamma ** sum(epoch >= m for m in milestones)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; use one of {list(SCHEDULES)}")
