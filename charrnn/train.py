"""Training: truncated BPTT with optax, one jitted XLA program per step, whole-split validation.

The pieces, each usable on its own::

    optimizer = make_optimizer(config, total_steps)
    state = init_state(model_config, config, optimizer)          # params, optimizer state, carry, step
    step_fn = make_train_step(model_config, config, optimizer)   # jitted: (state, inputs, targets) -> (state, metrics)
    step_fn = make_window_step(model_config, config, optimizer, steps_per_epoch)  # (state, window) -> (state, metrics)
    eval_fn = make_evaluate(model_config, seq_length)            # jitted: (params, inputs, targets, mask) -> nats

`train` runs the loop: it reads each (B, T + 1) window of token ids from the corpus on the host (in memory, or
memory-mapped for a large corpus, see `charrnn.corpus_cache`) and hands it to the jitted step, reads the loss
back only every `log_every` steps, validates on the whole validation split every `eval_every` steps (a chunk of
windows at a time, the state carried), and writes ``best.safetensors`` (lowest validation loss) and
``latest.safetensors`` atomically. It never prints; it reports through a callback.

Data parallelism (see `charrnn.distributed`): the B streams are sharded over the devices of a `Placement`, the
parameters and optimizer state replicated; each device computes the gradients of its own streams and one
all-reduce averages them (`_gradients`). With several processes each feeds only its own rows, and only
process 0 writes files and reports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from . import checkpoint, data, distributed, model, runlog
from .config import ConfigError, ModelConfig, TrainConfig

LN2 = math.log(2.0)


class TrainState(NamedTuple):
    """Everything that changes from step to step. A pytree; lives on the device.

    Attributes:
      params: model parameters.
      opt_state: optax state.
      carry: hidden state carried from window to window, per layer, each (B, H).
      step: windows consumed so far (int32 scalar); epoch = step // steps_per_epoch.
      bad_steps: consecutive steps skipped for a non-finite loss or gradient (int32 scalar).
    """

    params: Any
    opt_state: Any
    carry: Any
    step: jax.Array
    bad_steps: jax.Array


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the training split is cut into windows for this run."""

    batch_size: int  # B streams (may be smaller than asked for a tiny corpus)
    seq_length: int  # T characters per window
    steps_per_epoch: int  # windows per stream
    total_steps: Optional[int]  # from max_steps / max_epochs; None if only a time limit stops the run


# --- events reported to the callback -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Started:
    layout: Layout
    num_params: int
    train_chars: int
    val_chars: int
    resumed_step: int  # 0 for a fresh run
    warnings: tuple[str, ...]
    compile_s: float
    devices: int = 1  # the batch is sharded over this many devices
    processes: int = 1


@dataclasses.dataclass(frozen=True)
class Logged:
    step: int
    epoch: float
    train_nats: float  # mean over the steps since the last log
    grad_norm: float  # before clipping, at the last step
    learning_rate: float
    chars_per_s: float
    elapsed_s: float
    skipped_steps: int  # total non-finite steps skipped so far


@dataclasses.dataclass(frozen=True)
class Evaluated:
    step: int
    val_nats: float
    best_val_nats: float
    is_best: bool
    seconds: float
    checkpoint: Path  # latest.safetensors


@dataclasses.dataclass(frozen=True)
class Sampled:
    step: int
    samples: dict[float, str]  # temperature -> text (bytes shown as latin-1)


@dataclasses.dataclass(frozen=True)
class Finished:
    step: int
    reason: str  # "max_steps", "max_epochs", "max_time", "interrupted", "diverged"
    best_val_nats: Optional[float]
    best: Path
    latest: Path
    elapsed_s: float


def record(event) -> Optional[dict[str, Any]]:
    """The metrics.jsonl record for an event (see `charrnn.runlog`), or None for events that have none."""
    if isinstance(event, Logged):
        return {"event": "log", "step": event.step, "epoch": round(event.epoch, 4), "train_nats": event.train_nats,
                "train_bpc": event.train_nats / LN2, "grad_norm": event.grad_norm,
                "learning_rate": event.learning_rate, "chars_per_s": round(event.chars_per_s, 1),
                "elapsed_s": round(event.elapsed_s, 3), "skipped_steps": event.skipped_steps}
    if isinstance(event, Evaluated):
        return {"event": "eval", "step": event.step, "val_nats": event.val_nats, "val_bpc": event.val_nats / LN2,
                "best_val_nats": event.best_val_nats, "is_best": event.is_best, "eval_s": round(event.seconds, 3)}
    if isinstance(event, Sampled):
        return {"event": "sample", "step": event.step,
                "samples": [{"temperature": t, "text": text} for t, text in event.samples.items()]}
    return None


SAMPLE_CHARS = 200  # length of the samples shown while training
SAMPLE_TEMPERATURES = (0.5, 0.8, 1.0)


def sample_now(params, model_config: ModelConfig, vocab: data.Vocabulary, step: int) -> dict[float, str]:
    """A short sample at a few temperatures, for watching a model improve; seeded by the step."""
    from . import sample

    return {t: vocab.printable(np.concatenate(list(sample.stream(params, model_config, vocab, length=SAMPLE_CHARS,
                                                                 temperature=t, seed=step * 10 + k)), axis=1)[0])
            for k, t in enumerate(SAMPLE_TEMPERATURES)}


class TrainingDiverged(Exception):
    """Too many consecutive non-finite steps; the last good checkpoint was kept."""


# --- pieces ------------------------------------------------------------------------------------------------


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


def init_state(model_config: ModelConfig, config: TrainConfig, optimizer: optax.GradientTransformation,
               batch_size: Optional[int] = None) -> TrainState:
    """A fresh state: parameters from `config.seed`, zero carry, step 0."""
    params = model.init(jax.random.fold_in(jax.random.key(config.seed), 0), model_config)
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        carry=model.initial_carry(model_config, batch_size or config.batch_size),
        step=jnp.zeros((), jnp.int32),
        bad_steps=jnp.zeros((), jnp.int32),
    )


def _select(ok: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _gradients(model_config: ModelConfig, placement: Optional[distributed.Placement]) -> Callable:
    """``gradients(params, x, y, carry, keep) -> (loss, new carry, grads)`` on a window `x` -> `y` (B, T), with
    the dropout keep-masks `keep` (`model.dropout_masks`, or None).

    With several devices, each device computes the loss and gradients of its own rows of the batch (a
    `jax.shard_map`) and one all-reduce averages them (the rows are equal in number, so the mean of the means is
    the mean over the batch). Each device's recurrence then runs as a loop of its own, in parallel: on a CPU,
    whose XLA runs a loop's steps one after another on one core, this is what puts the other cores to work
    (see `charrnn.launch`). Left to XLA's partitioner instead, the same program gathers
    activations between the devices and runs no faster than one device.
    """

    def gradients(params, x, y, carry, keep):
        def loss_fn(p):
            return model.loss(p, model_config, x, y, carry, dropout_keep=keep)

        (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, new_carry, grads

    if placement is None or placement.devices == 1:
        return gradients

    def averaged(params, x, y, carry, keep):
        loss, new_carry, grads = gradients(params, x, y, carry, keep)
        return jax.lax.pmean(loss, distributed.AXIS), new_carry, jax.lax.pmean(grads, distributed.AXIS)

    rows, time_rows, whole = P(distributed.AXIS), P(None, distributed.AXIS), P()
    # check_vma off: the layer loops start from buffers made inside them (zeros, projections), which the check
    # would have marked as varying across devices by hand; every output's spec is given below.
    return jax.shard_map(averaged, mesh=placement.mesh, in_specs=(whole, rows, rows, rows, time_rows),
                         out_specs=(whole, rows, whole), check_vma=False)


def _step_body(model_config: ModelConfig, config: TrainConfig, optimizer: optax.GradientTransformation,
               placement: Optional[distributed.Placement] = None) -> Callable:
    """``body(state, x, y, window) -> (state, metrics)``: one update on the window `x` -> `y` (B, T), the `window`
    index in the epoch deciding whether the carry starts from zero. Shared by both ways of feeding windows."""
    dropout_base = jax.random.fold_in(jax.random.key(config.seed), 1)
    gradients = _gradients(model_config, placement)

    def body(state: TrainState, x: jax.Array, y: jax.Array, window: jax.Array):
        carry = jax.tree.map(lambda c: jnp.where(window == 0, jnp.zeros_like(c), c), state.carry)
        carry = jax.lax.stop_gradient(carry)
        dropout_key = jax.random.fold_in(dropout_base, state.step) if model_config.dropout > 0 else None
        # The masks of the whole batch, drawn as one device would draw them: any number of devices takes the
        # same steps (each is handed its rows of them).
        keep = model.dropout_masks(dropout_key, model_config, x.shape[1], x.shape[0])
        loss, new_carry, grads = gradients(state.params, x, y, carry, keep)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite loss, gradient or update (e.g. from an absurd learning rate) changes nothing.
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
        new_state = TrainState(
            params=_select(ok, params, state.params),
            opt_state=_select(ok, opt_state, state.opt_state),
            carry=_select(ok, new_carry, carry),
            step=state.step + 1,
            bad_steps=jnp.where(ok, 0, state.bad_steps + 1),
        )
        return new_state, {"loss": loss, "grad_norm": grad_norm, "ok": ok}

    return body


def state_shardings(placement: distributed.Placement) -> TrainState:
    """Where each part of the state lives: the carry split by rows (streams), everything else replicated."""
    return TrainState(params=placement.replicated, opt_state=placement.replicated, carry=placement.batch,
                      step=placement.replicated, bad_steps=placement.replicated)


def _jit_step(step: Callable, placement: Optional[distributed.Placement], data_shardings: tuple) -> Callable:
    if placement is None:
        return jax.jit(step, donate_argnums=0)
    return jax.jit(step, donate_argnums=0, in_shardings=(state_shardings(placement), *data_shardings),
                   out_shardings=(state_shardings(placement), placement.replicated))


def make_train_step(
    model_config: ModelConfig,
    config: TrainConfig,
    optimizer: optax.GradientTransformation,
    seq_length: Optional[int] = None,
    steps_per_epoch: Optional[int] = None,
    placement: Optional[distributed.Placement] = None,
) -> Callable:
    """The whole training step — window slicing, forward, backward, clipping, update — as one jitted function.

    The returned ``step(state, inputs, targets) -> (state, metrics)`` takes the full (B, L) training streams
    (kept on the device) and slices window ``state.step % steps_per_epoch`` itself. At the first window of
    each epoch the carry is reset to zero; between windows it is carried with its gradient stopped. A step
    whose loss, gradient or update is not finite changes nothing but the step and `bad_steps` counters.
    With a `placement`, the streams and the carry are sharded by rows over its devices (`state_shardings`).

    metrics: {"loss": nats per character, "grad_norm": global norm before clipping, "ok": bool}.
    """
    T = seq_length or config.seq_length
    body = _step_body(model_config, config, optimizer, placement)

    def step(state: TrainState, inputs: jax.Array, targets: jax.Array):
        window = state.step % (steps_per_epoch or inputs.shape[1] // T)
        x = jax.lax.dynamic_slice_in_dim(inputs, window * T, T, axis=1).astype(jnp.int32)
        y = jax.lax.dynamic_slice_in_dim(targets, window * T, T, axis=1).astype(jnp.int32)
        return body(state, x, y, window)

    rows = () if placement is None else (placement.batch, placement.batch)
    return _jit_step(step, placement, rows)


def make_window_step(
    model_config: ModelConfig,
    config: TrainConfig,
    optimizer: optax.GradientTransformation,
    steps_per_epoch: int,
    placement: Optional[distributed.Placement] = None,
) -> Callable:
    """The same training step, fed one window at a time: ``step(state, window) -> (state, metrics)``.

    `window` is (B, T + 1) token ids, row b the T + 1 characters of stream b from position ``j * T`` with
    ``j = state.step % steps_per_epoch`` (`charrnn.data.TrainWindows`): inputs ``window[:, :-1]``, targets
    ``window[:, 1:]``. The arithmetic is that of `make_train_step`; `train` uses this one, reading each window
    from the corpus on the host so that nothing of corpus size has to live on the device. With a `placement`,
    the window and the carry are sharded by rows over its devices.
    """
    body = _step_body(model_config, config, optimizer, placement)

    def step(state: TrainState, window: jax.Array):
        x, y = window[:, :-1].astype(jnp.int32), window[:, 1:].astype(jnp.int32)
        return body(state, x, y, state.step % steps_per_epoch)

    return _jit_step(step, placement, () if placement is None else (placement.batch,))


def _evaluate_windows(model_config: ModelConfig, seq_length: int) -> Callable:
    """``run(params, carry, inputs, targets, mask) -> (carry, total nats, count)`` over (B, W*T) arrays: a
    `lax.scan` over the W windows, the state carried from window to window."""

    def run(params, carry, inputs, targets, mask):
        B, L = inputs.shape
        windows = lambda a: a.reshape(B, L // seq_length, seq_length).swapaxes(0, 1)  # (W, B, T)

        def body(carry_and_sums, window):
            carry, total, count = carry_and_sums
            x, y, m = window
            logits, carry = model.forward(params, model_config, x.astype(jnp.int32), carry)
            log_probs = jax.nn.log_softmax(logits, axis=-1)
            nll = -jnp.take_along_axis(log_probs, y.astype(jnp.int32)[..., None], axis=-1)[..., 0]
            return (carry, total + (nll * m).sum(), count + m.sum()), None

        init = (carry, jnp.zeros(()), jnp.zeros(()))
        (carry, total, count), _ = jax.lax.scan(body, init, (windows(inputs), windows(targets), windows(mask)))
        return carry, total, count

    return run


def make_evaluate(model_config: ModelConfig, seq_length: int) -> Callable:
    """``evaluate(params, inputs, targets, mask) -> nats per character`` over whole (B, L) streams.

    One jitted program: a `lax.scan` over the L / T windows carries the state from window to window, so
    every target in the mask is predicted with all the context of its stream. No dropout.
    """
    run = _evaluate_windows(model_config, seq_length)

    def evaluate(params, inputs, targets, mask):
        _, total, count = run(params, model.initial_carry(model_config, inputs.shape[0]), inputs, targets, mask)
        return total / jnp.maximum(count, 1.0)

    return jax.jit(evaluate)


def make_evaluate_chunk(model_config: ModelConfig, seq_length: int,
                        placement: Optional[distributed.Placement] = None) -> Callable:
    """Evaluation fed a chunk of windows at a time (`charrnn.data.EvalWindows`), for splits of any size:
    ``run(params, carry, ids, valid) -> (carry, [total nats, count])``.

    `ids` is (B, W*T + 1): row b's inputs ``ids[b, :-1]`` and targets ``ids[b, 1:]``, of which the first
    ``valid[b]`` are real (the rest padding, masked). The carry (B, H) per layer runs on from the previous chunk
    of the same streams (zero before the first). One jitted `lax.scan` over the W windows, as `make_evaluate`;
    with a `placement` the rows (streams) are sharded over its devices.
    """
    run = _evaluate_windows(model_config, seq_length)

    def chunk(params, carry, ids, valid):
        inputs, targets = ids[:, :-1], ids[:, 1:]
        mask = (jnp.arange(inputs.shape[1])[None, :] < valid[:, None]).astype(jnp.float32)
        carry, total, count = run(params, carry, inputs, targets, mask)
        return carry, jnp.stack([total, count])

    if placement is None:
        return jax.jit(chunk, donate_argnums=1)
    run_rows = chunk
    if placement.devices > 1:  # each device runs its own rows (see `_gradients`), then the sums are added up
        def added_up(params, carry, ids, valid):
            carry, sums = chunk(params, carry, ids, valid)
            return carry, jax.lax.psum(sums, distributed.AXIS)

        rows = P(distributed.AXIS)
        run_rows = jax.shard_map(added_up, mesh=placement.mesh, in_specs=(P(), rows, rows, rows),
                                 out_specs=(rows, P()), check_vma=False)
    return jax.jit(run_rows, donate_argnums=1,
                   in_shardings=(placement.replicated, placement.batch, placement.batch, placement.batch),
                   out_shardings=(placement.batch, placement.replicated))


def fit_placement(placement: distributed.Placement, num_train: int, config: TrainConfig) -> distributed.Placement:
    """`placement`, or, when its number of devices was not asked for and there is one process, the most of its
    devices that split the batch evenly (the batch as a tiny corpus shrinks it): 2 for a batch of 50 on 4
    devices, 1 for a batch of 7. On a CPU the `charrnn` command makes one device per core
    (`charrnn.launch`), so a batch that does not split over the cores still trains, on fewer of them."""
    if placement.asked or placement.num_processes > 1 or placement.devices == 1:
        return placement
    batch_size = data.fit_window(num_train, config.batch_size, config.seq_length)[0]
    devices = max(d for d in range(1, placement.devices + 1) if batch_size % d == 0)
    return placement if devices == placement.devices else distributed.placement(devices)


def plan(num_train: int, config: TrainConfig, devices: int = 1) -> tuple[Layout, list[str]]:
    """The window layout for a training split of `num_train` characters, shrunk to fit a tiny corpus.

    The streams are split evenly over `devices`: a `config.batch_size` that is not a multiple of it is an error
    (ConfigError, saying which values work); a batch shrunk for a tiny corpus is rounded down to a multiple.

    Raises:
      ConfigError: the batch does not split over the devices.
      CorpusError: the training split is too short to give every device a stream.
    """
    distributed.check_batch(config.batch_size, devices)
    B, T, warnings = data.fit_window(num_train, config.batch_size, config.seq_length, multiple=devices)
    steps_per_epoch = ((num_train - 1) // B) // T
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.max_epochs is not None:
        limits.append(max(1, math.ceil(config.max_epochs * steps_per_epoch)))
    return Layout(B, T, steps_per_epoch, min(limits) if limits else None), warnings


# --- the loop ----------------------------------------------------------------------------------------------


def _token_dtype(vocab_size: int):
    # Streams stay on the device for the whole run; small ids keep them at one byte per character.
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32


def _checkpoint(state: TrainState, corpus: data.Corpus, splits: data.Splits, model_config: ModelConfig,
                config: TrainConfig, layout: Layout, info: dict, history: list) -> checkpoint.Checkpoint:
    arrays = {
        **checkpoint.flatten("params", state.params),
        **checkpoint.flatten("opt_state", state.opt_state),
        **checkpoint.flatten("carry", state.carry),
    }
    # The config as asked for; the layout actually used (a tiny corpus shrinks it) goes in the state, and a
    # resumed run recomputes the same layout from the same corpus.
    return checkpoint.Checkpoint(
        model=model_config, train=config, vocab=corpus.vocab, corpus=corpus.info, splits=splits,
        arrays=arrays, state={**info, "step": int(state.step), "total_steps": layout.total_steps,
                              "steps_per_epoch": layout.steps_per_epoch, "batch_size": layout.batch_size,
                              "seq_length": layout.seq_length},
        history=history,
    )


def restore_state(ckpt: checkpoint.Checkpoint, model_config: ModelConfig, config: TrainConfig,
                  optimizer: optax.GradientTransformation, batch_size: int) -> TrainState:
    """The `TrainState` saved in `ckpt` (parameters, optimizer state, carried state, step)."""
    template = jax.eval_shape(lambda: init_state(model_config, config, optimizer, batch_size))
    return TrainState(
        params=jax.tree.map(jnp.asarray, ckpt.tree("params", template.params)),
        opt_state=jax.tree.map(jnp.asarray, ckpt.tree("opt_state", template.opt_state)),
        carry=jax.tree.map(jnp.asarray, ckpt.tree("carry", template.carry)),
        step=jnp.asarray(ckpt.state["step"], jnp.int32),
        bad_steps=jnp.zeros((), jnp.int32),
    )


def check_same_run(placement: distributed.Placement, corpus: data.Corpus, model_config: ModelConfig,
                   config: TrainConfig, resume: Optional[checkpoint.Checkpoint] = None) -> None:
    """With several processes: every one must train on the same text (the file's SHA-256, not its path), with the
    same settings, from the same checkpoint step, or the gradients they average mean nothing. A collective.

    Raises:
      ConfigError: naming the first process that differs from process 0.
    """
    if placement.num_processes == 1:
        return
    agreed = json.dumps([corpus.info.sha256, len(corpus.ids), corpus.vocab.to_json(), model_config.to_dict(),
                         config.to_dict(), None if resume is None else int(resume.state["step"])], sort_keys=True)
    other = placement.first_different(agreed)
    if other is not None:
        raise ConfigError(f"process {other} does not train on what process 0 does (the corpus's content, the options "
                          f"or the checkpoint it resumes differ); give every process the same corpus, options and "
                          f"--resume")


def train(
    corpus: data.Corpus,
    model_config: ModelConfig,
    config: TrainConfig,
    out_dir: Union[str, Path],
    *,
    resume: Optional[checkpoint.Checkpoint] = None,
    callback: Callable[[Any], None] = lambda event: None,
    should_stop: Callable[[], bool] = lambda: False,
    placement: Optional[distributed.Placement] = None,
) -> Finished:
    """Trains a model on `corpus` and writes checkpoints to `out_dir`.

    Args:
      corpus: the encoded corpus; it is split by `config.val_fraction` / `config.test_fraction`.
      model_config: the architecture (its vocab_size must match the corpus's vocabulary).
      config: the training configuration.
      out_dir: where ``best.safetensors`` and ``latest.safetensors`` go, with the run's records
        ``run.json`` and ``metrics.jsonl`` (see `charrnn.runlog`).
      resume: a checkpoint to continue from (same architecture and corpus), at its step.
      callback: receives `Started`, `Logged`, `Evaluated`, `Sampled` and `Finished` events (in process 0 only).
      should_stop: polled at each step boundary; True saves a checkpoint and stops ("interrupted").
        After `config.max_bad_steps` consecutive non-finite steps training stops ("diverged") and raises
        `TrainingDiverged`; the last checkpoint holds the last good parameters.
      placement: the devices to shard the batch over (`charrnn.distributed.placement`); default every device
        JAX sees, or as many as split the batch evenly (`fit_placement`). With several processes every process
        calls `train` alike; each feeds only its own streams, stop requests and time limits take effect at the
        next `config.log_every` boundary in all of them at once, and only process 0 writes files and calls
        `callback`.

    Returns:
      The `Finished` event.
    """
    out_dir = Path(out_dir)
    splits = data.split(len(corpus.ids), config.val_fraction, config.test_fraction)
    train_ids = corpus.ids[slice(*splits.train)]
    val_ids = corpus.ids[slice(*splits.val)]
    placement = fit_placement(placement or distributed.placement(), len(train_ids), config)
    main, several = placement.is_main, placement.num_processes > 1
    check_same_run(placement, corpus, model_config, config, resume)
    if main:
        checkpoint.remove_stale_temporaries(out_dir)
    layout, warnings = plan(len(train_ids), config, placement.devices)
    B, T = layout.batch_size, layout.seq_length

    optimizer = make_optimizer(config, layout.total_steps)
    if resume is not None:
        state = restore_state(resume, model_config, config, optimizer, B)
        history = list(resume.history)
        best = resume.state.get("best_val_nats")
    else:
        state = init_state(model_config, config, optimizer, B)
        history, best = [], None
    state = placement.put(state, state_shardings(placement))
    start_step = int(resume.state["step"]) if resume is not None else 0
    # Time already spent before a resume, so the records' elapsed time runs on.
    elapsed_before = float(history[-1].get("elapsed_s") or 0.0) if resume is not None and history else 0.0
    if main:
        runlog.write_run_info(out_dir, {
            "model": model_config.to_dict(), "train": config.to_dict(), "corpus": corpus.info.to_dict(),
            "splits": splits.to_dict(), "layout": dataclasses.asdict(layout), "resumed_from_step": start_step or None,
            "devices": placement.devices, "processes": placement.num_processes})
        records = runlog.MetricsWriter(out_dir, resume_step=start_step if resume is not None else None)

    def emit(event) -> None:
        if not main:
            return
        entry = record(event)
        if entry is not None:
            records.write(entry)
        callback(event)

    dtype = np.dtype(_token_dtype(model_config.vocab_size))
    windows = data.TrainWindows(train_ids, B, T, rows=placement.local_rows(B), dtype=dtype)
    has_val = len(val_ids) >= data.MIN_SPLIT
    if has_val:
        val_windows = data.EvalWindows(val_ids, B, T, row_multiple=placement.devices, dtype=dtype,
                                       part=(placement.process_index, placement.num_processes))
        val_rows = val_windows.batch_size

    t0 = time.perf_counter()
    window_shape = jax.ShapeDtypeStruct((B, T + 1), dtype, sharding=placement.batch)
    step_fn = make_window_step(model_config, config, optimizer, layout.steps_per_epoch, placement).lower(
        state, window_shape).compile()
    if has_val:
        eval_carry = jax.eval_shape(lambda: model.initial_carry(model_config, val_rows))
        eval_fn = make_evaluate_chunk(model_config, T, placement).lower(
            state.params, jax.tree.map(lambda c: jax.ShapeDtypeStruct(c.shape, c.dtype, sharding=placement.batch),
                                       eval_carry),
            jax.ShapeDtypeStruct((val_rows, val_windows.chunk_windows * T + 1), dtype, sharding=placement.batch),
            jax.ShapeDtypeStruct((val_rows,), np.int32, sharding=placement.batch)).compile()
    compile_s = time.perf_counter() - t0
    emit(Started(layout, model.num_parameters(state.params), len(train_ids), len(val_ids), start_step,
                 tuple(warnings), compile_s, placement.devices, placement.num_processes))

    def validate(params) -> float:
        carry = placement.put(model.initial_carry(model_config, val_rows), placement.batch)
        total = count = 0.0
        for c in range(val_windows.num_chunks):
            ids, valid = val_windows(c)
            carry, sums = eval_fn(params, carry, placement.put_batch(ids, val_rows),
                                  placement.put_batch(valid, val_rows))
            chunk_total, chunk_count = placement.to_host(sums)
            total, count = total + float(chunk_total), count + float(chunk_count)
            data.drop_pages(val_ids)
        return total / max(count, 1.0)

    schedule = learning_rate_schedule(config, layout.total_steps)
    latest_path, best_path = out_dir / checkpoint.LATEST, out_dir / checkpoint.BEST
    step, pending, last_eval_step, skipped = start_step, [], None, 0
    t_start = t_log = time.perf_counter()
    log_step = step
    last_metrics = None
    reason = None

    not_finite = False  # the state to save holds a NaN or infinity (e.g. resumed from a poisoned checkpoint)

    def evaluate_and_save() -> None:
        nonlocal best, last_eval_step, not_finite
        # Gathered to every host (a collective with several processes), so all of them decide alike.
        params, opt_state, carry = placement.to_host((state.params, state.opt_state, state.carry))
        if not all(np.isfinite(a).all() for a in jax.tree.leaves((params, opt_state, carry))):
            not_finite = True  # never written: the checkpoints on disk stay as they are
            return
        te = time.perf_counter()
        if has_val:
            val_nats = validate(state.params)
        else:  # no validation split: rank checkpoints by the latest training loss
            val_nats = float(last_metrics["loss"]) if last_metrics is not None else float("inf")
        is_best = best is None or val_nats < best
        best = val_nats if is_best else best
        history.append({"step": step, "val_nats": val_nats, "val_bpc": val_nats / LN2,
                        "train_nats": float(last_metrics["loss"]) if last_metrics is not None else None,
                        "elapsed_s": elapsed_before + time.perf_counter() - t_start})
        info = {"best_val_nats": best, "val_nats": val_nats, "epoch": step / layout.steps_per_epoch,
                "devices": placement.devices, "processes": placement.num_processes}
        saved = TrainState(params, opt_state, carry, np.asarray(step, np.int32), np.zeros((), np.int32))
        failure = None
        if main:
            ckpt = _checkpoint(saved, corpus, splits, model_config, config, layout, info, history)
            blob = checkpoint.to_bytes(ckpt)
            # Best first: a crash between the two files leaves latest behind best, never a best model lost for good.
            for path in (best_path, latest_path) if is_best else (latest_path,):
                try:
                    checkpoint.write_bytes_atomic(path, blob)
                except OSError as e:
                    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
                    failure = checkpoint.CheckpointError(
                        f"could not write the checkpoint at step {step} to {path} ({e.strerror or e}); {kept}; "
                        f"free some space or choose another --out, then --resume")
                    break
        if several and placement.first_failed(failure is not None) is not None and failure is None:
            failure = checkpoint.CheckpointError(f"process 0 could not write the checkpoint at step {step}; "
                                                 f"see its messages")
        if failure is not None:
            raise failure
        last_eval_step = step
        emit(Evaluated(step, val_nats, best, is_best, time.perf_counter() - te, latest_path))

    def stop_reason() -> Optional[str]:
        """Why to stop before the next step, if at all. With several processes, the time limit and stop requests
        are agreed on at log boundaries only (one small collective), so every process stops at the same step."""
        if layout.total_steps is not None and step >= layout.total_steps:
            return "max_steps" if config.max_steps is not None and step >= config.max_steps else "max_epochs"
        if several and step % config.log_every and step != start_step:
            return None
        out_of_time = config.max_time is not None and time.perf_counter() - t_start >= config.max_time
        out_of_time, stop = placement.any([out_of_time, should_stop()])
        return "max_time" if out_of_time else "interrupted" if stop else None

    while True:
        reason = stop_reason()
        if reason is not None:
            break
        state, metrics = step_fn(state, placement.put_batch(windows(step % layout.steps_per_epoch), B))
        step += 1
        pending.append(metrics)
        if step % data.DROP_PAGES_EVERY == 0:
            data.drop_pages(train_ids)
        if step % config.log_every == 0 or step == layout.total_steps:
            fetched = placement.to_host(pending)
            pending = []
            last_metrics = fetched[-1]
            skipped += sum(1 for m in fetched if not m["ok"])
            now = time.perf_counter()
            losses = [m["loss"] for m in fetched if m["ok"]]
            emit(Logged(step, step / layout.steps_per_epoch, float(np.mean(losses)) if losses else float("nan"),
                        float(last_metrics["grad_norm"]), float(schedule(step)),
                        (step - log_step) * B * T / max(now - t_log, 1e-9), elapsed_before + now - t_start, skipped))
            t_log, log_step = now, step
            if int(placement.to_host(state.bad_steps)) >= config.max_bad_steps:
                reason = "diverged"
                break
        if step % config.eval_every == 0:
            evaluate_and_save()
            if not_finite:
                reason = "diverged"
                break
        if config.sample_every and step % config.sample_every == 0:
            if main:
                emit(Sampled(step, sample_now(placement.to_host(state.params), model_config, corpus.vocab, step)))
            t_log = time.perf_counter()  # sampling time is not training time

    if pending:
        fetched = placement.to_host(pending)
        last_metrics = fetched[-1]
    if reason != "diverged" and last_eval_step != step and step > start_step:
        evaluate_and_save()
        reason = "diverged" if not_finite else reason
    finished = Finished(step, reason, best, best_path, latest_path, time.perf_counter() - t_start)
    if main:
        callback(finished)
    if reason == "diverged":
        kept = f"the last good checkpoint is {latest_path}" if latest_path.exists() else "no checkpoint was written"
        what = ("the parameters or optimizer state are not finite, so they were not saved" if not_finite else
                f"{config.max_bad_steps} consecutive steps had a non-finite loss or gradient")
        raise TrainingDiverged(
            f"training stopped at step {step}: {what} "
            f"(learning rate {float(schedule(step)):.3g}); {kept}; try a lower --learning-rate"
        )
    return finished
