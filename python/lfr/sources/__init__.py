"""Where frames come from: cameras, network streams, video files, folders, arrays.

:func:`open_source` turns a camera index, a stream URL, a path or an iterable of
arrays into a :class:`FrameSource`, whose :meth:`~FrameSource.frames` yields
:class:`Frame` objects. Every frame's pixels are in a :class:`~lfr.SecureBuffer`
leased from a :class:`~lfr.SecurePool` sized for the stream: OpenCV decodes video
and still images straight into it (a still's size is read from its header and
bounded first, :data:`MAX_STILL_PIXELS`), and caller arrays are copied into it.
Release each frame when its faces are decided; that wipes the buffer and returns it
to the pool. :func:`read_into` does the same for a ``cv2.VideoCapture`` of your own:
the frame lands in your pooled buffer, or a :class:`~lfr.errors.CaptureMismatchError`
says it did not.

Live sources (cameras, streams) never fall behind: the newest frame wins, older
unconsumed ones are wiped and counted as dropped, and a lost stream is retried with
exponential backoff, reported through ``on_event`` (counts and times, no pixels).
Files, folders and iterables deliver every frame (or every n-th) in order.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import numpy.typing as npt

from lfr.errors import SourceError
from lfr.sources._base import (
    Backoff,
    EventHandler,
    Frame,
    FrameSource,
    SourceStats,
    redact_url,
)
from lfr.sources._capture import Capture, LiveSource, VideoSource, open_cv
from lfr.sources._images import IMAGE_SUFFIXES, FolderSource, IterableSource
from lfr.sources._read_into import read_into
from lfr.sources._stills import MAX_STILL_PIXELS, UnusableImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_STILL_PIXELS",
    "STREAM_SCHEMES",
    "Backoff",
    "Capture",
    "EventHandler",
    "FolderSource",
    "Frame",
    "FrameSource",
    "IterableSource",
    "LiveSource",
    "SourceSpec",
    "SourceStats",
    "UnusableImageError",
    "VideoSource",
    "open_source",
    "read_into",
    "redact_url",
]

#: What :func:`open_source` opens: a camera index, a device path, a video file, a
#: folder of images, a stream URL, or an iterable of ``uint8[h, w, 3]`` frames.
SourceSpec = Union[int, str, os.PathLike[str], Iterable[npt.NDArray[np.uint8]]]

#: URL schemes read as network streams, through OpenCV's FFmpeg backend.
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "udp", "tcp"})

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DIGITS = re.compile(r"[0-9]+")


def open_source(
    spec: object,
    *,
    every: int = 1,
    pool_size: int = 4,
    reconnect: Backoff | None = None,
    on_event: EventHandler | None = None,
    timeout: float = 10.0,
    allow_unlocked: bool = False,
) -> FrameSource:
    """Opens a source of frames.

    Args:
        spec: One of
            - a camera index (``0``, or the string ``"0"``) or a video device path
              (``/dev/video0``): live;
            - a stream URL (``rtsp://``, ``rtsps://``, ``http://``, ``https://``,
              ``udp://``, ``tcp://``), read by OpenCV's FFmpeg backend (FFmpeg
              options such as ``rtsp_transport;tcp`` go in the environment variable
              ``OPENCV_FFMPEG_CAPTURE_OPTIONS``; FFmpeg prints its own errors on
              stderr unless ``OPENCV_FFMPEG_LOGLEVEL`` is set, ``-8`` for none, as
              the ``lfr`` command does): live;
            - a video file path: every frame, the first one read here;
            - a folder of images (``.jpg .jpeg .png .bmp .webp``, sorted by name;
              files that are damaged, not JPEG, PNG, BMP or WebP, or larger than
              :data:`MAX_STILL_PIXELS` are skipped, counted and logged by name);
            - an iterable of ``uint8`` BGR ``(h, w, 3)`` numpy arrays (a wrong one
              raises ``TypeError``/``ValueError`` naming its index).
        every: Deliver every n-th frame only (frame indices keep counting all).
        pool_size: Secure frame buffers in the pool. Live sources need 2 for
            themselves; the rest are for frames the consumer holds.
        reconnect: How a lost live stream is retried; ``None`` for ``Backoff()``
            (0.5 s doubling to 10 s, for ever). Ignored by other sources.
        on_event: ``on_event(name, payload)`` for ``stream_lost``,
            ``stream_recovered``, ``stream_ended`` (live sources, called from the
            reader thread) and ``frame_skipped`` (folders); payloads hold counts and
            times only.
        timeout: Seconds a network stream may take to open, or stall in a read,
            before it counts as lost.
        allow_unlocked: Run with frame buffers that cannot be locked in memory
            (see :class:`~lfr.SecureBuffer`).

    Returns:
        The source; use it as a context manager, or call :meth:`~FrameSource.close`.

    Raises:
        lfr.errors.SourceError: Nothing at the path, a file that is not a readable
            video (its first frame does not decode), a folder without images, a
            camera or URL that cannot be opened, or an unsupported ``spec``.
        lfr.errors.SecureMemoryError: The frame pool cannot be locked.
        TypeError: ``every`` or ``pool_size`` is not an int.
        ValueError: ``every`` or ``pool_size`` is below 1.

    Examples:
        >>> import numpy as np, lfr.sources
        >>> arrays = (np.full((48, 64, 3), i, np.uint8) for i in range(6))
        >>> with lfr.sources.open_source(arrays, every=2) as source:
        ...     for frame in source.frames():
        ...         with frame:
        ...             print(frame.index, int(frame.image[0, 0, 0]))
        0 0
        2 2
        4 4
    """
    if isinstance(spec, (bool, np.bool_)):
        raise SourceError("unsupported source: a bool (camera indices are ints)")
    if isinstance(spec, (int, np.integer)) or (
        isinstance(spec, str) and _DIGITS.fullmatch(spec.strip())
    ):
        return _camera(
            int(spec),
            every=every,
            pool_size=pool_size,
            allow_unlocked=allow_unlocked,
            reconnect=reconnect,
            on_event=on_event,
        )
    if isinstance(spec, str) and (match := _URL.match(spec)):
        scheme = match.group(1).lower()
        shown = redact_url(spec)
        if scheme not in STREAM_SCHEMES:
            raise SourceError(
                f"unsupported URL scheme {scheme!r} in {shown} (streams: "
                f"{', '.join(sorted(STREAM_SCHEMES))}; files: a plain path)"
            )
        ms = max(1, round(timeout * 1000))
        params = (
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            ms,
        )
        return LiveSource(
            partial(open_cv, spec, cv2.CAP_FFMPEG, params),
            kind="stream",
            spec=shown,
            every=every,
            pool_size=pool_size,
            reconnect=reconnect,
            on_event=on_event,
            allow_unlocked=allow_unlocked,
        )
    if isinstance(spec, (str, os.PathLike)):
        return _path(
            Path(spec),
            every=every,
            pool_size=pool_size,
            allow_unlocked=allow_unlocked,
            reconnect=reconnect,
            on_event=on_event,
        )
    if isinstance(spec, (bytes, bytearray, memoryview)):
        raise SourceError(
            f"unsupported source: {type(spec).__name__} (pass a path, URL, "
            "camera index or an iterable of frames)"
        )
    if isinstance(spec, np.ndarray) and spec.ndim != 4:
        raise SourceError(
            f"unsupported source: an array of shape {spec.shape}; pass an "
            "iterable of (h, w, 3) frames, e.g. [frame] or an (n, h, w, 3) array"
        )
    if isinstance(spec, Iterable):
        return IterableSource(
            spec,
            every=every,
            pool_size=pool_size,
            on_event=on_event,
            allow_unlocked=allow_unlocked,
        )
    raise SourceError(
        f"unsupported source: {type(spec).__name__} (pass a camera index, a stream "
        "URL, a video file, a folder of images or an iterable of frames)"
    )


def _camera(
    target: int | str,
    *,
    every: int,
    pool_size: int,
    allow_unlocked: bool,
    reconnect: Backoff | None,
    on_event: EventHandler | None,
) -> LiveSource:
    if isinstance(target, int) and target < 0:
        raise SourceError(f"camera index must be >= 0, got {target}")
    return LiveSource(
        partial(open_cv, target),
        kind="camera",
        spec=str(target),
        every=every,
        pool_size=pool_size,
        reconnect=reconnect,
        on_event=on_event,
        allow_unlocked=allow_unlocked,
    )


def _path(
    path: Path,
    *,
    every: int,
    pool_size: int,
    allow_unlocked: bool,
    reconnect: Backoff | None,
    on_event: EventHandler | None,
) -> FrameSource:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(f"nothing at {path}") from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        return FolderSource(
            path,
            every=every,
            pool_size=pool_size,
            on_event=on_event,
            allow_unlocked=allow_unlocked,
        )
    if stat.S_ISCHR(mode):  # a video device such as /dev/video0
        return _camera(
            str(path),
            every=every,
            pool_size=pool_size,
            allow_unlocked=allow_unlocked,
            reconnect=reconnect,
            on_event=on_event,
        )
    if not os.access(path, os.R_OK):
        raise SourceError(f"cannot read {path}: permission denied")
    return VideoSource(
        partial(open_cv, str(path)),
        spec=str(path),
        every=every,
        pool_size=pool_size,
        on_event=on_event,
        allow_unlocked=allow_unlocked,
    )
