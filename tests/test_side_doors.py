"""No side doors: every way of getting at a tagged record's values is guarded or shows none.

DESIGN §4 "Nothing leaks by side doors": for a tagged record under a denying
purpose, no path returns or shows a personal value. Each path is one of:

* **guarded** — it reads through the field's guard, so it is decided,
  audited, and raises in enforce mode (monitor mode lets it through, flagged);
* **blind** — it never reads a personal field (``repr``, ``==``, ``hash``,
  logging the record...): no decision, no value;
* **the escape hatch** — :func:`unguarded`, which returns the value whatever
  the decision but always records who read and why.

Every enforcement test runs in both modes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import operator
import pickle
import pprint
import reprlib
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs
import cattrs.preconf.json
import pytest

from purposelimit._audit import Audit, AuditEvent, InMemoryAuditSink, LoggingAuditSink
from purposelimit._context import _CURRENT, get_audit, processing, set_engine
from purposelimit._engine import Engine
from purposelimit._errors import AuditError, ConfigurationError, ProcessingDenied
from purposelimit._model import (
    Collection,
    CollectionTag,
    Compatibility,
    DataCategory,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._records import FrozenTaggedRecord, TaggedRecord, personal, record, unguarded
from purposelimit._register import Register
from purposelimit._store import InMemoryStore

T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
MODES = ("enforce", "monitor")

#: The personal values of the records below: never to be seen outside an allowed read.
NAME = "Ada-Lovelace-7f3a"
EMAIL = "ada-9c1e@example.org"
SECRETS = (NAME, EMAIL)
#: The data subject's id: the records' repr never shows it either.
SUBJECT = "crm-00042-SUBJ"

CONTRACT = Collection("client.contract", source="checkout")
RECRUITMENT = Collection("hr.recruitment", source="careers-page")
#: Recruitment data read for postal prospection: prohibited (CNIL délibération 2021-131).
DENYING = "prospection.postal"
ALLOWING = "client.contract"


def make_register() -> Register:
    return Register(
        [
            Purpose(
                "client.contract",
                "Contracts",
                "Managing our customers' contracts",
                "contract",
                Retention("P1Y"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "prospection.postal",
                "Postal offers",
                "Sending our offers by post",
                "legitimate-interests",
                Retention("P3Y", "last-contact"),
                categories=["identity", "contact"],
                direct_marketing=True,
            ),
            Purpose(
                "hr.recruitment",
                "Recruitment",
                "Assessing job applications",
                "legitimate-interests",
                Retention("P2Y"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "newsletter.product",
                "Product news",
                "E-mailing news about our products",
                "consent",
                Retention("P3Y", "last-contact"),
                categories=["contact.email"],
                direct_marketing=True,
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
        version="side-doors-1",
    )


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")
    company: str = ""
    related: list[Any] = attrs.field(factory=list)  # ordinary: may hold other records


@record(frozen=True)
class FrozenLead(FrozenTaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")


@attrs.define
class Batch:
    """An ordinary attrs class holding records: asdict() recurses into them."""

    leads: list[Any]


class _Plain:
    """A base class with a __dict__: the record built on it gets one too."""


@record
class DictLead(TaggedRecord, _Plain):
    name: str = personal("identity.name")


def lead(collection: Collection = RECRUITMENT, **extra: Any) -> Lead:
    tag: dict[str, Any] = {"subject": SUBJECT, "collection": collection, "collected_at": T0}
    return Lead(NAME, EMAIL, "ACME", **tag, **extra)


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
    return Engine(make_register(), InMemoryStore(), clock=lambda: NOW, audit=Audit([sink]))


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Any:
    return request.param


def shows_no_value(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


def exception_texts(error: BaseException) -> list[str]:
    """Everything a handler, a logger or an error reporter could show about *error*."""
    texts = [
        str(error),
        repr(error),
        repr(error.args),
        repr(getattr(error, "__notes__", None)),
        repr(error.__context__),
        repr(error.__cause__),
        "".join(traceback.format_exception(error)),
        # Error reporters that capture local variables (Sentry, rich tracebacks)
        "".join(traceback.TracebackException.from_exception(error, capture_locals=True).format()),
        repr(pickle.loads(pickle.dumps(error)).args),
    ]
    for name in ("decision", "remedy", "subject_ref", "reason"):
        texts.append(repr(getattr(error, name, None)))
    return texts


# --------------------------------------------------------------------------- guarded doors


def _pickled(record_: Lead, protocol: int) -> bytes:
    return pickle.dumps(record_, protocol=protocol)


def _as_json(structure: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A json ``default=`` that structures attrs instances and shows anything else as text."""
    return lambda o: structure(o) if attrs.has(type(o)) else str(o)


def _match_email(item: object) -> object:
    match item:
        case Lead(email=found):
            return found
    return None


#: Paths that read the values: each goes through the guard.
GUARDED: dict[str, Callable[[Lead], object]] = {
    "attribute": lambda r: r.email,
    "getattr": lambda r: getattr(r, "email"),  # noqa: B009 - the getattr door itself
    "getattr-default": lambda r: getattr(r, "email", None),
    "hasattr": lambda r: hasattr(r, "email"),
    "attrgetter": operator.attrgetter("name", "email"),
    "str.format-field": lambda r: "{.email}".format(r),  # noqa: UP032 - the format door itself
    "object.__getattribute__": lambda r: object.__getattribute__(r, "email"),
    "attrs.asdict": attrs.asdict,
    "attrs.astuple": attrs.astuple,
    "attrs.evolve": lambda r: attrs.evolve(r, company="other"),  # type: ignore[misc]  # a record is an attrs class at run time
    "attrs.asdict-nested": lambda r: attrs.asdict(Batch([r])),
    "cattrs.unstructure": cattrs.unstructure,
    "cattrs.as-tuple": cattrs.Converter(
        unstruct_strat=cattrs.UnstructureStrategy.AS_TUPLE
    ).unstructure,
    "cattrs.json-dumps": cattrs.preconf.json.make_converter().dumps,
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    "__getstate__": lambda r: r.__getstate__(),
    "__reduce_ex__": lambda r: r.__reduce_ex__(2),
    **{f"pickle-{p}": functools.partial(_pickled, protocol=p) for p in range(2, 6)},
    "json-default-asdict": lambda r: json.dumps(r, default=_as_json(attrs.asdict)),
    "json-default-cattrs": lambda r: json.dumps(r, default=_as_json(cattrs.unstructure)),
    "match-class-pattern": lambda r: _match_email(r),
    "inspect.getmembers": lambda r: __import__("inspect").getmembers(r),
}


@pytest.mark.parametrize("door", sorted(GUARDED))
def test_a_guarded_door_is_decided_and_denied(
    engine: Engine, sink: InMemoryAuditSink, mode: Any, door: str
) -> None:
    """Under a denying purpose each reading door raises ProcessingDenied (enforce) or is let
    through flagged (monitor); the denial shows no value, and every read is audited."""
    record_ = lead()
    with processing(DENYING, actor="side-door", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied) as caught:
                GUARDED[door](record_)
            assert not isinstance(caught.value, AttributeError)  # getattr/hasattr can't swallow it
            assert all(shows_no_value(text) for text in exception_texts(caught.value))
            assert caught.value.reason is Reason.PROHIBITED
        else:
            GUARDED[door](record_)
    events = sink.events
    assert events
    assert {(e.allowed, e.reason, e.monitored) for e in events} == {
        (False, Reason.PROHIBITED, mode == "monitor")
    }
    assert all(shows_no_value(json.dumps(e.to_dict()) + str(e) + repr(e)) for e in events)


@pytest.mark.parametrize("door", sorted(GUARDED))
def test_a_guarded_door_works_under_an_allowing_purpose(
    engine: Engine, sink: InMemoryAuditSink, mode: Any, door: str
) -> None:
    """Under the collection purpose the same doors read the values, each read audited allowed."""
    record_ = lead(CONTRACT)
    with processing(ALLOWING, actor="side-door", engine=engine, mode=mode):
        result = GUARDED[door](record_)
    if door in ("attribute", "getattr", "getattr-default", "str.format-field"):
        assert EMAIL in str(result)
    if door in ("attrs.asdict", "cattrs.unstructure"):
        assert isinstance(result, dict)
        assert (result["name"], result["email"], result["company"]) == (NAME, EMAIL, "ACME")
    assert sink.events
    assert all(e.allowed and e.reason is Reason.SAME_PURPOSE for e in sink.events)


def test_a_denial_raised_inside_a_handler_chains_no_value(engine: Engine) -> None:
    """A read failing inside an ``except`` block carries the user's exception as __context__,
    and neither shows a value (formatted with or without locals)."""
    record_ = lead()
    with processing(DENYING, actor="side-door", engine=engine):
        try:
            try:
                raise LookupError("the user's own error")
            except LookupError:
                _ = record_.email
        except ProcessingDenied as denied:
            chain: list[BaseException] = []
            link: BaseException | None = denied
            while link is not None:
                chain.append(link)
                link = link.__context__
            assert any(isinstance(e, LookupError) for e in chain)  # the user's error is kept
            assert all(shows_no_value(text) for e in chain for text in exception_texts(e))
            formatted = traceback.format_exc()
            assert "ProcessingDenied" in formatted
            assert shows_no_value(formatted)


def test_a_later_error_formatted_with_locals_shows_no_value(engine: Engine, mode: Any) -> None:
    """An error raised after a read in the block, formatted with its frames' local variables,
    shows no value: the library keeps none in its frames or its exceptions."""
    record_ = lead()
    try:
        with processing(DENYING, actor="side-door", engine=engine, mode=mode):
            with contextlib.suppress(ProcessingDenied):
                record_.name  # noqa: B018 - the read under test
            raise RuntimeError("a later failure")
    except RuntimeError as error:
        texts = exception_texts(error)
    assert texts
    assert all(shows_no_value(text) for text in texts)


def test_pickling_outside_any_block_is_a_read_without_purpose(engine: Engine, mode: Any) -> None:
    """pickle.dumps outside any block reads the fields: no-purpose, denied in enforce mode;
    in monitor mode (the default mode) let through and audited as monitored."""
    record_ = lead(CONTRACT)
    sink = InMemoryAuditSink()
    audited = Engine(engine.register, engine.store, clock=lambda: NOW, audit=Audit([sink]))
    with set_engine(audited, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied) as caught:
                pickle.dumps(record_)
            assert caught.value.reason is Reason.NO_PURPOSE
        else:
            data = pickle.dumps(record_)
            assert EMAIL.encode() in data  # monitor mode lets it through ...
        get_audit(audited).flush()  # no block exit drains it here
    assert sink.events
    assert {e.reason for e in sink.events} == {Reason.NO_PURPOSE}
    assert all(e.monitored is (mode == "monitor") for e in sink.events)  # ... flagged


def test_a_pickled_record_stays_guarded(engine: Engine, mode: Any) -> None:
    """Unpickling reads nothing; the copy is a record whose reads are decided like the original."""
    with processing("hr.recruitment", actor="export", engine=engine):
        data = pickle.dumps(lead())  # pickled under its own collection purpose
    copy_ = pickle.loads(data)  # outside any block: no read, no decision
    assert repr(copy_) == repr(lead())
    with processing(DENYING, actor="reader", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                _ = copy_.email
        else:
            assert copy_.email == EMAIL


# --------------------------------------------------------------------------- blind doors

#: Paths that never read a personal field.
BLIND: dict[str, Callable[[Lead], object]] = {
    "repr": repr,
    "str": str,
    "format": lambda r: format(r, ""),
    "f-string": lambda r: f"{r} {r!r} {r!s}",
    "percent": lambda r: "%s %r" % (r, r),  # noqa: UP031 - the %-format door itself
    "str.format": lambda r: "{} {!r}".format(r, r),  # noqa: UP032 - the .format door itself
    "pprint": pprint.pformat,
    "reprlib": reprlib.repr,
    "json-default-str": lambda r: json.dumps(r, default=str),
    "json-default-repr": lambda r: json.dumps({"lead": r}, default=repr),
    "eq": lambda r: (r == lead(), r != object(), r == r),
    "hash": hash,
    "set-and-dict": lambda r: ({r}, {r: 1}),
    "dir": dir,
    "attrs.fields": lambda r: attrs.fields(type(r)),
    "class-attribute": lambda r: repr(type(r).email),  # the guard, not the value
    "field_tags": lambda r: repr(r.field_tags),
    "print": lambda r: print(r, file=io.StringIO()),
}


@pytest.mark.parametrize("door", sorted(BLIND))
def test_a_blind_door_shows_no_value_and_reads_nothing(
    engine: Engine, sink: InMemoryAuditSink, mode: Any, door: str
) -> None:
    """repr, str, format, f-strings, ==, hash, json with a str default, pprint... never read a
    personal field: no decision is made and the result holds no value nor the subject id."""
    record_ = lead()
    with processing(DENYING, actor="side-door", engine=engine, mode=mode):
        shown = repr(BLIND[door](record_))
    assert shows_no_value(shown)
    assert SUBJECT not in shown
    assert sink.events == ()


def test_records_compare_and_hash_by_identity_only() -> None:
    """Two records with equal values are different; == and hash look at no value."""
    first, second = lead(), lead()
    assert first != second
    assert first == first
    assert hash(first) != hash(second)
    with pytest.raises(TypeError):
        _ = first < second  # type: ignore[operator]  # no order: sorting reveals nothing


def test_vars_has_no_dict_on_a_slotted_record() -> None:
    """A record is slotted: vars() and __dict__ do not exist."""
    record_ = lead()
    assert not hasattr(record_, "__dict__")
    with pytest.raises(TypeError):
        vars(record_)


def test_vars_on_a_record_with_a_dict_base_holds_no_value(engine: Engine, mode: Any) -> None:
    """Built on a base with a __dict__, a record gets one, but its personal fields still live
    in guarded slots: vars() shows none of them."""
    record_ = DictLead(NAME, subject=SUBJECT, collection=RECRUITMENT, collected_at=T0)
    assert vars(record_) == {}
    with processing(DENYING, actor="t", engine=engine, mode=mode):
        assert vars(record_) == {}
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                _ = record_.name


def test_logging_a_record_shows_no_value(
    engine: Engine, sink: InMemoryAuditSink, caplog: pytest.LogCaptureFixture, mode: Any
) -> None:
    """Logging the record (as an argument, as the message, in ``extra``, in ``exception``)
    writes its repr: no value, no subject id, no decision."""
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("side-doors")
    record_ = lead()
    with processing(DENYING, actor="t", engine=engine, mode=mode):
        log.info("lead %s / %r", record_, record_)
        log.warning(record_)
        log.info("with extra", extra={"lead": record_})
        try:
            raise ValueError(record_)
        except ValueError:
            log.exception("failed on %s", record_)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(message)s %(lead)s", defaults={"lead": "-"}))
    for entry in caplog.records:
        assert shows_no_value(handler.format(entry))
    assert shows_no_value(caplog.text)
    assert SUBJECT not in caplog.text
    assert sink.events == ()


def test_a_record_in_an_exception_message_shows_no_value() -> None:
    """An exception built with the record as its argument shows its repr, nothing more."""
    record_ = lead()
    error = KeyError(record_)
    assert shows_no_value(str(error) + repr(error) + "".join(traceback.format_exception(error)))


def test_the_guard_itself_shows_no_value() -> None:
    """The class attribute is the guard: its repr names the field and category only. The slot
    behind it is private storage, outside the threat model (SECURITY.md)."""
    guard = type(lead()).__dict__["email"]
    assert repr(guard) == "<personal field Lead.email (contact.email)>"


# --------------------------------------------------------------------------- frozen records


@pytest.mark.parametrize("door", ["attribute", "attrs.asdict", "copy.deepcopy", "pickle-5"])
def test_frozen_records_have_the_same_doors(engine: Engine, mode: Any, door: str) -> None:
    """@record(frozen=True) records are guarded the same way."""
    frozen = FrozenLead(NAME, EMAIL, subject=SUBJECT, collection=RECRUITMENT, collected_at=T0)
    reader: Callable[[Any], object] = GUARDED[door]  # the doors read any record
    with processing(DENYING, actor="t", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                reader(frozen)
        else:
            reader(frozen)
    assert shows_no_value(repr(frozen))


# --------------------------------------------------------------------------- the escape hatch


def test_unguarded_returns_the_value_and_always_audits_who_and_why(
    engine: Engine, sink: InMemoryAuditSink, mode: Any
) -> None:
    """unguarded() returns the value under a denying purpose, and the audit trail has one event,
    delivered before it returned, naming the actor and the reason and saying what the engine
    would have decided."""
    record_ = lead()
    with processing(DENYING, actor="job", engine=engine, mode=mode) as scope:
        value = unguarded(record_, "email", actor="migrate-2026", reason="ticket DPO-12")
        assert value == EMAIL
        assert get_audit(engine).buffered == 0
        [event] = sink.events  # delivered already, not left in the buffer
    assert (event.actor, event.purpose, event.field, event.category) == (
        "migrate-2026",
        scope.purpose,
        "email",
        "contact.email",
    )
    assert (event.allowed, event.reason, event.rule) == (
        False,
        Reason.PROHIBITED,
        "unguarded:ticket DPO-12",
    )
    assert (event.mode, event.monitored) == (mode, mode == "monitor")
    assert event.subject_ref == SUBJECT
    assert event.collected_for == "hr.recruitment"
    assert shows_no_value(json.dumps(event.to_dict()) + str(event))


def test_unguarded_under_an_allowing_purpose_records_the_allow(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """Where the read would be allowed anyway, the event says so (still marked unguarded)."""
    with processing(ALLOWING, actor="job", engine=engine):
        assert unguarded(lead(CONTRACT), "name", actor="export", reason="art. 15 request") == NAME
    [event] = sink.events
    assert (event.allowed, event.reason, event.rule) == (
        True,
        Reason.SAME_PURPOSE,
        "unguarded:art. 15 request",
    )


def test_unguarded_outside_any_block_uses_the_default_engine(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """Outside any block the event is recorded through the default engine's audit, as a read
    with no purpose (``no-purpose``), the value still returned."""
    with set_engine(engine):
        assert unguarded(lead(), "name", actor="migration", reason="schema v3") == NAME
    [event] = sink.events
    assert (event.purpose, event.reason, event.allowed, event.actor) == (
        None,
        Reason.NO_PURPOSE,
        False,
        "migration",
    )
    assert event.register_version == "side-doors-1"


def test_unguarded_without_any_engine_logs_the_event(caplog: pytest.LogCaptureFixture) -> None:
    """With no engine at all, the fallback audit (a logging sink) records it: actor and reason
    on the ``purposelimit.audit`` logger, never the value."""
    caplog.set_level(logging.INFO, logger="purposelimit.audit")
    assert unguarded(lead(), "email", actor="one-off-fix", reason="ticket 7") == EMAIL
    assert "actor=one-off-fix" in caplog.text
    assert "rule=unguarded:ticket 7" in caplog.text
    assert shows_no_value(caplog.text)


def test_unguarded_uses_a_field_s_own_tag(engine: Engine, sink: InMemoryAuditSink) -> None:
    """A field collected later under another purpose is recorded with its own collection."""
    later = CollectionTag(SUBJECT, Collection("newsletter.product"), T0)
    record_ = lead(CONTRACT, field_tags={"email": later})
    with processing(ALLOWING, actor="job", engine=engine):
        assert unguarded(record_, "email", actor="a", reason="r") == EMAIL
    assert sink.events[-1].collected_for == "newsletter.product"


def test_unguarded_reads_frozen_records(engine: Engine) -> None:
    """The hatch reads frozen records too."""
    frozen = FrozenLead(NAME, EMAIL, subject=SUBJECT, collection=RECRUITMENT, collected_at=T0)
    with processing(DENYING, actor="job", engine=engine):
        assert unguarded(frozen, "name", actor="a", reason="r") == NAME


def test_unguarded_fails_closed_when_the_audit_cannot_record(mode: Any) -> None:
    """When the sink is down and the audit fails closed, unguarded() raises AuditError and
    does not return the value: an escape hatch that cannot be recorded stays shut."""

    class Down:
        def emit(self, events: Any) -> None:
            raise ConnectionError("audit service unreachable")

    down = Engine(make_register(), clock=lambda: NOW, audit=Audit([Down()]))
    with (
        pytest.raises(AuditError) as caught,
        processing(DENYING, actor="job", engine=down, mode=mode),
    ):
        unguarded(lead(), "email", actor="a", reason="r")
    assert shows_no_value(str(caught.value) + "".join(traceback.format_exception(caught.value)))


def test_unguarded_with_a_continuing_audit_reads_and_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With on_failure="continue" the value is returned and the sink failure reported."""

    class Down:
        def emit(self, events: Any) -> None:
            raise ConnectionError("down")

    audit = Audit([Down()], on_failure="continue")
    lenient = Engine(make_register(), clock=lambda: NOW, audit=audit)
    with processing(DENYING, actor="job", engine=lenient):
        assert unguarded(lead(), "email", actor="a", reason="r") == EMAIL
    assert "sink Down failed" in caplog.text
    assert audit.pending >= 1
    assert shows_no_value(caplog.text)


@pytest.mark.parametrize(
    ("actor", "reason"),
    [
        ("", "ticket 1"),
        ("   ", "ticket 1"),
        ("job", ""),
        ("job", "two\nlines"),
        ("job\r\nforged=1", "ticket 1"),
        ("job", "x" * 201),
        (None, "ticket 1"),
        ("job", 42),
    ],
)
def test_unguarded_needs_a_named_actor_and_reason(actor: Any, reason: Any) -> None:
    """Actor and reason are one printable line each, at most 200 characters: they go into
    audit lines, where a newline could forge an entry."""
    with pytest.raises(ConfigurationError, match="unguarded"):
        unguarded(lead(), "email", actor=actor, reason=reason)


def test_unguarded_reads_personal_fields_of_records_only(engine: Engine) -> None:
    """Not a record: TypeError; not one of its personal fields: KeyError. Nothing is read."""
    with pytest.raises(TypeError):
        unguarded(object(), "email", actor="a", reason="r")
    with pytest.raises(KeyError):
        unguarded(lead(), "company", actor="a", reason="r")
    with pytest.raises(KeyError):
        unguarded(lead(), "missing", actor="a", reason="r")


def test_every_value_free_event_of_this_module_names_no_value(
    engine: Engine, sink: InMemoryAuditSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Guarded reads, blind doors and the hatch together: the whole audit trail, rendered every
    way a sink renders it, holds no value."""
    caplog.set_level(logging.DEBUG)
    logged = Engine(
        engine.register, clock=lambda: NOW, audit=Audit([sink, LoggingAuditSink()], capacity=3)
    )
    record_ = lead()
    for purpose in (DENYING, ALLOWING, "hr.recruitment"):
        with processing(purpose, actor="sweep", engine=logged, mode="monitor"):
            for door in ("attrs.asdict", "copy.deepcopy", "pickle-5"):
                GUARDED[door](record_)
            repr(record_)
            unguarded(record_, "name", actor="sweep", reason="audit sweep")
    events: tuple[AuditEvent, ...] = sink.events
    assert len(events) > 10
    rendered = "".join(json.dumps(e.to_dict()) + str(e) + repr(e) for e in events)
    assert shows_no_value(rendered)
    assert shows_no_value(caplog.text)


def test_the_module_doors_cover_the_issue_list() -> None:
    """The doors the hardening issue lists are all exercised here (a guard against drift)."""
    listed = {
        "attribute",
        "getattr",
        "attrs.asdict",
        "attrs.astuple",
        "attrs.evolve",
        "cattrs.unstructure",
        "copy.copy",
        "copy.deepcopy",
        "pickle-5",
        "json-default-asdict",
    }
    assert listed <= set(GUARDED)
    assert {"repr", "str", "format", "f-string", "eq", "hash"} <= set(BLIND)
    assert sys.version_info >= (3, 11)
