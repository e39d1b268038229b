"""Retention policy: how long alerts, holds and watchlists may be kept.

A :class:`RetentionPolicy` is the part of a deployment's policy that bounds what it
keeps. The alert store (:class:`lfr.AlertStore`) enforces ``alert_ttl`` and
``max_hold``; the pipeline calls :meth:`lfr.alerts.Records.purge` every
``purge_interval``; the audit log checks ``watchlist_ttl_after_stop`` and
``two_person_review``. The defaults follow UK practice for live facial recognition:
alerts deleted within 24 hours unless kept for a specific case, the watchlist
destroyed within 24 hours of the deployment's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lfr._numbers import finite

__all__ = ["RetentionPolicy"]

_DURATIONS = ("alert_ttl", "max_hold", "purge_interval", "watchlist_ttl_after_stop")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a deployment keeps what it keeps.

    Attributes:
        alert_ttl: How long an alert (its encrypted crop and metadata) is kept after
            the time of the match. An alert's expiry is fixed when it is stored:
            ``time + alert_ttl``. After it the alert cannot be read, even before a
            purge has removed it, unless a hold keeps it.
        max_hold: The longest a hold may reach into the future: a hold placed now
            may last until ``now + max_hold`` at most. A case that needs longer
            places a new hold before the old one ends, so every extension is
            recorded with its reason.
        purge_interval: How often a pipeline calls :meth:`lfr.alerts.Records.purge`.
            Reads refuse expired alerts at once whatever this is; it bounds how long
            their ciphertext stays in the file.
        watchlist_ttl_after_stop: How soon after a deployment stops its watchlist
            must be destroyed (checked by the audit log). Zero means at the stop.
        two_person_review: Whether an alert needs two different reviewers before
            it may be acted on (checked by the audit log, as the EU AI Act asks).

    Raises:
        TypeError: A duration is not a ``timedelta`` or ``two_person_review`` is
            not a ``bool``.
        ValueError: ``alert_ttl``, ``max_hold`` or ``purge_interval`` is not
            positive, or ``watchlist_ttl_after_stop`` is negative.

    Examples:
        >>> from datetime import timedelta
        >>> import lfr
        >>> policy = lfr.RetentionPolicy(alert_ttl=timedelta(hours=12))
        >>> policy.to_json()["alert_ttl_seconds"]
        43200.0
        >>> lfr.RetentionPolicy.from_json(policy.to_json()) == policy
        True
    """

    alert_ttl: timedelta = timedelta(hours=24)
    max_hold: timedelta = timedelta(days=31)
    purge_interval: timedelta = timedelta(minutes=5)
    watchlist_ttl_after_stop: timedelta = timedelta(hours=24)
    two_person_review: bool = True

    def __post_init__(self) -> None:
        for name in _DURATIONS:
            value = getattr(self, name)
            if not isinstance(value, timedelta):
                raise TypeError(
                    f"{name} must be a datetime.timedelta, got {type(value).__name__}"
                )
            if name == "watchlist_ttl_after_stop":
                if value < timedelta(0):
                    raise ValueError(f"{name} must not be negative, got {value}")
            elif value <= timedelta(0):
                raise ValueError(f"{name} must be positive, got {value}")
        if not isinstance(self.two_person_review, bool):
            raise TypeError(
                "two_person_review must be a bool, got "
                f"{type(self.two_person_review).__name__}"
            )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: durations in seconds (``alert_ttl_seconds``, ...)."""
        out: dict[str, Any] = {
            f"{name}_seconds": getattr(self, name).total_seconds()
            for name in _DURATIONS
        }
        out["two_person_review"] = self.two_person_review
        return out

    @classmethod
    def from_json(cls, data: Any) -> RetentionPolicy:
        """Reads :meth:`to_json`'s output; missing fields take their defaults.

        Raises:
            ValueError: ``data`` is not a dict, has an unknown key (a misspelt
                field must not silently fall back to its default), or a value is
                not a finite number of seconds or a valid policy.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a retention policy is a JSON object, got {data!r}")
        known = {f"{name}_seconds" for name in _DURATIONS} | {"two_person_review"}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ValueError(f"unknown retention policy fields: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name in _DURATIONS:
            key = f"{name}_seconds"
            if key not in data:
                continue
            seconds = data[key]
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, (int, float))
                or finite(seconds) is None
            ):
                raise ValueError(f"{key} must be a finite number, got {seconds!r}")
            try:
                kwargs[name] = timedelta(seconds=seconds)
            except OverflowError:
                raise ValueError(f"{key} is out of range: {seconds!r}") from None
        if "two_person_review" in data:
            kwargs["two_person_review"] = data["two_person_review"]
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
