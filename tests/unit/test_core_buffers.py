"""How ``lfr._core`` reads and writes arrays (rust/py_buffer.rs).

Errors say what was wrong, keep the exporter's own error as their cause, and never
swallow an interrupt."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from lfr import _core


@pytest.fixture
def matcher() -> _core.Matcher:
    m = _core.Matcher(4)
    m.add(np.array([1], np.int64), np.eye(1, 4, dtype=np.float32))
    return m


def outs() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return np.empty((1, 1), np.int64), np.empty((1, 1), np.float32)


def test_a_search_writes_its_outputs(matcher: _core.Matcher) -> None:
    ids, scores = outs()
    matcher.search(np.eye(1, 4, dtype=np.float32), 1, ids, scores)
    assert ids.tolist() == [[1]]
    assert scores[0, 0] == pytest.approx(1.0)


def test_a_read_only_output_is_refused_with_numpys_reason_as_cause(
    matcher: _core.Matcher,
) -> None:
    ids, scores = outs()
    ids.flags.writeable = False
    with pytest.raises(ValueError, match="out_ids must be a writable") as info:
        matcher.search(np.eye(1, 4, dtype=np.float32), 1, ids, scores)
    assert info.value.__cause__ is not None  # numpy's own "read-only" error
    assert "read-only" in str(info.value.__cause__)


def test_a_non_buffer_is_a_type_error_with_the_exporters_reason(
    matcher: _core.Matcher,
) -> None:
    ids, scores = outs()
    with pytest.raises(TypeError, match="queries must be a float32 array") as info:
        matcher.search([[1.0, 0.0, 0.0, 0.0]], 1, ids, scores)
    assert isinstance(info.value.__cause__, TypeError)


def test_a_wrong_dtype_has_no_exporter_cause(matcher: _core.Matcher) -> None:
    ids, scores = outs()
    with pytest.raises(TypeError, match="queries must be a float32 array") as info:
        matcher.search(np.eye(1, 4), 1, ids, scores)  # float64
    assert info.value.__cause__ is None  # numpy exported it; the type was wrong


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python exporters are 3.12+")
@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_the_exporter_is_not_swallowed(
    matcher: _core.Matcher, raised: type[BaseException]
) -> None:
    class Exporter:
        def __buffer__(self, flags: int) -> memoryview:
            raise raised

    ids, scores = outs()
    with pytest.raises(raised):
        matcher.search(Exporter(), 1, ids, scores)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python exporters are 3.12+")
@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_on_the_second_ask_for_an_output_is_not_swallowed(
    matcher: _core.Matcher, raised: type[BaseException]
) -> None:
    # A writable export is refused with an ordinary error; asked again read-only (to
    # word the error), the exporter is interrupted: the interrupt wins.
    class Exporter:
        def __buffer__(self, flags: int) -> memoryview:
            if flags & 1:  # PyBUF_WRITABLE
                raise BufferError("read-only")
            raise raised

    _, scores = outs()
    with pytest.raises(raised):
        matcher.search(np.eye(1, 4, dtype=np.float32), 1, Exporter(), scores)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python exporters are 3.12+")
def test_an_ordinary_error_on_the_second_ask_is_reported_as_ours(
    matcher: _core.Matcher,
) -> None:
    # Negative control of the test above: a plain error there is not passed through.
    class Exporter:
        def __buffer__(self, flags: int) -> memoryview:
            raise BufferError("no")

    _, scores = outs()
    with pytest.raises(TypeError, match="out_ids has the wrong dtype"):
        matcher.search(np.eye(1, 4, dtype=np.float32), 1, Exporter(), scores)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python exporters are 3.12+")
def test_a_scan_passes_an_interrupt_through_and_words_other_errors() -> None:
    calls = []

    class Exporter:
        def __init__(self, raised: type[BaseException] | None) -> None:
            self.raised = raised

        def __buffer__(self, flags: int) -> memoryview:
            calls.append(flags)
            # The first ask (the shape) succeeds; the copy's ask fails.
            if len(calls) % 2 == 0 and self.raised is not None:
                raise self.raised
            return memoryview(bytearray(64))

    with pytest.raises(KeyboardInterrupt):
        _core.scan_memory([Exporter(KeyboardInterrupt)], b"k" * 64)
    with pytest.raises(TypeError, match="masked secrets must be"):
        _core.scan_memory([Exporter(ValueError)], b"k" * 64)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python exporters are 3.12+")
def test_an_interrupted_output_export_is_not_asked_again(
    matcher: _core.Matcher,
) -> None:
    asked: list[int] = []

    class Exporter:
        def __buffer__(self, flags: int) -> memoryview:
            asked.append(flags)
            raise KeyboardInterrupt

    _, scores = outs()
    with pytest.raises(KeyboardInterrupt):
        matcher.search(np.eye(1, 4, dtype=np.float32), 1, Exporter(), scores)
    assert len(asked) == 1
