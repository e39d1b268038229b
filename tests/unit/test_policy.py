"""``lfr.Policy``: the auditor's policy document, and what it refuses."""

from __future__ import annotations

import doctest
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import lfr
import lfr.governance.policy
from lfr.governance import MAX_POLICY_BYTES, read_policy_file
from lfr.pipeline.deployment import DEFAULT_THRESHOLD

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "policy.example.json"


def document(**changes: Any) -> dict[str, Any]:
    data = lfr.Policy().to_json()
    data.update(changes)
    return data


def test_the_defaults_are_the_uk_defaults_and_the_example_file() -> None:
    policy = lfr.Policy()
    assert policy.retention == lfr.RetentionPolicy()
    assert policy.min_threshold == DEFAULT_THRESHOLD
    assert policy.max_watchlist_age == timedelta(hours=24)
    assert lfr.Policy.load(EXAMPLE) == policy


def test_the_json_is_versioned_and_in_seconds() -> None:
    data = lfr.Policy(alert_ttl=timedelta(hours=12), max_watchlist_age=None).to_json()
    assert data["lfr_policy"] == 1
    assert data["alert_ttl_seconds"] == 43200.0
    assert data["max_watchlist_age_seconds"] is None
    assert lfr.Policy.from_json(json.dumps(data)) == lfr.Policy.from_json(data)
    assert lfr.Policy.from_json(json.dumps(data).encode()).max_watchlist_age is None


def test_policy_error_is_an_lfr_error_and_a_value_error() -> None:
    assert issubclass(lfr.PolicyError, lfr.LfrError)
    assert issubclass(lfr.PolicyError, ValueError)
    assert "Policy" in lfr.__all__
    assert "PolicyError" in lfr.__all__


def test_read_policy_file_gives_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(EXAMPLE.read_bytes())
    policy, digest = read_policy_file(path)
    assert policy == lfr.Policy()
    assert digest == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()


def test_looser_and_strictest_compare_field_by_field() -> None:
    policy = lfr.Policy()
    recorded = lfr.RetentionPolicy(
        alert_ttl=timedelta(days=3650),
        purge_interval=timedelta(minutes=1),
        two_person_review=False,
    )
    assert policy.looser(recorded) == ["alert_ttl", "two_person_review"]
    strict = policy.strictest(recorded)
    assert strict.alert_ttl == timedelta(hours=24)
    assert strict.purge_interval == timedelta(minutes=1)
    assert strict.two_person_review is True
    assert policy.looser(lfr.RetentionPolicy()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (document(alert_ttl_secs=3600), "unknown policy fields: 'alert_ttl_secs'"),
        (document(lfr_policy=2), "unknown policy version 2"),
        (document(lfr_policy=True), "unknown policy version True"),
        (document(lfr_policy="1"), "unknown policy version '1'"),
        (
            {k: v for k, v in document().items() if k != "lfr_policy"},
            "not an lfr policy: it has no 'lfr_policy' version field",
        ),
        (
            {k: v for k, v in document().items() if k != "max_hold_seconds"},
            "missing policy fields: max_hold_seconds",
        ),
        (document(alert_ttl_seconds=-1), "alert_ttl_seconds must not be negative"),
        (document(alert_ttl_seconds=0), "alert_ttl must be positive"),
        (
            document(alert_ttl_seconds="86400"),
            "alert_ttl_seconds must be a number of seconds, got '86400'",
        ),
        (
            document(purge_interval_seconds=True),
            "purge_interval_seconds must be a number of seconds, got True",
        ),
        (document(max_hold_seconds=1e300), "max_hold_seconds is out of range"),
        (document(alert_ttl_seconds=10**400), "alert_ttl_seconds must be finite"),
        (
            document(max_watchlist_age_seconds=10**400),
            "max_watchlist_age_seconds must be finite",
        ),
        (document(min_threshold=10**400), "min_threshold must be in [-1, 1]"),
        (
            document(alert_ttl_seconds=float("nan")),
            "alert_ttl_seconds must be finite, got nan",
        ),
        (
            document(two_person_review="yes"),
            "two_person_review must be true or false, got 'yes'",
        ),
        (document(min_threshold="0.9"), "min_threshold must be a number, got '0.9'"),
        (document(min_threshold=1.5), "min_threshold must be in [-1, 1], got 1.5"),
        (
            document(max_watchlist_age_seconds=0),
            "max_watchlist_age must be positive",
        ),
        ([1, 2], "a policy is a JSON object, got list"),
    ],
)
def test_hostile_documents_are_refused(data: Any, message: str) -> None:
    with pytest.raises(lfr.PolicyError) as info:
        lfr.Policy.from_json(data)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"lfr_policy": 1, "alert_ttl_seconds": NaN}', "may not hold NaN"),
        ('{"lfr_policy": 1, "alert_ttl_seconds": Infinity}', "may not hold Infinity"),
        ('{"lfr_policy": 1, "lfr_policy": 1}', "names 'lfr_policy' twice"),
        ("{not json", "a policy is not valid JSON"),
        ("[" * 50_000, "a policy is not valid JSON"),
        (b"\xff\xfe{}", "a policy must be UTF-8 text"),
    ],
)
def test_hostile_text_is_refused(text: str | bytes, message: str) -> None:
    with pytest.raises(lfr.PolicyError) as info:
        lfr.Policy.from_json(text)
    assert message in str(info.value)


def test_a_repeated_field_cannot_loosen_the_first() -> None:
    text = json.dumps(document())[:-1] + ', "alert_ttl_seconds": 315360000}'
    with pytest.raises(lfr.PolicyError, match="names 'alert_ttl_seconds' twice"):
        lfr.Policy.from_json(text)


def test_a_size_bomb_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.json"
    body = json.dumps(document())
    path.write_text(body[:-1] + " " * MAX_POLICY_BYTES + "}")
    with pytest.raises(lfr.PolicyError) as info:
        lfr.Policy.load(path)
    assert f"is larger than {MAX_POLICY_BYTES} bytes" in str(info.value)
    with pytest.raises(lfr.PolicyError, match="at most 65536 bytes"):
        lfr.Policy.from_json(path.read_text())


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(lfr.PolicyError, match=r"cannot read policy file .*none\.json"):
        lfr.Policy.load(tmp_path / "none.json")


def test_a_bad_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(document(lfr_policy=7)))
    with pytest.raises(lfr.PolicyError, match=r"policy file .*p\.json: unknown"):
        lfr.Policy.load(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"alert_ttl": 3600}, "alert_ttl must be a datetime.timedelta"),
        ({"watchlist_ttl_after_stop": timedelta(-1)}, "must not be negative"),
        ({"two_person_review": 1}, "two_person_review must be a bool"),
        ({"min_threshold": float("nan")}, "min_threshold must be in [-1, 1]"),
        ({"min_threshold": True}, "min_threshold must be a number, got bool"),
        ({"max_watchlist_age": 3600}, "max_watchlist_age must be a datetime"),
    ],
)
def test_construction_validates(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(lfr.PolicyError) as info:
        lfr.Policy(**changes)
    assert message in str(info.value)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(lfr.governance.policy, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
