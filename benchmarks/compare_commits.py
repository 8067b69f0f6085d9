#!/usr/bin/env python3
"""The same speed benchmarks on two checkouts of charrnn, alternating, side by side in one run.

    git worktree add /tmp/before <commit>
    python benchmarks/compare_commits.py /tmp/before . [--rounds 2] [--out results/compare.json]

For each benchmark below, runs it from the `before` checkout, then from the `after` one, then again, for
`--rounds` rounds (A B A B ...), each a fresh process of that checkout's own benchmarks/ script (which imports
that checkout's charrnn). Prints a table of the medians over the rounds and their ratio (after / before for
throughput: above 1, the after checkout is faster), and writes every raw JSON line to `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BENCHMARKS = {
    "train LSTM 2x128 b50 s50 (chars/s)": (
        "train_speed.py", ["--cell", "lstm", "--hidden-size", "128", "--num-layers", "2", "--batch-size", "50",
                           "--seq-length", "50", "--steps", "20", "--rounds", "1", "--no-peak"], "chars_per_s"),
    "train LSTM 2x512 b64 s100 (chars/s)": (
        "train_speed.py", ["--cell", "lstm", "--hidden-size", "512", "--num-layers", "2", "--batch-size", "64",
                           "--seq-length", "100", "--steps", "10", "--rounds", "1", "--no-peak"], "chars_per_s"),
    "sample LSTM 2x512 batch 1 (chars/s)": (
        "sample_speed.py", ["--cell", "lstm", "--hidden-size", "512", "--num-layers", "2", "--length", "2000",
                            "--batch-sizes", "1"], None),
}


def run_one(checkout: Path, script: str, args: list[str]) -> dict:
    done = subprocess.run([sys.executable, str(checkout / "benchmarks" / script), *args], capture_output=True,
                          text=True, cwd=checkout)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}/benchmarks/{script} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def value(result: dict, key) -> float:
    if key is not None:
        return float(result[key])
    return float(result["batch_1"]["chars_per_s"])  # sample_speed: batch 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", default=None, help="run only the benchmarks whose name contains this")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    raw, table = [], []
    for name, (script, bench_args, key) in BENCHMARKS.items():
        if args.only and args.only not in name:
            continue
        got = {"before": [], "after": []}
        for r in range(args.rounds):
            for side in ("before", "after"):
                result = run_one(getattr(args, side).resolve(), script, bench_args)
                got[side].append(value(result, key))
                raw.append({"benchmark": name, "side": side, "round": r, "result": result})
                print(f"  {name} {side} round {r}: {got[side][-1]:,.0f}", file=sys.stderr, flush=True)
        before, after = statistics.median(got["before"]), statistics.median(got["after"])
        table.append((name, before, after, after / before, got))
    print("| benchmark | before (median) | after (median) | after / before | rounds before | rounds after |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for name, before, after, ratio, got in table:
        print(f"| {name} | {before:,.0f} | {after:,.0f} | {ratio:.3f} | "
              f"{', '.join(f'{v:,.0f}' for v in got['before'])} | {', '.join(f'{v:,.0f}' for v in got['after'])} |")
    if args.out is not None:
        args.out.write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
