"""The SQLite alert repository on its own, and the retention rules as properties.

The repository stores opaque rows: no key is needed to make one (the metadata is
whatever its caller hands it) and the "ciphertext" here is plain bytes. The rules
are checked against a replay of the hold history (every hold sets an end, every
release clears it), not against their own wording; a negative control shows the
check catches an off-by-one at the expiry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lfr
from lfr.alerts import rules
from lfr.alerts.repository import SqliteRepository
from lfr.alerts.rows import (
    FORMAT,
    FORMAT_VERSION,
    AlertRow,
    HoldAction,
    HoldRow,
    RetentionRow,
    ReviewRow,
)
from lfr.protocols import AlertRepository

META = {"key_id": "k-1", "store_id": "s-1", "created": "c", "key_check": "00"}


def new_meta() -> dict[str, str]:
    return dict(META)


def refuse_meta() -> dict[str, str]:
    raise AssertionError("an existing store is not made again")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[SqliteRepository]:
    repository = SqliteRepository(tmp_path / "alerts.db", new_meta)
    repository.connect()
    yield repository
    repository.close()


def row(alert_id: str, expires_us: int = 100) -> AlertRow:
    return AlertRow(alert_id, expires_us, b"wrapped-" + alert_id.encode(), b"r", b"c")


def hold(repo: SqliteRepository, alert_id: str, until_us: int | None) -> HoldRow:
    action: HoldAction = "release" if until_us is None else "hold"
    entry = HoldRow(repo.next_seq("holds"), alert_id, action, until_us, b"sealed")
    repo.add_hold(entry)
    return entry


# -- the repository ------------------------------------------------------------------


def test_meta_is_stored_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    first = SqliteRepository(path, new_meta)
    assert first.closed  # made and checked, not yet opened for writing
    assert first.meta == {"format": FORMAT, "version": str(FORMAT_VERSION), **META}
    again = SqliteRepository(path, refuse_meta)
    assert again.meta == first.meta
    again.connect()
    assert isinstance(again, AlertRepository)
    again.close()
    assert again.closed
    with pytest.raises(ValueError, match="closed"), again.session():
        pass


def test_insert_read_and_replace(repo: SqliteRepository) -> None:
    with repo.session():
        with repo.transaction():
            repo.insert(row("a", 300))
            repo.insert(row("b", 200))
        assert repo.alert("a") == row("a", 300)
        assert repo.alert("missing") is None
        assert [r.alert_id for r in repo.alerts()] == ["a", "b"]  # insertion order
        with repo.transaction():
            repo.replace_sealed("a", b"r2", b"c2")
        got = repo.alert("a")
        assert got is not None
        assert (got.record, got.crop, got.wrapped_key) == (b"r2", b"c2", b"wrapped-a")
        assert repo.alert("b") == row("b", 200)


def test_a_failed_transaction_leaves_nothing(repo: SqliteRepository) -> None:
    def insert_then_fail() -> None:
        with repo.transaction():
            repo.insert(row("a"))
            raise RuntimeError

    with repo.session():
        with pytest.raises(RuntimeError):
            insert_then_fail()
        assert repo.alerts() == []


def test_holds_and_reviews_in_order_and_next_seq(repo: SqliteRepository) -> None:
    with repo.session():
        assert (repo.next_seq("holds"), repo.next_seq("reviews")) == (1, 1)
        with repo.transaction():
            repo.insert(row("a"))
            repo.insert(row("b"))
            first = hold(repo, "a", 500)
            other = hold(repo, "b", 400)
            last = hold(repo, "a", None)
            for n, alert_id in enumerate(["a", "b", "a"]):
                repo.add_review(
                    ReviewRow(repo.next_seq("reviews"), alert_id, b"%d" % n)
                )
        assert repo.holds("a") == [first, last]
        assert repo.holds("b") == [other]
        assert [(r.seq, r.sealed) for r in repo.reviews("a")] == [(1, b"0"), (3, b"2")]
        assert (repo.next_seq("holds"), repo.next_seq("reviews")) == (4, 4)
        # The latest hold entry of each alert, for the rules.
        assert repo.retention() == [
            RetentionRow("a", 100, False, "release", None),
            RetentionRow("b", 100, False, "hold", 400),
        ]
        with pytest.raises(ValueError, match="sequence"):
            repo.next_seq("alerts")  # type: ignore[arg-type]


def test_shred_then_bury_leaves_tombstones(repo: SqliteRepository) -> None:
    with repo.session():
        with repo.transaction():
            for alert_id in ("a", "b", "c"):
                repo.insert(row(alert_id))
            hold(repo, "a", 500)
            repo.add_review(ReviewRow(repo.next_seq("reviews"), "a", b"x"))
        with repo.transaction():
            repo.shred(["c", "a"])
        shredded = repo.alert("a")
        assert shredded is not None
        assert shredded.wrapped_key is None
        assert [r.shredded for r in repo.retention()] == [True, False, True]
        assert repo.tombstones() == []
        with repo.transaction():
            assert repo.bury(777) == ["a", "c"]  # insertion order
        assert repo.alert("a") is None
        assert (repo.purged_at("a"), repo.purged_at("b")) == (777, None)
        assert repo.tombstones() == ["a", "c"]
        assert (repo.holds("a"), repo.reviews("a")) == ([], [])
        assert repo.alert("b") == row("b")
        with repo.transaction():
            assert repo.bury(888) == []
        assert repo.purged_at("a") == 777  # a tombstone is written once
        assert repo.compact()
        assert not repo.compact_pending


def test_a_store_over_the_protocol(tmp_path: Path) -> None:
    key = lfr.Key.generate()
    with lfr.AlertStore(tmp_path / "alerts.db", key) as made:
        assert made.closed is False
    repository = SqliteRepository(tmp_path / "alerts.db", refuse_meta)
    repository.connect()
    with lfr.AlertStore("label", key, repository=repository) as store:
        assert len(store) == 0
    assert repository.closed  # the store closes what it was given
    with pytest.raises(TypeError, match="AlertRepository"):
        lfr.AlertStore("label", key, repository=object())  # type: ignore[arg-type]


# -- the rules -----------------------------------------------------------------------

SMALL = st.integers(min_value=0, max_value=12)  # small: ties are frequent
HISTORY = st.lists(st.one_of(st.none(), SMALL), max_size=5)  # None: a release

# Optional, not ``X | None``: a module-level alias is evaluated, and ``|`` between
# types needs Python 3.10.
Readable = Callable[[int, Optional[str], Optional[int], int], bool]


def replay(history: list[int | None]) -> int | None:
    """The end of the hold in force after replaying a history (None: none)."""
    end = None
    for entry in history:
        end = entry  # a hold sets its end, a release (None) clears it
    return end


def latest(history: list[int | None]) -> tuple[str | None, int | None]:
    if not history:
        return None, None
    return ("release", None) if history[-1] is None else ("hold", history[-1])


def check_readable(readable: Readable) -> None:
    @given(expires=SMALL, now=SMALL, history=HISTORY)
    @settings(max_examples=400, database=None, derandomize=True, deadline=None)
    def check(expires: int, now: int, history: list[int | None]) -> None:
        end = replay(history)
        expected = now < expires or (end is not None and now < end)
        action, until = latest(history)
        assert readable(expires, action, until, now) == expected

    check()


def test_an_alert_is_readable_iff_unexpired_or_held() -> None:
    check_readable(rules.readable)


def test_the_readable_check_catches_an_off_by_one() -> None:
    def late(expires: int, action: str | None, until: int | None, now: int) -> bool:
        return now <= expires or rules.hold_in_force(action, until, now)

    with pytest.raises(AssertionError):
        check_readable(late)


def test_live_rows_of_the_repository_follow_the_replay(repo: SqliteRepository) -> None:
    @given(expires=SMALL, now=SMALL, history=HISTORY, shredded=st.booleans())
    @settings(max_examples=60, database=None, deadline=None)
    def check(
        expires: int, now: int, history: list[int | None], shredded: bool
    ) -> None:
        alert_id = str(uuid.uuid4())
        with repo.session(), repo.transaction():
            repo.insert(row(alert_id, expires))
            for entry in history:
                hold(repo, alert_id, entry)
            if shredded:
                repo.shred([alert_id])
        with repo.session():
            (got,) = [r for r in repo.retention() if r.alert_id == alert_id]
        end = replay(history)
        held = end is not None and now < end
        assert rules.live(got, now) == (not shredded and (now < expires or held))
        plan = rules.plan_purge([got], now, lambda _: True)
        doomed = not shredded and now >= expires and not held
        assert plan.doomed == ([alert_id] if doomed else [])

    check()


def test_a_purge_keeps_only_authentic_holds() -> None:
    rows = [
        RetentionRow("young", 10, False),
        RetentionRow("old", 5, False),
        RetentionRow("held", 5, False, "hold", 20),
        RetentionRow("forged", 5, False, "hold", 20),
        RetentionRow("released", 5, False, "release", None),
        RetentionRow("ended", 5, False, "hold", 8),
        RetentionRow("shredded", 5, True),
    ]
    asked: list[str] = []

    def authentic(alert_id: str) -> bool:
        asked.append(alert_id)
        return alert_id == "held"

    plan = rules.plan_purge(rows, 8, authentic)
    assert plan.doomed == ["old", "forged", "released", "ended"]
    assert (plan.kept, plan.ignored) == (1, 1)
    assert asked == ["held", "forged"]  # only expired alerts that claim a hold


def test_hold_ends_and_alert_times() -> None:
    now = datetime(2024, 5, 1, tzinfo=timezone.utc)
    day = timedelta(days=1)
    rules.check_hold_end(now + day, now, day)  # the limit is allowed
    for end in (now, now - day, now + day + timedelta(microseconds=1)):
        with pytest.raises(ValueError, match="hold"):
            rules.check_hold_end(end, now, day)
    assert rules.check_alert_time(now + rules.SKEW, now, day) == now + rules.SKEW + day
    with pytest.raises(ValueError, match="ahead"):
        rules.check_alert_time(now + rules.SKEW + timedelta(seconds=1), now, day)
    with pytest.raises(ValueError, match="expired"):
        rules.check_alert_time(now - day, now, day)
