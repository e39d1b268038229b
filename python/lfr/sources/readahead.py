"""Reading a file, folder or iterable source ahead, on a capture thread.

Decoding the next frame then overlaps with processing this one (on another
core). The queue is bounded (two frames), so nothing is dropped and memory stays
flat; live sources have their own reader thread and newest-wins mailbox instead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from lfr.protocols import Source
from lfr.sources._base import Frame

__all__ = ["read_ahead"]

#: Frames decoded ahead at most.
AHEAD = 2


def read_ahead(source: Source, stop: threading.Event, name: str) -> Iterator[Frame]:
    """``source.frames()``, decoded by a capture thread while the caller works.

    Args:
        source: A file, folder or iterable source.
        stop: Set it to end the capture thread promptly (this generator sets
            it when it ends, and stops the source).
        name: The capture thread's name.

    Yields:
        The frames, in order; the caller releases each.

    Raises:
        Whatever the source raised while decoding, at the frame it failed on.
    """
    ready: queue.Queue[Frame | BaseException | None] = queue.Queue(maxsize=AHEAD)

    def capture() -> None:
        try:
            for frame in source.frames():
                while not stop.is_set():
                    try:
                        ready.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                else:
                    frame.release()
                    return
        except BaseException as exc:
            _put_until(ready, exc, stop)
            return
        _put_until(ready, None, stop)

    reader = threading.Thread(target=capture, name=name, daemon=True)
    reader.start()
    try:
        while True:
            try:
                item = ready.get(timeout=0.1)
            except queue.Empty:
                if (stop.is_set() or not reader.is_alive()) and ready.empty():
                    return
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        source.stop()
        while reader.is_alive() or not ready.empty():
            try:
                left = ready.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(left, Frame):
                left.release()
        reader.join()


def _put_until(
    ready: queue.Queue[Frame | BaseException | None],
    item: BaseException | None,
    stop: threading.Event,
) -> None:
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
