"""purposelimit.testing: audit capture, assertion helpers, frozen clock, factories, strategies.

Every enforcement test runs in both modes: ``enforce`` (a denial raises) and
``monitor`` (the read goes on and the would-be denial is audited). Failure
messages are pinned exactly, and never hold a personal value or a subject id.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purposelimit import (
    Audit,
    AuditError,
    Collection,
    CollectionRefused,
    ConsentState,
    Engine,
    InMemoryAuditSink,
    InMemoryStore,
    NaiveDatetimeError,
    ProcessingDenied,
    Purpose,
    Reason,
    Register,
    RegisterError,
    Retention,
    TaggedRecord,
    consent_state,
    get_audit,
    personal,
    processing,
    record,
    set_engine,
    tag_of,
)
from purposelimit._audit import _observers
from purposelimit._context import _CURRENT
from purposelimit._model import DataCategory, LegalBasis
from purposelimit._store import SubjectEvents
from purposelimit.testing import (
    BASE_CATEGORIES,
    SENSITIVE_CATEGORIES,
    AuditCapture,
    FrozenClock,
    Read,
    assert_allowed,
    assert_denied,
    capture_audit,
    collection_for,
    describe_reads,
    frozen_clock,
    make_authorisation,
    make_consent,
    make_engine,
    make_objection,
    make_record,
    make_register,
    make_withdrawal,
)
from purposelimit.testing import strategies as pst

ROOT = Path(__file__).resolve().parent.parent
SECRET = "SECRET-VALUE-123"
SUBJECT = "subject-SECRET-7"
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
MODES = ("enforce", "monitor")

REGISTER = make_register(
    {
        "client.contract": {"retention": ("P5Y", "end-of-contract")},
        "prospection.postal": {
            "legal_basis": "legitimate-interests",
            "direct_marketing": True,
            "categories": ["identity", "contact.postal_address"],
        },
        "newsletter.product": {
            "legal_basis": "consent",
            "direct_marketing": True,
            "categories": ["identity.name", "contact.email"],
        },
        "hr.recruitment": {"retention": ("P3M", "last-contact")},
    },
    compatible=[("client.contract", "prospection.postal")],
    prohibited=[("hr.recruitment", "prospection")],
)

PROHIBITED_REMEDY = (
    "the register prohibits reusing hr.recruitment data for prospection.postal: record the "
    "person's consent for prospection.postal, or an authorisation for this reuse"
)
NO_PURPOSE_REMEDY = (
    "wrap the read in `with processing(<purpose>, actor=...)`, naming the purpose the read serves"
)


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")
    address: str = personal("contact.postal_address", default="")


@record
class Subscriber(TaggedRecord):
    email: str = personal("contact.email")
    nir: str = personal("nir")


def lead(collected_for: str = "client.contract", **tag: Any) -> Lead:
    return Lead(
        SECRET,
        SECRET,
        SECRET,
        subject=tag.pop("subject", SUBJECT),
        collection=collection_for(collected_for),
        collected_at=tag.pop("collected_at", T0),
        **tag,
    )


@pytest.fixture(autouse=True)
def _reset_context() -> Iterator[None]:
    """Every test starts and ends with no processing block and no default engine."""
    token = set_engine(None, mode="enforce")
    context_token = _CURRENT.set(None)
    yield
    _CURRENT.reset(context_token)
    token.reset()


@pytest.fixture
def engine() -> Engine:
    return make_engine(REGISTER, at=NOW)


def run(engine: Engine, purpose: str, mode: Any, *reads: tuple[Any, str]) -> None:
    """Read each (record, field) inside one processing block for *purpose*."""
    with processing(purpose, actor="test", engine=engine, mode=mode):
        for item, field in reads:
            getattr(item, field)


def signup(engine: Engine) -> Subscriber:
    """Collect a subscriber's NIR at newsletter signup: refused (minimisation)."""
    with processing("newsletter.product", actor="signup", engine=engine):
        return Subscriber(
            SECRET,
            SECRET,
            subject=SUBJECT,
            collection=collection_for("newsletter.product"),
            collected_at=T0,
        )


def raise_inside_capture(error: BaseException, before: Sequence[object]) -> None:
    with capture_audit():
        assert len(_observers) == len(before) + 1
        raise error


# --------------------------------------------------------------------------- capture_audit


@pytest.mark.parametrize("mode", MODES)
def test_capture_audit_yields_the_events_of_the_reads_inside(engine: Engine, mode: Any) -> None:
    """Reads in the block become captured events (allowed and denied), in read order."""
    ada, bob = lead(), lead("hr.recruitment")
    with capture_audit() as events:
        with processing("client.contract", actor="billing", engine=engine, mode=mode):
            _ = ada.name
        with processing("prospection.postal", actor="mailer", engine=engine, mode=mode):
            _ = ada.address
            try:
                _ = bob.name
            except ProcessingDenied:
                assert mode == "enforce"
    assert [(e.purpose, e.field, e.reason) for e in events] == [
        ("client.contract", "name", Reason.SAME_PURPOSE),
        ("prospection.postal", "address", Reason.COMPATIBLE),
        ("prospection.postal", "name", Reason.PROHIBITED),
    ]
    assert [e.monitored for e in events] == [False, False, mode == "monitor"]
    assert all(e.actor in ("billing", "mailer") for e in events)


def test_capture_audit_ignores_reads_made_before_it(engine: Engine) -> None:
    """A read buffered before the block opens is flushed on entry, not captured."""
    ada = lead()
    with set_engine(engine, mode="monitor"):
        _ = ada.name  # outside any block: waits in the audit's buffer
        assert get_audit(engine).buffered == 1
        with capture_audit() as events:
            pass
    assert list(events) == []


def test_capture_audit_flushes_reads_outside_blocks(engine: Engine) -> None:
    """Reads outside any block wait in a buffer; the capture flushes them, open or on exit."""
    ada = lead()
    with set_engine(engine, mode="monitor"), capture_audit() as events:
        _ = ada.name
        assert len(events) == 1  # an access flushes while the block is open
        _ = ada.email
    assert [(e.purpose, e.reason, e.field) for e in events] == [
        (None, Reason.NO_PURPOSE, "name"),
        (None, Reason.NO_PURPOSE, "email"),
    ]
    assert len(events.outside_processing) == 2


def test_capture_audit_sees_every_engine_and_reaches_the_sinks_too() -> None:
    """Events of any engine are captured; each audit's own sinks still get them."""
    first_sink, second_sink = InMemoryAuditSink(), InMemoryAuditSink()
    first = make_engine(REGISTER, at=NOW, audit=Audit([first_sink]))
    second = make_engine(REGISTER, at=NOW, audit=Audit([second_sink]))
    ada = lead()
    with capture_audit() as events:
        with processing("client.contract", actor="a", engine=first):
            _ = ada.name
        with processing("client.contract", actor="b", engine=second):
            _ = ada.email
    assert [e.actor for e in events] == ["a", "b"]
    assert [e.field for e in first_sink.events] == ["name"]
    assert [e.field for e in second_sink.events] == ["email"]


def test_captures_nest_and_each_sees_its_own_block(engine: Engine) -> None:
    """An inner capture sees its block's reads; the outer one sees them all."""
    ada = lead()
    with capture_audit() as outer:
        with processing("client.contract", actor="a", engine=engine):
            _ = ada.name
        with capture_audit() as inner, processing("client.contract", actor="a", engine=engine):
            _ = ada.email
    assert [e.field for e in outer] == ["name", "email"]
    assert [e.field for e in inner] == ["email"]


def test_capture_audit_stops_observing_on_exit_even_on_error(engine: Engine) -> None:
    """The capture's observer is removed when the block ends, by an error too."""
    before = list(_observers)
    with pytest.raises(RuntimeError):
        raise_inside_capture(RuntimeError("boom"), before)
    assert _observers == before
    with capture_audit() as events:
        pass
    with processing("client.contract", actor="a", engine=engine):
        _ = lead().name
    assert list(events) == []
    assert "closed" in repr(events)


def test_capture_views_describe_and_repr(engine: Engine) -> None:
    """The capture's views split allowed, denied and monitored reads; nothing shows a value."""
    ada, bob = lead(), lead("hr.recruitment")
    with capture_audit() as events:
        run(engine, "prospection.postal", "monitor", (ada, "name"), (bob, "name"), (bob, "name"))
    assert isinstance(events, AuditCapture)
    assert [e.reason for e in events.allowed] == [Reason.COMPATIBLE]
    assert [e.reason for e in events.denied] == [Reason.PROHIBITED, Reason.PROHIBITED]
    assert events.monitored == events.denied
    assert events.reasons == (Reason.COMPATIBLE, Reason.PROHIBITED, Reason.PROHIBITED)
    assert events[1:] == events.denied
    assert events.describe() == (
        "  - Lead.name (identity.name) read for prospection.postal, collected for "
        "client.contract: compatible (allowed)\n"
        "  - Lead.name (identity.name) read for prospection.postal, collected for "
        f"hr.recruitment: prohibited (2 reads). Remedy: {PROHIBITED_REMEDY}"
    )
    assert repr(events) == "<AuditCapture events=3 closed>"
    assert SECRET not in events.describe()
    assert SUBJECT not in events.describe()


def test_capture_exit_raises_a_fail_closed_sink_failure() -> None:
    """A failing fail-closed sink found by the exit flush raises AuditError — unless an
    exception is already leaving the block."""

    class Flaky:
        def __init__(self) -> None:
            self.down = True

        def emit(self, events: object) -> None:
            if self.down:
                raise ConnectionError("audit service unreachable")

    captured: list[AuditCapture] = []

    def read_outside(leaving: BaseException | None) -> None:
        with capture_audit() as events:
            captured.append(events)
            _ = lead().name
            if leaving is not None:
                raise leaving

    for leaving in (None, KeyError("the block's own error wins")):
        sink = Flaky()
        broken = make_engine(REGISTER, at=NOW, audit=Audit([sink]))
        with (
            set_engine(broken, mode="monitor"),
            pytest.raises(AuditError if leaving is None else KeyError),
        ):
            read_outside(leaving)
        assert [e.reason for e in captured[-1]] == [Reason.NO_PURPOSE]  # before the sinks
        sink.down = False
        get_audit(broken).flush()  # delivered at last: nothing left pending


# --------------------------------------------------------------------------- assert_allowed


@pytest.mark.parametrize("mode", MODES)
def test_assert_allowed_passes_when_every_read_is_allowed(engine: Engine, mode: Any) -> None:
    """Allowed reads pass, with any allow reason or the one named."""
    ada = lead()
    with assert_allowed() as events:
        run(engine, "client.contract", mode, (ada, "name"), (ada, "email"))
    assert len(events) == 2
    with (
        assert_allowed(reason="compatible"),
        processing("prospection.postal", actor="a", engine=engine, mode=mode),
    ):
        _ = ada.address


def test_assert_allowed_failure_lists_the_denied_read_enforce(engine: Engine) -> None:
    """Enforce mode: the first denial stops the block; the message names it with its remedy."""
    ada, bob = lead(), lead("hr.recruitment")
    with pytest.raises(AssertionError) as failure, assert_allowed():
        run(engine, "prospection.postal", "enforce", (ada, "name"), (bob, "name"), (bob, "address"))
    assert str(failure.value) == (
        "assert_allowed(): 1 of 2 guarded reads was denied:\n"
        "  - Lead.name (identity.name) read for prospection.postal, collected for "
        f"hr.recruitment: prohibited. Remedy: {PROHIBITED_REMEDY}"
    )
    assert isinstance(failure.value.__context__, ProcessingDenied)


def test_assert_allowed_failure_lists_every_denied_read_monitor(engine: Engine) -> None:
    """Monitor mode: every would-be denial is listed, one line per kind of read."""
    ada, bob = lead(), lead("hr.recruitment")
    with pytest.raises(AssertionError) as failure, assert_allowed():
        run(
            engine,
            "prospection.postal",
            "monitor",
            (ada, "name"),
            (bob, "name"),
            (bob, "address"),
            (bob, "name"),
        )
    assert str(failure.value) == (
        "assert_allowed(): 3 of 4 guarded reads were denied:\n"
        "  - Lead.name (identity.name) read for prospection.postal, collected for "
        f"hr.recruitment: prohibited (2 reads). Remedy: {PROHIBITED_REMEDY}\n"
        "  - Lead.address (contact.postal_address) read for prospection.postal, collected for "
        f"hr.recruitment: prohibited. Remedy: {PROHIBITED_REMEDY}"
    )
    assert SECRET not in str(failure.value)
    assert SUBJECT not in str(failure.value)


@pytest.mark.parametrize("mode", MODES)
def test_assert_allowed_with_another_allow_reason_fails(engine: Engine, mode: Any) -> None:
    """reason= narrows the expectation: a read allowed for another reason is listed."""
    ada = lead()
    with (
        pytest.raises(AssertionError) as failure,
        assert_allowed(reason=["compatible", Reason.CONSENT]),
    ):
        run(engine, "client.contract", mode, (ada, "name"))
    assert str(failure.value) == (
        'assert_allowed(reason=["compatible", "consent"]): 1 of 1 guarded read was allowed '
        "for another reason:\n"
        "  - Lead.name (identity.name) read for client.contract, collected for "
        "client.contract: same-purpose (allowed)"
    )


def test_assert_allowed_fails_when_nothing_was_read() -> None:
    """A block that reads no personal field checks nothing: that is a failure."""
    with pytest.raises(AssertionError) as failure, assert_allowed():
        pass
    assert str(failure.value) == (
        "assert_allowed(): no guarded read of a personal field was made in the block, so "
        "nothing was checked. Read the record's personal fields inside "
        "`with assert_allowed(...):`"
    )


def test_assert_allowed_reads_outside_blocks_are_denied(engine: Engine) -> None:
    """A read outside any block is no-purpose: denied, with the remedy to bind a purpose."""
    ada = lead()
    with set_engine(engine), pytest.raises(AssertionError) as failure, assert_allowed():
        _ = ada.email
    assert str(failure.value) == (
        "assert_allowed(): 1 of 1 guarded read was denied:\n"
        "  - Lead.email (contact.email) read outside any processing block, collected for "
        f"client.contract: no-purpose. Remedy: {NO_PURPOSE_REMEDY}"
    )


def test_assert_allowed_fails_on_a_refused_collection(engine: Engine) -> None:
    """Creating a record its collection purpose may not hold fails the assertion."""
    with pytest.raises(AssertionError) as failure, assert_allowed():
        signup(engine)
    assert str(failure.value) == (
        "assert_allowed(): 1 of 1 guarded read was denied:\n"
        "  - Subscriber.nir (nir) collected for newsletter.product: excessive (refused at "
        "collection). Remedy: do not collect nir, or declare nir among the categories of "
        "newsletter.product if the purpose truly needs it (minimisation, GDPR art. 5(1)(c))"
    )
    assert isinstance(failure.value.__context__, CollectionRefused)


def test_assert_helpers_let_other_errors_through(engine: Engine) -> None:
    """An error that is not a denial leaves the block unchanged."""
    with pytest.raises(ZeroDivisionError), assert_allowed():
        1 / 0  # noqa: B018 - the error under test
    with pytest.raises(KeyError), assert_denied():
        raise KeyError("x")


@pytest.mark.parametrize(
    ("helper", "reason", "message"),
    [
        (
            assert_allowed,
            "compatibel",
            "assert_allowed: 'compatibel' is not a reason code (did you mean 'compatible'?); "
            "reason codes: ",
        ),
        (
            assert_allowed,
            "prohibited",
            "assert_allowed: 'prohibited' is a deny reason code; use assert_denied(reason=...)",
        ),
        (
            assert_denied,
            Reason.CONSENT,
            "assert_denied: 'consent' is an allow reason code; use assert_allowed(reason=...)",
        ),
        (assert_denied, [], "assert_denied: reason= names no reason code"),
    ],
)
def test_assert_helpers_refuse_a_bad_reason(helper: Any, reason: Any, message: str) -> None:
    """reason= must be reason codes of the right kind; the message says which to use."""
    with pytest.raises(ValueError, match=r"\A") as failure, helper(reason=reason):
        pass
    assert str(failure.value).startswith(message)


# --------------------------------------------------------------------------- assert_denied


@pytest.mark.parametrize("mode", MODES)
def test_assert_denied_passes_and_swallows_the_denial(engine: Engine, mode: Any) -> None:
    """The expected denial does not propagate; allowed reads before it are fine."""
    ada, bob = lead(), lead("hr.recruitment")
    with (
        assert_denied(reason="prohibited") as events,
        processing("prospection.postal", actor="m", engine=engine, mode=mode),
    ):
        _ = ada.name
        _ = bob.name
    assert events.reasons == (Reason.COMPATIBLE, Reason.PROHIBITED)
    with (
        assert_denied(reason=("consent-missing", "consent-withdrawn")),
        processing("newsletter.product", actor="m", engine=engine, mode=mode),
    ):
        _ = ada.email


@pytest.mark.parametrize("mode", MODES)
def test_assert_denied_fails_when_every_read_is_allowed(engine: Engine, mode: Any) -> None:
    """No denial: the message lists the reads that were allowed."""
    ada = lead()
    with pytest.raises(AssertionError) as failure, assert_denied(reason="prohibited"):
        run(engine, "prospection.postal", mode, (ada, "name"), (ada, "name"))
    assert str(failure.value) == (
        'assert_denied(reason="prohibited"): none of the 2 guarded reads was denied:\n'
        "  - Lead.name (identity.name) read for prospection.postal, collected for "
        "client.contract: compatible (allowed, 2 reads)"
    )


@pytest.mark.parametrize("mode", MODES)
def test_assert_denied_fails_on_another_deny_reason(engine: Engine, mode: Any) -> None:
    """A denial for another reason is listed with its remedy."""
    ada = lead()
    with pytest.raises(AssertionError) as failure, assert_denied(reason="prohibited"):
        run(engine, "newsletter.product", mode, (ada, "email"))
    assert str(failure.value) == (
        'assert_denied(reason="prohibited"): 1 of 1 denied read was denied for another '
        "reason:\n"
        "  - Lead.email (contact.email) read for newsletter.product, collected for "
        "client.contract: consent-missing. Remedy: record the person's consent for "
        "newsletter.product (GDPR art. 6(1)(a) and 7)"
    )
    assert isinstance(failure.value.__context__, ProcessingDenied) is (mode == "enforce")


def test_assert_denied_fails_when_nothing_was_read() -> None:
    """A block that reads nothing checks nothing."""
    with (
        pytest.raises(AssertionError, match=r"^assert_denied\(\): no guarded read"),
        assert_denied(),
    ):
        pass


def test_assert_denied_counts_a_refused_collection_as_excessive(engine: Engine) -> None:
    """The NIR at newsletter signup is refused at collection: denied, excessive."""
    with assert_denied(reason="excessive"):
        signup(engine)


@given(reason=st.sampled_from([r for r in Reason if not r.allows and r is not Reason.NO_PURPOSE]))
@settings(max_examples=30, deadline=None)
def test_failure_messages_never_show_a_value_or_subject(reason: Reason) -> None:
    """Whatever the denial, the assertion message holds ids and codes, never the value."""
    read = Read("Lead", "email", "contact.email", "p.x", "p.y", False, reason, "purpose:p.x")
    text = describe_reads([read])
    assert reason.value in text
    assert SECRET not in text
    assert "Remedy: " in text


# --------------------------------------------------------------------------- the frozen clock


def test_frozen_clock_stands_still_and_moves_when_told() -> None:
    """The clock answers its instant; move_to and shift move it (durations in calendar terms)."""
    clock = FrozenClock("2024-02-29T12:00:00Z")
    assert clock() == clock.now == datetime(2024, 2, 29, 12, tzinfo=UTC)
    assert clock.shift("P1Y") == datetime(2025, 2, 28, 12, tzinfo=UTC)
    assert clock.shift(timedelta(seconds=-1)) == datetime(2025, 2, 28, 11, 59, 59, tzinfo=UTC)
    assert clock.move_to("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    assert repr(clock) == "FrozenClock('2026-01-01T00:00:00+00:00')"


def test_frozen_clock_refuses_naive_instants() -> None:
    """Instants are timezone-aware (DESIGN §3)."""
    with pytest.raises(NaiveDatetimeError):
        FrozenClock(datetime(2026, 1, 1))
    with pytest.raises(NaiveDatetimeError):
        FrozenClock("2026-01-01T10:00:00")
    with pytest.raises(TypeError):
        FrozenClock(12)  # type: ignore[arg-type]  # the error under test


def test_frozen_clock_replaces_and_restores_an_engines_clock() -> None:
    """frozen_clock(engine=) pins the engine for the block and puts its clock back, on error too."""
    real = Engine(REGISTER)
    original = real.clock
    with frozen_clock("2026-03-01T10:00:00Z", engine=real) as clock:
        assert real.now() == NOW
        clock.shift(timedelta(hours=1))
        assert real.now() == NOW + timedelta(hours=1)
    assert real.clock is original
    with pytest.raises(RuntimeError), frozen_clock(NOW, engine=real):
        raise RuntimeError("boom")
    assert real.clock is original
    with frozen_clock(NOW) as alone:
        assert alone() == NOW


@pytest.mark.parametrize("mode", MODES)
def test_shifting_the_clock_across_a_retention_end_changes_the_decision(mode: Any) -> None:
    """A memoised decision is not reused past the retention end: one second decides."""
    clock = FrozenClock("2026-04-10T08:59:59Z")
    engine = make_engine(REGISTER, clock=clock)
    candidate = lead("hr.recruitment", collected_at=T0)
    with processing("hr.recruitment", actor="hr", engine=engine, mode=mode):
        with assert_allowed(reason="same-purpose"):
            _ = candidate.name
        clock.shift(timedelta(seconds=1))
        with assert_denied(reason="retention-expired"):
            _ = candidate.name


# --------------------------------------------------------------------------- factories


def test_make_register_fills_defaults_and_declares_categories() -> None:
    """Purposes get defaults; base, sensitive and listed categories (with ancestors) exist."""
    register = make_register(
        ["client.contract"],
        categories=["transaction.amount"],
        sensitive=["special.religion"],
    )
    purpose = register.purpose("client.contract")
    assert purpose is not None
    assert (purpose.label, purpose.legal_basis, purpose.retention) == (
        "client.contract",
        LegalBasis.CONTRACT,
        Retention("P3Y", "collection"),
    )
    assert purpose.categories == ("identity", "contact")
    for cid in (*BASE_CATEGORIES, *SENSITIVE_CATEGORIES, "transaction", "transaction.amount"):
        assert register.category(cid) is not None
    assert register.is_sensitive("nir")
    assert register.is_sensitive("special.health")
    assert register.is_sensitive("special.religion")
    assert not register.is_sensitive("contact.email")


def test_make_register_builds_entries_and_accepts_values() -> None:
    """(from, to) pairs become assessed entries; library values pass through."""
    register = make_register(
        [
            Purpose("a.one", "A", "Processing A", "contract", Retention("P1Y")),
            "b.two",
        ],
        categories=[DataCategory("extra", label="Extra")],
        compatible=[("a.one", "b.two")],
        prohibited=[("b", "a")],
        version="v1",
    )
    assert [(c.id, c.from_, c.to, c.verdict.value) for c in register.compatibility] == [
        ("compatible-0", "a.one", "b.two", "compatible"),
        ("prohibited-0", "b", "a", "prohibited"),
    ]
    assert register.version == "v1"
    assert register.category("extra") == DataCategory("extra", label="Extra")


def test_make_register_reports_every_problem() -> None:
    """An impossible register is refused like any other, every problem listed."""
    with pytest.raises(RegisterError) as refused:
        make_register(["a"], compatible=[("a", "nowhere"), ("a", "a")], prohibited=[("a", "a")])
    assert [p.path for p in refused.value.problems] == [
        "compatibility[0].to",
        "compatibility[1]",
    ]
    with pytest.raises(ValueError, match="lower-case"):
        make_register(["a"], categories=["X"])
    with pytest.raises(TypeError, match="retention:"):
        make_register({"a": {"retention": 3}})


def test_make_engine_freezes_the_clock_and_records_events() -> None:
    """The engine's clock is frozen; given events are in its in-memory store."""
    consent = make_consent("s-1", "newsletter.product", at=T0)
    engine = make_engine(REGISTER, at="2026-03-01T10:00:00Z", consents=[consent])
    assert isinstance(engine.clock, FrozenClock)
    assert engine.now() == NOW
    assert isinstance(engine.store, InMemoryStore)
    assert engine.store.subject_events("s-1").consents == (consent,)
    assert isinstance(get_audit(engine).sinks[0], InMemoryAuditSink)
    clock = FrozenClock(T0)
    assert make_engine(REGISTER, clock=clock).clock is clock
    with pytest.raises(ValueError, match="at= or clock="):
        make_engine(REGISTER, at=NOW, clock=clock)
    with pytest.raises(ValueError, match="pass no store"):
        make_engine(REGISTER, store=InMemoryStore(), consents=[consent])


def test_make_engine_loads_presets_and_register_files(tmp_path: Path) -> None:
    """A preset name or a register file path is loaded."""
    assert make_engine("cnil-commercial").register.purpose("hr.recruitment") is not None
    path = tmp_path / "register.toml"
    path.write_text(
        textwrap.dedent(
            """
            [[categories]]
            id = "contact"

            [[purposes]]
            id = "client.contract"
            label = "Contracts"
            description = "Managing contracts"
            legal_basis = "contract"
            categories = ["contact"]
            retention = { duration = "P1Y", from = "collection" }
            """
        ),
        "utf-8",
    )
    assert list(make_engine(path).register.purposes) == ["client.contract"]


def test_make_record_fills_the_tag_and_placeholders(engine: Engine) -> None:
    """Missing personal values become <category>; records of one purpose share a Collection."""
    with set_engine(engine):
        first = make_record(Lead, collected_for="client.contract")
        second = make_record(Lead, "Ada", email="ada@example.org", collected_for="client.contract")
    assert first.collection is second.collection is collection_for("client.contract")
    assert first.subject != second.subject
    assert first.collected_at == NOW  # the reachable engine's clock
    with processing("client.contract", actor="t", engine=engine):
        assert (first.name, first.email, first.address) == (
            "<identity.name>",
            "<contact.email>",
            "",
        )
        assert (second.name, second.email) == ("Ada", "ada@example.org")
    third = make_record(
        Lead,
        collected_for="client.contract",
        subject="s-9",
        collected_at="2026-01-10T09:00:00Z",
        last_contact_at="2026-02-01",
        contract_ended_at=None,
        source="web",
    )
    assert tag_of(third).last_contact_at == datetime(2026, 2, 1, tzinfo=UTC)
    assert third.collection.source == "web"


def test_make_record_checks_its_arguments_and_the_collection(engine: Engine) -> None:
    """One of collected_for / collection; an excessive field is refused at collection."""
    with pytest.raises(TypeError, match="collected_for="):
        make_record(Lead)
    with pytest.raises(TypeError, match="collected_for="):
        make_record(Lead, collected_for="a", collection=Collection("a"))
    with set_engine(engine), pytest.raises(CollectionRefused):
        make_record(Subscriber, collected_for="newsletter.product")


def test_event_factories_build_what_the_engine_reads() -> None:
    """Consents, withdrawals, objections and authorisations decide as the engine says."""
    given = make_consent("s-1", "newsletter.product", at=T0)
    ticked = make_consent("s-1", "newsletter.product", at=T0, mechanism="pre-ticked")
    withdrawn = make_consent("s-1", "newsletter.product", at=T0, withdrawn_at=NOW)
    for consent, state in (
        (given, ConsentState.VALID),
        (ticked, ConsentState.INVALID),
        (withdrawn, ConsentState.WITHDRAWN),
    ):
        assert (
            consent_state(SubjectEvents(consents=(consent,)), "newsletter.product", NOW)[0] is state
        )
    withdrawal = make_withdrawal("s-1", "newsletter.product", at=NOW)
    events = SubjectEvents(consents=(given,), withdrawals=(withdrawal,))
    assert consent_state(events, "newsletter.product", NOW)[0] is ConsentState.WITHDRAWN
    objection = make_objection("s-1", at=T0, id="obj-1")
    authorisation = make_authorisation(
        "hr.recruitment", "prospection.postal", valid_from=T0, categories=["identity"]
    )
    engine = make_engine(REGISTER, at=NOW, objections=[objection], authorisations=[authorisation])
    tag = tag_of(lead("client.contract", subject="s-1"))
    assert engine.decide(tag, ["identity.name"], "prospection.postal").rule == "objection:obj-1"
    candidate = tag_of(lead("hr.recruitment", subject="s-2"))
    decided = engine.decide(candidate, ["identity.name"], "prospection.postal")
    assert (decided.reason, decided.rule) == (
        Reason.AUTHORISATION,
        "authorisation:authorisation-prospection.postal",
    )


# --------------------------------------------------------------------------- imports


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_testing_imports_without_pytest_or_hypothesis() -> None:
    """purposelimit.testing needs neither pytest nor hypothesis; strategies need hypothesis."""
    result = _run(
        "import sys\n"
        "sys.modules['pytest'] = None\n"
        "sys.modules['hypothesis'] = None\n"
        "import purposelimit.testing as t\n"
        "assert 'purposelimit.testing.strategies' not in sys.modules\n"
        "try:\n"
        "    import purposelimit.testing.strategies\n"
        "except ImportError:\n"
        "    print('strategies need hypothesis')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "strategies need hypothesis\n"


def test_loading_the_plugin_imports_nothing_of_the_toolkit() -> None:
    """Importing the pytest plugin leaves the toolkit, the cases and hypothesis unimported."""
    result = _run(
        "import sys\n"
        "import purposelimit.pytest_plugin\n"
        "print(sorted(m for m in ('purposelimit.testing', 'purposelimit._cases', 'hypothesis')"
        " if m in sys.modules))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


# --------------------------------------------------------------------------- strategies


@given(pst.registers())
@settings(max_examples=60, deadline=None)
def test_registers_are_valid_and_decidable(register: Register) -> None:
    """Drawn registers load, and every pair of purposes gets a decision without a value."""
    engine = Engine(register)
    category = next(iter(register.categories))
    for p0 in register.purposes:
        tag = tag_of(
            Lead(SECRET, SECRET, subject=SUBJECT, collection=Collection(p0), collected_at=T0)
        )
        for p in register.purposes:
            decision = engine.decide(tag, [category], p, NOW)
            assert SECRET not in repr(decision)
            assert SUBJECT not in decision.explanation


@given(data=st.data(), register=pst.registers())
@settings(max_examples=60, deadline=None)
def test_a_withdrawn_consent_never_allows(data: st.DataObject, register: Register) -> None:
    """Under a consent-based purpose, a consent withdrawn before the read never allows it —
    even when a compatible entry covers the reuse (DESIGN §3 step 5)."""
    consent_based = [p for p in register.purposes.values() if p.legal_basis is LegalBasis.CONSENT]
    if not consent_based:
        return
    purpose = data.draw(st.sampled_from(consent_based))
    tag = data.draw(pst.tags(register))
    consent = data.draw(
        pst.consents(subjects=st.just(tag.subject), purposes=st.just(purpose.id), states=("given",))
    )
    if consent.withdrawn_at is None or (
        consent.expires_at is not None and consent.expires_at < consent.withdrawn_at
    ):
        return  # not withdrawn, or expired first: its state is "expired" (DESIGN §3)
    at = consent.withdrawn_at + timedelta(seconds=data.draw(st.integers(0, 10**6)))
    category = data.draw(st.sampled_from(tuple(register.categories)))
    decision = Engine(register).decide(tag, [category], purpose.id, at, consents=[consent])
    assert not decision.allowed


@given(pst.records(Lead, register=REGISTER, values=st.just(SECRET)))
@settings(max_examples=40, deadline=None)
def test_records_are_collectable_and_never_show_values(item: Lead) -> None:
    """Drawn records are collected for a purpose that may hold them; repr shows no value."""
    engine = Engine(REGISTER)
    assert (
        engine.check_collection(item.collection.purpose, ["identity.name", "contact.email"]) == []
    )
    assert SECRET not in repr(item)
    tag = tag_of(item)
    for later in (tag.last_contact_at, tag.contract_ended_at):
        assert later is None or later >= tag.collected_at


@given(pst.consents(), pst.objections(), pst.withdrawals(), pst.ids(), pst.instants())
@settings(max_examples=60, deadline=None)
def test_event_strategies_draw_valid_events(
    consent: Any, objection: Any, withdrawal: Any, identifier: str, instant: datetime
) -> None:
    """Drawn events are well-formed: aware instants, withdrawals after the act."""
    assert consent.withdrawn_at is None or consent.withdrawn_at >= consent.given_at
    assert objection.withdrawn_at is None or objection.withdrawn_at >= objection.at
    assert withdrawal.purposes
    assert instant.utcoffset() is not None
    assert all(part for part in identifier.split("."))


def test_records_strategy_needs_a_purpose_that_may_collect() -> None:
    """A register where no purpose may hold the record's categories is a usage error."""
    from hypothesis.errors import InvalidArgument

    narrow = make_register({"a": {"categories": ["identity"]}})

    @given(pst.records(Subscriber, register=narrow))
    @settings(max_examples=1, deadline=None)
    def draw(item: Subscriber) -> None:
        raise AssertionError("never drawn")

    with pytest.raises(InvalidArgument, match="no purpose of the register may collect"):
        draw()
