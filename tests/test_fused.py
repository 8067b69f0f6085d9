"""The fast recurrent stacks of `charrnn.fused` compute what the plain `cells.scan` path computes.

Values and gradients (of the parameters, the inputs and the initial carry, with cotangents on every layer's
hidden states and on the final carry) are compared in float64 at 1e-12, for all three cells, one and several
layers, with and without dropout between layers (the same masks), the wavefront on and off. Two independent
references back the comparison: a plain NumPy loop over the equations (values) and central finite
differences (gradients), so the fused path is not only checked against other JAX code.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from charrnn import cells, fused, model
from charrnn.config import ConfigError, ModelConfig
from conftest import fast_first

KINDS = ["rnn", "lstm", "gru"]
T, B, D, H = 7, 3, 4, 5  # T odd: the unroll=2 case has a remainder step
RATE = 0.3


def make_inputs(kind, num_layers, seed=0):
    """Random float64 layers (non-zero biases), inputs (T, B, D) and a nonzero initial carry, from NumPy (eager
    jax.random calls would each compile). Call inside enable_x64."""
    G, C = cells.get(kind).num_gates, len(cells.get(kind).carry_names)
    rng = np.random.default_rng(seed)
    normal = lambda scale, *shape: jnp.asarray(scale * rng.normal(size=shape))
    layers = [{"W": normal((D if l == 0 else H) ** -0.5, D if l == 0 else H, G * H), "U": normal(H ** -0.5, H, G * H),
               "b": normal(0.3, G * H)} for l in range(num_layers)]
    carry = [tuple(normal(0.5, B, H) for _ in range(C)) for _ in range(num_layers)]
    return layers, normal(1.0, T, B, D), carry


def plain_stack(kind, layers, x, carry, masks, rate):
    """The reference: one `cells.scan` per layer, dropout (the given keep-masks) on layers 1.. inputs."""
    cell = cells.get(kind)
    final, hs = [], []
    for l, p in enumerate(layers):
        if l > 0 and masks:
            x = jnp.where(masks[l - 1], x / (1.0 - rate), 0.0)
        c, states = cells.scan(cell, p, cell.project_inputs(p, x), carry[l])
        final.append(c)
        hs.append(states["h"])
        x = states["h"]
    return final, hs


def dropout_keys(num_layers, rate):
    return list(jax.random.split(jax.random.key(7), num_layers - 1)) if rate and num_layers > 1 else []


# (num_layers, dropout, wavefront, unroll). Wavefront and dropout change something only with several layers;
# without dropout the wavefront fuses each layer's recurrent product with the next layer's input projection.
CASES = [(1, 0.0, False, 1), (3, 0.0, True, 1), (3, RATE, True, 1), (2, RATE, False, 2)]


def outputs_and_vjp(run, args, cotangents):
    """run(*args) and its VJP with `cotangents`, in one compiled program (one compile per path)."""
    return jax.jit(lambda args, cot: (lambda out, vjp: (out, vjp(cot)))(*jax.vjp(run, *args)))(args, cotangents)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers,rate,wavefront,unroll", fast_first(CASES))
def test_values_and_gradients_match_plain_scan(kind, num_layers, rate, wavefront, unroll):
    with jax.enable_x64(True):
        layers, x, carry = make_inputs(kind, num_layers)
        keys = dropout_keys(num_layers, rate)
        masks = fused.dropout_masks(keys, rate, (T, B, H))
        assert len(masks) == (num_layers - 1 if rate else 0)

        def run_fused(layers, x, carry):
            return fused.run_layers(cells.get(kind), layers, x, carry, dropout_keeps=masks, dropout=rate,
                                    wavefront=wavefront, unroll=unroll)

        def run_plain(layers, x, carry):
            return plain_stack(kind, layers, x, carry, masks, rate)

        # Random cotangents on every output: each layer's hidden states and each layer's final carry.
        shapes = jax.eval_shape(run_plain, layers, x, carry)
        rng = np.random.default_rng(1)
        cot = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape)), shapes)
        got, g_fused = outputs_and_vjp(run_fused, (layers, x, carry), cot)
        want, g_plain = outputs_and_vjp(run_plain, (layers, x, carry), cot)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.dtype == jnp.float64
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        # Gradients of every layer's W, U, b, of the inputs and of the initial carry.
        assert jax.tree.structure(g_fused) == jax.tree.structure(g_plain)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_fused), jax.tree.leaves(g_plain)):
            assert float(jnp.abs(b).max()) > 0.0, path  # every gradient is exercised
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("kind,wavefront", [("lstm", False), ("gru", True)])
def test_numpy_parameters_and_ids_run_eagerly(kind, wavefront, monkeypatch):
    """As `model.forward` is called outside jit on a loaded checkpoint: NumPy parameters and NumPy token ids
    (the first layer's table is then a NumPy array that the loop indexes with traced step numbers)."""
    monkeypatch.setitem(fused.WAVEFRONT_MAX_HIDDEN, kind, H if wavefront else 0)
    config = ModelConfig(vocab_size=9, cell=kind, hidden_size=H, num_layers=2, embedding_size=D)
    rng = np.random.default_rng(11)
    params = jax.tree.map(np.asarray, random_like(model_shapes(config), rng, jnp.float32))
    ids = rng.integers(0, 9, (B, T)).astype(np.int32)
    carry = model.initial_carry(config, B)
    got, _ = model.forward(params, config, ids, carry)
    want, _ = model.forward(params, config, ids, carry, fast=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,wavefront", [("lstm", False), ("gru", True)])
def test_an_empty_window_leaves_the_carry_alone(kind, wavefront):
    """T = 0 (sampling without a prime runs the model over no characters): no step, the carry comes back as it
    went in, and each layer's hidden states are an empty (0, B, H) array, as with the plain path."""
    layers, x, carry = make_inputs(kind, 2)
    final, hs = fused.run_layers(cells.get(kind), layers, x[:0], carry, wavefront=wavefront)
    want_final, want_hs = plain_stack(kind, layers, x[:0], carry, [], 0.0)
    for a, b in zip(jax.tree.leaves((final, hs)), jax.tree.leaves((want_final, want_hs))):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind,wavefront", fast_first([("lstm", False), ("gru", True), ("lstm", True), ("rnn", False),
                                                      ("gru", False)], keep=2))
def test_model_loss_and_gradients_match_with_dropout(kind, wavefront, monkeypatch):
    """Through the model, as training calls it: the fused path draws exactly `model._dropout`'s masks, and each
    step gathers its first-layer inputs from the projected embedding table (vocab 9 < T*B), in the wavefront
    and in the layer-at-a-time path (which writes what it saves over its input buffer)."""
    monkeypatch.setitem(fused.WAVEFRONT_MAX_HIDDEN, kind, H if wavefront else 0)
    config = ModelConfig(vocab_size=9, cell=kind, hidden_size=H, num_layers=2, embedding_size=D, dropout=RATE)
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        params = random_like(model_shapes(config), rng, jnp.float64)
        inputs, targets = (jnp.asarray(rng.integers(0, 9, (B, T)), jnp.int32) for _ in range(2))
        carry = random_like(jax.eval_shape(lambda: model.initial_carry(config, B)), rng, jnp.float64)

        def value_and_grads(fast):
            def loss(params, carry):  # the final carry enters the loss too, so its cotangent is not zero
                value, new_carry = model.loss(params, config, inputs, targets, carry, dropout_key=jax.random.key(5),
                                              fast=fast)
                return value + 0.1 * sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(new_carry))

            return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, carry)

        (v_fused, g_fused), (v_plain, g_plain) = value_and_grads(True), value_and_grads(False)
        np.testing.assert_allclose(v_fused, v_plain, rtol=1e-13)
        for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_plain)):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def model_shapes(config):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), config))


def random_like(shapes, rng, dtype):
    """Normal values of scale 1/sqrt(fan-in) (0.5 for vectors) in the shapes of a pytree of ShapeDtypeStructs."""
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * (s.shape[0] ** -0.5 if len(s.shape) > 1
                                                                            else 0.5), dtype), shapes)


# --- independent references: the equations in NumPy, and finite differences ----------------------------------


def numpy_stack(kind, layers, x, carry, masks, rate):
    """The equations of charrnn/cells.py, one step and one layer at a time, in float64 NumPy."""
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))
    x = np.asarray(x)
    final, hs = [], []
    for l, p in enumerate(layers):
        W, U, b = (np.asarray(p[k]) for k in ("W", "U", "b"))
        if l > 0 and masks:
            x = np.where(np.asarray(masks[l - 1]), x / (1.0 - rate), 0.0)
        h = np.asarray(carry[l][0])
        c = np.asarray(carry[l][1]) if kind == "lstm" else None
        out = []
        for x_t in x:
            a = x_t @ W + b
            if kind == "rnn":
                h = np.tanh(a + h @ U)
            elif kind == "lstm":
                a = a + h @ U
                f, i, o, g = sig(a[:, :H]), sig(a[:, H:2 * H]), sig(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
                c = f * c + i * g
                h = o * np.tanh(c)
            else:
                z = sig(a[:, :H] + h @ U[:, :H])
                r = sig(a[:, H:2 * H] + h @ U[:, H:2 * H])
                h_hat = np.tanh(a[:, 2 * H:] + (r * h) @ U[:, 2 * H:])
                h = (1.0 - z) * h + z * h_hat
            out.append(h)
        final.append((h, c) if kind == "lstm" else (h,))
        hs.append(np.stack(out))
        x = hs[-1]
    return final, hs


@pytest.mark.parametrize("kind,wavefront", fast_first([("lstm", False), ("gru", True), ("rnn", True), ("lstm", True)], keep=2))
def test_values_match_numpy_equations(kind, wavefront):
    with jax.enable_x64(True):
        layers, x, carry = make_inputs(kind, 3, seed=4)
        masks = fused.dropout_masks(dropout_keys(3, RATE), RATE, (T, B, H))
        final, hs = jax.jit(lambda layers, x, carry: fused.run_layers(
            cells.get(kind), layers, x, carry, dropout_keeps=masks, dropout=RATE, wavefront=wavefront))(layers, x, carry)
        want_final, want_hs = numpy_stack(kind, layers, x, carry, masks, RATE)
        for a, b in zip(jax.tree.leaves((final, hs)), jax.tree.leaves((want_final, want_hs))):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["lstm", "gru"])  # the two with hand-written gate derivatives beyond tanh'
def test_gradients_match_finite_differences(kind):
    """The hand-written backward pass against central differences of its own forward pass, all inputs at once."""
    with jax.enable_x64(True):
        layers, x, carry = make_inputs(kind, 2, seed=5)
        masks = fused.dropout_masks(dropout_keys(2, RATE), RATE, (T, B, H))
        rng = np.random.default_rng(6)
        weights = [jnp.asarray(rng.normal(size=s)) for s in [(2, T, B, H), (2, B, H)]]

        def objective(args):
            layers, x, carry = args
            final, hs = fused.run_layers(cells.get(kind), layers, x, carry, dropout_keeps=masks, dropout=RATE,
                                         wavefront=True)
            # Every layer's outputs and final h (and the LSTM's c) reach the objective.
            value = jnp.sum(jnp.stack(hs) * weights[0]) + jnp.sum(jnp.stack([f[0] for f in final]) * weights[1])
            return value + sum(jnp.sum(jnp.tanh(f[-1])) for f in final)

        flat, unravel = jax.flatten_util.ravel_pytree((layers, x, carry))
        f = lambda flat: objective(unravel(flat))
        eps = 1e-6

        @jax.jit  # one compiled program: the gradient and the differences along every direction
        def analytic_and_numeric(flat, directions):
            numeric = jax.vmap(lambda v: (f(flat + eps * v) - f(flat - eps * v)) / (2 * eps))(directions)
            return directions @ jax.grad(f)(flat), numeric

        directions = jnp.asarray(rng.normal(size=(6, flat.size)))  # random directions move every input at once
        analytic, numeric = analytic_and_numeric(flat, directions)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-7)


def test_float32_matches_plain_path(monkeypatch):
    """In the precision training runs in, the two paths agree to float32 rounding; and the model really routes
    training through the fused path, and inspection (other states than h) through cells.scan."""
    calls = []
    original = fused.run_layers
    monkeypatch.setattr(fused, "run_layers", lambda *a, **k: calls.append(1) or original(*a, **k))
    config = ModelConfig(vocab_size=9, cell="lstm", hidden_size=16, num_layers=2, embedding_size=4)
    rng = np.random.default_rng(9)
    params = random_like(model_shapes(config), rng, jnp.float32)
    inputs, targets = (jnp.asarray(rng.integers(0, 9, (4, 20)), jnp.int32) for _ in range(2))
    carry = random_like(jax.eval_shape(lambda: model.initial_carry(config, 4)), rng, jnp.float32)

    def grads(fast):
        f = jax.value_and_grad(lambda p: model.loss(p, config, inputs, targets, carry, fast=fast)[0])
        return jax.jit(f)(params)

    (v1, g1), (v0, g0) = grads(True), grads(False)
    assert len(calls) == 1  # traced once: the fast path only
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    states = jax.eval_shape(lambda: model.run_layers(params, config, inputs.T, carry, outputs=("h", "f"))[1])
    assert len(calls) == 1 and "f" in states[0]


NUMPY_ACTIVATIONS = {"relu": lambda a: np.maximum(a, 0.0), "identity": lambda a: a}


@pytest.mark.parametrize("activation", fast_first(["relu", "identity"]))
def test_the_rnn_with_another_activation_matches_numpy_and_its_gradients_the_plain_path(activation):
    """--activation relu / identity: the fused RNN computes h_t = φ(W x_t + U h_{t-1} + b) as a NumPy loop does,
    and its hand-written backward pass (φ' from h_t) gives the plain scan's gradients."""
    config = ModelConfig(vocab_size=9, cell="rnn", hidden_size=H, num_layers=2, embedding_size=D,
                         activation=activation)
    phi = NUMPY_ACTIVATIONS[activation]
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        params = random_like(model_shapes(config), rng, jnp.float64)
        inputs, targets = (jnp.asarray(rng.integers(0, 9, (B, T)), jnp.int32) for _ in range(2))
        carry = random_like(jax.eval_shape(lambda: model.initial_carry(config, B)), rng, jnp.float64)
        _, states = model.run_layers(params, config, inputs.T, carry)
        x = np.asarray(params["embedding"])[np.asarray(inputs).T]
        for layer, p in enumerate(params["layers"]):
            h, want = np.asarray(carry[layer][0]), []
            for x_t in x:
                h = phi(x_t @ np.asarray(p["W"]) + np.asarray(p["b"]) + h @ np.asarray(p["U"]))
                want.append(h)
            np.testing.assert_allclose(states[layer]["h"], np.stack(want), rtol=1e-12, atol=1e-12)
            x = np.stack(want)

        def grads(fast):
            return jax.jit(jax.grad(lambda p: model.loss(p, config, inputs, targets, carry, fast=fast)[0]))(params)

        for a, b in zip(jax.tree.leaves(grads(True)), jax.tree.leaves(grads(False))):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_an_activation_is_the_rnns_alone():
    with pytest.raises(ConfigError, match="--activation relu is for the vanilla RNN"):
        ModelConfig(vocab_size=9, cell="lstm", activation="relu")
    with pytest.raises(ConfigError, match="unknown activation 'sigmoid'"):
        ModelConfig(vocab_size=9, cell="rnn", activation="sigmoid")
    assert ModelConfig.from_dict({"vocab_size": 9, "cell": "rnn"}).activation == "tanh"  # a checkpoint from before
    assert cells.get("rnn", "relu").key == "rnn-relu" and cells.get("gru").key == "gru"


def test_a_layer_normalised_cell_is_refused_not_run_without_its_norm():
    cell = cells.get("lstm", layer_norm=True)
    params = cell.init(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match="layer-normalised"):
        fused.run_layers(cell, [params], jnp.zeros((2, 1, 3)), [cell.initial_carry((1,), 4)])


def relative_error(got, want):
    """|got - want| / |want| over a whole pytree flattened into one vector."""
    got, want = (np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree.leaves(t)]) for t in (got, want))
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("kind,num_layers,rate,wavefront", fast_first(
    [("lstm", 2, 0.0, False), ("gru", 3, 0.0, True), ("gru", 2, RATE, False), ("rnn", 3, RATE, True)], keep=2))
def test_bfloat16_products_stay_within_bfloat16_rounding_of_the_exact_values_and_gradients(kind, num_layers, rate,
                                                                                          wavefront):
    """Mixed precision (`matmul_dtype="bfloat16"`) on float32 parameters: values and gradients within bfloat16's
    rounding (8 bits of mantissa: ~0.4% per operand) of the float64 plain scan, returned in float32; and
    measurably less exact than the float32 products, so the option is really in effect."""
    with jax.enable_x64(True):
        layers64, x64, carry64 = make_inputs(kind, num_layers, seed=3)
        masks = fused.dropout_masks(dropout_keys(num_layers, rate), rate, (T, B, H))
        to32 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float32), tree)
        args32 = to32((layers64, x64, carry64))

        def run_fused(dtype):
            return lambda layers, x, carry: fused.run_layers(cells.get(kind), layers, x, carry, dropout_keeps=masks,
                                                             dropout=rate, wavefront=wavefront, matmul_dtype=dtype)

        shapes = jax.eval_shape(run_fused(None), *args32)
        rng = np.random.default_rng(2)
        cot = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)
        want = outputs_and_vjp(lambda *a: plain_stack(kind, *a, masks, rate), (layers64, x64, carry64),
                               jax.tree.map(lambda c: c.astype(jnp.float64), cot))
        exact = outputs_and_vjp(run_fused(None), args32, cot)
        mixed = outputs_and_vjp(run_fused("bfloat16"), args32, cot)
        assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(mixed))
        for got, reference in zip(mixed, want):  # the outputs, then the gradients
            assert relative_error(got, reference) < 2e-2
        assert relative_error(exact[1], want[1]) < 1e-5 < relative_error(mixed[1], want[1])


def test_the_model_trains_on_bfloat16_products_only_when_asked():
    """`model.loss(..., matmul_dtype="bfloat16")`: the compiled step multiplies bfloat16 operands (and the float32
    one none), and its loss and gradients stay within bfloat16's rounding of the float32 ones."""
    config = ModelConfig(vocab_size=9, cell="lstm", hidden_size=16, num_layers=2, embedding_size=4)
    rng = np.random.default_rng(5)
    params = random_like(model_shapes(config), rng, jnp.float32)
    inputs, targets = (jnp.asarray(rng.integers(0, 9, (4, 20)), jnp.int32) for _ in range(2))
    carry = model.initial_carry(config, 4)

    def loss_and_grads(dtype):
        return jax.jit(jax.value_and_grad(lambda p: model.loss(p, config, inputs, targets, carry,
                                                               matmul_dtype=dtype)[0]))

    assert "bf16" in loss_and_grads("bfloat16").lower(params).as_text()
    assert "bf16" not in loss_and_grads("float32").lower(params).as_text()
    (v32, g32), (v16, g16) = loss_and_grads("float32")(params), loss_and_grads("bfloat16")(params)
    assert abs(float(v16) - float(v32)) < 1e-2 * float(v32)
    assert relative_error(g16, g32) < 3e-2
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g16))
