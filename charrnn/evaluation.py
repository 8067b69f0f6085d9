"""What `charrnn evaluate` measures: the loss on a held-out text, n-gram baselines, long-range dependencies and
where the network still errs, after Karpathy, Johnson & Fei-Fei (2015), "Visualizing and understanding
recurrent networks": its n-gram comparison, its accuracy on closing brackets by distance, and its section 4.4.

    report = evaluate(params, config, vocab, train_ids, text_ids)   # runs the network, then everything below
    report = evaluate_predictions(vocab, train_ids, text_ids, nll)  # the same from the network's losses
    report.to_dict()                                                 # the JSON schema of docs/evaluate.md

Conventions. The text has N symbols; the network reads it as validation reads a split (`network_nll`): in
B contiguous streams (the run's batch size; B = 1: the whole text as one), each from the zero state with the
state carried through it, and predicts symbols 1..N-1 (nothing predicts symbol 0), so every per-position
array here has N-1 entries, entry i belonging to the prediction of symbol i+1. The n-gram models predict the
same N-1 symbols from the text alone (no history from the training split, like the network's zero state).
Losses are in nats per character; bpc = nats / ln 2. Probabilities are of the true next symbol.

Character classes (`symbol_classes`): letters (``str.isalpha``), digits (``str.isdigit``), whitespace
(``str.isspace``), punctuation (Unicode categories P* and S*: every ASCII symbol such as ``.,;:!?'"()[]{}
<>=+-*/%&|^~#$@\\_```), other (control characters, marks, and in a byte-level vocabulary every byte >= 0x80).

Brackets (`match_closers`). For ``(`` ``)``, ``[`` ``]``, ``{`` ``}`` and ``“`` ``”`` one stack per kind: an
opener is pushed, a closer pops the innermost open one of its kind; a closer with none open is skipped, and
openers never closed are skipped. The straight double quote ``"`` alternates within a paragraph: the 1st,
3rd, ... quote opens and the next one closes it; a blank line (two newlines with only spaces or tabs between)
forgets an open quote (novels reopen a quote at each paragraph of a long speech), a ``"`` escaped by an odd
number of backslashes or written as the character literal ``'"'`` is not a quote. The distance of a closer
is its position minus its opener's (``()`` has distance 1). Accuracy by distance: the fraction of closers
given p >= 0.5 by each model, in buckets of distance 1-10, 11-20, ..., 51-60 and 61+ (the paper's
chart goes to about 60, where the n-gram can no longer see the opener).

The error breakdown (`error_breakdown`), section 4.4 of the paper. An error is a predicted symbol to which the
network gave p < 0.5. Each error is put in the first of these categories that it fits, in this order, and
the report gives the fraction of all errors in each:

1. ``ngram``: some n-gram model of order 1..9 (the paper's 1..9, `ORACLE_ORDER`) trained on the training
   split gives the true symbol p >= 0.5.
2. ``memory``: the true symbol followed the same `MEMORY_CONTEXT` (5) symbols earlier in the evaluated text:
   the 6-symbol string ending at it occurred, ending at an earlier position of the text. (What a model with
   a perfect memory of the text read so far, and nothing else, could have got right.)
3. ``rare_word``: the symbol is inside a word seen fewer than `RARE_WORD_COUNT` (5) times in the training
   split (never seen included). A word is a maximal run of letters, digits and ``_`` (``str.isalnum`` or
   ``_``), the same as `charrnn.features`' word_start; it is looked up case-sensitively.
4. ``word_start``: the symbol is the first of a word.
5. ``punctuation``: the symbol's class is punctuation.
6. ``rest``: everything else.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any, Optional, Sequence

import numpy as np

from . import ngram

SCHEMA = "charrnn.evaluate/1"
LN2 = math.log(2.0)
CLASSES = ("letters", "whitespace", "punctuation", "digits", "other")
THRESHOLD = 0.5  # an error: the network gave the true symbol less than this
ORACLE_ORDER = 9  # the n-gram oracle's models: orders 1..9, as the paper
MEMORY_CONTEXT = 5  # symbols of context the memory oracle matches
RARE_WORD_COUNT = 5  # a word seen fewer times than this in training is rare
BUCKET_EDGES = (1, 11, 21, 31, 41, 51, 61)  # distance buckets [1, 11), [11, 21), ..., [61, inf)
WINDOW = 256  # characters per scanned window when no run's window is given
CATEGORIES = ("ngram", "memory", "rare_word", "word_start", "punctuation", "rest")
PAIRS = {"(": ")", "[": "]", "{": "}", "“": "”"}


RUN_FILE = "evaluation.json"  # in a run directory: the evaluation of its test split, which `charrnn report` shows


class EvaluationError(ValueError):
    """The evaluation cannot run on this input. The message says what to fix."""


# --- characters --------------------------------------------------------------------------------------------


def _class_of(symbol: str, byte_level: bool) -> int:
    import unicodedata

    if byte_level and ord(symbol) >= 0x80:
        return CLASSES.index("other")
    if symbol.isalpha():
        return CLASSES.index("letters")
    if symbol.isdigit():
        return CLASSES.index("digits")
    if symbol.isspace():
        return CLASSES.index("whitespace")
    if unicodedata.category(symbol)[0] in "PS":
        return CLASSES.index("punctuation")
    return CLASSES.index("other")


def symbol_classes(symbols: Sequence[str], byte_level: bool = False) -> np.ndarray:
    """(V,) int8 index into `CLASSES` of each vocabulary symbol (see the module docstring)."""
    return np.array([_class_of(s, byte_level) for s in symbols], np.int8)


def loss_by_class(nll: np.ndarray, targets: np.ndarray, classes: np.ndarray) -> dict[str, tuple[int, float]]:
    """Mean loss per character class.

    Args:
      nll: (N,) loss in nats of each prediction.
      targets: (N,) the predicted (true) symbol ids.
      classes: (V,) class index of each symbol (`symbol_classes`).

    Returns:
      {class name: (count, mean nats)} for every class in `CLASSES`; the mean is NaN for an absent class.
    """
    which = classes[np.asarray(targets)]
    counts = np.bincount(which, minlength=len(CLASSES))
    sums = np.bincount(which, weights=np.asarray(nll, np.float64), minlength=len(CLASSES))
    return {name: (int(counts[i]), float(sums[i] / counts[i]) if counts[i] else math.nan)
            for i, name in enumerate(CLASSES)}


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int64)


def word_mask(text: str) -> np.ndarray:
    """(N,) bool: the character is a letter, digit or ``_``, i.e. part of a word."""
    unique, at = np.unique(_code_points(text), return_inverse=True)
    table = np.array([chr(c).isalnum() or chr(c) == "_" for c in unique], bool)
    return table[at.reshape(-1)] if len(text) else np.zeros(0, bool)


def _word_spans(in_word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the maximal runs of True in `in_word`."""
    edges = np.diff(np.concatenate([[False], in_word, [False]]).astype(np.int8))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def word_counts(text: str) -> Counter:
    """How many times each word (maximal run of letters, digits and ``_``) occurs in `text`."""
    starts, stops = _word_spans(word_mask(text))
    return Counter(text[a:b] for a, b in zip(starts.tolist(), stops.tolist()))


def rare_word_mask(text: str, counts: Counter, min_count: int = RARE_WORD_COUNT) -> np.ndarray:
    """(N,) bool: the character is inside a word that `counts` (of the training text) has fewer than
    `min_count` times (zero included)."""
    in_word = word_mask(text)
    starts, stops = _word_spans(in_word)
    rare = np.array([counts.get(text[a:b], 0) < min_count for a, b in zip(starts.tolist(), stops.tolist())], bool)
    out = np.zeros(len(text), bool)
    # Mark each rare word's span: +1 at its start, -1 at its end, then a running sum.
    marks = np.zeros(len(text) + 1, np.int64)
    np.add.at(marks, starts[rare], 1)
    np.add.at(marks, stops[rare], -1)
    out[:] = np.cumsum(marks[:-1]) > 0
    return out


def word_start_mask(text: str) -> np.ndarray:
    """(N,) bool: the character is the first of a word."""
    in_word = word_mask(text)
    return in_word & ~np.concatenate([[False], in_word[:-1]])


def memory_mask(ids: np.ndarray, context: int = MEMORY_CONTEXT) -> np.ndarray:
    """(N,) bool: ids[t] followed the same `context` ids earlier in `ids`, i.e. ids[t-context..t] also occurs
    ending at some earlier position. False for t < context."""
    ids = np.asarray(ids)
    out = np.zeros(len(ids), bool)
    grams = ngram.ngram_ids(ids, context + 1)  # (N - context,) ending at positions context..N-1
    if len(grams):
        _, first, at = np.unique(grams, return_index=True, return_inverse=True)
        out[context:] = first[at.reshape(-1)] < np.arange(len(grams))
    return out


# --- brackets ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Closers:
    """Every matched closing bracket or quote of a text, in text order.

    positions: (K,) int64 position of the closer; distances: (K,) int64 position minus its opener's;
    symbols: (K,) the closing characters.
    """

    positions: np.ndarray
    distances: np.ndarray
    symbols: tuple[str, ...]


def _blank_line_ends(codes: np.ndarray) -> np.ndarray:
    """Positions of every newline that ends a blank line (only spaces or tabs since the newline before)."""
    newlines = np.flatnonzero(codes == ord("\n"))
    if len(newlines) < 2:
        return np.zeros(0, np.int64)
    solid = np.concatenate([[0], np.cumsum((codes != ord(" ")) & (codes != ord("\t")) & (codes != ord("\n")))])
    between = solid[newlines[1:]] - solid[newlines[:-1] + 1]
    return newlines[1:][between == 0]


def _straight_quotes(text: str, codes: np.ndarray) -> list[tuple[int, int]]:
    """(opener, closer) position pairs of ``"``: alternating within each paragraph (see the module docstring)."""
    quotes = np.flatnonzero(codes == ord('"'))
    if len(quotes) == 0:
        return []
    backslash = codes == ord("\\")
    last_other = np.maximum.accumulate(np.where(backslash, -1, np.arange(len(codes))))
    before = np.maximum(quotes - 1, 0)
    run = np.where(quotes > 0, before - last_other[before], 0)  # backslashes just before each quote
    literal = (quotes > 0) & (quotes + 1 < len(codes))
    literal &= (codes[before] == ord("'")) & (codes[np.minimum(quotes + 1, len(codes) - 1)] == ord("'"))
    quotes = quotes[(run % 2 == 0) & ~literal]
    paragraph = np.searchsorted(_blank_line_ends(codes), quotes)
    first = np.concatenate([[True], paragraph[1:] != paragraph[:-1]])
    start = np.maximum.accumulate(np.where(first, np.arange(len(quotes)), 0))
    closing = np.flatnonzero((np.arange(len(quotes)) - start) % 2 == 1)
    return list(zip(quotes[closing - 1].tolist(), quotes[closing].tolist()))


def match_closers(text: str) -> Closers:
    """Every closing ``)``, ``]``, ``}``, ``”`` and ``"`` of `text` matched to its opener (module docstring)."""
    codes = _code_points(text)
    opener_of = {ord(close): ord(open_) for open_, close in PAIRS.items()}
    bracket_codes = np.array(sorted(set(opener_of) | set(opener_of.values())))
    stacks: dict[int, list[int]] = {code: [] for code in opener_of.values()}
    pairs = []
    # A loop over the bracket characters only: the stack is sequential by nature.
    for pos in np.flatnonzero(np.isin(codes, bracket_codes)).tolist():
        code = int(codes[pos])
        if code in stacks:
            stacks[code].append(pos)
        elif stacks[opener_of[code]]:
            pairs.append((stacks[opener_of[code]].pop(), pos))
    pairs += _straight_quotes(text, codes)
    pairs.sort(key=lambda pair: pair[1])
    opens = np.array([a for a, _ in pairs], np.int64)
    closes = np.array([b for _, b in pairs], np.int64)
    return Closers(closes, closes - opens, tuple(text[b] for b in closes.tolist()))


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Closers whose distance lies in [low, high] (high None: no upper end), and the fraction of them each model
    gave p >= 0.5 (None when the bucket is empty)."""

    low: int
    high: Optional[int]
    count: int
    network_accuracy: Optional[float]
    ngram_accuracy: Optional[float]

    @property
    def label(self) -> str:
        return f"{self.low}+" if self.high is None else f"{self.low}-{self.high}"


def accuracy_by_distance(distances: np.ndarray, p_network: np.ndarray, p_ngram: np.ndarray,
                         edges: Sequence[int] = BUCKET_EDGES, threshold: float = THRESHOLD) -> list[Bucket]:
    """Accuracy (p >= threshold for the true closing symbol) of two models by distance bucket.

    Args:
      distances: (K,) distance of each closer to its opener, in characters.
      p_network, p_ngram: (K,) each model's probability of each closer.
      edges: the lower ends of the buckets, increasing; the last bucket has no upper end.
    """
    distances = np.asarray(distances)
    buckets = []
    for i, low in enumerate(edges):
        high = edges[i + 1] - 1 if i + 1 < len(edges) else None
        inside = (distances >= low) & (distances <= (high if high is not None else np.inf))
        count = int(inside.sum())

        def accuracy(p):
            return float(np.mean(np.asarray(p)[inside] >= threshold)) if count else None

        buckets.append(Bucket(low, high, count, accuracy(p_network), accuracy(p_ngram)))
    return buckets


# --- the error breakdown -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ErrorBreakdown:
    """The network's errors (p < threshold) and how many of them each category of `CATEGORIES` takes, in order.

    characters: predictions looked at; errors: how many were errors; counts: {category: errors put in it}.
    """

    characters: int
    errors: int
    counts: dict[str, int]

    def fractions(self) -> dict[str, Optional[float]]:
        """{category: fraction of all errors}; None when there are no errors."""
        return {name: (count / self.errors if self.errors else None) for name, count in self.counts.items()}


def error_breakdown(p_network: np.ndarray, oracles: dict[str, np.ndarray],
                    threshold: float = THRESHOLD) -> ErrorBreakdown:
    """Peels the network's errors off category by category.

    Args:
      p_network: (N,) the network's probability of each true symbol.
      oracles: {category: (N,) bool} for each category of `CATEGORIES` but "rest": which predictions it covers.
      threshold: an error is p < threshold.

    Returns:
      The breakdown; each error counts in the first category (in `CATEGORIES` order) whose mask covers it,
      else in "rest".
    """
    left = np.asarray(p_network) < threshold
    errors = int(left.sum())
    counts = {}
    for name in CATEGORIES[:-1]:
        taken = left & np.asarray(oracles[name], bool)
        counts[name] = int(taken.sum())
        left &= ~taken
    counts["rest"] = int(left.sum())
    return ErrorBreakdown(len(left), errors, counts)


# --- the report --------------------------------------------------------------------------------------------


def _nats(x: float) -> dict[str, Optional[float]]:
    finite = x is not None and math.isfinite(x)
    return {"nats": float(x) if finite else None, "bpc": float(x) / LN2 if finite else None}


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
    """Everything `charrnn evaluate` reports; `to_dict` gives its JSON schema (docs/evaluate.md).

    Losses in nats per character over the `characters` predictions (symbols 1..N-1 of the text).
    """

    characters: int
    train_characters: int
    loss_nats: float
    by_class: dict[str, tuple[int, float, float]]  # class -> (count, network nats, best n-gram nats)
    ngram_nats: tuple[float, ...]  # entry n-1: the n-gram model's loss
    long_range: list[Bucket]
    errors: ErrorBreakdown
    settings: dict[str, Any]
    text: Optional[dict[str, Any]] = None  # what was evaluated: "source", "path", "skipped_chars", ...
    checkpoint: Optional[dict[str, Any]] = None  # the network evaluated: "path", "step"

    @property
    def best_n(self) -> int:
        return int(np.argmin(self.ngram_nats)) + 1

    @property
    def best_ngram_nats(self) -> float:
        return float(self.ngram_nats[self.best_n - 1])

    @property
    def margin_nats(self) -> float:
        """Best n-gram loss minus the network's: positive when the network is better."""
        return self.best_ngram_nats - self.loss_nats

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "characters": self.characters,
            "loss": _nats(self.loss_nats),
            "by_class": [{"class": name, "count": count, "network": _nats(net), "ngram": _nats(ng)}
                         for name, (count, net, ng) in self.by_class.items()],
            "ngram": {
                "smoothing": "interpolated Kneser-Ney, one discount per order (Ney)",
                "train_characters": self.train_characters,
                "table": [{"n": n, **_nats(x)} for n, x in enumerate(self.ngram_nats, start=1)],
                "best_n": self.best_n,
                "best": _nats(self.best_ngram_nats),
                "margin": _nats(self.margin_nats),
            },
            "long_range": {
                "ngram_n": self.best_n,
                "threshold": self.settings["threshold"],
                "buckets": [{"distance": b.label, "low": b.low, "high": b.high, "count": b.count,
                             "network_accuracy": b.network_accuracy, "ngram_accuracy": b.ngram_accuracy}
                            for b in self.long_range],
            },
            "errors": {
                "threshold": self.settings["threshold"],
                "characters": self.errors.characters,
                "count": self.errors.errors,
                "fraction": self.errors.errors / self.errors.characters if self.errors.characters else None,
                "breakdown": [{"category": name, "count": self.errors.counts[name], "fraction": fraction}
                              for name, fraction in self.errors.fractions().items()],
            },
            "settings": dict(self.settings),
            "text": None if self.text is None else dict(self.text),
            "checkpoint": None if self.checkpoint is None else dict(self.checkpoint),
        }


def network_nll(params, config, ids: np.ndarray, *, batch_size: int = 1, seq_length: int = WINDOW) -> np.ndarray:
    """(N-1,) the network's loss in nats of each symbol 1..N-1 of `ids` (N,), in text order.

    The text is laid out as validation lays out a split (`charrnn.validation.position_losses`): `batch_size`
    contiguous streams, each read from the zero state with the state carried through it, in windows of
    `seq_length`. Give a run's own batch size and window (its checkpoint's ``state["batch_size"]`` and
    ``state["seq_length"]``) and the mean over its validation split is the validation loss the run recorded;
    ``batch_size=1`` reads the whole text as one stream.
    """
    from .validation import position_losses  # JAX only when a network is evaluated

    if batch_size < 1 or seq_length < 1:
        raise EvaluationError(f"batch size and window must be at least 1, got {batch_size} and {seq_length}")
    return position_losses(params, np.asarray(ids), config, batch_size, seq_length).astype(np.float64)


def _check(text_ids: np.ndarray, train_ids: np.ndarray, max_order: int = ngram.MAX_ORDER,
           oracle_order: int = ORACLE_ORDER, memory_context: int = MEMORY_CONTEXT,
           rare_word_count: int = RARE_WORD_COUNT, threshold: float = THRESHOLD) -> None:
    if len(text_ids) == 0:
        raise EvaluationError("the text to evaluate is empty: give a text of at least 2 characters")
    if len(text_ids) < 2:
        raise EvaluationError("the text to evaluate has 1 character: give at least 2 (one to read, one to predict)")
    if len(train_ids) == 0:
        raise EvaluationError("the training text is empty: the n-gram baselines need the run's training split")
    ngram.check_order(max_order)
    ngram.check_order(oracle_order)
    if not isinstance(memory_context, (int, np.integer)) or memory_context < 0:
        raise EvaluationError(f"memory context must be a whole number of characters >= 0, got {memory_context!r}")
    if not isinstance(rare_word_count, (int, np.integer)) or rare_word_count < 1:
        raise EvaluationError(f"rare word count must be an integer >= 1, got {rare_word_count!r}")
    if not 0.0 < threshold <= 1.0:
        raise EvaluationError(f"threshold must be a probability in (0, 1], got {threshold!r}")


def evaluate_predictions(vocab, train_ids, text_ids, nll, *, max_order: int = ngram.MAX_ORDER,
                         oracle_order: int = ORACLE_ORDER, memory_context: int = MEMORY_CONTEXT,
                         rare_word_count: int = RARE_WORD_COUNT, threshold: float = THRESHOLD) -> EvaluationReport:
    """The report from the network's per-position losses `nll` (N-1,) nats over `text_ids` (N,).

    Args:
      vocab: the `charrnn.data.Vocabulary` of the ids.
      train_ids: (M,) the training split, for the n-gram models and the word counts.
      text_ids: (N,) the evaluated text.
      nll: (N-1,) the network's loss of each symbol 1..N-1 (`network_nll`).
      max_order: the n-gram table's longest order, 1..20.
      oracle_order, memory_context, rare_word_count, threshold: the error breakdown's settings (module docstring).

    Raises:
      EvaluationError, ngram.NGramError (both ValueErrors): empty or too short a text, an order out of range.
    """
    text_ids, train_ids = np.asarray(text_ids), np.asarray(train_ids)
    _check(text_ids, train_ids, max_order, oracle_order, memory_context, rare_word_count, threshold)
    nll = np.asarray(nll, np.float64)
    if nll.shape != (len(text_ids) - 1,):
        raise EvaluationError(f"nll has shape {nll.shape}; give one loss per predicted character, "
                              f"({len(text_ids) - 1},)")
    V = len(vocab)
    # Row n-1: the n-gram model's log p of each symbol 1..N-1, as the network predicts them.
    table = ngram.log_probs_by_order(train_ids, V, max(max_order, oracle_order), text_ids)[:, 1:]
    ngram_nats = tuple(float(x) for x in -table[:max_order].mean(axis=1))
    best = int(np.argmin(ngram_nats))
    targets = text_ids[1:]
    classes = symbol_classes(vocab.symbols, vocab.byte_level)
    network_by_class = loss_by_class(nll, targets, classes)
    ngram_by_class = loss_by_class(-table[best], targets, classes)
    by_class = {name: (count, network_by_class[name][1], ngram_by_class[name][1])
                for name, (count, _) in network_by_class.items()}

    text = vocab.printable(text_ids)
    closers = match_closers(text)
    predicted = closers.positions - 1  # the prediction of symbol t is entry t-1
    long_range = accuracy_by_distance(closers.distances, np.exp(-nll[predicted]), np.exp(table[best][predicted]),
                                      threshold=threshold)

    rare = rare_word_mask(text, word_counts(vocab.printable(train_ids)), rare_word_count)
    oracles = {
        "ngram": (table[:oracle_order] >= math.log(threshold)).any(axis=0),
        "memory": memory_mask(text_ids, memory_context)[1:],
        "rare_word": rare[1:],
        "word_start": word_start_mask(text)[1:],
        "punctuation": classes[targets] == CLASSES.index("punctuation"),
    }
    errors = error_breakdown(np.exp(-nll), oracles, threshold)
    settings = {"max_order": max_order, "oracle_order": oracle_order, "memory_context": memory_context,
                "rare_word_count": rare_word_count, "threshold": threshold, "buckets": list(BUCKET_EDGES)}
    return EvaluationReport(len(nll), len(train_ids), float(nll.mean()), by_class, ngram_nats, long_range, errors,
                            settings)


def evaluate(params, model_config, vocab, train_ids, text_ids, *, batch_size: int = 1, seq_length: int = WINDOW,
             **options) -> EvaluationReport:
    """Evaluates a network on `text_ids` (N,) against n-gram models trained on `train_ids`: loss, loss by
    character class, the n-gram table, accuracy on closing brackets by distance, the error breakdown.

    Args:
      params, model_config: the network (`charrnn.model`).
      vocab: its `charrnn.data.Vocabulary`; train_ids and text_ids are encoded with it.
      batch_size, seq_length: how the network reads the text (`network_nll`): a run's own, to measure it as
        its validation did.
      options: as `evaluate_predictions` (max_order, oracle_order, memory_context, rare_word_count, threshold).

    Raises:
      EvaluationError, ngram.NGramError (both ValueErrors), with a one-line message saying what to fix.
    """
    text_ids = np.asarray(text_ids)
    _check(text_ids, np.asarray(train_ids), **options)
    if model_config.vocab_size != len(vocab):
        raise EvaluationError(f"the vocabulary has {len(vocab)} symbols but the model {model_config.vocab_size}: "
                              f"give the vocabulary the model was trained with")
    nll = network_nll(params, model_config, text_ids, batch_size=batch_size, seq_length=seq_length)
    return evaluate_predictions(vocab, train_ids, text_ids, nll, **options)


def read_run_evaluation(run_dir) -> Optional[dict[str, Any]]:
    """The report (`EvaluationReport.to_dict`) that `charrnn evaluate` left in a run directory, or None when
    there is none or it is not a report of this schema."""
    import json
    from pathlib import Path

    try:
        d = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("schema") == SCHEMA else None
