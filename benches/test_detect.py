"""Face detection: lfr's FaceDetector against OpenCV's YuNet runner, same model.

Frames are a crowd of 32 LFW photos tiled 8 x 4 into 1920x1080 (faces about 110
pixels wide), and the same frame area-shrunk to 960x540 (faces about 55 pixels).
With the default ``working_size=960`` both run the network at 960x544: the
1920x1080 case adds the shrink. The baseline ``cv2.FaceDetectorYN`` runs the same
dynamic-size model file on the same 960x540 input (shrunk by the benchmark for
1920x1080), with ``cv2.setNumThreads`` set to the thread count.

Target: at most 10 ms per 960x540 frame on one core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from tests.conftest import data_root

from lfr.detect import FaceDetector

U8 = npt.NDArray[np.uint8]
Benchmark = Any

CASES = {"960x540": (960, 540), "1920x1080": (1920, 1080)}
THREADS = [1, 2]
IMPLS = ["lfr", "opencv"]


@pytest.fixture(scope="module")
def crowd() -> dict[str, U8]:
    """The two frames, built from the first 32 photos of lfw-dev/unknowns."""
    photos = sorted((data_root() / "lfw-dev" / "unknowns").glob("*.jpg"))[:32]
    if len(photos) < 32:
        pytest.skip(f"face data not found under {data_root()} (set LFR_DATA_DIR)")
    tiles = []
    for path in photos:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            pytest.skip(f"{path} cannot be read")
        tiles.append(cv2.resize(image, (240, 270)))
    rows = [np.hstack(tiles[r * 8 : (r + 1) * 8]) for r in range(4)]
    big = cast(U8, np.ascontiguousarray(np.vstack(rows)))
    small = cast(U8, cv2.resize(big, (960, 540), interpolation=cv2.INTER_AREA))
    return {"1920x1080": big, "960x540": small}


@pytest.fixture
def opencv_threads() -> Iterator[None]:
    before = cv2.getNumThreads()
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    yield
    cv2.setNumThreads(before)
    cv2.utils.logging.setLogLevel(level)


def _opencv(model: Path, frame: U8, threads: int) -> Callable[[], object]:
    cv2.setNumThreads(threads)
    yunet = cv2.FaceDetectorYN.create(str(model), "", (960, 540), 0.6, 0.3, 1000)
    if frame.shape[:2] == (540, 960):
        return lambda: yunet.detect(frame)

    def shrink_and_detect() -> object:
        small = cv2.resize(frame, (960, 540), interpolation=cv2.INTER_AREA)
        return yunet.detect(small)

    return shrink_and_detect


@pytest.mark.usefixtures("opencv_threads")
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_detect(
    benchmark: Benchmark,
    yunet_path: Path,
    crowd: dict[str, U8],
    case: str,
    impl: str,
    threads: int,
) -> None:
    frame = crowd[case]
    benchmark.group = f"detect {case}"
    detector = FaceDetector(yunet_path, threads=threads)
    try:
        faces = len(detector.detect(frame))
        if impl == "lfr":
            fn: Callable[[], object] = lambda: detector.detect(frame)  # noqa: E731
        else:
            fn = _opencv(yunet_path, frame, threads)
        benchmark.extra_info.update(
            op="detect",
            case=case,
            impl=impl,
            threads=threads,
            faces=faces,
            working_shape="960x544",
        )
        benchmark(fn)
    finally:
        detector.close()
    assert faces >= 28  # the crowd is found (a few tiles hold profile faces)
