"""Tagged records: personal fields, guarded reads, collection checks and the side doors.

Every enforcement test runs in both modes: ``enforce`` (a denial raises) and
``monitor`` (the read goes on and the would-be denial is audited).
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import sys
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import attrs
import cattrs
import pytest

from purposelimit._audit import Audit, AuditEvent, InMemoryAuditSink
from purposelimit._context import _CURRENT, processing, set_engine
from purposelimit._engine import Engine
from purposelimit._errors import CollectionRefused, ConfigurationError, ProcessingDenied
from purposelimit._model import (
    Collection,
    CollectionTag,
    Compatibility,
    Consent,
    DataCategory,
    Decision,
    Evidence,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._records import (
    PERSONAL_KEY,
    FrozenTaggedRecord,
    PersonalField,
    TaggedRecord,
    is_record,
    personal,
    personal_fields,
    record,
    remedy,
    tag_of,
    validate_collection,
)
from purposelimit._register import Register
from purposelimit._store import InMemoryStore, Withdrawal

SECRET = "SECRET-VALUE-123"
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
MODES = ("enforce", "monitor")


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


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
                "newsletter.product",
                "Product news",
                "E-mailing news about our products to subscribers",
                "consent",
                Retention("P3Y", "last-contact"),
                categories=["identity.name", "contact.email"],
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
                "payroll",
                "Payroll",
                "Paying our employees",
                "legal-obligation",
                Retention("P5Y"),
                categories=["identity", "contact"],
                sensitive_categories=["nir"],
            ),
        ],
        [
            DataCategory("identity"),
            DataCategory("identity.name"),
            DataCategory("contact"),
            DataCategory("contact.email"),
            DataCategory("contact.postal_address"),
            DataCategory("nir", sensitive=True),
        ],
        [
            Compatibility(
                "contract-to-postal",
                "client.contract",
                "prospection.postal",
                "compatible",
                link="same customer relationship",
                context="customers told of postal offers at checkout",
                nature="name and postal address only",
                consequences="postal mail the customer can stop",
                safeguards=["objection offered in every mailing"],
            ),
            Compatibility(
                "contract-to-payroll",
                "client.contract",
                "payroll",
                "compatible",
                link="the employment contract",
                context="employees are paid under their contract",
                nature="identity and the NIR the payroll declares",
                consequences="salary paid and declared",
                safeguards=["access limited to the payroll team"],
            ),
            Compatibility(
                "recruitment-not-prospection",
                "hr.recruitment",
                "prospection",
                "prohibited",
                source="CNIL délibération 2021-131",
            ),
        ],
        version="test-1",
    )


CONTRACT = Collection("client.contract", source="checkout")
SIGNUP = Collection("newsletter.product", source="signup-form")
RECRUITMENT = Collection("hr.recruitment", source="careers-page")


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")
    company: str = ""


@record(frozen=True)
class FrozenLead(FrozenTaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")


@record
class Employee(TaggedRecord):
    name: str = personal("identity.name")
    nir: str = personal("nir")


def tag(collection: Any = CONTRACT, **extra: Any) -> dict[str, Any]:
    """The tag arguments of a record (keyword arguments type checkers do not see)."""
    return {"subject": "lead-42", "collection": collection, "collected_at": T0, **extra}


@pytest.fixture(autouse=True)
def _reset_context() -> Iterator[None]:
    """Every test starts and ends with no processing block and no default engine."""
    token = set_engine(None, mode="enforce")
    context_token = _CURRENT.set(None)
    yield
    _CURRENT.reset(context_token)
    token.reset()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def sink() -> InMemoryAuditSink:
    return InMemoryAuditSink()


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def engine(clock: Clock, sink: InMemoryAuditSink, store: InMemoryStore) -> Engine:
    return Engine(make_register(), store, clock=clock, audit=Audit([sink]))


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def read_under(engine: Engine, mode: Any, purpose: str, lead: Any, field: str) -> Any:
    with processing(purpose, actor="test", engine=engine, mode=mode):
        return getattr(lead, field)


# --------------------------------------------------------------------------- declaration


def test_personal_stores_the_category_under_the_published_key() -> None:
    """personal() puts PersonalField(category) under metadata['purposelimit'], keeps the rest."""

    @record  # the bare decorator works without the TaggedRecord base
    class Contact:
        email: str = personal("contact.email", metadata={"x-doc": "work e-mail"})

    field = attrs.fields(cast(Any, Contact)).email
    assert field.metadata[PERSONAL_KEY] == PersonalField("contact.email")
    assert field.metadata["x-doc"] == "work e-mail"
    assert personal_fields(Contact) == {"email": "contact.email"}


def test_personal_refuses_a_bad_category_and_a_taken_key() -> None:
    """A category outside the id syntax, or a metadata dict already using the key, is refused."""
    with pytest.raises(ValueError, match="not a valid id"):
        personal("Contact.Email")
    with pytest.raises(ConfigurationError, match="reserved"):
        personal("contact.email", metadata={PERSONAL_KEY: "x"})


def test_ordinary_fields_are_unguarded(engine: Engine) -> None:
    """A field declared without personal() reads without any purpose and is never audited."""
    set_engine(engine)
    lead = Lead("Ada", SECRET, "ACME", **tag())
    assert lead.company == "ACME"
    assert lead.subject == "lead-42"
    assert lead.collection is CONTRACT


def test_record_refuses_value_revealing_options_and_tag_names() -> None:
    """eq/order/hash/slots=False are refused, and so are fields named like the tag's."""
    for option in ({"eq": True}, {"order": True}, {"slots": False}, {"unsafe_hash": True}):

        class Bad:
            name: str = personal("identity.name")

        with pytest.raises(ConfigurationError, match="not supported"):
            record(**option)(Bad)

    class Clash:
        subject: str = ""

    with pytest.raises(ConfigurationError, match="collection tag"):
        record(Clash)


def test_tag_arguments_are_keyword_only_and_checked() -> None:
    """subject, collection and an aware collected_at are required keywords; naive dates fail."""
    with pytest.raises(TypeError):
        Lead("Ada", SECRET, "ACME", "lead-42")  # type: ignore[call-arg]  # keyword-only tag
    with pytest.raises(TypeError):
        Lead("Ada", SECRET)  # type: ignore[call-arg]  # no tag at all
    with pytest.raises(ValueError, match="naive"):
        Lead("Ada", SECRET, **tag(collected_at=datetime(2026, 1, 1)))
    with pytest.raises(TypeError):
        Lead("Ada", SECRET, **tag(collection="client.contract"))
    with pytest.raises(ValueError, match="subject"):
        Lead("Ada", SECRET, **tag(subject=""))


def test_tag_of_builds_the_tag_and_shares_the_collection() -> None:
    """tag_of() gives the record's CollectionTag; records share the one Collection object."""
    first = Lead("Ada", SECRET, **tag(last_contact_at=T0 + timedelta(days=3)))
    second = Lead("Bob", SECRET, **tag(subject="lead-43"))
    built = tag_of(first)
    assert built == CollectionTag("lead-42", CONTRACT, T0, T0 + timedelta(days=3), None)
    assert built.collection is tag_of(second).collection is CONTRACT
    assert tag_of(first, "email") == built
    with pytest.raises(KeyError):
        tag_of(first, "company")
    with pytest.raises(TypeError):
        tag_of(object())
    assert is_record(first)
    assert is_record(Lead)
    assert not is_record(object())


def test_tagging_costs_two_slots() -> None:
    """Beyond the subject id and dates, a record holds the shared collection and one spare slot."""
    lead = Lead("Ada", SECRET, **tag())
    assert set(cast(Any, Lead).__slots__) >= {"collection", "field_tags"}
    assert lead.field_tags is None  # nothing memoised and no field tags yet

    @attrs.define
    class Untagged:
        name: str
        email: str
        company: str
        subject: str
        collected_at: datetime
        last_contact_at: datetime | None
        contract_ended_at: datetime | None

    plain = Untagged("Ada", SECRET, "", "lead-42", T0, None, None)
    assert sys.getsizeof(lead) - sys.getsizeof(plain) <= 16


# --------------------------------------------------------------------------- guarded reads


def test_read_allowed_under_the_collection_purpose(engine: Engine, mode: Any) -> None:
    """Reading under the purpose the data was collected for returns the value, in both modes."""
    lead = Lead("Ada", SECRET, **tag())
    assert read_under(engine, mode, "client.contract", lead, "email") == SECRET


def test_read_allowed_under_a_compatible_purpose(engine: Engine, mode: Any) -> None:
    """A compatibility entry (GDPR art. 6(4)) allows the reuse, in both modes."""
    lead = Lead("Ada", SECRET, **tag())
    assert read_under(engine, mode, "prospection.postal", lead, "name") == "Ada"


def test_read_denied_under_an_incompatible_purpose(
    engine: Engine, mode: Any, sink: InMemoryAuditSink
) -> None:
    """Enforce raises ProcessingDenied naming the fix; monitor returns the value, flagged."""
    lead = Lead("Ada", SECRET, **tag(RECRUITMENT))
    if mode == "enforce":
        with pytest.raises(ProcessingDenied) as caught:
            read_under(engine, mode, "prospection.postal", lead, "email")
        denied = caught.value
        assert denied.reason is Reason.PROHIBITED
        assert denied.record_type == "Lead"
        assert denied.field == "email"
        assert denied.subject_ref == "lead-42"
        assert denied.decision.purpose == "prospection.postal"
        assert denied.decision.collected_for == "hr.recruitment"
        text = str(denied)
        for part in (
            "Lead.email",
            "prospection.postal",
            "hr.recruitment",
            "prohibited",
            "record the person's consent for prospection.postal",
        ):
            assert part in text
    else:
        assert read_under(engine, mode, "prospection.postal", lead, "email") == SECRET
    [event] = sink.events
    assert not event.allowed
    assert event.reason is Reason.PROHIBITED
    assert event.monitored is (mode == "monitor")


def test_incompatible_reuse_names_the_compatibility_remedy(engine: Engine, mode: Any) -> None:
    """Without any entry, the remedy is consent or a compatibility assessment (art. 6(4))."""
    lead = Lead("Ada", SECRET, **tag(SIGNUP))
    if mode == "monitor":
        assert read_under(engine, mode, "hr.recruitment", lead, "name") == "Ada"
        return
    with pytest.raises(ProcessingDenied) as caught:
        read_under(engine, mode, "hr.recruitment", lead, "name")
    assert caught.value.reason is Reason.INCOMPATIBLE
    assert "declare a compatibility assessment from newsletter.product to hr.recruitment" in (
        caught.value.remedy
    )


def test_consent_allows_a_consent_based_purpose(
    engine: Engine, store: InMemoryStore, mode: Any
) -> None:
    """Under a purpose resting on consent, a recorded consent allows the read; none denies."""
    lead = Lead("Ada", SECRET, **tag(SIGNUP))
    if mode == "enforce":
        with pytest.raises(ProcessingDenied, match="consent-missing"):
            read_under(engine, mode, "newsletter.product", lead, "email")
    store.record(Consent("lead-42", ["newsletter.product"], T0, evidence=Evidence("double-opt-in")))
    assert read_under(engine, mode, "newsletter.product", lead, "email") == SECRET


def test_no_purpose_is_denied_in_enforce_mode(engine: Engine) -> None:
    """A guarded read outside any block is `no-purpose`: it raises and says to wrap the read."""
    set_engine(engine)
    lead = Lead("Ada", SECRET, **tag())
    with pytest.raises(ProcessingDenied) as caught:
        _ = lead.email
    assert caught.value.reason is Reason.NO_PURPOSE
    assert "with processing(" in caught.value.remedy
    assert caught.value.decision.purpose is None


def test_no_purpose_without_any_engine_is_denied(caplog: pytest.LogCaptureFixture) -> None:
    """With no engine installed at all, a read outside a block is still denied and logged."""
    from purposelimit._context import fallback_audit

    lead = Lead("Ada", SECRET, **tag())
    with pytest.raises(ProcessingDenied, match="no-purpose"):
        _ = lead.name
    with caplog.at_level(logging.INFO, logger="purposelimit.audit"):
        fallback_audit().flush()
    assert "reason=no-purpose" in caplog.text


def test_no_purpose_in_monitor_mode_is_read_and_audited(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """With the default mode set to monitor, an unbound read goes on and is audited as flagged."""
    set_engine(engine, mode="monitor")
    lead = Lead("Ada", SECRET, **tag())
    assert lead.email == SECRET
    Audit.flush(engine.audit)  # type: ignore[arg-type]  # the engine's Audit
    [event] = sink.events
    assert event.reason is Reason.NO_PURPOSE
    assert event.purpose is None
    assert event.actor is None
    assert event.monitored


# --------------------------------------------------------------------------- per-field tags


def test_a_field_collected_later_is_decided_against_its_own_tag(
    engine: Engine, store: InMemoryStore, mode: Any, sink: InMemoryAuditSink
) -> None:
    """The e-mail given at newsletter signup follows the newsletter's rules, not the record's."""
    later = CollectionTag("lead-42", SIGNUP, T0 + timedelta(days=5))
    lead = Lead("Ada", SECRET, **tag(field_tags={"email": later}))
    store.record(Consent("lead-42", ["newsletter.product"], T0 + timedelta(days=5)))
    assert tag_of(lead, "email") is later
    # Under the contract purpose the name is the contract's own data, the e-mail is not.
    assert read_under(engine, mode, "client.contract", lead, "name") == "Ada"
    if mode == "enforce":
        with pytest.raises(ProcessingDenied) as caught:
            read_under(engine, mode, "client.contract", lead, "email")
        assert caught.value.decision.collected_for == "newsletter.product"
    else:
        assert read_under(engine, mode, "client.contract", lead, "email") == SECRET
    # Under the newsletter (consent given), the e-mail is allowed.
    assert read_under(engine, mode, "newsletter.product", lead, "email") == SECRET
    collected = [e.collected_for for e in sink.events]
    assert collected == ["client.contract", "newsletter.product", "newsletter.product"]


def test_field_tags_are_checked() -> None:
    """A field tag must name a personal field and the record's own data subject."""
    other = CollectionTag("lead-99", SIGNUP, T0)
    with pytest.raises(ValueError, match="own data subject"):
        Lead("Ada", SECRET, **tag(field_tags={"email": other}))
    with pytest.raises(ValueError, match="no personal field"):
        Lead("Ada", SECRET, **tag(field_tags={"company": CollectionTag("lead-42", SIGNUP, T0)}))
    with pytest.raises(TypeError):
        Lead("Ada", SECRET, **tag(field_tags={"email": "newsletter.product"}))


def test_field_tags_survive_evolve_pickle_and_deepcopy(engine: Engine) -> None:
    """Per-field tags are part of the record: evolve, pickle and deepcopy keep them."""
    later = CollectionTag("lead-42", SIGNUP, T0)
    lead = Lead("Ada", SECRET, **tag(field_tags={"email": later}))
    with (
        processing("client.contract", actor="test", engine=engine),
        pytest.raises(ProcessingDenied),
    ):
        pickle.dumps(lead)  # the e-mail may not be read for the contract
    with processing("newsletter.product", actor="test", engine=engine, mode="monitor"):
        evolved = attrs.evolve(cast(Any, lead), name="Ada L.")
        copied = pickle.loads(pickle.dumps(lead))
        deep = copy.deepcopy(lead)
    assert tag_of(evolved, "email") is later
    for item in (evolved, copied, deep):
        kept = tag_of(item, "email")
        assert (kept.subject, kept.purpose, kept.collected_at) == ("lead-42", SIGNUP.purpose, T0)
        assert list(item.field_tags or {}) == ["email"]


# --------------------------------------------------------------------------- collection


def test_excessive_collection_is_refused_at_construction(engine: Engine) -> None:
    """The NIR in a record collected for the newsletter fails: CollectionRefused (art. 5(1)(c))."""
    set_engine(engine)
    with pytest.raises(CollectionRefused) as caught:
        Employee("Ada", "1 85 05 78 006 084 36", **tag(SIGNUP))
    refused = caught.value
    assert refused.reason == "excessive"
    assert refused.purpose == "newsletter.product"
    assert refused.fields == (("nir", "nir"),)
    assert "1 85 05" not in str(refused)
    # Collected for payroll, which may use it, the same record is fine.
    Employee("Ada", "1 85 05 78 006 084 36", **tag(Collection("payroll")))


def test_construction_uses_the_active_blocks_engine(engine: Engine, mode: Any) -> None:
    """Inside a block, the block's engine checks the collection (no default engine needed)."""
    with processing("client.contract", actor="test", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(CollectionRefused):
                Employee("Ada", SECRET, **tag(SIGNUP))
        else:
            assert is_record(Employee("Ada", SECRET, **tag(SIGNUP)))


def test_excessive_collection_in_monitor_mode_is_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """In monitor mode the record is created and the would-be refusal is logged, without values."""
    caplog.set_level(logging.WARNING, logger="purposelimit")
    with processing("payroll", actor="test", engine=engine, mode="monitor"):
        employee = Employee("Ada", SECRET, **tag(SIGNUP))
    assert is_record(employee)
    assert "excessive" in caplog.text
    assert "nir" in caplog.text
    assert SECRET not in caplog.text


def test_unknown_collection_purpose_is_a_configuration_error(engine: Engine) -> None:
    """A record collected for an undeclared purpose is refused at construction."""
    set_engine(engine)
    with pytest.raises(ConfigurationError, match="unknown-purpose"):
        Lead("Ada", SECRET, **tag(Collection("marketing.unknown")))


def test_without_an_engine_the_check_happens_at_the_first_read(
    engine: Engine, mode: Any, sink: InMemoryAuditSink
) -> None:
    """Built with no engine reachable, an over-collected field is denied `excessive` when read."""
    employee = Employee("Ada", SECRET, **tag())  # client.contract may not collect the NIR
    with pytest.raises(CollectionRefused):
        validate_collection(employee, engine)
    with pytest.raises(ConfigurationError, match="no engine"):
        validate_collection(employee)
    # Even under a purpose that may use the NIR, data that should not exist is not read.
    if mode == "enforce":
        with pytest.raises(ProcessingDenied) as caught:
            read_under(engine, mode, "payroll", employee, "nir")
        assert caught.value.reason is Reason.EXCESSIVE
        assert "should not have collected" in caught.value.remedy
    else:
        assert read_under(engine, mode, "payroll", employee, "nir") == SECRET
    assert sink.events[-1].reason is Reason.EXCESSIVE


def test_validators_read_fields_at_construction_without_a_purpose(engine: Engine) -> None:
    """Reads made by the record's own __init__ (validators) are collection, not guarded reads."""
    seen: list[str] = []

    @record
    class Checked(TaggedRecord):
        email: str = personal(
            "contact.email",
            validator=lambda _inst, _attr, value: seen.append(value[:3]),
        )

        def __attrs_post_init__(self) -> None:
            seen.append(self.email[-3:])

    set_engine(engine)
    Checked(SECRET, **tag())
    assert seen == ["SEC", "123"]


# --------------------------------------------------------------------------- the memo


def test_a_store_write_voids_the_memo(
    engine: Engine, store: InMemoryStore, clock: Clock, mode: Any
) -> None:
    """A withdrawal recorded after an allowed read makes the next read denied (no stale memo)."""
    store.record(Consent("lead-42", ["newsletter.product"], T0, evidence=Evidence("button")))
    lead = Lead("Ada", SECRET, **tag(SIGNUP))
    with processing("newsletter.product", actor="test", engine=engine, mode=mode):
        assert lead.email == SECRET
        assert lead.email == SECRET  # memoised
        store.record(Withdrawal("lead-42", ["newsletter.product"], clock.now - timedelta(hours=1)))
        if mode == "enforce":
            with pytest.raises(ProcessingDenied, match="consent-withdrawn"):
                _ = lead.email
        else:
            assert lead.email == SECRET


def test_time_passing_a_retention_end_voids_the_memo(
    engine: Engine, clock: Clock, mode: Any, sink: InMemoryAuditSink
) -> None:
    """One second before the end of retention the read is allowed; at the end it is denied."""
    lead = Lead("Ada", SECRET, **tag())  # client.contract keeps data P1Y from collection
    end = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)
    clock.now = end - timedelta(seconds=1)
    with processing("client.contract", actor="test", engine=engine, mode=mode):
        assert lead.name == "Ada"
        clock.now = end
        if mode == "enforce":
            with pytest.raises(ProcessingDenied, match="retention-expired"):
                _ = lead.name
        else:
            assert lead.name == "Ada"
    assert [e.reason for e in sink.events] == [Reason.SAME_PURPOSE, Reason.RETENTION_EXPIRED]
    assert sink.events[1].time == end


def test_a_clock_going_back_is_not_served_a_later_decision(
    engine: Engine, clock: Clock, mode: Any
) -> None:
    """A decision is reused only within [decided-at, until): an earlier instant is decided anew."""
    lead = Lead("Ada", SECRET, **tag())
    with processing("client.contract", actor="test", engine=engine, mode=mode):
        clock.now = datetime(2028, 1, 1, tzinfo=UTC)  # retention over
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                _ = lead.name
        clock.now = NOW
        assert lead.name == "Ada"


def test_changing_the_tag_of_a_mutable_record_voids_the_memo(
    engine: Engine, clock: Clock, mode: Any
) -> None:
    """A new last contact restarts a last-contact retention: the next read is decided anew."""
    lead = Lead("Ada", SECRET, **tag())
    clock.now = datetime(2029, 2, 1, tzinfo=UTC)  # 3 years after collection: postal expired
    with processing("prospection.postal", actor="test", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied, match="retention-expired"):
                _ = lead.name
        lead.last_contact_at = datetime(2029, 1, 15, tzinfo=UTC)
        lead.collected_at = datetime(2029, 1, 15, tzinfo=UTC)
        assert lead.name == "Ada"


def test_a_shallow_copy_does_not_reuse_decisions_after_its_tag_changes(
    engine: Engine, mode: Any, sink: InMemoryAuditSink
) -> None:
    """Copies share the memo until one's tag changes; then each decides for its own tag."""
    lead = Lead("Ada", SECRET, **tag())
    with processing("client.contract", actor="test", engine=engine, mode=mode):
        assert lead.name == "Ada"
        twin = copy.copy(lead)
    twin.collection = RECRUITMENT
    with processing("client.contract", actor="test", engine=engine, mode=mode):
        assert lead.name == "Ada"
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                _ = twin.name
        else:
            assert twin.name == "Ada"
    assert [e.collected_for for e in sink.events][-2:] == ["client.contract", "hr.recruitment"]


# --------------------------------------------------------------------------- side doors


def test_repr_and_str_never_show_values_nor_the_subject() -> None:
    """repr/str/format/f-strings show the collection purpose and <category> placeholders."""
    lead = Lead("Ada Lovelace", SECRET, "ACME", **tag(subject="ada@example.org"))
    for shown in (repr(lead), str(lead), f"{lead}", format(lead, ""), "{}".format(lead)):  # noqa: UP032
        assert SECRET not in shown
        assert "Ada Lovelace" not in shown
        assert "ada@example.org" not in shown
    assert repr(lead) == (
        "Lead(collected_for='client.contract', name=<identity.name>, email=<contact.email>, "
        "company='ACME')"
    )
    later = Lead("Ada", SECRET, **tag(field_tags={"email": CollectionTag("lead-42", SIGNUP, T0)}))
    assert "email=<contact.email, collected for newsletter.product>" in repr(later)


def test_records_compare_and_hash_by_identity() -> None:
    """== and hash never look at values: two records with equal values are different records."""
    first = Lead("Ada", SECRET, **tag())
    second = Lead("Ada", SECRET, **tag())
    assert first != second
    assert first == first
    assert hash(first) != hash(second)
    assert len({first, second}) == 2


def test_vars_has_nothing_to_show() -> None:
    """A slotted record has no __dict__: vars() cannot reach the values."""
    with pytest.raises(TypeError):
        vars(Lead("Ada", SECRET, **tag()))


SIDE_DOORS: dict[str, Any] = {
    "getattr": lambda lead: getattr(lead, "email"),  # noqa: B009 - the getattr side door
    "asdict": attrs.asdict,
    "astuple": attrs.astuple,
    "evolve": lambda lead: attrs.evolve(lead, company="x"),
    "cattrs": cattrs.unstructure,
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": pickle.dumps,
    "json": lambda lead: json.dumps(
        lead, default=lambda o: attrs.asdict(o) if attrs.has(type(o)) else str(o)
    ),
    "match": lambda lead: next(e for e in [lead] if isinstance(e, Lead)).email,
}


@pytest.mark.parametrize("door", sorted(SIDE_DOORS))
def test_side_doors_go_through_the_guard_when_denied(
    engine: Engine, mode: Any, door: str, sink: InMemoryAuditSink
) -> None:
    """Under a denying purpose each side door raises (enforce) or is audited flagged (monitor)."""
    lead = Lead("Ada", SECRET, **tag(RECRUITMENT))
    with processing("prospection.postal", actor="test", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied) as caught:
                SIDE_DOORS[door](lead)
            assert SECRET not in str(caught.value)
        else:
            SIDE_DOORS[door](lead)
    assert sink.events
    assert all(not e.allowed for e in sink.events)
    assert all(e.monitored is (mode == "monitor") for e in sink.events)


@pytest.mark.parametrize("door", sorted(SIDE_DOORS))
def test_side_doors_work_when_allowed(engine: Engine, mode: Any, door: str) -> None:
    """Under an allowing purpose the same side doors work, and every read is audited."""
    lead = Lead("Ada", SECRET, **tag())
    with processing("client.contract", actor="test", engine=engine, mode=mode):
        result = SIDE_DOORS[door](lead)
    if door in ("asdict", "cattrs"):
        assert result["email"] == SECRET
    if door == "pickle":
        with processing("client.contract", actor="test", engine=engine):
            assert pickle.loads(result).email == SECRET


def test_pattern_matching_reads_through_the_guard(engine: Engine, mode: Any) -> None:
    """A class pattern reads attributes with getattr: it is decided like any read."""
    lead = Lead("Ada", SECRET, **tag(RECRUITMENT))

    def match_email(item: object) -> int:
        match item:
            case Lead(email=found):
                return len(found)
        return -1

    with processing("prospection.postal", actor="test", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                match_email(lead)
        else:
            assert match_email(lead) == len(SECRET)
        match lead:
            case Lead(company=company):
                assert company == ""


def test_frozen_records_are_guarded_too(engine: Engine, mode: Any) -> None:
    """A frozen record class is built, guarded and pickled like a mutable one."""
    lead = FrozenLead("Ada", SECRET, **tag())
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        lead.email = "x"  # type: ignore[misc]  # frozen on purpose
    with processing("client.contract", actor="test", engine=engine, mode=mode):
        assert lead.email == SECRET
        assert pickle.loads(pickle.dumps(lead)).email == SECRET
    with processing("hr.recruitment", actor="test", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                _ = lead.email
        else:
            assert lead.email == SECRET


def test_subclasses_guard_inherited_fields_under_their_own_name(
    engine: Engine, mode: Any, sink: InMemoryAuditSink
) -> None:
    """A subclass record guards inherited personal fields and names itself in denials."""

    @record
    class Customer(Lead):
        phone: str = personal("contact", default="")

    customer = Customer("Ada", SECRET, "ACME", "+33 1", **tag(RECRUITMENT))
    assert personal_fields(Customer) == {
        "name": "identity.name",
        "email": "contact.email",
        "phone": "contact",
    }
    with processing("prospection.postal", actor="test", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied) as caught:
                _ = customer.email
            assert caught.value.record_type == "Customer"
        else:
            assert customer.email == SECRET
    assert [e.record_type for e in sink.events] == ["Customer"]


def test_a_user_defined_repr_is_kept() -> None:
    """A record class with its own __repr__ keeps it (its author answers for what it shows)."""

    @record
    class Own(TaggedRecord):
        name: str = personal("identity.name")

        def __repr__(self) -> str:
            return "<Own>"

    assert repr(Own("Ada", **tag())) == "<Own>"


# --------------------------------------------------------------------------- no value leaks


def test_no_personal_value_leaks_anywhere(
    engine: Engine, mode: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """SECRET never appears in reprs, exceptions, tracebacks, audit events or log lines."""
    caplog.set_level(logging.DEBUG)
    log_sink = InMemoryAuditSink()
    from purposelimit._audit import LoggingAuditSink

    audited = Engine(
        engine.register,
        engine.store,
        clock=engine.clock,
        audit=Audit([log_sink, LoggingAuditSink()], capacity=2),
    )
    lead = Lead(SECRET, SECRET, "ACME", **tag(RECRUITMENT))
    texts: list[str] = [repr(lead), str(lead)]
    for purpose in ("prospection.postal", "hr.recruitment", "client.contract"):
        try:
            with processing(purpose, actor="test", engine=audited, mode=mode):
                for field in ("name", "email"):
                    try:
                        getattr(lead, field)
                    except ProcessingDenied as denied:
                        texts += [
                            str(denied),
                            repr(denied),
                            repr(denied.args),
                            repr(getattr(denied, "__notes__", None)),
                            repr(denied.decision),
                            denied.remedy,
                            "".join(traceback.format_exception(denied)),
                        ]
                        texts.append(repr(pickle.loads(pickle.dumps(denied)).args))
        except ProcessingDenied:  # pragma: no cover - reads are caught above
            raise
    events: tuple[AuditEvent, ...] = log_sink.events
    assert events
    texts += [repr(e) for e in events] + [str(e) for e in events]
    texts += [json.dumps(e.to_dict()) for e in events]
    texts.append(caplog.text)
    for text in texts:
        assert SECRET not in text


# --------------------------------------------------------------------------- remedies

REMEDIES = {
    Reason.NO_PURPOSE: "with processing(",
    Reason.UNKNOWN_PURPOSE: "declare the purpose",
    Reason.UNKNOWN_CATEGORY: "declare the data category",
    Reason.RETENTION_EXPIRED: "erase or anonymise",
    Reason.OBJECTION: "GDPR art. 21(3)",
    Reason.EXCESSIVE: "minimisation",
    Reason.CONSENT_WITHDRAWN: "withdrew consent",
    Reason.CONSENT_EXPIRED: "renew",
    Reason.CONSENT_REFUSED: "refused consent",
    Reason.CONSENT_INVALID: "clear affirmative act",
    Reason.CONSENT_MISSING: "record the person's consent for p.b",
    Reason.PROHIBITED: "prohibits reusing p.a data for p.b",
    Reason.INCOMPATIBLE: "declare a compatibility assessment from p.a to p.b",
}


@pytest.mark.parametrize("reason", sorted(REMEDIES, key=str))
def test_every_denial_reason_names_its_remedy(reason: Reason) -> None:
    """Each deny reason code maps to a remedy sentence naming what to do."""
    from purposelimit._model import CategoryDecision

    part = CategoryDecision("contact.email", False, reason, "purpose:p.b", "why")
    decision = Decision.combine("p.b", "p.a", [part])
    assert REMEDIES[reason] in remedy(decision, field="email", category="contact.email")


def test_an_allowed_decision_has_no_remedy() -> None:
    """remedy() is empty for an allowed decision."""
    from purposelimit._model import CategoryDecision

    part = CategoryDecision("contact.email", True, Reason.SAME_PURPOSE, "purpose:p.a", "ok")
    assert remedy(Decision.combine("p.a", "p.a", [part])) == ""
