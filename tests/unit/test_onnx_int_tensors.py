"""lfr's ONNX writer with the integer tensors of quantised models (QDQ)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lfr.models import onnx_writer


@pytest.fixture(scope="module")
def onnx() -> Any:
    """The onnx package (test-only: lfr itself never imports it)."""
    return pytest.importorskip("onnx", reason="the onnx package checks lfr's writer")


@pytest.mark.parametrize(
    ("array", "code"),
    [
        (np.array([[0, 7, 255]], dtype=np.uint8), onnx_writer.UINT8),
        (np.array([-128, -1, 0, 127], dtype=np.int8), onnx_writer.INT8),
        (np.array([[-(2**31), 5], [2**31 - 1, -7]], dtype=np.int32), onnx_writer.INT32),
        (np.array([-(2**63), 2**63 - 1], dtype=np.int64), onnx_writer.INT64),
        (np.array(0.25, dtype=np.float32), onnx_writer.FLOAT),  # a scalar: no dims
        (np.array(3, dtype=np.uint8), onnx_writer.UINT8),
        (
            np.arange(6, dtype=np.int8).reshape(2, 3)[:, ::2],
            onnx_writer.INT8,
        ),  # strided
    ],
)
def test_tensors_round_trip_through_onnx(
    onnx: Any, array: np.ndarray, code: int
) -> None:
    proto = onnx.TensorProto()
    proto.ParseFromString(onnx_writer.tensor("t", array))
    assert proto.data_type == code
    assert list(proto.dims) == list(array.shape)
    back = onnx.numpy_helper.to_array(proto)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", [np.float64, np.uint16, np.bool_])
def test_other_dtypes_are_rejected(dtype: type) -> None:
    with pytest.raises(TypeError, match="unsupported tensor dtype"):
        onnx_writer.tensor("t", np.zeros(2, dtype=dtype))


def _qdq_conv() -> bytes:
    """x -> Q(u8) -> DQ -> Conv(DQ(s8 per-channel weights), DQ(s32 bias)) -> y."""
    weights = np.array([[[[1, -2], [3, 127]]], [[[-127, 0], [5, 6]]]], np.int8)
    nodes = [
        onnx_writer.node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        onnx_writer.node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        onnx_writer.node(
            "DequantizeLinear", ["w", "ws", "wz"], ["wd"], "", {"axis": 0}
        ),
        onnx_writer.node(
            "DequantizeLinear", ["b", "bs", "bz"], ["bd"], "", {"axis": 0}
        ),
        onnx_writer.node(
            "Conv", ["xd", "wd", "bd"], ["y"], "", {"kernel_shape": [2, 2]}
        ),
    ]
    initializers = [
        onnx_writer.tensor("xs", np.array(0.5, np.float32)),
        onnx_writer.tensor("xz", np.array(10, np.uint8)),
        onnx_writer.tensor("w", weights),
        onnx_writer.tensor("ws", np.array([0.25, 0.125], np.float32)),
        onnx_writer.tensor("wz", np.zeros(2, np.int8)),
        onnx_writer.tensor("b", np.array([-3, 100], np.int32)),
        onnx_writer.tensor("bs", np.array([0.125, 0.0625], np.float32)),
        onnx_writer.tensor("bz", np.zeros(2, np.int32)),
    ]
    graph = onnx_writer.graph(
        "qdq",
        nodes,
        initializers,
        [onnx_writer.value_info("x", onnx_writer.FLOAT, ["N", 1, 3, 3])],
        [onnx_writer.value_info("y", onnx_writer.FLOAT, ["N", 2, 2, 2])],
    )
    return onnx_writer.model(graph)


def test_qdq_model_passes_the_checker_and_runs(onnx: Any) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the model")
    model = _qdq_conv()
    onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.array([[[[0.0, 1.0, 2.2], [-5.0, 3.7, 100.0], [-9.9, 0.4, 1.6]]]])
    (y,) = session.run(None, {"x": x.astype(np.float32)})
    # numpy: quantise (round half to even, saturate), dequantise, convolve.
    xd = (np.clip(np.rint(x / 0.5) + 10, 0, 255) - 10) * 0.5
    w = np.array([[[[1, -2], [3, 127]]], [[[-127, 0], [5, 6]]]], np.float64)
    wd = w * np.array([0.25, 0.125])[:, None, None, None]
    bd = np.array([-3 * 0.125, 100 * 0.0625])
    ref = np.zeros((1, 2, 2, 2))
    for i in range(2):
        for j in range(2):
            patch = xd[:, :, i : i + 2, j : j + 2]
            ref[:, :, i, j] = np.einsum("nchw,fchw->nf", patch, wd) + bd
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert _qdq_conv() == model
