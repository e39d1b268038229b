"""The operator preview: passers-by blurred beyond recognition, matches framed."""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
import lfr.preview
from lfr.preview import (
    Preview,
    PreviewFeed,
    PreviewRecorder,
    blur_faces,
    blur_region,
    recordings,
    render_preview,
)
from lfr.preview import recording as preview_recording
from lfr.preview import render as preview_render
from lfr.preview import screen as preview_screen

U8 = npt.NDArray[np.uint8]
RED = (0, 0, 255)

H, W = 240, 320
# Face-sized textured patches: (x1, y1, x2, y2).
FACE_A = (40.0, 50.0, 120.0, 150.0)
FACE_B = (190.0, 60.0, 270.0, 160.0)


def textured_frame(seed: int = 0) -> U8:
    """A smooth gradient with two face-sized patches of fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    frame = np.empty((H, W, 3), np.uint8)
    frame[..., 0] = (xx * 255 // W).astype(np.uint8)
    frame[..., 1] = (yy * 255 // H).astype(np.uint8)
    frame[..., 2] = 128
    for x1, y1, x2, y2 in (FACE_A, FACE_B):
        ys, xs = slice(int(y1), int(y2)), slice(int(x1), int(x2))
        noise = rng.integers(0, 256, (int(y2 - y1), int(x2 - x1), 3), dtype=np.uint8)
        checker = ((yy[ys, xs] // 3 + xx[ys, xs] // 3) % 2 * 120).astype(np.uint8)
        frame[ys, xs] = noise // 2 + checker[..., None]
    return frame


def sharpness(region: U8) -> float:
    """Variance of the Laplacian of the grey image: high-frequency energy."""
    grey = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def mean_abs_diff(a: U8, b: U8) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def region_mask(
    boxes: list[tuple[float, float, float, float]],
) -> npt.NDArray[np.bool_]:
    mask = np.zeros((H, W), bool)
    for box in boxes:
        x1, y1, x2, y2 = blur_region(box, H, W)
        mask[y1:y2, x1:x2] = True
    return mask


@pytest.fixture
def secure_out() -> Iterator[U8]:
    """A SecureBuffer view of the frame's shape."""
    buf = lfr.SecureBuffer(H * W * 3)
    view = buf.array(np.uint8, (H, W, 3))
    yield view
    del view
    buf.discard()


def render(
    frame: U8,
    boxes: list[tuple[float, float, float, float]],
    keep: list[bool],
    labels: list[str | None] | None = None,
) -> U8:
    out = np.empty_like(frame)
    result = blur_faces(frame, np.array(boxes).reshape(-1, 4), keep, labels, out=out)
    assert result is out
    return out


# --- blur_faces ------------------------------------------------------------------


def test_blurred_boxes_lose_their_detail(secure_out: U8) -> None:
    frame = textured_frame()
    frame.flags.writeable = False
    original = frame.copy()
    result = blur_faces(frame, [FACE_A, FACE_B], [False, False], out=secure_out)
    assert result is secure_out
    np.testing.assert_array_equal(frame, original)  # read, never written
    for box in (FACE_A, FACE_B):
        x1, y1, x2, y2 = (int(v) for v in box)
        before = frame[y1:y2, x1:x2]
        after = secure_out[y1:y2, x1:x2]
        assert sharpness(after) < 0.1 * sharpness(before)
        assert mean_abs_diff(after, before) > 40
        # Uniform colour would also pass the checks above; the blob keeps the
        # patch's mean colour, so the preview still shows where a person is.
        assert np.abs(after.mean((0, 1)) - before.mean((0, 1))).max() < 30


def test_pixels_outside_the_blurred_areas_are_unchanged(secure_out: U8) -> None:
    frame = textured_frame()
    blur_faces(frame, [FACE_A, FACE_B], [False, False], out=secure_out)
    outside = ~region_mask([FACE_A, FACE_B])
    np.testing.assert_array_equal(secure_out[outside], frame[outside])
    inside = region_mask([FACE_A, FACE_B])
    # The margin is blurred too (hair, ears, chin).
    assert (secure_out[inside] != frame[inside]).any(axis=1).mean() > 0.9


def test_blur_region_grows_the_box_by_the_margin() -> None:
    assert pytest.approx(0.2) == lfr.preview.MARGIN
    assert blur_region(FACE_A, H, W) == (24, 30, 136, 170)
    assert blur_region([-50, -50, -10, -10], H, W)[2] <= 0  # wholly outside: empty


def test_kept_boxes_get_a_frame_and_nothing_else(secure_out: U8) -> None:
    frame = textured_frame()
    blur_faces(frame, [FACE_A, FACE_B], [True, False], out=secure_out)
    x1, y1, x2, y2 = (int(v) for v in FACE_A)
    inner = (slice(y1 + 2, y2 - 2), slice(x1 + 2, x2 - 2))
    np.testing.assert_array_equal(secure_out[inner], frame[inner])
    ring = np.zeros((H, W), bool)
    ring[y1:y2, x1:x2] = True
    ring[inner] = False
    assert (secure_out[ring] == RED).all()
    # Outside the kept box and the blurred area of the other: unchanged.
    untouched = ~region_mask([FACE_B])
    untouched[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(secure_out[untouched], frame[untouched])
    # The other face is blurred.
    bx1, by1, bx2, by2 = (int(v) for v in FACE_B)
    blurred = secure_out[by1:by2, bx1:bx2]
    assert sharpness(blurred) < 0.1 * sharpness(frame[by1:by2, bx1:bx2])


def test_labels_are_drawn_for_kept_faces_only() -> None:
    frame = textured_frame()
    plain = render(frame, [FACE_A, FACE_B], [True, False])
    labelled = render(frame, [FACE_A, FACE_B], [True, False], ["S-0042", "never"])
    changed = (labelled != plain).any(axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any()
    x1, y1 = int(FACE_A[0]), int(FACE_A[1])
    # Above the kept box, starting at its left edge; nothing near the other face.
    assert ys.max() < y1
    assert xs.min() >= x1
    assert xs.max() < FACE_B[0]
    # A label for a blurred face changes nothing.
    np.testing.assert_array_equal(
        render(frame, [FACE_B], [False], ["S-0042"]), render(frame, [FACE_B], [False])
    )


def test_label_at_the_top_edge_goes_inside_the_box() -> None:
    frame = textured_frame()
    box = (60.0, 0.0, 140.0, 90.0)
    plain = render(frame, [box], [True])
    labelled = render(frame, [box], [True], ["S-1"])
    ys, _ = np.nonzero((labelled != plain).any(axis=2))
    assert ys.size > 0
    assert ys.max() < 90


@pytest.mark.parametrize(
    "box",
    [
        (-40.0, -30.0, 60.0, 80.0),  # top left corner outside
        (260.0, 180.0, 400.0, 300.0),  # bottom right corner outside
        (-100.0, 50.0, 500.0, 120.0),  # wider than the frame
        (300.0, 200.0, 330.0, 260.0),  # mostly outside
    ],
)
def test_boxes_partly_outside_the_frame(box: tuple[float, float, float, float]) -> None:
    frame = textured_frame()
    frame[:] = np.random.default_rng(1).integers(0, 256, frame.shape, dtype=np.uint8)
    out = render(frame, [box], [False])
    x1, y1, x2, y2 = blur_region(box, H, W)
    assert 0 <= x1 < x2 <= W
    assert 0 <= y1 < y2 <= H
    outside = ~region_mask([box])
    np.testing.assert_array_equal(out[outside], frame[outside])
    assert sharpness(out[y1:y2, x1:x2]) < 0.1 * sharpness(frame[y1:y2, x1:x2])
    kept = render(frame, [box], [True], ["S-7"])  # drawing clips as well
    assert kept.shape == frame.shape


def test_boxes_wholly_outside_tiny_or_empty_change_nothing_or_little() -> None:
    frame = textured_frame()
    outside = [(-200.0, -200.0, -100.0, -100.0), (400.0, 10.0, 480.0, 90.0)]
    np.testing.assert_array_equal(render(frame, outside, [False, True]), frame)
    for box in [(100.0, 100.0, 100.0, 100.0), (50.0, 50.0, 51.0, 51.0)]:
        for kept in (False, True):
            out = render(frame, [box], [kept])
            outside_mask = ~region_mask([box])
            np.testing.assert_array_equal(out[outside_mask], frame[outside_mask])


@pytest.mark.parametrize(
    ("boxes", "keep"),
    [
        (np.zeros((0, 4), np.float32), np.zeros(0, bool)),
        ([], []),
    ],
)
def test_no_boxes_copies_the_frame_exactly(
    secure_out: U8, boxes: npt.ArrayLike, keep: npt.ArrayLike
) -> None:
    frame = textured_frame()
    secure_out.fill(7)
    blur_faces(frame, boxes, keep, out=secure_out)
    np.testing.assert_array_equal(secure_out, frame)


def test_any_strides_in_and_in_place() -> None:
    frame = textured_frame()
    flipped = frame[:, ::-1]
    box = (W - FACE_A[2], FACE_A[1], W - FACE_A[0], FACE_A[3])
    out = render(flipped, [box], [False])
    np.testing.assert_array_equal(
        out, render(np.ascontiguousarray(flipped), [box], [False])
    )
    expected = render(frame, [FACE_A, FACE_B], [False, True], [None, "S-9"])
    in_place = frame.copy()
    assert (
        blur_faces(
            in_place, [FACE_A, FACE_B], [False, True], [None, "S-9"], out=in_place
        )
        is in_place
    )
    np.testing.assert_array_equal(in_place, expected)


def test_accepts_detections_boxes() -> None:
    frame = textured_frame()
    faces = lfr.Detections(
        boxes=np.array([FACE_A, FACE_B], np.float32),
        scores=np.array([0.9, 0.8], np.float32),
        landmarks=np.zeros((2, 5, 2), np.float32),
    )
    out = render(frame, [FACE_A, FACE_B], [False, True])
    again = np.empty_like(frame)
    blur_faces(frame, faces.boxes, np.array([False, True]), out=again)
    np.testing.assert_array_equal(again, out)


def test_invalid_arguments_are_refused() -> None:
    frame = textured_frame()
    out = np.empty_like(frame)
    with pytest.raises(TypeError, match="keep must be booleans"):
        blur_faces(frame, [FACE_A], [0], out=out)
    with pytest.raises(ValueError, match="keep must have shape"):
        blur_faces(frame, [FACE_A], [True, False], out=out)
    with pytest.raises(ValueError, match=r"boxes must have shape \(n, 4\)"):
        blur_faces(frame, [[1, 2, 3]], [True], out=out)
    with pytest.raises(ValueError, match="NaN"):
        blur_faces(frame, [[np.nan, 0, 10, 10]], [False], out=out)
    with pytest.raises(ValueError, match="x1 <= x2"):
        blur_faces(frame, [[20, 0, 10, 10]], [False], out=out)
    with pytest.raises(ValueError, match="labels must have one entry"):
        blur_faces(frame, [FACE_A], [True], ["a", "b"], out=out)
    with pytest.raises(TypeError, match="labels must be str"):
        blur_faces(frame, [FACE_A], [True], [7], out=out)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one str"):
        blur_faces(frame, [FACE_A], [True], "S-1", out=out)
    with pytest.raises(ValueError, match="frame's shape"):
        blur_faces(frame, [], [], out=out[:10])
    with pytest.raises(ValueError, match="C-contiguous"):
        blur_faces(frame, [], [], out=np.empty((H, W * 2, 3), np.uint8)[:, ::2])
    with pytest.raises(TypeError, match="uint8"):
        blur_faces(frame, [], [], out=np.empty((H, W, 3), np.float32))
    with pytest.raises(ValueError, match="overlaps"):
        blur_faces(frame, [], [], out=frame.view())
    with pytest.raises(ValueError, match=r"\(h, w, 3\)"):
        blur_faces(frame[..., 0], [], [], out=out)


def test_scratch_is_wiped_even_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = textured_frame()
    scratches: list[lfr.SecureBuffer] = []

    class Spy(lfr.SecureBuffer):
        __slots__ = ()

        def discard(self) -> None:
            # Checked before it is freed: every byte is zero.
            assert not self.array().any()
            scratches.append(self)
            super().discard()

    monkeypatch.setattr("lfr.preview.render.SecureBuffer", Spy)
    render(frame, [FACE_A], [False])
    assert len(scratches) == 1

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("cv2.GaussianBlur", fail)
    with pytest.raises(RuntimeError, match="boom"):
        render(frame, [FACE_A], [False])
    assert len(scratches) == 2


# --- real faces ------------------------------------------------------------------


def lfw_photos(lfw_dir: Path, count: int) -> list[U8]:
    people = sorted(p for p in (lfw_dir / "identities").iterdir() if p.is_dir())
    photos: list[U8] = []
    for person in people[:: max(1, len(people) // count)]:
        path = min(person.glob("*.jpg"), default=None)
        if path is not None:
            photos.append(np.asarray(cv2.imread(str(path)), dtype=np.uint8))
    return photos[:count]


@pytest.mark.data
def test_a_real_face_loses_its_detail(lfw_dir: Path) -> None:
    (photo,) = lfw_photos(lfw_dir, 1)
    # LFW photos are centred on the labelled face: about 100 x 120 pixels.
    h, w = photo.shape[:2]
    box = (w / 2 - 50, h / 2 - 60, w / 2 + 50, h / 2 + 60)
    out = np.empty_like(photo)
    blur_faces(photo, [box], [False], out=out)
    x1, y1, x2, y2 = (int(v) for v in box)
    before, after = photo[y1:y2, x1:x2], out[y1:y2, x1:x2]
    assert sharpness(after) < 0.1 * sharpness(before)
    assert mean_abs_diff(after, before) > 10


def iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@pytest.mark.data
def test_the_detector_no_longer_finds_blurred_faces(
    lfw_dir: Path, yunet_path: Path
) -> None:
    detector = lfr.FaceDetector(yunet_path)
    blurred = 0
    for photo in lfw_photos(lfw_dir, 60):
        faces = detector.detect(photo)
        if len(faces) == 0:
            continue
        out = np.empty_like(photo)
        blur_faces(photo, faces.boxes, np.zeros(len(faces), bool), out=out)
        again = detector.detect(out)
        for face in faces.boxes:
            blurred += 1
            overlaps = [iou(face, box) for box in again.boxes]
            # 0.5: the usual "same face" criterion; across all of lfw-dev the
            # largest overlap left is 0.38 (a larger box around the blob and a
            # face behind it).
            assert max(overlaps, default=0.0) <= 0.5
    assert blurred >= 50


# --- Preview ---------------------------------------------------------------------


def test_preview_callback_gets_the_blurred_frame_and_the_buffer_is_wiped() -> None:
    frame = textured_frame()
    expected = render_preview(
        frame, [FACE_A, FACE_B], [True, False], ["S-3", None], out=np.empty_like(frame)
    )
    plain = render_preview(frame, [], [], out=np.empty_like(frame))
    copies: list[U8] = []
    kept: list[U8] = []

    def on_frame(image: U8) -> None:
        assert not image.flags.writeable
        copies.append(image.copy())
        kept.append(image)  # wrongly kept without a copy

    with Preview(on_frame=on_frame) as preview:
        preview.render(frame, [FACE_A, FACE_B], [True, False], ["S-3", None])
        preview.render(frame, [], [])
        assert preview.frames == 2
        assert all(not np.asarray(b).any() for b in preview.buffers)
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], expected)
    np.testing.assert_array_equal(copies[1], plain)
    assert all(not image.any() for image in kept)  # wiped after the callback


def test_preview_wipes_when_the_callback_fails() -> None:
    def on_frame(image: U8) -> None:
        raise KeyError("display gone")

    preview = Preview(on_frame=on_frame)
    with pytest.raises(KeyError):
        preview.render(textured_frame(), [FACE_A], [False])
    assert preview.buffers
    assert all(not np.asarray(b).any() for b in preview.buffers)
    preview.close()
    assert preview.buffers == ()


def test_preview_arguments() -> None:
    with pytest.raises(ValueError, match="on_frame callback, a recorder"):
        Preview()
    with pytest.raises(TypeError, match="callable"):
        Preview(on_frame=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PreviewRecorder"):
        Preview(recorder="file.avi")  # type: ignore[arg-type]
    with Preview(on_frame=print) as preview, pytest.raises(TypeError, match="keep"):
        preview.render(textured_frame(), [FACE_A], [1])


def test_docstring_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    for module in (preview_render, preview_screen, preview_recording):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0
        assert result.failed == 0


# --- render_preview, PreviewFeed, PreviewRecorder ----------------------------------


def test_render_preview_blurs_a_face_it_was_not_given() -> None:
    frame = textured_frame()
    out = render_preview(frame, [FACE_A], [True], ["S-1"], out=np.empty_like(frame))
    x1, y1, x2, y2 = (int(v) for v in FACE_B)
    # FACE_B was never detected: blurred all the same (negative control below).
    assert sharpness(out[y1:y2, x1:x2]) < 0.05 * sharpness(frame[y1:y2, x1:x2])
    missed = blur_faces(frame, [FACE_A], [True], out=np.empty_like(frame))
    np.testing.assert_array_equal(missed[y1:y2, x1:x2], frame[y1:y2, x1:x2])
    # The matched face stays sharp inside its red frame.
    ax1, ay1, ax2, ay2 = (int(v) for v in FACE_A)
    inner = (slice(ay1 + 2, ay2 - 2), slice(ax1 + 2, ax2 - 2))
    np.testing.assert_array_equal(out[inner], frame[inner])
    with pytest.raises(ValueError, match="overlaps"):
        render_preview(frame, [], [], out=frame)


def test_preview_feed_hands_the_latest_frame_to_a_screen() -> None:
    feed = PreviewFeed()
    frame = textured_frame()
    with Preview(on_frame=feed) as preview:
        preview.render(frame, [FACE_A], [False])
        preview.render(frame, [FACE_B], [False])  # overwrites the first
        views = []
        for image in feed.frames(timeout=0.05):
            assert not image.flags.writeable
            assert image.shape == (H, W, 3)
            assert image.any()
            views.append(image)
        assert len(views) == 1
        assert feed.dropped == 1
        assert feed.received == 2
        assert not views[0].any()  # wiped once the screen moved on
    assert feed.closed  # closed with the preview: a screen's loop ends
    assert list(feed.frames(timeout=0.05)) == []
    with pytest.raises(RuntimeError, match="closed"):
        feed(frame)


def test_recording_is_refused_by_another_store_and_a_tampered_file(
    tmp_path: Path,
) -> None:
    key = lfr.Key.generate()
    with lfr.AlertStore(tmp_path / "a.db", key) as store:
        with PreviewRecorder(store) as recorder:
            recorder.write(textured_frame())
        frames = list(preview_recording.read_recording(store, recorder.recording_id))
        assert len(frames) == 1
        assert frames[0].shape == (H, W, 3)
        data = bytearray(recorder.path.read_bytes())
        data[-40] ^= 1  # inside the closing entry or the last frame
        recorder.path.write_bytes(bytes(data))
        with pytest.raises(lfr.errors.AlertStoreError):
            list(preview_recording.read_recording(store, recorder.recording_id))
        with pytest.raises(ValueError, match="not a preview recording id"):
            preview_recording.read_recording(store, "../a")
        assert [r.recording_id for r in recordings(store)] == [recorder.recording_id]
    other = tmp_path / "b.db"
    with lfr.AlertStore(other, key) as store:
        moved = preview_recording.recordings_dir(store)
        moved.mkdir()
        (moved / recorder.path.name).write_bytes(recorder.path.read_bytes())
        with pytest.raises(lfr.errors.AlertStoreError, match="another alert store"):
            preview_recording.read_recording(store, recorder.recording_id)
