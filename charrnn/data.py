"""Corpus loading, the vocabulary, contiguous splits and the truncated-BPTT stream layout.

Text is read as UTF-8 by default: a leading BOM is dropped and ``\\r\\n`` and lone ``\\r`` become ``\\n`` unless
`keep_newlines`. With `byte_level` the corpus is raw bytes and the vocabulary is all 256 byte values.

The training split is cut into B contiguous streams; step j of an epoch reads window j, i.e.
columns ``[j*T, (j+1)*T)`` of every stream. What does not fill a whole window at the end of each stream (fewer
than T characters per stream) is the documented tail that an epoch skips.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Optional, Union

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
    """A corpus as token ids (N,) int32, with its vocabulary and provenance."""

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
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if path.is_dir():
        raise CorpusError(f"{path} is a directory; give a text file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read it ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        raise CorpusError(f"{path} is empty; give a text file with something in it")
    if byte_level:
        return data, digest
    try:
        text = data.decode(encoding)
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1") from None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + data.count(b"\r", 0, e.start) - data.count(b"\r\n", 0, e.start) + 1
        raise CorpusError(
            f"{path}: byte 0x{data[e.start]:02x} at offset {e.start} (line {line}) is not valid {encoding}; "
            f"pass --encoding with the file's encoding (e.g. --encoding latin-1) or --bytes to train on raw bytes"
        ) from None
    text = normalize_text(text, keep_newlines)
    if not text:
        raise CorpusError(f"{path} holds no text after decoding; give a text file with something in it")
    return text, digest


def normalize_text(text: str, keep_newlines: bool = False) -> str:
    """Drops a leading BOM and, unless `keep_newlines`, turns ``\\r\\n`` and lone ``\\r`` into ``\\n``."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if not keep_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def load_corpus(
    path: Union[str, Path, None] = None,
    encoding: str = "utf-8",
    keep_newlines: bool = False,
    byte_level: bool = False,
) -> Corpus:
    """Reads and encodes a corpus (the bundled one if `path` is None), building its vocabulary."""
    path = Path(path) if path is not None else bundled_corpus_path()
    text, digest = read_text(path, encoding, keep_newlines, byte_level)
    vocab = Vocabulary.of_bytes() if byte_level else Vocabulary.from_text(text)
    ids = vocab.encode(text)
    info = CorpusInfo(str(path), digest, len(ids), encoding, keep_newlines, byte_level)
    return Corpus(ids, vocab, info)


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


def fit_window(num_train: int, batch_size: int, seq_length: int) -> tuple[int, int, list[str]]:
    """The largest (batch_size, seq_length) not above the requested ones that gives at least one window.

    A training split of n characters holds n - 1 targets; B streams of at least T targets need B*T <= n - 1.
    The window is shortened first only when one stream cannot hold it, then the number of streams.

    Returns:
      (batch_size, seq_length, warnings) — a warning per value that had to shrink, saying why.
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
        fitted = max(1, targets // seq_length)
        warnings.append(
            f"the training split has {num_train} characters, too few for {batch_size} streams of {seq_length}; "
            f"using --batch-size {fitted}"
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
