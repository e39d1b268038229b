"""What a holder of the signing key can do: rewrite a log and sign it again."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from lfr.audit import SigningKey
from lfr.audit.log import canonical


def resign(path: Path, lines: list[dict[str, Any]], key: SigningKey) -> None:
    """Writes ``lines`` (records as dicts) to ``path``, renumbered, chained, signed."""
    prev, out = "0" * 64, []
    for seq, record in enumerate(lines):
        body = {k: v for k, v in record.items() if k != "sig"}
        body.update(seq=seq, prev=prev)
        signed = base64.b64encode(key.sign(canonical(body))).decode()
        line = canonical({**body, "sig": signed})
        prev = hashlib.sha256(line).hexdigest()
        out.append(line)
    path.write_bytes(b"\n".join(out) + b"\n")
