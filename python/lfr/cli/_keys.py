"""``lfr keys``: make key files."""

from __future__ import annotations

import argparse
from pathlib import Path

from lfr.audit.log import public_key_path
from lfr.audit.signing import SigningKey
from lfr.cli._common import add_hardening_option, fail, harden
from lfr.errors import LfrError
from lfr.keys import Key


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``keys``."""
    keys = sub.add_parser("keys", help="make key files")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = ksub.add_parser(
        "create",
        help="write a new random 256-bit key file (mode 0600), or with --signing "
        "an audit-log signing key",
        description="Writes a new random 256-bit key to PATH, readable only by you. "
        "Keep it away from the data it protects, and back it up: without it, "
        "watchlists and alerts encrypted with it cannot be read. With --signing, "
        "writes instead a new Ed25519 key that signs audit logs to PATH (mode "
        "0600) and its public key to PATH.pub, for auditors; with --signing and "
        "PATH 'pkcs11:token=T;object=O' (quoted: the shell splits at ;), makes "
        "the key inside that PKCS#11 token "
        "($LFR_PKCS11_MODULE, $LFR_PKCS11_PIN), where it stays, and writes its "
        "public key to --public-key.",
    )
    create.add_argument("path", metavar="PATH")
    create.add_argument(
        "--signing",
        action="store_true",
        help="make an audit-log signing key (PATH) and its public key (PATH.pub)",
    )
    create.add_argument("--force", action="store_true", help="overwrite PATH")
    create.add_argument(
        "--public-key",
        metavar="PUB",
        help="with a pkcs11: PATH, where to write the public key (for auditors)",
    )
    add_hardening_option(create)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``keys create``."""
    try:
        harden("keys create", args)  # before a key (or a token's PIN) is in memory
    except LfrError as exc:
        return fail("keys create", exc)
    if args.signing and args.path.startswith("pkcs11:"):
        return _create_in_token(args.path, args.public_key, overwrite=args.force)
    if args.signing:
        return _create_signing(Path(args.path), overwrite=args.force)
    try:
        key = Key.generate()
        try:
            path = key.save(args.path, overwrite=args.force)
        finally:
            key.destroy()
    except (LfrError, OSError) as exc:
        return fail("keys create", exc)
    print(f"wrote key {key.key_id} to {path}")
    return 0


def _create_in_token(spec: str, public: str | None, *, overwrite: bool) -> int:
    """Makes a signing key inside a PKCS#11 token; writes its public key."""
    from lfr.audit.token import TokenSigner, parse_spec

    if public is None:
        return fail("keys create", "a token key needs --public-key PUB for auditors")
    try:
        named = parse_spec(spec)
        if named is None:  # pragma: no cover (checked by the caller)
            raise ValueError(spec)
        pub = Path(public)
        if pub.exists() and not overwrite:
            raise FileExistsError(f"{pub} exists; refusing to overwrite (--force)")
        with TokenSigner.generate(*named) as signer:
            signer.public_key().save(pub, overwrite=overwrite)
    except (LfrError, OSError, ValueError) as exc:
        return fail("keys create", exc)
    print(
        f"made signing key {signer.key_id} in token {named[0]!r} as {named[1]!r} "
        f"(it never leaves the token); public key: {pub}"
    )
    return 0


def _create_signing(path: Path, *, overwrite: bool) -> int:
    """Writes a signing key to ``path`` and its public key to ``path.pub``."""
    pub = public_key_path(path)
    if not overwrite:
        for existing in (path, pub):
            if existing.exists():
                return fail("keys create", f"{existing} exists; refusing to overwrite")
    key = SigningKey.generate()
    try:
        key.save(path, overwrite=overwrite)
        try:
            key.public_key().save(pub, overwrite=overwrite)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    except (LfrError, OSError) as exc:
        return fail("keys create", exc)
    print(f"wrote signing key {key.key_id} to {path} and its public key to {pub}")
    return 0
