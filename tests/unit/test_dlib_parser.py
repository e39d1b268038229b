"""lfr's parser of dlib's serialization: primitives, and robustness on the real file."""

from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lfr.errors import ModelError
from lfr.models import dlib_resnet
from tests.support.dlib_dat import RESNET, require_dat

# -- a small encoder of dlib's format ------------------------------------------


def enc_int(value: int) -> bytes:
    """dlib's integer: control byte (0x80 negative, low 4 bits n), n LE bytes."""
    magnitude = abs(value)
    size = max(1, (magnitude.bit_length() + 7) // 8)  # dlib writes 0 as 01 00
    return bytes([size | (0x80 if value < 0 else 0)]) + magnitude.to_bytes(
        size, "little"
    )


def enc_float(mantissa: int, exponent: int) -> bytes:
    return enc_int(mantissa) + enc_int(exponent)


def enc_string(text: bytes) -> bytes:
    return enc_int(len(text)) + text


def enc_tensor(array: np.ndarray) -> bytes:
    shape = array.shape
    return (
        enc_int(2)
        + b"".join(enc_int(dim) for dim in shape)
        + array.astype("<f4").tobytes()
    )


# -- primitives ----------------------------------------------------------------


@given(st.integers(-(2**63), 2**64 - 1))
def test_integers_round_trip(value: int) -> None:
    reader = dlib_resnet.Reader(enc_int(value) + b"\xaa")
    assert reader.read_int("x") == value
    assert reader.offset == len(enc_int(value))
    assert reader.remaining == 1


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x00", 0),  # no magnitude bytes
        (b"\x01\x00", 0),  # what dlib writes for zero
        (b"\x81\x00", 0),
        (b"\x01\x02", 2),
        (b"\x81\x05", -5),
        (b"\x82\x00\x01", -256),
        (b"\x02\x0a\xd7", 0xD70A),
        (b"\x88" + b"\x00" * 7 + b"\x80", -(2**63)),
    ],
)
def test_known_integers(data: bytes, value: int) -> None:
    assert dlib_resnet.Reader(data).read_int("x") == value


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated: count needs 1 bytes, 0 remain"),
        (b"\x04\x01\x02", "truncated: count needs 4 bytes, 2 remain"),
        (b"\x09" + b"\x01" * 9, "invalid integer control byte 0x09"),
        (b"\x11\x01", "invalid integer control byte 0x11"),
        (b"\x0f", "invalid integer control byte 0x0f"),
    ],
)
def test_malformed_integers(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        dlib_resnet.Reader(data).read_int("count")


def test_integer_ranges_are_checked() -> None:
    with pytest.raises(ModelError, match=r"byte 0: n is -1, expected 0\.\.10"):
        dlib_resnet.Reader(enc_int(-1)).read_int("n", 0, 10)
    reader = dlib_resnet.Reader(enc_int(1) + enc_int(3))
    assert reader.expect_int("version", 1) == 1
    with pytest.raises(ModelError, match="byte 2: expected version 2, found 3"):
        reader.expect_int("version", 2)


@given(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**15), 2**15 - 1).filter(lambda e: e not in (32000, 32001, 32002)),
)
def test_floats_are_mantissa_times_two_to_the_exponent(
    mantissa: int, exponent: int
) -> None:
    value = dlib_resnet.Reader(enc_float(mantissa, exponent)).read_float("f")
    try:
        expected = math.ldexp(float(mantissa), exponent)
    except OverflowError:
        expected = math.copysign(math.inf, mantissa)
    assert value == expected


@pytest.mark.parametrize(
    ("mantissa", "exponent", "value"),
    [
        (3, -1, 1.5),
        (-5, 2, -20.0),
        (0, 0, 0.0),
        (1, 32000, math.inf),
        (1, 32001, -math.inf),
        (1, 1, 2.0),
        (2**62, -62, 1.0),
    ],
)
def test_known_floats(mantissa: int, exponent: int, value: float) -> None:
    assert dlib_resnet.Reader(enc_float(mantissa, exponent)).read_float("f") == value


def test_nan_code() -> None:
    assert math.isnan(dlib_resnet.Reader(enc_float(0, 32002)).read_float("f"))


def test_float_exponent_beyond_int16_is_rejected() -> None:
    with pytest.raises(ModelError, match=r"f \(exponent\) is 40000"):
        dlib_resnet.Reader(enc_float(1, 40000)).read_float("f")


@given(st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=64))
def test_strings_round_trip(text: str) -> None:
    reader = dlib_resnet.Reader(enc_string(text.encode("ascii")))
    assert reader.read_string("s") == text
    assert reader.remaining == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (enc_string(b"x" * 65), r"s \(length\) is 65, expected 0\.\.64"),
        (enc_int(5) + b"abc", "truncated: s needs 5 bytes, 3 remain"),
        (enc_string("é".encode()), "not an ASCII string"),
        (b"\x08" + b"\xff" * 8, r"s \(length\) is 18446744073709551615"),
    ],
)
def test_malformed_strings(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        dlib_resnet.Reader(data).read_string("s")


def test_expected_strings() -> None:
    reader = dlib_resnet.Reader(enc_string(b"relu_") + enc_string(b"fc_2"))
    assert reader.expect_string("name", ("relu_", "relu_2")) == "relu_"
    with pytest.raises(ModelError, match="expected name 'relu_', found 'fc_2'"):
        reader.expect_string("name", ("relu_",))


def test_bools() -> None:
    reader = dlib_resnet.Reader(b"10\x01")
    assert reader.read_bool("b") is True
    assert reader.read_bool("b") is False
    with pytest.raises(ModelError, match="byte 2: b: expected '0' or '1', found 0x01"):
        reader.read_bool("b")


@given(
    st.tuples(*[st.integers(0, 3)] * 4),
    st.integers(0, 2**32 - 1),
)
def test_tensors_round_trip(shape: tuple[int, int, int, int], seed: int) -> None:
    array = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    reader = dlib_resnet.Reader(enc_tensor(array) + enc_int(1) + enc_int(7) * 4)
    out = reader.read_tensor("t")
    assert out.dtype == np.float32
    assert out.shape == shape
    np.testing.assert_array_equal(out, array)
    assert reader.read_alias_shape("a") == (7, 7, 7, 7)
    assert reader.remaining == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (enc_int(1), "expected t tensor version 2, found 1"),
        (
            enc_int(2) + enc_int(2**31) * 4,
            f"needs {4 * 2**124} bytes, 0 remain",
        ),
        (enc_int(2) + enc_int(-1), r"t \(num_samples\) is -1"),
        (enc_int(2) + enc_int(2**31 + 1), r"t \(num_samples\) is 2147483649"),
        (enc_tensor(np.zeros((1, 1, 2, 3)))[:-1], "needs 24 bytes, 23 remain"),
    ],
)
def test_malformed_tensors(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        dlib_resnet.Reader(data).read_tensor("t")


# -- the real file -------------------------------------------------------------


@pytest.fixture(scope="module")
def dat() -> bytes:
    return require_dat(RESNET).read_bytes()


class Span(NamedTuple):
    start: int
    end: int
    what: str


@pytest.fixture(scope="module")
def layout(dat: bytes) -> dict[str, list[Span]]:
    """Where each kind of field lies in the real file, found by watching the reader.

    Maps "int", "bool", "string" (the characters) and "tensor data" to spans.
    """
    spans: dict[str, list[Span]] = {
        "int": [],
        "bool": [],
        "string": [],
        "tensor data": [],
    }

    class Spy(dlib_resnet.Reader):
        def read_int(
            self, what: str, low: int = -(2**63), high: int = 2**64 - 1
        ) -> int:
            start = self.offset
            value = super().read_int(what, low, high)
            spans["int"].append(Span(start, self.offset, what))
            return value

        def read_bool(self, what: str) -> bool:
            start = self.offset
            value = super().read_bool(what)
            spans["bool"].append(Span(start, self.offset, what))
            return value

        def read_string(self, what: str, max_size: int = 64) -> str:
            value = super().read_string(what, max_size)
            spans["string"].append(Span(self.offset - len(value), self.offset, what))
            return value

        def read_tensor(self, what: str) -> npt.NDArray[np.float32]:
            value = super().read_tensor(what)
            spans["tensor data"].append(
                Span(self.offset - 4 * value.size, self.offset, what)
            )
            return value

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dlib_resnet, "Reader", Spy)
        dlib_resnet.parse_resnet(dat)
    return spans


def test_real_file_parses_into_the_documented_layers(dat: bytes) -> None:
    network = dlib_resnet.parse_resnet(dat)
    counts = Counter(
        layer.kind if isinstance(layer, dlib_resnet.Pool) else type(layer).__name__
        for layer in network.layers
    )
    assert counts == {
        "Conv": 29,
        "Affine": 29,
        "Relu": 29,
        "AddPrev": 14,
        "avg_pool": 5,
        "max_pool": 1,
        "Fc": 1,
    }
    np.testing.assert_allclose(network.means, (122.782, 117.001, 104.298), atol=1e-4)
    assert network.size == (150, 150)
    first = network.layers[0]
    assert isinstance(first, dlib_resnet.Conv)
    assert first.weights.shape == (32, 3, 7, 7)
    assert (first.stride, first.pad) == (2, 0)
    last = network.layers[-1]
    assert isinstance(last, dlib_resnet.Fc)
    assert last.weights.shape == (256, 128)
    params = sum(
        layer.weights.size + layer.bias.size
        for layer in network.layers
        if isinstance(layer, dlib_resnet.Conv)
    )
    assert 5_500_000 < params < 5_700_000


def test_layout_covers_the_whole_file(
    dat: bytes, layout: dict[str, list[Span]]
) -> None:
    covered = np.zeros(len(dat), dtype=np.int8)
    for spans in layout.values():
        for span in spans:
            covered[span.start : span.end] += 1
    # Every byte is part of exactly one primitive: an integer (including lengths,
    # dims and float parts), a bool, a string's characters or tensor data.
    assert np.min(covered) == 1
    assert np.max(covered) == 1
    assert len(layout["string"]) == 1 + 1 + 108  # loss, input, one name per layer


def _parse_fails(data: bytes) -> str:
    with pytest.raises(ModelError) as info:
        dlib_resnet.parse_resnet(data)
    message = str(info.value)
    assert message.startswith("malformed dlib model at byte ")
    return message


def test_truncated_anywhere_in_the_structure_raises(
    dat: bytes, layout: dict[str, list[Span]]
) -> None:
    # Every cut inside the header (loss, versions, input layer, first layer's
    # fields), then a cut inside or right after every field of every other kind.
    first_tensor = layout["tensor data"][0].start
    cuts = set(range(first_tensor + 1))
    for kind in ("int", "bool", "string", "tensor data"):
        for span in layout[kind][::7]:
            cuts.update({span.start, (span.start + span.end) // 2, span.end - 1})
    cuts.update({len(dat) - 1, len(dat) // 2})
    for cut in sorted(cuts):
        message = _parse_fails(dat[:cut])
        offset = int(message.split("byte ")[1].split(":")[0])
        assert offset <= cut, message


@settings(max_examples=25)
@given(st.data())
def test_truncated_at_random_offsets_raises(dat: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(dat) - 1), label="cut")
    assert "truncated" in _parse_fails(dat[:cut])


def test_trailing_bytes_raise(dat: bytes) -> None:
    assert "1 unexpected bytes after the network" in _parse_fails(dat + b"\x00")


def test_the_real_file_ends_exactly_after_the_network(dat: bytes) -> None:
    assert isinstance(dlib_resnet.parse_resnet(dat), dlib_resnet.DlibNetwork)


def _replace_once(data: bytes, old: bytes, new: bytes, occurrence: int = 0) -> bytes:
    index = -1
    for _ in range(occurrence + 1):
        index = data.index(old, index + 1)
    return data[:index] + new + data[index + len(old) :]


@pytest.mark.parametrize(
    ("old", "new", "occurrence", "message"),
    [
        (b"loss_metric_2", b"loss_metric_3", 0, "expected loss layer"),
        (b"input_rgb_image_sized", b"input_rgb_image_sizeD", 0, "input layer"),
        (b"max_pool_2", b"avg_pool_2", 0, "layer 3 .max_pool. name 'max_pool_2'"),
        (b"relu_", b"relU_", 0, "layer 2 .relu. name"),
        (b"affine_", b"affineX", 5, "layer [0-9]+ .affine. name"),
        (
            b"add_prev_",
            b"relu_\x04\x04\x04\x04",
            3,
            "expected layer .* .add_prev. name",
        ),
        (b"con_4", b"con_7", 28, "name 'con_4' or 'con_5' or 'con_6'"),
        (b"fc_2", b"fc_3", 0, "layer 107 .fc. name 'fc_2'"),
        # A layer name whose length says more than a name can be.
        (b"\x01\x05relu_", b"\x01\x45relu_", 0, r"length\) is 69, expected 0\.\.64"),
        (b"\x01\x05relu_", b"\x08relu_", 0, "length"),
    ],
)
def test_corrupted_layer_names_raise(
    dat: bytes, old: bytes, new: bytes, occurrence: int, message: str
) -> None:
    assert len(old) == len(new) or new.startswith(b"\x08")
    corrupted = _replace_once(dat, old, new, occurrence)
    assert corrupted != dat
    with pytest.raises(ModelError, match=message):
        dlib_resnet.parse_resnet(corrupted)


def _first_conv_params(dat: bytes) -> int:
    """Offset of the first convolution's params tensor (right after its name)."""
    return dat.index(b"\x01\x05con_4") + 7


def _with_first_conv_params(
    dat: bytes, dims: tuple[int, ...], values: int | None = None
) -> bytes:
    """The file with the first conv's params header replaced by ``dims``.

    With ``values``, the data keeps only its first ``values`` floats.
    """
    start = _first_conv_params(dat)
    reader = dlib_resnet.Reader(dat, start)
    params = reader.read_tensor("params")
    header = enc_int(2) + b"".join(enc_int(d) for d in dims)
    if values is None:
        return dat[:start] + header + dat[reader.offset - 4 * params.size :]
    data_start = reader.offset - 4 * params.size
    return (
        dat[:start]
        + header
        + dat[data_start : data_start + 4 * values]
        + dat[reader.offset :]
    )


@pytest.mark.parametrize(
    "dims",
    [
        (4736 + 1, 1, 1, 1),  # one value too many: what follows is misread
        (4736 - 1, 1, 1, 1),
        (0, 1, 1, 1),
        (1, 1, 1, 1),
        (32, 3, 7, 7),  # the weights alone
    ],
)
def test_misaligning_tensor_sizes_raise(dat: bytes, dims: tuple[int, ...]) -> None:
    _parse_fails(_with_first_conv_params(dat, dims))


def test_absurd_tensor_sizes_raise_without_allocating(dat: bytes) -> None:
    corrupted = _with_first_conv_params(dat, (2**31,) * 4)
    assert "truncated: layer 0 (con) params of shape" in _parse_fails(corrupted)


def test_wrong_parameter_counts_raise(dat: bytes) -> None:
    # Consistent framing, but one bias missing.
    corrupted = _with_first_conv_params(dat, (4735, 1, 1, 1), values=4735)
    assert "expected 4736 layer 0 (con) params, found 4735" in _parse_fails(corrupted)


def test_non_finite_weights_raise(dat: bytes) -> None:
    header = enc_int(2) + enc_int(4736) + enc_int(1) * 3
    start = _first_conv_params(dat) + len(header)  # the first weight
    corrupted = dat[:start] + np.float32(np.nan).tobytes() + dat[start + 4 :]
    assert "layer 0 (con) params contain NaN or infinity" in _parse_fails(corrupted)


def test_original_first_conv_params_header(dat: bytes) -> None:
    # The fixture the size tests edit: 32 * 3 * 7 * 7 weights + 32 biases, flat.
    start = _first_conv_params(dat)
    header = enc_int(2) + enc_int(4736) + enc_int(1) * 3
    assert dat[start : start + len(header)] == header


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # The versions after the loss: the first tag (1) made an add_layer (2).
        (
            b"\x01\x02\x01\x01",
            b"\x01\x02\x01\x02",
            "expected version of wrapper 5 .skip1. 1, found 2",
        ),
        # The input size.
        (
            b"\x01\x96\x01\x96",
            b"\x01\x96\x01\x95",
            "expected input columns 150, found 149",
        ),
    ],
)
def test_corrupted_structure_integers_raise(
    dat: bytes, old: bytes, new: bytes, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        dlib_resnet.parse_resnet(_replace_once(dat, old, new))


# Integers that do not shape the network: dlib itself reads them without checks.
_FREE_INTEGERS = (
    "mantissa",
    "exponent",
    "sample expansion factor",
    "x_grad",
    "cached_output",
    "params_grad",
)


@pytest.mark.parametrize("value", [2**40, -7, 12345])
def test_corrupted_size_integers_raise(
    dat: bytes, layout: dict[str, list[Span]], value: int
) -> None:
    # Every integer up to the fourth layer (versions, sizes, strides, paddings,
    # alias shapes, modes, string lengths) made absurd.
    fourth_name = layout["string"][5].start
    region = [span for span in layout["int"] if span.start < fourth_name]
    assert len(region) > 200
    for span in region:
        corrupted = dat[: span.start] + enc_int(value) + dat[span.end :]
        if any(word in span.what for word in _FREE_INTEGERS):
            try:
                dlib_resnet.parse_resnet(corrupted)
                continue
            except ModelError as exc:
                message = str(exc)
            # A value dlib would accept, or one lfr rejects (a mean outside
            # 0..255, a negative size): never misframed.
            assert "truncated" not in message, span
        else:
            _parse_fails(corrupted)


@settings(max_examples=40)
@given(st.data())
def test_random_byte_flips_raise_model_error_or_convert(
    dat: bytes, layout: dict[str, list[Span]], data: st.DataObject
) -> None:
    # Half the flips land in the structure (everything but tensor data, which is
    # 99.97% of the file), half anywhere.
    structural = [span for kind in ("int", "bool", "string") for span in layout[kind]]
    if data.draw(st.booleans(), label="structural"):
        span = data.draw(st.sampled_from(structural), label="field")
        position = data.draw(st.integers(span.start, span.end - 1), label="position")
    else:
        position = data.draw(st.integers(0, len(dat) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="mask")
    corrupted = bytearray(dat)
    corrupted[position] ^= mask
    try:
        model = dlib_resnet.convert_resnet(bytes(corrupted))
    except ModelError as exc:
        error = str(exc)
    else:
        assert model[:2] == b"\x08\x08"  # ir_version 8: a model was written
        return
    assert error.startswith(("malformed dlib model at byte", "dlib model:"))
