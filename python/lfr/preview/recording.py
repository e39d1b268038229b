"""Preview recordings: the blurred operator picture, encrypted with the store key.

Recording the preview is an explicit choice (``lfr run --record-preview``, or a
:class:`PreviewRecorder` passed to :class:`~lfr.preview.Preview`); by default
nothing is recorded. A recording belongs to an alert store:

- **Where.** One file per recording, ``<store>.previews/<id>.lfrp``, in a folder
  created ``0700``, the file ``0600``.
- **Encryption.** Each recording has its own random AES-256-GCM data key, wrapped
  by the store key (the alert store's :class:`~lfr.alerts.sealing.Sealer`: bound
  to the store, the recording and its expiry). Each frame, encoded as JPEG, is
  sealed with that key and bound to its position; a closing entry marks a
  complete recording. The file holds no pixel in the clear and is not a video
  container: no player opens it.
- **Retention.** A recording expires with the store's retention period
  (``policy.alert_ttl`` after it was started) and cannot be read after that.
  :meth:`lfr.alerts.Records.purge`, the one path that destroys alerts, destroys
  expired recordings too (the wrapped key is overwritten in the file first, then
  the file is deleted) and audits each (``preview_purged``). Holds do not apply
  to recordings.
- **Reading back.** Only through :meth:`lfr.alerts.Records.export_preview`
  (``lfr alerts preview-export``), audited (``preview_exported``) before the
  first frame is decrypted, like an alert's crop.

The JPEG encoding of a frame is an ordinary numpy array that is overwritten with
zeros once sealed; it holds the blurred picture (faces of stored alerts sharp), never an
unblurred passer-by.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

from lfr._closing import Closing
from lfr._files import fsync_dir
from lfr.align import check_frame
from lfr.errors import AlertStoreError, RetentionError

if TYPE_CHECKING:
    from lfr.alerts.sealing import AlertKey
    from lfr.alerts.store import AlertStore

__all__ = [
    "MAGIC",
    "PreviewRecorder",
    "Recording",
    "purge_recordings",
    "read_recording",
    "recordings",
    "recordings_dir",
]

_log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]

#: The first bytes of a recording file (no video container starts so).
MAGIC = b"LFRPREVIEW\x00\x01"
_FORMAT = "lfr-preview"
_VERSION = 1
_LEN = struct.Struct(">I")
_FRAME = "preview-frame"
_END = "preview-end"
#: Largest header or entry a reader accepts (a 4K frame's JPEG is far smaller).
_MAX_ENTRY = 64 * 1024 * 1024
_SUFFIX = ".lfrp"


def recordings_dir(store: AlertStore) -> Path:
    """The folder that holds a store's preview recordings."""
    return store.path.with_name(store.path.name + ".previews")


def _key_name(recording_id: str) -> str:
    # Kept apart from alert ids in every associated data.
    return f"preview/{recording_id}"


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)


@dataclass(frozen=True)
class Recording:
    """One preview recording, as its (unauthenticated) header describes it.

    Attributes:
        recording_id: Its random id.
        created: When it was started (UTC).
        expires: When it expires (``created`` + the store's ``alert_ttl``).
        fps: Frames per second it was recorded at (for an exported video).
        path: Its file.
    """

    recording_id: str
    created: datetime
    expires: datetime
    fps: float
    path: Path


class PreviewRecorder(Closing):
    """Records preview frames, each encrypted, into a store's recordings.

    Args:
        store: The alert store whose key encrypts the recording and whose
            retention period bounds it (a :class:`lfr.AlertStore`, for example
            ``Records.store``).
        fps: Frames per second, written into the header for an exported video.
        quality: JPEG quality of each frame (50..100).

    Raises:
        TypeError: ``store`` is not an :class:`lfr.AlertStore`.
        ValueError: ``fps`` or ``quality`` is out of range.
        OSError: The recordings folder or file cannot be created.

    Examples:
        >>> import os, tempfile
        >>> import numpy as np, lfr
        >>> from lfr.preview import PreviewRecorder, recordings
        >>> key = lfr.Key.generate()
        >>> with lfr.AlertStore(os.path.join(tempfile.mkdtemp(), "a.db"), key) as store:
        ...     with PreviewRecorder(store) as recorder:
        ...         recorder.write(np.full((48, 64, 3), 90, np.uint8))
        ...     [r.recording_id == recorder.recording_id for r in recordings(store)]
        [True]
    """

    def __init__(
        self, store: AlertStore, *, fps: float = 10.0, quality: int = 90
    ) -> None:
        from lfr.alerts.store import AlertStore

        if not isinstance(store, AlertStore):
            raise TypeError(
                f"store must be an lfr.AlertStore, got {type(store).__name__}"
            )
        if isinstance(fps, bool) or not isinstance(fps, (int, float)):
            raise TypeError(f"fps must be a number, got {type(fps).__name__}")
        if not (0.0 < float(fps) <= 1000.0):
            raise ValueError(f"fps must be in (0, 1000], got {fps}")
        if isinstance(quality, bool) or not isinstance(quality, int):
            raise TypeError(f"quality must be an int, got {type(quality).__name__}")
        if not 50 <= quality <= 100:
            raise ValueError(f"quality must be 50..100, got {quality}")
        self._quality = quality
        self._lock = threading.Lock()
        self._frames = 0
        now = store._now()
        created_us = _us(now)
        expires_us = _us(now + store.policy.alert_ttl)
        self._id = str(uuid.uuid4())
        self._expires = _from_us(expires_us)
        wrapped, key = store._sealer.new_key(_key_name(self._id), expires_us)
        self._key_ref: AlertKey | None = key
        folder = recordings_dir(store)
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        self._path = folder / f"{self._id}{_SUFFIX}"
        header = json.dumps(
            {
                "format": _FORMAT,
                "version": _VERSION,
                "store_id": store._sealer.store_id,
                "recording_id": self._id,
                "created_us": created_us,
                "expires_us": expires_us,
                "fps": float(fps),
                "wrapped_key": wrapped.hex(),
            },
            separators=(",", ":"),
        ).encode()
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            self._file: Any = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        self._file.write(MAGIC + _LEN.pack(len(header)) + header)
        self._file.flush()
        fsync_dir(folder)
        _log.info("recording the operator preview, encrypted, as %s", self._id)

    @property
    def recording_id(self) -> str:
        """The recording's id (for ``lfr alerts preview-export``)."""
        return self._id

    @property
    def path(self) -> Path:
        """The recording's file."""
        return self._path

    @property
    def expires(self) -> datetime:
        """When the recording expires."""
        return self._expires

    @property
    def frames(self) -> int:
        """Frames recorded so far."""
        return self._frames

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._key_ref is None

    def write(self, image: U8) -> None:
        """Encrypts and appends one rendered (blurred) frame.

        Raises:
            TypeError: ``image`` is not a uint8 array.
            ValueError: ``image`` is not ``(h, w, 3)``.
            RuntimeError: The recorder is closed, or the frame cannot be encoded.
            OSError: The file cannot be written.
        """
        check_frame(image)
        with self._lock:
            key = self._key_ref
            if key is None:
                raise RuntimeError("the preview recorder is closed")
            ok, encoded = cv2.imencode(
                ".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self._quality]
            )
            try:
                if not ok or encoded is None:
                    raise RuntimeError("the preview frame cannot be encoded")
                sealed = key.seal_entry(_FRAME, self._frames, encoded)
            finally:
                if encoded is not None:
                    encoded.fill(0)
            self._file.write(_LEN.pack(len(sealed)) + sealed)
            self._file.flush()
            self._frames += 1

    def close(self) -> None:
        """Marks the recording complete and closes the file; idempotent."""
        with self._lock:
            key = self._key_ref
            if key is None:
                return
            self._key_ref = None
            try:
                end = key.seal_entry(_END, self._frames, b"")
                self._file.write(_LEN.pack(len(end)) + end)
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                key.close()  # the data key is wiped with the recording's end
                self._file.close()
            _log.info("preview recording %s closed", self._id)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"PreviewRecorder({self._id!r}, {self._frames} frames, {state})"


def _read_entry(file: Any, what: str) -> bytes | None:
    raw = file.read(_LEN.size)
    if not raw:
        return None
    if len(raw) != _LEN.size:
        raise AlertStoreError(f"{what} is truncated")
    (size,) = _LEN.unpack(raw)
    if size > _MAX_ENTRY:
        raise AlertStoreError(f"{what} is damaged: an entry of {size} bytes")
    data = bytes(file.read(size))
    if len(data) != size:
        raise AlertStoreError(f"{what} is truncated")
    return data


def _header(path: Path, file: Any) -> dict[str, Any]:
    what = f"preview recording {path.name}"
    if file.read(len(MAGIC)) != MAGIC:
        raise AlertStoreError(f"{what} is not an lfr preview recording")
    raw = _read_entry(file, what)
    try:
        header = json.loads(raw or b"")
        ok = (
            isinstance(header, dict)
            and header.get("format") == _FORMAT
            and header.get("version") == _VERSION
            and isinstance(header.get("recording_id"), str)
            and isinstance(header.get("store_id"), str)
            and isinstance(header.get("created_us"), int)
            and isinstance(header.get("expires_us"), int)
            and isinstance(header.get("fps"), float)
            and isinstance(header.get("wrapped_key"), str)
        )
    except ValueError:
        ok = False
    if not ok:
        raise AlertStoreError(f"{what} is damaged: its header cannot be read")
    return dict(header)


def _describe(path: Path, header: dict[str, Any]) -> Recording:
    return Recording(
        recording_id=str(header["recording_id"]),
        created=_from_us(int(header["created_us"])),
        expires=_from_us(int(header["expires_us"])),
        fps=float(header["fps"]),
        path=path,
    )


def recordings(store: AlertStore) -> list[Recording]:
    """The store's preview recordings, oldest first (damaged files skipped).

    Listing decrypts nothing; expired recordings not yet purged are listed.
    """
    folder = recordings_dir(store)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob(f"*{_SUFFIX}")):
        try:
            with path.open("rb") as file:
                out.append(_describe(path, _header(path, file)))
        except (AlertStoreError, OSError) as exc:
            _log.warning("skipped preview recording %s: %s", path.name, exc)
    return sorted(out, key=lambda r: r.created)


def _find(store: AlertStore, recording_id: str) -> Path:
    try:
        canonical = str(uuid.UUID(recording_id))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"not a preview recording id: {recording_id!r}") from None
    path = recordings_dir(store) / f"{canonical}{_SUFFIX}"
    if not path.is_file():
        raise KeyError(f"no preview recording {canonical} in {store.path}")
    return path


def read_recording(store: AlertStore, recording_id: str) -> Iterator[U8]:
    """Decrypts a recording's frames, in order (internal: export through Records).

    Checks the recording before the first frame is returned: an unknown or
    malformed id, an expired recording or one the store key cannot open raises
    at the call, not at the first ``next``.

    Returns:
        An iterator of decoded ``uint8[h, w, 3]`` BGR frames.

    Raises:
        ValueError: ``recording_id`` is not a recording id.
        KeyError: No such recording.
        RetentionError: It has expired (it is purged by the next purge).
        AlertStoreError: It belongs to another store, or was altered.
    """
    path = _find(store, recording_id)
    what = f"preview recording {path.stem}"
    file = path.open("rb")
    try:
        header = _header(path, file)
        if header["recording_id"] != path.stem:
            raise AlertStoreError(f"{what} is damaged: its header names another")
        if header["store_id"] != store._sealer.store_id:
            raise AlertStoreError(f"{what} belongs to another alert store")
        expires_us = int(header["expires_us"])
        if _us(store._now()) >= expires_us:
            raise RetentionError(
                f"{what} expired at {_from_us(expires_us).isoformat()}"
            )
        from lfr.alerts.sealing import AlteredError

        try:
            key = store._sealer.open_key(
                _key_name(path.stem), expires_us, bytes.fromhex(header["wrapped_key"])
            )
        except (AlteredError, ValueError):
            raise AlertStoreError(
                f"{what} cannot be opened: it was altered, or its key was destroyed"
            ) from None
    except BaseException:
        file.close()
        raise
    return _frames(file, key, what)


def _frames(file: Any, key: AlertKey, what: str) -> Iterator[U8]:
    from lfr.alerts.sealing import AlteredError

    with file, key:
        seq = 0
        while True:
            sealed = _read_entry(file, what)
            if sealed is None:
                _log.warning("%s ends without its closing entry (cut short)", what)
                return
            try:
                data = bytearray(key.open_entry(_FRAME, seq, sealed))
            except AlteredError:
                try:
                    key.open_entry(_END, seq, sealed)
                except AlteredError:
                    raise AlertStoreError(f"{what} is damaged at frame {seq}") from None
                return
            try:
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            finally:
                data[:] = bytes(len(data))
            if image is None:
                raise AlertStoreError(f"{what}: frame {seq} cannot be decoded")
            yield np.asarray(image, np.uint8)
            seq += 1


def purge_recordings(store: AlertStore) -> list[str]:
    """Destroys expired recordings (internal: :meth:`lfr.alerts.Records.purge`).

    For each recording whose expiry has passed: its wrapped key is overwritten
    with zeros in the file and synced, then the file is deleted.

    Returns:
        The ids destroyed, oldest first.
    """
    now_us = _us(store._now())
    gone = []
    for recording in recordings(store):
        if _us(recording.expires) > now_us:
            continue
        _shred(recording.path)
        gone.append(recording.recording_id)
    if gone:
        fsync_dir(recordings_dir(store))
        _log.info("purge: %d expired preview recordings destroyed", len(gone))
    return gone


def _shred(path: Path) -> None:
    """Overwrites the header (with its wrapped key), syncs, then deletes the file."""
    with path.open("r+b") as file:
        file.seek(len(MAGIC))
        raw = file.read(_LEN.size)
        if len(raw) == _LEN.size:
            (size,) = _LEN.unpack(raw)
            file.write(bytes(min(size, _MAX_ENTRY)))
            file.flush()
            os.fsync(file.fileno())
    path.unlink()
