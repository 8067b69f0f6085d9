"""Corpora larger than memory: the encoded, memory-mapped cache of token ids, and the streaming decoder under it.

The reference for every cached corpus is the in-memory reading of the same file (``bytes.decode``, then
`normalize_text`, a vocabulary of its sorted characters): the cache must give the same ids, vocabulary and
SHA-256, be reused while the file is unchanged, and be rebuilt when the file changes or the cache is damaged.
"""

import hashlib
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from charrnn import corpus_cache, data
from charrnn.text import decode_chunks, normalize_text
from charrnn.data import CorpusError


def write(tmp_path, content: bytes, name="corpus.txt"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def reference(raw: bytes, encoding="utf-8", keep_newlines=False):
    """Ids, symbols and SHA-256 computed without any of the streaming code."""
    text = normalize_text(raw.decode(encoding), keep_newlines)
    symbols = sorted(set(text))
    index = {c: i for i, c in enumerate(symbols)}
    return np.array([index[c] for c in text], np.int64), tuple(symbols), hashlib.sha256(raw).hexdigest()


class Builds:
    """on_build recorder: the reasons the cache was (re)built, in order."""

    def __init__(self):
        self.reasons = []

    def __call__(self, cache, reason):
        self.reasons.append(reason)


def load(path, where, **kwargs):
    builds = Builds()
    corpus = corpus_cache.load(path, where=where, on_build=builds, **kwargs)
    return corpus, builds.reasons


# --- the same corpus as reading it into memory ---------------------------------------------------------------------


@pytest.mark.parametrize("raw, encoding, keep", [
    ("\ufeffZoë said “naïve” — 東京 🦀\r\nline two\rthree\n".encode("utf-8"), "utf-8", False),
    ("one\r\ntwo\r".encode("utf-8"), "utf-8", True),
    ("café crème\n".encode("latin-1"), "latin-1", False),
    ("wide ☃ text\r\n".encode("utf-16"), "utf-16", False),
])
def test_the_cache_gives_the_ids_vocabulary_and_hash_of_the_file(tmp_path, raw, encoding, keep):
    path = write(tmp_path, raw)
    corpus, reasons = load(path, tmp_path / "cache", encoding=encoding, keep_newlines=keep)
    ids, symbols, sha = reference(raw, encoding, keep)
    assert reasons == ["new"]
    assert isinstance(corpus.ids, np.memmap) and corpus.ids.dtype == np.uint8 and not corpus.ids.flags.writeable
    np.testing.assert_array_equal(corpus.ids, ids)
    assert corpus.vocab.symbols == symbols and not corpus.vocab.byte_level
    assert corpus.info.sha256 == sha and corpus.info.num_symbols == len(ids)
    # ... and exactly what the in-memory path gives, provenance included.
    in_memory = data.load_corpus(path, encoding, keep, cache=False)
    assert corpus.info == in_memory.info and corpus.vocab == in_memory.vocab
    np.testing.assert_array_equal(corpus.ids, in_memory.ids)


def test_raw_bytes_are_cached_as_they_are(tmp_path):
    raw = bytes(range(256)) * 3 + b"\r\n\xff"
    corpus, _ = load(write(tmp_path, raw), tmp_path / "cache", byte_level=True)
    assert corpus.vocab == data.Vocabulary.of_bytes() and corpus.ids.dtype == np.uint8
    np.testing.assert_array_equal(corpus.ids, np.frombuffer(raw, np.uint8))
    assert corpus.info.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("distinct, dtype", [(256, np.uint8), (257, np.uint16), (65536, np.uint16),
                                             (65537, np.uint32)])
def test_ids_take_the_smallest_unsigned_type_that_holds_the_vocabulary(tmp_path, distinct, dtype):
    # Code points from U+00A0 up, skipping the surrogates: `distinct` different characters, in a shuffled order.
    codes = np.arange(0xA0, 0xA0 + distinct + 2048)
    codes = codes[(codes < 0xD800) | (codes > 0xDFFF)][:distinct]
    text = "".join(map(chr, np.random.default_rng(0).permutation(codes))) + "".join(map(chr, codes[:50]))
    corpus, _ = load(write(tmp_path, text.encode("utf-8")), tmp_path / "cache")
    ids, symbols, _ = reference(text.encode("utf-8"))
    assert corpus.ids.dtype == dtype and len(corpus.vocab) == distinct
    assert corpus.vocab.symbols == symbols
    np.testing.assert_array_equal(corpus.ids, ids)


def test_large_files_are_cached_by_load_corpus_and_small_ones_read_into_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "CACHE_MIN_BYTES", 100)
    small = write(tmp_path, b"tiny text\n" * 9, "small.txt")  # 90 bytes
    large = write(tmp_path, b"large text\n" * 10, "large.txt")  # 110 bytes
    assert not isinstance(data.load_corpus(small).ids, np.memmap)
    corpus = data.load_corpus(large)
    assert isinstance(corpus.ids, np.memmap)
    assert corpus_cache.directory() == tmp_path / "xdg" / "charrnn" / "corpora"
    assert [p.name for p in corpus_cache.directory().glob("*.ids")] == [corpus_cache.cache_path(large).name]


# --- reuse and rebuild --------------------------------------------------------------------------------------------


def test_an_unchanged_corpus_reuses_its_cache(tmp_path):
    path = write(tmp_path, b"the cat sat on the mat\n" * 50)
    first, reasons = load(path, tmp_path / "cache")
    cache = corpus_cache.cache_path(path, where=tmp_path / "cache")
    before = os.stat(cache)
    second, again = load(path, tmp_path / "cache")
    after = os.stat(cache)
    assert reasons == ["new"] and again == []
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)  # not rewritten
    np.testing.assert_array_equal(first.ids, second.ids)
    assert first.info == second.info


def test_a_changed_corpus_is_encoded_again(tmp_path):
    path = write(tmp_path, b"abc abc abc\n" * 20)
    load(path, tmp_path / "cache")
    raw = b"xyz xyz xyz\n" * 20  # the same size: only the content and modification time differ
    path.write_bytes(raw)
    corpus, reasons = load(path, tmp_path / "cache")
    assert reasons == ["changed"]
    ids, symbols, sha = reference(raw)
    np.testing.assert_array_equal(corpus.ids, ids)
    assert corpus.vocab.symbols == symbols and corpus.info.sha256 == sha


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_change_at_either_end_is_noticed_even_with_the_old_size_and_time(tmp_path, where):
    # 3 MiB: the edited byte lies in the first or the last MiB, which are hashed; size and mtime are restored.
    raw = bytearray(b"0123456789abcdef" * (3 << 16))
    path = write(tmp_path, bytes(raw))
    load(path, tmp_path / "cache")
    stat = os.stat(path)
    raw[10 if where == "first" else -10] = ord("Z")
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    corpus, reasons = load(path, tmp_path / "cache")
    assert reasons == ["changed"]
    assert "Z" in corpus.vocab.symbols and corpus.info.sha256 == hashlib.sha256(raw).hexdigest()


def test_reading_options_have_caches_of_their_own(tmp_path):
    path = write(tmp_path, "a\r\nb\n".encode("utf-8"))
    normalised, _ = load(path, tmp_path / "cache")
    kept, reasons = load(path, tmp_path / "cache", keep_newlines=True)
    raw, _ = load(path, tmp_path / "cache", byte_level=True)
    assert reasons == ["new"] and len(normalised.ids) == 4 and len(kept.ids) == 5 and len(raw.ids) == 5
    assert len(list((tmp_path / "cache").glob("*.ids"))) == 3
    assert load(path, tmp_path / "cache")[1] == []  # the first is still there, untouched


def damage_truncate(cache):
    with open(cache, "r+b") as f:
        f.truncate(os.path.getsize(cache) - 5)


def damage_flip_an_id(cache):
    with open(cache, "r+b") as f:
        f.seek(len(corpus_cache.MAGIC) + 7)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))  # still a valid id: only the CRC can tell


def damage_header(cache):
    raw = bytearray(cache.read_bytes())
    at = raw.rindex(b'"num_symbols": ') + len(b'"num_symbols": ')
    raw[at] = ord("9") if raw[at] != ord("9") else ord("8")
    cache.write_bytes(bytes(raw))


def damage_replace(cache):
    cache.write_bytes(b"not a cache at all")


@pytest.mark.parametrize("damage", [damage_truncate, damage_flip_an_id, damage_header, damage_replace,
                                    lambda cache: cache.write_bytes(b"")])
def test_a_damaged_cache_is_detected_and_rebuilt(tmp_path, damage):
    raw = "the quick brown fox — jumps\n".encode("utf-8") * 40
    path = write(tmp_path, raw)
    load(path, tmp_path / "cache")
    damage(corpus_cache.cache_path(path, where=tmp_path / "cache"))
    corpus, reasons = load(path, tmp_path / "cache")
    assert reasons == ["damaged"]
    np.testing.assert_array_equal(corpus.ids, reference(raw)[0])
    assert load(path, tmp_path / "cache")[1] == []  # and the rebuilt one is good


def test_a_failed_build_leaves_no_cache_and_no_temporary_file(tmp_path):
    path = write(tmp_path, b"good text\n" * 10 + b"\xff bad byte\n")
    with pytest.raises(CorpusError, match=r"0xff at offset 100 \(line 11\)"):
        corpus_cache.load(path, where=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_a_build_leaves_only_the_cache_and_its_lock(tmp_path):
    path = write(tmp_path, b"some text\n")
    load(path, tmp_path / "cache")
    name = corpus_cache.cache_path(path, where=tmp_path / "cache").name
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [name, name + ".lock"]


def test_the_cache_holds_nothing_but_raw_ids_and_a_json_header(tmp_path):
    raw = "héllo wörld\n".encode("utf-8") * 3
    path = write(tmp_path, raw)
    corpus, _ = load(path, tmp_path / "cache")
    blob = corpus_cache.cache_path(path, where=tmp_path / "cache").read_bytes()
    n = len(corpus.ids)
    assert blob.startswith(corpus_cache.MAGIC) and blob.endswith(corpus_cache.END)
    np.testing.assert_array_equal(np.frombuffer(blob[16:16 + n], np.uint8), reference(raw)[0])
    import json
    import struct

    (length,) = struct.unpack("<Q", blob[-16:-8])
    header = json.loads(blob[-16 - length:-16])
    assert header["num_symbols"] == n and header["dtype"] == "uint8" and 16 + n + length + 16 == len(blob)
    assert header["fingerprint"]["size"] == len(raw)


def test_processes_starting_together_encode_the_corpus_once(tmp_path):
    path = write(tmp_path, b"shared corpus\n" * 5000)
    builds, results = Builds(), []
    threads = [threading.Thread(target=lambda: results.append(
        corpus_cache.load(path, where=tmp_path / "cache", on_build=builds))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds.reasons == ["new"] and len(results) == 4
    for corpus in results:
        np.testing.assert_array_equal(corpus.ids, results[0].ids)


def test_missing_and_empty_corpora_are_the_usual_errors(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        corpus_cache.load(tmp_path / "absent.txt", where=tmp_path / "cache")
    with pytest.raises(CorpusError, match="is empty"):
        corpus_cache.load(write(tmp_path, b""), where=tmp_path / "cache")
    with pytest.raises(CorpusError, match="holds no text"):
        corpus_cache.load(write(tmp_path, "\ufeff".encode("utf-8")), where=tmp_path / "cache")


def test_an_unwritable_cache_directory_is_one_clear_error(tmp_path):
    blocker = write(tmp_path, b"a file where the directory should be", "blocker")
    with pytest.raises(CorpusError, match="XDG_CACHE_HOME"):
        corpus_cache.load(write(tmp_path, b"text\n"), where=blocker / "cache")


# --- the streaming decoder, wherever the file is cut into pieces --------------------------------------------------


def cut(raw: bytes, cuts) -> list[bytes]:
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    return [raw[a:b] for a, b in zip(points, points[1:]) if b > a]


@given(text=st.text(alphabet=st.sampled_from("ab\r\n\ufeffé東🦀"), min_size=1),
       cuts=st.lists(st.integers(0, 200), max_size=12), encoding=st.sampled_from(["utf-8", "utf-16", "utf-8-sig"]),
       keep=st.booleans())
@settings(max_examples=300, deadline=None)
def test_decoding_in_pieces_is_decoding_the_whole(text, cuts, encoding, keep):
    raw = text.encode(encoding)
    pieces = list(decode_chunks(cut(raw, cuts), "corpus.txt", encoding, keep))
    assert "".join(pieces) == normalize_text(raw.decode(encoding), keep)


@given(prefix=st.text(alphabet=st.sampled_from("ab\r\né"), max_size=40), cuts=st.lists(st.integers(0, 80), max_size=6))
@settings(max_examples=100, deadline=None)
def test_a_bad_byte_is_located_at_its_offset_in_the_file(tmp_path_factory, prefix, cuts):
    raw = prefix.encode("utf-8") + b"\xff tail"
    path = tmp_path_factory.mktemp("bad") / "corpus.txt"
    path.write_bytes(raw)
    with pytest.raises(CorpusError) as e:
        "".join(decode_chunks(cut(raw, cuts), path))
    lines = raw[: len(prefix.encode())].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
    assert f"byte 0xff at offset {len(prefix.encode())} (line {lines})" in str(e.value)
