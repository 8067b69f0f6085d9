"""`charrnn sample`: a checkpoint -> `charrnn.sample.stream`, written to stdout as it is generated."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._group import main
from ._common import EXAMPLES, err


@main.command(epilog=EXAMPLES)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--length", type=int, default=1000, show_default=True, help="Characters to generate (after the prime).")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="Softmax temperature; 0 = always the likeliest character, 1 = the model's own distribution.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample only among the k likeliest characters (0 = all).")
@click.option("--prime", default="", help="Text to run through the model first; it is printed, then continued.")
@click.option("--seed", type=int, default=None, help="Random seed; the same seed gives the same text  [default: random, reported on stderr]")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Samples generated in parallel as one batch.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the sample(s).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the seed and the samples (prime included) instead of streaming.")
def sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet, as_json):
    """Generate text from a CHECKPOINT file or run directory, streamed to stdout as it is made."""
    try:
        _sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet or as_json, as_json)
    except BrokenPipeError:  # `charrnn sample ... | head`: the reader has what it wanted
        sys.stderr.close()
        sys.exit(0)


def _sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet, as_json=False):
    import os

    from .. import checkpoint, sample as sampling

    sampling.check_options(length, temperature, top_k, num_samples)
    ckpt = checkpoint.load(checkpoint_path)
    params = checkpoint.load_params(ckpt)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") >> 1
    chunks = sampling.stream(params, ckpt.model, ckpt.vocab, length=length, prime=prime, temperature=temperature,
                             top_k=top_k, num_samples=num_samples, seed=seed)  # checks the prime: nothing printed yet
    if not quiet:
        err.print(f"[dim]seed {seed} (pass --seed {seed} to repeat this sample)[/]")
    if as_json:
        import json

        import numpy as np

        ids = np.concatenate(list(chunks), axis=1) if length else np.zeros((num_samples, 0), np.int32)
        texts = [prime + ckpt.vocab.printable(row) for row in ids]
        click.echo(json.dumps({"seed": seed, "temperature": temperature, "top_k": top_k, "samples": texts},
                              ensure_ascii=False))
        return
    out = sys.stdout.buffer
    # Text goes out as UTF-8 whatever the locale; a byte-level model's output is raw bytes.
    encode = (lambda piece: piece) if ckpt.vocab.byte_level else (lambda piece: piece.encode("utf-8", "surrogateescape"))
    prime_bytes = prime.encode("utf-8", "surrogateescape")
    out.write(prime_bytes)
    out.flush()
    held = [[] for _ in range(num_samples - 1)]  # samples 2.. are printed whole once sample 1 has streamed
    for tokens in chunks:
        out.write(encode(ckpt.vocab.decode(tokens[0])))
        out.flush()
        for row, pieces in zip(tokens[1:], held):
            pieces.append(encode(ckpt.vocab.decode(row)))
    out.write(b"\n")
    for i, pieces in enumerate(held, start=2):
        out.flush()
        if not quiet:
            err.print(f"[dim]── sample {i} of {num_samples} ──[/]")
        out.write(prime_bytes + b"".join(pieces) + b"\n")
    out.flush()
