"""The quality gate: pose from landmarks, sharpness of the aligned chip."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lfr
from lfr.align import DLIB_TEMPLATE
from lfr.quality import pose, sharpness

FACE = np.asarray(DLIB_TEMPLATE, np.float32) + 100  # a frontal face at (146, 142)


def detections(landmarks: np.ndarray, score: float = 0.9) -> lfr.Detections:
    lm = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    lo, hi = lm.min(axis=1) - 20, lm.max(axis=1) + 20
    boxes = np.concatenate([lo, hi], axis=1).astype(np.float32)
    return lfr.Detections(boxes, np.full(len(lm), score, np.float32), lm)


@given(
    angle=st.floats(-80, 80),
    scale=st.floats(0.2, 5),
    shift=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
)
def test_pose_is_invariant_to_roll_scale_and_position(
    angle: float, scale: float, shift: tuple[float, float]
) -> None:
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    moved = (FACE - FACE.mean(0)) @ rot.T * scale + FACE.mean(0) + shift
    a, b = pose(FACE[None]), pose(moved[None].astype(np.float32))
    np.testing.assert_allclose(b.yaw, a.yaw, atol=1e-3)
    np.testing.assert_allclose(b.pitch, a.pitch, atol=1e-3)
    np.testing.assert_allclose(b.eye_distance, a.eye_distance * scale, rtol=1e-3)
    assert abs(float(b.roll[0] - a.roll[0]) - angle) < 1e-2


def test_a_turned_head_has_yaw() -> None:
    turned = FACE.copy()
    turned[2, 0] += 40  # nose towards the image-right eye
    assert abs(float(pose(FACE[None]).yaw[0])) < 0.1
    assert float(pose(turned[None]).yaw[0]) > 0.6


def test_gate_names_each_failure() -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    tiny = (FACE - FACE.mean(0)) * 0.2 + FACE.mean(0)
    turned = FACE.copy()
    turned[2, 0] += 40
    faces = detections(np.stack([FACE, tiny, turned]), score=0.9)
    report = lfr.QualityGate().assess(frame, faces)
    assert report.passed.tolist() == [True, False, False]
    assert report.reasons[0] == ()
    assert "small" in report.reasons[1]
    assert "yaw" in report.reasons[2]
    assert report.skipped == 2
    low = lfr.QualityGate().assess(frame, detections(FACE, score=0.5))
    assert low.reasons[0] == ("score",)


def test_blur_lowers_sharpness_below_the_gate() -> None:
    rng = np.random.default_rng(4)
    sharp_frame = rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp_frame, (0, 0), 6)
    s1 = sharpness(sharp_frame, FACE)
    s2 = sharpness(np.asarray(blurred, np.uint8), FACE)
    assert s1 > 100 * s2
    report = lfr.QualityGate(min_sharpness=s2 * 2).assess(
        np.asarray(blurred, np.uint8), detections(FACE)
    )
    assert report.reasons[0] == ("blur",)


def test_bad_thresholds_and_input_are_refused() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        lfr.QualityGate(min_score=-1)
    with pytest.raises(ValueError, match="thresholds"):
        lfr.QualityGate(pitch_range=(0.8, 0.2))
    gate = lfr.QualityGate()
    with pytest.raises(TypeError, match="Detections"):
        gate.assess(np.zeros((10, 10, 3), np.uint8), "faces")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="uint8"):
        gate.assess(np.zeros((10, 10, 3)), detections(FACE))  # type: ignore[arg-type]
    assert (
        len(gate.assess(np.zeros((10, 10, 3), np.uint8), lfr.Detections.empty())) == 0
    )
