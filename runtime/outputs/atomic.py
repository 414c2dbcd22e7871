"""Atomic output files: temp file + rename, umask-honouring modes, npz saving."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from human3r_edge.errors import Human3RError, msg


def _read_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is process-wide, not atomic)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


FILE_MODE = 0o666 & ~_read_umask()  # what open(path, "w") would create: output files honour the umask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file next to `path` for binary writing; on success it replaces `path` atomically.

    The file gets the mode a plain open() would give (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    named: dict[str, Any] = dict(arrays)
    with atomic_file(path) as f:
        np.savez(f, **named)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove a file can be written in it; a clear Human3RError otherwise."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise Human3RError(msg(f"output directory {p}", "not writable", f"{type(exc).__name__}: {exc.strerror}",
                               "a directory this user can create files in", "choose another --out")) from exc
    return p
