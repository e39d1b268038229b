"""What every frame source shares: frames in pooled secure buffers, stats, events."""

from __future__ import annotations

import datetime as _dt
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
import numpy.typing as npt

from lfr._closing import Closing
from lfr.align import MAX_FRAME_SIDE
from lfr.errors import SourceError
from lfr.secure import SecureBuffer, SecurePool

__all__ = ["Backoff", "EventHandler", "Frame", "FrameSource", "SourceStats"]

_log = logging.getLogger("lfr.sources")

#: ``on_event(name, payload)``: called with counts and times only, never pixels.
EventHandler = Callable[[str, "dict[str, Any]"], None]

# How often a wait for a free buffer looks at stop().
_POLL_S = 0.05


@dataclass(frozen=True)
class Backoff:
    """How a lost live stream is retried: exponential waits between attempts.

    The first retry waits ``initial`` seconds, each next one ``factor`` times longer,
    never more than ``maximum``. After ``attempts`` failed retries the source ends
    (``None``: retry for ever, ``0``: never retry).

    Args:
        initial: First wait in seconds (>= 0).
        factor: Growth of the wait (>= 1).
        maximum: Longest wait in seconds (>= initial).
        attempts: Retries before giving up; ``None`` for no limit.

    Raises:
        ValueError: A value is out of range.

    Examples:
        >>> list(Backoff(initial=0.5, factor=2.0, maximum=3.0, attempts=4).delays())
        [0.5, 1.0, 2.0, 3.0]
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 10.0
    attempts: int | None = None

    def __post_init__(self) -> None:
        if not self.initial >= 0:
            raise ValueError(f"initial must be >= 0, got {self.initial}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not self.maximum >= self.initial:
            raise ValueError(
                f"maximum ({self.maximum}) must be >= initial ({self.initial})"
            )
        if self.attempts is not None and (
            isinstance(self.attempts, bool) or self.attempts < 0
        ):
            raise ValueError(f"attempts must be None or >= 0, got {self.attempts}")

    def delays(self) -> Iterator[float]:
        """The waits before each retry, in seconds (endless if attempts is None)."""
        delay = float(self.initial)
        done = 0
        while self.attempts is None or done < self.attempts:
            yield delay
            delay = min(delay * self.factor, float(self.maximum))
            done += 1


@dataclass(frozen=True)
class SourceStats:
    """Counts of a source so far (a snapshot).

    Attributes:
        read: Frame positions taken from the source: frames grabbed, images listed,
            items drawn from an iterable, including those ``every`` passes over.
        delivered: Frames handed out by :meth:`FrameSource.frames`.
        dropped: Live sources only: frames wiped unseen because a newer one arrived
            before the consumer took them, or no buffer was free (newest wins).
        skipped: Frames that could not be decoded (an unreadable image in a folder,
            a grabbed frame that failed to decode); counted, not delivered.
        reconnects: Times a lost live stream was opened again.
    """

    read: int = 0
    delivered: int = 0
    dropped: int = 0
    skipped: int = 0
    reconnects: int = 0


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(
            ("read", "delivered", "dropped", "skipped", "reconnects"), 0
        )

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> SourceStats:
        with self._lock:
            return SourceStats(**self._values)


class Frame:
    """One frame from a source, in a pooled :class:`~lfr.SecureBuffer`.

    :attr:`image` is a zero-copy ``uint8`` ``(h, w, 3)`` BGR view of a buffer leased
    from the source's pool. :meth:`release` (or leaving ``with frame:``) wipes the
    buffer and returns it to the pool; delete every view of :attr:`image` you made
    first, or the pool retires the buffer instead of reusing it. A frame dropped
    without :meth:`release` is released when it is garbage-collected.

    Attributes are read-only.

    Examples:
        >>> import numpy as np, lfr.sources
        >>> frames = [np.full((4, 6, 3), 9, np.uint8)]
        >>> with lfr.sources.open_source(frames) as source:
        ...     for frame in source.frames():
        ...         with frame:
        ...             print(frame.index, frame.image.shape, int(frame.image.max()))
        0 (4, 6, 3) 9
    """

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_captured",
        "_image",
        "_index",
        "_lock",
        "_pool",
        "_time",
    )

    def __init__(
        self,
        index: int,
        pool: SecurePool,
        buffer: SecureBuffer,
        shape: tuple[int, int],
        when: _dt.datetime,
        captured: float,
    ) -> None:
        self._index = index
        self._pool: SecurePool | None = pool
        self._buffer: SecureBuffer | None = buffer
        self._image: npt.NDArray[np.uint8] | None = buffer.array(
            np.uint8, (shape[0], shape[1], 3)
        )
        self._time = when
        self._captured = captured
        self._lock = threading.Lock()

    @property
    def index(self) -> int:
        """Frame number in the source (0-based; gaps where frames were passed over)."""
        return self._index

    @property
    def time(self) -> _dt.datetime:
        """When the frame was captured (read from the source), timezone-aware UTC."""
        return self._time

    @property
    def captured(self) -> float:
        """``time.monotonic()`` at capture, for measuring latency."""
        return self._captured

    @property
    def image(self) -> npt.NDArray[np.uint8]:
        """The pixels: a writable ``(h, w, 3)`` BGR view of the secure buffer.

        Raises:
            RuntimeError: The frame was released.
        """
        image = self._image
        if image is None:
            raise RuntimeError(f"frame {self._index} was released")
        return image

    @property
    def buffer(self) -> SecureBuffer | None:
        """The secure buffer holding the pixels; ``None`` once released."""
        return self._buffer

    @property
    def released(self) -> bool:
        """Whether :meth:`release` has run."""
        return self._buffer is None

    def release(self) -> None:
        """Wipes the pixels and returns the buffer to its pool. Idempotent."""
        with self._lock:
            buf, pool = self._buffer, self._pool
            if buf is None or pool is None:
                return
            self._image = None  # the frame's own view must go before the release
            self._buffer = self._pool = None
        pool.release(buf)

    def __enter__(self) -> Frame:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            _log.debug("releasing a collected frame failed", exc_info=True)

    def __repr__(self) -> str:
        image = self._image
        size = "released" if image is None else f"{image.shape[1]}x{image.shape[0]}"
        return f"Frame(index={self._index}, {size}, time={self._time.isoformat()})"


class _Pools:
    """The source's frame pool, replaced by a larger one when frames outgrow it.

    Buffers are sized in bytes, so a frame smaller than the pool's buffers uses a
    view of their first bytes; only a larger frame allocates a new pool. The old pool
    is closed: its free buffers are wiped and freed now, its leased ones when their
    frames are released.
    """

    def __init__(self, capacity: int, allow_unlocked: bool) -> None:
        self._capacity = capacity
        self._allow_unlocked = allow_unlocked
        self._pool: SecurePool | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pool(self) -> SecurePool | None:
        return self._pool

    def _pool_for(self, nbytes: int) -> SecurePool | None:
        with self._lock:
            if self._closed:
                return None
            pool = self._pool
            if pool is None or pool.nbytes < nbytes:
                new = SecurePool(
                    nbytes, self._capacity, allow_unlocked=self._allow_unlocked
                )
                if pool is not None:
                    _log.info(
                        "frames grew to %d bytes: frame pool re-allocated", nbytes
                    )
                    pool.close()
                self._pool = pool = new
            return pool

    def prepare(self, nbytes: int) -> None:
        """Allocates (and locks) the pool for frames of ``nbytes`` now."""
        self._pool_for(nbytes)

    def acquire(
        self, nbytes: int, stop: threading.Event, *, wait: bool
    ) -> tuple[SecurePool, SecureBuffer] | None:
        """A wiped buffer of at least ``nbytes``.

        ``None`` when stopped, or (without ``wait``) when none is free now.
        """
        while not stop.is_set():
            pool = self._pool_for(nbytes)
            if pool is None:
                return None
            try:
                return pool, pool.acquire(timeout=_POLL_S if wait else 0)
            except TimeoutError:
                if not wait:
                    return None
            except RuntimeError:  # closed meanwhile (a bigger pool, or close())
                continue
        return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _now() -> tuple[_dt.datetime, float]:
    return _dt.datetime.now(_dt.timezone.utc), time.monotonic()


def _convert_into(
    image: npt.NDArray[Any], view: npt.NDArray[np.uint8], what: str
) -> None:
    """Copies or converts a decoded BGR, grey or BGRA ``image`` into ``view``."""
    if image.dtype != np.uint8:
        raise SourceError(f"{what}: frames of {image.dtype} are not supported")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 3:
        np.copyto(view, image)
        return
    if channels not in (1, 4):
        raise SourceError(f"{what}: frames with {channels} channels are not supported")
    code = cv2.COLOR_GRAY2BGR if channels == 1 else cv2.COLOR_BGRA2BGR
    out = cv2.cvtColor(image, code, dst=view)
    if np.asarray(out).ctypes.data != view.ctypes.data:  # not in place: copy, wipe
        np.copyto(view, out)
        np.asarray(out).fill(0)


def _decoded_shape(image: npt.NDArray[Any], what: str) -> tuple[int, int]:
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise SourceError(f"{what}: decoded frame has shape {image.shape}")
    h, w = int(image.shape[0]), int(image.shape[1])
    if max(h, w) > MAX_FRAME_SIDE:
        raise SourceError(
            f"{what}: frame of {w}x{h} exceeds {MAX_FRAME_SIDE} pixels on a side"
        )
    return h, w


_SECRET = re.compile(
    r"(?i)((?:pass(?:word)?|passwd|pwd|token|secret|auth\w*|sig(?:nature)?|"
    r"user(?:name)?|cred\w*|\w*key)=)[^&;/_]*"
)


def redact_url(url: str) -> str:
    """``url`` without ``user:password@`` and with secret-looking query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    path = _SECRET.sub(r"\1***", parts.path)
    query = _SECRET.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, path, query, ""))


class FrameSource(Closing):
    """Where frames come from: a camera, a stream, a video, a folder or arrays.

    Made by :func:`lfr.sources.open_source`. Iterate :meth:`frames` once (from one
    thread); :meth:`stop` may be called at any time from any thread and makes
    :meth:`frames` end promptly; :meth:`close` (or leaving ``with``) stops, releases
    the capture, and wipes and frees the frame pool (frames still held are freed
    when released).

    Attributes:
        live: True for cameras and network streams (newest frame wins, frames may be
            dropped, lost streams are retried); False for files, folders and
            iterables (every frame, or every ``every``-th, none dropped).
    """

    live: ClassVar[bool] = False

    def __init__(
        self,
        *,
        kind: str,
        spec: str,
        every: int = 1,
        pool_size: int = 4,
        on_event: EventHandler | None = None,
        allow_unlocked: bool = False,
    ) -> None:
        for name, value in (("every", every), ("pool_size", pool_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self._kind = kind
        self._spec = spec
        self._every = int(every)
        self._on_event = on_event
        self._stop = threading.Event()
        self._counters = _Counters()
        self._pools = _Pools(int(pool_size), allow_unlocked)
        self._started = False
        self._closed = False

    @property
    def kind(self) -> str:
        """``"camera"``, ``"stream"``, ``"video"``, ``"folder"`` or ``"iterable"``."""
        return self._kind

    @property
    def spec(self) -> str:
        """The source as given, credentials removed."""
        return self._spec

    @property
    def stats(self) -> SourceStats:
        """A snapshot of the counts so far."""
        return self._counters.snapshot()

    @property
    def pool(self) -> SecurePool | None:
        """The current frame pool (``None`` before the first frame's size is known)."""
        return self._pools.pool

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` (or :meth:`close`) has run."""
        return self._stop.is_set()

    def frames(self) -> Iterator[Frame]:
        """The frames, in order; release each one when done with it.

        Returns:
            An iterator that ends at the end of a file, folder or iterable, when a
            lost live stream cannot be recovered, or after :meth:`stop`.

        Raises:
            RuntimeError: Called a second time, or after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("the source is closed")
        if self._started:
            raise RuntimeError("frames() can be iterated only once per source")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def stop(self) -> None:
        """Makes :meth:`frames` end promptly; safe from any thread, at any time."""
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        """Interrupts whatever frames() or a reader thread waits on."""

    def _release_capture(self) -> None:
        """Frees the capture device or decoder (in :meth:`close`)."""

    def close(self) -> None:
        """Stops, frees the capture and the frame pool. Idempotent."""
        self.stop()
        if self._closed:
            return
        self._closed = True
        self._release_capture()
        self._pools.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind} {self._spec!r}, live={self.live})"

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(name, payload)
        except Exception as exc:
            _log.error("on_event(%r) raised %s", name, type(exc).__name__)

    def _frame(
        self,
        index: int,
        got: tuple[SecurePool, SecureBuffer],
        shape: tuple[int, int],
        stamp: tuple[_dt.datetime, float],
    ) -> Frame:
        return Frame(index, got[0], got[1], shape, stamp[0], stamp[1])
