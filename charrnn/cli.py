"""The `charrnn` command line: parse options, call the library, render with rich.

Results go to stdout; progress and messages go to stderr. Heavy imports (JAX) happen inside the commands so
that `charrnn --help` is instant. Every error the user can fix leaves through `abort`: one line, exit code 1.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Optional

import click
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, highlight=False)

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


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="charrnn")
def main():
    """Character-level RNN, LSTM and GRU language models on JAX: train on any text, sample, look inside."""


# --- train -------------------------------------------------------------------------------------------------


@main.command(epilog=EXAMPLES)
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option("--cell", type=click.Choice(["rnn", "lstm", "gru"]), default="lstm", show_default=True, help="Recurrent cell (SPEC.md equations).")
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
@click.option("--eval-every", type=int, default=250, show_default=True, help="Steps between validation passes and checkpoints.")
@click.option("--log-every", type=int, default=10, show_default=True, help="Steps between progress updates.")
@click.option("--val-fraction", type=float, default=0.05, show_default=True, help="Fraction of the corpus held out for validation.")
@click.option("--test-fraction", type=float, default=0.05, show_default=True, help="Fraction held out for testing (the end of the corpus).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed repeats a run bit for bit on the same machine.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Directory for checkpoints  [default: runs/<corpus name>, numbered if taken]")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue the run in this directory (or from this checkpoint) at its step.")
@click.option("--force", is_flag=True, help="Overwrite checkpoints already in --out.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus.")
@click.option("--keep-newlines", is_flag=True, help="Keep \\r\\n and \\r as they are instead of turning them into \\n.")
@click.option("--bytes", "byte_level", is_flag=True, help="Train on raw bytes (vocabulary of 256) instead of text.")
def train(corpus, out, resume, force, encoding, keep_newlines, byte_level, **options):
    """Train a model on CORPUS (default: the bundled corpora/synthetic_prose.txt).

    Shows progress on stderr, validates on the whole validation split every --eval-every steps and keeps
    two checkpoints in --out: best.safetensors (lowest validation loss) and latest.safetensors. Ctrl-C saves
    a checkpoint and stops.
    """
    errors = _user_errors()
    try:
        _train(corpus, out, resume, force, encoding, keep_newlines, byte_level, options)
    except errors as e:
        abort(str(e))


def _train(corpus_path, out, resume_path, force, encoding, keep_newlines, byte_level, options):
    from . import checkpoint, data, train as training
    from .config import ModelConfig, TrainConfig

    model_keys = ("cell", "hidden_size", "num_layers", "embedding_size", "dropout")
    resume = None
    if resume_path is not None:
        resume_path = Path(resume_path)
        resume = checkpoint.load(resume_path / checkpoint.LATEST if resume_path.is_dir() else resume_path)
        if corpus_path is None:
            corpus_path = Path(resume.corpus.path)
            encoding, keep_newlines, byte_level = resume.corpus.encoding, resume.corpus.keep_newlines, resume.corpus.byte_level
        out = out or (resume_path if resume_path.is_dir() else resume_path.parent)
    corpus = data.load_corpus(corpus_path, encoding, keep_newlines, byte_level)
    model_config = ModelConfig(vocab_size=len(corpus.vocab), **{k: options.pop(k) for k in model_keys})
    config = TrainConfig(**options)
    if resume is not None:
        _check_resumable(resume, corpus, model_config)
    out = _choose_out_dir(out, Path(corpus.info.path), force or resume is not None)

    err.print(f"Training a {model_config.num_layers}-layer {model_config.cell.upper()} "
              f"({model_config.hidden_size} units) on [bold]{escape(corpus.info.path)}[/] "
              f"({len(corpus.ids):,} {'bytes' if byte_level else 'characters'}, vocabulary {len(corpus.vocab)}); "
              f"checkpoints in [bold]{escape(str(out))}[/]")
    stop = _StopFlag()
    with stop.installed(), _ProgressView() as view:
        finished = training.train(corpus, model_config, config, out, resume=resume, callback=view.handle,
                                  should_stop=stop)
    _report_finish(finished, corpus, model_config)


def _check_resumable(resume, corpus, model_config) -> None:
    from .data import CorpusError

    if resume.corpus.sha256 != corpus.info.sha256:
        raise CorpusError(f"{corpus.info.path} has changed since the checkpoint was written (its SHA-256 differs); "
                          f"train a new run instead of --resume")
    saved = resume.model.to_dict()
    for key, value in model_config.to_dict().items():
        if saved.get(key) != value:
            raise CorpusError(f"--resume: the checkpoint has {key.replace('_', '-')} {saved.get(key)}, "
                              f"this run asks for {value}; drop the option or start a new run")


def _choose_out_dir(out: Optional[Path], corpus_path: Path, overwrite: bool) -> Path:
    from . import checkpoint
    from .data import CorpusError

    def taken(d: Path) -> bool:
        return any((d / name).exists() for name in (checkpoint.BEST, checkpoint.LATEST))

    if out is not None:
        if out.exists() and not out.is_dir():
            raise CorpusError(f"--out {out} is a file; give a directory")
        if taken(out) and not overwrite:
            raise CorpusError(f"{out} already holds checkpoints; pass --resume {out} to continue that run, "
                              f"--force to overwrite it, or another --out")
        return out
    base = Path("runs") / (corpus_path.stem or "corpus")
    candidate, n = base, 1
    while taken(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


class _StopFlag:
    """Ctrl-C or SIGTERM asks training to stop at the next step boundary (it then saves); a second Ctrl-C
    stops at once — checkpoints are written atomically, so nothing is torn either way."""

    def __init__(self):
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
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


class _ProgressView:
    """Renders training events: a live bar on a terminal, plain lines otherwise."""

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.live = err.is_terminal
        self.progress = Progress(
            TextColumn("step {task.completed:>7,.0f}{task.fields[of]}"),
            BarColumn(bar_width=24),
            TextColumn("epoch {task.fields[epoch]:.2f}"),
            TextColumn("train {task.fields[train]}"),
            TextColumn("val {task.fields[val]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            disable=not self.live,
        )
        self.task = None
        self.val = "—"
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def handle(self, event) -> None:
        from . import train as training

        if isinstance(event, training.Started):
            layout = event.layout
            for warning in event.warnings:
                err.print(f"[yellow]warning:[/] {escape(warning)}")
            total = layout.total_steps
            self.task = self.progress.add_task("train", total=total, completed=event.resumed_step,
                                               of=f"/{total:,}" if total else "", epoch=0.0, train="—", val="—",
                                               speed="")
            resumed = f", resuming at step {event.resumed_step:,}" if event.resumed_step else ""
            err.print(f"{event.num_params:,} parameters; batch {layout.batch_size} × window {layout.seq_length}, "
                      f"{layout.steps_per_epoch:,} steps per epoch; compiled in {event.compile_s:.1f} s{resumed}")
        elif isinstance(event, training.Logged):
            train = f"{event.train_nats:.3f} ({event.train_nats / training.LN2:.2f} bpc)"
            self.progress.update(self.task, completed=event.step, epoch=event.epoch, train=train, val=self.val,
                                 speed=f"{event.chars_per_s:,.0f} chars/s")
            if event.skipped_steps:
                self.progress.update(self.task, speed=f"{event.chars_per_s:,.0f} chars/s, {event.skipped_steps} skipped")
        elif isinstance(event, training.Evaluated):
            bpc = event.val_nats / training.LN2
            self.val = f"{event.val_nats:.3f} ({bpc:.2f} bpc)"
            self.progress.update(self.task, val=self.val)
            task = self.progress.tasks[0]
            mark = " [green]best[/]" if event.is_best else ""
            err.print(f"step {event.step:>7,}  epoch {task.fields['epoch']:.2f}  train {task.fields['train']}  "
                      f"val {event.val_nats:.4f} nats ({bpc:.3f} bpc){mark}  {task.fields['speed']}")


def _report_finish(finished, corpus, model_config) -> None:
    from . import train as training

    why = {"max_steps": "reached --max-steps", "max_epochs": "reached --max-epochs", "max_time": "reached --max-time",
           "interrupted": "interrupted"}.get(finished.reason, finished.reason)
    best = (f"best validation loss {finished.best_val_nats:.4f} nats ({finished.best_val_nats / training.LN2:.3f} bpc)"
            if finished.best_val_nats is not None else "no checkpoint written")
    err.print(f"Stopped at step {finished.step:,} ({why}) after {finished.elapsed_s:.0f} s; {best}.")
    if finished.best.exists():
        err.print(f"Checkpoints: {escape(str(finished.best))} (best), {escape(str(finished.latest))} (latest)")
        err.print(f"Sample with: charrnn sample {escape(str(finished.best.parent))}")
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
def sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet):
    """Generate text from a CHECKPOINT file or run directory, streamed to stdout as it is made."""
    errors = _user_errors()
    try:
        _sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet)
    except errors as e:
        abort(str(e))
    except BrokenPipeError:  # `charrnn sample ... | head`: the reader has what it wanted
        sys.stderr.close()
        sys.exit(0)


def _sample(checkpoint_path, length, temperature, top_k, prime, seed, num_samples, quiet):
    import os

    from . import checkpoint, sample as sampling

    sampling.check_options(length, temperature, top_k, num_samples)
    ckpt = checkpoint.load(checkpoint_path)
    params = checkpoint.load_params(ckpt)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") >> 1
    if not quiet:
        err.print(f"[dim]seed {seed} (pass --seed {seed} to repeat this sample)[/]")
    out = sys.stdout.buffer
    encode = (lambda piece: piece) if ckpt.vocab.byte_level else (lambda piece: piece.encode("utf-8", "surrogateescape"))
    chunks = sampling.stream(params, ckpt.model, ckpt.vocab, length=length, prime=prime, temperature=temperature,
                             top_k=top_k, num_samples=num_samples, seed=seed)
    prime_bytes = encode(prime.encode("utf-8", "surrogateescape") if ckpt.vocab.byte_level else prime)
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


if __name__ == "__main__":
    main()
