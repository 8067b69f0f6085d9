"""The training loop: truncated BPTT over a corpus, validation on the whole validation split, checkpoints.

    finished = train(corpus, model_config, config, "runs/mine", callback=print)

`train` reads each (B, T + 1) window of token ids from the corpus on the host (in memory, or memory-mapped for
a large corpus, see `charrnn.corpus_cache`) and hands it to the jitted step (`charrnn.steps`); it reads the loss
back only every `log_every` steps, validates every `eval_every` steps (auto: see `charrnn.validation`), and writes
``best.safetensors`` (lowest validation loss) and ``latest.safetensors`` atomically, with the run's records
(`charrnn.runlog`). It never prints: it reports events through a callback. The bookkeeping lives in `Trainer`,
one small object with a method per duty; the maths lives in the pure pieces it calls.

To resume a run, or to prepare one the way the command does (output directory, options a resume may change, a
corpus re-encoded to the checkpoint's vocabulary), see `charrnn.runs`.

Data parallelism (see `charrnn.distributed`): the B streams are sharded over the devices of a `Placement`;
with several processes each feeds only its own rows, and only process 0 writes files and reports.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import jax
import numpy as np

from . import checkpoint, data, distributed, files, model, optim, runlog, steps, validation
from .config import ModelConfig, TrainConfig
from .runlog import Evaluated, Finished, Logged, Sampled, Started
from .text import Corpus, Vocabulary, token_dtype
from .units import bpc
from .validation import Validator

SAMPLE_CHARS = 200  # length of the samples shown while training
# A run with a time limit and no step limit before it fits its learning-rate decay to the time at its first
# validation (by then the cost of a step and of a validation is known), and again at every later one.
SAMPLE_TEMPERATURES = (0.5, 0.8, 1.0)


def sample_now(params, model_config: ModelConfig, vocab: Vocabulary, step: int) -> dict[float, str]:
    """A short sample at a few temperatures, for watching a model improve; seeded by the step."""
    from . import sample

    return {t: vocab.printable(np.concatenate(list(sample.stream(params, model_config, vocab, length=SAMPLE_CHARS,
                                                                 temperature=t, seed=step * 10 + k)), axis=1)[0])
            for k, t in enumerate(SAMPLE_TEMPERATURES)}


class TrainingDiverged(Exception):
    """Too many consecutive non-finite steps; the last good checkpoint was kept."""


def train(
    corpus: Corpus,
    model_config: ModelConfig,
    config: TrainConfig,
    out_dir: Union[str, Path],
    *,
    resume: Optional[checkpoint.Checkpoint] = None,
    callback: Callable[[Any], None] = lambda event: None,
    should_stop: Callable[[], bool] = lambda: False,
    placement: Optional[distributed.Placement] = None,
) -> Finished:
    """Trains a model on `corpus` and writes checkpoints to `out_dir`.

    Args:
      corpus: the encoded corpus; it is split by `config.val_fraction` / `config.test_fraction`.
      model_config: the architecture (its vocab_size must match the corpus's vocabulary).
      config: the training configuration.
      out_dir: where ``best.safetensors`` and ``latest.safetensors`` go, with the run's records
        ``run.json`` and ``metrics.jsonl`` (see `charrnn.runlog`).
      resume: a checkpoint to continue from (same architecture and corpus), at its step.
      callback: receives `Started`, `Logged`, `Evaluated`, `Sampled` and `Finished` events (in process 0 only).
      should_stop: polled at each step boundary; True saves a checkpoint and stops ("interrupted").
        After `config.max_bad_steps` consecutive non-finite steps training stops ("diverged") and raises
        `TrainingDiverged`; the last checkpoint holds the last good parameters.
      placement: the devices to shard the batch over (`charrnn.distributed.placement`); default every device
        JAX sees, or as many as split the batch evenly (`charrnn.distributed.fit_placement`). With several
        processes every process calls `train` alike; each feeds only its own streams, stop requests and time
        limits take effect at the next `config.log_every` boundary in all of them at once, and only process 0
        writes files and calls `callback`.

    Returns:
      The `Finished` event.
    """
    trainer = Trainer(corpus, model_config, config, Path(out_dir), resume=resume, callback=callback,
                      should_stop=should_stop, placement=placement)
    return trainer.run()


class Trainer:
    """One training run's bookkeeping: the state on the devices, the step count, the best loss so far, the
    history and the records. `run` drives it: step, `log`, `validate_and_save`, `sample`, until `stop_reason`
    says why not to go on. Construct it through `train`."""

    def __init__(self, corpus: Corpus, model_config: ModelConfig, config: TrainConfig, out_dir: Path, *,
                 resume: Optional[checkpoint.Checkpoint], callback: Callable[[Any], None],
                 should_stop: Callable[[], bool], placement: Optional[distributed.Placement]) -> None:
        self.corpus, self.model_config, self.config, self.out_dir = corpus, model_config, config, out_dir
        self.callback, self.should_stop = callback, should_stop
        self.asked_model_config = model_config  # as given: dropout None is fitted to the run's length
        self.splits = data.split(len(corpus.ids), config.val_fraction, config.test_fraction)
        self.train_ids = corpus.ids[slice(*self.splits.train)]
        self.val_ids = corpus.ids[slice(*self.splits.val)]
        self.placement = distributed.fit_placement(placement or distributed.placement(), len(self.train_ids), config)
        self.main = self.placement.is_main
        distributed.check_same_run(self.placement, corpus, model_config, config, resume)
        if self.main:
            checkpoint.remove_stale_temporaries(out_dir)
        self.layout, self.warnings = data.plan(len(self.train_ids), config, self.placement.devices)
        self.model_config = dataclasses.replace(model_config, dropout=self._initial_dropout(resume))
        self.planned_steps = self.layout.total_steps  # the run's length as now known (None: not known)
        self.schedule_steps = self.layout.total_steps  # what the learning rate decays over (None: constant)
        self.schedule = optim.learning_rate_schedule(config, self.schedule_steps)
        self.optimizer = optim.make_optimizer(config, self.schedule_steps)
        self._restore(resume)
        self.best_path, self.latest_path = out_dir / checkpoint.BEST, out_dir / checkpoint.LATEST
        self.pending: list = []  # metrics of the steps since the last log, still on the device
        self.last_metrics: Optional[dict] = None
        self.last_eval_step: Optional[int] = None
        # --eval-every auto starts at EVAL_EVERY and stretches once a validation has been timed.
        self.eval_every = config.eval_every or validation.EVAL_EVERY
        self.validation_s = 0.0  # seconds validating and saving so far, not training
        self.skipped = 0  # non-finite steps skipped so far
        self.not_finite = False  # the state to save holds a NaN or infinity (e.g. from a poisoned checkpoint)

    def _fitted_dropout(self, total_steps: Optional[int]) -> float:
        """The dropout rate for a run of `total_steps` steps: the one asked for, or (dropout None) the default for
        the passes over the data they make (`optim.dropout_for_epochs`); none with RTRL, which cannot use it."""
        asked = self.asked_model_config.dropout
        if asked is not None:
            return asked
        if self.config.gradient == "rtrl" or total_steps is None:
            return 0.0
        return optim.dropout_for_epochs(total_steps / self.layout.steps_per_epoch, self.model_config.hidden_size)

    def _initial_dropout(self, resume: Optional[checkpoint.Checkpoint]) -> float:
        if (self.asked_model_config.dropout is None and self.layout.total_steps is None and resume is not None
                and resume.state.get("dropout") is not None):
            return float(resume.state["dropout"])  # a resumed run goes on with it until its first validation
        return self._fitted_dropout(self.layout.total_steps)

    def _restore(self, resume: Optional[checkpoint.Checkpoint]) -> None:
        B = self.layout.batch_size
        if resume is not None:
            state = steps.restore_state(resume, self.model_config, self.config, self.optimizer, B)
            self.history, self.best = list(resume.history), resume.state.get("best_val_nats")
            self.start_step = int(resume.state["step"])
            # Time already spent before the resume, so the records' elapsed time runs on.
            self.elapsed_before = float(self.history[-1].get("elapsed_s") or 0.0) if self.history else 0.0
        else:
            state = steps.init_state(self.model_config, self.config, self.optimizer, B)
            self.history, self.best, self.start_step, self.elapsed_before = [], None, 0, 0.0
        self.state = self.placement.put(state, steps.state_shardings(self.placement, state.sensitivities is not None,
                                                                     state.average is not None))
        self.step = self.start_step
        self.resumed = resume is not None

    # --- setting up ------------------------------------------------------------------------------------------

    def _open_records(self) -> None:
        if not self.main:
            return
        p = self.placement
        runlog.write_run_info(self.out_dir, {
            "model": self.asked_model_config.to_dict(), "train": self.config.to_dict(),
            "corpus": self.corpus.info.to_dict(),
            "splits": self.splits.to_dict(), "layout": dataclasses.asdict(self.layout),
            "resumed_from_step": self.start_step or None, "devices": p.devices, "processes": p.num_processes})
        self.records = runlog.MetricsWriter(self.out_dir, resume_step=self.start_step if self.resumed else None)

    def _compile(self) -> float:
        """Compiles the step and the validation program; returns the seconds it took."""
        B, T, p = self.layout.batch_size, self.layout.seq_length, self.placement
        dtype = token_dtype(self.model_config.vocab_size)
        self.windows = data.training_windows(self.train_ids, self.layout, self.config.seed, p.local_rows(B), dtype)
        t0 = time.perf_counter()
        self.window_shape = jax.ShapeDtypeStruct((B, T + 1), dtype, sharding=p.batch)
        self._compile_step()
        self.validator = (Validator(self.val_ids, self.model_config, B, T, p, self.state.params, self.config.precision)
                          if len(self.val_ids) >= data.MIN_SPLIT else None)
        return time.perf_counter() - t0

    @property
    def weight_average(self) -> float:
        """The decay of the weights' moving average in use: the one asked for, or fitted to the planned steps."""
        return optim.weight_average_decay(self.config.weight_average, self.planned_steps)

    def _compile_step(self) -> None:
        make_step = steps.make_rtrl_step if self.config.gradient == "rtrl" else steps.make_window_step
        config = dataclasses.replace(self.config, weight_average=self.weight_average)
        self.step_fn = make_step(self.model_config, config, self.optimizer, self.layout.reset_every,
                                 self.placement).lower(self.state, self.window_shape).compile()

    def fit_to_time(self, seconds_per_step: float) -> None:
        """With a time limit and no step limit, fits what depends on the run's length to the steps the remaining
        time holds at `seconds_per_step`: the learning rate decays over them (with cosine decay) instead of
        staying constant, a default dropout (None) is the one for the passes over the data they make, and a
        fitted moving average of the weights (None) spans the share of them it should. The
        schedule is rebuilt and the step recompiled (the optimizer's state keeps its structure: only the
        schedule, a function of the step count, changes). Every process computes the same (the time is agreed
        on, as for stopping)."""
        config = self.config
        if not config.time_limited:
            return
        left = config.max_time - (time.perf_counter() - self.t_start)
        fitted = int(self.placement.smallest(optim.steps_in_time(self.step, left, seconds_per_step)))
        dropout = self._fitted_dropout(fitted)
        near = self.planned_steps is not None and abs(fitted - self.planned_steps) <= 0.05 * self.planned_steps
        if near and dropout == self.model_config.dropout:
            return  # close enough: not worth a recompile
        if not near:
            self.planned_steps = fitted
            self.schedule_steps = fitted if config.decay == "cosine" else None
            self.schedule = optim.learning_rate_schedule(config, self.schedule_steps)
            self.optimizer = optim.make_optimizer(config, self.schedule_steps)
        self.model_config = dataclasses.replace(self.model_config, dropout=dropout)
        self._compile_step()

    def emit(self, event) -> None:
        """Writes the event's record and passes it to the callback (process 0 only)."""
        if not self.main:
            return
        entry = runlog.record(event)
        if entry is not None:
            self.records.write(entry)
        self.callback(event)

    # --- the loop --------------------------------------------------------------------------------------------

    def run(self) -> Finished:
        """Trains until a limit, a stop request or divergence; returns the `Finished` event (raises
        `TrainingDiverged` after reporting it)."""
        self._open_records()
        compile_s = self._compile()
        p = self.placement
        self.emit(Started(self.layout, model.num_parameters(self.state.params), len(self.train_ids),
                          len(self.val_ids), self.start_step, tuple(self.warnings), compile_s, p.devices,
                          p.num_processes))
        self.t_start = self.t_log = time.perf_counter()
        self.log_step = self.step
        reason = self._loop()
        if self.pending:
            self.last_metrics = p.to_host(self.pending)[-1]
        if reason != "diverged" and self.last_eval_step != self.step and self.step > self.start_step:
            self.validate_and_save()
            reason = "diverged" if self.not_finite else reason
        finished = Finished(self.step, reason, self.best, self.best_path, self.latest_path,
                            time.perf_counter() - self.t_start)
        if self.main:
            self.callback(finished)
        if reason == "diverged":
            raise self._diverged()
        return finished

    def _loop(self) -> str:
        layout, config = self.layout, self.config
        while True:
            reason = self.stop_reason()
            if reason is not None:
                return reason
            window = self.windows(self.step)
            self.state, metrics = self.step_fn(self.state, self.placement.put_batch(window, layout.batch_size))
            self.step += 1
            self.pending.append(metrics)
            if self.step % data.DROP_PAGES_EVERY == 0:
                data.drop_pages(self.train_ids)
            if self.step % config.log_every == 0 or self.step == layout.total_steps:
                self.log()
                if int(self.placement.to_host(self.state.bad_steps)) >= config.max_bad_steps:
                    return "diverged"
            if self.step % self.eval_every == 0:
                self.validate_and_save()
                if self.not_finite:
                    return "diverged"
            if config.sample_every and self.step % config.sample_every == 0:
                self.sample()

    def stop_reason(self) -> Optional[str]:
        """Why to stop before the next step, if at all. With several processes, the time limit and stop requests
        are agreed on at log boundaries only (one small collective), so every process stops at the same step."""
        step, config, layout = self.step, self.config, self.layout
        if layout.total_steps is not None and step >= layout.total_steps:
            return "max_steps" if config.max_steps is not None and step >= config.max_steps else "max_epochs"
        if self.placement.num_processes > 1 and step % config.log_every and step != self.start_step:
            return None
        out_of_time = config.max_time is not None and time.perf_counter() - self.t_start >= config.max_time
        out_of_time, stop = self.placement.any([out_of_time, self.should_stop()])
        return "max_time" if out_of_time else "interrupted" if stop else None

    def log(self) -> None:
        """Reads the metrics of the steps since the last log back from the device and reports them."""
        fetched = self.placement.to_host(self.pending)
        self.pending = []
        self.last_metrics = fetched[-1]
        self.skipped += sum(1 for m in fetched if not m["ok"])
        now = time.perf_counter()
        losses = [m["loss"] for m in fetched if m["ok"]]
        chars = (self.step - self.log_step) * self.layout.batch_size * self.layout.seq_length
        self.emit(Logged(self.step, self.step / self.layout.steps_per_epoch,
                         float(np.mean(losses)) if losses else float("nan"), float(self.last_metrics["grad_norm"]),
                         float(self.schedule(self.step)), self.model_config.dropout,
                         chars / max(now - self.t_log, 1e-9),
                         self.elapsed_before + now - self.t_start, self.skipped))
        self.t_log, self.log_step = now, self.step

    def sample(self) -> None:
        if self.main:
            params = self.placement.to_host(steps.model_params(self.state))
            self.emit(Sampled(self.step, sample_now(params, self.model_config, self.corpus.vocab, self.step)))
        self.t_log = time.perf_counter()  # sampling time is not training time

    def validate_and_save(self) -> None:
        """Validates, then writes the checkpoints (best too when the loss is the lowest so far); a state that is
        not finite is never written (`not_finite` is set instead)."""
        p = self.placement
        # Gathered to every host (a collective with several processes), so all of them decide alike.
        host = p.to_host((self.state.params, self.state.opt_state, self.state.carry, self.state.sensitivities,
                          self.state.average))
        if not all(np.isfinite(a).all() for a in jax.tree.leaves(host)):
            self.not_finite = True
            return
        te = time.perf_counter()
        val_nats = self.validate()
        is_best = self.best is None or val_nats < self.best
        self.best = val_nats if is_best else self.best
        train_nats = float(self.last_metrics["loss"]) if self.last_metrics is not None else None
        self.history.append({"step": self.step, "val_nats": val_nats, "val_bpc": bpc(val_nats),
                             "train_nats": train_nats,
                             "elapsed_s": self.elapsed_before + time.perf_counter() - self.t_start})
        self.save(host, val_nats, is_best)
        self.last_eval_step = self.step
        seconds = time.perf_counter() - te
        self.validation_s += seconds
        self.emit(Evaluated(self.step, val_nats, self.best, is_best, seconds, self.latest_path))
        if self.step > self.start_step:
            training_s = (time.perf_counter() - self.t_start - self.validation_s) / (self.step - self.start_step)
            if self.config.eval_every is None:  # agreed on by every process, as the time is
                self.eval_every = int(self.placement.smallest(validation.auto_eval_every(seconds, training_s)))
            # The time a step takes from here on, its share of the validations included.
            self.fit_to_time(training_s + seconds / self.eval_every)

    def validate(self) -> float:
        """The validation loss in nats per character; without a validation split, the latest training loss
        (so checkpoints are still ranked)."""
        if self.validator is not None:
            return self.validator(steps.model_params(self.state))
        return float(self.last_metrics["loss"]) if self.last_metrics is not None else float("inf")

    def save(self, host_state: tuple, val_nats: float, is_best: bool) -> None:
        """Writes latest (and best, first) in process 0; every process raises the same CheckpointError if that
        failed."""
        p, step = self.placement, self.step
        failure = self._write(host_state, val_nats, is_best) if self.main else None
        if p.num_processes > 1 and p.first_failed(failure is not None) is not None and failure is None:
            failure = checkpoint.CheckpointError(f"process 0 could not write the checkpoint at step {step}; "
                                                 f"see its messages")
        if failure is not None:
            raise failure

    def _write(self, host_state: tuple, val_nats: float, is_best: bool) -> Optional[Exception]:
        params, opt_state, carry, sensitivities, average = host_state
        info = {"best_val_nats": self.best, "val_nats": val_nats, "epoch": self.step / self.layout.steps_per_epoch,
                "devices": self.placement.devices, "processes": self.placement.num_processes,
                "schedule_steps": self.schedule_steps, "dropout": self.model_config.dropout,
                "weight_average": self.weight_average}
        saved = steps.TrainState(params, opt_state, carry, np.asarray(self.step, np.int32), np.zeros((), np.int32),
                                 sensitivities, average)
        blob = checkpoint.to_bytes(steps.to_checkpoint(saved, self.corpus, self.splits, self.asked_model_config,
                                                       self.config, self.layout, info, self.history))
        # Best first: a crash between the two files leaves latest behind best, never a best model lost for good.
        for path in (self.best_path, self.latest_path) if is_best else (self.latest_path,):
            try:
                files.write_atomic(path, blob)
            except OSError as e:
                kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
                return checkpoint.CheckpointError(
                    f"could not write the checkpoint at step {self.step} to {path} ({e.strerror or e}); {kept}; "
                    f"free some space or choose another --out, then --resume")
        return None

    def _diverged(self) -> TrainingDiverged:
        kept = (f"the last good checkpoint is {self.latest_path}" if self.latest_path.exists()
                else "no checkpoint was written")
        what = ("the parameters or optimizer state are not finite, so they were not saved" if self.not_finite else
                f"{self.config.max_bad_steps} consecutive steps had a non-finite loss or gradient")
        return TrainingDiverged(f"training stopped at step {self.step}: {what} "
                                f"(learning rate {float(self.schedule(self.step)):.3g}); {kept}; "
                                f"try a lower --learning-rate")
