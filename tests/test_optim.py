"""What a run's length decides: the learning-rate schedule, the steps a time budget holds, and the default
dropout for the passes over the data a run makes."""

import math

import pytest

from charrnn import optim
from charrnn.config import TrainConfig


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(learning_rate=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    schedule = optim.learning_rate_schedule(config, 110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-3)
    assert float(schedule(10)) == pytest.approx(1e-2)
    assert float(schedule(60)) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5), rel=1e-4)  # half way down the cosine
    assert float(schedule(110)) == pytest.approx(1e-3)
    constant = optim.learning_rate_schedule(TrainConfig(learning_rate=1e-2, warmup_steps=0, decay="constant"), 110)
    assert float(constant(100)) == pytest.approx(1e-2)


def test_steps_in_time_is_the_steps_the_time_left_holds():
    assert optim.steps_in_time(100, seconds_left=30.0, seconds_per_step=0.1) == 400
    assert optim.steps_in_time(100, seconds_left=0.0, seconds_per_step=0.1) == 101  # at least one more


def test_the_default_dropout_is_none_for_a_short_run_and_grows_with_the_passes():
    assert optim.dropout_for_epochs(None) == 0.0  # length not known yet
    assert optim.dropout_for_epochs(0.5) == 0.0
    assert optim.dropout_for_epochs(optim.DROPOUT_FROM_EPOCHS) == 0.0
    # Worked by hand: one doubling past the start adds DROPOUT_PER_DOUBLING, two add twice that.
    assert optim.dropout_for_epochs(2 * optim.DROPOUT_FROM_EPOCHS) == pytest.approx(optim.DROPOUT_PER_DOUBLING)
    assert optim.dropout_for_epochs(4 * optim.DROPOUT_FROM_EPOCHS) == pytest.approx(2 * optim.DROPOUT_PER_DOUBLING)
    assert optim.dropout_for_epochs(1e6) == optim.MAX_DROPOUT
    # Wider than the reference width: (H / 384)² times as much per doubling; narrower: the same.
    ten = 2 * optim.DROPOUT_FROM_EPOCHS
    assert optim.dropout_for_epochs(ten, hidden_size=543) == pytest.approx(0.3)  # 0.15 * (543/384)^2 = 0.2999
    assert optim.dropout_for_epochs(ten, hidden_size=128) == optim.dropout_for_epochs(ten)
    assert optim.dropout_for_epochs(optim.DROPOUT_FROM_EPOCHS, hidden_size=2048) == 0.0
    rates = [optim.dropout_for_epochs(e) for e in [1, 4, 6, 8, 11, 16, 23, 32, 45, 64, 90, 128]]
    assert rates == sorted(rates) and rates[-1] <= optim.MAX_DROPOUT
    for rate in rates:  # whole steps of DROPOUT_STEP, no float dust
        assert rate == round(rate, 6) and math.isclose(rate / optim.DROPOUT_STEP, round(rate / optim.DROPOUT_STEP))


def test_weight_decay_shrinks_the_matrices_and_leaves_the_biases_alone():
    """One step against Adam worked by hand in NumPy: the first step moves each weight by lr·g/(|g| + eps);
    decoupled decay then takes lr·weight_decay·θ off the matrices only."""
    import jax.numpy as jnp
    import numpy as np

    lr, decay, eps = 0.01, 0.1, 1e-8
    config = TrainConfig(learning_rate=lr, warmup_steps=0, decay="constant", weight_decay=decay, grad_clip=1e9)
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}
    grads = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}
    optimizer = optim.make_optimizer(config, None)
    as_jax = lambda tree: {k: jnp.asarray(v, jnp.float32) for k, v in tree.items()}
    updates, _ = optimizer.update(as_jax(grads), optimizer.init(as_jax(params)), as_jax(params))
    adam = {k: -lr * g / (np.abs(g) + eps) for k, g in grads.items()}
    np.testing.assert_allclose(updates["W"], adam["W"] - lr * decay * params["W"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(updates["b"], adam["b"], rtol=1e-5, atol=1e-7)
    # Without decay the optimizer is plain Adam (the state older checkpoints hold).
    plain = optim.make_optimizer(TrainConfig(learning_rate=lr, warmup_steps=0, decay="constant", grad_clip=1e9,
                                             weight_decay=0.0), None)
    updates, _ = plain.update(as_jax(grads), plain.init(as_jax(params)), as_jax(params))
    np.testing.assert_allclose(updates["W"], adam["W"], rtol=1e-5, atol=1e-7)


def test_a_configuration_saved_before_weight_decay_existed_trains_without_it():
    # Its Adam state has the plain optimizer's structure, and it was trained without decay: resuming keeps both.
    assert TrainConfig.from_dict({"batch_size": 4}).weight_decay == 0.0
    assert TrainConfig.from_dict({"batch_size": 4, "weight_decay": 0.3}).weight_decay == 0.3
    assert TrainConfig().weight_decay > 0.0  # while a new run decays by default


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("beta2", [0.5, 0.99, 0.999])
def test_adams_second_moment_decays_by_adam_beta2(beta2, weight_decay):
    """Two steps on a bias (never decayed) against Adam worked by hand: m and v with bias correction, v decaying
    by `adam_beta2`; with and without weight decay (the two ways the optimizer is built)."""
    import jax.numpy as jnp
    import numpy as np

    lr, beta1, eps = 0.01, 0.9, 1e-8
    config = TrainConfig(learning_rate=lr, warmup_steps=0, decay="constant", grad_clip=1e9, adam_beta2=beta2,
                         weight_decay=weight_decay)
    optimizer = optim.make_optimizer(config, None)
    params = {"b": jnp.zeros(2, jnp.float32)}
    state = optimizer.init(params)
    m = v = np.zeros(2)
    for t, g in enumerate((np.array([1.0, -2.0]), np.array([3.0, 0.5])), start=1):
        updates, state = optimizer.update({"b": jnp.asarray(g, jnp.float32)}, state, params)
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g**2
        want = -lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
        np.testing.assert_allclose(updates["b"], want, rtol=1e-4)  # float32: 1 - 0.999² loses digits


def test_adam_beta2_is_checked_and_a_file_from_before_it_keeps_the_old_default():
    from charrnn.config import ConfigError

    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="adam-beta2"):
            TrainConfig(adam_beta2=bad)
    assert TrainConfig.from_dict({"batch_size": 4}).adam_beta2 == 0.999


def test_weight_average_is_checked_and_a_file_from_before_it_saved_the_weights_themselves():
    from charrnn.config import ConfigError

    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ConfigError, match="weight-average"):
            TrainConfig(weight_average=bad)
    assert TrainConfig.from_dict({"batch_size": 4}).weight_average == 0.0
    assert TrainConfig(weight_average=None).averages_weights and not TrainConfig().averages_weights
    assert optim.default_weight_average(TrainConfig(max_time=60.0, max_epochs=None)) is None  # fitted to the run
    assert optim.default_weight_average(TrainConfig(max_time=60.0)) == 0.0  # an epoch limit too: not time alone


def test_a_fitted_weight_average_spans_8_percent_of_the_planned_steps():
    # 1,250 steps: an average over the last 100, d = 1 - 1/100; 2,500: 200 steps.
    assert optim.weight_average_decay(None, 1250) == pytest.approx(0.99)
    assert optim.weight_average_decay(None, 2500) == pytest.approx(0.995)
    assert optim.weight_average_decay(None, 5) == 0.0  # under one step: the weights themselves
    assert optim.weight_average_decay(None, None) == 0.99  # the length not known yet
    assert optim.weight_average_decay(0.9, 1250) == 0.9  # a decay asked for is the decay used
