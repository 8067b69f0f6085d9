"""A run's records: the events training reports (`Started`, `Logged`, `Evaluated`, `Sampled`, `Finished`),
and what goes on disk beside the checkpoints: ``run.json`` (what was run: configs, layout, corpus, versions)
and ``metrics.jsonl`` (one JSON object per log step, evaluation and sample: `record`). Training writes them;
`charrnn report` reads them.

metrics.jsonl records::

    {"event": "log",  "step": 120, "epoch": 0.38, "train_nats": 1.92, "train_bpc": 2.77, "grad_norm": 0.8,
     "learning_rate": 0.003, "chars_per_s": 14100.0, "elapsed_s": 27.3, "skipped_steps": 0}
    {"event": "eval", "step": 250, "val_nats": 1.81, "val_bpc": 2.61, "best_val_nats": 1.81, "is_best": true,
     "eval_s": 1.2}
    {"event": "sample", "step": 1000, "samples": [{"temperature": 0.5, "text": "..."}, ...]}

Losses are in nats per character (and bits per character, bpc = nats / ln 2). A crash can tear the last line;
readers skip a line that is not JSON.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any, Optional

from . import files
from .data import Layout
from .units import bpc

RUN_JSON, METRICS = "run.json", "metrics.jsonl"


def versions() -> dict[str, str]:
    """Versions of Python, charrnn and the libraries that decide its numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("charrnn", "jax", "jaxlib", "optax", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_run_info(run_dir: Path, info: dict[str, Any]) -> Path:
    """Writes run.json atomically (configs, corpus, versions; whatever `info` holds, plus versions and time)."""
    record = {**info, "versions": versions(), "written": now()}
    return files.write_atomic(Path(run_dir) / RUN_JSON, (json.dumps(record, indent=2) + "\n").encode())


def read_run_info(run_dir: Path) -> Optional[dict[str, Any]]:
    """run.json of `run_dir`, or None if it has none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of metrics.jsonl in order; a line that is not a JSON object (a torn last line) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class MetricsWriter:
    """Appends records to metrics.jsonl, one line each, flushed as written.

    On resume, records past the resumed step (written by the interrupted run after its last checkpoint) are
    dropped first, so the file describes the training that the checkpoints hold.
    """

    def __init__(self, run_dir: Path, resume_step: Optional[int] = None):
        self.path = Path(run_dir) / METRICS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        else:
            kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step]
            files.write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        # Opened per record (a few a second at most): no handle to leak, and each line is on disk when written.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


# --- the events training reports, and their records -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Started:
    layout: Layout
    num_params: int
    train_chars: int
    val_chars: int
    resumed_step: int  # 0 for a fresh run
    warnings: tuple[str, ...]
    compile_s: float
    devices: int = 1  # the batch is sharded over this many devices
    processes: int = 1


@dataclasses.dataclass(frozen=True)
class Logged:
    step: int
    epoch: float
    train_nats: float  # mean over the steps since the last log
    grad_norm: float  # before clipping, at the last step
    learning_rate: float
    dropout: float  # the rate in use (fitted to the run's length unless one was asked for)
    chars_per_s: float
    elapsed_s: float
    skipped_steps: int  # total non-finite steps skipped so far


@dataclasses.dataclass(frozen=True)
class Evaluated:
    step: int
    val_nats: float
    best_val_nats: float
    is_best: bool
    seconds: float
    checkpoint: Path  # latest.safetensors


@dataclasses.dataclass(frozen=True)
class Sampled:
    step: int
    samples: dict[float, str]  # temperature -> text (bytes shown as latin-1)


@dataclasses.dataclass(frozen=True)
class Finished:
    step: int
    reason: str  # "max_steps", "max_epochs", "max_time", "interrupted", "diverged"
    best_val_nats: Optional[float]
    best: Path
    latest: Path
    elapsed_s: float


def record(event) -> Optional[dict[str, Any]]:
    """The metrics.jsonl record for an event (see `charrnn.runlog`), or None for events that have none."""
    if isinstance(event, Logged):
        return {"event": "log", "step": event.step, "epoch": round(event.epoch, 4), "train_nats": event.train_nats,
                "train_bpc": bpc(event.train_nats), "grad_norm": event.grad_norm,
                "learning_rate": event.learning_rate, "dropout": event.dropout,
                "chars_per_s": round(event.chars_per_s, 1),
                "elapsed_s": round(event.elapsed_s, 3), "skipped_steps": event.skipped_steps}
    if isinstance(event, Evaluated):
        return {"event": "eval", "step": event.step, "val_nats": event.val_nats, "val_bpc": bpc(event.val_nats),
                "best_val_nats": event.best_val_nats, "is_best": event.is_best, "eval_s": round(event.seconds, 3)}
    if isinstance(event, Sampled):
        return {"event": "sample", "step": event.step,
                "samples": [{"temperature": t, "text": text} for t, text in event.samples.items()]}
    return None
