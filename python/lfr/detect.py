"""Face detection: YuNet (2023mar) on onnxruntime, with lfr's own decoding and NMS.

:class:`FaceDetector` finds faces in a BGR frame and returns :class:`Detections`:
boxes, scores and five landmarks per face, best score first, in frame coordinates.

How a frame is processed (the same as OpenCV's ``FaceDetectorYN``, without OpenCV's
network runner):

1. Frames whose longest side exceeds ``working_size`` (default 960) are shrunk to it
   with area interpolation; smaller frames run at their own size (see
   :class:`FaceDetector` for why they are not upscaled).
2. The image is padded with zeros (bottom and right) to a multiple of 32 and written
   as float32 BGR, 0..255, NCHW, with no mean or scale, into the model input.
3. YuNet's twelve outputs are decoded per stride (8, 16, 32) as OpenCV's
   ``face_detect.cpp`` does for the 2023mar model, filtered by score, reduced by
   greedy non-maximum suppression (:func:`nms`) and mapped back to the frame.

Face pixels (the shrunk frame and the float32 input tensor) live only in two
:class:`~lfr.secure.SecureBuffer` s that each detector allocates once, for its
largest working size, and wipes after every call, also on error. OpenCV resizes
straight into one (``dst=``), numpy casts straight into the other, and onnxruntime
reads the tensor in place through I/O binding. The network's outputs (scores and
coordinates, no pixels) are ordinary arrays.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import numpy.typing as npt

from lfr import models
from lfr._closing import Closing
from lfr.align import MAX_FRAME_SIDE, check_frame, opencv_reads_in_place
from lfr.errors import ModelError
from lfr.models.ort import session
from lfr.secure import SecureBuffer

__all__ = ["MAX_FRAME_SIDE", "Detections", "FaceDetector", "nms"]

_log = logging.getLogger(__name__)

#: Largest frame side :meth:`FaceDetector.detect` accepts, in pixels.

_STRIDES = (8, 16, 32)
_DIVISOR = 32
_INPUT = "input"
_OUTPUTS = tuple(
    f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in _STRIDES
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: What :class:`Detections` can be indexed with: a slice, a boolean mask of length
#: ``n``, or integer indices (an array or a sequence).
Index = Union[
    slice,
    npt.NDArray[np.bool_],
    npt.NDArray[np.integer],
    Sequence[int],
    Sequence[bool],
]


def _readonly(arr: F32) -> F32:
    view = arr.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False, repr=False)
class Detections:
    """Faces found in one frame, best score first; no pixels.

    Validated on construction. The arrays are exposed as read-only views (the
    caller's own arrays are not changed).

    Attributes:
        boxes: ``float32[n, 4]``, ``(x1, y1, x2, y2)`` in frame pixels, clipped to
            the frame, ``x1 <= x2`` and ``y1 <= y2``.
        scores: ``float32[n]`` confidences in ``[0, 1]``.
        landmarks: ``float32[n, 5, 2]`` ``(x, y)`` points in frame pixels, in the
            order image-left eye, image-right eye, nose tip, image-left mouth
            corner, image-right mouth corner ("image-left": smaller x, which is the
            person's right for a frontal face). Not clipped: a point of a face at
            the frame's edge may lie outside it.

    Raises:
        TypeError: An attribute is not a float32 numpy array.
        ValueError: Shapes disagree, a value is NaN or infinite, a score is outside
            ``[0, 1]``, or a box has ``x2 < x1`` or ``y2 < y1``.

    Examples:
        >>> import numpy as np
        >>> from lfr.detect import Detections
        >>> faces = Detections(
        ...     boxes=np.array([[10, 20, 50, 70]], np.float32),
        ...     scores=np.array([0.93], np.float32),
        ...     landmarks=np.zeros((1, 5, 2), np.float32),
        ... )
        >>> len(faces), faces
        (1, Detections(n=1))
        >>> faces[faces.scores > 0.9], faces[[0, 0]], faces[1:]
        (Detections(n=1), Detections(n=2), Detections(n=0))
        >>> len(Detections.empty())
        0
    """

    boxes: F32
    scores: F32
    landmarks: F32

    def __post_init__(self) -> None:
        for name in ("boxes", "scores", "landmarks"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray):
                raise TypeError(
                    f"{name} must be a numpy array, got {type(arr).__name__}"
                )
            if arr.dtype != np.float32:
                raise TypeError(f"{name} must be float32, got {arr.dtype}")
        if self.scores.ndim != 1:
            raise ValueError(f"scores must have shape (n,), got {self.scores.shape}")
        n = self.scores.shape[0]
        if self.boxes.shape != (n, 4):
            raise ValueError(
                f"boxes must have shape ({n}, 4) for {n} scores, got {self.boxes.shape}"
            )
        if self.landmarks.shape != (n, 5, 2):
            raise ValueError(
                f"landmarks must have shape ({n}, 5, 2) for {n} scores, "
                f"got {self.landmarks.shape}"
            )
        for name in ("boxes", "scores", "landmarks"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} contain NaN or infinity")
        if n and (np.min(self.scores) < 0.0 or np.max(self.scores) > 1.0):
            raise ValueError("scores must lie in [0, 1]")
        if n and (
            (self.boxes[:, 2] < self.boxes[:, 0]).any()
            or (self.boxes[:, 3] < self.boxes[:, 1]).any()
        ):
            raise ValueError("boxes must have x1 <= x2 and y1 <= y2")
        for name in ("boxes", "scores", "landmarks"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))

    @classmethod
    def empty(cls) -> Detections:
        """No faces.

        Returns:
            Detections with ``n = 0``.
        """
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: Index) -> Detections:
        """The faces that ``index`` selects, as new Detections (copies, validated).

        Args:
            index: A slice (``faces[a:b]``), a boolean mask of length ``n``
                (``faces[faces.scores > 0.9]``), or integer indices
                (``faces[[2, 0]]``, ``faces[np.flatnonzero(mask)]``; negative
                ones count from the end, repeats repeat the face). A single
                integer is refused: ``faces[i : i + 1]`` is face ``i``.

        Returns:
            The selected faces, in the order of ``index``; their arrays are
            copies, never views of this object's.

        Raises:
            TypeError: ``index`` is an integer or of another kind than above
                (for example floats).
            IndexError: A mask whose length is not ``n``, an index array that is
                not one-dimensional, or an index out of range.
        """
        rows = _rows(index, len(self))
        # Integer-array indexing always copies: no view of these arrays escapes.
        return Detections(
            boxes=self.boxes[rows],
            scores=self.scores[rows],
            landmarks=self.landmarks[rows],
        )

    def __repr__(self) -> str:
        return f"Detections(n={len(self)})"


def _rows(index: object, n: int) -> npt.NDArray[np.intp]:
    """``index`` (see :meth:`Detections.__getitem__`) as row numbers in ``[0, n)``."""
    if isinstance(index, slice):
        return np.arange(n, dtype=np.intp)[index]
    if isinstance(index, (bool, int, np.integer, np.bool_)):
        raise TypeError(
            "Detections take a slice, a boolean mask or integer indices, not a "
            f"single {type(index).__name__}; use faces[i : i + 1] for face i"
        )
    if isinstance(index, np.ndarray):
        arr = index
    elif isinstance(index, (list, tuple)):
        if not all(isinstance(v, (bool, int, np.integer, np.bool_)) for v in index):
            raise TypeError("Detections index sequences must hold ints or bools only")
        arr = np.asarray(index) if index else np.zeros(0, np.intp)
    else:
        raise TypeError(
            "Detections take a slice, a boolean mask or integer indices, "
            f"not {type(index).__name__}"
        )
    if arr.ndim != 1:
        raise IndexError(f"a Detections index must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        if arr.shape[0] != n:
            raise IndexError(
                f"a mask for {n} faces needs {n} values, got {arr.shape[0]}"
            )
        return np.flatnonzero(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0:
            return np.zeros(0, np.intp)
        raise TypeError(
            f"Detections indices must be integers or bools, got {arr.dtype}"
        )
    if arr.size and (int(arr.min()) < -n or int(arr.max()) >= n):
        raise IndexError(f"a face index is out of range for {n} faces")
    return np.where(arr < 0, arr + n, arr).astype(np.intp)


def nms(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    iou_threshold: float,
    top_k: int | None = None,
) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression.

    Boxes are visited from the highest score down (ties: lower index first); a box
    is kept unless its intersection over union with an already kept box exceeds
    ``iou_threshold``. So kept boxes overlap each other by at most the threshold,
    the best box is always kept, and every dropped box overlaps a kept box that
    ranks before it by more than the threshold. IoU is computed in float64; boxes
    of zero area overlap nothing.

    Args:
        boxes: ``[n, 4]`` ``(x1, y1, x2, y2)``.
        scores: ``[n]``.
        iou_threshold: In ``[0, 1]``.
        top_k: Stop after this many kept boxes (the result is then the first
            ``top_k`` of the unlimited result); ``None``: no limit.

    Returns:
        Indices of the kept boxes, best score first.

    Raises:
        ValueError: Shapes are wrong, values are not finite, or a parameter is out
            of range.

    Examples:
        >>> from lfr.detect import nms
        >>> boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]]
        >>> nms(boxes, [0.9, 0.8, 0.7], 0.3).tolist()
        [0, 2]
    """
    b = np.asarray(boxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or b.shape != (s.shape[0], 4):
        raise ValueError(
            f"boxes must have shape (n, 4) and scores (n,), got {b.shape} and {s.shape}"
        )
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise ValueError("boxes and scores must be finite")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    limit = s.shape[0] if top_k is None else min(s.shape[0], top_k)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value}")
    return float(value)


def _check_count(name: str, value: object, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return int(value)


def _pad(n: int) -> int:
    return (n + _DIVISOR - 1) // _DIVISOR * _DIVISOR


def _decode(
    outputs: dict[str, npt.NDArray[np.float32]],
    height: int,
    width: int,
    score_threshold: float,
) -> tuple[F64, F32, F64]:
    """YuNet 2023mar's outputs -> candidate boxes, scores, landmarks (input pixels).

    As OpenCV's ``face_detect.cpp``: per stride ``s``, anchors are row-major over
    ``(height / s) x (width / s)`` cells; ``score = sqrt(clip(cls) * clip(obj))``;
    ``cx = (col + bbox0) * s``, ``cy = (row + bbox1) * s``, ``w = exp(bbox2) * s``,
    ``h = exp(bbox3) * s``; landmark ``k`` is ``((col + kps[2k]) * s,
    (row + kps[2k+1]) * s)``. Only anchors scoring at least ``score_threshold``
    are decoded.
    """
    boxes: list[F64] = []
    scores: list[F32] = []
    points: list[F64] = []
    for stride in _STRIDES:
        rows, cols = height // stride, width // stride
        n = rows * cols
        cls = outputs[f"cls_{stride}"].reshape(-1)
        obj = outputs[f"obj_{stride}"].reshape(-1)
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)
        kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)
        if not cls.shape[0] == obj.shape[0] == bbox.shape[0] == kps.shape[0] == n:
            raise ModelError(
                f"stride {stride}: the model returned {cls.shape[0]} anchors for a "
                f"{width}x{height} input, expected {n}; is it YuNet 2023mar?"
            )
        score = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
        idx = np.flatnonzero(score >= np.float32(score_threshold))
        row, col = np.divmod(idx, cols)
        b = bbox[idx].astype(np.float64)
        cx = (col + b[:, 0]) * stride
        cy = (row + b[:, 1]) * stride
        half_w = np.exp(b[:, 2]) * (stride / 2)
        half_h = np.exp(b[:, 3]) * (stride / 2)
        boxes.append(np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1))
        k = kps[idx].astype(np.float64)
        k[:, :, 0] += col[:, None]
        k[:, :, 1] += row[:, None]
        k *= stride
        points.append(k)
        scores.append(score[idx].astype(np.float32))
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)


class FaceDetector(Closing):
    """Finds faces and their five landmarks with YuNet (2023mar) on onnxruntime.

    The model input is the frame at its working resolution: frames whose longest
    side exceeds ``working_size`` are shrunk to it (area interpolation), smaller
    frames run at their own size and are **not upscaled**. On the 2,585 LFW
    250x250 photos of ``lfw-dev``, running at the native size (padded to 256)
    found the labelled face in every photo. Upscaling them to 960 found no more,
    but lowered the scores (lowest labelled face 0.62 instead of 0.85; 75% instead
    of 99% of them above 0.9), left two boxes on the labelled face in 5 photos and
    took 17 times as long; upscaling to 640 found no more either and took 6 times
    as long. YuNet finds faces from about 10 pixels up, so small frames gain
    nothing from upscaling. Results are mapped back to the frame and boxes are
    clipped to it.

    Default thresholds, measured on ``lfw-dev``: ``score_threshold=0.6``: every
    labelled face scores at least 0.85, while below 0.6 most of the other
    detections are not faces (hands, blurred background) and from 0.7 up most
    are (partly hidden faces in the background); 0.9, OpenCV's sample value,
    misses 1.1% of the labelled faces. ``nms_threshold=0.3`` (OpenCV's default):
    the duplicate boxes YuNet leaves on one face overlap their better box by IoU
    0.26 to 0.6, while the separate faces that overlap in these photos do so by
    at most 0.21; from 0.5 up, duplicates appear on labelled faces. ``top_k=1000``
    bounds the faces returned per frame (more than a 1080p frame can show).

    Memory: two secure buffers for the largest working size, a
    ``working_size x working_size`` BGR image and a float32 tensor of the padded
    size, about 13.8 MB for the default 960 (locked, so ``RLIMIT_MEMLOCK`` must
    allow it; see docs/data-handling.md). Both are wiped after every call.

    Speed (benches/test_detect.py): about 8 ms per 960x540 frame on one core,
    6 ms on two, less than half the time of OpenCV's own runner on the same model.

    Thread safety: one detector may be shared between threads; :meth:`detect`
    holds a lock for the whole call, since calls share the buffers, so calls on
    one detector run one at a time. For parallel detection, use one detector per
    thread (or camera), each with its own ``threads``.

    Args:
        model: The YuNet 2023mar ONNX file with dynamic input height and width
            (input ``"input"`` ``float32[1, 3, H, W]``, outputs ``cls_8`` ...
            ``kps_32``); default: the installed model (``lfr models fetch``).
        score_threshold: Lowest score kept, in ``(0, 1]``.
        nms_threshold: Boxes overlapping a better one by more than this IoU are
            dropped, in ``(0, 1]``.
        top_k: Most faces returned per frame (the best ones).
        working_size: Longest side, in pixels, that larger frames are shrunk to.
        threads: onnxruntime intra-op threads (inter-op 1, spinning off, so idle
            threads do not burn the cores other cameras need).
        allow_unlocked: Passed to the :class:`~lfr.secure.SecureBuffer` s: run even
            where the memory cannot be locked. The default fails closed.

    Raises:
        ModelError: The model is not installed, the file is missing, or it is not
            a YuNet model onnxruntime can load.
        ValueError: A parameter is out of range.
        TypeError: A parameter has the wrong type.
        lfr.errors.SecureMemoryError: The buffers cannot be locked.

    Examples:
        >>> import cv2, lfr
        >>> detector = lfr.FaceDetector()  # doctest: +SKIP
        >>> faces = detector.detect(cv2.imread("photo.jpg"))  # doctest: +SKIP
        >>> len(faces), faces.boxes[0], faces.landmarks[0, 0]  # doctest: +SKIP
        (1, array([ 74.5,  67.6, 169.3, 192.8], dtype=float32), ...)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 1000,
        working_size: int = 960,
        threads: int = 1,
        allow_unlocked: bool = False,
    ) -> None:
        self._score_threshold = _check_fraction("score_threshold", score_threshold)
        self._nms_threshold = _check_fraction("nms_threshold", nms_threshold)
        self._top_k = _check_count("top_k", top_k)
        self._working_size = _check_count("working_size", working_size, MAX_FRAME_SIDE)
        self._threads = _check_count("threads", threads)
        path = models.path("yunet") if model is None else Path(os.fspath(model))
        if not path.is_file():
            raise ModelError(f"model file {path} not found")
        self._model = path
        self._session = session(path, self._threads)
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = {o.name for o in self._session.get_outputs()}
        if inputs != [_INPUT] or not outputs.issuperset(_OUTPUTS):
            raise ModelError(
                f"{path.name} is not YuNet 2023mar: inputs {inputs}, "
                f"outputs {sorted(outputs)}"
            )
        self._binding = self._session.io_binding()
        side = self._working_size
        padded = _pad(side)
        self._scaled = SecureBuffer(side * side * 3, allow_unlocked=allow_unlocked)
        try:
            self._tensor = SecureBuffer(
                3 * padded * padded * 4, allow_unlocked=allow_unlocked
            )
        except BaseException:
            self._scaled.close()
            raise
        self._allow_unlocked = allow_unlocked
        self._lock = threading.Lock()
        self._closed = False
        _log.debug(
            "loaded %s (%d threads); %d bytes of secure buffers",
            path.name,
            self._threads,
            self._scaled.nbytes + self._tensor.nbytes,
        )

    @property
    def model(self) -> Path:
        """The ONNX file in use."""
        return self._model

    @property
    def score_threshold(self) -> float:
        """Lowest score kept."""
        return self._score_threshold

    @property
    def nms_threshold(self) -> float:
        """IoU above which the lower-scoring of two boxes is dropped."""
        return self._nms_threshold

    @property
    def top_k(self) -> int:
        """Most faces returned per frame."""
        return self._top_k

    @property
    def working_size(self) -> int:
        """Longest side larger frames are shrunk to."""
        return self._working_size

    @property
    def threads(self) -> int:
        """Intra-op threads of onnxruntime."""
        return self._threads

    @property
    def buffers(self) -> tuple[SecureBuffer, ...]:
        """The secure buffers that hold face pixels during :meth:`detect`.

        For audits and tests: outside a call they are all zeros.
        """
        return (self._scaled, self._tensor)

    def working_shape(self, height: int, width: int) -> tuple[int, int]:
        """The size a ``height x width`` frame is run at, before padding.

        Args:
            height: Frame height in pixels.
            width: Frame width in pixels.

        Returns:
            ``(height, width)`` of the model's view of the frame: unchanged when
            its longest side is at most :attr:`working_size`, else shrunk to it
            (keeping the aspect ratio, at least 1 pixel).
        """
        longest = max(height, width)
        if longest <= self._working_size:
            return height, width
        scale = self._working_size / longest
        return max(1, round(height * scale)), max(1, round(width * scale))

    def detect(self, frame: npt.NDArray[np.uint8]) -> Detections:
        """Finds the faces in one frame.

        Args:
            frame: ``uint8[h, w, 3]`` BGR image, any strides, at most
                :data:`MAX_FRAME_SIDE` pixels on a side. Read, never written.

        Returns:
            The faces, best score first, in ``frame``'s pixel coordinates.

        Raises:
            TypeError: ``frame`` is not a uint8 numpy array.
            ValueError: ``frame`` is empty, not ``(h, w, 3)`` or too large.
            RuntimeError: The detector is closed, or OpenCV did not resize in place.

        Examples:
            >>> import numpy as np
            >>> blank = np.zeros((540, 960, 3), np.uint8)
            >>> len(detector.detect(blank))  # doctest: +SKIP
            0
        """
        h, w = check_frame(frame)
        nh, nw = self.working_shape(h, w)
        ph, pw = _pad(nh), _pad(nw)
        with self._lock:
            if self._closed:
                raise RuntimeError("the detector is closed")
            try:
                outputs = self._infer(frame, nh, nw, ph, pw)
            finally:
                self._binding.clear_binding_inputs()
                self._binding.clear_binding_outputs()
                self._scaled.wipe()
                self._tensor.wipe()
        boxes, scores, points = _decode(outputs, ph, pw, self._score_threshold)
        keep = nms(boxes, scores, self._nms_threshold, self._top_k)
        boxes, scores, points = boxes[keep], scores[keep], points[keep]
        sx, sy = w / nw, h / nh
        boxes[:, 0::2] *= sx
        boxes[:, 1::2] *= sy
        points[:, :, 0] *= sx
        points[:, :, 1] *= sy
        np.clip(boxes[:, 0::2], 0.0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0.0, h, out=boxes[:, 1::2])
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(
            boxes=boxes[inside].astype(np.float32),
            scores=scores[inside],
            landmarks=points[inside].astype(np.float32),
        )

    def _infer(
        self,
        frame: npt.NDArray[np.uint8],
        nh: int,
        nw: int,
        ph: int,
        pw: int,
    ) -> dict[str, npt.NDArray[np.float32]]:
        # Runs with the lock held; the caller wipes both buffers afterwards.
        tensor = self._tensor.array(np.float32, (1, 3, ph, pw))
        image = frame if (nh, nw) == frame.shape[:2] else self._shrink(frame, nh, nw)
        for c in range(3):
            plane = tensor[0, c]
            # A strided uint8 -> float32 cast straight into the plane: no temporary.
            np.copyto(plane[:nh, :nw], image[:, :, c], casting="unsafe")
            plane[nh:, :] = 0.0
            plane[:nh, nw:] = 0.0
        self._binding.bind_input(
            _INPUT, "cpu", 0, np.float32, [1, 3, ph, pw], tensor.ctypes.data
        )
        for name in _OUTPUTS:
            self._binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(self._binding)
        values = self._binding.copy_outputs_to_cpu()
        del tensor, image
        return dict(zip(_OUTPUTS, values))

    def _shrink(
        self, frame: npt.NDArray[np.uint8], nh: int, nw: int
    ) -> npt.NDArray[np.uint8]:
        """``frame`` resized into the scaled buffer (area interpolation)."""
        scratch: SecureBuffer | None = None
        source = frame
        if not opencv_reads_in_place(frame):
            # OpenCV would copy this layout into memory of its own first: make that
            # copy here instead, in a secure buffer wiped right after the resize.
            h, w = frame.shape[:2]
            scratch = SecureBuffer(h * w * 3, allow_unlocked=self._allow_unlocked)
            source = scratch.array(np.uint8, (h, w, 3))
            np.copyto(source, frame)
        try:
            scaled = self._scaled.array(np.uint8, (nh, nw, 3))
            result = cv2.resize(
                source, (nw, nh), dst=scaled, interpolation=cv2.INTER_AREA
            )
            if result.ctypes.data != scaled.ctypes.data:
                result.fill(0)
                raise RuntimeError("cv2.resize did not write into the given buffer")
            return scaled
        finally:
            if scratch is not None:
                del source
                scratch.discard()

    def close(self) -> None:
        """Wipes and frees the buffers; later :meth:`detect` calls raise.

        Waits for a running :meth:`detect` call to finish. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._scaled.discard()
            self._tensor.discard()

    def __repr__(self) -> str:
        return (
            f"FaceDetector(model={self._model.name!r}, "
            f"score_threshold={self._score_threshold}, "
            f"nms_threshold={self._nms_threshold}, top_k={self._top_k}, "
            f"working_size={self._working_size}, threads={self._threads})"
        )
