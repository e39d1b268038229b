"""Files that appear complete or not at all: atomic writes and durable renames."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

__all__ = ["fsync_dir", "lock_within", "write_file"]

#: The first and the longest pause between tries of :func:`lock_within` (s).
_POLL_FIRST, _POLL_MAX = 0.001, 0.01


def lock_within(fd: int, timeout: float) -> bool:
    """Takes ``flock(LOCK_EX)`` on ``fd``, trying for at most ``timeout`` seconds.

    Polls without blocking (a blocking ``flock`` cannot be given a time limit
    or interrupted by a stop request), pausing 1 ms at first, then up to 10 ms.

    Returns:
        Whether the lock is held.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    pause = _POLL_FIRST
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)


def write_file(
    path: Path, data: bytes | bytearray | memoryview, mode: int, *, overwrite: bool
) -> Path:
    """Writes ``data`` to ``path`` with ``mode``: complete or not at all.

    The data goes to a temporary file beside ``path`` (created with ``mode``),
    is fsynced, then linked to ``path`` (which fails if it exists) or, with
    ``overwrite``, renamed over it; the directory is fsynced last.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile
            os.unlink(tmp)
        fsync_dir(directory)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fsync_dir(directory: Path) -> None:
    """Makes a new or renamed entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
