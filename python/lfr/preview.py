"""The operator preview: the live picture, with every passer-by blurred.

Officers watching a live deployment see the camera's picture with a box and the
subject id around each face that matched the watchlist, and every other face made
unrecognisable. :func:`blur_faces` renders one such frame, :class:`PreviewWriter`
writes frames to a video file and :class:`Preview` ties both together for the
pipeline (``preview.render(frame, boxes, keep, labels)`` once per processed frame).

How a face is blurred: its box, grown by :data:`MARGIN` (20 %) of its width and
height on every side (hair, ears and chin included) and clipped to the frame, is
averaged down to a grid of at most :data:`BLOCKS` x :data:`BLOCKS` (8 x 8) blocks,
then smoothed with a Gaussian of 1.5 blocks' standard deviation and scaled back over
the box. What is left is a soft blob of the face's average colours. Measured with
YuNet (:class:`lfr.FaceDetector`, default threshold) on the 2,058 faces it finds in
the 1,585 photos of ``lfw-dev`` where it finds any: after blurring, none of them
was found again (no detection overlapping a blurred face by an IoU above 0.5; the
largest was 0.38), while pixelation alone (sharp 8 x 8 blocks) left 26 of them
detectable, a blur of half a block 559 and of one block 3. The strength is fixed on
purpose: there is no setting that weakens it.

Privacy:

* **Passers-by.** Every face not marked ``keep`` is blurred before anything leaves
  this module, so neither the display nor a preview file holds an identifiable
  face that did not match. A face the detector missed is not blurred: the preview
  is only as good as the detections it is given.
* **Matched faces stay visible** (officers must see whom the alert is about), with
  their subject id when one is given. Where a blurred area overlaps a matched face,
  the blur wins.
* **Face data in memory.** The rendered frame lives in a
  :class:`~lfr.secure.SecureBuffer` (the caller's ``out``, or :class:`Preview`'s own
  buffer, wiped after every frame); the small images a blur goes through live in a
  secure scratch buffer that is wiped after every call. OpenCV writes straight into
  them (``dst=``) and every call is checked to have written in place. Copies that
  OpenCV or the video encoder make internally are outside lfr's reach (see
  docs/data-handling.md).
* **The preview file is not encrypted** and is **outside lfr's retention**: no
  expiry, no crypto-shredding, no audit of who watched it. It holds matched faces
  in the clear. Prefer the callback (``on_frame``: a live display that keeps
  nothing) to a file. Where a file is needed, write it to an encrypted volume that
  only the operators can read, and delete it under the same rules as alerts (UK
  practice: within 24 hours unless kept for a specific case). :class:`PreviewWriter`
  creates the file readable by its owner only (mode ``0600``) and logs a warning
  when it opens one.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lfr._closing import Closing
from lfr.align import MAX_FRAME_SIDE, check_frame, opencv_reads_in_place
from lfr.secure import SecureBuffer

__all__ = [
    "BLOCKS",
    "MARGIN",
    "Preview",
    "PreviewWriter",
    "blur_faces",
    "blur_region",
]

_log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]

#: Each side of a blurred box grows by this fraction of the box's width or height.
MARGIN = 0.2
#: A blurred box is averaged down to at most ``BLOCKS x BLOCKS`` blocks.
BLOCKS = 8
# Pixels per block of the intermediate mosaic the Gaussian runs on (64 x 64 in all,
# whatever the face's size, so a blur costs the same for a small and a large face),
# and the Gaussian's standard deviation in those pixels: 1.5 blocks.
_CELL = 8
_SIGMA = 1.5 * _CELL
_SMALL_BYTES = BLOCKS * BLOCKS * 3
_MOSAIC_BYTES = (BLOCKS * _CELL) ** 2 * 3
_SCRATCH_BYTES = _SMALL_BYTES + 2 * _MOSAIC_BYTES

# Matched faces: a 2-pixel red frame inside the box and the label on red.
_COLOUR = (0, 0, 255)
_TEXT_COLOUR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.5
_PAD = 2


def _in_place(result: npt.NDArray[Any], dst: U8, what: str) -> None:
    """Refuses a result OpenCV allocated instead of writing into ``dst``."""
    if result is not dst and result.ctypes.data != dst.ctypes.data:
        # Never expected for a matching destination, and never silently accepted.
        if result.flags.writeable:
            result.fill(0)
        raise RuntimeError(f"cv2.{what} did not write into the given buffer")


def blur_region(
    box: npt.ArrayLike, height: int, width: int
) -> tuple[int, int, int, int]:
    """The pixels :func:`blur_faces` blurs for one box.

    Args:
        box: ``(x1, y1, x2, y2)`` in frame pixels; may lie partly or wholly outside
            the frame.
        height: Frame height in pixels.
        width: Frame width in pixels.

    Returns:
        ``(x1, y1, x2, y2)`` integer pixel bounds (``x2``, ``y2`` exclusive) of the
        box grown by :data:`MARGIN` on every side, rounded outwards and clipped to
        the frame; empty (``x2 <= x1`` or ``y2 <= y1``) where nothing of it is
        inside.

    Examples:
        >>> from lfr.preview import blur_region
        >>> blur_region([10, 20, 60, 70], 100, 200)
        (0, 10, 70, 80)
        >>> blur_region([-50, 90, 20, 150], 100, 200)
        (0, 78, 34, 100)
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    dx, dy = MARGIN * (x2 - x1), MARGIN * (y2 - y1)
    return (
        max(0, math.floor(x1 - dx)),
        max(0, math.floor(y1 - dy)),
        min(width, math.ceil(x2 + dx)),
        min(height, math.ceil(y2 + dy)),
    )


def _box_pixels(
    box: npt.NDArray[np.float64], height: int, width: int
) -> tuple[int, int, int, int]:
    """A box's own pixel bounds, rounded outwards and clipped to the frame."""
    return (
        max(0, math.floor(box[0])),
        max(0, math.floor(box[1])),
        min(width, math.ceil(box[2])),
        min(height, math.ceil(box[3])),
    )


def _blur(roi: U8, scratch: SecureBuffer) -> None:
    """Pixelates and smooths ``roi`` (a view of the rendered frame) in place."""
    rh, rw = roi.shape[:2]
    bh, bw = min(BLOCKS, rh), min(BLOCKS, rw)
    mh, mw = bh * _CELL, bw * _CELL
    flat = scratch.array(np.uint8, _SCRATCH_BYTES)
    small = flat[: bh * bw * 3].reshape(bh, bw, 3)
    mosaic = flat[_SMALL_BYTES : _SMALL_BYTES + mh * mw * 3].reshape(mh, mw, 3)
    smooth_at = _SMALL_BYTES + _MOSAIC_BYTES
    smooth = flat[smooth_at : smooth_at + mh * mw * 3].reshape(mh, mw, 3)
    _in_place(
        cv2.resize(roi, (bw, bh), dst=small, interpolation=cv2.INTER_AREA),
        small,
        "resize",
    )
    _in_place(
        cv2.resize(small, (mw, mh), dst=mosaic, interpolation=cv2.INTER_NEAREST),
        mosaic,
        "resize",
    )
    _in_place(
        cv2.GaussianBlur(mosaic, (0, 0), _SIGMA, dst=smooth, sigmaY=_SIGMA),
        smooth,
        "GaussianBlur",
    )
    _in_place(
        cv2.resize(smooth, (rw, rh), dst=roi, interpolation=cv2.INTER_LINEAR),
        roi,
        "resize",
    )


def _mark(out: U8, box: tuple[int, int, int, int], label: str | None) -> None:
    """Draws a matched face's frame (inside its box) and label (above it)."""
    x1, y1, x2, y2 = box
    for inset in range(2):
        if x2 - 1 - inset < x1 + inset or y2 - 1 - inset < y1 + inset:
            break
        _in_place(
            cv2.rectangle(
                out,
                (x1 + inset, y1 + inset),
                (x2 - 1 - inset, y2 - 1 - inset),
                _COLOUR,
                1,
            ),
            out,
            "rectangle",
        )
    if not label:
        return
    (tw, th), base = cv2.getTextSize(label, _FONT, _FONT_SCALE, 1)
    bh = th + base + 2 * _PAD
    # Above the box where there is room, else just inside its top edge.
    top = y1 - bh if y1 - bh >= 0 else y1
    _in_place(
        cv2.rectangle(
            out, (x1, top), (x1 + tw + 2 * _PAD - 1, top + bh - 1), _COLOUR, -1
        ),
        out,
        "rectangle",
    )
    _in_place(
        cv2.putText(
            out,
            label,
            (x1 + _PAD, top + _PAD + th),
            _FONT,
            _FONT_SCALE,
            _TEXT_COLOUR,
            1,
            cv2.LINE_AA,
        ),
        out,
        "putText",
    )


def _check_out(out: object, shape: tuple[int, ...]) -> U8:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.dtype != np.uint8:
        raise TypeError(f"out must be uint8, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out must have the frame's shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writable")
    return out


def _check_faces(
    boxes: npt.ArrayLike,
    keep: npt.ArrayLike,
    labels: Sequence[str | None] | None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4), got {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError("boxes contain NaN or infinity")
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise ValueError("boxes must have x1 <= x2 and y1 <= y2")
    k = np.asarray(keep)
    if k.size == 0:
        k = k.reshape(0).astype(np.bool_)
    if k.dtype != np.bool_:
        raise TypeError(f"keep must be booleans (True: a matched face), got {k.dtype}")
    if k.shape != (b.shape[0],):
        raise ValueError(
            f"keep must have shape ({b.shape[0]},) for {b.shape[0]} boxes, "
            f"got {k.shape}"
        )
    if labels is not None:
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of str or None, not one str")
        if len(labels) != b.shape[0]:
            raise ValueError(
                f"labels must have one entry per box ({b.shape[0]}), got {len(labels)}"
            )
        for label in labels:
            if label is not None and not isinstance(label, str):
                raise TypeError(
                    f"labels must be str or None, got {type(label).__name__}"
                )
    return b, k


def _render(
    frame: U8,
    boxes: npt.NDArray[np.float64],
    keep: npt.NDArray[np.bool_],
    labels: Sequence[str | None] | None,
    out: U8,
    scratch: SecureBuffer | None,
) -> None:
    """:func:`blur_faces` on checked inputs, with the caller's scratch buffer.

    ``scratch`` may be ``None`` only where no face is blurred; it is wiped before
    this returns.
    """
    h, w = out.shape[:2]
    if out is not frame:
        np.copyto(out, frame)
    if scratch is None:
        if not keep.all():
            raise ValueError("blurring needs a scratch buffer")
    else:
        try:
            for box, kept in zip(boxes, keep):
                if kept:
                    continue
                x1, y1, x2, y2 = blur_region(box, h, w)
                if x2 > x1 and y2 > y1:
                    _blur(out[y1:y2, x1:x2], scratch)
        finally:
            scratch.wipe()
    for i in np.flatnonzero(keep):
        x1, y1, x2, y2 = _box_pixels(boxes[i], h, w)
        if x2 > x1 and y2 > y1:
            _mark(out, (x1, y1, x2, y2), None if labels is None else labels[int(i)])


def blur_faces(
    frame: U8,
    boxes: npt.ArrayLike,
    keep: npt.ArrayLike,
    labels: Sequence[str | None] | None = None,
    *,
    out: U8,
    allow_unlocked: bool = False,
) -> U8:
    """Copies ``frame`` into ``out`` with every face not kept made unrecognisable.

    Each box whose ``keep`` flag is False is blurred over :func:`blur_region` (the
    box grown by :data:`MARGIN`, clipped to the frame): averaged down to at most
    :data:`BLOCKS` x :data:`BLOCKS` blocks, smoothed with a Gaussian of 1.5 blocks
    and scaled back. Each kept (matched) box gets a 2-pixel red frame drawn just
    inside it and, where ``labels`` gives one, its label on red above it (inside
    its top edge where there is no room above). Labels of faces not kept are never
    drawn. Blurring comes first, so where a blurred area overlaps a kept face, the
    blur wins; nothing outside the blurred areas, the frames and the labels
    changes.

    Everything is written in place into ``out``; the small images a blur goes
    through live in a secure scratch buffer that is wiped before this returns,
    also on error.

    Args:
        frame: ``uint8[h, w, 3]`` BGR image, any strides. Read, never written
            (unless it is ``out`` itself).
        boxes: ``[n, 4]`` ``(x1, y1, x2, y2)`` face boxes in frame pixels, for
            example ``Detections.boxes``; may lie partly or wholly outside the
            frame.
        keep: ``bool[n]``: True for a face that matched the watchlist (shown),
            False for every other face (blurred).
        labels: Optional text per box (the subject id of a matched face), or
            ``None`` entries; drawn for kept faces only.
        out: ``uint8[h, w, 3]`` C-contiguous, writable destination, normally a
            :class:`~lfr.secure.SecureBuffer` view; may be ``frame`` itself to
            blur in place.
        allow_unlocked: Passed to the scratch :class:`~lfr.secure.SecureBuffer`.

    Returns:
        ``out``.

    Raises:
        TypeError: ``frame`` or ``out`` is not a uint8 array, ``keep`` is not
            boolean, or a label is not a string.
        ValueError: Shapes disagree, a box is not finite or has ``x2 < x1`` or
            ``y2 < y1``, ``out`` is not C-contiguous and writable, or ``out``
            overlaps ``frame`` without being it.
        RuntimeError: OpenCV did not write in place (never expected).
        lfr.errors.SecureMemoryError: The scratch buffer cannot be locked.

    Examples:
        >>> import numpy as np, lfr
        >>> from lfr.preview import blur_faces
        >>> rng = np.random.default_rng(0)
        >>> frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        >>> with lfr.SecureBuffer(frame.nbytes) as buf:
        ...     out = buf.array(np.uint8, frame.shape)
        ...     _ = blur_faces(frame, [[40, 30, 90, 90]], [False], out=out)
        ...     changed = bool((out[30:90, 40:90] != frame[30:90, 40:90]).any())
        ...     same = bool((out[:, 110:] == frame[:, 110:]).all())
        ...     del out
        >>> changed, same
        (True, True)
    """
    h, w = check_frame(frame)
    target = _check_out(out, (h, w, 3))
    b, k = _check_faces(boxes, keep, labels)
    if target is not frame and np.may_share_memory(frame, target):
        raise ValueError("out overlaps frame: pass frame itself or a separate array")
    if k.all():
        _render(frame, b, k, labels, target, None)
        return target
    with SecureBuffer(_SCRATCH_BYTES, allow_unlocked=allow_unlocked) as scratch:
        _render(frame, b, k, labels, target, scratch)
    return target


def _check_fps(fps: object) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.floating)):
        raise TypeError(f"fps must be a number, got {type(fps).__name__}")
    if not (math.isfinite(float(fps)) and float(fps) > 0.0):
        raise ValueError(f"fps must be positive and finite, got {fps}")
    return float(fps)


class PreviewWriter(Closing):
    """Writes preview frames to a video file (``cv2.VideoWriter``).

    The file is created readable and writable by its owner only (mode ``0600``;
    an existing file is replaced, and its mode tightened). It is **not encrypted
    and outside lfr's retention** (see the module's docstring): opening one logs a
    warning that says so. Write only frames rendered by :func:`blur_faces`.

    Frames of another size than ``size`` are stretched to it (area
    interpolation) in a secure scratch buffer, wiped after each frame, so that a
    camera that changes resolution mid-stream does not end the recording; frames
    that OpenCV could not read in place (flipped or strided views) go through the
    same buffer.

    Args:
        path: The video file. Its folder must exist.
        fps: Frames per second written into the file's header.
        size: ``(width, height)`` of the video in pixels, as OpenCV takes it.
        codec: FourCC of the encoder: ``"mp4v"`` (MPEG-4 part 2, for ``.mp4``)
            by default; ``"MJPG"`` suits ``.avi``.
        allow_unlocked: Passed to the scratch :class:`~lfr.secure.SecureBuffer`.

    Raises:
        OSError: The file cannot be created, or OpenCV cannot open a writer for
            it with this codec (the message says which).
        ValueError: ``fps``, ``size`` or ``codec`` is out of range.
        TypeError: A parameter has the wrong type.

    Examples:
        >>> import numpy as np, tempfile, pathlib
        >>> from lfr.preview import PreviewWriter
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with PreviewWriter(folder / "preview.mp4", 10.0, (64, 48)) as writer:
        ...     writer.write(np.zeros((48, 64, 3), np.uint8))
        >>> writer.frames
        1
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        size: tuple[int, int],
        *,
        codec: str = "mp4v",
        allow_unlocked: bool = False,
    ) -> None:
        self._fps = _check_fps(fps)
        if not isinstance(codec, str) or len(codec) != 4 or not codec.isascii():
            raise ValueError(f"codec must be a four-character code, got {codec!r}")
        if len(size) != 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size
        ):
            raise TypeError(f"size must be (width, height) as ints, got {size!r}")
        width, height = int(size[0]), int(size[1])
        if not (0 < width <= MAX_FRAME_SIDE and 0 < height <= MAX_FRAME_SIDE):
            raise ValueError(
                f"size must be 1..{MAX_FRAME_SIDE} pixels on a side, got {size!r}"
            )
        self._path = Path(os.fspath(path))
        self._size = (width, height)
        self._codec = codec
        self._allow_unlocked = allow_unlocked
        self._frames = 0
        self._scratch: SecureBuffer | None = None
        self._lock = threading.Lock()
        existed = self._path.exists()
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        writer = cv2.VideoWriter(
            str(self._path),
            cv2.VideoWriter.fourcc(*codec),
            self._fps,
            self._size,
            True,
        )
        if not writer.isOpened():
            writer.release()
            if not existed:
                self._path.unlink(missing_ok=True)
            raise OSError(
                f"OpenCV cannot open a video writer for {self._path} with codec "
                f"{codec!r}: try another codec or file extension (mp4v for .mp4, "
                "MJPG for .avi)"
            )
        self._writer: cv2.VideoWriter | None = writer
        _log.warning(
            "writing the operator preview to %s: the file is not encrypted and is "
            "outside lfr's retention; keep it on an encrypted volume and delete it "
            "as alerts are deleted",
            self._path,
        )

    @property
    def path(self) -> Path:
        """The video file."""
        return self._path

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the video."""
        return self._size

    @property
    def fps(self) -> float:
        """Frames per second in the file's header."""
        return self._fps

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self._frames

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._writer is None

    def write(self, frame: U8) -> None:
        """Appends one frame.

        Args:
            frame: ``uint8[h, w, 3]`` BGR image; stretched to :attr:`size` if it
                has another size.

        Raises:
            TypeError: ``frame`` is not a uint8 array.
            ValueError: ``frame`` is not ``(h, w, 3)`` or is empty.
            RuntimeError: The writer is closed.
        """
        h, w = check_frame(frame)
        with self._lock:
            if self._writer is None:
                raise RuntimeError("the preview writer is closed")
            width, height = self._size
            if (w, h) == self._size and opencv_reads_in_place(frame):
                self._writer.write(frame)
            else:
                if self._scratch is None:
                    self._scratch = SecureBuffer(
                        width * height * 3, allow_unlocked=self._allow_unlocked
                    )
                view = self._scratch.array(np.uint8, (height, width, 3))
                try:
                    if (w, h) == self._size:
                        np.copyto(view, frame)
                    else:
                        _in_place(
                            cv2.resize(
                                frame,
                                self._size,
                                dst=view,
                                interpolation=cv2.INTER_AREA,
                            ),
                            view,
                            "resize",
                        )
                    self._writer.write(view)
                finally:
                    del view
                    self._scratch.wipe()
            self._frames += 1

    def close(self) -> None:
        """Finishes the file and frees the scratch buffer; idempotent."""
        with self._lock:
            if self._writer is not None:
                self._writer.release()
                self._writer = None
                _log.debug(
                    "preview %s closed after %d frames", self._path, self._frames
                )
            if self._scratch is not None:
                self._scratch.discard()
                self._scratch = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"PreviewWriter({str(self._path)!r}, {self._size[0]}x{self._size[1]}, "
            f"{self._fps:g} fps, {self._frames} frames, {state})"
        )


class Preview(Closing):
    """The pipeline's operator preview: blur, then show and/or record each frame.

    :meth:`render` writes the frame, with every face not kept blurred
    (:func:`blur_faces`), into a :class:`~lfr.secure.SecureBuffer` that the
    preview allocates once per frame size. It then writes it to the video file
    (when ``path`` is given) and passes it to ``on_frame`` (when given), and wipes
    the buffer before it returns, also on error.

    ``on_frame`` receives a **read-only view of that buffer**, valid only during
    the call: a callback that keeps the picture (a display's back buffer, a queue)
    must copy it, and a reference kept without copying reads as zeros afterwards.
    A copy outside secure memory is the callback's responsibility; it holds no
    unblurred passer-by.

    The video file (see :class:`PreviewWriter`) is opened at the first frame, at
    that frame's size; later frames of another size are stretched to it. It is
    **not encrypted and outside lfr's retention**: prefer ``on_frame`` alone
    where no recording is needed.

    Thread-safe: :meth:`render` calls run one at a time.

    Args:
        path: Video file to record the preview in, or ``None`` for none. Its
            folder must exist.
        fps: Frames per second of the video file.
        on_frame: Called with each rendered ``uint8[h, w, 3]`` BGR frame.
        codec: FourCC of the video file's encoder (see :class:`PreviewWriter`).
        allow_unlocked: Passed to the :class:`~lfr.secure.SecureBuffer` s: run even
            where the memory cannot be locked. The default fails closed.

    Raises:
        ValueError: Neither ``path`` nor ``on_frame`` is given, or ``fps`` is out
            of range.
        FileNotFoundError: ``path``'s folder does not exist.
        TypeError: ``on_frame`` is not callable.

    Examples:
        >>> import numpy as np
        >>> from lfr.preview import Preview
        >>> shown = []
        >>> with Preview(on_frame=lambda image: shown.append(image.copy())) as preview:
        ...     frame = np.full((48, 64, 3), 200, np.uint8)
        ...     preview.render(frame, [[10, 10, 30, 40]], [False])
        >>> len(shown), shown[0].shape
        (1, (48, 64, 3))
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        fps: float = 10.0,
        on_frame: Callable[[U8], None] | None = None,
        codec: str = "mp4v",
        allow_unlocked: bool = False,
    ) -> None:
        self._fps = _check_fps(fps)
        if path is None and on_frame is None:
            raise ValueError("a Preview needs a path, an on_frame callback or both")
        if on_frame is not None and not callable(on_frame):
            raise TypeError(f"on_frame must be callable, got {type(on_frame).__name__}")
        self._path = None if path is None else Path(os.fspath(path))
        if self._path is not None and not self._path.parent.is_dir():
            raise FileNotFoundError(
                f"the preview's folder {self._path.parent} does not exist"
            )
        self._on_frame = on_frame
        self._codec = codec
        self._allow_unlocked = allow_unlocked
        self._writer: PreviewWriter | None = None
        self._buffer: SecureBuffer | None = None
        self._shape: tuple[int, int, int] | None = None
        self._scratch: SecureBuffer | None = None
        self._frames = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        """The video file, or ``None``."""
        return self._path

    @property
    def frames(self) -> int:
        """Frames rendered so far."""
        return self._frames

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def buffers(self) -> tuple[SecureBuffer, ...]:
        """The secure buffers that hold the rendered frame during :meth:`render`.

        For audits and tests: outside a call they are all zeros.
        """
        return tuple(b for b in (self._buffer, self._scratch) if b is not None)

    def render(
        self,
        frame: U8,
        boxes: npt.ArrayLike,
        keep: npt.ArrayLike,
        labels: Sequence[str | None] | None = None,
    ) -> None:
        """Renders one frame and records and/or shows it.

        Args:
            frame: ``uint8[h, w, 3]`` BGR camera frame, any strides; read, never
                written.
            boxes: ``[n, 4]`` ``(x1, y1, x2, y2)`` face boxes in frame pixels.
            keep: ``bool[n]``: True for a face that matched (shown), False for
                every other face (blurred).
            labels: Optional subject id per box, drawn for kept faces only.

        Raises:
            TypeError: ``frame`` is not a uint8 array, ``keep`` is not boolean,
                or a label is not a string.
            ValueError: Shapes disagree or a box is not valid.
            RuntimeError: The preview is closed.
            OSError: The video file cannot be opened (first frame).
            Exception: Whatever ``on_frame`` raises (the buffer is wiped first).
        """
        h, w = check_frame(frame)
        b, k = _check_faces(boxes, keep, labels)
        with self._lock:
            if self._closed:
                raise RuntimeError("the preview is closed")
            if self._path is not None and self._writer is None:
                self._writer = PreviewWriter(
                    self._path,
                    self._fps,
                    (w, h),
                    codec=self._codec,
                    allow_unlocked=self._allow_unlocked,
                )
            buffer = self._frame_buffer((h, w, 3))
            if self._scratch is None:
                self._scratch = SecureBuffer(
                    _SCRATCH_BYTES, allow_unlocked=self._allow_unlocked
                )
            image = buffer.array(np.uint8, (h, w, 3))
            try:
                _render(frame, b, k, labels, image, self._scratch)
                if self._writer is not None:
                    self._writer.write(image)
                if self._on_frame is not None:
                    shown = image.view()
                    shown.flags.writeable = False
                    try:
                        self._on_frame(shown)
                    finally:
                        del shown
            finally:
                del image
                buffer.wipe()
            self._frames += 1

    def _frame_buffer(self, shape: tuple[int, int, int]) -> SecureBuffer:
        if self._buffer is None or self._shape != shape:
            if self._buffer is not None:
                self._buffer.discard()
                self._buffer = None
            self._buffer = SecureBuffer(
                shape[0] * shape[1] * shape[2], allow_unlocked=self._allow_unlocked
            )
            self._shape = shape
        return self._buffer

    def close(self) -> None:
        """Finishes the video file and frees the buffers; idempotent."""
        with self._lock:
            self._closed = True
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for buffer in (self._buffer, self._scratch):
                if buffer is not None:
                    buffer.discard()
            self._buffer = None
            self._scratch = None

    def __repr__(self) -> str:
        where = "no file" if self._path is None else repr(str(self._path))
        state = "closed" if self._closed else "open"
        return f"Preview({where}, {self._frames} frames, {state})"
