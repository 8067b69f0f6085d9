"""Data-parallel training over many devices and many processes, with JAX's own machinery.

One process, many devices: training builds a one-axis `jax.sharding.Mesh` (axis ``"data"``) over the devices
and shards the B streams across it with ``NamedSharding(mesh, P("data"))``: the token windows and the carried
hidden state are split by rows, the parameters and optimizer state are replicated (``P()``). The train step
stays one jitted program, in which each device computes the gradients of its own rows (`jax.shard_map`) and
one all-reduce (``pmean``) averages them (the loss is the mean over the whole global batch; see
`charrnn.train`). Nothing here communicates by itself. On a CPU the `charrnn` command makes one device per
core (`charrnn.launch`); a run not told how many devices to use takes as many as split its batch evenly.

Many processes (hosts): `initialize` calls `jax.distributed.initialize` (on CPU with gloo collectives) before
JAX touches a device. The mesh then spans every process's devices, ordered by process, so process p's devices
hold rows ``[p * B / P, (p + 1) * B / P)`` of every batch, and each process reads and feeds only those rows
(`jax.make_array_from_process_local_data`). Arrays that leave the devices for a checkpoint are gathered to every
host (`jax.experimental.multihost_utils.process_allgather`); only process 0 writes files and prints.

`Placement` bundles the mesh with the helpers the training loop needs.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import socket
import sys
import threading
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import data
from .config import ConfigError, ModelConfig, TrainConfig

AXIS = "data"


def parse_coordinator(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) -> (host, port). Raises ValueError with what is wrong."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):([0-9]{1,5})", value.strip())
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 10.0.0.1:1234, port 1-65535)")
    return match.group(1), int(match.group(2))


JOIN_TIMEOUT_S = 300.0  # how long processes wait for each other to join a run (hosts start at different times)
_GRACE_S = 30  # JAX's own deadline is set this much later than ours: it aborts the process when it passes


def initialize(coordinator: Optional[str], num_processes: Optional[int], process_id: Optional[int],
               timeout_s: float = JOIN_TIMEOUT_S, on_timeout: Optional[Callable[[str], None]] = None) -> None:
    """Joins this process to a multi-process run: `jax.distributed.initialize` with these arguments (None lets
    JAX detect them on a TPU pod, under Slurm or Open MPI). Must run before anything uses a JAX device.

    JAX does not report a failure to join as an exception: when its deadline passes it aborts the process with a
    stack trace, and a coordinator port already in use crashes it. So the common mistakes are checked first, in
    Python: process 0 checks that it can listen on the port; the others wait (up to `timeout_s`) until something
    listens at the coordinator's address. If the processes still have not all met after `timeout_s` seconds in
    all, `on_timeout(message)` is called from a watchdog thread (default: print ``error: message`` on stderr and
    exit with status 1 at once, as the blocked call cannot be interrupted).

    Raises:
      ConfigError: a bad combination of arguments, an unresolvable host, a port in use, no coordinator reachable
        within `timeout_s`, or JAX refused the arguments.
    """
    check_processes(num_processes, process_id)
    deadline = time.monotonic() + timeout_s
    where = coordinator or "(auto-detected)"
    if coordinator is not None:
        host, port = parse_coordinator(coordinator)
        host = host.strip("[]")
        _resolve(host, port, coordinator)
        if process_id == 0:
            _check_port_free(port)
        elif process_id is not None:
            _wait_for_listener(host, port, coordinator, deadline, timeout_s)
    # CPU processes exchange gradients through gloo over TCP (the default in recent JAX; set explicitly so that
    # a CPU run never depends on it). GPUs use NCCL and TPUs their interconnect, whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    left = max(1.0, deadline - time.monotonic())
    if process_id == 0:
        who = f"not all {num_processes} processes joined the run at {where}"
    else:
        who = f"the run at {where} did not start (not every process joined it)"
    message = (f"{who} within {_seconds(timeout_s)}; start every process with the same options and its own "
               f"--process-id, or give them more time with --join-timeout")
    watchdog = threading.Timer(left, on_timeout or _exit_with, args=(message,))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=math.ceil(left) + _GRACE_S)
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("charrnn: all processes started")  # all are here, and connected
    except (RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if coordinator is None:
            raise ConfigError(f"--coordinator auto: JAX found no TPU pod, Slurm or Open MPI job to join ({first}); "
                              f"elsewhere give --coordinator HOST:PORT, --num-processes and --process-id") from None
        raise ConfigError(f"could not join the distributed run at {where}: {first}") from None
    finally:
        watchdog.cancel()


def _seconds(s: float) -> str:
    return f"{s:g} s"


def _exit_with(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(1)


def _resolve(host: str, port: int, coordinator: str) -> None:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ConfigError(f"--coordinator {coordinator}: cannot resolve {host!r} ({e.strerror or e}); give process "
                          f"0's host name or IP address") from None


def _check_port_free(port: int) -> None:
    """Raises ConfigError if nothing can listen on `port` here (JAX's coordinator binds every address, [::])."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                # As gRPC does: a port left in TIME_WAIT by an earlier run is free; one with a listener is not.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port))
            return
        except OSError as e:
            if e.errno == errno.EAFNOSUPPORT or (family == socket.AF_INET6 and e.errno == errno.EADDRNOTAVAIL):
                continue  # no IPv6 here: try IPv4
            raise ConfigError(f"process 0 cannot listen on port {port} ({e.strerror or e}); another program (or an "
                              f"earlier run) holds it: choose another port in --coordinator for every process")
    raise ConfigError(f"process 0 cannot listen on port {port}: no IPv4 or IPv6 here")


def _wait_for_listener(host: str, port: int, coordinator: str, deadline: float, timeout_s: float) -> None:
    """Returns once something accepts TCP connections at host:port; raises ConfigError at `deadline`. Process 0
    may start later than the others, so a refused connection is retried."""
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
                return
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
        if time.monotonic() + 0.5 >= deadline:
            raise ConfigError(f"could not reach the coordinator at {coordinator} within {_seconds(timeout_s)} "
                              f"({reason}); start process 0 (--process-id 0) there with the same --coordinator, "
                              f"check the address, port and firewall, or give it more time with --join-timeout")
        time.sleep(0.5)


def check_processes(num_processes: Optional[int], process_id: Optional[int]) -> None:
    """Raises ConfigError unless 1 <= num_processes and 0 <= process_id < num_processes (either may be None)."""
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num-processes must be at least 1, got {num_processes}")
    if process_id is not None and not 0 <= process_id < (num_processes or math.inf):
        raise ConfigError(f"--process-id must be in [0, {num_processes - 1}] for --num-processes {num_processes}, "
                          f"got {process_id}" if num_processes else f"--process-id must be >= 0, got {process_id}")


@dataclasses.dataclass(frozen=True)
class Placement:
    """The devices a run trains on and how its arrays are laid out on them. `asked`: whether the number of
    devices was asked for (--devices), or may be narrowed to fit the batch (`charrnn.distributed.fit_placement`)."""

    mesh: Mesh
    asked: bool = True

    @property
    def devices(self) -> int:
        return self.mesh.devices.size

    @property
    def kind(self) -> str:
        """The devices' platform in capitals: CPU, GPU, TPU."""
        return self.mesh.devices.flat[0].platform.upper()

    @property
    def num_processes(self) -> int:
        return jax.process_count()

    @property
    def process_index(self) -> int:
        return jax.process_index()

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes checkpoints and records and reports progress."""
        return self.process_index == 0

    @property
    def batch(self) -> NamedSharding:
        """Leading (batch) axis split across the devices."""
        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a (batch_size, ...) batch that this process's devices hold (and that it feeds)."""
        per = batch_size // self.num_processes
        return slice(self.process_index * per, (self.process_index + 1) * per)

    def put_batch(self, local: np.ndarray, batch_size: int) -> jax.Array:
        """The global (batch_size, ...) array whose rows `local_rows(batch_size)` are `local` (host data)."""
        if self.num_processes == 1:  # the same, in half the time (it is paid every step)
            return jax.device_put(local, self.batch)
        return jax.make_array_from_process_local_data(self.batch, np.ascontiguousarray(local),
                                                      (batch_size, *local.shape[1:]))

    def put(self, tree: Any, sharding: Any) -> Any:
        """Host (or single-device) arrays -> global arrays with `sharding` (a sharding or a pytree prefix of
        shardings). Every process passes the same full values; each places the pieces its devices hold."""

        def place(x, s):
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, s, lambda index: host[index])

        return jax.tree.map(place, tree, _broadcast(sharding, tree))

    def to_host(self, tree: Any) -> Any:
        """Every leaf as a full NumPy array on this host: replicated arrays are read locally; sharded ones are
        gathered (with a collective, so every process must call this at the same point)."""

        def fetch(x):
            if not isinstance(x, jax.Array):
                return np.asarray(x)
            if x.is_fully_addressable:
                return np.asarray(x)
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))

        return jax.tree.map(fetch, tree)

    def any(self, flags: Sequence[bool]) -> list[bool]:
        """Each flag OR-ed over all processes (a collective when there are several), so that decisions such as
        stopping are taken by every process at the same step."""
        if self.num_processes == 1:
            return [bool(f) for f in flags]
        from jax.experimental import multihost_utils

        gathered = np.asarray(multihost_utils.process_allgather(np.asarray(flags, np.int32)))
        return [bool(v) for v in gathered.reshape(self.num_processes, -1).any(axis=0)]

    def smallest(self, value: float) -> float:
        """The smallest of every process's `value` (a collective when there are several), so that a decision
        taken from a measurement, such as how many steps the time left holds, is the same in all of them."""
        if self.num_processes == 1:
            return float(value)
        from jax.experimental import multihost_utils

        return float(np.asarray(multihost_utils.process_allgather(np.asarray([value], np.float64))).min())

    def first_different(self, value: str) -> Optional[int]:
        """The index of the first process whose `value` differs from process 0's, or None (a collective with
        several: its SHA-256 is gathered from every process)."""
        if self.num_processes == 1:
            return None
        from jax.experimental import multihost_utils

        digest = np.frombuffer(hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest(), np.uint8)
        gathered = np.asarray(multihost_utils.process_allgather(digest)).reshape(self.num_processes, -1)
        differs = np.flatnonzero((gathered != gathered[0]).any(axis=1))
        return int(differs[0]) if len(differs) else None

    def first_failed(self, failed: bool) -> Optional[int]:
        """The index of the first process that reports `failed`, or None (a collective with several)."""
        if self.num_processes == 1:
            return 0 if failed else None
        from jax.experimental import multihost_utils

        gathered = np.asarray(multihost_utils.process_allgather(np.asarray([failed], np.int32))).reshape(-1)
        hits = np.flatnonzero(gathered)
        return int(hits[0]) if len(hits) else None


def _broadcast(prefix: Any, tree: Any) -> Any:
    """A pytree prefix of shardings expanded to the full structure of `tree`."""
    if isinstance(prefix, jax.sharding.Sharding):
        return jax.tree.map(lambda _: prefix, tree)
    return jax.tree.map(lambda p, sub: jax.tree.map(lambda _: p, sub), prefix, tree,
                        is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))


def placement(devices: Optional[int] = None) -> Placement:
    """The placement over `devices` devices in all (None: every device JAX sees, in every process).

    With several processes each contributes ``devices / num_processes`` of its own devices, and the mesh lists
    them process by process.

    Raises:
      ConfigError: `devices` is not positive, more than there are, or does not split over the processes.
    """
    everything = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    processes = jax.process_count()
    local = len(jax.local_devices())
    kind = everything[0].platform
    asked = devices is not None
    if devices is None:
        devices = len(everything)
    if devices < 1:
        raise ConfigError(f"--devices must be at least 1, got {devices}")
    if devices > len(everything):
        where = f" in {processes} processes" if processes > 1 else ""
        hint = (f" (on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={devices} in the environment "
                f"splits it into {devices} devices)" if kind == "cpu" and processes == 1 else "")
        raise ConfigError(f"--devices {devices}: only {len(everything)} {kind} device"
                          f"{'s are' if len(everything) > 1 else ' is'} visible{where}; use --devices "
                          f"{len(everything)} or fewer{hint}")
    if devices % processes:
        raise ConfigError(f"--devices {devices} does not split evenly over {processes} processes; use a multiple "
                          f"of {processes}")
    per_process = devices // processes
    if per_process > local:
        raise ConfigError(f"--devices {devices} needs {per_process} devices in each process, this one has {local}")
    chosen = [d for p in range(processes) for d in [d for d in everything if d.process_index == p][:per_process]]
    return Placement(Mesh(np.array(chosen), (AXIS,)), asked=asked)


# --- fitting a run to the devices ----------------------------------------------------------------------------


def fit_placement(given: Placement, num_train: int, config: TrainConfig) -> Placement:
    """`given`, or, when its number of devices was not asked for and there is one process, the most of its
    devices that split the batch evenly (the batch as a tiny corpus shrinks it): 2 for a batch of 50 on 4
    devices, 1 for a batch of 7. On a CPU the `charrnn` command makes one device per core
    (`charrnn.launch`), so a batch that does not split over the cores still trains, on fewer of them."""
    if given.asked or given.num_processes > 1 or given.devices == 1:
        return given
    batch_size = data.fit_window(num_train, config.batch_size, config.window)[0]
    devices = max(d for d in range(1, given.devices + 1) if batch_size % d == 0)
    return given if devices == given.devices else placement(devices)


def check_same_run(placement: Placement, corpus: data.Corpus, model_config: ModelConfig,
                   config: TrainConfig, resume=None) -> None:
    """With several processes: every one must train on the same text (the file's SHA-256, not its path), with the
    same settings, from the same checkpoint step, or the gradients they average mean nothing. A collective.

    Raises:
      ConfigError: naming the first process that differs from process 0.
    """
    if placement.num_processes == 1:
        return
    agreed = json.dumps([corpus.info.sha256, len(corpus.ids), corpus.vocab.to_json(), model_config.to_dict(),
                         config.to_dict(), None if resume is None else int(resume.state["step"])], sort_keys=True)
    other = placement.first_different(agreed)
    if other is not None:
        raise ConfigError(f"process {other} does not train on what process 0 does (the corpus's content, the options "
                          f"or the checkpoint it resumes differ); give every process the same corpus, options and "
                          f"--resume")
