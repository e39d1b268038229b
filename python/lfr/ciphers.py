"""Data ciphers: one data key in secure memory, owned by the cipher that uses it.

A :class:`DataCipher` holds an AES-256-GCM data key in its own
:class:`~lfr.secure.SecureBuffer` and builds its ``cryptography`` cipher over a view
of that buffer (:func:`lfr.keys._key_cipher`). The buffer lives exactly as long as the
cipher: :meth:`DataCipher.close` (or leaving its ``with`` block, or dropping the last
reference) drops the cipher first and then wipes and frees the buffer, and a closed
data cipher refuses every use. The key is made there (:meth:`DataCipher.generate`) or
unwrapped straight into it (:meth:`DataCipher.unwrap`, through
:meth:`~lfr.keys.SecureKeyProvider.unwrap_into` where the provider has it), never
through a Python ``bytes``.

That ownership is what makes lfr safe with every build of ``cryptography``: builds
against OpenSSL 3.2 or later copy the key into the cipher, older ones keep a reference
to the key object and read it at each operation. Wiping a key's buffer while its
cipher is still in use would, with the latter, encrypt with an all-zero key.
:func:`check_ciphers` proves the discipline with a known-answer test each time this
module is imported (``import lfr`` imports it), and raises
:class:`~lfr.errors.CipherSelfTestError` if a cipher built the way lfr builds them
does not encrypt with its key.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np
from cryptography import __version__ as _cryptography_version
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lfr import keys as _keys
from lfr.errors import CipherSelfTestError
from lfr.keys import KEY_SIZE, Key, KeyProvider, Uncopyable
from lfr.secure import SecureBuffer

__all__ = ["DataCipher", "check_ciphers", "references_key"]


class DataCipher(Uncopyable):
    """AES-256-GCM with a data key that lives in, and only in, the cipher's buffer.

    Make one with :meth:`generate`, :meth:`unwrap` or :meth:`from_key`; use it as a
    context manager, or call :meth:`close`. It has ``AESGCM``'s ``encrypt``,
    ``decrypt`` and ``decrypt_into``, so :func:`lfr.keys.seal`,
    :func:`~lfr.keys.open_sealed` and :func:`~lfr.keys.open_sealed_into` take it,
    and :meth:`seal` / :meth:`open` / :meth:`open_into` as shorthands. It cannot be
    pickled or copied, and its repr shows no key material.

    Examples:
        >>> from lfr.ciphers import DataCipher
        >>> with DataCipher.generate() as cipher:
        ...     sealed = cipher.seal(b"record", b"aad")
        ...     cipher.open(sealed, b"aad")
        b'record'
        >>> cipher.closed
        True
    """

    __slots__ = ("_aead", "_buf", "_view")

    def __init__(self, _buf: SecureBuffer) -> None:
        if not isinstance(_buf, SecureBuffer) or len(_buf) != KEY_SIZE:
            raise TypeError(
                "use DataCipher.generate, DataCipher.unwrap or DataCipher.from_key"
            )
        self._buf = _buf
        # Looked up at call time, so that the tests can put another discipline here.
        aead, self._view = _keys._key_cipher(_buf)
        self._aead: AESGCM | None = aead

    # -- making one ----------------------------------------------------------------

    @classmethod
    def _filled(cls, write: Callable[[memoryview], None]) -> DataCipher:
        """A data cipher whose key ``write`` puts into its fresh secure buffer."""
        buf = SecureBuffer(KEY_SIZE, allow_unlocked=True)
        try:
            view = buf.memoryview()
            try:
                write(view)
            finally:
                view.release()
            return cls(buf)
        except BaseException:
            buf.discard()
            raise

    @classmethod
    def generate(cls) -> DataCipher:
        """A new random data key (the operating system's CSPRNG), read into place."""

        def fill(view: memoryview) -> None:
            with open("/dev/urandom", "rb", buffering=0) as rng:
                if rng.readinto(view) != KEY_SIZE:
                    raise OSError("short read from /dev/urandom")

        return cls._filled(fill)

    @classmethod
    def unwrap(
        cls, provider: KeyProvider, wrapped: bytes, context: bytes
    ) -> DataCipher:
        """Unwraps a data key with ``provider`` straight into a new data cipher.

        A provider with ``unwrap_into`` (:class:`~lfr.keys.SecureKeyProvider`; a
        :class:`~lfr.keys.Key` is one) decrypts into the cipher's secure buffer and
        no other copy is made. Otherwise ``provider.unwrap`` is called, its result
        copied into the buffer and, if it is a ``bytearray``, overwritten with zeros;
        a ``bytes`` result cannot be overwritten (docs/data-handling.md).

        Raises:
            lfr.errors.WrongKeyError: ``wrapped`` is not ``provider``'s for
                ``context``, or was altered.
            ValueError: The provider returned a key that is not 32 bytes.
        """
        unwrap_into = getattr(provider, "unwrap_into", None)
        if callable(unwrap_into):

            def into(view: memoryview) -> None:
                unwrap_into(wrapped, context, view)

            return cls._filled(into)

        def fallback(view: memoryview) -> None:
            plain = provider.unwrap(wrapped, context)
            try:
                if len(plain) != KEY_SIZE:
                    raise ValueError(
                        f"the key provider returned {len(plain)} bytes, "
                        f"not a {KEY_SIZE}-byte data key"
                    )
                view[:] = plain
            finally:
                if isinstance(plain, bytearray):
                    plain[:] = bytes(len(plain))

        return cls._filled(fallback)

    @classmethod
    def from_key(cls, data_key: Any) -> DataCipher:
        """A data cipher with its own copy of ``data_key`` (the caller wipes theirs).

        Raises:
            ValueError: ``data_key`` is not a buffer of :data:`~lfr.keys.KEY_SIZE`
                bytes.
        """
        source = memoryview(data_key).cast("B")
        if source.nbytes != KEY_SIZE:
            raise ValueError(f"a data key has {KEY_SIZE} bytes, got {source.nbytes}")

        def copy(view: memoryview) -> None:
            view[:] = source

        return cls._filled(copy)

    # -- using it --------------------------------------------------------------------

    def wrap(self, provider: KeyProvider, context: bytes) -> bytes:
        """The data key wrapped by ``provider`` for storage, bound to ``context``.

        A :class:`~lfr.keys.Key` reads the key from this cipher's buffer. Any other
        provider gets a ``bytearray`` copy (what :class:`~lfr.keys.KeyProvider`
        promises), overwritten with zeros when ``wrap`` returns.
        """
        view = self._live_view()
        if isinstance(provider, Key):
            return provider.wrap(view, context)
        copy = bytearray(view)
        try:
            return provider.wrap(copy, context)
        finally:
            copy[:] = bytes(len(copy))

    def encrypt(self, nonce: bytes, data: Any, associated_data: bytes | None) -> bytes:
        """``AESGCM.encrypt`` with this data key."""
        return self._cipher().encrypt(nonce, data, associated_data)

    def decrypt(
        self, nonce: bytes, data: bytes, associated_data: bytes | None
    ) -> bytes:
        """``AESGCM.decrypt`` with this data key."""
        return self._cipher().decrypt(nonce, data, associated_data)

    def decrypt_into(
        self, nonce: bytes, data: bytes, associated_data: bytes | None, buf: Any
    ) -> int:
        """``AESGCM.decrypt_into`` with this data key."""
        return self._cipher().decrypt_into(nonce, data, associated_data, buf)

    def seal(self, plaintext: Any, aad: bytes) -> bytes:
        """:func:`lfr.keys.seal` with this data key."""
        return _keys.seal(self, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """:func:`lfr.keys.open_sealed` with this data key."""
        return _keys.open_sealed(self, sealed, aad)

    def open_into(self, sealed: bytes, aad: bytes, out: Any) -> None:
        """:func:`lfr.keys.open_sealed_into` with this data key."""
        _keys.open_sealed_into(self, sealed, aad, out)

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Drops the cipher, then wipes and frees the key. Idempotent.

        Any later use raises ``ValueError``.
        """
        self._aead = None  # first: a referencing cipher reads the buffer until now
        self._view.release()
        self._buf.discard()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._aead is None

    def __enter__(self) -> DataCipher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise ValueError("the data cipher is closed")
        return self._aead

    def _live_view(self) -> memoryview:
        self._cipher()
        return self._view

    def __repr__(self) -> str:
        return "DataCipher(closed)" if self.closed else "DataCipher(<hidden>)"


# -- the import-time self-test ---------------------------------------------------------

# AES-256-GCM known answer: Test Case 15 of McGrew & Viega, "The Galois/Counter Mode
# of Operation" (the key is public; only its effect is checked).
_KAT_KEY = bytes.fromhex("feffe9928665731c6d6a8f9467308308" * 2)
_KAT_NONCE = bytes.fromhex("cafebabefacedbaddecaf888")
_KAT_PLAIN = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
_KAT_SEALED = bytes.fromhex(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
    "b094dac5d93471bdec1a502270e3cc6c"
)


class _KatProvider:
    """A provider without ``unwrap_into``: exercises the ``bytearray`` fallback."""

    key_id = "lfr-self-test"

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes:
        return bytes(data_key)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytearray:
        return bytearray(wrapped)


def references_key() -> bool:
    """Whether the installed ``AESGCM`` keeps a reference to its key (no copy).

    Builds a cipher on a ``bytearray``, zeroes it, and sees which key encrypts.
    Informational: lfr's discipline is safe either way (:func:`check_ciphers`).
    """
    scratch = bytearray(_KAT_KEY)
    aead = AESGCM(scratch)
    scratch[:] = bytes(KEY_SIZE)
    return aead.encrypt(_KAT_NONCE, _KAT_PLAIN, None) != _KAT_SEALED


def check_ciphers() -> None:
    """Proves that ciphers built the way lfr builds them encrypt with their key.

    A known-answer test run through the real construction paths, each of which
    wipes whatever temporary it made before the cipher is used: a data cipher
    made from a key (:meth:`DataCipher.from_key`), one unwrapped by a provider
    without ``unwrap_into`` (its ``bytearray`` wiped), one unwrapped by a
    :class:`~lfr.keys.Key` into its buffer, and a :class:`~lfr.keys.Key` itself
    (the key-encryption key). Then each data cipher is closed and must refuse use.
    Runs on import of this module; costs a few secure pages and microseconds.

    Raises:
        lfr.errors.CipherSelfTestError: A cipher encrypted with something other than
            its key (for example an all-zero key, wiped too early), or a closed
            cipher still worked.
    """
    kat = np.frombuffer(_KAT_KEY, np.uint8)
    kek = Key._filled(lambda view: view.__setitem__(slice(None), kat))
    checks: list[tuple[str, Any]] = []
    try:
        checks.append(("a Key", kek))
        checks.append(("DataCipher.from_key", DataCipher.from_key(_KAT_KEY)))
        checks.append(
            (
                "DataCipher.unwrap (bytearray fallback)",
                DataCipher.unwrap(_KatProvider(), _KAT_KEY, b""),
            )
        )
        wrapped = kek.wrap(_KAT_KEY, b"lfr self-test")
        checks.append(
            (
                "DataCipher.unwrap (Key.unwrap_into)",
                DataCipher.unwrap(kek, wrapped, b"lfr self-test"),
            )
        )
        for name, cipher in checks:
            got = cipher._cipher().encrypt(_KAT_NONCE, _KAT_PLAIN, None)
            if got != _KAT_SEALED:
                raise CipherSelfTestError(
                    f"lfr's cipher self-test failed: a cipher made by {name} does not "
                    "encrypt with its key (known-answer test, AES-256-GCM). The "
                    f"installed cryptography {_cryptography_version} and lfr's key "
                    "handling would seal data with a wrong (possibly all-zero) key. "
                    "Do not use this installation; report it with `lfr info`."
                )
        for name, cipher in checks[1:]:
            cipher.close()
            try:
                cipher.encrypt(_KAT_NONCE, _KAT_PLAIN, None)
            except ValueError:
                continue
            raise CipherSelfTestError(
                f"lfr's cipher self-test failed: a closed cipher made by {name} "
                "still encrypts"
            )
    finally:
        for _, cipher in checks[1:]:
            cipher.close()
        kek.destroy()


check_ciphers()
