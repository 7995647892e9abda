"""The audit trail: events for every read, pseudonyms, the bounded buffer, sinks and failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purposelimit._audit import (
    AUDIT_LOGGER,
    Audit,
    AuditEvent,
    AuditSink,
    InMemoryAuditSink,
    LoggingAuditSink,
    _flush_all_at_exit,
    pseudonym,
)
from purposelimit._context import _CURRENT, processing, set_engine
from purposelimit._engine import Engine
from purposelimit._errors import AuditError, ConfigurationError, ProcessingDenied
from purposelimit._model import (
    Collection,
    Compatibility,
    DataCategory,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._records import TaggedRecord, personal, record
from purposelimit._register import Register

SECRET = "SECRET-VALUE-123"
KEY = b"k" * 32
T0 = datetime(2026, 1, 10, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
MODES = ("enforce", "monitor")


def make_register() -> Register:
    return Register(
        [
            Purpose(
                "client.contract",
                "Contracts",
                "Managing contracts",
                "contract",
                Retention("P5Y"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "prospection.postal",
                "Postal",
                "Postal offers",
                "legitimate-interests",
                Retention("P3Y", "last-contact"),
                categories=["identity", "contact"],
                direct_marketing=True,
            ),
            Purpose(
                "hr.recruitment",
                "Recruitment",
                "Hiring",
                "legitimate-interests",
                Retention("P2Y"),
                categories=["identity", "contact"],
            ),
        ],
        [
            DataCategory("identity"),
            DataCategory("identity.name"),
            DataCategory("contact"),
            DataCategory("contact.email"),
        ],
        [
            Compatibility(
                "recruitment-not-prospection",
                "hr.recruitment",
                "prospection",
                "prohibited",
                source="CNIL délibération 2021-131",
            ),
        ],
        version="2026-11-01",
    )


CONTRACT = Collection("client.contract")
RECRUITMENT = Collection("hr.recruitment")


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")


def lead(collection: Collection = CONTRACT, subject: str = "ada@example.org") -> Lead:
    tag: dict[str, Any] = {"subject": subject, "collection": collection, "collected_at": T0}
    return Lead("Ada", SECRET, **tag)


class FailingSink:
    """A sink that is down until told otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.events: list[AuditEvent] = []

    def emit(self, events: Sequence[AuditEvent]) -> None:
        if self.down:
            raise ConnectionError("audit service unreachable")
        self.events.extend(events)


@pytest.fixture(autouse=True)
def _reset_context() -> Iterator[None]:
    """Every test starts and ends with no processing block and no default engine."""
    token = set_engine(None, mode="enforce")
    context_token = _CURRENT.set(None)
    yield
    _CURRENT.reset(context_token)
    token.reset()


@pytest.fixture
def sink() -> InMemoryAuditSink:
    return InMemoryAuditSink()


def engine_with(audit: Audit) -> Engine:
    return Engine(make_register(), clock=lambda: NOW, audit=audit)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Any:
    return request.param


# --------------------------------------------------------------------------- events


def test_an_allowed_read_gives_a_complete_event(sink: InMemoryAuditSink, mode: Any) -> None:
    """An allowed read is recorded with every field of the audit event, and no value."""
    engine = engine_with(Audit([sink]))
    with processing("client.contract", actor="crm-export", engine=engine, mode=mode):
        _ = lead().email
    [event] = sink.events
    register = engine.register
    assert event == AuditEvent(
        time=NOW,
        actor="crm-export",
        purpose="client.contract",
        collected_for="client.contract",
        record_type="Lead",
        subject_ref="ada@example.org",
        field="email",
        category="contact.email",
        allowed=True,
        reason=Reason.SAME_PURPOSE,
        rule="purpose:client.contract",
        mode=mode,
        monitored=False,
        register_version="2026-11-01",
        register_hash=register.content_hash,
    )


def test_a_denied_read_gives_a_complete_event(sink: InMemoryAuditSink, mode: Any) -> None:
    """A denied read is recorded too; monitor mode flags it as monitored."""
    engine = engine_with(Audit([sink]))
    with processing("prospection.postal", actor="mailer", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                _ = lead(RECRUITMENT).name
        else:
            assert lead(RECRUITMENT).name == "Ada"
    [event] = sink.events
    assert (event.allowed, event.reason, event.rule) == (
        False,
        Reason.PROHIBITED,
        "compatibility:recruitment-not-prospection",
    )
    assert (event.purpose, event.collected_for, event.field, event.category) == (
        "prospection.postal",
        "hr.recruitment",
        "name",
        "identity.name",
    )
    assert event.mode == mode
    assert event.monitored is (mode == "monitor")


def test_events_serialise_to_json_without_values(sink: InMemoryAuditSink) -> None:
    """to_dict() is JSON-ready; str() is one key=value line of ids and reason codes."""
    engine = engine_with(Audit([sink]))
    with processing("client.contract", actor="crm", engine=engine):
        _ = lead().name
    [event] = sink.events
    data = json.loads(json.dumps(event.to_dict()))
    assert data["reason"] == "same-purpose"
    assert data["time"] == NOW.isoformat()
    line = str(event)
    assert "reason=same-purpose" in line
    assert "record=Lead field=name" in line
    assert "\n" not in line


# --------------------------------------------------------------------------- pseudonyms


def test_pseudonym_is_a_truncated_keyed_hmac() -> None:
    """pseudonym() is 'ps-' + the first 32 hex digits of HMAC-SHA256(key, subject)."""
    expected = hmac.new(KEY, b"ada@example.org", hashlib.sha256).hexdigest()[:32]
    assert pseudonym("ada@example.org", KEY) == "ps-" + expected
    assert pseudonym("ada@example.org", KEY) != pseudonym("ada@example.org", b"j" * 32)


def test_events_and_denials_use_the_pseudonym_when_a_key_is_set(
    sink: InMemoryAuditSink, mode: Any
) -> None:
    """With a pseudonym key, neither events nor denials carry the subject id."""
    engine = engine_with(Audit([sink], pseudonym_key=KEY))
    ref = pseudonym("ada@example.org", KEY)
    with processing("prospection.postal", actor="mailer", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied) as caught:
                _ = lead(RECRUITMENT).email
            assert caught.value.subject_ref == ref
            assert "ada@example.org" not in str(caught.value)
        else:
            _ = lead(RECRUITMENT).email
    [event] = sink.events
    assert event.subject_ref == ref
    assert "ada@example.org" not in str(event) + repr(event)


def test_a_short_key_is_refused() -> None:
    """A pseudonym key shorter than 16 bytes is a configuration error."""
    with pytest.raises(ConfigurationError, match="16 bytes"):
        Audit(pseudonym_key=b"short")


# --------------------------------------------------------------------------- the buffer


def test_no_event_is_dropped_when_the_buffer_fills(sink: InMemoryAuditSink, mode: Any) -> None:
    """Capacity 4, 100 reads: the reader drains when full; all 100 events arrive, in order."""
    audit = Audit([sink], capacity=4)
    engine = engine_with(audit)
    record_ = lead()
    with processing("client.contract", actor="loop", engine=engine, mode=mode):
        for i in range(100):
            _ = record_.name if i % 2 else record_.email
            assert audit.buffered < 4
        assert len(sink.events) == 100  # drained by the reading thread itself
    assert [e.field for e in sink.events] == ["email", "name"] * 50


def test_draining_is_thread_safe(sink: InMemoryAuditSink) -> None:
    """Eight threads reading through a small buffer lose and duplicate nothing."""
    audit = Audit([sink], capacity=7)
    engine = engine_with(audit)
    records = [lead(subject=f"lead-{i}") for i in range(8)]

    def worker(i: int) -> None:
        with processing("client.contract", actor=f"t{i}", engine=engine):
            for _ in range(250):
                _ = records[i].email

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.flush()
    events = sink.events
    assert len(events) == 2000
    for i in range(8):
        assert sum(1 for e in events if e.actor == f"t{i}") == 250


def test_flush_and_exit_hook_drain_reads_outside_blocks(sink: InMemoryAuditSink) -> None:
    """flush() and the interpreter-exit hook build whatever is buffered."""
    audit = Audit([sink])
    engine = engine_with(audit)
    set_engine(engine, mode="monitor")
    record_ = lead()
    _ = record_.email  # outside any block: no-purpose, let through by monitor mode
    assert audit.buffered == 1
    audit.flush()
    assert [e.reason for e in sink.events] == [Reason.NO_PURPOSE]
    _ = record_.name
    _flush_all_at_exit()
    assert len(sink.events) == 2


# --------------------------------------------------------------------------- failures


def test_fail_closed_denies_the_read_that_drains(
    caplog: pytest.LogCaptureFixture, mode: Any
) -> None:
    """A failing sink makes the draining read raise AuditError; events wait and are delivered."""
    failing = FailingSink()
    audit = Audit([failing], capacity=2)
    engine = engine_with(audit)
    record_ = lead()
    caplog.set_level(logging.ERROR, logger="purposelimit")
    with processing("client.contract", actor="a", engine=engine, mode=mode):
        _ = record_.name  # buffered
        with pytest.raises(AuditError, match="fail closed"):
            _ = record_.email  # fills the buffer: drains, the sink fails
        with pytest.raises(AuditError):
            _ = record_.name  # while the sink is down every read drains and fails
        failing.down = False
        assert record_.name == "Ada"  # the sink is back: everything is delivered
    assert [e.field for e in failing.events] == ["name", "email", "name", "name"]
    assert "FailingSink failed (ConnectionError)" in caplog.text
    assert SECRET not in caplog.text
    assert audit.pending == 0


def test_continue_reports_and_reads_on(caplog: pytest.LogCaptureFixture) -> None:
    """With on_failure='continue', reads go on; the failure is logged; events are retried."""
    failing = FailingSink()
    audit = Audit([failing], capacity=2, on_failure="continue")
    engine = engine_with(audit)
    record_ = lead()
    caplog.set_level(logging.ERROR, logger="purposelimit")
    with processing("client.contract", actor="a", engine=engine):
        for _ in range(6):
            assert record_.name == "Ada"
    assert audit.pending == 6
    assert "kept for retry" in caplog.text
    failing.down = False
    audit.flush()
    assert len(failing.events) == 6
    assert audit.pending == 0


def test_a_sink_down_too_long_discards_the_oldest_and_counts_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Beyond max_pending, the oldest undelivered events are discarded, counted and reported."""
    failing = FailingSink()
    audit = Audit([failing], capacity=1, on_failure="continue", max_pending=3)
    engine = engine_with(audit)
    caplog.set_level(logging.ERROR, logger="purposelimit")
    with processing("client.contract", actor="a", engine=engine):
        for _ in range(5):
            _ = lead().name
    assert audit.lost == 2
    assert audit.pending == 3
    assert "discarded" in caplog.text
    failing.down = False
    audit.flush()
    assert len(failing.events) == 3


def test_one_failing_sink_does_not_starve_the_others(sink: InMemoryAuditSink) -> None:
    """Each sink gets every event; only the failing one keeps a backlog."""
    failing = FailingSink()
    audit = Audit([sink, failing], capacity=1, on_failure="continue")
    engine = engine_with(audit)
    with processing("client.contract", actor="a", engine=engine):
        _ = lead().name
        _ = lead().email
    assert len(sink.events) == 2
    failing.down = False
    audit.flush()
    assert len(failing.events) == 2
    assert len(sink.events) == 2  # not sent twice


def test_audit_settings_are_checked() -> None:
    """Bad capacities, policies and sinks are configuration errors."""
    with pytest.raises(ConfigurationError):
        Audit(capacity=0)
    with pytest.raises(ConfigurationError):
        Audit(on_failure="ignore")  # type: ignore[arg-type]  # refused
    with pytest.raises(ConfigurationError):
        Audit([object()])  # type: ignore[list-item]  # refused
    with pytest.raises(ConfigurationError):
        Audit(max_pending=0)


def test_the_sinks_satisfy_the_protocol() -> None:
    """InMemoryAuditSink and LoggingAuditSink are AuditSinks; the default Audit logs."""
    assert isinstance(InMemoryAuditSink(), AuditSink)
    assert isinstance(LoggingAuditSink(), AuditSink)
    default = Audit()
    assert isinstance(default.sinks[0], LoggingAuditSink)
    assert default.on_failure == "fail-closed"
    assert "fail-closed" in repr(default)


# --------------------------------------------------------------------------- logging sink


def test_logging_sink_writes_one_line_per_event(caplog: pytest.LogCaptureFixture) -> None:
    """One log record per event on 'purposelimit.audit': INFO allowed, WARNING denied."""
    engine = engine_with(Audit([LoggingAuditSink()]))
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    with processing("client.contract", actor="crm", engine=engine):
        _ = lead().email
    with processing("hr.recruitment", actor="crm", engine=engine, mode="monitor"):
        _ = lead().email
    records = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert "reason=same-purpose" in records[0].getMessage()
    assert "reason=incompatible" in records[1].getMessage()
    assert "monitored=true" in records[1].getMessage()
    assert isinstance(getattr(records[0], "purposelimit_event", None), AuditEvent)
    assert SECRET not in caplog.text


# --------------------------------------------------------------------------- no value, ever


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.text(min_size=1, max_size=40),
    purpose=st.sampled_from(["client.contract", "prospection.postal", "hr.recruitment"]),
    collected=st.sampled_from(["client.contract", "hr.recruitment"]),
    mode=st.sampled_from(MODES),
    key=st.sampled_from([None, KEY]),
)
def test_no_event_or_denial_ever_holds_a_value(
    value: str, purpose: str, collected: str, mode: Any, key: bytes | None
) -> None:
    """Whatever the value, purpose, mode and key, events and denials never contain the value."""
    secret = "\x00PL-" + value  # a marker no id or reason code contains
    sink = InMemoryAuditSink()
    engine = engine_with(Audit([sink], pseudonym_key=key))
    tag: dict[str, Any] = {
        "subject": "s-1",
        "collection": Collection(collected),
        "collected_at": T0,
    }
    record_ = Lead(secret, secret, **tag)
    texts: list[str] = []
    with processing(purpose, actor="prop", engine=engine, mode=mode):
        for field in ("name", "email"):
            try:
                getattr(record_, field)
            except ProcessingDenied as denied:
                texts += [str(denied), repr(denied.args), repr(denied.decision)]
    for event in sink.events:
        texts += [str(event), repr(event), json.dumps(event.to_dict())]
    assert sink.events
    assert not any(secret in text for text in texts)


# --------------------------------------------------------------------------- building events


@given(
    actor=st.none() | st.text(max_size=8),
    allowed=st.booleans(),
    monitored=st.booleans(),
    version=st.none() | st.text(max_size=8),
    stamp=st.floats(min_value=0, max_value=4e9),
)
def test_the_drain_builds_the_same_events_as_the_class(
    actor: str | None, allowed: bool, monitored: bool, version: str | None, stamp: float
) -> None:
    """The drain's event maker (the compiled one where it runs) gives the event
    ``AuditEvent(...)`` gives: equal, same hash, frozen, printable, pickled alike."""
    import pickle

    import attrs

    from purposelimit._audit import AuditEvent, _new_event

    values = (
        datetime.fromtimestamp(stamp, UTC),
        actor,
        "prospection.postal",
        "client.contract",
        "Lead",
        "ps-0123",
        "name",
        "identity.name",
        allowed,
        Reason.SAME_PURPOSE if allowed else Reason.INCOMPATIBLE,
        "purpose:client.contract",
        "monitor" if monitored else "enforce",
        monitored,
        version,
        None,
    )
    built = _new_event(*values)
    expected = AuditEvent(*values)
    assert type(built) is AuditEvent
    assert built == expected
    assert hash(built) == hash(expected)
    assert attrs.astuple(built, recurse=False) == values
    assert str(built) == str(expected)
    assert pickle.loads(pickle.dumps(built)) == expected
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.actor = "someone else"  # type: ignore[misc]  # frozen: the point of the test


def test_the_event_maker_refuses_a_wrong_number_of_values() -> None:
    """Too few or too many values is a TypeError, never a half-built event."""
    from purposelimit._audit import _new_event

    with pytest.raises(TypeError):
        _new_event(datetime.now(UTC))
    with pytest.raises(TypeError):
        _new_event(*([None] * 16))
