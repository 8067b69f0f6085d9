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


# --- train -------------------------------------------------------------------------------------------------


@main.command(epilog=EXAMPLES)
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
    a checkpoint and stops. With --resume, the run continues with its own saved settings; only the stopping
    and logging options (--max-epochs, --max-steps, --max-time, --eval-every, --log-every) may change.
    """
    errors = _user_errors()
    ctx = click.get_current_context()
    given = {name for name in options if ctx.get_parameter_source(name).name in ("COMMANDLINE", "ENVIRONMENT")}
    try:
        _train(corpus, out, resume, force, encoding, keep_newlines, byte_level, options, given)
    except errors as e:
        abort(str(e))


MODEL_OPTIONS = ("cell", "hidden_size", "num_layers", "embedding_size", "dropout")
RESUME_MAY_CHANGE = ("max_epochs", "max_steps", "max_time", "max_bad_steps", "eval_every", "log_every")


def _train(corpus_path, out, resume_path, force, encoding, keep_newlines, byte_level, options, given):
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
    corpus = data.load_corpus(corpus_path, encoding, keep_newlines, byte_level)
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
    data.split(len(corpus.ids), config.val_fraction, config.test_fraction)  # too short? say so before writing anything
    # Resuming writes into the run it resumes; any other directory with checkpoints still needs --force.
    continuing = resume is not None and out.resolve() == resumed_dir.resolve()
    out = _choose_out_dir(out, Path(corpus.info.path), force or continuing)

    err.print(f"Training a {model_config.num_layers}-layer {model_config.cell.upper()} "
              f"({model_config.hidden_size} units) on [bold]{escape(corpus.info.path)}[/] "
              f"({len(corpus.ids):,} {'bytes' if byte_level else 'characters'}, vocabulary {len(corpus.vocab)}); "
              f"checkpoints in [bold]{escape(str(out))}[/]")
    stop = _StopFlag()
    with stop.installed(), _ProgressView() as view:
        finished = training.train(corpus, model_config, config, out, resume=resume, callback=view.handle,
                                  should_stop=stop)
    _report_finish(finished, corpus, model_config)


def _resumable_corpus(resume, corpus, force):
    """The corpus encoded with the checkpoint's vocabulary, after checking it is the text the run trained on."""
    import dataclasses

    from .data import CorpusError, UnknownCharactersError

    if resume.corpus.sha256 != corpus.info.sha256 and not force:
        raise CorpusError(f"{corpus.info.path} has changed since the checkpoint was written (its SHA-256 differs); "
                          f"start a new run, or pass --force to resume on the changed text")
    if corpus.vocab == resume.vocab:
        return corpus
    try:
        ids = resume.vocab.encode(corpus.vocab.decode(corpus.ids))
    except UnknownCharactersError as e:
        raise CorpusError(f"{corpus.info.path} now has {e}; start a new run") from None
    return dataclasses.replace(corpus, ids=ids, vocab=resume.vocab)


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
            steps = f"{layout.steps_per_epoch:,} step{'s' if layout.steps_per_epoch != 1 else ''}"
            err.print(f"{event.num_params:,} parameters; batch {layout.batch_size} × window {layout.seq_length}, "
                      f"{steps} per epoch; compiled in {event.compile_s:.1f} s{resumed}")
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
    chunks = sampling.stream(params, ckpt.model, ckpt.vocab, length=length, prime=prime, temperature=temperature,
                             top_k=top_k, num_samples=num_samples, seed=seed)  # checks the prime: nothing printed yet
    if not quiet:
        err.print(f"[dim]seed {seed} (pass --seed {seed} to repeat this sample)[/]")
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
    text, source = _inspection_text(ckpt, text_path)
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
        _render_inspection(report)
    if html_path is not None:
        from . import html

        checkpoint.write_bytes_atomic(Path(html_path), html.inspection_page(report).encode("utf-8"))
        err.print(f"HTML report: {escape(str(html_path))}")


def _inspection_text(ckpt, text_path):
    """The text to inspect and where it came from: TEXT, or the checkpoint's validation split."""
    from . import data

    corpus = ckpt.corpus
    if text_path is None:
        path = Path(corpus.path)
        if not path.is_file():
            raise data.CorpusError(f"the corpus this model was trained on, {path}, is gone; give TEXT to inspect")
        text, digest = data.read_text(path, corpus.encoding, corpus.keep_newlines, corpus.byte_level)
        if digest != corpus.sha256:
            err.print(f"[yellow]warning:[/] {escape(str(path))} has changed since training; its validation split "
                      f"may now hold other text")
        lo, hi = ckpt.splits.val
        text = text[lo:hi]
        source = {"path": str(path), "source": f"the validation split of {path}"}
    else:
        text, _ = data.read_text(text_path, corpus.encoding, corpus.keep_newlines, corpus.byte_level)
        source = {"path": str(text_path), "source": str(text_path)}
    if isinstance(text, bytes):
        text = text.decode("latin-1")  # byte-level model: one character per byte
    return text, source


def _activation_style(shown: float) -> str:
    """rich style for a standardized activation (see `html.standardized`): blue below the mean, red above."""
    from .html import activation_colour

    return f"black on {activation_colour(shown)}"


def _render_inspection(report) -> None:
    from rich.table import Table
    from rich.text import Text

    from .html import standardized

    # Results go to stdout; piped into a file they keep full-width rows instead of wrapping at 80 columns.
    out = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160)
    d = report.to_dict()
    out.print(f"[bold]{escape(report.text['source'])}[/]: {report.text['chars']:,} characters, "
              f"loss {report.loss_nats:.4f} nats/char ({d['loss_bpc']:.3f} bpc)"
              + (f"; skipped {report.text['skipped_chars']:,} characters the model does not know"
                 if report.text["skipped_chars"] else ""))
    info = d["feature_info"]
    for name, findings in d["features"].items():
        table = Table(title=f"{name} — {info[name]['description']}", title_justify="left", show_edge=False)
        for column in ("layer", "state", "unit", "metric", "score", "support", "Δloss on / off", "ablation"):
            table.add_column(column, justify="right" if column not in ("state", "metric", "ablation") else "left")
        for f in findings:
            ablation = f["ablation"]
            delta = "—" if ablation is None else f"{ablation['delta_nats_on']:+.3f} / {ablation['delta_nats_off']:+.3f}"
            table.add_row(str(f["layer"]), f["state"], str(f["unit"]), f["metric"], f"{f['score']:.3f} {f['direction']}",
                          f"{f['support']:,}", delta, "—" if ablation is None else ablation["verdict"])
        out.print()
        out.print(table)
        excerpt = d["excerpts"].get(name)
        if excerpt:
            for f, activations, centre, scale in zip(findings, excerpt["units"], excerpt["centre"], excerpt["scale"]):
                line = Text(f"  L{f['layer']} {f['state']}[{f['unit']}] ", style="dim")
                for ch, shown in zip(excerpt["text"], standardized(activations, centre, scale)):
                    line.append("↵" if ch == "\n" else ("→" if ch == "\t" else ch), style=_activation_style(shown))
                out.print(line)
    for name, reason in d["unscored"].items():
        out.print(f"[dim]{escape(name)}: not scored — {escape(reason)}[/]")
    if d["saturation"]:
        table = Table(title="gate saturation (fraction of time < 0.1 / > 0.9, mean over units)", title_justify="left",
                      show_edge=False)
        for column in ("layer", "gate", "left-saturated", "right-saturated"):
            table.add_column(column, justify="right")
        for layer, gates in d["saturation"].items():
            for gate, v in gates.items():
                table.add_row(layer, gate, f"{v['mean_left']:.3f}", f"{v['mean_right']:.3f}")
        out.print()
        out.print(table)
    if d["gradients"]:
        out.print()
        out.print("[bold]gradient reach[/]: mean |d loss_T / d h_(T−k)|, relative to k = 0")
        for layer, norms in enumerate(d["gradients"]["norm_by_layer"]):
            cells = "  ".join(f"k={k}: {norms[k] / norms[0]:.2e}" for k in (1, 5, 10, 25, 50, 100) if k < len(norms))
            out.print(f"  layer {layer}: {cells}")


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
