#!/usr/bin/env python3
"""Sampling throughput of charrnn (the real `charrnn.sample` code) against a PyTorch per-character loop.

    python benchmarks/sample_speed.py --cell lstm --hidden-size 512 --num-layers 2 --length 2000 \\
        --batch-sizes 1,64 --compare-torch [--torch-python /work/torchvenv/bin/python] [--rounds 3]

Prints ONE JSON line. What it measures, per batch size B (the number of samples drawn in parallel):

- chars_per_s: characters generated per second over all B samples (B * length / median seconds), by
  `charrnn.sample.sample` (prime state, then `generate_chunk` calls of `sample.CHUNK` characters, streamed to
  the host and decoded), temperature 1, no top-k, random weights (speed does not depend on them).
- compile_s: tracing + XLA for the chunk lengths a call needs (`sample.generate_chunk` lowered and compiled
  afresh for this batch size), what a first call pays beyond generating.
- median_s: the median over --rounds timed calls, each taken in a quiet moment of the shared machine with the
  foreign load (other people's CPU use, in cores) reported in `rounds`.
- batch_speedup: chars_per_s at the largest batch size / at batch 1.
- gflops, utilisation: the matmul arithmetic of the characters generated per second, and that as a fraction of
  the float32 matmul peak measured in this run (`machine.matmul_peak_gflops`, the best of the step's own
  product shape, (G*H, H) @ (H, B), the same product with rows, (B, H) @ (H, G*H), and a big square one).
  The arithmetic counted per character is that of the recurrent and output products,
  2·(H·GH + (L−1)·(H·GH + H·GH) + H·V) FLOPs: the first layer's input projection is not counted (a gather
  from a projected embedding table does it), so the figure never flatters. Batch 1 is bound
  by reading the weights, not by arithmetic: its utilisation is low by nature; batch 64 is the one to watch.
- --compare-torch: the same architecture in PyTorch (nn.Embedding, nn.LSTM/GRU/RNN, nn.Linear, random weights,
  torch.no_grad, 2 threads), sampled the usual way: one character per call, softmax and torch.multinomial,
  feed it back. Rounds alternate (ours, PyTorch) so that machine noise hits both alike; speedup = our
  chars_per_s / PyTorch's at the same batch size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402

# The PyTorch side, run by --torch-python in a child process: every batch size, once each, after a warm-up.
TORCH_SAMPLER = r'''
import argparse, json, time
import torch

p = argparse.ArgumentParser()
p.add_argument("--cell", default="lstm")
p.add_argument("--hidden", type=int, default=512)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--embed", type=int, default=64)
p.add_argument("--vocab", type=int, default=65)
p.add_argument("--length", type=int, default=2000)
p.add_argument("--batch-sizes", default="1,64")
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
emb = torch.nn.Embedding(a.vocab, a.embed)
rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[a.cell](a.embed, a.hidden, a.layers)
out = torch.nn.Linear(a.hidden, a.vocab)
for m in (emb, rnn, out):
    m.eval()


def sample(batch, length):
    x = torch.zeros(batch, dtype=torch.long)
    state, chars = None, []
    with torch.no_grad():
        for _ in range(length):
            h, state = rnn(emb(x)[None], state)  # one time step, (1, B, H)
            probs = torch.softmax(out(h[0]), dim=-1)
            x = torch.multinomial(probs, 1)[:, 0]
            chars.append(x)
    return torch.stack(chars, 1).numpy()


result = {"framework": "torch " + torch.__version__}
for batch in [int(b) for b in a.batch_sizes.split(",")]:
    sample(batch, 50)  # warm-up: first calls, thread pools
    t = time.perf_counter()
    sample(batch, a.length)
    result[str(batch)] = time.perf_counter() - t
print(json.dumps(result))
'''


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--embedding-size", type=int, default=64)
    p.add_argument("--length", type=int, default=2000, help="characters per sample")
    p.add_argument("--batch-sizes", default="1,64", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--corpus", default=machine.TINYSHAKESPEARE, help="where the vocabulary comes from")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare-torch", action="store_true")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--torch-python", default=machine.TORCH_PYTHON)
    machine.add_quiet_arguments(p)
    machine.add_torch_malloc_argument(p)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    import jax
    import jax.numpy as jnp

    from charrnn import data, launch, model, sample
    from charrnn.config import ModelConfig

    launch.configure_process()  # the malloc setting the command applies at start
    corpus = data.load_corpus(args.corpus)
    mc = ModelConfig(vocab_size=len(corpus.vocab), cell=args.cell, hidden_size=args.hidden_size,
                     num_layers=args.num_layers, embedding_size=args.embedding_size)
    params = model.init(jax.random.key(0), mc)

    def ours(batch):
        t = time.perf_counter()
        texts = sample.sample(params, mc, corpus.vocab, length=args.length, num_samples=batch, seed=1)
        assert len(texts) == batch and all(len(s) == args.length for s in texts)
        return time.perf_counter() - t

    def compile_seconds(batch):
        carry = jax.tree.map(lambda c: jnp.repeat(c, batch, axis=0), model.initial_carry(mc, 1))
        last = jnp.zeros((batch,), jnp.int32)
        chunk = min(sample.CHUNK, args.length)
        t = time.perf_counter()
        for n in {chunk, args.length % chunk} - {0}:  # as `sample.stream` calls it: full chunks, then the rest
            sample.generate_chunk.lower(params, mc, carry, last, jax.random.key(1), 0, jnp.float32(1.0),
                                        jnp.int32(0), length=n).compile()
        return time.perf_counter() - t

    compile_s = {b: compile_seconds(b) for b in args.batch_sizes}
    for b in args.batch_sizes:
        ours(b)  # the jit cache's own compile, and warm-up

    torch_script = None
    if args.compare_torch:
        torch_script = Path(tempfile.mkdtemp()) / "torch_sampler.py"
        torch_script.write_text(TORCH_SAMPLER)
        torch_argv = [args.torch_python, str(torch_script), "--cell", args.cell, "--hidden", str(args.hidden_size),
                      "--layers", str(args.num_layers), "--embed", str(args.embedding_size), "--vocab",
                      str(mc.vocab_size), "--length", str(args.length),
                      "--batch-sizes", ",".join(map(str, args.batch_sizes))]

    rounds, times, torch_times = [], {b: [] for b in args.batch_sizes}, {b: [] for b in args.batch_sizes}
    for _ in range(args.rounds):
        entry = {}
        for b in args.batch_sizes:
            seconds, load = machine.quiet(args, lambda: ours(b))
            times[b].append(seconds)
            entry[f"ours_{b}_s"], entry[f"ours_{b}_load"] = round(seconds, 4), round(load, 2)
        if args.compare_torch:
            (result, _), load = machine.quiet(args, lambda: machine.run_child(torch_argv, machine.child_environment(args.torch_huge_pages)))
            for b in args.batch_sizes:
                torch_times[b].append(result[str(b)])
                entry[f"torch_{b}_s"] = round(result[str(b)], 4)
            entry["torch_load"] = round(load, 2)
        rounds.append(entry)

    out = {"bench": "sample", "cell": args.cell, "hidden_size": args.hidden_size, "num_layers": args.num_layers,
           "embedding_size": args.embedding_size, "vocab": mc.vocab_size, "length": args.length,
           "chunk": sample.CHUNK}
    for b in args.batch_sizes:
        med = machine.median(times[b])
        entry = {"chars_per_s": round(b * args.length / med), "median_s": round(med, 4),
                 "compile_s": round(compile_s[b], 2)}
        if args.compare_torch:
            tmed = machine.median(torch_times[b])
            entry.update(torch_chars_per_s=round(b * args.length / tmed, 1), torch_median_s=round(tmed, 3),
                         speedup=round(tmed / med, 2))
        out[f"batch_{b}"] = entry
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[args.cell]
    H, GH, L, V = args.hidden_size, gates * args.hidden_size, args.num_layers, mc.vocab_size
    flops_per_char = 2 * (H * GH + (L - 1) * 2 * H * GH + H * V)
    out["flops_per_char"] = flops_per_char
    for b in args.batch_sizes:
        out[f"batch_{b}"]["gflops"] = round(out[f"batch_{b}"]["chars_per_s"] * flops_per_char / 1e9, 1)
    if not args.no_peak:
        big = max(args.batch_sizes)
        # The step's own products (on columns, `charrnn.columns`: (G*H, H) @ (H, B)), the same with rows as
        # the step ran them before, and a big square one.
        shapes = [(GH, H, big), (big, H, GH), (1024, 1024, 1024)]
        peaks, _ = machine.quiet(args, lambda: machine.matmul_peak_gflops(shapes))
        peak = max(peaks.values())
        out.update(matmul_peak_gflops=peak, matmul_gflops=peaks)
        for b in args.batch_sizes:
            out[f"batch_{b}"]["utilisation"] = round(out[f"batch_{b}"]["gflops"] / peak, 3)
    lo, hi = min(args.batch_sizes), max(args.batch_sizes)
    if lo != hi:
        out["batch_speedup"] = round(out[f"batch_{hi}"]["chars_per_s"] / out[f"batch_{lo}"]["chars_per_s"], 2)
    out.update(rounds=rounds, machine=machine.describe(), wall_s=round(time.perf_counter() - t_start, 1))
    machine.emit(out)
    return out


if __name__ == "__main__":
    machine.reexec_like_the_command(__file__, "sample")
    main()
