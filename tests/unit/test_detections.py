"""Detections validation, greedy NMS properties, FaceDetector parameter checks."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lfr.detect
from lfr.detect import Detections, FaceDetector, nms
from lfr.errors import ModelError

F64 = npt.NDArray[np.float64]


def make(n: int = 2) -> dict[str, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 100, (n, 2)).astype(np.float32)
    wh = rng.uniform(1, 50, (n, 2)).astype(np.float32)
    return {
        "boxes": np.concatenate([xy, xy + wh], axis=1),
        "scores": np.linspace(0.9, 0.7, n, dtype=np.float32),
        "landmarks": rng.uniform(0, 100, (n, 5, 2)).astype(np.float32),
    }


def test_valid_detections_are_read_only_views() -> None:
    fields = make(3)
    faces = Detections(**fields)
    assert len(faces) == 3
    assert repr(faces) == "Detections(n=3)"
    assert not faces.boxes.flags.writeable
    assert not faces.landmarks.flags.writeable
    assert fields["boxes"].flags.writeable  # the caller's array is untouched
    with pytest.raises(ValueError, match="read-only"):
        faces.scores[0] = 0.1
    with pytest.raises(AttributeError):
        faces.scores = fields["scores"]  # type: ignore[misc]


def test_empty() -> None:
    faces = Detections.empty()
    assert len(faces) == 0
    assert faces.boxes.shape == (0, 4)
    assert faces.scores.shape == (0,)
    assert faces.landmarks.shape == (0, 5, 2)
    assert faces.boxes.dtype == faces.scores.dtype == np.float32


@pytest.mark.parametrize("field", ["boxes", "scores", "landmarks"])
def test_wrong_dtype_is_a_type_error(field: str) -> None:
    fields = make()
    fields[field] = fields[field].astype(np.float64)
    with pytest.raises(TypeError, match=f"{field} must be float32"):
        Detections(**fields)


def test_not_an_array_is_a_type_error() -> None:
    fields: dict[str, object] = dict(make())
    fields["scores"] = [0.9, 0.8]
    with pytest.raises(TypeError, match="scores must be a numpy array"):
        Detections(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "shape", "message"),
    [
        ("boxes", (3, 4), r"boxes must have shape \(2, 4\)"),
        ("boxes", (2, 5), r"boxes must have shape \(2, 4\)"),
        ("landmarks", (2, 4, 2), r"landmarks must have shape \(2, 5, 2\)"),
        ("landmarks", (2, 10), r"landmarks must have shape \(2, 5, 2\)"),
        ("scores", (2, 1), r"scores must have shape \(n,\)"),
    ],
)
def test_inconsistent_shapes_are_value_errors(
    field: str, shape: tuple[int, ...], message: str
) -> None:
    fields = make()
    fields[field] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=message):
        Detections(**fields)


@pytest.mark.parametrize("field", ["boxes", "scores", "landmarks"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(field: str, bad: float) -> None:
    fields = make()
    fields[field].reshape(-1)[0] = bad
    with pytest.raises(ValueError, match=f"{field} contain NaN or infinity"):
        Detections(**fields)


@pytest.mark.parametrize("score", [-0.01, 1.01])
def test_scores_outside_the_unit_interval_are_refused(score: float) -> None:
    fields = make()
    fields["scores"][1] = score
    with pytest.raises(ValueError, match=r"scores must lie in \[0, 1\]"):
        Detections(**fields)


@pytest.mark.parametrize("column", [0, 1])
def test_inverted_boxes_are_refused(column: int) -> None:
    fields = make()
    fields["boxes"][0, column] = fields["boxes"][0, column + 2] + 1
    with pytest.raises(ValueError, match="x1 <= x2 and y1 <= y2"):
        Detections(**fields)


# ---------------------------------------------------------------- NMS properties


def iou(a: F64, b: F64) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (
        max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
        + max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
        - inter
    )
    return inter / union if union > 0 else 0.0


# Small coordinates on a coarse grid make heavy overlaps, exact ties in IoU and in
# score, and zero-area boxes common.
coord = st.integers(0, 40).map(float)
size = st.integers(0, 20).map(float)
box = st.tuples(coord, coord, size, size).map(
    lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3])
)
score = st.one_of(st.sampled_from([0.5, 0.7, 0.9]), st.floats(0, 1))
cases = st.lists(st.tuples(box, score), max_size=40)
thresholds = st.one_of(st.sampled_from([0.0, 0.3, 0.5, 1.0]), st.floats(0, 1))
EPS = 0.0  # integer coordinates: both IoU computations are exact alike


def split(case: list[tuple[tuple[float, ...], float]]) -> tuple[F64, F64]:
    boxes = np.array([b for b, _ in case], np.float64).reshape(-1, 4)
    scores = np.array([s for _, s in case], np.float64)
    return boxes, scores


@given(cases, thresholds)
def test_kept_boxes_overlap_at_most_the_threshold(
    case: list[tuple[tuple[float, ...], float]], threshold: float
) -> None:
    boxes, scores = split(case)
    keep = nms(boxes, scores, threshold).tolist()
    assert len(set(keep)) == len(keep)
    assert all(scores[a] >= scores[b] for a, b in zip(keep, keep[1:]))
    for i, a in enumerate(keep):
        for b in keep[i + 1 :]:
            assert iou(boxes[a], boxes[b]) <= threshold + EPS


@given(cases, thresholds)
def test_the_best_box_is_always_kept(
    case: list[tuple[tuple[float, ...], float]], threshold: float
) -> None:
    boxes, scores = split(case)
    keep = nms(boxes, scores, threshold)
    if len(scores):
        assert keep[0] == int(np.argmax(scores))  # first of the tied best
    else:
        assert keep.shape == (0,)


@given(cases, thresholds)
def test_every_dropped_box_overlaps_a_better_kept_one(
    case: list[tuple[tuple[float, ...], float]], threshold: float
) -> None:
    boxes, scores = split(case)
    keep = nms(boxes, scores, threshold).tolist()
    rank = {int(j): r for r, j in enumerate(np.argsort(-scores, kind="stable"))}
    for j in set(range(len(scores))) - set(keep):
        assert any(
            rank[i] < rank[j] and iou(boxes[i], boxes[j]) > threshold - EPS
            for i in keep
        )


@given(cases, thresholds, st.integers(1, 10))
def test_top_k_is_a_prefix_of_the_full_result(
    case: list[tuple[tuple[float, ...], float]], threshold: float, top_k: int
) -> None:
    boxes, scores = split(case)
    full = nms(boxes, scores, threshold)
    assert nms(boxes, scores, threshold, top_k).tolist() == full[:top_k].tolist()


def test_nms_refuses_bad_arguments() -> None:
    boxes = np.zeros((2, 4))
    with pytest.raises(ValueError, match="shape"):
        nms(boxes, np.zeros(3), 0.3)
    with pytest.raises(ValueError, match="finite"):
        nms(boxes, np.array([0.5, np.nan]), 0.3)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(boxes, np.zeros(2), 1.5)
    with pytest.raises(ValueError, match="top_k"):
        nms(boxes, np.zeros(2), 0.3, top_k=0)


# ------------------------------------------------- FaceDetector, no model needed


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"score_threshold": 0.0}, ValueError, "score_threshold"),
        ({"score_threshold": 1.5}, ValueError, "score_threshold"),
        ({"score_threshold": float("nan")}, ValueError, "score_threshold"),
        ({"score_threshold": "0.5"}, TypeError, "score_threshold"),
        ({"nms_threshold": -0.1}, ValueError, "nms_threshold"),
        ({"nms_threshold": 1.01}, ValueError, "nms_threshold"),
        ({"top_k": 0}, ValueError, "top_k"),
        ({"working_size": 0}, ValueError, "working_size"),
        ({"working_size": -960}, ValueError, "working_size"),
        ({"working_size": 100_000}, ValueError, "working_size"),
        ({"working_size": 960.0}, TypeError, "working_size"),
        ({"threads": 0}, ValueError, "threads"),
        ({"threads": True}, TypeError, "threads"),
    ],
)
def test_bad_parameters_are_refused_before_loading(
    kwargs: dict[str, object], error: type[Exception], message: str, tmp_path: Path
) -> None:
    # The model path does not exist: parameters are checked first.
    with pytest.raises(error, match=message):
        FaceDetector(tmp_path / "absent.onnx", **kwargs)  # type: ignore[arg-type]


def test_a_missing_model_is_a_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelError, match="not found"):
        FaceDetector(tmp_path / "absent.onnx")
    monkeypatch.setenv("LFR_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="lfr models fetch"):
        FaceDetector()


def test_a_file_that_is_not_a_model_is_a_model_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="cannot load"):
        FaceDetector(junk)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(lfr.detect, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# -- indexing ------------------------------------------------------------------


def test_a_mask_indices_and_slices_select_faces() -> None:
    fields = make(4)
    faces = Detections(**fields)
    high = faces[faces.scores > 0.8]
    assert len(high) == 2
    np.testing.assert_array_equal(high.scores, fields["scores"][:2])
    picked = faces[[3, 0, 3]]
    np.testing.assert_array_equal(picked.boxes, fields["boxes"][[3, 0, 3]])
    np.testing.assert_array_equal(picked.landmarks, fields["landmarks"][[3, 0, 3]])
    np.testing.assert_array_equal(faces[-1:].scores, fields["scores"][-1:])
    np.testing.assert_array_equal(faces[::-2].boxes, fields["boxes"][::-2])
    np.testing.assert_array_equal(
        faces[np.array([1, -1])].scores, fields["scores"][[1, 3]]
    )
    assert len(faces[2:2]) == len(faces[[]]) == len(faces[np.zeros(4, bool)]) == 0
    assert len(Detections.empty()[:]) == 0


def test_indexing_returns_validated_copies() -> None:
    faces = Detections(**make(3))
    for part in (faces[1:], faces[[0, 1]], faces[np.ones(3, bool)]):
        assert isinstance(part, Detections)
        for name in ("boxes", "scores", "landmarks"):
            mine, theirs = getattr(part, name), getattr(faces, name)
            assert not np.shares_memory(mine, theirs)
            assert not mine.flags.writeable
            assert mine.flags.c_contiguous


@pytest.mark.parametrize(
    "index",
    [0, np.int64(1), True, 1.0, "0", None, [0.5], [0, "1"], np.array([0.0, 1.0])],
    ids=repr,
)
def test_bad_index_kinds_are_type_errors(index: object) -> None:
    faces = Detections(**make(3))
    with pytest.raises(TypeError, match="Detections"):
        faces[index]  # type: ignore[index]


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (np.ones(2, bool), "mask for 3 faces"),
        (np.ones(4, bool), "mask for 3 faces"),
        ([True, False], "mask for 3 faces"),
        ([3], "out of range"),
        (np.array([0, -4]), "out of range"),
        (np.zeros((3, 1), np.int64), "1-D"),
    ],
)
def test_bad_index_values_are_index_errors(index: object, message: str) -> None:
    faces = Detections(**make(3))
    with pytest.raises(IndexError, match=message):
        faces[index]  # type: ignore[index]


@st.composite
def faces_and_mask(draw: st.DrawFn) -> tuple[Detections, npt.NDArray[np.bool_]]:
    n = draw(st.integers(0, 12))
    fields = (
        make(n)
        if n
        else {
            "boxes": np.zeros((0, 4), np.float32),
            "scores": np.zeros(0, np.float32),
            "landmarks": np.zeros((0, 5, 2), np.float32),
        }
    )
    mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    return Detections(**fields), mask


@given(faces_and_mask())
def test_a_mask_equals_field_wise_indexing(
    case: tuple[Detections, npt.NDArray[np.bool_]],
) -> None:
    faces, mask = case
    part = faces[mask]
    assert len(part) == int(mask.sum())
    for name in ("boxes", "scores", "landmarks"):
        np.testing.assert_array_equal(getattr(part, name), getattr(faces, name)[mask])
    indices = np.flatnonzero(mask)
    for name in ("boxes", "scores", "landmarks"):
        np.testing.assert_array_equal(
            getattr(faces[indices], name), getattr(faces, name)[indices]
        )


@given(
    st.integers(0, 10),
    st.one_of(st.none(), st.integers(-12, 12)),
    st.one_of(st.none(), st.integers(-12, 12)),
    st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0)),
)
def test_a_slice_equals_field_wise_slicing(
    n: int, start: int | None, stop: int | None, step: int | None
) -> None:
    faces = Detections(**make(n)) if n else Detections.empty()
    part = faces[start:stop:step]
    for name in ("boxes", "scores", "landmarks"):
        np.testing.assert_array_equal(
            getattr(part, name), getattr(faces, name)[start:stop:step]
        )
