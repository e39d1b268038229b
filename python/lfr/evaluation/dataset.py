"""Data side of ``lfr eval``: the dataset layout, embedding, the encrypted cache.

The embedding cache holds biometric data, so it is encrypted: each entry has its
own AES-256-GCM data key, wrapped by a local key file (``cache.key``, mode 0600)
in the cache directory. Deleting ``cache.key`` destroys every entry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import platformdirs
from cryptography.exceptions import InvalidTag

from lfr.ciphers import DataCipher
from lfr.detect import Detections, FaceDetector
from lfr.embed import FaceEmbedder
from lfr.errors import LfrError
from lfr.keys import Key
from lfr.quality import QualityGate

__all__ = [
    "Embedded",
    "EmbeddingCache",
    "Photo",
    "default_cache_dir",
    "embed_dataset",
    "fingerprint",
    "labelled_face",
    "pipeline_id",
    "scan",
]

U8 = npt.NDArray[np.uint8]
_SUFFIXES = (".jpg", ".jpeg", ".png")
_MAGIC = b"LFR-EVAL-CACHE 1\n"


@dataclass(frozen=True)
class Photo:
    """One image: path relative to the dataset, identity index (-1: unknown)."""

    path: str
    identity: int


@dataclass(frozen=True)
class Embedded:
    """Every photo of a dataset with its embedding.

    Attributes:
        identities: Identity names (``identities/<name>``), sorted.
        photos: Identity photos (by identity, then file name), then unknowns.
        vectors: ``float32[len(photos), dim]``; zero rows where ``present`` is
            False.
        present: Whether a labelled face was found (and passed the gate).
        pipeline: The :func:`pipeline_id` that made them.
    """

    identities: tuple[str, ...]
    photos: tuple[Photo, ...]
    vectors: npt.NDArray[np.float32]
    present: npt.NDArray[np.bool_]
    pipeline: str


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES
    )


def scan(root: str | os.PathLike[str]) -> tuple[tuple[str, ...], tuple[Photo, ...]]:
    """The identities and photos of ``root/identities/<name>/`` (+ ``unknowns/``).

    Raises:
        LfrError: There is no ``identities`` folder or it holds no photos.
    """
    base = Path(root)
    folder = base / "identities"
    if not folder.is_dir():
        raise LfrError(f"{base} has no identities/ folder (see docs/accuracy.md)")
    names = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    photos = [
        Photo(f"identities/{name}/{f.name}", k)
        for k, name in enumerate(names)
        for f in _images(folder / name)
    ]
    if not photos:
        raise LfrError(f"no photos under {folder}")
    if (base / "unknowns").is_dir():
        photos += [Photo(f"unknowns/{f.name}", -1) for f in _images(base / "unknowns")]
    return names, tuple(photos)


def fingerprint(root: str | os.PathLike[str], photos: tuple[Photo, ...]) -> str:
    """SHA-256 of every photo's path, size and modification time."""
    digest = hashlib.sha256()
    for photo in photos:
        st = (Path(root) / photo.path).stat()
        digest.update(f"{photo.path}\0{photo.identity}\0{st.st_size}\0".encode())
        digest.update(f"{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def pipeline_id(
    detector: FaceDetector, embedder: FaceEmbedder, gate: QualityGate | None
) -> str:
    """What makes embeddings comparable: model id, detector and gate settings."""
    return f"{embedder.model_id}|{detector!r}|{gate!r}"


def labelled_face(detector: FaceDetector, frame: U8) -> Detections | None:
    """The detected face whose box centre is nearest the image centre, or None."""
    faces = detector.detect(frame)
    if len(faces) == 0:
        return None
    h, w = frame.shape[:2]
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    i = int(np.argmin(((centres - [w / 2, h / 2]) ** 2).sum(axis=1)))
    return faces[i : i + 1]


def embed_dataset(
    root: str | os.PathLike[str],
    photos: tuple[Photo, ...],
    detector: FaceDetector,
    embedder: FaceEmbedder,
    gate: QualityGate | None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Runs the live pipeline (detect, gate, align and embed) on every photo."""
    vectors = np.zeros((len(photos), embedder.dim), np.float32)
    present = np.zeros(len(photos), bool)
    for i, photo in enumerate(photos):
        image = cv2.imread(str(Path(root) / photo.path), cv2.IMREAD_COLOR)
        if image is None:
            raise LfrError(f"cannot read {Path(root) / photo.path}")
        frame = np.ascontiguousarray(image, dtype=np.uint8)
        face = labelled_face(detector, frame)
        if face is not None and (gate is None or gate.assess(frame, face).passed[0]):
            embedder.embed(frame, face, out=vectors[i : i + 1])
            present[i] = True
        if progress is not None:
            progress(i + 1, len(photos))
    return vectors, present


def default_cache_dir() -> Path:
    """``platformdirs.user_cache_dir("lfr")/eval``."""
    return Path(platformdirs.user_cache_dir("lfr")) / "eval"


class EmbeddingCache:
    """Encrypted embeddings per pipeline and dataset fingerprint.

    Args:
        directory: Where entries and ``cache.key`` live (created with mode 0700);
            default :func:`default_cache_dir`.
    """

    KEY_FILE = "cache.key"

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory else default_cache_dir()

    def _key(self, create: bool) -> Key | None:
        path = self.directory / self.KEY_FILE
        if not path.exists():
            if not create:
                return None
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = Key.generate()
            try:
                key.save(path)
            except FileExistsError:  # another run made it meanwhile
                key.destroy()
                return Key.from_file(path)
            return key
        return Key.from_file(path)

    def entry(self, pipeline: str, dataset: str) -> Path:
        """The file for one pipeline and dataset fingerprint."""
        name = hashlib.sha256(f"{pipeline}\n{dataset}".encode()).hexdigest()[:32]
        return self.directory / f"{name}.lfrc"

    def load(
        self, pipeline: str, dataset: str, count: int, dim: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]] | None:
        """The cached ``(vectors, present)``, or None (absent, wrong key, altered)."""
        path = self.entry(pipeline, dataset)
        if not path.exists():
            return None
        key = self._key(create=False)
        if key is None:
            return None
        try:
            blob = path.read_bytes()
            if not blob.startswith(_MAGIC):
                return None
            header_line, _, sealed = blob[len(_MAGIC) :].partition(b"\n")
            header = json.loads(header_line)
            if header["count"] != count or header["dim"] != dim:
                return None
            context = _context(pipeline, dataset)
            wrapped = base64.b64decode(header["key"])
            out = np.empty(count * (dim * 4 + 1), np.uint8)
            with DataCipher.unwrap(key, wrapped, context) as cipher:
                cipher.open_into(sealed, _MAGIC + header_line + context, out)
        except (LfrError, InvalidTag, ValueError, KeyError, OSError):
            return None
        finally:
            key.destroy()
        vectors = out[: count * dim * 4].view(np.float32).reshape(count, dim).copy()
        return vectors, out[count * dim * 4 :].astype(bool)

    def store(
        self,
        pipeline: str,
        dataset: str,
        vectors: npt.NDArray[np.float32],
        present: npt.NDArray[np.bool_],
    ) -> Path:
        """Encrypts and writes one entry (mode 0600); returns its path."""
        key = self._key(create=True)
        assert key is not None
        context = _context(pipeline, dataset)
        try:
            with DataCipher.generate() as cipher:
                wrapped = cipher.wrap(key, context)
                count, dim = vectors.shape
                header = json.dumps(
                    {
                        "count": count,
                        "dim": dim,
                        "key": base64.b64encode(wrapped).decode(),
                    }
                ).encode()
                plain = np.concatenate(
                    [
                        np.ascontiguousarray(vectors, np.float32)
                        .view(np.uint8)
                        .ravel(),
                        present.astype(np.uint8),
                    ]
                )
                sealed = cipher.seal(plain, _MAGIC + header + context)
                plain[:] = 0
        finally:
            key.destroy()
        path = self.entry(pipeline, dataset)
        from lfr._files import write_file

        write_file(path, _MAGIC + header + b"\n" + sealed, 0o600, overwrite=True)
        return path


def _context(pipeline: str, dataset: str) -> bytes:
    return f"lfr-eval-cache\0{pipeline}\0{dataset}".encode()


class Progress:
    """Embedding progress on stderr: a bar on a terminal, plain lines off one.

    On a terminal it is a ``tqdm`` bar redrawn in place. Off one (a log file, a
    pipe, a service's journal) every redraw would pile up on one line (a carriage
    return does not end a line there), so it writes a plain line at each tenth of
    the way and at the end instead. Call it with ``(done, total)``; :meth:`close`
    ends the bar early (an error).
    """

    def __init__(self, label: str) -> None:
        self._label = label
        self._stream = sys.stderr
        self._tty = self._stream.isatty()
        self._bar: Any = None
        self._tenth = 0

    def __call__(self, done: int, total: int) -> None:
        """Shows that ``done`` of ``total`` photos are embedded."""
        if self._tty:
            if self._bar is None:
                from tqdm import tqdm

                # A terminal of unknown size (0x0, some pseudo-terminals) would hide
                # the bar: tqdm draws none outside the rows it sees.
                known = _columns(self._stream) > 0
                self._bar = tqdm(
                    total=total,
                    desc=self._label,
                    unit="photo",
                    file=self._stream,
                    ncols=None if known else 80,
                    nrows=None if known else 24,
                )
            self._bar.update(done - self._bar.n)
            if done >= total:
                self.close()
            return
        tenth = done * 10 // max(total, 1)
        if tenth > self._tenth or done >= total:
            self._tenth = tenth
            print(f"{self._label}: {done}/{total} photos", file=self._stream)
            self._stream.flush()

    def close(self) -> None:
        """Ends the bar (on a terminal); nothing to do off one."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()


def _columns(stream: Any) -> int:
    """The terminal's width, 0 where it is not known."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def stderr_progress(label: str) -> Progress:
    """A :class:`Progress` on stderr labelled ``label``."""
    return Progress(label)
