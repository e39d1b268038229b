"""Checks shared by the tests of the ONNX files lfr writes (uses the onnx package)."""

from __future__ import annotations

from typing import Any

import onnx

#: Nodes of the float32 dlib graph: the affine layers and the input normalisation
#: are folded into the 29 convolutions; add_prev's zero-padding shows up as Pad.
FP32_OPS = {
    "Conv": 29,
    "Relu": 29,
    "Add": 14,
    "Pad": 5,
    "AveragePool": 4,
    "MaxPool": 1,
    "GlobalAveragePool": 1,
    "Flatten": 1,
    "MatMul": 1,
}


def dims(value: Any) -> list[int | str]:
    """The shape of a graph input or output, symbolic dimensions by name."""
    shape = value.type.tensor_type.shape.dim
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in shape]


def assert_dlib_embedder_interface(model: bytes) -> Any:
    """Checks the model fully and asserts lfr's embedder interface; returns it."""
    proto = onnx.load_from_string(model)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 8
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 13)]
    assert proto.producer_name == "lfr"
    assert [(v.name, dims(v)) for v in proto.graph.input] == [
        ("input", ["N", 3, 150, 150])
    ]
    assert [(v.name, dims(v)) for v in proto.graph.output] == [
        ("embedding", ["N", 128])
    ]
    return proto
