"""The n-gram baseline: interpolated Kneser-Ney, checked against a plain count-and-smooth reference."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from charrnn import ngram
from charrnn.ngram import MAX_ORDER, NGramError, NGramModel

TRAIN = (
    "the cat sat on the mat. the dog sat on the log; a cat and a dog met at the gate.\n"
    "(the mat was flat) [the log was not] {a gate, a cat, a hat}. \"sat,\" said the cat.\n"
    "then the hat sat on the cat and the cat sat on the dog, and that was that.\n"
)
TEST = "the dog and the hat met the cat (on a mat) by the gate; xyz qq.\n"
SYMBOLS = sorted(set(TRAIN + TEST) | {"~"})  # "~" and "xyzq" never occur in training
V = len(SYMBOLS)


def encode(text: str) -> np.ndarray:
    return np.array([SYMBOLS.index(c) for c in text], np.int64)


class ReferenceKN:
    """Interpolated Kneser-Ney written out with dictionaries of tuples, one formula per line of the docstring of
    charrnn.ngram: raw counts at the highest order, continuation counts (distinct left neighbours, the start of
    the text counting as one) below it, Ney's discount per order, a uniform distribution at the bottom."""

    def __init__(self, train: list[int], vocab_size: int, order: int):
        self.V, self.M = vocab_size, order
        self.raw, self.cont = {}, {}
        for k in range(1, order + 1):
            self.raw[k] = Counter(tuple(train[i:i + k]) for i in range(len(train) - k + 1))
            left = defaultdict(set)
            for i in range(len(train) - k + 1):
                left[tuple(train[i:i + k])].add(train[i - 1] if i > 0 else "start")
            self.cont[k] = {gram: len(neighbours) for gram, neighbours in left.items()}

    @staticmethod
    def discount(counts) -> float:
        n1 = sum(1 for c in counts.values() if c == 1)
        n2 = sum(1 for c in counts.values() if c == 2)
        return n1 / (n1 + 2 * n2) if n1 else 0.5

    def p(self, k: int, history: tuple, w: int, top: bool) -> float:
        if k == 0:
            return 1.0 / self.V
        counts = self.raw[k] if top else self.cont[k]
        lower = self.p(k - 1, history[1:], w, False)
        row = {u: counts.get(history + (u,), 0) for u in range(self.V)}
        total = sum(row.values())
        if total == 0:
            return lower
        followers = sum(1 for c in row.values() if c > 0)
        d = self.discount(counts)
        return (max(row[w] - d, 0.0) + d * followers * lower) / total

    def log_prob(self, text: list[int], t: int) -> float:
        history = tuple(text[max(0, t - self.M + 1):t])
        return math.log(self.p(len(history) + 1, history, text[t], True))


@pytest.mark.parametrize("order", [1, 2, 3, 5, 8])
def test_log_probs_match_a_plain_count_and_smooth_reference(order):
    train, test = list(encode(TRAIN)), list(encode(TEST))
    reference = ReferenceKN(train, V, order)
    expected = [reference.log_prob(test, t) for t in range(len(test))]
    got = NGramModel.fit(np.array(train), V, order).log_probs(np.array(test))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_every_order_in_one_pass_equals_each_order_fitted_alone():
    train, test = encode(TRAIN), encode(TEST)
    table = NGramModel.fit(train, V, 6).log_probs_by_order(test)
    assert table.shape == (6, len(test))
    for n in range(1, 7):
        np.testing.assert_allclose(table[n - 1], NGramModel.fit(train, V, n).log_probs(test), rtol=0, atol=1e-12)


def test_streaming_table_equals_the_fitted_models_table():
    train, test = encode(TRAIN), encode(TEST)
    fitted = NGramModel.fit(train, V, 7).log_probs_by_order(test)
    np.testing.assert_array_equal(ngram.log_probs_by_order(train, V, 7, test), fitted)


def test_history_gives_the_first_positions_their_context():
    train, test = list(encode(TRAIN)), list(encode(TEST))
    model = NGramModel.fit(np.array(train), V, 4)
    reference = ReferenceKN(train, V, 4)
    whole = test[:10] + test[10:]
    got = model.log_probs(np.array(test[10:]), history=np.array(test[:10]))
    np.testing.assert_allclose(got, [reference.log_prob(whole, t) for t in range(10, len(whole))], atol=1e-9)


def test_targets_and_positions_score_chosen_symbols_in_the_texts_context():
    train, test = list(encode(TRAIN)), list(encode(TEST))
    model = NGramModel.fit(np.array(train), V, 5)
    reference = ReferenceKN(train, V, 5)
    close = SYMBOLS.index(")")
    positions = np.array([0, 3, 20, len(test) - 1])
    got = model.log_probs(np.array(test), positions=positions, targets=np.full(4, close))
    expected = [reference.log_prob(test[:t] + [close], t) for t in positions]
    np.testing.assert_allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize("order", [1, 3, 7, 20])
def test_probabilities_sum_to_one_over_the_vocabulary_for_random_contexts(order):
    rng = np.random.default_rng(order)
    train = encode(TRAIN)
    model = NGramModel.fit(train, V, order)
    contexts = [train[i:i + order - 1] for i in rng.integers(0, len(train) - order, 5)]  # seen contexts
    contexts += [rng.integers(0, V, size) for size in (0, 1, order - 1, order + 3)]  # mostly unseen ones
    for context in contexts:
        p = model.next_probs(context)
        assert p.shape == (V,)
        assert np.all(p > 0)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_symbols_never_seen_in_training_get_a_small_non_zero_probability():
    model = NGramModel.fit(encode(TRAIN), V, 3)
    p = model.next_probs(encode("the "))
    assert 0 < p[SYMBOLS.index("~")] < 1e-3 < p[SYMBOLS.index("c")]


def test_a_longer_context_predicts_a_repetitive_text_better():
    train = encode(TRAIN * 3)
    losses = -ngram.log_probs_by_order(train, V, 6, encode(TRAIN)).mean(axis=1)
    assert losses[0] > losses[1] > losses[2] > losses[5]


def test_discounts_follow_neys_formula():
    train = np.array(["abrcd".index(c) for c in "abracadabra"])
    model = NGramModel.fit(train, 5, 2)
    # Bigrams ab br ra ac ca ad da ab br ra: counts ab 2, br 2, ra 2, ac 1, ca 1, ad 1, da 1 -> n1 = 4, n2 = 3.
    assert model.discounts[1][0] == pytest.approx(4 / (4 + 2 * 3))
    # Unigram continuation counts: a {r, c, d, start} 4, b {a} 1, r {b} 1, c {a} 1, d {a} 1 -> n1 = 4, n2 = 0.
    assert model.discounts[0][1] == pytest.approx(1.0)


def test_ngram_ids_are_equal_exactly_for_equal_ngrams():
    ids = encode("abcabcabd")
    grams = ngram.ngram_ids(ids, 3)
    assert len(grams) == len(ids) - 2
    text = "abcabcabd"
    for i in range(len(grams)):
        for j in range(len(grams)):
            assert (grams[i] == grams[j]) == (text[i:i + 3] == text[j:j + 3])


@pytest.mark.parametrize("order", [0, 21, -1, 2.5])
def test_order_outside_1_to_20_is_refused(order):
    with pytest.raises(NGramError, match=f"1..{MAX_ORDER}"):
        NGramModel.fit(encode(TRAIN), V, order)
    with pytest.raises(NGramError, match=f"1..{MAX_ORDER}"):
        ngram.log_probs_by_order(encode(TRAIN), V, order, encode(TEST))


def test_bad_ids_are_refused_with_a_message_saying_what_to_fix():
    with pytest.raises(NGramError, match="empty"):
        NGramModel.fit(np.zeros(0, np.int64), V, 3)
    with pytest.raises(NGramError, match="outside"):
        NGramModel.fit(np.array([0, 1, V]), V, 3)
    model = NGramModel.fit(encode(TRAIN), V, 3)
    with pytest.raises(NGramError, match="outside"):
        model.log_probs(np.array([-1, 0]))
    with pytest.raises(NGramError, match="1-D"):
        model.log_probs(np.zeros((2, 2), np.int64))
