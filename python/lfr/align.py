"""Face alignment into caller-owned memory.

A least-squares similarity transform from detected landmarks to an embedder's
template, and a warp that writes the chip straight into the caller's buffer.

The chip is written by OpenCV into ``out`` (normally a view of a
:class:`lfr.SecureBuffer`), so no other copy of the aligned face exists.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_FRAME_SIDE",
    "check_frame",
    "mirrored_transform",
    "opencv_reads_in_place",
    "similarity_transform",
    "warp_affine",
    "warp_face",
]


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


def _points(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n >= 2, 2), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinity")
    return arr


def similarity_transform(
    src: npt.ArrayLike, dst: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """The rotation, uniform scale and translation that best maps ``src`` onto ``dst``.

    Least squares (Umeyama 1991), reflections excluded.

    Args:
        src: Points ``(n, 2)``, for example the 5 detected landmarks.
        dst: Corresponding points ``(n, 2)``, for example the embedder's template.

    Returns:
        A ``(2, 3)`` float64 matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``,
        as ``cv2.warpAffine`` takes it.

    Raises:
        ValueError: Shapes differ or are not ``(n, 2)``, values are not finite, or
            ``src`` has all its points in one place.
    """
    s = _points(src, "src")
    d = _points(dst, "dst")
    if s.shape != d.shape:
        raise ValueError(f"src and dst differ in shape: {s.shape} vs {d.shape}")
    s_mean, d_mean = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - s_mean, d - d_mean
    s_var = (sc**2).sum() / len(s)
    if s_var <= 1e-12:
        raise ValueError("src points coincide; no transform is defined")
    cov = dc.T @ sc / len(s)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sigma * sign).sum() / s_var)
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = d_mean - scale * rot @ s_mean
    return m


def mirrored_transform(
    landmarks: npt.ArrayLike, template: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """The affine map that aligns the mirror image of a face onto ``template``.

    Equivalent to flipping the frame horizontally and aligning the flipped face
    (its five landmarks swapped left for right), without making the flipped frame.

    Args:
        landmarks: The face's five points in frame coordinates (image-left eye,
            image-right eye, nose, image-left and image-right mouth corner).
        template: The chip template for the same five points.

    Returns:
        A ``(2, 3)`` matrix (with a reflection) for ``cv2.warpAffine``.
    """
    points = _points(landmarks, "landmarks")
    if points.shape != (5, 2):
        raise ValueError(f"mirroring needs the 5 landmarks, got {points.shape}")
    flipped = points[[1, 0, 2, 4, 3]] * np.array([-1.0, 1.0])
    m = similarity_transform(flipped, template)
    m[:, 0] = -m[:, 0]
    return m


def warp_face(
    frame: npt.NDArray[np.uint8],
    landmarks: npt.ArrayLike,
    template: npt.ArrayLike,
    out: npt.NDArray[np.uint8],
    *,
    mirror: bool = False,
) -> npt.NDArray[np.float64]:
    """Aligns one face of ``frame`` into ``out`` (bilinear, black outside the frame).

    Args:
        frame: ``uint8[h, w, 3]`` image.
        landmarks: The face's points in ``frame`` coordinates, ``(n, 2)``.
        template: Where those points belong in the chip, ``(n, 2)``, in ``out``'s
            pixel coordinates.
        out: ``uint8[size, size, 3]`` C-contiguous, writable destination, normally
            a :class:`lfr.SecureBuffer` view. Written in place; nothing else is
            allocated for pixels.
        mirror: Write the aligned mirror image of the face instead (see
            :func:`mirrored_transform`).

    Returns:
        The ``(2, 3)`` transform used.

    Raises:
        TypeError: ``frame`` or ``out`` is not a uint8 array.
        ValueError: Shapes are wrong, ``out`` is read-only or not contiguous, or the
            landmarks are degenerate.
    """
    if mirror:
        m = mirrored_transform(landmarks, template)
    else:
        m = similarity_transform(landmarks, template)
    warp_affine(frame, m, out)
    return m


def warp_affine(
    frame: npt.NDArray[np.uint8],
    m: npt.NDArray[np.float64],
    out: npt.NDArray[np.uint8],
) -> None:
    """Warps ``frame`` by the ``(2, 3)`` map ``m`` into ``out``, in place.

    Bilinear, black outside the frame; refuses if OpenCV did not write into ``out``.

    Raises:
        TypeError: ``frame`` or ``out`` is not a uint8 array.
        ValueError: Wrong shapes, or ``out`` is read-only or not contiguous.
        RuntimeError: OpenCV allocated a new array instead of writing ``out``.
    """
    for name, arr in (("frame", frame), ("out", out)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 numpy array")
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"{name} must have shape (h, w, 3), got {arr.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writable, C-contiguous array")
    h, w = out.shape[:2]
    result = cv2.warpAffine(
        frame,
        m,
        (w, h),
        dst=out,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    if result is not out and result.ctypes.data != out.ctypes.data:
        # OpenCV allocated instead of writing in place: never expected for a
        # matching destination, and never silently accepted.
        result.fill(0)
        raise RuntimeError("cv2.warpAffine did not write into the given buffer")
