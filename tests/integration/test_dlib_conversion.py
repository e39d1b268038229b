"""The converted dlib ResNet gives dlib's own descriptors on real LFW face chips."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from lfr.models import dlib_resnet
from tests.support.dlib_dat import FIVE_POINT, RESNET, require_dat

dlib = pytest.importorskip("dlib", reason="dlib-bin is the reference")
RESNET_DAT = require_dat(RESNET)
FIVE_POINT_DAT = require_dat(FIVE_POINT)
onnx = pytest.importorskip("onnx", reason="the onnx package checks the model")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the model")

from tests.support.onnx_checks import (  # noqa: E402
    FP32_OPS,
    assert_dlib_embedder_interface,
)

pytestmark = pytest.mark.data

CHIPS = 24
MAX_ABS_DIFF = 1e-5
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def converted() -> bytes:
    data = RESNET_DAT.read_bytes()
    return dlib_resnet.convert_resnet(data)


@pytest.fixture(scope="module")
def chips(lfw_dir: Path) -> list[npt.NDArray[np.uint8]]:
    """dlib-aligned 150x150 RGB chips, one per identity, from different people."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(FIVE_POINT_DAT))
    people = sorted(p for p in (lfw_dir / "identities").iterdir() if p.is_dir())
    # Spread over the alphabet rather than the first few names.
    step = max(1, len(people) // (2 * CHIPS))
    out: list[npt.NDArray[np.uint8]] = []
    for person in people[::step]:
        image_path = min(person.glob("*.jpg"), default=None)
        if image_path is None:
            continue
        image = dlib.load_rgb_image(str(image_path))
        faces = detector(image, 1)
        if len(faces) == 0:
            continue
        shape = predictor(image, faces[0])
        out.append(np.asarray(dlib.get_face_chip(image, shape, size=150, padding=0.25)))
        if len(out) == CHIPS:
            break
    if len(out) < CHIPS:
        pytest.fail(f"only {len(out)} faces found for {CHIPS} chips")
    return out


def _session(model: bytes) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_descriptors_match_dlib_on_real_chips(
    converted: bytes, chips: list[npt.NDArray[np.uint8]]
) -> None:
    encoder = dlib.face_recognition_model_v1(str(RESNET_DAT))
    reference = np.array([encoder.compute_face_descriptor(chip) for chip in chips])
    batch = np.stack([chip.transpose(2, 0, 1) for chip in chips]).astype(np.float32)
    assert batch.shape == (CHIPS, 3, 150, 150)
    (ours,) = _session(converted).run(["embedding"], {"input": batch})
    assert ours.shape == (CHIPS, 128)
    assert ours.dtype == np.float32

    max_diff = np.abs(ours - reference).max(axis=1)
    cosine = np.sum(ours * reference, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert max_diff.max() <= MAX_ABS_DIFF, f"max abs diff {max_diff.max():.3g}"
    assert cosine.min() >= MIN_COSINE, f"min cosine {cosine.min():.8f}"
    # The raw descriptor, not unit length (dlib's norms are about 1.35-1.6).
    norms = np.linalg.norm(ours, axis=1)
    assert np.all(norms > 1.1), norms
    # Different people really give different descriptors.
    assert np.linalg.norm(ours[0] - ours[1]) > 0.3

    # One chip at a time gives the same numbers as the batch.
    (single,) = _session(converted).run(None, {"input": batch[:1]})
    np.testing.assert_allclose(single[0], ours[0], atol=1e-6)


def test_model_is_valid_onnx_with_the_documented_interface(converted: bytes) -> None:
    proto = assert_dlib_embedder_interface(converted)
    assert all(v.type.tensor_type.elem_type == 1 for v in proto.graph.input)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops == FP32_OPS
    params = sum(
        int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == 1
    )
    assert 5_500_000 < params < 5_700_000


def test_conversion_is_deterministic(converted: bytes) -> None:
    data = RESNET_DAT.read_bytes()
    assert dlib_resnet.convert_resnet(data) == converted
