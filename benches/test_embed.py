"""Face embedding: lfr's FaceEmbedder (dlib ResNet on onnxruntime) per face.

Faces come from the same crowd frame as benches/test_detect.py (32 LFW photos tiled
into 1920x1080). One call embeds ``b`` faces: dlib's shape predictor and chip
alignment into secure chips, the float32 input tensor, one onnxruntime run, L2
normalisation; with ``flip`` (the default) also each face's mirror image. Both of
lfr's models: int8 convolutions (the default on CPUs with VNNI) and float32. The
time per face is the call's time divided by ``b``.

Target: at most 4 ms per face on one core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from tests.conftest import installed_model

from benches.test_detect import crowd  # noqa: F401  (a fixture)
from lfr.detect import FaceDetector
from lfr.embed import DlibModel, FaceEmbedder

U8 = npt.NDArray[np.uint8]
Benchmark = Any


@pytest.mark.parametrize("model", ["dlib-resnet-int8", "dlib-resnet"])
@pytest.mark.parametrize("flip", [True, False], ids=["flip", "noflip"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 8])
def test_embed(
    benchmark: Benchmark,
    yunet_path: Path,
    embedder_path: Path,
    crowd: dict[str, U8],  # noqa: F811
    batch: int,
    threads: int,
    flip: bool,
    model: DlibModel,
) -> None:
    frame = crowd["1920x1080"]
    detector = FaceDetector(yunet_path)
    found = detector.detect(frame)
    detector.close()
    assert len(found) >= batch
    faces = found[:batch]
    installed_model(model)
    embedder = FaceEmbedder(model=model, threads=threads, batch=8, flip=flip)
    embedder.embed(frame, faces)  # warm-up: onnxruntime plans its memory
    benchmark.group = f"embed batch {batch}"
    benchmark.extra_info.update(op="embed", case=f"batch {batch}", faces=batch)
    benchmark.extra_info.update(flip=flip, model=model)
    benchmark.extra_info.update(impl="lfr", threads=threads)
    benchmark(lambda: embedder.embed(frame, faces))
