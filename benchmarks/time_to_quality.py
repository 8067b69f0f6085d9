#!/usr/bin/env python3
"""Time to quality: charrnn's defaults against a small character transformer, the same wall-clock budget each,
validated on the same text, one after the other.

    python benchmarks/time_to_quality.py --corpora tinyshakespeare --budgets 10m [--rounds 2] \\
        [--torch-python /work/torchvenv/bin/python] [--charrnn-args "--dropout 0.2"]

For each corpus (names in /work/shared/corpora, or paths), budget and round: `charrnn train CORPUS --max-time
BUDGET --val-fraction 0.1 --test-fraction 0 --json` (the defaults otherwise; its best validation loss is over
the whole validation text, the state carried), then `/work/shared/bench/gpt_reference.py CORPUS --seconds
BUDGET --val-frac 0.1` (its loss over the whole of the same text: the last 10% of the corpus), alternating.
A run on bfloat16 products validates on them; its best checkpoint is validated again afterwards with float32
products (`val_nats_float32`, outside the budget, as the transformer's evaluation is). Each result is appended,
as it comes, to `--out` (JSON lines); a table of the medians goes to stdout.
Losses are in nats per character; margin = transformer − charrnn (above 0: charrnn is better).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from machine import cpu_name

SHARED = Path("/work/shared")
GPT = SHARED / "bench" / "gpt_reference.py"
UNITS = {"s": 1, "m": 60, "h": 3600}


def seconds(budget: str) -> float:
    return float(budget[:-1]) * UNITS[budget[-1]] if budget[-1] in UNITS else float(budget)


def corpus_path(name: str) -> Path:
    path = Path(name)
    return path if path.is_file() else SHARED / "corpora" / (name if name.endswith(".txt") else name + ".txt")


# The best checkpoint's loss over the same validation text with float32 products, after the run (outside its
# budget, as the transformer's evaluation is): a run on bfloat16 products validates on them.
FLOAT32_LOSS = r'''
import json, sys
import numpy as np
from charrnn import checkpoint, data, distributed, runs
from charrnn.validation import Validator
ckpt = checkpoint.load(sys.argv[1])
corpus = runs.corpus_for_checkpoint(ckpt, data.load_corpus(sys.argv[2]))
params = checkpoint.load_params(ckpt)
validator = Validator(np.asarray(corpus.ids[slice(*ckpt.splits.val)]), ckpt.model, ckpt.train.batch_size,
                      ckpt.train.seq_length, distributed.placement(), params, "float32")
print(json.dumps(validator(params)))
'''


def float32_loss(best: Path, corpus: Path) -> float:
    done = subprocess.run([sys.executable, "-c", FLOAT32_LOSS, str(best), str(corpus)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"re-validating {best} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def charrnn_run(corpus: Path, budget: str, extra: list[str], keep: Optional[Path] = None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = str(keep) if keep is not None else scratch
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus), "--max-time", budget,
                               "--val-fraction", "0.1", "--test-fraction", "0", "--json", "-q", "--out", out,
                               *extra], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"charrnn failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        run = json.loads((Path(out) / "run.json").read_text())
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        logs = [r for r in records if r.get("event") == "log"]
        # What the run actually was (defaults change between commits): its model, and the dropout it ended with.
        model = {k: run["model"].get(k)
                 for k in ("cell", "hidden_size", "num_layers", "dropout", "weight_drop", "layer_norm")}
        wall_s = time.perf_counter() - t
        precision = run["train"].get("precision", "float32")
        recheck = float32_loss(Path(out) / "best.safetensors", corpus) if precision != "float32" else None
        return {"val_nats": result["best_val_nats"], "val_nats_float32": recheck, "steps": result["step"],
                "wall_s": wall_s,
                "args": extra, "model": model, "weight_decay": run["train"].get("weight_decay", 0.0),
                "learning_rate": run["train"]["learning_rate"],
                "adam_beta2": run["train"].get("adam_beta2", 0.999),
                "weight_average": run["train"].get("weight_average", 0.0),
                "precision": precision,
                "batch_size": run["train"]["batch_size"], "segment_length": run["train"].get("segment_length", 0),
                "dropout_at_end": logs[-1].get("dropout") if logs else None,
                "epochs": logs[-1]["epoch"] if logs else None,
                "train_nats_at_end": logs[-1]["train_nats"] if logs else None,
                "validations": [[r["step"], round(r["val_nats"], 4), round(r.get("eval_s", 0.0), 1)]
                                for r in records if r.get("event") == "eval"]}


def gpt_run(corpus: Path, budget: str, torch_python: str) -> dict:
    t = time.perf_counter()
    done = subprocess.run([torch_python, str(GPT), str(corpus), "--seconds", str(seconds(budget)),
                           "--val-frac", "0.1"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the transformer failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": time.perf_counter() - t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpora", nargs="+", default=["tinyshakespeare"])
    p.add_argument("--budgets", nargs="+", default=["10m"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--torch-python", default="/work/torchvenv/bin/python")
    p.add_argument("--charrnn-args", default="", help="options added to charrnn train (to try a lever)")
    p.add_argument("--only", choices=["charrnn", "transformer"], default=None)
    p.add_argument("--keep", type=Path, default=None,
                   help="keep charrnn's run (checkpoints, records) in this new directory, e.g. to sample from it")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "time_to_quality.jsonl")
    args = p.parse_args()
    extra = args.charrnn_args.split()
    rows = []
    for name in args.corpora:
        corpus = corpus_path(name)
        for budget in args.budgets:
            got = {"charrnn": [], "transformer": []}
            for r in range(args.rounds):
                for system in ("charrnn", "transformer"):
                    if args.only and system != args.only:
                        continue
                    keep = args.keep and args.keep / f"{corpus.stem}-{budget}-{r}"
                    result = (charrnn_run(corpus, budget, extra, keep) if system == "charrnn"
                              else gpt_run(corpus, budget, args.torch_python))
                    got[system].append(result["val_nats"])
                    record = {"corpus": corpus.name, "budget": budget, "round": r, "system": system, **result,
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu": cpu_name()}
                    with open(args.out, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    print(f"  {corpus.name} {budget} round {r} {system}: {result['val_nats']:.4f}", file=sys.stderr,
                          flush=True)
            rows.append((corpus.name, budget, got))
    print("| corpus | budget | charrnn (median) | transformer (median) | margin | rounds |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, budget, got in rows:
        c = statistics.median(got["charrnn"]) if got["charrnn"] else float("nan")
        g = statistics.median(got["transformer"]) if got["transformer"] else float("nan")
        print(f"| {name} | {budget} | {c:.4f} | {g:.4f} | {g - c:+.4f} | {len(got['charrnn'])}, "
              f"{len(got['transformer'])} |")


if __name__ == "__main__":
    main()
