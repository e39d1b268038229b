"""Hypothesis: the alert store never returns an expired alert, and follows a model.

Random sequences of add / advance the clock / hold / release / purge / get are run
against an :class:`lfr.AlertStore` and a few lines of plain Python that say what
retention means: an alert is readable while ``now < expires`` or while a hold placed
on it has not ended, never after; purge removes exactly the others.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
)

import lfr
from lfr.errors import RetentionError

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
# Short spans in whole minutes, so that random steps often land exactly on an
# expiry or on the end of a hold.
POLICY = lfr.RetentionPolicy(alert_ttl=timedelta(hours=1), max_hold=timedelta(hours=3))
KEY = lfr.Key.generate()
CROP = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Model:
    """What the store should know about one alert."""

    time: datetime
    expires: datetime
    held_until: datetime | None = None
    purged: bool = False

    def live(self, now: datetime) -> bool:
        if self.purged:
            return False
        held = self.held_until is not None and now < self.held_until
        return now < self.expires or held


class RetentionMachine(RuleBasedStateMachine):
    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="lfr-retention-"))
        self.clock = Clock()
        self.store = lfr.AlertStore(
            self.folder / "alerts.db", KEY, policy=POLICY, clock=self.clock
        )
        self.model: dict[str, Model] = {}

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.folder)

    def live_ids(self) -> list[str]:
        live = [(m.time, i) for i, m in self.model.items() if m.live(self.clock.now)]
        return [i for _, i in sorted(live, key=lambda pair: pair[0])]

    @rule(target=ids, back=st.integers(0, 70))
    def add(self, back: int) -> str:
        when = self.clock.now - timedelta(minutes=back)
        if when + POLICY.alert_ttl <= self.clock.now:
            with pytest.raises(ValueError, match="would have expired"):
                self.store._add(
                    subject_id="s",
                    score=0.9,
                    box=(0, 0, 5, 4),
                    crop=CROP,
                    camera_id="c",
                    deployment_id="d",
                    time=when,
                )
            return "never-stored"
        alert = self.store._add(
            subject_id=f"subject-{len(self.model)}",
            score=0.9,
            box=(0, 0, 5, 4),
            crop=CROP,
            camera_id="c",
            deployment_id="d",
            time=when,
        )
        self.model[alert.alert_id] = Model(when, when + POLICY.alert_ttl)
        return alert.alert_id

    @rule(minutes=st.integers(0, 100))
    def advance(self, minutes: int) -> None:
        self.clock.now += timedelta(minutes=minutes)

    @rule(pick=st.integers(0, 1000), nudge=st.sampled_from([-1, 0, 1]))
    def advance_to_an_edge(self, pick: int, nudge: int) -> None:
        """Moves the clock to just before, on, or just after an expiry or hold end."""
        now = self.clock.now
        edges = sorted(
            {m.expires for m in self.model.values() if m.expires > now}
            | {m.held_until for m in self.model.values() if m.held_until}
        )
        edges = [e + timedelta(microseconds=nudge) for e in edges]
        edges = [e for e in edges if e > now]
        if edges:
            self.clock.now = edges[pick % len(edges)]

    @rule(
        alert_id=ids,
        minutes=st.one_of(st.sampled_from([-1, 0, 1, 180, 181]), st.integers(-60, 240)),
    )
    def hold(self, alert_id: str, minutes: int) -> None:
        now = self.clock.now
        until = now + timedelta(minutes=minutes)
        entry = self.model.get(alert_id)
        if until <= now or until > now + POLICY.max_hold:
            with pytest.raises(ValueError, match=r"in the future|at most"):
                self.store._hold(alert_id, "case", until)
        elif entry is None:
            with pytest.raises(KeyError):
                self.store._hold(alert_id, "case", until)
        elif not entry.live(now):
            with pytest.raises(RetentionError):
                self.store._hold(alert_id, "case", until)
        else:
            alert = self.store._hold(alert_id, "case", until)
            assert alert.held_until == until
            entry.held_until = until

    @rule(alert_id=ids)
    def release(self, alert_id: str) -> None:
        now = self.clock.now
        entry = self.model.get(alert_id)
        if entry is None:
            with pytest.raises(KeyError):
                self.store._release(alert_id)
        elif not entry.live(now):
            with pytest.raises(RetentionError):
                self.store._release(alert_id)
        elif entry.held_until is None or entry.held_until <= now:
            with pytest.raises(ValueError, match="not on hold"):
                self.store._release(alert_id)
        else:
            self.store._release(alert_id)
            entry.held_until = None

    @rule()
    def purge(self) -> None:
        now = self.clock.now
        expected = [
            i for i, m in self.model.items() if not m.purged and not m.live(now)
        ]
        assert self.store._purge() == expected
        for i in expected:
            self.model[i].purged = True
        listed = self.store.alerts()
        assert self.store._purge() == []  # purging twice is purging once
        assert self.store.alerts() == listed

    @rule(alert_id=ids)
    def get(self, alert_id: str) -> None:
        now = self.clock.now
        entry = self.model.get(alert_id)
        if entry is None:
            with pytest.raises(KeyError):
                self.store.get(alert_id)
        elif entry.live(now):
            alert = self.store.get(alert_id)
            assert alert.expires == entry.expires
            assert now < alert.expires or (
                alert.held_until is not None and now < alert.held_until
            )
        else:
            match = "purged" if entry.purged else "expired"
            with pytest.raises(RetentionError, match=match):
                self.store.get(alert_id)
            with pytest.raises(RetentionError):
                self.store._crop(alert_id)

    @invariant()
    def every_alert_reads_as_the_model_says(self) -> None:
        for alert_id in self.model:
            self.get(alert_id)

    @invariant()
    def listing_matches_the_model(self) -> None:
        now = self.clock.now
        alerts = self.store.alerts()
        assert [a.alert_id for a in alerts] == self.live_ids()
        assert len(self.store) == len(alerts)
        for alert in alerts:
            held = alert.held_until is not None and now < alert.held_until
            assert now < alert.expires or held


RetentionMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestRetention = RetentionMachine.TestCase
