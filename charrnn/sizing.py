"""The width and the precision a time budget affords: the defaults of a run that only a time limit stops.

A wider network learns more from each character it reads, but in the same time it reads fewer: its work per
character grows as H². Between the two lies a best width for each budget. On tinyshakespeare, in ten minutes on a
2-core CPU, 2×384 beat 2×256 and 2×512; in three minutes 2×256 beat 2×384 (benchmarks/README.md, "Time to
quality"). In both the winner is the widest network that reads at least `CHARS_PER_PARAMETER` characters per
parameter in the time; that is the rule here::

    characters read(H) = seconds × training share × speed / (3 × multiply-adds per character(H))
    width = the H (a multiple of `WIDTH_MULTIPLE`) nearest to where characters read(H) / parameters(H) = K,
            or, if narrower, to where characters read(H) / training characters = MIN_PASSES

`speed` is the multiply-adds per second that training sustains on this machine (a character costs its forward
products three times over: forward, and backward to the inputs and to the weights), estimated in a fraction
of a second by `measure_speed` (a short recurrence of the training's own product shape, scaled by
`PROBE_TO_TRAINING`, measured once on the reference machine). The width goes as the fourth root of the budget
times the speed, so an estimate 30% off moves it by 7%, about one multiple of 32.

A corpus the fitted width reads fewer than `LONG_CORPUS_PASSES` times is also read in more streams (`fit_batch`):
`LONG_CORPUS_BATCH` rows a step instead of 32, which costs far less than twice as much, and the width is then
fitted at that batch's speed.

The precision comes first (`fit_precision`): a CPU with native bfloat16 products (AMX, AVX-512 BF16) runs the
training step about twice as fast with bfloat16 operands and float32 sums (`charrnn.fused`), and so reads twice
the characters in the time; the same probe, run in both precisions, says whether this machine is one.

`charrnn.runs.prepare` (so `charrnn train` and `runs.train`) uses it when the width is not given and the run is
limited by time alone; every other run gets `DEFAULT_WIDTH`. A run over several processes gets `DEFAULT_WIDTH`
too: each process would measure its own speed, and they must agree on the network.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Callable, Optional

import jax
import jax.numpy as jnp

from .config import PRECISIONS, ModelConfig, TrainConfig
from .validation import auto_eval_every

if TYPE_CHECKING:
    from . import distributed

DEFAULT_WIDTH = ModelConfig.__dataclass_fields__["hidden_size"].default  # without a time budget
# K: between the Linux source's 2×384 in 10 minutes (4.1 per parameter; 2×256 did better) and tinyshakespeare's
# (4.9; better than 2×256 and 2×512). In 3 minutes on tinyshakespeare 2×256 (7.3) beat 2×384 (1.5).
CHARS_PER_PARAMETER = 4.5
# ...but a corpus too long to be read a few times in the budget is better served by a narrower network that reads
# it more often: on the Linux source (5.6 M training characters) in 10 minutes 2×256 (3.1 passes) beat 2×384 (1.4),
# and with bfloat16 products 2×384 (3.9 passes) beat 2×544 (1.8) by 0.05 nats; on War and Peace (2.9 M) 2×384 (2.9
# passes) beat 2×256 (5.9). About 3 passes is best, on either side of it the loss is worse: in batches of 64 with
# bfloat16 products (a 2-core EPYC), 2×256 (4.0-4.4 passes; 1.4028 to 1.4180), 2×320 (2.9; 1.3878) and 2×384
# (2.2; 1.4096); on a Xeon with AMX, 2×480 (2.8 passes; 1.3560) and 2×448 (3.2; 1.3635) beat 2×512 (2.3; 1.3898),
# but on another day 2×544 (1.8-2.1 passes; 1.3584, 1.3606) beat 2×416 (2.8-2.9; 1.3722, 1.3755), so the passes
# are counted at the probe's speed, as chosen, not at the training step's measured one (benchmarks/README.md).
MIN_PASSES = 3.0
# A corpus read fewer than LONG_CORPUS_PASSES times (where a run has no dropout yet, `optim.DROPOUT_FROM_EPOCHS`:
# it lacks characters, not regularisation) is read in LONG_CORPUS_BATCH streams (`fit_batch`): a step of 64 rows
# costs far less than two of 32, the more so with bfloat16 products. In 10 minutes, shuffled segments, batch 64
# against 32: the Linux source (about 4 passes) 1.3560 (480 units) against 1.3772 (384), War and Peace (3.5-4)
# 1.1238 (576) against 1.1325 (512); but tinyshakespeare, read 10 times, 1.4207 (608) against 1.4115 (512).
LONG_CORPUS_PASSES = 6.0
LONG_CORPUS_BATCH = 64
# Such a run (time alone stops it, at LONG_CORPUS_BATCH rows or more) makes under 2,000 steps, and Adam's default
# memory of squared gradients (0.999: about 1,000 steps) holds the later ones down with the first ones, far larger.
# 10 minutes on a Xeon with AMX, the same width and seed each way: the Linux source (512 units) 1.3675 at 0.99 and
# 1.3649 at 0.95 against 1.3806 at 0.999; War and Peace (544) 1.1271 against 1.1459. Not on tinyshakespeare
# (512 units, batch 32, 8.5 passes, dropout 0.2 at the end): 1.4216 at 0.99 against 1.4074 (benchmarks/README.md).
LONG_CORPUS_ADAM_BETA2 = 0.99
# The probe's speed-up from 32 rows to 64 overstates training's (whose gates, states and per-step work grow with
# the rows as they are): runs at 64 rows planned to read the Linux source 4 times read it 2.8 times (480 units)
# and 2.3 (512), where runs at 32 rows read 3.6 of 4 (a Xeon with AMX: training at 0.7 of the probe's estimate).
# On a 2-core EPYC (AVX-512 BF16) it overstates it far less: 2×256 with bfloat16 products trained at 108-113 G
# multiply-adds a second, where the probe said 112-123 (0.9-0.95): probes planned 3.1-3.4 passes, runs read 4.0-4.4.
# Training at 64 rows is taken to run this fraction of the probe's estimate, between the two machines'.
LONG_CORPUS_PROBE_RATIO = 0.8
WIDTH_MULTIPLE = 32
MIN_WIDTH, MAX_WIDTH = 64, 2048
# Training's multiply-adds per second over the probe's on the reference machine (2-core Xeon, 2 devices; LSTM
# 2×384, batch 32 × window 100: 16,546 characters a second × 3 × 1.89 M = 94 G/s, the probe 77-82 G/s). Above 1:
# training's weight gradients are whole-window products, faster than the probe's thin recurrent ones. With
# bfloat16 products (a 2-core Xeon with AMX) the probe varies more and training's rate falls with the width: LSTM
# 2×384 at 44,047 characters a second, 250 G/s, against the probe's 172-186 G/s (1.37); 2×480 in a 10-minute
# run, about 203 G/s, after a probe that gave 231 (0.88); 1.0 between the two (float32 there: 20,579 characters
# a second, 117 G/s, the probe 84-92 G/s).
PROBE_TO_TRAINING = {"float32": 1.19, "bfloat16": 1.0}
# A layer-normalised cell trains through the plain scan, differentiated by JAX, not `charrnn.fused`: its characters
# per second over the fused cell's (LSTM 2×320, batch 32 × window 100, 2-core reference machine: 12,063 against
# 26,294; benchmarks/README.md).
LAYER_NORM_SPEED = 0.46
# A run that only time stops takes bfloat16 products where the probe itself (before `PROBE_TO_TRAINING`) runs them
# this much faster than float32's: 2.1 times on a Xeon with AMX; 1.3-1.6 on a 2-core EPYC with AVX-512 BF16, where
# the training step (LSTM 2×384, batch 32) ran 1.36 times as fast (20,467 against 15,003 characters a second); a
# CPU without native bfloat16 runs them slower than float32.
BFLOAT16_MIN_SPEEDUP = 1.25
TRAINING_COST = 3.0  # a training character costs about 3 forward passes (forward, then backward: 2 products)
PROBE_WIDTH, PROBE_STEPS, PROBE_WARMUP, PROBE_RUNS = 256, 256, 4, 10  # 30 ms a run on the reference machine
# The probes of both precisions, taken in turn this many times, the best of each kept (about 3 s at 32 rows): on a
# 2-core EPYC (AVX-512 BF16), on a quiet machine, bfloat16's probe ran at 0.79 to 1.58 times float32's rate from
# one pair of probes to the next, and runs a few minutes apart chose float32 (192 units) and bfloat16 (256).
PROBE_ROUNDS = 3


@dataclasses.dataclass(frozen=True)
class FittedWidth:
    """Why a run got its width: `width` for `seconds` of training at `speed` multiply-adds a second, where it
    reads about `chars_per_parameter` characters per parameter."""

    width: int
    seconds: float
    speed: float
    chars_per_parameter: float
    passes: Optional[float] = None  # over the training split, when its length was given


def _matrix_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    """The shapes of the weight matrices `charrnn.model.init` makes for `config`, the embedding first."""
    from . import cells

    G = cells.of(config).num_gates
    H, E, V = config.hidden_size, config.embedding_size, config.vocab_size
    layers = [shape for layer in range(config.num_layers) for shape in ((E if layer == 0 else H, G * H), (H, G * H))]
    return [(V, E), *layers, (H, V)]


def parameter_count(config: ModelConfig) -> int:
    """The number of scalars `charrnn.model.init` makes for `config`: the matrices, their vectors
    (`cells.Cell.vector_size`) and the head's bias."""
    from . import cells

    vectors = config.num_layers * cells.of(config).vector_size(config.hidden_size)
    return sum(rows * cols for rows, cols in _matrix_shapes(config)) + vectors + config.vocab_size


def multiply_adds_per_char(config: ModelConfig) -> int:
    """Forward multiply-adds per character: every weight matrix once (the embedding is a lookup, no product)."""
    return sum(rows * cols for rows, cols in _matrix_shapes(config)[1:])


def training_share(config: TrainConfig, val_chars: int) -> float:
    """The fraction of a run's time spent training rather than validating: every `config.eval_every` steps (with
    auto, `validation.auto_eval_every`'s) the whole validation text is read once, forward only, in the training
    step's precision (`charrnn.validation`): a third of a training character's work."""
    step = config.batch_size * config.window * TRAINING_COST
    every = config.eval_every or auto_eval_every(val_chars, step)
    return every * step / (every * step + val_chars)


def chars_read(seconds: float, config: ModelConfig, speed: float, share: float = 1.0) -> float:
    """The characters a run of `seconds` reads, training `config` at `speed` multiply-adds a second
    for `share` of the time."""
    return seconds * share * speed / (TRAINING_COST * multiply_adds_per_char(config))


def width_for_time(seconds: float, config: ModelConfig, speed: float, share: float = 1.0,
                   train_chars: Optional[int] = None) -> FittedWidth:
    """The width for a run of `config`'s shape (its `hidden_size` is replaced) that trains for `seconds` at
    `speed` multiply-adds a second, `share` of the time: the multiple of `WIDTH_MULTIPLE` nearest to
    where the characters read per parameter fall to `CHARS_PER_PARAMETER`, within [MIN_WIDTH, MAX_WIDTH].
    Given the training split's length `train_chars`, no wider than where the run still makes `MIN_PASSES`
    passes over it."""

    def read(width: float) -> tuple[float, int]:
        c = dataclasses.replace(config, hidden_size=max(1, int(round(width))))
        return chars_read(seconds, c, speed, share), parameter_count(c)

    def widest(enough: Callable[[float, int], bool]) -> float:
        low, high = 1.0, float(MAX_WIDTH)  # what is read falls as the width grows: bisect for the widest enough
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if enough(*read(mid)) else (low, mid)
        return low

    by_parameters = widest(lambda chars, parameters: chars >= CHARS_PER_PARAMETER * parameters)
    by_passes = math.inf if train_chars is None else widest(lambda chars, _: chars >= MIN_PASSES * train_chars)
    width = int(min(MAX_WIDTH, max(MIN_WIDTH, WIDTH_MULTIPLE * round(min(by_parameters, by_passes) / WIDTH_MULTIPLE))))
    chars, parameters = read(width)
    return FittedWidth(width, seconds, speed, chars / parameters, chars / train_chars if train_chars else None)


def measure_speed(batch_size: int, placement: Optional["distributed.Placement"] = None,
                  precision: str = "float32") -> float:
    """An estimate of the multiply-adds per second that training sustains (forward and backward) with
    `batch_size` streams split over `placement`'s devices (default: the first device), its products in
    `precision`: a jitted recurrence ``h <- tanh(h @ U)``, (B, 256) @ (256, 1024) for 256 steps with B split as
    training splits it, the product's operands in `precision`, timed (the best of `PROBE_RUNS` runs after
    `PROBE_WARMUP`; 0.6 s in all on the reference machine), times `PROBE_TO_TRAINING[precision]`."""
    if placement is None:
        put_rows = put_whole = jax.devices()[0]
    else:
        put_rows, put_whole = placement.batch, placement.replicated
    U = jax.device_put(jnp.full((PROBE_WIDTH, 4 * PROBE_WIDTH), 1.0 / PROBE_WIDTH, jnp.float32), put_whole)
    h0 = jax.device_put(jnp.ones((batch_size, PROBE_WIDTH), jnp.float32), put_rows)

    @jax.jit
    def recurrence(h, U):
        U = U.astype(precision)

        def step(h, _):
            a = jnp.tanh(jnp.dot(h.astype(precision), U, preferred_element_type=jnp.float32))
            return a[:, :PROBE_WIDTH] + a[:, PROBE_WIDTH:2 * PROBE_WIDTH], None

        return jax.lax.scan(step, h, None, length=PROBE_STEPS)[0]

    for _ in range(PROBE_WARMUP):  # the first runs are slower, while the caches and clocks settle
        recurrence(h0, U).block_until_ready()
    best = math.inf
    for _ in range(PROBE_RUNS):
        t0 = time.perf_counter()
        recurrence(h0, U).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return PROBE_TO_TRAINING[precision] * PROBE_STEPS * batch_size * PROBE_WIDTH * 4 * PROBE_WIDTH / best


def _fits_to_time(config: TrainConfig, placement: Optional["distributed.Placement"]) -> bool:
    """Whether a run's width and precision are fitted to its time: only the clock stops it
    (`config.time_limited`), it trains by backpropagation, and one process runs it (several would each measure
    their own speed, and they must agree)."""
    return config.time_limited and config.gradient == "bptt" and not (placement and placement.num_processes > 1)


def measure_speeds(batch_size: int, placement: Optional["distributed.Placement"] = None,
                   precisions: tuple[str, ...] = PRECISIONS) -> dict[str, float]:
    """`measure_speed` in each of `precisions` (default: every one, `config.PRECISIONS`), by name: the best of
    `PROBE_ROUNDS` rounds that take them in turn, so that a moment of other work on the machine slows one
    round of one precision, not the comparison (`fit_precision`)."""
    speeds = dict.fromkeys(precisions, 0.0)
    for _ in range(PROBE_ROUNDS):
        for precision in precisions:
            speeds[precision] = max(speeds[precision], measure_speed(batch_size, placement, precision))
    return speeds


def fit_precision(config: TrainConfig, placement: Optional["distributed.Placement"] = None,
                  layer_norm: bool = False) -> tuple[TrainConfig, Optional[dict[str, float]]]:
    """`config` with the precision of its products for a run fitted to its time (`_fits_to_time`): bfloat16
    where this machine's probe runs it at least `BFLOAT16_MIN_SPEEDUP` times float32's rate (a CPU with AMX or
    AVX-512 BF16), else float32; other runs, and a `layer_norm` cell's (which trains through the plain scan, in
    float32), keep `config.precision`. Returns the config and the speeds measured (`measure_speeds`; None when
    none were)."""
    if not _fits_to_time(config, placement) or layer_norm:
        return config, None
    speeds = measure_speeds(config.batch_size, placement)
    probe = {p: speeds[p] / PROBE_TO_TRAINING[p] for p in speeds}  # the probe's own rates, not training's
    faster = probe["bfloat16"] >= BFLOAT16_MIN_SPEEDUP * probe["float32"]
    return dataclasses.replace(config, precision="bfloat16" if faster else "float32"), speeds


def fit_batch(model_config: ModelConfig, config: TrainConfig, val_chars: int,
              placement: Optional["distributed.Placement"] = None, train_chars: Optional[int] = None,
              speeds: Optional[dict[str, float]] = None) -> tuple[TrainConfig, Optional[dict[str, float]]]:
    """`config` with the batch for a run fitted to its time (`_fits_to_time`): `LONG_CORPUS_BATCH` streams when
    the corpus is long for the budget, i.e. when the width fitted at `config.batch_size` (`fit_width`) reads it
    fewer than `LONG_CORPUS_PASSES` times, else `config.batch_size`. Returns the config and the speeds its width
    is then to be fitted at (measured again at the new batch; else `speeds` as given or as measured here)."""
    if not _fits_to_time(config, placement) or config.batch_size >= LONG_CORPUS_BATCH or not train_chars:
        return config, speeds
    speeds = speeds or _speeds_for(config, placement)  # kept for `fit_width`, if the batch stays
    _, fitted = fit_width(model_config, config, val_chars, placement, train_chars, speeds)
    if fitted.passes >= LONG_CORPUS_PASSES:
        return config, speeds
    config = dataclasses.replace(config, batch_size=LONG_CORPUS_BATCH)
    return config, {p: LONG_CORPUS_PROBE_RATIO * speed for p, speed in _speeds_for(config, placement).items()}


def fit_adam_beta2(config: TrainConfig) -> TrainConfig:
    """`config` with `LONG_CORPUS_ADAM_BETA2` as Adam's second-moment decay for a run that only time stops
    (`config.time_limited`) at `LONG_CORPUS_BATCH` rows or more (what `fit_batch` gives a corpus long for the
    budget); else `config` as it is."""
    if config.time_limited and config.batch_size >= LONG_CORPUS_BATCH:
        return dataclasses.replace(config, adam_beta2=LONG_CORPUS_ADAM_BETA2)
    return config


def _speeds_for(config: TrainConfig, placement: Optional["distributed.Placement"]) -> dict[str, float]:
    """`measure_speed` at `config`'s batch in its precision, by name (the one its width is fitted with)."""
    return measure_speeds(config.batch_size, placement, (config.precision,))


def fit_width(model_config: ModelConfig, config: TrainConfig, val_chars: int,
              placement: Optional["distributed.Placement"] = None,
              train_chars: Optional[int] = None,
              speeds: Optional[dict[str, float]] = None) -> tuple[ModelConfig, Optional[FittedWidth]]:
    """`model_config` with the width for `config`'s run: fitted to its time (`width_for_time`, at the speed
    `measure_speed` finds on `placement` in `config.precision`, or that `speeds` gives, times `LAYER_NORM_SPEED`
    for a layer-normalised cell, over a training split of `train_chars`) when the run is fitted to its time
    (`_fits_to_time`); else `DEFAULT_WIDTH`.
    Returns the config and how the width was fitted (None: the default)."""
    if not _fits_to_time(config, placement):
        return dataclasses.replace(model_config, hidden_size=DEFAULT_WIDTH), None
    speeds = speeds or _speeds_for(config, placement)
    speed = speeds[config.precision] * (LAYER_NORM_SPEED if model_config.layer_norm else 1.0)
    share = training_share(config, val_chars)
    fitted = width_for_time(config.max_time, model_config, speed, share, train_chars)
    return dataclasses.replace(model_config, hidden_size=fitted.width), fitted
