"""Enrolment's vision work: photographs in, one template per photograph out.

:meth:`lfr.Watchlist.enroll` stores what :func:`embed_images` computes. Each image
must show exactly one face that passes the quality gate; the images are read (files
decoded, then wiped), detected, gated and embedded straight into the caller's
buffer (normally a :class:`~lfr.secure.SecureBuffer` view). Enrolment is all or
nothing: when any image fails, :class:`~lfr.errors.EnrolmentError` lists every
failing image with its reason and the caller stores nothing.

The vision stack (onnxruntime, OpenCV) loads with this module, so the watchlist
imports it only when something is enrolled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Union

import cv2
import numpy as np
import numpy.typing as npt

from lfr.detect import FaceDetector
from lfr.embed import FaceEmbedder
from lfr.errors import EnrolmentError
from lfr.quality import QualityGate

if TYPE_CHECKING:
    from lfr.protocols import Detector, Embedder

__all__ = ["ImageInput", "embed_images", "load_image"]

#: An enrolment image: a file path, or a ``uint8[h, w, 3]`` BGR array.
ImageInput = Union[str, "os.PathLike[str]", npt.NDArray[np.uint8]]


def embed_images(
    images: Sequence[ImageInput],
    out: npt.NDArray[np.float32],
    *,
    check_model: Callable[[str], None],
    detector: Detector | None = None,
    embedder: Embedder | None = None,
    gate: QualityGate | None = None,
) -> None:
    """Embeds the one usable face of each image into its row of ``out``.

    Args:
        images: File paths or ``uint8[h, w, 3]`` BGR arrays.
        out: ``float32[len(images), dim]``, written row by row (rows of failing
            images are left as they were).
        check_model: Called with the embedder's ``model_id`` before any image is
            read; raises if the templates would not fit (normally
            :meth:`lfr.Watchlist.check_model`).
        detector: Default: a new :class:`~lfr.detect.FaceDetector`.
        embedder: Default: a new :class:`~lfr.embed.FaceEmbedder`.
        gate: Default: :class:`~lfr.quality.QualityGate` with default thresholds.

    Raises:
        EnrolmentError: Some image has no usable face, several, or cannot be read
            (``failures`` lists ``(index, reason)`` for every failing image).
        WatchlistError: From ``check_model``.
    """
    embedder = embedder or FaceEmbedder()
    check_model(embedder.model_id)
    detector = detector or FaceDetector()
    gate = gate or QualityGate()
    failures: list[tuple[int, str]] = []
    for i, item in enumerate(images):
        image, owned = load_image(item)
        try:
            if isinstance(image, str):
                failures.append((i, image))
                continue
            faces = detector.detect(image)
            report = gate.assess(image, faces)
            usable = np.flatnonzero(report.passed)
            if len(faces) == 0:
                failures.append((i, "no face found"))
            elif usable.size == 0:
                why = ", ".join(sorted({r for rs in report.reasons for r in rs}))
                failures.append((i, f"no face passes the quality gate ({why})"))
            elif usable.size > 1:
                failures.append(
                    (
                        i,
                        f"{usable.size} usable faces; an enrolment image "
                        "must show exactly one",
                    )
                )
            else:
                embedder.embed(image, faces[usable], out=out[i : i + 1])
        finally:
            if owned and not isinstance(image, str):
                image.fill(0)
    if failures:
        lines = "; ".join(f"image {i}: {why}" for i, why in failures)
        raise EnrolmentError(
            f"{len(failures)} of {len(images)} images cannot be enrolled, "
            f"so none was: {lines}",
            failures,
        )


def load_image(item: ImageInput) -> tuple[npt.NDArray[np.uint8] | str, bool]:
    """Reads one enrolment image.

    Args:
        item: A file path, or a ``uint8[h, w, 3]`` BGR array (used as it is).

    Returns:
        ``(image, owned)``: ``owned`` when the image was decoded here (the caller
        wipes it after use); or ``(reason, False)`` when it cannot be used.
    """
    if isinstance(item, np.ndarray):
        if (
            item.dtype != np.uint8
            or item.ndim != 3
            or item.shape[2] != 3
            or not item.size
        ):
            return "not a uint8 (h, w, 3) BGR image", False
        return item, False
    try:
        raw = np.fromfile(os.fspath(item), dtype=np.uint8)
    except OSError as exc:
        return f"cannot read {os.fspath(item)}: {exc.strerror}", False
    try:
        image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    finally:
        raw.fill(0)
    if image is None:
        return f"{os.fspath(item)} is not a readable image", False
    return np.asarray(image, np.uint8), True
