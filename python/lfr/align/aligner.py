"""Where each detected face goes in an embedder's chip: its frame-to-chip maps.

:class:`FaceAligner` holds an embedder's alignment settings (chip size, template,
``"dlib"`` or ``"template"`` method, mirrored views) and turns a frame's detections
into the ``(2, 3)`` maps that :func:`lfr.align.align_into` warps with. It works on
the detections' arrays (boxes and landmarks), so alignment does not depend on the
detector.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from lfr.align.dlib import (
    DLIB_TEMPLATE,
    chip_transform,
    dlib_landmarks,
    shape_predictor,
)
from lfr.align.warp import mirrored_transform, similarity_transform
from lfr.models.shape_predictor import ShapePredictor

__all__ = ["Alignment", "FaceAligner"]

F64 = npt.NDArray[np.float64]

#: ``"dlib"``: dlib's 5-point shape predictor and chip geometry (what dlib's model
#: was trained on); ``"template"``: the detector's landmarks onto ``template``.
Alignment = Literal["dlib", "template"]


class FaceAligner:
    """Frame-to-chip maps for faces, as one embedder aligns them.

    Args:
        size: Chip side in pixels.
        template: Five ``(x, y)`` chip coordinates for the detector's landmarks
            (``"template"`` method, and nothing else); default
            :data:`~lfr.align.DLIB_TEMPLATE` scaled to ``size``.
        method: ``"dlib"`` (dlib's shape predictor and chip geometry) or
            ``"template"``.
        flip: Also give each face's mirror image's map, right after its own.

    Raises:
        ValueError: ``template`` is not five finite points, or ``method`` unknown.
        ModelError: ``"dlib"`` and the shape predictor is not installed.
    """

    def __init__(
        self,
        size: int,
        template: npt.ArrayLike | None = None,
        *,
        method: Alignment = "template",
        flip: bool = False,
    ) -> None:
        points = (
            np.asarray(template, dtype=np.float64)
            if template is not None
            else np.asarray(DLIB_TEMPLATE) * (size / 150.0)
        )
        if points.shape != (5, 2) or not np.isfinite(points).all():
            raise ValueError(
                f"template must be 5 finite (x, y) points, got {points.shape}"
            )
        if method not in ("dlib", "template"):
            raise ValueError(f'alignment must be "dlib" or "template", got {method!r}')
        self._size = int(size)
        self._template = points
        self._method: Alignment = method
        self._flip = bool(flip)
        self._predictor: ShapePredictor | None = (
            shape_predictor() if method == "dlib" else None
        )

    @property
    def size(self) -> int:
        """Chip side in pixels."""
        return self._size

    @property
    def template(self) -> F64:
        """The ``(5, 2)`` template of the ``"template"`` method (a copy)."""
        return self._template.copy()

    @property
    def method(self) -> Alignment:
        """``"dlib"`` or ``"template"``."""
        return self._method

    @property
    def flip(self) -> bool:
        """Whether each face's mirror image's map follows its own."""
        return self._flip

    def transforms(
        self,
        frame: npt.NDArray[np.uint8],
        boxes: npt.ArrayLike,
        landmarks: npt.ArrayLike,
    ) -> list[F64]:
        """Frame-to-chip maps, face by face (with its mirror after it if flipping).

        Args:
            frame: The ``uint8[h, w, 3]`` frame (read in place by the ``"dlib"``
                method's shape predictor, whatever its strides).
            boxes: ``[n, 4]`` detector boxes.
            landmarks: ``[n, 5, 2]`` detector landmarks.

        Returns:
            ``n`` (or ``2 n`` with ``flip``) ``float64[2, 3]`` maps for
            :func:`lfr.align.align_into`.
        """
        s = self._size
        out: list[F64] = []
        points = np.asarray(landmarks)
        if self._predictor is None:
            for lm in points:
                out.append(similarity_transform(lm, self._template))
                if self._flip:
                    out.append(mirrored_transform(lm, self._template))
            return out
        if len(points) == 0:
            return out
        shapes = dlib_landmarks(self._predictor, frame, boxes, points)
        # The mirror of chip pixel x is pixel s - 1 - x.
        mirror = np.array([[-1.0, 0.0, s - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        for shape in shapes:
            m = chip_transform(shape, s, 0.25)
            out.append(m)
            if self._flip:
                out.append((mirror @ np.vstack([m, [0.0, 0.0, 1.0]]))[:2])
        return out
