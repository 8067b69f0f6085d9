#!/usr/bin/env python3
"""Feeding windows from the host against slicing them on the device: training throughput, side by side.

    python benchmarks/feed.py [--hidden-size 256] [--num-layers 2] [--batch-size 32] [--seq-length 100]
                              [--steps 40] [--rounds 6] [--corpus PATH]

Prints ONE JSON line. The two ways of getting window j of the B training streams into the jitted train step:

- device: the whole (B, L) training streams live on the device and the step slices window j itself
  (`steps.make_train_step`, what charrnn did before it read large corpora from disk);
- host: each step reads the (B, T + 1) window from the ids in host memory (`data.TrainWindows`, the same code
  that reads a memory-mapped corpus) and hands it to the step as an argument (`steps.make_window_step`,
  `distributed.Placement.put_batch`), what `train.train` does.

Both run the loop as `train.train` does: steps are dispatched without waiting, the metrics are read back every
`--log-every` steps. A round times `--steps` steps of one path, then of the other (the order alternates from round
to round), each in a quiet moment of the shared machine (`machine.quiet_sample`); per_step_s is the median over
rounds of (round time / steps). Before timing, both paths run `--check-steps` steps from the same state and the
parameters, optimizer state and carry must come out bit for bit the same (identical: true).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-length", type=int, default=100)
    p.add_argument("--corpus", default=machine.TINYSHAKESPEARE if Path(machine.TINYSHAKESPEARE).is_file() else None)
    p.add_argument("--steps", type=int, default=40, help="timed steps per path per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--check-steps", type=int, default=12)
    p.add_argument("--max-load", type=float, default=0.15)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    import jax
    import numpy as np

    from charrnn import data, distributed, launch, optim, steps

    launch.configure_process()  # the malloc setting the command applies at start
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.text import token_dtype

    corpus = data.load_corpus(args.corpus)
    mc = ModelConfig(vocab_size=len(corpus.vocab), cell=args.cell, hidden_size=args.hidden_size,
                     num_layers=args.num_layers)
    tc = TrainConfig(batch_size=args.batch_size, seq_length=args.seq_length, warmup_steps=0, decay="constant")
    B, T = args.batch_size, args.seq_length
    placement = distributed.placement(1)
    optimizer = optim.make_optimizer(tc, None)
    dtype = token_dtype(mc.vocab_size)
    inputs, targets = (a.astype(dtype) for a in data.streams(corpus.ids, B))
    steps_per_epoch = inputs.shape[1] // T
    on_device = placement.put((inputs, targets), placement.batch)
    windows = data.TrainWindows(corpus.ids, B, T, dtype=dtype)

    def fresh():
        return placement.put(steps.init_state(mc, tc, optimizer, B), steps.state_shardings(placement))

    state = fresh()
    device_step = steps.make_train_step(mc, tc, optimizer, T, steps_per_epoch, placement).lower(
        state, *on_device).compile()
    host_step = steps.make_window_step(mc, tc, optimizer, steps_per_epoch, placement).lower(
        state, jax.ShapeDtypeStruct((B, T + 1), dtype, sharding=placement.batch)).compile()

    done = {"device": 0, "host": 0}  # steps taken per path: the host path reads its window without asking the device
    paths = {
        "device": lambda s: device_step(s, *on_device),
        "host": lambda s: host_step(s, placement.put_batch(windows(done["host"] % steps_per_epoch), B)),
    }

    def run(path, state, steps):
        pending = []
        for _ in range(steps):
            state, metrics = paths[path](state)
            done[path] += 1
            pending.append(metrics)
            if done[path] % args.log_every == 0:
                jax.device_get(pending)
                pending = []
        jax.block_until_ready(state)
        return state

    # Same start, same steps: the two paths must agree bit for bit.
    finals = {}
    for path in paths:
        finals[path] = jax.device_get(run(path, fresh(), args.check_steps))
    identical = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(finals["device"]),
                                                         jax.tree.leaves(finals["host"])))

    done.update(device=0, host=0)
    states = {path: fresh() for path in paths}
    for path in paths:  # warm up
        states[path] = run(path, states[path], 3)
    times = {path: [] for path in paths}
    loads = {path: [] for path in paths}
    for r in range(args.rounds):
        for path in (("device", "host") if r % 2 == 0 else ("host", "device")):
            def measure():
                t = time.perf_counter()
                states[path] = run(path, states[path], args.steps)
                return (time.perf_counter() - t) / args.steps

            per_step, load = machine.quiet_sample(measure, args.max_load)
            times[path].append(per_step)
            loads[path].append(round(load, 2))
    result = {
        "bench": "feed", "cell": args.cell, "hidden_size": args.hidden_size, "num_layers": args.num_layers,
        "batch_size": B, "seq_length": T, "vocab": mc.vocab_size, "identical": identical,
        "per_step_s": {p: round(machine.median(v), 5) for p, v in times.items()},
        "chars_per_s": {p: round(B * T / machine.median(v)) for p, v in times.items()},
        "host_over_device": round(machine.median(times["host"]) / machine.median(times["device"]), 4),
        "per_round_s": {p: [round(x, 5) for x in v] for p, v in times.items()}, "loads": loads,
        "machine": machine.describe(), "wall_s": round(time.perf_counter() - t_start, 1),
    }
    machine.emit(result)
    return result


if __name__ == "__main__":
    main()
