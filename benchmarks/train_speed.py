#!/usr/bin/env python3
"""Training throughput of charrnn (the real jitted train step) against PyTorch, side by side in one run.

    python benchmarks/train_speed.py --cell lstm --hidden-size 512 --num-layers 2 --batch-size 64 \\
        --seq-length 100 --compare-torch [--torch-python /work/torchvenv/bin/python] [--steps 10] [--plain]

Prints ONE JSON line. What it measures:

- compile_s: lowering + compiling the train step (what the first step costs), in this process.
- median_step_s / chars_per_s: the median over all timed steps (each step waited for), B*T characters a step.
  Rounds alternate JAX and PyTorch (A B A B ...), each taken in a quiet moment of the shared machine; the
  foreign load (other people's CPU use, in cores) during every sample is reported in `rounds`.
- gflops: model matmul FLOPs per step / median step time. Counted analytically: a product of (m, k) by
  (k, n) is 2*m*k*n; per step the forward pass does, per layer, the input projection 2*T*B*d*G*H and the
  recurrent product 2*T*B*H*G*H, then the head 2*T*B*H*V; training counts 3x forward (forward, gradient of
  the activations, gradient of the weights). Elementwise work, the embedding gather and Adam are not counted.
- matmul_peak_gflops: the best float32 matmul throughput XLA reaches in this run, over the step's own shape
  (B, E+H) @ (E+H, G*H), a whole-window weight-gradient shape and a big square one; utilisation = gflops / peak.
- peak_rss_mb: ru_maxrss of this process after the timed steps (before the matmul peak is measured), and
  torch_peak_rss_mb: that of the PyTorch child (from wait4).
- torch: /work/shared/bench/torch_reference.py in a subprocess with --steps (its median skips its first step);
  speedup = torch median step time / ours (above 1: we are faster), also per round.
- --plain routes the model through the plain `cells.scan` path instead of `charrnn.fused`, for an A/B;
  --layer-norm measures the layer-normalised cell (which always takes the plain path).
- --compile-seq-lengths 100,1000: first-step compile time per window length, each in a fresh process (no
  warm caches), e.g. for "seq 1000 compiles in at most 1.5x the time of seq 100".

Set CHARRNN_DEFAULT_MALLOC=1 in the environment to measure without `charrnn.fused.keep_freed_memory`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402


def path_name(args) -> str:
    """Which way the step runs: "fused", "plain" or "layer-norm" (the plain path, the normalised cell)."""
    return "layer-norm" if args.layer_norm else "plain" if args.plain else "fused"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--embedding-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-length", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--corpus", default=machine.TINYSHAKESPEARE)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (ours, PyTorch)")
    p.add_argument("--plain", action="store_true", help="use the plain cells.scan path, not charrnn.fused")
    p.add_argument("--layer-norm", action="store_true", help="the layer-normalised cell (always the plain path)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="the operands of the step's matrix products (bfloat16: mixed precision)")
    p.add_argument("--devices", type=int, default=None,
                   help="devices to split the batch over [default: as `charrnn train`, one per core that splits it]")
    p.add_argument("--compare-torch", action="store_true")
    p.add_argument("--torch-python", default=machine.TORCH_PYTHON)
    p.add_argument("--torch-reference", default=machine.TORCH_REFERENCE)
    machine.add_quiet_arguments(p)
    machine.add_torch_malloc_argument(p)
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--compile-only", action="store_true",
                   help="only build the train step (in this fresh process) and report how long that took")
    p.add_argument("--compile-seq-lengths", type=lambda s: [int(v) for v in s.split(",")], metavar="T1,T2",
                   help="compile time per window length instead: each --compile-only in a fresh child process, "
                        "--rounds times, alternating; reports medians and their ratio to the first length")
    return p.parse_args(argv)


def model_flops(cell: str, H: int, L: int, E: int, V: int, B: int, T: int) -> float:
    """Matmul FLOPs of one training step (see the module docstring)."""
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    forward = sum(2 * T * B * (E if l == 0 else H) * G * H + 2 * T * B * H * G * H for l in range(L))
    forward += 2 * T * B * H * V
    return 3.0 * forward


def compile_times(args) -> dict:
    """--compile-seq-lengths: this script with --compile-only per window length, in fresh child processes."""
    import subprocess

    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
             ("cell", "hidden_size", "num_layers", "embedding_size", "batch_size", "dropout", "corpus")]
    flags += ["--plain"] if args.plain else []
    flags += ["--layer-norm"] if args.layer_norm else []
    seconds = {T: [] for T in args.compile_seq_lengths}
    loads = []
    for _ in range(args.rounds):
        for T in args.compile_seq_lengths:
            argv = [sys.executable, __file__, *flags, f"--seq-length={T}", "--compile-only"]
            measure = lambda: json.loads(subprocess.run(argv, check=True, capture_output=True, text=True)
                                         .stdout.strip().splitlines()[-1])
            result, load = machine.quiet(args, measure)
            seconds[T].append(result["compile_s"])
            loads.append(round(load, 2))
    medians = {T: machine.median(v) for T, v in seconds.items()}
    first = args.compile_seq_lengths[0]
    out = {"bench": "compile", "path": path_name(args), "cell": args.cell,
           "hidden_size": args.hidden_size, "num_layers": args.num_layers, "batch_size": args.batch_size,
           "compile_s": {str(T): round(m, 2) for T, m in medians.items()},
           "ratio_to_first": {str(T): round(m / medians[first], 3) for T, m in medians.items()},
           "all_s": {str(T): v for T, v in seconds.items()}, "loads": loads, "machine": machine.describe()}
    machine.emit(out)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.compile_seq_lengths:
        return compile_times(args)
    t_import = time.perf_counter()
    import jax

    from charrnn import data, distributed, launch, optim, steps
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.text import token_dtype

    launch.configure_process()  # the malloc setting the command applies at start
    corpus = data.load_corpus(args.corpus)
    mc = ModelConfig(vocab_size=len(corpus.vocab), cell=args.cell, hidden_size=args.hidden_size,
                     num_layers=args.num_layers, embedding_size=args.embedding_size, dropout=args.dropout,
                     layer_norm=args.layer_norm)
    tc = TrainConfig(batch_size=args.batch_size, seq_length=args.seq_length, learning_rate=2e-3, warmup_steps=0,
                     decay="constant", precision=args.precision)
    B, T = args.batch_size, args.seq_length
    optimizer = optim.make_optimizer(tc, None)
    # The devices `charrnn train` would use here (one per core, as many as split the batch; --devices 1 or
    # CHARRNN_ONE_CPU_DEVICE=1 for one).
    placement = distributed.fit_placement(distributed.placement(args.devices), len(corpus.ids), tc)
    state = placement.put(steps.init_state(mc, tc, optimizer), steps.state_shardings(placement))
    dtype = token_dtype(mc.vocab_size)
    inputs, targets = placement.put(tuple(a.astype(dtype) for a in data.streams(corpus.ids, B)), placement.batch)
    steps_per_epoch = inputs.shape[1] // T

    t0 = time.perf_counter()
    lowered = steps.make_train_step(mc, tc, optimizer, T, steps_per_epoch, placement, fast=not args.plain).lower(state, inputs, targets)
    lower_s = time.perf_counter() - t0
    step = lowered.compile()
    compile_s = time.perf_counter() - t0  # tracing + lowering + XLA: what the first step costs beyond running
    if args.compile_only:
        out = {"bench": "compile", "cell": args.cell, "hidden_size": args.hidden_size, "num_layers": args.num_layers,
               "batch_size": B, "seq_length": T, "compile_s": round(compile_s, 3), "lower_s": round(lower_s, 3)}
        machine.emit(out)
        return out
    for _ in range(2):  # warm up: first touches of buffers, thread pools
        state, metrics = step(state, inputs, targets)
    jax.block_until_ready(state)

    def ours():
        nonlocal state
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            state, _ = step(state, inputs, targets)
            jax.block_until_ready(state)
            times.append(time.perf_counter() - t)
        return times

    torch_argv = [args.torch_python, args.torch_reference, args.corpus, "--cell", args.cell,
                  "--hidden", str(args.hidden_size), "--layers", str(args.num_layers), "--embed",
                  str(args.embedding_size), "--batch", str(B), "--seq", str(T), "--steps", str(args.steps + 1)]
    rounds, our_times, torch_medians, torch_rss = [], [], [], 0.0
    for r in range(args.rounds):
        times, load = machine.quiet(args, ours)
        our_times += times
        entry = {"ours_s": round(machine.median(times), 5), "ours_load": round(load, 2)}
        if args.compare_torch:
            (result, rss), tload = machine.quiet(args, lambda: machine.run_child(torch_argv, machine.child_environment(args.torch_huge_pages)))
            torch_medians.append(result["median_step_s"])
            torch_rss = max(torch_rss, rss)
            entry.update(torch_s=result["median_step_s"], torch_load=round(tload, 2),
                         speedup=round(result["median_step_s"] / entry["ours_s"], 3))
        rounds.append(entry)
    rss = machine.peak_rss_mb()
    median_step = machine.median(our_times)
    flops = model_flops(args.cell, args.hidden_size, args.num_layers, args.embedding_size, mc.vocab_size, B, T)

    out = {
        "bench": "train", "path": path_name(args), "precision": args.precision, "devices": placement.devices,
        "cell": args.cell, "hidden_size": args.hidden_size, "num_layers": args.num_layers,
        "embedding_size": args.embedding_size,
        "batch_size": B, "seq_length": T, "dropout": args.dropout, "vocab": mc.vocab_size,
        "corpus_chars": int(len(corpus.ids)),
        "chars_per_s": round(B * T / median_step), "median_step_s": round(median_step, 5),
        "compile_s": round(compile_s, 2), "lower_s": round(lower_s, 2), "peak_rss_mb": round(rss, 1),
        "gflop_per_step": round(flops / 1e9, 2), "gflops": round(flops / median_step / 1e9, 1),
    }
    if not args.no_peak:
        G = {"rnn": 1, "lstm": 4, "gru": 3}[args.cell]
        H, E = args.hidden_size, args.embedding_size
        shapes = [(B, E + H, G * H), (H, B * T, G * H), (2048, 2048, 2048)]
        peaks, _ = machine.quiet(args, lambda: machine.matmul_peak_gflops(shapes))
        peak = max(peaks.values())
        out.update(matmul_peak_gflops=peak, matmul_gflops=peaks, utilisation=round(out["gflops"] / peak, 3))
    if args.compare_torch:
        torch_median = machine.median(torch_medians)
        out.update(torch_median_step_s=round(torch_median, 5), torch_chars_per_s=round(B * T / torch_median),
                   torch_peak_rss_mb=round(torch_rss, 1), speedup=round(torch_median / median_step, 3),
                   speedup_per_round_median=round(machine.median([e["speedup"] for e in rounds]), 3))
        if not args.no_peak:
            out["torch_utilisation"] = round(flops / torch_median / 1e9 / out["matmul_peak_gflops"], 3)
    out.update(rounds=rounds, machine=machine.describe(), wall_s=round(time.perf_counter() - t_import, 1))
    machine.emit(out)
    return out


if __name__ == "__main__":
    machine.reexec_like_the_command(__file__, "train")
    main()
