"""dlib's 5-point face shape predictor, without dlib.

dlib aligns faces for its ResNet descriptor with ``shape_predictor`` (an ensemble of
regression trees, Kazemi and Sullivan 2014) and ``get_face_chip``. This module reads
``shape_predictor_5_face_landmarks.dat`` (CC0) and reproduces the predictor exactly,
without dlib at run time:

:class:`ShapePredictor` parses the file (:meth:`ShapePredictor.from_bytes`) and
predicts landmarks in a grey or colour image for dlib-style face rectangles
(:meth:`ShapePredictor.predict`) with lfr's native core (``lfr._core.ShapeModel``,
``rust/shape/``). Using it to align faces (the rectangles for YuNet detections,
dlib's chip geometry, its grey conversion) is :mod:`lfr.align.dlib`'s part.

The algorithm (dlib ``image_processing/shape_predictor.h``): the shape starts as the
model's mean shape in rectangle-normalised coordinates. Each cascade samples a fixed
set of pixels, each located relative to one landmark (anchor plus delta, the delta
rotated and scaled by the similarity transform from the mean shape to the current
shape), mapped into the image through the rectangle (``(0, 0)`` to its top-left,
``(1, 1)`` to its bottom-right corner), rounded to the nearest pixel, 0 outside the
image. Every tree compares the difference of two sampled pixels with a threshold at
each node; the leaf reached adds its vector to the shape. Arithmetic follows dlib's
types (float32 shape and deltas, float64 transforms, round half up), so predicted
landmarks equal dlib's.

Face data: the image belongs to the caller and is read in place, never copied. The
sampled pixel values and the shapes live only in native work vectors that are
zeroized before :meth:`ShapePredictor.predict` returns. The file format is described in
``../shared/models/DLIB_FORMAT.md`` (same primitives as the ResNet file).
"""

from __future__ import annotations

import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lfr._core import ShapeModel
from lfr.errors import ModelError

__all__ = ["ShapePredictor"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

_VERSION = 1
_MAX_PARTS = 256
_MAX_CASCADES = 256
_MAX_TREES = 1 << 20
_MAX_DEPTH = 10
_MAX_PIXELS = 1 << 20
_MAX_INDEX = (1 << 31) - 1
_FLOAT_SPECIAL = 32000  # exponents 32000..32002: +inf, -inf, NaN


def _error(message: str, offset: int | None = None) -> ModelError:
    where = "" if offset is None else f" at byte {offset}"
    return ModelError(f"malformed dlib shape predictor{where}: {message}")


# --------------------------------------------------------------------------
# Reading dlib's serialization


def _tokens(data: bytes) -> tuple[I64, I64]:
    """Splits the file into dlib integers: their byte offsets and values.

    Everything in a shape predictor file is an integer (control byte: 0x80 =
    negative, low 4 bits = number of little-endian magnitude bytes); floats are
    two of them. Only finding where each integer starts is sequential.
    """
    size = len(data)
    starts = array.array("q")
    append = starts.append
    pos = 0
    while pos < size:
        append(pos)
        pos += 1 + (data[pos] & 0x0F)
    offsets = np.frombuffer(starts, dtype=np.int64) if starts else np.zeros(0, np.int64)
    buf = np.frombuffer(data, dtype=np.uint8)
    control = buf[offsets]
    width = control & 0x0F
    bad = np.flatnonzero(((control & 0x70) != 0) | (width > 8))
    if bad.size:
        at = int(offsets[bad[0]])
        raise _error(f"invalid integer control byte 0x{buf[at]:02x}", at)
    if pos > size:
        raise _error("truncated integer at the end of the data", int(offsets[-1]))
    magnitude = np.zeros(offsets.size, dtype=np.uint64)
    sel = np.arange(offsets.size)
    for j in range(8):
        sel = sel[width[sel] > j]
        if not sel.size:
            break
        byte = buf[offsets[sel] + 1 + j].astype(np.uint64)
        magnitude[sel] |= byte << np.uint64(8 * j)
    big = np.flatnonzero(magnitude > np.uint64((1 << 63) - 1))
    if big.size:
        raise _error("integer out of range", int(offsets[big[0]]))
    values = magnitude.astype(np.int64)
    np.negative(values, out=values, where=(control & 0x80) != 0)
    return offsets, values


class _Cursor:
    """Bounds-checked reads over the integers of a serialized file."""

    def __init__(self, offsets: I64, values: I64, size: int) -> None:
        self._offsets = offsets
        self._values = values
        self._size = size
        self.pos = 0

    def error(self, message: str, token: int | None = None) -> ModelError:
        """A ModelError at ``token`` (default: the next one)."""
        index = self.pos if token is None else token
        if index < self._offsets.size:
            return _error(message, int(self._offsets[index]))
        return _error(message, self._size)

    @property
    def remaining(self) -> int:
        """How many integers are left."""
        return int(self._values.size - self.pos)

    def take(self, count: int, what: str) -> I64:
        """The next ``count`` integers, as a read-only view."""
        if count > self.remaining:
            raise self.error(
                f"truncated: {what} needs {count} integers, {self.remaining} remain"
            )
        out = self._values[self.pos : self.pos + count]
        self.pos += count
        return out

    def integer(self, what: str, low: int, high: int) -> int:
        """One integer in ``low..high``."""
        value = int(self.take(1, what)[0])
        if not low <= value <= high:
            raise self.error(f"{what} is {value}, expected {low}..{high}", self.pos - 1)
        return value

    def peek(self, what: str) -> int:
        """The next integer, without consuming it."""
        if not self.remaining:
            raise self.error(f"truncated: {what} missing")
        return int(self._values[self.pos])

    def ints(self, count: int, what: str, low: int, high: int) -> I64:
        """``count`` integers, each in ``low..high``."""
        start = self.pos
        out = self.take(count, what)
        bad = np.flatnonzero((out < low) | (out > high))
        if bad.size:
            raise self.error(
                f"{what} is {out[bad[0]]}, expected {low}..{high}", start + int(bad[0])
            )
        return out

    def floats(self, count: int, what: str) -> F32:
        """``count`` finite floats (mantissa and binary exponent each)."""
        start = self.pos
        raw = self.take(2 * count, what).reshape(count, 2)
        return _floats(
            raw, lambda i: self.error(f"{what}: not a finite float", start + 2 * i)
        )

    def matrix_header(self, rows: int, what: str) -> None:
        """A column vector's size, ``(-rows, -1)`` (or the old ``(rows, 1)``)."""
        nr = self.integer(f"{what} rows", -rows - 1, rows + 1)
        nc = self.integer(f"{what} columns", -1, 1)
        if (nr, nc) not in ((-rows, -1), (rows, 1)):
            raise self.error(f"{what} is {abs(nr)}x{abs(nc)}, expected {rows}x1")


def _floats(raw: I64, error: Callable[[int], ModelError]) -> F32:
    """Decodes ``[..., 2]`` mantissa/exponent pairs to float32, all finite."""
    mantissa, exponent = raw[..., 0], raw[..., 1]
    ok = (exponent >= -(1 << 15)) & (exponent < _FLOAT_SPECIAL)
    with np.errstate(all="ignore"):
        value = np.ldexp(mantissa.astype(np.float64), np.where(ok, exponent, 0))
        out = value.astype(np.float32)
    bad = np.flatnonzero(~(ok & np.isfinite(out)).ravel())
    if bad.size:
        raise error(int(bad[0]))
    return out


@dataclass(frozen=True, eq=False)
class _Cascade:
    """One cascade level as parsed, in the layout ``lfr._core.ShapeModel`` takes.

    Attributes:
        anchors: ``int64[P]`` landmark each feature pixel is attached to.
        deltas: ``float32[P, 2]`` offset from it, in mean-shape coordinates.
        splits: ``int64[T, S, 2]`` the two feature pixels every split compares.
        thresh: ``float32[T, S]`` split thresholds (left where the difference of
            the two pixels exceeds it).
        leaves: ``float32[T, L, 2K]`` leaf vectors.
        depth: Depth of every tree (``S = 2**depth - 1``, ``L = 2**depth``).
    """

    anchors: I64
    deltas: F32
    splits: I64
    thresh: F32
    leaves: F32
    depth: int

    def native(self) -> tuple[I64, F32, I64, F32, F32, int]:
        """The arrays, C-contiguous, as ``ShapeModel`` takes them."""
        c = np.ascontiguousarray
        return (
            c(self.anchors, np.int64),
            c(self.deltas, np.float32),
            c(self.splits, np.int64),
            c(self.thresh, np.float32),
            c(self.leaves, np.float32),
            self.depth,
        )


def _read_forest(cur: _Cursor, dims: int, level: int) -> tuple[I64, F32, F32, int]:
    """One cascade's trees: ``(splits [T, S, 2], thresholds, leaves, depth)``.

    All trees of a cascade must have the same depth (dlib's trainer makes them so).
    """
    what = f"cascade {level}"
    count = cur.integer(f"{what} tree count", 1, _MAX_TREES)
    splits = cur.peek(f"{what} split count")
    if not 0 <= splits < (1 << _MAX_DEPTH) or (splits + 1) & splits:
        raise cur.error(f"{what}: {splits} splits is not a full tree of depth <= 10")
    leaves = splits + 1
    width = 2 + 4 * splits + leaves * (2 + 2 * dims)
    start = cur.pos
    block = cur.take(count * width, f"{what}'s {count} trees").reshape(count, width)
    head = block[:, 0] != splits
    head |= block[:, 1 + 4 * splits] != leaves
    leaf = block[:, 2 + 4 * splits :].reshape(count, leaves, 2 + 2 * dims)
    size_ok = ((leaf[..., 0] == -dims) & (leaf[..., 1] == -1)) | (
        (leaf[..., 0] == dims) & (leaf[..., 1] == 1)
    )
    head |= ~size_ok.all(axis=1)
    bad = np.flatnonzero(head)
    if bad.size:
        tree = int(bad[0])
        raise cur.error(
            f"{what} tree {tree} differs in shape from tree 0 (dlib's trees of a "
            f"cascade all have {splits} splits and {leaves} leaves of {dims} values)",
            start + tree * width,
        )
    split = block[:, 1 : 1 + 4 * splits].reshape(count, splits, 4)
    index = split[..., :2]
    if ((index < 0) | (index > _MAX_INDEX)).any():
        raise cur.error(f"{what}: a split's pixel index is out of range", start)

    def where(i: int) -> ModelError:
        return cur.error(f"{what}: a split threshold is not a finite float", start)

    thresh = _floats(split[..., 2:], where)

    def where_leaf(i: int) -> ModelError:
        return cur.error(f"{what}: a leaf value is not a finite float", start)

    values = _floats(leaf[..., 2:].reshape(count, leaves, dims, 2), where_leaf)
    return index, thresh, values, leaves.bit_length() - 1


@dataclass(frozen=True, eq=False)
class ShapePredictor:
    """dlib's ``shape_predictor``: regression-tree cascades over pixel differences.

    Build it with :meth:`from_bytes`; it is immutable and safe to share between
    threads (each :meth:`predict` call has its own work vectors).

    Agreement: the same integer landmarks as dlib-bin 20.0.1's
    ``shape_predictor`` on every face tried (LFW faces on dlib's detector boxes,
    about 1,000 random rectangles, partly outside the image too). Speed on one
    core: about 0.17 ms per face (dlib: 0.15 ms). On :func:`lfr.align.box_from_yunet`
    rectangles from YuNet detections the landmarks are within 0.39 pixel (1.1% of
    the eye distance) of dlib's on its own detector's boxes on average over 1,696
    ``lfw-dev`` faces (95th percentile 1.4 pixels, 3.5%; 24% of faces identical),
    and ResNet descriptors of the resulting chips have cosine 0.9991 on average
    (min 0.965) with dlib's own, against 0.990 (min 0.926) for YuNet's landmarks
    on a fitted template.

    Attributes:
        initial_shape: ``float32[K, 2]`` mean shape, in rectangle-normalised
            coordinates (``(0, 0)`` top-left, ``(1, 1)`` bottom-right corner).
    """

    initial_shape: F32
    _model: ShapeModel

    @property
    def num_parts(self) -> int:
        """Number of landmarks (5 for ``shape_predictor_5_face_landmarks.dat``)."""
        return int(self.initial_shape.shape[0])

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ShapePredictor:
        """Parses a serialized dlib ``shape_predictor``.

        Reads dlib's layout: version 1, the initial shape (a float column vector),
        the forests (per cascade a vector of trees; a tree is its splits
        ``{idx1, idx2, thresh}`` and its leaf vectors), then per cascade the
        anchor landmark and the delta of every feature pixel. Takes about half a
        second for the 9 MB 5-point model.

        Args:
            data: The file's bytes.

        Returns:
            The predictor.

        Raises:
            ModelError: The data is truncated, malformed, inconsistent (an index
                out of range, trees of different depths within a cascade), has
                trailing bytes, or holds a value that is not a finite float.
            TypeError: ``data`` is not bytes-like.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        raw = bytes(data)
        cur = _Cursor(*_tokens(raw), len(raw))
        cur.integer("version", _VERSION, _VERSION)
        rows: int = abs(cur.peek("initial shape rows"))
        if rows < 4 or rows > 2 * _MAX_PARTS or rows % 2:
            raise cur.error(
                f"initial shape has {rows} values, expected 2 per part and "
                f"2..{_MAX_PARTS} parts"
            )
        cur.matrix_header(rows, "initial shape")
        start = cur.pos
        shape = cur.floats(rows, "initial shape").reshape(-1, 2)
        centred = shape.astype(np.float64) - shape.mean(axis=0, dtype=np.float64)
        if not (centred**2).sum() > 0:
            raise cur.error("the initial shape's points coincide", start)
        levels = cur.integer("cascade count", 1, _MAX_CASCADES)
        forests = [_read_forest(cur, rows, i) for i in range(levels)]
        cur.integer("anchor list count", levels, levels)
        anchors = []
        for i in range(levels):
            count = cur.integer(f"cascade {i} pixel count", 1, _MAX_PIXELS)
            anchors.append(cur.ints(count, f"cascade {i} anchor", 0, rows // 2 - 1))
        cur.integer("delta list count", levels, levels)
        cascades = []
        for i, (index, thresh, values, depth) in enumerate(forests):
            count = anchors[i].size
            cur.integer(f"cascade {i} delta count", count, count)
            deltas = cur.floats(2 * count, f"cascade {i} deltas").reshape(count, 2)
            if index.size and int(np.max(index)) >= count:
                raise _error(
                    f"cascade {i}: a split uses pixel {int(np.max(index))} of {count}"
                )
            cascades.append(_Cascade(anchors[i], deltas, index, thresh, values, depth))
        if cur.remaining:
            raise cur.error(f"{cur.remaining} integers after the end of the model")
        shape.flags.writeable = False
        try:
            model = ShapeModel(shape, [c.native() for c in cascades])
        except ValueError as exc:  # a check the parser above does not repeat
            raise _error(str(exc)) from None
        return cls(initial_shape=shape, _model=model)

    @property
    def cascades(self) -> list[tuple[int, int, int]]:
        """``(trees, depth, feature pixels)`` of each cascade, in order."""
        return self._model.cascades

    def predict(
        self,
        image: U8,
        boxes: npt.ArrayLike,
        *,
        subpixel: bool = False,
    ) -> F32:
        """Landmarks of the faces in ``boxes``, as dlib's predictor gives them.

        Args:
            image: ``uint8[h, w]`` grey image, converted from colour the way dlib
                does (:func:`lfr.align.dlib_grey`), or the ``uint8[h, w, 3]``
                colour frame itself: then dlib's grey value ``(r + g + b) // 3`` is
                computed only at the sampled pixels. Any strides (a crop or other
                view of a larger frame is fine); read in place, never copied.
            boxes: ``[n, 4]`` dlib rectangles ``(left, top, right, bottom)``
                in ``image``'s pixels; ``right``/``bottom`` are dlib's inclusive
                corners (for a ``dlib.rectangle`` ``r``: ``r.right()``, not
                ``r.left() + r.width()``). Use :func:`lfr.align.box_from_yunet`
                for YuNet detections.
            subpixel: Return the unrounded positions instead of dlib's integer
                pixels.

        Returns:
            ``float32[n, K, 2]`` ``(x, y)`` positions in dlib's part order, rounded
            half up to whole pixels exactly as dlib's ``full_object_detection``
            unless ``subpixel``.

        Raises:
            TypeError: ``image`` is not a uint8 numpy array.
            ValueError: ``image`` is not ``(h, w)`` or ``(h, w, 3)``, or ``boxes``
                is not ``(n, 4)`` finite values.
        """
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError("image must be a uint8 numpy array")
        if image.ndim != 2 and (image.ndim != 3 or image.shape[2] != 3):
            raise ValueError(
                f"image must be (h, w) grey or (h, w, 3) colour, got {image.shape}"
            )
        rects = np.ascontiguousarray(boxes, dtype=np.float64)
        if rects.ndim != 2 or rects.shape[1] != 4:
            raise ValueError(f"boxes must have shape (n, 4), got {rects.shape}")
        if not np.isfinite(rects).all():
            raise ValueError("boxes contain NaN or infinity")
        out = np.empty((rects.shape[0], self.num_parts, 2), dtype=np.float32)
        self._model.predict(image, rects, out, subpixel)
        return out
