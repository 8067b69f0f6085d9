"""Generation: temperature and top-k sampling in one jitted `lax.scan`, streamed in chunks.

    p = softmax(logits / temperature)     temperature 0 means argmax

Generation starts as if right after a newline (or the first symbol of a vocabulary without one), which is
not printed; a prime follows that newline, so it reads as the start of a line. Why: training resets the state
to zero only at the start of each pass, where the streams mostly begin mid-text, so a model may handle, say,
a capital letter fed straight into the zero state badly, while "zero state, newline" is a context it knows.

A draw is Gumbel-max: the character at position t is argmax(logits / temperature + g), g standard Gumbel noise
from the key ``fold_in(key(seed), t)``, one row of it per sample. So the same seed gives the same text whatever
the chunk size, and the samples of a batch differ because each reads its own row of that noise.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from . import columns, model
from .config import ModelConfig
from .text import Vocabulary

CHUNK = 128  # characters generated per device call: the loop stays in jit, the host streams between chunks
# From this many samples at once the loop runs on columns (`charrnn.columns`), below it on rows (`model.step`): at
# batch 1 a step is bound by reading the weights, and rows read them faster (benchmarks/README.md).
COLUMNS_MIN_BATCH = 8
MAX_NOISE = 2**24  # floats of Gumbel noise one chunk holds at most (64 MiB): many samples at once get shorter chunks


class SampleError(ValueError):
    """A sampling option is out of range, or the prime has characters the model never saw."""


def filter_logits(logits: jax.Array, temperature: jax.Array, top_k: jax.Array) -> jax.Array:
    """Logits scaled by 1/temperature, with all but the `top_k` largest set to -inf (top_k 0: keep all).

    Args:
      logits: (B, V).
      temperature: scalar > 0 (0 is handled by the caller as argmax).
      top_k: int scalar in [0, V].
    """
    V = logits.shape[-1]
    limited = (top_k > 0) & (top_k < V)

    def without_all_but_top_k(logits):
        kth_largest = jnp.take(jnp.sort(logits, axis=-1), V - top_k, axis=-1)[..., None]
        return jnp.where(logits < kth_largest, -jnp.inf, logits)

    # A sort of every row each step costs a generation loop time; without a limit there is nothing to sort for.
    logits = jax.lax.cond(limited, without_all_but_top_k, lambda logits: logits, logits)
    return logits / jnp.maximum(temperature, 1e-6)


def gumbel_noise(key: jax.Array, position: jax.Array, length: int, shape: tuple[int, ...]) -> jax.Array:
    """The noise of the draws at positions ``position .. position + length - 1``: (length, *shape) standard Gumbel,
    row t from ``fold_in(key, position + t)``.

    Drawn for a whole chunk before its loop, in one vectorised call: drawn inside the loop, one small call per
    step, it cost 7% of a batch-64 sampling step (benchmarks/README.md, "Batch-64 sampling")."""
    return jax.vmap(lambda t: jax.random.gumbel(jax.random.fold_in(key, position + t), shape))(jnp.arange(length))


def choose(noise: jax.Array, logits: jax.Array, temperature: jax.Array, top_k: jax.Array) -> jax.Array:
    """Next tokens (B,) from logits (B, V): argmax when temperature is 0, else a draw from the filtered softmax.

    The draw is Gumbel-max, argmax(filtered logits + noise) with `noise` (B, V) standard Gumbel: exactly a draw
    from softmax(filtered logits)."""
    drawn = jnp.argmax(filter_logits(logits, temperature, top_k) + noise, axis=-1)
    return jnp.where(temperature == 0, jnp.argmax(logits, axis=-1), drawn).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "length"))
def generate_chunk(params, config: ModelConfig, carry, last_tokens, key, position, temperature, top_k, *, length: int):
    """Generates `length` tokens per sample in one `lax.scan`.

    Args:
      carry: model state after `last_tokens`' predecessors, per layer (B, H).
      last_tokens: (B,) the most recent token of each sample; it is fed first.
      key: the sample's base PRNG key.
      position: index of the first token this chunk generates (its noise is `gumbel_noise(key, position, ...)`).
      temperature, top_k: scalars (traced: changing them does not recompile).

    Returns:
      tokens (B, length) int32, the carry after the last token's predecessor, and the last tokens (B,).
    """

    # Many samples at once run on columns, their weights transposed once per chunk (`charrnn.columns` says why);
    # a few run on rows, with the first layer's input projection as a table whose rows the loop gathers.
    on_columns = last_tokens.shape[0] >= COLUMNS_MIN_BATCH
    if on_columns:
        weights, carry = columns.transpose(params, config), columns.to_columns(carry)
    else:
        table = model.input_table(params, config)

    def body(state, noise):
        carry, tokens = state
        if on_columns:
            logits, carry = columns.step(weights, config, tokens, carry)
            logits = logits.T  # (B, vocab) for the draw
        else:
            logits, carry = model.step(params, config, tokens, carry, table)
        tokens = choose(noise, logits, temperature, top_k)
        return (carry, tokens), tokens

    noise = gumbel_noise(key, position, length, (last_tokens.shape[0], config.vocab_size))
    (carry, last_tokens), tokens = jax.lax.scan(body, (carry, last_tokens), noise)
    return tokens.T, columns.to_rows(carry) if on_columns else carry, last_tokens


@functools.partial(jax.jit, static_argnames=("config",))
def prime_state(params, config: ModelConfig, prime_ids):
    """The carry after running `prime_ids` (P,) through the model, batch 1. The last prime token is not fed:
    generation feeds it first."""
    _, carry = model.forward(params, config, prime_ids[None, :-1], model.initial_carry(config, 1))
    return carry


def start_token(vocab: Vocabulary) -> int:
    """The token every sample starts after (before any prime): a newline where the vocabulary has one."""
    for symbol in ("\n", " "):
        if symbol in vocab.symbols:
            return vocab.symbols.index(symbol)
    return 0


def check_options(length: int, temperature: float, top_k: int, num_samples: int) -> None:
    if length < 0:
        raise SampleError(f"length must be >= 0, got {length}")
    if not temperature >= 0 or not np.isfinite(temperature):
        raise SampleError(f"temperature must be >= 0 (0 means always the likeliest character), got {temperature}")
    if top_k < 0:
        raise SampleError(f"top-k must be >= 0 (0 means no limit), got {top_k}")
    if num_samples < 1:
        raise SampleError(f"num-samples must be at least 1, got {num_samples}")


def stream(
    params: Any,
    config: ModelConfig,
    vocab: Vocabulary,
    *,
    length: int,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    num_samples: int = 1,
    seed: int = 0,
    chunk: int = CHUNK,
) -> Iterator[np.ndarray]:
    """Generates `num_samples` samples of `length` tokens in parallel, yielding them chunk by chunk.

    Yields:
      token ids (num_samples, c) int32 for the next c tokens of every sample (the prime is not included);
      the chunks add up to `length`.

    Raises:
      SampleError: an option is out of range or the prime has characters outside the vocabulary.
    """
    # Checked here, before the first chunk is asked for: a caller may print things once it has the iterator.
    check_options(length, temperature, top_k, num_samples)
    try:
        prime_ids = np.r_[np.int32(start_token(vocab)), vocab.encode(prime) if prime else np.zeros(0, np.int32)]
    except ValueError as e:
        raise SampleError(f"the prime has {e}") from None
    return _chunks(params, config, prime_ids, length, temperature, top_k, num_samples, seed, chunk)


def _chunks(params, config, prime_ids, length, temperature, top_k, num_samples, seed, chunk) -> Iterator[np.ndarray]:
    carry = prime_state(params, config, jnp.asarray(prime_ids))
    carry = jax.tree.map(lambda c: jnp.repeat(c, num_samples, axis=0), carry)
    last = jnp.full((num_samples,), prime_ids[-1], jnp.int32)
    key = jax.random.key(seed)
    temperature, top_k = jnp.float32(temperature), jnp.int32(top_k)
    chunk = max(1, min(chunk, length, MAX_NOISE // (num_samples * config.vocab_size)))
    done = 0
    while done < length:
        tokens, carry, last = generate_chunk(params, config, carry, last, key, done, temperature, top_k, length=chunk)
        tokens = np.asarray(tokens)[:, : length - done]
        done += tokens.shape[1]
        yield tokens


def sample(params: Any, config: ModelConfig, vocab: Vocabulary, **options) -> list:
    """The whole samples at once (str, or bytes for a byte-level vocabulary); options as for `stream`."""
    pieces = list(stream(params, config, vocab, **options))
    n = options.get("num_samples", 1)
    ids = np.concatenate(pieces, axis=1) if pieces else np.zeros((n, 0), np.int32)
    return [vocab.decode(row) for row in ids]
