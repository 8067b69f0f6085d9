"""The optimizer, its learning-rate schedule, and what a run's length decides: as optax pieces and plain functions.

    optimizer = make_optimizer(config, total_steps)   # clip by global norm, then Adam (or RMSprop)
    rate = dropout_for_epochs(12.0)                   # the default dropout for a run of 12 passes over the data
"""

from __future__ import annotations

import math
from typing import Optional

import jax
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
    """Global-norm clipping followed by Adam (its second moment decaying by `adam_beta2`) or RMSprop, on the
    learning-rate schedule; with `weight_decay`,
    decoupled weight decay of the matrices (``θ -= lr · weight_decay · θ`` after the scaled gradient, as AdamW;
    biases are left alone)."""
    schedule = learning_rate_schedule(config, total_steps)
    if config.weight_decay == 0.0:  # the plain optax optimizers: their state is what older checkpoints hold
        if config.optimizer == "adam":
            inner = optax.adam(schedule, b2=config.adam_beta2)
        else:  # rmsprop, with char-rnn's decay
            inner = optax.rmsprop(schedule, decay=0.95, eps=1e-8)
        return optax.chain(optax.clip_by_global_norm(config.grad_clip), inner)
    if config.optimizer == "adam":
        scale = optax.scale_by_adam(b2=config.adam_beta2)
    else:
        scale = optax.scale_by_rms(decay=0.95, eps=1e-8)
    matrices = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), scale,
                       optax.add_decayed_weights(config.weight_decay, mask=matrices),
                       optax.scale_by_learning_rate(schedule))


# The peak learning rate of a run that only the clock stops (and that does not choose one). Such a run makes few
# steps, and a higher peak, decayed to the end of the time, gets more from them: on tinyshakespeare in 10 minutes
# (LSTM 2×384) 0.003 made 1.4469, 0.005 1.4355 and 0.007 1.4222 nats, one after the other (benchmarks/README.md).
TIME_LIMITED_LEARNING_RATE = 7e-3


def default_learning_rate(config: TrainConfig) -> float:
    """The peak learning rate for a run that does not choose one: `TIME_LIMITED_LEARNING_RATE` when only time
    stops it (`config.time_limited`) and it trains by backpropagation, else `TrainConfig`'s default (0.003)."""
    if config.time_limited and config.gradient == "bptt":
        return TIME_LIMITED_LEARNING_RATE
    return TrainConfig.__dataclass_fields__["learning_rate"].default


# The moving average of the weights (`TrainConfig.weight_average`) fitted to a run's length spans about this
# fraction of its last steps. A run that only the clock stops ends on a cosine decay to a tenth of its peak rate,
# still high enough that the weights jitter about where they head, and their recent average lies closer. In one
# run each, the same run's average against its weights (decay: nats/char; benchmarks/README.md), best at a span
# of 5-8% of the steps:
#   Linux source, 10 min, 1,650 steps: 0.99: 1.3327, 0.995: 1.3342, 0.998: 1.3386; the weights 1.3467
#   tinyshakespeare, 10 min, 2,352 steps: 0.97: 1.4047, 0.99: 1.4028, 0.995: 1.4011; the weights 1.4099
#   Linux source, 3 min, 1,246 steps: 0.95: 1.4591, 0.98: 1.4537, 0.99: 1.4518, 0.995: 1.4551; the weights 1.4714
#   War and Peace, 3 min, 768 steps: 0.95: 1.2546, 0.98: 1.2545, 0.99: 1.2598, 0.995: 1.2778; the weights 1.2607
WEIGHT_AVERAGE_SPAN = 0.08
UNKNOWN_LENGTH_WEIGHT_AVERAGE = 0.99  # the decay fitted to a run whose length is not known (yet): 100 steps


def weight_average_decay(weight_average: Optional[float], planned_steps: Optional[int]) -> float:
    """The decay of the weights' moving average: `weight_average` when it is a number; when None (fitted to the
    run), the decay d whose average spans about `WEIGHT_AVERAGE_SPAN` of the `planned_steps` (1 / (1 − d) steps,
    at least 1: d = 1 − 1 / (span × steps)), or `UNKNOWN_LENGTH_WEIGHT_AVERAGE` while they are not known."""
    if weight_average is not None:
        return weight_average
    if planned_steps is None:
        return UNKNOWN_LENGTH_WEIGHT_AVERAGE
    return 1.0 - 1.0 / max(1.0, WEIGHT_AVERAGE_SPAN * planned_steps)


def default_weight_average(config: TrainConfig) -> Optional[float]:
    """The moving average of the weights for a run that does not choose one: fitted to its length (None) when
    only time stops it (`config.time_limited`), else none (0: the model is the weights themselves)."""
    return None if config.time_limited else 0.0


def steps_in_time(step: int, seconds_left: float, seconds_per_step: float) -> int:
    """The step a run will have reached when its time runs out: `step` plus the steps that fit in
    `seconds_left` at `seconds_per_step` (training and its share of validation), at least ``step + 1``.

    A run stopped by time alone decays its learning rate over this many steps (`charrnn.train.Trainer`), as a
    run stopped by a step count decays it over that count.
    """
    return step + max(1, int(seconds_left / max(seconds_per_step, 1e-9)))


# The default dropout (`dropout_for_epochs`), from time-to-quality runs of the default LSTM (benchmarks/README.md):
# on tinyshakespeare, 6.6 passes are best without dropout and 20 passes best with 0.25 or more; 2×384 at 9 passes
# does as well with 0.1 as with 0.35, but 2×512 at 9 passes made 1.404 with 0.3 against 2×544's 1.440 with the
# 0.15 of this rule unscaled: a wider network, its capacity growing as H², overfits sooner.
DROPOUT_FROM_EPOCHS = 5.0  # no dropout up to this many passes over the training split
DROPOUT_PER_DOUBLING = 0.15  # then this much more for every doubling of the passes...
DROPOUT_REFERENCE_WIDTH = 384  # ...times (H / this)² for a wider network
MAX_DROPOUT = 0.5
DROPOUT_STEP = 0.05  # rates are rounded to this, so that a re-estimated run length rarely changes them


def dropout_for_epochs(epochs: Optional[float], hidden_size: int = DROPOUT_REFERENCE_WIDTH) -> float:
    """The default dropout rate for a run of `epochs` passes over its training split (None: not known yet): 0
    for a short run, which a model cannot overfit and dropout would only slow; then `DROPOUT_PER_DOUBLING` per
    doubling of the passes beyond `DROPOUT_FROM_EPOCHS`, times (hidden_size / `DROPOUT_REFERENCE_WIDTH`)² for a
    network wider than that, up to `MAX_DROPOUT`, in steps of `DROPOUT_STEP`.

    A run of ``ModelConfig(dropout=None)`` uses it (`charrnn.train.Trainer`): with a step or epoch limit from
    the start; with a time limit alone from the steps the time holds, re-estimated at each validation.
    """
    if epochs is None or epochs <= DROPOUT_FROM_EPOCHS:
        return 0.0
    wider = max(1.0, hidden_size / DROPOUT_REFERENCE_WIDTH) ** 2
    rate = DROPOUT_PER_DOUBLING * wider * math.log2(epochs / DROPOUT_FROM_EPOCHS)
    return round(round(min(rate, MAX_DROPOUT) / DROPOUT_STEP) * DROPOUT_STEP, 6)
