"""Alignment (similarity transform, warp into caller memory) and the model input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lfr
from lfr.align import mirrored_transform, similarity_transform, warp_face
from lfr.embed import chip_to_tensor

TEMPLATE = np.array(
    [[51.0, 62.0], [99.0, 62.0], [75.0, 88.0], [56.0, 112.0], [94.0, 112.0]]
)


@given(
    angle=st.floats(-math.pi, math.pi),
    scale=st.floats(0.05, 20.0),
    shift=st.tuples(st.floats(-500, 500), st.floats(-500, 500)),
    noise_seed=st.integers(0, 2**32 - 1),
)
def test_similarity_transform_recovers_a_known_one(
    angle: float, scale: float, shift: tuple[float, float], noise_seed: int
) -> None:
    rng = np.random.default_rng(noise_seed)
    src = rng.uniform(0, 300, size=(5, 2))
    rot = scale * np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    dst = src @ rot.T + np.array(shift)
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-6 * max(1.0, scale))
    np.testing.assert_allclose(
        src @ m[:, :2].T + m[:, 2], dst, atol=1e-6 * max(1, scale) * 500
    )


def test_similarity_transform_never_reflects() -> None:
    src = TEMPLATE
    mirrored = TEMPLATE * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        (np.zeros((5, 2)), TEMPLATE, "coincide"),
        (TEMPLATE[:4], TEMPLATE, "differ in shape"),
        (np.ones((5, 3)), TEMPLATE, "shape"),
        (np.full((5, 2), np.nan), TEMPLATE, "NaN"),
    ],
)
def test_bad_points_are_refused(src: np.ndarray, dst: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        similarity_transform(src, dst)


def test_warp_face_writes_the_chip_into_a_secure_buffer() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    landmarks = TEMPLATE * 2 + np.array([100.0, 50.0])  # the chip at half scale
    with lfr.SecureBuffer(150 * 150 * 3) as buf:
        chip = buf.array(np.uint8, (150, 150, 3))
        m = warp_face(frame, landmarks, TEMPLATE, out=chip)
        np.testing.assert_allclose(m, [[0.5, 0, -50], [0, 0.5, -25]], atol=1e-9)
        # chip(x, y) = frame(2x + 100, 2y + 50), exactly on pixel centres.
        np.testing.assert_array_equal(chip[10, 20], frame[70, 140])
        del chip


def test_warp_face_validates_its_arrays() -> None:
    frame = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(TypeError, match="out"):
        warp_face(frame, TEMPLATE, TEMPLATE, out=np.zeros((150, 150, 3), np.float32))
    with pytest.raises(ValueError, match="writable"):
        warp_face(
            frame, TEMPLATE, TEMPLATE, out=np.zeros((150, 150, 6), np.uint8)[..., :3]
        )
    with pytest.raises(ValueError, match=r"\(h, w, 3\)"):
        warp_face(np.zeros((50, 50), np.uint8), TEMPLATE, TEMPLATE, out=frame)


def test_chip_to_tensor_matches_the_reference_formula() -> None:
    rng = np.random.default_rng(2)
    chip = rng.integers(0, 256, size=(150, 150, 3), dtype=np.uint8)
    mean = (122.782, 117.001, 104.298)
    with lfr.SecureBuffer(3 * 150 * 150 * 4) as buf:
        tensor = buf.array(np.float32, (1, 3, 150, 150))
        chip_to_tensor(chip, tensor, mean=mean, std=(256.0, 256.0, 256.0))
        expected = (
            chip[:, :, ::-1].astype(np.float32) - np.array(mean, np.float32)
        ) / 256
        np.testing.assert_allclose(tensor[0], expected.transpose(2, 0, 1), rtol=1e-6)
        chip_to_tensor(chip, tensor[0], rgb=False)
        np.testing.assert_array_equal(tensor[0], chip.transpose(2, 0, 1))
        del tensor


def test_chip_to_tensor_validates_its_arrays() -> None:
    chip = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(TypeError, match="float32"):
        chip_to_tensor(chip, np.zeros((3, 8, 8), np.float64))
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        chip_to_tensor(chip, np.zeros((3, 8, 9), np.float32))
    with pytest.raises(ValueError, match="mean"):
        chip_to_tensor(chip, np.zeros((3, 8, 8), np.float32), mean=(1.0,))


def test_mirrored_warp_equals_aligning_the_flipped_frame() -> None:
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, size=(200, 260, 3), dtype=np.uint8)
    landmarks = TEMPLATE * 1.1 + np.array([30.0, 20.0])
    landmarks[2, 0] += 6  # not symmetric
    w = frame.shape[1]
    flipped = np.ascontiguousarray(frame[:, ::-1])
    flipped_lm = landmarks[[1, 0, 2, 4, 3]].copy()
    flipped_lm[:, 0] = w - 1 - flipped_lm[:, 0]
    with lfr.SecureBuffer(2 * 150 * 150 * 3) as buf:
        chips = buf.array(np.uint8, (2, 150, 150, 3))
        warp_face(frame, landmarks, TEMPLATE, out=chips[0], mirror=True)
        warp_face(flipped, flipped_lm, TEMPLATE, out=chips[1])
        # The same sampling positions: equal up to OpenCV's fixed-point rounding.
        diff = np.abs(chips[0].astype(int) - chips[1].astype(int))
        assert diff.max() <= 1
        assert diff.mean() < 0.01
        m = mirrored_transform(landmarks, TEMPLATE)
        assert np.linalg.det(m[:, :2]) < 0  # a reflection
        del chips
