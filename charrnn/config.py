"""Frozen, typed configuration for the model and for training. Each round-trips through a plain dict, which is
what a checkpoint stores."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

CELL_KINDS = ("rnn", "lstm", "gru")
ACTIVATIONS = ("tanh", "relu", "identity")  # the vanilla RNN's φ (as Keras' SimpleRNN); see cells.ACTIVATIONS
OPTIMIZERS = ("adam", "rmsprop")
GRADIENTS = ("bptt", "rtrl")
STATE_RESETS = ("epoch", "never")
PRECISIONS = ("float32", "bfloat16")  # of the training step's matrix products (charrnn.fused, sizing.fit_precision)


class ConfigError(ValueError):
    """An option is out of range. The message says which and what is allowed."""


class DictRoundTrip:
    """to_dict / from_dict for a dataclass; from_dict ignores keys it does not know (newer files) and leaves
    missing ones at their defaults (older files), or at what their absence meant before the field existed
    (`ABSENT_MEANS`, where that differs from today's default)."""

    ABSENT_MEANS: dict[str, Any] = {}  # not a dataclass field: no annotation in the subclasses

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        given = {**cls.ABSENT_MEANS, **d}
        return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})


@dataclasses.dataclass(frozen=True)
class ModelConfig(DictRoundTrip):
    """The architecture: embedding -> `num_layers` stacked cells -> linear head over the vocabulary."""

    vocab_size: int
    cell: str = "lstm"  # rnn, lstm or gru (equations in cells.py)
    hidden_size: int = 384  # H, units per layer: the best of 256, 384 and 512 for 10 minutes on 1 MB (docs/options.md)
    num_layers: int = 2  # depth helps more than width at this size (Karpathy et al. 2015, table 1)
    embedding_size: int = 64  # characters are few; 64 dims is plenty and cheap
    # Between layers and before the head, training only. None: chosen by training from the passes over the data
    # the run will make (`charrnn.optim.dropout_for_epochs`): none for a short run, more the more it repeats.
    dropout: Optional[float] = None
    activation: str = "tanh"  # the RNN's φ (tanh, relu, identity); the LSTM and GRU have none to choose
    # DropConnect on every layer's recurrent matrix U, training only: each step drops the same entries of U for
    # every row and time step of its window (Merity et al. 2017's weight drop), so the recurrence itself is
    # regularised without a mask per time step. 0: off.
    weight_drop: float = 0.0
    # Layer normalisation of every gate's pre-activation and of the LSTM's cell state (equations in cells.py).
    layer_norm: bool = False

    def __post_init__(self):
        if self.cell not in CELL_KINDS:
            raise ConfigError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELL_KINDS)}")
        for name in ("vocab_size", "hidden_size", "num_layers", "embedding_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.weight_drop < 1.0:
            raise ConfigError(f"weight-drop must be in [0, 1), got {self.weight_drop}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if self.cell != "rnn" and self.activation != "tanh":
            raise ConfigError(f"--activation {self.activation} is for the vanilla RNN (--cell rnn); the "
                              f"{self.cell.upper()}'s nonlinearities are part of its equations; drop --activation")

    @property
    def dropout_rate(self) -> float:
        """The dropout rate to apply: `dropout`, or 0 while it is None (not yet fitted by training)."""
        return self.dropout or 0.0


@dataclasses.dataclass(frozen=True)
class TrainConfig(DictRoundTrip):
    """How to train: truncated BPTT over `batch_size` streams, `seq_length` characters per window."""

    # A file from before weight decay trained (and saved Adam's state) without it; one from before segments read
    # contiguous streams; one from before --adam-beta2 used optax's Adam default; one from before --weight-average
    # saved the weights themselves.
    ABSENT_MEANS = {"weight_decay": 0.0, "segment_length": 0, "adam_beta2": 0.999, "weight_average": 0.0}

    batch_size: int = 32  # B contiguous streams; small batches take more steps per epoch, which wins on a CPU
    seq_length: int = 100  # T characters per window; long enough for a line of text
    learning_rate: float = 3e-3  # peak rate; Adam at 2e-3..3e-3 is the char-rnn sweet spot
    optimizer: str = "adam"  # adam or rmsprop
    # Adam's decay of its running mean of squared gradients: 0.999 remembers about 1,000 steps, 0.99 about 100.
    adam_beta2: float = 0.999
    warmup_steps: int = 100  # linear warm-up from 0 avoids a bad first step from Adam's tiny early denominators
    decay: str = "cosine"  # cosine (to min_lr_ratio over the run) or constant
    min_lr_ratio: float = 0.1  # cosine ends at learning_rate * min_lr_ratio
    grad_clip: float = 5.0  # global-norm clipping, as char-rnn (gradients of RNNs occasionally explode)
    weight_decay: float = 0.1  # decoupled (AdamW-style) decay of the weight matrices, times the learning rate
    # The decay of an exponential moving average of the weights, updated every step: the model that is validated,
    # sampled and saved is the average (0: none, the weights themselves). 0.99 averages about the last 100 steps;
    # None: fitted to the run's length (`charrnn.optim.weight_average_decay`).
    weight_average: Optional[float] = 0.0
    max_epochs: Optional[float] = 20.0  # passes over the training split; None = no limit
    max_steps: Optional[int] = None  # stop after this many steps; None = no limit
    max_time: Optional[float] = None  # stop after this many seconds of training; None = no limit
    max_bad_steps: int = 20  # consecutive steps with a non-finite loss/gradient/update before training stops
    # Steps between validation passes (and checkpoints). None (auto): every EVAL_EVERY steps, or a multiple of
    # that when a pass over a large validation split would otherwise cost more than a twentieth of the time
    # (`validation.auto_eval_every`).
    eval_every: Optional[int] = None
    log_every: int = 10  # steps between reading the loss back from the device
    sample_every: int = 1000  # steps between short samples shown while training (0: none)
    val_fraction: float = 0.05  # contiguous splits: train, then validation, then test
    test_fraction: float = 0.05
    seed: int = 0  # same seed, same machine: bit-identical run
    gradient: str = "bptt"  # bptt (truncated, backward) or rtrl (exact, forward in time: small networks only)
    state_reset: str = "epoch"  # epoch: every stream starts from the zero state each epoch; never: continuous
    # Characters per shuffled segment, or 0: contiguous streams (stream b reads the b-th B-th of the text in order).
    # With segments, every row reads a segment drawn from a fresh permutation each epoch, from the zero state, so
    # the batches of any stretch of training come from all over the text (`charrnn.data.ShuffledWindows`).
    segment_length: int = 0
    update_every: Optional[int] = None  # rtrl: characters per weight update (default: seq_length)
    # The operands of the training step's and its validation's matrix products: float32, or bfloat16 with float32
    # sums (mixed precision; parameters, gates, carries, gradients and losses stay float32). `charrnn.runs.prepare`
    # picks bfloat16 for a run that only time stops, where this machine multiplies it faster.
    precision: str = "float32"

    @property
    def time_limited(self) -> bool:
        """Whether only the clock stops the run (`max_time`, and no step or epoch limit): what depends on the run's
        length (the learning-rate decay, the default dropout and width) is then fitted to the time."""
        return self.max_time is not None and self.max_steps is None and self.max_epochs is None

    @property
    def averages_weights(self) -> bool:
        """Whether the model is a moving average of the weights (`weight_average` not 0)."""
        return self.weight_average != 0.0

    @property
    def window(self) -> int:
        """Characters per step: `update_every` for RTRL when given, else `seq_length`."""
        return self.update_every if self.gradient == "rtrl" and self.update_every else self.seq_length

    def __post_init__(self):
        if self.sample_every < 0:
            raise ConfigError(f"sample-every must be >= 0 (0: no samples), got {self.sample_every}")
        for name in ("batch_size", "seq_length", "eval_every", "log_every", "max_bad_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.decay not in ("cosine", "constant"):
            raise ConfigError(f"unknown decay {self.decay!r}: choose cosine or constant")
        if not 0 < self.learning_rate < math.inf:
            raise ConfigError(f"learning-rate must be a positive number, got {self.learning_rate}")
        if not 0.0 < self.adam_beta2 < 1.0:
            raise ConfigError(f"adam-beta2 must be in (0, 1), got {self.adam_beta2}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup-steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 < self.grad_clip < math.inf:
            raise ConfigError(f"grad-clip must be a positive number, got {self.grad_clip}")
        if self.weight_average is not None and not 0.0 <= self.weight_average < 1.0:
            raise ConfigError(f"weight-average must be in [0, 1) (0: none), got {self.weight_average}")
        if not 0.0 <= self.weight_decay < math.inf:
            raise ConfigError(f"weight-decay must be >= 0, got {self.weight_decay}")
        for name in ("max_epochs", "max_steps", "max_time"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {value}")
        if self.gradient not in GRADIENTS:
            raise ConfigError(f"unknown gradient {self.gradient!r}: choose one of {', '.join(GRADIENTS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.precision != "float32" and self.gradient != "bptt":
            raise ConfigError(f"--precision {self.precision} is for BPTT's fused training step; RTRL runs in "
                              "float32: drop --precision")
        if self.state_reset not in STATE_RESETS:
            raise ConfigError(f"unknown state reset {self.state_reset!r}: choose one of {', '.join(STATE_RESETS)}")
        if self.segment_length < 0:
            raise ConfigError(f"segment-length must be >= 0 (0: contiguous streams), got {self.segment_length}")
        if self.segment_length and self.segment_length % self.window:
            raise ConfigError(f"segment-length {self.segment_length} is not a whole number of windows of "
                              f"{self.window} characters; use a multiple of {self.window}, e.g. "
                              f"{max(1, round(self.segment_length / self.window)) * self.window}")
        if self.segment_length and self.state_reset == "never":
            raise ConfigError("--segment-length reads shuffled segments, each from the zero state; continuous "
                              "training (--state-reset never) needs contiguous streams: drop one of them")
        if self.update_every is not None and self.gradient != "rtrl":
            raise ConfigError("--update-every is for --gradient rtrl; with BPTT the weights update every "
                              "--seq-length characters")
        if self.update_every is not None and self.update_every < 1:
            raise ConfigError(f"update-every must be at least 1, got {self.update_every}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ConfigError(f"{name.replace('_', '-')} must be in [0, 0.5), got {getattr(self, name)}")
