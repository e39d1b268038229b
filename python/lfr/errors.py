"""lfr's exception hierarchy.

Every error lfr raises on purpose is either an :class:`LfrError` or a built-in
exception whose meaning fits exactly (``ValueError`` for a bad vector, ``KeyError``
for an unknown id, ``TypeError`` for a wrong dtype). Messages never contain pixels,
embeddings or the identities of people who did not match.
"""

from __future__ import annotations

__all__ = [
    "AlertStoreError",
    "AuditError",
    "CaptureMismatchError",
    "CipherSelfTestError",
    "DeploymentError",
    "EnrolmentError",
    "HardeningError",
    "KeyFileError",
    "LfrError",
    "MemlockBudgetError",
    "MissingExtraError",
    "ModelError",
    "PolicyError",
    "RetentionError",
    "SecureMemoryError",
    "SharedKeyError",
    "SourceError",
    "WatchlistError",
    "WrongKeyError",
    "WrongStoreKeyError",
    "WrongWatchlistKeyError",
]


class LfrError(Exception):
    """Base class of lfr's own errors."""


class SecureMemoryError(LfrError, MemoryError):
    """Memory for face data cannot be locked or protected.

    Raised, failing closed, when ``mlock`` is refused (``RLIMIT_MEMLOCK`` too low) or
    the kernel lacks ``MADV_DONTDUMP``/``MADV_WIPEONFORK``. The message says what was
    asked, the limit and what is locked already, and points to the deployment's whole
    figure (``lfr run --print-memlock``, ``Deployment.memlock_budget()``), never to a
    limit that covers only the allocation that failed; ``allow_unlocked=True`` runs
    anyway.
    """


class MemlockBudgetError(SecureMemoryError):
    """The locked-memory limit is below what a deployment needs, found before it starts.

    Raised by :meth:`lfr.Deployment.start` (and ``lfr run``) before anything is
    allocated, instead of a :class:`SecureMemoryError` for whichever allocation
    would fail first. The message gives the one figure that covers the whole
    deployment in the three forms operators set it: systemd ``LimitMEMLOCK=``,
    ``ulimit -l`` (KiB) and ``docker run --ulimit memlock=`` (bytes).

    Attributes:
        required: The figure, in bytes.
        limit: The ``RLIMIT_MEMLOCK`` found, in bytes.
    """

    def __init__(self, message: str, *, required: int, limit: int) -> None:
        super().__init__(message)
        self.required = required
        self.limit = limit


class HardeningError(LfrError):
    """The process cannot be hardened: core dumps stay possible.

    Raised, failing closed, by every entry point that handles faces or keys
    (:meth:`lfr.Deployment.start`, :meth:`lfr.Watchlist.enroll`, the ``lfr``
    commands that read keys or faces) when the kernel refuses ``RLIMIT_CORE = 0``
    or ``PR_SET_DUMPABLE = 0``. ``allow_core_dumps=True`` (``--allow-core-dumps``)
    runs anyway, audited where there is an audit log.
    """


class MissingExtraError(LfrError, ImportError):
    """A feature needs an optional dependency that is not installed.

    The message names the ``pip install 'lfr[EXTRA]'`` that installs it (the
    plots of ``lfr eval --out`` need ``lfr[eval]``, that is, matplotlib).
    """


class ModelError(LfrError):
    """A model is missing, fails its checksum, or cannot be parsed or loaded.

    The message names the command that fixes it where there is one
    (``lfr models fetch``).
    """


class CipherSelfTestError(LfrError, ImportError):
    """The installed ``cryptography`` would not encrypt with lfr's keys.

    Raised by :func:`lfr.ciphers.check_ciphers` when ``import lfr`` runs its
    known-answer test: a cipher built the way lfr builds them encrypted with
    something other than its key (for example an all-zero key, wiped while the
    cipher still referred to it). lfr refuses to run rather than seal alerts or
    watchlists with a wrong key.
    """


class KeyFileError(LfrError):
    """A key file cannot be read, is malformed, or is readable by other users."""


class WrongKeyError(LfrError):
    """The key given is not the one the data was encrypted with.

    The message names both keys' public fingerprints (``Key.key_id``), never key
    material.
    """


class WatchlistError(LfrError):
    """A watchlist cannot be used.

    Its file is damaged, altered, of an unknown format version, or was made for
    another embedder (model id or dimension).
    """


class EnrolmentError(WatchlistError):
    """Images could not be enrolled; ``failures`` lists ``(image index, reason)``.

    Enrolment is all or nothing: when any image fails, no template is added.
    """

    def __init__(self, message: str, failures: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.failures = failures


class AlertStoreError(LfrError):
    """An alert store is damaged or cannot be opened."""


class RetentionError(LfrError):
    """The record's retention period is over: it has expired or been purged."""


class SourceError(LfrError):
    """A frame source cannot be opened or read.

    Raised for nothing at the path, a file whose first frame does not decode, a
    folder without images, a camera or stream URL that cannot be opened, or an
    unsupported source. Messages name the source (URLs without credentials), never
    pixels.
    """


class CaptureMismatchError(SourceError):
    """A captured frame did not land in the secure buffer it was read into.

    Raised by :func:`lfr.sources.read_into` when the capture delivers frames of
    another size or format than the buffer's view (OpenCV then allocates an array
    of its own, which is zeroed before this is raised).

    Attributes:
        expected: The view's shape, ``(h, w, 3)``.
        got: The shape of what the capture delivered.
    """

    def __init__(
        self, message: str, expected: tuple[int, ...], got: tuple[int, ...]
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class AuditError(LfrError):
    """An audit log cannot be continued or written.

    Raised when a log to be continued does not verify (changed, signed by another
    key, not an audit log), what another writer appended does not verify, another
    writer holds the log's lock too long, a write fails, or a deployment's running
    mark is held already. The message says what is wrong and where (line
    numbers), never field values.
    """


class DeploymentError(LfrError):
    """A deployment could not start, or stopped because of an error.

    The message says what failed and names every alert decided but not stored
    and audited (id, camera, time; never the subject); everything stored before
    it is intact.
    """


class WrongWatchlistKeyError(WatchlistError, WrongKeyError):
    """The watchlist was encrypted under another key.

    Both a :class:`WatchlistError` and a :class:`WrongKeyError`.
    """


class WrongStoreKeyError(AlertStoreError, WrongKeyError):
    """The alert store was created with another key (a watchlist's key, say).

    The store has its own key, separate from the watchlist's, so that those who
    enrol people cannot read alerts. Both an :class:`AlertStoreError` and a
    :class:`WrongKeyError`.
    """


class SharedKeyError(DeploymentError):
    """The watchlist and the alert store are under the same key, unasked.

    One key for both lets whoever enrols people read every alert. A deployment
    refuses it unless ``allow_shared_key=True`` (``lfr run --allow-shared-key``),
    and then records the choice (``keys="shared"`` in ``deployment_started``).
    "The same key" is judged by the keys' public fingerprints (``key_id``).
    """


class PolicyError(LfrError, ValueError):
    """An auditor's policy document cannot be used.

    Raised when a :class:`lfr.Policy` is built with a bad value, or its JSON file
    is too large, is not JSON, has an unknown or missing version, an unknown or
    missing field, a value of the wrong type, a negative, non-finite or
    out-of-range number. The message names the field, never a log's contents.
    Also a ``ValueError``.
    """
