"""Sources read through a capture: video files (every frame), live ones (newest wins).

OpenCV decodes straight into the secure buffer (``VideoCapture.retrieve(image=view)``
writes in place when the view has the frame's size). When it does not (the first
frame of a stream of unknown size, a change of resolution, a grey or BGRA frame),
OpenCV's own array is copied or converted into the secure buffer and then zeroed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from lfr.errors import SourceError
from lfr.secure import SecureBuffer, SecurePool
from lfr.sources._base import (
    Backoff,
    EventHandler,
    Frame,
    FrameSource,
    _convert_into,
    _decoded_shape,
    _now,
)

__all__ = ["Capture", "LiveSource", "VideoSource"]

_log = logging.getLogger("lfr.sources")

# How long close() waits for a reader thread blocked in the capture.
_JOIN_S = 5.0


class Capture(Protocol):
    """What a source reads from: an OpenCV ``VideoCapture`` or a camera SDK.

    Implement it to feed lfr from a camera that OpenCV cannot open, then pass an
    opener to :class:`LiveSource` (or :class:`VideoSource`).
    """

    def grab(self) -> bool:
        """Takes the next frame (blocking until there is one); False when none."""

    def retrieve(self, out: npt.NDArray[np.uint8] | None) -> npt.NDArray[Any] | None:
        """Decodes the grabbed frame.

        Args:
            out: Where to write it, when its shape matches the frame's; ``None``
                before the frame size is known.

        Returns:
            ``out`` itself when written in place; otherwise a new array (which the
            source copies into secure memory and zeroes); ``None`` on failure.
        """

    def release(self) -> None:
        """Frees the device or decoder."""

    def size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the frames, if known before the first one."""


class _CvCapture:
    """:class:`Capture` over ``cv2.VideoCapture``."""

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self._cap = cap

    def grab(self) -> bool:
        return bool(self._cap.grab())

    def retrieve(self, out: npt.NDArray[np.uint8] | None) -> npt.NDArray[Any] | None:
        ok, image = self._cap.retrieve() if out is None else self._cap.retrieve(out)
        if not ok or image is None:
            return None
        arr = np.asarray(image)
        return arr if arr.size else None

    def release(self) -> None:
        self._cap.release()

    def size(self) -> tuple[int, int] | None:
        w = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return (h, w) if h > 0 and w > 0 else None


def open_cv(
    target: int | str, backend: int = cv2.CAP_ANY, params: tuple[int, ...] = ()
) -> Capture | None:
    """Opens ``target`` with OpenCV; ``None`` when it cannot be opened."""
    cap = (
        cv2.VideoCapture(target, backend, list(params))
        if params
        else cv2.VideoCapture(target, backend)
    )
    if not cap.isOpened():
        cap.release()
        return None
    return _CvCapture(cap)


_Stored = tuple[tuple[SecurePool, SecureBuffer], tuple[int, int]]

#: Why :meth:`_CaptureSource._retrieve` stored nothing: no buffer free (or
#: stopped), or the grabbed frame did not decode.
_BUSY = "busy"
_FAILED = "failed"


_WHY = {
    "video": "not a video OpenCV can decode (corrupt, truncated or unknown format)",
    "stream": "unreachable, refused, timed out, or not a video stream",
    "camera": "no such camera, in use, or not permitted",
}


class _CaptureSource(FrameSource):
    """Shared by video and live sources: decoding a grabbed frame into the pool."""

    def __init__(
        self,
        open_capture: Callable[[], Capture | None],
        *,
        kind: str,
        spec: str,
        every: int,
        pool_size: int,
        on_event: EventHandler | None,
        allow_unlocked: bool,
    ) -> None:
        super().__init__(
            kind=kind,
            spec=spec,
            every=every,
            pool_size=pool_size,
            on_event=on_event,
            allow_unlocked=allow_unlocked,
        )
        self._open_capture = open_capture
        self._cap_lock = threading.Lock()
        cap = open_capture()
        if cap is None:
            raise SourceError(f"cannot open {kind} {spec}: {_WHY.get(kind, 'refused')}")
        self._cap: Capture | None = cap
        try:
            self._shape = cap.size()
            if self._shape is not None:  # allocate and lock the pool up front
                self._pools.prepare(self._nbytes(self._shape))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _nbytes(shape: tuple[int, int]) -> int:
        return shape[0] * shape[1] * 3

    def _retrieve(self, cap: Capture, *, wait: bool) -> _Stored | str:
        """Decodes the grabbed frame into a pooled buffer.

        Returns the leased buffer and the frame's ``(h, w)``, or :data:`_BUSY`
        (stopped, or no buffer free without ``wait``) or :data:`_FAILED`.
        """
        what = f"{self.kind} {self._spec}"
        shape = self._shape
        if shape is not None:
            got = self._pools.acquire(self._nbytes(shape), self._stop, wait=wait)
            if got is None:
                return _BUSY
            view = got[1].array(np.uint8, (shape[0], shape[1], 3))
            try:
                image = cap.retrieve(view)
                in_place = image is not None and (
                    image.shape == view.shape and image.ctypes.data == view.ctypes.data
                )
            except BaseException:
                del view
                got[0].release(got[1])
                raise
            del view
            if in_place:
                return got, shape
            got[0].release(got[1])  # wipes whatever was written
        else:
            image = cap.retrieve(None)
        if image is None:
            return _FAILED
        # OpenCV allocated the frame itself (first frame of a stream of unknown size,
        # a new resolution, grey or BGRA): copy it into secure memory, zero it.
        try:
            shape = _decoded_shape(image, what)
            got = self._pools.acquire(self._nbytes(shape), self._stop, wait=wait)
            if got is None:
                return _BUSY
            view = got[1].array(np.uint8, (shape[0], shape[1], 3))
            try:
                _convert_into(image, view, what)
            except BaseException:
                del view
                got[0].release(got[1])
                raise
            del view
        finally:
            if image.flags.writeable:
                image.fill(0)
        self._shape = shape
        return got, shape


class VideoSource(_CaptureSource):
    """A video file: every frame (or every ``every``-th) in order, none dropped.

    Frames are read in the thread that iterates :meth:`frames`, so the source paces
    itself to its consumer; when every pooled buffer is held by frames not yet
    released, it waits (and :meth:`stop` ends the wait). The first frame is read when
    the source opens, so a corrupt file fails there.

    Args:
        open_capture: Returns a :class:`Capture`, or ``None`` if it cannot open.
        spec: How the source is shown in messages and ``repr``.
        every: Deliver every n-th frame (the others are grabbed, not decoded).
        pool_size: Frame buffers in the pool.
        on_event: Event handler (unused by files).
        allow_unlocked: Passed to the :class:`~lfr.SecurePool`.

    Raises:
        lfr.errors.SourceError: It cannot be opened, or its first frame not read.
    """

    live = False

    def __init__(
        self,
        open_capture: Callable[[], Capture | None],
        *,
        spec: str,
        every: int = 1,
        pool_size: int = 4,
        on_event: EventHandler | None = None,
        allow_unlocked: bool = False,
    ) -> None:
        self._pending: Frame | None = None
        super().__init__(
            open_capture,
            kind="video",
            spec=spec,
            every=every,
            pool_size=pool_size,
            on_event=on_event,
            allow_unlocked=allow_unlocked,
        )
        self._next = 0
        try:
            self._pending = self._read_one()
        except BaseException:
            self.close()
            raise
        if self._pending is None:
            self.close()
            raise SourceError(
                f"cannot read {self.kind} {spec}: no frame could be decoded "
                "(corrupt, empty or not a video)"
            )

    def _read_one(self) -> Frame | None:
        """The next delivered frame; ``None`` at the end (or when stopped)."""
        with self._cap_lock:
            cap = self._cap
            while cap is not None and not self._stop.is_set():
                if not cap.grab():
                    return None
                index, self._next = self._next, self._next + 1
                self._counters.add("read")
                if index % self._every:
                    continue
                stamp = _now()
                stored = self._retrieve(cap, wait=True)
                if stored == _FAILED:
                    self._counters.add("skipped")
                elif not isinstance(stored, str):
                    return self._frame(index, stored[0], stored[1], stamp)
            return None

    def _frames(self) -> Iterator[Frame]:
        frame, self._pending = self._pending, None
        while frame is not None:
            if self._stop.is_set():
                frame.release()
                return
            self._counters.add("delivered")
            yield frame
            frame = self._read_one()

    def _release_capture(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.release()
        with self._cap_lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class _Mailbox:
    """One slot for the newest frame; the reader replaces, the consumer takes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> Frame | None:
        """Leaves ``frame``; returns the frame it replaced, for the caller to release.

        Returns ``frame`` itself when the mailbox is closed.
        """
        with self._cond:
            if self._closed:
                return frame
            old, self._frame = self._frame, frame
            self._cond.notify()
            return old

    def take(self) -> Frame | None:
        """Waits for a frame; ``None`` once closed and empty."""
        with self._cond:
            while self._frame is None and not self._closed:
                self._cond.wait()
            frame, self._frame = self._frame, None
            return frame

    def steal(self) -> Frame | None:
        with self._cond:
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class LiveSource(_CaptureSource):
    """A camera or network stream: never falls behind, newest frame wins.

    A reader thread (started by :meth:`frames`) grabs continuously into a one-slot
    mailbox. A frame the consumer has not taken when the next one arrives is wiped
    and counted in ``stats.dropped``; so is a frame for which no pooled buffer is
    free (the consumer holds them all). A failed grab counts as a lost stream: the
    capture is opened again after the waits of ``reconnect``, with the events
    ``stream_lost``, ``stream_recovered`` and, when the attempts run out,
    ``stream_ended`` (then :meth:`frames` ends). :meth:`stop` ends :meth:`frames` at
    once and interrupts a backoff wait (leaving the :meth:`frames` loop stops the
    source too); a capture blocked in a read (a network
    stream stalls up to its read timeout) is released by the reader when the read
    returns.

    Args:
        open_capture: Returns a :class:`Capture`, or ``None`` if it cannot open;
            called again to reconnect.
        kind: ``"camera"`` or ``"stream"``.
        spec: How the source is shown in messages and ``repr`` (no credentials).
        every: Decode every n-th grabbed frame only.
        pool_size: Frame buffers (the reader needs 1 and the mailbox 1; the rest
            are for frames the consumer holds).
        reconnect: Retry waits; ``None`` for ``Backoff()`` (retry for ever).
        on_event: Called with ``(name, payload)`` from the reader thread; payloads
            hold counts and times only.
        allow_unlocked: Passed to the :class:`~lfr.SecurePool`.

    Raises:
        lfr.errors.SourceError: The capture cannot be opened.
    """

    live = True

    def __init__(
        self,
        open_capture: Callable[[], Capture | None],
        *,
        kind: str = "stream",
        spec: str = "custom capture",
        every: int = 1,
        pool_size: int = 4,
        reconnect: Backoff | None = None,
        on_event: EventHandler | None = None,
        allow_unlocked: bool = False,
    ) -> None:
        self._backoff = reconnect if reconnect is not None else Backoff()
        if not isinstance(self._backoff, Backoff):
            raise TypeError(f"reconnect must be a Backoff, got {type(reconnect)}")
        self._mailbox = _Mailbox()
        self._reader: threading.Thread | None = None
        self._error: BaseException | None = None
        super().__init__(
            open_capture,
            kind=kind,
            spec=spec,
            every=every,
            pool_size=pool_size,
            on_event=on_event,
            allow_unlocked=allow_unlocked,
        )

    def _frames(self) -> Iterator[Frame]:
        reader = threading.Thread(
            target=self._run, name=f"lfr-{self.kind}-reader", daemon=True
        )
        self._reader = reader
        reader.start()
        error: BaseException | None = None
        try:
            while True:
                frame = self._mailbox.take()
                if frame is None:
                    break
                if self._stop.is_set():
                    frame.release()
                    break
                self._counters.add("delivered")
                yield frame
            if not self._stop.is_set():
                error = self._error
        finally:  # also when the consumer leaves the loop: the reader stops too
            self.stop()
        if error is not None:
            raise SourceError(
                f"reading {self.kind} {self._spec} failed: {type(error).__name__}"
            ) from error

    def _wake(self) -> None:
        self._mailbox.close()
        pending = self._mailbox.steal()
        if pending is not None:
            pending.release()

    def _run(self) -> None:
        with self._cap_lock:
            cap, self._cap = self._cap, None
        index = 0
        try:
            while cap is not None and not self._stop.is_set():
                if not cap.grab():
                    cap = self._reconnect(cap)  # a capture that has grabbed, or None
                    if cap is None:
                        break
                index, this = index + 1, index
                self._counters.add("read")
                if this % self._every:
                    continue
                stamp = _now()
                stored = self._retrieve_live(cap)
                if stored is None:
                    continue
                frame = self._frame(this, stored[0], stored[1], stamp)
                old = self._mailbox.put(frame)
                if old is frame:  # stopped meanwhile
                    frame.release()
                    break
                if old is not None:
                    old.release()
                    self._counters.add("dropped")
        except BaseException as exc:
            self._error = exc
            _log.error("%s reader failed: %s", self.kind, type(exc).__name__)
        finally:
            if cap is not None:
                cap.release()
            self._mailbox.close()

    def _retrieve_live(self, cap: Capture) -> _Stored | None:
        stored = self._retrieve(cap, wait=False)
        if stored == _BUSY and not self._stop.is_set():
            # No free buffer: the unconsumed frame gives up its own.
            old = self._mailbox.steal()
            if old is not None:
                old.release()
                self._counters.add("dropped")
                stored = self._retrieve(cap, wait=False)
        if stored == _FAILED:
            self._counters.add("skipped")
        elif stored == _BUSY:
            if not self._stop.is_set():  # the consumer holds every buffer
                self._counters.add("dropped")
        elif not isinstance(stored, str):
            return stored
        return None

    def _reconnect(self, cap: Capture) -> Capture | None:
        """Opens the capture again after backoff waits; ``None`` when it gave up."""
        cap.release()
        lost = time.monotonic()
        self._emit(
            "stream_lost",
            {"kind": self.kind, "frames_read": self.stats.read, "time": _utc()},
        )
        tries = 0
        for delay in self._backoff.delays():
            if self._stop.wait(delay):
                return None
            tries += 1
            try:
                new = self._open_capture()
            except Exception as exc:
                _log.warning(
                    "reopening the %s raised %s", self.kind, type(exc).__name__
                )
                new = None
            if new is None:
                continue
            if self._stop.is_set() or not new.grab():
                new.release()
                if self._stop.is_set():
                    return None
                continue
            self._counters.add("reconnects")
            self._emit(
                "stream_recovered",
                {
                    "kind": self.kind,
                    "attempts": tries,
                    "down_s": round(time.monotonic() - lost, 3),
                    "time": _utc(),
                },
            )
            return new
        self._emit(
            "stream_ended",
            {
                "kind": self.kind,
                "attempts": tries,
                "down_s": round(time.monotonic() - lost, 3),
                "frames_read": self.stats.read,
                "time": _utc(),
            },
        )
        return None

    def _release_capture(self) -> None:
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(_JOIN_S)
            if reader.is_alive():
                _log.warning(
                    "the %s reader is blocked in a read; it releases the capture "
                    "when the read returns",
                    self.kind,
                )
        with self._cap_lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._wake()


def _utc() -> str:
    return _now()[0].isoformat()
