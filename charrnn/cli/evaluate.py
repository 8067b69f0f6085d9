"""`charrnn evaluate`: a checkpoint and a text -> `charrnn.evaluation.evaluate` -> tables, JSON or a page; on a
run directory's own test split, the result is also kept in the run (evaluation.json) for `charrnn report`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from rich.markup import escape

from ._group import main
from ._common import err, results_console, write_page


@main.command("evaluate", epilog="""
\b
Examples:
  charrnn evaluate runs/warpeace                    # the run's test split; kept in runs/warpeace/evaluation.json
  charrnn evaluate runs/warpeace chapter.txt --max-order 10
  charrnn evaluate runs/warpeace --json > evaluation.json
  charrnn evaluate runs/warpeace --html evaluation.html
""")
@click.argument("checkpoint_path", metavar="RUN_OR_CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("text_path", metavar="[TEXT]", required=False, type=click.Path(path_type=Path))
@click.option("--max-order", type=int, default=20, show_default=True, help="Longest n-gram baseline (1..20).")
@click.option("--max-chars", type=int, default=None, help="Evaluate at most this many characters of the text.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (schema in docs/evaluate.md).")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None, help="Also write a self-contained HTML report to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
def evaluate(checkpoint_path, text_path, max_order, max_chars, as_json, html_path, quiet):
    """Measure a model on text it has not seen: by default the test split of the run. Reports the loss
    (overall and by character class), n-gram baselines of order 1..20 trained on the run's training split,
    accuracy on closing brackets and quotes by distance to the opener, and what kinds of characters the
    network still gets wrong."""
    from .. import checkpoint, evaluation, ngram, runs
    from ..config import ConfigError
    from ..evaluation import EvaluationError

    if not 1 <= max_order <= ngram.MAX_ORDER:
        raise ConfigError(f"--max-order must be an n-gram order in 1..{ngram.MAX_ORDER}, got {max_order}")
    if max_chars is not None and max_chars < 2:
        raise ConfigError(f"--max-chars must be at least 2 (one character to read, one to predict), got {max_chars}")
    ckpt = checkpoint.load(checkpoint_path)
    test_lo, test_hi = ckpt.splits.test
    if text_path is None and test_hi <= test_lo:
        raise EvaluationError(f"{checkpoint_path} was trained with --test-fraction 0, so it has no test split; give "
                              f"TEXT, a file to evaluate on, or train a run that holds out a test split")
    train_ids, warnings = runs.training_ids(ckpt)  # first: without the corpus no TEXT helps
    ids, text_info, more_warnings = _text_ids(ckpt, text_path, max_chars)
    for warning in more_warnings + warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    if not quiet:
        err.print(f"Evaluating a {ckpt.model.num_layers}×{ckpt.model.hidden_size} {ckpt.model.cell.upper()} on "
                  f"{len(ids):,} characters of {escape(text_info['source'])}, against n-gram models of order "
                  f"1..{max_order} trained on {len(train_ids):,} characters ...")
    report = evaluation.evaluate(checkpoint.load_params(ckpt), ckpt.model, ckpt.vocab, train_ids, ids,
                                 batch_size=text_info["batch_size"], seq_length=text_info["seq_length"],
                                 max_order=max_order)
    report = dataclasses.replace(report, text=text_info, checkpoint={
        "path": str(checkpoint.resolve(checkpoint_path)), "step": ckpt.state.get("step")})
    d = report.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=1, ensure_ascii=False))
    else:
        results_console(120).print(rendered(d))
    if html_path is not None:
        from .. import html

        write_page(html_path, html.evaluation_page(d))
    # The run's test loss, for `charrnn report`: only the whole test split of a run directory counts.
    whole = "truncated_from" not in text_info and not text_info["skipped_chars"]
    if Path(checkpoint_path).is_dir() and text_path is None and whole:
        from ..files import write_atomic

        where = Path(checkpoint_path) / evaluation.RUN_FILE
        write_atomic(where, (json.dumps(d, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
        if not quiet:
            err.print(f"Test loss kept in {escape(str(where))}")


def _text_ids(ckpt, text_path, max_chars) -> tuple:
    """(ids (N,) of the text to evaluate, its "text" entry of the report, warnings): TEXT or the run's test split,
    the characters the model does not know skipped (at least 2 it knows, or EvaluationError)."""
    from .. import runs
    from ..evaluation import EvaluationError
    from ..inspection import encode_known, known_text

    text, source = runs.text_to_read(ckpt, text_path, max_chars=max_chars, split="test")
    try:
        kept, _, skipped = known_text(ckpt.vocab, text)
    except ValueError as e:
        raise EvaluationError(f"{source['path']}: {e}; give a text in the model's alphabet") from None
    warnings = [source.pop("warning")] if "warning" in source else []
    if skipped:
        warnings.append(_skipped_warning(skipped))
    ids = encode_known(ckpt.vocab, kept)
    # How the network reads it: as the run's validation did (an old checkpoint without them: its settings).
    reading = {"batch_size": int(ckpt.state.get("batch_size", ckpt.train.batch_size)),
               "seq_length": int(ckpt.state.get("seq_length", ckpt.train.seq_length))}
    return ids, {**source, "chars": len(ids), "skipped_chars": len(text) - len(kept), **reading}, warnings


def _skipped_warning(skipped: dict) -> str:
    count = sum(skipped.values())
    shown = ", ".join(repr(c) for c in list(skipped)[:10]) + (" ..." if len(skipped) > 10 else "")
    return f"skipped {count:,} character(s) the model does not know: {shown}"


# --- the terminal report --------------------------------------------------------------------------------------------


def _loss(x) -> tuple[str, str]:
    return ("—", "—") if x["nats"] is None else (f"{x['nats']:.4f}", f"{x['bpc']:.3f}")


def _percent(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _table(*columns: str):
    """A table whose first column is left-aligned and the others right-aligned."""
    from rich.table import Table

    table = Table(show_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def rendered(d: dict):
    """The report (`EvaluationReport.to_dict()`) as rich tables: loss, by class, n-grams, distance, errors. Each
    title is a line of its own, so a narrow table does not wrap it."""
    from rich.console import Group
    from rich.text import Text

    ng, lr, e = d["ngram"], d["long_range"], d["errors"]
    text, ckpt = d.get("text") or {}, d.get("checkpoint") or {}
    parts = [Text.assemble((str(text.get("source", "the text")), "bold"), f": {d['characters']:,} predictions",
                           f"; checkpoint {ckpt['path']} at step {ckpt['step']:,}" if ckpt.get("step") is not None
                           else "")]
    loss = _table("model", "nats", "bpc")
    loss.add_row("network", *_loss(d["loss"]))
    loss.add_row(f"best n-gram (n = {ng['best_n']})", *_loss(ng["best"]))
    loss.add_row("margin (n-gram − network)", *("—" if v is None else f"{v:+.4f}"
                                                 for v in (ng["margin"]["nats"], ng["margin"]["bpc"])))
    classes = _table("class", "count", "network nats", "bpc", f"{ng['best_n']}-gram nats", "bpc")
    for row in d["by_class"]:
        classes.add_row(row["class"], f"{row['count']:,}", *_loss(row["network"]), *_loss(row["ngram"]))
    orders = _table("n", "nats", "bpc", "")
    for row in ng["table"]:
        orders.add_row(str(row["n"]), *_loss(row), Text("best", style="green") if row["n"] == ng["best_n"] else "")
    distance = _table("distance", "closers", "network", f"{lr['ngram_n']}-gram")
    for b in lr["buckets"]:
        distance.add_row(b["distance"], f"{b['count']:,}", _percent(b["network_accuracy"]),
                         _percent(b["ngram_accuracy"]))
    errors = _table("category", "errors", "share")
    for row in e["breakdown"]:
        errors.add_row(row["category"], f"{row['count']:,}", _percent(row["fraction"]))
    sections = [
        ("loss per character", loss),
        ("loss by character class", classes),
        (f"n-gram models ({ng['smoothing']}) trained on {ng['train_characters']:,} characters", orders),
        (f"closing brackets and quotes: accuracy (p ≥ {lr['threshold']}) by distance to the opener", distance),
        (f"the network's errors (p < {e['threshold']}): {e['count']:,} of {e['characters']:,} predictions "
         f"({_percent(e['fraction'])}), each in the first category it fits", errors),
    ]
    for title, table in sections:
        parts += [Text(""), Text(title, style="bold"), table]
    return Group(*parts)
