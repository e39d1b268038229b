"""Checking and converting alert values: ids, texts, times, scores, boxes, crops."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import numpy.typing as npt

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _us(when: datetime) -> int:
    return (when - _EPOCH) // _US


def _dt(us: int) -> datetime:
    if isinstance(us, bool) or not isinstance(us, int):
        raise TypeError("a stored time is not an integer")
    return _EPOCH + timedelta(microseconds=us)


def _wipe(buf: bytearray) -> None:
    buf[:] = bytes(len(buf))


def _id(alert_id: object) -> str:
    if not isinstance(alert_id, str):
        raise TypeError(f"an alert id is a str, got {type(alert_id).__name__}")
    return alert_id


def _uuid(value: object) -> str:
    """An alert id given by a caller: the canonical text of a UUID."""
    if not isinstance(value, str):
        raise TypeError(f"an alert id is a str, got {type(value).__name__}")
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        raise ValueError("an alert id must be a UUID") from None
    if canonical != value:
        raise ValueError("an alert id must be a UUID in canonical form")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


def _reason(value: object) -> str:
    """A hold's reason: a string with at least one letter or digit."""
    reason = _text(value, "reason")
    if not any(ch.isalnum() for ch in reason):
        raise ValueError(
            f"a hold needs a reason in words (a case reference), got {reason!r}"
        )
    return reason


def _aware(value: object, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got a naive datetime")
    return value.astimezone(timezone.utc)


def _score(value: object) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"score must be a number, got {type(value).__name__}")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError("score must be finite")
    return score


def _box(value: object) -> tuple[float, float, float, float]:
    if not isinstance(value, (tuple, list, np.ndarray)):
        raise TypeError(f"box must be a tuple of 4 numbers, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.shape != (4,):
        raise ValueError(
            f"box must have 4 values (x1, y1, x2, y2), got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iuf":
        raise TypeError("box must hold numbers")
    x1, y1, x2, y2 = (float(v) for v in arr)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError("box values must be finite")
    if x2 < x1 or y2 < y1:
        raise ValueError("box must have x1 <= x2 and y1 <= y2")
    return (x1, y1, x2, y2)


def _encode(
    crop: object, image_format: str
) -> tuple[npt.NDArray[np.uint8] | memoryview, str]:
    """The crop's encoded bytes (a new array, wiped by the caller) and format."""
    if isinstance(crop, np.ndarray):
        if crop.dtype != np.uint8:
            raise TypeError(f"crop must be a uint8 array, got {crop.dtype}")
        if crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(f"crop must have shape (H, W, 3), got {crop.shape}")
        if crop.size == 0:
            raise ValueError("crop is empty")
        ext, params = (
            (".png", [])
            if image_format == "png"
            else (
                ".jpg",
                [
                    cv2.IMWRITE_JPEG_QUALITY,
                    95,
                ],
            )
        )
        try:
            ok, encoded = cv2.imencode(ext, crop, params)
        except cv2.error:
            ok, encoded = False, None
        if not ok or encoded is None:
            raise ValueError("crop could not be encoded")
        return np.asarray(encoded, dtype=np.uint8).reshape(-1), image_format
    if isinstance(crop, (bytes, bytearray, memoryview)):
        view = memoryview(crop).cast("B")
        if view.nbytes == 0:
            raise ValueError("crop is empty")
        if bytes(view[:8]) == _PNG:
            return view, "png"
        if bytes(view[:3]) == _JPEG:
            return view, "jpeg"
        raise ValueError("crop bytes are neither PNG nor JPEG")
    raise TypeError(
        f"crop must be a uint8 array or PNG/JPEG bytes, got {type(crop).__name__}"
    )
