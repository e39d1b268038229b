"""SIGKILL at each step of each change: the next open restores the invariant.

A real subprocess makes changes through :class:`lfr.alerts.Records` and kills
itself (SIGKILL, nothing runs after it) at one named step: after the store's
commit and before the audit record. The test then reads store and log directly
(:func:`tests.support.trail.invariant_breaks`): the invariant is broken (the
negative control: the crash really left a change unaudited), and after the next
:class:`~lfr.alerts.Records` opens it holds again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import lfr
from lfr.alerts import Records
from lfr.audit import SigningKey, verify
from tests.support.trail import invariant_breaks

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from datetime import datetime, timedelta, timezone
    from pathlib import Path
    import numpy as np
    import lfr
    import lfr.alerts.records as records_module
    from lfr.alerts import Records

    folder, target = Path(sys.argv[1]), sys.argv[2]

    def fault(step):
        if step == target:
            os.kill(os.getpid(), signal.SIGKILL)

    records_module._fault = fault
    key = lfr.Key.from_file(folder / "store.key")
    signing = lfr.SigningKey.load(folder / "audit.key")
    policy = lfr.RetentionPolicy(alert_ttl=timedelta(seconds=2))
    crop = np.full((30, 30, 3), 7, np.uint8)
    with Records.open(folder / "alerts.db", key, folder / "audit.log", signing,
                      policy=policy) as records:
        for subject in ("S-1", "S-3"):  # two alerts the purge destroys
            records.raise_alert(subject_id=subject, score=0.8, box=(0, 0, 9, 9),
                                crop=crop, camera_id="cam-1", deployment_id="d")
        a = records.raise_alert(subject_id="S-2", score=0.8, box=(0, 0, 9, 9),
                                crop=crop, camera_id="cam-1", deployment_id="d")
        records.improve(a.alert_id, score=0.9, box=(0, 0, 9, 9), crop=crop)
        records.review(a.alert_id, "officer-1", "confirmed")
        until = datetime.now(timezone.utc) + timedelta(days=1)
        records.hold(a.alert_id, "case 1", until, by="officer-2")
        records.release(a.alert_id, by="officer-2")
        records.hold(a.alert_id, "case 1", until, by="officer-2")
        time.sleep(2.2)  # S-1 and S-3 expire; the held one stays
        records.purge()
    print("no fault", flush=True)
    """
)

STEPS = [
    "raise:stored",
    "improve:stored",
    "review:stored",
    "hold:stored",
    "release:stored",
    "purge:stored",
    "purge:audited",
]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_between_store_and_log(tmp_path: Path, step: str) -> None:
    key = lfr.Key.generate()
    key.save(tmp_path / "store.key")
    signing = SigningKey.generate()
    signing.save(tmp_path / "audit.key")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), step],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    store, log = tmp_path / "alerts.db", tmp_path / "audit.log"
    public = signing.public_key()
    broken = invariant_breaks(store, key, log, public)
    assert broken, "the crash left nothing unaudited: the test proves nothing"
    with Records.open(store, key, log, signing) as records:
        assert records.reconciled.total == len(broken)
    assert invariant_breaks(store, key, log, public) == []
    report = verify(log, public)
    assert not [v for v in report.violations if v.kind == "integrity"]


def test_without_faults_nothing_is_reconciled(tmp_path: Path) -> None:
    key = lfr.Key.generate()
    key.save(tmp_path / "store.key")
    signing = SigningKey.generate()
    signing.save(tmp_path / "audit.key")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "none"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert "no fault" in child.stdout
    store, log = tmp_path / "alerts.db", tmp_path / "audit.log"
    assert invariant_breaks(store, key, log, signing.public_key()) == []
    policy = lfr.RetentionPolicy(alert_ttl=timedelta(seconds=2))
    with Records.open(store, key, log, signing, policy=policy) as records:
        assert records.reconciled.total == 0
