"""Frame checks shared by every face step (detection, alignment, preview, sources).

A frame is a ``uint8[h, w, 3]`` BGR array of at most :data:`MAX_FRAME_SIDE` pixels
on a side; :func:`opencv_reads_in_place` tells whether OpenCV can read it without
copying face pixels out of secure memory.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_FRAME_SIDE", "check_frame", "opencv_reads_in_place"]


#: The largest frame side lfr accepts (larger is taken for a corrupt frame).
MAX_FRAME_SIDE = 16384


def check_frame(frame: object) -> tuple[int, int]:
    """Checks a BGR frame as every face step takes it; returns ``(h, w)``.

    Raises:
        TypeError: Not a uint8 numpy array.
        ValueError: Not ``(h, w, 3)``, empty, or over :data:`MAX_FRAME_SIDE`.
    """
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise TypeError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"frame must have shape (h, w, 3) (BGR), got {frame.shape}; convert "
            "grey or BGRA frames with cv2.cvtColor into a secure buffer first"
        )
    h, w = int(frame.shape[0]), int(frame.shape[1])
    if h == 0 or w == 0:
        raise ValueError(f"frame is empty: {h}x{w}")
    if max(h, w) > MAX_FRAME_SIDE:
        raise ValueError(f"frame of {w}x{h} exceeds {MAX_FRAME_SIDE} pixels on a side")
    return h, w


def opencv_reads_in_place(frame: npt.NDArray[np.uint8]) -> bool:
    """Whether OpenCV's Python bindings can read ``frame`` without copying it.

    They copy any array whose pixels are not packed BGR triples in rows of
    increasing address (flipped, strided or transposed views): a copy of face
    pixels outside secure memory, which callers must avoid.
    """
    s0, s1, s2 = frame.strides
    return s2 == 1 and s1 == 3 and s0 >= 3 * frame.shape[1]
