"""The in-memory store: idempotent recording, refused id conflicts, versions, withdrawals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from purposelimit._model import Authorisation, Consent, Evidence, Objection
from purposelimit._store import InMemoryStore, Store, SubjectEvents, Withdrawal

SUBJECT = "jeanne.martin@example.com"
OTHER = "paul.durand@example.com"
T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)


def grant(
    purposes: str | tuple[str, ...] = "newsletter.events", *, subject: str = SUBJECT, **kw: object
) -> Consent:
    return Consent(
        subject=subject,
        purposes=purposes,
        given_at=T0,
        evidence=Evidence(mechanism="double-opt-in"),
        **kw,  # type: ignore[arg-type]
    )


AUTH = Authorisation(
    id="court-order-7",
    from_="hr",
    to="fraud.prevention",
    reference="TJ Paris, order 2025/123",
    valid_from=T0,
)


def test_store_protocol() -> None:
    """InMemoryStore is a Store; a new one is empty."""
    store = InMemoryStore()
    assert isinstance(store, Store)
    assert store.subject_events(SUBJECT) == SubjectEvents()
    assert store.authorisations() == ()


def test_recording_the_same_event_twice_changes_nothing() -> None:
    """The second recording of an identical event returns False and leaves the store as it was."""
    store = InMemoryStore()
    record = grant()
    assert store.record(record) is True
    version = store.version
    events = store.subject_events(SUBJECT)
    assert store.record(record) is False
    assert store.record(grant()) is False  # same content, so the same derived id
    assert store.version == version
    assert store.subject_events(SUBJECT) == events
    assert store.subject_events(SUBJECT).consents == (record,)


def test_idempotence_for_every_kind() -> None:
    """Withdrawals, objections and authorisations are idempotent too."""
    store = InMemoryStore()
    events: list[Consent | Withdrawal | Objection | Authorisation] = [
        Withdrawal(subject=SUBJECT, purposes="newsletter", at=T0),
        Objection(subject=SUBJECT, at=T0),
        AUTH,
    ]
    for event in events:
        assert store.record(event) is True
    version = store.version
    for event in events:
        assert store.record(event) is False
    assert store.version == version
    assert store.authorisations() == (AUTH,)


def test_constructor_events_are_recorded_once() -> None:
    """Events given to the constructor are recorded, duplicates once."""
    record = grant()
    store = InMemoryStore([record, record], authorisations=[AUTH, AUTH])
    assert store.subject_events(SUBJECT).consents == (record,)
    assert store.authorisations() == (AUTH,)


def test_conflicting_ids_are_refused() -> None:
    """A different event under an id already recorded is refused, and nothing changes."""
    store = InMemoryStore()
    store.record(grant(id="c-1"))
    version = store.version
    with pytest.raises(ValueError, match="c-1"):
        store.record(grant("newsletter.product", id="c-1"))
    store.record(AUTH)
    with pytest.raises(ValueError, match="court-order-7"):
        store.record(
            Authorisation(id="court-order-7", from_="hr", to="fraud", reference="x", valid_from=T0)
        )
    assert store.subject_events(SUBJECT).consents == (grant(id="c-1"),)
    assert store.version == version + 1  # the first AUTH only


def test_refusal_messages_hold_no_subject_id() -> None:
    """The refusal names the kind and id of the event, never the data subject."""
    store = InMemoryStore([grant(id="c-1")])
    with pytest.raises(ValueError, match="c-1") as info:
        store.record(grant("newsletter.product", id="c-1"))
    assert SUBJECT not in str(info.value)


def test_version_bumps_with_every_new_event() -> None:
    """Each new event changes the version; reads do not."""
    store = InMemoryStore()
    seen = {store.version}
    for event in (
        grant(),
        grant("newsletter.product"),
        Withdrawal(subject=SUBJECT, purposes="newsletter.events", at=T0 + timedelta(days=1)),
        Objection(subject=OTHER, at=T0),
        AUTH,
    ):
        store.record(event)
        assert store.version not in seen
        seen.add(store.version)
    before = store.version
    store.subject_events(SUBJECT)
    store.authorisations()
    assert store.version == before


def test_events_are_kept_per_subject() -> None:
    """A subject's events never include another subject's."""
    store = InMemoryStore([grant(), grant(subject=OTHER)])
    store.record(Objection(subject=OTHER, at=T0))
    assert [c.subject for c in store.subject_events(SUBJECT).consents] == [SUBJECT]
    assert store.subject_events(SUBJECT).objections == ()
    assert len(store.subject_events(OTHER).objections) == 1
    assert store.subject_events("nobody") == SubjectEvents()


def test_withdraw() -> None:
    """withdraw records a Withdrawal event, returns it and bumps the version; the consent stays."""
    store = InMemoryStore([grant(("newsletter.events", "newsletter.product"))])
    version = store.version
    at = T0 + timedelta(days=30)
    event = store.withdraw(SUBJECT, "newsletter.events", at, channel="unsubscribe link")
    assert isinstance(event, Withdrawal)
    assert (event.subject, event.purposes, event.at) == (SUBJECT, ("newsletter.events",), at)
    assert store.version != version
    events = store.subject_events(SUBJECT)
    assert events.withdrawals == (event,)
    assert len(events.consents) == 1
    assert events.consents[0].withdrawn_at is None  # the record is never changed in place
    version = store.version
    assert store.withdraw(SUBJECT, "newsletter.events", at, channel="unsubscribe link") == event
    assert store.version == version


def test_withdraw_objection() -> None:
    """withdraw_objection sets the objection's withdrawal as read, and bumps the version."""
    objection = Objection(subject=SUBJECT, at=T0, id="obj-1")
    store = InMemoryStore(objections=[objection])
    version = store.version
    at = T0 + timedelta(days=3)
    updated = store.withdraw_objection("obj-1", at)
    assert updated.id == "obj-1"
    assert updated.withdrawn_at == at
    assert store.subject_events(SUBJECT).objections == (updated,)
    assert store.version != version


def test_withdraw_objection_unknown_or_too_early() -> None:
    """An unknown objection is a KeyError; a withdrawal before the objection is refused."""
    store = InMemoryStore(objections=[Objection(subject=SUBJECT, at=T0, id="obj-1")])
    with pytest.raises(KeyError):
        store.withdraw_objection("obj-2", T0)
    version = store.version
    with pytest.raises(ValueError, match="before"):
        store.withdraw_objection("obj-1", T0 - timedelta(seconds=1))
    assert store.version == version
    assert store.subject_events(SUBJECT).objections[0].withdrawn_at is None


def test_recording_an_objection_again_after_its_withdrawal_changes_nothing() -> None:
    """Re-importing the original objection after it was withdrawn is a duplicate, not a conflict."""
    objection = Objection(subject=SUBJECT, at=T0, id="obj-1")
    store = InMemoryStore(objections=[objection])
    store.withdraw_objection("obj-1", T0 + timedelta(days=1))
    version = store.version
    assert store.record(objection) is False
    assert store.version == version
    assert store.subject_events(SUBJECT).objections[0].withdrawn_at == T0 + timedelta(days=1)


def test_merged_events_have_no_duplicates() -> None:
    """SubjectEvents.merged adds the other events not already there (by id)."""
    a, b = grant(), grant("newsletter.product")
    mine = SubjectEvents(consents=(a,))
    assert mine.merged(SubjectEvents()) is mine
    merged = mine.merged(SubjectEvents(consents=(a, b)))
    assert merged.consents == (a, b)


def test_repr_holds_no_subject_id() -> None:
    """The store's repr gives counts, not data subjects."""
    store = InMemoryStore([grant()])
    assert SUBJECT not in repr(store)
