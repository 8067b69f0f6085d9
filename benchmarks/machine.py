"""Measuring on a shared CPU: how busy the machine is with other people's work, waiting for a quiet moment,
timing a PyTorch child process, and the float32 matmul peak.

Linux only (reads /proc/stat). "Foreign" load is the CPU time the whole machine spent busy minus what this
process and its reaped children used, in cores: 0.0 means we had the machine to ourselves, 1.0 means another
program kept one core busy throughout. On a 2-core machine shared with other people's test runs every sample
is taken in a quiet moment and its foreign load is reported next to it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

_HZ = os.sysconf("SC_CLK_TCK")
TINYSHAKESPEARE = "/work/shared/corpora/tinyshakespeare.txt"
TORCH_PYTHON = "/work/torchvenv/bin/python"
TORCH_REFERENCE = "/work/shared/bench/torch_reference.py"


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _HZ  # user nice system idle iowait irq softirq steal (guest is in user)


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Load:
    """Foreign CPU load over a span, in cores: ``with Load() as load: ...`` then ``load.cores``."""

    def __enter__(self):
        self._t, self._busy, self._own = time.perf_counter(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc):
        wall = max(time.perf_counter() - self._t, 1e-9)
        foreign = (_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        self.cores = max(0.0, foreign / wall)
        return False


def wait_for_quiet(max_cores: float, window_s: float = 1.0, timeout_s: float = 300.0) -> float:
    """Sleeps until other programs use under `max_cores` over `window_s`, or `timeout_s` passes.

    Returns the foreign load of the last window (in cores).
    """
    deadline = time.perf_counter() + timeout_s
    while True:
        with Load() as load:
            time.sleep(window_s)
        if load.cores < max_cores or time.perf_counter() > deadline:
            return load.cores


def quiet_sample(measure, max_cores: float, retries: int = 5, timeout_s: float = 300.0):
    """Runs ``measure()`` in a quiet moment; repeats it (up to `retries` times) while others were busy during it.

    Returns (the result of the least disturbed attempt, its foreign load in cores).
    """
    best = None
    for _ in range(retries + 1):
        wait_for_quiet(max_cores, timeout_s=timeout_s)
        with Load() as load:
            result = measure()
        if best is None or load.cores < best[1]:
            best = (result, load.cores)
        if load.cores < max_cores:
            break
    return best


def add_quiet_arguments(parser) -> None:
    """The command-line options of `quiet`: --max-load, --max-wait, --retries."""
    parser.add_argument("--max-load", type=float, default=0.15,
                        help="wait until other programs use less than this many cores before each sample")
    parser.add_argument("--max-wait", type=float, default=300.0,
                        help="seconds to wait for such a quiet moment before measuring anyway")
    parser.add_argument("--retries", type=int, default=2,
                        help="times to repeat a sample that other programs disturbed (the least disturbed counts)")


def quiet(args, measure):
    """`quiet_sample` with the options of `add_quiet_arguments`."""
    return quiet_sample(measure, args.max_load, retries=args.retries, timeout_s=args.max_wait)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB: VmHWM, the high-water mark of its own memory map.

    Not ru_maxrss: a process started by fork + exec inherits the parent's maximum RSS in it (Linux records the
    old memory map's high-water mark at exec), so a child of a big process would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Runs a script as __main__ with its own argv, then reports the process's VmHWM on stderr (see peak_rss_mb).
_CHILD_WRAPPER = """
import runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("\\nCHILD_VMHWM_KB=" + line.split()[1], file=sys.stderr, flush=True)
"""


def reexec_like_the_command(script: str, command: str) -> None:
    """Re-runs this benchmark script once in the environment the `charrnn` `command` gives itself
    (`charrnn.launch.command_environment`: huge pages; for train, one CPU device per core), so that it
    measures what users get. CHARRNN_DEFAULT_MALLOC=1 measures without huge pages, CHARRNN_ONE_CPU_DEVICE=1
    with one device."""
    from charrnn import launch

    environ = launch.command_environment(command, os.environ, launch.usable_cores(), sys.argv[1:])
    launch.reexec([sys.executable, script, *sys.argv[1:]], environ)


def child_environment(same_malloc: bool) -> dict:
    """The environment of a PyTorch child: as PyTorch users run it (without the glibc setting that charrnn
    gives itself), or with `same_malloc` the same as this process."""
    from charrnn import memory

    env = dict(os.environ)
    if not same_malloc and memory.HUGE_PAGES_TUNABLE in env.get("GLIBC_TUNABLES", ""):
        rest = [t for t in env["GLIBC_TUNABLES"].split(":") if t and t != memory.HUGE_PAGES_TUNABLE]
        env.pop("GLIBC_TUNABLES")
        if rest:
            env["GLIBC_TUNABLES"] = ":".join(rest)
    return env


def add_torch_malloc_argument(parser) -> None:
    parser.add_argument("--torch-huge-pages", action="store_true",
                        help="run PyTorch with the same glibc huge-page setting charrnn gives itself")


def run_child(argv: list[str], env: Optional[dict] = None) -> tuple[dict, float]:
    """Runs ``python script args...`` (a program that prints one JSON line last) in `env` (default: this
    process's); returns (that JSON, the child's peak RSS in MiB).

    The script runs under a small wrapper that reads the child's own VmHWM as it finishes, so only the child's
    memory is counted (its ru_maxrss from wait4 would include this process's peak; see `peak_rss_mb`).
    """
    python, script, *args = argv
    proc = subprocess.run([python, "-c", _CHILD_WRAPPER, script, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    kb = [line.split("=", 1)[1] for line in proc.stderr.splitlines() if line.startswith("CHILD_VMHWM_KB=")]
    return json.loads(proc.stdout.strip().splitlines()[-1]), int(kb[-1]) / 1024


def matmul_peak_gflops(shapes: list[tuple[int, int, int]], repeats: int = 5) -> dict:
    """The float32 matmul throughput XLA reaches on this machine, per (m, k, n) shape, in GFLOP/s.

    Each shape is timed as a jitted loop of 10 products (dispatch costs nothing), the best of `repeats`.
    """
    import jax
    import jax.numpy as jnp

    out = {}
    for m, k, n in shapes:
        a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32) / k**0.5
        reps = 10

        @jax.jit
        def loop(a, b):
            # The lhs changes with i, so XLA cannot hoist the product out of the loop.
            body = lambda i, acc: acc + (a * (1.0 + 1e-7 * i.astype(a.dtype))) @ b
            return jax.lax.fori_loop(0, reps, body, jnp.zeros((m, n), a.dtype))

        jax.block_until_ready(loop(a, b))
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(loop(a, b))
            best = min(best, time.perf_counter() - t)
        out[f"{m}x{k}x{n}"] = round(2 * m * k * n * reps / best / 1e9, 1)
    return out


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it ("unknown" where it does not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def describe() -> dict:
    """The machine and versions, for the record."""
    import jax

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "xla_flags": os.environ.get("XLA_FLAGS", "")}


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


def emit(result: dict) -> None:
    """Prints the one JSON line a benchmark reports."""
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
