"""Face alignment: from a detected face to an embedder's chip, in secure memory.

Everything that places a face in a chip lives here; the embedder
(:mod:`lfr.embed`) and the quality gate (:mod:`lfr.quality`) both use it.

* :mod:`lfr.align.frames`: the checks every face step makes of a frame
  (:func:`check_frame`, :data:`MAX_FRAME_SIDE`, :func:`opencv_reads_in_place`).
* :mod:`lfr.align.warp`: the similarity transform from landmarks onto a template,
  and warps that write the chip straight into the caller's buffer
  (:func:`warp_face`, :func:`align_into`).
* :mod:`lfr.align.dlib`: dlib's own alignment without dlib: its 5-point shape
  predictor's landmarks for YuNet detections, its chip geometry and its grey
  conversion; and :data:`DLIB_TEMPLATE` for YuNet's landmarks.
* :mod:`lfr.align.aligner`: :class:`FaceAligner`, an embedder's settings turned
  into each face's frame-to-chip maps.
"""

from __future__ import annotations

from lfr.align.aligner import Alignment, FaceAligner
from lfr.align.dlib import (
    DLIB_CHIP_TEMPLATE,
    DLIB_TEMPLATE,
    box_from_yunet,
    chip_transform,
    dlib_grey,
    dlib_landmarks,
    shape_predictor,
)
from lfr.align.frames import MAX_FRAME_SIDE, check_frame, opencv_reads_in_place
from lfr.align.warp import (
    align_into,
    mirrored_transform,
    similarity_transform,
    warp_affine,
    warp_face,
)

__all__ = [
    "DLIB_CHIP_TEMPLATE",
    "DLIB_TEMPLATE",
    "MAX_FRAME_SIDE",
    "Alignment",
    "FaceAligner",
    "align_into",
    "box_from_yunet",
    "check_frame",
    "chip_transform",
    "dlib_grey",
    "dlib_landmarks",
    "mirrored_transform",
    "opencv_reads_in_place",
    "shape_predictor",
    "similarity_transform",
    "warp_affine",
    "warp_face",
]
