#!/usr/bin/env python3
"""Speed and memory of the n-gram baselines of `charrnn evaluate`: counting orders 1..20 on a corpus's training
split and scoring its test split with every order, as `charrnn.ngram.log_probs_by_order` does.

    nice -n 10 python benchmarks/ngram_speed.py [CORPUS ...] [--max-order 20]

Default corpora: tinyshakespeare.txt, warpeace.txt and linux.txt in /work/shared/corpora (or $CHARRNN_CORPORA).
The splits are charrnn's defaults: the first 90% trains, the last 5% is scored. Each corpus runs in its own
child process, which reports its wall time and its peak RSS (ru_maxrss: that child alone, the Python
interpreter and NumPy included, JAX never imported). Prints a table, then ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("CHARRNN_CORPORA", "/work/shared/corpora"))
DEFAULT = ("tinyshakespeare.txt", "warpeace.txt", "linux.txt")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure(path: str, max_order: int) -> dict:
    """Runs in the child: load, then count and score every order; timings and peak memory."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from charrnn import data, ngram

    t0 = time.perf_counter()
    corpus = data.load_corpus(path, cache=False)
    ids = np.asarray(corpus.ids)
    splits = data.split(len(ids), 0.05, 0.05)
    train, test = ids[slice(*splits.train)], ids[slice(*splits.test)]
    loaded, rss_loaded = time.perf_counter() - t0, peak_rss_mb()
    t1 = time.perf_counter()
    table = ngram.log_probs_by_order(train, len(corpus.vocab), max_order, test)
    seconds = time.perf_counter() - t1
    losses = -table[:, 1:].mean(axis=1)
    best = int(np.argmin(losses))
    return {"corpus": Path(path).name, "characters": len(ids), "vocab": len(corpus.vocab),
            "train": len(train), "test": len(test), "max_order": max_order, "load_s": round(loaded, 2),
            "ngram_s": round(seconds, 2), "rss_after_load_mb": round(rss_loaded), "peak_rss_mb": round(peak_rss_mb()),
            "best_n": best + 1, "best_nats": round(float(losses[best]), 4),
            f"nats_{max_order}": round(float(losses[-1]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpora", nargs="*", default=[str(CORPORA / name) for name in DEFAULT])
    parser.add_argument("--max-order", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.corpora[0], args.max_order)))
        return
    rows = []
    for path in args.corpora:
        out = subprocess.run([sys.executable, __file__, "--child", "--max-order", str(args.max_order), path],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    head = ("corpus", "chars", "V", "train", "test", "count+score s", "peak RSS MB", "best n", "best nats",
            f"{args.max_order}-gram nats")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['corpus']} | {r['characters']:,} | {r['vocab']} | {r['train']:,} | {r['test']:,} | "
              f"{r['ngram_s']:.1f} | {r['peak_rss_mb']:,} | {r['best_n']} | {r['best_nats']:.4f} | "
              f"{r[f'nats_{args.max_order}']:.4f} |")
    print(json.dumps({"benchmark": "ngram_speed", "rows": rows}))


if __name__ == "__main__":
    main()
