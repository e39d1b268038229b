"""The int8 dlib ResNet written by lfr: valid, deterministic, and close to fp32."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.models import dlib_resnet
from tests.support.dlib_dat import RESNET, require_dat

RESNET_DAT = require_dat(RESNET)
ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the model")

FACES = 32
# Measured on 397 LFW faces (lfr's detector and dlib alignment; each face and its
# mirror image, 794 chips): cosine between the int8 and fp32 embeddings of a chip
# min 0.99701, 1st percentile 0.99947, mean 0.99968; of the mirror-averaged
# embeddings min 0.99769, mean 0.99981. On the 32 faces here: min 0.99949 and
# mean 0.99968 per view, min 0.99977 and mean 0.99982 mirror-averaged.
MIN_COSINE = 0.995
MIN_MEAN_COSINE = 0.999


@pytest.fixture(scope="module")
def dat() -> bytes:
    return RESNET_DAT.read_bytes()


@pytest.fixture(scope="module")
def int8_model(dat: bytes) -> bytes:
    return dlib_resnet.convert_resnet(dat, int8=True)


def _session(model: bytes) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_int8_conversion_is_deterministic(dat: bytes, int8_model: bytes) -> None:
    assert dlib_resnet.convert_resnet(dat, int8=True) == int8_model
    fp32 = dlib_resnet.convert_resnet(dat)
    assert dlib_resnet.convert_resnet(dat, int8=False) == fp32
    # About a quarter of the fp32 model's size.
    assert len(int8_model) < 0.3 * len(fp32)


def test_int8_model_is_standard_qdq_onnx(int8_model: bytes) -> None:
    onnx = pytest.importorskip("onnx", reason="the onnx package checks the model")
    from tests.support.onnx_checks import FP32_OPS, assert_dlib_embedder_interface

    proto = assert_dlib_embedder_interface(int8_model)
    assert all(node.domain == "" for node in proto.graph.node)
    ops = Counter(node.op_type for node in proto.graph.node)
    # The fp32 graph, plus: the input and 43 Conv/Add outputs quantised, MaxPool,
    # Pad and AveragePool re-quantised (1 + 43 + 1 + 5 + 4), and a DequantizeLinear
    # per Q plus two (weights, bias) per Conv.
    assert ops == {
        **FP32_OPS,
        "QuantizeLinear": 54,
        "DequantizeLinear": 54 + 2 * 29,
    }
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    weights = [a for n, a in arrays.items() if n.endswith(".weight") and a.ndim == 4]
    assert len(weights) == 29
    assert all(w.dtype == np.int8 and np.abs(w).max() == 127 for w in weights)
    biases = [a for n, a in arrays.items() if n.endswith(".bias")]
    assert len(biases) == 29
    assert all(b.dtype == np.int32 for b in biases)
    # Only the fc layer keeps float32 weights.
    fc = [a for a in arrays.values() if a.dtype == np.float32 and a.ndim == 2]
    assert [a.shape for a in fc] == [(256, 128)]


def test_int8_model_runs_and_batches_consistently(int8_model: bytes) -> None:
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (4, 3, 150, 150)).astype(np.float32)
    session = _session(int8_model)
    (out,) = session.run(["embedding"], {"input": batch})
    assert out.shape == (4, 128)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    (single,) = session.run(None, {"input": batch[2:3]})
    np.testing.assert_allclose(single[0], out[2], atol=1e-6)


Face = tuple[npt.NDArray[np.uint8], lfr.Detections]


@pytest.fixture(scope="module")
def faces(lfw_dir: Path, yunet_path: Path) -> list[Face]:
    """The centre face of the first photo of people spread over the alphabet."""
    detector = lfr.FaceDetector()
    people = sorted(p for p in (lfw_dir / "identities").iterdir() if p.is_dir())
    out: list[Face] = []
    for person in people[:: max(1, len(people) // FACES)]:
        image_path = min(person.glob("*.jpg"), default=None)
        if image_path is None:
            continue
        frame = np.asarray(cv2.imread(str(image_path)), dtype=np.uint8)
        faces = detector.detect(frame)
        if len(faces) == 0:
            continue
        h, w = frame.shape[:2]
        centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
        i = int(np.argmin(((centres - [w / 2, h / 2]) ** 2).sum(axis=1)))
        face = faces[i : i + 1]
        out.append((frame, face))
        if len(out) == FACES:
            break
    if len(out) < FACES:
        pytest.fail(f"only {len(out)} faces found for {FACES}")
    return out


@pytest.mark.data
@pytest.mark.parametrize("flip", [False, True])
def test_int8_embeddings_agree_with_fp32_on_lfw(
    dat: bytes,
    int8_model: bytes,
    faces: list[Face],
    embedder_path: Path,
    tmp_path: Path,
    flip: bool,
) -> None:
    paths = {
        "fp32": tmp_path / "fp32.onnx",
        "int8": tmp_path / "int8.onnx",
    }
    paths["fp32"].write_bytes(dlib_resnet.convert_resnet(dat))
    paths["int8"].write_bytes(int8_model)
    embedders = {
        name: lfr.FaceEmbedder(path, alignment="dlib", flip=flip)
        for name, path in paths.items()
    }
    assert embedders["int8"].dim == 128
    assert embedders["int8"].size == 150
    vectors = {
        name: np.vstack([np.array(e.embed(frame, face)) for frame, face in faces])
        for name, e in embedders.items()
    }
    cosine = np.sum(vectors["fp32"] * vectors["int8"], axis=1)  # unit rows
    assert len(cosine) == FACES
    assert cosine.min() >= MIN_COSINE, f"min cosine {cosine.min():.5f}"
    assert cosine.mean() >= MIN_MEAN_COSINE, f"mean cosine {cosine.mean():.5f}"
    # Every face is still nearest to itself among the fp32 embeddings.
    nearest = np.argmax(vectors["int8"] @ vectors["fp32"].T, axis=1)
    assert np.array_equal(nearest, np.arange(FACES))
