#!/usr/bin/env python3
"""Training throughput on 1, 2 and 4 devices (forced host devices on a CPU), side by side in one run.

    nice -n 10 python benchmarks/scaling.py [--devices 1 2 4] [--hidden-size 256] [--num-layers 2]
                                            [--batch-size 32] [--seq-length 100] [--steps 20] [--rounds 5]

Prints a table, then ONE JSON line. JAX fixes the number of devices when it starts, so the measuring runs in a
child process started with ``XLA_FLAGS=--xla_force_host_platform_device_count=<max of --devices>`` (on a machine
with accelerators, leave --force-host off and it uses the real devices). In that one process it builds, for each
device count D, the placement over D devices and the real sharded train step (`steps.make_window_step` with that
placement: the batch of B streams split D ways, parameters and optimizer state replicated, gradients averaged by
XLA's all-reduce), fed as `train.train` feeds it: each (B, T + 1) window read on the host
(`data.TrainWindows`) and placed with `Placement.put_batch`, metrics read back every --log-every steps.

- A round times --steps steps of every device count, in an order that rotates from round to round, each in a
  quiet moment of the shared machine (`machine.quiet_sample`); per_step_s is the median over rounds.
- Before timing, every device count runs --check-steps steps from the same state; losses must match the
  one-device run to float tolerance (max_rel_loss_diff).
- host_s_per_step: the time the host spends per step reading and placing the window (outside the jitted step),
  timed alone (median of 200): what sharding adds on the host side.
- chars_per_s = B * T / per_step_s; speedup = per_step_s(1) / per_step_s(D).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-length", type=int, default=100)
    p.add_argument("--corpus", default=machine.TINYSHAKESPEARE if Path(machine.TINYSHAKESPEARE).is_file() else None)
    p.add_argument("--steps", type=int, default=20, help="timed steps per device count per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--check-steps", type=int, default=8)
    p.add_argument("--max-load", type=float, default=0.15)
    p.add_argument("--no-force-host", dest="force_host", action="store_false",
                   help="use the devices JAX finds instead of forcing host (CPU) devices")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def measure(args) -> dict:
    """In the child: every device count, side by side."""
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
    optimizer = optim.make_optimizer(tc, None)
    dtype = token_dtype(mc.vocab_size)
    windows = data.TrainWindows(corpus.ids, B, T, dtype=dtype)
    steps_per_epoch = windows.length // T
    host_state = jax.device_get(steps.init_state(mc, tc, optimizer, B))

    runs = {}
    for d in args.devices:
        placement = distributed.placement(d)
        step = steps.make_window_step(mc, tc, optimizer, steps_per_epoch, placement).lower(
            placement.put(host_state, steps.state_shardings(placement)),
            jax.ShapeDtypeStruct((B, T + 1), dtype, sharding=placement.batch)).compile()
        runs[d] = {"placement": placement, "step": step, "done": 0}

    def fresh(d):
        return runs[d]["placement"].put(host_state, steps.state_shardings(runs[d]["placement"]))

    def run(d, state, steps, losses=None):
        r, pending = runs[d], []
        for _ in range(steps):
            state, metrics = r["step"](state, r["placement"].put_batch(windows(r["done"] % steps_per_epoch), B))
            r["done"] += 1
            pending.append(metrics)
            if r["done"] % args.log_every == 0 or losses is not None:
                fetched = jax.device_get(pending)
                if losses is not None:
                    losses += [float(m["loss"]) for m in fetched]
                pending = []
        jax.block_until_ready(state)
        return state

    # Same start, same windows: every device count must follow the one-device loss curve.
    curves = {}
    for d in args.devices:
        curves[d] = []
        runs[d]["done"] = 0
        run(d, fresh(d), args.check_steps, curves[d])
    ref = np.array(curves[args.devices[0]])
    diffs = {d: float(np.max(np.abs(np.array(c) - ref) / np.abs(ref))) for d, c in curves.items()}

    # The host's share of a step: reading the window and placing it on the devices.
    host = {}
    for d in args.devices:
        p = runs[d]["placement"]
        samples = []
        for j in range(220):
            t = time.perf_counter()
            jax.block_until_ready(p.put_batch(windows(j % steps_per_epoch), B))
            samples.append(time.perf_counter() - t)
        host[d] = machine.median(samples[20:])  # after a warm-up

    states = {d: run(d, fresh(d), 3) for d in args.devices}  # warm up
    times = {d: [] for d in args.devices}
    loads = {d: [] for d in args.devices}
    for r in range(args.rounds):
        order = args.devices[r % len(args.devices):] + args.devices[:r % len(args.devices)]
        for d in order:
            def timed():
                t = time.perf_counter()
                states[d] = run(d, states[d], args.steps)
                return (time.perf_counter() - t) / args.steps

            per_step, load = machine.quiet_sample(timed, args.max_load)
            times[d].append(per_step)
            loads[d].append(round(load, 2))
    per_step = {d: machine.median(v) for d, v in times.items()}
    base = per_step[args.devices[0]]
    return {
        "bench": "scaling", "cell": args.cell, "hidden_size": args.hidden_size, "num_layers": args.num_layers,
        "batch_size": B, "seq_length": T, "vocab": mc.vocab_size, "platform": jax.devices()[0].platform,
        "visible_devices": len(jax.devices()),
        "per_step_s": {d: round(v, 5) for d, v in per_step.items()},
        "chars_per_s": {d: round(B * T / v) for d, v in per_step.items()},
        "speedup": {d: round(base / v, 3) for d, v in per_step.items()},
        "host_s_per_step": {d: round(v, 6) for d, v in host.items()},
        "max_rel_loss_diff": diffs, "check_steps": args.check_steps,
        "per_round_s": {d: [round(x, 5) for x in v] for d, v in times.items()}, "loads": loads,
        "machine": machine.describe(), "wall_s": round(time.perf_counter() - t_start, 1),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        machine.emit(measure(args))
        return {}
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if args.force_host:
        env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={max(args.devices)}", JAX_PLATFORMS="cpu")
    argv = [sys.executable, __file__, "--child", *(argv if argv is not None else sys.argv[1:])]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the measuring process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print("| devices | per step | chars/s | speed-up | host per step | max rel. loss diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for d in map(str, args.devices):
        print(f"| {d} | {result['per_step_s'][d] * 1000:.1f} ms | {result['chars_per_s'][d]:,} | "
              f"{result['speedup'][d]:.2f} | {result['host_s_per_step'][d] * 1e6:.0f} µs | "
              f"{result['max_rel_loss_diff'][d]:.1e} |")
    machine.emit(result)
    return result


if __name__ == "__main__":
    main()
