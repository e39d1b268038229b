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
* :class:`AlertRepository`: where :class:`lfr.AlertStore` keeps its rows,
  ciphertext only, with no retention rule of its own (lfr's:
  :class:`~lfr.alerts.repository.SqliteRepository`; a PostgreSQL one would
  plug in here).

This module imports nothing of lfr at run time (the types in the signatures are
for type checkers only), so any module can depend on it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from lfr.alerts.rows import AlertRow, HoldRow, RetentionRow, ReviewRow
    from lfr.audit.signing import PublicKey
    from lfr.detect import Detections
    from lfr.sources import Frame, SourceStats

__all__ = ["AlertRepository", "Detector", "Embedder", "Renderer", "Signer", "Source"]


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


@runtime_checkable
class AlertRepository(Protocol):
    """Where an alert store keeps its rows: exactly what :class:`lfr.AlertStore` uses.

    A repository stores the opaque rows of :mod:`lfr.alerts.rows` (ciphertext,
    and the plaintext retention needs) and applies no rule: the store decides
    what expires, what a hold keeps and what a purge destroys
    (:mod:`lfr.alerts.rules`), and seals and opens every value
    (:mod:`lfr.alerts.sealing`). Every method but :meth:`session`,
    :meth:`close` and the properties runs inside a :meth:`session`; the ones
    that write run inside a :meth:`transaction` (:meth:`compact` outside one).
    Errors of the database surface as :class:`lfr.errors.AlertStoreError` from
    the session.
    """

    @property
    def meta(self) -> Mapping[str, str]:
        """The store's metadata record (format, key id, store id, key check)."""
        ...

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        ...

    @property
    def compact_pending(self) -> bool:
        """Whether deleted ciphertext may still be on disk (a compaction to redo)."""
        ...

    def session(self) -> AbstractContextManager[None]:
        """Exclusive use of the repository by this thread, for one operation.

        Raises ``ValueError`` when closed; re-entrant within a thread.
        """
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction, its write lock taken at once; rolled back on error."""
        ...

    def alert(self, alert_id: str) -> AlertRow | None:
        """The alert's row, or ``None``."""
        ...

    def alerts(self) -> list[AlertRow]:
        """Every alert row, shredded ones included, in insertion order."""
        ...

    def retention(self) -> list[RetentionRow]:
        """Every alert's plaintext and latest hold entry, in insertion order."""
        ...

    def insert(self, row: AlertRow) -> None:
        """Stores a new alert."""
        ...

    def replace_sealed(self, alert_id: str, record: bytes, crop: bytes) -> None:
        """Replaces an alert's sealed record and crop."""
        ...

    def holds(self, alert_id: str) -> list[HoldRow]:
        """The alert's hold history, by increasing seq."""
        ...

    def add_hold(self, row: HoldRow) -> None:
        """Appends a hold-history entry."""
        ...

    def reviews(self, alert_id: str) -> list[ReviewRow]:
        """The alert's reviews, by increasing seq."""
        ...

    def add_review(self, row: ReviewRow) -> None:
        """Appends a review."""
        ...

    def next_seq(self, kind: Literal["holds", "reviews"]) -> int:
        """The seq of the next hold entry or review (above every one so far)."""
        ...

    def high_water(self) -> int | None:
        """The latest time (µs since the epoch) a write was made at, if any."""
        ...

    def chain(self) -> tuple[str, int, str] | None:
        """``(log_id, records, head)``: the latest audit log of the store's chain."""
        ...

    def set_chain(self, log_id: str, records: int, head: str) -> None:
        """Records the chain's latest log and head (in a write transaction)."""
        ...

    def counts(self) -> tuple[int, int, int]:
        """``(live, shredded, tombstones)``: alerts with their key, without, buried."""
        ...

    def raise_high_water(self, now_us: int) -> None:
        """Moves that mark up to ``now_us``, never down (in a write transaction)."""
        ...

    def shred(self, alert_ids: Sequence[str]) -> None:
        """Destroys the alerts' wrapped keys (overwritten, then ``None``)."""
        ...

    def bury(self, purged_us: int) -> list[str]:
        """Replaces every shredded alert, its holds and reviews, by a tombstone.

        Returns the ids buried, in insertion order.
        """
        ...

    def purged_at(self, alert_id: str) -> int | None:
        """When the alert was buried (microseconds since the epoch), or ``None``."""
        ...

    def tombstones(self) -> list[str]:
        """The ids of every buried alert, oldest burial first."""
        ...

    def compact(self) -> bool:
        """Removes deleted ciphertext from disk if it can; whether it could."""
        ...

    def close(self) -> None:
        """Releases the database (idempotent)."""
        ...


@runtime_checkable
class Signer(Protocol):
    """Signs audit records with an Ed25519 key.

    lfr's: :class:`lfr.SigningKey` (a key file) and
    :class:`lfr.audit.token.TokenSigner` (a key in a PKCS#11 token that never
    leaves it).
    """

    @property
    def key_id(self) -> str:
        """The public key's fingerprint."""
        ...

    def public_key(self) -> PublicKey:
        """The public key that verifies the signatures."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature (64 bytes) of ``data``."""
        ...
