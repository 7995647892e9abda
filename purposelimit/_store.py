"""Where consents, withdrawals, objections and authorisations are kept.

The engine reads them through the small :class:`Store` protocol. A
:class:`Registry` is a store that is also written to: an append-only log of
events (consents given, refused or not asked; withdrawals; objections and their
withdrawals; authorisations), each recorded once with who recorded it and when,
from which the state at any past instant can be rebuilt (GDPR art. 5(2),
7(1), 7(3)). This module ships :class:`InMemoryStore`; the durable stores
(``SQLiteStore``, ``SQLAlchemyStore``) implement the same interface.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, TypeVar, runtime_checkable

import attrs

from ._errors import EventRefused
from ._ids import ancestors, validate_id
from ._model import (
    Authorisation,
    Consent,
    ConsentAnswer,
    ConsentState,
    Objection,
    _check_aware,
    _check_ids,
    _stable_id,
    _to_tuple,
)
from ._time import ensure_aware

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "FLAG_NO_ACTOR",
    "FLAG_NO_EVIDENCE",
    "Event",
    "InMemoryStore",
    "ObjectionWithdrawal",
    "RecordedEvent",
    "Registry",
    "RegistryView",
    "Requirement",
    "Store",
    "SubjectEvents",
    "Withdrawal",
    "event_kind",
    "fold_events",
]


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
            payload = {
                "subject": self.subject,
                "purposes": list(self.purposes),
                "at": self.at,
            }
            object.__setattr__(self, "id", _stable_id("withdrawal", payload))

    def __repr__(self) -> str:
        return f"Withdrawal(id={self.id!r}, purposes={self.purposes!r}, at={self.at.isoformat()!r})"


@attrs.frozen(slots=True)
class ObjectionWithdrawal:
    """A data subject's withdrawal of an objection to direct marketing (GDPR art. 21).

    Registries are append-only: withdrawing an objection records this event
    instead of changing the objection. The objection is read as withdrawn from
    ``at`` on (the earliest such event counts). Usually made through
    :meth:`Registry.withdraw_objection`, which fills in ``subject``.

    Attributes:
        objection: the id of the withdrawn :class:`~purposelimit.Objection`.
        subject: the data subject's id (the objection's).
        at: aware datetime the withdrawal took effect (included); not before
            the objection was made.
        channel: how it was expressed.
        id: the event's id; when omitted, a stable id derived from the objection and ``at``.
    """

    objection: str
    subject: str
    at: datetime = attrs.field(validator=_check_aware)
    channel: str | None = None
    id: str = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.id is None:
            payload = {"objection": self.objection, "at": self.at}
            object.__setattr__(self, "id", _stable_id("objection-withdrawal", payload))

    def __repr__(self) -> str:
        return (
            f"ObjectionWithdrawal(id={self.id!r}, objection={self.objection!r}, "
            f"at={self.at.isoformat()!r})"
        )


#: Every kind of event a registry records.
Event: TypeAlias = Consent | Withdrawal | Objection | ObjectionWithdrawal | Authorisation

_KINDS: dict[type, str] = {
    Consent: "consent",
    Withdrawal: "withdrawal",
    Objection: "objection",
    ObjectionWithdrawal: "objection-withdrawal",
    Authorisation: "authorisation",
}


def event_kind(event: Event) -> str:
    """Return the kind of *event*: ``consent``, ``withdrawal``, ``objection``,
    ``objection-withdrawal`` or ``authorisation``.

    Raises:
        TypeError: *event* is not one of the registry's event types.
    """
    kind = _KINDS.get(type(event))
    if kind is None:
        raise TypeError(
            "a registry records consent, withdrawal, objection and authorisation events, "
            f"not {type(event).__name__}"
        )
    return kind


#: Flag of a grant recorded without evidence of how it was given (GDPR art. 7(1)).
FLAG_NO_EVIDENCE = "no-evidence"
#: Flag of an event recorded without an actor (who recorded it).
FLAG_NO_ACTOR = "no-actor"

#: What a registry does with an event that lacks evidence or an actor.
Requirement: TypeAlias = Literal["refuse", "flag", "off"]


@attrs.frozen(slots=True)
class RecordedEvent:
    """One entry of a registry's log: an event as it was recorded.

    Attributes:
        seq: its position in the log (1, 2, …; increasing in commit order).
        event: the event itself.
        recorded_at: aware UTC datetime the registry recorded it (the writing
            process's clock; distinct from the event's own ``given_at``/``at``).
        actor: who recorded it (a user, a service, an import job), if given.
        flags: what it lacked when recorded: ``"no-evidence"`` (a grant
            without an evidence mechanism), ``"no-actor"``.
    """

    seq: int
    event: Event
    recorded_at: datetime
    actor: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """The event's kind (see :func:`event_kind`)."""
        return event_kind(self.event)

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(seq={self.seq}, kind={self.kind!r}, id={self.event.id!r}, "
            f"recorded_at={self.recorded_at.isoformat()!r}, flags={self.flags!r})"
        )


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


def fold_events(events: Iterable[Event]) -> SubjectEvents:
    """Return the :class:`SubjectEvents` of one data subject's events, in log order.

    Objection withdrawals are applied to their objections (the earliest
    ``at`` counts); authorisations are ignored.
    """
    consents: list[Consent] = []
    withdrawals: list[Withdrawal] = []
    objections: dict[str, Objection] = {}
    for event in events:
        if isinstance(event, Consent):
            consents.append(event)
        elif isinstance(event, Withdrawal):
            withdrawals.append(event)
        elif isinstance(event, Objection):
            objections.setdefault(event.id, event)
        elif isinstance(event, ObjectionWithdrawal):
            target = objections.get(event.objection)
            if target is not None and (
                target.withdrawn_at is None or event.at < target.withdrawn_at
            ):
                objections[event.objection] = attrs.evolve(target, withdrawn_at=event.at)
    if not (consents or withdrawals or objections):
        return EMPTY_EVENTS
    return SubjectEvents(tuple(consents), tuple(withdrawals), tuple(objections.values()))


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


@runtime_checkable
class Registry(Store, Protocol):
    """A :class:`Store` that is also written to: the append-only registry of events.

    Implemented by :class:`InMemoryStore`, ``SQLiteStore`` and
    ``SQLAlchemyStore``; ``open_store(url)`` opens one from a URL. Nothing is
    ever updated in place: a withdrawal, an objection's withdrawal or a
    correction is a new event, so the state at any past instant can be rebuilt
    (GDPR art. 5(2): the controller must be able to demonstrate compliance).
    """

    def subject_events(
        self, subject: str, *, known_at: datetime | None = None
    ) -> SubjectEvents: ...

    def authorisations(self, *, known_at: datetime | None = None) -> tuple[Authorisation, ...]: ...

    def record(self, event: Event, *, actor: str | None = None) -> bool: ...

    def record_many(self, events: Iterable[Event], *, actor: str | None = None) -> int: ...

    def withdraw(
        self,
        subject: str,
        purposes: Iterable[str] | str,
        at: datetime,
        *,
        channel: str | None = None,
        actor: str | None = None,
    ) -> Withdrawal: ...

    def withdraw_objection(
        self,
        objection_id: str,
        at: datetime,
        *,
        channel: str | None = None,
        actor: str | None = None,
    ) -> Objection: ...

    def consent_state_at(
        self, subject: str, purpose: str, at: datetime, *, known_at: datetime | None = None
    ) -> tuple[ConsentState, Consent | None]: ...

    def consent_events(
        self, subject: str, purpose: str, at: datetime, *, known_at: datetime | None = None
    ) -> SubjectEvents: ...

    def as_of(self, known_at: datetime) -> RegistryView: ...

    def history(
        self, subject: str | None = None, *, flagged: bool = False
    ) -> Iterator[RecordedEvent]: ...

    def close(self) -> None: ...


#: Valid purpose ids seen, with their ancestors (most specific first): a bounded memo.
_LINEAGES: dict[str, tuple[str, ...]] = {}


def _utc_now() -> datetime:
    return datetime.now(UTC)


_REQUIREMENTS: dict[str, Requirement] = {"refuse": "refuse", "flag": "flag", "off": "off"}


def _requirement(value: str, name: str) -> Requirement:
    if isinstance(value, str) and value in _REQUIREMENTS:
        return _REQUIREMENTS[value]
    raise ValueError(f"{name} must be 'refuse', 'flag' or 'off', not {value!r}")


def _shown(id_: str) -> str:
    return repr(id_ if len(id_) <= 60 else id_[:57] + "...")


def _refused(what: str) -> EventRefused:
    return EventRefused(f"{what}; nothing was recorded")


def _restricts(event: Event) -> bool:
    """Whether *event* only ever restricts processing (never turned away for missing paperwork)."""
    if isinstance(event, Consent):
        return event.state is not ConsentAnswer.GIVEN
    return isinstance(event, Withdrawal | Objection)


_ConsentStateFn = Callable[[SubjectEvents, str, datetime], tuple[ConsentState, Consent | None]]
_consent_state_fn: _ConsentStateFn | None = None


def _consent_state(
    events: SubjectEvents, purpose: str, at: datetime
) -> tuple[ConsentState, Consent | None]:
    # The engine imports this module, so it is bound on first use.
    global _consent_state_fn
    if _consent_state_fn is None:
        from ._engine import consent_state

        _consent_state_fn = consent_state
    return _consent_state_fn(events, purpose, at)


#: Looks up a recorded event by (kind, id) inside a write; ``None`` when there is none.
Finder: TypeAlias = Callable[[str, str], Event | None]


class RegistryBase(ABC):
    """What every registry shares: the admission rules, withdrawals, consent state and views.

    A concrete store provides the storage primitives (``_write``,
    ``subject_events``, ``authorisations``, ``history``, ``_find``, ``version``,
    ``close``); this class turns them into the :class:`Registry` interface.

    Args:
        require_evidence: what to do with a consent *given* without evidence of
            how (no :class:`~purposelimit.Evidence` or no mechanism; GDPR art.
            7(1)): ``"refuse"`` (raise :class:`~purposelimit.EventRefused`),
            ``"flag"`` (record it with the flag ``"no-evidence"``; the
            default) or ``"off"``.
        require_actor: the same for an event recorded without an actor
            (flag ``"no-actor"``). An event that only restricts processing — a
            withdrawal, an objection, a refusal, a not-asked record — is never
            refused: it is flagged instead (GDPR art. 7(3), 21(3)).
        clock: returns the current aware datetime, used for ``recorded_at``;
            default ``datetime.now(UTC)``.
    """

    def __init__(
        self,
        *,
        require_evidence: Requirement = "flag",
        require_actor: Requirement = "flag",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.require_evidence: Requirement = _requirement(require_evidence, "require_evidence")
        self.require_actor: Requirement = _requirement(require_actor, "require_actor")
        self._clock: Callable[[], datetime] = _utc_now if clock is None else clock

    # ------------------------------------------------------------------ storage primitives

    @property
    @abstractmethod
    def version(self) -> int | None:
        """A number that changes whenever anything is recorded."""

    @abstractmethod
    def subject_events(self, subject: str, *, known_at: datetime | None = None) -> SubjectEvents:
        """Return the events of *subject*; only those recorded at or before *known_at* if given."""

    @abstractmethod
    def authorisations(self, *, known_at: datetime | None = None) -> tuple[Authorisation, ...]:
        """Return the authorisations; only those recorded at or before *known_at* if given."""

    @abstractmethod
    def history(
        self, subject: str | None = None, *, flagged: bool = False
    ) -> Iterator[RecordedEvent]:
        """Yield the recorded events in log order (of *subject* only, or flagged ones only)."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections; it cannot be used afterwards."""

    @abstractmethod
    def _write(self, events: tuple[Event, ...], actor: str | None, recorded_at: datetime) -> int:
        """Record *events* in one transaction, through :meth:`_admit`; return how many were new."""

    @abstractmethod
    def _find(self, kind: str, id_: str) -> Event | None:
        """Return the recorded event of *kind* with id *id_*, or ``None``."""

    def _consent_events(
        self, subject: str, lineage: tuple[str, ...], at: datetime, known_at: datetime | None
    ) -> SubjectEvents:
        """The events :meth:`consent_state_at` needs: at least the consents and withdrawals
        naming a purpose in *lineage* and dated at or before *at*. Stores with an index override it.
        """
        return self.subject_events(subject, known_at=known_at)

    # ------------------------------------------------------------------ writing

    def record(self, event: Event, *, actor: str | None = None) -> bool:
        """Record one event; return ``False`` when the very same event was already recorded.

        Args:
            event: a :class:`~purposelimit.Consent` (given, refused or not asked),
                :class:`Withdrawal`, :class:`~purposelimit.Objection`,
                :class:`ObjectionWithdrawal` or :class:`~purposelimit.Authorisation`.
            actor: who records it (a user, a service, an import job).

        Returns:
            ``True`` when recorded, ``False`` for a duplicate (same kind, id and content).

        Raises:
            EventRefused: another event of the same kind has this id; or the
                settings require evidence or an actor it lacks; or an objection
                withdrawal names an unknown objection or predates it. Nothing
                was recorded.
            StoreError: the store could not write (read-only, disk full,
                unreachable); nothing was recorded.
        """
        return self.record_many((event,), actor=actor) == 1

    def record_many(self, events: Iterable[Event], *, actor: str | None = None) -> int:
        """Record *events* in one transaction: all of them or, on any error, none.

        Duplicates (already recorded, or repeated in *events*) are skipped.

        Returns:
            How many events were new.

        Raises:
            EventRefused, StoreError: as :meth:`record`; nothing was recorded.
            TypeError: an item is not a registry event.
        """
        items = tuple(events)
        for event in items:
            event_kind(event)
        if actor is not None and not isinstance(actor, str):
            raise TypeError(f"actor must be a string, not {type(actor).__name__}")
        if not items:
            return 0
        recorded_at = ensure_aware(self._clock(), "the store's clock").astimezone(UTC)
        return self._write(items, actor, recorded_at)

    def _admit(self, event: Event, actor: str | None, find: Finder) -> tuple[str, ...] | None:
        """Decide whether *event* may be recorded: ``None`` for a duplicate, else its flags.

        Called by :meth:`_write` inside its transaction, *find* seeing what the
        transaction has written so far.
        """
        kind = event_kind(event)
        name = f"{kind} {_shown(event.id)}"
        existing = find(kind, event.id)
        if existing is not None:
            if existing == event:
                return None
            raise _refused(f"another {kind} with id {_shown(event.id)} is already recorded")
        if isinstance(event, ObjectionWithdrawal):
            target = find("objection", event.objection)
            if not isinstance(target, Objection):
                raise _refused(f"{name} names no recorded objection")
            if target.subject != event.subject:
                raise _refused(f"{name} names another data subject than its objection")
            if event.at < target.at:
                raise _refused(f"{name} is dated before its objection was made")
        flags: list[str] = []
        if (
            isinstance(event, Consent)
            and event.state is ConsentAnswer.GIVEN
            and (event.evidence is None or event.evidence.mechanism is None)
            and self.require_evidence != "off"
        ):
            if self.require_evidence == "refuse":
                raise _refused(
                    f"{name} is given without evidence of how (an Evidence with a mechanism; "
                    "GDPR art. 7(1)) and this store requires it"
                )
            flags.append(FLAG_NO_EVIDENCE)
        if (actor is None or not actor.strip()) and self.require_actor != "off":
            if self.require_actor == "refuse" and not _restricts(event):
                raise _refused(f"{name} has no actor (who records it) and this store requires one")
            flags.append(FLAG_NO_ACTOR)
        return tuple(flags)

    def withdraw(
        self,
        subject: str,
        purposes: Iterable[str] | str,
        at: datetime,
        *,
        channel: str | None = None,
        actor: str | None = None,
    ) -> Withdrawal:
        """Record that *subject* withdrew consent for *purposes* at *at*; return the event.

        Takes effect from *at* on, for the future only (GDPR art. 7(3)). Never
        refused for a missing actor (flagged instead).

        Args:
            subject: the data subject's id.
            purposes: the purpose ids or groups withdrawn (each covers its descendants).
            at: aware datetime it took effect.
            channel: how it was expressed (unsubscribe link, phone, letter).
            actor: who records it.

        Raises:
            StoreError: the store could not write.
        """
        event = Withdrawal(subject=subject, purposes=_to_tuple(purposes), at=at, channel=channel)
        self.record(event, actor=actor)
        return event

    def withdraw_objection(
        self,
        objection_id: str,
        at: datetime,
        *,
        channel: str | None = None,
        actor: str | None = None,
    ) -> Objection:
        """Record that the person withdrew the objection *objection_id* at *at*.

        Appends an :class:`ObjectionWithdrawal` event; the objection itself is
        never changed.

        Returns:
            The objection as it now reads (``withdrawn_at`` set).

        Raises:
            KeyError: no objection with that id.
            EventRefused: *at* is before the objection was made, or an actor is
                required and missing.
            StoreError: the store could not write.
        """
        target = self._find("objection", objection_id)
        if not isinstance(target, Objection):
            raise KeyError(objection_id)
        event = ObjectionWithdrawal(
            objection=objection_id, subject=target.subject, at=at, channel=channel
        )
        self.record(event, actor=actor)
        return next(
            o for o in self.subject_events(target.subject).objections if o.id == objection_id
        )

    # ------------------------------------------------------------------ reading

    def consent_state_at(
        self, subject: str, purpose: str, at: datetime, *, known_at: datetime | None = None
    ) -> tuple[ConsentState, Consent | None]:
        """The consent state of *subject* for *purpose* at the instant *at* (DESIGN §3).

        "What consent did we hold on 2025-03-01?": the engine's consent-state
        rules applied to the registry's events. With *known_at*, only the
        events recorded at or before *known_at* count ("…as the registry stood
        on 2025-03-05").

        Args:
            subject: the data subject's id.
            purpose: a purpose id.
            at: aware instant the state is asked for.
            known_at: aware instant; ignore events recorded after it.

        Returns:
            The state and the consent record that decided (``None`` for ``none``).

        Raises:
            ValueError: *purpose* is not a valid id.
            NaiveDatetimeError: *at* or *known_at* is naive.
            StoreError: the store could not be read.

        Legal source: GDPR art. 5(2), 7(1), 7(3).
        """
        events = self.consent_events(subject, purpose, at, known_at=known_at)
        return _consent_state(events, purpose, at)

    def consent_events(
        self, subject: str, purpose: str, at: datetime, *, known_at: datetime | None = None
    ) -> SubjectEvents:
        """The consent lookup of a decision: the records :meth:`consent_state_at` rests on.

        At least the consents and withdrawals of *subject* naming *purpose* or
        one of its ancestors and dated at or before *at* (durable stores read
        exactly those, through an index); objections are not included.

        Args:
            subject, purpose, at, known_at: as for :meth:`consent_state_at`.

        Raises:
            ValueError, NaiveDatetimeError, StoreError: as for :meth:`consent_state_at`.
        """
        lineage = _LINEAGES.get(purpose)
        if lineage is None:
            problem = validate_id(purpose)
            if problem is not None:
                raise ValueError(f"purpose: {problem}")
            lineage = tuple(ancestors(purpose))
            if len(_LINEAGES) < 4096:
                _LINEAGES[purpose] = lineage
        ensure_aware(at, "at")
        if known_at is not None:
            ensure_aware(known_at, "known_at")
        return self._consent_events(subject, lineage, at, known_at)

    def as_of(self, known_at: datetime) -> RegistryView:
        """A read-only :class:`Store` of the events recorded at or before *known_at*.

        Give it to the engine to decide as the registry stood then ("which reads
        did we allow on 2025-03-01, with what we knew?").

        Raises:
            NaiveDatetimeError: *known_at* is naive.
        """
        return RegistryView(self, ensure_aware(known_at, "known_at"))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RegistryView:
    """A read-only view of a registry as it stood at *known_at* (see :meth:`Registry.as_of`).

    Implements :class:`Store`: only events recorded at or before ``known_at``
    are visible. ``version`` is the registry's, so an engine caching on it
    stays correct.
    """

    __slots__ = ("known_at", "registry")

    def __init__(self, registry: RegistryBase, known_at: datetime) -> None:
        self.registry = registry
        self.known_at = known_at

    @property
    def version(self) -> int | None:
        """The underlying registry's version."""
        return self.registry.version

    def subject_events(self, subject: str) -> SubjectEvents:
        """The events of *subject* recorded at or before ``known_at``."""
        return self.registry.subject_events(subject, known_at=self.known_at)

    def authorisations(self) -> tuple[Authorisation, ...]:
        """The authorisations recorded at or before ``known_at``."""
        return self.registry.authorisations(known_at=self.known_at)

    def consent_state_at(
        self, subject: str, purpose: str, at: datetime
    ) -> tuple[ConsentState, Consent | None]:
        """:meth:`Registry.consent_state_at` with this view's ``known_at``."""
        return self.registry.consent_state_at(subject, purpose, at, known_at=self.known_at)

    def __repr__(self) -> str:
        return f"<RegistryView known_at={self.known_at.isoformat()!r} of {self.registry!r}>"


class InMemoryStore(RegistryBase):
    """A thread-safe in-memory :class:`Registry`, for tests, scripts and one-process services.

    Recording the same event twice (same id and content) changes nothing. A
    withdrawal of consent is an event of its own (:class:`Withdrawal`), and so
    is the withdrawal of an objection (:class:`ObjectionWithdrawal`): nothing is
    updated in place. Nothing survives the process; use ``SQLiteStore`` or
    ``open_store("sqlite:///registry.db")`` for that.

    Args:
        consents, withdrawals, objections, authorisations: events recorded at
            once (without an actor).
        require_evidence, require_actor, clock: see :class:`RegistryBase`.
    """

    def __init__(
        self,
        consents: Iterable[Consent] = (),
        *,
        withdrawals: Iterable[Withdrawal] = (),
        objections: Iterable[Objection] = (),
        authorisations: Iterable[Authorisation] = (),
        require_evidence: Requirement = "flag",
        require_actor: Requirement = "flag",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(
            require_evidence=require_evidence, require_actor=require_actor, clock=clock
        )
        # Set on the instance even before any write: an instance attribute is
        # what the read path's attribute cache makes cheapest (a class one is not).
        self.version = 0
        self._lock = threading.Lock()
        self._log: list[RecordedEvent] = []
        self._index: dict[tuple[str, str], RecordedEvent] = {}
        self._by_subject: dict[str, list[RecordedEvent]] = {}
        self._subjects: dict[str, SubjectEvents] = {}
        self._authorisations: tuple[Authorisation, ...] = ()
        self.record_many([*consents, *withdrawals, *objections, *authorisations])

    #: The number of events recorded: changes with every write. A plain
    #: attribute, not a property: guarded reads compare it on every read.
    version: int = 0

    def _find(self, kind: str, id_: str) -> Event | None:
        entry = self._index.get((kind, id_))
        return None if entry is None else entry.event

    def _write(self, events: tuple[Event, ...], actor: str | None, recorded_at: datetime) -> int:
        with self._lock:
            staged: dict[tuple[str, str], RecordedEvent] = {}

            def find(kind: str, id_: str) -> Event | None:
                entry = staged.get((kind, id_)) or self._index.get((kind, id_))
                return None if entry is None else entry.event

            for event in events:
                flags = self._admit(event, actor, find)
                if flags is not None:
                    seq = len(self._log) + len(staged) + 1
                    staged[(event_kind(event), event.id)] = RecordedEvent(
                        seq, event, recorded_at, actor, flags
                    )
            for key, entry in staged.items():
                self._log.append(entry)
                self._index[key] = entry
                event = entry.event
                if isinstance(event, Authorisation):
                    self._authorisations = (*self._authorisations, event)
                else:
                    entries = self._by_subject.setdefault(event.subject, [])
                    entries.append(entry)
                    self._subjects[event.subject] = fold_events(e.event for e in entries)
            self.version = len(self._log)
            return len(staged)

    def subject_events(self, subject: str, *, known_at: datetime | None = None) -> SubjectEvents:
        """Return everything recorded about *subject* (empty when nothing is).

        With *known_at* (aware), only the events recorded at or before it.
        """
        if known_at is None:
            return self._subjects.get(subject, EMPTY_EVENTS)
        return fold_events(
            e.event for e in self._by_subject.get(subject, ()) if e.recorded_at <= known_at
        )

    def authorisations(self, *, known_at: datetime | None = None) -> tuple[Authorisation, ...]:
        """Return every recorded authorisation (recorded at or before *known_at* if given)."""
        if known_at is None:
            return self._authorisations
        return tuple(
            e.event
            for e in self._log
            if isinstance(e.event, Authorisation) and e.recorded_at <= known_at
        )

    def history(
        self, subject: str | None = None, *, flagged: bool = False
    ) -> Iterator[RecordedEvent]:
        """Yield the recorded events in log order: all, or *subject*'s, or only flagged ones."""
        entries = list(self._log if subject is None else self._by_subject.get(subject, ()))
        return (e for e in entries if e.flags or not flagged)

    def close(self) -> None:
        """Nothing to release; present for the common interface."""

    def __repr__(self) -> str:
        return f"<InMemoryStore subjects={len(self._subjects)} version={self.version}>"
