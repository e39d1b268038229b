"""FaceDetector on the real YuNet model and real photographs (LFW).

The decoding is checked against OpenCV's own YuNet runner (``cv2.FaceDetectorYN``,
which loads the same dynamic-size model file) at the same input size, the detection
rate and landmark order on every ``lfw-dev`` photo, and the wiping of the
detector's secure buffers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lfr import _core
from lfr.detect import MAX_FRAME_SIDE, Detections, FaceDetector
from lfr.secure import SecureBuffer

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def detector(yunet_path: Path) -> Iterator[FaceDetector]:
    with FaceDetector(yunet_path) as det:
        yield det


@pytest.fixture(scope="module")
def photos(lfw_dir: Path) -> dict[str, list[Path]]:
    return {
        "identities": sorted((lfw_dir / "identities").glob("*/*.jpg")),
        "unknowns": sorted((lfw_dir / "unknowns").glob("*.jpg")),
    }


def read(path: Path) -> U8:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cast(U8, image)


def resize(
    image: U8, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR
) -> U8:
    """``cv2.resize`` (default: bilinear), typed for the tests."""
    return cast(U8, cv2.resize(image, size, interpolation=interpolation))


def labelled(faces: Detections, height: int, width: int) -> int | None:
    """The face whose box contains the image centre, nearest to it; else None.

    LFW's labelled person is the face nearest the centre of the 250x250 crop.
    """
    cx, cy = width / 2, height / 2
    b = faces.boxes
    inside = (b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 3])
    if not inside.any():
        return None
    dist = np.hypot((b[:, 0] + b[:, 2]) / 2 - cx, (b[:, 1] + b[:, 3]) / 2 - cy)
    return int(np.argmin(np.where(inside, dist, np.inf)))


@pytest.fixture(scope="module")
def lfw_results(
    detector: FaceDetector, photos: dict[str, list[Path]]
) -> dict[str, list[tuple[Detections, tuple[int, int]]]]:
    """Every lfw-dev photo through the default detector, once per module."""
    out: dict[str, list[tuple[Detections, tuple[int, int]]]] = {}
    for subset, paths in photos.items():
        out[subset] = []
        for path in paths:
            image = read(path)
            out[subset].append((detector.detect(image), image.shape[:2]))
    return out


# ------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        ([[[0, 0, 0]]], TypeError, "must be a numpy array"),
        (np.zeros((10, 10, 3), np.float32), TypeError, "must be uint8"),
        (np.zeros((10, 10, 3), np.uint16), TypeError, "must be uint8"),
        (np.zeros((10, 10), np.uint8), ValueError, r"shape \(h, w, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), ValueError, r"shape \(h, w, 3\)"),
        (np.zeros((10, 10, 3, 1), np.uint8), ValueError, r"shape \(h, w, 3\)"),
        (np.zeros((0, 10, 3), np.uint8), ValueError, "empty"),
        (np.zeros((10, 0, 3), np.uint8), ValueError, "empty"),
        (
            np.broadcast_to(np.uint8(0), (MAX_FRAME_SIDE + 1, 8, 3)),
            ValueError,
            "exceeds",
        ),
    ],
    ids=[
        "list",
        "float32",
        "uint16",
        "2-D",
        "4 channels",
        "4-D",
        "no rows",
        "no columns",
        "too large",
    ],
)
def test_bad_frames_raise_documented_errors(
    detector: FaceDetector, frame: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        detector.detect(frame)
    assert not any(np.asarray(b).any() for b in detector.buffers)


def test_blank_frames_have_no_faces(detector: FaceDetector) -> None:
    for shape in [(1, 1, 3), (7, 1000, 3), (540, 960, 3), (2000, 300, 3)]:
        faces = detector.detect(np.zeros(shape, np.uint8))
        assert len(faces) == 0
        assert faces.boxes.shape == (0, 4)


@pytest.mark.data
def test_closed_detector_refuses_work(
    yunet_path: Path, photos: dict[str, list[Path]]
) -> None:
    det = FaceDetector(yunet_path)
    assert len(det.detect(read(photos["identities"][0]))) >= 1
    det.close()
    det.close()
    assert all(b.closed for b in det.buffers)
    with pytest.raises(RuntimeError, match="closed"):
        det.detect(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.data
def test_non_contiguous_frames_are_accepted(
    detector: FaceDetector, photos: dict[str, list[Path]]
) -> None:
    image = read(photos["identities"][0])
    big = resize(image, (1500, 1500))
    for frame in (image, big):  # run as is, and shrunk
        mirrored = frame[:, ::-1]
        subsampled = np.repeat(frame, 2, axis=1)[:, ::2]  # strided view
        expected = detector.detect(np.ascontiguousarray(mirrored))
        got = detector.detect(mirrored)
        np.testing.assert_array_equal(got.boxes, expected.boxes)
        np.testing.assert_array_equal(got.landmarks, expected.landmarks)
        same = detector.detect(subsampled)
        np.testing.assert_array_equal(same.boxes, detector.detect(frame).boxes)


# ------------------------------------------------------ decoding cross-check


@pytest.fixture
def quiet_opencv() -> Iterator[None]:
    """OpenCV's new graph engine warns on stderr that it ignores targets."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    yield
    cv2.utils.logging.setLogLevel(level)


def opencv_yunet(model: Path, frame: U8) -> tuple[F32, F32, F32]:
    """OpenCV's runner at the frame's own size, boxes as (x1, y1, x2, y2), clipped."""
    h, w = frame.shape[:2]
    yunet = cv2.FaceDetectorYN.create(str(model), "", (w, h), 0.6, 0.3, 5000)
    _, faces = yunet.detect(frame)
    if faces is None:
        faces = np.zeros((0, 15), np.float32)
    faces = faces[np.argsort(-faces[:, 14], kind="stable")]
    boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
    np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
    points = faces[:, 4:14].reshape(-1, 5, 2)
    return cast(F32, boxes), cast(F32, faces[:, 14].copy()), cast(F32, points)


@pytest.mark.data
@pytest.mark.usefixtures("quiet_opencv")
def test_decoding_agrees_with_opencv(
    detector: FaceDetector, photos: dict[str, list[Path]], yunet_path: Path
) -> None:
    """Same model, same input: OpenCV's face_detect.cpp and lfr give the same faces.

    On 20 LFW photos as they are (250x250, padded to 256) and on 20 mosaics of three
    copies cut to 700x250 (several faces, some cut by the frame's edge, padded to
    704x256). Coordinates agree to 1e-3 pixels, scores to 1e-5.
    """
    compared = 0
    for path in photos["identities"][::79][:20]:
        image = read(path)
        mosaic = np.hstack([image, image[:, ::-1], image[::-1]])[:, :700]
        for frame in (image, np.ascontiguousarray(mosaic)):
            boxes, scores, points = opencv_yunet(yunet_path, frame)
            faces = detector.detect(frame)
            assert len(faces) == len(scores), path.name
            np.testing.assert_allclose(faces.scores, scores, atol=1e-5)
            np.testing.assert_allclose(faces.boxes, boxes, atol=1e-3)
            np.testing.assert_allclose(faces.landmarks, points, atol=1e-3)
            compared += len(faces)
    assert compared >= 60


@pytest.mark.data
@pytest.mark.usefixtures("quiet_opencv")
def test_large_frames_are_shrunk_and_mapped_back(
    detector: FaceDetector, photos: dict[str, list[Path]], yunet_path: Path
) -> None:
    """A 1920x1080 frame runs at 960x540; results come back in frame pixels."""
    tiles = [read(p) for p in photos["unknowns"][:8]]
    frame = resize(np.hstack(tiles[:4]), (1920, 1080))
    faces = detector.detect(frame)
    assert detector.working_shape(1080, 1920) == (540, 960)
    small = resize(frame, (960, 540), cv2.INTER_AREA)
    boxes, scores, points = opencv_yunet(yunet_path, small)
    assert len(faces) == len(scores) >= 4
    np.testing.assert_allclose(faces.scores, scores, atol=1e-5)
    np.testing.assert_allclose(faces.boxes, boxes * 2, atol=2e-3)
    np.testing.assert_allclose(faces.landmarks, points * 2, atol=2e-3)
    assert np.max(faces.boxes[:, 0::2]) <= 1920
    assert np.max(faces.boxes[:, 1::2]) <= 1080


# --------------------------------------------------------- detection on LFW


@pytest.mark.data
@pytest.mark.parametrize("subset", ["identities", "unknowns"])
def test_detection_rate_on_lfw(
    lfw_results: dict[str, list[tuple[Detections, tuple[int, int]]]], subset: str
) -> None:
    """The labelled face is found: some box contains the image centre."""
    results = lfw_results[subset]
    found = sum(labelled(faces, h, w) is not None for faces, (h, w) in results)
    rate = found / len(results)
    assert len(results) >= 1000
    assert rate >= 0.995, f"{subset}: {found}/{len(results)} = {rate:.2%}"


@pytest.mark.data
def test_results_are_sorted_and_inside_the_frame(
    lfw_results: dict[str, list[tuple[Detections, tuple[int, int]]]],
) -> None:
    for faces, (h, w) in lfw_results["unknowns"]:
        assert np.all(np.diff(faces.scores) <= 0)
        assert np.all(faces.scores >= 0.6)
        assert np.all(faces.boxes >= 0)
        assert np.all(faces.boxes[:, 0::2] <= w)
        assert np.all(faces.boxes[:, 1::2] <= h)


@pytest.mark.data
def test_landmarks_come_in_the_documented_order(
    lfw_results: dict[str, list[tuple[Detections, tuple[int, int]]]],
) -> None:
    """Eyes, nose, mouth corners; image-left before image-right (frontal faces)."""
    checks: dict[str, list[bool]] = {
        "left eye left of right eye": [],
        "left mouth corner left of right": [],
        "mouth below the eyes": [],
        "nose below the eyes": [],
        "nose above the mouth": [],
        "landmarks inside the box": [],
    }
    for faces, (h, w) in lfw_results["identities"]:
        i = labelled(faces, h, w)
        if i is None:
            continue
        p = faces.landmarks[i]
        x1, y1, x2, y2 = faces.boxes[i]
        eyes_y, mouth_y = max(p[0, 1], p[1, 1]), min(p[3, 1], p[4, 1])
        checks["left eye left of right eye"].append(bool(p[0, 0] < p[1, 0]))
        checks["left mouth corner left of right"].append(bool(p[3, 0] < p[4, 0]))
        checks["mouth below the eyes"].append(bool(mouth_y > eyes_y))
        checks["nose below the eyes"].append(bool(p[2, 1] > eyes_y))
        checks["nose above the mouth"].append(bool(p[2, 1] < mouth_y))
        checks["landmarks inside the box"].append(
            bool(
                (p[:, 0] >= x1).all()
                and (p[:, 0] <= x2).all()
                and (p[:, 1] >= y1).all()
                and (p[:, 1] <= y2).all()
            )
        )
    for name, results in checks.items():
        assert len(results) >= 1500
        assert np.mean(results) >= 0.99, f"{name}: {np.mean(results):.2%}"


# ------------------------------------------------------------- secure buffers


class SpySession:
    """Wraps the onnxruntime session: records what the input buffer held."""

    def __init__(self, session: Any, detector: FaceDetector, fail: bool) -> None:
        self.session = session
        self.detector = detector
        self.fail = fail
        self.nonzero: list[bool] = []

    def run_with_iobinding(self, binding: Any) -> None:
        self.nonzero.append(all(np.asarray(b).any() for b in self.detector.buffers))
        if self.fail:
            raise RuntimeError("simulated inference failure")
        self.session.run_with_iobinding(binding)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@pytest.mark.data
@pytest.mark.parametrize("fail", [False, True], ids=["success", "error"])
def test_buffers_are_wiped_after_every_call(
    yunet_path: Path,
    photos: dict[str, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
    fail: bool,
) -> None:
    """Both buffers hold the face during inference and only zeros afterwards."""
    image = read(photos["identities"][0])
    frame = resize(image, (1400, 1400))  # shrunk: both buffers are used
    with FaceDetector(yunet_path) as det:
        spy = SpySession(det._session, det, fail)
        monkeypatch.setattr(det, "_session", spy)
        if fail:
            with pytest.raises(RuntimeError, match="simulated"):
                det.detect(frame)
        else:
            assert len(det.detect(frame)) == 1
        assert spy.nonzero == [True]
        for buf in det.buffers:
            assert buf.nbytes > 0
            assert not np.asarray(buf).any()
            assert buf.views == 0


def masked(view: npt.NDArray[Any], key: U8) -> U8:
    """``view``'s bytes XOR the repeating key, without a plaintext copy."""
    raw = view.reshape(-1).view(np.uint8)
    out = np.empty_like(raw)
    np.bitwise_xor(raw, np.resize(key, raw.size), out=out)
    return out


def hits(references: list[U8], key: U8) -> list[int]:
    found, needles, scanned, _, _ = _core.scan_memory(references, key.tobytes())
    assert all(n > 0 for n in needles), needles
    assert scanned > 10_000_000
    counts = [0] * len(references)
    for secret, _, _, _ in found:
        counts[secret] += 1
    return counts


@pytest.mark.skipif(
    not os.path.exists("/proc/self/mem"), reason="needs Linux /proc/self/mem"
)
@pytest.mark.parametrize("layout", ["packed", "mirrored"])
def test_no_trace_of_the_frame_after_detect(yunet_path: Path, layout: str) -> None:
    """Scans this process's memory for the shrunk frame and the model input.

    A 1920x1080 canary frame (random bytes, in a secure buffer) is detected on;
    its shrunk 960x540 copy and the float32 tensor are recomputed as references
    (in secure buffers, XOR-masked, then wiped). Before the call the scan finds
    the references' plaintext (the scan can see them); after the call and the
    frame's own wipe it finds nothing: neither OpenCV, numpy nor onnxruntime left
    a copy. The mirrored layout takes the path where lfr copies the frame into a
    secure scratch buffer before OpenCV reads it.
    """
    h, w, sh, sw, ph = 1080, 1920, 540, 960, 544
    key = np.frombuffer(os.urandom(64), dtype=np.uint8)
    with (
        FaceDetector(yunet_path) as det,
        SecureBuffer(h * w * 3) as frame_buf,
        SecureBuffer(h * w * 3) as seen_buf,
        SecureBuffer(sh * sw * 3) as scaled_buf,
        SecureBuffer(3 * ph * sw * 4) as tensor_buf,
    ):
        packed = frame_buf.array(np.uint8, (h, w, 3))
        noise = np.random.default_rng().integers(0, 256, packed.shape, np.uint8)
        np.copyto(packed, noise)
        noise.fill(0)  # the canary's only other copy
        del noise
        frame = packed if layout == "packed" else packed[:, ::-1]
        # The references, computed in secure memory: the frame as the detector
        # sees it, packed (the mirrored layout's scratch copy), its shrunk copy
        # and the model input's planes.
        seen = seen_buf.array(np.uint8, (h, w, 3))
        np.copyto(seen, frame)
        scaled = scaled_buf.array(np.uint8, (sh, sw, 3))
        cv2.resize(seen, (sw, sh), dst=scaled, interpolation=cv2.INTER_AREA)
        tensor = tensor_buf.array(np.float32, (3, ph, sw))
        for c in range(3):
            np.copyto(tensor[c, :sh], scaled[:, :, c], casting="unsafe")
        references = [
            masked(packed, key),
            masked(seen, key),
            masked(scaled, key),
            *(masked(tensor[c, :sh], key) for c in range(3)),
        ]
        assert all(n >= 1 for n in hits(references, key))
        for buf in (seen_buf, scaled_buf, tensor_buf):
            buf.wipe()
        del seen, scaled, tensor
        det.detect(frame)
        frame_buf.wipe()
        del frame, packed
        assert hits(references, key) == [0] * len(references)


@pytest.mark.data
def test_concurrent_calls_are_serialised(
    detector: FaceDetector, photos: dict[str, list[Path]]
) -> None:
    images = [read(p) for p in photos["unknowns"][:6]]
    expected = [detector.detect(im).boxes for im in images]
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for k in range(12):
                i = (k + offset) % len(images)
                np.testing.assert_array_equal(
                    detector.detect(images[i]).boxes, expected[i]
                )
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not any(np.asarray(b).any() for b in detector.buffers)


def test_repr_names_settings_only(yunet_path: Path) -> None:
    with FaceDetector(yunet_path, score_threshold=0.7, threads=2) as det:
        text = repr(det)
    assert text.startswith("FaceDetector(model='face_detection_yunet")
    assert "score_threshold=0.7" in text
    assert "threads=2" in text
