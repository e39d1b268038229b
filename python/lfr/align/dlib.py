"""dlib's alignment, without dlib: landmarks, chip geometry and grey conversion.

dlib aligns faces for its ResNet descriptor with ``shape_predictor`` and
``get_face_chip``; this module gives the same chips:

* :func:`shape_predictor` loads the provisioned 5-point predictor
  (:class:`lfr.models.shape_predictor.ShapePredictor`) once per process, and
  :func:`dlib_landmarks` predicts its five points for YuNet detections, on the
  rectangles :func:`box_from_yunet` derives from them.
* :data:`DLIB_CHIP_TEMPLATE` is where ``get_face_chip(img, shape, 150, 0.25)`` puts
  the five points in the 150 x 150 chip; :func:`chip_transform` is that chip's
  exact image-to-chip map.
* :data:`DLIB_TEMPLATE` is where YuNet's own five landmarks belong in that chip
  (for the ``"template"`` alignment).
* :func:`dlib_grey` converts a BGR frame to grey the way dlib does, into a caller's
  buffer.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from lfr import models
from lfr.models.shape_predictor import ShapePredictor

__all__ = [
    "DLIB_CHIP_TEMPLATE",
    "DLIB_TEMPLATE",
    "box_from_yunet",
    "chip_transform",
    "dlib_grey",
    "dlib_landmarks",
    "shape_predictor",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

#: Where YuNet's five landmarks (image-left eye, image-right eye, nose tip, mouth
#: corners) belong in dlib's 150x150 chip (see ../shared/models/DLIB_FORMAT.md).
DLIB_TEMPLATE: tuple[tuple[float, float], ...] = (
    (46.14, 42.05),
    (101.30, 42.61),
    (71.74, 75.28),
    (51.16, 99.69),
    (98.18, 100.45),
)

# ``get_face_chip_details``' 5-point template, in units of the face box
# (dlib ``image_transforms/interpolation.h``).
_DLIB_FACE_POINTS = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ]
)

#: Where ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` puts the five
#: predicted points, in chip pixels (x, y), in the predictor's order: image-right
#: eye outer corner, its inner corner, image-left eye outer corner, its inner
#: corner, nose base. dlib fits a least-squares similarity from its template
#: ``(padding + p) / (1 + 2 padding) * size`` (here ``25 + 100 p``) onto the
#: shape, then samples the chip so that its pixel centres ``0`` and ``size - 1``
#: fall ``size * scale - 1`` image pixels apart around the template's centre
#: (scale: image pixels per template unit). For faces of the chip's size
#: (scale 1) that puts the points at the template shifted by -0.5 pixel: these
#: values. Fit the similarity from this template onto the shape (dlib's
#: direction; the reverse fit scales differently by the fit's residual, up to 5
#: pixels at the chip's edge on LFW) and invert it: the chip then matches
#: dlib's to within ``0.5 * |1 - 1 / scale|`` pixel at its edges and
#: ``0.71 * |1 - 1 / scale|`` at its corners (0.2 pixel on average, 1.0 at most on
#: LFW, where faces are 0.4 to 1 times the chip's size). :func:`chip_transform`
#: gives dlib's geometry exactly.
DLIB_CHIP_TEMPLATE: F32 = (25.0 + 100.0 * _DLIB_FACE_POINTS - 0.5).astype(np.float32)
DLIB_CHIP_TEMPLATE.flags.writeable = False


def _points(values: npt.ArrayLike, name: str, shape: tuple[int, ...]) -> F64:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape[1:] != shape[1:] or arr.ndim != len(shape):
        expected = ", ".join(["n", *map(str, shape[1:])])
        raise ValueError(f"{name} must have shape ({expected}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinity")
    return arr


def box_from_yunet(boxes: npt.ArrayLike, landmarks: npt.ArrayLike) -> F32:
    """The rectangles dlib's HOG frontal face detector would give for YuNet faces.

    dlib's predictor was trained on that detector's rectangles, so it is most
    accurate on them. The map, from YuNet's landmarks: with ``e`` the distance
    between the eye centres, ``m`` the distance from their midpoint to the
    mouth corners' midpoint and ``c`` the mean of the five points, the
    rectangle is the square of side ``0.4635 e + 1.9079 m`` (dlib's
    ``right - left``) centred on
    ``c + (-0.0789 e - 0.0010 m, 0.2220 e - 0.2786 m)``.

    Fitted by least squares on the 1,645 faces of ``lfw-dev`` where both
    detectors find the face (IoU > 0.3) and YuNet's box is not clipped by the
    frame. Residual (5-fold cross-validated): centre 5.1 pixels (5.0% of the
    side) on average, 11.1 at the 95th percentile; side 6.8% on average, 15.5%
    at the 95th percentile. Most of it is dlib's: its detector's sizes come in
    steps of about 20% and its positions on a grid of its scale, and on these
    photos it gives mostly 90 or 108 pixel squares. Landmarks predicted on these
    rectangles match those dlib predicts on its own (mean 0.35 pixel, 0.9% of
    the eye distance; see :class:`ShapePredictor`). A map from YuNet's box (side
    ``0.5910 w + 0.3901 h``, centre moved by ``(-0.0351 w, 0.0358 h)``) does
    worse (centre 7.3% of the side, landmarks 1.3% of the eye distance), fails
    on boxes clipped by the frame, and is used only where the landmarks give a
    side under a quarter of it (collapsed landmarks).

    Args:
        boxes: ``[n, 4]`` YuNet boxes ``(x1, y1, x2, y2)``.
        landmarks: ``[n, 5, 2]`` YuNet landmarks (eyes, nose tip, mouth
            corners), as :class:`lfr.detect.Detections` gives them.

    Returns:
        ``float32[n, 4]`` dlib rectangles ``(left, top, right, bottom)`` for
        :meth:`ShapePredictor.predict`.

    Raises:
        ValueError: Shapes differ from the above or values are not finite.

    Examples:
        >>> import numpy as np
        >>> from lfr.align import box_from_yunet
        >>> points = [[[80, 100], [120, 100], [100, 120], [85, 140], [115, 140]]]
        >>> box_from_yunet([[70, 70, 130, 160]], points).round(1)
        array([[ 49.4,  70.3, 144.2, 165.2]], dtype=float32)
    """
    box = _points(boxes, "boxes", (0, 4))
    points = _points(landmarks, "landmarks", (0, 5, 2))
    if box.shape[0] != points.shape[0]:
        raise ValueError(f"{box.shape[0]} boxes but {points.shape[0]} landmark sets")
    eyes = points[:, :2]
    eye = np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=1)
    mouth = np.linalg.norm(points[:, 3:].mean(axis=1) - eyes.mean(axis=1), axis=1)
    size = 0.4635 * eye + 1.9079 * mouth
    centre = points.mean(axis=1)
    centre[:, 0] += -0.0789 * eye - 0.0010 * mouth
    centre[:, 1] += 0.2220 * eye - 0.2786 * mouth
    width, height = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    box_size = 0.5910 * width + 0.3901 * height
    collapsed = size < 0.25 * box_size
    if collapsed.any():
        size[collapsed] = box_size[collapsed]
        centre[collapsed, 0] = (box[collapsed, 0] + box[collapsed, 2]) / 2
        centre[collapsed, 0] -= 0.0351 * width[collapsed]
        centre[collapsed, 1] = (box[collapsed, 1] + box[collapsed, 3]) / 2
        centre[collapsed, 1] += 0.0358 * height[collapsed]
    half = (size / 2)[:, None]
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def chip_transform(shape: npt.ArrayLike, size: int = 150, padding: float = 0.25) -> F64:
    """The affine map of dlib's ``get_face_chip_details(shape, size, padding)``.

    Exactly the geometry of ``dlib.get_face_chip``: the least-squares similarity
    from dlib's template (``(padding + p) / (1 + 2 padding) * size``) onto the
    shape (this direction: the reverse fit scales differently wherever the five
    points do not fit the template exactly, by up to 5 pixels at the chip's
    edge on LFW), then a chip whose pixel centres ``0`` and ``size - 1`` span
    ``size * scale - 1`` image pixels around the template's centre. dlib
    samples faces over twice the chip's size from an image pyramid; downscale
    such faces (area interpolation) before warping to match it.

    Args:
        shape: ``[5, 2]`` points from :meth:`ShapePredictor.predict`.
        size: Chip side in pixels.
        padding: dlib's padding around the face.

    Returns:
        ``float64[2, 3]`` image-to-chip matrix for ``cv2.warpAffine`` (bilinear)
        or :func:`lfr.align.warp_face`-style use.

    Raises:
        ValueError: ``shape`` is not ``[5, 2]`` finite values, the points
            coincide, the face is under a pixel wide, ``size < 2`` or
            ``padding < 0``.

    Examples:
        >>> import numpy as np
        >>> from lfr.align import DLIB_CHIP_TEMPLATE, chip_transform
        >>> m = chip_transform(DLIB_CHIP_TEMPLATE + 0.5)
        >>> np.allclose(m, [[1, 0, -0.5], [0, 1, -0.5]])
        True
    """
    points = _points(shape, "shape", (5, 2))
    if points.shape[0] != 5:
        raise ValueError(f"shape must have shape (5, 2), got {points.shape}")
    if size < 2 or not padding >= 0:
        raise ValueError(f"size must be >= 2 and padding >= 0, got {size}, {padding}")
    template = (padding + _DLIB_FACE_POINTS) / (1 + 2 * padding) * size
    src = template - template.mean(axis=0)
    dst = points - points.mean(axis=0)
    var = (dst**2).sum()
    if not var > 0:
        raise ValueError("the shape's points coincide")
    # find_similarity_transform(template, shape) = [[a, -b], [b, a]], t
    a = (src * dst).sum() / (src**2).sum()
    b = (src[:, 0] * dst[:, 1] - src[:, 1] * dst[:, 0]).sum() / (src**2).sum()
    scale = float(np.hypot(a, b))
    span = (size * scale - 1) / (size - 1)  # image pixels per chip pixel
    if not span > 0:
        raise ValueError("the face is too small for a chip")
    rot = np.array([[a, -b], [b, a]]) / scale
    centre = rot * scale @ (np.full(2, size / 2) - template.mean(axis=0))
    centre += points.mean(axis=0)
    out = np.empty((2, 3))
    out[:, :2] = rot.T / span
    out[:, 2] = (size - 1) / 2 - out[:, :2] @ centre
    return out


_STRIP = 64


def dlib_grey(frame_bgr: U8, out: U8) -> U8:
    """Converts a BGR frame to grey as dlib does: ``(r + g + b) // 3``.

    dlib's ``rgb_pixel`` to ``unsigned char`` conversion (``assign_pixel``)
    averages the channels with integer division; OpenCV's luma weights give
    different pixels and so different landmarks. Works in strips of 64 rows
    through a small uint16 scratch array that is zeroed before returning.

    Args:
        frame_bgr: ``uint8[h, w, 3]`` frame.
        out: ``uint8[h, w]`` writable destination, normally a
            :class:`~lfr.secure.SecureBuffer` view.

    Returns:
        ``out``.

    Raises:
        TypeError: An argument is not a uint8 array.
        ValueError: Shapes do not match or ``out`` is read-only.

    Examples:
        >>> import numpy as np
        >>> from lfr.align import dlib_grey
        >>> frame = np.array([[[10, 20, 31], [255, 255, 255]]], np.uint8)
        >>> dlib_grey(frame, np.empty((1, 2), np.uint8))
        array([[ 20, 255]], dtype=uint8)
    """
    for name, arr in (("frame_bgr", frame_bgr), ("out", out)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 numpy array")
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise ValueError(f"frame_bgr must have shape (h, w, 3), got {frame_bgr.shape}")
    if out.shape != frame_bgr.shape[:2]:
        raise ValueError(f"out must have shape {frame_bgr.shape[:2]}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writable")
    height, width = out.shape
    total = np.zeros((min(height, _STRIP), width), np.uint16)
    channel = np.zeros_like(total)
    try:
        for top in range(0, height, _STRIP):
            rows = slice(top, top + _STRIP)
            acc = total[: min(_STRIP, height - top)]
            part = channel[: acc.shape[0]]
            np.copyto(acc, frame_bgr[rows, :, 0])
            for c in (1, 2):
                np.copyto(part, frame_bgr[rows, :, c])
                acc += part
            acc //= 3
            np.copyto(out[rows], acc, casting="unsafe")
    finally:
        total.fill(0)
        channel.fill(0)
    return out


_PREDICTORS: dict[str, ShapePredictor] = {}
_PREDICTORS_LOCK = threading.Lock()


def shape_predictor() -> ShapePredictor:
    """Dlib's 5-point shape predictor, parsed once per process and model file.

    Returns:
        The predictor of the installed ``dlib-shape5`` model.

    Raises:
        ModelError: The model is missing or altered (``lfr models fetch``).
    """
    file = models.path("dlib-shape5")
    key = str(file)
    with _PREDICTORS_LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = ShapePredictor.from_bytes(file.read_bytes())
        return _PREDICTORS[key]


def dlib_landmarks(
    predictor: ShapePredictor,
    frame: U8,
    boxes: npt.ArrayLike,
    landmarks: npt.ArrayLike,
) -> F32:
    """Dlib's five landmarks for YuNet detections, in ``frame`` pixels.

    Args:
        predictor: Normally :func:`shape_predictor`.
        frame: ``uint8[h, w, 3]`` BGR frame (or a grey one), read in place
            whatever its strides; dlib's grey value is computed at the sampled
            pixels only.
        boxes: ``[n, 4]`` YuNet boxes.
        landmarks: ``[n, 5, 2]`` YuNet landmarks.

    Returns:
        ``float32[n, 5, 2]`` points in dlib's order, for :func:`chip_transform`.
    """
    return predictor.predict(frame, box_from_yunet(boxes, landmarks))
