"""Bidirectional recurrent layers: one cell reads x_1 … x_T, a second, with its own parameters, reads x_T … x_1.

For any cell kind of `charrnn.cells` (rnn, lstm, gru), with h_0 = 0 and h'_{T+1} = 0 (and c likewise)::

    forward  direction A :  h_t  = cell_A (x_t, h_{t-1})      t = 1 … T     (a lax.scan)
    backward direction A':  h'_t = cell_A'(x_t, h'_{t+1})     t = T … 1     (a lax.scan with reverse=True)

The output at step t is the pair (h_t, h'_t), both stored in time order: ``out.forward[t-1]`` is h_t, the state
of A after reading x_1 … x_t, and ``out.backward[t-1]`` is h'_t, the state of A' after reading x_T … x_t. Each is
(T, *batch, H); `concat` joins them into the (T, *batch, 2H) array a layer above (or a per-step classifier)
reads. So at every step the layer summarises the whole sequence: the past through h_t, the future through h'_t.

**Why a bidirectional layer cannot drive a left-to-right language model.** The language model of this project
predicts char_{t+1} from the output at step t. The backward direction's h'_t has read x_T … x_t, and x_{t+1}
is among them (it is h'_{t+1}'s input, and h'_t is computed from h'_{t+1}): the prediction would see the very
character it is asked to predict, the training loss would fall towards zero by copying, and nothing could be
sampled, because generating char_{t+1} would need h'_t, which needs char_{t+1}. A bidirectional read is for
tasks where the whole sequence is given before any output is wanted: tagging each position, or, here, probing
how much of a feature of the text is decidable with the future in view (see docs/bidirectional.md).

The simple RNN's activation φ is a choice (``activation="tanh" | "relu" | "identity"``, as `charrnn.cells`
offers them, or any elementwise callable); the LSTM and GRU have fixed nonlinearities and accept only tanh. `notes_rnn` takes the weights
in the lecture notes' notation, ``h_t = φ(U x_t + W h_{t-1} + b)`` (there U multiplies the input and W the
previous state, the reverse of the letters in `charrnn.cells`), with outputs ``y_t = V_A h_t + V_A' h'_t``,
which is SPEC.md's exercise.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from . import cells

Params = dict  # {"forward": cell params, "backward": cell params}
Activation = Union[str, Callable[[jax.Array], jax.Array]]

class Bidirectional(NamedTuple):
    """A bidirectional layer's per-step output and final carries.

    Attributes:
      forward: (T, *batch, H): h_t, direction A after x_1 … x_t.
      backward: (T, *batch, H): h'_t, direction A' after x_T … x_t (time order, not reading order).
      forward_carry: A's carry after x_T (the cell's carry tuple).
      backward_carry: A''s carry after x_1.
    """

    forward: jax.Array
    backward: jax.Array
    forward_carry: cells.Carry
    backward_carry: cells.Carry


def concat(out: Bidirectional) -> jax.Array:
    """The two directions side by side, (T, *batch, 2H): [h_t, h'_t] at every step."""
    return jnp.concatenate([out.forward, out.backward], axis=-1)


def cell_for(kind: str, activation: Activation = "tanh") -> cells.Cell:
    """The `charrnn.cells` cell `kind`; for the simple RNN, with the activation φ: a name of
    `cells.ACTIVATIONS` ("tanh", "relu", "identity") or any elementwise callable.

    Raises:
      ValueError: an unknown kind or activation name, or an activation other than tanh for the LSTM or GRU.
    """
    if isinstance(activation, str):
        return cells.get(kind, activation)
    if kind != "rnn":
        raise ValueError(f"the {kind.upper()} has no activation to choose; an activation is for the rnn")
    phi = activation

    def step(params: cells.Params, carry: cells.Carry, x_proj: jax.Array, edit: cells.Edit = None):
        (h,) = carry
        h = phi(x_proj + h @ params["U"])
        if edit is not None:
            h = edit("h", h)
        return (h,), {"h": h}

    return cells.get("rnn")._replace(step=step, activation="custom")


def init(key: jax.Array, kind: str, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
    """Fresh, independent parameters for the two directions (each as `cells.Cell.init` makes them)."""
    cell = cells.get(kind)
    k_fwd, k_bwd = jax.random.split(key)
    return {"forward": cell.init(k_fwd, input_size, hidden_size, dtype),
            "backward": cell.init(k_bwd, input_size, hidden_size, dtype)}


def run(
    kind: str,
    params: Params,
    xs: jax.Array,
    carry: Optional[tuple[cells.Carry, cells.Carry]] = None,
    *,
    activation: Activation = "tanh",
) -> Bidirectional:
    """Runs a bidirectional layer over a sequence.

    Args:
      kind: "rnn", "lstm" or "gru".
      params: ``{"forward": ..., "backward": ...}``, each a cell's fused parameters (see `charrnn.cells`).
      xs: inputs x_1 … x_T, (T, *batch, d), time-major.
      carry: optional (h_0 carry of A, h'_{T+1} carry of A'); zeros if omitted.
      activation: the simple RNN's φ (see `cell_for`).

    Returns:
      A `Bidirectional`: the per-step states of both directions, each (T, *batch, H), in time order.
    """
    cell = cell_for(kind, activation)
    p_fwd, p_bwd = params["forward"], params["backward"]
    H = p_fwd["U"].shape[0]
    if carry is None:
        zero = cell.initial_carry(xs.shape[1:-1], H, p_fwd["W"].dtype)
        carry = (zero, zero)

    def scanner(p, c, reverse):
        def body(c, x_proj_t):
            c, states = cell.step(p, c, x_proj_t)
            return c, states["h"]

        return jax.lax.scan(body, c, cell.project_inputs(p, xs), reverse=reverse)

    fwd_carry, hs = scanner(p_fwd, carry[0], reverse=False)
    bwd_carry, hs_back = scanner(p_bwd, carry[1], reverse=True)  # stacked in time order: hs_back[t-1] is h'_t
    return Bidirectional(hs, hs_back, fwd_carry, bwd_carry)


class NotesOutput(NamedTuple):
    """`notes_rnn`'s result: h (T, *batch, H) of A, h_back (T, *batch, H) of A' (h'_t at row t-1), y (T, *batch, k)
    or (T, *batch) when the V are vectors."""

    h: jax.Array
    h_back: jax.Array
    y: jax.Array


def notes_rnn(
    U_A: Any, W_A: Any, V_A: Any,
    U_B: Any, W_B: Any, V_B: Any,
    xs: Any,
    *,
    b_A: Any = None, b_B: Any = None,
    activation: Activation = "identity",
) -> NotesOutput:
    """A bidirectional simple RNN with weights in the lecture notes' notation, outputs summed through V.

    ``h_t = φ(U_A x_t + W_A h_{t-1} + b_A)``, ``h'_t = φ(U_B x_t + W_B h'_{t+1} + b_B)`` (B is the notes' A'),
    ``y_t = V_A h_t + V_B h'_t``. Note the letters: here U (H, d) multiplies the input and W (H, H) the previous
    state. The defaults (identity φ, no bias) are SPEC.md's exercise, "ignore all activation functions".

    Args:
      U_A, U_B: (H, d) input weights. W_A, W_B: (H, H) recurrent weights.
      V_A, V_B: (k, H) output weights, or (H,) for a scalar output per step.
      xs: x_1 … x_T, (T, d) or (T, B, d).
      b_A, b_B: optional (H,) biases (zero if omitted).
      activation: φ (default identity).

    Returns:
      A `NotesOutput` with h, h_back and y.
    """
    def fused(U, W, b):  # the notes' U is cells' W (input weights); cells store transposes for row vectors
        U = jnp.asarray(U)
        dtype = jnp.promote_types(U.dtype, jnp.float32)  # integer weights compute in float32, float64 stays
        b = jnp.zeros(U.shape[0], dtype) if b is None else jnp.asarray(b, dtype)
        return {"W": U.astype(dtype).T, "U": jnp.asarray(W, dtype).T, "b": b}

    params = {"forward": fused(U_A, W_A, b_A), "backward": fused(U_B, W_B, b_B)}
    xs = jnp.asarray(xs, params["forward"]["W"].dtype)
    out = run("rnn", params, xs, activation=activation)
    V_A, V_B = (jnp.asarray(v, xs.dtype) for v in (V_A, V_B))
    y = out.forward @ V_A.T + out.backward @ V_B.T
    return NotesOutput(out.forward, out.backward, y)
