"""Reading this process's mappings from /proc, for the secure-memory tests."""

from __future__ import annotations

from pathlib import Path


def smaps_entry(address: int) -> dict[str, str] | None:
    """The ``/proc/self/smaps`` fields of the mapping that starts at ``address``."""
    entry: dict[str, str] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if "-" in head and ":" not in head:
            if entry is not None:
                return entry
            start = int(head.split("-")[0], 16)
            entry = {} if start == address else None
        elif entry is not None:
            key, _, value = line.partition(":")
            entry[key] = value.strip()
    return entry


def vm_flags(address: int) -> set[str]:
    """The two-letter VmFlags of the mapping at ``address`` (empty if none)."""
    entry = smaps_entry(address)
    return set(entry.get("VmFlags", "").split()) if entry else set()
