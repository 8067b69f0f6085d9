"""RTRL: its gradient, computed forward in time, is BPTT's (jax.grad of a plain scan written here), in float64,
for every cell kind and one and two layers; carried sensitivities keep the whole history."""

import jax
import jax.numpy as jnp

import pytest

from charrnn import cells, model, rtrl
from charrnn.config import ModelConfig
from conftest import fast_first

CASES = [(kind, layers) for kind in ("rnn", "lstm", "gru") for layers in (1, 2)]
ACTIVATION_CASES = [("rnn", 2, "relu"), ("rnn", 1, "identity")]
B, T, V, H, E = 2, 5, 5, 3, 2
TOL = 1e-10


def config_for(kind, layers, activation="tanh", layer_norm=False):
    return ModelConfig(vocab_size=V, cell=kind, hidden_size=H, num_layers=layers, embedding_size=E,
                       activation=activation, layer_norm=layer_norm)


def float64_params(config, seed=0):
    """model.init's pytree in float64, with non-zero biases so that every term of the gradient is exercised."""
    params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(seed), config))
    for k, layer in enumerate(params["layers"]):
        for name in ("b", "gain", "c_gain", "c_bias"):  # the last three with layer normalisation
            if name in layer:
                noise = jax.random.normal(jax.random.key(100 + k), layer[name].shape, jnp.float64)
                layer[name] = layer[name] + 0.3 * noise
    params["head"]["b"] = jnp.linspace(-0.5, 0.5, V, dtype=jnp.float64)
    return params


def zero_carry(config):
    cell = cells.get(config.cell)
    return [cell.initial_carry((B,), H, jnp.float64) for _ in range(config.num_layers)]


def bptt_loss(params, config, tokens, targets, carry, first=0):
    """The reference: embedding -> one plain lax.scan of the cell's step per layer -> head -> cross-entropy,
    averaged over the positions from `first` on (to take the part of a longer window's loss)."""
    cell = cells.of(config)
    x = params["embedding"][tokens.T]  # (T, B, E)
    for layer_params, layer_carry in zip(params["layers"], carry):
        def body(c, x_t, p=layer_params):
            c, states = cell.step(p, c, cell.project_inputs(p, x_t))
            return c, states["h"]

        _, x = jax.lax.scan(body, layer_carry, x)
    logits = x @ params["head"]["W"] + params["head"]["b"]  # (T, B, V)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets.T[..., None], axis=-1)[..., 0]
    return nll[first:].mean()


# Jitted so that the two tests below share compilations of the same shapes.
bptt_value_and_grad = jax.jit(jax.value_and_grad(bptt_loss), static_argnames=("config", "first"))


def tokens_and_targets(steps, seed=1):
    text = jax.random.randint(jax.random.key(seed), (B, steps + 1), 0, V)
    return text[:, :-1], text[:, 1:]


def max_abs_difference(a, b):
    return max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("kind,layers,activation,layer_norm", fast_first(
    [("lstm", 2, "tanh", False), ("lstm", 2, "tanh", True)]
    + [(k, n, "tanh", False) for k, n in CASES if (k, n) != ("lstm", 2)]
    + [(k, n, a, False) for k, n, a in ACTIVATION_CASES] + [("gru", 1, "tanh", True)], keep=2))
def test_rtrl_over_a_window_is_bptt(kind, layers, activation, layer_norm):
    config = config_for(kind, layers, activation, layer_norm)
    with jax.enable_x64(True):
        params = float64_params(config)
        tokens, targets = tokens_and_targets(T)
        carry = zero_carry(config)
        loss, grads, new_carry, P = rtrl.rtrl_gradient(params, config, tokens, targets, carry,
                                                       rtrl.init_sensitivities(params, config, B))
        ref_loss, ref_grads = bptt_value_and_grad(params, config, tokens, targets, carry)
        assert grads["head"]["W"].dtype == jnp.float64
        assert jax.tree.structure(grads) == jax.tree.structure(params)
        assert abs(float(loss - ref_loss)) < TOL
        assert max_abs_difference(grads, ref_grads) < TOL
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["layers"])) > 1e-3  # not trivially 0
        assert P.shape == (B, rtrl.state_size(config), rtrl.num_sensitive_parameters(config))


@pytest.mark.parametrize("kind,layers", fast_first([("lstm", 2)] + [c for c in CASES if c != ("lstm", 2)]))
def test_carried_sensitivities_are_bptt_through_both_windows(kind, layers):
    config = config_for(kind, layers)
    with jax.enable_x64(True):
        params = float64_params(config)
        tokens, targets = tokens_and_targets(2 * T, seed=2)
        state = rtrl.init_state(params, config, B)
        _, _, state = rtrl.step(params, config, state, tokens[:, :T], targets[:, :T])
        loss, grads, state = rtrl.step(params, config, state, tokens[:, T:], targets[:, T:])
        # BPTT over the concatenated window, the loss of the second half only.
        ref_loss, ref_grads = bptt_value_and_grad(params, config, tokens, targets, zero_carry(config), first=T)
        assert abs(float(loss - ref_loss)) < TOL
        assert max_abs_difference(grads, ref_grads) < TOL
        # Zero sensitivities with the carried state: truncated BPTT, the carry a constant.
        carry = rtrl.rtrl_gradient(params, config, tokens[:, :T], targets[:, :T], zero_carry(config),
                                   rtrl.init_sensitivities(params, config, B))[2]
        _, truncated, _, _ = rtrl.rtrl_gradient(params, config, tokens[:, T:], targets[:, T:], carry,
                                                rtrl.init_sensitivities(params, config, B))
        _, ref_truncated = bptt_value_and_grad(params, config, tokens[:, T:], targets[:, T:], carry)
        assert max_abs_difference(truncated, ref_truncated) < TOL
        assert max_abs_difference(truncated, ref_grads) > 1e-6  # the history matters


def test_the_loss_and_carry_are_the_models():
    config = config_for("lstm", 2)
    with jax.enable_x64(True):
        params = float64_params(config)
        tokens, targets = tokens_and_targets(T)
        loss, _, state = rtrl.step(params, config, rtrl.init_state(params, config, B), tokens, targets)
        model_loss, model_carry = model.loss(params, config, tokens, targets, zero_carry(config))
        assert abs(float(loss - model_loss)) < TOL
        assert max_abs_difference(state.carry, model_carry) < TOL


def test_cost_counts_the_sensitivities():
    config = ModelConfig(vocab_size=65, cell="lstm", hidden_size=32, num_layers=1, embedding_size=16)
    S, N = 2 * 32, 65 * 16 + 4 * 32 * (16 + 32 + 1)
    assert rtrl.state_size(config) == S and rtrl.num_sensitive_parameters(config) == N
    floats, flops = rtrl.cost(config)
    assert floats == S * N
    assert flops > 2 * S * S * N
    params = {"embedding": jnp.zeros((65, 16)), "layers": [{"W": jnp.zeros((16, 128)), "U": jnp.zeros((32, 128)),
              "b": jnp.zeros(128)}], "head": {"W": jnp.zeros((32, 65)), "b": jnp.zeros(65)}}
    assert rtrl.init_sensitivities(params, config, 3).shape == (3, S, N)
    bigger = rtrl.cost(ModelConfig(vocab_size=65, cell="lstm", hidden_size=64, num_layers=1, embedding_size=16))
    assert bigger.flops_per_character > 4 * flops  # O(H^2 |θ|): quadratic in H times |θ|, itself ~H^2


def test_dropout_is_refused():
    config = ModelConfig(vocab_size=V, cell="rnn", hidden_size=H, num_layers=2, embedding_size=E, dropout=0.5)
    params = model.init(jax.random.key(0), config)
    state = rtrl.init_state(params, config, 1)
    tokens = jnp.zeros((1, 2), jnp.int32)
    with pytest.raises(ValueError, match="dropout"):
        rtrl.step(params, config, state, tokens, tokens)
