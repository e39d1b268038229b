"""Warping a face into caller-owned memory.

A least-squares similarity transform from detected landmarks to an embedder's
template, and warps that write the chip straight into the caller's buffer
(:func:`align_into` first area-downscales faces much larger than the chip).

The chip is written by OpenCV into ``out`` (normally a view of a
:class:`lfr.SecureBuffer`), so no other copy of the aligned face exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from lfr.secure import SecureBuffer

__all__ = [
    "align_into",
    "mirrored_transform",
    "similarity_transform",
    "warp_affine",
    "warp_face",
]

#: Faces whose transform shrinks them by more than this are first downscaled with
#: area interpolation, so the bilinear warp does not alias.
_MAX_WARP_SHRINK = 0.5


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


def align_into(
    frame: npt.NDArray[np.uint8],
    maps: Sequence[npt.NDArray[np.float64]] | npt.NDArray[np.float64],
    chips: npt.NDArray[np.uint8],
) -> None:
    """Warps one face onto each chip, by its map; area-downscales large faces once.

    A face that the maps would shrink by more than 2x is first resized with area
    interpolation (into a secure scratch buffer, wiped afterwards), so the bilinear
    warps sample an image of about the chip's own scale. All maps must show the
    same face (for example the face and its mirror image): the downscaled region
    is shared.

    Args:
        frame: ``uint8[h, w, 3]`` frame.
        maps: A ``(2, 3)`` frame-to-chip map, or several (reflections allowed).
        chips: ``uint8[s, s, 3]`` destination, or ``[len(maps), s, s, 3]``,
            normally secure buffer views.
    """
    if isinstance(maps, np.ndarray) and maps.ndim == 2:
        maps, chips = [maps], chips[None]
    shrink = math.sqrt(abs(np.linalg.det(maps[0][:, :2])))
    side = chips.shape[1]
    if shrink >= _MAX_WARP_SHRINK:
        for m, chip in zip(maps, chips):
            warp_affine(frame, m, chip)
        return
    corners = np.array([[0, 0], [side, 0], [0, side], [side, side]], np.float64)
    mapped = np.vstack(
        [
            corners @ inv[:, :2].T + inv[:, 2]
            for inv in (cv2.invertAffineTransform(m) for m in maps)
        ]
    )
    h, w = frame.shape[:2]
    x0, y0 = np.clip(np.floor(mapped.min(axis=0)).astype(int) - 2, 0, [w, h])
    x1, y1 = np.clip(np.ceil(mapped.max(axis=0)).astype(int) + 2, 0, [w, h])
    if x1 - x0 < 2 or y1 - y0 < 2:
        for m, chip in zip(maps, chips):
            warp_affine(frame, m, chip)
        return
    rw = max(1, round((x1 - x0) * shrink))
    rh = max(1, round((y1 - y0) * shrink))
    with SecureBuffer(rw * rh * 3) as scratch:
        small = scratch.array(np.uint8, (rh, rw, 3))
        cv2.resize(
            frame[y0:y1, x0:x1], (rw, rh), dst=small, interpolation=cv2.INTER_AREA
        )
        fx, fy = rw / (x1 - x0), rh / (y1 - y0)
        # small(u, v) = frame(x0 + u / fx, y0 + v / fy): compose each map with that.
        back = np.array([[1 / fx, 0.0, x0], [0.0, 1 / fy, y0], [0.0, 0.0, 1.0]])
        for m, chip in zip(maps, chips):
            warp_affine(small, (np.vstack([m, [0.0, 0.0, 1.0]]) @ back)[:2], chip)
        del small
