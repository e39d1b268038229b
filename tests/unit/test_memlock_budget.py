"""The deployment's memlock budget: its parts equal what lfr really locks.

Each formula of :mod:`lfr.pipeline.memlock` is checked against the kernel's own
count (``VmLck``) around the real allocation, so a buffer that grows or a new one
makes these fail; the check itself is shown to raise one typed error naming the
figure in its three forms, and to pass at exactly the figure.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import lfr
from lfr.errors import MemlockBudgetError, SecureMemoryError
from lfr.pipeline.memlock import (
    DEFAULT_EMBEDDER,
    KEY_PAGES,
    MemlockBudget,
    deployment_budget,
    detector_bytes,
    embedder_bytes,
    for_deployment,
    matcher_bytes,
    pages,
    source_frame_sizes,
)
from lfr.secure import MemoryReport, memory_status


def _locked() -> int:
    return memory_status().memlock_locked


def _report(limit: int | None, *, privileged: bool = False) -> MemoryReport:
    return MemoryReport(
        core_dumps_disabled=False,
        dumpable=True,
        memlock_limit=limit,
        memlock_locked=0,
        memlock_privileged=privileged,
        swap=(),
    )


@pytest.fixture
def budget() -> MemlockBudget:
    return deployment_budget(
        frame_sizes=[(960, 540)],
        watchlist_rows=40,
        watchlist_dim=128,
        watchlist_plain_bytes=40 * 128 * 4 + 2000,
    )


def test_pages_round_up_to_whole_pages() -> None:
    import mmap

    page = mmap.PAGESIZE
    assert pages(1) == page
    assert pages(page) == page
    assert pages(page + 1) == 2 * page
    assert pages(0) == page  # a SecureBuffer holds at least one byte


def test_secure_buffer_locks_what_pages_says() -> None:
    headroom = memory_status().memlock_headroom
    if headroom is not None and headroom < 8 << 20:
        pytest.skip("needs room to lock a few MiB")
    for nbytes in (1, 4096, 4097, 1_555_200):
        before = _locked()
        buf = lfr.SecureBuffer(nbytes)
        try:
            assert _locked() - before == pages(nbytes), nbytes
        finally:
            buf.close()


@pytest.mark.parametrize(("rows", "dtype"), [(1, "f32"), (40, "f32"), (33, "i8")])
def test_matcher_bytes_equal_the_secure_matrix(rows: int, dtype: str) -> None:
    rng = np.random.default_rng(rows)
    vectors = rng.standard_normal((rows, 128)).astype(np.float32)
    before = _locked()
    m = lfr.Matcher(128, dtype, secure=True)  # type: ignore[arg-type]
    m.add(np.arange(rows, dtype=np.int64), vectors)
    try:
        assert _locked() - before == matcher_bytes(rows, 128, dtype)
    finally:
        del m
    assert matcher_bytes(0, 128) == 0


def test_detector_bytes_equal_its_buffers(yunet_path: object) -> None:
    before = _locked()
    detector = lfr.FaceDetector(working_size=640)
    try:
        assert _locked() - before == detector_bytes(640)
    finally:
        detector.close()


def test_embedder_bytes_equal_its_buffers(embedder_path: object) -> None:
    before = _locked()
    embedder = lfr.FaceEmbedder()
    assert _locked() - before == embedder_bytes(*DEFAULT_EMBEDDER)
    assert (
        embedder.size,
        embedder.dim,
        embedder.batch * (2 if embedder.flip else 1),
    ) == DEFAULT_EMBEDDER


def test_figure_in_three_forms_agrees(budget: MemlockBudget) -> None:
    total = sum(i.nbytes for i in budget.items)
    assert budget.required >= total
    assert budget.required - total < 1024
    assert budget.required == budget.kib * 1024
    assert budget.systemd == f"LimitMEMLOCK={budget.kib}K"
    assert budget.ulimit == f"ulimit -l {budget.kib}"
    assert budget.docker == f"--ulimit memlock={budget.required}:{budget.required}"
    text = budget.describe()
    for form in (budget.systemd, budget.ulimit, budget.docker):
        assert form in text


def test_check_raises_one_typed_error_naming_the_figure(
    budget: MemlockBudget,
) -> None:
    with pytest.raises(MemlockBudgetError) as info:
        budget.check(_report(8 << 20))
    err = info.value
    assert isinstance(err, SecureMemoryError)
    assert isinstance(err, MemoryError)
    assert err.required == budget.required
    assert err.limit == 8 << 20
    message = str(err)
    assert f"LimitMEMLOCK={budget.kib}K" in message
    assert f"ulimit -l {budget.kib}" in message
    assert f"--ulimit memlock={budget.required}:{budget.required}" in message


def test_check_passes_at_the_figure_and_fails_one_kib_below(
    budget: MemlockBudget,
) -> None:
    budget.check(_report(budget.required))
    with pytest.raises(MemlockBudgetError):
        budget.check(_report(budget.required - 1024))
    budget.check(_report(None))
    budget.check(_report(1, privileged=True))


def test_parts_cover_every_kind_of_locked_buffer(budget: MemlockBudget) -> None:
    names = " ".join(i.name for i in budget.items)
    for part in (
        "keys",
        "embedder",
        "detector",
        "templates",
        "matcher",
        "embeddings",
        "frame pool",
        "scratch",
        "crops",
    ):
        assert part in names
    keys = next(i for i in budget.items if i.name.startswith("keys"))
    assert keys.nbytes == KEY_PAGES * pages(1)


def test_budget_grows_with_frames_watchlist_and_preview() -> None:
    def figure(**kw: object) -> int:
        args: dict[str, object] = {
            "frame_sizes": [(960, 540)],
            "watchlist_rows": 40,
            "watchlist_dim": 128,
        }
        args.update(kw)
        return deployment_budget(**args).required  # type: ignore[arg-type]

    base = figure()
    assert figure(frame_sizes=[(1920, 1080)]) > base
    assert figure(frame_sizes=[(960, 540), (640, 480)]) > base  # pool replaced
    assert figure(watchlist_rows=100_000) >= base + 2 * 100_000 * 128 * 4 - 65536
    assert figure(preview=True) > base
    with pytest.raises(ValueError, match="frame size"):
        figure(frame_sizes=[])


def test_opening_a_large_watchlist_is_the_peak() -> None:
    small = deployment_budget(
        frame_sizes=[(64, 64)],
        watchlist_rows=200_000,
        watchlist_dim=128,
        watchlist_plain_bytes=200_000 * 128 * 4 * 3,
    )
    assert any(i.name.startswith("opening the watchlist") for i in small.items)


def test_frame_sizes_are_read_from_headers_only(tmp_path: Path) -> None:
    folder = tmp_path
    cv2.imwrite(str(folder / "a.png"), np.zeros((30, 40, 3), np.uint8))
    cv2.imwrite(str(folder / "b.jpg"), np.zeros((300, 200, 3), np.uint8))
    (folder / "c.png").write_bytes(b"not an image")
    sizes, why = source_frame_sizes(folder)
    assert why is None
    assert sizes == [(200, 300), (40, 30)]
    video = folder / "v.avi"
    out = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        out.write(np.zeros((48, 64, 3), np.uint8))
    out.release()
    assert source_frame_sizes(video) == ([(64, 48)], None)
    for live in (0, "rtsp://cam/1", [np.zeros((2, 2, 3), np.uint8)]):
        sizes, why = source_frame_sizes(live)
        assert sizes == []
        assert why


def test_unknown_frame_size_is_assumed_and_said() -> None:
    b = for_deployment(source=0, watchlist_rows=1, watchlist_dim=128)
    assert any("1920x1080" in a for a in b.assumptions)
    given = for_deployment(
        source=0, watchlist_rows=1, watchlist_dim=128, frame_size=(640, 480)
    )
    assert given.assumptions == ()
    assert given.required < b.required
