"""The registry: one behavioural suite run against every store.

In-memory, SQLite (a temporary file) and SQLAlchemy on PostgreSQL (a unique
schema per test; see tests/_registry_support.py for how the server is found).
Events are appended, never changed; the state at any past instant is the
engine's consent state over them; duplicates are idempotent and conflicting
ids refused; missing evidence or actor is refused or flagged per the settings.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from _registry_support import open_registry, postgres_schema, postgres_url
from hypothesis import given, settings
from hypothesis import strategies as st

from purposelimit._engine import Engine, consent_state
from purposelimit._errors import ConfigurationError, EventRefused, NaiveDatetimeError, StoreError
from purposelimit._model import (
    Authorisation,
    Collection,
    CollectionTag,
    Consent,
    ConsentState,
    DataCategory,
    Evidence,
    Mechanism,
    Objection,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._register import Register
from purposelimit._registry import (
    SCHEMA_VERSION,
    STORED_FIELDS,
    SQLiteStore,
    _stored,
    event_from_dict,
    event_to_dict,
    open_store,
)
from purposelimit._store import (
    FLAG_NO_ACTOR,
    FLAG_NO_EVIDENCE,
    Event,
    InMemoryStore,
    ObjectionWithdrawal,
    Registry,
    Store,
    Withdrawal,
    event_kind,
    fold_events,
)

SUBJECT = "jeanne.martin@example.com"
OTHER = "paul.durand@example.com"
T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
PROOF = Evidence(
    mechanism=Mechanism.DOUBLE_OPT_IN,
    collection_point="https://example.com/form/7",
    notice_version="2025-01",
    source="own website",
    channel="web",
)


def grant(
    subject: str = SUBJECT, purposes: tuple[str, ...] = ("newsletter",), **kw: Any
) -> Consent:
    """A consent given with full evidence at T0 unless told otherwise."""
    kw.setdefault("given_at", T0)
    kw.setdefault("evidence", PROOF)
    return Consent(subject=subject, purposes=purposes, **kw)


class Clock:
    """An injectable clock for ``recorded_at``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ------------------------------------------------------------------ the stores


@attrs.define
class Backend:
    """Opens stores of one kind on one database for a test; closes them all afterwards."""

    kind: str
    spec: dict[str, Any] | None
    opened: list[Registry] = attrs.field(factory=list)

    @property
    def durable(self) -> bool:
        return self.spec is not None

    def open(self, **options: Any) -> Registry:
        store: Registry = (
            InMemoryStore(**options) if self.spec is None else open_registry(self.spec, **options)
        )
        self.opened.append(store)
        return store


def _backend(kind: str, tmp_path: Path) -> Iterator[Backend]:
    if kind == "memory":
        backend = Backend(kind, None)
        yield backend
    elif kind == "sqlite":
        backend = Backend(kind, {"kind": "sqlite", "path": str(tmp_path / "registry.db")})
        yield backend
    else:
        url = postgres_url()
        with postgres_schema(url) as schema:
            backend = Backend(kind, {"kind": "postgresql", "url": url, "schema": schema})
            try:
                yield backend
            finally:
                for store in backend.opened:
                    store.close()
            return
    for store in backend.opened:
        store.close()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store in turn."""
    yield from _backend(request.param, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each durable store in turn."""
    yield from _backend(request.param, tmp_path)


@pytest.fixture
def store(backend: Backend) -> Registry:
    """A fresh, empty store of each kind."""
    return backend.open()


# ------------------------------------------------------------------ recording


def test_every_store_is_a_registry_and_a_store(store: Registry) -> None:
    """The three stores implement the one interface the engine and the writers use."""
    assert isinstance(store, Registry)
    assert isinstance(store, Store)
    assert store.version is not None


def test_events_read_back_equal_with_their_offsets(store: Registry) -> None:
    """Every kind of event reads back equal to what was recorded; instants keep their offset."""
    paris = timezone(timedelta(hours=2))
    consent = grant(
        given_at=datetime(2025, 6, 1, 10, 30, 15, 123456, tzinfo=paris),
        expires_at=datetime(2028, 6, 1, tzinfo=paris),
    )
    withdrawal = Withdrawal(SUBJECT, ("newsletter.events",), T0 + DAY, channel="unsubscribe-link")
    objection = Objection(subject=SUBJECT, at=T0 + 2 * DAY)
    authorisation = Authorisation(
        id="court-order-12",
        from_=("hr.recruitment",),
        to="legal.claims",
        reference="TJ Paris, 2025-03-02, n° 25/01234",
        valid_from=T0,
        valid_until=T0 + 365 * DAY,
        categories=("identity",),
        subjects=(SUBJECT,),
    )
    assert store.record_many([consent, withdrawal, objection, authorisation], actor="crm") == 4
    events = store.subject_events(SUBJECT)
    assert events.consents == (consent,)
    assert events.consents[0].given_at.utcoffset() == timedelta(hours=2)
    assert events.consents[0].evidence == PROOF
    assert events.withdrawals == (withdrawal,)
    assert events.objections == (objection,)
    assert store.authorisations() == (authorisation,)
    assert store.subject_events(OTHER).consents == ()


def test_recording_the_same_event_twice_changes_nothing(store: Registry) -> None:
    """A duplicate (same kind, id and content) is accepted and ignored: the version stays."""
    consent = grant()
    assert store.record(consent, actor="web") is True
    version = store.version
    assert store.record(consent, actor="import-job") is False
    assert store.record_many([consent, consent], actor="web") == 0
    assert store.version == version
    assert [e.event for e in store.history()] == [consent]
    assert [e.actor for e in store.history()] == ["web"]


def test_a_different_event_with_a_recorded_id_is_refused(store: Registry) -> None:
    """Same id, other content: EventRefused (a ValueError), and nothing changes."""
    store.record(grant(id="c-1"), actor="web")
    version = store.version
    with pytest.raises(EventRefused, match="another consent with id 'c-1'") as caught:
        store.record(grant(id="c-1", purposes=("prospection",)), actor="web")
    assert isinstance(caught.value, ValueError)
    assert SUBJECT not in str(caught.value)
    assert store.version == version
    # another kind may use the same id: ids are per kind
    assert store.record(Withdrawal(SUBJECT, ("newsletter",), T0 + DAY, id="c-1"), actor="web")


def test_a_batch_is_recorded_whole_or_not_at_all(store: Registry) -> None:
    """record_many is one transaction: a refused event leaves none of the batch behind."""
    store.record(grant(id="c-1"), actor="web")
    version = store.version
    batch = [grant(id="c-2"), grant(id="c-3", subject=OTHER), grant(id="c-1", given_at=T0 + DAY)]
    with pytest.raises(EventRefused):
        store.record_many(batch, actor="import")
    assert store.version == version
    assert [e.event.id for e in store.history()] == ["c-1"]
    assert store.subject_events(OTHER).consents == ()
    assert store.record_many(batch[:2], actor="import") == 2


def test_the_version_changes_with_every_write_and_only_then(store: Registry) -> None:
    """Every new event changes the version; reads and duplicates do not."""
    seen = [store.version]
    store.record(grant(), actor="web")
    seen.append(store.version)
    store.withdraw(SUBJECT, "newsletter", T0 + DAY, actor="web")
    seen.append(store.version)
    store.subject_events(SUBJECT)
    store.consent_state_at(SUBJECT, "newsletter", T0)
    assert store.version == seen[-1]
    assert len(set(seen)) == 3


def test_every_event_records_who_and_when(backend: Backend) -> None:
    """The actor and the registry's clock are kept with each event, in log order."""
    clock = Clock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    store = backend.open(clock=clock)
    store.record(grant(), actor="web-form")
    clock.now += timedelta(hours=1)
    store.withdraw(SUBJECT, "newsletter", T0 + DAY, channel="phone", actor="call-centre/agent-12")
    entries = list(store.history())
    assert [(e.seq, e.kind, e.actor) for e in entries] == [
        (1, "consent", "web-form"),
        (2, "withdrawal", "call-centre/agent-12"),
    ]
    assert [e.recorded_at for e in entries] == [clock.now - timedelta(hours=1), clock.now]
    assert all(e.recorded_at.utcoffset() == timedelta(0) for e in entries)
    assert entries[1].event.channel == "phone"


def test_history_filters_by_subject_and_flags(store: Registry) -> None:
    """history(subject) gives one person's events, history(flagged=True) the flagged ones."""
    store.record(grant(), actor="web")
    store.record(grant(subject=OTHER, evidence=None), actor="web")
    store.record(Objection(subject=SUBJECT, at=T0))
    assert [e.kind for e in store.history(SUBJECT)] == ["consent", "objection"]
    flagged = list(store.history(flagged=True))
    assert [(e.event.subject, e.flags) for e in flagged] == [
        (OTHER, (FLAG_NO_EVIDENCE,)),
        (SUBJECT, (FLAG_NO_ACTOR,)),
    ]


# ------------------------------------------------------------------ evidence and actor


def test_missing_evidence_is_flagged_by_default(store: Registry) -> None:
    """By default a grant without evidence (or without a mechanism) is kept and flagged."""
    store.record(grant(evidence=None, id="bare"), actor="web")
    store.record(
        grant(evidence=Evidence(collection_point="form-3"), id="no-mechanism"), actor="web"
    )
    store.record(grant(id="proven"), actor="web")
    flags = {e.event.id: e.flags for e in store.history()}
    assert flags == {"bare": (FLAG_NO_EVIDENCE,), "no-mechanism": (FLAG_NO_EVIDENCE,), "proven": ()}
    # flagged, not invalid: the engine still reads the grant as given
    assert store.consent_state_at(SUBJECT, "newsletter", T0)[0] is ConsentState.VALID


def test_missing_evidence_refused_when_required(backend: Backend) -> None:
    """require_evidence='refuse' turns away a grant without evidence, not a refusal."""
    store = backend.open(require_evidence="refuse")
    with pytest.raises(EventRefused, match=r"without evidence.*GDPR art\. 7\(1\)"):
        store.record(grant(evidence=None), actor="web")
    assert list(store.history()) == []
    assert store.record(grant(state="refused", evidence=None), actor="web")
    assert store.record(grant(state="not-asked", evidence=None, given_at=T0 + DAY), actor="crm")
    assert all(e.flags == () for e in store.history())


def test_missing_evidence_ignored_when_off(backend: Backend) -> None:
    """require_evidence='off' records a grant without evidence unflagged."""
    store = backend.open(require_evidence="off", require_actor="off")
    store.record(grant(evidence=None))
    assert [e.flags for e in store.history()] == [()]


def test_missing_actor_refuses_permissions_but_never_restrictions(backend: Backend) -> None:
    """require_actor='refuse': grants, authorisations and objection withdrawals need an actor;
    withdrawals, objections and refusals are recorded (flagged) all the same (art. 7(3), 21)."""
    store = backend.open(require_actor="refuse")
    with pytest.raises(EventRefused, match="has no actor"):
        store.record(grant())
    with pytest.raises(EventRefused, match="has no actor"):
        store.record(grant(), actor="   ")
    with pytest.raises(EventRefused):
        store.record(Authorisation(id="a", from_=("x",), to="y", reference="r", valid_from=T0))
    store.withdraw(SUBJECT, "newsletter", T0)
    objection = Objection(subject=SUBJECT, at=T0)
    store.record(objection)
    store.record(grant(state="refused", evidence=None, given_at=T0 + DAY))
    with pytest.raises(EventRefused, match="has no actor"):
        store.withdraw_objection(objection.id, T0 + DAY)
    assert [(e.kind, e.flags) for e in store.history()] == [
        ("withdrawal", (FLAG_NO_ACTOR,)),
        ("objection", (FLAG_NO_ACTOR,)),
        ("consent", (FLAG_NO_ACTOR,)),
    ]
    store.withdraw_objection(objection.id, T0 + DAY, actor="dpo")


def test_bad_settings_are_refused() -> None:
    """The settings accept 'refuse', 'flag' and 'off' only."""
    with pytest.raises(ValueError, match="require_evidence"):
        InMemoryStore(require_evidence="strict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="require_actor"):
        InMemoryStore(require_actor=True)  # type: ignore[arg-type]


def test_only_registry_events_are_recorded(store: Registry) -> None:
    """Anything but the five event types is a TypeError, and nothing is recorded."""
    with pytest.raises(TypeError, match="dict"):
        store.record_many([grant(), {"subject": SUBJECT}])  # type: ignore[list-item]
    assert list(store.history()) == []


# ------------------------------------------------------------------ consent state at any instant


def test_withdrawal_takes_effect_at_its_instant(store: Registry) -> None:
    """Valid before the withdrawal, withdrawn from its exact instant on (art. 7(3))."""
    consent = grant()
    store.record(consent, actor="web")
    at = T0 + 10 * DAY
    store.withdraw(SUBJECT, "newsletter", at, channel="unsubscribe-link", actor="web")
    assert store.consent_state_at(SUBJECT, "newsletter.product", at - SECOND) == (
        ConsentState.VALID,
        consent,
    )
    assert store.consent_state_at(SUBJECT, "newsletter.product", at) == (
        ConsentState.WITHDRAWN,
        consent,
    )
    assert store.consent_state_at(SUBJECT, "newsletter", at + DAY)[0] is ConsentState.WITHDRAWN
    assert store.consent_state_at(SUBJECT, "newsletter", T0 - SECOND) == (ConsentState.NONE, None)


def test_withdrawing_one_purpose_leaves_the_others(store: Registry) -> None:
    """Withdrawing newsletter.events keeps the same record's consent for newsletter.product."""
    store.record(grant(purposes=("newsletter.events", "newsletter.product")), actor="web")
    store.withdraw(SUBJECT, ["newsletter.events"], T0 + DAY, actor="web")
    later = T0 + 2 * DAY
    assert store.consent_state_at(SUBJECT, "newsletter.events", later)[0] is ConsentState.WITHDRAWN
    assert store.consent_state_at(SUBJECT, "newsletter.product", later)[0] is ConsentState.VALID
    assert store.consent_state_at(SUBJECT, "newsletter", later)[0] is ConsentState.NONE
    assert store.consent_state_at(OTHER, "newsletter.product", later)[0] is ConsentState.NONE


def test_expiry_refusal_not_asked_and_invalid(store: Registry) -> None:
    """The states of DESIGN §3 come out of the registry: expired, refused, not-asked, invalid."""
    store.record_many(
        [
            grant(purposes=("a",), expires_at=T0 + 30 * DAY),
            grant(purposes=("b",), state="refused", evidence=None),
            grant(purposes=("c",), state="not-asked", evidence=None),
            grant(purposes=("d",), evidence=Evidence(mechanism="pre-ticked")),
        ],
        actor="import",
    )
    at = T0 + 30 * DAY
    assert store.consent_state_at(SUBJECT, "a", at - SECOND)[0] is ConsentState.VALID
    assert store.consent_state_at(SUBJECT, "a", at)[0] is ConsentState.EXPIRED
    assert store.consent_state_at(SUBJECT, "b.x", at)[0] is ConsentState.REFUSED
    assert store.consent_state_at(SUBJECT, "c", at)[0] is ConsentState.NOT_ASKED
    assert store.consent_state_at(SUBJECT, "d", at)[0] is ConsentState.INVALID


def test_a_weaker_later_record_does_not_undo_a_consent(store: Registry) -> None:
    """A later not-asked re-import or pre-ticked re-submission leaves a valid consent valid."""
    first = grant()
    store.record(first, actor="web")
    store.record(grant(state="not-asked", evidence=None, given_at=T0 + DAY), actor="import")
    store.record(
        grant(evidence=Evidence(mechanism="pre-ticked"), given_at=T0 + 2 * DAY), actor="web"
    )
    assert store.consent_state_at(SUBJECT, "newsletter", T0 + 3 * DAY) == (
        ConsentState.VALID,
        first,
    )


def test_state_at_any_instant_is_the_engines_over_all_events(store: Registry) -> None:
    """For random histories, consent_state_at (an indexed lookup in durable stores) equals
    the engine's consent_state over every event of the person, at every instant asked."""
    rng = random.Random(4)
    purposes = [
        "newsletter",
        "newsletter.product",
        "newsletter.events",
        "prospection",
        "prospection.postal",
    ]
    subjects = [f"s{i}" for i in range(12)]
    events: list[Consent | Withdrawal] = []
    for number in range(160):
        subject = rng.choice(subjects)
        named = tuple(rng.sample(purposes, rng.choice((1, 1, 2))))
        at = T0 + timedelta(hours=rng.randrange(24 * 60))
        if rng.random() < 0.7:
            events.append(
                Consent(
                    subject=subject,
                    purposes=named,
                    given_at=at,
                    state=rng.choice(("given", "given", "given", "refused", "not-asked")),
                    expires_at=at + timedelta(days=rng.randrange(5, 40))
                    if rng.random() < 0.3
                    else None,
                    evidence=Evidence(mechanism=rng.choice(("button", "button", "pre-ticked"))),
                    id=f"c{number}",
                )
            )
        else:
            events.append(Withdrawal(subject, named, at, id=f"w{number}"))
    store.record_many(events, actor="generator")
    for _ in range(300):
        subject = rng.choice(subjects)
        purpose = rng.choice(purposes)
        at = T0 + timedelta(hours=rng.randrange(-24, 24 * 70))
        everything = fold_events(e for e in events if e.subject == subject)
        assert store.consent_state_at(subject, purpose, at) == consent_state(
            everything, purpose, at
        )


def test_what_the_registry_knew_at_an_instant(backend: Backend) -> None:
    """known_at / as_of: a withdrawal by letter recorded late does not change what the
    registry held before it was recorded — and does change the state from its own date."""
    clock = Clock(T0)
    store = backend.open(clock=clock)
    consent = grant()
    store.record(consent, actor="web")
    letter_dated = T0 + 10 * DAY
    clock.now = T0 + 15 * DAY  # the letter is keyed in five days later
    store.withdraw(SUBJECT, "newsletter", letter_dated, channel="letter", actor="back-office")
    asked = T0 + 12 * DAY
    assert store.consent_state_at(SUBJECT, "newsletter", asked)[0] is ConsentState.WITHDRAWN
    then = asked  # what we knew on day 12 about day 12
    assert (
        store.consent_state_at(SUBJECT, "newsletter", asked, known_at=then)[0] is ConsentState.VALID
    )
    view = store.as_of(then)
    assert isinstance(view, Store)
    assert view.consent_state_at(SUBJECT, "newsletter", asked)[0] is ConsentState.VALID
    assert view.subject_events(SUBJECT).withdrawals == ()
    assert view.version == store.version
    assert store.as_of(clock.now).subject_events(SUBJECT) == store.subject_events(SUBJECT)
    with pytest.raises(NaiveDatetimeError):
        store.as_of(datetime(2025, 1, 1))


def test_consent_state_at_checks_its_arguments(store: Registry) -> None:
    """A naive instant or an invalid purpose id is refused before anything is read."""
    with pytest.raises(NaiveDatetimeError):
        store.consent_state_at(SUBJECT, "newsletter", datetime(2025, 1, 1))
    with pytest.raises(NaiveDatetimeError):
        store.consent_state_at(SUBJECT, "newsletter", T0, known_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="not a valid id"):
        store.consent_state_at(SUBJECT, "News Letter", T0)


# ------------------------------------------------------------------ objections and authorisations


def test_an_objection_withdrawal_is_an_event(store: Registry) -> None:
    """Withdrawing an objection appends an event; the objection itself is never changed."""
    objection = Objection(subject=SUBJECT, at=T0)
    store.record(objection, actor="call-centre")
    read = store.withdraw_objection(objection.id, T0 + DAY, channel="phone", actor="call-centre")
    assert read.id == objection.id
    assert read.withdrawn_at == T0 + DAY
    assert store.subject_events(SUBJECT).objections == (read,)
    kinds = [(e.kind, e.event) for e in store.history()]
    assert kinds[0] == ("objection", objection)
    assert kinds[1][0] == "objection-withdrawal"
    assert isinstance(kinds[1][1], ObjectionWithdrawal)
    assert kinds[1][1].objection == objection.id
    # the earliest withdrawal counts; the same call again is a duplicate
    store.withdraw_objection(objection.id, T0 + 2 * DAY, actor="call-centre")
    version = store.version
    store.withdraw_objection(objection.id, T0 + 2 * DAY, actor="call-centre")
    assert store.version == version
    assert store.subject_events(SUBJECT).objections[0].withdrawn_at == T0 + DAY
    # before it was withdrawn, the registry held it standing
    assert store.as_of(datetime(1970, 1, 1, tzinfo=UTC)).subject_events(SUBJECT).objections == ()


def test_objection_withdrawals_are_checked(store: Registry) -> None:
    """Unknown objection: KeyError; dated before the objection, or for another person: refused."""
    objection = Objection(subject=SUBJECT, at=T0)
    store.record(objection, actor="crm")
    with pytest.raises(KeyError):
        store.withdraw_objection("objection-unknown", T0, actor="crm")
    with pytest.raises(EventRefused, match="before its objection"):
        store.withdraw_objection(objection.id, T0 - SECOND, actor="crm")
    with pytest.raises(EventRefused, match="another data subject"):
        store.record(ObjectionWithdrawal(objection.id, OTHER, T0 + DAY), actor="crm")
    with pytest.raises(EventRefused, match="no recorded objection"):
        store.record(ObjectionWithdrawal("objection-unknown", SUBJECT, T0 + DAY), actor="crm")
    assert [e.kind for e in store.history()] == ["objection"]


def test_authorisations_are_appended_and_visible_at_once(store: Registry) -> None:
    """Authorisations come back in log order; a new one is seen by the next read."""
    first = Authorisation(id="a1", from_=("hr",), to="legal", reference="art. L1234", valid_from=T0)
    second = Authorisation(
        id="a2", from_=("client",), to="legal", reference="order 7", valid_from=T0
    )
    store.record(first, actor="dpo")
    assert store.authorisations() == (first,)
    store.record(second, actor="dpo")
    assert store.authorisations() == (first, second)
    assert store.subject_events(SUBJECT).consents == ()


def test_the_engine_decides_from_the_registry(store: Registry) -> None:
    """A consent recorded in the store allows a reuse; a withdrawal recorded later denies it."""
    register = Register(
        purposes=[
            Purpose(
                id="client.contract",
                label="Contract",
                description="Performing the sales contract",
                legal_basis="contract",
                retention=Retention("P5Y"),
                categories=("contact",),
            ),
            Purpose(
                id="newsletter.product",
                label="Product news",
                description="Sending our product news by e-mail",
                legal_basis="consent",
                retention=Retention("P3Y"),
                categories=("contact",),
                direct_marketing=True,
            ),
        ],
        categories=[DataCategory(id="contact"), DataCategory(id="contact.email")],
    )
    engine = Engine(register, store)
    tag = CollectionTag(SUBJECT, Collection("client.contract"), collected_at=T0 - DAY)
    at = T0 + DAY
    assert (
        engine.decide(tag, ["contact.email"], "newsletter.product", at).reason
        is Reason.CONSENT_MISSING
    )
    store.record(grant(), actor="web")
    assert engine.decide(tag, ["contact.email"], "newsletter.product", at).reason is Reason.CONSENT
    store.withdraw(SUBJECT, "newsletter", at, actor="web")
    denied = engine.decide(tag, ["contact.email"], "newsletter.product", at)
    assert denied.reason is Reason.CONSENT_WITHDRAWN
    objection = Objection(subject=SUBJECT, at=T0)
    store.record(objection, actor="crm")
    assert (
        engine.decide(tag, ["contact.email"], "newsletter.product", at).reason is Reason.OBJECTION
    )
    # and as the registry stood before all this, nothing was held
    past = Engine(register, store.as_of(datetime(2000, 1, 1, tzinfo=UTC)))
    assert (
        past.decide(tag, ["contact.email"], "newsletter.product", at).reason
        is Reason.CONSENT_MISSING
    )


# ------------------------------------------------------------------ no personal value leaks


def test_no_personal_value_in_reprs_or_errors(store: Registry) -> None:
    """Store, entry and view reprs and refusals name ids and kinds, never the subject."""
    store.record(grant(id="c-1"), actor="web")
    texts = [repr(store), repr(store.as_of(T0)), *(repr(e) for e in store.history())]
    for attempt in (
        lambda: store.record(grant(id="c-1", given_at=T0 + DAY), actor="web"),
        lambda: store.record(ObjectionWithdrawal("nope", SUBJECT, T0), actor="web"),
    ):
        with pytest.raises(EventRefused) as caught:
            attempt()
        texts += [str(caught.value), repr(caught.value.args)]
    assert all(SUBJECT not in text and "jeanne" not in text for text in texts)


# ------------------------------------------------------------------ durable stores only


def test_everything_survives_reopening(durable: Backend) -> None:
    """Closed and opened again, a durable store holds the same log, version and states."""
    store = durable.open()
    consent = grant()
    store.record(consent, actor="web")
    store.withdraw(SUBJECT, "newsletter", T0 + DAY, actor="web")
    objection = Objection(subject=SUBJECT, at=T0)
    store.record(objection, actor="crm")
    store.withdraw_objection(objection.id, T0 + DAY, actor="crm")
    log, version = list(store.history()), store.version
    store.close()
    again = durable.open()
    assert list(again.history()) == log
    assert again.version == version
    assert again.consent_state_at(SUBJECT, "newsletter", T0 + DAY)[0] is ConsentState.WITHDRAWN
    assert again.subject_events(SUBJECT).objections[0].withdrawn_at == T0 + DAY


def test_a_commit_is_seen_at_once_by_another_handle(durable: Backend) -> None:
    """With the default cache_seconds=0 a second handle sees each commit at its next read."""
    writer, reader = durable.open(), durable.open()
    writer.record(grant(), actor="web")
    assert reader.consent_state_at(SUBJECT, "newsletter", T0 + DAY)[0] is ConsentState.VALID
    before = reader.version
    writer.withdraw(SUBJECT, "newsletter", T0 + DAY, actor="web")
    assert reader.version != before
    assert reader.consent_state_at(SUBJECT, "newsletter", T0 + DAY)[0] is ConsentState.WITHDRAWN
    assert reader.subject_events(SUBJECT).withdrawals != ()
    writer.record(
        Authorisation(id="a", from_=("x",), to="y", reference="r", valid_from=T0), actor="dpo"
    )
    assert [a.id for a in reader.authorisations()] == ["a"]


def test_cache_seconds_bounds_how_long_a_handle_may_lag(
    durable: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With cache_seconds=s, another handle's commit is seen once s seconds have passed,
    and this handle's own commits at once."""
    import purposelimit._registry as registry_module

    now = [1000.0]
    monkeypatch.setattr(registry_module.time, "monotonic", lambda: now[0])
    writer = durable.open()
    cached = durable.open(cache_seconds=5)
    writer.record(grant(), actor="web")
    assert cached.consent_state_at(SUBJECT, "newsletter", T0 + DAY)[0] is ConsentState.VALID
    writer.withdraw(SUBJECT, "newsletter", T0 + DAY, actor="web")
    now[0] += 4.9
    assert cached.consent_state_at(SUBJECT, "newsletter", T0 + DAY)[0] is ConsentState.VALID
    now[0] += 0.2
    assert cached.consent_state_at(SUBJECT, "newsletter", T0 + DAY)[0] is ConsentState.WITHDRAWN
    cached.record(grant(given_at=T0 + 2 * DAY), actor="web")
    assert cached.consent_state_at(SUBJECT, "newsletter", T0 + 3 * DAY)[0] is ConsentState.VALID
    with pytest.raises(ConfigurationError, match="cache_seconds"):
        durable.open(cache_seconds=-1)


def _downgrade_to_v1(backend: Backend) -> None:
    """Turn the backend's registry into what schema 1 was: the log without the lookup table."""
    assert backend.spec is not None
    if backend.kind == "sqlite":
        conn = sqlite3.connect(backend.spec["path"], isolation_level=None)
        conn.execute("DROP TABLE purposelimit_event_purposes")
        conn.execute("UPDATE purposelimit_meta SET value = 1 WHERE key = 'schema_version'")
        conn.close()
    else:
        import sqlalchemy as sa

        engine = sa.create_engine(backend.spec["url"])
        schema = backend.spec["schema"]
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE "{schema}".purposelimit_event_purposes'))
            conn.execute(
                sa.text(
                    f'UPDATE "{schema}".purposelimit_meta SET value = 1 '
                    "WHERE key = 'schema_version'"
                )
            )
        engine.dispose()


def _schema_version(backend: Backend) -> int:
    assert backend.spec is not None
    if backend.kind == "sqlite":
        conn = sqlite3.connect(backend.spec["path"])
        (value,) = conn.execute(
            "SELECT value FROM purposelimit_meta WHERE key = 'schema_version'"
        ).fetchone()
        conn.close()
        return int(value)
    import sqlalchemy as sa

    engine = sa.create_engine(backend.spec["url"])
    with engine.connect() as conn:
        value = conn.execute(
            sa.text(
                f'SELECT value FROM "{backend.spec["schema"]}".purposelimit_meta '
                "WHERE key = 'schema_version'"
            )
        ).scalar_one()
    engine.dispose()
    return int(value)


def test_an_older_schema_is_migrated_when_opened(durable: Backend) -> None:
    """A schema-1 registry (no purpose lookup table) is brought to the current schema on
    opening, its lookup table filled from the log, in one transaction."""
    store = durable.open()
    store.record_many(
        [
            grant(purposes=("newsletter.product", "prospection")),
            grant(subject=OTHER, given_at=T0 + DAY),
        ],
        actor="web",
    )
    store.withdraw(SUBJECT, "prospection", T0 + DAY, actor="web")
    store.close()
    _downgrade_to_v1(durable)
    assert _schema_version(durable) == 1
    again = durable.open()
    assert _schema_version(durable) == SCHEMA_VERSION
    at = T0 + 2 * DAY
    assert again.consent_state_at(SUBJECT, "newsletter.product", at)[0] is ConsentState.VALID
    assert again.consent_state_at(SUBJECT, "prospection.postal", at)[0] is ConsentState.WITHDRAWN
    assert again.consent_state_at(OTHER, "newsletter", at)[0] is ConsentState.VALID
    assert len(list(again.history())) == 3


def test_a_newer_schema_is_refused(durable: Backend) -> None:
    """A registry written by a newer purposelimit is not touched: StoreError says to upgrade."""
    durable.open().close()
    _downgrade_to_v1(durable)  # drops the lookup table; then claim a future version
    assert durable.spec is not None
    if durable.kind == "sqlite":
        conn = sqlite3.connect(durable.spec["path"], isolation_level=None)
        conn.execute("UPDATE purposelimit_meta SET value = 99 WHERE key = 'schema_version'")
        conn.close()
    else:
        import sqlalchemy as sa

        engine = sa.create_engine(durable.spec["url"])
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f'UPDATE "{durable.spec["schema"]}".purposelimit_meta SET value = 99 '
                    "WHERE key = 'schema_version'"
                )
            )
        engine.dispose()
    with pytest.raises(StoreError, match="version 99, newer than this purposelimit"):
        durable.open()


# ------------------------------------------------------------------ open_store and the codec


def test_open_store_chooses_the_store_from_the_url(tmp_path: Path) -> None:
    """memory:// is in memory, sqlite:/// a file (mode=ro read-only); bad URLs are explained."""
    assert isinstance(open_store("memory://"), InMemoryStore)
    path = tmp_path / "reg.db"
    with open_store(f"sqlite:///{path}") as store:
        assert isinstance(store, SQLiteStore)
        store.record(grant(), actor="web")
    with open_store(f"sqlite:///{path}?mode=ro") as store:
        assert isinstance(store, SQLiteStore)
        assert store.read_only
        assert store.consent_state_at(SUBJECT, "newsletter", T0)[0] is ConsentState.VALID
    for bad in ("registry.db", "memory://x", "sqlite://", "sqlite:///", "sqlite:///x.db?mode=xx"):
        with pytest.raises(ConfigurationError):
            open_store(bad)
    with pytest.raises(ConfigurationError, match="memory://"):
        SQLiteStore(":memory:")
    with pytest.raises(ConfigurationError, match="driver"):
        open_store("nosuchdb+nodriver://host/db")


def test_open_store_opens_postgresql() -> None:
    """Any other URL is a SQLAlchemyStore; its repr hides the password."""
    from purposelimit._sqlalchemy_store import SQLAlchemyStore

    url = postgres_url()
    with postgres_schema(url) as schema:
        store = SQLAlchemyStore(url, schema=schema)
        assert isinstance(store, Registry)
        store.close()
        import sqlalchemy as sa

        # the tables go to the test's schema through the connection's search_path
        in_schema = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        with open_store(in_schema.render_as_string(hide_password=False)) as store:
            assert isinstance(store, SQLAlchemyStore)
            store.record(grant(), actor="web")
        with SQLAlchemyStore(url, schema=schema) as store:
            assert [e.event for e in store.history()] == [grant()]
        with_password = sa.make_url(url).set(password="s3cret")  # trust auth ignores it
        with SQLAlchemyStore(with_password, schema=schema) as store:
            assert "s3cret" not in repr(store)
            assert "***" in repr(store)


def test_an_unreachable_database_is_a_clear_store_error() -> None:
    """No server: StoreError naming the URL without its password nor the driver's message."""
    from purposelimit._sqlalchemy_store import SQLAlchemyStore

    with pytest.raises(StoreError, match="cannot be reached") as caught:
        SQLAlchemyStore(
            "postgresql+psycopg://someone:s3cret@127.0.0.1:1/nothing",
            engine_options={"connect_args": {"connect_timeout": 2}},
        )
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_the_core_never_imports_sqlalchemy(tmp_path: Path) -> None:
    """import purposelimit and an SQLite or memory registry leave SQLAlchemy unimported."""
    code = (
        "import sys, purposelimit\n"
        "from purposelimit._registry import open_store\n"
        f"open_store('sqlite:///{tmp_path / 'x.db'}').close()\n"
        "open_store('memory://').close()\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


consents = st.builds(
    Consent,
    subject=st.text(min_size=1, max_size=20),
    purposes=st.lists(st.sampled_from(["a", "a.b", "c-d.e_f"]), min_size=1, max_size=3).map(tuple),
    given_at=st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=3))]
        ),
    ),
    state=st.sampled_from(["given", "refused", "not-asked"]),
    expires_at=st.none() | st.just(datetime(2101, 1, 1, tzinfo=UTC)),
    evidence=st.none()
    | st.builds(
        Evidence,
        mechanism=st.none() | st.sampled_from(list(Mechanism)),
        collection_point=st.none() | st.text(max_size=10),
        notice_version=st.none() | st.text(max_size=5),
        source=st.none() | st.text(max_size=5),
        channel=st.none() | st.text(max_size=5),
    ),
)


@settings(max_examples=150, deadline=None)
@given(consents)
def test_the_codec_round_trips_consents(consent: Consent) -> None:
    """Encoded to JSON and decoded — checked or fast — a consent is equal, offsets included."""
    data = json.loads(json.dumps(event_to_dict(consent)))
    assert event_from_dict("consent", data) == consent
    fast = _stored("consent", data)
    assert fast == consent
    assert isinstance(fast, Consent)
    assert fast.given_at.utcoffset() == consent.given_at.utcoffset()


def test_the_codec_round_trips_every_kind() -> None:
    """Each kind of event goes through its JSON shape unchanged."""
    objection = Objection(subject=SUBJECT, at=T0, withdrawn_at=T0 + DAY)
    events: list[Event] = [
        grant(withdrawn_at=T0 + DAY, expires_at=T0 + 2 * DAY),
        Withdrawal(SUBJECT, ("a", "b"), T0, channel="letter"),
        objection,
        ObjectionWithdrawal(objection.id, SUBJECT, T0 + DAY, channel="phone"),
        Authorisation(id="a", from_=("x",), to="y", reference="r", valid_from=T0),
    ]
    for event in events:
        kind = event_kind(event)
        assert event_from_dict(kind, json.loads(json.dumps(event_to_dict(event)))) == event
        assert _stored(kind, event_to_dict(event)) == event
    with pytest.raises(ValueError, match="unknown event kind"):
        event_from_dict("erasure", {})


def test_the_fast_decoder_sets_every_field_of_the_model() -> None:
    """The fields the fast decoder assembles are exactly the model classes' fields."""
    for cls, names in STORED_FIELDS.items():
        assert names == tuple(f.name for f in attrs.fields(cls)), cls


def test_consent_events_holds_what_the_state_rests_on(backend: Backend) -> None:
    """consent_events gives at least the covering records dated up to T (durable stores:
    exactly those, from the index), and the state computed from them is consent_state_at's."""
    store = backend.open()
    early, late = grant(id="early"), grant(id="late", given_at=T0 + 5 * DAY)
    other = grant(id="other", purposes=("prospection",))
    withdrawal = Withdrawal(SUBJECT, ("newsletter",), T0 + DAY, id="w")
    store.record_many([early, late, other, withdrawal], actor="import")
    at = T0 + 2 * DAY
    events = store.consent_events(SUBJECT, "newsletter.product", at)
    assert early in events.consents
    assert withdrawal in events.withdrawals
    assert events.objections == ()
    if backend.durable:
        assert events.consents == (early,)
    assert consent_state(events, "newsletter.product", at) == store.consent_state_at(
        SUBJECT, "newsletter.product", at
    )


def test_one_store_is_safe_across_threads(backend: Backend) -> None:
    """Threads sharing one store record and read at once: every event is kept, once."""
    import threading

    store = backend.open()
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            for i in range(15):
                store.record(grant(subject=f"t{number}", id=f"t{number}-{i}"), actor="thread")
                store.consent_state_at(f"t{number}", "newsletter", T0)
                store.subject_events(f"t{(number + 1) % 4}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(e.seq for e in store.history()) == list(range(1, 61))
    assert store.version == 60
