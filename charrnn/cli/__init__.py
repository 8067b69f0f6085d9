"""The `charrnn` command line: parse options, call the library, render with rich. One module per command.

Results go to stdout; progress and messages go to stderr (`err`). Heavy imports (JAX) happen inside the
commands so that `charrnn --help` is instant. Every error the user can fix leaves through one place, the group
of `_group.py`: one line, exit code 1, no traceback.
"""

from __future__ import annotations

import os
import sys

from .. import launch
from ._group import main


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
