"""The language model: gradients, state carry across windows, generation step == training forward."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from charrnn import model
from charrnn.config import ModelConfig
from conftest import fast_first

KINDS = ["rnn", "lstm", "gru"]
forward = jax.jit(model.forward, static_argnums=1)  # op-by-op dispatch of a scan is slow; jit as real code does


def tiny(kind, **kw):
    """A two-layer model of `kind`: "lstm", ..., or "lstm-ln", ... for its layer-normalised form."""
    kind, _, norm = kind.partition("-")
    return ModelConfig(vocab_size=7, cell=kind, hidden_size=5, num_layers=2, embedding_size=3,
                       layer_norm=norm == "ln", **kw)


def tokens(shape, seed=0, vocab=7):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


@pytest.mark.parametrize("kind", fast_first(["lstm", "lstm-ln", "rnn", "gru", "rnn-ln", "gru-ln"], keep=2))
def test_gradient_matches_central_finite_differences(kind):
    config = tiny(kind)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.init(jax.random.key(1), config))
        x, y = tokens((2, 6), 1), tokens((2, 6), 2)
        carry = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) + 0.1, model.initial_carry(config, 2))
        loss = jax.jit(lambda p: model.loss(p, config, x, y, carry)[0])
        grad = jax.grad(loss)(params)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        flat_grad, _ = jax.flatten_util.ravel_pytree(grad)
        rng = np.random.default_rng(0)
        eps = 1e-6
        # Random directions probe every parameter at once; single coordinates probe a few by name.
        directions = [rng.normal(size=flat.shape) for _ in range(4)]
        directions += [np.eye(flat.size)[i] for i in rng.choice(flat.size, 8, replace=False)]
        for v in directions:
            v = jnp.asarray(v)
            numeric = (loss(unravel(flat + eps * v)) - loss(unravel(flat - eps * v))) / (2 * eps)
            analytic = jnp.dot(flat_grad, v)
            assert abs(float(numeric - analytic)) <= 1e-7 * max(1.0, abs(float(numeric))), (numeric, analytic)


@pytest.mark.parametrize("kind", fast_first(["lstm", "rnn", "gru"]))
def test_two_windows_with_carried_state_equal_one_long_window(kind):
    config = tiny(kind)
    params = model.init(jax.random.key(2), config)
    seq = tokens((3, 16), 3)
    zero = model.initial_carry(config, 3)
    whole, _ = forward(params, config, seq, zero)
    first, carry = forward(params, config, seq[:, :8], zero)
    second, _ = forward(params, config, seq[:, 8:], carry)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-5, atol=1e-6)
    # And the carry matters: restarting from zero gives different predictions.
    restarted, _ = forward(params, config, seq[:, 8:], zero)
    assert np.abs(np.asarray(restarted) - np.asarray(second)).max() > 1e-4


@pytest.mark.parametrize("kind", fast_first(["lstm", "gru-ln", "rnn", "gru", "lstm-ln"], keep=2))
def test_generation_step_matches_training_forward(kind):
    config = tiny(kind)
    params = model.init(jax.random.key(3), config)
    seq = tokens((2, 10), 4)
    want, want_carry = forward(params, config, seq, model.initial_carry(config, 2))
    # Both ways of feeding the first layer: its embedding multiplied each step, or a row of the input table.
    for table in (None, model.input_table(params, config)):
        carry = model.initial_carry(config, 2)
        got = []
        for t in range(seq.shape[1]):
            logits, carry = model.step(params, config, seq[:, t], carry, table)
            got.append(logits)
        np.testing.assert_allclose(np.stack(got, axis=1), want, rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_input_table_row_of_a_token_is_its_projected_embedding():
    config = tiny("lstm")
    params = model.init(jax.random.key(8), config)
    layer, embedding = params["layers"][0], np.asarray(params["embedding"], np.float64)
    want = embedding @ np.asarray(layer["W"], np.float64) + np.asarray(layer["b"], np.float64)  # (V, 4H)
    table = model.input_table(params, config)
    assert table.shape == (config.vocab_size, 4 * config.hidden_size)
    np.testing.assert_allclose(table, want, rtol=1e-5, atol=1e-6)


def test_loss_is_mean_cross_entropy_in_nats():
    config = tiny("lstm")
    params = model.init(jax.random.key(4), config)
    x, y = tokens((2, 5), 5), tokens((2, 5), 6)
    logits, _ = forward(params, config, x, model.initial_carry(config, 2))
    logits = np.asarray(logits, np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.mean(np.take_along_axis(log_probs, np.asarray(y)[..., None], -1))
    got, _ = model.loss(params, config, x, y, model.initial_carry(config, 2))
    assert float(got) == pytest.approx(want, rel=1e-5)
    # An untrained model is near the uniform distribution's loss, ln(vocab).
    assert abs(want - np.log(7)) < 0.5


def test_dropout_only_when_a_key_is_given():
    config = tiny("lstm", dropout=0.5)
    plain = tiny("lstm")
    params = model.init(jax.random.key(5), config)
    x = tokens((2, 6), 7)
    zero = model.initial_carry(config, 2)
    off, _ = forward(params, config, x, zero)
    reference, _ = forward(params, plain, x, zero)
    np.testing.assert_array_equal(off, reference)
    on, _ = forward(params, config, x, zero, dropout_key=jax.random.key(0))
    assert np.abs(np.asarray(on) - np.asarray(off)).max() > 1e-3
    again, _ = forward(params, config, x, zero, dropout_key=jax.random.key(0))
    np.testing.assert_array_equal(on, again)


def test_dropout_leaves_the_recurrent_path_alone():
    # With one layer, dropout can only act before the head: the carried state must not change.
    config = ModelConfig(vocab_size=7, cell="lstm", hidden_size=5, num_layers=1, embedding_size=3, dropout=0.5)
    params = model.init(jax.random.key(6), config)
    x = tokens((2, 6), 8)
    zero = model.initial_carry(config, 2)
    _, carry_off = forward(params, config, x, zero)
    _, carry_on = forward(params, config, x, zero, dropout_key=jax.random.key(1))
    for a, b in zip(jax.tree.leaves(carry_on), jax.tree.leaves(carry_off)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_weight_drop_masks_cover_each_recurrent_matrix_at_the_rate(kind):
    config = ModelConfig(vocab_size=7, cell=kind, hidden_size=64, num_layers=2, embedding_size=3, weight_drop=0.3)
    params = model.init(jax.random.key(0), config)
    masks = model.weight_drop_masks(jax.random.key(1), config)
    assert [m.shape for m in masks] == [layer["U"].shape for layer in params["layers"]]
    kept = np.mean([np.asarray(m).mean() for m in masks])
    assert abs(kept - 0.7) < 0.01  # 2 × 64 × G·64 draws: the kept fraction is within 0.01 of 0.7
    assert not np.array_equal(masks[0], masks[1])  # a mask of its own per layer
    assert model.weight_drop_masks(None, config) is None
    assert model.weight_drop_masks(jax.random.key(1), tiny(kind)) is None  # rate 0: off


def test_weight_drop_trains_the_kept_weights_of_the_scaled_matrix():
    # Hand-built reference: the loss of the model whose U is mask * U / (1 - p), written out in NumPy; its
    # gradient with respect to that matrix, times mask / (1 - p), is the gradient with respect to U (chain rule).
    config = tiny("lstm", weight_drop=0.5)
    params = model.init(jax.random.key(2), config)
    masks = model.weight_drop_masks(jax.random.key(3), config)
    x, y = tokens((2, 6), 4), tokens((2, 6), 5)
    zero = model.initial_carry(config, 2)
    by_hand = {**params, "layers": [{**layer, "U": np.where(m, np.asarray(layer["U"]) * 2.0, 0.0)}
                                    for layer, m in zip(params["layers"], masks)]}
    loss_of = lambda p: model.loss(p, config, x, y, zero)[0]
    want_loss, want_grads = jax.value_and_grad(loss_of)(by_hand)
    got_loss, got_grads = jax.value_and_grad(lambda p: loss_of(model.drop_weights(p, masks, 0.5)))(params)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    for layer, m, want in zip(got_grads["layers"], masks, want_grads["layers"]):
        np.testing.assert_allclose(layer["U"], np.where(m, 2.0 * np.asarray(want["U"]), 0.0), rtol=1e-5, atol=1e-7)
        assert np.all(np.asarray(layer["U"])[~np.asarray(m)] == 0.0)
    np.testing.assert_allclose(got_grads["head"]["W"], want_grads["head"]["W"], rtol=1e-5, atol=1e-7)
    assert model.drop_weights(params, None, 0.5) is params


def test_parameter_count():
    config = ModelConfig(vocab_size=65, cell="lstm", hidden_size=128, num_layers=2, embedding_size=64)
    params = model.init(jax.random.key(0), config)
    H, E, V = 128, 64, 65
    want = V * E + (E * 4 * H + H * 4 * H + 4 * H) + (H * 4 * H + H * 4 * H + 4 * H) + H * V + V
    assert model.num_parameters(params) == want
    assert params["embedding"].shape == (V, E)  # a gather table, not a one-hot matmul
