"""The auditor's policy: the rules a deployment is judged against.

An operator records the :class:`lfr.RetentionPolicy` and the match threshold it ran
with in each ``deployment_started`` record, but an auditor must not take the
operator's word for what was allowed. A :class:`Policy` is the auditor's own
document: the longest retention periods, whether two people must review each
alert, the lowest match threshold and the oldest watchlist a deployment may use.
:func:`lfr.audit.verify` judges every deployment against it (``looser_policy``)
and runs every deadline with, field by field, the stricter of the recorded policy
and this one.

The document is JSON, versioned, every field required, durations in seconds
(numbers, as in :meth:`lfr.RetentionPolicy.to_json`)::

    {
      "lfr_policy": 1,
      "alert_ttl_seconds": 86400,
      "max_hold_seconds": 2678400,
      "purge_interval_seconds": 300,
      "watchlist_ttl_after_stop_seconds": 86400,
      "two_person_review": true,
      "min_threshold": 0.945,
      "max_watchlist_age_seconds": 86400
    }

``max_watchlist_age_seconds`` may be ``null``: no limit on the watchlist's age.
``docs/policy.example.json`` holds these defaults (UK practice).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lfr._numbers import finite
from lfr.errors import PolicyError
from lfr.retention import RetentionPolicy

__all__ = [
    "MAX_POLICY_BYTES",
    "POLICY_VERSION",
    "Policy",
    "read_policy_file",
]

#: The version a policy document declares in ``lfr_policy``.
POLICY_VERSION = 1
#: The largest policy document read (a real one is well under 1 KiB).
MAX_POLICY_BYTES = 64 * 1024

#: The lowest match threshold by default: :data:`lfr.pipeline.DEFAULT_THRESHOLD`
#: (not imported, to keep this module free of the pipeline).
_DEFAULT_MIN_THRESHOLD = 0.945
_RETENTION = ("alert_ttl", "max_hold", "purge_interval", "watchlist_ttl_after_stop")
_VERSION_KEY = "lfr_policy"
_KEYS = (
    _VERSION_KEY,
    *(f"{name}_seconds" for name in _RETENTION),
    "two_person_review",
    "min_threshold",
    "max_watchlist_age_seconds",
)


@dataclass(frozen=True)
class Policy:
    """The auditor's policy: what a deployment was allowed to do.

    The defaults follow UK practice: alerts deleted within 24 hours unless held
    for a case (a hold at most 31 days at a time), purged every 5 minutes, the
    watchlist destroyed within 24 hours of the stop and compiled at most 24 hours
    before the start, two people reviewing each alert, and lfr's calibrated
    default threshold as the lowest allowed.

    Attributes:
        alert_ttl: The longest an alert may be kept after its time.
        max_hold: The longest a hold may reach into the future.
        purge_interval: The longest between two purges.
        watchlist_ttl_after_stop: The longest a watchlist may outlive its
            deployment's stop (zero: destroyed at the stop).
        two_person_review: Whether each alert needs two different reviewers.
        min_threshold: The lowest match threshold (cosine similarity) a
            deployment may use.
        max_watchlist_age: How old the watchlist may be when a deployment starts
            (``None``: no limit).

    Raises:
        PolicyError: A duration is not a ``timedelta``, ``alert_ttl``,
            ``max_hold``, ``purge_interval`` or ``max_watchlist_age`` is not
            positive, ``watchlist_ttl_after_stop`` is negative,
            ``two_person_review`` is not a ``bool``, or ``min_threshold`` is not a
            finite number in [-1, 1].

    Examples:
        >>> from datetime import timedelta
        >>> import lfr
        >>> policy = lfr.Policy(alert_ttl=timedelta(hours=12))
        >>> policy.to_json()["alert_ttl_seconds"]
        43200.0
        >>> lfr.Policy.from_json(policy.to_json()) == policy
        True
        >>> policy.retention.alert_ttl
        datetime.timedelta(seconds=43200)
    """

    alert_ttl: timedelta = timedelta(hours=24)
    max_hold: timedelta = timedelta(days=31)
    purge_interval: timedelta = timedelta(minutes=5)
    watchlist_ttl_after_stop: timedelta = timedelta(hours=24)
    two_person_review: bool = True
    min_threshold: float = _DEFAULT_MIN_THRESHOLD
    max_watchlist_age: timedelta | None = timedelta(hours=24)

    def __post_init__(self) -> None:
        try:
            self.retention  # noqa: B018 - validates the retention fields
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"invalid policy: {exc}") from None
        threshold = self.min_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise PolicyError(
                f"min_threshold must be a number, got {type(threshold).__name__}"
            )
        number = finite(threshold)
        if number is None or not -1.0 <= number <= 1.0:
            raise PolicyError(
                f"min_threshold must be in [-1, 1], got {_short(threshold)}"
            )
        object.__setattr__(self, "min_threshold", number)
        age = self.max_watchlist_age
        if age is not None:
            if not isinstance(age, timedelta):
                raise PolicyError(
                    "max_watchlist_age must be a datetime.timedelta or None, got "
                    f"{type(age).__name__}"
                )
            if age <= timedelta(0):
                raise PolicyError(f"max_watchlist_age must be positive, got {age}")

    @property
    def retention(self) -> RetentionPolicy:
        """The retention part, as a :class:`lfr.RetentionPolicy`."""
        return RetentionPolicy(
            alert_ttl=self.alert_ttl,
            max_hold=self.max_hold,
            purge_interval=self.purge_interval,
            watchlist_ttl_after_stop=self.watchlist_ttl_after_stop,
            two_person_review=self.two_person_review,
        )

    def looser(self, recorded: RetentionPolicy) -> list[str]:
        """The retention fields in which ``recorded`` is looser than this policy.

        A duration is looser when it is longer; ``two_person_review`` when it is
        ``False`` where this policy says ``True``.

        Args:
            recorded: A deployment's recorded retention policy.

        Returns:
            The field names, in :class:`lfr.RetentionPolicy` order.
        """
        out = [
            name for name in _RETENTION if getattr(recorded, name) > getattr(self, name)
        ]
        if self.two_person_review and not recorded.two_person_review:
            out.append("two_person_review")
        return out

    def strictest(self, recorded: RetentionPolicy) -> RetentionPolicy:
        """``recorded`` tightened to this policy, field by field.

        Each duration is the shorter of the two; two-person review is required
        when either requires it. Deadlines judged with it hold the operator to
        what he recorded and the auditor to what he allows, whichever is stricter.

        Args:
            recorded: A deployment's recorded retention policy.

        Returns:
            The stricter policy.
        """
        durations = {
            name: min(getattr(recorded, name), getattr(self, name))
            for name in _RETENTION
        }
        return RetentionPolicy(
            **durations,
            two_person_review=recorded.two_person_review or self.two_person_review,
        )

    def to_json(self) -> dict[str, Any]:
        """The policy document as a JSON-ready dict (durations in seconds)."""
        out: dict[str, Any] = {_VERSION_KEY: POLICY_VERSION}
        for name in _RETENTION:
            out[f"{name}_seconds"] = getattr(self, name).total_seconds()
        out["two_person_review"] = self.two_person_review
        out["min_threshold"] = self.min_threshold
        out["max_watchlist_age_seconds"] = (
            None
            if self.max_watchlist_age is None
            else self.max_watchlist_age.total_seconds()
        )
        return out

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Policy:
        """Reads a policy document: its text, or the dict :meth:`to_json` gives.

        Every field is required and no other is allowed, so a misspelt field
        cannot fall back silently to a default.

        Args:
            data: The JSON text (``str`` or UTF-8 ``bytes``, at most
                :data:`MAX_POLICY_BYTES`) or the parsed object.

        Returns:
            The policy.

        Raises:
            PolicyError: The text is too long or not JSON (``NaN`` and
                ``Infinity`` are refused, as are repeated keys), the document is
                not an object, its ``lfr_policy`` version is missing or not
                :data:`POLICY_VERSION`, a field is unknown or missing, or a value
                has the wrong type or is out of range.
        """
        if isinstance(data, (str, bytes)):
            data = _parse(data)
        if not isinstance(data, Mapping):
            raise PolicyError(f"a policy is a JSON object, got {type(data).__name__}")
        if _VERSION_KEY not in data:
            raise PolicyError(
                f"not an lfr policy: it has no {_VERSION_KEY!r} version field"
            )
        version = data[_VERSION_KEY]
        if type(version) is not int or version != POLICY_VERSION:
            raise PolicyError(
                f"unknown policy version {_short(version)}; this lfr reads "
                f"{_VERSION_KEY} {POLICY_VERSION}"
            )
        unknown = sorted(_short(key) for key in data if key not in _KEYS)
        if unknown:
            raise PolicyError(f"unknown policy fields: {', '.join(unknown)}")
        missing = [key for key in _KEYS if key not in data]
        if missing:
            raise PolicyError(f"missing policy fields: {', '.join(missing)}")
        durations = {
            name: _seconds(f"{name}_seconds", data[f"{name}_seconds"])
            for name in _RETENTION
        }
        review = data["two_person_review"]
        if not isinstance(review, bool):
            raise PolicyError(
                f"two_person_review must be true or false, got {_short(review)}"
            )
        threshold = data["min_threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise PolicyError(
                f"min_threshold must be a number, got {_short(threshold)}"
            )
        age = data["max_watchlist_age_seconds"]
        return cls(
            **durations,
            two_person_review=review,
            min_threshold=threshold,
            max_watchlist_age=(
                None if age is None else _seconds("max_watchlist_age_seconds", age)
            ),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """Reads a policy document from a file.

        Args:
            path: The file.

        Returns:
            The policy.

        Raises:
            PolicyError: The file cannot be read, is larger than
                :data:`MAX_POLICY_BYTES` (refused before parsing), or is not a
                valid policy (:meth:`from_json`).
        """
        return read_policy_file(path)[0]


def read_policy_file(path: str | os.PathLike[str]) -> tuple[Policy, str]:
    """Reads a policy document and the SHA-256 of its bytes.

    The digest names the exact file an audit was judged against.

    Args:
        path: The file.

    Returns:
        The policy and the hex SHA-256 of the file.

    Raises:
        PolicyError: As :meth:`Policy.load`.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_POLICY_BYTES:
                raise PolicyError(_too_large(path))
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PolicyError(f"cannot read policy file {path}: {reason}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(_too_large(path))
    try:
        policy = Policy.from_json(raw)
    except PolicyError as exc:
        raise PolicyError(f"policy file {path}: {exc}") from None
    return policy, hashlib.sha256(raw).hexdigest()


def _too_large(path: str | os.PathLike[str]) -> str:
    return (
        f"policy file {path} is larger than {MAX_POLICY_BYTES} bytes: not a "
        "policy document"
    )


def _parse(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        if len(text) > MAX_POLICY_BYTES:
            raise PolicyError(f"a policy is at most {MAX_POLICY_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError("a policy must be UTF-8 text") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError(f"a policy is at most {MAX_POLICY_BYTES} bytes")
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
        )
    except RecursionError:
        raise PolicyError("a policy is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, PolicyError):
            raise
        raise PolicyError(f"a policy is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise PolicyError(f"a policy may not hold {name}: every number must be finite")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"a policy names {_short(key)} twice")
        out[key] = value
    return out


def _seconds(key: str, value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(f"{key} must be a number of seconds, got {_short(value)}")
    if finite(value) is None:
        raise PolicyError(f"{key} must be finite, got {_short(value)}")
    if value < 0:
        raise PolicyError(f"{key} must not be negative, got {value}")
    try:
        return timedelta(seconds=value)
    except OverflowError:
        raise PolicyError(f"{key} is out of range: {value}") from None


def _short(value: Any) -> str:
    """``repr`` of a value from the document, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
