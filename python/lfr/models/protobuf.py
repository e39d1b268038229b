"""Minimal protobuf wire format: encode fields, split messages, re-encode them.

Just enough of https://protobuf.dev/programming-guides/encoding/ to write ONNX
models and to edit a few fields of an existing one without a schema: a decoded
message is a flat list of :class:`Field` entries (nested messages stay bytes until
decoded themselves), and :func:`encode_message` writes them back unchanged, so
fields the editor does not know about are kept verbatim.

Values are kept as they are on the wire: varints as unsigned 64-bit integers,
fixed-width values and length-delimited payloads as raw bytes.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from lfr.errors import ModelError

__all__ = [
    "Field",
    "WireType",
    "bytes_field",
    "decode_message",
    "decode_varint",
    "encode_field",
    "encode_message",
    "encode_varint",
    "float_field",
    "key",
    "string_field",
    "to_signed",
    "varint_field",
]

_MAX_FIELD_NUMBER = (1 << 29) - 1
_UINT64_LIMIT = 1 << 64
_MAX_VARINT_BYTES = 10


class WireType(enum.IntEnum):
    """The wire types this module reads and writes (groups are not supported)."""

    VARINT = 0
    I64 = 1
    LEN = 2
    I32 = 5


_FIXED_SIZES = {WireType.I64: 8, WireType.I32: 4}
_WIRE_TYPES = frozenset(int(wire_type) for wire_type in WireType)


@dataclass(frozen=True)
class Field:
    """One field of a message as it is on the wire.

    Attributes:
        number: The field number (1 to 2**29 - 1).
        wire_type: How the value is encoded.
        value: An unsigned 64-bit ``int`` for ``VARINT``; the raw bytes for the
            others (8 for ``I64``, 4 for ``I32``, the payload for ``LEN``).
    """

    number: int
    wire_type: WireType
    value: int | bytes


def encode_varint(value: int) -> bytes:
    """Base-128 varint of ``value``.

    Args:
        value: An integer in ``[-2**63, 2**64)``; negative values are written as
            their 64-bit two's complement (10 bytes), as protobuf does for int64.

    Returns:
        The encoded bytes (1 to 10).

    Raises:
        ValueError: ``value`` is out of range.
    """
    if not -(1 << 63) <= value < _UINT64_LIMIT:
        raise ValueError(f"varint out of range: {value}")
    value &= _UINT64_LIMIT - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, offset: int) -> tuple[int, int]:
    """Reads one varint.

    Args:
        data: The buffer.
        offset: Where the varint starts.

    Returns:
        The unsigned value and the offset just past it.

    Raises:
        ModelError: The varint is truncated, longer than 10 bytes or above 2**64 - 1.
    """
    result = 0
    for index in range(_MAX_VARINT_BYTES):
        position = offset + index
        if position >= len(data):
            raise ModelError(f"malformed protobuf: varint truncated at byte {offset}")
        byte = data[position]
        result |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if result >= _UINT64_LIMIT:
                raise ModelError(
                    f"malformed protobuf: varint at byte {offset} exceeds 64 bits"
                )
            return result, position + 1
    raise ModelError(f"malformed protobuf: varint at byte {offset} exceeds 10 bytes")


def to_signed(value: int) -> int:
    """Reads an unsigned 64-bit varint value as the int64 it encodes."""
    return value - _UINT64_LIMIT if value >= 1 << 63 else value


def key(number: int, wire_type: WireType) -> bytes:
    """The tag that starts a field.

    Raises:
        ValueError: ``number`` is not a valid field number.
    """
    if not 1 <= number <= _MAX_FIELD_NUMBER:
        raise ValueError(f"invalid protobuf field number {number}")
    return encode_varint(number << 3 | wire_type)


def varint_field(number: int, value: int) -> bytes:
    """A varint field (int32, int64, enum, bool): tag then value."""
    return key(number, WireType.VARINT) + encode_varint(value)


def bytes_field(number: int, value: bytes) -> bytes:
    """A length-delimited field (bytes, or an embedded message's encoding)."""
    return key(number, WireType.LEN) + encode_varint(len(value)) + value


def string_field(number: int, value: str) -> bytes:
    """A string field, UTF-8 encoded."""
    return bytes_field(number, value.encode("utf-8"))


def float_field(number: int, value: float) -> bytes:
    """A ``float`` field: 4 bytes, IEEE 754 single precision, little-endian."""
    return key(number, WireType.I32) + struct.pack("<f", value)


def encode_field(field: Field) -> bytes:
    """Writes one decoded field back in its wire form.

    Raises:
        ValueError: The value does not fit the wire type.
    """
    if field.wire_type == WireType.VARINT:
        if not isinstance(field.value, int):
            raise ValueError(f"field {field.number}: varint value must be an int")
        return varint_field(field.number, field.value)
    if not isinstance(field.value, bytes):
        raise ValueError(f"field {field.number}: {field.wire_type.name} needs bytes")
    if field.wire_type == WireType.LEN:
        return bytes_field(field.number, field.value)
    size = _FIXED_SIZES[field.wire_type]
    if len(field.value) != size:
        raise ValueError(
            f"field {field.number}: {field.wire_type.name} needs {size} bytes"
        )
    return key(field.number, field.wire_type) + field.value


def encode_message(fields: Iterable[Field]) -> bytes:
    """Concatenates the wire form of ``fields``, in the order given."""
    return b"".join(encode_field(field) for field in fields)


def decode_message(data: bytes) -> list[Field]:
    """Splits a message into its fields, in wire order, without a schema.

    Embedded messages are not decoded: their payload is a ``LEN`` field's value.
    For canonically encoded input (what protobuf writers produce),
    ``encode_message(decode_message(data)) == data``.

    Args:
        data: The encoded message.

    Returns:
        The fields.

    Raises:
        ModelError: Truncated data, a group or unknown wire type, field number 0,
            or a length running past the end (the message says at which byte).
    """
    fields: list[Field] = []
    offset = 0
    while offset < len(data):
        start = offset
        tag, offset = decode_varint(data, offset)
        number, raw_type = tag >> 3, tag & 7
        if not 1 <= number <= _MAX_FIELD_NUMBER:
            raise ModelError(
                f"malformed protobuf: invalid field number {number} at byte {start}"
            )
        if raw_type not in _WIRE_TYPES:
            raise ModelError(
                f"malformed protobuf: unsupported wire type {raw_type} at byte {start}"
            )
        wire_type = WireType(raw_type)
        value: int | bytes
        if wire_type == WireType.VARINT:
            value, offset = decode_varint(data, offset)
        else:
            if wire_type == WireType.LEN:
                size, offset = decode_varint(data, offset)
            else:
                size = _FIXED_SIZES[wire_type]
            if size > len(data) - offset:
                raise ModelError(
                    f"malformed protobuf: field {number} at byte {start} needs "
                    f"{size} bytes, {len(data) - offset} remain"
                )
            value = bytes(data[offset : offset + size])
            offset += size
        fields.append(Field(number, wire_type, value))
    return fields
