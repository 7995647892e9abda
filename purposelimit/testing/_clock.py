"""A frozen clock for tests: decisions at pinned instants (DESIGN §3 "Conventions")."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .._time import Duration, add_duration, ensure_aware, parse_datetime, parse_duration

if TYPE_CHECKING:
    from .._engine import Engine

__all__ = ["FrozenClock", "frozen_clock"]


def _instant(value: datetime | str, name: str) -> datetime:
    if isinstance(value, str):
        return parse_datetime(value, name)
    if not isinstance(value, datetime):
        raise TypeError(
            f"{name}: an aware datetime or an ISO-8601 string, not {type(value).__name__}"
        )
    return ensure_aware(value, name)


class FrozenClock:
    """A clock that stands still until told to move: pass it wherever a clock goes.

    ``Engine(register, clock=clock)``, ``processing(..., clock=clock)`` and
    :func:`purposelimit.testing.make_engine` call it to learn the current
    instant; it answers the instant it was set to. Thread-safe.

    Args:
        at: the instant, an aware datetime or an ISO-8601 string with an offset
            (``"2026-03-01T10:00:00Z"``; a bare date means midnight UTC).

    Raises:
        NaiveDatetimeError: *at* has no timezone.
        ValueError: *at* is a string that is not ISO-8601.
        TypeError: *at* is neither a datetime nor a string.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, at: datetime | str) -> None:
        self._now = _instant(at, "at")
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        """Return the current (frozen) instant, an aware datetime."""
        return self._now

    @property
    def now(self) -> datetime:
        """The current (frozen) instant, an aware datetime."""
        return self._now

    def move_to(self, at: datetime | str) -> datetime:
        """Set the clock to *at* (forwards or backwards) and return it.

        Args:
            at: an aware datetime or an ISO-8601 string with an offset.

        Raises:
            NaiveDatetimeError: *at* has no timezone.
        """
        instant = _instant(at, "at")
        with self._lock:
            self._now = instant
        return instant

    def shift(self, delta: timedelta | Duration | str) -> datetime:
        """Move the clock by *delta* and return the new instant.

        Args:
            delta: a :class:`~datetime.timedelta` (may be negative: ``timedelta(seconds=-1)``),
                or an ISO-8601 duration (``"P3Y"``, a :class:`~purposelimit.Duration`)
                added in UTC with calendar arithmetic, as retention periods are
                (2024-02-29 + P1Y = 2025-02-28).

        Raises:
            ValueError: a string that is not an ISO-8601 duration.
        """
        with self._lock:
            if isinstance(delta, timedelta):
                self._now = self._now + delta
            else:
                duration = parse_duration(delta) if isinstance(delta, str) else delta
                self._now = add_duration(self._now, duration)
            return self._now

    def __repr__(self) -> str:
        return f"FrozenClock({self._now.isoformat()!r})"


@contextmanager
def frozen_clock(at: datetime | str, *, engine: Engine | None = None) -> Iterator[FrozenClock]:
    """Freeze time at *at* for the block; with *engine*, that engine's clock too.

    Inside the block, every decision of *engine* — guarded reads in its
    ``processing`` blocks, :meth:`~purposelimit.Engine.decide` without ``at`` —
    happens at the clock's instant; move it with :meth:`FrozenClock.shift` or
    :meth:`FrozenClock.move_to`. The engine's own clock is put back on exit,
    even on error. Without *engine*, pass the yielded clock where one goes.

    Args:
        at: the instant, an aware datetime or an ISO-8601 string with an offset.
        engine: an engine whose clock is replaced for the block.

    Yields:
        The :class:`FrozenClock`.

    Raises:
        NaiveDatetimeError: *at* has no timezone.
    """
    clock = FrozenClock(at)
    if engine is None:
        yield clock
        return
    previous = engine.clock
    engine.clock = clock
    try:
        yield clock
    finally:
        engine.clock = previous
