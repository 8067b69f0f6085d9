"""How this process asks the C library for memory: settings that make XLA:CPU's large per-run buffers cheap.

XLA:CPU allocates the temporaries of each run of a compiled program (a train step) as one large block and
frees it afterwards. Where that block comes from decides how many pages the kernel must find and zero-fill
on every step, a noticeable share of a train step on a CPU (benchmarks/README.md). Two
remedies, both for glibc on Linux, both off with CHARRNN_DEFAULT_MALLOC=1:

- `keep_freed_memory` (the command calls it at start, through `charrnn.launch.configure_process`): blocks of up
  to 64 MB are kept and reused.
- `huge_pages_environment` (`charrnn train`, `sample`, `inspect-cells`, see `charrnn.launch`): larger
  blocks, which glibc always maps afresh, are asked for as transparent huge pages, 512 times fewer page
  faults. This glibc setting is read only when a program starts, so the command re-runs itself once with it
  in its environment.

Nothing here imports JAX: the command calls it before its own imports.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Mapping, Optional

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"  # glibc >= 2.35: malloc madvises its mmaps MADV_HUGEPAGE


def _default_malloc_wanted(environ: Mapping[str, str]) -> bool:
    return environ.get("CHARRNN_DEFAULT_MALLOC") == "1" or not sys.platform.startswith("linux")


def keep_freed_memory() -> bool:
    """Makes glibc keep freed memory of up to 64 MB blocks for reuse. Returns whether it could. The command calls it
    at start (`charrnn.launch.configure_process`), never an import.

    XLA:CPU allocates each run's temporaries as one block from a worker thread. glibc serves a block above its
    mmap threshold (at most 32 MB) with a fresh mmap every run, and the kernel zero-fills every page of it on
    first touch, thousands of page faults per train step. With mmap off and trimming only above 64 MB, such a
    block comes from the worker thread's own arena heap (glibc caps those heaps at 64 MB) and the next run
    reuses its pages. Larger blocks still fall back to mmap, which keeps the peak memory where it was (the
    command asks for huge pages for those: `huge_pages_environment`); forcing them into the main heap as well
    fragments it between steps and doubles the peak (benchmarks/README.md has the measurements).

    Two process-wide malloc settings change; they may change at any time, before or after JAX starts. The cost:
    freed memory of any size stays with the process until 64 MB of it is free at the top of a heap. Set
    CHARRNN_DEFAULT_MALLOC=1 to leave the allocator alone.
    """
    if _default_malloc_wanted(os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from glibc's malloc.h; mallopt returns 1 on success
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 64 << 20) == 1


def _glibc_version() -> tuple[int, ...]:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        return tuple(int(v) for v in version.split(".")[:2]) if name == "glibc" else ()
    except (AttributeError, ValueError, OSError):
        return ()


def _transparent_huge_pages_on_request(path: str = "/sys/kernel/mm/transparent_hugepage/enabled") -> bool:
    """Whether the kernel gives huge pages to memory that asks for them, and only then ("[madvise]").
    ("[always]": large mappings get them anyway; "[never]": asking is useless.)"""
    try:
        with open(path) as f:
            return "[madvise]" in f.read()
    except OSError:
        return False


def huge_pages_environment(environ: Mapping[str, str]) -> Optional[dict]:
    """`environ` with glibc's malloc asking for transparent huge pages, or None when there is nothing to gain:
    not glibc 2.35 or later, the kernel's setting makes asking pointless, the tunable is already given (by
    us or by the user: theirs stands), or CHARRNN_DEFAULT_MALLOC=1."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if (_default_malloc_wanted(environ) or "glibc.malloc.hugetlb" in tunables or _glibc_version() < (2, 35)
            or not _transparent_huge_pages_on_request()):
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE}
