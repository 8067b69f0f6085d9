"""`charrnn info` (one checkpoint) and `charrnn report` (runs side by side): read, summarise, render."""

from __future__ import annotations

from pathlib import Path

import click

from ._group import main
from ._common import results_console, write_page


@main.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON on stdout.")
def info(checkpoint_path, as_json):
    """Describe a CHECKPOINT (file or run directory): architecture, parameter count, vocabulary, training
    step, losses, corpus and format version."""
    from .. import report

    details = report.checkpoint_info(checkpoint_path)
    if as_json:
        import json

        click.echo(json.dumps(details, indent=1, ensure_ascii=False))
    else:
        from .. import render

        results_console(200).print(render.checkpoint_info(details))


@main.command("report")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None, help="Also write a self-contained HTML page with the loss curves to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as JSON on stdout.")
def report_command(run_dirs, html_path, as_json):
    """Summarise one or more training runs side by side: the settings that differ, best validation loss,
    throughput, and the loss curves (in the terminal, or as a page with --html)."""
    from .. import report

    summaries = [report.summarize(d) for d in run_dirs]
    differences = report.differences(summaries)
    if as_json:
        import json

        click.echo(json.dumps({"runs": [s.to_dict() for s in summaries], "differences": differences}, indent=1,
                              ensure_ascii=False))
    else:
        from .. import render

        results_console(120).print(render.report(summaries, differences))
    if html_path is not None:
        from .. import html

        write_page(html_path, html.runs_page(summaries, differences))
