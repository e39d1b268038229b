"""Watchlists: who is searched for, as encrypted templates and a force's records.

A :class:`Watchlist` is a set of subjects, each with one or more templates (face
embeddings from one embedder) and the metadata a force must record: why the person is
on the list, where the image came from, who added them and when, and until when. It
lives in an ``.lfrw`` file (:mod:`lfr._lfrw`): authenticated, AES-256-GCM encrypted,
written atomically. Raw enrolment images are never stored, only templates.

In memory the templates stay in a :class:`~lfr.secure.SecureBuffer` (locked, never in
core dumps) and go from there into a :class:`~lfr.matcher.Matcher` whose matrix is
also in locked memory (:meth:`Watchlist.matcher`). :meth:`Watchlist.destroy` wipes the
in-memory copy and can delete the file.

Example:
    >>> import lfr
    >>> key = lfr.Key.generate()
    >>> emb = lfr.FaceEmbedder()  # doctest: +SKIP
    >>> wl = lfr.Watchlist.create(path, key, embedder=emb)  # doctest: +SKIP
    >>> wl.enroll("S-0001", ["custody-1.jpg"], reason="wanted: burglary",
    ...           source="custody record 42", added_by="PC 123")  # doctest: +SKIP
    >>> wl.save()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lfr import _lfrw
from lfr.errors import RetentionError, WatchlistError
from lfr.keys import KeyProvider, Passphrase
from lfr.secure import SecureBuffer, require_hardening

if TYPE_CHECKING:
    from lfr.enrolment import ImageInput
    from lfr.protocols import Detector, Embedder
    from lfr.quality import QualityGate

__all__ = ["Header", "Subject", "Watchlist"]

_log = logging.getLogger(__name__)

Header = _lfrw.Header
Clock = Callable[[], datetime]
F32 = npt.NDArray[np.float32]

_MAX_ID = 256
_MAX_TEXT = 4096


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(timezone.utc)


def _text(value: object, what: str, limit: int = _MAX_TEXT) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    return value


@dataclass(frozen=True)
class Subject:
    """One person on the watchlist: the record a force keeps, no templates.

    Attributes:
        subject_id: The force's identifier (not necessarily a name).
        reason: Why the person is on the list (offence category, warrant...), or
            None if it was not recorded.
        source: Where the enrolment images came from (custody record, case...),
            or None.
        added_by: Who added the person (default: the operating-system user).
        added_at: When (UTC).
        expires: When the entry lapses (UTC), or None for the watchlist's expiry.
        templates: Number of templates held.
    """

    subject_id: str
    reason: str | None
    source: str | None
    added_by: str
    added_at: datetime
    expires: datetime | None
    templates: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (metadata only)."""
        return {
            "subject_id": self.subject_id,
            "reason": self.reason,
            "source": self.source,
            "added_by": self.added_by,
            "added_at": self.added_at.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "templates": self.templates,
        }

    def expired(self, now: datetime) -> bool:
        """Whether the entry has lapsed at ``now``."""
        return self.expires is not None and now >= self.expires


@dataclass
class _Entry:
    subject: Subject
    ids: list[int]  # template ids, one per row, in row order


class Watchlist:
    """An encrypted watchlist file and its decrypted, locked in-memory copy.

    Make one with :meth:`create` or :meth:`open`; change it with :meth:`add`,
    :meth:`enroll` and :meth:`remove`; write it with :meth:`save`; search it through
    :meth:`matcher`; end it with :meth:`destroy`. Not thread-safe: one owner at a
    time. ``repr`` shows sizes and the model id, never subjects or templates.
    """

    def __init__(
        self,
        path: Path,
        key: KeyProvider,
        header: Header,
        clock: Clock,
    ) -> None:
        self._path = path
        self._key = key
        self._created = header.created
        self._expires = header.expires
        self._model_id = header.model_id
        self._dim = header.dim
        self._kdf = header.kdf
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._rows = 0
        self._next_id = 0
        self._buf: SecureBuffer | None = None
        self._destroyed = False
        self._sha256 = ""
        self._owners: dict[int, str] | None = None  # template id -> subject, cached

    # -- opening --------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        key: KeyProvider | Passphrase,
        *,
        model_id: str | None = None,
        dim: int | None = None,
        embedder: Embedder | None = None,
        expires: datetime | None = None,
        overwrite: bool = False,
        clock: Clock | None = None,
    ) -> Watchlist:
        """Creates an empty watchlist and writes its file.

        Args:
            path: The ``.lfrw`` file to write.
            key: The key (or a :class:`~lfr.keys.Passphrase`: fresh scrypt
                parameters are stored in the file).
            model_id: The embedder's ``model_id``; or give ``embedder``.
            dim: Template dimension; or give ``embedder``.
            embedder: An :class:`~lfr.protocols.Embedder` (such as
                :class:`~lfr.embed.FaceEmbedder`) to take both from.
            expires: When the whole watchlist lapses (aware datetime), or None.
            overwrite: Replace an existing file.
            clock: Returns the current aware UTC time (tests move it).

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
            ValueError: Neither ``embedder`` nor ``model_id`` and ``dim``.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite a watchlist")
        if embedder is not None:
            model_id, dim = embedder.model_id, embedder.dim
        if model_id is None or dim is None:
            raise ValueError("give embedder=, or both model_id= and dim=")
        _text(model_id, "model_id", _MAX_ID)
        if not isinstance(dim, int) or not 1 <= dim <= 65536:
            raise ValueError(f"dim must be in 1..65536, got {dim!r}")
        if isinstance(key, Passphrase):
            key = key.derive()
        clock = clock or _utcnow
        now = clock()
        header = Header(
            created=now,
            expires=_aware(expires, "expires"),
            model_id=model_id,
            dim=dim,
            subjects=0,
            templates=0,
            key_id=key.key_id,
            kdf=getattr(key, "kdf", None),
            saved=now,
        )
        wl = cls(path, key, header, clock)
        wl.save()
        return wl

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        key: KeyProvider | Passphrase,
        *,
        model_id: str | None = None,
        clock: Clock | None = None,
    ) -> Watchlist:
        """Decrypts and checks a watchlist file.

        Entries past their own expiry are dropped from the in-memory copy (and
        from the file at the next :meth:`save`).

        Args:
            path: The ``.lfrw`` file.
            key: Its key, or the :class:`~lfr.keys.Passphrase` it was made with.
            model_id: The embedder that will search it: refused if the templates
                come from another (``FaceEmbedder.model_id``).
            clock: Returns the current aware UTC time.

        Raises:
            WatchlistError: Not a watchlist, unknown format version, truncated,
                damaged or altered (any byte), or made for another model.
            lfr.errors.WrongKeyError: ``key`` is not the file's key (the error is
                also a WatchlistError).
            RetentionError: The watchlist has expired.
        """
        path = Path(path)
        opened = _lfrw.decrypt(path, key)
        header = opened.header
        clock = clock or _utcnow
        wl = cls(path, opened.key, header, clock)
        try:
            wl._load(opened.subjects, opened.templates, header)
            if model_id is not None:
                wl.check_model(model_id)
            if header.expires is not None and clock() >= header.expires:
                raise RetentionError(
                    f"watchlist {path} expired on {header.expires.isoformat()}"
                )
        except BaseException:
            wl._wipe()
            raise
        wl._drop_expired()
        wl._sha256 = opened.sha256
        return wl

    @staticmethod
    def info(path: str | os.PathLike[str]) -> Header:
        """The file's unencrypted header (sizes, model, dates, key id): no key needed.

        Raises:
            WatchlistError: Not a readable watchlist file.
        """
        return _lfrw.read_header(Path(path))[0]

    def _load(
        self, records: list[dict[str, Any]], buf: SecureBuffer, header: Header
    ) -> None:
        self._buf = buf
        row = 0
        try:
            for rec in records:
                ids = [int(i) for i in rec["template_ids"]]
                subject = Subject(
                    subject_id=str(rec["subject_id"]),
                    reason=_optional(rec["reason"]),
                    source=_optional(rec["source"]),
                    added_by=str(rec["added_by"]),
                    added_at=datetime.fromisoformat(rec["added_at"]),
                    expires=(
                        datetime.fromisoformat(rec["expires"])
                        if rec["expires"]
                        else None
                    ),
                    templates=len(ids),
                )
                if subject.subject_id in self._entries or not ids:
                    raise ValueError("duplicate or empty subject")
                self._entries[subject.subject_id] = _Entry(subject, ids)
                row += len(ids)
        except (KeyError, TypeError, ValueError):
            raise WatchlistError(
                f"{self._path} holds a malformed subject record"
            ) from None
        if row != header.templates:
            raise WatchlistError(f"{self._path} holds inconsistent template counts")
        self._rows = row
        self._next_id = 1 + max(
            (max(e.ids) for e in self._entries.values()), default=-1
        )

    # -- properties -----------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The watchlist file."""
        return self._path

    @property
    def key_id(self) -> str:
        """Public fingerprint of the key that protects the file."""
        return self._key.key_id

    @property
    def model_id(self) -> str:
        """The embedder the templates come from."""
        return self._model_id

    @property
    def dim(self) -> int:
        """Template dimension."""
        return self._dim

    @property
    def created(self) -> datetime:
        """When the watchlist was created (UTC)."""
        return self._created

    @property
    def expires(self) -> datetime | None:
        """When the whole watchlist lapses (UTC), or None."""
        return self._expires

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` has run."""
        return self._destroyed

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the file as last opened or saved.

        The watchlist's identity in the audit log; it reveals nothing of the
        contents.
        """
        return self._sha256

    @property
    def templates(self) -> int:
        """Number of templates held."""
        return self._rows

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._entries

    def subjects(self) -> list[Subject]:
        """Every subject's record, in enrolment order (no templates)."""
        return [e.subject for e in self._entries.values()]

    def subject(self, subject_id: str) -> Subject:
        """One subject's record.

        Raises:
            KeyError: Not on the watchlist.
        """
        self._alive()
        entry = self._entries.get(subject_id)
        if entry is None:
            raise KeyError(f"subject {subject_id!r} is not on the watchlist")
        return entry.subject

    def check_model(self, model_id: str) -> None:
        """Refuses an embedder other than the one the templates come from.

        Raises:
            WatchlistError: ``model_id`` differs from the watchlist's.
        """
        if model_id != self._model_id:
            raise WatchlistError(
                f"the watchlist's templates come from embedder {self._model_id!r}, "
                f"not {model_id!r}: templates of different embedders or alignments "
                "cannot be compared; re-enrol the subjects with this embedder"
            )

    def __repr__(self) -> str:
        state = "destroyed" if self._destroyed else f"subjects={len(self)}"
        return (
            f"Watchlist(path={str(self._path)!r}, {state}, templates={self._rows}, "
            f"model_id={self._model_id!r}, key_id={self._key.key_id!r})"
        )

    # -- templates in secure memory -----------------------------------------------

    def _alive(self) -> None:
        if self._destroyed:
            raise WatchlistError("the watchlist has been destroyed")

    def _matrix(self) -> F32:
        """``float32[rows, dim]`` view of the templates (drop it before resizing)."""
        if self._buf is None or self._rows == 0:
            return np.zeros((0, self._dim), np.float32)
        return self._buf.array(np.float32, (self._rows, self._dim))

    def _resize(self, rows: int, keep: Sequence[tuple[int, int]]) -> SecureBuffer:
        """A new buffer of ``rows`` rows.

        It holds the ``(start, stop)`` row ranges of the current one, in order; the
        caller swaps it in.
        """
        new = SecureBuffer(max(rows * self._dim * 4, 1))
        try:
            if rows:
                dst = new.array(np.float32, (rows, self._dim))
                src = self._matrix()
                at = 0
                for start, stop in keep:
                    dst[at : at + stop - start] = src[start:stop]
                    at += stop - start
                del dst, src
        except BaseException:
            new.discard()
            raise
        return new

    def _swap(self, new: SecureBuffer, rows: int) -> None:
        old, self._buf, self._rows = self._buf, new, rows
        if old is not None:
            old.discard()  # wipes

    # -- changing it ------------------------------------------------------------------

    def add(
        self,
        subject_id: str,
        templates: F32,
        *,
        reason: str | None = None,
        source: str | None = None,
        added_by: str | None = None,
        expires: datetime | None = None,
    ) -> Subject:
        """Adds a subject with ready-made templates (from this watchlist's embedder).

        Args:
            subject_id: A new id.
            templates: ``float32[n, dim]`` or ``[dim]`` finite, non-zero vectors;
                stored at unit length.
            reason: Why the person is on the list (a force should always say).
            source: Where the images came from.
            added_by: Who adds them (default: the operating-system user).
            expires: When the entry lapses (aware datetime), or None.

        Returns:
            The subject's record.

        Raises:
            ValueError: The id is taken, a field is blank, or the templates have
                the wrong shape or hold NaN, infinity or a zero vector.
            TypeError: ``templates`` is not a float32 array.
        """
        self._alive()
        _text(subject_id, "subject_id", _MAX_ID)
        if subject_id in self._entries:
            raise ValueError(f"subject {subject_id!r} is already on the watchlist")
        if not isinstance(templates, np.ndarray) or templates.dtype != np.float32:
            raise TypeError("templates must be a float32 numpy array")
        rows = templates.reshape(1, -1) if templates.ndim == 1 else templates
        if rows.ndim != 2 or rows.shape[1] != self._dim or rows.shape[0] == 0:
            raise ValueError(
                f"templates must have shape (n, {self._dim}), got {templates.shape}"
            )
        subject = Subject(
            subject_id=subject_id,
            reason=None if reason is None else _text(reason, "reason"),
            source=None if source is None else _text(source, "source"),
            added_by=_text(added_by or _user(), "added_by", _MAX_ID),
            added_at=self._clock(),
            expires=_aware(expires, "expires"),
            templates=int(rows.shape[0]),
        )
        n = rows.shape[0]
        new = self._resize(self._rows + n, [(0, self._rows)])
        try:
            dst = new.array(np.float32, (self._rows + n, self._dim))[self._rows :]
            np.copyto(dst, rows)
            norms = np.sqrt(np.einsum("ij,ij->i", dst, dst))  # no copy of rows
            if not (np.isfinite(norms).all() and (norms > 0).all()):
                raise ValueError("templates must be finite, non-zero vectors")
            dst /= norms[:, None]
            del dst
        except BaseException:
            new.discard()
            raise
        self._swap(new, self._rows + n)
        ids = list(range(self._next_id, self._next_id + n))
        self._next_id += n
        self._entries[subject_id] = _Entry(subject, ids)
        self._owners = None
        return subject

    def enroll(
        self,
        subject_id: str,
        images: Iterable[ImageInput],
        *,
        reason: str | None = None,
        source: str | None = None,
        added_by: str | None = None,
        expires: datetime | None = None,
        detector: Detector | None = None,
        embedder: Embedder | None = None,
        gate: QualityGate | None = None,
        allow_core_dumps: bool = False,
    ) -> Subject:
        """Enrols a subject from photographs: one template per image.

        Every image must show exactly one face that passes the quality gate. All
        or nothing: if any image fails, nothing is enrolled and
        :class:`~lfr.errors.EnrolmentError` lists every failing image with its
        reason. The images are never stored; images read from files are wiped
        from memory after use. The detection, gating and embedding are
        :func:`lfr.enrolment.embed_images`'; this method stores the result.

        Args:
            subject_id: A new id.
            images: File paths or ``uint8[h, w, 3]`` BGR arrays.
            reason: Why the person is on the list (a force should always say).
            source: Where the images came from (default: the file names, when
                the images are files).
            added_by: Who adds them (default: the operating-system user).
            expires: When the entry lapses, or None.
            detector: A :class:`~lfr.protocols.Detector` (default: a new
                :class:`~lfr.detect.FaceDetector`).
            embedder: A :class:`~lfr.protocols.Embedder` (default: a new
                :class:`~lfr.embed.FaceEmbedder`); it must be the watchlist's
                model.
            gate: A :class:`~lfr.quality.QualityGate` (default thresholds).
            allow_core_dumps: Enrol although core dumps stay possible. By default
                the process is hardened first (no core dumps, not dumpable:
                :func:`lfr.secure.require_hardening`), and enrolment is refused
                when that fails; with this override a warning is logged instead.

        Returns:
            The subject's record.

        Raises:
            HardeningError: Core dumps cannot be switched off (and
                ``allow_core_dumps`` is false); nothing is read.
            EnrolmentError: Some image has no usable face, several, or cannot be
                read (``failures`` lists ``(index, reason)``).
            WatchlistError: ``embedder`` is not the watchlist's model.
            ValueError: As :meth:`add`.
        """
        from lfr.enrolment import embed_images  # the vision stack, on first use

        self._alive()
        require_hardening(allow_core_dumps)  # before any face is read
        items = list(images)
        if not items:
            raise ValueError("enrolment needs at least one image")
        _text(subject_id, "subject_id", _MAX_ID)
        if subject_id in self._entries:
            raise ValueError(f"subject {subject_id!r} is already on the watchlist")
        with SecureBuffer(len(items) * self._dim * 4) as buf:
            vectors = buf.array(np.float32, (len(items), self._dim))
            embed_images(
                items,
                vectors,
                check_model=self.check_model,
                detector=detector,
                embedder=embedder,
                gate=gate,
            )
            names = [Path(i).name for i in items if not isinstance(i, np.ndarray)]
            if source is None and len(names) == len(items):
                source = "files: " + ", ".join(names)
            subject = self.add(
                subject_id,
                vectors,
                reason=reason,
                source=source,
                added_by=added_by,
                expires=expires,
            )
            del vectors
        return subject

    def remove(self, subject_id: str) -> None:
        """Removes a subject and wipes its templates from memory.

        The file changes at the next :meth:`save`.

        Raises:
            KeyError: Not on the watchlist.
        """
        self._alive()
        if subject_id not in self._entries:
            raise KeyError(f"subject {subject_id!r} is not on the watchlist")
        self._remove({subject_id})

    def _remove(self, gone: set[str]) -> None:
        keep, row = [], 0
        for sid, entry in self._entries.items():
            n = len(entry.ids)
            if sid not in gone:
                keep.append((row, row + n))
            row += n
        rows = sum(stop - start for start, stop in keep)
        new = self._resize(rows, keep)
        self._swap(new, rows)
        for sid in gone:
            del self._entries[sid]
        self._owners = None

    def _drop_expired(self) -> None:
        now = self._clock()
        gone = {s for s, e in self._entries.items() if e.subject.expired(now)}
        if gone:
            self._remove(gone)
            _log.info("dropped %d expired watchlist entries", len(gone))

    def templates_of(self, subject_id: str) -> F32:
        """A copy of a subject's unit-length templates, ``float32[n, dim]``.

        The copy is ordinary memory: for checks and tests, not for the live path
        (:meth:`matcher` keeps templates in locked memory).
        """
        self._alive()
        row = 0
        for sid, entry in self._entries.items():
            if sid == subject_id:
                m = self._matrix()
                out: F32 = m[row : row + len(entry.ids)].copy()
                del m
                return out
            row += len(entry.ids)
        raise KeyError(f"subject {subject_id!r} is not on the watchlist")

    # -- saving, searching, destroying ---------------------------------------------

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Encrypts and writes the watchlist atomically.

        Written to a temp file in the same directory, fsynced, then renamed: a
        crash leaves the old file or the new one.

        Args:
            path: Where to write (default: the file it was opened from); later
                saves go there too.

        Returns:
            The path written.
        """
        self._alive()
        self._drop_expired()
        if path is not None:
            self._path = Path(path)
        records = []
        for entry in self._entries.values():
            rec = entry.subject.to_json()
            del rec["templates"]
            rec["template_ids"] = entry.ids
            records.append(rec)
        header = Header(
            created=self._created,
            expires=self._expires,
            model_id=self._model_id,
            dim=self._dim,
            subjects=len(self._entries),
            templates=self._rows,
            key_id=self._key.key_id,
            kdf=self._kdf if self._kdf is not None else getattr(self._key, "kdf", None),
            saved=self._clock(),
        )
        matrix = self._matrix()
        try:
            self._sha256 = _lfrw.write(self._path, header, self._key, records, matrix)
        finally:
            del matrix
        return self._path

    def matcher(
        self,
        *,
        dtype: str = "f32",
        threads: int | None = None,
        secure: bool = True,
        allow_unlocked: bool = False,
    ) -> Any:
        """A :class:`~lfr.matcher.Matcher` holding every live template.

        Its ids are template ids; :meth:`subject_ids` maps search results back to
        subjects. With ``secure`` (the default) its matrix is in locked memory.

        Raises:
            lfr.errors.SecureMemoryError: The matrix cannot be locked (raise the
                memlock limit, or pass ``allow_unlocked=True``).
        """
        from lfr.matcher import Matcher

        self._alive()
        self._drop_expired()
        m = Matcher(
            self._dim,
            dtype,  # type: ignore[arg-type]
            threads=threads,
            secure=secure,
            allow_unlocked=allow_unlocked,
        )
        if self._rows:
            ids = np.array(
                [i for e in self._entries.values() for i in e.ids], dtype=np.int64
            )
            matrix = self._matrix()
            try:
                m.add(ids, matrix)
            finally:
                del matrix
        return m

    def subject_ids(self, template_ids: npt.ArrayLike) -> list[str | None]:
        """The subject of each template id from :meth:`matcher`.

        None for -1 (an empty result slot) or an id no longer on the watchlist.
        """
        owner = self._owners
        if owner is None:  # per change, not per search: the pipeline asks every frame
            owner = {i: sid for sid, e in self._entries.items() for i in e.ids}
            self._owners = owner
        return [owner.get(int(i)) for i in np.asarray(template_ids).ravel()]

    def destroy(self, *, delete_file: bool = False) -> None:
        """Wipes the in-memory templates and records; optionally deletes the file.

        Deleting does not overwrite the file first: on SSDs and copy-on-write file
        systems overwriting in place is not guaranteed to reach the old blocks.
        The file's protection is its encryption: destroy the key too
        (``Key.destroy`` and its key file) to make every copy unreadable.
        """
        if self._destroyed:
            return
        self._wipe()
        if delete_file:
            self._path.unlink(missing_ok=True)

    def _wipe(self) -> None:
        self._destroyed = True
        self._entries.clear()
        self._owners = None
        if self._buf is not None:
            self._buf.discard()
            self._buf = None
        self._rows = 0

    def __enter__(self) -> Watchlist:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __reduce__(self) -> Any:
        raise TypeError("a Watchlist cannot be pickled; save it with save()")


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return f"uid {os.getuid()}"
