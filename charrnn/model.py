"""The character language model: embedding -> stacked recurrent layers -> linear head.

    e_t = E[char_t]                     (a gather, not a one-hot matmul)
    h_t = stacked cells over e_1..e_t   (dropout between layers and before the head, training only)
    logits_t = V h_t + b_y              (predicts char_{t+1})

Parameters are a plain pytree::

    {"embedding": (vocab, E), "layers": [cell params per layer], "head": {"W": (H, vocab), "b": (vocab,)}}

The carry is a list with one cell carry per layer. Batches come in batch-major, (B, T) int token ids; inside,
everything runs time-major, because `lax.scan` walks the leading axis.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from . import cells, fused
from .config import ModelConfig

Params = dict
Carry = list  # one cells.Carry per layer


def init(key: jax.Array, config: ModelConfig) -> Params:
    """Fresh parameters for `config` from the PRNG `key`."""
    cell = cells.of(config)
    k_embed, k_head, *k_layers = jax.random.split(key, 2 + config.num_layers)
    H, V, E = config.hidden_size, config.vocab_size, config.embedding_size
    layers = [
        cell.init(k, E if layer == 0 else H, H) for layer, k in enumerate(k_layers)
    ]
    return {
        # Unit-variance embeddings: with Glorot input weights the first layer's pre-activations start near unit scale.
        "embedding": jax.random.normal(k_embed, (V, E), jnp.float32),
        "layers": layers,
        "head": {
            "W": jax.random.normal(k_head, (H, V), jnp.float32) / jnp.sqrt(H),
            "b": jnp.zeros((V,), jnp.float32),
        },
    }


def initial_carry(config: ModelConfig, batch_size: int) -> Carry:
    """The zero state for every layer, each array (batch_size, H)."""
    cell = cells.of(config)
    return [cell.initial_carry((batch_size,), config.hidden_size) for _ in range(config.num_layers)]


def dropout_masks(key: Optional[jax.Array], config: ModelConfig, steps: int, batch_size: int) -> Optional[list]:
    """The keep-masks of training's dropout for one (batch_size, steps) window: one (steps, batch_size, H) bool
    array for the input of every layer after the first and one for the head's input (L in all), drawn from
    `key`; None when there is no dropout (no key, or rate 0). A mask's rows are the batch's rows, so a device
    holding some rows of the batch can be handed the same rows of every mask."""
    if key is None or config.dropout_rate == 0.0:
        return None
    keys = list(jax.random.split(key, config.num_layers + 1)[1:])
    return fused.dropout_masks(keys, config.dropout_rate, (steps, batch_size, config.hidden_size))


def weight_drop_masks(key: Optional[jax.Array], config: ModelConfig) -> Optional[list]:
    """The keep-masks of training's weight drop for one step: per layer, a bool array the shape of its recurrent
    matrix U, (H, G*H) for G gates, shared by every row and time step of the window; None when there is no
    weight drop (no key, or `config.weight_drop` 0)."""
    if key is None or config.weight_drop == 0.0:
        return None
    G = cells.of(config).num_gates
    keys = list(jax.random.split(key, config.num_layers))
    return fused.dropout_masks(keys, config.weight_drop, (config.hidden_size, G * config.hidden_size))


def drop_weights(params: Params, keep: Optional[Sequence[jax.Array]], rate: float) -> Params:
    """`params` with each layer's U replaced by ``where(keep, U / (1 - rate), 0)`` (`weight_drop_masks`): the
    expected recurrent matrix is unchanged, and the gradient reaches only the entries kept. `keep` None: as is."""
    if keep is None:
        return params
    layers = [{**layer, "U": _dropout(k, rate, layer["U"])} for layer, k in zip(params["layers"], keep)]
    return {**params, "layers": layers}


def _dropout(keep: Optional[jax.Array], rate: float, x: jax.Array) -> jax.Array:
    return x if keep is None else jnp.where(keep, x / (1.0 - rate), 0.0)


def run_layers(
    params: Params,
    config: ModelConfig,
    tokens_tm: jax.Array,
    carry: Carry,
    *,
    dropout_key: Optional[jax.Array] = None,
    dropout_keep: Optional[Sequence[jax.Array]] = None,
    outputs: tuple[str, ...] = ("h",),
    edit: Optional[Callable] = None,
    edit_inputs: Optional[list] = None,
    fast: bool = True,
    matmul_dtype: Optional[str] = None,
) -> tuple[Carry, list[cells.States]]:
    """Runs the embedding and every recurrent layer over time-major tokens.

    Args:
      tokens_tm: (T, B) int token ids.
      carry: the state before the first step (see `initial_carry`).
      dropout_key: a PRNG key turns dropout on (training); None turns it off (evaluation, sampling).
      dropout_keep: or the dropout's keep-masks themselves, as `dropout_masks` draws them (instead of a key).
      outputs: which per-step states each layer reports (see `cells.Cell.state_names`); "h" is always included.
      edit: optional ``edit(layer, name, value, edit_input_t) -> value`` applied inside every step of every
        layer (see `cells.Edit`): inspection clamps units and probes gradients with it.
      edit_inputs: optional per-layer list of per-step inputs for `edit`, each with leading axis T.
      fast: when only "h" is asked for and there is no `edit`, run the layers through `charrnn.fused` (the same
        maths with a hand-written backward pass); False runs the plain `cells.scan` (the reference), as does a
        layer-normalised cell always (autodiff differentiates it).
      matmul_dtype: the fused layers' product precision ("bfloat16" or None; see `fused.run_layers`); the plain
        scan ignores it.

    Returns:
      The final carry and, per layer, a dict of states each (T, B, H). The last layer's "h" is *after* the
      dropout that precedes the head.
    """
    cell = cells.of(config)
    outputs = tuple(dict.fromkeys(("h", *outputs)))
    x = params["embedding"][tokens_tm]  # (T, B, E)
    if dropout_keep is None:
        dropout_keep = dropout_masks(dropout_key, config, *tokens_tm.shape)
    keeps = list(dropout_keep) if dropout_keep is not None and config.dropout_rate > 0 else [None] * config.num_layers
    if edit is None and outputs == ("h",) and fast and not cell.layer_norm:  # training, evaluation: faster
        tokens = None
        if config.vocab_size <= tokens_tm.size:
            # W_0 e_t + b_0 depends on the token alone: project the (vocab, E) embedding once and let each step
            # gather its rows, instead of a (T*B, E) @ (E, G*H) product and its two gradient products over the
            # whole window.
            x, tokens = input_table(params, config), tokens_tm
        new_carry, hs = fused.run_layers(cell, params["layers"], x, carry, dropout_keeps=keeps[:-1],
                                         dropout=config.dropout_rate, tokens=tokens, matmul_dtype=matmul_dtype)
        return new_carry, [{"h": h} for h in hs[:-1]] + [{"h": _dropout(keeps[-1], config.dropout_rate, hs[-1])}]
    new_carry, layer_states = [], []
    for layer, layer_params in enumerate(params["layers"]):
        if layer > 0:  # dropout between layers, never on the recurrent path
            x = _dropout(keeps[layer - 1], config.dropout_rate, x)
        layer_edit = None if edit is None else functools.partial(edit, layer)
        c, states = cells.scan(cell, layer_params, cell.project_inputs(layer_params, x), carry[layer], outputs,
                               edit=layer_edit, edit_inputs=None if edit_inputs is None else edit_inputs[layer])
        new_carry.append(c)
        layer_states.append(states)
        x = states["h"]
    layer_states[-1] = {**layer_states[-1], "h": _dropout(keeps[-1], config.dropout_rate, x)}
    return new_carry, layer_states


def head(params: Params, h: jax.Array) -> jax.Array:
    """Next-character logits from the last layer's hidden states: (..., H) -> (..., vocab)."""
    return h @ params["head"]["W"] + params["head"]["b"]


def forward(
    params: Params,
    config: ModelConfig,
    tokens: jax.Array,
    carry: Carry,
    *,
    dropout_key: Optional[jax.Array] = None,
    dropout_keep: Optional[Sequence[jax.Array]] = None,
    fast: bool = True,
    matmul_dtype: Optional[str] = None,
) -> tuple[jax.Array, Carry]:
    """Next-character logits for a batch of windows.

    Args:
      tokens: (B, T) int token ids.
      carry: the state before the first character (see `initial_carry`).
      dropout_key: a PRNG key turns dropout on (training); None turns it off.
      dropout_keep: or the keep-masks themselves (see `dropout_masks`).
      fast: the fused layers (default) or the plain scan (see `run_layers`).
      matmul_dtype: the fused layers' product precision (see `run_layers`).

    Returns:
      logits (B, T, vocab) — position t predicts token t+1 — and the carry after the last character.
    """
    carry, states = run_layers(params, config, tokens.T, carry, dropout_key=dropout_key, dropout_keep=dropout_keep,
                               fast=fast, matmul_dtype=matmul_dtype)
    logits = head(params, states[-1]["h"])  # (T, B, V)
    return jnp.swapaxes(logits, 0, 1), carry


def input_table(params: Params, config: ModelConfig) -> jax.Array:
    """The first layer's input projection of every symbol: (vocab, G*H), G the cell's gate count.

    Row v is what the first layer adds for token v (``W e_v + b``; ``W e_v`` with layer normalisation), so a loop
    that feeds one token at a time (`step`) gathers a row instead of multiplying its embedding afresh, and so does
    the fused training path over a window (`run_layers`)."""
    layer = params["layers"][0]
    return cells.of(config).project_inputs(layer, params["embedding"])


def step(
    params: Params, config: ModelConfig, tokens: jax.Array, carry: Carry, table: Optional[jax.Array] = None
) -> tuple[jax.Array, Carry]:
    """One time step through every layer, for generation: tokens (B,) int -> logits (B, vocab), new carry.

    The same maths as `forward` (which runs layer by layer over a whole window); no dropout. `table`, the
    `input_table` of `params` computed once outside the loop, replaces the first layer's input product by a
    gather (the same values: each row of a product is its own dot products).
    """
    cell = cells.of(config)
    if table is None:
        projected = cell.project_inputs(params["layers"][0], params["embedding"][tokens])  # (B, G*H)
    else:
        projected = table[tokens]
    new_carry = []
    for layer, (layer_params, layer_carry) in enumerate(zip(params["layers"], carry)):
        if layer > 0:
            projected = cell.project_inputs(layer_params, x)
        c, states = cell.step(layer_params, layer_carry, projected)
        new_carry.append(c)
        x = states["h"]
    return head(params, x), new_carry


def position_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """The negative log-likelihood of each target, in nats: logits (..., V), targets (...) int -> (...).

    Computed in at least float32 (a bfloat16 model still gets an accurate loss); float64 stays float64.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    return -jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
    """Mean negative log-likelihood in nats per character.

    Args:
      logits: (..., V).
      targets: (...) int ids.
      weights: (...) optional 0/1 mask; the mean is over the weighted positions.
    """
    nll = position_nll(logits, targets)
    if weights is None:
        return nll.mean()
    return (nll * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def loss(
    params: Params,
    config: ModelConfig,
    inputs: jax.Array,
    targets: jax.Array,
    carry: Carry,
    *,
    dropout_key: Optional[jax.Array] = None,
    dropout_keep: Optional[Sequence[jax.Array]] = None,
    fast: bool = True,
    matmul_dtype: Optional[str] = None,
) -> tuple[jax.Array, Carry]:
    """Mean cross-entropy in nats per character of `targets` (B, T) given `inputs` (B, T), and the new carry.
    Dropout, `fast` and `matmul_dtype` as in `forward`."""
    logits, carry = forward(params, config, inputs, carry, dropout_key=dropout_key, dropout_keep=dropout_keep,
                            fast=fast, matmul_dtype=matmul_dtype)
    return cross_entropy(logits, targets), carry


def num_parameters(params: Params) -> int:
    """Total number of scalars in `params`."""
    return sum(x.size for x in jax.tree.leaves(params))
