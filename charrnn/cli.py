"""The `charrnn` command line: parse options, call the library, render with rich.

Results go to stdout; progress and messages go to stderr. Heavy imports (JAX) happen inside the commands so
that `charrnn --help` is instant. Every error the user can fix leaves through `abort`: one line, exit code 1.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Optional

import click
from rich.console import Console
from rich.markup import escape

from . import launch

# One message, one line, also in logs; no emoji codes, so a file named "notes:smile:.txt" prints as it is.
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

EXAMPLES = """
\b
Examples:
  charrnn train                                  # the bundled corpus, default model
  charrnn train input.txt --max-time 10m         # your own text, ten minutes
  charrnn sample runs/input --prime "ROMEO:" --temperature 0.8 --seed 1
"""


def abort(message: str, code: int = 1) -> "NoReturn":  # noqa: F821
    """Prints one line on stderr and exits with `code`."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


def _user_errors() -> tuple[type[Exception], ...]:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import CorpusError
    from .sample import SampleError
    from .train import TrainingDiverged

    return CorpusError, CheckpointError, ConfigError, SampleError, TrainingDiverged


class Duration(click.ParamType):
    """Seconds, or a number with a unit: 90, 90s, 10m, 1.5h."""

    name = "duration"
    units = {"": 1, "s": 1, "m": 60, "h": 3600}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(value))
        if not match or float(match.group(1)) <= 0:
            self.fail(f"{value!r} is not a positive duration such as 600, 90s, 10m or 1.5h", param, ctx)
        return float(match.group(1)) * self.units[match.group(2)]


class Coordinator(click.ParamType):
    """HOST:PORT of process 0 in a multi-process run, or "auto" (JAX detects a TPU pod, Slurm or Open MPI)."""

    name = "host:port"

    def convert(self, value, param, ctx):
        if str(value).strip() == "auto":
            return "auto"
        from .distributed import parse_coordinator

        try:
            host, port = parse_coordinator(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return f"{host}:{port}"


class _Group(click.Group):
    """Like click.Group, but a usage error is one line (with where to get help), like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "charrnn"
            abort(f"{e.format_message()} (see `{where} --help`)", e.exit_code)
        except click.ClickException as e:
            abort(e.format_message(), e.exit_code)
        except click.Abort:
            abort("aborted")
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_Group, epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="charrnn")
def main():
    """Character-level RNN, LSTM and GRU language models on JAX: train on any text, sample, look inside."""


# The commands that run compiled models over many characters: only they gain from the set-up of `charrnn.launch`.
MODEL_COMMANDS = frozenset({"train", "sample", "inspect-cells"})


def run() -> None:
    """The `charrnn` command (and ``python -m charrnn``): `main`, in the environment `charrnn.launch` sets up.

    `train`, `sample` and `inspect-cells` re-run themselves once, before anything else, with glibc's huge-page
    setting in their environment (a 2x512 or 3x512 LSTM train step runs 5 to 9% faster), and `train` with
    one XLA CPU device per core (a 2x128 or 2x256 LSTM step 1.3x as fast on 2 cores). Not the other commands,
    nor help requests, which gain nothing and should stay quick.
    """
    args = sys.argv[1:]
    if args and args[0] in MODEL_COMMANDS and not {"-h", "--help"} & set(args):
        environ = launch.command_environment(args[0], os.environ, launch.usable_cores(), args[1:])
        launch.reexec([sys.executable, "-m", "charrnn", *args], environ)
    main(prog_name="charrnn")


# --- train -------------------------------------------------------------------------------------------------


def _load_config(ctx: click.Context, param, value):
    """--config FILE: option values from a TOML file (a flat table, or a [train] table), as defaults that the
    command line overrides."""
    if value is None:
        return None
    import tomllib

    try:
        table = tomllib.loads(Path(value).read_text(encoding="utf-8"))
    except OSError as e:
        raise click.BadParameter(f"{value}: cannot read it ({e.strerror})", ctx, param) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"{value} is not valid TOML ({e})", ctx, param) from None
    table = table.get(ctx.command.name, table)
    # A key is an option's long name (dashes or underscores) or the argument's name: bytes, json, hidden_size.
    known = {}
    for p in ctx.command.params:
        if p.name != "config":
            for name in [p.name] + [o[2:] for o in p.opts if o.startswith("--")]:
                known[name.replace("-", "_")] = p.name
    values = {str(key).replace("-", "_"): v for key, v in table.items()}
    unknown = sorted(set(values) - set(known))
    if unknown:
        shown = sorted({o[2:] for p in ctx.command.params if p.name != "config" for o in p.opts if o.startswith("--")}
                       | {p.name for p in ctx.command.params if isinstance(p, click.Argument)})
        raise click.BadParameter(f"{value} sets {', '.join(unknown)}, which `charrnn {ctx.command.name}` does not "
                                 f"take; known: {', '.join(shown)}", ctx, param)
    ctx.default_map = {**(ctx.default_map or {}), **{known[k]: v for k, v in values.items()}}
    return value


@main.command(epilog=EXAMPLES)
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), callback=_load_config, is_eager=True,
              expose_value=False, help="Read options from this TOML file (keys as the option names: hidden_size = 512); the command line overrides it.")
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option("--cell", type=click.Choice(["rnn", "lstm", "gru"]), default="lstm", show_default=True, help="Recurrent cell (equations in charrnn/cells.py).")
@click.option("--hidden-size", type=int, default=256, show_default=True, help="Units per layer.")
@click.option("--num-layers", type=int, default=2, show_default=True, help="Stacked recurrent layers.")
@click.option("--embedding-size", type=int, default=64, show_default=True, help="Character embedding size.")
@click.option("--dropout", type=float, default=0.0, show_default=True, help="Dropout between layers and before the output, in [0, 1).")
@click.option("--seq-length", type=int, default=100, show_default=True, help="Characters per window (truncated-BPTT length T).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Contiguous streams per step (B).")
@click.option("--learning-rate", type=float, default=3e-3, show_default=True, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "rmsprop"]), default="adam", show_default=True, help="Optimizer.")
@click.option("--warmup-steps", type=int, default=100, show_default=True, help="Linear learning-rate warm-up, in steps.")
@click.option("--decay", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True, help="Learning-rate decay after warm-up (cosine to 10% at the last step).")
@click.option("--grad-clip", type=float, default=5.0, show_default=True, help="Clip gradients to this global norm.")
@click.option("--max-epochs", type=float, default=20.0, show_default=True, help="Stop after this many passes over the training split.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--max-time", type=Duration(), default=None, help="Stop after this much training time: 600, 90s, 10m, 1.5h.")
@click.option("--max-bad-steps", type=int, default=20, show_default=True, help="Stop after this many consecutive steps with a non-finite loss or gradient (each is skipped).")
@click.option("--eval-every", type=int, default=250, show_default=True, help="Steps between validation passes and checkpoints.")
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
    errors = _user_errors()
    ctx = click.get_current_context()
    given = {name for name in options
             if ctx.get_parameter_source(name).name in ("COMMANDLINE", "ENVIRONMENT", "DEFAULT_MAP")}
    try:
        placement = _placement(devices, coordinator, num_processes, process_id, join_timeout)
        _train(corpus, out, resume, force, encoding, keep_newlines, byte_level, options, given, quiet, as_json,
               placement)
    except errors as e:
        abort(str(e))


def _placement(devices, coordinator, num_processes, process_id, join_timeout=None):
    """Joins the multi-process run if asked (before JAX touches a device), then picks the devices."""
    from . import distributed
    from .config import ConfigError

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
                               join_timeout or distributed.JOIN_TIMEOUT_S, on_timeout=_abort_now)
    return distributed.placement(devices)


def _abort_now(message: str) -> None:
    """`abort` from a watchdog thread, while the main thread is stuck in a call that cannot be interrupted."""
    import os

    err.print(f"[bold red]error:[/] {escape(message)}")
    err.file.flush()
    os._exit(1)


def _native_output_to_stderr() -> None:
    """Gloo prints a notice on file descriptor 1 each time it connects processes; stdout is for results. Points
    descriptor 1 at stderr for the rest of the process, and sys.stdout at a copy of the real stdout."""
    import os

    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(real, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors, buffering=1)


MODEL_OPTIONS = ("cell", "hidden_size", "num_layers", "embedding_size", "dropout")
RESUME_MAY_CHANGE = ("max_epochs", "max_steps", "max_time", "max_bad_steps", "eval_every", "log_every")


def _train(corpus_path, out, resume_path, force, encoding, keep_newlines, byte_level, options, given, quiet, as_json,
           placement):
    from . import train as training

    several = placement.num_processes > 1
    quiet = quiet or not placement.is_main  # only process 0 reports; the others print errors only
    failure = None
    try:
        corpus, model_config, config, out, resume, overwrite, placement = _prepare(
            corpus_path, out, resume_path, force, encoding, keep_newlines, byte_level, options, given, quiet,
            placement)
    except _user_errors() as e:
        failure = e
    _all_or_none(placement, failure)
    training.check_same_run(placement, corpus, model_config, config, resume)  # the same in every process
    if placement.is_main:
        try:
            out = _choose_out_dir(out, Path(corpus.info.path), overwrite)
        except _user_errors() as e:
            failure = e
    else:  # never written to: only process 0 writes
        out = out or Path("runs") / (Path(corpus.info.path).stem or "corpus")
    _all_or_none(placement, failure)

    from . import render

    if not quiet:
        where = "" if placement.devices == 1 else f" on {placement.devices} {placement.kind} devices" + (
            f" in {placement.num_processes} processes" if several else "")
        err.print(f"Training a {model_config.num_layers}-layer {model_config.cell.upper()} "
                  f"({model_config.hidden_size} units) on [bold]{escape(corpus.info.path)}[/] "
                  f"({len(corpus.ids):,} {'bytes' if corpus.info.byte_level else 'characters'}, vocabulary "
                  f"{len(corpus.vocab)}){where}; checkpoints in [bold]{escape(str(out))}[/]")
    stop = _StopFlag(announce=not quiet)
    try:
        with stop.installed(), render.TrainingView(err, max_time=config.max_time, quiet=quiet) as view:
            finished = training.train(corpus, model_config, config, out, resume=resume, callback=view.handle,
                                      should_stop=stop, placement=placement)
    except _user_errors():
        raise
    except (RuntimeError, ValueError) as e:  # jax.errors.JaxRuntimeError is a RuntimeError
        if not several:
            raise
        # A collective failed: another process died or lost its connection. Exit now with one line: the normal
        # exit would wait for JAX's shutdown barrier, which only fails (with an abort) after its heartbeat timeout.
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        from .checkpoint import LATEST

        if not placement.is_main:
            kept = "process 0 keeps the checkpoints; start every process again with --resume"
        elif (Path(out) / LATEST).exists():
            kept = f"the last checkpoint, {Path(out) / LATEST}, is intact; start every process again with --resume"
        else:
            kept = "no checkpoint was written yet; start every process again"
        _abort_now(f"the run lost another process ({type(e).__name__}: {first}); {kept}")
    if placement.is_main:
        _report_finish(finished, quiet, as_json)


def _prepare(corpus_path, out, resume_path, force, encoding, keep_newlines, byte_level, options, given, quiet,
             placement):
    """Everything before training that can fail on the user's input, in this process alone: the corpus, the
    configs, the layout over the devices. Returns (corpus, model config, train config, out as given, resume,
    whether --out may hold checkpoints already, the placement fitted to the batch)."""
    import dataclasses

    from . import checkpoint, data, train as training
    from .config import ConfigError, ModelConfig, TrainConfig

    resume = None
    if resume_path is not None:
        resume_path = Path(resume_path)
        resume_file = resume_path
        if resume_path.is_dir():  # its latest checkpoint; best alone if killed between the first best and latest
            resume_file = resume_path / checkpoint.LATEST
            if not resume_file.exists() and (resume_path / checkpoint.BEST).exists():
                resume_file = resume_path / checkpoint.BEST
        resume = checkpoint.load(resume_file)
        if corpus_path is None:
            corpus_path = Path(resume.corpus.path)
        encoding, keep_newlines, byte_level = resume.corpus.encoding, resume.corpus.keep_newlines, resume.corpus.byte_level
        resumed_dir = resume_path if resume_path.is_dir() else resume_path.parent
        out = out or resumed_dir

    def encoding_once(cache, reason):  # a large corpus is encoded to a file of ids once (see corpus_cache)
        if not quiet:
            why = {"changed": " (the corpus changed since it was last encoded)",
                   "damaged": " (the previous encoding is damaged)"}.get(reason, "")
            err.print(f"Encoding {escape(str(corpus_path))} once into {escape(str(cache))}{why}; later runs reuse it")

    corpus = data.load_corpus(corpus_path, encoding, keep_newlines, byte_level, on_build=encoding_once)
    if resume is None:
        model_config = ModelConfig(vocab_size=len(corpus.vocab), **{k: options.pop(k) for k in MODEL_OPTIONS})
        config = TrainConfig(**options)
    else:
        corpus = _resumable_corpus(resume, corpus, force)
        model_config, config = resume.model, resume.train
        saved = {**model_config.to_dict(), **config.to_dict()}
        for name in sorted(given):
            if name not in RESUME_MAY_CHANGE and options[name] != saved.get(name):
                raise ConfigError(
                    f"--resume: the checkpoint has --{name.replace('_', '-')} {saved.get(name)}, this run asks for "
                    f"{options[name]}; only {', '.join('--' + n.replace('_', '-') for n in RESUME_MAY_CHANGE)} "
                    f"may change when resuming; drop the option or start a new run")
        config = dataclasses.replace(config, **{k: options[k] for k in RESUME_MAY_CHANGE if k in given})
    # Too short, or a batch that does not split over the devices? Say so before writing anything.
    splits = data.split(len(corpus.ids), config.val_fraction, config.test_fraction)
    num_train = splits.train[1] - splits.train[0]
    placement = training.fit_placement(placement, num_train, config)
    training.plan(num_train, config, placement.devices)
    # Resuming writes into the run it resumes; any other directory with checkpoints still needs --force.
    continuing = resume is not None and out.resolve() == resumed_dir.resolve()
    return corpus, model_config, config, out, resume, force or continuing, placement


def _all_or_none(placement, failure) -> None:
    """Raises `failure` if this process has one, and a ConfigError if another process has: every process goes
    on, or none does (a process left waiting for the others would wait in vain). A collective with several."""
    if placement.num_processes > 1:
        first = placement.first_failed(failure is not None)
        if first is not None and failure is None:
            from .config import ConfigError

            failure = ConfigError(f"process {first} of the run could not start (see its messages); stopping")
    if failure is not None:
        raise failure


def _resumable_corpus(resume, corpus, force):
    """The corpus encoded with the checkpoint's vocabulary, after checking it is the text the run trained on."""
    import dataclasses

    import numpy as np

    from .data import CorpusError, UnknownCharactersError

    if resume.corpus.sha256 != corpus.info.sha256 and not force:
        raise CorpusError(f"{corpus.info.path} has changed since the checkpoint was written (its SHA-256 differs); "
                          f"start a new run, or pass --force to resume on the changed text")
    if corpus.vocab == resume.vocab:
        return corpus
    # Every symbol of the corpus's own vocabulary occurs in it: those the checkpoint lacks are the unknown ones.
    index = {symbol: i for i, symbol in enumerate(resume.vocab.symbols)}
    unknown = [symbol for symbol in corpus.vocab.symbols if symbol not in index]
    if unknown:
        raise CorpusError(f"{corpus.info.path} now has {UnknownCharactersError(unknown)}; start a new run")
    # In memory, in the smallest type that holds the ids (a large corpus: one or two bytes per character).
    dtype = np.min_scalar_type(max(len(resume.vocab) - 1, 0))
    table = np.array([index[symbol] for symbol in corpus.vocab.symbols], dtype)
    return dataclasses.replace(corpus, ids=table[np.asarray(corpus.ids)], vocab=resume.vocab)


def _choose_out_dir(out: Optional[Path], corpus_path: Path, overwrite: bool) -> Path:
    """The checkpoint directory: --out if given (refusing to overwrite another run's checkpoints unless asked),
    else runs/<corpus name>, numbered -2, -3, ... if taken. Checked for writing before any training."""
    import tempfile

    from . import checkpoint
    from .config import ConfigError

    def taken(d: Path) -> bool:
        return any((d / name).exists() for name in (checkpoint.BEST, checkpoint.LATEST))

    if out is not None:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a directory")
        if taken(out) and not overwrite:
            raise ConfigError(f"{out} already holds checkpoints; pass --resume {out} to continue that run, "
                              f"--force to overwrite it, or another --out")
    else:
        base = Path("runs") / (corpus_path.stem or "corpus")
        out, n = base, 1
        while taken(out):
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise ConfigError(f"cannot write checkpoints to {out} ({e.strerror}); choose another --out") from None
    return out


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
    import math

    best = finished.best_val_nats
    if not quiet:
        why = {"max_steps": "reached --max-steps", "max_epochs": "reached --max-epochs",
               "max_time": "reached --max-time", "interrupted": "interrupted"}.get(finished.reason, finished.reason)
        summary = (f"best validation loss {best:.4f} nats ({best / math.log(2):.3f} bpc)" if best is not None
                   else "no checkpoint written")
        err.print(f"Stopped at step {finished.step:,} ({why}) after {finished.elapsed_s:.0f} s; {summary}.")
        if finished.best.exists():
            err.print(f"Checkpoints: {escape(str(finished.best))} (best), {escape(str(finished.latest))} (latest)")
            err.print(f"Sample with: charrnn sample {escape(str(finished.best.parent))}")
    if as_json:
        click.echo(json.dumps({"step": finished.step, "reason": finished.reason, "best_val_nats": best,
                               "best_val_bpc": None if best is None else best / math.log(2),
                               "best": str(finished.best) if finished.best.exists() else None,
                               "latest": str(finished.latest) if finished.latest.exists() else None,
                               "elapsed_s": round(finished.elapsed_s, 3)}))
    elif finished.best.exists():
        click.echo(str(finished.best))


# --- sample ------------------------------------------------------------------------------------------------


@main.command(epilog=EXAMPLES)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--length", type=int, default=1000, show_default=True, help="Characters to generate (after the prime).")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="Softmax temperature; 0 = always the likeliest character, 1 = the model's own distribution.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample only among the k likeliest characters (0 = all).")
@click.option("--prime", default="", help="Text to run through the model first; it is printed, then continued.")
@click.option("--seed", type=int, default=None, help="Random seed; the same seed gives the same text  [default: random, reported on stderr]")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Samples generated in parallel as one batch.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the sample(s).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the seed and the samples (prime included) instead of streaming.")
def sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet, as_json):
    """Generate text from a CHECKPOINT file or run directory, streamed to stdout as it is made."""
    errors = _user_errors()
    try:
        _sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet or as_json, as_json)
    except errors as e:
        abort(str(e))
    except BrokenPipeError:  # `charrnn sample ... | head`: the reader has what it wanted
        sys.stderr.close()
        sys.exit(0)


def _sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet, as_json=False):
    import os

    from . import checkpoint, sample as sampling

    sampling.check_options(length, temperature, top_k, num_samples)
    ckpt = checkpoint.load(checkpoint_path)
    params = checkpoint.load_params(ckpt)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") >> 1
    chunks = sampling.stream(params, ckpt.model, ckpt.vocab, length=length, prime=prime, temperature=temperature,
                             top_k=top_k, num_samples=num_samples, seed=seed)  # checks the prime: nothing printed yet
    if not quiet:
        err.print(f"[dim]seed {seed} (pass --seed {seed} to repeat this sample)[/]")
    if as_json:
        import json

        import numpy as np

        ids = np.concatenate(list(chunks), axis=1) if length else np.zeros((num_samples, 0), np.int32)
        texts = [prime + ckpt.vocab.printable(row) for row in ids]
        click.echo(json.dumps({"seed": seed, "temperature": temperature, "top_k": top_k, "samples": texts},
                              ensure_ascii=False))
        return
    out = sys.stdout.buffer
    # Text goes out as UTF-8 whatever the locale; a byte-level model's output is raw bytes.
    encode = (lambda piece: piece) if ckpt.vocab.byte_level else (lambda piece: piece.encode("utf-8", "surrogateescape"))
    prime_bytes = prime.encode("utf-8", "surrogateescape")
    out.write(prime_bytes)
    out.flush()
    held = [[] for _ in range(num_samples - 1)]  # samples 2.. are printed whole once sample 1 has streamed
    for tokens in chunks:
        out.write(encode(ckpt.vocab.decode(tokens[0])))
        out.flush()
        for row, pieces in zip(tokens[1:], held):
            pieces.append(encode(ckpt.vocab.decode(row)))
    out.write(b"\n")
    for i, pieces in enumerate(held, start=2):
        out.flush()
        if not quiet:
            err.print(f"[dim]── sample {i} of {num_samples} ──[/]")
        out.write(prime_bytes + b"".join(pieces) + b"\n")
    out.flush()


# --- inspect-cells -----------------------------------------------------------------------------------------


@main.command("inspect-cells", epilog="""
\b
Examples:
  charrnn inspect-cells runs/synthetic_prose                       # the run's own validation text
  charrnn inspect-cells runs/c-code kernel.c --feature 'in_parens=\\([^)]*\\)' --top 5
  charrnn inspect-cells runs/synthetic_prose --json > cells.json
  charrnn inspect-cells runs/synthetic_prose --html report.html --gradients
""")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("text_path", metavar="[TEXT]", required=False, type=click.Path(path_type=Path))
@click.option("--feature", "feature_specs", multiple=True, metavar="NAME=REGEX", help="Add a feature: on inside every match of REGEX. Repeatable.")
@click.option("--top", type=int, default=3, show_default=True, help="Units reported per feature.")
@click.option("--max-chars", type=int, default=50_000, show_default=True, help="Inspect at most this many characters of TEXT.")
@click.option("--ablation-chars", type=int, default=20_000, show_default=True, help="Characters used to measure what clamping a unit costs (0: skip).")
@click.option("--gradients", is_flag=True, help="Also measure |d loss_T / d h_(T-k)| for k = 0..100 (vanishing gradients).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (schema in the README).")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None, help="Also write a self-contained HTML report to this file.")
def inspect_cells(checkpoint_path, text_path, feature_specs, top, max_chars, ablation_chars, gradients, as_json, html_path):
    """Find the hidden units of a CHECKPOINT that track something nameable in TEXT (default: the run's
    validation split): quotes, brackets, line position, comments, ... Each finding comes with its score,
    its support, and what clamping the unit does to the loss."""
    errors = _user_errors()
    try:
        _inspect_cells(checkpoint_path, text_path, feature_specs, top, max_chars, ablation_chars, gradients,
                       as_json, html_path)
    except errors as e:
        abort(str(e))


def _inspect_cells(checkpoint_path, text_path, feature_specs, top, max_chars, ablation_chars, gradients, as_json,
                   html_path):
    import json

    from . import checkpoint, data, features as feats, inspection
    from .config import ConfigError

    for name, value in (("top", top), ("max-chars", max_chars)):
        if value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    if ablation_chars < 0:
        raise ConfigError(f"--ablation-chars must be >= 0, got {ablation_chars}")
    try:
        custom = [feats.parse_feature_spec(spec) for spec in feature_specs]
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ckpt = checkpoint.load(checkpoint_path)
    text, source = _inspection_text(ckpt, text_path, max_chars)
    if not text:
        raise data.CorpusError(f"{source['path']}: the text is empty; give a text with something in it")
    if len(text) > max_chars:
        source["truncated_from"] = len(text)
        text = text[:max_chars]
    features = feats.builtin_features(text) + [feats.regex_feature(n, r, text) for n, r in custom]
    params = checkpoint.load_params(ckpt)
    if not as_json:
        err.print(f"Inspecting {ckpt.model.num_layers}×{ckpt.model.hidden_size} {ckpt.model.cell.upper()} on "
                  f"{len(text):,} characters of {escape(source['source'])} ...")
    try:
        report = inspection.inspect(params, ckpt.model, ckpt.vocab, text, features, checkpoint=str(checkpoint.resolve(checkpoint_path)),
                                    source=source, top=top, ablation_chars=ablation_chars, gradients=gradients)
    except ValueError as e:
        raise data.CorpusError(f"{source['path']}: {e}") from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    else:
        from . import render

        # Results go to stdout; piped into a file they keep full-width rows instead of wrapping at 80 columns.
        Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160).print(render.inspection(report))
    if html_path is not None:
        from . import html

        checkpoint.write_bytes_atomic(Path(html_path), html.inspection_page(report).encode("utf-8"))
        err.print(f"HTML report: {escape(str(html_path))}")


def _inspection_text(ckpt, text_path, max_chars):
    """The text to inspect and where it came from: TEXT, or the checkpoint's validation split."""
    from . import data

    corpus = ckpt.corpus
    if text_path is None:
        path = Path(corpus.path)
        if not path.is_file():
            raise data.CorpusError(f"the corpus this model was trained on, {path}, is gone; give TEXT to inspect")
        # Through load_corpus: a large corpus comes memory-mapped from its encoded cache, and only the part to
        # inspect is decoded.
        whole = data.load_corpus(path, corpus.encoding, corpus.keep_newlines, corpus.byte_level)
        if whole.info.sha256 != corpus.sha256:
            err.print(f"[yellow]warning:[/] {escape(str(path))} has changed since training; its validation split "
                      f"may now hold other text")
        lo, hi = ckpt.splits.val
        lo, hi = min(lo, len(whole.ids)), min(hi, len(whole.ids))
        source = {"path": str(path), "source": f"the validation split of {path}"}
        if hi - lo > max_chars:
            source["truncated_from"] = hi - lo
            hi = lo + max_chars
        text = whole.vocab.printable(whole.ids[lo:hi])
    else:
        text, _ = data.read_text(text_path, corpus.encoding, corpus.keep_newlines, corpus.byte_level)
        source = {"path": str(text_path), "source": str(text_path)}
    if isinstance(text, bytes):
        text = text.decode("latin-1")  # byte-level model: one character per byte
    return text, source


# --- info and report -----------------------------------------------------------------------------------------


@main.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON on stdout.")
def info(checkpoint_path, as_json):
    """Describe a CHECKPOINT (file or run directory): architecture, parameter count, vocabulary, training
    step, losses, corpus and format version."""
    errors = _user_errors()
    try:
        from . import report, render

        details = report.checkpoint_info(checkpoint_path)
    except errors as e:
        abort(str(e))
    if as_json:
        import json

        click.echo(json.dumps(details, indent=1, ensure_ascii=False))
    else:
        Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200).print(
            render.checkpoint_info(details))


@main.command("report")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None, help="Also write a self-contained HTML page with the loss curves to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as JSON on stdout.")
def report_command(run_dirs, html_path, as_json):
    """Summarise one or more training runs side by side: the settings that differ, best validation loss,
    throughput, and the loss curves (in the terminal, or as a page with --html)."""
    from . import report

    errors = _user_errors()
    try:
        summaries = [report.summarize(d) for d in run_dirs]
    except (*errors, report.ReportError) as e:
        abort(str(e))
    differences = report.differences(summaries)
    if as_json:
        import json

        click.echo(json.dumps({"runs": [s.to_dict() for s in summaries], "differences": differences}, indent=1,
                              ensure_ascii=False))
    else:
        from . import render

        Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 120).print(
            render.report(summaries, differences))
    if html_path is not None:
        from . import checkpoint, html

        checkpoint.write_bytes_atomic(Path(html_path), html.runs_page(summaries, differences).encode("utf-8"))
        err.print(f"HTML report: {escape(str(html_path))}")


if __name__ == "__main__":
    main()
