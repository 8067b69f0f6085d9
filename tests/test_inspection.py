"""inspect-cells: recording, the scores against direct computations, ablation, saturation, gradient reach,
the JSON schema, and (slow) finding a real quote-tracking unit in a trained model."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from charrnn import data, inspection, model, scoring
from charrnn.config import ModelConfig
from charrnn.features import Feature
from charrnn.inspection import Recording, Unit
from conftest import shouting_in_quotes

VOCAB = data.Vocabulary.from_text('abc "()\n')
CONFIG = ModelConfig(vocab_size=len(VOCAB), cell="lstm", hidden_size=6, num_layers=2, embedding_size=4)


@pytest.fixture(scope="module")
def params():
    return model.init(jax.random.key(0), CONFIG)


def text_ids(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, len(VOCAB), n).astype(np.int32)


# --- the measures against direct computations ----------------------------------------------------------------


def test_ranks_average_ties():
    x = np.array([[3.0, 1.0], [1.0, 1.0], [3.0, 2.0], [2.0, 1.0]])
    np.testing.assert_array_equal(scoring.rank_columns(x), [[3.5, 2.0], [1.0, 2.0], [3.5, 4.0], [2.0, 2.0]])


def test_auroc_is_the_probability_a_positive_outranks_a_negative():
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(60, 4)), 1)  # rounding makes ties
    positive = rng.random(60) < 0.3
    got = scoring.auroc(scoring.rank_columns(x), positive)
    for col in range(4):
        pos, neg = x[positive, col], x[~positive, col]
        wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
        assert got[col] == pytest.approx(wins / (len(pos) * len(neg)))


def test_pearson_and_spearman_match_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 3))
    y = rng.integers(0, 5, 80).astype(float)
    np.testing.assert_allclose(scoring.correlation(x, y), [np.corrcoef(x[:, j], y)[0, 1] for j in range(3)])
    rho = scoring.correlation(scoring.rank_columns(x), scoring.rank_columns(y[:, None])[:, 0])
    # Spearman = Pearson of ranks; for distinct x with tied y check against the textbook formula on ranks.
    rx = np.argsort(np.argsort(x, axis=0), axis=0) + 1.0
    ry = scoring.rank_columns(y[:, None])[:, 0]
    np.testing.assert_allclose(rho, [np.corrcoef(rx[:, j], ry)[0, 1] for j in range(3)])
    assert scoring.correlation(np.ones((5, 1)), np.arange(5.0))[0] == 0.0


def planted_recording(n=400, seed=3):
    rng = np.random.default_rng(seed)
    on = np.zeros(n, bool)
    on[50:120] = on[200:330] = True
    depth = np.abs(np.cumsum(rng.integers(-1, 2, n)))  # a reflected random walk: a real range of depths
    h = rng.normal(0, 1, (n, 5)).astype(np.float32)
    h[:, 2] = on * 2.0 + rng.normal(0, 0.3, n)  # tracks the feature
    h[:, 4] = -1.0 * on + rng.normal(0, 0.3, n)  # tracks it by going low
    c = rng.normal(0, 1, (n, 5)).astype(np.float32)
    c[:, 1] = depth + rng.normal(0, 0.2, n)  # counts depth
    features = [Feature("quoted", "binary", on, "planted"), Feature("depth", "count", depth.astype(np.int32), "planted"),
                Feature("never", "binary", np.zeros(n, bool), "planted"),
                Feature("rare", "binary", np.arange(n) < 3, "planted"),
                Feature("flat", "count", np.full(n, 2, np.int32), "planted")]
    return Recording(np.zeros(n, np.int32), {(0, "h"): h, (0, "c"): c}, np.zeros(n - 1)), features


def test_planted_units_are_found_and_ranked_first():
    recording, features = planted_recording()
    findings, unscored = inspection.score_units(recording, features, top=2)
    quoted = findings["quoted"]
    assert quoted[0].unit == Unit(0, "h", 2) and quoted[0].direction == "+" and quoted[0].score > 0.99
    assert quoted[1].unit == Unit(0, "h", 4) and quoted[1].direction == "-" and quoted[1].auroc < 0.05
    assert quoted[0].support == 200
    depth = findings["depth"][0]
    assert depth.unit == Unit(0, "c", 1) and depth.metric == "spearman" and depth.score > 0.9
    assert depth.pearson > 0.9
    assert unscored["never"] == "never fires in this text"
    assert "only 3 positive" in unscored["rare"]
    assert "constant" in unscored["flat"]
    assert set(findings) == {"quoted", "depth"}


# --- running the model -----------------------------------------------------------------------------------------


def test_recording_in_windows_equals_one_pass(params):
    ids = text_ids(300)
    recording = inspection.record(params, CONFIG, ids, window=64)
    _, states = model.run_layers(params, CONFIG, jnp.asarray(ids)[:, None], model.initial_carry(CONFIG, 1),
                                 outputs=inspection.INSPECTED_STATES["lstm"])
    for layer in range(2):
        for name in ("h", "c", "i", "f", "o"):
            np.testing.assert_allclose(recording.states[(layer, name)], states[layer][name][:, 0], rtol=2e-5, atol=1e-6)
    logits, _ = model.forward(params, CONFIG, jnp.asarray(ids)[None], model.initial_carry(CONFIG, 1))
    log_probs = np.asarray(jax.nn.log_softmax(logits[0]), np.float64)
    want = -log_probs[np.arange(299), ids[1:]]
    np.testing.assert_allclose(recording.nll, want, rtol=1e-4, atol=1e-6)


def rnn_nll_with_clamp(params, config, ids, unit, value):
    """Independent reference: a 1-layer RNN in NumPy, h[unit] held at `value` after every step."""
    layer = params["layers"][0]
    W, U, b = (np.asarray(layer[k], np.float64) for k in ("W", "U", "b"))
    E = np.asarray(params["embedding"], np.float64)
    Wy, by = np.asarray(params["head"]["W"], np.float64), np.asarray(params["head"]["b"], np.float64)
    h = np.zeros(config.hidden_size)
    nll = []
    for t in range(len(ids) - 1):
        h = np.tanh(E[ids[t]] @ W + h @ U + b)
        if unit is not None:
            h[unit] = value
        logits = h @ Wy + by
        nll.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[ids[t + 1]])
    return np.array(nll)


def test_ablation_clamps_each_unit_in_its_own_batch_row():
    config = ModelConfig(vocab_size=len(VOCAB), cell="rnn", hidden_size=5, num_layers=1, embedding_size=3)
    params = model.init(jax.random.key(1), config)
    ids = text_ids(150, seed=4)
    got = inspection.ablated_nll(params, config, ids, [Unit(0, "h", 1), Unit(0, "h", 3)], [0.25, -0.5], window=32)
    np.testing.assert_allclose(got[0], rnn_nll_with_clamp(params, config, ids, 1, 0.25), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], rnn_nll_with_clamp(params, config, ids, 3, -0.5), rtol=1e-4, atol=1e-5)
    intact = inspection.record(params, config, ids).nll
    np.testing.assert_allclose(intact, rnn_nll_with_clamp(params, config, ids, None, 0), rtol=1e-4, atol=1e-5)


def test_ablation_verdicts():
    assert inspection.verdict(0.2, 0.01) == "needed on the feature"
    assert inspection.verdict(0.001, 0.05) == "needed off the feature"  # e.g. a quote unit that marks leaving quotes
    assert inspection.verdict(0.2, 0.15) == "needed everywhere"
    assert inspection.verdict(0.001, 0.0) == "not needed" and inspection.verdict(0.009, -0.3) == "not needed"


def test_saturation_fractions(params):
    recording = inspection.record(params, CONFIG, text_ids(200))
    sat = inspection.saturation(recording, CONFIG)
    assert set(sat) == {0, 1} and set(sat[0]) == {"i", "f", "o"}
    f = recording.states[(1, "f")]
    np.testing.assert_allclose(sat[1]["f"]["left"], (f < 0.1).mean(axis=0))
    np.testing.assert_allclose(sat[1]["f"]["right"], (f > 0.9).mean(axis=0))


@pytest.mark.slow
def test_gradient_reach_matches_gradients_through_the_carry():
    """d loss_T / d h_{T-k} equals the gradient of the loss of the last k+1 steps with respect to the state
    they start from — an independent way to get the same number."""
    config = ModelConfig(vocab_size=len(VOCAB), cell="rnn", hidden_size=5, num_layers=1, embedding_size=3)
    params = model.init(jax.random.key(2), config)
    ids = text_ids(400, seed=5)
    lags, warmup = 6, 4
    got = inspection.gradient_decay(params, config, ids, lags=lags, samples=3, warmup=warmup)
    assert got.shape == (1, lags + 1)
    T = warmup + lags + 1
    starts = np.linspace(0, len(ids) - T - 1, 3).astype(int)
    for k in (0, 3, lags):
        norms = []
        for s in starts:
            window = jnp.asarray(ids[s : s + T])
            # State after position T-1-k, from the zero state.
            _, carry = model.forward(params, config, window[None, : T - k], model.initial_carry(config, 1))

            def loss_from(h):
                if k == 0:
                    logits = model.head(params, h)[0]
                else:  # run the last k characters on from h
                    logits = model.forward(params, config, window[None, T - k :], [(h,)])[0][0, -1]
                return -jax.nn.log_softmax(logits)[ids[s + T]]

            norms.append(float(jnp.linalg.norm(jax.grad(loss_from)(carry[0][0]))))
        assert got[0, k] == pytest.approx(np.mean(norms), rel=1e-4)


# --- the whole report --------------------------------------------------------------------------------------------


def test_report_json_schema(params):
    text = 'ab "abc (a) b" c\n' * 40
    features = [Feature("in_quotes", "binary", np.array([0 < (i % 17) <= 12 and (i % 17) >= 4 for i in range(len(text))]), "q"),
                Feature("column", "count", np.array([i % 17 for i in range(len(text))], np.int32), "col")]
    report = inspection.inspect(params, CONFIG, VOCAB, text, features, checkpoint="x.safetensors",
                                source={"path": "t.txt", "source": "t.txt"}, top=2, ablation_chars=200, gradients=False)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["checkpoint"] == "x.safetensors" and d["text"]["chars"] == len(text) and d["text"]["path"] == "t.txt"
    assert set(d["features"]) == {"in_quotes", "column"}
    for name, findings in d["features"].items():
        assert len(findings) == 2
        for f in findings:
            assert set(f) >= {"layer", "state", "unit", "metric", "score", "support", "ablation"}
            assert f["state"] in ("h", "c", "i", "f", "o") and 0 <= f["unit"] < 6 and f["layer"] in (0, 1)
            assert f["metric"] == ("auroc" if name == "in_quotes" else "spearman")
            assert set(f["ablation"]) == {"delta_nats_on", "delta_nats_off", "chars", "verdict"}
    assert set(d["saturation"]) == {"0", "1"} and len(d["saturation"]["0"]["f"]["left"]) == 6
    assert math.isclose(d["loss_bpc"], d["loss_nats"] / math.log(2), rel_tol=1e-5)


def test_report_carries_linear_probes_and_renders_them(params):
    from rich.console import Console

    from charrnn import probes, render

    text = 'ab "abc (a) b" c\n' * 40
    quoted = np.array([0 < (i % 17) <= 12 and (i % 17) >= 4 for i in range(len(text))])
    features = [Feature("in_quotes", "binary", quoted, "q"),
                Feature("column", "count", np.array([i % 17 for i in range(len(text))], np.int32), "col")]
    inspected = inspection.inspect_recorded(params, CONFIG, VOCAB, text, features, top=2, ablation_chars=0,
                                            source={"path": "t.txt", "source": "t.txt"})
    report = inspected.report
    want = probes.probe_layers(inspected.recording, features, cell="lstm")
    assert [(p.feature, p.layer) for p in report.probes] == [("in_quotes", 0), ("in_quotes", 1), ("column", 0),
                                                              ("column", 1)]
    assert [p.score for p in report.probes] == [p.score for p in want]
    d = json.loads(json.dumps(report.to_dict()))
    assert [p["metric"] for p in d["probes"]] == ["auroc", "auroc", "spearman", "spearman"]
    assert all(p["units"] == 12 and p["best_unit"]["state"] in ("h", "c") for p in d["probes"])
    assert "r2" in d["probes"][2] and "r2" not in d["probes"][0]
    console = Console(record=True, width=200)
    console.print(render.inspection(report))
    shown = console.export_text()
    assert "one unit or many?" in shown and "L1 " in shown
    assert not inspection.inspect(params, CONFIG, VOCAB, text, features, top=1, ablation_chars=0, probes=False).probes


def test_every_unit_scored_agrees_with_the_top_units(params):
    recording = inspection.record(params, CONFIG, text_ids(400))
    c = recording.states[(1, "c")][:, 2]
    positive = c > np.median(c)
    features = [Feature("x", "binary", positive, "")]
    scores = inspection.unit_scores(recording, features)
    assert set(scores["x"]) == set(recording.states) and scores["x"][(1, "c")][2] == 1.0
    findings, _ = inspection.score_units(recording, features, top=1)
    assert findings["x"][0].unit == Unit(1, "c", 2) and findings["x"][0].auroc == 1.0


def test_characters_outside_the_vocabulary_are_skipped_and_counted(params):
    text = "abc☃ab\n" * 20
    features = [Feature("a", "binary", np.array([c == "a" for c in text]), "a")]
    report = inspection.inspect(params, CONFIG, VOCAB, text, features, top=1, ablation_chars=0)
    assert report.text["skipped_chars"] == 20 and report.text["skipped"] == {"☃": 20}
    assert report.text["chars"] == len(text) - 20
    assert report.features[0].values.sum() == 40  # the feature was restricted to the kept characters


def test_empty_or_unknown_text_is_refused(params):
    with pytest.raises(ValueError, match="empty"):
        inspection.inspect(params, CONFIG, VOCAB, "", [], top=1)
    with pytest.raises(ValueError, match="at least 2"):
        inspection.inspect(params, CONFIG, VOCAB, "☃☃☃a", [Feature("x", "binary", np.zeros(4, bool), "")], top=1)


# --- a real model ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_trained_model_has_a_quote_unit_and_it_is_ranked_first(tmp_path):
    from charrnn import checkpoint, features, train
    from charrnn.config import TrainConfig

    text = shouting_in_quotes()
    vocab = data.Vocabulary.from_text(text)
    corpus = data.Corpus(vocab.encode(text), vocab, data.CorpusInfo("quotes.txt", "0" * 64, len(text)))
    config = ModelConfig(vocab_size=len(vocab), cell="lstm", hidden_size=16, num_layers=1, embedding_size=8)
    train.train(corpus, config, TrainConfig(batch_size=16, seq_length=50, learning_rate=2e-2, warmup_steps=20,
                                            max_steps=300, max_epochs=None, eval_every=300), tmp_path)
    ckpt = checkpoint.load(tmp_path)
    val = text[slice(*ckpt.splits.val)]
    report = inspection.inspect(checkpoint.load_params(ckpt), ckpt.model, ckpt.vocab, val,
                                features.builtin_features(val), top=3, ablation_chars=2000)
    best = report.findings["in_double_quotes"][0]
    assert best.metric == "auroc" and best.score >= 0.95
    # It tracks the quote *state*, not the case of the letter just read: at spaces alone (no case at all)
    # it still separates inside from outside.
    recording = inspection.record(checkpoint.load_params(ckpt), ckpt.model, ckpt.vocab.encode(val))
    spaces = np.array([c == " " for c in val])
    inside = features.builtin_features(val)[0].values
    assert features.builtin_features(val)[0].name == "in_double_quotes"
    a = recording.activation(best.unit)[spaces]
    ranks = scoring.rank_columns(a[:, None])
    at_spaces = float(scoring.auroc(ranks, inside[spaces])[0])
    assert max(at_spaces, 1 - at_spaces) >= 0.95
