"""What every command shares: the stderr console, the one-line error exit, option types, --config files."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NoReturn

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


def abort(message: str, code: int = 1) -> NoReturn:
    """Prints one line on stderr and exits with `code`."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


def abort_now(message: str) -> NoReturn:
    """`abort` from a watchdog thread, or past a point where the normal exit would hang (a lost collective)."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    err.file.flush()
    os._exit(1)


def user_errors() -> tuple[type[Exception], ...]:
    """The library's errors that a user can fix; each one's message is the one line they see."""
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..evaluation import EvaluationError
    from ..ngram import NGramError
    from ..report import ReportError
    from ..sample import SampleError
    from ..text import CorpusError
    from ..train import TrainingDiverged

    return (CorpusError, CheckpointError, ConfigError, SampleError, TrainingDiverged, ReportError, EvaluationError,
            NGramError)


def results_console(width_when_piped: int) -> Console:
    """A console for results on stdout; piped into a file, rows keep `width_when_piped` columns instead of 80."""
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else width_when_piped)


def write_page(path: Path, html: str, what: str = "HTML report") -> None:
    """Writes a page atomically and says where."""
    from ..files import write_atomic

    write_atomic(Path(path), html.encode("utf-8"))
    err.print(f"{what}: {escape(str(path))}")


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


class OrAuto(click.ParamType):
    """A number, or "auto" (None: the library fits the value to the run). A subclass says how to read the
    number (`number`; the configuration checks its range) and names it for the error (`what`)."""

    number: type
    what: str

    def convert(self, value, param, ctx):
        if value is None or str(value).strip() == "auto":
            return None
        try:
            return self.number(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither {self.what} nor 'auto'", param, ctx)


class DropoutRate(OrAuto):
    """A dropout rate in [0, 1), or "auto" (None: fitted to the passes over the data the run makes)."""

    name, number, what = "rate|auto", float, "a dropout rate in [0, 1)"


class LearningRate(OrAuto):
    """A peak learning rate, or "auto" (None: charrnn.optim.default_learning_rate: higher for a run that only time
    stops)."""

    name, number, what = "rate|auto", float, "a learning rate"


class AdamBeta2(OrAuto):
    """Adam's second-moment decay in (0, 1), or "auto" (None: 0.999, or charrnn.sizing.LONG_CORPUS_ADAM_BETA2 for a
    run on a corpus long for its time budget)."""

    name, number, what = "decay|auto", float, "a decay in (0, 1)"


class WeightAverage(OrAuto):
    """The decay of the weights' moving average in [0, 1) (0: none), or "auto" (None:
    charrnn.optim.default_weight_average: fitted to the length of a run that only time stops, else none)."""

    name, number, what = "decay|auto", float, "a decay in [0, 1)"


class BatchSize(OrAuto):
    """Streams per step, or "auto" (None: 32, or more for a long corpus in a time budget: charrnn.sizing.fit_batch)."""

    name, number, what = "streams|auto", int, "a number of streams"


class SegmentLength(OrAuto):
    """Characters per shuffled segment (0: contiguous streams), or "auto" (None: charrnn.data.default_segment_length:
    shuffled segments for a run that only time stops)."""

    name, number, what = "chars|auto", int, "a number of characters"


class Width(OrAuto):
    """Units per layer, or "auto" (None: fitted to a --max-time budget, else the default; see charrnn.sizing)."""

    name, number, what = "units|auto", int, "a number of units"


class Steps(OrAuto):
    """A number of steps, or "auto" (None: the library chooses, e.g. charrnn.validation.auto_eval_every)."""

    name, number, what = "steps|auto", int, "a number of steps"


class Coordinator(click.ParamType):
    """HOST:PORT of process 0 in a multi-process run, or "auto" (JAX detects a TPU pod, Slurm or Open MPI)."""

    name = "host:port"

    def convert(self, value, param, ctx):
        if str(value).strip() == "auto":
            return "auto"
        from ..distributed import parse_coordinator

        try:
            host, port = parse_coordinator(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return f"{host}:{port}"


def load_config(ctx: click.Context, param, value):
    """--config FILE: option values from a TOML file (a flat table, or a table named after the command), as
    defaults that the command line overrides."""
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
