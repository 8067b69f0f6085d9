"""The recurrent cells: vanilla RNN, LSTM and GRU, exactly these equations (column vectors, σ the logistic
sigmoid, ∘ the elementwise product, h_0 = 0 and c_0 = 0)::

    RNN   h_t = tanh(W x_t + U h_{t-1} + b)

    LSTM  f_t = σ(W_f x_t + U_f h_{t-1} + b_f)          forget gate
          i_t = σ(W_i x_t + U_i h_{t-1} + b_i)          input gate
          o_t = σ(W_o x_t + U_o h_{t-1} + b_o)          output gate
          g_t = tanh(W_c x_t + U_c h_{t-1} + b_c)       candidate
          c_t = f_t ∘ c_{t-1} + i_t ∘ g_t
          h_t = o_t ∘ tanh(c_t)

    GRU   z_t = σ(W_z x_t + U_z h_{t-1} + b_z)          update gate: near 1 overwrites, near 0 keeps
          r_t = σ(W_r x_t + U_r h_{t-1} + b_r)          reset gate
          ĥ_t = tanh(W_h x_t + U_h (r_t ∘ h_{t-1}) + b_h)   reset applied *before* the product
          h_t = (1 − z_t) ∘ h_{t-1} + z_t ∘ ĥ_t

The GRU is not PyTorch's (which resets after the product and lets z weight the old state).

With layer normalisation (an option, ``get(kind, layer_norm=True)``; `--layer-norm` in training), each gate's
pre-activation is normalised over the units before its nonlinearity, and the bias b becomes the normalised value's
shift; the LSTM's cell state is normalised too before its tanh (Ba, Kiros & Hinton 2016, with the input and
recurrent products normalised together, as TensorFlow's LayerNormBasicLSTMCell, so W x_t stays one product hoisted
out of the loop)::

    LN(a; γ, β) = γ ∘ (a − mean(a)) / sqrt(var(a) + 1e-5) + β     mean and var over the H entries of a

    RNN   h_t = tanh(LN(W x_t + U h_{t-1}; γ, b))
    LSTM  f_t = σ(LN(W_f x_t + U_f h_{t-1}; γ_f, b_f))     and i_t, o_t, g_t alike, each with its own γ, b
          c_t = f_t ∘ c_{t-1} + i_t ∘ g_t
          h_t = o_t ∘ tanh(LN(c_t; γ_s, β_s))
    GRU   z_t = σ(LN(W_z x_t + U_z h_{t-1}; γ_z, b_z))     and r_t alike
          ĥ_t = tanh(LN(W_h x_t + U_h (r_t ∘ h_{t-1}); γ_h, b_h))
          h_t = (1 − z_t) ∘ h_{t-1} + z_t ∘ ĥ_t

γ starts at 1 and β_s at 0. Normalising keeps every gate's input at unit scale whatever the weights grow to, which
lets a higher learning rate work; it costs a mean and a variance per gate per step.

Each cell is a `Cell`: a handful of pure functions over an explicit parameter dict, so `scan` (the reference
path, which inspection uses) runs any of them the same way. The fast training path, `charrnn.fused`, has each
kind's derivatives written out by hand, and is checked against this one::

    params = cell.init(key, input_size, hidden_size)
    carry = cell.initial_carry((batch,), hidden_size)     # zeros: h_0 = 0 (and c_0 = 0)
    x_proj = cell.project_inputs(params, xs)               # (T, B, G*H): W x_t + b for all t, one matmul
    carry, states = cell.step(params, carry, x_proj[t])    # one time step; states["h"] is h_t

`scan` wraps `step` in `jax.lax.scan`; `run` is the learner's entry point that takes weights named as in the
equations above.

Storage: the G gate blocks are fused and stored for row-vector batches, ``W: (d, G*H)``, ``U: (H, G*H)``,
``b: (G*H,)``, with the blocks in the order of `Cell.gates` (LSTM: f, i, o, c; GRU: z, r, h). The equations'
``W_f`` (H, d) is ``W[:, 0:H].T``. With layer normalisation, ``gain: (G*H,)`` holds the γ of every block, and the
LSTM's ``c_gain, c_bias: (H,)`` hold γ_s, β_s.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, jax.Array]
Carry = tuple[jax.Array, ...]  # (h,) for rnn and gru, (h, c) for lstm; each (*batch, H)
States = dict[str, jax.Array]  # per-step internals, e.g. {"h": ..., "c": ..., "f": ...}; each (*batch, H)
# An edit sees every named intermediate of a step as it is computed and returns what the step uses instead:
# edit(name, value) -> value. Inspection clamps units with it and probes gradients; None leaves the maths alone.
Edit = Optional[Callable[[str, jax.Array], jax.Array]]


def _no_edit(name: str, value: jax.Array) -> jax.Array:
    return value


class Cell(NamedTuple):
    """One recurrent cell kind: its gate layout and the pure functions the model needs.

    Attributes:
      name: "rnn", "lstm" or "gru".
      gates: the equations' suffixes of the fused blocks, in storage order.
      carry_names: what the carry tuple holds, in order ("h",) or ("h", "c").
      state_names: every per-step state `step` reports (hidden state, cell state, gate activations).
      step: ``(params, carry, x_proj_t, edit=None) -> (carry, states)`` with x_proj_t of shape (*batch, G*H);
        `edit` (see `Edit`) may replace any intermediate, in the order the equations compute them.
    """

    name: str
    gates: tuple[str, ...]
    carry_names: tuple[str, ...]
    state_names: tuple[str, ...]
    step: Callable[..., tuple[Carry, States]]
    activation: str = "tanh"  # the vanilla RNN's φ; the LSTM's and GRU's nonlinearities are fixed
    layer_norm: bool = False  # each gate's pre-activation (and the LSTM's cell state) normalised over the units

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    @property
    def key(self) -> str:
        """The kind, for an RNN whose φ is not tanh its activation, and "ln" for layer normalisation: "rnn",
        "rnn-relu", "lstm", "lstm-ln", ..."""
        key = self.name if self.activation == "tanh" else f"{self.name}-{self.activation}"
        return f"{key}-ln" if self.layer_norm else key

    def init(self, key: jax.Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
        """Fresh parameters: Glorot-uniform input weights, orthogonal recurrent weights per gate block.

        Biases are zero except where a bias towards remembering helps long-range learning: the LSTM forget
        gate starts at +1 (Jozefowicz et al. 2015) and the GRU update gate at -1 (in this GRU, z near 0
        keeps the old state). With layer normalisation, the gains γ start at 1 and the LSTM's β_s at 0.
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
        params = {"W": W, "U": U, "b": b}
        if self.layer_norm:
            params["gain"] = jnp.ones((G * H,), dtype)
            if self.name == "lstm":
                params["c_gain"], params["c_bias"] = jnp.ones((H,), dtype), jnp.zeros((H,), dtype)
        return params

    def vector_size(self, hidden_size: int) -> int:
        """Scalars in one layer's vectors, as `init` makes them: the biases b (G*H), and with layer normalisation
        the gains γ (G*H) and the LSTM's γ_s, β_s (H each)."""
        G, H = self.num_gates, hidden_size
        if not self.layer_norm:
            return G * H
        return 2 * G * H + (2 * H if self.name == "lstm" else 0)

    def initial_carry(self, batch_shape: tuple[int, ...], hidden_size: int, dtype=jnp.float32) -> Carry:
        """The zero state h_0 = 0 (and c_0 = 0), each of shape (*batch_shape, hidden_size)."""
        return tuple(jnp.zeros((*batch_shape, hidden_size), dtype) for _ in self.carry_names)

    def project_inputs(self, params: Params, xs: jax.Array) -> jax.Array:
        """``W x_t + b`` for every step at once: (..., d) -> (..., G*H); with layer normalisation ``W x_t``
        alone (b is added after the normalisation, in `step`).

        Hoisting the input projection out of the time loop turns T small matmuls into one large one; only
        the recurrent product U h_{t-1} stays inside the scan.
        """
        return xs @ params["W"] if self.layer_norm else xs @ params["W"] + params["b"]


# The vanilla RNN's activation φ in h_t = φ(W x_t + U h_{t-1} + b), as Keras' SimpleRNN offers it (tanh the default).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "identity": lambda a: a,
}


LAYER_NORM_EPSILON = 1e-5


def normalize(a: jax.Array, gain: jax.Array, shift: jax.Array, blocks: int = 1, axis: int = -1) -> jax.Array:
    """LN(a; γ, β) of each of the `blocks` equal blocks of a's `axis` on its own: (..., blocks*H) -> same.

    Each block is centred and scaled to unit variance over its H entries (variance over H, not H − 1), then
    multiplied by its slice of `gain` (γ) and shifted by its slice of `shift` (β), both (blocks*H,) for the last
    axis; for another axis, shaped to broadcast along it ((blocks*H, 1) for the first of (blocks*H, B) columns,
    as `charrnn.columns` keeps them)."""
    axis = axis % a.ndim
    split = a.reshape(*a.shape[:axis], blocks, a.shape[axis] // blocks, *a.shape[axis + 1 :])
    mean = split.mean(axis=axis + 1, keepdims=True)
    var = jnp.square(split - mean).mean(axis=axis + 1, keepdims=True)
    normed = ((split - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPSILON)).reshape(a.shape)
    return normed * gain + shift


def activate_gates(a: jax.Array, num_sigmoid: int, hidden_size: int, axis: int = -1) -> jax.Array:
    """σ on the first `num_sigmoid` gate blocks of a's `axis` (of G*H entries), tanh on the rest, through one tanh
    call: σ(x) = (1 + tanh(x/2)) / 2. On XLA:CPU one loop over the whole block is several times faster than a
    logistic and a tanh on each gate's slice; the fast paths (`charrnn.fused`, `charrnn.columns`) use it."""
    H = hidden_size
    num_tanh = a.shape[axis] // H - num_sigmoid
    half = jnp.concatenate([jnp.full((num_sigmoid * H,), 0.5, a.dtype), jnp.ones((num_tanh * H,), a.dtype)])
    half = half.reshape(-1, *(1,) * (a.ndim - 1 - axis % a.ndim))  # along `axis`, broadcast over the axes after it
    return jnp.tanh(a * half) * half + (1.0 - half)


def _preactivation(params: Params, a: jax.Array, block: slice, blocks: int, layer_norm: bool) -> jax.Array:
    """The pre-activation of the gate blocks `block` of the fused storage, from ``a = W x_t (+ b) + U h``: as is
    (b is already in), or normalised block by block with b as the shift."""
    if not layer_norm:
        return a
    return normalize(a, params["gain"][block], params["b"][block], blocks)


def _rnn_step_with(activation: str, layer_norm: bool = False) -> Callable[..., tuple[Carry, States]]:
    phi = ACTIVATIONS[activation]

    def rnn_step(params: Params, carry: Carry, x_proj: jax.Array, edit: Edit = None) -> tuple[Carry, States]:
        edit = edit or _no_edit
        (h,) = carry
        h = edit("h", phi(_preactivation(params, x_proj + h @ params["U"], slice(None), 1, layer_norm)))
        return (h,), {"h": h}

    return rnn_step


def _lstm_step_with(layer_norm: bool) -> Callable[..., tuple[Carry, States]]:
    def lstm_step(params: Params, carry: Carry, x_proj: jax.Array, edit: Edit = None) -> tuple[Carry, States]:
        edit = edit or _no_edit
        h, c = carry
        a = _preactivation(params, x_proj + h @ params["U"], slice(None), 4, layer_norm)
        f, i, o, g = jnp.split(a, 4, axis=-1)
        f, i, o = edit("f", jax.nn.sigmoid(f)), edit("i", jax.nn.sigmoid(i)), edit("o", jax.nn.sigmoid(o))
        g = edit("g", jnp.tanh(g))
        c = edit("c", f * c + i * g)
        c_out = normalize(c, params["c_gain"], params["c_bias"]) if layer_norm else c
        h = edit("h", o * jnp.tanh(c_out))
        return (h, c), {"h": h, "c": c, "f": f, "i": i, "o": o, "g": g}

    return lstm_step


def _gru_step_with(layer_norm: bool) -> Callable[..., tuple[Carry, States]]:
    def gru_step(params: Params, carry: Carry, x_proj: jax.Array, edit: Edit = None) -> tuple[Carry, States]:
        edit = edit or _no_edit
        (h,) = carry
        H = h.shape[-1]
        U = params["U"]
        zr = _preactivation(params, x_proj[..., : 2 * H] + h @ U[:, : 2 * H], slice(0, 2 * H), 2, layer_norm)
        z = edit("z", jax.nn.sigmoid(zr[..., :H]))
        r = edit("r", jax.nn.sigmoid(zr[..., H:]))
        # The reset gate multiplies h_{t-1} *before* the matrix product (not PyTorch's convention).
        candidate = _preactivation(params, x_proj[..., 2 * H :] + (r * h) @ U[:, 2 * H :], slice(2 * H, None), 1,
                                   layer_norm)
        h_hat = edit("h_hat", jnp.tanh(candidate))
        h = edit("h", (1.0 - z) * h + z * h_hat)
        return (h,), {"h": h, "z": z, "r": r, "h_hat": h_hat}

    return gru_step


RNN = Cell("rnn", ("",), ("h",), ("h",), _rnn_step_with("tanh"))
LSTM = Cell("lstm", ("f", "i", "o", "c"), ("h", "c"), ("h", "c", "f", "i", "o", "g"), _lstm_step_with(False))
GRU = Cell("gru", ("z", "r", "h"), ("h",), ("h", "z", "r", "h_hat"), _gru_step_with(False))
CELLS: dict[str, Cell] = {cell.name: cell for cell in (RNN, LSTM, GRU)}
RNNS: dict[str, Cell] = {a: RNN._replace(step=_rnn_step_with(a), activation=a) if a != "tanh" else RNN
                         for a in ACTIVATIONS}
# The same cells with layer normalisation, made once so that each is one object (jit sees the same function).
NORMALIZED: dict[tuple[str, str], Cell] = {
    **{("rnn", a): RNNS[a]._replace(step=_rnn_step_with(a, True), layer_norm=True) for a in ACTIVATIONS},
    ("lstm", "tanh"): LSTM._replace(step=_lstm_step_with(True), layer_norm=True),
    ("gru", "tanh"): GRU._replace(step=_gru_step_with(True), layer_norm=True),
}


def get(kind: str, activation: str = "tanh", layer_norm: bool = False) -> Cell:
    """The cell called `kind` ("rnn", "lstm" or "gru"); for the RNN, with the activation φ called `activation`
    ("tanh", "relu" or "identity"); with `layer_norm`, its layer-normalised form (the module's docstring).

    Raises:
      ValueError: an unknown kind or activation, or an activation other than tanh for the LSTM or GRU.
    """
    if kind not in CELLS:
        raise ValueError(f"unknown cell {kind!r}: choose one of {', '.join(CELLS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    if kind != "rnn" and activation != "tanh":
        raise ValueError(f"the {kind.upper()} has no activation to choose (its gates' nonlinearities are part of "
                         f"its equations); --activation is for --cell rnn")
    if layer_norm:
        return NORMALIZED[kind, activation]
    return RNNS[activation] if kind == "rnn" else CELLS[kind]


def of(config: Any) -> Cell:
    """The cell a `charrnn.config.ModelConfig` describes: its kind, activation and layer normalisation."""
    return get(config.cell, config.activation, config.layer_norm)


def scan(
    cell: Cell,
    params: Params,
    x_proj: jax.Array,
    carry: Carry,
    outputs: tuple[str, ...] = ("h",),
    unroll: int = 1,
    edit: Optional[Callable[[str, jax.Array, Any], jax.Array]] = None,
    edit_inputs: Any = None,
) -> tuple[Carry, States]:
    """Runs `cell` over time with `jax.lax.scan`.

    Args:
      cell: the cell.
      params: its parameters.
      x_proj: (T, *batch, G*H) projected inputs from `Cell.project_inputs`.
      carry: the state before step 1, each (*batch, H).
      outputs: which per-step states to stack over time (see `Cell.state_names`).
      unroll: time steps per loop iteration (a speed knob; results are identical).
      edit: optional ``edit(name, value, edit_input_t) -> value`` applied inside every step (see `Edit`).
      edit_inputs: optional pytree of per-step inputs for `edit`, each with leading axis T.

    Returns:
      The final carry and a dict of the requested states, each (T, *batch, H).
    """

    def body(carry, xs):
        x_t, e_t = xs
        step_edit = None if edit is None else (lambda name, value: edit(name, value, e_t))
        carry, states = cell.step(params, carry, x_t, step_edit)
        return carry, {name: states[name] for name in outputs}

    return jax.lax.scan(body, carry, (x_proj, edit_inputs), unroll=unroll)


# --- equation names <-> fused storage -------------------------------------------------------------------------


def spec_names(kind: str) -> tuple[str, ...]:
    """Weight names the equations use for `kind`, e.g. ("W", "U", "b") for rnn, ("W_f", "U_f", "b_f", ...) for lstm."""
    cell = get(kind)
    return tuple(f"{m}_{g}" if g else m for g in cell.gates for m in ("W", "U", "b"))


def from_spec(kind: str, weights: Mapping[str, Any]) -> Params:
    """Fused parameters from weights named as in the equations: W_* (H, d), U_* (H, H), b_* (H,)."""
    cell = get(kind)
    missing = [n for n in spec_names(kind) if n not in weights]
    if missing:
        raise ValueError(f"{kind} weights are missing {', '.join(missing)} (expected: {', '.join(spec_names(kind))})")
    suffix = [f"_{g}" if g else "" for g in cell.gates]

    def floating(name):  # integer weights (as in hand-worked examples) compute in float32, float64 stays float64
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
    """Weights named as in the equations (W_* (H, d), U_* (H, H), b_* (H,)) from fused parameters."""
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
    """Runs a cell over a sequence, with weights named as in the equations. For learning and checking by hand.

    Args:
      kind: "rnn", "lstm" or "gru".
      weights: arrays named as in the equations: rnn ``W, U, b``; lstm ``W_f, U_f, b_f, W_i, U_i, b_i, W_o, U_o,
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
