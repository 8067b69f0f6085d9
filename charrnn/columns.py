"""The model's time step with column vectors, as the equations write it: what generation runs.

`charrnn.cells` stores its weights for batches of row vectors (``h @ U``, a (B, H) @ (H, G*H) product). Here the
same step runs on columns: each layer's state is (H, B), one column per sample, and its products are the
equations' own ``U h_{t-1}``, (G*H, H) @ (H, B). Why: at generation's batch sizes (B = 1 to a few hundred) a
step is a handful of products with few rows, and XLA:CPU runs these products faster with the G*H rows on the
left than with the B rows there (about 1.25× at B = 64 and H = 512; benchmarks/README.md, "Batch-64 sampling").

The weights are transposed once per generated chunk (`transpose`), the carry at a chunk's ends (`to_columns`,
`to_rows`); the step itself is the same maths as `model.step`, with every gate of a layer through one tanh, as
in `charrnn.fused` (`cells.activate_gates`), so its results equal it up to float rounding::

    weights = columns.transpose(params, config)
    carry = columns.to_columns(carry)                          # per layer, each (B, H) -> (H, B)
    logits, carry = columns.step(weights, config, tokens, carry)   # tokens (B,) -> logits (vocab, B)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import cells, model
from .config import ModelConfig


class Weights(NamedTuple):
    """The model's parameters for column vectors; every vector is a column (n, 1).

    Attributes:
      table: (G*H, vocab): column v is what the first layer adds for token v (`model.input_table`, transposed).
      layers: per layer a dict: "U" (G*H, H); "W" (G*H, d) and "b" (G*H, 1) for every layer after the first
        (the first layer's are in `table`); with layer normalisation "gain" (G*H, 1), the first layer's "b"
        (its shift, added after the normalisation), and the LSTM's "c_gain", "c_bias" (H, 1).
      head_W: (vocab, H); head_b: (vocab, 1).
    """

    table: jax.Array
    layers: list
    head_W: jax.Array
    head_b: jax.Array


def transpose(params: model.Params, config: ModelConfig) -> Weights:
    """`params` (`model.init`'s pytree) laid out for `step`."""
    layers = []
    for index, layer in enumerate(params["layers"]):
        columns = {"U": layer["U"].T}
        if index > 0:
            columns["W"] = layer["W"].T
        if index > 0 or config.layer_norm:
            columns["b"] = layer["b"][:, None]
        for name in ("gain", "c_gain", "c_bias"):
            if name in layer:
                columns[name] = layer[name][:, None]
        layers.append(columns)
    return Weights(model.input_table(params, config).T, layers, params["head"]["W"].T, params["head"]["b"][:, None])


def to_columns(carry: model.Carry) -> model.Carry:
    """A model carry with each array (B, H) as `step` keeps it, (H, B)."""
    return [tuple(a.T for a in layer) for layer in carry]


def to_rows(carry: model.Carry) -> model.Carry:
    """The inverse of `to_columns`: each (H, B) back to (B, H)."""
    return to_columns(carry)


def step(weights: Weights, config: ModelConfig, tokens: jax.Array, carry: model.Carry) -> tuple[jax.Array, model.Carry]:
    """One time step through every layer: tokens (B,) int -> logits (vocab, B), new carry (each (H, B)).

    The maths of `model.step` (no dropout), on columns."""
    cell = cells.of(config)
    x = weights.table[:, tokens]  # (G*H, B): W e + b of each token, gathered
    new_carry = []
    for index, (layer, layer_carry) in enumerate(zip(weights.layers, carry)):
        if index > 0:
            x = layer["W"] @ x
            x = x if cell.layer_norm else x + layer["b"]
        layer_carry = _STEPS[cell.name](cell, layer, layer_carry, x)
        new_carry.append(layer_carry)
        x = layer_carry[0]
    return weights.head_W @ x + weights.head_b, new_carry


def _preactivation(cell: cells.Cell, layer: dict, a: jax.Array, rows: slice, blocks: int) -> jax.Array:
    """``W x + U h (+ b)`` as is, or normalised block by block with b as the shift (`cells._preactivation`)."""
    return cells.normalize(a, layer["gain"][rows], layer["b"][rows], blocks, axis=0) if cell.layer_norm else a


def _rnn(cell: cells.Cell, layer: dict, carry: cells.Carry, x: jax.Array) -> cells.Carry:
    (h,) = carry
    return (cells.ACTIVATIONS[cell.activation](_preactivation(cell, layer, x + layer["U"] @ h, slice(None), 1)),)


def _lstm(cell: cells.Cell, layer: dict, carry: cells.Carry, x: jax.Array) -> cells.Carry:
    h, c = carry
    H = h.shape[0]
    a = _preactivation(cell, layer, x + layer["U"] @ h, slice(None), 4)
    f, i, o, g = jnp.split(cells.activate_gates(a, 3, H, axis=0), 4)
    c = f * c + i * g
    c_out = cells.normalize(c, layer["c_gain"], layer["c_bias"], axis=0) if cell.layer_norm else c
    return o * jnp.tanh(c_out), c


def _gru(cell: cells.Cell, layer: dict, carry: cells.Carry, x: jax.Array) -> cells.Carry:
    (h,) = carry
    H = h.shape[0]
    U = layer["U"]
    a = _preactivation(cell, layer, x[: 2 * H] + U[: 2 * H] @ h, slice(0, 2 * H), 2)
    zr = cells.activate_gates(a, 2, H, axis=0)
    z, r = zr[:H], zr[H:]
    # The reset gate multiplies h_{t-1} before the product, as in cells.py.
    h_hat = jnp.tanh(_preactivation(cell, layer, x[2 * H :] + U[2 * H :] @ (r * h), slice(2 * H, None), 1))
    return ((1.0 - z) * h + z * h_hat,)


_STEPS = {"rnn": _rnn, "lstm": _lstm, "gru": _gru}
