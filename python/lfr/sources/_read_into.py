"""Reading a capture straight into a pooled secure buffer, or failing loudly.

``VideoCapture.read(image=view)`` writes into ``view`` only when the frame has the
view's shape and type; otherwise OpenCV quietly allocates an ordinary array of its
own and returns that, so the face pixels end up outside secure memory.
:func:`read_into` checks where the frame landed and turns that case into a
:class:`~lfr.errors.CaptureMismatchError` (after zeroing OpenCV's array).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lfr.errors import CaptureMismatchError
from lfr.secure import secure_owner

__all__ = ["read_into"]


def read_into(capture: cv2.VideoCapture, frame: npt.NDArray[np.uint8]) -> bool:
    """Reads the next frame of ``capture`` into ``frame``, a secure buffer's view.

    Args:
        capture: An opened ``cv2.VideoCapture`` (camera, stream or file).
        frame: A ``uint8[h, w, 3]`` view of a :class:`~lfr.SecureBuffer` (e.g.
            ``buf.array(np.uint8, (h, w, 3))`` of a buffer leased from a
            :class:`~lfr.SecurePool`), with the capture's frame size.

    Returns:
        True when the frame was decoded into ``frame`` (checked: OpenCV returned
        ``frame`` itself); False when the capture had no frame (end of a file, a
        camera that stopped), leaving ``frame`` as it was.

    Raises:
        lfr.errors.CaptureMismatchError: The capture delivered a frame of another
            size, channel count or type than ``frame``: OpenCV decoded it into an
            array of its own, which is zeroed before this is raised. Size the pool
            from ``capture.get(cv2.CAP_PROP_FRAME_HEIGHT/WIDTH)``, or use
            :func:`lfr.sources.open_source`, which re-sizes its pool itself.
        TypeError: ``frame`` is not a writable, C-contiguous ``uint8[h, w, 3]``
            view of a :class:`~lfr.SecureBuffer`.

    Examples:
        >>> import cv2, numpy as np, lfr
        >>> from lfr.sources import read_into
        >>> capture = cv2.VideoCapture()  # not opened: no frame to read
        >>> pool = lfr.SecurePool(48 * 64 * 3, capacity=1)
        >>> with pool.lease() as buf:
        ...     frame = buf.array(np.uint8, (48, 64, 3))
        ...     print(read_into(capture, frame))
        ...     del frame
        False
    """
    _check_view(frame)
    ok, image = capture.read(image=frame)
    if not ok or image is None:
        return False
    got: npt.NDArray[Any] = np.asarray(image)
    if got.ctypes.data == frame.ctypes.data and got.shape == frame.shape:
        return True
    expected, shape = tuple(frame.shape), tuple(int(n) for n in got.shape)
    dtype = got.dtype
    got.fill(0)  # OpenCV's own array held the frame: zeroed before anything else
    del got, image
    raise CaptureMismatchError(
        f"the capture delivered a {dtype} frame of shape {shape}, the secure "
        f"buffer's view is uint8 {expected}: it did not land in secure memory "
        "(OpenCV's copy was zeroed). Size the pool to the capture's frames.",
        expected,
        shape,
    )


def _check_view(frame: object) -> None:
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy view, got {type(frame).__name__}")
    if (
        frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[2] != 3
        or not frame.flags.c_contiguous
        or not frame.flags.writeable
    ):
        raise TypeError(
            "frame must be a writable, C-contiguous uint8 (h, w, 3) view, got "
            f"{frame.dtype} {frame.shape}"
        )
    if secure_owner(frame) is None:
        raise TypeError(
            "frame must be a view of a lfr.SecureBuffer (buf.array(np.uint8, "
            "(h, w, 3))): an ordinary array would hold the face outside secure memory"
        )
