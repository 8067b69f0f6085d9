"""Character n-gram language models with interpolated Kneser-Ney smoothing, counted with NumPy.

    model = NGramModel.fit(train_ids, vocab_size, order=20)
    logp = model.log_probs(ids)                  # (N,) log p(ids[t] | the order-1 ids before it), nats
    table = model.log_probs_by_order(ids)        # (order, N): row n-1 is the n-gram model's log p, every n at once
    p = model.next_probs(context)                # (V,) the distribution after `context`; sums to one
    table = log_probs_by_order(train_ids, V, 20, ids)   # the same table, holding two orders in memory at a time

Smoothing: interpolated Kneser-Ney (Kneser & Ney 1995; Chen & Goodman 1998) with one absolute discount per
order, estimated in closed form from the training counts by Ney's formula D = n1 / (n1 + 2 n2), where n1 and n2
are the numbers of distinct n-grams of that order seen exactly once and exactly twice. Kneser-Ney because it
is the standard that Chen & Goodman found best among the classic smoothings, and because its lower orders
use continuation counts (in how many distinct contexts a string occurs), which is what a lower order is for
once a higher one has backed off. One discount per order rather than modified Kneser-Ney's three because it
needs no held-out data or tuning, every quantity is a count, and the model stays easy to check against a
plain count-and-smooth reference; the three-discount variant gains a few hundredths of a bit at best.

The model of order M. With h a context of k-1 symbols, h' its last k-2, w the next symbol and V the vocabulary
size, the distributions are, for k = 1 .. M::

    p_0(w)      = 1 / V                                            (so a symbol never seen in training keeps
                                                                    a non-zero probability)
    p_k(w | h)  = (max(a(hw) - D, 0) + D * F(h) * p_{k-1}(w | h')) / A(h)     if A(h) > 0
                = p_{k-1}(w | h')                                              otherwise (h unseen)

where, at the highest order k = M, a(hw) is the training count c(hw) of the n-gram, D the discount of those
counts; at a lower order k < M, a(hw) is its continuation count N1+(. hw), the number of distinct symbols
that precede hw in the training text, the start of the text counting as one more such symbol (so every
n-gram seen in training has a continuation count of at least one), and D the discount of those counts
(n1, n2 counted over continuation counts). A(h) = sum_w a(hw) and F(h) = the number of distinct w with
a(hw) > 0 (the same for both kinds of count). Every p_k sums to one over the V symbols because
0 < D <= 1 and every a(hw) > 0 is at least 1. When an order has no n-gram with a count of exactly one (only
in tiny texts) its discount is 0.5.

A context is the k-1 symbols just before the predicted one. Where a text (with its optional `history`) has
fewer than M-1 symbols before position t, the model of order M predicts position t as the model of order
t+1 does, with raw counts at that order: the longest context the text allows.

How it is counted: each n-gram gets an exact integer id, with no hashing: the k-gram ending at position t is
the (k-1)-gram ending at t-1 extended by symbol t, so its key is (id of that (k-1)-gram) * V + symbol, and
`np.unique` over the keys of all positions gives the distinct k-grams (sorted keys), their counts and the
id at every position, from which the next order's keys follow. Continuation counts of the (k-1)-grams are
a `np.bincount` over the suffix of each distinct k-gram. Look-ups walk the same chain over the evaluated
text with `np.searchsorted`. The only Python loop is over the orders. A fitted model keeps, per order and
distinct n-gram, an int64 key and two uint32 cumulative counts (16 bytes); `log_probs_by_order` builds and
drops the orders one after the other, so its memory does not grow with the order.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Optional

import numpy as np

MAX_ORDER = 20  # the longest n-gram Karpathy, Johnson & Fei-Fei (2015) compare with
FALLBACK_DISCOUNT = 0.5  # an order with no n-gram seen exactly once (Ney's formula would give 0)


class NGramError(ValueError):
    """Bad input to an n-gram model. The message says what to fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class _Order:
    """The counts of one order k, over the distinct k-grams of the training text sorted by key.

    keys: (U,) int64, context id * V + next symbol, where the context id is the (k-1)-gram's index in the
      order below (0, the empty context, for k = 1).
    cum_counts: (U + 1,) cumulative training counts: the count of k-gram i is cum_counts[i + 1] - cum_counts[i].
    cum_cont: (U + 1,) cumulative continuation counts, or None for the highest order built.
    """

    n: int
    keys: np.ndarray
    cum_counts: np.ndarray
    discount: float
    cum_cont: Optional[np.ndarray] = None
    cont_discount: Optional[float] = None


def _ney_discount(counts: np.ndarray) -> float:
    n1 = int(np.count_nonzero(counts == 1))
    n2 = int(np.count_nonzero(counts == 2))
    return n1 / (n1 + 2 * n2) if n1 > 0 else FALLBACK_DISCOUNT


def _cumulative(counts: np.ndarray, total: int) -> np.ndarray:
    dtype = np.uint32 if total < 2**32 else np.int64
    out = np.zeros(len(counts) + 1, dtype)
    np.cumsum(counts, out=out[1:])
    return out


def _build_orders(ids: np.ndarray, vocab_size: int, max_order: int) -> Iterator[_Order]:
    """Counts orders 1..max_order of `ids` (N,) int64 and yields each once it is complete: order k with its
    continuation counts as soon as order k+1 is counted, the highest order without them."""
    n_ids = len(ids)
    prev_ids = None  # (N - k + 2,) id of the (k-1)-gram ending at each position t >= k-2
    pending = None
    for k in range(1, max_order + 1):
        if k == 1:
            keys = ids
        else:
            keys = prev_ids[:-1] * vocab_size + ids[k - 1:]
        distinct, at, counts = np.unique(keys, return_inverse=True, return_counts=True)
        at = at.reshape(-1)
        if pending is not None:
            # Each distinct k-gram v+x adds one distinct left extension v to its suffix x, the (k-1)-gram ending
            # at the same position; the (k-1)-gram at the start of the text has the start as its extension.
            suffix = np.zeros(len(distinct), np.int64)
            suffix[at] = prev_ids[1:]
            cont = np.bincount(suffix, minlength=len(pending.keys))
            if len(prev_ids):
                cont[prev_ids[0]] += 1
            yield dataclasses.replace(pending, cum_cont=_cumulative(cont, n_ids + 1),
                                      cont_discount=_ney_discount(cont))
        pending = _Order(k, distinct, _cumulative(counts, n_ids), _ney_discount(counts))
        prev_ids = at
    yield pending


@dataclasses.dataclass(frozen=True, eq=False)
class _Search:
    """Where the queries (context id, symbol) of one order fall among its sorted keys."""

    seen: np.ndarray  # (Q,) bool: the context was followed by something in training
    lo: np.ndarray  # (Q,) first key of the context's row
    hi: np.ndarray  # (Q,) one past its last key
    at: np.ndarray  # (Q,) index of the n-gram's key (clipped; valid where found)
    found: np.ndarray  # (Q,) bool: the n-gram occurred in training


def _search(order: _Order, row_starts: np.ndarray, context: np.ndarray, symbols: np.ndarray,
            vocab_size: int) -> _Search:
    """context: (Q,) int64 context ids in `order`'s lower order, -1 for unseen; symbols: (Q,) int64."""
    valid = (context >= 0) & (context < len(row_starts) - 1)
    ctx = np.where(valid, context, 0)
    lo, hi = row_starts[ctx], row_starts[ctx + 1]
    seen = valid & (hi > lo)
    if len(order.keys) == 0:
        return _Search(seen, lo, hi, np.zeros_like(lo), np.zeros(len(context), bool))
    query = ctx * vocab_size + symbols
    at = np.minimum(np.searchsorted(order.keys, query), len(order.keys) - 1)
    found = seen & (order.keys[at] == query)
    return _Search(seen, lo, hi, at, found)


def _row_starts(order: _Order, vocab_size: int) -> np.ndarray:
    """(C + 1,) index of the first key of each context id's row (C: the contexts with a row, and one past)."""
    contexts = order.keys // vocab_size
    n_contexts = int(contexts[-1]) + 1 if len(contexts) else 0
    starts = np.zeros(n_contexts + 1, np.int64)
    np.cumsum(np.bincount(contexts, minlength=n_contexts), out=starts[1:])
    return starts


def _interpolate(s: _Search, cum: np.ndarray, discount: float, lower: np.ndarray) -> np.ndarray:
    """p_k of every query from the counts `cum` and the lower order's p_{k-1} of the same queries (Q,)."""
    count = np.where(s.found, cum[s.at + 1].astype(np.float64) - cum[s.at], 0.0)
    total = cum[s.hi].astype(np.float64) - cum[s.lo]
    followers = (s.hi - s.lo).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.maximum(count - discount, 0.0) + discount * followers * lower) / total
    return np.where(s.seen, p, lower)


def _walk(orders: Iterable[_Order], ids: np.ndarray, vocab_size: int, positions: np.ndarray,
          targets: np.ndarray) -> np.ndarray:
    """(M, Q) log p_M(targets[q] | ids before positions[q]) of the models of orders 1..M, where M is the number
    of orders. The context chain runs over all of `ids` (T,); probabilities only at `positions` (Q,)."""
    context = np.zeros(len(ids), np.int64)  # order 1: the empty context, id 0
    lower = np.full(len(positions), 1.0 / vocab_size)  # p_0
    same = len(positions) == len(ids) and np.array_equal(targets, ids)  # the common case: one search
    rows = []
    for order in orders:
        starts = _row_starts(order, vocab_size)
        s = _search(order, starts, context[positions], targets, vocab_size)
        rows.append(np.log(_interpolate(s, order.cum_counts, order.discount, lower)))
        if order.cum_cont is not None:
            lower = _interpolate(s, order.cum_cont, order.cont_discount, lower)
        this = s if same else _search(order, starts, context, ids, vocab_size)
        # The k-gram ending at t is the context of order k+1 at t+1.
        context = np.concatenate([[-1], np.where(this.found, this.at, -1)[:-1]])
    table = np.stack(rows)
    # Near the start of the text the order-n model is the longest one the available context allows.
    for n in range(2, len(rows) + 1):
        short = np.flatnonzero(positions < n - 1)
        table[n - 1, short] = table[positions[short], short]
    return table


def _as_ids(ids, vocab_size: int, what: str) -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim != 1:
        raise NGramError(f"{what} must be a 1-D array of symbol ids, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise NGramError(f"{what} must be integer symbol ids, got dtype {a.dtype}")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= vocab_size):
        raise NGramError(f"{what} holds ids outside 0..{vocab_size - 1}: encode the text with the same vocabulary")
    return a.astype(np.int64)


def check_order(order: int) -> None:
    """Raises NGramError unless `order` is an integer in 1..MAX_ORDER."""
    if not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
        raise NGramError(f"n-gram order must be an integer in 1..{MAX_ORDER}, got {order!r}")


def _check_vocab(vocab_size: int) -> None:
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise NGramError(f"vocabulary size must be a positive integer, got {vocab_size!r}")


def _queries(ids, history, targets, positions, vocab_size: int):
    """The combined text (history then ids) and the (positions, targets) in its coordinates."""
    text = _as_ids(ids, vocab_size, "ids")
    past = _as_ids(np.zeros(0, np.int64) if history is None else history, vocab_size, "history")
    combined = np.concatenate([past, text])
    if positions is None:
        where = np.arange(len(text), dtype=np.int64)
    else:
        where = np.asarray(positions, np.int64).reshape(-1)
        if where.size and (where.min() < 0 or where.max() >= len(text)):
            raise NGramError(f"positions must lie in 0..{len(text) - 1}")
    if targets is None:
        symbols = text[where]
    else:
        symbols = _as_ids(targets, vocab_size, "targets")
        if len(symbols) != len(where):
            raise NGramError(f"targets has {len(symbols)} ids for {len(where)} positions: give one per position")
    return combined, where + len(past), symbols


@dataclasses.dataclass(frozen=True, eq=False)
class NGramModel:
    """An interpolated Kneser-Ney character model of one order (see the module docstring). Build it with `fit`."""

    order: int
    vocab_size: int
    orders: tuple  # one _Order per order 1..order

    @classmethod
    def fit(cls, ids, vocab_size: int, order: int) -> "NGramModel":
        """Counts the n-grams of orders 1..`order` of the training `ids` (N,) (ints in 0..vocab_size-1).

        Raises:
          NGramError: order outside 1..20, an empty or ill-formed `ids`, ids outside the vocabulary.
        """
        check_order(order)
        _check_vocab(vocab_size)
        train = _as_ids(ids, vocab_size, "training ids")
        if len(train) == 0:
            raise NGramError("the training text is empty: give at least one symbol")
        return cls(int(order), int(vocab_size), tuple(_build_orders(train, int(vocab_size), int(order))))

    @property
    def discounts(self) -> list[tuple[float, Optional[float]]]:
        """Per order 1..order: (discount of raw counts, discount of continuation counts or None at the top)."""
        return [(o.discount, o.cont_discount) for o in self.orders]

    def log_probs_by_order(self, ids, *, history=None, targets=None, positions=None) -> np.ndarray:
        """Log-probabilities in nats of the models of every order 1..self.order, in one pass.

        Args:
          ids: (N,) the text, symbol ids.
          history: optional (H,) ids before the text: context for its first positions, not predicted.
          targets: optional symbol ids to score instead of the text's own: one per position (or per entry of
            `positions`); the context is still the text.
          positions: optional (Q,) positions in 0..N-1 to score (default: all).

        Returns:
          (self.order, Q) float64: row n-1 is log p_n(target at t | history + ids[:t]) of the n-gram model.
        """
        combined, where, symbols = _queries(ids, history, targets, positions, self.vocab_size)
        return _walk(self.orders, combined, self.vocab_size, where, symbols)

    def log_probs(self, ids, *, history=None, targets=None, positions=None) -> np.ndarray:
        """(Q,) log p(target at t | the up to order-1 ids before t), nats; arguments as `log_probs_by_order`."""
        return self.log_probs_by_order(ids, history=history, targets=targets, positions=positions)[-1]

    def next_probs(self, context) -> np.ndarray:
        """(V,) probabilities of each symbol after the ids `context` (possibly empty); they sum to one."""
        context = _as_ids(context, self.vocab_size, "context")
        ids = np.concatenate([context, [0]])  # a placeholder at the scored position: only what precedes it counts
        where = np.full(self.vocab_size, len(context))
        return np.exp(self.log_probs(ids, positions=where, targets=np.arange(self.vocab_size)))


def log_probs_by_order(train_ids, vocab_size: int, max_order: int, ids, *, history=None, targets=None,
                       positions=None) -> np.ndarray:
    """`NGramModel.fit(train_ids, vocab_size, max_order).log_probs_by_order(ids, ...)`, the same numbers, without
    keeping the model: each order's counts are dropped once the next order has used them, so memory stays at
    about two orders' counts (16 bytes per distinct n-gram each) whatever `max_order`.

    Returns:
      (max_order, Q) float64 log-probabilities in nats; row n-1 belongs to the n-gram model.
    """
    check_order(max_order)
    _check_vocab(vocab_size)
    train = _as_ids(train_ids, vocab_size, "training ids")
    if len(train) == 0:
        raise NGramError("the training text is empty: give at least one symbol")
    combined, where, symbols = _queries(ids, history, targets, positions, vocab_size)
    return _walk(_build_orders(train, int(vocab_size), int(max_order)), combined, int(vocab_size), where, symbols)


def ngram_ids(ids, n: int) -> np.ndarray:
    """(N - n + 1,) int64 ids of the n-grams of `ids` (N,) ending at positions n-1..N-1: equal ids exactly when
    the n-grams are equal (dense ranks, no hashing). Empty when N < n."""
    a = np.asarray(ids).astype(np.int64).reshape(-1)
    if n < 1:
        raise NGramError(f"n must be at least 1, got {n}")
    base = int(a.max()) + 1 if a.size else 1
    _, current = np.unique(a, return_inverse=True)
    current = current.reshape(-1).astype(np.int64)
    for k in range(2, n + 1):
        if len(current) < 2:
            return np.zeros(0, np.int64)
        _, current = np.unique(current[:-1] * base + a[k - 1:], return_inverse=True)
        current = current.reshape(-1).astype(np.int64)
    return current
