"""Sources of still images: a folder of image files, or any iterable of arrays."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lfr.align import check_frame
from lfr.errors import SourceError
from lfr.sources._base import EventHandler, Frame, FrameSource, _now
from lfr.sources._stills import UnusableImageError, decode_into, read_size

__all__ = ["IMAGE_SUFFIXES", "FolderSource", "IterableSource"]

_log = logging.getLogger("lfr.sources")

#: File name endings a folder source reads (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class FolderSource(FrameSource):
    """The images of a folder, sorted by file name, as frames.

    Each file's header is read first and its size bounded (at most
    :data:`~lfr.sources.MAX_STILL_PIXELS` pixels and
    :data:`~lfr.align.MAX_FRAME_SIDE` on a side); then OpenCV decodes it straight
    into a pooled secure buffer (``cv2.imread(path, dst, flags)``, checked to have
    written there). A file that cannot be used (unreadable, not a JPEG, PNG, BMP or
    WebP, damaged, or too large) is skipped: counted in ``stats.skipped``, logged
    as a warning ``skipped <folder>/<file>: <reason>`` (the file's path and the
    reason, never its content), reported as the event ``frame_skipped`` with its
    index and the reason, and the next one is read (a folder of collected stills
    should not stop on one bad file).
    Sub-folders are not read.

    Args:
        path: The folder.
        every: Deliver every n-th image (the others are not decoded).
        pool_size: Frame buffers in the pool; when all are held by frames not yet
            released, :meth:`frames` waits (and :meth:`stop` ends the wait).
        on_event: Event handler (``frame_skipped``).
        allow_unlocked: Passed to the :class:`~lfr.SecurePool`.

    Raises:
        lfr.errors.SourceError: The folder holds no image file.
    """

    live = False

    def __init__(
        self,
        path: Path,
        *,
        every: int = 1,
        pool_size: int = 4,
        on_event: EventHandler | None = None,
        allow_unlocked: bool = False,
    ) -> None:
        super().__init__(
            kind="folder",
            spec=os.fspath(path),
            every=every,
            pool_size=pool_size,
            on_event=on_event,
            allow_unlocked=allow_unlocked,
        )
        try:
            entries = sorted(
                (p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                key=lambda p: p.name,
            )
        except OSError as exc:
            raise SourceError(
                f"cannot list folder {self.spec}: {exc.strerror or exc}"
            ) from None
        self._files = [p for p in entries if p.is_file()]
        if not self._files:
            raise SourceError(
                f"no images in folder {self.spec} (looked for "
                f"{', '.join(sorted(IMAGE_SUFFIXES))})"
            )

    def __len__(self) -> int:
        """Number of image files found."""
        return len(self._files)

    def _frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self._files):
            if self._stop.is_set():
                return
            self._counters.add("read")
            if index % self._every:
                continue
            stamp = _now()
            try:
                shape = read_size(path)
            except UnusableImageError as exc:
                self._skip(index, path, exc.reason)
                continue
            got = self._pools.acquire(shape[0] * shape[1] * 3, self._stop, wait=True)
            if got is None:
                return
            pool, buffer = got
            try:
                shape = decode_into(path, buffer, shape)
            except UnusableImageError as exc:
                pool.release(buffer)  # wipes what a failed decode may have left
                self._skip(index, path, exc.reason)
                continue
            except BaseException:
                pool.release(buffer)
                raise
            frame = self._frame(index, got, shape, stamp)
            self._counters.add("delivered")
            yield frame

    def _skip(self, index: int, path: Path, reason: str) -> None:
        self._counters.add("skipped")
        # The operator's log names the file (its path as the folder was given), so
        # it can be found; the event (which may go further, e.g. into an audit
        # record) carries the index only. Never the file's content.
        _log.warning("skipped %s: %s", path, reason)
        self._emit(
            "frame_skipped", {"kind": self.kind, "index": index, "reason": reason}
        )


class IterableSource(FrameSource):
    """Frames from any iterable of ``uint8`` BGR ``(h, w, 3)`` numpy arrays.

    Each array is copied into a pooled secure buffer (the caller owns, and should
    wipe, its arrays). A wrong array is a programming error, not a damaged input:
    it raises, naming the frame's index, rather than being skipped. Frames may
    change size; a larger one re-allocates the pool.

    Args:
        frames: The arrays; drawn lazily in the thread that iterates
            :meth:`frames` (:meth:`stop` takes effect between two arrays).
        every: Deliver every n-th array (the others are not checked or copied).
        pool_size: Frame buffers in the pool; when all are held by frames not yet
            released, :meth:`frames` waits (and :meth:`stop` ends the wait).
        on_event: Event handler (unused).
        allow_unlocked: Passed to the :class:`~lfr.SecurePool`.
    """

    live = False

    def __init__(
        self,
        frames: Iterable[Any],
        *,
        every: int = 1,
        pool_size: int = 4,
        on_event: EventHandler | None = None,
        allow_unlocked: bool = False,
    ) -> None:
        super().__init__(
            kind="iterable",
            spec=f"<{type(frames).__name__}>",
            every=every,
            pool_size=pool_size,
            on_event=on_event,
            allow_unlocked=allow_unlocked,
        )
        self._iterable = frames

    def _frames(self) -> Iterator[Frame]:
        """Yields the frames.

        Raises:
            TypeError: An array is not a ``uint8`` numpy array.
            ValueError: An array is not ``(h, w, 3)``, empty, or too large.
        """
        for index, array in enumerate(self._iterable):
            if self._stop.is_set():
                return
            self._counters.add("read")
            if index % self._every:
                continue
            try:
                shape = check_frame(array)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"frame {index} of the iterable: {exc}") from None
            stamp = _now()
            got = self._pools.acquire(shape[0] * shape[1] * 3, self._stop, wait=True)
            if got is None:
                return
            frame = self._frame(index, got, shape, stamp)
            np.copyto(frame.image, array)
            self._counters.add("delivered")
            yield frame
