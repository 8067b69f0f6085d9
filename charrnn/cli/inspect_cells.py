"""`charrnn inspect-cells`: a checkpoint and a text -> `charrnn.inspection.inspect` -> a table, JSON or a page."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from ._group import main
from ._common import err, results_console, write_page


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
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (schema in docs/json.md).")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None, help="Also write a self-contained HTML report to this file.")
def inspect_cells(checkpoint_path, text_path, feature_specs, top, max_chars, ablation_chars, gradients, as_json, html_path):
    """Find the hidden units of a CHECKPOINT that track something nameable in TEXT (default: the run's
    validation split): quotes, brackets, line position, comments, ... Each finding comes with its score,
    its support, and what clamping the unit does to the loss."""
    from .. import checkpoint, features as feats, inspection, runs
    from ..config import ConfigError
    from ..text import CorpusError

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
    text, source = runs.text_to_read(ckpt, text_path, max_chars=max_chars)
    if "warning" in source:
        err.print(f"[yellow]warning:[/] {escape(source['warning'])}")
    features = feats.builtin_features(text) + [feats.regex_feature(n, r, text) for n, r in custom]
    params = checkpoint.load_params(ckpt)
    if not as_json:
        err.print(f"Inspecting {ckpt.model.num_layers}×{ckpt.model.hidden_size} {ckpt.model.cell.upper()} on "
                  f"{len(text):,} characters of {escape(source['source'])} ...")
    try:
        report = inspection.inspect(params, ckpt.model, ckpt.vocab, text, features,
                                    checkpoint=str(checkpoint.resolve(checkpoint_path)), source=source, top=top,
                                    ablation_chars=ablation_chars, gradients=gradients)
    except ValueError as e:
        raise CorpusError(f"{source['path']}: {e}") from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    else:
        from .. import render

        results_console(160).print(render.inspection(report))
    if html_path is not None:
        from .. import html

        write_page(html_path, html.inspection_page(report))
