"""``with`` support for lfr's objects that hold resources and have ``close()``."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Closing"]

_T = TypeVar("_T", bound="Closing")


class Closing:
    """Makes ``with obj:`` call ``obj.close()`` on the way out, errors or not."""

    __slots__ = ()

    def close(self) -> None:
        """Releases what the object holds (subclasses implement it)."""
        raise NotImplementedError

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
