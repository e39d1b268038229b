"""The quality gate: faces lfr cannot judge are skipped, counted, never stored.

A face is judged only if it is detected confidently, large enough, sharp enough and
close enough to frontal for the embedder to be reliable. The measures come from the
detector's landmarks and from the face's aligned chip (sharpness), which is made in
secure memory and wiped at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from lfr.align import DLIB_TEMPLATE, align_into, check_frame, similarity_transform
from lfr.detect import Detections
from lfr.secure import SecureBuffer

__all__ = ["QualityGate", "QualityReport"]

_CHIP = 112
# The chip used for sharpness: dlib's 150 px chip template scaled to 112 px.
_SHARP_TEMPLATE = np.asarray(DLIB_TEMPLATE) * (_CHIP / 150)


@dataclass(frozen=True)
class QualityReport:
    """Per-face measurements and verdicts (no pixels).

    Attributes:
        passed: ``bool[n]``: the face may be embedded and matched.
        reasons: For each face, why it failed (empty when it passed).
        score: Detection score.
        eye_distance: Distance between the eyes in frame pixels.
        yaw: Horizontal offset of the nose from the eyes' midpoint, in eye
            distances (0 frontal, about 0.5 in half profile).
        pitch: Where the nose lies between the eye line (0) and the mouth line (1).
        roll: Angle of the eye line in degrees.
        sharpness: Variance of the Laplacian of the grey aligned chip.
    """

    passed: npt.NDArray[np.bool_]
    reasons: tuple[tuple[str, ...], ...]
    score: npt.NDArray[np.float32]
    eye_distance: npt.NDArray[np.float32]
    yaw: npt.NDArray[np.float32]
    pitch: npt.NDArray[np.float32]
    roll: npt.NDArray[np.float32]
    sharpness: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.passed)

    @property
    def skipped(self) -> int:
        """How many faces failed the gate."""
        return int((~self.passed).sum())


@dataclass(frozen=True)
class QualityGate:
    """Thresholds that decide whether a face can be judged.

    The defaults were chosen on lfw-dev (see docs/accuracy.md): they pass nearly
    every labelled face there and reject detections that are tiny, blurred or far
    from frontal.

    Attributes:
        min_score: Least detection score.
        min_eye_distance: Least distance between the eyes, in frame pixels.
        max_yaw: Largest ``|yaw|`` (see :class:`QualityReport`).
        pitch_range: Allowed ``pitch`` interval.
        max_roll: Largest ``|roll|`` in degrees.
        min_sharpness: Least variance of the Laplacian of the grey 112x112 chip.
    """

    min_score: float = 0.7
    min_eye_distance: float = 16.0
    max_yaw: float = 0.6
    pitch_range: tuple[float, float] = field(default=(0.15, 0.85))
    max_roll: float = 40.0
    min_sharpness: float = 20.0

    def __post_init__(self) -> None:
        lo, hi = self.pitch_range
        values = (self.min_score, self.min_eye_distance, self.max_yaw, self.max_roll)
        if not all(math.isfinite(v) and v >= 0 for v in (*values, lo, hi)) or lo > hi:
            raise ValueError(
                "quality thresholds must be finite, non-negative, lo <= hi"
            )

    def assess(self, frame: npt.NDArray[np.uint8], faces: Detections) -> QualityReport:
        """Measures every face of ``faces`` and applies the thresholds.

        Args:
            frame: The ``uint8[h, w, 3]`` BGR frame the faces were found in.
            faces: Its detections.

        Returns:
            The :class:`QualityReport`.

        Raises:
            TypeError: ``frame`` is not a uint8 array or ``faces`` not Detections.
            ValueError: ``frame`` does not have shape ``(h, w, 3)``.
        """
        if not isinstance(faces, Detections):
            raise TypeError("faces must be lfr.Detections")
        check_frame(frame)
        geometry = pose(faces.landmarks)
        sharp = np.array(
            [sharpness(frame, lm) for lm in faces.landmarks], dtype=np.float32
        ).reshape(-1)
        reasons: list[tuple[str, ...]] = []
        for i in range(len(faces)):
            why = []
            if faces.scores[i] < self.min_score:
                why.append("score")
            if geometry.eye_distance[i] < self.min_eye_distance:
                why.append("small")
            if abs(geometry.yaw[i]) > self.max_yaw:
                why.append("yaw")
            if not self.pitch_range[0] <= geometry.pitch[i] <= self.pitch_range[1]:
                why.append("pitch")
            if abs(geometry.roll[i]) > self.max_roll:
                why.append("roll")
            if sharp[i] < self.min_sharpness:
                why.append("blur")
            reasons.append(tuple(why))
        return QualityReport(
            passed=np.array([not r for r in reasons], dtype=bool),
            reasons=tuple(reasons),
            score=faces.scores.copy(),
            eye_distance=geometry.eye_distance,
            yaw=geometry.yaw,
            pitch=geometry.pitch,
            roll=geometry.roll,
            sharpness=sharp,
        )


@dataclass(frozen=True)
class Pose:
    """Landmark geometry per face (see :class:`QualityReport`)."""

    eye_distance: npt.NDArray[np.float32]
    yaw: npt.NDArray[np.float32]
    pitch: npt.NDArray[np.float32]
    roll: npt.NDArray[np.float32]


def pose(landmarks: npt.NDArray[np.float32]) -> Pose:
    """Eye distance, yaw, pitch and roll from ``float32[n, 5, 2]`` landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    left, right, nose = lm[:, 0], lm[:, 1], lm[:, 2]
    mouth = (lm[:, 3] + lm[:, 4]) / 2
    eyes = (left + right) / 2
    axis = right - left
    dist = np.hypot(axis[:, 0], axis[:, 1])
    safe = np.where(dist > 0, dist, 1.0)
    ux, uy = axis[:, 0] / safe, axis[:, 1] / safe
    # Coordinates in the eye-line frame: u along the eyes, v perpendicular (down).
    nose_u = (nose - eyes)[:, 0] * ux + (nose - eyes)[:, 1] * uy
    nose_v = -(nose - eyes)[:, 0] * uy + (nose - eyes)[:, 1] * ux
    mouth_v = -(mouth - eyes)[:, 0] * uy + (mouth - eyes)[:, 1] * ux
    safe_mouth = np.where(np.abs(mouth_v) > 1e-6, mouth_v, 1e-6)
    return Pose(
        eye_distance=dist.astype(np.float32),
        yaw=(nose_u / safe).astype(np.float32),
        pitch=(nose_v / safe_mouth).astype(np.float32),
        roll=np.degrees(np.arctan2(axis[:, 1], axis[:, 0])).astype(np.float32),
    )


def sharpness(
    frame: npt.NDArray[np.uint8], landmarks: npt.NDArray[np.float32]
) -> float:
    """Variance of the Laplacian of the face's grey 112x112 aligned chip.

    The chip, its grey version and the Laplacian live in one secure buffer that is
    wiped before returning.
    """
    n = _CHIP * _CHIP
    with SecureBuffer(n * 3 + n + n * 4) as scratch:
        raw = scratch.array(np.uint8)
        chip = raw[: n * 3].reshape(_CHIP, _CHIP, 3)
        grey = raw[n * 3 : n * 4].reshape(_CHIP, _CHIP)
        lap = raw[n * 4 :].view(np.float32).reshape(_CHIP, _CHIP)
        try:
            align_into(frame, similarity_transform(landmarks, _SHARP_TEMPLATE), chip)
        except ValueError:
            return 0.0  # degenerate landmarks: nothing to judge
        cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY, dst=grey)
        cv2.Laplacian(grey, cv2.CV_32F, dst=lap, ksize=3)
        _, std = cv2.meanStdDev(lap[8:-8, 8:-8])
        del raw, chip, grey, lap
    return float(std[0, 0]) ** 2
