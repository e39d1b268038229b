"""Sources of still images: a folder of image files, or any iterable of arrays."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lfr.align import check_frame
from lfr.errors import SourceError
from lfr.sources._base import (
    EventHandler,
    Frame,
    FrameSource,
    _convert_into,
    _decoded_shape,
    _now,
)

__all__ = ["IMAGE_SUFFIXES", "FolderSource", "IterableSource"]

_log = logging.getLogger("lfr.sources")

#: File name endings a folder source reads (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class FolderSource(FrameSource):
    """The images of a folder, sorted by file name, as frames.

    Each file is decoded by OpenCV into a temporary array, copied into a pooled
    secure buffer, and the temporary (and the file's bytes) zeroed. A file that does
    not decode is skipped: counted in ``stats.skipped``, reported as the event
    ``frame_skipped`` with its index, and the next one is read (a folder of
    collected stills should not stop on one damaged file). Sub-folders are not read.

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
        what = f"folder {self.spec}"
        for index, path in enumerate(self._files):
            if self._stop.is_set():
                return
            self._counters.add("read")
            if index % self._every:
                continue
            stamp = _now()
            try:
                data = np.fromfile(path, dtype=np.uint8)
            except OSError as exc:
                self._skip(index, type(exc).__name__)
                continue
            image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            data.fill(0)
            if image is None or image.size == 0:
                self._skip(index, "not a decodable image")
                continue
            try:
                shape = _decoded_shape(image, what)
                got = self._pools.acquire(
                    shape[0] * shape[1] * 3, self._stop, wait=True
                )
                if got is None:
                    return
                frame = self._frame(index, got, shape, stamp)
                try:
                    _convert_into(image, frame.image, what)
                except BaseException:
                    frame.release()
                    raise
            finally:
                image.fill(0)
            self._counters.add("delivered")
            yield frame

    def _skip(self, index: int, reason: str) -> None:
        self._counters.add("skipped")
        _log.warning("image %d of a folder source skipped: %s", index, reason)
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
