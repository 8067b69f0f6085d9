#!/usr/bin/env python3
"""BPTT against RTRL: time per character and memory, as the window grows and as the hidden size grows.

    nice -n 10 python benchmarks/rtrl_vs_bptt.py [--cells rnn lstm] [--windows 50 200 1000 5000] [--hidden 16]
                                                 [--sizes 8 16 32 64] [--window 200] [--out benchmarks/results/rtrl_vs_bptt.json]

One stream (batch 1), one layer, a vocabulary of 32 and embeddings of 8, random tokens. For each configuration
(cell, method, H, window) a fresh child process builds the model, compiles the gradient of one window and runs
it, so that each peak is its own:

- bptt: ``jax.value_and_grad(charrnn.model.loss)``, the project's training gradient (the fused recurrent stack,
  which keeps what every step needs for the backward pass: memory linear in the window).
- bptt_scan: ``jax.value_and_grad`` of the same loss written as a plain ``lax.scan`` of the cell's step
  (`charrnn.cells.scan`), autodiff's own BPTT, for comparison.
- rtrl: ``charrnn.rtrl.rtrl_gradient`` from zero sensitivities (memory independent of the window).

Reported per configuration:
- us_per_char: wall time of one gradient over the window (median of up to 5 runs, after a first run), per
  character, in microseconds.
- xla_mib: the buffers XLA allocates for the compiled gradient (arguments + outputs + temporaries, from
  ``compiled.memory_analysis()``), the memory the computation itself needs, in MiB.
- run_mib: how far the child's resident set grew above what it held just before the first run (its peak reset
  through /proc/self/clear_refs before the run), in MiB.
- peak_rss_mib: the child's ru_maxrss at the end (JAX, compilation and all), in MiB.
- load: other programs' CPU use during the child, in cores (the machine is shared).

Prints a markdown table and a text chart, then writes everything to --out as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402

VOCAB, EMBEDDING = 32, 8
METHODS = ("bptt", "bptt_scan", "rtrl")


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def scan_loss(config, params, tokens, targets, carry):
    """model.loss's maths as plain lax.scans of `charrnn.cells` steps, one per layer."""
    from charrnn import cells, model

    cell = cells.get(config.cell)
    x = params["embedding"][tokens.T]  # (T, B, E)
    for layer_params, layer_carry in zip(params["layers"], carry):
        _, states = cells.scan(cell, layer_params, cell.project_inputs(layer_params, x), layer_carry)
        x = states["h"]
    return model.cross_entropy(model.head(params, x), targets.T)


def child(cell: str, method: str, hidden: int, window: int) -> dict:
    """Measures one configuration in this process; returns the figures as a dict."""
    import jax
    import jax.numpy as jnp

    from charrnn import model, rtrl
    from charrnn.config import ModelConfig

    config = ModelConfig(vocab_size=VOCAB, cell=cell, hidden_size=hidden, num_layers=1, embedding_size=EMBEDDING)
    params = model.init(jax.random.key(0), config)
    text = jax.random.randint(jax.random.key(1), (1, window + 1), 0, VOCAB)
    tokens, targets = text[:, :-1], text[:, 1:]
    carry = model.initial_carry(config, 1)
    if method == "bptt":
        fn = jax.jit(jax.value_and_grad(lambda p, x, y, c: model.loss(p, config, x, y, c)[0]))
        args = (params, tokens, targets, carry)
    elif method == "bptt_scan":
        fn = jax.jit(jax.value_and_grad(functools.partial(scan_loss, config)))
        args = (params, tokens, targets, carry)
    else:
        fn = jax.jit(lambda p, x, y, c, s: rtrl.rtrl_gradient(p, config, x, y, c, s)[:2])
        args = (params, tokens, targets, carry, rtrl.init_sensitivities(params, config, 1))
    compiled = fn.lower(*args).compile()
    stats = compiled.memory_analysis()
    xla_bytes = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes

    rss_before = _rss_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak from here on is the run's
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times = [time.perf_counter() - start]
    run_mib = _rss_mib("VmHWM") - rss_before
    budget = time.perf_counter() + 2.0
    while len(times) < 6 and time.perf_counter() < budget:
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return {
        "cell": cell, "method": method, "hidden": hidden, "window": window,
        "us_per_char": 1e6 * seconds / window,
        "seconds": seconds,
        "runs": len(times),
        "xla_mib": xla_bytes / 2**20,
        "xla_temp_mib": stats.temp_size_in_bytes / 2**20,
        "run_mib": run_mib,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sensitivity_floats": rtrl.cost(config).sensitivity_floats if method == "rtrl" else 0,
        "rtrl_flops_per_char": rtrl.cost(config).flops_per_character,
    }


def measure(cell: str, method: str, hidden: int, window: int) -> dict:
    """Runs `child` in a fresh process and returns its figures with the foreign load during it."""
    argv = [sys.executable, __file__, "--child", cell, method, str(hidden), str(window)]
    with machine.Load() as load:
        proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cell} {method} H={hidden} T={window} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load"] = load.cores
    return result


def table(rows: list[dict]) -> str:
    lines = ["| cell | method | H | window | µs/char | XLA buffers MiB | run RSS growth MiB | peak RSS MiB | load |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['method']} | {r['hidden']} | {r['window']} | {r['us_per_char']:.1f} | "
                     f"{r['xla_mib']:.3f} | {r['run_mib']:.1f} | {r['peak_rss_mib']:.0f} | {r['load']:.2f} |")
    return "\n".join(lines)


def bar_chart(rows: list[dict], key: str, label: str, along: str) -> str:
    """Horizontal bars on a log scale, one per row, grouped by cell and method."""
    values = [r[key] for r in rows if r[key] > 0]
    low, high = math.log10(min(values)), math.log10(max(values))
    width = 50
    lines = [f"{label} (log scale, {min(values):.3g} .. {max(values):.3g})"]
    for r in rows:
        n = 1 if r[key] <= 0 or high == low else 1 + round((math.log10(r[key]) - low) / (high - low) * (width - 1))
        lines.append(f"  {r['cell']:4} {r['method']:9} {along}={r[along]:<5} {'#' * n} {r[key]:.3g}")
    return "\n".join(lines)


def crossings(rows: list[dict], key: str, along: str, method: str) -> dict:
    """Per cell, where the curves of `key` for `method` and for rtrl cross along `along`: which is smaller at the
    first point and the two consecutive points between which the other becomes smaller (None: no crossing)."""
    out = {}
    for cell in sorted({r["cell"] for r in rows}):
        pairs: dict = {}
        for r in rows:
            if r["cell"] == cell and r["method"] in (method, "rtrl"):
                pairs.setdefault(r[along], {})[r["method"]] = r[key]
        xs = [x for x in sorted(pairs) if len(pairs[x]) == 2]
        smaller = [method if pairs[x][method] < pairs[x]["rtrl"] else "rtrl" for x in xs]
        flip = next((k for k in range(1, len(xs)) if smaller[k] != smaller[0]), None)
        out[cell] = {"smaller_first": smaller[0] if xs else None,
                     "crosses_between": None if flip is None else [xs[flip - 1], xs[flip]]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm"])
    parser.add_argument("--windows", nargs="+", type=int, default=[50, 200, 1000, 5000])
    parser.add_argument("--hidden", type=int, default=16, help="H of the window sweep")
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 32, 64], help="H of the size sweep")
    parser.add_argument("--window", type=int, default=200, help="window of the size sweep")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "rtrl_vs_bptt.json"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cell, method, hidden, window = args.child
        print(json.dumps(child(cell, method, int(hidden), int(window))))
        return

    started = time.perf_counter()
    by_window, by_size, done = [], [], {}
    for cell in args.cells:
        for method in METHODS:
            for window in args.windows:
                done[cell, method, args.hidden, window] = measure(cell, method, args.hidden, window)
                by_window.append(done[cell, method, args.hidden, window])
                print(f"{cell} {method} H={args.hidden} T={window}: {by_window[-1]['us_per_char']:.1f} us/char",
                      file=sys.stderr, flush=True)
            for hidden in args.sizes:
                key = (cell, method, hidden, args.window)
                if key not in done:
                    done[key] = measure(cell, method, hidden, args.window)
                    print(f"{cell} {method} H={hidden} T={args.window}: {done[key]['us_per_char']:.1f} us/char",
                          file=sys.stderr, flush=True)
                by_size.append(done[key])

    charts = "\n\n".join([
        bar_chart(by_window, "xla_mib", f"XLA buffers, MiB, by window (H={args.hidden})", "window"),
        bar_chart(by_window, "us_per_char", f"time per character, µs, by window (H={args.hidden})", "window"),
        bar_chart(by_size, "xla_mib", f"XLA buffers, MiB, by H (window {args.window})", "hidden"),
        bar_chart(by_size, "us_per_char", f"time per character, µs, by H (window {args.window})", "hidden"),
    ])
    result = {
        "benchmark": "rtrl_vs_bptt",
        "setup": {"batch": 1, "layers": 1, "vocab": VOCAB, "embedding": EMBEDDING, "dtype": "float32",
                  "window_sweep_hidden": args.hidden, "size_sweep_window": args.window},
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version()},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parent).stdout.strip(),
        "by_window": by_window,
        "by_hidden": by_size,
        "crossings": {f"{quantity} {method} vs rtrl by {along}": crossings(rows, key, along, method)
                      for quantity, key in (("memory", "xla_mib"), ("time", "us_per_char"))
                      for method in METHODS[:2]
                      for along, rows in (("window", by_window), ("hidden", by_size))},
        "chart": charts,
        "wall_seconds": time.perf_counter() - started,
    }
    print("By window, H = %d\n\n%s\n\nBy H, window %d\n\n%s\n\n%s\n" % (
        args.hidden, table(by_window), args.window, table(by_size), charts))
    for name, value in result["crossings"].items():
        print(f"{name}: {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
