"""The `charrnn` command line: parse options, call the library, render with rich. One module per command.

Results go to stdout; progress and messages go to stderr (`err`). Heavy imports (JAX) happen inside the
commands so that `charrnn --help` is instant. Every error the user can fix leaves through one place, `_Group`:
one line, exit code 1, no traceback.
"""

from __future__ import annotations

import os
import sys

import click

from .. import launch
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


# The commands that run compiled models over many characters: only they gain from the set-up of `charrnn.launch`.
MODEL_COMMANDS = frozenset({"train", "sample", "inspect-cells", "explore", "evaluate"})


def run() -> None:
    """The `charrnn` command (and ``python -m charrnn``): `main`, in the environment `charrnn.launch` sets up.

    The model commands re-run themselves once, before anything else, with glibc's huge-page setting in their
    environment, and `train` with one XLA CPU device per core (`charrnn.launch.command_environment`); then
    `charrnn.launch.configure_process` sets the allocator. Not the other commands, nor help requests, which gain
    nothing and should stay quick.
    """
    args = sys.argv[1:]
    if args and args[0] in MODEL_COMMANDS and not {"-h", "--help"} & set(args):
        environ = launch.command_environment(args[0], os.environ, launch.usable_cores(), args[1:])
        launch.reexec([sys.executable, "-m", "charrnn", *args], environ)
        launch.configure_process(cpu_devices=False)  # the devices were set by the re-run's environment, if at all
    main(prog_name="charrnn")


from . import evaluate, explore, info, inspect_cells, sample, train  # noqa: E402  (each registers its command on `main`)
