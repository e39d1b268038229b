"""The seams of the pipeline, as :class:`typing.Protocol` classes.

Each protocol names exactly what lfr's pipeline (:class:`lfr.Deployment`), enrolment
(:mod:`lfr.enrolment`) and evaluation use of a part, so that a part can be swapped
(another detector, a test double, a different frame source) without subclassing
lfr's own classes, and so that ``mypy --strict`` checks the swap. lfr's classes
satisfy them structurally; tests/unit/test_protocols.py checks it.

The seams:

* :class:`Detector`: frames in, :class:`~lfr.detect.Detections` out
  (lfr's: :class:`~lfr.detect.FaceDetector`).
* :class:`Embedder`: a frame and its detections in, unit-length embeddings out,
  with the dimension and the model id a watchlist is checked against
  (lfr's: :class:`~lfr.embed.FaceEmbedder`).
* :class:`Source`: where frames come from, as the pipeline drives it
  (lfr's: :class:`~lfr.sources.FrameSource`, made by :func:`lfr.open_source`).
* :class:`Renderer`: the operator preview, drawn with every passer-by blurred
  (lfr's: :class:`~lfr.preview.Preview`).

This module imports nothing of lfr at run time (the types in the signatures are
for type checkers only), so any module can depend on it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from lfr.detect import Detections
    from lfr.sources import Frame, SourceStats

__all__ = ["Detector", "Embedder", "Renderer", "Source"]


@runtime_checkable
class Detector(Protocol):
    """Finds faces in a frame."""

    def detect(self, frame: npt.NDArray[np.uint8]) -> Detections:
        """The faces of a ``uint8[h, w, 3]`` BGR frame, best score first.

        Implementations read ``frame`` without keeping it, and keep every copy of
        its pixels in secure memory, wiped before returning.
        """
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns detected faces into unit-length embeddings."""

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        ...

    @property
    def model_id(self) -> str:
        """Identifies the model and alignment; embeddings compare only within one."""
        ...

    def embed(
        self,
        frame: npt.NDArray[np.uint8],
        faces: Detections,
        out: npt.NDArray[np.float32] | None = None,
    ) -> npt.NDArray[np.float32]:
        """``float32[len(faces), dim]`` unit-length rows, written into ``out`` if given.

        ``out`` is normally a :class:`~lfr.secure.SecureBuffer` view; without it the
        result lives in a fresh secure buffer.
        """
        ...


@runtime_checkable
class Source(Protocol):
    """Where frames come from, as the pipeline drives it.

    :meth:`frames` is iterated once, from one thread; :meth:`stop` may be called
    from any thread at any time; :meth:`close` releases everything.
    """

    @property
    def live(self) -> bool:
        """True for cameras and streams (newest frame wins, frames may be dropped)."""
        ...

    @property
    def stats(self) -> SourceStats:
        """A snapshot of the counts so far (``dropped`` is what the pipeline reads)."""
        ...

    def frames(self) -> Iterator[Frame]:
        """The frames, in order; the consumer releases each one when done."""
        ...

    def stop(self) -> None:
        """Makes :meth:`frames` end promptly; safe from any thread."""
        ...

    def close(self) -> None:
        """Stops and frees the capture and the frames' memory. Idempotent."""
        ...


@runtime_checkable
class Renderer(Protocol):
    """Draws each processed frame for the operator (:class:`lfr.Preview`)."""

    def render(
        self,
        frame: npt.NDArray[np.uint8],
        boxes: npt.NDArray[np.float32],
        keep: npt.NDArray[np.bool_],
        labels: list[str | None],
    ) -> None:
        """Shows ``frame`` with every face whose ``keep`` is False blurred.

        ``labels`` names the kept faces (watchlist subjects); implementations
        must not keep ``frame`` or its pixels after returning, except in what
        they draw with non-matching faces already blurred.
        """
        ...

    def close(self) -> None:
        """Finishes the preview (idempotent)."""
        ...
