"""lfr's own protobuf wire format and ONNX writer, checked against onnx/onnxruntime."""

from __future__ import annotations

import ast
import doctest
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lfr.errors import ModelError
from lfr.models import onnx_writer
from lfr.models.protobuf import (
    Field,
    WireType,
    bytes_field,
    decode_message,
    decode_varint,
    encode_message,
    encode_varint,
    float_field,
    string_field,
    to_signed,
    varint_field,
)

LFR_SOURCES = Path(__file__).resolve().parents[2] / "python" / "lfr"


@pytest.fixture(scope="module")
def onnx() -> Any:
    """The onnx package (test-only: lfr itself never imports it)."""
    return pytest.importorskip("onnx", reason="the onnx package checks lfr's writer")


@pytest.fixture(scope="module")
def ort() -> Any:
    return pytest.importorskip("onnxruntime", reason="onnxruntime runs the models")


def _session(ort: Any, model: bytes) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


# -- wire format -------------------------------------------------------------


@given(st.integers(0, 2**64 - 1))
def test_varint_round_trips(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(b"\x07" + encoded + b"\x01", 1) == (value, 1 + len(encoded))
    assert len(encoded) == max(1, -(-value.bit_length() // 7))


@given(st.integers(-(2**63), -1))
def test_negative_int64_is_ten_bytes_of_twos_complement(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) == 10
    decoded, end = decode_varint(encoded, 0)
    assert end == 10
    assert to_signed(decoded) == value


def test_varint_known_encodings() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(1) == b"\x01"
    assert encode_varint(150) == b"\x96\x01"  # the protobuf documentation's example
    assert encode_varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
    with pytest.raises(ValueError, match="out of range"):
        encode_varint(2**64)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80",  # continuation bit, then nothing
        b"\xff" * 10 + b"\x01",  # 11 bytes
        b"\xff" * 9 + b"\x7f",  # 10 bytes but above 2**64 - 1
    ],
)
def test_bad_varints_raise_model_error(data: bytes) -> None:
    with pytest.raises(ModelError, match="byte 0"):
        decode_varint(data, 0)


_FIELD_NUMBERS = st.integers(1, 2**29 - 1)
_FIELDS = st.one_of(
    st.builds(
        Field, _FIELD_NUMBERS, st.just(WireType.VARINT), st.integers(0, 2**64 - 1)
    ),
    st.builds(
        Field, _FIELD_NUMBERS, st.just(WireType.I64), st.binary(min_size=8, max_size=8)
    ),
    st.builds(
        Field, _FIELD_NUMBERS, st.just(WireType.I32), st.binary(min_size=4, max_size=4)
    ),
    st.builds(Field, _FIELD_NUMBERS, st.just(WireType.LEN), st.binary(max_size=300)),
)


@given(st.lists(_FIELDS, max_size=20))
def test_messages_round_trip(fields: list[Field]) -> None:
    encoded = encode_message(fields)
    assert decode_message(encoded) == fields
    assert encode_message(decode_message(encoded)) == encoded


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_model_error(data: bytes) -> None:
    try:
        fields = decode_message(data)
    except ModelError as exc:
        error = str(exc)
    else:
        # Whatever decodes re-encodes to a message that decodes the same way.
        assert decode_message(encode_message(fields)) == fields
        return
    assert error.startswith("malformed protobuf: ")
    assert "byte" in error


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a\x05abc", "needs 5 bytes, 3 remain"),  # length past the end
        (b"\x0b", "unsupported wire type 3"),  # start group
        (b"\x00\x01", "invalid field number 0"),
        (b"\x0d\x00\x00", "needs 4 bytes, 2 remain"),  # truncated fixed32
    ],
)
def test_malformed_messages_raise_model_error(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        decode_message(data)


def test_field_encoders_match_the_wire_format() -> None:
    assert varint_field(1, 150) == b"\x08\x96\x01"
    assert string_field(2, "testing") == b"\x12\x07testing"
    assert bytes_field(3, b"") == b"\x1a\x00"
    assert float_field(2, 1.5) == b"\x15" + struct.pack("<f", 1.5)
    assert varint_field(1, -1) == b"\x08" + b"\xff" * 9 + b"\x01"


def test_onnx_written_models_round_trip_unchanged(onnx: Any) -> None:
    helper = onnx.helper
    # Real protobuf output, with packed floats, nested messages and negative ints.
    node = helper.make_node(
        "Clip", ["x", "lo", "hi"], ["y"], name="clip", doc_string="d"
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", -1, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [
            helper.make_tensor("lo", onnx.TensorProto.FLOAT, [], [-1.0]),
            helper.make_tensor("hi", onnx.TensorProto.FLOAT, [], [2.5]),
        ],
    )
    data = helper.make_model(graph).SerializeToString()
    assert encode_message(decode_message(data)) == data


# -- the ONNX writer -----------------------------------------------------------


def _tiny_model() -> tuple[bytes, dict[str, np.ndarray]]:
    """Conv (INTS) -> LeakyRelu (FLOAT) -> Pad (STRING) -> Flatten (INT) -> MatMul."""
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    pads = np.array([0, 0, 0, 0, 0, 1, 1, 0], dtype=np.int64)
    dense = rng.standard_normal((5 * 5 * 3, 6)).astype(np.float32)
    nodes = [
        onnx_writer.node(
            "Conv",
            ["x", "w", "b"],
            ["c"],
            "conv",
            {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]},
        ),
        onnx_writer.node("LeakyRelu", ["c"], ["r"], "leaky", {"alpha": 0.25}),
        onnx_writer.node("Pad", ["r", "pads"], ["p"], "pad", {"mode": "constant"}),
        onnx_writer.node("Flatten", ["p"], ["f"], attributes={"axis": 1}),
        onnx_writer.node("MatMul", ["f", "dense"], ["y"]),
    ]
    graph = onnx_writer.graph(
        "tiny",
        nodes,
        [
            onnx_writer.tensor("w", weights),
            onnx_writer.tensor("b", bias),
            onnx_writer.tensor("pads", pads),
            onnx_writer.tensor("dense", dense),
        ],
        [onnx_writer.value_info("x", onnx_writer.FLOAT, ["N", 2, 7, 5])],
        [onnx_writer.value_info("y", onnx_writer.FLOAT, ["N", 6])],
        doc_string="a test",
    )
    params = {"w": weights, "b": bias, "dense": dense}
    return onnx_writer.model(graph, doc_string="tiny model"), params


def _reference(x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """The tiny model in numpy."""
    w, b = params["w"].astype(np.float64), params["b"].astype(np.float64)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    rows, cols = (7 + 2 - 3) // 2 + 1, (5 + 2 - 3) // 2 + 1
    conv = np.zeros((x.shape[0], 4, rows, cols))
    for i in range(rows):
        for j in range(cols):
            patch = padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            conv[:, :, i, j] = np.einsum("nchw,fchw->nf", patch, w) + b
    leaky = np.where(conv > 0, conv, 0.25 * conv)
    padded_out = np.pad(leaky, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return padded_out.reshape(x.shape[0], -1) @ params["dense"].astype(np.float64)


def test_tiny_model_passes_the_checker_and_runs(onnx: Any, ort: Any) -> None:
    model, params = _tiny_model()
    proto = onnx.load_from_string(model)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 8
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 13)]
    assert proto.producer_name == "lfr"
    assert proto.doc_string == "tiny model"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 2, 7, 5]
    leaky = proto.graph.node[1].attribute[0]
    assert (leaky.name, leaky.type, leaky.f) == ("alpha", 1, 0.25)
    assert proto.graph.node[2].attribute[0].s == b"constant"
    assert proto.graph.node[3].attribute[0].i == 1
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 7, 5))
        (y,) = _session(ort, model).run(None, {"x": x.astype(np.float32)})
        assert y.shape == (batch, 6)
        np.testing.assert_allclose(y, _reference(x, params), rtol=1e-4, atol=1e-4)


def test_writer_is_deterministic() -> None:
    assert _tiny_model()[0] == _tiny_model()[0]


def test_tensor_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError, match="float64"):
        onnx_writer.tensor("t", np.zeros(2, dtype=np.float64))  # type: ignore[arg-type]


def test_lfr_never_imports_onnx() -> None:
    offenders = []
    for path in sorted(LFR_SOURCES.rglob("*.py")):
        for item in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(item, ast.Import):
                names = [alias.name for alias in item.names]
            elif isinstance(item, ast.ImportFrom) and item.level == 0:
                names = [item.module or ""]
            else:
                continue
            offenders += [
                f"{path.name}: {name}"
                for name in names
                if name == "onnx" or name.startswith("onnx.")
            ]
    assert LFR_SOURCES.joinpath("models", "onnx_writer.py").is_file()
    assert offenders == []


# -- make_dims_dynamic -------------------------------------------------------


def _fixed_model(onnx: Any, with_value_info: bool = True) -> Any:
    """A [1, 3, 8, 8] -> Conv 3x3 -> Relu -> MaxPool -> [1, 4, 4, 4] model."""
    helper = onnx.helper
    rng = np.random.default_rng(3)
    weights = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node(
                "MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2]
            ),
        ],
        "fixed",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 4, 4])],
        [onnx.numpy_helper.from_array(weights, "w")],
        value_info=(
            [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1, 4, 8, 8])]
            if with_value_info
            else []
        ),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _relu_model(shape: list[int | str]) -> bytes:
    """x -> Relu -> y, written by lfr."""
    return onnx_writer.model(
        onnx_writer.graph(
            "relu",
            [onnx_writer.node("Relu", ["x"], ["y"])],
            [],
            [onnx_writer.value_info("x", onnx_writer.FLOAT, shape)],
            [onnx_writer.value_info("y", onnx_writer.FLOAT, shape)],
        )
    )


def test_make_dims_dynamic_equals_writing_dim_params() -> None:
    fixed = _relu_model([1, 3, 8, 8])
    dynamic = onnx_writer.make_dims_dynamic(
        fixed, {"x": {0: "N", 3: "W"}}, {"y": {2: "H"}}
    )
    x, y = (
        onnx_writer.value_info("x", onnx_writer.FLOAT, ["N", 3, 8, "W"]),
        onnx_writer.value_info("y", onnx_writer.FLOAT, [1, 3, "H", 8]),
    )
    relu = onnx_writer.node("Relu", ["x"], ["y"])
    assert dynamic == onnx_writer.model(onnx_writer.graph("relu", [relu], [], [x], [y]))


def test_make_dims_dynamic_runs_at_other_sizes(onnx: Any, ort: Any) -> None:
    model = _fixed_model(onnx)
    fixed = model.SerializeToString()
    dynamic = onnx_writer.make_dims_dynamic(
        fixed, {"x": {0: "N", 2: "H", 3: "W"}}, {"y": {0: "N", 2: "h", 3: "w"}}
    )
    proto = onnx.load_from_string(dynamic)
    onnx.checker.check_model(proto, full_check=True)
    assert len(proto.graph.value_info) == 0
    # Exactly what the same edit made with the onnx package serializes to.
    for value, names in ((model.graph.input[0], "NHW"), (model.graph.output[0], "Nhw")):
        shape = value.type.tensor_type.shape
        for index, name in zip((0, 2, 3), names):
            shape.dim[index].dim_param = name
    del model.graph.value_info[:]
    assert dynamic == model.SerializeToString()

    session = _session(ort, dynamic)
    reference = _session(ort, fixed)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(
        session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0]
    )
    for shape in [(2, 3, 16, 10), (1, 3, 5, 9)]:
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        (y,) = session.run(None, {"x": x})
        assert y.shape == (shape[0], 4, shape[2] // 2, shape[3] // 2)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(onnx_writer)
    assert result.attempted > 0
    assert result.failed == 0


def test_make_dims_dynamic_can_keep_value_info(onnx: Any) -> None:
    fixed = _fixed_model(onnx).SerializeToString()
    kept = onnx_writer.make_dims_dynamic(
        fixed, {"x": {0: "N"}}, {}, drop_value_info=False
    )
    proto = onnx.load_from_string(kept)
    assert [v.name for v in proto.graph.value_info] == ["c"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_make_dims_dynamic_works_on_lfr_written_models(onnx: Any) -> None:
    model, _ = _tiny_model()
    renamed = onnx_writer.make_dims_dynamic(model, {"x": {2: "H"}}, {"y": {0: "B"}})
    proto = onnx.load_from_string(renamed)
    dims = [
        d.dim_param or d.dim_value
        for d in proto.graph.input[0].type.tensor_type.shape.dim
    ]
    assert dims == ["N", 2, "H", 5]
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "B"


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({"nope": {0: "N"}}, {}, "no graph input named \\['nope'\\]"),
        ({}, {"x": {0: "N"}}, "no graph output named \\['x'\\]"),
        ({"x": {4: "N"}}, {}, "has 4 dims; cannot make dim 4 dynamic"),
    ],
)
def test_make_dims_dynamic_rejects_unknown_values(
    inputs: dict[str, dict[int, str]], outputs: dict[str, dict[int, str]], message: str
) -> None:
    fixed = _relu_model([1, 3, 8, 8])
    with pytest.raises(ModelError, match=message):
        onnx_writer.make_dims_dynamic(fixed, inputs, outputs)


@settings(max_examples=50)
@given(cut=st.integers(1, 400), flip=st.integers(0, 400), mask=st.integers(1, 255))
def test_make_dims_dynamic_on_damaged_models_raises_model_error(
    cut: int, flip: int, mask: int
) -> None:
    fixed = bytearray(_relu_model([1, 3, 8, 8]))
    fixed[flip % len(fixed)] ^= mask
    damaged = bytes(fixed[: len(fixed) - cut % len(fixed)])
    try:
        edited = onnx_writer.make_dims_dynamic(damaged, {"x": {0: "N"}}, {})
    except ModelError as exc:
        error = str(exc)
    else:
        assert encode_message(decode_message(edited)) == edited
        return
    assert error.startswith(("malformed", "the model has no graph", "graph input"))
