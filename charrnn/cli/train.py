"""`charrnn train`: options -> `charrnn.runs.prepare` -> `charrnn.train.train`, rendered live on stderr."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
from rich.markup import escape

from ..units import bpc
from ._group import main
from ._common import (EXAMPLES, AdamBeta2, BatchSize, Coordinator, DropoutRate, Duration, LearningRate, SegmentLength,
                      Steps, WeightAverage, Width, abort_now, err, load_config, user_errors)


@main.command(epilog=EXAMPLES)
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), callback=load_config, is_eager=True,
              expose_value=False, help="Read options from this TOML file (keys as the option names: hidden_size = 512); the command line overrides it.")
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option("--cell", type=click.Choice(["rnn", "lstm", "gru"]), default="lstm", show_default=True, help="Recurrent cell (equations in docs/model.md).")
@click.option("--activation", type=click.Choice(["tanh", "relu", "identity"]), default="tanh", show_default=True, help="The vanilla RNN's activation (--cell rnn only).")
@click.option("--hidden-size", type=Width(), default="auto", show_default=True, help="Units per layer; auto: 384, or with --max-time alone the width that budget affords on this machine (docs/options.md).")
@click.option("--num-layers", type=int, default=2, show_default=True, help="Stacked recurrent layers.")
@click.option("--embedding-size", type=int, default=64, show_default=True, help="Character embedding size.")
@click.option("--dropout", type=DropoutRate(), default="auto", show_default=True, help="Dropout between layers and before the output, in [0, 1); auto: none for a run of up to 5 passes over the data, more for more (docs/options.md).")
@click.option("--weight-drop", type=float, default=0.0, show_default=True, help="DropConnect on the recurrent weights, in [0, 1): each step drops this fraction of every layer's U for the whole window (docs/options.md).")
@click.option("--layer-norm/--no-layer-norm", default=False, help="Layer-normalise every gate's pre-activation (and the LSTM's cell state) over the units (equations in docs/model.md).")
@click.option("--seq-length", type=int, default=100, show_default=True, help="Characters per window (truncated-BPTT length T).")
@click.option("--batch-size", type=BatchSize(), default="auto", show_default=True, help="Streams (rows) per step (B); auto: 32, or 64 for a run that only --max-time stops on a corpus too long to read 6 times in it (docs/options.md).")
@click.option("--learning-rate", type=LearningRate(), default="auto", show_default=True, help="Peak learning rate; auto: 0.003, or 0.007 for a run that only --max-time stops (docs/options.md).")
@click.option("--optimizer", type=click.Choice(["adam", "rmsprop"]), default="adam", show_default=True, help="Optimizer.")
@click.option("--adam-beta2", type=AdamBeta2(), default="auto", show_default=True, help="Adam's decay of its mean of squared gradients, in (0, 1): 0.999 remembers about 1,000 steps, 0.99 about 100; auto: 0.999, or 0.99 for a run that only --max-time stops on a corpus long for it (docs/options.md).")
@click.option("--warmup-steps", type=int, default=100, show_default=True, help="Linear learning-rate warm-up, in steps.")
@click.option("--decay", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True, help="Learning-rate decay after warm-up (cosine to --min-lr-ratio of the peak at the last step).")
@click.option("--min-lr-ratio", type=float, default=0.1, show_default=True, help="Where the cosine decay ends, as a fraction of the peak learning rate, in [0, 1].")
@click.option("--grad-clip", type=float, default=5.0, show_default=True, help="Clip gradients to this global norm.")
@click.option("--weight-decay", type=float, default=0.1, show_default=True, help="Decoupled weight decay of the weight matrices (AdamW-style), >= 0.")
@click.option("--weight-average", type=WeightAverage(), default="auto", show_default=True, help="Validate, sample and save a moving average of the weights, each step moving it by 1 − this decay towards them, in [0, 1): 0.99 averages about the last 100 steps, 0 none; auto: for a run that only --max-time stops, the decay that averages its last 8% of steps, else 0 (docs/options.md).")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True, help="Operands of the training step's matrix products and of its validation's (sums and parameters stay float32); auto: bfloat16 for a run that only --max-time stops, where this machine multiplies it faster, else float32 (docs/options.md).")
@click.option("--gradient", type=click.Choice(["bptt", "rtrl"]), default="bptt", show_default=True, help="How gradients are computed: truncated backpropagation through time, or real-time recurrent learning (exact, forward in time; small networks only, one device).")
@click.option("--state-reset", type=click.Choice(["epoch", "never"]), default="epoch", show_default=True, help="Start every stream from the zero state at each epoch, or never (continuous training: the state is carried across epochs).")
@click.option("--segment-length", type=SegmentLength(), default="auto", show_default=True, help="Read the training text in segments of this many characters (a multiple of --seq-length), shuffled anew each epoch, each from the zero state; 0: B contiguous streams, each read in order; auto: segments of 20 windows for a run that only --max-time stops, else 0 (docs/options.md).")
@click.option("--update-every", type=int, default=None, help="With --gradient rtrl: characters between weight updates  [default: --seq-length]")
@click.option("--max-epochs", type=float, default=20.0, show_default=True, help="Stop after this many passes over the training split (with --max-time and no --max-epochs: no epoch limit, the time is the limit).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--max-time", type=Duration(), default=None, help="Stop after this much training time: 600, 90s, 10m, 1.5h.")
@click.option("--max-bad-steps", type=int, default=20, show_default=True, help="Stop after this many consecutive steps with a non-finite loss or gradient (each is skipped).")
@click.option("--eval-every", type=Steps(), default="auto", show_default=True, help="Steps between validation passes and checkpoints; auto: 250, or a multiple of 250 that keeps a pass over a large validation split under a twentieth of the training time.")
@click.option("--log-every", type=int, default=10, show_default=True, help="Steps between progress updates (the loss is read back from the device only then).")
@click.option("--sample-every", type=int, default=1000, show_default=True, help="Steps between short samples shown while training, at temperatures 0.5, 0.8, 1 (0: none).")
@click.option("--val-fraction", type=float, default=0.05, show_default=True, help="Fraction of the corpus held out for validation.")
@click.option("--test-fraction", type=float, default=0.05, show_default=True, help="Fraction held out for testing (the end of the corpus).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed repeats a run bit for bit on the same machine.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Directory for checkpoints  [default: runs/<corpus name>, numbered if taken]")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue the run in this directory (or from this checkpoint) at its step.")
@click.option("--force", is_flag=True, help="Overwrite checkpoints already in --out.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus.")
@click.option("--keep-newlines", is_flag=True, help="Keep \\r\\n and \\r as they are instead of turning them into \\n.")
@click.option("--bytes", "byte_level", is_flag=True, help="Train on raw bytes (vocabulary of 256) instead of text.")
@click.option("--devices", type=int, default=None, help="Devices to split the batch over (--batch-size must be a multiple); with several processes, the total over all of them  [default: every device JAX sees (on a CPU, one per core), or as many as split the batch evenly]")
@click.option("--coordinator", type=Coordinator(), default=None, help="HOST:PORT of process 0, to train in several processes (hosts) with jax.distributed; 'auto' detects a TPU pod, Slurm or Open MPI.")
@click.option("--num-processes", type=int, default=None, help="How many processes take part (with --coordinator).")
@click.option("--process-id", type=int, default=None, help="This process's index, 0 to --num-processes - 1 (with --coordinator); process 0 writes the checkpoints and shows progress.")
@click.option("--join-timeout", type=Duration(), default="5m", show_default=True, help="With --coordinator: how long the processes wait for each other to start (600, 90s, 10m).")
@click.option("--quiet", "-q", is_flag=True, help="No progress or samples on stderr; warnings and errors only.")
@click.option("--json", "as_json", is_flag=True, help="At the end, print a JSON summary on stdout instead of the checkpoint path.")
def train(corpus, out, resume, force, encoding, keep_newlines, byte_level, devices, coordinator, num_processes,
          process_id, join_timeout, quiet, as_json, **options):
    """Train a model on CORPUS (default: the bundled corpora/synthetic_prose.txt).

    Shows progress on stderr, validates on the whole validation split every --eval-every steps and keeps
    two checkpoints in --out: best.safetensors (lowest validation loss) and latest.safetensors. Ctrl-C saves
    a checkpoint and stops. With --resume, the run continues with its own saved settings; only the stopping
    and logging options (--max-epochs, --max-steps, --max-time, --eval-every, --log-every) may change.

    The batch is split over every device JAX sees, on a CPU one per core (--devices to choose how many). To
    train in several processes, start one per host with the same options plus --coordinator, --num-processes
    and --process-id.
    """
    ctx = click.get_current_context()
    given = {name for name in options
             if ctx.get_parameter_source(name).name in ("COMMANDLINE", "ENVIRONMENT", "DEFAULT_MAP")}
    placement = _placement(devices, coordinator, num_processes, process_id, join_timeout, options["gradient"])
    quiet = quiet or not placement.is_main  # only process 0 reports; the others print errors only
    run, out_dir = _prepare_everywhere(placement, quiet, corpus_path=corpus, options=options, given=given, out=out,
                                       resume=resume, force=force, encoding=encoding, keep_newlines=keep_newlines,
                                       byte_level=byte_level)
    if not quiet:
        _announce(run, out_dir)
    finished = _train(run, out_dir, quiet)
    if run.placement.is_main:
        _report_finish(finished, quiet, as_json)


def _placement(devices, coordinator, num_processes, process_id, join_timeout=None, gradient="bptt"):
    """Joins the multi-process run if asked (before JAX touches a device), then picks the devices."""
    from .. import distributed
    from ..config import ConfigError

    if gradient == "rtrl" and (coordinator is not None or (devices or 1) > 1):
        # Before the devices are looked up: asking for more than there are would be the error otherwise.
        from ..runs import rtrl_on_several_devices

        raise rtrl_on_several_devices("--coordinator" if coordinator is not None else f"--devices {devices}")
    if coordinator is None and (num_processes is not None or process_id is not None):
        raise ConfigError("--num-processes and --process-id go with --coordinator HOST:PORT (process 0's address)")
    if coordinator is not None and coordinator != "auto" and (num_processes is None or process_id is None):
        missing = " and ".join(n for n, v in (("--num-processes", num_processes), ("--process-id", process_id))
                               if v is None)
        raise ConfigError(f"--coordinator {coordinator} needs {missing} (or --coordinator auto on a TPU pod, Slurm "
                          f"or Open MPI)")
    if devices is not None and devices < 1:
        raise ConfigError(f"--devices must be at least 1, got {devices}")
    distributed.check_processes(num_processes, process_id)
    if coordinator is not None:
        _native_output_to_stderr()
        distributed.initialize(None if coordinator == "auto" else coordinator, num_processes, process_id,
                               join_timeout or distributed.JOIN_TIMEOUT_S, on_timeout=abort_now)
    return distributed.placement(devices)


def _native_output_to_stderr() -> None:
    """Gloo prints a notice on file descriptor 1 each time it connects processes; stdout is for results. Points
    descriptor 1 at stderr for the rest of the process, and sys.stdout at a copy of the real stdout."""
    import os

    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(real, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors, buffering=1)


def _prepare_everywhere(placement, quiet, corpus_path, **how):
    """`charrnn.runs.prepare` in every process, then the output directory in process 0; every process goes on,
    or none does (with several processes, a failure anywhere stops them all, with one line each)."""
    from .. import distributed, runs

    def encoding_once(cache, reason):  # a large corpus is encoded to a file of ids once (see corpus_cache)
        if not quiet:
            why = {"changed": " (the corpus changed since it was last encoded)",
                   "damaged": " (the previous encoding is damaged)"}.get(reason, "")
            err.print(f"Encoding {escape(str(corpus_path or 'the corpus'))} once into {escape(str(cache))}{why}; "
                      f"later runs reuse it")

    run = failure = None
    try:
        run = runs.prepare(corpus_path, placement=placement, on_encode=encoding_once, **how)
    except user_errors() as e:
        failure = e
    _all_or_none(placement, failure)
    distributed.check_same_run(placement, run.corpus, run.model_config, run.config, run.resume)
    if placement.is_main:
        try:
            out_dir = runs.choose_out_dir(run.out, run.corpus.info.path, run.overwrite)
        except user_errors() as e:
            failure = e
    else:  # never written to: only process 0 writes
        out_dir = run.out or Path("runs") / (Path(run.corpus.info.path).stem or "corpus")
    _all_or_none(placement, failure)
    return run, out_dir


def _all_or_none(placement, failure) -> None:
    """Raises `failure` if this process has one, and a ConfigError if another process has: every process goes
    on, or none does (a process left waiting for the others would wait in vain). A collective with several."""
    if placement.num_processes > 1:
        first = placement.first_failed(failure is not None)
        if first is not None and failure is None:
            from ..config import ConfigError

            failure = ConfigError(f"process {first} of the run could not start (see its messages); stopping")
    if failure is not None:
        raise failure


def _announce(run, out_dir) -> None:
    p, mc, corpus = run.placement, run.model_config, run.corpus
    where = "" if p.devices == 1 else f" on {p.devices} {p.kind} devices" + (
        f" in {p.num_processes} processes" if p.num_processes > 1 else "")
    fitted = run.fitted_width
    width = f"{mc.hidden_size} units" + ("" if fitted is None else
                                        f", the width for {fitted.seconds:g} s on this machine: about "
                                        f"{fitted.chars_per_parameter:.1f} characters read per parameter"
                                        + ("" if fitted.passes is None else f", {fitted.passes:.1f} passes"))
    if run.config.precision != "float32":
        width += f"; {run.config.precision} products"
    err.print(f"Training a {mc.num_layers}-layer {mc.cell.upper()} ({width}) on "
              f"[bold]{escape(corpus.info.path)}[/] ({len(corpus.ids):,} "
              f"{'bytes' if corpus.info.byte_level else 'characters'}, vocabulary {len(corpus.vocab)}){where}; "
              f"checkpoints in [bold]{escape(str(out_dir))}[/]")


def _train(run, out_dir, quiet):
    """`charrnn.train.train` with the live view and Ctrl-C handling; a lost process ends the run with one line."""
    from .. import render, train as training
    from ..checkpoint import LATEST

    stop = _StopFlag(announce=not quiet)
    try:
        with stop.installed(), render.TrainingView(err, max_time=run.config.max_time, quiet=quiet) as view:
            return training.train(run.corpus, run.model_config, run.config, out_dir, resume=run.resume,
                                  callback=view.handle, should_stop=stop, placement=run.placement)
    except user_errors():
        raise
    except (RuntimeError, ValueError) as e:  # jax.errors.JaxRuntimeError is a RuntimeError
        if run.placement.num_processes == 1:
            raise
        # A collective failed: another process died or lost its connection. Exit now with one line: the normal
        # exit would wait for JAX's shutdown barrier, which only fails (with an abort) after its heartbeat timeout.
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if not run.placement.is_main:
            kept = "process 0 keeps the checkpoints; start every process again with --resume"
        elif (Path(out_dir) / LATEST).exists():
            kept = f"the last checkpoint, {Path(out_dir) / LATEST}, is intact; start every process again with --resume"
        else:
            kept = "no checkpoint was written yet; start every process again"
        abort_now(f"the run lost another process ({type(e).__name__}: {first}); {kept}")


class _StopFlag:
    """Ctrl-C or SIGTERM asks training to stop at the next step boundary (it then saves); a second Ctrl-C
    stops at once — checkpoints are written atomically, so nothing is torn either way."""

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            err.print("[yellow]Stopping at the next step and saving a checkpoint (Ctrl-C again to quit at once).[/]")

    def installed(self):
        import contextlib

        @contextlib.contextmanager
        def scope():
            previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield self
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

        return scope()


def _report_finish(finished, quiet: bool, as_json: bool) -> None:
    """The end of a run: why it stopped and where the checkpoints are (stderr); the best checkpoint's path, or
    a JSON summary, on stdout."""
    import json

    best = finished.best_val_nats
    if not quiet:
        why = {"max_steps": "reached --max-steps", "max_epochs": "reached --max-epochs",
               "max_time": "reached --max-time", "interrupted": "interrupted"}.get(finished.reason, finished.reason)
        summary = (f"best validation loss {best:.4f} nats ({bpc(best):.3f} bpc)" if best is not None
                   else "no checkpoint written")
        err.print(f"Stopped at step {finished.step:,} ({why}) after {finished.elapsed_s:.0f} s; {summary}.")
        if finished.best.exists():
            err.print(f"Checkpoints: {escape(str(finished.best))} (best), {escape(str(finished.latest))} (latest)")
            err.print(f"Sample with: charrnn sample {escape(str(finished.best.parent))}")
    if as_json:
        click.echo(json.dumps({"step": finished.step, "reason": finished.reason, "best_val_nats": best,
                               "best_val_bpc": None if best is None else bpc(best),
                               "best": str(finished.best) if finished.best.exists() else None,
                               "latest": str(finished.latest) if finished.latest.exists() else None,
                               "elapsed_s": round(finished.elapsed_s, 3)}))
    elif finished.best.exists():
        click.echo(str(finished.best))


