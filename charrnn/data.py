"""Corpus loading, the vocabulary, contiguous splits and the truncated-BPTT stream layout.

Text is read as UTF-8 by default: a leading BOM is dropped and ``\\r\\n`` and lone ``\\r`` become ``\\n`` unless
`keep_newlines`. With `byte_level` the corpus is raw bytes and the vocabulary is all 256 byte values.

The training split is cut into B contiguous streams; step j of an epoch reads window j, i.e.
columns ``[j*T, (j+1)*T)`` of every stream. What does not fill a whole window at the end of each stream (fewer
than T characters per stream) is the documented tail that an epoch skips.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

from .config import DictRoundTrip

BUNDLED_CORPUS = "synthetic_prose.txt"


class CorpusError(Exception):
    """The corpus cannot be used. The message names the file and says how to fix it."""


class UnknownCharactersError(ValueError):
    """Text holds characters the vocabulary does not have."""

    def __init__(self, unknown: list[str]):
        self.unknown = unknown
        shown = ", ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        super().__init__(f"{len(unknown)} character(s) not in the model's vocabulary: {shown}")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The model's symbols, sorted by code point. Id i stands for ``symbols[i]``.

    For a byte-level vocabulary the symbols are ``chr(0)..chr(255)`` and encode/decode work on bytes.
    """

    symbols: tuple[str, ...]
    byte_level: bool = False

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        return cls(tuple(chr(c) for c in np.unique(_code_points(text))))

    @classmethod
    def of_bytes(cls) -> "Vocabulary":
        return cls(tuple(chr(i) for i in range(256)), byte_level=True)

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: Union[str, bytes]) -> np.ndarray:
        """Token ids (N,) int32 for `text` (bytes for a byte-level vocabulary, else str).

        Raises:
          UnknownCharactersError: naming every character not in the vocabulary.
        """
        if self.byte_level:
            data = text if isinstance(text, (bytes, bytearray)) else text.encode("utf-8", "surrogateescape")
            return np.frombuffer(bytes(data), np.uint8).astype(np.int32)
        codes = _code_points(text)
        table = self._code_table()
        ids = np.searchsorted(table, codes)
        ids_clipped = np.minimum(ids, len(table) - 1)
        bad = table[ids_clipped] != codes
        if bad.any():
            raise UnknownCharactersError([chr(c) for c in np.unique(codes[bad])])
        return ids.astype(np.int32)

    def decode(self, ids) -> Union[str, bytes]:
        """The text for token ids: str, or bytes for a byte-level vocabulary."""
        ids = np.asarray(ids).reshape(-1)
        if self.byte_level:
            return ids.astype(np.uint8).tobytes()
        return "".join(self.symbols[i] for i in ids)

    def printable(self, ids) -> str:
        """The text for token ids as a str, bytes shown as latin-1 (for display, never for output files)."""
        out = self.decode(ids)
        return out.decode("latin-1") if isinstance(out, bytes) else out

    def _code_table(self) -> np.ndarray:
        return np.array([ord(s) for s in self.symbols], np.int64)

    def to_json(self) -> str:
        return json.dumps({"symbols": "".join(self.symbols), "byte_level": self.byte_level})

    @classmethod
    def from_json(cls, s: str) -> "Vocabulary":
        d = json.loads(s)
        return cls(tuple(d["symbols"]), bool(d["byte_level"]))


def _code_points(text: str) -> np.ndarray:
    # One vectorised pass instead of a Python loop per character; surrogatepass keeps odd command-line text.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class CorpusInfo(DictRoundTrip):
    """How a corpus was read; stored in checkpoints so the same text can be read again."""

    path: str
    sha256: str  # of the file's bytes
    num_symbols: int  # characters (or bytes) after newline handling
    encoding: str = "utf-8"
    keep_newlines: bool = False
    byte_level: bool = False


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A corpus as token ids (N,), with its vocabulary and provenance. The ids are int32 in memory, or for a
    large corpus a read-only uint8/uint16/uint32 `numpy.memmap` of its encoded cache (`charrnn.corpus_cache`)."""

    ids: np.ndarray
    vocab: Vocabulary
    info: CorpusInfo


def bundled_corpus_path() -> Path:
    """The corpus `charrnn train` uses when given none: corpora/synthetic_prose.txt.

    In a source checkout (or an editable install) that is the committed file. Elsewhere the deterministic
    generator writes the same bytes once into the user's cache directory.
    """
    in_checkout = Path(__file__).resolve().parents[1] / "corpora" / BUNDLED_CORPUS
    if in_checkout.is_file():
        return in_checkout
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn" / BUNDLED_CORPUS
    if not cache.is_file():
        from . import synthetic  # deferred: only needed when the committed file is absent

        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(synthetic.generate_text(), encoding="utf-8", newline="\n")
        os.replace(tmp, cache)
    return cache


CHUNK_BYTES = 1 << 22  # corpora are read in 4 MiB pieces: memory does not grow with the file


def read_chunks(path: Union[str, Path], chunk_bytes: int = CHUNK_BYTES,
                on_bytes: Optional[Callable[[bytes], None]] = None) -> Iterator[bytes]:
    """The bytes of a corpus file, in pieces of at most `chunk_bytes`, each passed to `on_bytes` first (to hash
    them). The file is opened and its first piece read at once, so these errors come from the call itself.

    Raises:
      CorpusError: missing, a directory, unreadable or empty.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if path.is_dir():
        raise CorpusError(f"{path} is a directory; give a text file")
    try:
        f = open(path, "rb")
        first = f.read(chunk_bytes)
    except OSError as e:
        raise CorpusError(f"{path}: cannot read it ({e.strerror})") from None
    if not first:
        f.close()
        raise CorpusError(f"{path} is empty; give a text file with something in it")

    def pieces() -> Iterator[bytes]:
        with f:
            yield b""  # consumed below: from here on, closing the generator (or losing it) closes the file
            piece = first
            while piece:
                if on_bytes is not None:
                    on_bytes(piece)
                yield piece
                try:
                    piece = f.read(chunk_bytes)
                except OSError as e:
                    raise CorpusError(f"{path}: cannot read it ({e.strerror})") from None

    chunks = pieces()
    next(chunks)
    return chunks


def decode_chunks(chunks: Iterable[bytes], path: Union[str, Path], encoding: str = "utf-8",
                  keep_newlines: bool = False) -> Iterator[str]:
    """Decodes a file's bytes piece by piece into the text `read_text` returns, in pieces.

    The concatenation of the pieces is exactly ``normalize_text(whole_file.decode(encoding), keep_newlines)``,
    wherever the pieces of bytes are cut: a character split across two pieces is decoded whole, a ``\r\n``
    split across two pieces becomes one ``\n``, and only the text's first character can be a dropped BOM.

    Raises:
      CorpusError: an unknown encoding, or bytes that do not decode — with the absolute byte offset and line of
        the first bad byte in the file `path` (re-read to count the lines), and what to pass instead.
    """
    try:
        decoder = codecs.getincrementaldecoder(encoding)("strict")
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1") from None
    fed = 0  # bytes given to the decoder so far
    started = False  # whether the first character has gone out (a BOM is only dropped there)
    held = ""  # a trailing "\r" kept back until the next piece shows whether "\n" follows it
    chunks = iter(chunks)
    final = False
    while not final:
        chunk = next(chunks, None)
        final = chunk is None
        chunk = b"" if final else chunk
        state = decoder.getstate()
        pending = state[0] if isinstance(state, tuple) and isinstance(state[0], bytes) else b""
        try:
            text = decoder.decode(chunk, final)
        except UnicodeDecodeError as e:
            # e.start counts from the start of what the decoder held: its pending bytes, then this piece (some
            # codecs hand on only a suffix of that, e.g. after skipping a signature).
            buffered = pending + chunk
            base = fed - len(pending)
            if isinstance(e.object, (bytes, bytearray)) and buffered.endswith(e.object):
                base += len(buffered) - len(e.object)
            raise _undecodable(path, base + e.start, encoding) from None
        fed += len(chunk)
        if not started and text:
            started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if not keep_newlines:
            text = held + text
            held = ""
            if text.endswith("\r") and not final:
                text, held = text[:-1], "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if text:
            yield text


def _undecodable(path: Union[str, Path], offset: int, encoding: str) -> CorpusError:
    """The error for an undecodable byte at absolute `offset`, with its line (counted as lines of text are: a
    ``\n``, a ``\r`` or a ``\r\n`` ends one), read back from the file."""
    lines, previous, byte = 0, b"", None
    try:
        with open(path, "rb") as f:
            remaining = offset
            while remaining > 0:
                piece = f.read(min(CHUNK_BYTES, remaining))
                if not piece:
                    break
                remaining -= len(piece)
                lines += piece.count(b"\n") + piece.count(b"\r") - piece.count(b"\r\n")
                lines -= previous == b"\r" and piece[:1] == b"\n"  # a \r\n across two pieces is one line end
                previous = piece[-1:]
            byte = f.read(1)
    except OSError:
        pass
    shown = f"byte 0x{byte[0]:02x}" if byte else "a byte"
    return CorpusError(
        f"{path}: {shown} at offset {offset} (line {lines + 1}) is not valid {encoding}; "
        f"pass --encoding with the file's encoding (e.g. --encoding latin-1) or --bytes to train on raw bytes"
    )


def read_text(
    path: Union[str, Path],
    encoding: str = "utf-8",
    keep_newlines: bool = False,
    byte_level: bool = False,
) -> tuple[Union[str, bytes], str]:
    """Reads a corpus file. Returns (text or bytes, sha256 of the file's bytes).

    Raises:
      CorpusError: missing, a directory, unreadable, empty, or not decodable — with the byte offset and line of
        the first bad byte and what to pass instead.
    """
    path = Path(path)
    digest = hashlib.sha256()
    chunks = read_chunks(path, on_bytes=digest.update)
    try:
        if byte_level:
            return b"".join(chunks), digest.hexdigest()
        text = "".join(decode_chunks(chunks, path, encoding, keep_newlines))
    finally:
        chunks.close()
    if not text:
        raise CorpusError(f"{path} holds no text after decoding; give a text file with something in it")
    return text, digest.hexdigest()


def normalize_text(text: str, keep_newlines: bool = False) -> str:
    """Drops a leading BOM and, unless `keep_newlines`, turns ``\\r\\n`` and lone ``\\r`` into ``\\n``."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if not keep_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


# Corpora from this size on are encoded once to disk and memory-mapped. Reading a text into memory peaks at
# about 35 bytes per character (the str, its code points, the int32 ids; benchmarks/corpus_memory.py),
# so this bounds that path to a few hundred MB; the cache keeps memory flat whatever the size.
CACHE_MIN_BYTES = 16 << 20


def load_corpus(
    path: Union[str, Path, None] = None,
    encoding: str = "utf-8",
    keep_newlines: bool = False,
    byte_level: bool = False,
    *,
    cache: Optional[bool] = None,
    on_build: Optional[Callable[[Path, str], None]] = None,
) -> Corpus:
    """Reads and encodes a corpus (the bundled one if `path` is None), building its vocabulary.

    A file of `CACHE_MIN_BYTES` (16 MiB) or more — or any file with ``cache=True`` — is encoded once into a file of
    token ids in the user's cache directory and memory-mapped (see `charrnn.corpus_cache`): its ``ids`` is then a
    read-only uint8/uint16 `numpy.memmap`, and memory does not grow with the corpus. Smaller files (or
    ``cache=False``) are read into memory as int32 ids. Both give the same vocabulary, ids and SHA-256.
    `on_build(cache_file, reason)` is called before a cache is (re)built.
    """
    path = Path(path) if path is not None else bundled_corpus_path()
    if cache is None:
        try:
            cache = path.is_file() and path.stat().st_size >= CACHE_MIN_BYTES
        except OSError:
            cache = False
    if cache:
        from . import corpus_cache

        return corpus_cache.load(path, encoding, keep_newlines, byte_level, on_build=on_build)
    text, digest = read_text(path, encoding, keep_newlines, byte_level)
    vocab = Vocabulary.of_bytes() if byte_level else Vocabulary.from_text(text)
    ids = vocab.encode(text)
    info = CorpusInfo(str(path), digest, len(ids), encoding, keep_newlines, byte_level)
    return Corpus(ids, vocab, info)


def drop_pages(ids: np.ndarray) -> None:
    """Lets the kernel take back the pages of a memory-mapped corpus that have been read (they stay in the page
    cache; reading them again costs a page fault, not a disk read), so the process's resident memory does not
    grow as training and evaluation walk through a large corpus. A no-op for ids in memory."""
    import mmap

    mapping = getattr(ids, "_mmap", None)  # np.memmap and its slices keep their mmap here
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


# --- splits and layout -------------------------------------------------------------------------------------

MIN_SPLIT = 2  # a split needs one input and one target


@dataclasses.dataclass(frozen=True)
class Splits:
    """Contiguous [start, stop) boundaries of the train, validation and test splits in the corpus."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def to_dict(self) -> dict:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}

    @classmethod
    def from_dict(cls, d: dict) -> "Splits":
        return cls(tuple(d["train"]), tuple(d["val"]), tuple(d["test"]))


def split(num_symbols: int, val_fraction: float, test_fraction: float) -> Splits:
    """Train first, then validation, then test, by contiguous fractions.

    A non-zero fraction gets at least two characters, so a tiny corpus still has something to validate on.

    Raises:
      CorpusError: the corpus is too short to leave two characters for each split.
    """
    n_val = max(round(num_symbols * val_fraction), MIN_SPLIT) if val_fraction > 0 else 0
    n_test = max(round(num_symbols * test_fraction), MIN_SPLIT) if test_fraction > 0 else 0
    n_train = num_symbols - n_val - n_test
    if n_train < MIN_SPLIT:
        need = MIN_SPLIT + (MIN_SPLIT if val_fraction > 0 else 0) + (MIN_SPLIT if test_fraction > 0 else 0)
        raise CorpusError(
            f"the corpus has {num_symbols} characters; training needs at least {need} "
            f"(two each for the train, validation and test splits)"
        )
    return Splits((0, n_train), (n_train, n_train + n_val), (n_train + n_val, num_symbols))


def fit_window(num_train: int, batch_size: int, seq_length: int, multiple: int = 1) -> tuple[int, int, list[str]]:
    """The largest (batch_size, seq_length) not above the requested ones that gives at least one window.

    A training split of n characters holds n - 1 targets; B streams of at least T targets need B*T <= n - 1.
    The window is shortened first only when one stream cannot hold it, then the number of streams — to a
    multiple of `multiple` (the number of devices the streams are split over; `batch_size` is one).

    Returns:
      (batch_size, seq_length, warnings) — a warning per value that had to shrink, saying why.

    Raises:
      CorpusError: not even `multiple` streams of one window fit.
    """
    warnings = []
    targets = num_train - 1
    if seq_length > targets:
        warnings.append(
            f"the training split has only {num_train} characters, shorter than one window of {seq_length + 1}; "
            f"using --seq-length {targets}"
        )
        seq_length = targets
    if batch_size * seq_length > targets:
        fitted = max(1, targets // seq_length) // multiple * multiple
        if fitted == 0:
            raise CorpusError(
                f"the training split has {num_train} characters, too few for one stream of {seq_length} on each of "
                f"{multiple} devices; use fewer --devices or a longer corpus")
        devices = f" (a multiple of the {multiple} devices)" if multiple > 1 else ""
        warnings.append(
            f"the training split has {num_train} characters, too few for {batch_size} streams of {seq_length}; "
            f"using --batch-size {fitted}{devices}"
        )
        batch_size = fitted
    return batch_size, seq_length, warnings


def streams(ids: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cuts `ids` (N,) into B contiguous streams.

    Returns:
      inputs and targets, each (B, L) with L = (N - 1) // B; targets are the inputs shifted by one.
    """
    length = (len(ids) - 1) // batch_size
    used = ids[: batch_size * length + 1]
    return used[:-1].reshape(batch_size, length), used[1:].reshape(batch_size, length)


def eval_streams(ids: np.ndarray, batch_size: int, seq_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every target of `ids` exactly once, laid out as at most `batch_size` contiguous streams of equal
    length, padded to a whole number of windows.

    Returns:
      inputs, targets and a 0/1 float mask, each (B, L) with B <= batch_size and L a multiple of `seq_length`;
      the mask is 1 on the N - 1 real targets and 0 on padding. Each stream starts from the zero state.
    """
    n = len(ids) - 1
    per_stream = math.ceil(n / max(1, min(batch_size, n)))
    batch_size = math.ceil(n / per_stream)  # e.g. 11 targets in streams of 3 need 4 streams, not 5
    length = math.ceil(per_stream / seq_length) * seq_length
    inputs = np.zeros((batch_size, length), np.int32)
    targets = np.zeros((batch_size, length), np.int32)
    mask = np.zeros((batch_size, length), np.float32)
    for b in range(batch_size):
        lo, hi = b * per_stream, min((b + 1) * per_stream, n)
        inputs[b, : hi - lo] = ids[lo:hi]
        targets[b, : hi - lo] = ids[lo + 1 : hi + 1]
        mask[b, : hi - lo] = 1.0
    return inputs, targets, mask


# --- windows read on the host, for corpora of any size ----------------------------------------------------------


class TrainWindows:
    """The windows of `streams` read straight from the ids (in memory or memory-mapped), one at a time.

    ``windows(j)`` is (rows, T + 1): for each stream b in `rows` the characters ``[j*T, j*T + T]`` of stream b,
    i.e. ``inputs[b, j*T:(j+1)*T]`` followed by the last target, so that the inputs are ``window[:, :-1]`` and
    the targets ``window[:, 1:]`` — the same numbers as slicing `streams(ids, batch_size)`, without building it.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int, rows: slice = slice(None),
                 dtype: Optional[np.dtype] = None):
        self.ids = ids
        self.seq_length = seq_length
        self.length = (len(ids) - 1) // batch_size  # L, each stream's length
        self.starts = (np.arange(batch_size, dtype=np.int64) * self.length)[rows]
        self.offsets = np.arange(seq_length + 1, dtype=np.int64)
        self.dtype = dtype or ids.dtype

    def __call__(self, j: int) -> np.ndarray:
        index = self.starts[:, None] + (j * self.seq_length + self.offsets)[None, :]
        return np.asarray(self.ids[index], dtype=self.dtype)


EVAL_CHUNK_CHARS = 1 << 22  # characters of validation text per evaluation call (4 Mi: tens of MB on the device)


class EvalWindows:
    """The layout of `eval_streams`, read from the ids a chunk of windows at a time, for splits of any size.

    Every target of `ids` is predicted exactly once, with all the context of its stream, as in `eval_streams`:
    the same B streams of ``per_stream`` targets each, every row starting from the zero state. The rows are
    padded with empty (fully masked) streams to a multiple of `row_multiple` (the devices they are split over),
    and the windows are served in `num_chunks` chunks of `chunk_windows` windows, the last padded with masked
    windows. With ``part=(p, P)`` this process reads only its share, rows ``[p * B / P, (p + 1) * B / P)`` of the
    B (padded) rows; `row_multiple` must then be a multiple of P. ``windows(c)`` returns, for those rows:

      ids (rows, chunk_windows * T + 1): inputs ``ids[:, :-1]``, targets ``ids[:, 1:]``;
      valid (rows,): how many of the row's targets in this chunk are real (the rest is padding).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int, row_multiple: int = 1,
                 part: tuple[int, int] = (0, 1), dtype: Optional[np.dtype] = None,
                 chunk_chars: int = EVAL_CHUNK_CHARS):
        n = len(ids) - 1
        self.ids, self.n, self.seq_length = ids, n, seq_length
        self.per_stream = math.ceil(n / max(1, min(batch_size, n)))
        streams = math.ceil(n / self.per_stream)
        self.batch_size = math.ceil(streams / row_multiple) * row_multiple
        self.windows = math.ceil(self.per_stream / seq_length)
        self.chunk_windows = max(1, min(self.windows, chunk_chars // (self.batch_size * seq_length)))
        self.num_chunks = math.ceil(self.windows / self.chunk_windows)
        starts = np.arange(self.batch_size, dtype=np.int64) * self.per_stream
        share = self.batch_size // part[1]
        rows = slice(part[0] * share, (part[0] + 1) * share)
        self.starts = starts[rows]
        self.real = np.clip(n - starts, 0, self.per_stream)[rows]  # targets in each row
        self.dtype = dtype or ids.dtype

    def __call__(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        span = self.chunk_windows * self.seq_length
        out = np.zeros((len(self.starts), span + 1), self.dtype)
        valid = np.clip(self.real - c * span, 0, span).astype(np.int32)
        for r, (start, count) in enumerate(zip(self.starts, valid)):
            if count:
                lo = start + c * span
                out[r, : count + 1] = self.ids[lo : lo + count + 1]
        return out, valid


DROP_PAGES_EVERY = 4096  # training steps between `drop_pages` calls on a memory-mapped training split
