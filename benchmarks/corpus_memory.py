#!/usr/bin/env python3
"""Memory of training on corpora larger than memory: peak RSS for synthetic corpora of 100 MB and 1 GB.

    nice -n 10 python benchmarks/corpus_memory.py [--sizes 1M 100M 1G] [--dir /tmp/charrnn-corpus-memory]
                                                  [--steps 30] [--no-in-memory]

Prints a table, then ONE JSON line. For each size it writes a synthetic UTF-8 corpus under --dir if it is not
there yet (words drawn from a Zipf law, sentences, quotes, paragraphs, a few non-ASCII characters; a vocabulary of
about 80), then runs each step in its own child process and reports the child's peak RSS (ru_maxrss from wait4:
that one child, nothing else):

- build: `data.load_corpus` with an empty cache directory (XDG_CACHE_HOME under --dir): the two streaming passes
  that encode the corpus into its uint8 cache; wall time and peak RSS.
- reuse: the same again, the cache now in place: the fingerprint check and the pass over the ids (CRC-32, range).
- train: ``charrnn train CORPUS --max-steps N`` with the default model (2-layer LSTM, 256 units, batch 32 x 100)
  and a validation split of 0.01% (the default 5% of 1 GB, 50 MB, takes far longer than N steps to validate on
  a CPU); the cache in place. Peak RSS of the whole command, its wall time and the chars/s it reports.
- epoch: the host side of training over one whole epoch, without the model: every (B, T + 1) window of the
  training split read from the memory map as `train.train` reads it (`data.TrainWindows`, `data.drop_pages`
  every `data.DROP_PAGES_EVERY` windows), i.e. every page of the corpus touched once.
- in_memory (sizes up to 100 MB, unless --no-in-memory): `data.load_corpus(..., cache=False)`, reading the whole
  text into memory as the small-corpus path does, for contrast.

Memory independent of the corpus size means: train and epoch peak RSS about the same for every size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"([0-9]+)([KMG]?)B?", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 100M or 1G")
    return int(match.group(1)) * UNITS.get(match.group(2), 1)


GENERATOR = r"""
import os, sys
import numpy as np

path, size = sys.argv[1], int(sys.argv[2])
BLOCK = 8 << 20


def block(seed):
    # About BLOCK bytes of word salad: Zipf-distributed words, sentences (capitalised, .?!; or a dash), some in
    # quotes, numbers in brackets, paragraphs; UTF-8 with a few non-ASCII letters, a vocabulary of about 60.
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "sh", "en", "qu", "or", "vi", "za", "é", "ön", "th", "al"]
    words = ["".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(5000)]
    lower = np.array(words, dtype=object)
    upper = np.array([w[0].upper() + w[1:] for w in words], dtype=object)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    n = BLOCK // 6
    idx = rng.choice(len(words), n, p=weights / weights.sum())
    ends = rng.random(n) < 1 / 10  # a sentence ends after this word
    seps = np.full(n, " ", dtype=object)
    kinds = rng.choice(np.array([". ", ". ", ". ", "? ", "! ", "; ", " — ", ".\n\n", "” said Ka. “", " (42) "],
                                dtype=object), n)
    seps[ends] = kinds[ends]
    starts = np.concatenate([[True], ends[:-1]])
    tokens = np.where(starts, upper[idx], lower[idx])
    text = "".join(np.stack([tokens, seps], 1).ravel().tolist())
    return text.encode("utf-8")


written, seed = 0, 0
with open(path + ".tmp", "wb") as f:
    while written < size:
        piece = block(seed)[: size - written]
        while piece and (piece[-1] & 0xC0) in (0x80, 0xC0):  # never end inside a UTF-8 character
            piece = piece[:-1]
        f.write(piece)
        written += len(piece)
        seed += 1
os.replace(path + ".tmp", path)
"""


def ensure_corpus(directory: Path, size: int) -> Path:
    """The synthetic corpus of about `size` bytes under `directory`, written once (in a child process, so that
    this one stays small: a child's ru_maxrss starts from the RSS of the process that forked it)."""
    path = directory / f"synthetic-{size}.txt"
    if not (path.is_file() and path.stat().st_size > 0):
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", GENERATOR, str(path), str(size)], check=True)
    return path


CHILD_LOAD = """
import json, sys, time
t = time.perf_counter()
from charrnn import data
corpus = data.load_corpus(sys.argv[1], cache=None if sys.argv[2] == "auto" else sys.argv[2] == "yes")
print(json.dumps({"seconds": time.perf_counter() - t, "symbols": len(corpus.ids), "vocab": len(corpus.vocab),
                  "dtype": str(corpus.ids.dtype), "memmap": type(corpus.ids).__name__ == "memmap"}))
"""

CHILD_EPOCH = """
import json, sys, time
import numpy as np
from charrnn import data
corpus = data.load_corpus(sys.argv[1], cache=True)
splits = data.split(len(corpus.ids), 1e-4, 1e-4)
ids = corpus.ids[slice(*splits.train)]
B, T = 32, 100
windows = data.TrainWindows(ids, B, T, dtype=np.dtype(np.int32))
steps = windows.length // T
t, check = time.perf_counter(), 0
for j in range(steps):
    check += int(windows(j)[0, 0])
    if (j + 1) % data.DROP_PAGES_EVERY == 0:
        data.drop_pages(ids)
print(json.dumps({"seconds": time.perf_counter() - t, "windows": steps, "chars": steps * B * T, "check": check}))
"""


def run(argv: list[str], env: dict) -> tuple[dict, float, float]:
    """(the child's last JSON line, its peak RSS in MiB (wait4: this child only), its wall time in s)."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = b"", b""
    # Read both pipes to the end before reaping, so the child never blocks on a full pipe.
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    chunks = {"out": [], "err": []}
    while sel.get_map():
        for key, _ in sel.select():
            data = key.fileobj.read1(1 << 16)
            if data:
                chunks[key.data].append(data)
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
    sel.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    out, err = b"".join(chunks["out"]).decode(), b"".join(chunks["err"]).decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:4]))} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024, wall


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in ("1M", "100M", "1G")])
    p.add_argument("--dir", type=Path, default=Path("/tmp/charrnn-corpus-memory"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--no-in-memory", action="store_true")
    args = p.parse_args(argv)
    python = sys.executable
    cache_home = args.dir / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    rows = []
    for size in args.sizes:
        t = time.perf_counter()
        corpus = ensure_corpus(args.dir / "corpora", size)
        made_s = time.perf_counter() - t
        row = {"size_bytes": corpus.stat().st_size, "corpus": str(corpus), "generate_s": round(made_s, 1)}
        shutil.rmtree(cache_home, ignore_errors=True)
        for name in ("build", "reuse"):
            info, rss, wall = run([python, "-c", CHILD_LOAD, str(corpus), "yes"], env)
            row[name] = {"s": round(info["seconds"], 2), "peak_rss_mb": round(rss), "wall_s": round(wall, 2)}
            row.update(symbols=info["symbols"], vocab=info["vocab"], dtype=info["dtype"])
        out_dir = args.dir / "runs" / f"{size}"
        shutil.rmtree(out_dir, ignore_errors=True)
        summary, rss, wall = run([python, "-m", "charrnn", "train", str(corpus), "--max-steps", str(args.steps),
                                  "--val-fraction", "0.0001", "--test-fraction", "0.0001", "--eval-every",
                                  str(args.steps), "--sample-every", "0", "--out", str(out_dir), "--json",
                                  "--quiet"], env)
        logs = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
        speeds = [r["chars_per_s"] for r in logs if r["event"] == "log"][1:]  # the first includes warm-up
        row["train"] = {"steps": summary["step"], "peak_rss_mb": round(rss), "wall_s": round(wall, 1),
                        "chars_per_s": round(machine.median(speeds)) if speeds else None}
        info, rss, wall = run([python, "-c", CHILD_EPOCH, str(corpus)], env)
        row["epoch"] = {"windows": info["windows"], "s": round(info["seconds"], 1), "peak_rss_mb": round(rss),
                        "chars_per_s": round(info["chars"] / max(info["seconds"], 1e-9))}
        if not args.no_in_memory and size <= 100 << 20:
            info, rss, wall = run([python, "-c", CHILD_LOAD, str(corpus), "no"], env)
            row["in_memory"] = {"s": round(info["seconds"], 2), "peak_rss_mb": round(rss)}
        shutil.rmtree(out_dir, ignore_errors=True)
        rows.append(row)
        print(f"# {row['size_bytes']:,} bytes done", file=sys.stderr, flush=True)

    header = ("| corpus | build s | build RSS | reuse s | reuse RSS | train RSS | train s | epoch RSS | epoch windows |"
              " in-memory load RSS |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for r in rows:
        mem = r.get("in_memory")
        print(f"| {r['size_bytes'] / 1e6:,.0f} MB ({r['symbols']:,} chars, vocab {r['vocab']}, {r['dtype']}) "
              f"| {r['build']['s']} | {r['build']['peak_rss_mb']} MiB | {r['reuse']['s']} | "
              f"{r['reuse']['peak_rss_mb']} MiB | {r['train']['peak_rss_mb']} MiB | {r['train']['wall_s']} | "
              f"{r['epoch']['peak_rss_mb']} MiB | {r['epoch']['windows']:,} in {r['epoch']['s']} s | "
              f"{str(mem['peak_rss_mb']) + ' MiB' if mem else '-'} |")
    result = {"bench": "corpus_memory", "steps": args.steps, "rows": rows, "machine": machine.describe()}
    machine.emit(result)
    return result


if __name__ == "__main__":
    main()
