"""The `charrnn` command group: every command registers on `main`; one place turns errors into one line."""

from __future__ import annotations

import sys

import click

from ._common import EXAMPLES, abort, user_errors


class _Group(click.Group):
    """click.Group whose usage errors, and every library error the user can fix (`user_errors`), end as one
    line on stderr."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except user_errors() as e:
            abort(str(e))

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
