"""One locked-memory budget for a whole deployment, known before anything is locked.

Every buffer that holds a face, a template or a key is ``mlock``-ed
(:class:`lfr.SecureBuffer`, the matcher's secure matrix), and the kernel counts
them, in whole pages, against ``RLIMIT_MEMLOCK`` (8 MiB by default on Debian for
a user without ``CAP_IPC_LOCK``). Without a budget, each allocation that fails
reports only its own size, and an operator raises the limit once per error.

:func:`deployment_budget` adds up, from a deployment's configuration alone, every
locked allocation it makes, in pages, at its peak:

- the frame pool of the source (``pool_size`` buffers of the largest frame; a
  folder of differently sized images also the pool it replaces),
- the detector's scaled image and input tensor, the embedder's chips, input
  tensor and outputs, and the frame step's batch of embeddings,
- the scratch one face needs while it is aligned and its sharpness measured,
- the alert crops waiting for the alert writer (its queue, the one it writes and
  the one being handed over; each at most a frame),
- the watchlist's templates and the matcher's secure matrix (and, while the
  watchlist is opened or its expired templates dropped, the transient copies),
- the keys (one page each), and the preview's buffers where there is one.

:class:`MemlockBudget` gives the figure in the three forms operators set it
(systemd ``LimitMEMLOCK=``, ``ulimit -l`` in KiB, ``docker run --ulimit memlock=``
in bytes), and :meth:`MemlockBudget.check` compares it with
:func:`lfr.memory_status` and raises one :class:`~lfr.errors.MemlockBudgetError`
naming all three. ``lfr run --print-memlock`` prints it;
:meth:`lfr.Deployment.memlock_budget` computes it for a deployment, and
:meth:`lfr.Deployment.start` checks it first.

The figure is an upper bound for a process that runs one deployment (``lfr run``);
a process that locks memory for other work too needs that on top.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lfr.errors import MemlockBudgetError
from lfr.secure import MemoryReport, memory_status

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_FRAME_SIZE",
    "KEY_PAGES",
    "MemlockBudget",
    "MemlockItem",
    "deployment_budget",
    "detector_bytes",
    "embedder_bytes",
    "for_deployment",
    "matcher_bytes",
    "pages",
    "source_frame_sizes",
]

#: ``(width, height)`` assumed for a camera, a stream or an iterable of frames,
#: whose frame size is not known before it delivers its first frame.
DEFAULT_FRAME_SIZE = (1920, 1080)
#: Pages held for keys: the watchlist and store keys, the data keys unwrapped
#: for the watchlist and each alert in turn, the audit signing key, and spares.
KEY_PAGES = 8
#: Side of the chip the quality gate measures sharpness on (lfr.quality).
_SHARP_CHIP = 112
#: Rows per panel of the matcher's matrix (rust/matching/store.rs, ``LANES``).
_LANES = 16
#: Detector input sides are padded to a multiple of this (lfr.detect).
_DIVISOR = 32


def pages(nbytes: int) -> int:
    """Bytes locked for one buffer of ``nbytes``: whole pages, at least one."""
    page = mmap.PAGESIZE
    return max(1, math.ceil(max(1, int(nbytes)) / page)) * page


@dataclass(frozen=True)
class MemlockItem:
    """One part of a budget.

    Attributes:
        name: What it is (no data, only a description).
        nbytes: Locked bytes (whole pages).
    """

    name: str
    nbytes: int


@dataclass(frozen=True)
class MemlockBudget:
    """The locked memory a deployment needs at its peak, and how to allow it.

    Attributes:
        items: The parts, each in whole pages.
        assumptions: What the figure assumes where it could not know (for
            example the frame size of a camera).
    """

    items: tuple[MemlockItem, ...]
    assumptions: tuple[str, ...] = ()

    @property
    def required(self) -> int:
        """The figure in bytes (a whole number of KiB)."""
        total = sum(item.nbytes for item in self.items)
        return math.ceil(total / 1024) * 1024

    @property
    def kib(self) -> int:
        """The figure in KiB, as ``ulimit -l`` takes it."""
        return self.required // 1024

    @property
    def systemd(self) -> str:
        """The systemd unit setting (``K`` is 1024 bytes there)."""
        return f"LimitMEMLOCK={self.kib}K"

    @property
    def ulimit(self) -> str:
        """The shell command (``ulimit -l`` counts KiB)."""
        return f"ulimit -l {self.kib}"

    @property
    def docker(self) -> str:
        """The ``docker run`` option (bytes, soft:hard)."""
        return f"--ulimit memlock={self.required}:{self.required}"

    def fits(self, report: MemoryReport | None = None) -> bool:
        """Whether the process may lock :attr:`required` bytes.

        True with ``CAP_IPC_LOCK`` or an unlimited ``RLIMIT_MEMLOCK``.
        """
        report = memory_status() if report is None else report
        if report.memlock_privileged or report.memlock_limit is None:
            return True
        return report.memlock_limit >= self.required

    def check(self, report: MemoryReport | None = None) -> None:
        """Raises unless the locked-memory limit covers the whole budget.

        Args:
            report: The process's memory settings (default: :func:`memory_status`).

        Raises:
            MemlockBudgetError: ``RLIMIT_MEMLOCK`` is below :attr:`required` and
                the process lacks ``CAP_IPC_LOCK``; the message gives the figure
                for systemd, ``ulimit -l`` and docker.
        """
        report = memory_status() if report is None else report
        if self.fits(report):
            return
        limit = report.memlock_limit or 0
        raise MemlockBudgetError(
            f"this deployment locks up to {_size(self.required)} of memory for "
            f"faces, templates and keys, and RLIMIT_MEMLOCK is {_size(limit)}. "
            f"Set the limit to {self.required} bytes before starting it: "
            f"systemd `{self.systemd}`, shell `{self.ulimit}` (KiB), "
            f"`docker run {self.docker}` (bytes), or `memlock {self.kib}` in "
            "/etc/security/limits.conf (`lfr run --print-memlock` lists the parts)",
            required=self.required,
            limit=limit,
        )

    def describe(self) -> str:
        """The parts, the figure and the three settings, one per line."""
        width = max((len(i.name) for i in self.items), default=0)
        lines = [f"{i.name:<{width}}  {i.nbytes:>12} bytes" for i in self.items]
        lines += [
            f"{'total':<{width}}  {self.required:>12} bytes ({_size(self.required)})",
            f"systemd: {self.systemd}",
            f"shell:   {self.ulimit}",
            f"docker:  docker run {self.docker}",
        ]
        lines += [f"assumed: {a}" for a in self.assumptions]
        return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def detector_bytes(working_size: int = 960) -> int:
    """Locked bytes of a :class:`lfr.FaceDetector` (scaled image, input tensor)."""
    padded = math.ceil(working_size / _DIVISOR) * _DIVISOR
    return pages(working_size * working_size * 3) + pages(3 * padded * padded * 4)


def embedder_bytes(size: int = 150, dim: int = 128, slots: int = 16) -> int:
    """Locked bytes of a :class:`lfr.FaceEmbedder` (chips, tensor, outputs).

    ``slots`` is its batch times 2 where it also embeds the mirror image
    (``flip``; lfr's own models do).
    """
    return (
        pages(slots * size * size * 3)
        + pages(slots * 3 * size * size * 4)
        + pages(slots * dim * 4)
    )


def matcher_bytes(rows: int, dim: int, dtype: str = "f32", rerank: bool = True) -> int:
    """Locked bytes of a secure :class:`lfr.Matcher` built with ``rows`` at once.

    Panels of 16 rows (64-byte aligned), per-row scales for ``"i8"``, and for
    ``"f16"``/``"i8"`` with ``rerank`` the exact float32 copy.
    """
    if rows <= 0:
        return 0
    esize = {"f32": 4, "f16": 2, "i8": 1}[dtype]
    panels = math.ceil(rows / _LANES)
    stride = math.ceil(dim * _LANES * esize / 64) * 64
    total = pages(panels * stride)
    if dtype == "i8":
        total += pages(panels * _LANES * 4)
    if rerank and dtype != "f32":
        total += pages(math.ceil(rows * dim * 4 / 64) * 64)
    return total


def source_frame_sizes(spec: object) -> tuple[list[tuple[int, int]], str | None]:
    """The frame sizes a source will deliver, read without decoding a frame.

    A folder: each image's size from its header (the folder source's own
    header reader, which bounds it as the source does). A video file: the size
    its container declares (OpenCV). Anything else (a camera, a stream, frames in
    memory): unknown.

    Returns:
        ``([(width, height), ...], None)``, or ``([], reason)`` when unknown.
    """
    if isinstance(spec, (bool, int)) or not isinstance(spec, (str, os.PathLike)):
        return [], "the frame size of a camera or of frames in memory is not known"
    text = os.fspath(spec)
    if "://" in text or text.strip().isdigit():
        return [], "the frame size of a camera or stream is not known in advance"
    path = Path(text)
    try:
        mode = path.stat().st_mode
    except OSError:
        return [], f"{path} cannot be read"
    if stat.S_ISDIR(mode):
        return _folder_sizes(path)
    if stat.S_ISCHR(mode):
        return [], "the frame size of a camera is not known in advance"
    return _video_size(path)


def _folder_sizes(folder: Path) -> tuple[list[tuple[int, int]], str | None]:
    from lfr.sources._images import IMAGE_SUFFIXES
    from lfr.sources._stills import UnusableImageError, read_size

    sizes: set[tuple[int, int]] = set()
    for p in folder.iterdir():
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            h, w = read_size(p)  # the header only, bounded as the source bounds it
        except UnusableImageError:  # the source skips it too
            continue
        sizes.add((w, h))
    if not sizes:
        return [], f"no image header could be read in {folder}"
    return sorted(sizes, key=lambda s: s[0] * s[1], reverse=True), None


def _video_size(path: Path) -> tuple[list[tuple[int, int]], str | None]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return [], f"{path} does not open as a video"
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if w <= 0 or h <= 0:
        return [], f"{path} declares no frame size"
    return [(w, h)], None


def deployment_budget(
    *,
    frame_sizes: list[tuple[int, int]],
    watchlist_rows: int,
    watchlist_dim: int,
    watchlist_plain_bytes: int = 0,
    pool_size: int = 4,
    detector_working_size: int | None = 960,
    embedder: tuple[int, int, int] | None = (150, 128, 16),
    matcher_dtype: str = "f32",
    preview: bool = False,
    assumptions: tuple[str, ...] = (),
) -> MemlockBudget:
    """The budget of one deployment, from its configuration alone.

    Args:
        frame_sizes: ``(width, height)`` of the frames the source delivers,
            largest first (:func:`source_frame_sizes`).
        watchlist_rows: Templates on the watchlist.
        watchlist_dim: Their dimension.
        watchlist_plain_bytes: The decrypted payload's size while the file is
            opened (0 when the watchlist is open already).
        pool_size: The source's frame pool.
        detector_working_size: The detector's ``working_size``; None for a
            detector that locks nothing lfr knows of.
        embedder: ``(size, dim, slots)`` of the embedder
            (:func:`embedder_bytes`); None for one that locks nothing lfr knows of.
        matcher_dtype: The matcher's precision.
        preview: A preview renders each frame.
        assumptions: Shown with the figure.

    Returns:
        The budget; :attr:`MemlockBudget.required` is the figure.
    """
    from lfr.pipeline.frame_step import BATCH
    from lfr.pipeline.writer import CAPACITY

    if not frame_sizes:
        raise ValueError("at least one frame size is needed")
    areas = sorted({w * h for w, h in frame_sizes}, reverse=True)
    frame = pages(areas[0] * 3)
    dim = watchlist_dim
    items = [MemlockItem(f"keys ({KEY_PAGES} pages)", KEY_PAGES * pages(1))]
    if embedder is not None:
        size, edim, slots = embedder
        items.append(MemlockItem("embedder buffers", embedder_bytes(size, edim, slots)))
        dim = edim
    templates = pages(watchlist_rows * watchlist_dim * 4)
    items.append(MemlockItem("watchlist templates", templates))
    if detector_working_size is not None:
        items.append(
            MemlockItem("detector buffers", detector_bytes(detector_working_size))
        )
    items.append(
        MemlockItem(
            "matcher matrix",
            matcher_bytes(watchlist_rows, watchlist_dim, matcher_dtype),
        )
    )
    items.append(MemlockItem("frame step embeddings", pages(BATCH * dim * 4)))
    items.append(MemlockItem(f"frame pool ({pool_size} frames)", pool_size * frame))
    if len(areas) > 1:
        items.append(
            MemlockItem(
                f"frame pool it replaces ({pool_size} smaller frames)",
                pool_size * pages(areas[1] * 3),
            )
        )
    n = _SHARP_CHIP * _SHARP_CHIP
    items.append(MemlockItem("alignment and sharpness scratch", frame + pages(n * 8)))
    items.append(
        MemlockItem(f"alert crops in flight ({CAPACITY + 2})", (CAPACITY + 2) * frame)
    )
    if preview:
        from lfr.preview.render import SCENE_SCRATCH_BYTES

        # The rendered frame, a PreviewFeed's slot and shown frame, the blur scratch.
        items.append(
            MemlockItem("preview buffers", 3 * frame + pages(SCENE_SCRATCH_BYTES))
        )
    running = sum(i.nbytes for i in items)
    # Before the run: the file's payload beside the templates while opening, and a
    # second copy of the templates while expired ones are dropped.
    fixed = KEY_PAGES * pages(1) + (
        embedder_bytes(*embedder) if embedder is not None else 0
    )
    opening = fixed + templates + max(pages(watchlist_plain_bytes), templates)
    if detector_working_size is not None:
        opening += detector_bytes(detector_working_size)
    if opening > running:
        items.append(MemlockItem("opening the watchlist (peak)", opening - running))
    return MemlockBudget(tuple(items), assumptions)


#: ``(size, dim, slots)`` of ``FaceEmbedder()``: lfr's dlib models take 150 px
#: chips, give 128 values, and embed each face and its mirror image, 8 at a time.
DEFAULT_EMBEDDER = (150, 128, 16)


def for_deployment(
    *,
    source: object,
    watchlist_rows: int,
    watchlist_dim: int,
    watchlist_plain_bytes: int = 0,
    detector: object = None,
    embedder: object = None,
    preview: bool = False,
    frame_size: tuple[int, int] | None = None,
    pool_size: int = 4,
) -> MemlockBudget:
    """The budget of a deployment as :class:`lfr.Deployment` or ``lfr run`` makes it.

    Args:
        source: What the deployment reads (a path is measured from its headers).
        watchlist_rows: Templates on the watchlist.
        watchlist_dim: Their dimension.
        watchlist_plain_bytes: The decrypted payload while the file is opened (0
            when it is open already).
        detector: None for ``FaceDetector()``, a :class:`lfr.FaceDetector`, or
            another detector (whose own locked memory is not counted).
        embedder: As ``detector``, for the embedder.
        preview: Whether a preview renders each frame.
        frame_size: ``(width, height)`` of the largest frame, where the source
            cannot tell (cameras, streams, frames in memory).
        pool_size: The source's frame pool.

    Returns:
        The budget.
    """
    from lfr.detect import FaceDetector
    from lfr.embed import FaceEmbedder

    assumptions: list[str] = []
    if frame_size is not None:
        sizes = [(int(frame_size[0]), int(frame_size[1]))]
    else:
        sizes, why = source_frame_sizes(source)
        pool = getattr(source, "pool", None)
        if not sizes and pool is not None:
            sizes, why = [(pool.nbytes // 3, 1)], None
        if not sizes:
            sizes = [DEFAULT_FRAME_SIZE]
            w, h = DEFAULT_FRAME_SIZE
            assumptions.append(
                f"frames of at most {w}x{h} ({why}; give the largest frame size "
                "with --frame-size WxH or frame_size=)"
            )
    working: int | None = 960
    if isinstance(detector, FaceDetector):
        working = detector.working_size
    elif detector is not None:
        working = None
        assumptions.append("the custom detector's own locked memory is not counted")
    shape: tuple[int, int, int] | None = DEFAULT_EMBEDDER
    if isinstance(embedder, FaceEmbedder):
        shape = (
            embedder.size,
            embedder.dim,
            embedder.batch * (2 if embedder.flip else 1),
        )
    elif embedder is not None:
        shape = None
        assumptions.append("the custom embedder's own locked memory is not counted")
    return deployment_budget(
        frame_sizes=sizes,
        watchlist_rows=watchlist_rows,
        watchlist_dim=watchlist_dim,
        watchlist_plain_bytes=watchlist_plain_bytes,
        pool_size=pool_size,
        detector_working_size=working,
        embedder=shape,
        preview=preview,
        assumptions=tuple(assumptions),
    )
