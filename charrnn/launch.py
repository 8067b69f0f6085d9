"""What the `charrnn` command sets up for speed, and the one call that does the same for a Python user.

The command (`charrnn.cli.run`) first re-runs itself once with two settings in its environment, because both
are read only when a program starts (glibc's) or when JAX starts (XLA's):

- Huge pages for XLA's per-step buffers (`charrnn.memory.huge_pages_environment`): the commands that run a
  model over many characters (`charrnn.cli.MODEL_COMMANDS`: train, sample, inspect-cells, explore, evaluate).
- One XLA CPU device per core, for `train` (`cpu_devices_environment`). XLA:CPU runs the steps of a loop one
  after another on one core, and a recurrent layer is a loop, so with one device the other cores sit idle in
  it. With a device per core the batch is split between them (`charrnn.distributed.fit_placement`), and each
  device runs the loops of its own rows at the same time as the others (benchmarks/README.md has the
  measurements). The devices are the same cores as before: nothing else changes, and on a machine with a GPU
  the GPU is still the device JAX uses.

Then, in the re-run process, `configure_process` makes glibc keep freed memory for reuse
(`charrnn.memory.keep_freed_memory`). Importing charrnn changes none of this: a Python user opts in by calling
`configure_process()` (before importing JAX, to get the devices too).

Nothing here imports JAX.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

from . import memory

CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"
# Each device keeps its own copy of the parameters and optimizer state. A guard, not a measured optimum (the gain
# has been measured on 2 cores only: benchmarks/README.md).
MAX_CPU_DEVICES = 8


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_devices_environment(environ: Mapping[str, str], cores: int) -> Optional[dict]:
    """`environ` with XLA_FLAGS asking for one CPU device per core (at most `MAX_CPU_DEVICES`), or None when
    there is nothing to do: one core, XLA_FLAGS already sets a device count (the user's stands), or
    CHARRNN_ONE_CPU_DEVICE=1."""
    flags = environ.get("XLA_FLAGS", "")
    if cores < 2 or CPU_DEVICES_FLAG in flags or environ.get("CHARRNN_ONE_CPU_DEVICE") == "1":
        return None
    flag = f"{CPU_DEVICES_FLAG}={min(cores, MAX_CPU_DEVICES)}"
    return {**environ, "XLA_FLAGS": f"{flags} {flag}" if flags.strip() else flag}


def command_environment(command: str, environ: Mapping[str, str], cores: int,
                        args: Sequence[str] = ()) -> Optional[dict]:
    """The environment `command` (train, sample, inspect-cells) with its arguments `args` should run in, or
    None if it is `environ`. A train that joins other processes (--coordinator) keeps one device per process,
    as the other processes expect."""
    changed = memory.huge_pages_environment(environ)
    several = any(a == "--coordinator" or a.startswith("--coordinator=") for a in args)
    if command == "train" and not several:
        changed = cpu_devices_environment(changed or environ, cores) or changed
    return changed


def configure_process(cpu_devices: bool = True) -> dict[str, bool]:
    """Applies to this process what the `charrnn` command applies to itself, as far as a running process can:

    - glibc keeps freed blocks of up to 64 MB for reuse (`charrnn.memory.keep_freed_memory`; XLA's per-step
      buffers then cost no page faults); CHARRNN_DEFAULT_MALLOC=1 leaves the allocator alone.
    - With `cpu_devices`, and only if JAX has not started yet: one XLA CPU device per core (up to
      `MAX_CPU_DEVICES`), through XLA_FLAGS in ``os.environ`` (`cpu_devices_environment` says when it is left
      alone). `charrnn.train.train` then splits the batch over them.

    Huge pages need a fresh process (glibc reads that setting at start): run Python with
    ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` for those. Returns what was applied:
    ``{"keep_freed_memory": bool, "cpu_devices": bool}``.
    """
    import sys

    devices = None
    if cpu_devices and "jax" not in sys.modules:
        devices = cpu_devices_environment(os.environ, usable_cores())
        if devices is not None:
            os.environ["XLA_FLAGS"] = devices["XLA_FLAGS"]
    return {"keep_freed_memory": memory.keep_freed_memory(), "cpu_devices": devices is not None}


def reexec(argv: Sequence[str], environ: Optional[Mapping[str, str]]) -> None:
    """Replaces this process by `argv` (e.g. ``[sys.executable, "-m", "charrnn", ...]``) run with `environ`;
    returns (and nothing changes) when `environ` is None or the exec fails. Call it first thing, before any
    work worth keeping: the process is replaced."""
    if environ is None or not argv or not argv[0]:
        return
    try:
        os.execve(argv[0], list(argv), dict(environ))
    except OSError:
        return
