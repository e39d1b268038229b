"""Synthetic surveillance-style videos of known people, with their ground truth.

:func:`compose_video` draws people from photographs (LFW's 250x250 news photos)
walking across a textured background, several at a time, and writes an MJPG
``.avi`` together with a :class:`DemoTruth` that says which person is where in
every frame. :func:`pick_people` chooses, from ``lfw-dev``, people to enrol on a
watchlist (with photos kept apart from the ones the video shows) and people who
are not on it. ``lfr demo``, the end-to-end tests and the pipeline benchmarks use
them; everything is deterministic for a given seed.

How a person is drawn: the region around the photo's centre that holds the face
(:data:`PHOTO_CROP`, 140x170 pixels of a 250x250 photo: a centred 130x130 square
would cut the chin, which the detector's box reaches) is scaled so that the face
is as wide as wanted and blended into the frame through a feathered ellipse, so no
rectangle edges are drawn and little of the photo's own background (sometimes
other people) comes along. The face's box in the frame, the ground truth, is
:data:`PHOTO_FACE` (the mean box the YuNet detector finds on the labelled faces of
``lfw-dev``, each side within about 8 pixels of it) scaled the same way.

Examples:
    >>> from lfr.demo import compose_video, pick_people
    >>> enrol, probe, unknown = pick_people(
    ...     "../shared/data/lfw-dev", enrolled=3, unknown=2
    ... )  # doctest: +SKIP
    >>> people = [*probe.values(), *([p] for p in unknown)]  # doctest: +SKIP
    >>> truth = compose_video(people, "demo.avi")  # doctest: +SKIP
    >>> truth.frames, len(truth.appearances)  # doctest: +SKIP
    (62, 5)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "PHOTO_CROP",
    "PHOTO_FACE",
    "Appearance",
    "DemoPeople",
    "DemoTruth",
    "compose_video",
    "pick_people",
]

Box = tuple[float, float, float, float]
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

#: Side of an LFW photo; other sizes are scaled from it.
PHOTO_SIDE = 250
#: ``(x1, y1, x2, y2)`` of the region cut from a 250x250 photo.
PHOTO_CROP: Box = (55.0, 45.0, 195.0, 215.0)
#: ``(x1, y1, x2, y2)`` of the face in a 250x250 LFW photo: the mean YuNet box of
#: the labelled face over 597 ``lfw-dev`` photos (standard deviation 7 to 8 px a side).
PHOTO_FACE: Box = (79.4, 66.5, 172.5, 189.6)

_FEATHER = 0.18  # fraction of the ellipse's radius over which a face fades out
_MARGIN = 12  # pixels kept between the drawn regions of two people


@dataclass(frozen=True)
class Appearance:
    """One person's pass across the video: a track.

    Attributes:
        person: Index of the person in the ``people`` given to :func:`compose_video`.
        photo: The photo the face was drawn from.
        first_frame: The first frame (from 0) showing the face.
        last_frame: The last frame showing it (inclusive).
        boxes: The face's ``(x1, y1, x2, y2)`` in frame pixels, one per frame
            from ``first_frame`` to ``last_frame``.

    Raises:
        ValueError: The frames are negative or reversed, or ``boxes`` does not have
            one well-formed box per frame.
    """

    person: int
    photo: str
    first_frame: int
    last_frame: int
    boxes: tuple[Box, ...]

    def __post_init__(self) -> None:
        if self.person < 0 or self.first_frame < 0:
            raise ValueError("person and first_frame must not be negative")
        if self.last_frame < self.first_frame:
            raise ValueError(
                f"last_frame {self.last_frame} is before first_frame {self.first_frame}"
            )
        if len(self.boxes) != self.last_frame - self.first_frame + 1:
            raise ValueError(
                f"{len(self.boxes)} boxes for frames {self.first_frame} to "
                f"{self.last_frame}"
            )
        for box in self.boxes:
            if len(box) != 4 or not box[0] <= box[2] or not box[1] <= box[3]:
                raise ValueError(f"malformed box {box}")

    @property
    def frames(self) -> range:
        """The frames showing the face."""
        return range(self.first_frame, self.last_frame + 1)

    def box_at(self, frame: int) -> Box | None:
        """The face's box in ``frame``, or ``None`` if it is not shown there."""
        if self.first_frame <= frame <= self.last_frame:
            return self.boxes[frame - self.first_frame]
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (boxes as lists)."""
        return {
            "person": self.person,
            "photo": self.photo,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "boxes": [list(box) for box in self.boxes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Appearance:
        """Reads :meth:`to_json`'s output."""
        return cls(
            person=int(data["person"]),
            photo=str(data["photo"]),
            first_frame=int(data["first_frame"]),
            last_frame=int(data["last_frame"]),
            boxes=tuple(_as_box(b) for b in data["boxes"]),
        )


@dataclass(frozen=True)
class DemoTruth:
    """What a demo video shows, frame by frame.

    Attributes:
        frames: Number of frames in the video.
        fps: Frames per second.
        size: ``(width, height)`` of the frames.
        appearances: Every pass of a person, by first frame (then person).

    Raises:
        ValueError: A count or size is not positive, or an appearance lies outside
            the video.
    """

    frames: int
    fps: float
    size: tuple[int, int]
    appearances: tuple[Appearance, ...]

    def __post_init__(self) -> None:
        if self.frames < 1 or not self.fps > 0:
            raise ValueError("frames and fps must be positive")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (width, height), got {self.size}")
        for appearance in self.appearances:
            if appearance.last_frame >= self.frames:
                raise ValueError(
                    f"an appearance ends at frame {appearance.last_frame}, after "
                    f"the last frame {self.frames - 1}"
                )

    def boxes_at(self, frame: int) -> list[tuple[int, Box]]:
        """``(person, box)`` of every face shown in ``frame``."""
        out = []
        for appearance in self.appearances:
            box = appearance.box_at(frame)
            if box is not None:
                out.append((appearance.person, box))
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "frames": self.frames,
            "fps": self.fps,
            "size": list(self.size),
            "appearances": [a.to_json() for a in self.appearances],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DemoTruth:
        """Reads :meth:`to_json`'s output."""
        width, height = data["size"]
        return cls(
            frames=int(data["frames"]),
            fps=float(data["fps"]),
            size=(int(width), int(height)),
            appearances=tuple(Appearance.from_json(a) for a in data["appearances"]),
        )


class DemoPeople(NamedTuple):
    """People chosen by :func:`pick_people` (a tuple: ``enrol, probe, unknown``).

    Attributes:
        enrol: Per enrolled identity, the photos to enrol.
        probe: Per enrolled identity, other photos, for the video.
        unknown: Photos of people who are not enrolled, one per person.
    """

    enrol: dict[str, list[Path]]
    probe: dict[str, list[Path]]
    unknown: list[Path]


def pick_people(
    data_dir: str | os.PathLike[str], enrolled: int, unknown: int, seed: int = 0
) -> DemoPeople:
    """Chooses people to enrol and people to leave off the watchlist.

    Identities with at least two photos are drawn from ``data_dir/identities``;
    each one's photos are shuffled and split: half (rounded down, at least one)
    for the video (``probe``), the rest for enrolment. ``unknown`` photos are
    drawn from ``data_dir/unknowns``. Names and photos are sorted before drawing,
    so the choice depends only on the files and ``seed``.

    Args:
        data_dir: An LFW-style folder (``lfw-dev``).
        enrolled: How many identities to enrol.
        unknown: How many people not to enrol.
        seed: Seed of the random choice.

    Returns:
        ``(enrol, probe, unknown)`` (:class:`DemoPeople`); ``enrol`` and ``probe``
        have the same keys, in the order drawn.

    Raises:
        ValueError: A count is negative, or the folder has too few people.
    """
    if enrolled < 0 or unknown < 0:
        raise ValueError("enrolled and unknown must not be negative")
    root = Path(data_dir)
    rng = np.random.default_rng(seed)
    folders = (
        sorted(p for p in (root / "identities").iterdir() if p.is_dir())
        if (root / "identities").is_dir()
        else []
    )
    candidates = [
        (folder.name, photos)
        for folder in folders
        if len(photos := sorted(folder.glob("*.jpg"))) >= 2
    ]
    if len(candidates) < enrolled:
        raise ValueError(
            f"{root / 'identities'} has {len(candidates)} people with two or more "
            f"photos; {enrolled} asked for"
        )
    enrol: dict[str, list[Path]] = {}
    probe: dict[str, list[Path]] = {}
    for index in rng.permutation(len(candidates))[:enrolled]:
        name, photos = candidates[int(index)]
        order = [photos[int(i)] for i in rng.permutation(len(photos))]
        split = max(1, len(order) // 2)
        probe[name] = sorted(order[:split])
        enrol[name] = sorted(order[split:])
    strangers = (
        sorted((root / "unknowns").glob("*.jpg"))
        if (root / "unknowns").is_dir()
        else []
    )
    if len(strangers) < unknown:
        raise ValueError(
            f"{root / 'unknowns'} has {len(strangers)} photos; {unknown} asked for"
        )
    chosen = [strangers[int(i)] for i in rng.permutation(len(strangers))[:unknown]]
    return DemoPeople(enrol, probe, chosen)


def compose_video(
    people: Sequence[Sequence[str | os.PathLike[str]]],
    out: str | os.PathLike[str],
    *,
    size: tuple[int, int] = (1280, 720),
    fps: float = 10,
    seconds_per_person: float = 2.0,
    per_frame: tuple[int, int] = (1, 3),
    face_widths: tuple[int, int] = (80, 220),
    seed: int = 0,
    codec: str = "MJPG",
) -> DemoTruth:
    """Writes a video of people crossing a textured background; returns its truth.

    Each person appears once, as a track, in an order drawn at random: their face
    (from one of their photos, drawn at random) moves in a straight line across
    the frame for about ``seconds_per_person`` (75% to 125% of it), its width
    changing smoothly between two values drawn from ``face_widths`` as if walking
    nearer or away. A new person comes in whenever fewer than ``per_frame[0]``
    are shown and, now and then, while fewer than ``per_frame[1]`` are, as long
    as their path keeps clear of everyone shown with them: faces never overlap,
    and each stays wholly inside the frame. The background has no faces.

    Args:
        people: Per person, the photos to draw them from (LFW-style: the face in
            the middle; other sizes than 250x250 are scaled).
        out: The video file to write (replaced if it exists); ``.avi`` for MJPG.
        size: ``(width, height)`` of the frames.
        fps: Frames per second.
        seconds_per_person: Mean time a person is shown.
        per_frame: The fewest and most people shown at once (the fewest is
            reached whenever people are left to show).
        face_widths: Narrowest and widest face, in pixels.
        seed: Seed of every random choice: the same arguments give the same
            video and truth.
        codec: FourCC of the video codec.

    Returns:
        The ground truth of the video written.

    Raises:
        ValueError: An argument is out of range, a photo cannot be read, the
            faces do not fit in the frame, or the video cannot be written or
            does not read back with every frame.
    """
    width, height = (int(v) for v in size)
    low, high = (int(v) for v in per_frame)
    narrow, wide = (int(v) for v in face_widths)
    if width < 64 or height < 64:
        raise ValueError(f"size must be at least 64x64, got {size}")
    if not fps > 0 or not seconds_per_person > 0:
        raise ValueError("fps and seconds_per_person must be positive")
    if not 0 <= low <= high or high < 1:
        raise ValueError(
            f"per_frame must be (low, high), 0 <= low <= high, got {per_frame}"
        )
    if not 8 <= narrow <= wide:
        raise ValueError(
            f"face_widths must be (narrow, wide), 8 <= narrow <= wide: {face_widths}"
        )
    if len(codec) != 4:
        raise ValueError(f"codec must be a FourCC (four characters), got {codec!r}")
    if any(len(photos) == 0 for photos in people):
        raise ValueError("every person needs at least one photo")
    face_w = PHOTO_FACE[2] - PHOTO_FACE[0]
    crop_w, crop_h = PHOTO_CROP[2] - PHOTO_CROP[0], PHOTO_CROP[3] - PHOTO_CROP[1]
    if crop_w * wide / face_w > width - 2 or crop_h * wide / face_w > height - 2:
        raise ValueError(
            f"faces {wide} pixels wide do not fit in a {width}x{height} frame"
        )

    rng = np.random.default_rng(seed)
    chosen = [Path(os.fspath(ps[int(rng.integers(len(ps)))])) for ps in people]
    order = [int(i) for i in rng.permutation(len(people))]
    plans = _schedule(
        order,
        rng,
        frame=(width, height),
        length=seconds_per_person * fps,
        per_frame=(low, high),
        widths=(narrow, wide),
    )
    crops = {person: _read_crop(chosen[person]) for person in set(order)}
    background = _background(width, height, rng)
    frames = max((p.first + p.length for p in plans), default=1)

    out_path = Path(os.fspath(out))
    # A video of faces: created 0600 before OpenCV opens it (it keeps the mode).
    os.close(os.open(out_path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    out_path.chmod(0o600)
    writer = cv2.VideoWriter(
        str(out_path), cv2.VideoWriter.fourcc(*codec), float(fps), (width, height)
    )
    if not writer.isOpened():
        raise ValueError(f"cannot write a {codec} video to {out_path}")
    try:
        for index in range(frames):
            frame = background.copy()
            for plan in plans:
                k = index - plan.first
                if 0 <= k < plan.length:
                    _draw(frame, crops[plan.person], plan.placement(k))
            writer.write(frame)
    finally:
        writer.release()
    _check_readback(out_path, frames)

    appearances = tuple(
        Appearance(
            person=plan.person,
            photo=str(chosen[plan.person]),
            first_frame=plan.first,
            last_frame=plan.first + plan.length - 1,
            boxes=tuple(plan.placement(k).face for k in range(plan.length)),
        )
        for plan in sorted(plans, key=lambda p: (p.first, p.person))
    )
    return DemoTruth(frames, float(fps), (width, height), appearances)


# -- planning --------------------------------------------------------------------------


class _Placement(NamedTuple):
    """Where a face is drawn in one frame: the patch and the face box in it."""

    x: int  # patch left
    y: int  # patch top
    w: int  # patch width
    h: int  # patch height
    face: Box


@dataclass(frozen=True)
class _Plan:
    """One person's straight path: face centre and width, linear over the frames."""

    person: int
    first: int
    length: int
    start: tuple[float, float, float]  # face centre x, y and face width
    end: tuple[float, float, float]

    def placement(self, k: int) -> _Placement:
        u = k / (self.length - 1) if self.length > 1 else 0.0
        cx, cy, fw = (a + (b - a) * u for a, b in zip(self.start, self.end))
        return _place(cx, cy, fw)


def _place(cx: float, cy: float, face_width: float) -> _Placement:
    """The patch that shows a face ``face_width`` wide centred on ``(cx, cy)``."""
    scale = face_width / (PHOTO_FACE[2] - PHOTO_FACE[0])
    w = round((PHOTO_CROP[2] - PHOTO_CROP[0]) * scale)
    h = round((PHOTO_CROP[3] - PHOTO_CROP[1]) * scale)
    # The face box relative to the crop, in the patch's own (rounded) scale.
    sx = w / (PHOTO_CROP[2] - PHOTO_CROP[0])
    sy = h / (PHOTO_CROP[3] - PHOTO_CROP[1])
    fx1, fx2 = ((v - PHOTO_CROP[0]) * sx for v in (PHOTO_FACE[0], PHOTO_FACE[2]))
    fy1, fy2 = ((v - PHOTO_CROP[1]) * sy for v in (PHOTO_FACE[1], PHOTO_FACE[3]))
    x = round(cx - (fx1 + fx2) / 2)
    y = round(cy - (fy1 + fy2) / 2)
    face = (
        round(x + fx1, 2),
        round(y + fy1, 2),
        round(x + fx2, 2),
        round(y + fy2, 2),
    )
    return _Placement(x, y, w, h, face)


def _centre_range(
    face_width: float, frame: tuple[int, int]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The face centres that keep its patch inside the frame (one pixel spare)."""
    probe = _place(0.0, 0.0, face_width)
    left, top = -probe.x + 1, -probe.y + 1
    right = frame[0] - (probe.x + probe.w) - 1
    bottom = frame[1] - (probe.y + probe.h) - 1
    return (left, max(left, right)), (top, max(top, bottom))


def _schedule(
    order: list[int],
    rng: np.random.Generator,
    *,
    frame: tuple[int, int],
    length: float,
    per_frame: tuple[int, int],
    widths: tuple[int, int],
) -> list[_Plan]:
    """When and where each person crosses; nobody overlaps anybody."""
    low, high = per_frame
    pending = list(order)
    plans: list[_Plan] = []
    t = 0
    while pending:
        shown = [p for p in plans if p.first <= t < p.first + p.length]
        while pending and (
            len(shown) < low or (len(shown) < high and rng.random() < 0.12)
        ):
            plan = _fit(pending[0], t, rng, shown, frame, length, widths)
            if plan is None:
                break
            plans.append(plan)
            shown.append(plan)
            pending.pop(0)
        t += 1
    return plans


def _fit(
    person: int,
    first: int,
    rng: np.random.Generator,
    shown: list[_Plan],
    frame: tuple[int, int],
    length: float,
    widths: tuple[int, int],
    tries: int = 40,
) -> _Plan | None:
    """A path for ``person`` from frame ``first`` clear of ``shown``, if found."""
    frames = max(2, round(length * rng.uniform(0.75, 1.25)))
    for _ in range(tries):
        w0 = rng.uniform(widths[0], widths[1])
        w1 = float(np.clip(w0 * rng.uniform(0.8, 1.25), widths[0], widths[1]))
        (x0a, x0b), (y0a, y0b) = _centre_range(w0, frame)
        (x1a, x1b), (y1a, y1b) = _centre_range(w1, frame)
        x0, y0 = rng.uniform(x0a, x0b), rng.uniform(y0a, y0b)
        step = rng.uniform(0.15, 0.45) * frame[0] * rng.choice([-1.0, 1.0])
        if not x1a <= x0 + step <= x1b:
            step = -step
        x1 = float(np.clip(x0 + step, x1a, x1b))
        y1 = float(np.clip(y0 + rng.uniform(-0.08, 0.08) * frame[1], y1a, y1b))
        plan = _Plan(person, first, frames, (x0, y0, w0), (x1, y1, w1))
        if all(_clear(plan, other) for other in shown):
            return plan
    return None


def _clear(a: _Plan, b: _Plan) -> bool:
    """Whether the two paths' patches stay apart in every frame they share."""
    start = max(a.first, b.first)
    stop = min(a.first + a.length, b.first + b.length)
    for t in range(start, stop):
        pa, pb = a.placement(t - a.first), b.placement(t - b.first)
        if (
            pa.x < pb.x + pb.w + _MARGIN
            and pb.x < pa.x + pa.w + _MARGIN
            and pa.y < pb.y + pb.h + _MARGIN
            and pb.y < pa.y + pa.h + _MARGIN
        ):
            return False
    return True


# -- drawing ---------------------------------------------------------------------------


def _read_crop(path: Path) -> U8:
    """The region of :data:`PHOTO_CROP` (scaled to the photo's size) of a photo."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read the photo {path}")
    h, w = image.shape[:2]
    x1, y1, x2, y2 = PHOTO_CROP
    sx, sy = w / PHOTO_SIDE, h / PHOTO_SIDE
    region = image[round(y1 * sy) : round(y2 * sy), round(x1 * sx) : round(x2 * sx)]
    if region.size == 0:
        raise ValueError(f"the photo {path} is too small ({w}x{h})")
    return np.ascontiguousarray(region, dtype=np.uint8)


def _mask(w: int, h: int) -> F32:
    """A feathered ellipse filling a ``w`` x ``h`` patch: 1 inside, 0 outside."""
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    r = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    alpha = np.clip((1 - r) / _FEATHER, 0, 1)
    return np.asarray(alpha * alpha * (3 - 2 * alpha), np.float32)  # smoothstep


def _draw(frame: U8, crop: U8, at: _Placement) -> None:
    """Blends the crop, scaled to the placement's patch, into ``frame``."""
    shrink = at.w < crop.shape[1]
    patch = cv2.resize(
        crop, (at.w, at.h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )
    alpha = _mask(at.w, at.h)[:, :, None]
    region = frame[at.y : at.y + at.h, at.x : at.x + at.w]
    blended = region * (1 - alpha) + patch.astype(np.float32) * alpha
    region[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _background(width: int, height: int, rng: np.random.Generator) -> U8:
    """A muted, cluttered scene: shade, blocks, lines and grain; no faces."""
    base = np.empty((height, width, 3), np.float32)
    base[...] = rng.uniform(100, 140) + rng.uniform(-8, 8, 3)
    # Soft shade at a few scales (walls, light and shadow), slightly tinted.
    for cell, amplitude in ((160, 26.0), (40, 12.0), (10, 5.0)):
        shape = (height // cell + 2, width // cell + 2)
        grey = rng.normal(0, amplitude, (*shape, 1))
        tint = rng.normal(0, amplitude / 6, (*shape, 3))
        grid = (grey + tint).astype(np.float32)
        base += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(base, 0, 255).astype(np.uint8)

    def muted() -> tuple[int, int, int]:
        grey = rng.uniform(50, 200)
        b, g, r = (float(np.clip(grey + t, 0, 255)) for t in rng.uniform(-18, 18, 3))
        return (int(b), int(g), int(r))

    # Blocks and lines (windows, signs, railings).
    for _ in range(40):
        x, y = int(rng.integers(width)), int(rng.integers(height))
        w, h = int(rng.integers(20, 240)), int(rng.integers(10, 160))
        thickness = -1 if rng.random() < 0.5 else int(rng.integers(1, 5))
        cv2.rectangle(image, (x, y), (x + w, y + h), muted(), thickness)
    for _ in range(25):
        p1 = (int(rng.integers(width)), int(rng.integers(height)))
        p2 = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.line(image, p1, p2, muted(), int(rng.integers(1, 4)), cv2.LINE_AA)
    blurred = cv2.GaussianBlur(image, (0, 0), 1.2).astype(np.float32)
    grain = rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    return np.asarray(np.clip(blurred + grain, 0, 255), np.uint8)


def _check_readback(path: Path, frames: int) -> None:
    """Raises ValueError unless the video reads back with ``frames`` frames."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"the video {path} cannot be read back")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    if count != frames:
        raise ValueError(
            f"the video {path} reads back with {count} frames, not {frames}"
        )


def _as_box(value: Sequence[Any]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in value)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box {value} is not finite")
    return (x1, y1, x2, y2)
