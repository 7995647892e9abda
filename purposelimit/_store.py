"""Where consents, withdrawals, objections and authorisations are kept.

The engine reads them through the small :class:`Store` protocol. This module
ships :class:`InMemoryStore`; durable stores implement the same protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, TypeVar, runtime_checkable

import attrs

from ._model import Authorisation, Consent, Objection, _check_aware, _check_ids, _stable_id, _to_tuple

__all__ = ["InMemoryStore", "Store", "SubjectEvents", "Withdrawal"]


@attrs.frozen(slots=True)
class Withdrawal:
    """A data subject's withdrawal of consent for some purposes (GDPR art. 7(3)).

    It applies, for the future only, to every consent of the same subject given
    at or before ``at`` whose purposes cover the processing purpose, for the
    processing purposes its own ``purposes`` cover: withdrawing
    ``newsletter.events`` leaves a consent for ``newsletter.product`` intact,
    even when both were given in one record.

    Attributes:
        subject: the data subject's id.
        purposes: the purpose ids or groups withdrawn.
        at: aware datetime the withdrawal took effect (included).
        channel: how it was expressed (unsubscribe link, phone, letter).
        id: the event's id; when omitted, a stable id derived from its content.
    """

    subject: str
    purposes: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_check_ids)
    at: datetime = attrs.field(validator=_check_aware)
    channel: str | None = None
    id: str = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if not self.purposes:
            raise ValueError("purposes: a withdrawal names at least one purpose")
        if self.id is None:
            payload = {"subject": self.subject, "purposes": list(self.purposes), "at": self.at.isoformat()}
            object.__setattr__(self, "id", _stable_id("withdrawal", payload))

    def __repr__(self) -> str:
        return f"Withdrawal(id={self.id!r}, purposes={self.purposes!r}, at={self.at.isoformat()!r})"


@attrs.frozen(slots=True)
class SubjectEvents:
    """Everything a store holds about one data subject, as the engine needs it."""

    consents: tuple[Consent, ...] = ()
    withdrawals: tuple[Withdrawal, ...] = ()
    objections: tuple[Objection, ...] = ()

    def merged(self, other: SubjectEvents) -> SubjectEvents:
        """Return these events and *other*'s, without duplicates (same id)."""
        if not (other.consents or other.withdrawals or other.objections):
            return self
        return SubjectEvents(
            consents=_union(self.consents, other.consents),
            withdrawals=_union(self.withdrawals, other.withdrawals),
            objections=_union(self.objections, other.objections),
        )


_E = TypeVar("_E", Consent, Withdrawal, Objection)


def _union(a: tuple[_E, ...], b: tuple[_E, ...]) -> tuple[_E, ...]:
    seen = {x.id for x in a}
    return a + tuple(x for x in b if x.id not in seen)


EMPTY_EVENTS = SubjectEvents()


@runtime_checkable
class Store(Protocol):
    """What the engine reads: per-subject events and the authorisations.

    ``version`` is a number that changes whenever anything is recorded, or
    ``None`` when the store cannot tell cheaply; the engine caches decisions
    only while the version is unchanged, and never when it is ``None``.
    """

    @property
    def version(self) -> int | None: ...

    def subject_events(self, subject: str) -> SubjectEvents: ...

    def authorisations(self) -> tuple[Authorisation, ...]: ...


class InMemoryStore:
    """A thread-safe in-memory :class:`Store`, for tests, scripts and one-process services.

    Recording the same event twice (same id) changes nothing. A withdrawal of
    consent is an event of its own (:class:`Withdrawal`); withdrawing an
    objection sets its ``withdrawn_at``.
    """

    def __init__(
        self,
        consents: Iterable[Consent] = (),
        *,
        withdrawals: Iterable[Withdrawal] = (),
        objections: Iterable[Objection] = (),
        authorisations: Iterable[Authorisation] = (),
    ) -> None:
        self._lock = threading.Lock()
        self._subjects: dict[str, SubjectEvents] = {}
        self._authorisations: dict[str, Authorisation] = {}
        self._keys: set[tuple[str, str]] = set()
        self._version = 0
        for c in consents:
            self.record(c)
        for w in withdrawals:
            self.record(w)
        for o in objections:
            self.record(o)
        for a in authorisations:
            self.record(a)

    @property
    def version(self) -> int:
        """Incremented by every event that changed the store."""
        return self._version

    def record(self, event: Consent | Withdrawal | Objection | Authorisation) -> bool:
        """Record one event; return ``False`` when an event with the same id was already there.

        Raises:
            ValueError: a different event with the same id is already recorded.
        """
        with self._lock:
            if isinstance(event, Authorisation):
                known = self._authorisations.get(event.id)
                if known is not None:
                    return self._same(known, event)
                self._authorisations[event.id] = event
                self._version += 1
                return True
            key = (type(event).__name__, event.id)
            events = self._subjects.get(event.subject, EMPTY_EVENTS)
            if key in self._keys:
                existing = next(e for e in _all(events) if type(e) is type(event) and e.id == event.id)
                return self._same(existing, event)
            self._keys.add(key)
            if isinstance(event, Consent):
                events = attrs.evolve(events, consents=(*events.consents, event))
            elif isinstance(event, Withdrawal):
                events = attrs.evolve(events, withdrawals=(*events.withdrawals, event))
            elif isinstance(event, Objection):
                events = attrs.evolve(events, objections=(*events.objections, event))
            else:  # pragma: no cover - guarded by the type annotations
                raise TypeError(f"cannot record a {type(event).__name__}")
            self._subjects[event.subject] = events
            self._version += 1
            return True

    @staticmethod
    def _same(existing: object, new: object) -> bool:
        if existing != new:
            raise ValueError(
                f"another {type(new).__name__} with id {getattr(new, 'id', '?')!r} is already recorded"
            )
        return False

    def withdraw(
        self, subject: str, purposes: Iterable[str] | str, at: datetime, *, channel: str | None = None
    ) -> Withdrawal:
        """Record that *subject* withdrew consent for *purposes* at *at*; return the event."""
        event = Withdrawal(subject=subject, purposes=_to_tuple(purposes), at=at, channel=channel)
        self.record(event)
        return event

    def withdraw_objection(self, objection_id: str, at: datetime) -> Objection:
        """Record that the person withdrew the objection *objection_id* at *at*.

        Raises:
            KeyError: no objection with that id.
        """
        with self._lock:
            for events in self._subjects.values():
                for o in events.objections:
                    if o.id == objection_id:
                        target = o
                        break
                else:
                    continue
                break
            else:
                raise KeyError(objection_id)
        updated = attrs.evolve(target, withdrawn_at=at)
        with self._lock:
            events = self._subjects[target.subject]
            objections = tuple(updated if o.id == objection_id else o for o in events.objections)
            self._subjects[target.subject] = attrs.evolve(events, objections=objections)
            self._version += 1
        return updated

    def subject_events(self, subject: str) -> SubjectEvents:
        """Return everything recorded about *subject* (empty when nothing is)."""
        return self._subjects.get(subject, EMPTY_EVENTS)

    def authorisations(self) -> tuple[Authorisation, ...]:
        """Return every recorded authorisation."""
        return tuple(self._authorisations.values())

    def __repr__(self) -> str:
        return f"<InMemoryStore subjects={len(self._subjects)} version={self._version}>"


def _all(events: SubjectEvents) -> Iterable[Consent | Withdrawal | Objection]:
    yield from events.consents
    yield from events.withdrawals
    yield from events.objections
