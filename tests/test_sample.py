"""Sampling: temperature and top-k maths, determinism, priming, batching, streaming in chunks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from charrnn import data, model, sample
from charrnn.config import ModelConfig

VOCAB = data.Vocabulary.from_text("abcdefgh \n")
CONFIG = ModelConfig(vocab_size=len(VOCAB), cell="gru", hidden_size=16, num_layers=2, embedding_size=8)


@pytest.fixture(scope="module")
def params():
    # Sharpen a random model a little so samples are not uniform noise.
    p = model.init(jax.random.key(7), CONFIG)
    return {**p, "head": {"W": p["head"]["W"] * 4, "b": p["head"]["b"]}}


def draw(params, **options):
    return sample.sample(params, CONFIG, VOCAB, **{"length": 60, **options})


def test_same_seed_same_text_other_seed_other_text(params):
    assert draw(params, seed=3) == draw(params, seed=3)
    assert draw(params, seed=3) != draw(params, seed=4)


def test_text_does_not_depend_on_the_chunk_size(params):
    whole = draw(params, seed=5, length=50, chunk=128)
    assert draw(params, seed=5, length=50, chunk=7) == whole
    pieces = list(sample.stream(params, CONFIG, VOCAB, length=50, seed=5, chunk=7))
    assert [p.shape[1] for p in pieces] == [7] * 7 + [1]


def test_temperature_zero_is_greedy_decoding(params):
    got = draw(params, temperature=0.0, prime="ab", seed=1)[0]
    assert draw(params, temperature=0.0, prime="ab", seed=99)[0] == got
    # Reference: the model one step at a time, argmax in NumPy.
    carry = model.initial_carry(CONFIG, 1)
    for token in VOCAB.encode("\nab"):
        logits, carry = model.step(params, CONFIG, jnp.array([token]), carry)
    want = []
    for _ in range(60):
        token = int(np.argmax(np.asarray(logits[0])))
        want.append(token)
        logits, carry = model.step(params, CONFIG, jnp.array([token]), carry)
    assert got == VOCAB.decode(want)


def test_top_k_of_one_is_greedy_at_any_temperature(params):
    assert draw(params, temperature=1.5, top_k=1, seed=2) == draw(params, temperature=0.0)


def test_draws_follow_softmax_of_logits_over_temperature():
    logits = jnp.log(jnp.array([0.5, 0.25, 0.15, 0.1]))
    n = 40_000
    for temperature in (1.0, 0.5, 2.0):
        noise = jax.random.gumbel(jax.random.key(0), (n, 4))
        tokens = sample.choose(noise, jnp.tile(logits, (n, 1)), jnp.float32(temperature), jnp.int32(0))
        freq = np.bincount(np.asarray(tokens), minlength=4) / n
        scaled = np.exp(np.asarray(logits) / temperature)
        np.testing.assert_allclose(freq, scaled / scaled.sum(), atol=0.01)


def test_top_k_renormalises_over_the_k_likeliest():
    logits = jnp.log(jnp.array([0.1, 0.5, 0.15, 0.25]))
    n = 40_000
    tokens = sample.choose(jax.random.gumbel(jax.random.key(1), (n, 4)), jnp.tile(logits, (n, 1)), jnp.float32(1.0),
                           jnp.int32(2))
    freq = np.bincount(np.asarray(tokens), minlength=4) / n
    np.testing.assert_allclose(freq, [0, 0.5 / 0.75, 0, 0.25 / 0.75], atol=0.01)


def test_the_noise_of_a_position_comes_from_its_own_key():
    key = jax.random.key(4)
    noise = sample.gumbel_noise(key, jnp.int32(10), 3, (2, 5))
    assert noise.shape == (3, 2, 5)
    for t in range(3):
        np.testing.assert_array_equal(noise[t], jax.random.gumbel(jax.random.fold_in(key, 10 + t), (2, 5)))


def test_many_samples_at_once_get_shorter_chunks_and_the_same_text(params, monkeypatch):
    whole = draw(params, seed=6, length=40, num_samples=3)
    # Room for the noise of 5 steps of 3 samples: chunks of 5 characters, the same samples.
    monkeypatch.setattr(sample, "MAX_NOISE", 5 * 3 * len(VOCAB))
    pieces = list(sample.stream(params, CONFIG, VOCAB, length=40, seed=6, num_samples=3))
    assert [p.shape for p in pieces] == [(3, 5)] * 8
    assert [VOCAB.decode(row) for row in np.concatenate(pieces, axis=1)] == whole


def test_a_batch_on_columns_draws_what_the_model_gives_step_by_step(params):
    n, length = sample.COLUMNS_MIN_BATCH, 30  # enough samples at once for the loop to run on columns
    got = draw(params, seed=8, num_samples=n, temperature=0.8, length=length)
    # Reference: the model one step at a time on rows, and the Gumbel-max draw in NumPy with the same noise.
    noise = np.asarray(sample.gumbel_noise(jax.random.key(8), 0, length, (n, len(VOCAB))))
    newlines = jnp.asarray(VOCAB.encode("\n").repeat(n))
    logits, carry = model.step(params, CONFIG, newlines, model.initial_carry(CONFIG, n))
    want = []
    for t in range(length):
        want.append(np.argmax(np.asarray(logits) / 0.8 + noise[t], axis=-1))
        logits, carry = model.step(params, CONFIG, jnp.asarray(want[-1], jnp.int32), carry)
    assert got == [VOCAB.decode(row) for row in np.stack(want, axis=1)]
    assert len(set(got)) > 1
    assert draw(params, num_samples=n, temperature=0.0) == draw(params, num_samples=1, temperature=0.0) * n


def test_prime_sets_the_state_after_a_newline(params):
    # The first generated character follows newline + prime: at temperature 0, the argmax after them.
    prime = "cafe"
    context = jnp.asarray(VOCAB.encode("\n" + prime))[None]
    logits, _ = model.forward(params, CONFIG, context, model.initial_carry(CONFIG, 1))
    first = draw(params, prime=prime, temperature=0.0, length=1)[0]
    assert first == VOCAB.symbols[int(np.argmax(np.asarray(logits[0, -1])))]


def test_samples_of_a_batch_differ_and_each_is_valid(params):
    samples = draw(params, num_samples=4, seed=8, temperature=1.0)
    assert len(samples) == 4 and len(set(samples)) == 4
    assert all(len(s) == 60 and set(s) <= set(VOCAB.symbols) for s in samples)


def test_prime_with_unknown_characters_names_them(params):
    with pytest.raises(sample.SampleError, match="'z'.*'☃'"):
        draw(params, prime="a z ☃")


@pytest.mark.parametrize(
    "options, message",
    [({"temperature": -0.1}, "temperature"), ({"length": -1}, "length"), ({"top_k": -1}, "top-k"),
     ({"num_samples": 0}, "num-samples"), ({"temperature": float("nan")}, "temperature")],
)
def test_options_out_of_range_are_refused(params, options, message):
    with pytest.raises(sample.SampleError, match=message):
        draw(params, **options)


def test_zero_length_gives_empty_samples(params):
    assert draw(params, length=0, num_samples=2) == ["", ""]


def test_byte_level_vocabulary_gives_bytes():
    vocab = data.Vocabulary.of_bytes()
    config = ModelConfig(vocab_size=256, cell="rnn", hidden_size=8, num_layers=1, embedding_size=4)
    out = sample.sample(model.init(jax.random.key(0), config), config, vocab, length=20, seed=0)[0]
    assert isinstance(out, bytes) and len(out) == 20
