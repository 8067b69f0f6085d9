"""Validation: the loss over a whole split, every character predicted once with all the context of its stream.

    evaluate = make_evaluate(model_config, seq_length)           # jitted: (params, inputs, targets, mask) -> nats
    chunk = make_evaluate_chunk(model_config, seq_length)        # jitted: (params, carry, ids, valid) -> sums
    validator = Validator(ids, model_config, batch_size, seq_length, placement, params_like)   # any size of split
    nats = validator(params)

Training validates in its own product precision (`TrainConfig.precision`): a run that trains on bfloat16 products
validates on them too, 2.3-2.4 times as fast as in float32 on a 2-core Xeon with AMX, for a loss within 0.0002
nats of float32's (benchmarks/README.md). Everything else here, and `charrnn evaluate`, stays float32.

The split is laid out as `charrnn.data.EvalWindows` (B contiguous streams, each from the zero state) and run a
chunk of windows at a time, the state carried from chunk to chunk, so device memory does not grow with the
split. Losses are in nats per character.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from . import data, distributed, model
from .config import ModelConfig
from .text import token_dtype

EVAL_EVERY = 250  # steps between validation passes, unless a pass takes longer than...
MAX_VALIDATION_SHARE = 0.05  # ...this fraction of the training time between passes (--eval-every auto)


def auto_eval_every(validation_cost: float, step_cost: float) -> int:
    """Steps between validation passes with ``--eval-every auto``: `EVAL_EVERY`, or the smallest multiple of it
    at which one pass costs at most `MAX_VALIDATION_SHARE` of the training between two passes.

    `validation_cost` is what one pass over the validation split costs and `step_cost` what a training step
    costs, in the same unit (seconds as measured, or characters' worth of work as predicted). Only a large
    validation split stretches the interval: 5% of a 100 MB corpus, validated whole every 250 steps, would
    take most of a run.
    """
    stretch = validation_cost / (MAX_VALIDATION_SHARE * EVAL_EVERY * step_cost)
    return EVAL_EVERY * max(1, math.ceil(stretch - 1e-9))


def _evaluate_windows(model_config: ModelConfig, seq_length: int, precision: str = "float32") -> Callable:
    """``run(params, carry, inputs, targets, mask) -> (carry, total nats, count)`` over (B, W*T) arrays: a
    `lax.scan` over the W windows, the state carried from window to window, the products' operands in
    `precision` (see `charrnn.fused.run_layers`; the sums, states and losses stay float32)."""

    def run(params, carry, inputs, targets, mask):
        B, L = inputs.shape
        windows = lambda a: a.reshape(B, L // seq_length, seq_length).swapaxes(0, 1)  # (W, B, T)

        def body(carry_and_sums, window):
            carry, total, count = carry_and_sums
            x, y, m = window
            logits, carry = model.forward(params, model_config, x.astype(jnp.int32), carry, matmul_dtype=precision)
            nll = model.position_nll(logits, y)
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
                        placement: Optional[distributed.Placement] = None, precision: str = "float32") -> Callable:
    """Evaluation fed a chunk of windows at a time (`charrnn.data.EvalWindows`), for splits of any size:
    ``run(params, carry, ids, valid) -> (carry, [total nats, count])``.

    `ids` is (B, W*T + 1): row b's inputs ``ids[b, :-1]`` and targets ``ids[b, 1:]``, of which the first
    ``valid[b]`` are real (the rest padding, masked). The carry (B, H) per layer runs on from the previous chunk
    of the same streams (zero before the first). One jitted `lax.scan` over the W windows, as `make_evaluate`,
    its products in `precision`; with a `placement` the rows (streams) are sharded over its devices.
    """
    run = _evaluate_windows(model_config, seq_length, precision)

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


class Validator:
    """The validation loss of a split for any parameters: ``validator(params) -> nats per character``.

    Lays the split out once (`charrnn.data.EvalWindows`, its rows a multiple of the placement's devices, this
    process reading only its share), compiles the chunk program once (its products in `precision`), and on
    each call runs every chunk with the state carried, adding up the losses on the devices.
    """

    def __init__(self, ids: np.ndarray, model_config: ModelConfig, batch_size: int, seq_length: int,
                 placement: distributed.Placement, params_like, precision: str = "float32") -> None:
        self.ids, self.model_config, self.placement = ids, model_config, placement
        dtype = token_dtype(model_config.vocab_size)
        self.windows = data.EvalWindows(ids, batch_size, seq_length, row_multiple=placement.devices, dtype=dtype,
                                        part=(placement.process_index, placement.num_processes))
        rows, batch = self.windows.batch_size, placement.batch
        carry = jax.eval_shape(lambda: model.initial_carry(model_config, rows))
        self.run = make_evaluate_chunk(model_config, seq_length, placement, precision).lower(
            params_like, jax.tree.map(lambda c: jax.ShapeDtypeStruct(c.shape, c.dtype, sharding=batch), carry),
            jax.ShapeDtypeStruct((rows, self.windows.chunk_windows * seq_length + 1), dtype, sharding=batch),
            jax.ShapeDtypeStruct((rows,), np.int32, sharding=batch)).compile()

    def __call__(self, params) -> float:
        placement, rows = self.placement, self.windows.batch_size
        carry = placement.put(model.initial_carry(self.model_config, rows), placement.batch)
        total = count = 0.0
        for c in range(self.windows.num_chunks):
            ids, valid = self.windows(c)
            carry, sums = self.run(params, carry, placement.put_batch(ids, rows), placement.put_batch(valid, rows))
            chunk_total, chunk_count = placement.to_host(sums)
            total, count = total + float(chunk_total), count + float(chunk_count)
            data.drop_pages(self.ids)
        return total / max(count, 1.0)


# --- per-position losses ---------------------------------------------------------------------------------------


def make_position_chunk(model_config: ModelConfig, seq_length: int) -> Callable:
    """``run(params, carry, ids) -> (carry, nll)``: `make_evaluate_chunk`'s program, keeping the loss of every
    position instead of summing it.

    `ids` is (B, W*T + 1): row b's inputs ``ids[b, :-1]``, targets ``ids[b, 1:]``; `nll` is (B, W*T) nats, one per
    target (padding included: the caller keeps the real ones). One jitted `lax.scan` over the W windows, the
    state carried from window to window and on from the previous chunk of the same streams.
    """

    def run(params, carry, ids):
        B, L = ids.shape[0], ids.shape[1] - 1
        windows = lambda a: a.reshape(B, L // seq_length, seq_length).swapaxes(0, 1)  # (W, B, T)

        def body(carry, window):
            x, y = window
            logits, carry = model.forward(params, model_config, x.astype(jnp.int32), carry)
            return carry, model.position_nll(logits, y)  # (B, T)

        carry, nll = jax.lax.scan(body, carry, (windows(ids[:, :-1]), windows(ids[:, 1:])))  # nll (W, B, T)
        return carry, nll.swapaxes(0, 1).reshape(B, L)

    return jax.jit(run)


def position_losses(params, ids: np.ndarray, model_config: ModelConfig, batch_size: int, seq_length: int,
                    chunk_chars: int = data.EVAL_CHUNK_CHARS) -> np.ndarray:
    """The loss of every symbol 1..N-1 of `ids` (N,), laid out and run exactly as validation runs a split.

    The text is cut into `batch_size` contiguous streams, each read from the zero state (`charrnn.data.EvalWindows`,
    as `Validator`), a chunk of windows at a time with the state carried, so device memory is bounded by the
    chunk. The mean of the result is `Validator`'s loss of the same ids with the same batch size and window.

    Returns:
      (N-1,) float32 nats, in text order: entry t-1 is the loss of ``ids[t]`` given the stream's text before it.
    """
    ids = np.asarray(ids)
    out = np.zeros(max(len(ids) - 1, 0), np.float32)
    if len(out) == 0:
        return out
    windows = data.EvalWindows(ids, batch_size, seq_length, dtype=token_dtype(model_config.vocab_size),
                               chunk_chars=chunk_chars)
    run = make_position_chunk(model_config, seq_length)
    carry = model.initial_carry(model_config, windows.batch_size)
    span = windows.chunk_windows * seq_length
    for c in range(windows.num_chunks):
        chunk_ids, valid = windows(c)
        carry, nll = run(params, carry, chunk_ids)
        nll = np.asarray(nll)
        for start, count, row in zip(windows.starts.tolist(), valid.tolist(), nll):
            lo = start + c * span  # the row's first target in this chunk is ids[lo + 1], entry lo
            out[lo : lo + count] = row[:count]
    return out
