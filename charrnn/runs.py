"""Runs: getting a training run ready the way the command does, and the texts a finished run holds out.

    finished = runs.train("corpus.txt", hidden_size=128, max_time=600)     # a new run, in runs/corpus
    finished = runs.train(resume="runs/corpus", max_time=600)              # the same run, continued

`train` is the whole of `charrnn train` as one call: `prepare` (read the corpus, build the configs, or take
them from the checkpoint when resuming; re-encode the corpus to the checkpoint's vocabulary; fit the devices;
fail on bad input before anything is written), `choose_out_dir` (a new directory, or the resumed one), then
`charrnn.train.train`. The command calls the same three, with its collectives in between when several
processes take part.

`held_out_text` is the text a run did not train on (its validation or test split), read back from the corpus
file, for `inspect-cells`, `explore` and `evaluate`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from . import checkpoint, data, distributed, optim, sizing
from .config import ConfigError, ModelConfig, TrainConfig
from .text import Corpus, CorpusError, UnknownCharactersError, read_text

# The options of `ModelConfig` a run is started with (the rest of the options are `TrainConfig`'s).
MODEL_OPTIONS = ("cell", "hidden_size", "num_layers", "embedding_size", "dropout", "weight_drop", "activation",
                 "layer_norm")
# What a resumed run may change: when and how often to stop, check and log, and the precision of its products;
# never what it learns.
RESUME_MAY_CHANGE = ("max_epochs", "max_steps", "max_time", "max_bad_steps", "eval_every", "log_every",
                     "precision")


@dataclasses.dataclass
class PreparedRun:
    """A run ready to train: what `prepare` found.

    Attributes:
      corpus: the encoded corpus (with the checkpoint's vocabulary when resuming).
      model_config, config: the architecture and the training settings.
      out: the output directory asked for (None: `choose_out_dir` picks runs/<corpus name>).
      resume: the checkpoint to continue from, or None.
      overwrite: whether `out` may already hold checkpoints (--force, or the run being resumed).
      placement: the devices, fitted to the batch (`charrnn.distributed.fit_placement`).
      fitted_width: how the width was fitted to the time budget (`charrnn.sizing.fit_width`), or None.
    """

    corpus: Corpus
    model_config: ModelConfig
    config: TrainConfig
    out: Optional[Path]
    resume: Optional[checkpoint.Checkpoint]
    overwrite: bool
    placement: distributed.Placement
    fitted_width: Optional[sizing.FittedWidth] = None


def prepare(
    corpus_path: Union[str, Path, None] = None,
    *,
    options: Optional[dict[str, Any]] = None,
    given: Optional[set[str]] = None,
    out: Union[str, Path, None] = None,
    resume: Union[str, Path, None] = None,
    force: bool = False,
    encoding: str = "utf-8",
    keep_newlines: bool = False,
    byte_level: bool = False,
    placement: Optional[distributed.Placement] = None,
    on_encode: Optional[Callable[[Path, str], None]] = None,
) -> PreparedRun:
    """Everything before training that can fail on the user's input, in this process alone; writes nothing.

    Args:
      corpus_path: the text to train on (default: the bundled corpus, or when resuming the run's own corpus).
      options: `ModelConfig` (`MODEL_OPTIONS`) and `TrainConfig` fields; missing ones take their defaults, but
        a missing (or None) hidden_size is fitted to the run (`charrnn.sizing.fit_width`: to its time, when only
        `max_time` limits it), and so is a missing (or None, or "auto") precision (`charrnn.sizing.fit_precision`:
        bfloat16 products where this machine runs them faster, for such a run; else float32) and a missing (or
        None) batch_size (`charrnn.sizing.fit_batch`: 64 streams for a corpus such a run reads few times; else 32). When resuming, the
        checkpoint's settings are used, and only `RESUME_MAY_CHANGE` may differ from them.
      given: which of `options` the user set (default: all of them): only those are checked against a resumed
        checkpoint, so a default never counts as asking for a change.
      out: the output directory (default: runs/<corpus name>, numbered if taken; when resuming, the run's own).
      resume: a run directory (its latest checkpoint) or a checkpoint file to continue from.
      force: allow `out` to hold another run's checkpoints, and resume on a corpus that has changed.
      encoding, keep_newlines, byte_level: how to read the corpus (a resumed run reads it as it did before).
      placement: the devices (default: every device JAX sees), fitted to the batch.
      on_encode: ``on_encode(cache_file, reason)`` before a large corpus is encoded to its cache.

    Raises:
      CorpusError, CheckpointError, ConfigError: with a one-line message saying what to change.
    """
    options = dict(options or {})
    given = set(options) if given is None else set(given)
    fit_precision = options.get("precision") in (None, "auto")
    if fit_precision:
        options.pop("precision", None)
        given.discard("precision")
    if "max_time" in given and options.get("max_time") is not None and "max_epochs" not in given:
        # A time budget, and no epoch limit asked for: the time is the limit (and the schedule fits it).
        options["max_epochs"], given = None, given | {"max_epochs"}
    checkpoint_dir = None
    ckpt = None
    if resume is not None:
        resume = Path(resume)
        ckpt = checkpoint.load(resume, prefer=checkpoint.LATEST)
        corpus_path = corpus_path if corpus_path is not None else Path(ckpt.corpus.path)
        encoding, keep_newlines, byte_level = ckpt.corpus.encoding, ckpt.corpus.keep_newlines, ckpt.corpus.byte_level
        checkpoint_dir = resume if resume.is_dir() else resume.parent
        out = out if out is not None else checkpoint_dir
    corpus = data.load_corpus(corpus_path, encoding, keep_newlines, byte_level, on_build=on_encode)
    no_width = ckpt is None and options.get("hidden_size") is None  # `charrnn.sizing` picks it
    no_batch = ckpt is None and options.get("batch_size") is None  # and this
    no_beta2 = ckpt is None and options.get("adam_beta2") is None  # and this
    if ckpt is None:
        model_config, config = new_configs(len(corpus.vocab), options)
    else:
        corpus = corpus_for_checkpoint(ckpt, corpus, force)
        model_config, config = ckpt.model, resumed_config(ckpt, options, given)
    placement = fit_devices(len(corpus.ids), model_config, config, placement or distributed.placement())
    model_config, config, fitted = fit_to_machine(len(corpus.ids), model_config, config, placement,
                                                  ckpt is None and fit_precision, no_width, no_batch, no_beta2)
    out = Path(out) if out is not None else None
    # Resuming writes into the run it resumes; any other directory with checkpoints still needs --force.
    continuing = ckpt is not None and out.resolve() == checkpoint_dir.resolve()
    return PreparedRun(corpus, model_config, config, out, ckpt, force or continuing, placement, fitted)


def fit_to_machine(corpus_chars: int, model_config: ModelConfig, config: TrainConfig,
                   placement: distributed.Placement, precision: bool, width: bool, batch: bool = False,
                   adam_beta2: bool = False) -> tuple[ModelConfig, TrainConfig, Optional[sizing.FittedWidth]]:
    """The configs with the `precision` (`sizing.fit_precision`), the `batch` (`sizing.fit_batch`), Adam's
    `adam_beta2` for that batch (`sizing.fit_adam_beta2`) and the `width` (`sizing.fit_width`) fitted to this
    machine, each only if asked; and how the width was fitted (None: it was not).

    Raises:
      ConfigError: bfloat16 products asked of a layer-normalised cell (which trains in float32).
    """
    speeds, fitted = None, None
    if precision:
        config, speeds = sizing.fit_precision(config, placement, model_config.layer_norm)
    if model_config.layer_norm and config.precision != "float32":
        raise ConfigError(f"--precision {config.precision} is for the fused training step; a --layer-norm cell "
                          "trains through the plain scan in float32: drop --precision")
    splits = data.split(corpus_chars, config.val_fraction, config.test_fraction)
    val_chars, train_chars = splits.val[1] - splits.val[0], splits.train[1] - splits.train[0]
    if batch:
        config, speeds = sizing.fit_batch(model_config, config, val_chars, placement, train_chars, speeds)
    if adam_beta2:
        config = sizing.fit_adam_beta2(config)
    if width:
        model_config, fitted = sizing.fit_width(model_config, config, val_chars, placement, train_chars, speeds)
    return model_config, config, fitted


def new_configs(vocab_size: int, options: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """A new run's configurations from `options`: `MODEL_OPTIONS` for the model, the rest for training. A missing
    or None hidden_size is `sizing.DEFAULT_WIDTH` (which `sizing.fit_width` may then change); a missing or None
    learning_rate is `optim.default_learning_rate`'s for the run, segment_length `data.default_segment_length`'s
    and weight_average `optim.default_weight_average`'s (each saved, so a resumed run keeps it: a number, or for
    weight_average None, fitted to the run); a missing or None batch_size or adam_beta2 is `TrainConfig`'s (which
    `sizing.fit_batch` and `sizing.fit_adam_beta2` may then change)."""
    options = dict(options)
    model = {k: options.pop(k) for k in MODEL_OPTIONS if k in options}
    if model.get("hidden_size") is None:
        model["hidden_size"] = sizing.DEFAULT_WIDTH
    for name in ("batch_size", "adam_beta2"):
        if options.get(name) is None:
            options.pop(name, None)  # `TrainConfig`'s (which `sizing.fit_batch`, `sizing.fit_adam_beta2` may change)
    rate, segments = options.pop("learning_rate", None), options.pop("segment_length", None)
    average = options.pop("weight_average", None)
    config = TrainConfig(**options)
    config = dataclasses.replace(
        config, learning_rate=rate if rate is not None else optim.default_learning_rate(config),
        segment_length=segments if segments is not None else data.default_segment_length(config),
        weight_average=average if average is not None else optim.default_weight_average(config))
    return ModelConfig(vocab_size=vocab_size, **model), config


def fit_devices(num_symbols: int, model_config: ModelConfig, config: TrainConfig,
                placement: distributed.Placement) -> distributed.Placement:
    """The placement fitted to the run's batch (one device for RTRL), after checking that the corpus is long
    enough, that the batch splits over the devices, and that an RTRL run is affordable: what would otherwise
    fail once training has started.

    Raises:
      CorpusError, ConfigError: saying what to change.
    """
    splits = data.split(num_symbols, config.val_fraction, config.test_fraction)
    num_train = splits.train[1] - splits.train[0]
    if config.gradient == "rtrl":
        placement = rtrl_placement(placement)
    placement = distributed.fit_placement(placement, num_train, config)
    layout, _ = data.plan(num_train, config, placement.devices)
    if config.gradient == "rtrl":
        check_rtrl(model_config, layout.batch_size)
    return placement


# RTRL's work per character of the whole batch, above which `charrnn train --gradient rtrl` refuses to start: at
# the few GFLOP/s its many small products reach on a CPU core, that is already tens of milliseconds a character.
MAX_RTRL_FLOPS_PER_CHARACTER = 2e8


def rtrl_placement(placement: distributed.Placement) -> distributed.Placement:
    """RTRL runs on one device of one process: `placement` if it has one, one device if none was asked for.

    Raises:
      ConfigError: several devices were asked for, or several processes take part.
    """
    if placement.num_processes > 1 or (placement.asked and placement.devices > 1):
        raise rtrl_on_several_devices(f"{placement.num_processes} processes" if placement.num_processes > 1
                                      else f"--devices {placement.devices}")
    return placement if placement.devices == 1 else distributed.placement(1)


def rtrl_on_several_devices(what: str) -> ConfigError:
    """The error for RTRL asked to run on several devices or processes (`what`: the option that asks for them)."""
    return ConfigError(f"--gradient rtrl runs on one device (its sensitivities are not split over devices); "
                       f"drop {what}, or use --gradient bptt")


def check_rtrl(model_config: ModelConfig, batch_size: int) -> None:
    """Refuses an RTRL run that would be too slow, saying what it would cost and what to change.

    Raises:
      ConfigError: dropout or weight drop (RTRL computes the deterministic model's gradient), or more than
        `MAX_RTRL_FLOPS_PER_CHARACTER` of work per character of the batch.
    """
    from . import rtrl

    if model_config.dropout:
        raise ConfigError("--gradient rtrl computes the gradient of the model without dropout; drop --dropout")
    if model_config.weight_drop:
        raise ConfigError("--gradient rtrl computes the gradient of the model without weight drop; drop --weight-drop")
    cost = rtrl.cost(model_config)
    flops = cost.flops_per_character * batch_size
    if flops > MAX_RTRL_FLOPS_PER_CHARACTER:
        raise ConfigError(
            f"--gradient rtrl with this model would cost {flops:.2g} flops per character ({batch_size} stream(s) of "
            f"{cost.sensitivity_floats:,} sensitivities, O(H² · parameters) work each; at most "
            f"{MAX_RTRL_FLOPS_PER_CHARACTER:.0g} allowed); use a smaller --hidden-size, --num-layers, "
            f"--embedding-size or --batch-size, or --gradient bptt")


def resumed_config(ckpt: checkpoint.Checkpoint, options: dict[str, Any], given: set[str]) -> TrainConfig:
    """The checkpoint's training settings with the `given` options of `RESUME_MAY_CHANGE` applied.

    Raises:
      ConfigError: a given option outside `RESUME_MAY_CHANGE` differs from the checkpoint's.
    """
    saved = {**ckpt.model.to_dict(), **ckpt.train.to_dict()}
    for name in sorted(given):
        # None is "auto": keep what the run chose.
        if name not in RESUME_MAY_CHANGE and options.get(name) is not None and options[name] != saved.get(name):
            allowed = ", ".join("--" + n.replace("_", "-") for n in RESUME_MAY_CHANGE)
            raise ConfigError(
                f"--resume: the checkpoint has --{name.replace('_', '-')} {saved.get(name)}, this run asks for "
                f"{options[name]}; only {allowed} may change when resuming; drop the option or start a new run")
    return dataclasses.replace(ckpt.train, **{k: options[k] for k in RESUME_MAY_CHANGE if k in given and k in options})


def corpus_for_checkpoint(ckpt: checkpoint.Checkpoint, corpus: Corpus, force: bool = False) -> Corpus:
    """`corpus` encoded with the checkpoint's vocabulary, after checking it is the text the run trained on.

    Raises:
      CorpusError: the file changed since the checkpoint (unless `force`), or it now holds characters the
        checkpoint's vocabulary lacks.
    """
    if ckpt.corpus.sha256 != corpus.info.sha256 and not force:
        raise CorpusError(f"{corpus.info.path} has changed since the checkpoint was written (its SHA-256 differs); "
                          f"start a new run, or pass --force to resume on the changed text")
    if corpus.vocab == ckpt.vocab:
        return corpus
    # Every symbol of the corpus's own vocabulary occurs in it: those the checkpoint lacks are the unknown ones.
    index = {symbol: i for i, symbol in enumerate(ckpt.vocab.symbols)}
    unknown = [symbol for symbol in corpus.vocab.symbols if symbol not in index]
    if unknown:
        raise CorpusError(f"{corpus.info.path} now has {UnknownCharactersError(unknown)}; start a new run")
    # In memory, in the smallest type that holds the ids (a large corpus: one or two bytes per character).
    dtype = np.min_scalar_type(max(len(ckpt.vocab) - 1, 0))
    table = np.array([index[symbol] for symbol in corpus.vocab.symbols], dtype)
    return dataclasses.replace(corpus, ids=table[np.asarray(corpus.ids)], vocab=ckpt.vocab)


def holds_checkpoints(directory: Path) -> bool:
    return any((Path(directory) / name).exists() for name in (checkpoint.BEST, checkpoint.LATEST))


def choose_out_dir(out: Optional[Path], corpus_path: Union[str, Path], overwrite: bool = False) -> Path:
    """The checkpoint directory, created and checked for writing: `out` if given (refusing to overwrite another
    run's checkpoints unless `overwrite`), else runs/<corpus name>, numbered -2, -3, ... if taken.

    Raises:
      ConfigError: `out` is a file, holds checkpoints, or cannot be written.
    """
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a directory")
        if holds_checkpoints(out) and not overwrite:
            raise ConfigError(f"{out} already holds checkpoints; pass --resume {out} to continue that run, "
                              f"--force to overwrite it, or another --out")
    else:
        base = Path("runs") / (Path(corpus_path).stem or "corpus")
        out, n = base, 1
        while holds_checkpoints(out):
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise ConfigError(f"cannot write checkpoints to {out} ({e.strerror}); choose another --out") from None
    return out


def train(corpus_path: Union[str, Path, None] = None, *, out: Union[str, Path, None] = None,
          resume: Union[str, Path, None] = None, force: bool = False, encoding: str = "utf-8",
          keep_newlines: bool = False, byte_level: bool = False,
          callback: Callable[[Any], None] = lambda event: None, should_stop: Callable[[], bool] = lambda: False,
          **options: Any):
    """`charrnn train` as one call, in one process: `prepare`, `choose_out_dir`, `charrnn.train.train`.

    `options` are `ModelConfig` and `TrainConfig` fields (hidden_size=128, max_time=600, ...); the other
    arguments as `prepare` and `charrnn.train.train`. Returns the `charrnn.runlog.Finished` event (its `best`
    is the best checkpoint's path).
    """
    from . import train as training

    run = prepare(corpus_path, options=options, out=out, resume=resume, force=force, encoding=encoding,
                  keep_newlines=keep_newlines, byte_level=byte_level)
    out_dir = choose_out_dir(run.out, run.corpus.info.path, run.overwrite)
    return training.train(run.corpus, run.model_config, run.config, out_dir, resume=run.resume, callback=callback,
                          should_stop=should_stop, placement=run.placement)


# --- the text a run held out ----------------------------------------------------------------------------------


def run_corpus(ckpt: checkpoint.Checkpoint, needed_for: str) -> tuple[Corpus, Optional[str]]:
    """The corpus a run trained on, read back as it was read then, and a warning when the file has changed since
    (its splits may now hold other text). `needed_for` completes the error's "give ..." when the file is gone.

    Raises:
      CorpusError: the corpus file is gone or unreadable.
    """
    path = Path(ckpt.corpus.path)
    if not path.is_file():
        raise CorpusError(f"the corpus this model was trained on, {path}, is gone; {needed_for}")
    # Through load_corpus: a large corpus comes memory-mapped from its encoded cache.
    whole = data.load_corpus(path, ckpt.corpus.encoding, ckpt.corpus.keep_newlines, ckpt.corpus.byte_level)
    changed = whole.info.sha256 != ckpt.corpus.sha256
    return whole, f"{path} has changed since training" if changed else None


def training_ids(ckpt: checkpoint.Checkpoint) -> tuple[np.ndarray, list[str]]:
    """The ids (N,) of a run's training split, in the checkpoint's vocabulary, and warnings (the file changed).

    Raises:
      CorpusError: the corpus file is gone, or now holds characters the vocabulary lacks.
    """
    whole, changed = run_corpus(ckpt, "put it back: the n-gram baselines are trained on its training split")
    warnings = [f"{changed}; the n-gram baselines train on its training split as it is now"] if changed else []
    corpus = corpus_for_checkpoint(ckpt, whole, force=True)
    lo, hi = ckpt.splits.train
    return np.asarray(corpus.ids[lo:min(hi, len(corpus.ids))]), warnings


def held_out_text(ckpt: checkpoint.Checkpoint, split: str = "val",
                  max_chars: Optional[int] = None) -> tuple[str, dict[str, Any]]:
    """The text of a run's validation (``split="val"``) or test split, read back from its corpus file, at most
    `max_chars` characters of it, as a str (a byte-level model's bytes as latin-1, one character per byte).

    Returns:
      (text, source): source has "path", "source" (a phrase naming the text), "truncated_from" when cut, and
      "warning" when the file changed since training (its split may now hold other text).

    Raises:
      CorpusError: the corpus file is gone or unreadable.
    """
    whole, changed = run_corpus(ckpt, "give TEXT to read instead")
    name = {"val": "validation", "test": "test"}[split]
    path = str(Path(ckpt.corpus.path))
    source: dict[str, Any] = {"path": path, "source": f"the {name} split of {path}"}
    if changed:
        source["warning"] = f"{changed}; its {name} split may now hold other text"
    lo, hi = getattr(ckpt.splits, split)
    lo, hi = min(lo, len(whole.ids)), min(hi, len(whole.ids))
    if max_chars is not None and hi - lo > max_chars:
        source["truncated_from"] = hi - lo
        hi = lo + max_chars
    return whole.vocab.printable(whole.ids[lo:hi]), source


def text_file(ckpt: checkpoint.Checkpoint, path: Union[str, Path]) -> tuple[str, dict[str, Any]]:
    """A text file read the way the run read its corpus (encoding, newlines, bytes), as a str (bytes as latin-1).

    Raises:
      CorpusError: missing, unreadable, empty or undecodable.
    """
    text, _ = read_text(path, ckpt.corpus.encoding, ckpt.corpus.keep_newlines, ckpt.corpus.byte_level)
    if isinstance(text, bytes):
        text = text.decode("latin-1")  # byte-level model: one character per byte
    return text, {"path": str(path), "source": str(path)}


def text_to_read(ckpt: checkpoint.Checkpoint, text_path: Union[str, Path, None] = None, *,
                 max_chars: Optional[int] = None, split: str = "val") -> tuple[str, dict[str, Any]]:
    """The text a command reads a model on: the file `text_path` (`text_file`), or by default the run's held-out
    `split` (`held_out_text`); at most `max_chars` characters ("truncated_from" in the source says so).

    Raises:
      CorpusError: the text is empty, or cannot be read.
    """
    if text_path is None:
        text, source = held_out_text(ckpt, split, max_chars)
    else:
        text, source = text_file(ckpt, text_path)
        if max_chars is not None and len(text) > max_chars:
            source["truncated_from"] = len(text)
            text = text[:max_chars]
    if not text:
        raise CorpusError(f"{source['path']}: the text is empty; give a text with something in it")
    return text, source
