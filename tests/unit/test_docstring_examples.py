"""The Examples sections of the public docstrings run as written."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import lfr.ciphers
import lfr.matcher
import lfr.secure


@pytest.mark.parametrize(
    "module", [lfr.ciphers, lfr.matcher, lfr.secure], ids=lambda m: m.__name__
)
def test_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
