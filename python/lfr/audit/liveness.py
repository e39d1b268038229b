"""Which deployments are running, and closing those that were killed.

A deployment that is killed (SIGKILL, power cut, out of memory) never logs its
``deployment_stopped``, so the auditor's watchlist deadline, which runs from the
stop, would never start. To close such deployments:

- A running deployment holds a :class:`RunningMark`: an exclusive ``flock`` on
  ``<log>.live/<deployment_id>.lock``, held from before it logs
  ``deployment_started`` until after it logs ``deployment_stopped``. The kernel
  releases the lock when the process ends, however it ends.
- The next start calls :func:`close_crashed` on the log. Every deployment the
  log shows as started and not stopped whose mark is free (or missing) is gone:
  it logs ``deployment_stopped`` with reason ``"crashed"`` and ``last_record``
  (the ``seq`` of the deployment's last record; the record's own time is the
  close), then, for each watchlist the deployment loaded and the log does not
  show destroyed, ``watchlist_destroyed`` with ``cause="process_ended"``: the
  in-memory copy ended with the process. lfr could not wipe it; the kernel
  reclaims its (locked, undumpable) pages. The ``.lfrw`` file is the operator's.

Two starters racing are safe: each takes the deployment's mark before re-reading
the log and appending, so one closes it and the other finds it closed (or the
mark held).

A process forked (without exec) while holding a mark shares its lock: the mark is
released only when both have ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lfr._closing import Closing
from lfr.audit._trail import text
from lfr.audit.log import AuditLog, Record
from lfr.errors import AuditError

__all__ = ["RunningMark", "close_crashed", "live_dir", "mark_path"]

#: The ``reason`` of a ``deployment_stopped`` written by :func:`close_crashed`.
CRASHED = "crashed"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ATTEMPTS = 3


def live_dir(log_path: str | os.PathLike[str]) -> Path:
    """The directory of the running marks of a log: ``<log>.live``."""
    return Path(f"{os.fspath(log_path)}.live")


def mark_path(log_path: str | os.PathLike[str], deployment_id: str) -> Path:
    """The mark file of a deployment: ``<log>.live/<deployment_id>.lock``.

    An id that is not a plain file name (letters, digits, ``.``, ``_``, ``-``,
    not starting with ``.``, at most 128 characters) is replaced by ``%`` and the
    SHA-256 of its UTF-8 bytes.

    Raises:
        TypeError: ``deployment_id`` is not a string.
        ValueError: ``deployment_id`` is empty.
    """
    return live_dir(log_path) / _file_name(deployment_id)


def _file_name(deployment_id: Any) -> str:
    if not isinstance(deployment_id, str):
        raise TypeError(
            f"deployment_id must be a string, got {type(deployment_id).__name__}"
        )
    if not deployment_id.strip():
        raise ValueError("deployment_id must not be empty")
    if _SAFE_NAME.fullmatch(deployment_id):
        return f"{deployment_id}.lock"
    raw = deployment_id.encode("utf-8", "surrogatepass")
    return f"%{hashlib.sha256(raw).hexdigest()}.lock"


class RunningMark(Closing):
    """Shows, for as long as it is held, that a deployment's process is running.

    Hold it (:meth:`hold`) before logging ``deployment_started``; close it after
    logging ``deployment_stopped`` (or use it as a context manager). If the
    process dies first, the kernel releases it and the next
    :func:`close_crashed` closes the deployment.

    Examples:
        >>> import pathlib, tempfile
        >>> log = pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl"
        >>> with RunningMark.hold(log, "dep-1") as mark:
        ...     mark.path.name
        'dep-1.lock'
        >>> mark.path.exists()
        False
    """

    __slots__ = ("_deployment_id", "_fd", "_path")

    def __init__(self, *, _fd: int, _path: Path, _deployment_id: str) -> None:
        self._fd = _fd
        self._path = _path
        self._deployment_id = _deployment_id

    @classmethod
    def hold(cls, log_path: str | os.PathLike[str], deployment_id: str) -> RunningMark:
        """Takes the deployment's mark: ``flock(LOCK_EX)`` on its mark file.

        Creates ``<log>.live/`` (mode 0700) and the mark file (mode 0600) if
        needed.

        Args:
            log_path: The audit log the deployment writes.
            deployment_id: The deployment's id.

        Returns:
            The held mark.

        Raises:
            AuditError: The mark is held already: the deployment is running (or
                a :func:`close_crashed` is closing it).
            TypeError: ``deployment_id`` is not a string.
            ValueError: ``deployment_id`` is empty.
            OSError: The directory or file cannot be created.
        """
        path = mark_path(log_path, deployment_id)
        _make_dir(path.parent)
        for _ in range(_ATTEMPTS):
            fd = _open_mark(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AuditError(
                    f"deployment {deployment_id} is running already: its mark "
                    f"{path} is held by another process"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if _is_linked(fd, path):
                return cls(_fd=fd, _path=path, _deployment_id=deployment_id)
            os.close(fd)  # removed by a closer meanwhile: take a fresh file
        raise AuditError(f"cannot take the mark {path}: it keeps being removed")

    def close(self) -> None:
        """Removes the mark file and releases its lock (idempotent)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            _unlink_if_same(fd, self._path)
        finally:
            os.close(fd)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._fd < 0

    @property
    def path(self) -> Path:
        """The mark file."""
        return self._path

    @property
    def deployment_id(self) -> str:
        """The deployment whose mark this is."""
        return self._deployment_id

    def __repr__(self) -> str:
        state = "closed" if self.closed else "held"
        return f"RunningMark({self._deployment_id!r}, {state})"

    def __reduce__(self) -> Any:
        raise TypeError("a RunningMark cannot be pickled")


def close_crashed(log: AuditLog) -> list[str]:
    """Closes the deployments of ``log`` whose process was killed.

    For every deployment with a ``deployment_started`` record and no later
    ``deployment_stopped``, takes its mark without waiting; if the mark is held
    the deployment is running and is left alone. Otherwise (the mark is free or
    missing), it re-reads the log under the mark and, if the deployment is still
    not stopped, appends ``deployment_stopped`` (``reason="crashed"``,
    ``last_record`` the ``seq`` of its last record: the last record naming its
    ``deployment_id``), then one ``watchlist_destroyed`` (``deployment_id``,
    ``cause="process_ended"``) for each watchlist it loaded (its start or a
    ``watchlist_loaded``) with no ``watchlist_destroyed`` after its last load.

    Args:
        log: The open audit log (call it before holding the new deployment's
            own mark or logging its start).

    Returns:
        The ids of the deployments closed, in the order they started.

    Raises:
        AuditError: The log no longer verifies, or an append failed.
        OSError: The marks' directory cannot be created.
    """
    directory = live_dir(log.path)
    _make_dir(directory)
    closed = []
    for deployment_id in _open_deployments(log.records()):
        if _close_one(log, directory / _file_name(deployment_id), deployment_id):
            closed.append(deployment_id)
    return closed


def _open_deployments(records: Sequence[Record]) -> list[str]:
    """Deployments started and not stopped after their start, in start order."""
    started: dict[str, int] = {}
    stopped: set[str] = set()
    for record in records:
        deployment_id = text(record.fields, "deployment_id")
        if deployment_id is None:
            continue
        if record.event == "deployment_started":
            started.setdefault(deployment_id, record.seq)
        elif record.event == "deployment_stopped" and deployment_id in started:
            stopped.add(deployment_id)
    return [d for d in started if d not in stopped]


def _close_one(log: AuditLog, path: Path, deployment_id: str) -> bool:
    fd = _open_mark(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # running
        if not _is_linked(fd, path):
            return False  # its owner or another closer removed it meanwhile
        try:
            plan = _closing_records(log.records(), deployment_id)
            for event, fields in plan:
                log.append(event, **fields)
            return bool(plan)
        finally:
            _unlink_if_same(fd, path)
    finally:
        os.close(fd)


def _closing_records(
    records: Sequence[Record], deployment_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """What closes the deployment, or nothing if it is stopped (or never started)."""
    started = False
    last_record = -1
    loads: dict[str, int] = {}  # sha256 -> seq of its last load
    destroyed: dict[str, int] = {}  # sha256 -> seq of its last destruction
    for record in records:
        fields = record.fields
        mine = text(fields, "deployment_id") == deployment_id
        if mine:
            last_record = record.seq
        sha = text(fields, "watchlist_sha256")
        if record.event == "deployment_started" and mine:
            started = True
        elif record.event == "deployment_stopped" and mine and started:
            return []
        if sha is None or not _SHA256.fullmatch(sha):
            continue
        if record.event in ("deployment_started", "watchlist_loaded") and mine:
            loads[sha] = record.seq
        elif record.event == "watchlist_destroyed" and (
            mine or text(fields, "deployment_id") is None
        ):
            destroyed[sha] = record.seq
    if not started:
        return []
    plan: list[tuple[str, dict[str, Any]]] = [
        (
            "deployment_stopped",
            {
                "deployment_id": deployment_id,
                "reason": CRASHED,
                "last_record": last_record,
            },
        )
    ]
    for sha, load in loads.items():
        if destroyed.get(sha, -1) < load:
            plan.append(
                (
                    "watchlist_destroyed",
                    {
                        "watchlist_sha256": sha,
                        "deployment_id": deployment_id,
                        "cause": "process_ended",
                    },
                )
            )
    return plan


def _make_dir(directory: Path) -> None:
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        if not directory.is_dir():
            raise NotADirectoryError(
                f"{directory} exists and is not a directory"
            ) from None
        return
    os.chmod(directory, 0o700)  # whatever the umask


def _open_mark(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def _is_linked(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return stat.S_ISREG(named.st_mode) and (named.st_dev, named.st_ino) == (
        held.st_dev,
        held.st_ino,
    )


def _unlink_if_same(fd: int, path: Path) -> None:
    """Removes ``path`` if it is the file open (and locked) as ``fd``."""
    if _is_linked(fd, path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
