"""The fast paths of issue 6 keep every guarantee: memoised reads, shared blocks, cached denials.

What is cached for speed — a ``processing`` object's prepared state, the
memoised decision of a field, the details of a denial, the flat audit buffer —
must never change a decision, lose or duplicate an audit event, or survive a
change it depends on. No timing here: benchmarks/run_all.py measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _read_path_support import make_register

from purposelimit._audit import Audit, InMemoryAuditSink
from purposelimit._context import _CURRENT, current_processing, processing, set_engine
from purposelimit._engine import Engine
from purposelimit._errors import ProcessingDenied
from purposelimit._model import (
    Collection,
    Consent,
    Evidence,
    Reason,
)
from purposelimit._records import TaggedRecord, personal, record
from purposelimit._store import InMemoryStore

SECRET = "SECRET-VALUE-123"
T0 = datetime(2026, 1, 10, tzinfo=UTC)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
MODES = ("enforce", "monitor")


@record
class Lead(TaggedRecord):
    name: str = personal("identity")
    email: str = personal("contact.email")


def lead(subject: str = "lead-1") -> Lead:
    return Lead(
        "Ada", SECRET, subject=subject, collection=Collection("client.contract"), collected_at=T0
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
def sink() -> InMemoryAuditSink:
    return InMemoryAuditSink()


@pytest.fixture
def engine(sink: InMemoryAuditSink) -> Engine:
    return Engine(make_register(), clock=lambda: NOW, audit=Audit([sink]))


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Any:
    return request.param


# --------------------------------------------------------------------------- one block, many users


def test_one_block_object_entered_by_many_threads_at_once(engine: Engine) -> None:
    """Threads sharing one processing object, all inside it at once, each restore their own
    context on exit — at top level and nested in a block of their own."""
    shared = processing("client.contract", actor="shared", engine=engine)
    count = 16
    barrier = threading.Barrier(count)
    seen: dict[int, tuple[str | None, str | None, str | None]] = {}
    leads = [lead(f"lead-{i}") for i in range(count)]

    def worker(i: int) -> None:
        outer = processing("prospection.postal", actor=f"t{i}", engine=engine) if i % 2 else None
        if outer is not None:
            outer.__enter__()
        with shared:
            barrier.wait()  # every thread is inside the shared block: tokens are overwritten
            inside = current_processing()
            assert leads[i].name == "Ada"
        after = current_processing()
        if outer is not None:
            outer.__exit__(None, None, None)
        final = current_processing()
        seen[i] = (
            inside.purpose if inside else None,
            after.purpose if after else None,
            final.purpose if final else None,
        )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {
        i: ("client.contract", "prospection.postal" if i % 2 else None, None) for i in range(count)
    }


def test_one_block_object_shared_by_interleaving_tasks(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """asyncio tasks entering one processing object and awaiting inside it never see another
    task's block after exit, and every read is audited once."""
    shared = processing("client.contract", actor="shared", engine=engine)
    record_ = lead()

    async def task(i: int) -> tuple[str | None, str | None]:
        async with shared:
            await asyncio.sleep(0)
            _ = record_.name
            await asyncio.sleep(0)
            inside = current_processing()
        await asyncio.sleep(0)
        after = current_processing()
        return (inside.purpose if inside else None, after.purpose if after else None)

    async def main() -> list[tuple[str | None, str | None]]:
        return await asyncio.gather(*(task(i) for i in range(50)))

    assert asyncio.run(main()) == [("client.contract", None)] * 50
    assert len(sink.events) == 50


def test_a_reused_block_follows_engine_changes(engine: Engine) -> None:
    """A processing object entered again sees a replaced clock, store and default engine."""
    record_ = lead()
    block = processing("client.contract", actor="a", engine=engine)
    with block:
        assert record_.email == SECRET
    engine.clock = lambda: T0 + timedelta(days=400)  # past the one-year retention
    with block, pytest.raises(ProcessingDenied, match="retention-expired"):
        _ = record_.email
    engine.clock = lambda: NOW
    consent = Consent(
        subject="lead-1",
        purposes=("newsletter.product",),
        given_at=T0,
        evidence=Evidence(mechanism="double-opt-in"),
        id="c-1",
    )
    news = processing("newsletter.product", actor="a", engine=engine)
    with news, pytest.raises(ProcessingDenied, match="consent-missing"):
        _ = record_.email
    engine.store = InMemoryStore([consent])
    with news:
        assert record_.email == SECRET
    other = Engine(make_register(), clock=lambda: T0 + timedelta(days=400))
    by_default = processing("client.contract", actor="a")
    with set_engine(engine), by_default:
        assert record_.email == SECRET
    with set_engine(other), by_default, pytest.raises(ProcessingDenied):
        _ = record_.email


def test_a_reused_block_follows_its_own_mode_and_engine(engine: Engine) -> None:
    """Setting ``mode`` or ``engine`` on a processing object applies from its next entry."""
    record_ = lead()
    block = processing("newsletter.product", actor="a", engine=engine)
    with block, pytest.raises(ProcessingDenied):
        _ = record_.email
    block.mode = "monitor"
    with block:
        assert record_.email == SECRET
    late = Engine(make_register(), clock=lambda: T0 + timedelta(days=400))
    block.mode = None
    block.engine = late
    with block, pytest.raises(ProcessingDenied, match=r"consent-missing|retention-expired"):
        _ = record_.email
    with pytest.raises(Exception, match="mode"):
        block.mode = "silent"  # type: ignore[assignment]  # the check under test


def test_a_store_write_voids_memoised_decisions_at_once(engine: Engine) -> None:
    """A consent recorded while a block runs applies to the very next read of a memoised field."""
    record_ = lead()
    store = engine.store
    assert isinstance(store, InMemoryStore)
    with processing("newsletter.product", actor="a", engine=engine, mode="monitor"):
        _ = record_.email  # memoised: consent-missing
        store.record(
            Consent(
                subject="lead-1",
                purposes=("newsletter.product",),
                given_at=T0,
                evidence=Evidence(mechanism="double-opt-in"),
                id="c-1",
            )
        )
        _ = record_.email
    sink = engine.audit
    assert isinstance(sink, Audit)
    events = sink.sinks[0].events  # type: ignore[attr-defined]  # an InMemoryAuditSink
    assert [e.reason for e in events] == [Reason.CONSENT_MISSING, Reason.CONSENT]


# --------------------------------------------------------------------------- memoised reads


def test_memoised_reads_are_each_audited_in_order(
    engine: Engine, sink: InMemoryAuditSink, mode: Any
) -> None:
    """Every read, memoised or not, allowed or denied, is one event, in read order."""
    record_ = lead()
    with processing("prospection.postal", actor="a", engine=engine, mode=mode):
        for _ in range(3):
            _ = record_.name
            _ = record_.email
    with processing("newsletter.product", actor="b", engine=engine, mode=mode):
        for _ in range(3):
            with contextlib.suppress(ProcessingDenied):
                _ = record_.email
    events = sink.events
    assert [(e.actor, e.field, e.allowed) for e in events] == [
        ("a", "name", True),
        ("a", "email", True),
    ] * 3 + [("b", "email", False)] * 3
    assert all(e.monitored == (mode == "monitor") for e in events[6:])


def test_the_buffer_counts_reads(sink: InMemoryAuditSink) -> None:
    """``Audit.buffered`` counts reads, and a full buffer drains at its capacity in reads."""
    audit = Audit([sink], capacity=3)
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    record_ = lead()
    with processing("client.contract", actor="a", engine=engine):
        _ = record_.name
        _ = record_.name
        assert audit.buffered == 2
        assert sink.events == ()
        _ = record_.name
        assert audit.buffered == 0
        assert len(sink.events) == 3


def test_a_deleted_field_raises_after_one_event(engine: Engine, sink: InMemoryAuditSink) -> None:
    """Reading an emptied slot raises AttributeError; the read is audited once, not twice."""
    record_ = lead()
    with processing("client.contract", actor="a", engine=engine):
        _ = record_.email  # memoised
        del record_.email
        with pytest.raises(AttributeError):
            _ = record_.email
    assert len(sink.events) == 2


def test_the_class_attribute_is_the_guard() -> None:
    """Reading a personal field on the class gives its guard, inside a block or not."""
    assert "contact.email" in repr(Lead.email)
    engine = Engine(make_register(), clock=lambda: NOW, audit=Audit([InMemoryAuditSink()]))
    with processing("client.contract", actor="a", engine=engine):
        assert "contact.email" in repr(Lead.email)


# --------------------------------------------------------------------------- denials


def test_repeated_denials_are_new_exceptions_with_the_same_message(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """A memoised denial raises a new exception each time, with the full message, never the
    value; it pickles, and its args read as the message."""
    record_ = lead()
    raised = []
    with processing("newsletter.product", actor="a", engine=engine):
        for _ in range(3):
            with pytest.raises(ProcessingDenied) as caught:
                _ = record_.email
            raised.append(caught.value)
    first, second, _third = raised
    assert first is not second
    assert str(first) == str(second)
    message = str(first)
    assert message.startswith("Lead.email denied under purpose newsletter.product")
    assert "consent-missing" in message
    assert "Remedy: record the person's consent for newsletter.product" in message
    assert first.reason is Reason.CONSENT_MISSING
    assert (first.record_type, first.field, first.subject_ref) == ("Lead", "email", "lead-1")
    assert first.remedy in message
    assert str(first.args[0]) == message
    assert repr(first) == f"ProcessingDenied({message!r})"
    for text in (message, repr(first), repr(first.args)):
        assert SECRET not in text
    again = pickle.loads(pickle.dumps(first))
    assert isinstance(again, ProcessingDenied)
    assert str(again) == message
    assert again.decision == first.decision
    assert len(sink.events) == 3


def test_denials_name_the_pseudonym_when_a_key_is_set(sink: InMemoryAuditSink) -> None:
    """A cached denial names the subject as the audit does: by its keyed pseudonym."""
    audit = Audit([sink], pseudonym_key=b"k" * 32)
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    record_ = lead()
    with processing("newsletter.product", actor="a", engine=engine):
        for _ in range(2):
            with pytest.raises(ProcessingDenied) as caught:
                _ = record_.email
            assert caught.value.subject_ref == audit.subject_ref("lead-1")
            assert "lead-1" not in str(caught.value)


def test_a_public_processing_denied_still_builds(engine: Engine) -> None:
    """ProcessingDenied built by hand has the attributes and message it always had."""
    record_ = lead()
    with (
        processing("newsletter.product", actor="a", engine=engine),
        pytest.raises(ProcessingDenied) as caught,
    ):
        _ = record_.email
    decision = caught.value.decision
    made = ProcessingDenied(
        decision, record_type="Lead", field="email", subject_ref=None, remedy="do this"
    )
    assert made.remedy == "do this"
    assert made.subject_ref is None
    assert str(made).endswith("Remedy: do this")
    assert str(pickle.loads(pickle.dumps(made))) == str(made)
