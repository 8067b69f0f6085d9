"""The optimizer and its learning-rate schedule, as optax pieces.

    optimizer = make_optimizer(config, total_steps)   # clip by global norm, then Adam (or RMSprop)
"""

from __future__ import annotations

from typing import Optional

import optax

from .config import TrainConfig


def learning_rate_schedule(config: TrainConfig, total_steps: Optional[int]) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine decay to ``learning_rate * min_lr_ratio`` at
    `total_steps` (or constant when decay is "constant" or the run has no step limit)."""
    peak, warmup = config.learning_rate, config.warmup_steps
    if config.decay == "constant" or total_steps is None or total_steps <= warmup:
        after = optax.constant_schedule(peak)
    else:
        after = optax.cosine_decay_schedule(peak, total_steps - warmup, alpha=config.min_lr_ratio)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(config: TrainConfig, total_steps: Optional[int]) -> optax.GradientTransformation:
    """Global-norm clipping followed by Adam (or RMSprop) on the learning-rate schedule."""
    schedule = learning_rate_schedule(config, total_steps)
    if config.optimizer == "adam":
        inner = optax.adam(schedule)
    else:  # rmsprop, with char-rnn's decay
        inner = optax.rmsprop(schedule, decay=0.95, eps=1e-8)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), inner)


def steps_in_time(step: int, seconds_left: float, seconds_per_step: float) -> int:
    """The step a run will have reached when its time runs out: `step` plus the steps that fit in
    `seconds_left` at `seconds_per_step` (training and its share of validation), at least ``step + 1``.

    A run stopped by time alone decays its learning rate over this many steps (`charrnn.train.Trainer`), as a
    run stopped by a step count decays it over that count.
    """
    return step + max(1, int(seconds_left / max(seconds_per_step, 1e-9)))
