"""The operator preview: the live picture, every passer-by blurred.

Officers watching a live deployment see the camera's picture with a box and the
subject id around each face that matched the watchlist, and everything else
blurred. Parts:

- :mod:`lfr.preview.render`: :func:`render_preview` (the whole frame blurred,
  faces of stored alerts sharp: the picture :class:`Preview` shows) and
  :func:`blur_faces` (blurs given boxes only).
- :mod:`lfr.preview.screen`: :class:`Preview`, the pipeline's
  :class:`lfr.protocols.Renderer`, and :class:`PreviewFeed`, an in-memory sink a
  screen iterates over.
- :mod:`lfr.preview.recording`: :class:`PreviewRecorder`, the only way a preview
  reaches a file: encrypted with the alert store's key, purged with the alerts,
  read back only through an audited export.

Why the whole frame: the detector misses faces (small, turned, partly hidden);
a preview that blurs only detections shows those faces in the clear. Blurring
everything except the matched boxes makes "no passer-by shown unblurred" hold
whatever the detector missed (docs/data-handling.md names the test).
"""

from lfr.preview.recording import (
    PreviewRecorder,
    Recording,
    recordings,
    recordings_dir,
)
from lfr.preview.render import (
    BLOCKS,
    MARGIN,
    SCENE_BLOCKS,
    SCENE_MIN_BLOCK,
    blur_faces,
    blur_region,
    render_preview,
    scene_block,
    scene_blocks,
)
from lfr.preview.screen import Preview, PreviewFeed

__all__ = [
    "BLOCKS",
    "MARGIN",
    "SCENE_BLOCKS",
    "SCENE_MIN_BLOCK",
    "Preview",
    "PreviewFeed",
    "PreviewRecorder",
    "Recording",
    "blur_faces",
    "blur_region",
    "recordings",
    "recordings_dir",
    "render_preview",
    "scene_block",
    "scene_blocks",
]
