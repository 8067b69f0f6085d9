"""The recurrent cells of SPEC.md: vanilla RNN, LSTM and GRU.

Each cell is a `Cell`: a handful of pure functions over an explicit parameter dict, so the model scans any of
them the same way and never branches on the kind::

    params = cell.init(key, input_size, hidden_size)
    carry = cell.initial_carry((batch,), hidden_size)     # zeros: h_0 = 0 (and c_0 = 0)
    x_proj = cell.project_inputs(params, xs)               # (T, B, G*H): W x_t + b for all t, one matmul
    carry, states = cell.step(params, carry, x_proj[t])    # one time step; states["h"] is h_t

`scan` wraps `step` in `jax.lax.scan`; `run` is the learner's entry point that takes weights named as in
SPEC.md.

Storage: the G gate blocks are fused and stored for row-vector batches, ``W: (d, G*H)``, ``U: (H, G*H)``,
``b: (G*H,)``, with the blocks in the order of `Cell.gates` (LSTM: f, i, o, c; GRU: z, r, h). SPEC.md's
``W_f`` (H, d) is ``W[:, 0:H].T``. The maths is exactly SPEC.md's.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, jax.Array]
Carry = tuple[jax.Array, ...]  # (h,) for rnn and gru, (h, c) for lstm; each (*batch, H)
States = dict[str, jax.Array]  # per-step internals, e.g. {"h": ..., "c": ..., "f": ...}; each (*batch, H)


class Cell(NamedTuple):
    """One recurrent cell kind: its gate layout and the pure functions the model needs.

    Attributes:
      name: "rnn", "lstm" or "gru".
      gates: SPEC.md suffixes of the fused blocks, in storage order.
      carry_names: what the carry tuple holds, in order ("h",) or ("h", "c").
      state_names: every per-step state `step` reports (hidden state, cell state, gate activations).
      step: ``(params, carry, x_proj_t) -> (carry, states)`` with x_proj_t of shape (*batch, G*H).
    """

    name: str
    gates: tuple[str, ...]
    carry_names: tuple[str, ...]
    state_names: tuple[str, ...]
    step: Callable[[Params, Carry, jax.Array], tuple[Carry, States]]

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def init(self, key: jax.Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
        """Fresh parameters: Glorot-uniform input weights, orthogonal recurrent weights per gate block.

        Biases are zero except where a bias towards remembering helps long-range learning: the LSTM forget
        gate starts at +1 (Jozefowicz et al. 2015) and the GRU update gate at -1 (in SPEC.md's GRU, z near 0
        keeps the old state).
        """
        k_w, k_u = jax.random.split(key)
        G, H = self.num_gates, hidden_size
        limit = np.sqrt(6.0 / (input_size + H))
        W = jax.random.uniform(k_w, (input_size, G * H), dtype, -limit, limit)
        orthogonal = jax.nn.initializers.orthogonal()
        U = jnp.concatenate([orthogonal(k, (H, H), dtype) for k in jax.random.split(k_u, G)], axis=1)
        b = jnp.zeros((G * H,), dtype)
        if self.name == "lstm":
            b = b.at[0:H].set(1.0)
        elif self.name == "gru":
            b = b.at[0:H].set(-1.0)
        return {"W": W, "U": U, "b": b}

    def initial_carry(self, batch_shape: tuple[int, ...], hidden_size: int, dtype=jnp.float32) -> Carry:
        """The zero state h_0 = 0 (and c_0 = 0), each of shape (*batch_shape, hidden_size)."""
        return tuple(jnp.zeros((*batch_shape, hidden_size), dtype) for _ in self.carry_names)

    def project_inputs(self, params: Params, xs: jax.Array) -> jax.Array:
        """``W x_t + b`` for every step at once: (..., d) -> (..., G*H).

        Hoisting the input projection out of the time loop turns T small matmuls into one large one; only
        the recurrent product U h_{t-1} stays inside the scan.
        """
        return xs @ params["W"] + params["b"]


def _rnn_step(params: Params, carry: Carry, x_proj: jax.Array) -> tuple[Carry, States]:
    (h,) = carry
    h = jnp.tanh(x_proj + h @ params["U"])
    return (h,), {"h": h}


def _lstm_step(params: Params, carry: Carry, x_proj: jax.Array) -> tuple[Carry, States]:
    h, c = carry
    f, i, o, g = jnp.split(x_proj + h @ params["U"], 4, axis=-1)
    f, i, o, g = jax.nn.sigmoid(f), jax.nn.sigmoid(i), jax.nn.sigmoid(o), jnp.tanh(g)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), {"h": h, "c": c, "f": f, "i": i, "o": o, "g": g}


def _gru_step(params: Params, carry: Carry, x_proj: jax.Array) -> tuple[Carry, States]:
    (h,) = carry
    H = h.shape[-1]
    U = params["U"]
    xz, xr, xh = jnp.split(x_proj, 3, axis=-1)
    zr = h @ U[:, : 2 * H]
    z = jax.nn.sigmoid(xz + zr[..., :H])
    r = jax.nn.sigmoid(xr + zr[..., H:])
    # SPEC.md: the reset gate multiplies h_{t-1} *before* the matrix product (not PyTorch's convention).
    h_hat = jnp.tanh(xh + (r * h) @ U[:, 2 * H :])
    h = (1.0 - z) * h + z * h_hat
    return (h,), {"h": h, "z": z, "r": r, "h_hat": h_hat}


RNN = Cell("rnn", ("",), ("h",), ("h",), _rnn_step)
LSTM = Cell("lstm", ("f", "i", "o", "c"), ("h", "c"), ("h", "c", "f", "i", "o", "g"), _lstm_step)
GRU = Cell("gru", ("z", "r", "h"), ("h",), ("h", "z", "r", "h_hat"), _gru_step)
CELLS: dict[str, Cell] = {cell.name: cell for cell in (RNN, LSTM, GRU)}


def get(kind: str) -> Cell:
    """The cell called `kind` ("rnn", "lstm" or "gru")."""
    try:
        return CELLS[kind]
    except KeyError:
        raise ValueError(f"unknown cell {kind!r}: choose one of {', '.join(CELLS)}") from None


def scan(
    cell: Cell,
    params: Params,
    x_proj: jax.Array,
    carry: Carry,
    outputs: tuple[str, ...] = ("h",),
    unroll: int = 1,
) -> tuple[Carry, States]:
    """Runs `cell` over time with `jax.lax.scan`.

    Args:
      cell: the cell.
      params: its parameters.
      x_proj: (T, *batch, G*H) projected inputs from `Cell.project_inputs`.
      carry: the state before step 1, each (*batch, H).
      outputs: which per-step states to stack over time (see `Cell.state_names`).
      unroll: time steps per loop iteration (a speed knob; results are identical).

    Returns:
      The final carry and a dict of the requested states, each (T, *batch, H).
    """

    def body(carry, x_t):
        carry, states = cell.step(params, carry, x_t)
        return carry, {name: states[name] for name in outputs}

    return jax.lax.scan(body, carry, x_proj, unroll=unroll)


# --- SPEC.md names <-> fused storage -------------------------------------------------------------------------


def spec_names(kind: str) -> tuple[str, ...]:
    """Weight names SPEC.md uses for `kind`, e.g. ("W", "U", "b") for rnn, ("W_f", "U_f", "b_f", ...) for lstm."""
    cell = get(kind)
    return tuple(f"{m}_{g}" if g else m for g in cell.gates for m in ("W", "U", "b"))


def from_spec(kind: str, weights: Mapping[str, Any]) -> Params:
    """Fused parameters from SPEC.md-named weights: W_* (H, d), U_* (H, H), b_* (H,)."""
    cell = get(kind)
    missing = [n for n in spec_names(kind) if n not in weights]
    if missing:
        raise ValueError(f"{kind} weights are missing {', '.join(missing)} (SPEC.md names: {', '.join(spec_names(kind))})")
    suffix = [f"_{g}" if g else "" for g in cell.gates]

    def floating(name):  # integer weights (as in SPEC.md's examples) compute in float32, float64 stays float64
        a = jnp.asarray(weights[name])
        return a.astype(jnp.promote_types(a.dtype, jnp.float32))

    W = jnp.concatenate([floating(f"W{s}").T for s in suffix], axis=1)
    U = jnp.concatenate([floating(f"U{s}").T for s in suffix], axis=1)
    b = jnp.concatenate([floating(f"b{s}") for s in suffix])
    H = b.shape[0] // cell.num_gates
    if W.shape[1] != cell.num_gates * H or U.shape != (H, cell.num_gates * H):
        raise ValueError(f"{kind} weights have inconsistent shapes: expected W_* (H, d), U_* (H, H), b_* (H,)")
    return {"W": W, "U": U, "b": b}


def to_spec(kind: str, params: Params) -> dict[str, np.ndarray]:
    """SPEC.md-named weights (W_* (H, d), U_* (H, H), b_* (H,)) from fused parameters."""
    cell = get(kind)
    H = params["U"].shape[0]
    out = {}
    for k, g in enumerate(cell.gates):
        s = f"_{g}" if g else ""
        block = slice(k * H, (k + 1) * H)
        out[f"W{s}"] = np.asarray(params["W"][:, block]).T
        out[f"U{s}"] = np.asarray(params["U"][:, block]).T
        out[f"b{s}"] = np.asarray(params["b"][block])
    return out


def run(kind: str, weights: Mapping[str, Any], xs: Any, h0: Any = None) -> jax.Array:
    """Runs a cell over a sequence, with weights named as in SPEC.md. For learning and checking by hand.

    Args:
      kind: "rnn", "lstm" or "gru".
      weights: arrays named as in SPEC.md: rnn ``W, U, b``; lstm ``W_f, U_f, b_f, W_i, U_i, b_i, W_o, U_o,
        b_o, W_c, U_c, b_c``; gru ``W_z, U_z, b_z, W_r, U_r, b_r, W_h, U_h, b_h``. W_* is (H, d), U_* is
        (H, H), b_* is (H,).
      xs: inputs x_1..x_T, shape (T, d) or (T, B, d).
      h0: initial state (H,) or (B, H); zero if omitted. For the LSTM it may be a pair (h0, c0); a single
        array sets h0 and leaves c0 = 0.

    Returns:
      The hidden states h_1..h_T, shape (T, H) or (T, B, H), in the dtype of the weights.
    """
    cell = get(kind)
    params = from_spec(kind, weights)
    xs = jnp.asarray(xs, params["W"].dtype)
    if xs.ndim not in (2, 3):
        raise ValueError(f"xs must be (T, d) or (T, B, d), got shape {xs.shape}")
    H = params["U"].shape[0]
    carry = cell.initial_carry(xs.shape[1:-1], H, params["W"].dtype)
    if h0 is not None:
        given = tuple(h0) if isinstance(h0, (tuple, list)) else (h0,)
        carry = tuple(jnp.broadcast_to(jnp.asarray(v, c.dtype), c.shape) for v, c in zip(given, carry)) + carry[len(given) :]
    _, states = scan(cell, params, cell.project_inputs(params, xs), carry)
    return states["h"]
