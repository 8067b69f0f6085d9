"""`charrnn evaluate`'s library: character classes, bracket matching, the oracles, the report."""

from __future__ import annotations

import json
import math
from collections import Counter

import jax
import numpy as np
import pytest

from charrnn import evaluation, model, ngram
from charrnn.config import ModelConfig
from charrnn.data import Vocabulary
from charrnn.evaluation import CATEGORIES, EvaluationError
from conftest import fast_first


def pairs(text: str) -> list[tuple[int, int, str]]:
    """(opener position, closer position, closer) of every matched closer."""
    c = evaluation.match_closers(text)
    return [(int(p - d), int(p), s) for p, d, s in zip(c.positions, c.distances, c.symbols)]


# --- character classes ---------------------------------------------------------------------------------------


def test_symbols_fall_into_the_five_classes():
    classes = evaluation.symbol_classes(["a", "Z", "é", "7", " ", "\n", "\t", ".", "(", "+", "_", "\x00"])
    names = [evaluation.CLASSES[i] for i in classes]
    assert names == ["letters"] * 3 + ["digits"] + ["whitespace"] * 3 + ["punctuation"] * 4 + ["other"]


def test_bytes_above_ascii_are_other_in_a_byte_level_vocabulary():
    classes = evaluation.symbol_classes([chr(0xE9), "a"], byte_level=True)
    assert [evaluation.CLASSES[i] for i in classes] == ["other", "letters"]


def test_loss_by_class_averages_each_class_and_leaves_absent_ones_nan():
    classes = evaluation.symbol_classes(["a", " ", "."])
    by_class = evaluation.loss_by_class(np.array([1.0, 3.0, 2.0, 0.5]), np.array([0, 0, 1, 2]), classes)
    assert by_class["letters"] == (2, 2.0)
    assert by_class["whitespace"] == (1, 2.0)
    assert by_class["punctuation"] == (1, 0.5)
    assert by_class["digits"][0] == 0 and math.isnan(by_class["digits"][1])


# --- brackets ------------------------------------------------------------------------------------------------


def test_nested_brackets_close_the_innermost_opener_of_their_kind():
    #        0123456789012
    text = "a(b[c]{d(e)})"
    assert pairs(text) == [(3, 5, "]"), (8, 10, ")"), (6, 11, "}"), (1, 12, ")")]


def test_kinds_have_separate_stacks():
    assert pairs("([)]") == [(0, 2, ")"), (1, 3, "]")]


def test_unmatched_closers_and_unclosed_openers_are_skipped():
    assert pairs(") (a) ( ]") == [(2, 4, ")")]


def test_straight_quotes_alternate_and_curly_quotes_pair():
    #        0123456789012345
    text = '"ab" x "c" “d”'
    assert pairs(text) == [(0, 3, '"'), (7, 9, '"'), (11, 13, "”")]


def test_a_blank_line_forgets_an_open_quote():
    # The first paragraph's quote is never closed; the second paragraph starts afresh.
    text = '"one\n \n"two" x'
    assert pairs(text) == [(7, 11, '"')]


def test_escaped_quotes_and_the_quote_character_literal_are_not_quotes():
    assert pairs(r'"a\"b" c') == [(0, 5, '"')]
    assert pairs('c == \'"\' && "x"') == [(12, 14, '"')]
    assert pairs(r'"a\\" "b"') == [(0, 4, '"'), (6, 8, '"')]  # an escaped backslash does not escape the quote


def test_accuracy_by_distance_counts_p_at_least_a_half_per_bucket():
    distances = np.array([1, 10, 11, 60, 61, 500])
    p_network = np.array([0.9, 0.4, 0.5, 0.8, 0.7, 0.1])
    p_ngram = np.array([0.9, 0.9, 0.1, 0.1, 0.2, 0.6])
    buckets = evaluation.accuracy_by_distance(distances, p_network, p_ngram)
    assert [b.label for b in buckets] == ["1-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61+"]
    assert [b.count for b in buckets] == [2, 1, 0, 0, 0, 1, 2]
    assert [b.network_accuracy for b in buckets] == [0.5, 1.0, None, None, None, 1.0, 0.5]
    assert [b.ngram_accuracy for b in buckets] == [1.0, 0.0, None, None, None, 0.0, 0.5]


# --- oracles -------------------------------------------------------------------------------------------------


def test_memory_oracle_fires_where_the_same_context_was_followed_by_the_same_symbol_before():
    ids = np.array([ord(c) for c in "abcXabcXabcY"])
    # With 3 symbols of context: from the second X on, every 4-symbol string repeats one seen before, until the
    # Y, whose "abcY" is new.
    mask = evaluation.memory_mask(ids, context=3)
    assert np.flatnonzero(mask).tolist() == [7, 8, 9, 10]
    # With 1 symbol: the second time round every pair has been seen, but not "cY".
    assert np.flatnonzero(evaluation.memory_mask(ids, context=1)).tolist() == [5, 6, 7, 8, 9, 10]


def test_words_rare_in_training_and_word_starts():
    counts = evaluation.word_counts("the cat the cat the cat the cat the cat dog")
    assert counts == Counter({"the": 5, "cat": 5, "dog": 1})
    text = "the dog, cat_2!"
    rare = evaluation.rare_word_mask(text, counts, min_count=5)
    assert "".join(c if r else "." for c, r in zip(text, rare)) == "....dog..cat_2."
    starts = evaluation.word_start_mask(text)
    assert np.flatnonzero(starts).tolist() == [0, 4, 9]


def test_errors_are_peeled_off_in_the_papers_order():
    p = np.array([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2])
    oracles = {
        "ngram":       np.array([1, 1, 0, 0, 0, 0, 0, 0], bool),
        "memory":      np.array([0, 1, 1, 0, 0, 0, 0, 0], bool),
        "rare_word":   np.array([0, 0, 1, 1, 0, 0, 0, 0], bool),
        "word_start":  np.array([0, 0, 0, 1, 1, 0, 0, 0], bool),
        "punctuation": np.array([0, 0, 0, 0, 1, 1, 0, 0], bool),
    }
    breakdown = evaluation.error_breakdown(p, oracles)
    assert breakdown.characters == 8 and breakdown.errors == 7
    assert breakdown.counts == {"ngram": 1, "memory": 1, "rare_word": 1, "word_start": 1, "punctuation": 1,
                                "rest": 2}
    assert sum(breakdown.fractions().values()) == pytest.approx(1.0)


# --- the report ----------------------------------------------------------------------------------------------

VOCAB = Vocabulary.from_text("ab (){}\"xyz.")
TRAIN = "ab " * 60 + "(ab) {ab} \"ab\" " * 5


def encode(text: str) -> np.ndarray:
    return VOCAB.encode(text)


def test_ngram_oracle_takes_the_errors_an_order_up_to_9_predicts():
    text = "ab ab xy ab"
    nll = np.full(len(text) - 1, 5.0)  # every prediction an error
    report = evaluation.evaluate_predictions(VOCAB, encode(TRAIN), encode(text), nll, max_order=3)
    table = ngram.log_probs_by_order(encode(TRAIN), len(VOCAB), 9, encode(text))[:, 1:]
    expected = int((table >= math.log(0.5)).any(axis=0).sum())
    assert 0 < expected < len(text) - 1  # the predictable b after a, not the x and y never seen
    assert report.errors.errors == len(text) - 1
    assert report.errors.counts["ngram"] == expected
    assert len(report.ngram_nats) == 3  # the table stops at max_order; the oracle still uses orders 1..9


@pytest.fixture(scope="module")
def tiny_network():
    config = ModelConfig(vocab_size=len(VOCAB), cell="lstm", hidden_size=8, num_layers=1, embedding_size=4)
    return model.init(jax.random.PRNGKey(0), config), config


def test_evaluate_reports_the_networks_loss_and_the_ngram_table(tiny_network):
    params, config = tiny_network
    text = "ab (ab {ab ab} ab) \"ab ab\" xyz ab."
    report = evaluation.evaluate(params, config, VOCAB, encode(TRAIN), encode(text), max_order=5)
    nll = evaluation.network_nll(params, config, encode(text))
    assert report.characters == len(text) - 1
    assert report.loss_nats == pytest.approx(float(nll.mean()), abs=1e-9)
    assert report.loss_nats == pytest.approx(math.log(len(VOCAB)), abs=0.5)  # untrained: near uniform
    assert len(report.ngram_nats) == 5
    assert report.best_ngram_nats == min(report.ngram_nats)
    assert report.margin_nats == pytest.approx(report.best_ngram_nats - report.loss_nats)
    assert sum(count for count, _, _ in report.by_class.values()) == len(text) - 1
    assert sum(b.count for b in report.long_range) == len(evaluation.match_closers(text).positions) == 3
    assert sum(report.errors.counts.values()) == report.errors.errors


def test_the_json_schema_is_stable_and_strict_json(tiny_network):
    params, config = tiny_network
    report = evaluation.evaluate(params, config, VOCAB, encode(TRAIN), encode("ab (ab) ab"), max_order=4)
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["schema"] == "charrnn.evaluate/1"
    assert list(d) == ["schema", "characters", "loss", "by_class", "ngram", "long_range", "errors", "settings",
                       "text", "checkpoint"]
    assert d["text"] is None and d["checkpoint"] is None  # the library alone knows no file or checkpoint
    assert d["loss"]["bpc"] == pytest.approx(d["loss"]["nats"] / math.log(2))
    assert [row["n"] for row in d["ngram"]["table"]] == [1, 2, 3, 4]
    assert set(d["ngram"]) == {"smoothing", "train_characters", "table", "best_n", "best", "margin"}
    assert [row["class"] for row in d["by_class"]] == list(evaluation.CLASSES)
    assert [row["category"] for row in d["errors"]["breakdown"]] == list(CATEGORIES)
    assert [b["distance"] for b in d["long_range"]["buckets"]][-1] == "61+"


@pytest.mark.parametrize("text, message", [("", "empty"), ("a", "at least 2")])
def test_too_short_a_text_is_refused(tiny_network, text, message):
    params, config = tiny_network
    with pytest.raises(EvaluationError, match=message):
        evaluation.evaluate(params, config, VOCAB, encode(TRAIN), encode(text))


@pytest.mark.parametrize("order", [0, 21])
def test_an_order_out_of_range_is_refused_before_the_network_runs(tiny_network, order):
    params, config = tiny_network
    with pytest.raises(ValueError, match="1..20"):
        evaluation.evaluate(params, config, VOCAB, encode(TRAIN), encode("ab ab"), max_order=order)


def test_a_vocabulary_that_is_not_the_models_is_refused(tiny_network):
    params, config = tiny_network
    with pytest.raises(EvaluationError, match="vocabulary"):
        evaluation.evaluate(params, config, Vocabulary.from_text("ab"), encode("ab"), encode("ab"))


# --- the network's per-position losses, laid out as validation lays out a split ------------------------------


def stream_reference(params, config, ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Independent of `charrnn.validation`: cut the N-1 targets into streams of ceil((N-1)/B) as validation does,
    run each stream alone from the zero state through `model.forward` in one piece, concatenate."""
    n = len(ids) - 1
    per_stream = math.ceil(n / min(batch_size, n))
    out = []
    for start in range(0, n, per_stream):
        stop = min(start + per_stream, n)
        logits, _ = model.forward(params, config, jax.numpy.asarray(ids[None, start:stop], jax.numpy.int32),
                                  model.initial_carry(config, 1))
        out.append(np.asarray(model.position_nll(logits, jax.numpy.asarray(ids[None, start + 1:stop + 1])))[0])
    return np.concatenate(out)


@pytest.mark.parametrize("cell, batch_size, seq_length, chunk_chars", fast_first([
    ("lstm", 6, 7, 1),  # one window per chunk; the last stream shorter
    ("rnn", 3, 5, 3 * 5 * 2),  # several chunks of two windows
    ("gru", 1, 16, 1 << 20),  # one stream, one chunk
]))
def test_position_losses_are_each_streams_losses_in_text_order(cell, batch_size, seq_length, chunk_chars):
    from charrnn import validation

    config = ModelConfig(vocab_size=7, cell=cell, hidden_size=8, num_layers=2, embedding_size=4)
    params = model.init(jax.random.PRNGKey(1), config)
    ids = np.random.default_rng(0).integers(0, 7, 101).astype(np.int32)
    nll = validation.position_losses(params, ids, config, batch_size, seq_length, chunk_chars=chunk_chars)
    assert nll.shape == (100,)
    np.testing.assert_allclose(nll, stream_reference(params, config, ids, batch_size), rtol=1e-5, atol=1e-6)


def test_position_losses_average_to_the_validators_loss():
    from charrnn import distributed, validation

    config = ModelConfig(vocab_size=7, cell="lstm", hidden_size=8, num_layers=1, embedding_size=4)
    params = model.init(jax.random.PRNGKey(2), config)
    ids = np.random.default_rng(1).integers(0, 7, 333).astype(np.int32)
    validator = validation.Validator(ids, config, 5, 8, distributed.placement(), params)
    nll = validation.position_losses(params, ids, config, 5, 8)
    assert float(nll.astype(np.float64).mean()) == pytest.approx(validator(params), rel=1e-6)


def test_network_nll_with_one_stream_reads_the_whole_text_with_the_state_carried(tiny_network):
    params, config = tiny_network
    ids = encode("ab (ab {ab ab} ab) \"ab ab\" xyz ab." * 3)
    np.testing.assert_allclose(evaluation.network_nll(params, config, ids, seq_length=8),
                               stream_reference(params, config, ids, 1), rtol=1e-5, atol=1e-6)
