"""Signing the audit log with a key that never leaves a PKCS#11 token (an HSM).

:class:`TokenSigner` is an :class:`lfr.protocols.Signer` whose Ed25519 private key
lives in a PKCS#11 token (a hardware security module, a smart card, or SoftHSM2
for tests) and is used there: lfr asks the token to sign and never sees the key.
The signatures are ordinary Ed25519, so the verifier and the public key file are
the same as for a key file.

Named in the command line as ``pkcs11:token=LABEL;object=LABEL``; the PKCS#11
module (the token's ``.so``) comes from ``$LFR_PKCS11_MODULE`` and the user PIN
from ``$LFR_PKCS11_PIN`` (or is asked for). Needs the ``python-pkcs11`` package
(``pip install lfr[hsm]``).
"""

from __future__ import annotations

import getpass
import os
import threading
from typing import Any

from lfr.audit.signing import PublicKey
from lfr.errors import AuditError

__all__ = ["MODULE_ENV", "PIN_ENV", "TokenSigner", "parse_spec"]

#: The environment variable naming the PKCS#11 module (the token's library).
MODULE_ENV = "LFR_PKCS11_MODULE"
#: The environment variable a script can set instead of typing the token's PIN.
PIN_ENV = "LFR_PKCS11_PIN"
_SCHEME = "pkcs11:"
_ED25519 = "1.3.101.112"


def parse_spec(spec: str) -> tuple[str, str] | None:
    """``(token label, object label)`` of a ``pkcs11:token=T;object=O`` spec.

    Returns:
        None when ``spec`` is not a ``pkcs11:`` spec (a key file's path).

    Raises:
        ValueError: A ``pkcs11:`` spec without both labels.
    """
    if not spec.startswith(_SCHEME):
        return None
    parts = dict(
        item.split("=", 1) for item in spec[len(_SCHEME) :].split(";") if "=" in item
    )
    token, label = parts.get("token", ""), parts.get("object", "")
    if not token or not label:
        raise ValueError(
            f"a token key is named pkcs11:token=LABEL;object=LABEL, not {spec!r}"
        )
    return token, label


class TokenSigner:
    """An Ed25519 key in a PKCS#11 token, used there to sign audit records.

    Make one with :meth:`open` (an existing key) or :meth:`generate` (a new key
    made inside the token, not extractable). Thread-safe: one session, behind a
    lock. Close it (or use it as a context manager) to log out.

    Raises:
        AuditError: The module, token or key cannot be found, the PIN is wrong,
            or the token cannot sign with Ed25519 (messages name which).
    """

    def __init__(self, *, _session: Any, _key: Any, _public: PublicKey) -> None:
        self._session = _session
        self._key = _key
        self._public = _public
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        token: str,
        label: str,
        *,
        module: str | None = None,
        pin: str | None = None,
    ) -> TokenSigner:
        """The key pair labelled ``label`` in the token labelled ``token``."""
        pkcs11 = _pkcs11()
        session = _login(token, module, pin)
        try:
            key = session.get_key(
                object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=label
            )
            public = session.get_key(
                object_class=pkcs11.ObjectClass.PUBLIC_KEY, label=label
            )
            raw = _ed25519_point(public[pkcs11.Attribute.EC_POINT])
        except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned) as exc:
            session.close()
            raise AuditError(
                f"token {token!r} has no single Ed25519 key pair labelled {label!r} "
                f"({type(exc).__name__}); make one with `lfr keys create --signing "
                f"'pkcs11:token={token};object={label}' --public-key PUB`"
            ) from None
        except BaseException:
            session.close()
            raise
        return cls(_session=session, _key=key, _public=PublicKey.from_raw(raw))

    @classmethod
    def generate(
        cls,
        token: str,
        label: str,
        *,
        module: str | None = None,
        pin: str | None = None,
    ) -> TokenSigner:
        """Makes a new Ed25519 key pair inside the token (never extractable).

        Raises:
            AuditError: A key with that label exists already, or the token
                cannot make Ed25519 keys.
        """
        pkcs11 = _pkcs11()
        from pkcs11.util.ec import encode_named_curve_parameters

        session = _login(token, module, pin, rw=True)
        try:
            existing = list(
                session.get_objects(
                    {
                        pkcs11.Attribute.LABEL: label,
                        pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
                    }
                )
            )
            if existing:
                raise AuditError(
                    f"token {token!r} already holds a key labelled {label!r}"
                )
            attr = pkcs11.Attribute
            public, key = session.generate_keypair(
                pkcs11.KeyType.EC_EDWARDS,
                mechanism=pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                public_template={
                    attr.EC_PARAMS: encode_named_curve_parameters(_ED25519),
                    attr.LABEL: label,
                    attr.TOKEN: True,
                    attr.VERIFY: True,
                },
                private_template={
                    attr.LABEL: label,
                    attr.TOKEN: True,
                    attr.SIGN: True,
                    attr.SENSITIVE: True,
                    attr.EXTRACTABLE: False,
                },
                store=True,
            )
            raw = _ed25519_point(public[attr.EC_POINT])
        except pkcs11.PKCS11Error as exc:
            session.close()
            raise AuditError(
                f"token {token!r} could not make an Ed25519 key: {type(exc).__name__}"
            ) from None
        except BaseException:
            session.close()
            raise
        return cls(_session=session, _key=key, _public=PublicKey.from_raw(raw))

    def sign(self, data: bytes) -> bytes:
        """The token's Ed25519 signature of ``data`` (64 bytes)."""
        pkcs11 = _pkcs11()
        with self._lock:
            if self._session is None:
                raise ValueError("the token signer is closed")
            try:
                signature = self._key.sign(data, mechanism=pkcs11.Mechanism.EDDSA)
            except pkcs11.PKCS11Error as exc:
                raise AuditError(
                    f"the token did not sign: {type(exc).__name__}"
                ) from None
        return bytes(signature)

    def public_key(self) -> PublicKey:
        """The public key (what an auditor verifies with)."""
        return self._public

    @property
    def key_id(self) -> str:
        """The public key's fingerprint."""
        return self._public.key_id

    def close(self) -> None:
        """Logs out of the token (idempotent)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> TokenSigner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TokenSigner(key_id={self.key_id!r})"

    def __reduce__(self) -> Any:
        raise TypeError("a TokenSigner cannot be pickled")


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise AuditError(
            "signing with a PKCS#11 token needs python-pkcs11 (pip install 'lfr[hsm]')"
        ) from None
    return pkcs11


def _login(token: str, module: str | None, pin: str | None, *, rw: bool = False) -> Any:
    pkcs11 = _pkcs11()
    module = module or os.environ.get(MODULE_ENV)
    if not module:
        raise AuditError(
            f"which PKCS#11 module? set ${MODULE_ENV} to the token's library "
            "(for SoftHSM2 on Debian: /usr/lib/softhsm/libsofthsm2.so)"
        )
    try:
        lib = pkcs11.lib(module)
    except (RuntimeError, OSError) as exc:
        raise AuditError(f"cannot load the PKCS#11 module {module}: {exc}") from None
    try:
        found = lib.get_token(token_label=token)
    except (pkcs11.NoSuchToken, pkcs11.MultipleTokensReturned):
        raise AuditError(f"no single token labelled {token!r} in {module}") from None
    secret = pin if pin is not None else os.environ.get(PIN_ENV)
    if secret is None:
        secret = getpass.getpass(f"PIN of token {token}: ")
    try:
        return found.open(user_pin=secret, rw=rw)
    except pkcs11.PKCS11Error as exc:
        raise AuditError(
            f"cannot log in to token {token!r}: {type(exc).__name__}"
        ) from None


def _ed25519_point(point: bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 CKA_EC_POINT (a DER OCTET STRING, or raw)."""
    point = bytes(point)
    if len(point) == 34 and point[0] == 0x04 and point[1] == 32:
        return point[2:]
    if len(point) == 32:
        return point
    raise AuditError("the token's key is not an Ed25519 key")
