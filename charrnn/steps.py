"""The training step: its state, and the builders of the one jitted XLA program that updates it.

    state = init_state(model_config, config, optimizer, batch_size)            # params, optimizer state, carry
    step = make_window_step(model_config, config, optimizer, steps_per_epoch)  # (state, window) -> (state, metrics)
    step = make_train_step(model_config, config, optimizer)                    # (state, inputs, targets) -> ...

Each is pure: the state goes in and comes out (donated, so it is updated in place on the device). With a
`charrnn.distributed.Placement` the batch and the carry are sharded by rows over its devices, the parameters
and optimizer state replicated; each device computes the gradients of its own rows and one all-reduce
averages them (`_gradients`). `to_checkpoint` and `restore_state` move a state to and from a
`charrnn.checkpoint.Checkpoint`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from . import checkpoint, data, distributed, model, optim, rtrl
from .config import ModelConfig, TrainConfig
from .text import Corpus


class TrainState(NamedTuple):
    """Everything that changes from step to step. A pytree; lives on the device.

    Attributes:
      params: model parameters.
      opt_state: optax state.
      carry: hidden state carried from window to window, per layer, each (B, H).
      step: windows consumed so far (int32 scalar); epoch = step // steps_per_epoch.
      bad_steps: consecutive steps skipped for a non-finite loss or gradient (int32 scalar).
      sensitivities: with ``gradient="rtrl"``, ∂carry/∂θ of the carry (B, S, N) (`charrnn.rtrl`); else None.
      average: with a ``weight_average`` (not 0), the exponential moving average of `params` (the model: see
        `model_params`); else None.
    """

    params: Any
    opt_state: Any
    carry: Any
    step: jax.Array
    bad_steps: jax.Array
    sensitivities: Any = None
    average: Any = None


def model_params(state: TrainState) -> Any:
    """The parameters a state stands for as a model, to validate, sample and save: the moving average of the
    weights when the run keeps one (``weight_average`` not 0), else the weights themselves."""
    return state.params if state.average is None else state.average


def init_state(model_config: ModelConfig, config: TrainConfig, optimizer: optax.GradientTransformation,
               batch_size: Optional[int] = None) -> TrainState:
    """A fresh state: parameters from `config.seed`, zero carry (and zero sensitivities for RTRL), step 0."""
    params = model.init(jax.random.fold_in(jax.random.key(config.seed), 0), model_config)
    B = batch_size or config.batch_size
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        carry=model.initial_carry(model_config, B),
        step=jnp.zeros((), jnp.int32),
        bad_steps=jnp.zeros((), jnp.int32),
        sensitivities=rtrl.init_sensitivities(params, model_config, B) if config.gradient == "rtrl" else None,
        average=jax.tree.map(jnp.copy, params) if config.averages_weights else None,
    )


def _select(ok: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _gradients(model_config: ModelConfig, placement: Optional[distributed.Placement], fast: bool = True,
               precision: str = "float32") -> Callable:
    """``gradients(params, x, y, carry, keep, weight_keep) -> (loss, new carry, grads)`` on a window `x` -> `y`
    (B, T), with the dropout keep-masks `keep` (`model.dropout_masks`, or None) and the weight drop's
    `weight_keep` (`model.weight_drop_masks`, or None); the fused layers' products in `precision`.

    With several devices, each device computes the loss and gradients of its own rows of the batch (a
    `jax.shard_map`) and one all-reduce averages them (the rows are equal in number, so the mean of the means is
    the mean over the batch). Each device's recurrence then runs as a loop of its own, in parallel: on a CPU,
    whose XLA runs a loop's steps one after another on one core, this is what puts the other cores to work
    (see `charrnn.launch`). Left to XLA's partitioner instead, the same program gathers
    activations between the devices and runs no faster than one device.
    """

    def gradients(params, x, y, carry, keep, weight_keep):
        def loss_fn(p):
            dropped = model.drop_weights(p, weight_keep, model_config.weight_drop)
            return model.loss(dropped, model_config, x, y, carry, dropout_keep=keep, fast=fast, matmul_dtype=precision)

        (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, new_carry, grads

    if placement is None or placement.devices == 1:
        return gradients

    def averaged(params, x, y, carry, keep, weight_keep):
        loss, new_carry, grads = gradients(params, x, y, carry, keep, weight_keep)
        return jax.lax.pmean(loss, distributed.AXIS), new_carry, jax.lax.pmean(grads, distributed.AXIS)

    rows, time_rows, whole = P(distributed.AXIS), P(None, distributed.AXIS), P()
    # check_vma off: the layer loops start from buffers made inside them (zeros, projections), which the check
    # would have marked as varying across devices by hand; every output's spec is given below.
    return jax.shard_map(averaged, mesh=placement.mesh, in_specs=(whole, rows, rows, rows, time_rows, whole),
                         out_specs=(whole, rows, whole), check_vma=False)


def _step_body(model_config: ModelConfig, config: TrainConfig, optimizer: optax.GradientTransformation,
               placement: Optional[distributed.Placement] = None, fast: bool = True) -> Callable:
    """``body(state, x, y, window) -> (state, metrics)``: one update on the window `x` -> `y` (B, T), the `window`
    index in the epoch deciding whether the carry starts from zero. Shared by both ways of feeding windows."""
    dropout_base = jax.random.fold_in(jax.random.key(config.seed), 1)
    gradients = _gradients(model_config, placement, fast, config.precision)

    def body(state: TrainState, x: jax.Array, y: jax.Array, window: jax.Array):
        carry = jax.lax.stop_gradient(_reset(config, window, state.carry))
        step_key = jax.random.fold_in(dropout_base, state.step)
        dropout_key = step_key if model_config.dropout_rate > 0 else None
        # The masks of the whole batch, drawn as one device would draw them: any number of devices takes the
        # same steps (each is handed its rows of them, and all of the weight drop's).
        keep = model.dropout_masks(dropout_key, model_config, x.shape[1], x.shape[0])
        weight_keep = model.weight_drop_masks(jax.random.fold_in(step_key, 2), model_config)
        loss, new_carry, grads = gradients(state.params, x, y, carry, keep, weight_keep)
        return _update(optimizer, config, state, loss, grads, state._replace(carry=carry),
                       state._replace(carry=new_carry))

    return body


def _reset(config: TrainConfig, window: jax.Array, tree: Any) -> Any:
    """`tree` (a carry, or its sensitivities) zeroed at the first window of an epoch (or of a shuffled segment:
    `window` counts the windows since the last reset), unless the state is never reset (``state_reset="never"``:
    continuous training)."""
    if config.state_reset == "never":
        return tree
    return jax.tree.map(lambda c: jnp.where(window == 0, jnp.zeros_like(c), c), tree)


def _update(optimizer: optax.GradientTransformation, config: TrainConfig, state: TrainState, loss: jax.Array,
            grads: Any, before: TrainState, after: TrainState) -> tuple[TrainState, dict]:
    """Applies `grads` to `state`'s parameters and moves their average towards the new ones (by 1 − the decay
    ``weight_average``; None: `optim.UNKNOWN_LENGTH_WEIGHT_AVERAGE`, as `charrnn.train` fits it); the state
    carried on is `after` (carry and sensitivities) unless the loss, gradient or update is not finite (e.g. from
    an absurd learning rate): then nothing changes but the step and `bad_steps` counters, and the carry stays
    `before`'s."""
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = optim.weight_average_decay(config.weight_average, None)
    average = None if state.average is None else jax.tree.map(lambda a, p: a + (1.0 - decay) * (p - a),
                                                              state.average, params)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
    new_state = TrainState(
        params=_select(ok, params, state.params),
        opt_state=_select(ok, opt_state, state.opt_state),
        carry=_select(ok, after.carry, before.carry),
        step=state.step + 1,
        bad_steps=jnp.where(ok, 0, state.bad_steps + 1),
        sensitivities=_select(ok, after.sensitivities, before.sensitivities),
        average=_select(ok, average, state.average),
    )
    return new_state, {"loss": loss, "grad_norm": grad_norm, "ok": ok}


def state_shardings(placement: distributed.Placement, sensitivities: bool = False,
                    average: bool = False) -> TrainState:
    """Where each part of the state lives: the carry (and any sensitivities) split by rows (streams), everything
    else (the weights' average too, if kept) replicated."""
    return TrainState(params=placement.replicated, opt_state=placement.replicated, carry=placement.batch,
                      step=placement.replicated, bad_steps=placement.replicated,
                      sensitivities=placement.batch if sensitivities else None,
                      average=placement.replicated if average else None)


def _jit_step(step: Callable, config: TrainConfig, placement: Optional[distributed.Placement],
              data_shardings: tuple, sensitivities: bool = False) -> Callable:
    if placement is None:
        return jax.jit(step, donate_argnums=0)
    shardings = state_shardings(placement, sensitivities, config.averages_weights)
    return jax.jit(step, donate_argnums=0, in_shardings=(shardings, *data_shardings),
                   out_shardings=(shardings, placement.replicated))


def make_train_step(
    model_config: ModelConfig,
    config: TrainConfig,
    optimizer: optax.GradientTransformation,
    seq_length: Optional[int] = None,
    steps_per_epoch: Optional[int] = None,
    placement: Optional[distributed.Placement] = None,
    fast: bool = True,
) -> Callable:
    """The whole training step — window slicing, forward, backward, clipping, update — as one jitted function.

    The returned ``step(state, inputs, targets) -> (state, metrics)`` takes the full (B, L) training streams
    (kept on the device) and slices window ``state.step % steps_per_epoch`` itself. At the first window of
    each epoch the carry is reset to zero; between windows it is carried with its gradient stopped. A step
    whose loss, gradient or update is not finite changes nothing but the step and `bad_steps` counters.
    With a `placement`, the streams and the carry are sharded by rows over its devices (`state_shardings`).

    metrics: {"loss": nats per character, "grad_norm": global norm before clipping, "ok": bool}. `fast`: the
    fused layers or the plain scan (`charrnn.model.run_layers`).
    """
    T = seq_length or config.seq_length
    body = _step_body(model_config, config, optimizer, placement, fast)

    def step(state: TrainState, inputs: jax.Array, targets: jax.Array):
        window = state.step % (steps_per_epoch or inputs.shape[1] // T)
        x = jax.lax.dynamic_slice_in_dim(inputs, window * T, T, axis=1).astype(jnp.int32)
        y = jax.lax.dynamic_slice_in_dim(targets, window * T, T, axis=1).astype(jnp.int32)
        return body(state, x, y, window)

    rows = () if placement is None else (placement.batch, placement.batch)
    return _jit_step(step, config, placement, rows)


def make_window_step(
    model_config: ModelConfig,
    config: TrainConfig,
    optimizer: optax.GradientTransformation,
    reset_every: int,
    placement: Optional[distributed.Placement] = None,
    fast: bool = True,
) -> Callable:
    """The same training step, fed one window at a time: ``step(state, window) -> (state, metrics)``.

    `window` is (B, T + 1) token ids: inputs ``window[:, :-1]``, targets ``window[:, 1:]``; for contiguous
    streams row b holds the T + 1 characters of stream b from position ``j * T``, ``j = state.step %
    steps_per_epoch`` (`charrnn.data.TrainWindows`), for shuffled segments the next window of row b's segment
    (`charrnn.data.ShuffledWindows`). The carry starts from zero every `reset_every` steps
    (`charrnn.data.Layout.reset_every`: an epoch's steps, or a segment's). The arithmetic is that of
    `make_train_step`; `train` uses this one, reading each window from the corpus on the host so that nothing
    of corpus size has to live on the device. With a `placement`, the window and the carry are sharded by rows
    over its devices.
    """
    body = _step_body(model_config, config, optimizer, placement, fast)

    def step(state: TrainState, window: jax.Array):
        x, y = window[:, :-1].astype(jnp.int32), window[:, 1:].astype(jnp.int32)
        return body(state, x, y, state.step % reset_every)

    return _jit_step(step, config, placement, () if placement is None else (placement.batch,))


def make_rtrl_step(
    model_config: ModelConfig,
    config: TrainConfig,
    optimizer: optax.GradientTransformation,
    reset_every: int,
    placement: Optional[distributed.Placement] = None,
) -> Callable:
    """The training step with real-time recurrent learning (`charrnn.rtrl`), fed as `make_window_step`:
    ``step(state, window) -> (state, metrics)``, `state.sensitivities` carried with the carry.

    The gradient of each window's loss is exact through the whole history since the state was last reset (every
    `reset_every` steps: each epoch's or segment's first window; never with ``state_reset="never"``): nothing
    is truncated. The weights are
    updated after each window (every `config.window` characters). One device only (`placement` of one device,
    or None); no dropout.
    """

    def step(state: TrainState, window: jax.Array):
        x, y = window[:, :-1].astype(jnp.int32), window[:, 1:].astype(jnp.int32)
        w = state.step % reset_every
        before = state._replace(carry=_reset(config, w, state.carry),
                                sensitivities=_reset(config, w, state.sensitivities))
        loss, grads, carry, sensitivities = rtrl.rtrl_gradient(state.params, model_config, x, y, before.carry,
                                                               before.sensitivities)
        after = before._replace(carry=carry, sensitivities=sensitivities)
        return _update(optimizer, config, state, loss, grads, before, after)

    return _jit_step(step, config, placement, () if placement is None else (placement.batch,), sensitivities=True)


# --- to and from a checkpoint ---------------------------------------------------------------------------------


def to_checkpoint(state: TrainState, corpus: Corpus, splits: data.Splits, model_config: ModelConfig,
                  config: TrainConfig, layout: data.Layout, info: dict, history: list) -> checkpoint.Checkpoint:
    """The checkpoint of a training state (host arrays), with everything needed to sample, inspect or resume. Its
    "params" are the model (`model_params`): with a moving average of the weights, the average, and the weights
    themselves, which training goes on from, are "training_params"."""
    arrays = {
        **checkpoint.flatten("params", model_params(state)),
        **({} if state.average is None else checkpoint.flatten("training_params", state.params)),
        **checkpoint.flatten("opt_state", state.opt_state),
        **checkpoint.flatten("carry", state.carry),
        **({} if state.sensitivities is None else checkpoint.flatten("sensitivities", state.sensitivities)),
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
    """The `TrainState` saved in `ckpt` (parameters and their average, optimizer state, carried state and its
    sensitivities, step)."""
    template = jax.eval_shape(lambda: init_state(model_config, config, optimizer, batch_size))
    restored = lambda prefix, like: jax.tree.map(jnp.asarray, ckpt.tree(prefix, like))
    averaged = template.average is not None
    return TrainState(
        params=restored("training_params" if averaged else "params", template.params),
        opt_state=restored("opt_state", template.opt_state),
        carry=restored("carry", template.carry),
        step=jnp.asarray(ckpt.state["step"], jnp.int32),
        bad_steps=jnp.zeros((), jnp.int32),
        sensitivities=None if template.sensitivities is None else restored("sensitivities", template.sensitivities),
        average=restored("params", template.average) if averaged else None,
    )
