"""Enrolment's vision work: photographs in, one template per photograph out.

:meth:`lfr.Watchlist.enroll` stores what :func:`embed_images` computes. Each image
must show exactly one face that passes the quality gate; the images are read (files
decoded straight into secure memory, their size bounded first, and wiped after
use), detected, gated and embedded straight into the caller's
buffer (normally a :class:`~lfr.secure.SecureBuffer` view). Enrolment is all or
nothing: when any image fails, :class:`~lfr.errors.EnrolmentError` lists every
failing image with its reason and the caller stores nothing.

The vision stack (onnxruntime, OpenCV) loads with this module, so the watchlist
imports it only when something is enrolled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import numpy.typing as npt

from lfr.detect import FaceDetector
from lfr.embed import FaceEmbedder
from lfr.errors import EnrolmentError
from lfr.quality import QualityGate
from lfr.secure import SecureBuffer
from lfr.sources._stills import UnusableImageError, decode_into, read_size

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
        image, buffer = load_image(item)
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
            del image
            if buffer is not None:
                buffer.discard()  # wiped now; freed once no view is left
    if failures:
        lines = "; ".join(f"image {i}: {why}" for i, why in failures)
        raise EnrolmentError(
            f"{len(failures)} of {len(images)} images cannot be enrolled, "
            f"so none was: {lines}",
            failures,
        )


def load_image(
    item: ImageInput,
) -> tuple[npt.NDArray[np.uint8] | str, SecureBuffer | None]:
    """Reads one enrolment image.

    A file's header is read first and its size bounded
    (:data:`~lfr.sources.MAX_STILL_PIXELS`); then OpenCV decodes it straight into
    a new :class:`~lfr.secure.SecureBuffer` (``cv2.imread(path, dst, flags)``,
    checked to have written there), so its pixels never sit in ordinary memory.

    Args:
        item: A file path, or a ``uint8[h, w, 3]`` BGR array (used as it is).

    Returns:
        ``(image, buffer)``: for a file, ``image`` is a view of ``buffer``, which
        the caller discards (wipes and frees) after deleting the view; for an
        array, ``buffer`` is ``None``. ``(reason, None)`` when it cannot be used.

    Raises:
        lfr.errors.SecureMemoryError: The buffer for the decoded image cannot be
            locked in memory.
    """
    if isinstance(item, np.ndarray):
        if (
            item.dtype != np.uint8
            or item.ndim != 3
            or item.shape[2] != 3
            or not item.size
        ):
            return "not a uint8 (h, w, 3) BGR image", None
        return item, None
    path = Path(os.fspath(item))
    try:
        shape = read_size(path)
    except UnusableImageError as exc:
        return f"{path}: {exc.reason}", None
    buffer = SecureBuffer(shape[0] * shape[1] * 3)
    try:
        h, w = decode_into(path, buffer, shape)
    except UnusableImageError as exc:
        buffer.discard()
        return f"{path}: {exc.reason}", None
    except BaseException:
        buffer.discard()
        raise
    return buffer.array(np.uint8, (h, w, 3)), buffer
