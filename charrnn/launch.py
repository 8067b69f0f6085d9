"""What the `charrnn` command sets up before JAX starts: it re-runs itself once with these in its environment.

Both settings are read only when a program starts (glibc's) or when JAX starts (XLA's), hence the re-run.

- Huge pages for XLA's per-step buffers (`charrnn.memory.huge_pages_environment`): `train`, `sample` and
  `inspect-cells`.
- One XLA CPU device per core, for `train` (`cpu_devices_environment`). XLA:CPU runs the steps of a loop one
  after another on one core, and a recurrent layer is a loop: a 2x128 LSTM step spends two thirds of its
  time there, with the other core idle. With a device per core the batch is split between them
  (`charrnn.train.fit_placement`), and each device runs the loops of its own rows at the same time as the
  others (measured on 2 cores: 2x128 LSTM, batch 50, 32.1 -> 22.8 ms per step; 2x256, batch 32, 1.3x as
  fast, benchmarks/scaling.py). The devices are the same cores as before: nothing else changes, and on a
  machine with a GPU the GPU is still the device JAX uses.

Nothing here imports JAX.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

from . import memory

CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"
# Each device keeps its own copy of the parameters and optimizer state. A guard, not a measured optimum: the
# gain above was measured on 2 cores only.
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
