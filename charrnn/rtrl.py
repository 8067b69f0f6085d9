"""Real-time recurrent learning: the exact gradient of the character model's loss, computed forward in time.

BPTT runs a window forward, keeps every step's state, and propagates derivatives backward; its memory grows
with the window. RTRL instead carries the sensitivities of the state to the parameters and updates them at every
step (SPEC.md, "Real-time recurrent learning")::

    s_t = f(s_{t-1}, char_t; θ)                     the carry of every layer, flattened: (h, [c]) per layer
    P_t = ∂s_t/∂θ = (∂f/∂s_{t-1}) P_{t-1} + ∂f/∂θ    (S × N per stream)
    ∂L_t/∂θ = ∂L_t/∂s_t · P_t  (+ ∂L_t/∂(V, b_y), the head's direct term)

so the gradient of the loss at step t is known at step t, and memory does not depend on the window. Over the
same window, from the same state, it is BPTT's gradient, exactly (the tests check it in float64).

The model is `charrnn.model`'s: embedding -> stacked cells -> linear head -> softmax cross-entropy, the same
parameter pytree (`model.init`), the same carry (`model.initial_carry`) and the same loss (`model.loss`: the
mean over the batch and the window, in nats per character), with the RNN's activation and the layer
normalisation of the config. Dropout is not supported (the gradient is that of the deterministic model). θ
here is the embedding and the layers' weights, flattened with `ravel_pytree` in that order; the head does not act
on the state, so it has no sensitivity and gets its gradient directly.

Shapes, per stream: S = num_layers · (1 or 2 for the LSTM) · H state floats, N = vocab · E + the layers'
weights. The sensitivities are (B, S, N). A step costs about 2·S²·N flops for ``(∂f/∂s) P`` — O(H² · |θ|) per
character, as the notes say — which is why RTRL is for small networks only; `cost` says how much before anything
runs, so a caller can refuse a network that would be too slow.

Carrying state across windows. `rtrl_gradient` takes the carry and the sensitivities the previous window ended
in and returns the new ones. Passing zeros for the sensitivities (`init_sensitivities`) stops the gradient at
the window's start, as truncated BPTT does; passing the previous window's keeps the whole history: without a
weight update in between, the gradient of the second window equals BPTT's through both windows. In continuous
training (the state never reset, the weights updated every k characters), P was accumulated under the old
weights; carrying it on after an update is the usual approximation of continuous RTRL (Williams & Zipser
1989), which is exact in the limit of a small learning rate. `State`, `init_state` and `step` package that
bookkeeping.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from . import cells
from .config import ModelConfig

Params = dict
Carry = list  # one cells.Carry per layer, as model.initial_carry makes it


class Cost(NamedTuple):
    """What RTRL needs per stream: floats held in the sensitivities, and flops per character (estimates of the
    matrix products; the elementwise work is left out)."""

    sensitivity_floats: int
    flops_per_character: int


def state_size(config: ModelConfig) -> int:
    """S: floats in one stream's carry (h, and c for the LSTM, of every layer)."""
    return config.num_layers * len(cells.of(config).carry_names) * config.hidden_size


def num_sensitive_parameters(config: ModelConfig) -> int:
    """N: parameters the state depends on (the embedding and the layers; not the head)."""
    cell = cells.of(config)
    G, H, E = cell.num_gates, config.hidden_size, config.embedding_size
    layers = sum(G * H * ((E if layer == 0 else H) + H) + cell.vector_size(H) for layer in range(config.num_layers))
    return config.vocab_size * E + layers


def cost(config: ModelConfig) -> Cost:
    """The sensitivities' size and the work per character of one stream, for `config`, before running it.

    Per character: the step itself (F flops), its S reverse passes for the Jacobians (about 2·S·F), the product
    ``(∂f/∂s) P`` (2·S²·N), the loss's ``∂L/∂h · P`` (2·H·N) and the head (about 6·H·V).
    """
    G, H, E, V = cells.of(config).num_gates, config.hidden_size, config.embedding_size, config.vocab_size
    S, N = state_size(config), num_sensitive_parameters(config)
    F = sum(2 * G * H * ((E if layer == 0 else H) + H) for layer in range(config.num_layers))
    return Cost(S * N, 2 * S * S * N + 2 * S * F + F + 2 * H * N + 6 * H * V)


def _split(params: Params) -> tuple[dict, dict]:
    return {"embedding": params["embedding"], "layers": params["layers"]}, params["head"]


def init_sensitivities(params: Params, config: ModelConfig, batch_size: int) -> jax.Array:
    """P_0 = 0, (batch_size, S, N) in the parameters' dtype: the state before the first character is a constant
    (the zero state, or a carried state whose history is forgotten)."""
    theta, _ = ravel_pytree(_split(params)[0])
    return jnp.zeros((batch_size, state_size(config), theta.shape[0]), theta.dtype)


def _flatten_carry(carry: Carry) -> jax.Array:
    """[(h, [c]) per layer], each (B, H) -> (B, S)."""
    return jnp.concatenate([part for layer in carry for part in layer], axis=-1)


def _unflatten_carry(config: ModelConfig, s: jax.Array) -> Carry:
    n = len(cells.of(config).carry_names)
    parts = jnp.split(s, config.num_layers * n, axis=-1)
    return [tuple(parts[layer * n:(layer + 1) * n]) for layer in range(config.num_layers)]


def _h_slice(config: ModelConfig) -> slice:
    """Where the last layer's h lies in a flattened carry."""
    n, H = len(cells.of(config).carry_names), config.hidden_size
    start = (config.num_layers - 1) * n * H
    return slice(start, start + H)


@functools.partial(jax.jit, static_argnames="config")
def rtrl_gradient(
    params: Params,
    config: ModelConfig,
    tokens: jax.Array,
    targets: jax.Array,
    carry: Carry,
    sensitivities: jax.Array,
) -> tuple[jax.Array, Params, Carry, jax.Array]:
    """The loss of one window and its exact gradient, forward in time, from a carry and its sensitivities.

    Args:
      params: the model's parameters (`model.init`'s pytree).
      config: the model's configuration (static; dropout must be 0).
      tokens: (B, T) int input ids.
      targets: (B, T) int ids of the next characters.
      carry: the state before the first character (`model.initial_carry`'s layout).
      sensitivities: (B, S, N) ∂carry/∂θ of that state (`init_sensitivities` for zeros).

    Returns:
      loss: the mean cross-entropy over the window, nats per character (as `model.loss`).
      grads: its gradient, a pytree like `params`, through the carried sensitivities.
      new_carry: the state after the last character.
      new_sensitivities: (B, S, N), its sensitivities.
    """
    if config.dropout:
        raise ValueError("RTRL computes the gradient of the model without dropout: set dropout to 0")
    cell = cells.of(config)
    recurrent, head = _split(params)
    theta, unravel = ravel_pytree(recurrent)
    S, hs = state_size(config), _h_slice(config)
    B, T = tokens.shape
    scale = 1.0 / (B * T)

    def f(theta, s, token):  # one stream, one character: (N,), (S,), () -> (S,)
        p = unravel(theta)
        x, new = p["embedding"][token], []
        for layer_params, layer_carry in zip(p["layers"], _unflatten_carry(config, s)):
            c, states = cell.step(layer_params, layer_carry, cell.project_inputs(layer_params, x))
            new.append(c)
            x = states["h"]
        return _flatten_carry(new)

    def nll(head, h, target):  # one stream: the loss of one prediction from the last layer's h
        logits = h @ head["W"] + head["b"]  # as model.head
        return -jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))[target]

    def stream_step(s, P, token, target):  # (S,), (S, N) -> new s, new P, loss, ∂L/∂θ, ∂L/∂head
        s_new, pullback = jax.vjp(lambda th, s: f(th, s, token), theta, s)
        J_theta, J_s = jax.vmap(pullback)(jnp.eye(S, dtype=s.dtype))  # rows of ∂f/∂θ (S, N) and ∂f/∂s (S, S)
        P_new = J_s @ P + J_theta
        loss, (g_head, g_h) = jax.value_and_grad(nll, argnums=(0, 1))(head, s_new[hs], target)
        return s_new, P_new, loss, g_h @ P_new[hs], g_head

    def body(state, xs):
        s, P, loss_sum, g_theta, g_head = state
        s, P, loss, g_t, g_h = jax.vmap(stream_step)(s, P, *xs)
        g_head = jax.tree.map(lambda acc, g: acc + g.sum(0), g_head, g_h)
        return (s, P, loss_sum + loss.sum(), g_theta + g_t.sum(0), g_head), None

    zeros_head = jax.tree.map(jnp.zeros_like, head)
    init = (_flatten_carry(carry), sensitivities, jnp.zeros((), theta.dtype), jnp.zeros_like(theta), zeros_head)
    (s, P, loss_sum, g_theta, g_head), _ = jax.lax.scan(body, init, (tokens.T, targets.T))
    grads = {**unravel(g_theta * scale), "head": jax.tree.map(lambda g: g * scale, g_head)}
    return loss_sum * scale, grads, _unflatten_carry(config, s), P


class State(NamedTuple):
    """What continuous RTRL carries from one window to the next: the state and its sensitivities."""

    carry: Carry
    sensitivities: jax.Array  # (B, S, N)


def init_state(params: Params, config: ModelConfig, batch_size: int) -> State:
    """The zero state with zero sensitivities: where continuous training starts (and never returns to)."""
    cell, dtype = cells.of(config), params["embedding"].dtype
    carry = [cell.initial_carry((batch_size,), config.hidden_size, dtype) for _ in range(config.num_layers)]
    return State(carry, init_sensitivities(params, config, batch_size))


def step(params: Params, config: ModelConfig, state: State, tokens: jax.Array,
         targets: jax.Array) -> tuple[jax.Array, Params, State]:
    """One window of continuous RTRL: `rtrl_gradient` from `state`, returning the state to carry on with.

    Nothing is truncated: the sensitivities hold the whole history since `init_state`. If the caller updates
    the weights between windows, the carried sensitivities were accumulated under the old weights; that is the
    usual approximation of continuous RTRL (exact as the learning rate goes to zero).

    Returns:
      (loss in nats per character, grads like `params`, the new `State`).
    """
    loss, grads, carry, sensitivities = rtrl_gradient(params, config, tokens, targets, state.carry, state.sensitivities)
    return loss, grads, State(carry, sensitivities)
