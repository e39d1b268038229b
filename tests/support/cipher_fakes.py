"""A key-referencing ``AESGCM`` and the old key discipline (for test_ciphers.py).

Nothing here imports lfr, so that a fresh interpreter can :func:`install` the fakes
before ``import lfr`` runs the self-test. :func:`install` replaces ``cryptography``'s
``AESGCM`` with a key-referencing one and, with ``old=True``, puts the pre-issue-15
key discipline into :mod:`lfr.keys` as soon as that module has run, before
:mod:`lfr.ciphers` (and its self-test) is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

import cryptography.hazmat.primitives.ciphers.aead as aead

REAL_AESGCM = aead.AESGCM


class ReferencingAESGCM:
    """An AES-GCM that keeps a reference to its key and reads it at each operation.

    What ``cryptography`` built against OpenSSL < 3.2 does (``LazyEvpCipherAead``).
    """

    def __init__(self, key: Any) -> None:
        self._key = key  # no copy

    def _now(self) -> Any:
        return REAL_AESGCM(bytes(memoryview(self._key)))  # whatever is there now

    def encrypt(self, nonce: bytes, data: Any, aad: bytes | None) -> bytes:
        return bytes(self._now().encrypt(nonce, data, aad))

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
        return bytes(self._now().decrypt(nonce, data, aad))

    def decrypt_into(
        self, nonce: bytes, data: bytes, aad: bytes | None, buf: Any
    ) -> int:
        return int(self._now().decrypt_into(nonce, data, aad, buf))


def old_discipline(buf: Any) -> tuple[Any, memoryview]:
    """The discipline before issue 15: a cipher from a temporary copy, wiped at once."""
    view = buf.memoryview()
    temporary = bytearray(view)
    aead_class = sys.modules["lfr.keys"].AESGCM  # the one lfr.keys uses now
    cipher = aead_class(temporary)
    temporary[:] = bytes(len(temporary))
    return cipher, view


def install(*, old: bool) -> None:
    """Makes every later ``import lfr`` run with the fakes."""
    aead.AESGCM = ReferencingAESGCM  # type: ignore[assignment]
    if old:
        sys.meta_path.insert(0, _PatchKeys(old_discipline))


class _PatchKeys(importlib.abc.MetaPathFinder):
    def __init__(self, discipline: Any) -> None:
        self._discipline = discipline

    def find_spec(
        self, fullname: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "lfr.keys":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        discipline = self._discipline

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> ModuleType | None:
                return None

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)
                module._key_cipher = discipline  # type: ignore[attr-defined]

        spec.loader = Loader()
        return spec
