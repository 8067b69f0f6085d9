"""Summaries of training runs, for `charrnn report` and `charrnn info`: what was trained, how far it got, how
fast, and the loss curves — from a run directory's run.json, metrics.jsonl and checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

from . import checkpoint, runlog

LN2 = math.log(2.0)


class ReportError(Exception):
    """A run directory cannot be summarised (it holds no run). The message says what was expected."""


@dataclasses.dataclass
class RunSummary:
    """One run, summarised.

    Attributes:
      path: the run directory.
      settings: flat "model.hidden_size" / "train.learning_rate" / "corpus.path" -> value.
      step: the last step with a record (or checkpoint).
      best_val_nats / best_step: the lowest validation loss and where.
      chars_per_s: median training throughput over the logged intervals (None if nothing was logged).
      elapsed_s: training time at the last record.
      train_curve, val_curve: (step, nats) points.
      test_nats / test_step: the test loss that `charrnn evaluate` measured on the run's test split
        (evaluation.json in the run directory), and the step of the checkpoint it measured; None if not evaluated.
    """

    path: Path
    settings: dict[str, Any]
    step: int
    best_val_nats: Optional[float]
    best_step: Optional[int]
    chars_per_s: Optional[float]
    elapsed_s: Optional[float]
    train_curve: list[tuple[int, float]]
    val_curve: list[tuple[int, float]]
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    test_nats: Optional[float] = None
    test_step: Optional[int] = None

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "settings": self.settings, "step": self.step,
                "best_val_nats": self.best_val_nats,
                "best_val_bpc": None if self.best_val_nats is None else self.best_val_nats / LN2,
                "best_step": self.best_step, "chars_per_s": self.chars_per_s, "elapsed_s": self.elapsed_s,
                "train_curve": self.train_curve, "val_curve": self.val_curve, "versions": self.versions,
                "test_nats": self.test_nats, "test_bpc": None if self.test_nats is None else self.test_nats / LN2,
                "test_step": self.test_step}


def _flat(prefix: str, d: dict) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in d.items()}


def summarize(run_dir: Path) -> RunSummary:
    """Summarises the run in `run_dir` from its records, or from its checkpoint alone if it has none.

    Raises:
      ReportError: `run_dir` is not a directory with a run in it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a run directory (give the --out directory of a training run)")
    info = runlog.read_run_info(run_dir)
    metrics = runlog.read_metrics(run_dir)
    ckpt = None
    try:  # the latest checkpoint says how far the run got (best may be older)
        ckpt = checkpoint.load(run_dir / checkpoint.LATEST if (run_dir / checkpoint.LATEST).is_file() else run_dir)
    except checkpoint.CheckpointError:
        if info is None and not metrics:
            raise ReportError(f"{run_dir} holds no run (no run.json, metrics.jsonl or checkpoint)") from None
    if info is not None:
        settings = {**_flat("model", info.get("model", {})), **_flat("train", info.get("train", {})),
                    **_flat("corpus", info.get("corpus", {}))}
    else:
        settings = {**_flat("model", ckpt.model.to_dict()), **_flat("train", ckpt.train.to_dict()),
                    **_flat("corpus", ckpt.corpus.to_dict())}
    logs = [r for r in metrics if r.get("event") == "log"]
    evals = [r for r in metrics if r.get("event") == "eval"]
    if not evals and ckpt is not None:  # no metrics.jsonl: the checkpoint keeps the evaluation history
        evals = [{"step": h["step"], "val_nats": h["val_nats"], "elapsed_s": h.get("elapsed_s")} for h in ckpt.history]
    val_curve = [(int(r["step"]), float(r["val_nats"])) for r in evals if _finite(r.get("val_nats"))]
    train_curve = [(int(r["step"]), float(r["train_nats"])) for r in logs if _finite(r.get("train_nats"))]
    best = min(val_curve, key=lambda p: p[1]) if val_curve else None
    steps = [int(r["step"]) for r in metrics if "step" in r] + ([int(ckpt.state["step"])] if ckpt else [])
    speeds = [float(r["chars_per_s"]) for r in logs if _finite(r.get("chars_per_s"))]
    elapsed = [float(r["elapsed_s"]) for r in metrics if _finite(r.get("elapsed_s"))]
    test_nats, test_step = _test_loss(run_dir)
    return RunSummary(
        path=run_dir, settings=settings, step=max(steps, default=0),
        best_val_nats=best[1] if best else None, best_step=best[0] if best else None,
        chars_per_s=statistics.median(speeds) if speeds else None, elapsed_s=max(elapsed, default=None),
        train_curve=train_curve, val_curve=val_curve, versions=(info or {}).get("versions", {}),
        test_nats=test_nats, test_step=test_step,
    )


def _test_loss(run_dir: Path) -> tuple[Optional[float], Optional[int]]:
    """(nats, checkpoint step) of the run's evaluated test split (evaluation.json), or (None, None)."""
    from .evaluation import read_run_evaluation

    d = read_run_evaluation(run_dir)
    nats = ((d or {}).get("loss") or {}).get("nats")
    if not _finite(nats):
        return None, None
    step = (d.get("checkpoint") or {}).get("step")
    return float(nats), step if isinstance(step, int) else None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def differences(summaries: Sequence[RunSummary]) -> dict[str, list[Any]]:
    """The settings whose values are not the same in every run: name -> value per run (None if absent)."""
    keys = sorted({k for s in summaries for k in s.settings})
    out = {}
    for key in keys:
        values = [s.settings.get(key) for s in summaries]
        if any(v != values[0] for v in values[1:]):
            out[key] = values
    return out


def checkpoint_info(path: Path) -> dict[str, Any]:
    """What `charrnn info` shows: architecture, size, vocabulary, position, losses, corpus and format."""
    from . import model

    ckpt = checkpoint.load(path)
    params = checkpoint.load_params(ckpt)
    vocab = ckpt.vocab
    return {
        "checkpoint": str(checkpoint.resolve(path)),
        "format_version": checkpoint.FORMAT_VERSION,
        "model": ckpt.model.to_dict(),
        "parameters": model.num_parameters(params),
        "vocabulary": {"size": len(vocab), "byte_level": vocab.byte_level,
                       "symbols": None if vocab.byte_level else "".join(vocab.symbols)},
        "step": ckpt.state.get("step"),
        "epoch": ckpt.state.get("epoch"),
        "val_nats": ckpt.state.get("val_nats"),
        "best_val_nats": ckpt.state.get("best_val_nats"),
        "dropout": ckpt.state.get("dropout", ckpt.model.dropout),  # the rate in use at this step
        # The decay of the weights' moving average that `params` are at this step (0: the weights themselves).
        "weight_average": ckpt.state.get("weight_average", ckpt.train.weight_average),
        "train": ckpt.train.to_dict(),
        "corpus": ckpt.corpus.to_dict(),
        "splits": ckpt.splits.to_dict(),
    }
