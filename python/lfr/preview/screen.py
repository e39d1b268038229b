"""The pipeline's operator preview: render each frame blurred, hand it to sinks.

:class:`Preview` is the :class:`lfr.protocols.Renderer` a
:class:`~lfr.pipeline.Deployment` calls once per processed frame. It renders the
frame with :func:`~lfr.preview.render_preview` (the whole frame blurred, matched
faces sharp) into a :class:`~lfr.secure.SecureBuffer` and hands that picture to
its sinks: a callback (``on_frame``; :class:`PreviewFeed` is one a screen can
iterate over) and, only where the operator chose to record, a
:class:`~lfr.preview.PreviewRecorder` that encrypts it with the store key. By
default nothing is written to any file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from lfr._closing import Closing
from lfr.align import check_frame
from lfr.preview.recording import PreviewRecorder
from lfr.preview.render import SCENE_SCRATCH_BYTES, _check_faces, _render_scene
from lfr.secure import SecureBuffer

__all__ = ["Preview", "PreviewFeed"]

U8 = npt.NDArray[np.uint8]


class PreviewFeed(Closing):
    """An in-memory preview sink that a screen reads: the latest blurred frame.

    Pass it as :class:`Preview`'s ``on_frame``; a display thread iterates over
    :meth:`frames`. The feed keeps only the newest frame, in a
    :class:`~lfr.secure.SecureBuffer` (a frame the screen had no time for is
    overwritten and counted in :attr:`dropped`), and hands each one out as a
    read-only view of a second secure buffer, valid until the iterator moves on
    (then wiped). Nothing is written to disk.

    Args:
        allow_unlocked: Passed to the :class:`~lfr.secure.SecureBuffer` s.

    Examples:
        >>> import numpy as np
        >>> from lfr.preview import Preview, PreviewFeed
        >>> feed = PreviewFeed()
        >>> with Preview(on_frame=feed) as preview:
        ...     preview.render(np.full((48, 64, 3), 200, np.uint8), [], [])
        ...     shapes = [image.shape for image in feed.frames(timeout=0.1)]
        >>> shapes, feed.closed
        ([(48, 64, 3)], True)
    """

    def __init__(self, *, allow_unlocked: bool = False) -> None:
        self._allow_unlocked = allow_unlocked
        self._cond = threading.Condition()
        self._slot: SecureBuffer | None = None
        self._shown: SecureBuffer | None = None
        self._shape: tuple[int, ...] = ()
        self._fresh = False
        self._closed = False
        self._received = 0
        self._dropped = 0

    @property
    def received(self) -> int:
        """Frames handed to the feed."""
        return self._received

    @property
    def dropped(self) -> int:
        """Frames overwritten before a screen read them."""
        return self._dropped

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def __call__(self, image: U8) -> None:
        """Takes one rendered frame (a copy into the feed's secure buffer).

        Raises:
            RuntimeError: The feed is closed.
        """
        h, w = check_frame(image)
        with self._cond:
            if self._closed:
                raise RuntimeError("the preview feed is closed")
            shape = (h, w, 3)
            if self._slot is None or self._shape != shape:
                if self._slot is not None:
                    self._slot.discard()
                self._slot = SecureBuffer(
                    h * w * 3, allow_unlocked=self._allow_unlocked
                )
                self._shape = shape
            if self._fresh:
                self._dropped += 1
            view = self._slot.array(np.uint8, shape)
            try:
                np.copyto(view, image)
            finally:
                del view
            self._fresh = True
            self._received += 1
            self._cond.notify_all()

    def frames(self, timeout: float | None = None) -> Iterator[U8]:
        """The frames as they come, each a read-only view valid until the next.

        Args:
            timeout: End when no new frame came for this long (seconds);
                ``None`` waits until :meth:`close`.

        Yields:
            ``uint8[h, w, 3]`` BGR frames, every passer-by blurred; a screen
            that keeps one must copy it (the view reads as zeros afterwards).
        """
        while True:
            with self._cond:
                if not self._cond.wait_for(
                    lambda: self._fresh or self._closed, timeout
                ):
                    return
                if not self._fresh or self._slot is None:
                    return
                shape = self._shape
                if self._shown is None or len(self._shown) != len(self._slot):
                    if self._shown is not None:
                        self._shown.discard()
                    self._shown = SecureBuffer(
                        len(self._slot), allow_unlocked=self._allow_unlocked
                    )
                shown = self._shown
                view = shown.array(np.uint8, shape)
                source = self._slot.array(np.uint8, shape)
                np.copyto(view, source)
                del source
                self._slot.wipe()
                self._fresh = False
            view.flags.writeable = False
            try:
                yield view
            finally:
                del view
                with self._cond:
                    shown.wipe()

    def close(self) -> None:
        """Ends :meth:`frames` and wipes and frees the buffers; idempotent."""
        with self._cond:
            self._closed = True
            self._fresh = False
            for buffer in (self._slot, self._shown):
                if buffer is not None:
                    buffer.discard()
            self._slot = self._shown = None
            self._cond.notify_all()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"PreviewFeed({self._received} frames, {self._dropped} dropped, {state})"


class Preview(Closing):
    """The pipeline's operator preview: blur, then show and/or record each frame.

    :meth:`render` writes the frame with :func:`~lfr.preview.render_preview`
    (the whole frame blurred, every detected passer-by blurred again, matched
    faces sharp with their subject id) into a :class:`~lfr.secure.SecureBuffer`
    that the preview allocates once per frame size, passes it to ``on_frame``
    (when given) and to ``recorder`` (when given), and wipes the buffer before it
    returns, also on error.

    ``on_frame`` receives a **read-only view of that buffer**, valid only during
    the call: a callback that keeps the picture must copy it
    (:class:`PreviewFeed` does, into secure memory), and a reference kept without
    copying reads as zeros afterwards.

    There is **no unencrypted preview file**: recording happens only where a
    :class:`~lfr.preview.PreviewRecorder` is passed, which encrypts each frame
    with the alert store's key and is purged with the alerts.

    Thread-safe: :meth:`render` calls run one at a time. :meth:`close` closes
    the recorder and, where ``on_frame`` is a :class:`PreviewFeed`, the feed
    (which ends a screen's iteration).

    Args:
        on_frame: Called with each rendered ``uint8[h, w, 3]`` BGR frame.
        recorder: Records each rendered frame, encrypted, in the alert store's
            preview recordings; ``None`` (the default) records nothing.
        allow_unlocked: Passed to the :class:`~lfr.secure.SecureBuffer` s: run even
            where the memory cannot be locked. The default fails closed.

    Raises:
        ValueError: Neither ``on_frame`` nor ``recorder`` is given.
        TypeError: ``on_frame`` is not callable or ``recorder`` is not a
            :class:`~lfr.preview.PreviewRecorder`.

    Examples:
        >>> import numpy as np
        >>> from lfr.preview import Preview
        >>> shown = []
        >>> with Preview(on_frame=lambda image: shown.append(image.copy())) as preview:
        ...     frame = np.full((48, 64, 3), 200, np.uint8)
        ...     preview.render(frame, [[10, 10, 30, 40]], [False])
        >>> len(shown), shown[0].shape
        (1, (48, 64, 3))
    """

    def __init__(
        self,
        on_frame: Callable[[U8], None] | None = None,
        *,
        recorder: PreviewRecorder | None = None,
        allow_unlocked: bool = False,
    ) -> None:
        if on_frame is None and recorder is None:
            raise ValueError("a Preview needs an on_frame callback, a recorder or both")
        if on_frame is not None and not callable(on_frame):
            raise TypeError(f"on_frame must be callable, got {type(on_frame).__name__}")
        if recorder is not None and not isinstance(recorder, PreviewRecorder):
            raise TypeError(
                "recorder must be an lfr.preview.PreviewRecorder, got "
                f"{type(recorder).__name__}"
            )
        self._on_frame = on_frame
        self._recorder = recorder
        self._allow_unlocked = allow_unlocked
        self._buffer: SecureBuffer | None = None
        self._shape: tuple[int, int, int] | None = None
        self._scratch: SecureBuffer | None = None
        self._frames = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def recorder(self) -> PreviewRecorder | None:
        """The encrypted recording, or ``None``."""
        return self._recorder

    @property
    def frames(self) -> int:
        """Frames rendered so far."""
        return self._frames

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def buffers(self) -> tuple[SecureBuffer, ...]:
        """The secure buffers that hold the rendered frame during :meth:`render`.

        For audits and tests: outside a call they are all zeros.
        """
        return tuple(b for b in (self._buffer, self._scratch) if b is not None)

    def render(
        self,
        frame: U8,
        boxes: npt.ArrayLike,
        keep: npt.ArrayLike,
        labels: Sequence[str | None] | None = None,
    ) -> None:
        """Renders one frame and shows and/or records it.

        Args:
            frame: ``uint8[h, w, 3]`` BGR camera frame, any strides; read, never
                written.
            boxes: ``[n, 4]`` ``(x1, y1, x2, y2)`` face boxes in frame pixels.
            keep: ``bool[n]``: True for a face that matched (shown), False for
                every other face (blurred).
            labels: Optional subject id per box, drawn for kept faces only.

        Raises:
            TypeError: ``frame`` is not a uint8 array, ``keep`` is not boolean,
                or a label is not a string.
            ValueError: Shapes disagree or a box is not valid.
            RuntimeError: The preview is closed.
            Exception: Whatever ``on_frame`` or the recorder raises (the buffer
                is wiped first).
        """
        h, w = check_frame(frame)
        b, k = _check_faces(boxes, keep, labels)
        with self._lock:
            if self._closed:
                raise RuntimeError("the preview is closed")
            buffer = self._frame_buffer((h, w, 3))
            if self._scratch is None:
                self._scratch = SecureBuffer(
                    SCENE_SCRATCH_BYTES, allow_unlocked=self._allow_unlocked
                )
            image = buffer.array(np.uint8, (h, w, 3))
            try:
                _render_scene(frame, b, k, labels, image, self._scratch)
                shown = image.view()
                shown.flags.writeable = False
                try:
                    if self._recorder is not None:
                        self._recorder.write(shown)
                    if self._on_frame is not None:
                        self._on_frame(shown)
                finally:
                    del shown
            finally:
                del image
                buffer.wipe()
            self._frames += 1

    def _frame_buffer(self, shape: tuple[int, int, int]) -> SecureBuffer:
        if self._buffer is None or self._shape != shape:
            if self._buffer is not None:
                self._buffer.discard()
                self._buffer = None
            self._buffer = SecureBuffer(
                shape[0] * shape[1] * shape[2], allow_unlocked=self._allow_unlocked
            )
            self._shape = shape
        return self._buffer

    def close(self) -> None:
        """Ends the recording and the feed, and frees the buffers; idempotent."""
        with self._lock:
            self._closed = True
            try:
                if self._recorder is not None:
                    self._recorder.close()
                if isinstance(self._on_frame, PreviewFeed):
                    self._on_frame.close()
            finally:
                for buffer in (self._buffer, self._scratch):
                    if buffer is not None:
                        buffer.discard()
                self._buffer = None
                self._scratch = None

    def __repr__(self) -> str:
        where = "recording" if self._recorder is not None else "no recording"
        state = "closed" if self._closed else "open"
        return f"Preview({where}, {self._frames} frames, {state})"
