"""Face embedding: aligned chips in, L2-normalised embeddings out, on onnxruntime.

Every copy of a face made here lives in a :class:`~lfr.secure.SecureBuffer`: the
aligned chip (and, for large faces, the area-downscaled region it is warped from),
the float32 model input handed to onnxruntime without a copy (I/O binding), and the
embeddings onnxruntime writes straight into secure memory. Scratch buffers are wiped
after every call, also on error.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from lfr import models
from lfr.align import (
    DLIB_TEMPLATE,
    Alignment,
    FaceAligner,
    check_frame,
    opencv_reads_in_place,
)

# Kept importable from here, where it used to live (callers import it from
# lfr.embed); it belongs to lfr.align.
from lfr.align import align_into as align_into
from lfr.detect import Detections
from lfr.errors import ModelError
from lfr.models.ort import session
from lfr.secure import SecureBuffer

__all__ = [
    "DLIB_TEMPLATE",
    "Alignment",
    "DlibModel",
    "FaceEmbedder",
    "chip_to_tensor",
    "default_model",
]


def chip_to_tensor(
    chip: npt.NDArray[np.uint8],
    out: npt.NDArray[np.float32],
    *,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    rgb: bool = True,
) -> None:
    """Writes ``(chip - mean) / std`` as a channels-first float32 tensor into ``out``.

    Every step writes into ``out`` itself (a cast copy per channel, then in-place
    arithmetic), so the normalised face exists nowhere else; ``out`` is normally a
    :class:`lfr.SecureBuffer` view handed to onnxruntime without a copy.

    Args:
        chip: ``uint8[h, w, 3]`` BGR chip (as OpenCV writes it).
        out: ``float32[3, h, w]`` (or ``[1, 3, h, w]``), C-contiguous and writable.
        mean: Per-channel mean, in the order of the output channels.
        std: Per-channel divisor, in the order of the output channels.
        rgb: Output channels in RGB order (``False``: keep BGR).

    Raises:
        TypeError: Wrong dtypes.
        ValueError: Shapes disagree, ``out`` is read-only or not contiguous, or
            ``mean``/``std`` do not have 3 values (``std`` all non-zero).
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
    if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
        raise ValueError("mean and std need 3 values each, std non-zero")
    order = (2, 1, 0) if rgb else (0, 1, 2)
    for c, src in enumerate(order):
        plane = planes[c]
        # A strided cast straight into the plane, then same-dtype in-place ufuncs:
        # numpy needs no temporary buffer for either.
        np.copyto(plane, chip[:, :, src], casting="unsafe")
        if mean[c] != 0:
            np.subtract(plane, np.float32(mean[c]), out=plane)
        if std[c] != 1:
            np.multiply(plane, np.float32(1.0 / std[c]), out=plane)


#: lfr's provisioned embedders (names in :data:`lfr.models.MODELS`).
DlibModel = Literal["dlib-resnet-int8", "dlib-resnet"]


def default_model() -> DlibModel:
    """The embedder this CPU runs best: int8 where it has 8-bit dot products.

    x86 CPUs with AVX-512 VNNI or AVX-VNNI, and 64-bit ARM, run the int8 model
    about 2.4x faster than float32 at the same accuracy (docs/accuracy.md). Other
    x86 CPUs get float32: onnxruntime's int8 kernels there can saturate 16-bit
    intermediate sums.
    """
    import platform

    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "dlib-resnet-int8"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    words = set(flags.split())
    return "dlib-resnet-int8" if {"avx512_vnni", "avx_vnni"} & words else "dlib-resnet"


class FaceEmbedder:
    """Turns detected faces into L2-normalised embeddings.

    Each face is aligned with a least-squares similarity transform from its five
    landmarks onto the model's template, converted into the model's input tensor
    and embedded; every intermediate lives in secure memory and is wiped before
    :meth:`embed` returns.

    The default model is dlib's ResNet descriptor (128-D, 150x150 chips), converted
    to ONNX by ``lfr models fetch``: with int8 convolutions where the CPU has 8-bit
    dot products, else in float32 (:func:`default_model`). Any ArcFace-style ONNX
    embedder (one image input ``[N or 1, 3, size, size]``, one ``[N, dim]`` output)
    can be plugged in with its own chip size, template and normalisation.

    Args:
        path: An ONNX model of your own; default: one of lfr's (``model``).
        model: Which of lfr's installed dlib models, ``"dlib-resnet-int8"`` or
            ``"dlib-resnet"`` (float32); default: :func:`default_model`.
        size: Chip side in pixels (default 150, or the model's input size).
        template: Five ``(x, y)`` chip coordinates for the landmarks (image-left
            eye, image-right eye, nose tip, image-left and image-right mouth
            corner); default :data:`DLIB_TEMPLATE` scaled to ``size``.
        mean: Per-channel mean subtracted from the chip (model channel order).
        std: Per-channel divisor.
        rgb: The model expects RGB (else BGR).
        threads: onnxruntime intra-op threads (spinning is off).
        batch: Faces per onnxruntime call (models with a fixed batch of 1 use 1).
        flip: Also embed each face's mirror image and average the two
            (test-time augmentation: twice the inference time; on lfw-dev it
            lifts rank-1 from 0.968 to 0.975 and TPIR at FPIR 1% from 0.738 to
            0.773, see docs/accuracy.md). Default: on for the default model, off
            for others.
        alignment: ``"dlib"`` places the chip with dlib's own 5-point shape
            predictor and chip geometry (the default for the default model, which
            was trained on such chips); ``"template"`` maps the detector's five
            landmarks onto ``template`` (the default for other models).

    Raises:
        ModelError: The model is missing, altered, or not an image embedder.
        ValueError: A parameter is out of range.

    Examples:
        >>> det, emb = lfr.FaceDetector(), lfr.FaceEmbedder()  # doctest: +SKIP
        >>> faces = det.detect(frame)  # doctest: +SKIP
        >>> vecs = emb.embed(frame, faces)  # doctest: +SKIP
        >>> vecs.shape, vecs.dtype  # in secure memory  # doctest: +SKIP
        ((1, 128), dtype('float32'))
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        model: DlibModel | None = None,
        size: int | None = None,
        template: npt.ArrayLike | None = None,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        rgb: bool = True,
        threads: int = 1,
        batch: int = 8,
        flip: bool | None = None,
        alignment: Alignment | None = None,
    ) -> None:
        if isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        if isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        if path is not None and model is not None:
            raise ValueError("give either path (your own model) or model (lfr's)")
        own = path is None
        file: Path
        if path is None:
            chosen_model: str = model or default_model()
            if chosen_model not in ("dlib-resnet-int8", "dlib-resnet"):
                raise ValueError(
                    f"model must be one of lfr's dlib models, got {model!r}"
                )
            if tuple(mean) != (0.0, 0.0, 0.0) or tuple(std) != (1.0, 1.0, 1.0):
                raise ValueError(
                    "lfr's dlib models take raw pixels (their normalisation is built "
                    "in): leave mean and std at their defaults"
                )
            file = models.path(chosen_model)
        else:
            file = Path(os.fspath(path))
            chosen_model = file.name
        self._name: str = chosen_model
        self._session = session(file, threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{file}: an embedder has one input and one output, this model has "
                f"{len(inputs)} and {len(outputs)}"
            )
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ModelError(f"{file}: input must be [N, 3, size, size], got {shape}")
        declared = shape[2] if isinstance(shape[2], int) else None
        self._size = int(size or declared or 150)
        if self._size < 16 or (declared is not None and declared != self._size):
            raise ValueError(f"size {self._size} does not fit the model input {shape}")
        dim = outputs[0].shape[-1]
        if not isinstance(dim, int) or dim < 1:
            raise ModelError(f"{file}: output must be [N, dim], got {outputs[0].shape}")
        self._dim = dim
        if isinstance(shape[0], int) and shape[0] != 1:
            raise ModelError(f"{file}: fixed batch {shape[0]} is not supported")
        self._flip = bool(own if flip is None else flip)
        self._batch = batch
        self._views = 2 if self._flip else 1
        slots = self._batch * self._views
        self._run = 1 if isinstance(shape[0], int) else slots
        self._mean = tuple(float(m) for m in mean)
        self._std = tuple(float(s) for s in std)
        if len(self._mean) != 3 or len(self._std) != 3 or 0.0 in self._std:
            raise ValueError("mean and std need 3 values each, std non-zero")
        self._rgb = bool(rgb)
        self._aligner = FaceAligner(
            self._size,
            template,
            method=alignment or ("dlib" if own else "template"),
            flip=self._flip,
        )
        self._template = self._aligner.template
        self._alignment: Alignment = self._aligner.method
        self._input = inputs[0].name
        self._output = outputs[0].name
        self._model_id = self._identify(file, own)
        self._lock = threading.Lock()
        s = self._size
        self._chips = SecureBuffer(slots * s * s * 3)
        self._tensor = SecureBuffer(slots * 3 * s * s * 4)
        self._outputs = SecureBuffer(slots * self._dim * 4)

    def _identify(self, model: Path, own: bool) -> str:
        if own:
            # models.path() has checked the file against this pin already.
            file_hash = models.MODELS[self._name].sha256
        else:
            digest = hashlib.sha256()
            with open(model, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            file_hash = digest.hexdigest()
        params = repr(
            (
                self._size,
                np.round(self._template, 4).tolist(),
                self._mean,
                self._std,
                self._rgb,
                self._flip,
                self._alignment,
            )
        ).encode()
        return f"{file_hash[:16]}-{hashlib.sha256(params).hexdigest()[:8]}"

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def size(self) -> int:
        """Chip side in pixels."""
        return self._size

    @property
    def model(self) -> str:
        """The name of lfr's model, or the file name of a model given by path."""
        return self._name

    @property
    def flip(self) -> bool:
        """Whether each face is embedded with its mirror image."""
        return self._flip

    @property
    def batch(self) -> int:
        """Faces run through the model at once (its secure buffers hold this many)."""
        return self._batch

    @property
    def model_id(self) -> str:
        """Identifies the model file and the alignment.

        Embeddings are comparable only between embedders with the same id.
        """
        return self._model_id

    def embed(
        self,
        frame: npt.NDArray[np.uint8],
        faces: Detections,
        out: npt.NDArray[np.float32] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Embeds every face of ``faces``.

        Args:
            frame: The ``uint8[h, w, 3]`` BGR frame the faces were detected in.
            faces: Its detections (landmarks are used for alignment).
            out: Where to write, ``float32[n, dim]`` C-contiguous (normally a
                :class:`lfr.SecureBuffer` view); default: a new secure buffer.

        Returns:
            ``float32[n, dim]``, each row of unit length. Without ``out`` it is a
            view of a fresh :class:`lfr.SecureBuffer`: the memory is zeroized and
            freed when the array (and every view of it) is gone.

        Raises:
            TypeError: ``frame`` is not a uint8 array or ``faces`` not Detections.
            ValueError: Wrong shapes, or ``out`` does not fit.
        """
        if not isinstance(faces, Detections):
            raise TypeError("faces must be lfr.Detections")
        check_frame(frame)
        n = len(faces)
        if out is None:
            target = SecureBuffer(max(1, n * self._dim * 4)).array(
                np.float32, (n, self._dim)
            )
        else:
            target = out
        if (
            not isinstance(target, np.ndarray)
            or target.dtype != np.float32
            or target.shape != (n, self._dim)
            or not target.flags.c_contiguous
            or not target.flags.writeable
        ):
            raise ValueError(
                f"out must be a writable, C-contiguous float32 array of shape "
                f"({n}, {self._dim})"
            )
        if n and not opencv_reads_in_place(frame):
            # OpenCV would copy this view outside secure memory: pack it into
            # secure memory first (wiped when done).
            with SecureBuffer(frame.nbytes) as buf:
                packed = buf.array(np.uint8, frame.shape)
                np.copyto(packed, frame)
                self._embed_all(packed, faces, target)
                del packed
        else:
            self._embed_all(frame, faces, target)
        _normalise_rows(target)
        return target

    def _embed_all(
        self,
        frame: npt.NDArray[np.uint8],
        faces: Detections,
        target: npt.NDArray[np.float32],
    ) -> None:
        n = len(faces)
        with self._lock:
            try:
                transforms = self._transforms(frame, faces)
                views = self._views
                for start in range(0, n, self._batch):
                    stop = min(n, start + self._batch)
                    self._embed_batch(
                        frame,
                        transforms[start * views : stop * views],
                        target[start:stop],
                    )
            finally:
                self._chips.wipe()
                self._tensor.wipe()
                self._outputs.wipe()

    def _transforms(
        self, frame: npt.NDArray[np.uint8], faces: Detections
    ) -> list[npt.NDArray[np.float64]]:
        """Frame-to-chip maps, face by face (with its mirror after it if flipping)."""
        return self._aligner.transforms(frame, faces.boxes, faces.landmarks)

    def _embed_batch(
        self,
        frame: npt.NDArray[np.uint8],
        transforms: list[npt.NDArray[np.float64]],
        out: npt.NDArray[np.float32],
    ) -> None:
        s, views = self._size, self._views
        used = len(transforms)
        slots = self._batch * views
        chips = self._chips.array(np.uint8, (slots, s, s, 3))
        tensor = self._tensor.array(np.float32, (slots, 3, s, s))
        results = (
            out if views == 1 else self._outputs.array(np.float32, (slots, self._dim))
        )
        for k in range(0, used, views):
            align_into(frame, transforms[k : k + views], chips[k : k + views])
        for k in range(used):
            chip_to_tensor(
                chips[k], tensor[k], mean=self._mean, std=self._std, rgb=self._rgb
            )
        for start in range(0, used, self._run):
            stop = min(used, start + self._run)
            binding = self._session.io_binding()
            batch, dest = tensor[start:stop], results[start:stop]
            binding.bind_input(
                self._input, "cpu", 0, np.float32, list(batch.shape), batch.ctypes.data
            )
            binding.bind_output(
                self._output, "cpu", 0, np.float32, list(dest.shape), dest.ctypes.data
            )
            self._session.run_with_iobinding(binding)
            del batch, dest
        if views == 2:
            # Each view at unit length, then their sum (normalised by the caller).
            _normalise_rows(results[:used])
            np.add(results[0:used:2], results[1:used:2], out=out)
        del chips, tensor, results

    def __repr__(self) -> str:
        return (
            f"FaceEmbedder(model={self._name!r}, dim={self._dim}, size={self._size}, "
            f"model_id={self._model_id!r})"
        )


def _normalise_rows(rows: npt.NDArray[np.float32]) -> None:
    """Scales each row to unit length in place (zero rows stay zero)."""
    for row in rows:
        norm = float(np.sqrt(np.dot(row, row)))
        if norm > 0 and math.isfinite(norm):
            np.multiply(row, np.float32(1.0 / norm), out=row)
