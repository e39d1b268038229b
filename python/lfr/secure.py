"""Memory for faces: locked, undumpable buffers, wiped the moment a face is decided.

Python cannot promise that a face leaves no trace (bytes are immutable, numpy and OpenCV
copy freely), so every frame, chip, model input and embedding lives in a
:class:`SecureBuffer`: memory owned by the Rust core, ``mlock``-ed (never swapped),
``MADV_DONTDUMP`` (not in core dumps) and ``MADV_WIPEONFORK`` (a forked child sees
zeros), zeroized with volatile writes on :meth:`SecureBuffer.wipe` and before it is
freed. numpy and OpenCV write straight into it through zero-copy views
(``cv2.warpAffine(..., dst=view)``, ``np.copyto(view, ...)``, ``out=view``).

:class:`SecurePool` hands out fixed-size buffers and takes them back wiped, so the hot
path never allocates. :func:`harden_process` switches core dumps off and reports swap
and the locked-memory budget; :func:`require_hardening` is how every entry point that
handles faces or keys calls it, failing closed. See docs/data-handling.md for the
rules that follow.
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import queue
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from lfr import _core
from lfr._closing import Closing
from lfr.errors import HardeningError

__all__ = [
    "MemoryReport",
    "SecureBuffer",
    "SecurePool",
    "SwapDevice",
    "harden_process",
    "memory_status",
    "require_hardening",
    "secure_owner",
]

_log = logging.getLogger(__name__)


class SecureBuffer(_core.SecureBuffer):
    """A Rust-owned, page-aligned buffer for face data.

    The memory is locked in RAM, excluded from core dumps and zeroed in forked
    children. :meth:`array` and ``np.asarray(buf)`` are zero-copy numpy views that
    numpy and OpenCV can write into; ``buf.memoryview()`` gives a memoryview
    (``memoryview(buf)`` itself works on Python 3.12 and newer).

    :meth:`wipe` zeroizes it (volatile writes and a compiler fence, so the compiler
    cannot drop them); freeing it (:meth:`close`, or garbage collection) wipes it
    first. :meth:`close` is refused while views exist, so no view can outlive the
    memory; a wiped buffer reads as zeros through every view.

    A conversion that would copy or cast (``np.asarray(buf, dtype=np.float32)``,
    ``np.array(buf, copy=True)``) is refused on Python 3.9 to 3.11. On 3.12 and newer
    numpy reaches the memory through the buffer protocol (PEP 688) before it asks the
    buffer, and makes such a copy itself, outside secure memory, as
    ``buf.array().astype(...)`` would; :func:`secure_owner` tells a view from a copy.

    Never store a view of a buffer on the buffer itself (an attribute of a subclass):
    numpy arrays are invisible to Python's cycle collector, so that cycle is never
    collected and the memory stays mapped, unwiped, until the process ends.

    Args:
        nbytes: Size in bytes (at least 1).
        allow_unlocked: Run even if the memory cannot be locked (``RLIMIT_MEMLOCK``
            too low) or a protection is refused; the properties :attr:`locked`,
            :attr:`dontdump` and :attr:`wipeonfork` then say what is missing. The
            default fails closed.

    Raises:
        lfr.errors.SecureMemoryError: The memory cannot be locked or protected; the
            message says what was asked, the limit and what is locked already, and
            points to the whole deployment's figure (``lfr run --print-memlock``,
            :meth:`lfr.Deployment.memlock_budget`) rather than this allocation's.
        ValueError: ``nbytes`` is 0.

    Examples:
        >>> import numpy as np, lfr
        >>> buf = lfr.SecureBuffer(4 * 128)
        >>> emb = buf.array(np.float32, (1, 128))
        >>> emb[:] = 0.5
        >>> buf.wipe()
        >>> float(emb.sum())
        0.0
        >>> del emb
        >>> buf.close()
    """

    __slots__ = ()

    def array(
        self,
        dtype: npt.DTypeLike = np.uint8,
        shape: int | tuple[int, ...] | None = None,
    ) -> npt.NDArray[Any]:
        """A writable, C-contiguous numpy view of the buffer's first bytes.

        Args:
            dtype: Element type (no Python objects).
            shape: View shape; default: as many elements as fit, 1-D.

        Returns:
            The view. It keeps the buffer alive, and :meth:`close` is refused until it
            (and every array derived from it) is gone.

        Raises:
            ValueError: The shape needs more bytes than the buffer holds, or is
                negative.
            TypeError: ``dtype`` holds Python objects.
            BufferError: The buffer is closed.
        """
        dt = np.dtype(dtype)
        if dt.hasobject or dt.itemsize == 0:
            raise TypeError(f"dtype {dt} cannot view raw memory")
        if shape is None:
            dims: tuple[int, ...] = (self.nbytes // dt.itemsize,)
        else:
            dims = (
                (int(shape),)
                if isinstance(shape, (int, np.integer))
                else tuple(int(s) for s in shape)
            )
        if any(d < 0 for d in dims):
            raise ValueError(f"shape {dims} has a negative dimension")
        count = math.prod(dims)
        if count * dt.itemsize > self.nbytes:
            raise ValueError(
                f"shape {dims} of {dt} needs {count * dt.itemsize} bytes, "
                f"the buffer holds {self.nbytes}"
            )
        # The export counts as a view for as long as an array made from it lives
        # (numpy keeps it as their base).
        raw: npt.NDArray[np.uint8] = np.asarray(self.export())
        view: npt.NDArray[Any] = raw[: count * dt.itemsize].view(dt).reshape(dims)
        return view

    def __array__(
        self, dtype: npt.DTypeLike | None = None, copy: bool | None = None
    ) -> npt.NDArray[Any]:
        # np.asarray(buf): after close(), export() raises BufferError instead of numpy
        # wrapping the object in an object array.
        if dtype is not None and np.dtype(dtype) != np.uint8:
            raise TypeError("use buf.array(dtype, shape): a cast would copy face data")
        if copy:
            raise ValueError("copying face data out of secure memory is refused")
        # What self.array() gives without arguments (uint8[nbytes]), without its checks.
        view: npt.NDArray[np.uint8] = np.asarray(self.export())
        return view

    def memoryview(self) -> builtins.memoryview:
        """A writable memoryview of the whole buffer (a view while it lives).

        Returns:
            ``memoryview(self.array())``: bytes, C-contiguous; :meth:`close` is refused
            until it is released or gone.
        """
        # numpy's stubs declare ndarray a Buffer only for Python 3.12 and newer.
        raw: Any = self.array()
        return memoryview(raw)

    def __buffer__(self, flags: int, /) -> builtins.memoryview:
        """``memoryview(buf)`` on Python 3.12 and newer (PEP 688): a view of it all."""
        # CPython hides this object behind a wrapper that views of the result cannot
        # see through; secure_owner() finds the buffer among these by address instead.
        with _buffer_exporters_lock:
            _buffer_exporters.add(self)
        return self.memoryview()

    def __enter__(self) -> SecureBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()

    def discard(self) -> None:
        """Wipes the buffer and frees it now, or when its last view goes.

        Unlike :meth:`close`, this never fails: with views left, the memory stays
        mapped (reading as zeros) until the last one is gone. Does nothing once
        closed.
        """
        if self.closed:
            return
        self.wipe()
        if self.views == 0:
            self.close()


def _byte_bounds(view: object) -> tuple[int, int] | None:
    """The lowest address and one past the highest that ``view`` can touch, or None."""
    try:
        if isinstance(view, np.ndarray):
            # A plain ndarray of the same memory: a subclass cannot answer for its
            # own address (__array_interface__, which byte_bounds reads).
            arr = np.asarray(view)
        else:
            # A memoryview shares its memory (strides included), no copy; numpy
            # warns of some formats it reads anyway.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = np.asarray(view)
    except (BufferError, ValueError, TypeError):
        return None
    if arr.dtype.hasobject:
        return None
    low, high = _numpy_byte_bounds(arr)
    return int(low), int(high)


try:
    from numpy.lib.array_utils import byte_bounds as _numpy_byte_bounds
except ImportError:  # numpy 1.x (Python 3.9's last releases) has it at the top
    from numpy import (  # type: ignore[attr-defined,no-redef]
        byte_bounds as _numpy_byte_bounds,
    )

# Read through the base class's descriptors, so that a subclass cannot answer for them.
_address = _core.SecureBuffer.address.__get__
_nbytes = _core.SecureBuffer.nbytes.__get__
_closed = _core.SecureBuffer.closed.__get__


# Buffers that have exported themselves through __buffer__ (weakly held).
# Only views made that way are looked up there (lfr's own capture code makes its
# views with array()), so the linear scan is off the per-frame path.
_buffer_exporters: weakref.WeakSet[_core.SecureBuffer] = weakref.WeakSet()
_buffer_exporters_lock = threading.Lock()


def _owner_by_address(low: int, high: int) -> _core.SecureBuffer | None:
    """The open buffer among ``_buffer_exporters`` whose memory spans low..high."""
    with _buffer_exporters_lock:
        exporters = list(_buffer_exporters)
    for buf in exporters:
        if not _closed(buf):
            start = _address(buf)
            if start <= low and high <= start + _nbytes(buf):
                return buf
    return None


def secure_owner(view: object) -> _core.SecureBuffer | None:
    """The SecureBuffer whose memory ``view`` lies in, or None.

    Follows numpy bases, memoryviews and the buffer's exports back to their owner,
    then checks that every byte ``view`` can reach (strides included) lies within
    that buffer.

    Args:
        view: A numpy array or memoryview.

    Returns:
        The owning buffer, or None for memory that is not a SecureBuffer's, for a
        closed buffer, and for anything that is neither an array nor a memoryview.
    """
    if not isinstance(view, (np.ndarray, builtins.memoryview)):
        return None
    bounds = _byte_bounds(view)
    if bounds is None:
        return None
    low, high = bounds
    base: object = view
    for _ in range(64):
        if issubclass(type(base), _core.SecureBuffer):
            break
        if type(base) is _core.SecureExport:
            base = base.owner
        elif type(base) is builtins.memoryview:
            base = base.obj
        elif type(base).__name__ == "_buffer_wrapper":
            # A view made through SecureBuffer.__buffer__ (Python 3.12 and newer).
            return _owner_by_address(low, high)
        else:
            # ndarray.base, or the stand-in that numpy's as_strided() puts between; a
            # forged .base is harmless: the address check below decides.
            base = getattr(base, "base", None)
    else:
        return None
    if not issubclass(type(base), _core.SecureBuffer):
        return None
    owner = cast("_core.SecureBuffer", base)
    if _closed(owner):
        return None
    start = _address(owner)
    if start <= low and high <= start + _nbytes(owner):
        return owner
    return None


class SecurePool(Closing):
    r"""Fixed-size :class:`SecureBuffer`\\ s, allocated once and handed out wiped.

    One pool per kind of buffer (frames, aligned chips, model inputs, embeddings):
    all memory is allocated and locked up front, so a pool that cannot be built fails
    at start-up, not in the middle of a stream. :meth:`release` wipes a buffer before
    anyone can acquire it again. Thread-safe.

    A buffer released while views of it still exist is wiped and retired instead of
    reused (a stale view could otherwise see the next face); the pool allocates a
    replacement and counts it in :attr:`retired`.

    Args:
        nbytes: Size of each buffer in bytes.
        capacity: Number of buffers (at least 1).
        allow_unlocked: Passed to every :class:`SecureBuffer`.

    Raises:
        lfr.errors.SecureMemoryError: The buffers cannot be locked; nothing is left
            allocated.
        ValueError: ``nbytes`` or ``capacity`` is not positive.

    Examples:
        >>> import lfr
        >>> chips = lfr.SecurePool(150 * 150 * 3, capacity=8)
        >>> with chips.lease() as buf:
        ...     chip = buf.array(shape=(150, 150, 3))
        ...     chip[:] = 7  # cv2.warpAffine(frame, m, (150, 150), dst=chip)
        ...     del chip
        >>> chips.available
        8
        >>> chips.close()
    """

    def __init__(
        self, nbytes: int, capacity: int, *, allow_unlocked: bool = False
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise TypeError(f"capacity must be an int, got {type(capacity).__name__}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
            raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
        if nbytes < 1:
            raise ValueError(f"nbytes must be at least 1, got {nbytes}")
        self._nbytes = int(nbytes)
        self._capacity = int(capacity)
        self._allow_unlocked = bool(allow_unlocked)
        self._lock = threading.Lock()
        self._free: queue.LifoQueue[SecureBuffer] = queue.LifoQueue()
        self._leased: set[int] = set()
        self._retired = 0
        self._closed = False
        made: list[SecureBuffer] = []
        try:
            for _ in range(self._capacity):
                made.append(SecureBuffer(self._nbytes, allow_unlocked=allow_unlocked))
        except BaseException:
            for buf in made:
                buf.close()
            raise
        for buf in made:
            self._free.put(buf)

    @property
    def nbytes(self) -> int:
        """Size of each buffer in bytes."""
        return self._nbytes

    @property
    def capacity(self) -> int:
        """Number of buffers."""
        return self._capacity

    @property
    def available(self) -> int:
        """Buffers ready to be acquired."""
        return self._free.qsize()

    @property
    def in_use(self) -> int:
        """Buffers acquired and not yet released."""
        with self._lock:
            return len(self._leased)

    @property
    def retired(self) -> int:
        """Buffers replaced because views of them outlived :meth:`release`."""
        return self._retired

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def acquire(self, timeout: float | None = None) -> SecureBuffer:
        """Takes a wiped buffer, waiting while all are in use.

        Args:
            timeout: Longest wait in seconds; ``None`` waits for ever.

        Returns:
            A buffer of :attr:`nbytes` zero bytes. Give it back with :meth:`release`.

        Raises:
            TimeoutError: No buffer became free within ``timeout``.
            RuntimeError: The pool is closed.
        """
        if self._closed:
            raise RuntimeError("the pool is closed")
        try:
            buf = self._free.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"all {self._capacity} buffers of {self._nbytes} bytes are in use"
            ) from None
        with self._lock:
            self._leased.add(id(buf))
        return buf

    def release(self, buf: SecureBuffer) -> None:
        """Wipes ``buf`` and returns it to the pool.

        Args:
            buf: A buffer this pool handed out and that was not released yet.

        Raises:
            ValueError: ``buf`` is not leased from this pool (or was released twice).
            lfr.errors.SecureMemoryError: ``buf`` still had views, so it was retired,
                and its replacement could not be locked; the pool is one buffer
                smaller.
        """
        with self._lock:
            if id(buf) not in self._leased:
                raise ValueError("the buffer is not leased from this pool")
            self._leased.discard(id(buf))
        if self._closed:
            buf.discard()
            return
        buf.wipe()
        if buf.views:
            _log.debug("a released buffer still has views; replacing it")
            with self._lock:
                self._retired += 1
            try:
                buf = SecureBuffer(self._nbytes, allow_unlocked=self._allow_unlocked)
            except BaseException:
                with self._lock:
                    self._capacity -= 1
                raise
        self._free.put(buf)

    @contextmanager
    def lease(self, timeout: float | None = None) -> Iterator[SecureBuffer]:
        """``with pool.lease() as buf:`` acquires a buffer and releases it after.

        Args:
            timeout: As for :meth:`acquire`.

        Yields:
            A wiped buffer, wiped again when the block ends (also on error).
        """
        buf = self.acquire(timeout)
        try:
            yield buf
        finally:
            self.release(buf)

    def close(self) -> None:
        """Wipes and frees every free buffer; leased ones are freed on release."""
        self._closed = True
        while True:
            try:
                buf = self._free.get_nowait()
            except queue.Empty:
                break
            buf.discard()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"available={self.available}"
        return f"SecurePool(nbytes={self._nbytes}, capacity={self._capacity}, {state})"


SwapBacking = Literal["ram", "encrypted", "disk", "unknown"]


@dataclass(frozen=True)
class SwapDevice:
    """One active swap area from ``/proc/swaps``.

    Attributes:
        path: Device or file.
        kind: ``"partition"`` or ``"file"``.
        size_bytes: Size.
        used_bytes: Bytes in use.
        backing: ``"ram"`` (zram), ``"encrypted"`` (dm-crypt), ``"disk"`` (plain,
            readable after power-off) or ``"unknown"``.
    """

    path: str
    kind: str
    size_bytes: int
    used_bytes: int
    backing: SwapBacking


@dataclass(frozen=True)
class MemoryReport:
    """Where this process stands on core dumps, swap and locked memory.

    Attributes:
        core_dumps_disabled: ``RLIMIT_CORE`` is 0, so no core file is written.
        dumpable: ``PR_GET_DUMPABLE`` is set (core dumps possible, and processes of
            the same user may ptrace this one).
        memlock_limit: The soft ``RLIMIT_MEMLOCK`` in bytes; ``None`` if unlimited.
        memlock_locked: Bytes locked now.
        memlock_privileged: ``CAP_IPC_LOCK`` is held, so the limit does not apply.
        swap: Active swap areas.
    """

    core_dumps_disabled: bool
    dumpable: bool
    memlock_limit: int | None
    memlock_locked: int
    memlock_privileged: bool
    swap: tuple[SwapDevice, ...]

    @property
    def hardened(self) -> bool:
        """No core file can be written and the process is not dumpable."""
        return self.core_dumps_disabled and not self.dumpable

    @property
    def memlock_headroom(self) -> int | None:
        """Bytes that can still be locked; ``None`` when there is no limit."""
        if self.memlock_privileged or self.memlock_limit is None:
            return None
        return max(0, self.memlock_limit - self.memlock_locked)

    @property
    def swap_safe(self) -> bool:
        """No swap, or only zram and encrypted swap (nothing readable from disk)."""
        return all(s.backing in ("ram", "encrypted") for s in self.swap)


def _unescape(field: str) -> str:
    # /proc/swaps escapes blanks in paths as octal (\040).
    return field.encode("latin-1").decode("unicode_escape")


def _swap_backing(path: str) -> SwapBacking:
    name = os.path.basename(os.path.realpath(path))
    if name.startswith("zram"):
        return "ram"
    if name.startswith("dm-"):
        try:
            uuid = Path(f"/sys/block/{name}/dm/uuid").read_text().strip()
        except OSError:
            return "unknown"
        return "encrypted" if uuid.startswith("CRYPT-") else "disk"
    if os.path.exists(path):
        return "disk"
    return "unknown"


def _swaps(proc_swaps: str = "/proc/swaps") -> tuple[SwapDevice, ...]:
    try:
        lines = Path(proc_swaps).read_text().splitlines()[1:]
    except OSError:
        return ()
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        path = _unescape(fields[0])
        out.append(
            SwapDevice(
                path=path,
                kind=fields[1],
                size_bytes=int(fields[2]) * 1024,
                used_bytes=int(fields[3]) * 1024,
                backing=_swap_backing(path),
            )
        )
    return tuple(out)


def memory_status() -> MemoryReport:
    """Reports core-dump, swap and locked-memory settings without changing them.

    Returns:
        The current :class:`MemoryReport`.
    """
    core_disabled, dumpable = _core.hardening()
    limit, locked, privileged = _core.memlock_status()
    return MemoryReport(
        core_dumps_disabled=core_disabled,
        dumpable=dumpable,
        memlock_limit=limit,
        memlock_locked=locked,
        memlock_privileged=privileged,
        swap=_swaps(),
    )


def harden_process() -> MemoryReport:
    """Switches core dumps off for this process and reports what else needs checking.

    Sets ``RLIMIT_CORE`` to 0 (soft and hard: it cannot be raised again) and
    ``PR_SET_DUMPABLE`` to 0 (no core dump even via ``core_pattern`` pipes, and
    other unprivileged processes of the same user can no longer ptrace this one or
    read its memory). Swap and the locked-memory limit are the operator's to set:
    they are reported, not changed, and nothing is printed.

    Returns:
        The :class:`MemoryReport` after hardening.

    Raises:
        OSError: The kernel refused a setting.

    Examples:
        >>> import lfr
        >>> report = lfr.harden_process()  # doctest: +SKIP
        >>> report.core_dumps_disabled, report.swap_safe  # doctest: +SKIP
        (True, True)
    """
    _core.harden()
    return memory_status()


def require_hardening(allow_core_dumps: bool = False) -> MemoryReport:
    """Hardens the process before faces or keys are handled, or refuses.

    The one place where lfr's entry points (:meth:`lfr.Deployment.start`,
    :meth:`lfr.Watchlist.enroll`, the ``lfr`` commands that read faces or keys)
    switch core dumps off: it calls :func:`harden_process` and checks that both
    settings hold (``RLIMIT_CORE`` 0 soft and hard, not dumpable).

    Args:
        allow_core_dumps: The operator's explicit override: leave core dumps as
            the environment sets them (to debug a crash) and do not refuse. Where
            there is an audit log the caller records it
            (``deployment_started.hardened`` false and an ``anomaly``
            ``core_dumps_allowed``); here it is logged as a warning. A process
            hardened earlier stays hardened: the report then says so.

    Returns:
        The :class:`MemoryReport` afterwards; :attr:`MemoryReport.hardened` says
        whether core dumps are off.

    Raises:
        HardeningError: ``allow_core_dumps`` is false and the kernel refused a
            setting, or it did not hold afterwards.
    """
    if allow_core_dumps:
        report = memory_status()
        if not report.hardened:
            _log.warning(
                "core dumps allowed (allow_core_dumps): a crash may write faces "
                "and keys to disk"
            )
        return report
    try:
        report = harden_process()
    except OSError as exc:
        raise HardeningError(
            f"cannot switch core dumps off ({exc}); a crash could write faces and "
            "keys to disk. Fix the environment (a seccomp or container policy that "
            "refuses setrlimit/prctl), or run anyway with allow_core_dumps=True "
            "(--allow-core-dumps), which is audited"
        ) from exc
    if not report.hardened:
        raise HardeningError(
            "core dumps are still possible after hardening (RLIMIT_CORE "
            f"{'0' if report.core_dumps_disabled else 'not 0'}, dumpable "
            f"{report.dumpable}); run anyway with allow_core_dumps=True "
            "(--allow-core-dumps), which is audited"
        )
    return report
