"""Reading corpora, the vocabulary, splits, and the truncated-BPTT stream layout."""

import numpy as np
import pytest

from charrnn import data
from charrnn.data import CorpusError, Vocabulary


def write(tmp_path, content: bytes, name="corpus.txt"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --- reading ---------------------------------------------------------------------------------------------------


def test_bom_is_dropped_and_every_line_ending_becomes_newline(tmp_path):
    path = write(tmp_path, "\ufeffone\r\ntwo\rthree\nfour\r\r".encode("utf-8"))
    text, _ = data.read_text(path)
    assert text == "one\ntwo\nthree\nfour\n\n"


def test_keep_newlines_keeps_carriage_returns(tmp_path):
    path = write(tmp_path, "\ufeffone\r\ntwo\r".encode("utf-8"))
    text, _ = data.read_text(path, keep_newlines=True)
    assert text == "one\r\ntwo\r"


def test_unicode_round_trips_through_the_vocabulary(tmp_path):
    original = "Zoë said “naïve” — 東京 🦀\n"
    corpus = data.load_corpus(write(tmp_path, original.encode("utf-8")))
    assert corpus.vocab.decode(corpus.ids) == original
    assert len(corpus.ids) == len(original)  # characters, not bytes
    assert list(corpus.vocab.symbols) == sorted(set(original))


def test_undecodable_byte_is_located_and_a_fix_suggested(tmp_path):
    path = write(tmp_path, b"line one\nline \xff two\n")
    with pytest.raises(CorpusError) as e:
        data.read_text(path)
    message = str(e.value)
    assert "0xff" in message and "offset 14" in message and "line 2" in message
    assert "--encoding" in message and "--bytes" in message


def test_other_encodings_and_raw_bytes(tmp_path):
    path = write(tmp_path, "café\n".encode("latin-1"))
    assert data.read_text(path, encoding="latin-1")[0] == "café\n"
    corpus = data.load_corpus(path, byte_level=True)
    assert len(corpus.vocab) == 256 and corpus.vocab.byte_level
    assert corpus.vocab.decode(corpus.ids) == "café\n".encode("latin-1")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "absent.txt", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: write(d, b""), "is empty"),
        (lambda d: write(d, b"\xef\xbb\xbf"), "no text"),  # only a BOM
    ],
)
def test_unusable_corpus_files_are_explained(tmp_path, make, message):
    with pytest.raises(CorpusError, match=message):
        data.read_text(make(tmp_path))


def test_unknown_encoding_is_named(tmp_path):
    with pytest.raises(CorpusError, match="unknown encoding 'klingon'"):
        data.read_text(write(tmp_path, b"abc"), encoding="klingon")


def test_sha256_is_of_the_file_bytes(tmp_path):
    import hashlib

    content = b"\xef\xbb\xbfabc\r\n"
    assert data.read_text(write(tmp_path, content))[1] == hashlib.sha256(content).hexdigest()


def test_bundled_corpus_is_found():
    path = data.bundled_corpus_path()
    assert path.name == data.BUNDLED_CORPUS and path.stat().st_size > 100_000


# --- vocabulary ------------------------------------------------------------------------------------------------


def test_encoding_names_every_unknown_character():
    vocab = Vocabulary.from_text("hello world")
    with pytest.raises(data.UnknownCharactersError) as e:
        vocab.encode("hello ☃ and ✓ and ☃")
    assert e.value.unknown == ["a", "n", "☃", "✓"]  # sorted by code point, each named once
    assert "'☃'" in str(e.value)


def test_unknown_characters_are_exactly_those_missing():
    vocab = Vocabulary.from_text("abc")
    with pytest.raises(data.UnknownCharactersError) as e:
        vocab.encode("abxcyb")
    assert e.value.unknown == ["x", "y"]


def test_vocabulary_survives_json():
    vocab = Vocabulary.from_text('a "quoted" \\ line\n\t\u2028é')
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    assert Vocabulary.from_json(Vocabulary.of_bytes().to_json()) == Vocabulary.of_bytes()


def test_ids_are_indices_into_sorted_symbols():
    vocab = Vocabulary.from_text("banana")
    assert vocab.symbols == ("a", "b", "n")
    np.testing.assert_array_equal(vocab.encode("nab"), [2, 0, 1])


# --- splits and layout -----------------------------------------------------------------------------------------


def test_splits_are_contiguous_and_in_order():
    splits = data.split(1000, 0.05, 0.05)
    assert splits.train == (0, 900) and splits.val == (900, 950) and splits.test == (950, 1000)
    assert data.Splits.from_dict(splits.to_dict()) == splits


def test_tiny_corpus_keeps_two_characters_per_split_or_says_how_long_it_must_be():
    splits = data.split(10, 0.05, 0.05)
    assert splits.val[1] - splits.val[0] == 2 and splits.test[1] - splits.test[0] == 2
    with pytest.raises(CorpusError, match="at least 6"):
        data.split(5, 0.05, 0.05)
    assert data.split(2, 0.0, 0.0).train == (0, 2)


def test_window_shrinks_to_fit_a_small_training_split_with_warnings():
    assert data.fit_window(10_000, 32, 100) == (32, 100, [])
    B, T, warnings = data.fit_window(1_000, 32, 100)
    assert (B, T) == (9, 100) and len(warnings) == 1 and "--batch-size 9" in warnings[0]
    B, T, warnings = data.fit_window(40, 32, 100)
    assert (B, T) == (1, 39) and len(warnings) == 2 and "--seq-length 39" in warnings[0]


def test_streams_are_contiguous_and_targets_are_shifted_by_one():
    ids = np.arange(23)
    inputs, targets = data.streams(ids, 4)
    assert inputs.shape == targets.shape == (4, 5)
    np.testing.assert_array_equal(inputs[1], [5, 6, 7, 8, 9])
    np.testing.assert_array_equal(targets, inputs + 1)
    # Only the tail that does not fill a stream is left out: 4 * 5 + 1 of 23 used.
    assert targets.max() == 20


def test_eval_streams_cover_every_target_exactly_once():
    for n, B, T in [(101, 4, 7), (2, 8, 5), (64, 8, 8), (1000, 3, 100)]:
        ids = np.arange(n)  # distinct values make every position identifiable
        inputs, targets, mask = data.eval_streams(ids, B, T)
        assert inputs.shape[1] % T == 0
        real = mask > 0
        assert real.sum() == n - 1
        assert sorted(inputs[real].tolist()) == list(range(n - 1))
        np.testing.assert_array_equal(targets[real], inputs[real] + 1)
        for row, row_mask in zip(inputs, real):  # each stream is one contiguous run, padding only at its end
            kept = row[row_mask]
            np.testing.assert_array_equal(kept, np.arange(kept[0], kept[0] + len(kept)) if len(kept) else kept)
            assert row_mask.tolist() == sorted(row_mask.tolist(), reverse=True)
