"""Bidirectional layers: SPEC.md's exercise worked by hand, every cell kind against a plain NumPy loop, and the
backward direction reading only the future."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from charrnn import bidirectional, cells
from conftest import fast_first

KINDS = ("rnn", "lstm", "gru")


# --- SPEC.md, "Bidirectional RNN": the notes' exercise --------------------------------------------------------

U_A, W_A, V_A = [[1, 1], [1, 2]], [[3, -2], [4, 1]], [-1, 0]
U_B, W_B, V_B = [[3, -1], [0, 1]], [[0, 2], [2, 1]], [1, 1]   # B is the notes' A'
XS = [[1, 0], [0, 1]]                                         # "machine", "learning"

# Worked by hand, identity activation, no bias, h_0 = h'_3 = 0:
#   h_1  = U_A x_1              = [1, 1]
#   h_2  = U_A x_2 + W_A h_1    = [1, 2] + [3·1 − 2·1, 4·1 + 1·1]   = [1, 2] + [1, 5]  = [2, 7]
#   h'_2 = U_A' x_2             = [−1, 1]
#   h'_1 = U_A' x_1 + W_A' h'_2 = [3, 0] + [0·(−1) + 2·1, 2·(−1) + 1·1] = [3, 0] + [2, −1] = [5, −1]
#   y_1  = V_A h_1 + V_A' h'_1  = (−1·1 + 0·1) + (5 − 1)  = −1 + 4 = 3
#   y_2  = V_A h_2 + V_A' h'_2  = (−1·2 + 0·7) + (−1 + 1) = −2 + 0 = −2
H_1, H_2 = [1, 1], [2, 7]
H_BACK_2, H_BACK_1 = [-1, 1], [5, -1]
Y_1, Y_2 = 3, -2


def test_the_notes_exercise_gives_the_hand_worked_values():
    out = bidirectional.notes_rnn(U_A, W_A, V_A, U_B, W_B, V_B, XS)
    np.testing.assert_array_equal(np.asarray(out.h), [H_1, H_2])
    np.testing.assert_array_equal(np.asarray(out.h_back), [H_BACK_1, H_BACK_2])  # time order: row 0 is h'_1
    np.testing.assert_array_equal(np.asarray(out.y), [Y_1, Y_2])


def test_the_exercise_with_a_batch_and_matrix_outputs():
    out = bidirectional.notes_rnn(U_A, W_A, [V_A], U_B, W_B, [V_B], np.stack([XS, XS], axis=1))
    assert out.y.shape == (2, 2, 1)
    np.testing.assert_array_equal(np.asarray(out.y)[:, :, 0], [[Y_1, Y_1], [Y_2, Y_2]])


def test_tanh_changes_the_exercise():
    out = bidirectional.notes_rnn(U_A, W_A, V_A, U_B, W_B, V_B, XS, activation="tanh")
    np.testing.assert_allclose(np.asarray(out.h)[0], np.tanh([1, 1]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.h_back)[1], np.tanh([-1, 1]), rtol=1e-6)


def test_an_activation_may_be_a_callable():
    out = bidirectional.notes_rnn(U_A, W_A, V_A, U_B, W_B, V_B, XS, activation=lambda a: 2 * a)
    # h_1 = 2 U_A x_1 = [2, 2]; h_2 = 2 (U_A x_2 + W_A h_1) = 2 ([1, 2] + [2, 10]) = [6, 24]
    np.testing.assert_array_equal(np.asarray(out.h), [[2, 2], [6, 24]])


# --- every cell kind against a plain NumPy loop ---------------------------------------------------------------


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_step(kind, w, h, c, x):
    """One step of SPEC.md's equations with weights named as there (W_* (H, d), U_* (H, H), b_* (H,))."""
    if kind == "rnn":
        return np.tanh(w["W"] @ x + w["U"] @ h + w["b"]), c
    if kind == "lstm":
        f = sigmoid(w["W_f"] @ x + w["U_f"] @ h + w["b_f"])
        i = sigmoid(w["W_i"] @ x + w["U_i"] @ h + w["b_i"])
        o = sigmoid(w["W_o"] @ x + w["U_o"] @ h + w["b_o"])
        g = np.tanh(w["W_c"] @ x + w["U_c"] @ h + w["b_c"])
        c = f * c + i * g
        return o * np.tanh(c), c
    z = sigmoid(w["W_z"] @ x + w["U_z"] @ h + w["b_z"])
    r = sigmoid(w["W_r"] @ x + w["U_r"] @ h + w["b_r"])
    h_hat = np.tanh(w["W_h"] @ x + w["U_h"] @ (r * h) + w["b_h"])
    return (1 - z) * h + z * h_hat, c


def numpy_bidirectional(kind, w_fwd, w_bwd, xs):
    """xs (T, d) -> (h (T, H), h' (T, H)) by two plain Python loops, one each way."""
    T, H = len(xs), w_fwd["b" if kind == "rnn" else "b_" + cells.get(kind).gates[0]].shape[0]
    hs, hs_back = np.zeros((T, H)), np.zeros((T, H))
    h, c = np.zeros(H), np.zeros(H)
    for t in range(T):
        h, c = numpy_step(kind, w_fwd, h, c, xs[t])
        hs[t] = h
    h, c = np.zeros(H), np.zeros(H)
    for t in reversed(range(T)):
        h, c = numpy_step(kind, w_bwd, h, c, xs[t])
        hs_back[t] = h
    return hs, hs_back


def random_spec_weights(kind, rng, d, H):
    return {name: rng.normal(size=(H, d) if name[0] == "W" else (H, H) if name[0] == "U" else (H,)) * 0.7
            for name in cells.spec_names(kind)}


@pytest.mark.parametrize("kind", fast_first(["lstm", "rnn", "gru"]))
def test_every_cell_kind_matches_a_numpy_loop(kind):
    rng = np.random.default_rng(3)
    T, B, d, H = 6, 2, 3, 4
    w_fwd, w_bwd = random_spec_weights(kind, rng, d, H), random_spec_weights(kind, rng, d, H)
    xs = rng.normal(size=(T, B, d))
    params = {"forward": cells.from_spec(kind, w_fwd), "backward": cells.from_spec(kind, w_bwd)}
    out = bidirectional.run(kind, params, jnp.asarray(xs, jnp.float32))
    assert out.forward.shape == out.backward.shape == (T, B, H)
    assert bidirectional.concat(out).shape == (T, B, 2 * H)
    for b in range(B):
        hs, hs_back = numpy_bidirectional(kind, w_fwd, w_bwd, xs[:, b])
        np.testing.assert_allclose(np.asarray(out.forward[:, b]), hs, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.backward[:, b]), hs_back, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.forward_carry[0][b]), hs[-1], atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.backward_carry[0][b]), hs_back[0], atol=1e-5)


@pytest.mark.parametrize("kind", fast_first(["lstm", "rnn", "gru"]))
def test_each_direction_sees_only_its_side_of_the_sequence(kind):
    T, B, d, H = 5, 1, 3, 4
    params = bidirectional.init(jax.random.key(0), kind, d, H)
    xs = jax.random.normal(jax.random.key(1), (T, B, d))
    base = bidirectional.run(kind, params, xs)
    first = bidirectional.run(kind, params, xs.at[0].add(1.0))   # x_1 perturbed
    last = bidirectional.run(kind, params, xs.at[-1].add(1.0))   # x_T perturbed
    # h'_t has read x_T … x_t only: changing x_1 leaves h'_2 … h'_T alone and moves h'_1.
    np.testing.assert_array_equal(np.asarray(first.backward[1:]), np.asarray(base.backward[1:]))
    assert not np.allclose(np.asarray(first.backward[0]), np.asarray(base.backward[0]))
    # h_t has read x_1 … x_t only: changing x_T leaves h_1 … h_{T-1} alone and moves h_T.
    np.testing.assert_array_equal(np.asarray(last.forward[:-1]), np.asarray(base.forward[:-1]))
    assert not np.allclose(np.asarray(last.forward[-1]), np.asarray(base.forward[-1]))


def test_the_directions_have_their_own_parameters():
    params = bidirectional.init(jax.random.key(0), "gru", 3, 4)
    assert not np.allclose(np.asarray(params["forward"]["U"]), np.asarray(params["backward"]["U"]))


def test_activations_other_than_tanh_are_for_the_rnn_only():
    with pytest.raises(ValueError, match="no activation"):
        bidirectional.cell_for("lstm", "relu")
    with pytest.raises(ValueError, match="no activation"):
        bidirectional.cell_for("gru", jax.nn.relu)
    with pytest.raises(ValueError, match="unknown activation"):
        bidirectional.cell_for("rnn", "sigmoid")
    assert bidirectional.cell_for("lstm") is cells.LSTM
