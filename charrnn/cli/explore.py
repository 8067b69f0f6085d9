"""`charrnn explore`: a checkpoint and a text -> `charrnn.explore.explore` -> one offline page."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from ._group import main
from ._common import err


@main.command(epilog="""
\b
Examples:
  charrnn explore runs/synthetic_prose                        # the run's validation text -> explore.html
  charrnn explore runs/c-code kernel.c --out kernel.html --feature 'in_parens=\\([^)]*\\)'
""")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("text_path", metavar="[TEXT]", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("explore.html"), show_default=True, help="The page to write.")
@click.option("--feature", "feature_specs", multiple=True, metavar="NAME=REGEX", help="Add a feature: on inside every match of REGEX. Repeatable.")
@click.option("--max-chars", type=int, default=5_000, show_default=True, help="Record at most this many characters of TEXT (the page grows with it).")
@click.option("--top", type=int, default=3, show_default=True, help="Units ablated per feature.")
@click.option("--ablation-chars", type=int, default=None, help="Characters used to measure what clamping a unit costs (0: skip)  [default: --max-chars]")
@click.option("--quiet", "-q", is_flag=True, help="Print only the page's path.")
def explore(checkpoint_path, text_path, out, feature_specs, max_chars, top, ablation_chars, quiet):
    """Write one self-contained HTML page for exploring a CHECKPOINT's units on TEXT (default: the run's
    validation split): every unit of every layer and state colouring the text, the model's five likeliest next
    characters under the pointer, select-and-match as in LSTMVis, and features defined by a regular expression
    in the page. It works offline, from a file, and fetches nothing."""
    from .. import explore as exploring

    say = (lambda message: None) if quiet else (lambda message: err.print(escape(message)))
    done = exploring.explore(checkpoint_path, text_path, out, feature_specs=feature_specs, max_chars=max_chars,
                             top=top, ablation_chars=ablation_chars, progress=say)
    if not quiet:
        err.print(f"Page: {escape(str(done.path))} ({done.bytes / 1e6:.1f} MB, {done.chars:,} characters); open it "
                  f"in a browser")
    click.echo(str(done.path))
