"""Validation: the loss over a whole split, every character predicted once with all the context of its stream.

    evaluate = make_evaluate(model_config, seq_length)           # jitted: (params, inputs, targets, mask) -> nats
    chunk = make_evaluate_chunk(model_config, seq_length)        # jitted: (params, carry, ids, valid) -> sums
    validator = Validator(ids, model_config, batch_size, seq_length, placement)   # for splits of any size
    nats = validator(params)

The split is laid out as `charrnn.data.EvalWindows` (B contiguous streams, each from the zero state) and run a
chunk of windows at a time, the state carried from chunk to chunk, so device memory does not grow with the
split. Losses are in nats per character.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from . import data, distributed, model
from .config import ModelConfig
from .text import token_dtype


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


class Validator:
    """The validation loss of a split for any parameters: ``validator(params) -> nats per character``.

    Lays the split out once (`charrnn.data.EvalWindows`, its rows a multiple of the placement's devices, this
    process reading only its share), compiles the chunk program once (`compile_s` says how long that took),
    and on each call runs every chunk with the state carried, adding up the losses on the devices.
    """

    def __init__(self, ids: np.ndarray, model_config: ModelConfig, batch_size: int, seq_length: int,
                 placement: distributed.Placement, params_like) -> None:
        self.ids, self.model_config, self.placement = ids, model_config, placement
        dtype = token_dtype(model_config.vocab_size)
        self.windows = data.EvalWindows(ids, batch_size, seq_length, row_multiple=placement.devices, dtype=dtype,
                                        part=(placement.process_index, placement.num_processes))
        rows, batch = self.windows.batch_size, placement.batch
        carry = jax.eval_shape(lambda: model.initial_carry(model_config, rows))
        self.run = make_evaluate_chunk(model_config, seq_length, placement).lower(
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
