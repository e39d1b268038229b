"""Embedding: turning an aligned chip into the model's input tensor, in place.

(The embedder itself, :class:`FaceEmbedder`, arrives with the models.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["chip_to_tensor"]


def chip_to_tensor(
    chip: npt.NDArray[np.uint8],
    out: npt.NDArray[np.float32],
    *,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    scale: float = 1.0,
    rgb: bool = True,
) -> None:
    """Writes ``(chip - mean) * scale`` as a channels-first float32 tensor into ``out``.

    Every step writes into ``out`` itself (a cast copy per channel, then in-place
    arithmetic), so the normalised face exists nowhere else; ``out`` is normally a
    :class:`lfr.SecureBuffer` view handed to onnxruntime without a copy.

    Args:
        chip: ``uint8[h, w, 3]`` BGR chip (as OpenCV writes it).
        out: ``float32[3, h, w]`` (or ``[1, 3, h, w]``), C-contiguous and writable.
        mean: Per-channel mean in the order of the output channels.
        scale: Factor applied after subtracting the mean.
        rgb: Output channels in RGB order (``False``: keep BGR).

    Raises:
        TypeError: Wrong dtypes.
        ValueError: Shapes disagree, or ``out`` is read-only or not contiguous.
    """
    if not isinstance(chip, np.ndarray) or chip.dtype != np.uint8:
        raise TypeError("chip must be a uint8 numpy array")
    if not isinstance(out, np.ndarray) or out.dtype != np.float32:
        raise TypeError("out must be a float32 numpy array")
    if chip.ndim != 3 or chip.shape[2] != 3:
        raise ValueError(f"chip must have shape (h, w, 3), got {chip.shape}")
    planes = out[0] if out.ndim == 4 and out.shape[0] == 1 else out
    h, w = chip.shape[:2]
    if planes.shape != (3, h, w):
        raise ValueError(f"out must have shape (3, {h}, {w}), got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writable, C-contiguous array")
    if len(mean) != 3:
        raise ValueError(f"mean needs 3 values, got {len(mean)}")
    order = (2, 1, 0) if rgb else (0, 1, 2)
    for c, src in enumerate(order):
        plane = planes[c]
        # A strided cast straight into the plane, then same-dtype in-place ufuncs:
        # numpy needs no temporary buffer for either.
        np.copyto(plane, chip[:, :, src], casting="unsafe")
        np.subtract(plane, np.float32(mean[c]), out=plane)
        np.multiply(plane, np.float32(scale), out=plane)
