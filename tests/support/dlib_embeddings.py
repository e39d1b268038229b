"""Real 128-D face embeddings for the LFW test data, computed with dlib.

Test-only support code: it gives the test-suite real face embeddings (so that
matching thresholds and ranking are exercised on realistic vectors) until the
project's own ONNX embedder replaces it.

Embeddings are biometric data. Nothing here writes to disk: results live only in
an in-process cache, and log messages carry file names and counts, never vectors
(nor dlib's exception text, which can echo whole image arrays).
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import pathlib
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, NamedTuple

import dlib  # no stubs: see [[tool.mypy.overrides]] in pyproject.toml
import numpy as np
import numpy.typing as npt

from tests.support.dlib_dat import FIVE_POINT, RESNET, require_dat

__all__ = ["EMBEDDING_DIM", "LfwEmbeddings", "lfw_embeddings"]

_LOG = logging.getLogger(__name__)

EMBEDDING_DIM = 128
"""Length of a dlib face descriptor."""

_UPSAMPLE = 1
# Centred fallback box for a 250x250 LFW image, as fractions of width/height.
_FALLBACK_LO = 62 / 250
_FALLBACK_HI = 188 / 250


@dataclass(frozen=True, eq=False)
class LfwEmbeddings:
    """Embeddings of the LFW development subset.

    Attributes:
        identity_vectors: float32[n, 128], L2-normalised, one row per readable
            image under ``identities/``, in (person name, file name) order.
        identity_labels: int64[n], index into ``identity_names`` of each row.
        unknown_vectors: float32[m, 128], L2-normalised, one row per readable
            image under ``unknowns/``, in file name order.
        identity_names: The people, sorted by name; labels index this tuple.
        fallback_count: Images where no face was detected and the centred box
            was used instead.
        skipped_count: Images that could not be read or embedded (left out).
    """

    identity_vectors: npt.NDArray[np.float32]
    identity_labels: npt.NDArray[np.int64]
    unknown_vectors: npt.NDArray[np.float32]
    identity_names: tuple[str, ...] = ()
    fallback_count: int = 0
    skipped_count: int = 0


class _Models(NamedTuple):
    detector: Any
    predictor: Any
    encoder: Any


@functools.cache
def _models() -> _Models:
    """Load the dlib detector, 5-point shape predictor and ResNet encoder once."""
    return _Models(
        detector=dlib.get_frontal_face_detector(),
        predictor=dlib.shape_predictor(str(require_dat(FIVE_POINT))),
        encoder=dlib.face_recognition_model_v1(str(require_dat(RESNET))),
    )


def _face_box(models: _Models, img: npt.NDArray[np.uint8]) -> tuple[Any, bool]:
    """Pick the face to embed.

    Args:
        models: Loaded dlib models.
        img: RGB image, uint8[h, w, 3].

    Returns:
        The detection nearest the image centre and ``False``, or a centred
        fallback box and ``True`` when nothing was detected.
    """
    height, width = int(img.shape[0]), int(img.shape[1])
    cx, cy = width / 2.0, height / 2.0
    detections = models.detector(img, _UPSAMPLE)
    if len(detections) > 0:

        def dist(rect: Any) -> float:
            centre = rect.dcenter()
            return math.hypot(centre.x - cx, centre.y - cy)

        return min(detections, key=dist), False
    box = dlib.rectangle(
        round(width * _FALLBACK_LO),
        round(height * _FALLBACK_LO),
        round(width * _FALLBACK_HI),
        round(height * _FALLBACK_HI),
    )
    return box, True


class _Outcome(NamedTuple):
    """What embedding one image gave: a raw descriptor, or the error's type."""

    descriptor: list[float] | None
    fell_back: bool = False
    error: str | None = None


def _embed_one(path: str) -> _Outcome:
    """Embed the central face of one image, never raising for a bad image.

    Args:
        path: Image file.

    Returns:
        The raw descriptor and whether the fallback box was used, or the name of
        the exception type if the image could not be read or embedded.
    """
    models = _models()
    try:
        img = dlib.load_rgb_image(path)
        box, fell_back = _face_box(models, img)
        shape = models.predictor(img, box)
        descriptor = models.encoder.compute_face_descriptor(img, shape)
    except Exception as exc:  # any bad image is skipped, whatever dlib raised
        # Keep only the type: dlib's messages can include raw pixel arrays.
        return _Outcome(None, error=type(exc).__name__)
    return _Outcome(list(descriptor), fell_back)


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _embed_all(paths: list[pathlib.Path], workers: int) -> list[_Outcome]:
    """Embed images in order, in ``workers`` forked processes when possible.

    dlib's ResNet encoder (about 80% of the time) holds the GIL, so threads do
    not help; processes do. Vectors come back over pipes, never via files.
    """
    names = [str(p) for p in paths]
    _models()  # load once here; forked workers inherit the loaded models
    fork_ok = "fork" in multiprocessing.get_all_start_methods()
    if workers > 1 and len(names) > 1 and fork_ok:
        context = multiprocessing.get_context("fork")
        chunk = max(1, min(16, len(names) // (4 * workers)))
        try:
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                outcomes = list(pool.map(_embed_one, names, chunksize=chunk))
        except (BrokenProcessPool, OSError) as exc:
            _LOG.warning(
                "dlib worker pool failed (%s); embedding serially",
                type(exc).__name__,
            )
        else:
            return _report_skips(paths, outcomes)
    return _report_skips(paths, [_embed_one(name) for name in names])


def _report_skips(
    paths: list[pathlib.Path], outcomes: list[_Outcome]
) -> list[_Outcome]:
    for path, outcome in zip(paths, outcomes):
        if outcome.error is not None:
            _LOG.warning("skipping unreadable image %s: %s", path.name, outcome.error)
    return outcomes


def _stack(
    outcomes: list[_Outcome],
) -> tuple[npt.NDArray[np.float32], list[int]]:
    """L2-normalised float32[k, 128] of the successes, and their indices."""
    kept: list[int] = []
    rows: list[list[float]] = []
    for index, outcome in enumerate(outcomes):
        if outcome.descriptor is not None:
            kept.append(index)
            rows.append(outcome.descriptor)
    vectors = np.asarray(rows, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.maximum(norms, np.float32(1e-12))
    vectors.setflags(write=False)
    return vectors, kept


def _jpegs(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"})


_CACHE: dict[tuple[pathlib.Path, int | None, int | None], LfwEmbeddings] = {}
_CACHE_LOCK = threading.Lock()


def lfw_embeddings(
    data_root: pathlib.Path,
    *,
    max_identities: int | None = None,
    max_unknowns: int | None = None,
    workers: int | None = None,
) -> LfwEmbeddings:
    """Compute (once per process) dlib embeddings of the LFW development subset.

    Each image's face is the detection nearest its centre (HOG detector, one
    upsample); when none is found a centred box is used. Unreadable images are
    skipped and counted. Results are cached in memory only (never on disk); the
    returned arrays are read-only because callers share them.

    Args:
        data_root: The shared data root (``tests.conftest.data_root``:
            ``LFR_DATA_DIR`` or ``../shared/data``), which holds
            ``lfw-dev/identities/<Name>/*.jpg`` and ``lfw-dev/unknowns/*.jpg``.
        max_identities: Use only the first N people (by name); all if ``None``.
        max_unknowns: Use only the first M unknown images (by file name); all
            if ``None``.
        workers: Processes to embed with; ``None`` means one per available CPU
            (at most 8), ``1`` means in this process only. Does not change the
            result.

    Returns:
        The embeddings, labels and bookkeeping counts.

    Raises:
        FileNotFoundError: If ``data_root`` lacks the ``lfw-dev`` folders.
        ValueError: If a limit is negative.
    """
    for name, limit in (
        ("max_identities", max_identities),
        ("max_unknowns", max_unknowns),
    ):
        if limit is not None and limit < 0:
            msg = f"{name} must be >= 0, got {limit}"
            raise ValueError(msg)
    key = (pathlib.Path(data_root).resolve(), max_identities, max_unknowns)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            n_workers = _default_workers() if workers is None else max(1, workers)
            cached = _compute(*key, workers=n_workers)
            _CACHE[key] = cached
    return cached


def _compute(
    data_root: pathlib.Path,
    max_identities: int | None,
    max_unknowns: int | None,
    *,
    workers: int,
) -> LfwEmbeddings:
    lfw = data_root / "lfw-dev"
    identities_dir, unknowns_dir = lfw / "identities", lfw / "unknowns"
    for folder in (identities_dir, unknowns_dir):
        if not folder.is_dir():
            msg = f"missing LFW folder: {folder}"
            raise FileNotFoundError(msg)

    people = sorted(p for p in identities_dir.iterdir() if p.is_dir())
    if max_identities is not None:
        people = people[:max_identities]
    identity_paths: list[pathlib.Path] = []
    labels: list[int] = []
    for label, person in enumerate(people):
        files = _jpegs(person)
        identity_paths.extend(files)
        labels.extend([label] * len(files))
    unknown_paths = _jpegs(unknowns_dir)
    if max_unknowns is not None:
        unknown_paths = unknown_paths[:max_unknowns]

    results = _embed_all(identity_paths + unknown_paths, workers)
    split = len(identity_paths)
    identity_vectors, kept = _stack(results[:split])
    unknown_vectors, unknown_kept = _stack(results[split:])
    identity_labels = np.asarray(labels, dtype=np.int64)[kept]
    identity_labels.setflags(write=False)
    fallbacks = sum(1 for outcome in results if outcome.fell_back)
    skipped = sum(1 for outcome in results if outcome.descriptor is None)
    _LOG.info(
        "dlib LFW embeddings: %d identity + %d unknown images, %d fallback box, "
        "%d skipped",
        len(kept),
        len(unknown_kept),
        fallbacks,
        skipped,
    )
    return LfwEmbeddings(
        identity_vectors=identity_vectors,
        identity_labels=identity_labels,
        unknown_vectors=unknown_vectors,
        identity_names=tuple(p.name for p in people),
        fallback_count=fallbacks,
        skipped_count=skipped,
    )
