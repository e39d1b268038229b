"""lfr.FaceEmbedder on the real converted dlib model and real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.align import DLIB_TEMPLATE
from lfr.secure import secure_owner

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def detector(yunet_path: Path) -> lfr.FaceDetector:
    return lfr.FaceDetector()


@pytest.fixture(scope="module")
def embedder(embedder_path: Path) -> lfr.FaceEmbedder:
    return lfr.FaceEmbedder()


def photos(lfw_dir: Path, person: str) -> list[npt.NDArray[np.uint8]]:
    out: list[npt.NDArray[np.uint8]] = []
    for file in sorted((lfw_dir / "identities" / person).glob("*.jpg"))[:3]:
        image = cv2.imread(str(file))
        assert image is not None
        out.append(np.asarray(image, dtype=np.uint8))
    return out


def largest(faces: lfr.Detections) -> lfr.Detections:
    i = int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))
    return faces[i : i + 1]


def one_face(det: lfr.FaceDetector, image: npt.NDArray[np.uint8]) -> lfr.Detections:
    faces = det.detect(image)
    assert len(faces) >= 1
    return largest(faces)


def test_embeddings_are_unit_length_and_in_secure_memory(
    detector: lfr.FaceDetector, embedder: lfr.FaceEmbedder, lfw_dir: Path
) -> None:
    image = photos(
        lfw_dir, sorted(p.name for p in (lfw_dir / "identities").iterdir())[0]
    )[0]
    faces = detector.detect(image)
    vecs = embedder.embed(image, faces)
    assert vecs.shape == (len(faces), 128)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    owner = secure_owner(vecs)
    assert isinstance(owner, lfr.SecureBuffer)
    assert owner.locked
    assert (embedder.dim, embedder.size) == (128, 150)


def test_same_person_scores_higher_than_others(
    detector: lfr.FaceDetector, embedder: lfr.FaceEmbedder, lfw_dir: Path
) -> None:
    people = sorted(p.name for p in (lfw_dir / "identities").iterdir())[:6]
    vecs = {
        person: np.vstack(
            [
                embedder.embed(im, one_face(detector, im))
                for im in photos(lfw_dir, person)
            ]
        )
        for person in people
    }
    for person, own in vecs.items():
        same = float((own[0] @ own[1:].T).mean())
        others = max(
            float((own[0] @ v.T).max()) for p, v in vecs.items() if p != person
        )
        assert same > others, person


def test_scratch_buffers_are_wiped(
    detector: lfr.FaceDetector, embedder: lfr.FaceEmbedder, lfw_dir: Path
) -> None:
    image = photos(
        lfw_dir, sorted(p.name for p in (lfw_dir / "identities").iterdir())[1]
    )[0]
    embedder.embed(image, detector.detect(image))
    for buf in (embedder._chips, embedder._tensor):
        assert not np.asarray(buf).any()


def test_large_faces_are_downscaled_before_warping(
    detector: lfr.FaceDetector, embedder: lfr.FaceEmbedder, lfw_dir: Path
) -> None:
    image = photos(
        lfw_dir, sorted(p.name for p in (lfw_dir / "identities").iterdir())[2]
    )[0]
    big = np.asarray(
        cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC), np.uint8
    )
    small_face, big_face = one_face(detector, image), one_face(detector, big)
    eyes = big_face.landmarks[0, 1] - big_face.landmarks[0, 0]
    assert np.hypot(*eyes) > 2 * 55  # the warp would shrink more than 2x
    a = embedder.embed(image, small_face)[0]
    b = embedder.embed(big, big_face)[0]
    assert float(a @ b) > 0.985


def test_out_argument_and_empty_detections(
    detector: lfr.FaceDetector, embedder: lfr.FaceEmbedder, lfw_dir: Path
) -> None:
    image = photos(
        lfw_dir, sorted(p.name for p in (lfw_dir / "identities").iterdir())[3]
    )[0]
    faces = one_face(detector, image)
    with lfr.SecureBuffer(128 * 4) as buf:
        out = buf.array(np.float32, (1, 128))
        result = embedder.embed(image, faces, out=out)
        assert result is out
        assert abs(float(np.linalg.norm(out)) - 1) < 1e-5
        del out, result
    assert embedder.embed(image, lfr.Detections.empty()).shape == (0, 128)


def test_bad_input_is_refused(embedder: lfr.FaceEmbedder) -> None:
    frame = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        embedder.embed(frame.astype(np.float32), lfr.Detections.empty())
    with pytest.raises(TypeError, match="Detections"):
        embedder.embed(frame, "faces")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(h, w, 3\)"):
        embedder.embed(np.zeros((50, 50), np.uint8), lfr.Detections.empty())
    with pytest.raises(ValueError, match="out must be"):
        embedder.embed(
            frame, lfr.Detections.empty(), out=np.zeros((1, 128), np.float32)
        )
    with pytest.raises(ValueError, match="threads"):
        lfr.FaceEmbedder(threads=0)


def test_model_id_names_model_and_alignment(embedder_path: Path) -> None:
    a = lfr.FaceEmbedder()
    b = lfr.FaceEmbedder(template=np.asarray(DLIB_TEMPLATE) + 1.0)
    assert a.model_id == lfr.FaceEmbedder().model_id
    assert a.model_id != b.model_id
    assert a.model_id.split("-")[0] == b.model_id.split("-")[0]


def test_an_arcface_style_model_plugs_in(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [
            helper.make_node(
                "ReduceMean", ["input"], ["embedding"], axes=[2, 3], keepdims=0
            )
        ],
        "mean_colour",
        [
            helper.make_tensor_value_info(
                "input", onnx.TensorProto.FLOAT, [1, 3, 112, 112]
            )
        ],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "mean_colour.onnx"
    onnx.save(model, str(path))
    emb = lfr.FaceEmbedder(
        path, mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), rgb=True
    )
    assert (emb.dim, emb.size) == (3, 112)
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[:, :] = (10, 120, 250)  # BGR
    landmarks = np.asarray(DLIB_TEMPLATE, np.float32)[None] * 112 / 150 + 40
    faces = lfr.Detections(
        np.array([[30, 30, 170, 170]], np.float32),
        np.array([0.9], np.float32),
        landmarks.astype(np.float32),
    )
    got = emb.embed(frame, faces)[0]
    rgb = (np.array([250, 120, 10]) - 127.5) / 127.5
    np.testing.assert_allclose(got, rgb / np.linalg.norm(rgb), atol=1e-5)


def test_flip_averages_the_mirror_image(
    detector: lfr.FaceDetector, lfw_dir: Path
) -> None:
    flipping = lfr.FaceEmbedder(batch=3)
    single = lfr.FaceEmbedder(flip=False)
    assert flipping.flip  # the default for the default model
    assert not single.flip
    assert flipping.model_id != single.model_id
    person = sorted(p.name for p in (lfw_dir / "identities").iterdir())[4]
    image = photos(lfw_dir, person)[0]
    faces = detector.detect(image)
    both = flipping.embed(image, faces)
    plain = single.embed(image, faces)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    mirrored_plain = single.embed(mirrored, detector.detect(mirrored))
    # The average of a face and its mirror image is close to both.
    assert float(both[0] @ plain[0]) > 0.97
    assert float(both[0] @ mirrored_plain[0]) > 0.97
    assert float(both[0] @ plain[0]) < 0.99999


def test_both_alignments_embed_the_same_person_alike(
    detector: lfr.FaceDetector, lfw_dir: Path
) -> None:
    dlib = lfr.FaceEmbedder(flip=False)
    template = lfr.FaceEmbedder(alignment="template", flip=False)
    assert dlib.model_id != template.model_id
    person = sorted(p.name for p in (lfw_dir / "identities").iterdir())[5]
    image = photos(lfw_dir, person)[0]
    faces = one_face(detector, image)
    a, b = dlib.embed(image, faces)[0], template.embed(image, faces)[0]
    assert 0.9 < float(a @ b) < 0.99999  # close, but never mix them in one watchlist
    with pytest.raises(ValueError, match="alignment"):
        lfr.FaceEmbedder(alignment="other")  # type: ignore[arg-type]


def test_landmarks_from_colour_views_equal_the_grey_frame(
    detector: lfr.FaceDetector, lfw_dir: Path
) -> None:
    from lfr.align import box_from_yunet, dlib_grey, shape_predictor

    predictor = shape_predictor()
    checked = 0
    for file in sorted((lfw_dir / "unknowns").glob("*.jpg"))[:40]:
        image = np.asarray(cv2.imread(str(file)), np.uint8)
        faces = detector.detect(image)
        boxes = box_from_yunet(faces.boxes, faces.landmarks)
        grey = np.empty(image.shape[:2], np.uint8)
        dlib_grey(image, grey)
        whole = predictor.predict(grey, boxes)
        canvas = np.zeros((image.shape[0] + 20, image.shape[1] + 30, 3), np.uint8)
        canvas[10:-10, 20:-10] = image
        np.testing.assert_array_equal(predictor.predict(image, boxes), whole)
        np.testing.assert_array_equal(
            predictor.predict(canvas[10:-10, 20:-10], boxes), whole
        )
        checked += len(boxes)
    assert checked >= 40


def test_the_default_model_follows_the_cpu(
    detector: lfr.FaceDetector, lfw_dir: Path
) -> None:
    from lfr.embed import default_model

    assert lfr.FaceEmbedder().model == default_model()
    fp32 = lfr.FaceEmbedder(model="dlib-resnet")
    assert fp32.model == "dlib-resnet"
    assert fp32.model_id != lfr.FaceEmbedder(model="dlib-resnet-int8").model_id
    with pytest.raises(ValueError, match="raw pixels"):
        lfr.FaceEmbedder(mean=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="either path"):
        lfr.FaceEmbedder("x.onnx", model="dlib-resnet")
    with pytest.raises(ValueError, match="dlib models"):
        lfr.FaceEmbedder(model="other")  # type: ignore[arg-type]


def test_flipped_and_strided_views_embed_like_packed_frames(
    detector: lfr.FaceDetector, embedder: lfr.FaceEmbedder, lfw_dir: Path
) -> None:
    person = sorted(p.name for p in (lfw_dir / "identities").iterdir())[6]
    image = photos(lfw_dir, person)[0]
    canvas = np.zeros((400, 500, 3), np.uint8)
    canvas[50:300, 100:350] = image
    view = canvas[50:300, 100:350]  # row-strided: OpenCV reads it in place
    mirrored = image[:, ::-1]  # negative strides: packed into secure memory
    faces = one_face(detector, image)
    np.testing.assert_allclose(
        embedder.embed(view, faces), embedder.embed(image, faces), atol=1e-6
    )
    packed = np.ascontiguousarray(mirrored)
    mirror_faces = one_face(detector, packed)
    np.testing.assert_allclose(
        embedder.embed(mirrored, mirror_faces),
        embedder.embed(packed, mirror_faces),
        atol=1e-6,
    )
