"""The optimizer and its learning-rate schedule.

The schedule is written out (`lr_multiplier`) rather than taken from transformers: its warmup
starts at 1/warmup of the peak, where transformers' schedules start at 0 (a wasted first step);
their variant that starts above 0 (`..._lr_rate`) shifts the decay by one step. Past the warmup
the two agree step for step (`tests/test_train_units.py` compares them).
"""

from __future__ import annotations

import math

from condlabel.config.train import OptimizationBase

# Fixed, not a setting: a decaying schedule ends at this fraction of the peak learning rate
# (the usual 10%), for train and distill alike.
MIN_LR_RATIO = 0.1


def lr_multiplier(step: int, cfg: OptimizationBase) -> float:
    """Learning rate at optimizer step `step` (0-based) as a fraction of the peak."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = MIN_LR_RATIO
    if cfg.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model, cfg: OptimizationBase):
    """(AdamW, LambdaLR over `lr_multiplier`); no weight decay on biases and norm weights."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, cfg))
    return optimizer, scheduler
