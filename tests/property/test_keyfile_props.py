"""lfr's base64 codec for key files agrees with the base64 module, and is strict."""

from __future__ import annotations

import base64
import binascii

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lfr._keyfile import b64decode_into, b64decoded_size, b64encode_into

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def u8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8).copy()


def decode(text: bytes) -> bytes:
    arr = u8(text)
    out = np.zeros(b64decoded_size(arr), np.uint8)
    b64decode_into(arr, out)
    return out.tobytes()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_encode_and_decode_agree_with_the_base64_module(data: bytes) -> None:
    text = base64.b64encode(data)
    out = np.zeros(len(text), np.uint8)
    b64encode_into(u8(data), out)
    assert out.tobytes() == text
    assert decode(text) == base64.b64decode(text, validate=True) == data


@settings(max_examples=500, deadline=None)
@given(
    st.binary(min_size=1, max_size=60),
    st.data(),
)
def test_a_damaged_text_is_refused_or_decoded_as_the_base64_module_does(
    data: bytes, draw: st.DataObject
) -> None:
    text = bytearray(base64.b64encode(data))
    at = draw.draw(st.integers(0, len(text) - 1))
    action = draw.draw(st.sampled_from(["replace", "delete", "insert"]))
    byte = draw.draw(st.integers(0, 255))
    if action == "replace":
        text[at] = byte
    elif action == "delete":
        del text[at]
    else:
        text.insert(at, byte)
    message = ""
    try:
        ours: bytes | None = decode(bytes(text))
    except ValueError as exc:
        ours, message = None, str(exc)
    assert bytes(text).decode("latin-1") not in message  # no key material
    try:
        theirs: bytes | None = base64.b64decode(bytes(text), validate=True)
    except binascii.Error:
        theirs = None
    if ours is not None:  # what lfr accepts, the base64 module accepts alike
        assert ours == theirs
    outside = action != "delete" and byte not in ALPHABET + b"="
    if theirs is None or outside:
        assert ours is None
    if base64.b64encode(theirs or b"") != bytes(text):  # not canonical
        assert ours is None


@given(st.binary(min_size=1, max_size=30), st.sampled_from(b" \n\t\r.-_:,\x00\xff"))
def test_characters_outside_the_alphabet_are_refused(data: bytes, bad: int) -> None:
    text = bytearray(base64.b64encode(data))
    text[0] = bad
    try:
        decode(bytes(text))
    except ValueError:
        return
    raise AssertionError("accepted a character outside the alphabet")
