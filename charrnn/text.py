"""The text layer: how a file becomes characters, and characters become token ids.

Everything above it (the in-memory loader in `charrnn.data`, the memory-mapped cache in `charrnn.corpus_cache`)
reads files through here, so both give the same text, vocabulary and SHA-256.

Text is read as UTF-8 by default: a leading BOM is dropped and ``\\r\\n`` and lone ``\\r`` become ``\\n`` unless
`keep_newlines`. With `byte_level` the corpus is raw bytes and the vocabulary is all 256 byte values.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

from .config import DictRoundTrip


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
        return cls(tuple(chr(c) for c in np.unique(code_points(text))))

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
        codes = code_points(text)
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


def code_points(text: str) -> np.ndarray:
    """The code points of `text` as (N,) int64, in one vectorised pass (surrogatepass keeps odd command-line
    text)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int64)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id of a vocabulary of `vocab_size`: uint8, uint16 or uint32.
    Token ids are stored (encoded corpora) and fed to the device (training windows) in it."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32)


def codec_name(encoding: str) -> str:
    """The canonical name of a Python codec ("UTF8" -> "utf-8").

    Raises:
      CorpusError: no such codec.
    """
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1") from None


def cache_directory() -> Path:
    """Where charrnn keeps files it makes for the user: ``$XDG_CACHE_HOME/charrnn`` (``~/.cache/charrnn``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"


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
    decoder = codecs.getincrementaldecoder(codec_name(encoding))("strict")
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
