"""lfr's exception hierarchy.

Every error lfr raises on purpose is either an :class:`LfrError` or a built-in
exception whose meaning fits exactly (``ValueError`` for a bad vector, ``KeyError``
for an unknown id, ``TypeError`` for a wrong dtype). Messages never contain pixels,
embeddings or the identities of people who did not match.
"""

from __future__ import annotations

__all__ = ["LfrError", "ModelError", "SecureMemoryError"]


class LfrError(Exception):
    """Base class of lfr's own errors."""


class SecureMemoryError(LfrError, MemoryError):
    """Memory for face data cannot be locked or protected.

    Raised, failing closed, when ``mlock`` is refused (``RLIMIT_MEMLOCK`` too low) or
    the kernel lacks ``MADV_DONTDUMP``/``MADV_WIPEONFORK``. The message says how much
    memory is needed and how to raise the limit; ``allow_unlocked=True`` runs anyway.
    """


class ModelError(LfrError):
    """A model is missing, fails its checksum, or cannot be parsed or loaded.

    The message names the command that fixes it where there is one
    (``lfr models fetch``).
    """
