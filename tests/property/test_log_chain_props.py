"""Hypothesis: verify accepts a store's chain of logs exactly as it was written.

A store gets ``n`` logs in turn (each with alerts raised through
:class:`lfr.alerts.Records`, so each log continues the one before). The auditor
is given some sequence of those logs, with the store. The property:
:func:`lfr.audit.verify` reports no ``chain_gap``, ``chain_broken`` or
``store_unaccounted`` if and only if the sequence is the whole chain, in order.

Why: a first log that names a previous log is a gap; each later log must name
the one before it, at a head that log holds; the store's chain record must name
the last log; and every alert the store holds must be raised by a log given
(each log raises its own alerts, so leaving any log out leaves alerts
unaccounted, or a gap).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import lfr
from lfr.alerts import Records
from lfr.audit import SigningKey, verify

CHAIN_KINDS = {"chain_gap", "chain_broken", "store_unaccounted"}


def write_chain(
    folder: Path, alerts: list[int], key: lfr.Key, signing: SigningKey
) -> list[Path]:
    logs = []
    for index, count in enumerate(alerts):
        log = folder / f"audit-{index}.log"
        with Records.open(folder / "alerts.db", key, log, signing) as records:
            for i in range(count):
                records.raise_alert(
                    subject_id=f"S-{i}",
                    score=0.8,
                    box=(0, 0, 10, 10),
                    crop=np.full((8, 8, 3), i, np.uint8),
                    camera_id="cam",
                    deployment_id=f"dep-{index}",
                )
        logs.append(log)
    return logs


@settings(max_examples=30, deadline=None)
@given(
    alerts=st.lists(st.integers(0, 2), min_size=1, max_size=4),
    data=st.data(),
)
def test_verify_accepts_exactly_the_whole_chain_in_order(
    alerts: list[int], data: st.DataObject
) -> None:
    n = len(alerts)
    given_order = data.draw(
        st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True),
        label="logs given",
    )
    # Keys made here, not at import: a key's locked page must not outlive the test.
    key, signing = lfr.Key.generate(), SigningKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        logs = write_chain(Path(tmp), alerts, key, signing)
        *earlier, last = [logs[i] for i in given_order]
        report = verify(
            last,
            signing.public_key(),
            earlier=earlier,
            store=Path(tmp) / "alerts.db",
        )
    key.destroy()
    found = {v.kind for v in report.violations} & CHAIN_KINDS
    whole = given_order == list(range(n))
    assert (not found) == whole, (given_order, report.violations)
    if whole:
        assert report.ok, report.violations
