"""lfr's shape predictor gives dlib's own landmarks and chips on real LFW photos."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lfr import align
from lfr.align import DLIB_CHIP_TEMPLATE, box_from_yunet, chip_transform, dlib_grey
from lfr.detect import FaceDetector
from lfr.models.shape_predictor import ShapePredictor
from tests.support.dlib_dat import FIVE_POINT, require_dat

dlib = pytest.importorskip("dlib", reason="dlib-bin is the reference")
FIVE_POINT_DAT = require_dat(FIVE_POINT)

pytestmark = pytest.mark.data

FACES = 50
U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]


@dataclass
class Face:
    rgb: U8
    grey: U8
    rect: Any  # dlib.rectangle from dlib's HOG detector
    parts: F64  # [5, 2] dlib's landmarks on that rectangle


@pytest.fixture(scope="module")
def model_path() -> Path:
    return FIVE_POINT_DAT


@pytest.fixture(scope="module")
def predictor(model_path: Path) -> ShapePredictor:
    return ShapePredictor.from_bytes(model_path.read_bytes())


@pytest.fixture(scope="module")
def faces(lfw_dir: Path, model_path: Path) -> list[Face]:
    """dlib's detections and landmarks on about 50 photos of different people."""
    detector = dlib.get_frontal_face_detector()
    reference = dlib.shape_predictor(str(model_path))
    people = sorted(p for p in (lfw_dir / "identities").iterdir() if p.is_dir())
    found: list[Face] = []
    for person in people:
        photo = sorted(person.glob("*.jpg"))[0]
        raw = cv2.imread(str(photo))
        assert raw is not None
        bgr = np.asarray(raw, dtype=np.uint8)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        grey = dlib_grey(bgr, np.empty(bgr.shape[:2], np.uint8))
        for rect in detector(rgb, 1):
            shape = reference(rgb, rect)
            parts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
            found.append(Face(rgb, grey, rect, parts))
        if len(found) >= FACES:
            break
    assert len(found) >= FACES
    return found


def dlib_box(rect: Any) -> list[float]:
    return [rect.left(), rect.top(), rect.right(), rect.bottom()]


def test_landmarks_equal_dlibs(predictor: ShapePredictor, faces: list[Face]) -> None:
    for face in faces:
        ours = predictor.predict(face.grey, np.array([dlib_box(face.rect)], np.float32))
        np.testing.assert_allclose(ours[0], face.parts, rtol=0, atol=0.01)


def test_dlib_reads_grey_as_lfr_converts_it(
    model_path: Path, faces: list[Face]
) -> None:
    reference = dlib.shape_predictor(str(model_path))
    for face in faces[:10]:
        shape = reference(face.grey, face.rect)
        parts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        np.testing.assert_array_equal(parts, face.parts)


def test_many_faces_at_once(predictor: ShapePredictor, faces: list[Face]) -> None:
    face = faces[0]
    rng = np.random.default_rng(0)
    boxes = np.array(dlib_box(face.rect), np.float32) + rng.integers(-20, 20, (70, 4))
    together = predictor.predict(face.grey, boxes.astype(np.float32))
    reference = dlib.shape_predictor(str(FIVE_POINT_DAT))
    for box, ours in zip(boxes, together):
        shape = reference(face.rgb, dlib.rectangle(*(int(v) for v in box)))
        parts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        np.testing.assert_array_equal(ours, parts)


def dlib_chip_to_image(details: Any) -> F64:
    """dlib's chip-to-image map: chip pixels 0 and size - 1 at the rect's edges."""
    rect, angle = details.rect, details.angle
    centre = np.array([rect.left() + rect.right(), rect.top() + rect.bottom()]) / 2
    step = np.array(
        [
            (rect.right() - rect.left()) / (details.cols - 1),
            (rect.bottom() - rect.top()) / (details.rows - 1),
        ]
    )
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    half = np.array([details.cols - 1, details.rows - 1]) / 2
    out = np.empty((2, 3))
    out[:, :2] = rot * step
    out[:, 2] = centre - out[:, :2] @ half
    return out


CORNERS = np.array([[0, 0], [149, 0], [0, 149], [149, 149], [74.5, 74.5]], float)


def deviation(image_to_chip: F64, chip_to_image: F64) -> float:
    """Largest distance in chip pixels between two maps, over the chip's corners."""
    image = CORNERS @ chip_to_image[:, :2].T + chip_to_image[:, 2]
    back = image @ image_to_chip[:, :2].T + image_to_chip[:, 2]
    return float(np.linalg.norm(back - CORNERS, axis=1).max())


def test_chip_transform_is_dlibs(faces: list[Face]) -> None:
    for face in faces:
        shape = dlib.full_object_detection(
            face.rect, [dlib.point(int(x), int(y)) for x, y in face.parts]
        )
        details = dlib.get_face_chip_details(shape, 150, 0.25)
        m = chip_transform(face.parts)
        assert deviation(m, dlib_chip_to_image(details)) < 1e-6
        # The pixels: dlib's bilinear and OpenCV's differ by at most one grey
        # level where all four source pixels lie in the image; at the image's
        # edge dlib writes 0 where OpenCV blends with its black border.
        chip = np.asarray(dlib.get_face_chip(face.rgb, shape, 150, 0.25), np.int16)
        ours = cv2.warpAffine(face.rgb, m, (150, 150), flags=cv2.INTER_LINEAR)
        diff = np.abs(chip - ours.astype(np.int16)).max(axis=2)
        pixels = np.stack(np.meshgrid(np.arange(150.0), np.arange(150.0)), axis=-1)
        back = cv2.invertAffineTransform(m)
        source = pixels @ back[:, :2].T + back[:, 2]
        height, width = face.grey.shape
        inside = (source >= 0).all(axis=2)
        inside &= (source[..., 0] <= width - 1) & (source[..., 1] <= height - 1)
        assert inside.mean() > 0.5
        assert diff[inside].max() <= 1


def test_template_reproduces_dlibs_chip(faces: list[Face]) -> None:
    worst = []
    for face in faces:
        shape = dlib.full_object_detection(
            face.rect, [dlib.point(int(x), int(y)) for x, y in face.parts]
        )
        details = dlib.get_face_chip_details(shape, 150, 0.25)
        expected = dlib_chip_to_image(details)
        scale = float(np.sqrt(abs(np.linalg.det(expected[:, :2]))))
        chip_to_image = align.similarity_transform(DLIB_CHIP_TEMPLATE, face.parts)
        image_to_chip = np.asarray(cv2.invertAffineTransform(chip_to_image), float)
        bound = 0.71 * abs(1 - 1 / scale) + 0.01  # at the chip's corners
        error = deviation(image_to_chip, expected)
        assert error <= bound, (error, scale)
        worst.append(error)
    assert np.mean(worst) < 0.5


@pytest.fixture(scope="module")
def detector(yunet_path: Path) -> Iterator[FaceDetector]:
    with FaceDetector(yunet_path) as det:
        yield det


def test_yunet_boxes_give_dlibs_landmarks(
    predictor: ShapePredictor, faces: list[Face], detector: FaceDetector
) -> None:
    """Mapped YuNet boxes: landmarks near dlib's on dlib's own boxes."""
    errors = []
    for face in faces:
        found = detector.detect(np.ascontiguousarray(face.rgb[:, :, ::-1]))
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
        best = int(np.argmin(np.linalg.norm(centres - face.parts.mean(axis=0), axis=1)))
        box = box_from_yunet(
            found.boxes[best : best + 1], found.landmarks[best : best + 1]
        )
        ours = predictor.predict(face.grey, box)[0]
        eyes = np.linalg.norm(
            face.parts[:2].mean(axis=0) - face.parts[2:4].mean(axis=0)
        )
        errors.append(np.linalg.norm(ours - face.parts, axis=1) / eyes)
    assert np.mean(errors) < 0.025
    assert np.percentile(errors, 95) < 0.08
