"""Rendering the operator preview: blurring faces, and the whole frame.

:func:`render_preview` is the picture :class:`~lfr.preview.Preview` shows and
records: the whole frame blurred (so that a face the detector missed is blurred
too), every detected passer-by blurred again over its own box, faces of stored
alerts sharp with their frame and label. :func:`blur_faces` blurs given boxes only and
leaves every other pixel as it was: a face it is not given stays in the clear,
so it is a building block, not a privacy guarantee.

How a face is blurred: its box, grown by :data:`MARGIN` (20 %) of its width and
height on every side (hair, ears and chin included) and clipped to the frame, is
averaged down to a grid of at most :data:`BLOCKS` x :data:`BLOCKS` (8 x 8) blocks,
then smoothed with a Gaussian of 1.5 blocks' standard deviation and scaled back over
the box. What is left is a soft blob of the face's average colours. Measured with
YuNet (:class:`lfr.FaceDetector`, default threshold) on the 2,058 faces it finds in
the 1,585 photos of ``lfw-dev`` where it finds any: after blurring, none of them
was found again (no detection overlapping a blurred face by an IoU above 0.5; the
largest was 0.38), while pixelation alone (sharp 8 x 8 blocks) left 26 of them
detectable, a blur of half a block 559 and of one block 3. The whole frame is
blurred the same way with square blocks of :func:`scene_block` pixels. The
strength is fixed on purpose: there is no setting that weakens it.

Face data in memory: the rendered frame lives in the caller's ``out`` (a
:class:`~lfr.secure.SecureBuffer` view in :class:`~lfr.preview.Preview`); the
small images a blur goes through live in a secure scratch buffer that is wiped
after every call. OpenCV writes straight into them (``dst=``) and every call is
checked to have written in place. Copies OpenCV makes internally are outside
lfr's reach (see docs/data-handling.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lfr.align import check_frame
from lfr.secure import SecureBuffer

__all__ = [
    "BLOCKS",
    "MARGIN",
    "SCENE_BLOCKS",
    "SCENE_MIN_BLOCK",
    "SCENE_SCRATCH_BYTES",
    "blur_faces",
    "blur_region",
    "render_preview",
    "scene_block",
    "scene_blocks",
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
_SCRATCH_BYTES = BLOCKS * BLOCKS * 3 + 2 * (BLOCKS * _CELL) ** 2 * 3
#: The whole frame is reduced to at most this many blocks along its longer side.
SCENE_BLOCKS = 40
#: A scene block is at least this many pixels on a side (small frames).
SCENE_MIN_BLOCK = 8

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


def _scratch_bytes(blocks: int) -> int:
    """Scratch bytes for a blur of at most ``blocks x blocks`` blocks."""
    return blocks * blocks * 3 + 2 * (blocks * _CELL) ** 2 * 3


def _blur(roi: U8, scratch: SecureBuffer) -> None:
    """Pixelates and smooths ``roi`` (a view of the rendered frame) in place."""
    rh, rw = roi.shape[:2]
    _pixelate(roi, roi, min(BLOCKS, rw), min(BLOCKS, rh), BLOCKS, scratch)


def _pixelate(
    src: U8, dst: U8, bw: int, bh: int, bound: int, scratch: SecureBuffer
) -> None:
    """``src`` averaged to ``bw x bh`` blocks, smoothed, scaled back into ``dst``.

    ``bound`` is the largest block count the scratch layout is made for.
    """
    rh, rw = dst.shape[:2]
    mh, mw = bh * _CELL, bw * _CELL
    small_bytes = bound * bound * 3
    mosaic_bytes = (bound * _CELL) ** 2 * 3
    flat = scratch.array(np.uint8, _scratch_bytes(bound))
    small = flat[: bh * bw * 3].reshape(bh, bw, 3)
    mosaic = flat[small_bytes : small_bytes + mh * mw * 3].reshape(mh, mw, 3)
    smooth_at = small_bytes + mosaic_bytes
    smooth = flat[smooth_at : smooth_at + mh * mw * 3].reshape(mh, mw, 3)
    _in_place(
        cv2.resize(src, (bw, bh), dst=small, interpolation=cv2.INTER_AREA),
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
        cv2.resize(smooth, (rw, rh), dst=dst, interpolation=cv2.INTER_LINEAR),
        dst,
        "resize",
    )


def scene_blocks(height: int, width: int) -> tuple[int, int]:
    """The block grid :func:`render_preview` reduces a whole frame to.

    Each block is square, :func:`scene_block` pixels on a side; the grid covers
    the frame (the last row and column may be partial).

    Examples:
        >>> from lfr.preview import scene_blocks
        >>> scene_blocks(480, 640), scene_blocks(1080, 1920), scene_blocks(48, 64)
        ((30, 40), (23, 40), (6, 8))
    """
    block = scene_block(height, width)
    return max(1, math.ceil(height / block)), max(1, math.ceil(width / block))


def scene_block(height: int, width: int) -> int:
    """The side, in pixels, of one block of a frame's scene blur.

    ``ceil(longer side / SCENE_BLOCKS)``, and at least :data:`SCENE_MIN_BLOCK`.

    Examples:
        >>> from lfr.preview import scene_block
        >>> scene_block(480, 640), scene_block(1080, 1920), scene_block(48, 64)
        (16, 48, 8)
    """
    return max(SCENE_MIN_BLOCK, math.ceil(max(height, width) / SCENE_BLOCKS))


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
        raise TypeError(
            f"keep must be booleans (True: the face of a stored alert), got {k.dtype}"
        )
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
    if out is not frame:
        np.copyto(out, frame)
    if scratch is None:
        if not keep.all():
            raise ValueError("blurring needs a scratch buffer")
    else:
        try:
            _blur_passers_by(out, boxes, keep, scratch)
        finally:
            scratch.wipe()
    _mark_kept(out, boxes, keep, labels)


def _blur_passers_by(out: U8, boxes: Any, keep: Any, scratch: Any) -> None:
    """Blurs every box not kept over its grown :func:`blur_region`."""
    h, w = out.shape[:2]
    for box, kept in zip(boxes, keep):
        if kept:
            continue
        x1, y1, x2, y2 = blur_region(box, h, w)
        if x2 > x1 and y2 > y1:
            _blur(out[y1:y2, x1:x2], scratch)


def _mark_kept(
    out: U8, boxes: Any, keep: Any, labels: Sequence[str | None] | None
) -> None:
    """Frames and labels every kept box."""
    h, w = out.shape[:2]
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
        labels: Optional text per box (the subject id of a stored alert), or
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


#: Bytes of the secure scratch buffer :func:`render_preview` needs.
SCENE_SCRATCH_BYTES = _scratch_bytes(SCENE_BLOCKS)


def _render_scene(
    frame: U8,
    boxes: npt.NDArray[np.float64],
    keep: npt.NDArray[np.bool_],
    labels: Sequence[str | None] | None,
    out: U8,
    scratch: SecureBuffer,
) -> None:
    """:func:`render_preview` on checked inputs; wipes ``scratch`` before returning."""
    h, w = out.shape[:2]
    try:
        bh, bw = scene_blocks(h, w)
        block = scene_block(h, w)
        # The grid covers whole blocks; a partial last row or column is averaged
        # with its own pixels only.
        gh, gw = min(h, bh * block), min(w, bw * block)
        _pixelate(frame[:gh, :gw], out[:gh, :gw], bw, bh, SCENE_BLOCKS, scratch)
        if gh < h:
            _pixelate(frame[gh:, :], out[gh:, :], bw, 1, SCENE_BLOCKS, scratch)
        if gw < w:
            _pixelate(frame[:gh, gw:], out[:gh, gw:], 1, bh, SCENE_BLOCKS, scratch)
        # Faces of stored alerts (keep), and only they, come back sharp.
        for i in np.flatnonzero(keep):
            x1, y1, x2, y2 = _box_pixels(boxes[i], h, w)
            if x2 > x1 and y2 > y1:
                np.copyto(out[y1:y2, x1:x2], frame[y1:y2, x1:x2])
        # Every detected passer-by is blurred again over its grown box, as
        # strongly as blur_faces does; where that overlaps a matched face, the
        # blur wins.
        _blur_passers_by(out, boxes, keep, scratch)
    finally:
        scratch.wipe()
    _mark_kept(out, boxes, keep, labels)


def render_preview(
    frame: U8,
    boxes: npt.ArrayLike,
    keep: npt.ArrayLike,
    labels: Sequence[str | None] | None = None,
    *,
    out: U8,
    allow_unlocked: bool = False,
) -> U8:
    """The operator's picture: the whole frame blurred, faces of stored alerts sharp.

    This is what :class:`~lfr.preview.Preview` shows and records. Unlike
    :func:`blur_faces`, it does not depend on the detector having found every
    face: the **whole frame** is first averaged down to square blocks of
    :func:`scene_block` pixels (at most :data:`SCENE_BLOCKS` along the longer
    side, at least :data:`SCENE_MIN_BLOCK` pixels each), smoothed with a
    Gaussian of 1.5 blocks and scaled back. Then each kept (matched) box is
    copied back sharp from ``frame``, each face not kept is blurred again over
    its :func:`blur_region` as :func:`blur_faces` does (where that overlaps a
    kept box, the blur wins), and each kept box gets its red frame and label.

    So every pixel outside the matched boxes is blurred, whether or not the
    detector found a face there. A face the detector missed whose box is at most
    ``8 * block / 1.4`` pixels wide (91 pixels in a 640 x 480 frame, 274 in a
    1920 x 1080 one) spans at most 8 blocks over the same grown box: it is
    blurred at least as strongly as a detected one.

    Args:
        frame: ``uint8[h, w, 3]`` BGR image, any strides; read, never written.
        boxes: ``[n, 4]`` ``(x1, y1, x2, y2)`` face boxes in frame pixels.
        keep: ``bool[n]``: True for a face that matched (shown sharp).
        labels: Optional text per box, drawn for kept faces only.
        out: ``uint8[h, w, 3]`` C-contiguous, writable destination that does
            not overlap ``frame``, normally a :class:`~lfr.secure.SecureBuffer`
            view.
        allow_unlocked: Passed to the scratch :class:`~lfr.secure.SecureBuffer`.

    Returns:
        ``out``.

    Raises:
        TypeError: ``frame`` or ``out`` is not a uint8 array, ``keep`` is not
            boolean, or a label is not a string.
        ValueError: Shapes disagree, a box is not valid, ``out`` is not
            C-contiguous and writable, or ``out`` overlaps ``frame``.
        RuntimeError: OpenCV did not write in place (never expected).
        lfr.errors.SecureMemoryError: The scratch buffer cannot be locked.

    Examples:
        >>> import numpy as np, lfr
        >>> from lfr.preview import render_preview
        >>> rng = np.random.default_rng(0)
        >>> frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        >>> with lfr.SecureBuffer(frame.nbytes) as buf:
        ...     out = buf.array(np.uint8, frame.shape)
        ...     _ = render_preview(frame, [[40, 30, 90, 90]], [True], out=out)
        ...     inside = bool((out[32:88, 42:88] == frame[32:88, 42:88]).all())
        ...     outside = bool((out[:, 110:] != frame[:, 110:]).any())
        ...     del out
        >>> inside, outside
        (True, True)
    """
    h, w = check_frame(frame)
    target = _check_out(out, (h, w, 3))
    b, k = _check_faces(boxes, keep, labels)
    if np.may_share_memory(frame, target):
        raise ValueError("out overlaps frame: render_preview needs a separate array")
    with SecureBuffer(SCENE_SCRATCH_BYTES, allow_unlocked=allow_unlocked) as scratch:
        _render_scene(frame, b, k, labels, target, scratch)
    return target
