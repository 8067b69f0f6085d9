"""Writing files so that a crash never leaves a torn one: every file charrnn writes goes through here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def write_atomic(path: Union[str, Path], data: bytes) -> Path:
    """Writes `data` to `path` through a temporary file in the same directory (``.NAME.*.tmp``): write, fsync,
    rename, fsync the directory. A crash at any moment leaves either the old file or the new one at `path`, never
    a torn one; a failed write removes its temporary file and raises the OSError. Creates missing parent
    directories. The file's permissions follow the user's umask. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    sync_directory(path.parent)
    return path


def sync_directory(directory: Union[str, Path]) -> None:
    """fsyncs `directory`, so that a rename into it survives a power cut."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def stale_temporaries(directory: Union[str, Path], name: str) -> list[Path]:
    """The temporary files that `write_atomic` of ``directory/name`` leaves behind when its process is killed
    mid-write."""
    return sorted(Path(directory).glob(f".{name}.*.tmp"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
