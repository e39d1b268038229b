"""Hypothesis: the auditor's policy round-trips, and ``looser_policy`` is exact.

For a random recorded retention policy, threshold and watchlist age against a
random auditor's policy, ``looser_policy`` is reported exactly when (and as many
times as) the plain predicate below finds a looser field.
"""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

import lfr
from lfr.audit import checks
from tests.support.audit_records import T0, Records

MINUTE = timedelta(minutes=1)
minutes = st.integers(min_value=1, max_value=60 * 24 * 400).map(lambda m: m * MINUTE)
seconds = st.floats(
    min_value=1e-3, max_value=1e9, allow_nan=False, allow_infinity=False
).map(lambda s: timedelta(seconds=s))
thresholds = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)

policies = st.builds(
    lfr.Policy,
    alert_ttl=seconds,
    max_hold=seconds,
    purge_interval=seconds,
    watchlist_ttl_after_stop=st.one_of(st.just(timedelta(0)), seconds),
    two_person_review=st.booleans(),
    min_threshold=thresholds,
    max_watchlist_age=st.one_of(st.none(), seconds),
)
small_policies = st.builds(
    lfr.Policy,
    alert_ttl=minutes,
    max_hold=minutes,
    purge_interval=minutes,
    watchlist_ttl_after_stop=st.one_of(st.just(timedelta(0)), minutes),
    two_person_review=st.booleans(),
    min_threshold=st.sampled_from([0.5, 0.8, 0.945]),
    max_watchlist_age=st.one_of(st.none(), minutes),
)
recorded_policies = st.builds(
    lfr.RetentionPolicy,
    alert_ttl=minutes,
    max_hold=minutes,
    purge_interval=minutes,
    watchlist_ttl_after_stop=st.one_of(st.just(timedelta(0)), minutes),
    two_person_review=st.booleans(),
)


@given(policies)
def test_a_policy_round_trips_through_json(policy: lfr.Policy) -> None:
    text = json.dumps(policy.to_json())
    assert lfr.Policy.from_json(text) == policy
    assert lfr.Policy.from_json(json.loads(text)) == policy


def expected_looser(
    recorded: lfr.RetentionPolicy,
    threshold: float,
    age: timedelta | None,
    policy: lfr.Policy,
) -> int:
    """How many ways the recorded start is looser (written apart from lfr)."""
    n = 0
    n += recorded.alert_ttl > policy.alert_ttl
    n += recorded.max_hold > policy.max_hold
    n += recorded.purge_interval > policy.purge_interval
    n += recorded.watchlist_ttl_after_stop > policy.watchlist_ttl_after_stop
    n += policy.two_person_review and not recorded.two_person_review
    n += threshold < policy.min_threshold
    if policy.max_watchlist_age is not None:
        n += age is None or age > policy.max_watchlist_age
    return int(n)


@given(
    recorded=recorded_policies,
    threshold=st.sampled_from([0.4, 0.5, 0.8, 0.9, 0.945, 0.99]),
    age=st.one_of(st.none(), minutes),
    policy=small_policies,
)
def test_looser_policy_is_reported_exactly_when_a_field_is_looser(
    recorded: lfr.RetentionPolicy,
    threshold: float,
    age: timedelta | None,
    policy: lfr.Policy,
) -> None:
    log = Records()
    fields = dict(
        deployment_id="dep-1",
        camera_ids=["cam-1"],
        location="here",
        purpose="wanted persons",
        authorised_by="Supt A. Example",
        watchlist_sha256="ab" * 32,
        watchlist_size=10,
        model_id="dlib-resnet",
        threshold=threshold,
        policy=recorded.to_json(),
        lfr_version="test",
    )
    if age is not None:
        fields["watchlist_created"] = T0 - age
    log.add(T0, "deployment_started", **fields)
    found = [
        v
        for v in checks.run_checks(log.records, T0, policy=policy)
        if v.kind == "looser_policy"
    ]
    assert len(found) == expected_looser(recorded, threshold, age, policy)
    assert all(v.record == 1 and "deployment dep-1" in v.message for v in found)
    without = checks.run_checks(log.records, T0)
    assert not [v for v in without if v.kind == "looser_policy"]
