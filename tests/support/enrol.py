"""Enrolling LFW people for end-to-end tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lfr
from lfr.errors import EnrolmentError


def enrol_usable(
    wl: lfr.Watchlist,
    name: str,
    photos: Sequence[Path],
    detector: lfr.FaceDetector,
    embedder: lfr.FaceEmbedder,
) -> int:
    """Enrols ``name`` from the photos that show exactly one usable face.

    LFW news photos often show other people too, and enrolment is all or
    nothing, so the photos it refuses are left out and the rest enrolled.

    Returns:
        How many photos were enrolled (0 if none is usable).
    """
    usable = list(photos)
    try:
        wl.enroll(name, usable, detector=detector, embedder=embedder)
    except EnrolmentError as exc:
        bad = {index for index, _ in exc.failures}
        usable = [p for i, p in enumerate(photos) if i not in bad]
        if not usable:
            return 0
        wl.enroll(name, usable, detector=detector, embedder=embedder)
    return len(usable)
