"""Corpora larger than memory: encoded once into a compact file of token ids, then memory-mapped.

`load` returns a `charrnn.text.Corpus` whose ``ids`` is a read-only `numpy.memmap` of uint8 ids (a vocabulary of
at most 256 symbols), uint16 (at most 65,536) or uint32, so training reads windows straight from the page cache
and its memory does not depend on the size of the corpus.

Encoding streams the file twice in 4 MiB pieces, with the decoding and newline rules of `charrnn.text.read_text`
(`charrnn.text.decode_chunks`): the first pass hashes the file (SHA-256, the hash checkpoints record) and finds
the vocabulary, the second writes the ids. Neither holds more than a piece of the text in memory.

The cache file, one per corpus path and way of reading it, lives in ``$XDG_CACHE_HOME/charrnn/corpora``
(``~/.cache/charrnn/corpora`` by default)::

    b"charrnn-ids\\0v1\\0\\0"     16 bytes
    ids                        num_symbols * itemsize bytes, little-endian
    header                     UTF-8 JSON (below)
    len(header)                8 bytes, little-endian
    b"\\0ids-end"               8 bytes

The header records the corpus (absolute path, size, modification time, SHA-256 of its first and last MiB, and
of the whole file), how it was read, the vocabulary, the ids' dtype, length and CRC-32, and a SHA-256 over the
header itself. A cache is used only when the header is intact and names this file, read this way, with the same
size, modification time and first and last MiB, and the ids' length, CRC-32 and range check out (one pass over
the ids); anything else is rebuilt. Nothing in it is executed: JSON and raw integers.

A build writes a temporary file beside the cache, fsyncs and renames it, so a crash never leaves a torn cache,
and takes a lock (``flock``) so that processes starting together on one machine encode the corpus once.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from . import files
from .text import (CHUNK_BYTES, Corpus, CorpusError, CorpusInfo, Vocabulary, cache_directory, codec_name,
                   code_points, decode_chunks, read_chunks, token_dtype)

FORMAT = "charrnn-ids"
VERSION = 1
MAGIC = b"charrnn-ids\0v1\0\0"  # 16 bytes: the ids start aligned for any itemsize
END = b"\0ids-end"
EDGE_BYTES = 1 << 20  # the first and last MiB of the corpus are hashed to notice a change of the same size
MAX_CODE_POINT = 0x10FFFF
MAX_HEADER_BYTES = 64 << 20


def directory() -> Path:
    """Where encoded corpora are kept: ``$XDG_CACHE_HOME/charrnn/corpora`` (``~/.cache/charrnn/corpora``)."""
    return cache_directory() / "corpora"


def _options(encoding: str, keep_newlines: bool, byte_level: bool) -> dict:
    # Raw bytes do not depend on the encoding or newline options.
    if byte_level:
        return {"byte_level": True}
    return {"byte_level": False, "encoding": codec_name(encoding), "keep_newlines": bool(keep_newlines)}


def cache_path(path: Union[str, Path], encoding: str = "utf-8", keep_newlines: bool = False,
               byte_level: bool = False, where: Optional[Path] = None) -> Path:
    """The cache file for corpus `path` read this way: named after the file, keyed by its absolute path and the
    reading options."""
    source = Path(os.path.abspath(path))
    key = hashlib.sha256(json.dumps([str(source), _options(encoding, keep_newlines, byte_level)],
                                    sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.name)[:64] or "corpus"
    return (where or directory()) / f"{stem}-{key}.ids"


def fingerprint(path: Union[str, Path]) -> dict:
    """What identifies the file's content cheaply: size, modification time, SHA-256 of the first and last MiB."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(EDGE_BYTES)
            f.seek(max(0, st.st_size - EDGE_BYTES))
            tail = f.read(EDGE_BYTES)
    except OSError as e:
        raise CorpusError(f"{path}: cannot read it ({e.strerror})") from None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": hashlib.sha256(head).hexdigest(),
            "tail_sha256": hashlib.sha256(tail).hexdigest()}


def _header_checksum(header: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "checksum"},
                                     sort_keys=True).encode()).hexdigest()


# --- reading a cache ---------------------------------------------------------------------------------------------


def _read_header(cache: Path) -> Optional[dict]:
    """The header of a cache file, or None if the file is missing, foreign, torn or its header damaged."""
    try:
        with open(cache, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < len(MAGIC) + 16 or f.read(len(MAGIC)) != MAGIC:
                return None
            f.seek(size - 16)
            (length,), end = struct.unpack("<Q", f.read(8)), f.read(8)
            if end != END or not 0 < length <= min(MAX_HEADER_BYTES, size - len(MAGIC) - 16):
                return None
            f.seek(size - 16 - length)
            header = json.loads(f.read(length).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        return None
    if header.get("checksum") != _header_checksum(header):
        return None
    try:
        itemsize = np.dtype(header["dtype"]).itemsize
        if header["dtype"] not in ("uint8", "uint16", "uint32") or not isinstance(header["num_symbols"], int):
            return None
        if header["num_symbols"] < 1 or not isinstance(header["ids_crc32"], int):
            return None
        if len(MAGIC) + header["num_symbols"] * itemsize + length + 16 != size:
            return None
    except (KeyError, TypeError):
        return None
    return header


def _ids_check(cache: Path, header: dict, vocab_size: int) -> bool:
    """The ids' CRC-32 matches the header and every id is in the vocabulary (one pass, a piece at a time)."""
    dtype = np.dtype(header["dtype"])
    remaining = header["num_symbols"] * dtype.itemsize
    crc, top = 0, -1
    try:
        with open(cache, "rb") as f:
            f.seek(len(MAGIC))
            while remaining:
                piece = f.read(min(CHUNK_BYTES, remaining))
                if not piece:
                    return False
                remaining -= len(piece)
                crc = zlib.crc32(piece, crc)
                if len(piece) % dtype.itemsize:
                    return False
                top = max(top, int(np.frombuffer(piece, dtype.newbyteorder("<")).max()))
    except OSError:
        return False
    return crc == header["ids_crc32"] and top < vocab_size


def _usable(cache: Path, source: Path, options: dict, now: dict) -> Optional[tuple[np.ndarray, Vocabulary, str]]:
    """(ids, vocabulary, SHA-256 of the corpus) from `cache` if it is intact and was made from `source` as it is
    `now`, read with `options`; else None."""
    header = _read_header(cache)
    if header is None or header.get("source") != str(source) or header.get("options") != options:
        return None
    if header.get("fingerprint") != now:
        return None
    try:
        vocab = Vocabulary.from_json(header["vocab"])
        sha256 = header["sha256"]
        if not (isinstance(sha256, str) and len(sha256) == 64 and int(sha256, 16) >= 0):
            return None
        if not vocab.symbols or vocab.byte_level != options["byte_level"] or token_dtype(len(vocab)) != np.dtype(header["dtype"]):
            return None
        codes = [ord(c) for c in vocab.symbols]
        if any(len(c) != 1 for c in vocab.symbols) or codes != sorted(set(codes)):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    if not _ids_check(cache, header, len(vocab)):
        return None
    ids = np.memmap(cache, dtype=np.dtype(header["dtype"]).newbyteorder("<"), mode="r", offset=len(MAGIC),
                    shape=(header["num_symbols"],))
    return ids, vocab, sha256


# --- building one ------------------------------------------------------------------------------------------------


def _vocabulary(source: Path, encoding: str, keep_newlines: bool, on_bytes) -> Vocabulary:
    """Pass 1 over a text: every symbol that occurs in it (its bytes go to `on_bytes`, to hash them)."""
    seen = np.zeros(MAX_CODE_POINT + 1, bool)
    chunks = read_chunks(source, on_bytes=on_bytes)
    try:
        for text in decode_chunks(chunks, source, encoding, keep_newlines):
            seen[code_points(text)] = True
    finally:
        chunks.close()
    symbols = np.flatnonzero(seen)
    if not len(symbols):
        raise CorpusError(f"{source} holds no text after decoding; give a text file with something in it")
    return Vocabulary(tuple(chr(c) for c in symbols))


def _id_pieces(chunks, source: Path, encoding: str, keep_newlines: bool, vocab: Vocabulary, dtype: np.dtype):
    """The token ids of the file's pieces of bytes, a piece at a time."""
    if vocab.byte_level:
        return (np.frombuffer(piece, np.uint8) for piece in chunks)
    table = np.zeros(MAX_CODE_POINT + 1, dtype)
    table[[ord(c) for c in vocab.symbols]] = np.arange(len(vocab))
    return (table[code_points(text)] for text in decode_chunks(chunks, source, encoding, keep_newlines))


def _build(source: Path, cache: Path, encoding: str, keep_newlines: bool, byte_level: bool,
           options: dict, before: dict) -> None:
    """Encodes `source` into `cache` (atomically). Raises CorpusError if the file changes while being read."""
    sha = hashlib.sha256()
    crc = {"first": 0, "second": 0}  # of the file's bytes as each pass read them

    def first_pass(piece: bytes) -> None:
        sha.update(piece)
        crc["first"] = zlib.crc32(piece, crc["first"])

    def second_pass(piece: bytes) -> None:
        crc["second"] = zlib.crc32(piece, crc["second"])

    vocab = Vocabulary.of_bytes() if byte_level else _vocabulary(source, encoding, keep_newlines, first_pass)
    dtype = token_dtype(len(vocab)).newbyteorder("<")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    crc_ids, count = 0, 0
    try:
        with open(tmp, "wb") as out:
            out.write(MAGIC)
            # Raw bytes need one pass (it hashes); text a second one, which must see the same bytes as the first.
            chunks = read_chunks(source, on_bytes=first_pass if byte_level else second_pass)
            try:
                for ids in _id_pieces(chunks, source, encoding, keep_newlines, vocab, dtype):
                    blob = ids.tobytes()
                    crc_ids = zlib.crc32(blob, crc_ids)
                    count += len(ids)
                    out.write(blob)
            finally:
                chunks.close()
            if fingerprint(source) != before or (not byte_level and crc["second"] != crc["first"]):
                raise CorpusError(f"{source} changed while it was being read; run again once it is complete")
            header = {"format": FORMAT, "version": VERSION, "source": str(source), "options": options,
                      "fingerprint": before, "sha256": sha.hexdigest(), "vocab": vocab.to_json(),
                      "num_symbols": count, "dtype": dtype.name, "ids_crc32": crc_ids}
            _write_header(out, header)
        os.replace(tmp, cache)
        files.sync_directory(cache.parent)
    except OSError as e:
        raise CorpusError(f"could not write the encoded corpus to {cache} ({e.strerror or e}); free some space or "
                          f"set XDG_CACHE_HOME to a writable directory with room") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _write_header(out, header: dict) -> None:
    """Appends the checksummed header, its length and the end marker, and fsyncs the file."""
    header["checksum"] = _header_checksum(header)
    blob = json.dumps(header).encode("utf-8")
    out.write(blob)
    out.write(struct.pack("<Q", len(blob)))
    out.write(END)
    out.flush()
    os.fsync(out.fileno())


def load(path: Union[str, Path], encoding: str = "utf-8", keep_newlines: bool = False, byte_level: bool = False,
         *, where: Optional[Path] = None, on_build: Optional[Callable[[Path, str], None]] = None) -> Corpus:
    """The corpus at `path`, encoded into (or reused from) its cache file and memory-mapped.

    Args:
      path, encoding, keep_newlines, byte_level: as `charrnn.data.load_corpus`.
      where: the cache directory (default: `directory()`).
      on_build: called as ``on_build(cache_file, reason)`` before encoding, reason "new", "changed" (the
        corpus differs from the one the cache was made from) or "damaged" (the cache file is not intact).

    Raises:
      CorpusError: as `charrnn.text.read_text`, or the cache cannot be written.
    """
    given = str(path)
    source = Path(os.path.abspath(path))
    read_chunks(source).close()  # missing, a directory, unreadable, empty: the usual one-line errors
    options = _options(encoding, keep_newlines, byte_level)
    cache = cache_path(source, encoding, keep_newlines, byte_level, where)
    now = fingerprint(source)
    found = _usable(cache, source, options, now)
    if found is None:
        found = _rebuild(source, cache, encoding, keep_newlines, byte_level, options, now, on_build)
    ids, vocab, sha256 = found
    return Corpus(ids, vocab, CorpusInfo(given, sha256, len(ids), encoding, keep_newlines, byte_level))


def _rebuild(source, cache, encoding, keep_newlines, byte_level, options, now, on_build):
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lock = open(cache.with_name(cache.name + ".lock"), "a+b")
    except OSError as e:
        raise CorpusError(f"cannot write the encoded corpus to {cache.parent} ({e.strerror}); set XDG_CACHE_HOME "
                          f"to a writable directory") from None
    with lock:
        import fcntl

        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another process may be encoding the same corpus: wait for it
        found = _usable(cache, source, options, now)  # built by another process while this one waited
        if found is None:
            if on_build is not None:
                header = _read_header(cache)
                changed = header is not None and header.get("fingerprint") != now
                on_build(cache, "new" if not cache.exists() else "changed" if changed else "damaged")
            _build(source, cache, encoding, keep_newlines, byte_level, options, now)
            found = _usable(cache, source, options, now)
            if found is None:
                raise CorpusError(f"the encoded corpus {cache} does not read back as written; check the disk")
    return found
