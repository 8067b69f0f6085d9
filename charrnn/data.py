"""From a corpus file to the windows a training step reads: loading, contiguous splits, and the
truncated-BPTT layout.

Files are read and encoded by `charrnn.text` (small ones into memory here, large ones through the memory-mapped
cache of `charrnn.corpus_cache`). The training split is cut into B contiguous streams; step j of an epoch reads
window j, i.e. columns ``[j*T, (j+1)*T)`` of every stream. What does not fill a whole window at the end of each
stream (fewer than T characters per stream) is the documented tail that an epoch skips.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from . import files
from .config import ConfigError, TrainConfig
from .text import Corpus, CorpusError, CorpusInfo, Vocabulary, cache_directory, read_text

BUNDLED_CORPUS = "synthetic_prose.txt"


def bundled_corpus_path() -> Path:
    """The corpus `charrnn train` uses when given none: corpora/synthetic_prose.txt.

    In a source checkout (or an editable install) that is the committed file. Elsewhere the deterministic
    generator writes the same bytes once into the user's cache directory.
    """
    in_checkout = Path(__file__).resolve().parents[1] / "corpora" / BUNDLED_CORPUS
    if in_checkout.is_file():
        return in_checkout
    cache = cache_directory() / BUNDLED_CORPUS
    if not cache.is_file():
        from . import synthetic  # deferred: only needed when the committed file is absent

        files.write_atomic(cache, synthetic.generate_text().encode("utf-8"))
    return cache


# Corpora from this size on are encoded once to disk and memory-mapped. Reading a text into memory holds the str,
# its code points and the int32 ids at once, tens of bytes per character (benchmarks/corpus_memory.py), so this
# bounds that path to a few hundred MB; the cache keeps memory flat whatever the size.
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


class ShuffledWindows:
    """The training windows read in shuffled segments (``Layout.segment_length``), one step at a time.

    The training split is cut into M = (N - 1) // S segments of S = K * T characters (what is left at the end is
    skipped). Every epoch draws a permutation of the M segments from `seed` and the epoch's index; round r of the
    epoch (steps ``[r*K, (r+1)*K)``) gives row b segment ``perm[r*B + b]``, read a window of T at a time, so
    an epoch is ``M // B`` rounds of K steps (`plan`'s steps per epoch; a different M mod B segments left out
    each epoch). The step starts each row from the zero state at a segment's first window (`Layout.reset_every`
    = K). ``windows(step)`` takes the run's step and returns, for the rows in `rows`, (rows, T + 1) ids as
    `TrainWindows` does.
    """

    def __init__(self, ids: np.ndarray, layout: "Layout", seed: int, rows: slice = slice(None),
                 dtype: Optional[np.dtype] = None):
        self.ids, self.layout, self.seed, self.rows = ids, layout, seed, rows
        self.num_segments = (len(ids) - 1) // layout.segment_length  # M
        self.offsets = np.arange(layout.seq_length + 1, dtype=np.int64)
        self.dtype = dtype or ids.dtype
        self._order = (-1, None)  # (epoch, its permutation): a permutation of M costs milliseconds; draw it once

    def order(self, epoch: int) -> np.ndarray:
        """The segments in the order epoch `epoch` reads them: a permutation of ``range(M)``, the same in every
        process and on every resume (it depends on the seed and the epoch only)."""
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_segments))
        return self._order[1]

    def __call__(self, step: int) -> np.ndarray:
        B, T, S = self.layout.batch_size, self.layout.seq_length, self.layout.segment_length
        epoch, j = divmod(step, self.layout.steps_per_epoch)
        round_, k = divmod(j, self.layout.reset_every)
        segments = self.order(epoch)[round_ * B : (round_ + 1) * B][self.rows]
        starts = segments.astype(np.int64) * S + k * T
        return np.asarray(self.ids[starts[:, None] + self.offsets[None, :]], dtype=self.dtype)


# A run that only time stops reads shuffled segments of this many windows (`default_segment_length`): long enough
# that a segment's first window, read from the zero state, is one in 20; short enough that the last tenth of a
# 10-minute run draws its windows from hundreds of places all over the corpus.
SEGMENT_WINDOWS = 20


def default_segment_length(config: TrainConfig) -> int:
    """The segment length of a run that does not choose one: shuffled segments of `SEGMENT_WINDOWS` windows when
    only time stops it (`config.time_limited`), trains by BPTT and resets its state, else 0 (contiguous streams:
    a run of steps or epochs reads its text as it always has)."""
    if config.time_limited and config.gradient == "bptt" and config.state_reset == "epoch":
        return SEGMENT_WINDOWS * config.window
    return 0


def training_windows(ids: np.ndarray, layout: "Layout", seed: int, rows: slice = slice(None),
                     dtype: Optional[np.dtype] = None) -> Callable[[int], np.ndarray]:
    """``windows(step) -> (rows, T + 1)`` ids: the window training step `step` reads, in `layout`'s order
    (contiguous streams, `TrainWindows`, or shuffled segments, `ShuffledWindows`)."""
    if layout.segment_length:
        return ShuffledWindows(ids, layout, seed, rows, dtype)
    windows = TrainWindows(ids, layout.batch_size, layout.seq_length, rows, dtype)
    return lambda step: windows(step % layout.steps_per_epoch)


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


# --- the training layout -------------------------------------------------------------------------------------


def check_batch(batch_size: int, devices: int, available: Optional[int] = None) -> None:
    """Raises ConfigError, in one line saying which values work, unless `batch_size` splits evenly over
    `devices` (each device gets the same number of streams)."""
    if batch_size % devices == 0:
        return
    lower, upper = batch_size // devices * devices, (batch_size // devices + 1) * devices
    sizes = " or ".join(str(b) for b in (lower, upper) if b > 0)
    counts = [d for d in range(1, min(batch_size, available or devices) + 1) if batch_size % d == 0]
    raise ConfigError(f"--batch-size {batch_size} does not split evenly over {devices} devices; use a multiple of "
                      f"{devices} ({sizes}) or --devices {', '.join(map(str, counts[:-1]))}"
                      f"{' or ' if len(counts) > 1 else ''}{counts[-1]}")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the training split is cut into windows for this run."""

    batch_size: int  # B streams (may be smaller than asked for a tiny corpus)
    seq_length: int  # T characters per window
    steps_per_epoch: int  # windows per stream (with segments: rounds of B segments times windows per segment)
    total_steps: Optional[int]  # from max_steps / max_epochs; None if only a time limit stops the run
    segment_length: int = 0  # S characters per shuffled segment, or 0: contiguous streams

    @property
    def reset_every(self) -> int:
        """Steps between the zero states the rows start from: a segment's windows, or an epoch's."""
        return self.segment_length // self.seq_length if self.segment_length else self.steps_per_epoch


def plan(num_train: int, config: TrainConfig, devices: int = 1) -> tuple[Layout, list[str]]:
    """The window layout for a training split of `num_train` characters, shrunk to fit a tiny corpus.

    The streams are split evenly over `devices`: a `config.batch_size` that is not a multiple of it is an error
    (ConfigError, saying which values work); a batch shrunk for a tiny corpus is rounded down to a multiple.

    Raises:
      ConfigError: the batch does not split over the devices.
      CorpusError: the training split is too short to give every device a stream.
    """
    check_batch(config.batch_size, devices)
    B, T, warnings = fit_window(num_train, config.batch_size, config.window, multiple=devices)
    steps_per_epoch = ((num_train - 1) // B) // T
    segment_length = config.segment_length if T == config.window else 0
    if segment_length and (num_train - 1) // segment_length < B:
        warnings.append(f"the training split has {num_train} characters, too few for {B} segments of "
                        f"{segment_length}; reading contiguous streams instead (a smaller --segment-length "
                        f"shuffles)")
        segment_length = 0
    if segment_length:
        steps_per_epoch = (num_train - 1) // segment_length // B * (segment_length // T)
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.max_epochs is not None:
        limits.append(max(1, math.ceil(config.max_epochs * steps_per_epoch)))
    return Layout(B, T, steps_per_epoch, min(limits) if limits else None, segment_length), warnings
