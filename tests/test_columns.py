"""The generation step on column vectors: the model's equations, checked against a plain NumPy step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from charrnn import columns, model
from charrnn.config import ModelConfig
from conftest import fast_first


def config_of(kind):
    """A two-layer model: "lstm", "gru-ln" (layer-normalised), "rnn-relu" (φ = relu), ..."""
    cell, *extras = kind.split("-")
    activation = next((e for e in extras if e != "ln"), "tanh")
    return ModelConfig(vocab_size=7, cell=cell, hidden_size=5, num_layers=2, embedding_size=3,
                       layer_norm="ln" in extras, activation=activation)


def random_params(config, seed):
    """`model.init`'s parameters with every vector, the layer-norm gains included, drawn at random, so that a
    gain or shift applied to the wrong block or axis shows."""
    params = model.init(jax.random.key(seed), config)
    rng = np.random.default_rng(seed)
    noisy = lambda a: jnp.asarray(rng.normal(0.5, 0.6, a.shape), jnp.float32) if a.ndim == 1 else a
    return jax.tree.map(noisy, params)


def numpy_step(config, params, tokens, carry):
    """The equations of charrnn/cells.py and charrnn/model.py for row-vector batches, float64:
    tokens (B,) -> logits (B, V), carry per layer."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    H = config.hidden_size
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))
    phi = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0), "identity": lambda a: a}[config.activation]

    def norm(a, gain, shift):  # each H-block of a's last axis on its own
        blocks = a.reshape(a.shape[0], -1, H)
        normed = (blocks - blocks.mean(-1, keepdims=True)) / np.sqrt(blocks.var(-1, keepdims=True) + 1e-5)
        return normed.reshape(a.shape) * gain + shift

    def pre(layer, a, cols):  # the pre-activation of the gate blocks in columns `cols`
        return norm(a, layer["gain"][cols], layer["b"][cols]) if config.layer_norm else a + layer["b"][cols]

    x = p["embedding"][np.asarray(tokens)]
    new_carry = []
    for layer, c in zip(p["layers"], carry):
        h = np.asarray(c[0], np.float64)
        wx = x @ layer["W"]
        if config.cell == "rnn":
            h = phi(pre(layer, wx + h @ layer["U"], slice(None)))
            new_carry.append((h,))
        elif config.cell == "lstm":
            a = pre(layer, wx + h @ layer["U"], slice(None))
            f, i, o, g = sig(a[:, :H]), sig(a[:, H:2 * H]), sig(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
            cell_state = f * np.asarray(c[1], np.float64) + i * g
            out = norm(cell_state, layer["c_gain"], layer["c_bias"]) if config.layer_norm else cell_state
            h = o * np.tanh(out)
            new_carry.append((h, cell_state))
        else:
            zr = sig(pre(layer, wx[:, :2 * H] + h @ layer["U"][:, :2 * H], slice(0, 2 * H)))
            z, r = zr[:, :H], zr[:, H:]
            h_hat = np.tanh(pre(layer, wx[:, 2 * H:] + (r * h) @ layer["U"][:, 2 * H:], slice(2 * H, None)))
            h = (1.0 - z) * h + z * h_hat
            new_carry.append((h,))
        x = h
    return x @ p["head"]["W"] + p["head"]["b"], new_carry


@pytest.mark.parametrize("kind", fast_first(["lstm", "gru-ln", "rnn", "gru", "lstm-ln", "rnn-relu", "rnn-ln",
                                             "rnn-identity"], keep=3))
def test_step_on_columns_matches_the_equations(kind):
    config = config_of(kind)
    params = random_params(config, 1)
    rng = np.random.default_rng(2)
    B, H = 4, config.hidden_size
    rows = [tuple(jnp.asarray(rng.normal(0, 0.7, (B, H)), jnp.float32) for _ in range(2 if config.cell == "lstm"
                                                                                        else 1))
            for _ in range(config.num_layers)]
    step = jax.jit(columns.step, static_argnums=1)
    weights = columns.transpose(params, config)
    carry = columns.to_columns(rows)
    want_carry = rows
    for t, tokens in enumerate(rng.integers(0, config.vocab_size, (3, B))):
        logits, carry = step(weights, config, jnp.asarray(tokens, jnp.int32), carry)
        want, want_carry = numpy_step(config, params, tokens, want_carry)
        assert logits.shape == (config.vocab_size, B)
        np.testing.assert_allclose(np.asarray(logits).T, want, rtol=2e-5, atol=2e-5, err_msg=f"step {t}")
        for got_layer, want_layer in zip(columns.to_rows(carry), want_carry):
            for got, wanted in zip(got_layer, want_layer):
                assert got.shape == (B, H)
                np.testing.assert_allclose(got, wanted, rtol=2e-5, atol=2e-5, err_msg=f"step {t}")


def test_carry_round_trips_through_columns():
    rows = [(jnp.arange(6.0).reshape(2, 3), jnp.ones((2, 3))), (jnp.zeros((2, 3)),)]
    there = columns.to_columns(rows)
    assert [a.shape for layer in there for a in layer] == [(3, 2)] * 3
    np.testing.assert_array_equal(there[0][0], np.arange(6.0).reshape(2, 3).T)
    back = columns.to_rows(there)
    for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(rows)):
        np.testing.assert_array_equal(got, want)
