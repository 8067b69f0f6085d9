"""Reading corpora, the vocabulary, splits, and the truncated-BPTT stream layout."""

import numpy as np
import pytest

from charrnn import data
from charrnn.config import ConfigError, TrainConfig
from charrnn.text import UnknownCharactersError, normalize_text, read_text
from charrnn.data import CorpusError, Vocabulary


def write(tmp_path, content: bytes, name="corpus.txt"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --- reading ---------------------------------------------------------------------------------------------------


def test_bom_is_dropped_and_every_line_ending_becomes_newline(tmp_path):
    path = write(tmp_path, "\ufeffone\r\ntwo\rthree\nfour\r\r".encode("utf-8"))
    text, _ = read_text(path)
    assert text == "one\ntwo\nthree\nfour\n\n"


def test_keep_newlines_keeps_carriage_returns(tmp_path):
    path = write(tmp_path, "\ufeffone\r\ntwo\r".encode("utf-8"))
    text, _ = read_text(path, keep_newlines=True)
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
        read_text(path)
    message = str(e.value)
    assert "0xff" in message and "offset 14" in message and "line 2" in message
    assert "--encoding" in message and "--bytes" in message


def test_other_encodings_and_raw_bytes(tmp_path):
    path = write(tmp_path, "café\n".encode("latin-1"))
    assert read_text(path, encoding="latin-1")[0] == "café\n"
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
        read_text(make(tmp_path))


def test_unknown_encoding_is_named(tmp_path):
    with pytest.raises(CorpusError, match="unknown encoding 'klingon'"):
        read_text(write(tmp_path, b"abc"), encoding="klingon")


def test_sha256_is_of_the_file_bytes(tmp_path):
    import hashlib

    content = b"\xef\xbb\xbfabc\r\n"
    assert read_text(write(tmp_path, content))[1] == hashlib.sha256(content).hexdigest()


def test_bundled_corpus_is_found():
    path = data.bundled_corpus_path()
    assert path.name == data.BUNDLED_CORPUS and path.stat().st_size > 100_000


# --- vocabulary ------------------------------------------------------------------------------------------------


def test_encoding_names_every_unknown_character():
    vocab = Vocabulary.from_text("hello world")
    with pytest.raises(UnknownCharactersError) as e:
        vocab.encode("hello ☃ and ✓ and ☃")
    assert e.value.unknown == ["a", "n", "☃", "✓"]  # sorted by code point, each named once
    assert "'☃'" in str(e.value)


def test_unknown_characters_are_exactly_those_missing():
    vocab = Vocabulary.from_text("abc")
    with pytest.raises(UnknownCharactersError) as e:
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


# --- properties, for any text and any layout ---------------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402


@given(st.text(min_size=1))
def test_any_unicode_text_round_trips(text):
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    assert len(ids) == len(text) and ids.max() < len(vocab)
    assert vocab.decode(ids) == text
    assert Vocabulary.from_json(vocab.to_json()).decode(ids) == text


@given(st.text(alphabet=st.sampled_from("ab\r\n\ufeffé"), min_size=1))
def test_newline_normalisation_leaves_no_carriage_return(text):
    out = normalize_text(text)
    assert "\r" not in out
    assert out.count("\n") == text.count("\n") + text.count("\r") - text.count("\r\n")
    kept = normalize_text(text, keep_newlines=True)
    assert kept == (text[1:] if text.startswith("\ufeff") else text)


@given(n=st.integers(2, 400), batch=st.integers(1, 40))
def test_streams_never_drop_or_duplicate_beyond_the_documented_tail(n, batch):
    ids = np.arange(n)
    batch = min(batch, n - 1)
    inputs, targets = data.streams(ids, batch)
    length = (n - 1) // batch
    # Stream b is the contiguous run [b*L, (b+1)*L); together they are the corpus up to a tail of < batch + 1.
    np.testing.assert_array_equal(inputs.reshape(-1), ids[: batch * length])
    np.testing.assert_array_equal(targets, inputs + 1)
    assert n - 1 - batch * length < batch


@given(n=st.integers(2, 400), batch=st.integers(1, 40), window=st.integers(1, 60))
def test_windows_line_up_with_the_streams(n, batch, window):
    batch, window, _ = data.fit_window(n, batch, window)
    inputs, targets = data.streams(np.arange(n), batch)
    steps = inputs.shape[1] // window
    assert steps >= 1 and inputs.shape[1] - steps * window < window  # per stream, the skipped tail is < T
    for b in range(batch):
        # Window j + 1 of a stream starts exactly where window j ended, so the carried state belongs to it.
        pieces = [inputs[b, j * window : (j + 1) * window] for j in range(steps)]
        np.testing.assert_array_equal(np.concatenate(pieces), inputs[b, : steps * window])
        for j in range(steps - 1):
            assert pieces[j + 1][0] == pieces[j][-1] + 1


@given(n=st.integers(2, 5000), batch=st.integers(1, 100), window=st.integers(1, 300))
def test_fit_window_always_gives_a_window_within_the_request(n, batch, window):
    B, T, warnings = data.fit_window(n, batch, window)
    assert 1 <= B <= batch and 1 <= T <= window
    assert B * T <= n - 1
    assert bool(warnings) == ((B, T) != (batch, window))


@given(n=st.integers(2, 600), batch=st.integers(1, 50), window=st.integers(1, 80))
@settings(max_examples=60)
def test_validation_layout_covers_every_target_once(n, batch, window):
    inputs, targets, mask = data.eval_streams(np.arange(n), batch, window)
    real = mask > 0
    assert sorted(inputs[real].tolist()) == list(range(n - 1))
    np.testing.assert_array_equal(targets[real], inputs[real] + 1)


# --- windows read from the ids on the host (what training feeds, for a corpus of any size) ------------------------


@given(n=st.integers(2, 400), batch=st.integers(1, 40), window=st.integers(1, 60), parts=st.sampled_from([1, 2, 4]))
def test_train_windows_are_the_windows_of_the_streams(n, batch, window, parts):
    batch, window, _ = data.fit_window(n, batch, window)
    parts = parts if batch % parts == 0 else 1
    ids = np.random.default_rng(n).integers(0, 1000, n)
    inputs, targets = data.streams(ids, batch)
    steps = inputs.shape[1] // window
    per = batch // parts
    for j in range(steps):
        # The rows of all parts, stacked, are the whole window: each part (process) reads only its own rows.
        got = np.concatenate([data.TrainWindows(ids, batch, window, rows=slice(p * per, (p + 1) * per))(j)
                              for p in range(parts)])
        np.testing.assert_array_equal(got[:, :-1], inputs[:, j * window:(j + 1) * window])
        np.testing.assert_array_equal(got[:, 1:], targets[:, j * window:(j + 1) * window])


def test_train_windows_read_a_memory_map_in_the_token_type(tmp_path):
    path = tmp_path / "ids.u16"
    np.arange(1000, dtype=np.uint16).tofile(path)
    ids = np.memmap(path, np.uint16, mode="r")
    window = data.TrainWindows(ids, 4, 10, dtype=np.dtype(np.int32))(3)
    assert window.dtype == np.int32 and window.shape == (4, 11)
    np.testing.assert_array_equal(window[:, 0], np.arange(4) * 249 + 30)


# --- shuffled segments (--segment-length) ------------------------------------------------------------------------


def shuffled_layout(n, batch, window, segment_windows, config_seed=0):
    config = TrainConfig(batch_size=batch, seq_length=window, segment_length=segment_windows * window,
                         seed=config_seed, max_epochs=3)
    return data.plan(n, config)


@given(n=st.integers(2, 2000), batch=st.integers(1, 8), window=st.integers(1, 12), segment_windows=st.integers(1, 5),
       parts=st.sampled_from([1, 2]), seed=st.integers(0, 3))
@settings(max_examples=60)
def test_an_epoch_of_shuffled_segments_reads_each_of_its_segments_once_in_order(n, batch, window, segment_windows,
                                                                                 parts, seed):
    layout, warnings = shuffled_layout(n, batch, window, segment_windows, seed)
    B, T = layout.batch_size, layout.seq_length
    S = segment_windows * T
    if not layout.segment_length:  # too few segments for the streams: contiguous, and said so
        assert (n - 1) // S < B or T != window
        return
    parts = parts if B % parts == 0 else 1
    per = B // parts
    ids = np.arange(n)  # each id is its position, so a window shows where it was read from
    readers = [data.training_windows(ids, layout, seed, slice(p * per, (p + 1) * per)) for p in range(parts)]
    num_segments = (n - 1) // S
    assert layout.steps_per_epoch == num_segments // B * segment_windows and layout.reset_every == segment_windows
    orders = []
    for epoch in range(2):
        starts = []
        for j in range(layout.steps_per_epoch):
            step = epoch * layout.steps_per_epoch + j
            window_ = np.concatenate([read(step) for read in readers])  # every process's rows, stacked
            assert window_.shape == (B, T + 1)
            np.testing.assert_array_equal(window_, window_[:, :1] + np.arange(T + 1))  # T + 1 consecutive characters
            if j % segment_windows == 0:  # a segment's first window: the carry is reset here
                assert (window_[:, 0] % S == 0).all()
                starts.extend(window_[:, 0].tolist())
            else:  # the window after the last one of the same segment: the carried state belongs to it
                np.testing.assert_array_equal(window_[:, 0], previous[:, 0] + T)
            previous = window_
        assert len(set(starts)) == len(starts) == num_segments // B * B  # no segment twice in an epoch
        assert max(starts) + S <= n - 1  # every target inside the split
        orders.append(starts)
    if num_segments >= 6:
        assert orders[0] != orders[1]  # a new order every epoch


def test_shuffled_segments_repeat_with_the_seed_and_change_with_it():
    layout, _ = shuffled_layout(10_000, 4, 10, 3)
    read = lambda seed: [data.training_windows(np.arange(10_000), layout, seed)(s)[:, 0].tolist() for s in (0, 3, 99)]
    assert read(1) == read(1) != read(2)


def test_too_few_segments_for_the_streams_fall_back_to_contiguous_streams_with_a_warning():
    layout, warnings = shuffled_layout(1_000, 8, 10, 20)  # 4 segments of 200 for 8 streams
    assert layout.segment_length == 0 and layout.reset_every == layout.steps_per_epoch
    assert any("too few for 8 segments of 200" in w for w in warnings)


@pytest.mark.parametrize("options, message", [
    (dict(segment_length=150), "not a whole number of windows of 100 characters; use a multiple of 100, e.g. 200"),
    (dict(segment_length=-100), "segment-length must be >= 0"),
    (dict(segment_length=1000, state_reset="never"), "needs contiguous streams"),
])
def test_bad_segment_lengths_are_explained(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


@given(n=st.integers(2, 600), batch=st.integers(1, 50), window=st.integers(1, 80), devices=st.sampled_from([1, 2, 4]),
       parts=st.sampled_from([1, 2]), chunk_chars=st.integers(1, 500))
@settings(max_examples=80)
def test_chunked_validation_reads_exactly_the_validation_layout(n, batch, window, devices, parts, chunk_chars):
    parts = parts if devices % parts == 0 else 1
    ids = np.random.default_rng(n).integers(0, 1000, n)
    inputs, targets, mask = data.eval_streams(ids, batch, window)
    rows_in, rows_tg, widths = [], [], set()
    for p in range(parts):
        windows = data.EvalWindows(ids, batch, window, row_multiple=devices, part=(p, parts), chunk_chars=chunk_chars)
        mine_in, mine_tg = [[] for _ in windows.starts], [[] for _ in windows.starts]
        for c in range(windows.num_chunks):
            chunk, valid = windows(c)
            widths.add(chunk.shape[1])
            assert chunk.shape[1] - 1 == windows.chunk_windows * window  # whole windows, the carry runs on
            for r, count in enumerate(valid):
                mine_in[r] += chunk[r, :count].tolist()
                mine_tg[r] += chunk[r, 1:count + 1].tolist()
                assert not chunk[r, count + 1:].any()  # padding is zeros, masked
        rows_in += mine_in
        rows_tg += mine_tg
    assert len(rows_in) % devices == 0 and len(rows_in) - inputs.shape[0] < devices and len(widths) == 1
    real = mask > 0
    for b in range(len(rows_in)):  # the same streams in the same order, then empty padding rows
        assert rows_in[b] == (inputs[b][real[b]].tolist() if b < len(inputs) else [])
        assert rows_tg[b] == (targets[b][real[b]].tolist() if b < len(inputs) else [])
