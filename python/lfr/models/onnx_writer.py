"""Writing ONNX models, and making dims of an existing one dynamic, without ``onnx``.

Builders for the subset of ``onnx.proto`` lfr needs (a ``ModelProto`` holding one
graph of nodes with INT/INTS/FLOAT/STRING attributes, raw little-endian
float32, int64, int32, int8 and uint8 initializers and tensor-typed inputs and
outputs), on top of :mod:`lfr.models.protobuf`.
Fields are written in field-number order, as protobuf's own writers do, so the same
arguments always give the same bytes.

Field numbers (``onnx/onnx.proto``): ModelProto ir_version 1, producer_name 2,
doc_string 6, graph 7, opset_import 8; OperatorSetIdProto domain 1, version 2;
GraphProto node 1, name 2, initializer 5, doc_string 10, input 11, output 12,
value_info 13; NodeProto input 1, output 2, name 3, op_type 4, attribute 5;
AttributeProto name 1, f 2, i 3, s 4, ints 8, type 20; TensorProto dims 1,
data_type 2, name 8, raw_data 9; ValueInfoProto name 1, type 2; TypeProto
tensor_type 1; TypeProto.Tensor elem_type 1, shape 2; TensorShapeProto dim 1;
Dimension dim_value 1, dim_param 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Union

import numpy as np
import numpy.typing as npt

from lfr.errors import ModelError
from lfr.models.protobuf import (
    Field,
    WireType,
    bytes_field,
    decode_message,
    encode_message,
    float_field,
    string_field,
    varint_field,
)

__all__ = [
    "FLOAT",
    "INT8",
    "INT32",
    "INT64",
    "UINT8",
    "AttributeValue",
    "TensorArray",
    "graph",
    "make_dims_dynamic",
    "model",
    "node",
    "tensor",
    "value_info",
]

#: ``TensorProto.DataType`` codes.
FLOAT = 1
UINT8 = 2
INT8 = 3
INT32 = 6
INT64 = 7

#: The numpy dtypes :func:`tensor` writes, with their codes and little-endian forms.
_TENSOR_TYPES: dict[np.dtype[np.generic], tuple[int, str]] = {
    np.dtype(np.float32): (FLOAT, "<f4"),
    np.dtype(np.uint8): (UINT8, "u1"),
    np.dtype(np.int8): (INT8, "i1"),
    np.dtype(np.int32): (INT32, "<i4"),
    np.dtype(np.int64): (INT64, "<i8"),
}

#: The arrays :func:`tensor` accepts.
TensorArray = Union[
    npt.NDArray[np.float32],
    npt.NDArray[np.uint8],
    npt.NDArray[np.int8],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
]

# AttributeProto.AttributeType codes.
_ATTR_FLOAT = 1
_ATTR_INT = 2
_ATTR_STRING = 3
_ATTR_INTS = 7

# Field numbers used by make_dims_dynamic.
_MODEL_GRAPH = 7
_GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 11, 12, 13
_VALUE_INFO_NAME, _VALUE_INFO_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_TYPE_SHAPE = 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2

#: An attribute value: INT, FLOAT, STRING or INTS.
AttributeValue = Union[int, float, str, Sequence[int]]


def tensor(name: str, array: TensorArray) -> bytes:
    """A ``TensorProto`` holding ``array`` as raw little-endian data.

    Args:
        name: The tensor's name (an initializer is referred to by it).
        array: float32, uint8, int8, int32 or int64 values, any shape (a 0-d
            array is a scalar).

    Returns:
        The encoded ``TensorProto``.

    Raises:
        TypeError: Another dtype.
    """
    try:
        code, layout = _TENSOR_TYPES[array.dtype]
    except KeyError:
        raise TypeError(
            f"unsupported tensor dtype {array.dtype} for {name!r}"
        ) from None
    data = array.astype(layout, copy=False).tobytes()
    return b"".join(
        [
            *(varint_field(1, dim) for dim in array.shape),
            varint_field(2, code),
            string_field(8, name),
            bytes_field(9, data),
        ]
    )


def _attribute(name: str, value: AttributeValue) -> bytes:
    parts = [string_field(1, name)]
    if isinstance(value, float):
        parts += [float_field(2, value), varint_field(20, _ATTR_FLOAT)]
    elif isinstance(value, int):
        parts += [varint_field(3, value), varint_field(20, _ATTR_INT)]
    elif isinstance(value, str):
        parts += [string_field(4, value), varint_field(20, _ATTR_STRING)]
    else:
        parts += [varint_field(8, int(item)) for item in value]
        parts.append(varint_field(20, _ATTR_INTS))
    return b"".join(parts)


def node(
    op_type: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    name: str = "",
    attributes: Mapping[str, AttributeValue] | None = None,
) -> bytes:
    """A ``NodeProto`` of the default (``ai.onnx``) domain.

    Args:
        op_type: The operator, for example ``"Conv"``.
        inputs: Input value names (``""`` for an omitted optional input).
        outputs: Output value names.
        name: The node's name; left out when empty.
        attributes: Attribute values in the order to write them: ``int`` is INT,
            ``float`` FLOAT, ``str`` STRING and a sequence of ints INTS.

    Returns:
        The encoded ``NodeProto``.
    """
    parts = [string_field(1, value) for value in inputs]
    parts += [string_field(2, value) for value in outputs]
    if name:
        parts.append(string_field(3, name))
    parts.append(string_field(4, op_type))
    for attr_name, value in (attributes or {}).items():
        parts.append(bytes_field(5, _attribute(attr_name, value)))
    return b"".join(parts)


def _dimension(dim: int | str) -> bytes:
    if isinstance(dim, str):
        return string_field(_DIM_PARAM, dim)
    return varint_field(_DIM_VALUE, dim)


def value_info(name: str, elem_type: int, shape: Sequence[int | str]) -> bytes:
    """A ``ValueInfoProto`` of a tensor, for a graph input or output.

    Args:
        name: The value's name.
        elem_type: A ``TensorProto.DataType`` code such as :data:`FLOAT`.
        shape: Each dim a size, or a ``str`` naming a dynamic dim (``dim_param``).

    Returns:
        The encoded ``ValueInfoProto``.
    """
    dims = b"".join(bytes_field(_SHAPE_DIM, _dimension(dim)) for dim in shape)
    tensor_type = varint_field(1, elem_type) + bytes_field(_TENSOR_TYPE_SHAPE, dims)
    type_proto = bytes_field(_TYPE_TENSOR, tensor_type)
    return string_field(_VALUE_INFO_NAME, name) + bytes_field(
        _VALUE_INFO_TYPE, type_proto
    )


def graph(
    name: str,
    nodes: Iterable[bytes],
    initializers: Iterable[bytes],
    inputs: Iterable[bytes],
    outputs: Iterable[bytes],
    doc_string: str = "",
) -> bytes:
    """A ``GraphProto``.

    Args:
        name: The graph's name.
        nodes: Encoded ``NodeProto`` s, in topological order.
        initializers: Encoded ``TensorProto`` s (see :func:`tensor`).
        inputs: Encoded ``ValueInfoProto`` s of the graph inputs.
        outputs: Encoded ``ValueInfoProto`` s of the graph outputs.
        doc_string: Free text; left out when empty.

    Returns:
        The encoded ``GraphProto``.
    """
    parts = [bytes_field(1, item) for item in nodes]
    parts.append(string_field(2, name))
    parts += [bytes_field(5, item) for item in initializers]
    if doc_string:
        parts.append(string_field(10, doc_string))
    parts += [bytes_field(_GRAPH_INPUT, item) for item in inputs]
    parts += [bytes_field(_GRAPH_OUTPUT, item) for item in outputs]
    return b"".join(parts)


def model(
    graph_proto: bytes,
    *,
    opset: int = 13,
    ir_version: int = 8,
    producer_name: str = "lfr",
    doc_string: str = "",
) -> bytes:
    """A ``ModelProto`` holding one graph that imports the default domain only.

    Args:
        graph_proto: The encoded ``GraphProto`` (see :func:`graph`).
        opset: The ``ai.onnx`` opset version the nodes follow.
        ir_version: The ONNX IR version (8 goes with opsets up to 17).
        producer_name: Who made the model.
        doc_string: Free text; left out when empty.

    Returns:
        The encoded model, ready for ``onnxruntime.InferenceSession``.
    """
    parts = [varint_field(1, ir_version), string_field(2, producer_name)]
    if doc_string:
        parts.append(string_field(6, doc_string))
    parts.append(bytes_field(_MODEL_GRAPH, graph_proto))
    parts.append(bytes_field(8, string_field(1, "") + varint_field(2, opset)))
    return b"".join(parts)


def _payload(field: Field, context: str) -> bytes:
    if field.wire_type != WireType.LEN or not isinstance(field.value, bytes):
        raise ModelError(
            f"malformed ONNX model: {context}: field {field.number} is not a message"
        )
    return field.value


def _edit_at(
    fields: list[Field],
    path: Sequence[int],
    edit: Callable[[list[Field]], list[Field]],
    context: str,
) -> list[Field]:
    """Applies ``edit`` to the sub-message reached by the field numbers ``path``.

    Every step must find exactly one field of that number; everything else is
    kept as it was.
    """
    if not path:
        return edit(fields)
    number = path[0]
    found = [index for index, field in enumerate(fields) if field.number == number]
    if len(found) != 1:
        raise ModelError(
            f"malformed ONNX model: {context}: expected one field {number}, "
            f"found {len(found)}"
        )
    index = found[0]
    inner = decode_message(_payload(fields[index], context))
    edited = Field(
        number, WireType.LEN, encode_message(_edit_at(inner, path[1:], edit, context))
    )
    return [*fields[:index], edited, *fields[index + 1 :]]


def _with_dim_params(
    shape_fields: list[Field], dims: Mapping[int, str], context: str
) -> list[Field]:
    """Turns the chosen dims of a ``TensorShapeProto`` into ``dim_param`` names."""
    dim_indices = [
        i for i, field in enumerate(shape_fields) if field.number == _SHAPE_DIM
    ]
    edited = list(shape_fields)
    for dim, param in dims.items():
        if not 0 <= dim < len(dim_indices):
            raise ModelError(
                f"{context} has {len(dim_indices)} dims; cannot make dim {dim} dynamic"
            )
        if not param:
            raise ValueError(f"{context}: dim {dim} needs a non-empty name")
        index = dim_indices[dim]
        dim_fields = decode_message(_payload(shape_fields[index], context))
        value_positions = [
            i for i, f in enumerate(dim_fields) if f.number in (_DIM_VALUE, _DIM_PARAM)
        ]
        position = value_positions[0] if value_positions else 0
        kept = [f for f in dim_fields if f.number not in (_DIM_VALUE, _DIM_PARAM)]
        kept.insert(position, Field(_DIM_PARAM, WireType.LEN, param.encode("utf-8")))
        edited[index] = Field(_SHAPE_DIM, WireType.LEN, encode_message(kept))
    return edited


def _value_name(fields: list[Field], context: str) -> str:
    names = [f for f in fields if f.number == _VALUE_INFO_NAME]
    if len(names) != 1:
        raise ModelError(f"malformed ONNX model: {context} without a single name")
    return _payload(names[0], context).decode("utf-8", errors="replace")


def make_dims_dynamic(
    model: bytes,
    inputs: Mapping[str, Mapping[int, str]],
    outputs: Mapping[str, Mapping[int, str]],
    drop_value_info: bool = True,
) -> bytes:
    """Renames fixed dims of graph inputs and outputs into dynamic ``dim_param`` s.

    Only the named dims change (their ``dim_value`` becomes a ``dim_param``); when
    ``drop_value_info`` is set, the graph's ``value_info`` (intermediate shapes,
    which would contradict the new sizes) is removed. Every other field keeps its
    bytes and its place.

    Args:
        model: An encoded ``ModelProto``.
        inputs: Graph input name -> {dim index -> dim_param name}.
        outputs: Graph output name -> {dim index -> dim_param name}.
        drop_value_info: Remove ``graph.value_info``.

    Returns:
        The edited model's bytes.

    Raises:
        ModelError: The bytes are not a well-formed model, a named input or output
            is missing, or a dim index is beyond its rank.
        ValueError: A dim name is empty.

    Examples:
        >>> def relu(batch):
        ...     x = value_info("x", FLOAT, [batch, 4])
        ...     y = value_info("y", FLOAT, [batch, 4])
        ...     return model(graph("g", [node("Relu", ["x"], ["y"])], [], [x], [y]))
        >>> make_dims_dynamic(relu(1), {"x": {0: "N"}}, {"y": {0: "N"}}) == relu("N")
        True
    """
    wanted = {_GRAPH_INPUT: inputs, _GRAPH_OUTPUT: outputs}
    kinds = {_GRAPH_INPUT: "input", _GRAPH_OUTPUT: "output"}
    done: set[tuple[int, str]] = set()

    def edit_graph(graph_fields: list[Field]) -> list[Field]:
        edited: list[Field] = []
        for field in graph_fields:
            if field.number == _GRAPH_VALUE_INFO and drop_value_info:
                continue
            if field.number in wanted:
                context = f"graph {kinds[field.number]}"
                info = decode_message(_payload(field, context))
                name = _value_name(info, context)
                dims = wanted[field.number].get(name)
                if dims is not None:
                    context = f"graph {kinds[field.number]} {name!r}"
                    info = _edit_at(
                        info,
                        (_VALUE_INFO_TYPE, _TYPE_TENSOR, _TENSOR_TYPE_SHAPE),
                        partial(_with_dim_params, dims=dims, context=context),
                        context,
                    )
                    field = Field(field.number, WireType.LEN, encode_message(info))
                    done.add((field.number, name))
            edited.append(field)
        return edited

    edited = _edit_at(decode_message(model), (_MODEL_GRAPH,), edit_graph, "model")
    for number, names in wanted.items():
        missing = sorted(set(names) - {name for n, name in done if n == number})
        if missing:
            raise ModelError(f"the model has no graph {kinds[number]} named {missing}")
    return encode_message(edited)
