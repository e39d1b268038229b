"""Child process of the key-file scans in tests/integration/test_key_forensics.py.

``python -m tests.support.keyfile_forensics MODE FOLDER WHICH``: loads one key from
FOLDER: WHICH is ``store`` or ``watchlist`` (``store.key``, ``watchlist.key``:
:meth:`lfr.Key.from_file`) or ``signing`` (the audit signing key, ``signing.key``:
:meth:`lfr.SigningKey.load`); saves it again as ``MODE-WHICH.key``, destroys it,
collects garbage, prints
``{"done": true}`` and waits for a line on stdin, so that the test can scan this
process's whole memory from outside.

MODE ``lfr`` uses lfr's code. MODE ``old`` (the negative control) puts back the
code lfr had before: a buffered ``open``/``read``, ``bytes`` copies from ``strip`` and
``partition`` and the :mod:`base64` module for :class:`lfr.Key`, and
``cryptography``'s PEM parser and serialiser for the signing key.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import lfr
from lfr._files import write_file
from lfr.audit import SigningKey


def old_key_from_file(cls: Any, path: str | os.PathLike[str]) -> lfr.Key:
    """``Key.from_file`` before issue 15 (its wipes included)."""
    with open(path, "rb") as f:
        raw = bytearray(f.read(256))
    try:
        _tag, _, body = bytes(raw).strip().partition(b":")
        material = bytearray(base64.b64decode(body, validate=True))
        try:
            return lfr.Key._filled(lambda view: view.__setitem__(slice(None), material))
        finally:
            material[:] = bytes(len(material))
    finally:
        raw[:] = bytes(len(raw))


def old_key_save(self: lfr.Key, path: str | os.PathLike[str], **_: Any) -> Path:
    """``Key.save`` before issue 15 (its wipe included)."""
    view = self._view()
    text = bytearray(b"lfr-key-v1:")
    text += base64.b64encode(view.data) + b"\n"
    del view
    try:
        return write_file(Path(path), text, 0o600, overwrite=False)
    finally:
        text[:] = bytes(len(text))


def old_signing_load(cls: Any, path: str | os.PathLike[str]) -> SigningKey:
    """``SigningKey.load`` before issue 15 (its wipe included)."""
    with open(path, "rb") as f:
        assert not stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077
        data = bytearray(f.read(16 * 1024))
    try:
        key = serialization.load_pem_private_key(data, password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return SigningKey(key)
    finally:
        data[:] = bytes(len(data))


def old_signing_save(self: SigningKey, path: str | os.PathLike[str]) -> Path:
    """``SigningKey.save`` before issue 15 (its wipe included)."""
    assert self._key is not None
    pem = bytearray(
        self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    try:
        return write_file(Path(path), pem, 0o600, overwrite=False)
    finally:
        pem[:] = bytes(len(pem))


def main(mode: str, folder: Path, which: str) -> int:
    if mode == "old":
        lfr.Key.from_file = classmethod(old_key_from_file)  # type: ignore[assignment, method-assign]
        lfr.Key.save = old_key_save  # type: ignore[method-assign]
        SigningKey.load = classmethod(old_signing_load)  # type: ignore[assignment, method-assign]
        SigningKey.save = old_signing_save  # type: ignore[assignment, method-assign]
    elif mode != "lfr":
        raise SystemExit(f"unknown mode {mode}")
    key: lfr.Key | SigningKey
    if which == "signing":
        key = SigningKey.load(folder / "signing.key")
    else:
        key = lfr.Key.from_file(folder / f"{which}.key")
    key.save(folder / f"{mode}-{which}.key")
    key.destroy()
    del key
    gc.collect()
    print(json.dumps({"done": True}), flush=True)
    sys.stdin.readline()  # the test scans this process now
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
