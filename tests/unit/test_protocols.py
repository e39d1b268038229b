"""lfr's classes satisfy the seams of lfr.protocols, for mypy and at run time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

import lfr
from lfr.alerts.repository import SqliteRepository
from lfr.detect import Detections, FaceDetector
from lfr.embed import FaceEmbedder
from lfr.protocols import AlertRepository, Detector, Embedder, Source
from lfr.sources import Frame, FrameSource, SourceStats


def seams(
    detector: FaceDetector, embedder: FaceEmbedder, source: FrameSource
) -> tuple[Detector, Embedder, Source]:
    """Never called: ``mypy --strict`` checks that each class fits its protocol."""
    return detector, embedder, source


def repository_seam(repository: SqliteRepository) -> AlertRepository:
    """Never called: ``mypy --strict`` checks that the SQLite repository fits."""
    return repository


class Fixed:
    """A detector of one's own: no base class, only the protocol's method."""

    def detect(self, frame: npt.NDArray[np.uint8]) -> Detections:
        return Detections.empty()


class Frames:
    """A source of one's own (a test double)."""

    live = False

    @property
    def stats(self) -> SourceStats:
        return SourceStats()

    def frames(self) -> Iterator[Frame]:
        return iter(())

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_own_classes_fit_the_protocols() -> None:
    detector: Detector = Fixed()
    source: Source = Frames()
    assert isinstance(detector, Detector)
    assert isinstance(source, Source)
    assert not isinstance(Fixed(), Embedder)
    assert not isinstance(object(), Detector)


def test_lfrs_detector_and_embedder_fit(yunet_path: Path, embedder_path: Path) -> None:
    with FaceDetector() as detector:
        assert isinstance(detector, Detector)
    embedder = FaceEmbedder()
    assert isinstance(embedder, Embedder)
    assert not isinstance(embedder, Detector)


def test_lfrs_sources_fit() -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    with lfr.open_source([frame]) as source:
        assert isinstance(source, Source)
        assert not source.live
        count = 0
        for frame_ in source.frames():
            frame_.release()
            count += 1
        assert count == 1
        assert source.stats.delivered == 1


def test_the_sqlite_repository_fits(tmp_path: Path) -> None:
    meta = {"key_id": "k", "store_id": "s", "created": "c", "key_check": "00"}
    repository = SqliteRepository(tmp_path / "alerts.db", lambda: meta)
    repository.connect()
    try:
        assert isinstance(repository, AlertRepository)
    finally:
        repository.close()
    assert not isinstance(object(), AlertRepository)
    assert not isinstance(Frames(), AlertRepository)
