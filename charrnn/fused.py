"""Fast recurrent stacks for training and evaluation: a hand-written backward pass, as cuDNN and oneDNN do it.

Same equations as `charrnn.cells` (see its docstring), same parameters, same results up to float rounding; only
the way the work is laid out differs. `run_layers` is what `model.run_layers` calls when nothing but the hidden
states is asked for (training, evaluation); the plain `cells.scan` stays the reference and serves inspection.

What is different from autodiff of `cells.scan`:

1. **The backward pass runs its own reverse scan, for the recurrent chain only.** Autodiff of a scan also
   accumulates ``dU += h_{t-1}^T da_t`` at every step, a (H, B) @ (B, G*H) product too thin to keep a CPU's
   matmul units busy, plus a loop-carried (H, G*H) accumulator. Here the reverse scan does only the truly
   sequential part::

       da_t       = (gradient reaching h_t, c_t) through the gate nonlinearities     (B, G*H)
       dh_{t-1}  += da_t[:, :R] @ U[:, :R]^T                                       (B, H)

   and after it every weight gradient is ONE large matmul over the whole window::

       dU = [h_0 .. h_{T-1}]^T @ [da_1 .. da_T]        (H, T*B) @ (T*B, G*H)

   da is also the gradient of the layer's input projection ``W x_t + b``, so dW, db and the gradient of the
   layer below come from whole-window matmuls too (for a first layer that gathers rows of a projected
   embedding table, the table's gradient is a scatter-add of da instead).

2. **Every gate goes through ONE tanh.** σ(x) = (1 + tanh(x/2)) / 2, so the whole (B, G*H) pre-activation
   block is scaled, passed through a single tanh and rescaled. On XLA:CPU that is several times faster than a
   logistic and a tanh on (B, H) slices, and the backward pass then needs no transcendental at all: the
   derivatives follow from the saved activations (σ' = σ(1 − σ), tanh' = 1 − tanh²).

3. **Layers run one at a time, in place** (`_layer`, `wavefront=False`). The layer's input projection
   ``x @ W`` is one whole-window product into a (T, B, G*H) buffer; step t reads slot t (adding b there) and
   writes what it saves over it, and the backward loop in turn writes da_t over that: no (T, B, G*H) buffer
   is filled with zeros first, as a scan's stacked outputs would be, and the bias needs no pass of its own.
   The first layer gathers its rows of the projected embedding table inside each step instead of
   materialising a gathered (T, B, G*H) copy first, and its table's gradient is a scatter-add of da.

4. **Or as a wavefront** (`_stack`, `wavefront=True`): one scan iteration computes layer l at time t − l for
   every layer at once (T + L − 1 iterations instead of L·T), and one matmul per layer,
   ``h^l @ [U_l | W_{l+1}]``, yields both layer l's recurrent term and layer l+1's input projection. The
   backward pass is the mirror image (``da^l @ [U_l | W_l]^T``). This halves the loop iterations and kernels
   of small layers, but its saved states are fresh stacked buffers; since the layer path works in place, the
   wavefront only still pays for the GRU (see `WAVEFRONT_MAX_HIDDEN`).

5. **Mixed precision, on request** (`run_layers(..., matmul_dtype="bfloat16")`): every product, forward and
   backward, rounds its operands to bfloat16 and sums in float32 (`_dot`); the gates, carries, saved values and
   gradients stay in the parameters' dtype. A CPU with native bfloat16 products (AMX) runs a training step about
   twice as fast. Two details keep XLA:CPU on those kernels: the window sums are einsums (`_outer_sum`: with a
   transposed first operand it would turn the product back into a float32 one), and the backward loop reads
   da_t back from the buffer after writing it (its cast, reading the old slab instead, would make XLA copy the
   whole buffer at every step).

Saved for the backward pass, per layer and step (all (B, ·), stacked over the scan): the hidden state h_t (it
is also the output), the cell state c_t (LSTM), the gate activations (LSTM: f, i, o, g, (B, 4H); GRU: z, r,
(B, 2H) and ĥ, (B, H)) and tanh(c_t) (LSTM), because recomputing them would repeat the transcendentals the
backward pass avoids. The states entering each step (h_{t-1}, c_{t-1}) are rebuilt from these by a shift.
Nothing else: the GRU's r ∘ h_{t-1} for dU_h is recomputed over the whole window at once. (The in-place path
also keeps the LSTM's f_t apart, see `_MATH`.)
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from . import cells

Carry = cells.Carry

# Per cell kind, layers up to this size run as a wavefront by default (see `run_layers`). Chosen from train steps
# measured side by side (benchmarks/README.md): the in-place layer-at-a-time path is faster for the RNN and the
# LSTM at every size tried; the GRU, which cannot write da over its slabs, is a little faster as a wavefront at
# 2x256.
WAVEFRONT_MAX_HIDDEN = {"rnn": 0, "lstm": 0, "gru": 256}


# --- the cells' maths, split into what the generic loops need ---------------------------------------------------


def _cast(x: jax.Array, dtype: Optional[str]) -> jax.Array:
    """`x` in the products' dtype (None: as it is)."""
    return x if dtype is None else x.astype(dtype)


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b in b's dtype, `a` cast to it, accumulated and returned in at least float32: with b in bfloat16 (the
    products' precision, see `run_layers`) the sums and everything after them stay float32."""
    return jnp.dot(a.astype(b.dtype), b, preferred_element_type=jnp.promote_types(a.dtype, jnp.float32))


class _Math(NamedTuple):
    """One cell kind, as the generic forward and backward loops use it.

    The first recurrent product of a step is ``hu = h_{t-1} @ U[:, :R]`` with R = `num_rec` * H (all gates for
    rnn and lstm; z and r for the gru, whose ĥ needs a second product after the reset gate).

    forward(U, carry, x_t, hu) -> (carry_t, saved_t)
    backward(U, dh_t, drest_t, saved_t, prev_t, carry_t) -> (da_t, dh_direct, drest_prev)
        dh_t: total gradient reaching h_t; drest_t: gradients reaching the rest of the carry (c_t);
        prev_t: the carry entering the step; da_t (B, G*H): gradient of the pre-activations;
        dh_direct: the part of dh_{t-1} that does not go through ``hu`` (None if nothing), so that
        ``dh_{t-1} = dh_direct + da_t[:, :R] @ U[:, :R]^T``; drest_prev: gradient reaching c_{t-1}.
    weight_grad(h_prev, da, saved, dtype) -> dU over the window: h_prev (T, B, H), da (T, B, G*H); products in
        `dtype` (None: the inputs' own).
    pack(carry_t, saved_t) -> (slab, extras): what a step saves, as one (B, G*H) block and the rest (a tuple of
        (B, H)); unpack(slab, extras) -> saved_t is its inverse. The layer-at-a-time path keeps the slabs in the
        buffer that held the step's projected input, so saving them needs no buffer of its own.
    overwrite: the backward pass may write da_t over slab t (the weight gradient does not read the slabs).
    """

    num_rec: int
    forward: Callable
    backward: Callable
    weight_grad: Callable
    pack: Callable
    unpack: Callable
    overwrite: bool


def _rnn_forward(U, carry, x_t, hu):
    h = jnp.tanh(x_t + hu)
    return (h,), ()


def _rnn_backward(U, dh, drest, saved, prev, carry):
    (h,) = carry
    return dh * (1.0 - h * h), None, ()


# The RNN with φ = relu or the identity: φ' follows from h_t alone too (relu' = [h_t > 0], identity' = 1).
def _relu_rnn_forward(U, carry, x_t, hu):
    return (jnp.maximum(x_t + hu, 0.0),), ()


def _relu_rnn_backward(U, dh, drest, saved, prev, carry):
    (h,) = carry
    return jnp.where(h > 0, dh, 0.0), None, ()


def _identity_rnn_forward(U, carry, x_t, hu):
    return (x_t + hu,), ()


def _identity_rnn_backward(U, dh, drest, saved, prev, carry):
    return dh, None, ()


def _lstm_forward(U, carry, x_t, hu):
    _, c = carry
    act = cells.activate_gates(x_t + hu, 3, c.shape[-1])  # f, i, o, g
    f, i, o, g = jnp.split(act, 4, axis=-1)
    c = f * c + i * g
    tc = jnp.tanh(c)
    return (o * tc, c), (act, tc)


def _lstm_backward(U, dh, drest, saved, prev, carry):
    (dc,) = drest
    act, tc, *f_apart = saved  # the in-place path passes f on its own (see `_MATH`)
    _, c_prev = prev
    f, i, o, g = jnp.split(act, 4, axis=-1)
    f = f_apart[0] if f_apart else f
    dc = dc + dh * o * (1.0 - tc * tc)
    # da = [dc c_{t-1}, dc g, dh tanh(c), dc i] ∘ (gate slopes), written as full-width products of concatenated
    # loads: XLA:CPU then emits one loop for all four gates (per-gate expressions cost four loops and a copy).
    da = jnp.concatenate([dc, dc, dh, dc], axis=-1) * jnp.concatenate([c_prev, g, tc, i], axis=-1) * _slope(act, 3, dc.shape[-1])
    return da, None, (dc * f,)


def _slope(act, num_sigmoid, H):
    """dact/da from the activations: σ' = σ(1 − σ) on the first `num_sigmoid` blocks, tanh' = 1 − tanh² after."""
    is_tanh = jnp.concatenate([jnp.zeros((num_sigmoid * H,), act.dtype),
                               jnp.ones((act.shape[-1] - num_sigmoid * H,), act.dtype)])
    return is_tanh + (1.0 - is_tanh) * act - act * act


def _gru_forward(U, carry, x_t, hu):
    (h,) = carry
    H = h.shape[-1]
    zr = cells.activate_gates(x_t[..., : 2 * H] + hu, 2, H)
    z, r = zr[..., :H], zr[..., H:]
    h_hat = jnp.tanh(x_t[..., 2 * H :] + _dot(r * h, U[:, 2 * H :]))  # reset before the product, as in cells.py
    return ((1.0 - z) * h + z * h_hat,), (zr, h_hat)


def _gru_backward(U, dh, drest, saved, prev, carry):
    zr, h_hat = saved
    (h_prev,) = prev
    H = h_prev.shape[-1]
    z, r = zr[..., :H], zr[..., H:]
    da_h = dh * z * (1.0 - h_hat * h_hat)
    d_rh = _dot(da_h, U[:, 2 * H :].T)  # gradient reaching r ∘ h_{t-1}
    da_z = dh * (h_hat - h_prev) * z * (1.0 - z)
    da_r = d_rh * h_prev * r * (1.0 - r)
    return jnp.concatenate([da_z, da_r, da_h], axis=-1), dh * (1.0 - z) + d_rh * r, ()


def _outer_sum(a, b, dtype=None):
    """sum_t a_t^T b_t over the window as one matmul, the products in `dtype` (None: the inputs' own):
    a (T, B, m), b (T, B, n) -> (m, n), in at least float32."""
    # As an einsum, not ``a.reshape(-1, m).T @ ...``: XLA:CPU turns a bfloat16 product with a transposed first
    # operand back into a float32 one, at float32's speed; this form it runs as bfloat16 (as fast in float32).
    return jnp.einsum("...m,...n->mn", _cast(a, dtype), _cast(b, dtype),
                      preferred_element_type=jnp.promote_types(a.dtype, jnp.float32))


def _rnn_weight_grad(h_prev, da, saved, dtype):
    return _outer_sum(h_prev, da, dtype)


def _gru_weight_grad(h_prev, da, saved, dtype):
    zr, _ = saved
    H = h_prev.shape[-1]
    r = zr[..., H:]
    return jnp.concatenate([_outer_sum(h_prev, da[..., : 2 * H], dtype),
                            _outer_sum(r * h_prev, da[..., 2 * H :], dtype)], axis=-1)


def _gru_unpack(slab, extras):
    H = slab.shape[-1] // 3
    return slab[..., : 2 * H], slab[..., 2 * H :]


_MATH = {
    # The RNN saves nothing but h_t, which the carries already hold; its slab (h_t again) only reserves the slot
    # that da_t is written to.
    "rnn": _Math(1, _rnn_forward, _rnn_backward, _rnn_weight_grad,
                 pack=lambda carry, saved: (carry[0], ()), unpack=lambda slab, extras: (), overwrite=True),
    "rnn-relu": _Math(1, _relu_rnn_forward, _relu_rnn_backward, _rnn_weight_grad,
                      pack=lambda carry, saved: (carry[0], ()), unpack=lambda slab, extras: (), overwrite=True),
    "rnn-identity": _Math(1, _identity_rnn_forward, _identity_rnn_backward, _rnn_weight_grad,
                          pack=lambda carry, saved: (carry[0], ()), unpack=lambda slab, extras: (), overwrite=True),
    # The LSTM keeps f_t apart as well (an extra (B, H) per step), so that every read of the slab feeds da_t:
    # XLA copies the whole buffer in every iteration where a read of it does not lead to the in-place write.
    "lstm": _Math(4, _lstm_forward, _lstm_backward, _rnn_weight_grad,
                  pack=lambda carry, saved: (saved[0], (saved[1], saved[0][..., : carry[0].shape[-1]])),
                  unpack=lambda slab, extras: (slab, *extras), overwrite=True),
    "gru": _Math(2, _gru_forward, _gru_backward, _gru_weight_grad,
                 pack=lambda carry, saved: (jnp.concatenate(saved, axis=-1), ()), unpack=_gru_unpack,
                 overwrite=False),  # dU_h needs r after the backward loop
}


# --- the wavefront: L layers in one scan, layer l at time t - l -------------------------------------------------


class _Spec(NamedTuple):
    """Static description of a stack call (hashable: it is a nondiff argument of the custom VJP)."""

    kind: str
    num_layers: int
    steps: int  # T
    unroll: int
    rate: float  # dropout rate between layers (0: none)
    matmul_dtype: Optional[str]  # the products' dtype (None: the parameters')


def _pad(a, front, back):
    """Pads the leading (time) axis with zeros, to align per-time arrays with wavefront iterations."""
    if front == 0 and back == 0:
        return a
    return jnp.pad(a, [(front, back)] + [(0, 0)] * (a.ndim - 1))


def _shift(first, rest):
    """[first, rest_0 .. rest_{K-2}]: the values entering each iteration, from the initial one and the outputs."""
    return jnp.concatenate([first[None], rest[:-1]], axis=0)


def _drop(keep, x, rate):
    """Inverted dropout exactly as `model._dropout` applies it: where(keep, x / (1 - rate), 0)."""
    return x if keep is None else jnp.where(keep, x / (1.0 - rate), 0.0)


def _valid(spec, k, layer):
    """Whether iteration k computes a real step of `layer` (time k - layer within [0, T))."""
    return (k >= layer) & (k < spec.steps + layer)


def _gathered_rows_grad(table, tokens, d_rows):
    """The gradient of a table whose rows ``table[tokens]`` were gathered: each row's gradient added to the row
    it came from. table (vocab, G*H), tokens (T, B), d_rows (T, B, G*H)."""
    return jnp.zeros_like(table).at[tokens].add(d_rows)


def _select(ok, new, old):
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _forward_scan(spec: _Spec, xp0, tokens, Us, Ws, bs, carry0, keeps, save: bool):
    """The forward wavefront. Returns the final carries and per-iteration outputs, each (K, B, ·), K = T + L - 1:
    per layer the new carry (h_t first) and, if `save`, what the backward pass needs."""
    math, L, H = _MATH[spec.kind], spec.num_layers, Us[0].shape[0]
    R = math.num_rec * H
    Us, Ws = [_cast(U, spec.matmul_dtype) for U in Us], [_cast(W, spec.matmul_dtype) for W in Ws]
    # h^l @ [U_l[:, :R] | W_{l+1}]: layer l's recurrent term and layer l+1's input in one product (without
    # dropout: with it, layer l+1 sees a masked copy of h^l, so the products are separate).
    fuse_input = spec.rate == 0.0
    cat = [jnp.concatenate([Us[l][:, :R], Ws[l]], axis=1) if fuse_input and l < L - 1 else None for l in range(L)]

    def body(carries, inp):
        k, x0, keep_k = inp
        if tokens is not None:  # x0 holds the step's ids: gather their rows of the table
            x0 = xp0[x0]
        hu, x_in = [None] * L, [x0] + [None] * (L - 1)
        for l in range(L):
            h = carries[l][0]
            if cat[l] is not None:
                prod = _dot(h, cat[l])
                hu[l], x_in[l + 1] = prod[:, :R], prod[:, R:] + bs[l]
            else:
                hu[l] = _dot(h, Us[l][:, :R])
                if l < L - 1:
                    x_in[l + 1] = _dot(_drop(keep_k[l], h, spec.rate), Ws[l]) + bs[l]
        new, outs = [], []
        for l in range(L):
            carry, saved = math.forward(Us[l], carries[l], x_in[l], hu[l])
            if L > 1:  # the wavefront's first and last L - 1 iterations leave some layers idle
                carry = _select(_valid(spec, k, l), carry, carries[l])
            new.append(carry)
            outs.append((carry, saved) if save else carry[0])
        return new, outs

    K = spec.steps + L - 1
    xs = (jnp.arange(K), _pad(xp0 if tokens is None else tokens, 0, L - 1),
          [_pad(m, l + 1, L - 2 - l) for l, m in enumerate(keeps)])
    return jax.lax.scan(body, list(carry0), xs, unroll=spec.unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _stack(spec: _Spec, xp0, tokens, Us, Ws, bs, carry0, keeps):
    """L recurrent layers over T steps. Returns (hs per layer (T, B, H), final carry per layer).

    xp0 (T, B, G*H): the first layer's projected input W_0 x_t + b_0; or, with token ids `tokens` (T, B), the
    (vocab, G*H) table of it, whose rows each step gathers (tokens None otherwise). Us: U per layer (H, G*H). Ws, bs: W and b of
    layers 1..L-1. carry0: carry per layer. keeps: dropout keep-masks (T, B, H) bool of layers 1..L-1's inputs
    (empty list without dropout).
    """
    final, hs = _forward_scan(spec, xp0, tokens, Us, Ws, bs, carry0, keeps, save=False)
    return [h[l : l + spec.steps] for l, h in enumerate(hs)], final


def _stack_fwd(spec, xp0, tokens, Us, Ws, bs, carry0, keeps):
    final, outs = _forward_scan(spec, xp0, tokens, Us, Ws, bs, carry0, keeps, save=True)
    hs = [carry[0][l : l + spec.steps] for l, (carry, _) in enumerate(outs)]
    table = None if tokens is None else xp0
    return (hs, final), (table, tokens, Us, Ws, carry0, keeps, outs)


def _stack_bwd(spec, residuals, cotangents):
    table, tokens, Us, Ws, carry0, keeps, outs = residuals
    dhs, dfinal = cotangents
    math, L, T, H = _MATH[spec.kind], spec.num_layers, spec.steps, Us[0].shape[0]
    R, dtype = math.num_rec * H, spec.matmul_dtype
    Uc, Wc = [_cast(U, dtype) for U in Us], [_cast(W, dtype) for W in Ws]
    # The carry entering each iteration (K, B, H), per layer.
    prev = [jax.tree.map(_shift, carry0[l], outs[l][0]) for l in range(L)]
    # da^l @ [U_l[:, :R] | W_l]^T: layer l's recurrent gradient and the gradient reaching layer l-1's output.
    G = Us[0].shape[1]
    cat = [None] + [jnp.concatenate([Uc[l], Wc[l - 1]], axis=0) if R == G else None for l in range(1, L)]

    def body(state, inp):
        k, dh_out, saved, prev_k, carry_k, keep_k = inp
        dh_rec, drest, dx_above = state
        new_rec, new_rest, new_above, das = [], [], [None] * L, []
        for l in range(L):
            dh = dh_rec[l] + dh_out[l] + (dx_above[l] if l < L - 1 else 0.0)
            da, dh_direct, drest_prev = math.backward(Uc[l], dh, drest[l], saved[l], prev_k[l], carry_k[l])
            if L > 1:
                ok = _valid(spec, k, l)
                da = jnp.where(ok, da, 0.0)
            if l == 0:  # the first layer's input gradient is da^0 itself (its projection is outside)
                rec, below = _dot(da[:, :R], Uc[0][:, :R].T), None
            elif cat[l] is not None:
                prod = _dot(da, cat[l].T)
                rec, below = prod[:, :H], prod[:, H:]
            else:  # gru: only z and r went through the first product, W saw all three gates
                rec, below = _dot(da[:, :R], Uc[l][:, :R].T), _dot(da, Wc[l - 1].T)
            rec = rec if dh_direct is None else rec + dh_direct
            if L > 1:
                rec, drest_prev = _select(ok, (rec, drest_prev), (dh_rec[l], drest[l]))
            if l > 0:
                new_above[l - 1] = _drop(keep_k[l - 1] if keep_k else None, below, spec.rate)
            new_rec.append(rec)
            new_rest.append(drest_prev)
            das.append(da)
        return (new_rec, new_rest, new_above[: L - 1]), das

    K = T + L - 1
    state0 = ([d[0] for d in dfinal], [tuple(d[1:]) for d in dfinal], [jnp.zeros_like(d[0]) for d in dfinal[:-1]])
    xs = (
        jnp.arange(K),
        [_pad(dhs[l], l, L - 1 - l) for l in range(L)],
        [outs[l][1] for l in range(L)],
        prev,
        [outs[l][0] for l in range(L)],
        [_pad(m, l + 1, L - 2 - l) for l, m in enumerate(keeps)],
    )
    (dh0, drest0, _), das = jax.lax.scan(body, state0, xs, reverse=True, unroll=spec.unroll)

    # Every weight gradient as one matmul over the window (the layer's real iterations l .. l+T-1).
    window = lambda a, l: jax.tree.map(lambda x: x[l : l + T], a)
    da = [window(das[l], l) for l in range(L)]
    h_prev = [window(prev[l][0], l) for l in range(L)]
    hs = [window(outs[l][0][0], l) for l in range(L)]
    dUs = [math.weight_grad(h_prev[l], da[l], window(outs[l][1], l), dtype) for l in range(L)]
    dWs = [_outer_sum(_drop(keeps[l - 1] if keeps else None, hs[l - 1], spec.rate), da[l], dtype) for l in range(1, L)]
    dbs = [da[l].sum(axis=(0, 1)) for l in range(1, L)]
    dcarry0 = [(dh0[l], *drest0[l]) for l in range(L)]
    dxp0 = da[0] if tokens is None else _gathered_rows_grad(table, tokens, da[0])
    return dxp0, None, dUs, dWs, dbs, dcarry0, [None] * len(keeps)


_stack.defvjp(_stack_fwd, _stack_bwd)


# --- one layer at a time, in place ------------------------------------------------------------------------------


class _LayerSpec(NamedTuple):
    """Static description of a `_layer` call (hashable: it is a nondiff argument of the custom VJP)."""

    kind: str
    steps: int  # T
    unroll: int
    gather: bool  # x is (T, B) token ids and W the (vocab, G*H) table of projected inputs (b unused)
    matmul_dtype: Optional[str]  # the products' dtype (None: the parameters')


def _read(buf, k):
    """buf[k]. Every use of it must lead to the value written back in the same iteration, or XLA copies the
    whole buffer first (in every iteration)."""
    return jax.lax.dynamic_index_in_dim(buf, k, keepdims=False)


def _write(buf, k, value):
    """buf with buf[k] = value, in place (a dynamic-update-slice; `.at[k].set` would be a bounds-checked scatter)."""
    return jax.lax.dynamic_update_index_in_dim(buf, value, k, 0)


def _layer_forward(spec: _LayerSpec, x, W, b, U, carry0, save: bool):
    """The forward loop of one layer. Returns the final carry, the slab buffer (T, B, G*H) if `save` (else
    None) and the per-step carries and extras (see `_Math.pack`), each (T, B, H); without `save` only h.

    The input projection x @ W is one whole-window product into a (T, B, G*H) buffer; step t reads slot t
    (adding b there, inside the step's elementwise work) and, when saving, writes its slab back into the same
    slot. A scan's stacked output would be a fresh buffer that XLA fills with zeros first; this one is
    already there. With `gather`, step t gathers its rows of the table itself, and only the slabs need a
    buffer.
    """
    math, H = _MATH[spec.kind], U.shape[0]
    R = math.num_rec * H
    if spec.gather:
        buf = jnp.zeros((spec.steps, x.shape[1], W.shape[1]), W.dtype) if save else None
    else:
        buf = _dot(x, _cast(W, spec.matmul_dtype))
    U = _cast(U, spec.matmul_dtype)  # once, before the loop
    U_rec = U[:, :R]

    def body(state, k):
        carry, buf = state
        x_t = W[x[k]] if spec.gather else _read(buf, k) + b
        new, saved = math.forward(U, carry, x_t, _dot(carry[0], U_rec))
        if not save:
            return (new, buf), new[0]
        slab, extras = math.pack(new, saved)
        return (new, _write(buf, k, slab)), (new, extras)

    (final, buf), ys = jax.lax.scan(body, (tuple(carry0), buf), jnp.arange(spec.steps), unroll=spec.unroll)
    return final, (buf if save else None), ys


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _layer(spec: _LayerSpec, x, W, b, U, carry0):
    """One recurrent layer over T steps: x (T, B, d) and W (d, G*H), b (G*H,); or, with `spec.gather`, token
    ids x (T, B) and the table W (vocab, G*H) of projected inputs (b: None). Returns (hs (T, B, H), final carry).
    """
    final, _, hs = _layer_forward(spec, x, W, b, U, carry0, save=False)
    return hs, final


def _layer_fwd(spec, x, W, b, U, carry0):
    final, buf, (carries, extras) = _layer_forward(spec, x, W, b, U, carry0, save=True)
    return (carries[0], final), (x, W, U, tuple(carry0), carries, extras, buf)


def _layer_bwd(spec, residuals, cotangents):
    x, W, U, carry0, carries, extras, buf = residuals
    dhs, dfinal = cotangents
    math, T, H = _MATH[spec.kind], spec.steps, U.shape[0]
    R, dtype = math.num_rec * H, spec.matmul_dtype
    U = _cast(U, dtype)

    # U[:, :R]^T as an array of its own: inside the loop ``da @ U^T`` would be a transposed-operand product, which
    # XLA:CPU runs markedly slower there than the plain one (benchmarks/README.md).
    U_rec_T = U[:, :R].T

    def body(state, k):
        dh_rec, drest, buf = state
        # The carry entering step k: the initial one, or what step k - 1 stored.
        prev = tuple(jnp.where(k == 0, c0, c[jnp.maximum(k - 1, 0)]) for c0, c in zip(carry0, carries))
        saved = math.unpack(_read(buf, k), tuple(e[k] for e in extras))
        da, dh_direct, drest_prev = math.backward(U, dh_rec + dhs[k], drest, saved, prev,
                                                  tuple(c[k] for c in carries))
        if math.overwrite:  # slab k is not read again: da_k takes its place
            buf = _write(buf, k, da)
            # The product reads da_k back from the buffer, after the write: computed from slab k instead, its
            # cast to bfloat16 would be a second reader of the old buffer, which XLA then copies whole, every step.
            rec = _dot(_read(buf, k)[:, :R], U_rec_T)
        else:
            rec = _dot(da[:, :R], U_rec_T)
        rec = rec if dh_direct is None else rec + dh_direct
        return (rec, drest_prev, buf), (None if math.overwrite else da)

    state0 = (dfinal[0], tuple(dfinal[1:]), buf)
    (dh0, drest0, buf), das = jax.lax.scan(body, state0, jnp.arange(T), reverse=True, unroll=spec.unroll)
    da = buf if math.overwrite else das
    dU = math.weight_grad(_shift(carry0[0], carries[0]), da, None if math.overwrite else math.unpack(buf, ()), dtype)
    if spec.gather:
        return None, _gathered_rows_grad(W, x, da), None, dU, (dh0, *drest0)
    return _dot(da, _cast(W, dtype).T), _outer_sum(x, da, dtype), da.sum(axis=(0, 1)), dU, (dh0, *drest0)


_layer.defvjp(_layer_fwd, _layer_bwd)


# --- entry point ------------------------------------------------------------------------------------------------


def dropout_masks(keys: Sequence[Optional[jax.Array]], rate: float, shape: tuple[int, ...]) -> list:
    """Dropout keep-masks, one bernoulli(key, 1 - rate, shape) per key (`model.dropout_masks` draws them per
    layer input and for the head's)."""
    if rate == 0.0 or not keys or keys[0] is None:
        return []
    return [jax.random.bernoulli(k, 1.0 - rate, shape) for k in keys]


def run_layers(
    cell: cells.Cell,
    layers: Sequence[cells.Params],
    x: jax.Array,
    carry: Sequence[Carry],
    *,
    dropout_keeps: Sequence[Optional[jax.Array]] = (),
    dropout: float = 0.0,
    wavefront: Optional[bool] = None,
    unroll: int = 1,
    tokens: Optional[jax.Array] = None,
    matmul_dtype: Optional[str] = None,
) -> tuple[list, list]:
    """Stacked recurrent layers over time, the same maths as a loop of `cells.scan` calls.

    Args:
      cell: the cell kind.
      layers: per-layer parameters ``{"W": (d, G*H), "U": (H, G*H), "b": (G*H,)}``.
      x: (T, B, d) inputs of the first layer.
      carry: per layer, the carry before step 1 (each (B, H)).
      dropout_keeps: the dropout's keep-masks (T, B, H) bool of layers 1..L-1's inputs (`dropout_masks`);
        empty, or None entries, mean no dropout.
      dropout: the dropout rate.
      wavefront: run all layers in one scan (see the module docstring); None picks by cell kind and hidden
        size (`WAVEFRONT_MAX_HIDDEN`).
      unroll: time steps per loop iteration.
      tokens: (T, B) int ids; `x` is then the (vocab, G*H) table of the first layer's projected inputs (row v:
        W_0 e_v + b_0, for the embedding e_v of id v), and each step gathers its own rows.
      matmul_dtype: the dtype of every matrix product's operands, forward and backward ("bfloat16": mixed
        precision, point 5 above); the products accumulate in float32 and everything else (the gates,
        the carries, the gradients returned) stays in the parameters' dtype. None or "float32": as they are.

    Returns:
      (final carry per layer, hidden states per layer (T, B, H)).

    Raises:
      ValueError: a layer-normalised cell (its backward pass is not written out here; `cells.scan` runs it).
    """
    if cell.layer_norm:
        raise ValueError("charrnn.fused has no layer-normalised cells; run them with cells.scan (model.run_layers "
                         "does)")
    # NumPy inputs (parameters loaded from a checkpoint, ids from a corpus) become JAX arrays here: the loops
    # index them with traced step numbers, which a NumPy array cannot take.
    x, tokens = jnp.asarray(x), None if tokens is None else jnp.asarray(tokens)
    L = len(layers)
    T, B = tokens.shape if tokens is not None else x.shape[:2]
    H = layers[0]["U"].shape[0]
    keeps = [k for k in list(dropout_keeps)[: L - 1] if k is not None]
    rate = dropout if keeps else 0.0
    if wavefront is None:
        wavefront = H <= WAVEFRONT_MAX_HIDDEN[cell.name]
    matmul_dtype = None if matmul_dtype in (None, "float32") else matmul_dtype
    carry = [tuple(c) for c in carry]
    if T == 0:  # nothing to run (e.g. sampling without a prime); the loops index their buffers, so skip them
        return carry, [jnp.zeros((0, B, H), c[0].dtype) for c in carry]
    if wavefront:
        spec = _Spec(cell.key, L, T, unroll, rate, matmul_dtype)
        xp0 = x if tokens is not None else cell.project_inputs(layers[0], x)
        Us = [p["U"] for p in layers]
        hs, final = _stack(spec, xp0, tokens, Us, [p["W"] for p in layers[1:]], [p["b"] for p in layers[1:]],
                           carry, keeps)
        return list(final), hs
    final, hs = [], []
    for l, p in enumerate(layers):
        if l == 0 and tokens is not None:
            h, c = _layer(_LayerSpec(cell.key, T, unroll, True, matmul_dtype), tokens, x, None, p["U"], carry[l])
        else:
            if l > 0:
                x = _drop(keeps[l - 1] if keeps else None, x, rate)
            h, c = _layer(_LayerSpec(cell.key, T, unroll, False, matmul_dtype), x, p["W"], p["b"], p["U"], carry[l])
        final.append(c)
        hs.append(h)
        x = h
    return final, hs
