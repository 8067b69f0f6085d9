"""The cells compute exactly the equations of charrnn/cells.py: hand-worked examples, and a plain NumPy loop."""

import numpy as np
import pytest

from charrnn import cells


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --- hand-worked examples, through the learner's API -------------------------------------------------------

LSTM_EXAMPLE = {
    "W_f": [[1, -2, 5], [5, 5, 0]], "W_i": [[0, 2, 5], [3, -4, 1]],
    "W_o": [[1, 2, 1], [0, -1, 3]], "W_c": [[-2, 0, 1], [5, 1, 8]],
    "b_f": [5, 2], "b_i": [5, 2], "b_o": [5, 2], "b_c": [5, 2],
    # U does not matter at t = 1 (h_0 = 0); any values will do.
    "U_f": [[9, 9], [9, 9]], "U_i": [[-9, 9], [9, -9]], "U_o": [[3, 1], [4, 1]], "U_c": [[5, 9], [2, 6]],
}


def test_lstm_worked_example():
    x1 = np.array([2.0, 3.0, -1.0])
    # Pre-activations worked by hand: W x_1 + b for each gate.
    f = sigmoid(np.array([2 - 6 - 5 + 5, 10 + 15 + 0 + 2]))  # [-4, 27]
    i = sigmoid(np.array([0 + 6 - 5 + 5, 6 - 12 - 1 + 2]))  # [6, -5]
    o = sigmoid(np.array([2 + 6 - 1 + 5, 0 - 3 - 3 + 2]))  # [12, -4]
    g = np.tanh(np.array([-4 + 0 - 1 + 5, 10 + 3 - 8 + 2]))  # [0, 7]
    c = i * g  # f * c_0 vanishes
    h = o * np.tanh(c)
    assert c[0] == 0.0 and c[1] == pytest.approx(0.0066928, rel=1e-4)  # sigma(-5) * tanh(7)
    assert h[1] == pytest.approx(1.2038e-4, rel=1e-3)

    h1 = cells.run("lstm", LSTM_EXAMPLE, x1[None, :])
    np.testing.assert_allclose(np.asarray(h1)[0], h, rtol=1e-5, atol=1e-9)

    params = cells.from_spec("lstm", LSTM_EXAMPLE)
    _, states = cells.LSTM.step(params, cells.LSTM.initial_carry((), 2), cells.LSTM.project_inputs(params, x1))
    for name, want in {"f": f, "i": i, "o": o, "g": g, "c": c, "h": h}.items():
        np.testing.assert_allclose(np.asarray(states[name]), want, rtol=1e-5, atol=1e-9, err_msg=name)


GRU_EXAMPLE = {
    "W_z": [[1, 3], [2, 0]], "W_r": [[1, -1], [-6, -1]], "W_h": [[1, 1], [2, 0]],
    "U_z": [[3, 0], [-1, 1]], "U_r": [[1, 1], [4, -3]], "U_h": [[2, 3], [0, -2]],
    "b_z": [1, 1], "b_r": [1, 1], "b_h": [1, 1],
}


def test_gru_worked_example_two_steps():
    w = {k: np.array(v, float) for k, v in GRU_EXAMPLE.items()}
    # Step 1, by hand: with h_0 = 0 only W x_1 + b matters; x_1 = [1, 0] picks W's first column.
    z1 = sigmoid(np.array([1 + 1, 2 + 1]))
    r1 = sigmoid(np.array([1 + 1, -6 + 1]))
    hh1 = np.tanh(np.array([1 + 1, 2 + 1]))
    h1 = (1 - z1) * 0 + z1 * hh1
    # Step 2: x_2 = [0, 1]; now U matters, and the reset gate multiplies h_1 before U_h.
    x2 = np.array([0.0, 1.0])
    z2 = sigmoid(w["W_z"] @ x2 + w["U_z"] @ h1 + w["b_z"])
    r2 = sigmoid(w["W_r"] @ x2 + w["U_r"] @ h1 + w["b_r"])
    hh2 = np.tanh(w["W_h"] @ x2 + w["U_h"] @ (r2 * h1) + w["b_h"])
    h2 = (1 - z2) * h1 + z2 * hh2

    hs = np.asarray(cells.run("gru", GRU_EXAMPLE, [[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(hs, np.stack([h1, h2]), rtol=1e-5)
    # Not PyTorch's GRU: reset applied after the product, z weighting the old state, gives other numbers.
    torch_hh2 = np.tanh(w["W_h"] @ x2 + w["b_h"] + r2 * (w["U_h"] @ h1))
    torch_h2 = z2 * h1 + (1 - z2) * torch_hh2
    assert np.abs(hs[1] - torch_h2).max() > 1e-2

    params = cells.from_spec("gru", GRU_EXAMPLE)
    carry, states = cells.GRU.step(params, cells.GRU.initial_carry((), 2), cells.GRU.project_inputs(params, np.array([1.0, 0.0], np.float32)))
    np.testing.assert_allclose(np.asarray(states["z"]), z1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(states["r"]), r1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(states["h_hat"]), hh1, rtol=1e-6)


# --- every cell against a plain NumPy loop over the equations -------------------------------------------------------


def numpy_reference(kind, w, xs, h0, c0=None):
    """The equations, one step at a time, float64. xs (T, B, d) -> hs (T, B, H)."""
    h = h0.copy()
    c = np.zeros_like(h0) if c0 is None else c0.copy()
    hs = []
    for x in xs:
        if kind == "rnn":
            h = np.tanh(x @ w["W"].T + h @ w["U"].T + w["b"])
        elif kind == "lstm":
            gate = lambda g, act: act(x @ w[f"W_{g}"].T + h @ w[f"U_{g}"].T + w[f"b_{g}"])
            f, i, o, g = gate("f", sigmoid), gate("i", sigmoid), gate("o", sigmoid), gate("c", np.tanh)
            c = f * c + i * g
            h = o * np.tanh(c)
        else:
            z = sigmoid(x @ w["W_z"].T + h @ w["U_z"].T + w["b_z"])
            r = sigmoid(x @ w["W_r"].T + h @ w["U_r"].T + w["b_r"])
            hh = np.tanh(x @ w["W_h"].T + (r * h) @ w["U_h"].T + w["b_h"])
            h = (1 - z) * h + z * hh
        hs.append(h)
    return np.stack(hs)


def random_spec_weights(kind, d, H, rng):
    w = {}
    for name in cells.spec_names(kind):
        shape = {"W": (H, d), "U": (H, H), "b": (H,)}[name[0]]
        w[name] = rng.normal(0, 0.7, shape)
    return w


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_scan_matches_numpy_loop(kind):
    rng = np.random.default_rng(0)
    T, B, d, H = 9, 3, 4, 5
    w = random_spec_weights(kind, d, H, rng)
    xs = rng.normal(size=(T, B, d))
    h0 = rng.normal(0, 0.5, (B, H))
    want = numpy_reference(kind, w, xs, h0)
    got = np.asarray(cells.run(kind, w, xs, h0=h0))
    assert got.shape == (T, B, H)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    # Unbatched input gives the same numbers as batch row 0.
    got0 = np.asarray(cells.run(kind, w, xs[:, 0], h0=h0[0]))
    np.testing.assert_allclose(got0, want[:, 0], rtol=2e-5, atol=2e-6)


def test_lstm_accepts_initial_cell_state():
    rng = np.random.default_rng(1)
    w = random_spec_weights("lstm", 3, 4, rng)
    xs = rng.normal(size=(5, 2, 3))
    h0, c0 = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    got = np.asarray(cells.run("lstm", w, xs, h0=(h0, c0)))
    np.testing.assert_allclose(got, numpy_reference("lstm", w, xs, h0, c0), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_spec_names_round_trip_through_fused_storage(kind):
    rng = np.random.default_rng(2)
    w = random_spec_weights(kind, 3, 4, rng)
    back = cells.to_spec(kind, cells.from_spec(kind, w))
    assert set(back) == set(w)
    for name in w:
        np.testing.assert_allclose(back[name], w[name], rtol=1e-6, err_msg=name)


def test_gate_states_are_reported_and_bounded():
    params = cells.LSTM.init(__import__("jax").random.key(0), 3, 4)
    xs = np.random.default_rng(3).normal(size=(6, 2, 3)).astype(np.float32)
    _, states = cells.scan(cells.LSTM, params, cells.LSTM.project_inputs(params, xs),
                           cells.LSTM.initial_carry((2,), 4), outputs=cells.LSTM.state_names)
    for gate in "fio":
        assert states[gate].shape == (6, 2, 4)
        assert float(states[gate].min()) >= 0.0 and float(states[gate].max()) <= 1.0
    np.testing.assert_allclose(states["h"], states["o"] * np.tanh(states["c"]), rtol=1e-6, atol=1e-7)


def test_bad_weights_are_named():
    with pytest.raises(ValueError, match="missing U_r"):
        cells.run("gru", {k: v for k, v in GRU_EXAMPLE.items() if k != "U_r"}, [[1.0, 0.0]])
    with pytest.raises(ValueError, match="unknown cell"):
        cells.run("transformer", {}, [[1.0]])


# --- layer normalisation ------------------------------------------------------------------------------------------


def test_normalize_worked_example():
    # Two blocks of two: [1, 2] has mean 1.5 and variance 0.25, [3, 6] mean 4.5 and variance 2.25; each becomes
    # [-1, 1] (up to the epsilon), then is scaled by its gains and shifted by its shifts.
    got = np.asarray(cells.normalize(np.array([1.0, 2.0, 3.0, 6.0]), np.array([1.0, 1.0, 2.0, 2.0]),
                                     np.array([0.0, 0.0, 1.0, 1.0]), blocks=2))
    s1, s2 = 0.5 / np.sqrt(0.25 + 1e-5), 1.5 / np.sqrt(2.25 + 1e-5)
    np.testing.assert_allclose(got, [-s1, s1, 1 - 2 * s2, 1 + 2 * s2], rtol=1e-6)


def numpy_layer_norm(a, gain, shift):
    return gain * (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5) + shift


def numpy_layer_norm_reference(kind, w, ln, xs):
    """The layer-normalised equations of charrnn/cells.py, one step at a time, float64, from h_0 = c_0 = 0.
    `ln` holds γ per gate suffix ("f", "z", "" for the rnn, ...) and the LSTM's "c_gain", "c_bias"."""
    H = w["U" if kind == "rnn" else "U_" + ("f" if kind == "lstm" else "z")].shape[0]
    h, c = np.zeros((xs.shape[1], H)), np.zeros((xs.shape[1], H))
    pre = lambda g, x, h: numpy_layer_norm(x @ w[f"W{g}"].T + h @ w[f"U{g}"].T, ln[g], w[f"b{g}"])
    hs = []
    for x in xs:
        if kind == "rnn":
            h = np.tanh(pre("", x, h))
        elif kind == "lstm":
            f, i, o = (sigmoid(pre(g, x, h)) for g in ("_f", "_i", "_o"))
            c = f * c + i * np.tanh(pre("_c", x, h))
            h = o * np.tanh(numpy_layer_norm(c, ln["c_gain"], ln["c_bias"]))
        else:
            z, r = sigmoid(pre("_z", x, h)), sigmoid(pre("_r", x, h))
            hh = np.tanh(pre("_h", x, r * h))
            h = (1 - z) * h + z * hh
        hs.append(h)
    return np.stack(hs)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_layer_normalised_scan_matches_numpy_loop(kind):
    rng = np.random.default_rng(4)
    T, B, d, H = 7, 3, 4, 5
    w = random_spec_weights(kind, d, H, rng)
    cell = cells.get(kind, layer_norm=True)
    params = dict(cells.from_spec(kind, w))
    suffixes = [f"_{g}" if g else "" for g in cell.gates]
    ln = {s: rng.uniform(0.5, 1.5, H) for s in suffixes}  # not ones, so a gain in the wrong block shows
    params["gain"] = np.concatenate([ln[s] for s in suffixes]).astype(np.float32)
    if kind == "lstm":
        ln["c_gain"], ln["c_bias"] = rng.uniform(0.5, 1.5, H), rng.normal(0, 0.3, H)
        params["c_gain"], params["c_bias"] = ln["c_gain"].astype(np.float32), ln["c_bias"].astype(np.float32)
    xs = rng.normal(size=(T, B, d))
    _, states = cells.scan(cell, params, cell.project_inputs(params, xs.astype(np.float32)),
                           cell.initial_carry((B,), H))
    np.testing.assert_allclose(np.asarray(states["h"]), numpy_layer_norm_reference(kind, w, ln, xs),
                               rtol=1e-4, atol=2e-5)


def test_layer_normalised_cells_start_with_unit_gains_and_keep_their_biases():
    import jax

    lstm = cells.get("lstm", layer_norm=True)
    params = lstm.init(jax.random.key(0), 3, 4)
    assert set(params) == {"W", "U", "b", "gain", "c_gain", "c_bias"}
    np.testing.assert_array_equal(params["gain"], np.ones(16))
    np.testing.assert_array_equal(params["c_gain"], np.ones(4))
    np.testing.assert_array_equal(params["c_bias"], np.zeros(4))
    np.testing.assert_array_equal(params["b"][:4], np.ones(4))  # the forget gate's +1, now the shift after LN
    assert set(cells.get("gru", layer_norm=True).init(jax.random.key(0), 3, 4)) == {"W", "U", "b", "gain"}
    assert lstm.key == "lstm-ln" and cells.get("rnn", "relu", layer_norm=True).key == "rnn-relu-ln"
    assert cells.get("lstm", layer_norm=True) is lstm  # one object per kind: jit compiles each once
    assert not cells.get("lstm").layer_norm


def test_layer_norm_makes_a_gate_blind_to_the_scale_of_its_input():
    # LN(a) = LN(k a) for k > 0 (up to the epsilon): scaling every weight into the gates leaves the RNN's output.
    import jax

    cell = cells.get("rnn", layer_norm=True)
    params = cell.init(jax.random.key(1), 3, 6)
    xs = np.random.default_rng(5).normal(size=(5, 2, 3)).astype(np.float32)
    run = lambda p: np.asarray(cells.scan(cell, p, cell.project_inputs(p, xs), cell.initial_carry((2,), 6))[1]["h"])
    scaled = {**params, "W": params["W"] * 10.0, "U": params["U"] * 10.0}
    np.testing.assert_allclose(run(scaled), run(params), rtol=1e-4, atol=1e-5)
    plain = cells.get("rnn")  # without the normalisation the scale matters
    run_plain = lambda p: np.asarray(cells.scan(plain, p, plain.project_inputs(p, xs),
                                                plain.initial_carry((2,), 6))[1]["h"])
    assert not np.allclose(run_plain(scaled), run_plain(params), atol=1e-3)
