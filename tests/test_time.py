"""Instants and ISO-8601 durations (DESIGN §3 conventions, §6 date syntax)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purposelimit._errors import NaiveDatetimeError
from purposelimit._time import Duration, add_duration, ensure_aware, parse_datetime, parse_duration

PARIS_SUMMER = timezone(timedelta(hours=2))


class TestParseDuration:
    """parse_duration accepts ISO-8601 durations and nothing else."""

    @pytest.mark.parametrize(
        ("text", "months", "delta"),
        [
            ("P3Y", 36, timedelta(0)),
            ("P13M", 13, timedelta(0)),
            ("P1Y6M", 18, timedelta(0)),
            ("P2W", 0, timedelta(weeks=2)),
            ("P90D", 0, timedelta(days=90)),
            ("PT36H", 0, timedelta(hours=36)),
            ("PT1M", 0, timedelta(minutes=1)),
            ("P1DT12H30M15S", 0, timedelta(days=1, hours=12, minutes=30, seconds=15)),
            ("P1Y2M3W4DT5H6M7S", 14, timedelta(weeks=3, days=4, hours=5, minutes=6, seconds=7)),
            ("P0D", 0, timedelta(0)),
        ],
    )
    def test_valid(self, text: str, months: int, delta: timedelta) -> None:
        """Calendar parts become months, the rest an exact timedelta; str() gives the text back."""
        duration = parse_duration(text)
        assert (duration.months, duration.delta) == (months, delta)
        assert str(duration) == text

    @pytest.mark.parametrize(
        "text",
        [
            "3 years",
            "",
            "P",
            "PT",
            "P1YT",
            "p3y",
            "P3y",
            "P1.5Y",
            "-P1Y",
            "P-1Y",
            "P1M1Y",
            "3Y",
            "P3Y ",
            " P3Y",
            "P3Y\n",
            "PTH",
            "P1H",
            "P100001Y",
        ],
    )
    def test_invalid(self, text: str) -> None:
        """Anything else is a ValueError naming the text."""
        with pytest.raises(ValueError, match=r"ISO-8601|out of range"):
            parse_duration(text)

    def test_three_years_message(self) -> None:
        """'3 years' is reported as not an ISO-8601 duration, with an example of one."""
        with pytest.raises(ValueError, match=r"'3 years' is not an ISO-8601 duration.*P3Y"):
            parse_duration("3 years")

    @pytest.mark.parametrize("value", [3, None, 3.0, b"P3Y"])
    def test_not_a_string(self, value: object) -> None:
        """A non-string is refused with a ValueError."""
        with pytest.raises(ValueError, match="must be a string"):
            parse_duration(value)  # type: ignore[arg-type]

    def test_long_text_is_shortened_in_the_message(self) -> None:
        """A long invalid text is not repeated whole."""
        with pytest.raises(ValueError, match="ISO-8601") as info:
            parse_duration("x" * 500)
        assert "x" * 100 not in str(info.value)


class TestAddDuration:
    """add_duration: UTC calendar arithmetic with end-of-month clamping."""

    @pytest.mark.parametrize(
        ("start", "text", "end"),
        [
            (datetime(2024, 2, 29, tzinfo=UTC), "P1Y", datetime(2025, 2, 28, tzinfo=UTC)),
            (datetime(2024, 2, 29, tzinfo=UTC), "P4Y", datetime(2028, 2, 29, tzinfo=UTC)),
            (datetime(2024, 1, 31, tzinfo=UTC), "P1M", datetime(2024, 2, 29, tzinfo=UTC)),
            (datetime(2023, 1, 31, tzinfo=UTC), "P1M", datetime(2023, 2, 28, tzinfo=UTC)),
            (datetime(2024, 3, 31, tzinfo=UTC), "P1M", datetime(2024, 4, 30, tzinfo=UTC)),
            (datetime(2024, 1, 31, tzinfo=UTC), "P13M", datetime(2025, 2, 28, tzinfo=UTC)),
            (datetime(2024, 11, 15, tzinfo=UTC), "P2M", datetime(2025, 1, 15, tzinfo=UTC)),
            (datetime(2024, 1, 31, tzinfo=UTC), "P1M1D", datetime(2024, 3, 1, tzinfo=UTC)),
            (
                datetime(2024, 1, 1, 9, 30, tzinfo=UTC),
                "P2W",
                datetime(2024, 1, 15, 9, 30, tzinfo=UTC),
            ),
            (datetime(2024, 1, 1, 18, tzinfo=UTC), "PT36H", datetime(2024, 1, 3, 6, tzinfo=UTC)),
        ],
    )
    def test_calendar_arithmetic(self, start: datetime, text: str, end: datetime) -> None:
        """Years and months first (clamped to the month's last day), then weeks, days and time."""
        assert add_duration(start, parse_duration(text)) == end

    def test_added_in_utc(self) -> None:
        """The arithmetic is done in UTC: local midnight on the 31st is the 30th in UTC."""
        start = datetime(2024, 3, 31, 0, 30, tzinfo=PARIS_SUMMER)  # 2024-03-30T22:30Z
        result = add_duration(start, parse_duration("P1M"))
        assert result == datetime(2024, 4, 30, 22, 30, tzinfo=UTC)
        assert result.utcoffset() == timedelta(0)

    def test_naive_refused(self) -> None:
        """A naive instant is refused."""
        with pytest.raises(NaiveDatetimeError):
            add_duration(datetime(2024, 1, 1), parse_duration("P1Y"))

    def test_overflow_is_capped(self) -> None:
        """A result past year 9999 is capped at datetime.max in UTC (never ends in practice)."""
        result = add_duration(datetime(9999, 1, 1, tzinfo=UTC), parse_duration("P5Y"))
        assert result == datetime.max.replace(tzinfo=UTC)
        capped = add_duration(datetime(9999, 12, 31, tzinfo=UTC), parse_duration("P2D"))
        assert capped == datetime.max.replace(tzinfo=UTC)

    @settings(max_examples=200, deadline=None)
    @given(
        a=st.datetimes(
            min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
        b=st.datetimes(
            min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
        years=st.integers(0, 20),
        months=st.integers(0, 30),
        days=st.integers(0, 400),
    )
    def test_monotonic_and_never_shorter(
        self, a: datetime, b: datetime, years: int, months: int, days: int
    ) -> None:
        """A later start never ends earlier, and adding a duration never goes back in time."""
        duration = parse_duration(f"P{years}Y{months}M{days}D")
        lo, hi = min(a, b), max(a, b)
        assert add_duration(lo, duration) <= add_duration(hi, duration)
        assert add_duration(lo, duration) >= lo

    @settings(max_examples=200, deadline=None)
    @given(
        start=st.datetimes(
            min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
        months=st.integers(1, 240),
    )
    def test_months_keep_the_day_or_clamp(self, start: datetime, months: int) -> None:
        """Adding months keeps the day of month (or clamps it to the last day) and the time."""
        end = add_duration(start, Duration(text=f"P{months}M", months=months, delta=timedelta(0)))
        assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == months
        assert end.day == start.day or (end.day < start.day and (end + timedelta(days=1)).day == 1)
        assert end.time() == start.time()


class TestParseDatetime:
    """parse_datetime: an offset is required; a bare date is midnight UTC."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2025-01-10T09:00:00+00:00", datetime(2025, 1, 10, 9, tzinfo=UTC)),
            ("2025-01-10T09:00:00Z", datetime(2025, 1, 10, 9, tzinfo=UTC)),
            ("2025-01-10T10:00:00+01:00", datetime(2025, 1, 10, 9, tzinfo=UTC)),
            ("2025-01-10", datetime(2025, 1, 10, tzinfo=UTC)),
            ("  2025-01-10  ", datetime(2025, 1, 10, tzinfo=UTC)),
        ],
    )
    def test_valid(self, text: str, expected: datetime) -> None:
        """Offsets and Z are accepted; a bare date means midnight UTC."""
        value = parse_datetime(text)
        assert value == expected
        assert value.utcoffset() is not None

    def test_bare_date_is_utc_midnight(self) -> None:
        """A bare date is midnight in UTC, not local time."""
        assert parse_datetime("2025-01-10").utcoffset() == timedelta(0)

    @pytest.mark.parametrize("text", ["2025-01-10T09:00:00", "2025-01-10 09:00"])
    def test_naive_refused(self, text: str) -> None:
        """A date-time without an offset is a NaiveDatetimeError (also a ValueError)."""
        with pytest.raises(NaiveDatetimeError, match="offset"):
            parse_datetime(text)
        with pytest.raises(ValueError, match="offset"):
            parse_datetime(text)

    @pytest.mark.parametrize("text", ["", "yesterday", "2025-02-30", "2025-13-01", "10/01/2025"])
    def test_invalid(self, text: str) -> None:
        """Text that is not an ISO-8601 date is a ValueError naming the field."""
        with pytest.raises(ValueError, match="collected_at"):
            parse_datetime(text, "collected_at")

    def test_not_a_string(self) -> None:
        """A non-string is refused."""
        with pytest.raises(ValueError, match="ISO-8601 string"):
            parse_datetime(20250110)  # type: ignore[arg-type]

    @settings(max_examples=200, deadline=None)
    @given(
        st.datetimes(
            min_value=datetime(1900, 1, 1),
            max_value=datetime(2200, 1, 1),
            timezones=st.sampled_from([UTC, PARIS_SUMMER, timezone(timedelta(hours=-5))]),
        )
    )
    def test_round_trip(self, value: datetime) -> None:
        """An aware datetime's isoformat parses back to the same instant."""
        assert parse_datetime(value.isoformat()) == value


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


class TestEnsureAware:
    """ensure_aware: instants must carry an offset."""

    def test_aware_passes(self) -> None:
        """An aware datetime is returned as is."""
        value = datetime(2025, 1, 1, tzinfo=PARIS_SUMMER)
        assert ensure_aware(value) is value

    def test_naive_and_offsetless_refused(self) -> None:
        """No tzinfo, or a tzinfo giving no offset, is naive; the message names the value."""
        with pytest.raises(NaiveDatetimeError, match="given_at"):
            ensure_aware(datetime(2025, 1, 1), "given_at")
        with pytest.raises(NaiveDatetimeError):
            ensure_aware(datetime(2025, 1, 1, tzinfo=_NoOffset()))

    def test_not_a_datetime(self) -> None:
        """A date or a string is a TypeError."""
        with pytest.raises(TypeError):
            ensure_aware("2025-01-01")  # type: ignore[arg-type]
