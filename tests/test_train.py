"""Training: truncated BPTT windows and carry, the jitted step, evaluation, the loop, resume and determinism."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from charrnn import checkpoint, data, distributed, model, optim, rtrl, runlog, sample, steps, train, validation
from charrnn.config import ModelConfig, TrainConfig
from conftest import fast_first

TINY = ModelConfig(vocab_size=6, cell="lstm", hidden_size=8, num_layers=2, embedding_size=4)


def random_streams(B, L, vocab=6, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, vocab, (B, L)), jnp.int32), jnp.asarray(rng.integers(0, vocab, (B, L)), jnp.int32)


@pytest.mark.slow
def test_windows_carry_state_and_reset_it_each_epoch():
    """With a zero learning rate the step's losses must equal a plain loop over truncated BPTT:
    window j of every stream, state carried from window j-1, zero state at the start of each epoch."""
    B, T, windows = 2, 4, 3
    inputs, targets = random_streams(B, T * windows)
    config = TrainConfig(batch_size=B, seq_length=T)
    frozen = optax.sgd(0.0)
    state = steps.init_state(TINY, config, frozen, B)
    params = jax.tree.map(jnp.copy, state.params)
    step = steps.make_train_step(TINY, config, frozen, T, windows)
    got = []
    for _ in range(2 * windows + 1):
        state, metrics = step(state, inputs, targets)
        got.append(float(metrics["loss"]))

    want, carry = [], None
    for s in range(2 * windows + 1):
        j = s % windows
        if j == 0:
            carry = model.initial_carry(TINY, B)
        loss, carry = model.loss(params, TINY, inputs[:, j * T : (j + 1) * T], targets[:, j * T : (j + 1) * T], carry)
        want.append(float(loss))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert int(state.step) == 2 * windows + 1


def test_step_applies_the_gradient_of_the_window_loss():
    B, T = 2, 5
    inputs, targets = random_streams(B, 3 * T, seed=1)
    config = TrainConfig(batch_size=B, seq_length=T)
    sgd = optax.sgd(0.5)
    state = steps.init_state(TINY, config, sgd, B)
    before = jax.tree.map(jnp.copy, state.params)
    carry = model.initial_carry(TINY, B)
    grad = jax.grad(lambda p: model.loss(p, TINY, inputs[:, :T], targets[:, :T], carry)[0])(before)
    state, _ = steps.make_train_step(TINY, config, sgd, T, 3)(state, inputs, targets)
    for new, old, g in zip(jax.tree.leaves(state.params), jax.tree.leaves(before), jax.tree.leaves(grad)):
        np.testing.assert_allclose(new, old - 0.5 * g, rtol=1e-5, atol=1e-7)


def test_the_model_is_a_moving_average_of_the_weights():
    """With ``weight_average`` d the state keeps a_k = d a_{k-1} + (1 - d) p_k from a_0 = p_0 (p_k: the weights
    after step k), checked against that recurrence in NumPy; the model (`steps.model_params`) is the average."""
    B, T, d = 2, 4, 0.75
    inputs, targets = random_streams(B, 5 * T, seed=4)
    config = TrainConfig(batch_size=B, seq_length=T, weight_average=d)
    optimizer = optim.make_optimizer(config, 10)
    state = steps.init_state(TINY, config, optimizer, B)
    want = [np.asarray(p, np.float64) for p in jax.tree.leaves(state.params)]
    step = steps.make_train_step(TINY, config, optimizer, T, 5)
    for _ in range(4):
        state, metrics = step(state, inputs, targets)
        assert bool(metrics["ok"])
        want = [d * a + (1 - d) * np.asarray(p, np.float64) for a, p in zip(want, jax.tree.leaves(state.params))]
    got = jax.tree.leaves(steps.model_params(state))
    assert len(got) == len(want)
    for a, w, p in zip(got, want, jax.tree.leaves(state.params)):
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, p) for a, p in zip(got, jax.tree.leaves(state.params)))  # it lags the weights
    unaveraged = steps.init_state(TINY, TrainConfig(batch_size=B, seq_length=T), optimizer, B)
    assert unaveraged.average is None and steps.model_params(unaveraged) is unaveraged.params


@pytest.mark.parametrize("weight_average", [0.0, 0.9])
def test_non_finite_step_changes_nothing_and_is_counted(weight_average):
    B, T = 2, 4
    inputs, targets = random_streams(B, 2 * T, seed=2)
    config = TrainConfig(batch_size=B, seq_length=T, weight_average=weight_average)
    optimizer = optim.make_optimizer(config, 10)
    state = steps.init_state(TINY, config, optimizer, B)
    poisoned = {**state.params, "embedding": state.params["embedding"].at[int(inputs[0, 0])].set(jnp.nan)}
    state = state._replace(params=poisoned)
    before = jax.tree.map(np.asarray, state)
    state, metrics = steps.make_train_step(TINY, config, optimizer, T, 2)(state, inputs, targets)
    assert not bool(metrics["ok"]) and int(state.bad_steps) == 1 and int(state.step) == 1
    kept, was = (state.params, state.opt_state, state.average), (before.params, before.opt_state, before.average)
    assert len(jax.tree.leaves(kept)) == len(jax.tree.leaves(was)) > 0
    for new, old in zip(jax.tree.leaves(kept), jax.tree.leaves(was)):
        np.testing.assert_array_equal(new, old)


def test_an_exploding_update_is_refused():
    B, T = 2, 4
    inputs, targets = random_streams(B, 2 * T, seed=3)
    config = TrainConfig(batch_size=B, seq_length=T)
    absurd = optax.sgd(jnp.inf)
    state = steps.init_state(TINY, config, absurd, B)
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = steps.make_train_step(TINY, config, absurd, T, 2)(state, inputs, targets)
    assert not bool(metrics["ok"])
    for new, old in zip(jax.tree.leaves(state.params), jax.tree.leaves(before)):
        np.testing.assert_array_equal(new, old)


def test_evaluation_covers_the_whole_split_with_full_context():
    ids = np.random.default_rng(4).integers(0, 6, 203)
    params = model.init(jax.random.key(0), TINY)
    B, T = 3, 8
    got = float(validation.make_evaluate(TINY, T)(params, *(jnp.asarray(a) for a in data.eval_streams(ids, B, T))))
    # Independent: each stream as one long sequence through forward, mean NLL over all targets.
    per_stream = int(np.ceil((len(ids) - 1) / B))
    total, count = 0.0, 0
    for b in range(B):
        lo, hi = b * per_stream, min((b + 1) * per_stream, len(ids) - 1)
        logits, _ = model.forward(params, TINY, jnp.asarray(ids[lo:hi])[None], model.initial_carry(TINY, 1))
        log_probs = jax.nn.log_softmax(np.asarray(logits[0], np.float64), axis=-1)
        total -= float(np.take_along_axis(np.asarray(log_probs), ids[lo + 1 : hi + 1, None], -1).sum())
        count += hi - lo
    assert got == pytest.approx(total / count, rel=1e-5)


# --- the loop on a real (tiny) corpus ------------------------------------------------------------------------

PERIODIC = "the cat sat on a mat; " * 300


def corpus_of(text, name="corpus.txt"):
    vocab = data.Vocabulary.from_text(text)
    return data.Corpus(vocab.encode(text), vocab, data.CorpusInfo(name, "0" * 64, len(text)))


@pytest.mark.slow
def test_learns_a_periodic_corpus_and_greedy_sampling_reproduces_it(tmp_path):
    corpus = corpus_of(PERIODIC)
    model_config = ModelConfig(vocab_size=len(corpus.vocab), cell="lstm", hidden_size=32, num_layers=1, embedding_size=8)
    config = TrainConfig(batch_size=8, seq_length=32, learning_rate=1e-2, warmup_steps=10, max_steps=300,
                         max_epochs=None, eval_every=300)
    events = []
    train.train(corpus, model_config, config, tmp_path, callback=events.append)
    ckpt = checkpoint.load(tmp_path)
    params = checkpoint.load_params(ckpt)
    # Near-zero loss once the model has seen enough to know where in the period it is.
    ids = jnp.asarray(corpus.ids[:401])[None]
    logits, _ = model.forward(params, ckpt.model, ids[:, :-1], model.initial_carry(ckpt.model, 1))
    per_char = -jnp.take_along_axis(jax.nn.log_softmax(logits[0]), ids[0, 1:, None], -1)[:, 0]
    assert float(per_char[40:].mean()) < 0.01
    text = sample.sample(params, ckpt.model, ckpt.vocab, length=200, prime="the cat ", temperature=0.0)[0]
    assert "the cat " + text == PERIODIC[: 8 + 200]
    logged = [e for e in events if isinstance(e, runlog.Logged)]
    assert logged[-1].train_nats < logged[0].train_nats / 10


def short_run(tmp_path, stop_at=None, resume=None, max_steps=24, seed=0, segment_length=0, weight_average=0.0):
    corpus = corpus_of("".join(chr(97 + (i * i) % 7) for i in range(3000)))
    model_config = ModelConfig(vocab_size=len(corpus.vocab), cell="gru", hidden_size=8, num_layers=2,
                               embedding_size=4, dropout=0.1)
    config = TrainConfig(batch_size=4, seq_length=16, max_steps=max_steps, max_epochs=None, eval_every=10, seed=seed,
                         segment_length=segment_length, weight_average=weight_average)
    steps = []
    stop = (lambda: len(steps) >= stop_at) if stop_at else (lambda: False)
    callback = lambda e: steps.append(e.step) if isinstance(e, runlog.Logged) else None
    config = TrainConfig(**{**config.to_dict(), "log_every": 1})
    return train.train(corpus, model_config, config, tmp_path, resume=resume, callback=callback, should_stop=stop)


def final_params(run_dir):
    return [np.asarray(a) for a in jax.tree.leaves(checkpoint.load(run_dir / checkpoint.LATEST).arrays)]


@pytest.mark.slow
def test_same_seed_gives_a_bit_identical_run_and_another_seed_does_not(tmp_path):
    short_run(tmp_path / "a")
    short_run(tmp_path / "b")
    short_run(tmp_path / "c", seed=1)
    a, b, c = (final_params(tmp_path / x) for x in "abc")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.slow
# contiguous streams; shuffled segments of 3 windows; the weights' moving average saved and resumed
@pytest.mark.parametrize("segment_length, weight_average", [(0, 0.0), (48, 0.0), (0, 0.9)])
def test_interrupted_run_saves_and_resumes_to_the_same_parameters(tmp_path, segment_length, weight_average):
    how = dict(segment_length=segment_length, weight_average=weight_average)
    short_run(tmp_path / "whole", **how)
    stopped = short_run(tmp_path / "part", stop_at=13, **how)  # inside a segment
    assert stopped.reason == "interrupted" and stopped.step == 13
    assert checkpoint.load(tmp_path / "part" / checkpoint.LATEST).state["step"] == 13
    resumed = short_run(tmp_path / "part", resume=checkpoint.load(tmp_path / "part" / checkpoint.LATEST), **how)
    assert resumed.step == 24
    whole, part = final_params(tmp_path / "whole"), final_params(tmp_path / "part")
    assert all(np.array_equal(x, y) for x, y in zip(whole, part))


@pytest.mark.slow
@pytest.mark.parametrize("weight_average", [0.0, 0.9])
def test_best_checkpoint_has_the_lowest_validation_loss(tmp_path, weight_average):
    """What is validated is what is saved as the model: with a moving average of the weights, the average."""
    finished = short_run(tmp_path, weight_average=weight_average)
    history = checkpoint.load(tmp_path / checkpoint.LATEST).history
    assert [h["step"] for h in history] == [10, 20, 24]
    best = checkpoint.load(tmp_path / checkpoint.BEST)
    assert best.state["val_nats"] == min(h["val_nats"] for h in history) == finished.best_val_nats
    # The loop validates a chunk at a time; its number must be that of the whole split, evaluated afresh.
    latest = checkpoint.load(tmp_path / checkpoint.LATEST)
    lo, hi = latest.splits.val
    ids = corpus_of("".join(chr(97 + (i * i) % 7) for i in range(3000))).ids[lo:hi]
    arrays = (jnp.asarray(a) for a in data.eval_streams(ids, 4, 16))
    expected = float(validation.make_evaluate(latest.model, 16)(checkpoint.load_params(latest), *arrays))
    assert history[-1]["val_nats"] == pytest.approx(expected, rel=1e-5)
    averaged = any(name.startswith("training_params/") for name in latest.arrays)
    assert averaged == (weight_average > 0)  # the weights training goes on from, kept beside their average


def test_eval_every_auto_stretches_only_for_a_validation_longer_than_a_twentieth():
    # A step costing 1 and 250 steps between passes: a pass costing up to 12.5 keeps 250, 12.6 needs 500.
    assert validation.auto_eval_every(0.0, 1.0) == 250
    assert validation.auto_eval_every(12.5, 1.0) == 250
    assert validation.auto_eval_every(12.6, 1.0) == 500
    assert validation.auto_eval_every(100.0, 0.5) == 250 * 16  # 100 / (0.05 × 250 × 0.5) = 16


def test_eval_every_auto_validates_as_often_as_the_timed_pass_allows(tmp_path, monkeypatch):
    timed = []

    def every_15_steps(validation_s, step_s):
        timed.append((validation_s, step_s))
        return 15

    monkeypatch.setattr(validation, "EVAL_EVERY", 5)
    monkeypatch.setattr(validation, "auto_eval_every", every_15_steps)
    corpus = corpus_of("".join(chr(97 + (i * i) % 7) for i in range(3000)))
    model_config = ModelConfig(vocab_size=len(corpus.vocab), cell="gru", hidden_size=8, num_layers=1,
                               embedding_size=4)
    config = TrainConfig(batch_size=4, seq_length=16, max_steps=34, max_epochs=None, eval_every=None)
    train.train(corpus, model_config, config, tmp_path)
    # The first pass at EVAL_EVERY; from then on the interval the timing gave; and one at the end.
    assert [h["step"] for h in checkpoint.load(tmp_path / checkpoint.LATEST).history] == [5, 15, 30, 34]
    assert len(timed) == 4 and all(v > 0 and s > 0 for v, s in timed)  # every pass is timed


# --- windows fed from the host, and validation a chunk at a time (what `train` runs) ---------------------------


@pytest.mark.slow
def test_the_window_step_is_the_streams_step_bit_for_bit():
    B, T, windows = 3, 5, 4
    ids = np.random.default_rng(5).integers(0, 6, B * T * windows + 1 + 2)
    inputs, targets = data.streams(ids, B)
    config = TrainConfig(batch_size=B, seq_length=T, warmup_steps=2)
    optimizer = optim.make_optimizer(config, 20)
    # Small to compile; with dropout, whose key must follow the step alike in both.
    mc = ModelConfig(vocab_size=6, cell="gru", hidden_size=8, num_layers=1, embedding_size=4, dropout=0.2)
    by_streams = steps.make_train_step(mc, config, optimizer, T, windows)
    by_window = steps.make_window_step(mc, config, optimizer, windows)
    feed = data.TrainWindows(ids, B, T, dtype=np.dtype(np.int32))
    a = steps.init_state(mc, config, optimizer, B)
    b = jax.tree.map(jnp.copy, a)  # each step donates its state
    for s in range(2 * windows + 1):  # across an epoch boundary: the carry reset
        a, ma = by_streams(a, jnp.asarray(inputs), jnp.asarray(targets))
        b, mb = by_window(b, jnp.asarray(feed(s % windows)))
        assert float(ma["loss"]) == float(mb["loss"])
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("chunk_chars, row_multiple", fast_first([(24, 4), (40, 1), (10**6, 1)]))
def test_validation_in_chunks_is_validation_of_the_whole_split(chunk_chars, row_multiple):
    ids = np.random.default_rng(6).integers(0, 6, 203)
    params = model.init(jax.random.key(1), TINY)
    B, T = 3, 8
    whole = float(validation.make_evaluate(TINY, T)(params, *(jnp.asarray(a) for a in data.eval_streams(ids, B, T))))
    windows = data.EvalWindows(ids, B, T, row_multiple=row_multiple, chunk_chars=chunk_chars)
    run = validation.make_evaluate_chunk(TINY, T)
    carry, total, count = model.initial_carry(TINY, windows.batch_size), 0.0, 0.0
    for c in range(windows.num_chunks):
        chunk, valid = windows(c)
        carry, sums = run(params, carry, jnp.asarray(chunk), jnp.asarray(valid))
        total, count = total + float(sums[0]), count + float(sums[1])
    assert count == len(ids) - 1
    assert total / count == pytest.approx(whole, rel=1e-6)


def test_validation_in_bfloat16_multiplies_bfloat16_operands_within_their_rounding():
    """`Validator(..., precision="bfloat16")`, as a run trained on bfloat16 products validates: the compiled program
    multiplies bfloat16 operands (the float32 one none), and its loss is within bfloat16's rounding of the exact
    one (`make_evaluate`, the whole split at once), and not equal to it."""
    ids = np.random.default_rng(7).integers(0, 6, 403)
    config = ModelConfig(vocab_size=6, cell="lstm", hidden_size=32, num_layers=2, embedding_size=4)
    params = model.init(jax.random.key(2), config)
    B, T = 3, 8
    exact = float(validation.make_evaluate(config, T)(params, *(jnp.asarray(a) for a in data.eval_streams(ids, B, T))))
    validators = {precision: validation.Validator(ids, config, B, T, distributed.placement(), params, precision)
                  for precision in ("float32", "bfloat16")}
    assert "bf16" in validators["bfloat16"].run.as_text() and "bf16" not in validators["float32"].run.as_text()
    assert validators["float32"](params) == pytest.approx(exact, rel=1e-6)
    mixed = validators["bfloat16"](params)
    assert mixed != exact and mixed == pytest.approx(exact, rel=1e-2)


def test_a_run_validates_in_its_training_precision(tmp_path, monkeypatch):
    asked = []

    def recording(*args):
        asked.append(args[-1])
        return validation.Validator(*args)

    monkeypatch.setattr(train, "Validator", recording)
    corpus = corpus_of("".join(chr(97 + (i * i) % 7) for i in range(3000)))
    model_config = ModelConfig(vocab_size=len(corpus.vocab), cell="lstm", hidden_size=8, num_layers=1,
                               embedding_size=4)
    for precision in ("bfloat16", "float32"):
        config = TrainConfig(batch_size=4, seq_length=16, max_steps=2, max_epochs=None, precision=precision)
        train.train(corpus, model_config, config, tmp_path / precision)
    assert asked == ["bfloat16", "float32"]



# --- how many devices a run uses when not told -------------------------------------------------------------------

_Devices = collections.namedtuple("_Devices", "asked num_processes devices")


@pytest.mark.parametrize("batch_size,num_train,visible,expected", [
    (50, 10_000, 4, 2),   # 50 splits over 2, not 4 (nor 3)
    (48, 10_000, 4, 4),
    (7, 10_000, 2, 1),    # a prime batch: one device
    (50, 31, 2, 1),       # a tiny corpus shrinks the batch to 3 streams of 10, which split over 1
    (50, 10_000, 1, 1),
])
def test_a_placement_not_asked_for_narrows_to_the_most_devices_that_split_the_batch(
        monkeypatch, batch_size, num_train, visible, expected):
    monkeypatch.setattr(distributed, "placement", lambda devices: _Devices(False, 1, devices))
    config = TrainConfig(batch_size=batch_size, seq_length=10)
    assert distributed.fit_placement(_Devices(False, 1, visible), num_train, config).devices == expected


def test_a_placement_asked_for_or_over_several_processes_stays_as_it_is(monkeypatch):
    monkeypatch.setattr(distributed, "placement", lambda devices: pytest.fail("narrowed"))
    config = TrainConfig(batch_size=50, seq_length=10)
    for given in (_Devices(True, 1, 4), _Devices(False, 2, 4)):  # --devices 4 then fails with what would work
        assert distributed.fit_placement(given, 10_000, config) is given


# --- continuous training and RTRL --------------------------------------------------------------------------------


def text_streams(B, L, vocab=6, seed=0):
    """B streams of L + 1 random ids: inputs (B, L), targets (the inputs shifted by one), and window j of T
    (B, T + 1) as training reads it."""
    ids = np.random.default_rng(seed).integers(0, vocab, (B, L + 1)).astype(np.int32)
    return jnp.asarray(ids[:, :-1]), jnp.asarray(ids[:, 1:]), lambda T, j: ids[:, j * T:(j + 1) * T + 1]


@pytest.mark.parametrize("reset", fast_first(["never", "epoch"]))
def test_the_state_is_reset_each_epoch_or_never(reset):
    """With one window per epoch, every step starts an epoch: "epoch" starts it from the zero state, "never"
    (continuous training) from where the last one ended — the losses of a plain loop over the text either way."""
    B, T = 2, 4
    inputs, targets, window_of = text_streams(B, 3 * T, seed=2)
    config = TrainConfig(batch_size=B, seq_length=T, state_reset=reset)
    frozen = optax.sgd(0.0)
    state = steps.init_state(TINY, config, frozen, B)
    step = steps.make_window_step(TINY, config, frozen, reset_every=1)
    carry, params = model.initial_carry(TINY, B), jax.tree.map(jnp.copy, state.params)
    for j in range(3):
        state, metrics = step(state, window_of(T, j))
        if reset == "epoch":
            carry = model.initial_carry(TINY, B)
        want, carry = model.loss(params, TINY, inputs[:, j * T:(j + 1) * T], targets[:, j * T:(j + 1) * T], carry)
        np.testing.assert_allclose(float(metrics["loss"]), float(want), rtol=1e-5)


@pytest.mark.parametrize("kind", fast_first(["rnn", "lstm"]))
def test_an_rtrl_step_applies_bptts_gradient_and_carries_the_history(kind):
    """`--gradient rtrl`: the first window's update is BPTT's (jax.grad of the plain scan's loss); with the state
    never reset and no update between, the second window's gradient flows back through the first window too,
    as BPTT's over the two windows' text does."""
    mc = ModelConfig(vocab_size=6, cell=kind, hidden_size=4, num_layers=1, embedding_size=3)
    B, T = 2, 5
    inputs, targets, window_of = text_streams(B, 2 * T, seed=3)
    config = TrainConfig(batch_size=B, seq_length=T, gradient="rtrl", state_reset="never")
    sgd = optax.sgd(1.0)
    state = steps.init_state(mc, config, sgd, B)
    params = jax.tree.map(jnp.copy, state.params)
    step = steps.make_rtrl_step(mc, config, sgd, reset_every=2)
    zero = model.initial_carry(mc, B)

    def window_loss(p, j, carry):
        return model.loss(p, mc, inputs[:, j * T:(j + 1) * T], targets[:, j * T:(j + 1) * T], carry, fast=False)

    state, _ = step(state, window_of(T, 0))
    want = jax.grad(lambda p: window_loss(p, 0, zero)[0])(params)
    for new, old, g in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), jax.tree.leaves(want)):
        np.testing.assert_allclose(new, old - g, rtol=1e-4, atol=1e-6)

    frozen = optax.sgd(0.0)  # no update: the carried sensitivities are exact
    state = steps.init_state(mc, config, frozen, B)._replace(params=jax.tree.map(jnp.copy, params))  # donated
    step = steps.make_rtrl_step(mc, config, frozen, reset_every=2)
    state, _ = step(state, window_of(T, 0))  # the first window; then the second's gradient, from its state
    second = window_of(T, 1)
    got_grads = rtrl.rtrl_gradient(params, mc, second[:, :-1], second[:, 1:], state.carry, state.sensitivities)[1]
    through_both = jax.grad(lambda p: window_loss(p, 1, window_loss(p, 0, zero)[1])[0])(params)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(through_both)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
