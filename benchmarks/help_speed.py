"""How long `charrnn --help` (and each command's --help) takes, against starting Python at all.

    python benchmarks/help_speed.py [--runs 15]

Runs each command `--runs` times, interleaved so machine noise hits all of them alike, and prints a table of
medians and the ratio to `python -c pass`, then one JSON line. The goal: every --help under one second;
heavy imports (JAX) happen inside the commands, never at import time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "charrnn --help": [sys.executable, "-m", "charrnn", "--help"],
    "charrnn train --help": [sys.executable, "-m", "charrnn", "train", "--help"],
    "charrnn sample --help": [sys.executable, "-m", "charrnn", "sample", "--help"],
    "charrnn inspect-cells --help": [sys.executable, "-m", "charrnn", "inspect-cells", "--help"],
    "python -c 'import jax'": [sys.executable, "-c", "import jax"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    baseline = statistics.median(times["python -c pass"])
    print(f"{'command':32s} {'median s':>9s} {'× python -c pass':>17s}")
    result = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        result[name] = {"median_s": round(median, 4), "ratio": round(median / baseline, 2)}
        print(f"{name:32s} {median:9.3f} {median / baseline:17.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
