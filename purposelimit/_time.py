"""Instants and ISO-8601 durations, as DESIGN §3 fixes them.

* Instants are timezone-aware :class:`datetime.datetime` values; a naive one is
  refused everywhere with :class:`NaiveDatetimeError`.
* Durations are ISO-8601 (``P3Y``, ``P13M``, ``P1Y6M``, ``PT12H``, ``P2W``) and
  are added in UTC with calendar arithmetic: years and months first, a day past
  the end of a short month clamped to its last day (2024-02-29 + P1Y =
  2025-02-28), then weeks, days and time.
* In text, a date-time needs an offset (``Z`` or ``+01:00``); a bare date
  (``2025-01-10``) means midnight UTC (DESIGN §6).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, timedelta

import attrs

from ._errors import NaiveDatetimeError, OutOfRangeError

__all__ = [
    "Duration",
    "OutOfRangeError",
    "add_duration",
    "ensure_aware",
    "parse_datetime",
    "parse_duration",
]

_DURATION = re.compile(
    r"P(?!\Z)"
    r"(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?\Z"
)
_MAX_COMPONENT = 100_000


@attrs.frozen(slots=True)
class Duration:
    """An ISO-8601 duration split into its calendar part and its exact part.

    Build it with :func:`parse_duration`; ``str()`` gives back the ISO-8601 text.
    """

    text: str
    months: int
    delta: timedelta

    def __str__(self) -> str:
        return self.text


def parse_duration(text: str) -> Duration:
    """Parse an ISO-8601 duration such as ``P3Y``, ``P13M``, ``P1Y6M``, ``P2W`` or ``PT36H``.

    Args:
        text: the duration; integer components only, no sign, no fractions.

    Returns:
        The parsed :class:`Duration`.

    Raises:
        ValueError: *text* is not an ISO-8601 duration (``'3 years'``).
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as 'P3Y', not {type(text).__name__}")
    match = _DURATION.match(text)
    if match is None or text.endswith("T"):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(f"{shown!r} is not an ISO-8601 duration (such as 'P3Y', 'P13M' or 'P90D')")
    parts = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
    if any(v > _MAX_COMPONENT for v in parts.values()):
        raise ValueError(f"{text!r} is out of range")
    return Duration(
        text=text,
        months=parts["years"] * 12 + parts["months"],
        delta=timedelta(
            weeks=parts["weeks"],
            days=parts["days"],
            hours=parts["hours"],
            minutes=parts["minutes"],
            seconds=parts["seconds"],
        ),
    )


def add_duration(instant: datetime, duration: Duration) -> datetime:
    """Add *duration* to the aware *instant* in UTC, clamping to the end of short months.

    >>> from datetime import datetime, UTC
    >>> add_duration(datetime(2024, 2, 29, tzinfo=UTC), parse_duration("P1Y")).isoformat()
    '2025-02-28T00:00:00+00:00'

    Returns an aware datetime in UTC. Results past year 9999 are capped at
    :data:`datetime.max` in UTC (a retention that never ends in practice).
    """
    aware = ensure_aware(instant, "instant")
    try:
        utc = aware.astimezone(UTC)
    except OverflowError:
        # Outside what UTC can hold (year 9999 or year 1 with an offset). Past the
        # end: nothing ends after it. Before the start: count from the earliest
        # instant, an end a few hours early at most (never a longer retention).
        if aware.year > 1:
            return datetime.max.replace(tzinfo=UTC)
        utc = datetime.min.replace(tzinfo=UTC)
    try:
        if duration.months:
            total = utc.year * 12 + (utc.month - 1) + duration.months
            year, month = divmod(total, 12)
            month += 1
            day = min(utc.day, calendar.monthrange(year, month)[1])
            utc = utc.replace(year=year, month=month, day=day)
        return utc + duration.delta
    except (ValueError, OverflowError):
        return datetime.max.replace(tzinfo=UTC)


def ensure_aware(value: datetime, name: str = "datetime") -> datetime:
    """Return *value* if it is a timezone-aware datetime.

    Raises:
        NaiveDatetimeError: *value* is naive (no ``tzinfo``, or one that gives no offset).
        TypeError: *value* is not a datetime.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a timezone-aware datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(
            f"{name} is a naive datetime: give it a timezone "
            "(for example datetime.now(UTC) or datetime(2026, 3, 1, tzinfo=UTC))"
        )
    return value


def parse_datetime(text: str, name: str = "date") -> datetime:
    """Parse an ISO-8601 date-time with an offset, or a bare date meaning midnight UTC.

    Args:
        text: ``2025-01-10T09:00:00+00:00``, ``2025-01-10T09:00:00Z`` or ``2025-01-10``.
        name: what the value is, for the error message.

    Returns:
        An aware datetime.

    Raises:
        ValueError: *text* is not an ISO-8601 date or date-time, or
            (:class:`OutOfRangeError`) its offset puts it outside the years 1 to
            9999 in UTC (``9999-12-31T23:00:00-14:00``).
        NaiveDatetimeError: *text* is a date-time without an offset.
    """
    if not isinstance(text, str):
        raise ValueError(f"{name} must be an ISO-8601 string, not {type(text).__name__}")
    stripped = text.strip()
    if len(stripped) == 10:
        try:
            day = date.fromisoformat(stripped)
        except ValueError:
            pass
        else:
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        value = datetime.fromisoformat(stripped)
    except ValueError:
        shown = stripped if len(stripped) <= 40 else stripped[:37] + "..."
        raise ValueError(
            f"{name}: {shown!r} is not an ISO-8601 date-time such as 2025-01-10T09:00:00+00:00"
        ) from None
    if value.tzinfo is None:
        raise NaiveDatetimeError(
            f"{name}: a date-time needs an offset ('Z' or '+01:00'); a bare date means midnight UTC"
        )
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise OutOfRangeError(
            f"{name}: out of range: an instant must fall between the years 1 and 9999 in UTC"
        ) from None
    return value
