"""The decision engine: every rule of DESIGN §3 at its boundaries, and the issue's cases."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purposelimit._engine import Engine, consent_state
from purposelimit._errors import NaiveDatetimeError
from purposelimit._model import (
    Authorisation,
    CategoryDecision,
    Collection,
    CollectionTag,
    Compatibility,
    Consent,
    ConsentState,
    DataCategory,
    Decision,
    Evidence,
    Objection,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._register import Register
from purposelimit._store import InMemoryStore, SubjectEvents, Withdrawal

# --------------------------------------------------------------------------- the fixture register

SUBJECT = "jeanne.martin@example.com"
OTHER = "paul.durand@example.com"
T0 = datetime(2024, 1, 10, 9, 0, tzinfo=UTC)
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MICRO = timedelta(microseconds=1)
EARLY = T0 + timedelta(days=100)


def _purpose(
    id_: str,
    basis: str,
    retention: Retention,
    categories: tuple[str, ...],
    **flags: object,
) -> Purpose:
    return Purpose(
        id=id_,
        label=id_,
        description=f"the {id_} purpose of the test register",
        legal_basis=basis,
        retention=retention,
        categories=categories,
        **flags,  # type: ignore[arg-type]
    )


def _compatible(id_: str, from_: str, to: str) -> Compatibility:
    return Compatibility(
        id=id_,
        from_=from_,
        to=to,
        verdict="compatible",
        link="same customer relationship",
        context="the customer was told at collection",
        nature="no sensitive data",
        consequences="offers the customer can stop at any time",
        safeguards=("objection offered in every message",),
        source="GDPR art. 6(4)",
    )


def _prohibited(id_: str, from_: str, to: str) -> Compatibility:
    return Compatibility(
        id=id_, from_=from_, to=to, verdict="prohibited", source="CNIL délibération 2021-131"
    )


CATEGORIES = (
    DataCategory(id="identity", label="Identity"),
    DataCategory(id="identity.name", label="Name"),
    DataCategory(id="contact", label="Contact"),
    DataCategory(id="contact.email", label="E-mail"),
    DataCategory(id="contact.postal_address", label="Postal address"),
    DataCategory(id="transaction", label="Transactions"),
    DataCategory(id="nir", label="NIR", sensitive=True),
    DataCategory(id="special", label="Special categories", sensitive=True),
    DataCategory(id="special.health", label="Health"),
)

PURPOSES = (
    _purpose(
        "client.orders",
        "contract",
        Retention("P5Y", "end-of-contract"),
        ("identity", "contact", "transaction"),
    ),
    _purpose(
        "client.orders.confirmation",
        "contract",
        Retention("P3Y", "collection"),
        ("identity.name", "contact.email"),
    ),
    _purpose(
        "account.password_reset", "contract", Retention("P3Y", "last-contact"), ("contact.email",)
    ),
    _purpose(
        "prospection.postal",
        "legitimate-interests",
        Retention("P3Y", "last-contact"),
        ("identity", "contact.postal_address"),
        direct_marketing=True,
    ),
    _purpose(
        "prospection.email_b2c",
        "consent",
        Retention("P3Y", "last-contact"),
        ("identity", "contact.email"),
        direct_marketing=True,
    ),
    _purpose(
        "newsletter.events",
        "consent",
        Retention("P3Y", "last-contact"),
        ("contact.email",),
        direct_marketing=True,
    ),
    _purpose(
        "newsletter.product",
        "consent",
        Retention("P3Y", "last-contact"),
        ("contact.email",),
        direct_marketing=True,
    ),
    _purpose(
        "hr.recruitment",
        "contract",
        Retention("P2Y", "last-contact"),
        ("identity", "contact"),
        sensitive_categories=("special.health",),
    ),
    _purpose(
        "statistics.sales",
        "legitimate-interests",
        Retention("P5Y", "collection"),
        ("identity", "transaction"),
        archiving_or_statistics=True,
    ),
    _purpose(
        "archive.accounting",
        "legal-obligation",
        Retention("P10Y", "collection"),
        ("identity", "transaction"),
        archive=True,
    ),
    _purpose(
        "fraud.prevention",
        "legitimate-interests",
        Retention("P1Y", "collection"),
        ("identity", "contact", "nir"),
    ),
)

COMPATIBILITY = (
    _compatible("contract-to-postal", "client.orders", "prospection.postal"),
    _compatible("orders-to-email", "client.orders", "prospection.email_b2c"),
    _compatible("orders-to-archive", "client.orders", "archive.accounting"),
    _prohibited("recruitment-no-prospection", "hr.recruitment", "prospection"),
)

REGISTER = Register(PURPOSES, CATEGORIES, COMPATIBILITY, version="test")
PURPOSE_IDS = tuple(p.id for p in PURPOSES)
CATEGORY_IDS = tuple(c.id for c in CATEGORIES)


def engine_with(*events: object, clock: datetime = AT) -> Engine:
    """An engine over the fixture register with a store holding *events*."""
    store = InMemoryStore()
    for event in events:
        store.record(event)  # type: ignore[arg-type]
    return Engine(REGISTER, store, clock=lambda: clock)


def judge(
    engine: Engine,
    p0: str,
    p: str | None,
    category: str = "identity.name",
    at: datetime = AT,
    *,
    subject: str = SUBJECT,
    collected_at: datetime = T0,
    last_contact: datetime | None = None,
    contract_end: datetime | None = None,
) -> CategoryDecision:
    """One category decision, through the hot path."""
    decision, _until = engine.decide_category(
        p, p0, category, subject, collected_at, last_contact, contract_end, at
    )
    return decision


def until_of(
    engine: Engine,
    p0: str,
    p: str,
    category: str = "identity.name",
    at: datetime = AT,
    **anchors: datetime | None,
) -> datetime | None:
    """The `until` instant decide_category returns."""
    _decision, until = engine.decide_category(
        p,
        p0,
        category,
        SUBJECT,
        anchors.get("collected_at") or T0,
        anchors.get("last_contact"),
        anchors.get("contract_end"),
        at,
    )
    return until


def consent(
    purposes: str | tuple[str, ...],
    given_at: datetime,
    *,
    subject: str = SUBJECT,
    state: str = "given",
    withdrawn_at: datetime | None = None,
    expires_at: datetime | None = None,
    mechanism: str | None = "unticked-checkbox",
    id_: str | None = None,
) -> Consent:
    return Consent(
        subject=subject,
        purposes=purposes,
        given_at=given_at,
        state=state,
        withdrawn_at=withdrawn_at,
        expires_at=expires_at,
        evidence=Evidence(mechanism=mechanism) if mechanism else None,
        id=id_,  # type: ignore[arg-type]
    )


def state_of(
    records: tuple[Consent, ...],
    purpose: str,
    at: datetime = AT,
    withdrawals: tuple[Withdrawal, ...] = (),
) -> ConsentState:
    return consent_state(SubjectEvents(consents=records, withdrawals=withdrawals), purpose, at)[0]


# =========================================================================== consent state


class TestConsentState:
    """DESIGN §3 "Consent state at T", through the public consent_state function."""

    def test_no_record_is_none(self) -> None:
        """Without any record the state is `none` and no record decided."""
        assert consent_state(SubjectEvents(), "newsletter.events", AT) == (ConsentState.NONE, None)

    def test_a_given_consent_is_valid_from_its_given_at_included(self) -> None:
        """A grant is valid from its given-at included; before that it does not exist yet."""
        record = consent("newsletter.events", AT)
        assert consent_state(SubjectEvents(consents=(record,)), "newsletter.events", AT) == (
            ConsentState.VALID,
            record,
        )
        assert state_of((record,), "newsletter.events", AT - MICRO) is ConsentState.NONE

    def test_withdrawn_at_exactly_t_is_withdrawn(self) -> None:
        """A consent withdrawn at exactly T is withdrawn at T, valid one microsecond before."""
        record = consent("newsletter.events", T0, withdrawn_at=AT)
        assert state_of((record,), "newsletter.events", AT) is ConsentState.WITHDRAWN
        assert state_of((record,), "newsletter.events", AT - MICRO) is ConsentState.VALID

    def test_expired_at_exactly_t_is_expired(self) -> None:
        """A consent expiring at exactly T is expired at T, valid one microsecond before."""
        record = consent("newsletter.events", T0, expires_at=AT)
        assert state_of((record,), "newsletter.events", AT) is ConsentState.EXPIRED
        assert state_of((record,), "newsletter.events", AT - MICRO) is ConsentState.VALID

    def test_withdrawal_and_expiry_the_earlier_names_the_state(self) -> None:
        """When both happened, the earlier names the state; withdrawal wins a tie."""
        early, late = AT - timedelta(days=2), AT - timedelta(days=1)
        withdrawn_first = consent("newsletter.events", T0, withdrawn_at=early, expires_at=late)
        expired_first = consent("newsletter.events", T0, withdrawn_at=late, expires_at=early)
        tie = consent("newsletter.events", T0, withdrawn_at=early, expires_at=early)
        assert state_of((withdrawn_first,), "newsletter.events") is ConsentState.WITHDRAWN
        assert state_of((expired_first,), "newsletter.events") is ConsentState.EXPIRED
        assert state_of((tie,), "newsletter.events") is ConsentState.WITHDRAWN

    @pytest.mark.parametrize("mechanism", ["pre-ticked", "bundled", "implied", "silence"])
    def test_an_unclear_act_is_invalid(self, mechanism: str) -> None:
        """Pre-ticked, bundled, implied and silence grants are `invalid` (Planet49)."""
        record = consent("newsletter.events", T0, mechanism=mechanism)
        assert state_of((record,), "newsletter.events") is ConsentState.INVALID

    @pytest.mark.parametrize(
        "mechanism",
        [None, "unticked-checkbox", "double-opt-in", "signed-form", "recorded-oral", "button"],
    )
    def test_a_clear_act_or_no_mechanism_is_valid(self, mechanism: str | None) -> None:
        """A clear affirmative act, or no recorded mechanism, leaves the grant valid."""
        record = consent("newsletter.events", T0, mechanism=mechanism)
        assert state_of((record,), "newsletter.events") is ConsentState.VALID

    def test_an_invalid_grant_withdrawn_or_expired_is_withdrawn_or_expired(self) -> None:
        """A withdrawn or expired grant is withdrawn or expired even if it was invalid."""
        withdrawn = consent("newsletter.events", T0, mechanism="pre-ticked", withdrawn_at=AT)
        expired = consent("newsletter.events", T0, mechanism="pre-ticked", expires_at=AT)
        assert state_of((withdrawn,), "newsletter.events") is ConsentState.WITHDRAWN
        assert state_of((expired,), "newsletter.events") is ConsentState.EXPIRED

    def test_refused_and_not_asked(self) -> None:
        """Refused and not-asked records give their own states."""
        assert (
            state_of((consent("newsletter.events", T0, state="refused"),), "newsletter.events")
            is ConsentState.REFUSED
        )
        assert (
            state_of((consent("newsletter.events", T0, state="not-asked"),), "newsletter.events")
            is ConsentState.NOT_ASKED
        )

    def test_a_record_covers_its_purposes_descendants_only(self) -> None:
        """A consent for a group covers its members; siblings and broader purposes are not."""
        record = consent("newsletter", T0)
        assert state_of((record,), "newsletter.events") is ConsentState.VALID
        narrow = consent("newsletter.events", T0)
        assert state_of((narrow,), "newsletter.product") is ConsentState.NONE
        assert state_of((narrow,), "newsletter") is ConsentState.NONE
        assert state_of((consent("news", T0),), "newsletter.events") is ConsentState.NONE

    def test_the_most_specific_covering_purpose_decides(self) -> None:
        """A refusal naming the purpose itself beats a later grant naming its group."""
        refusal = consent("newsletter.events", T0, state="refused")
        broad = consent("newsletter", AT - timedelta(days=1))
        assert state_of((refusal, broad), "newsletter.events") is ConsentState.REFUSED
        assert state_of((refusal, broad), "newsletter.product") is ConsentState.VALID

    def test_the_most_recent_decides(self) -> None:
        """Of two records, the more recent by given-at decides."""
        refused = consent("newsletter.events", T0, state="refused")
        given = consent("newsletter.events", T0 + timedelta(days=1))
        assert state_of((refused, given), "newsletter.events") is ConsentState.VALID
        assert state_of((given, refused), "newsletter.events") is ConsentState.VALID
        later_refusal = consent("newsletter.events", T0 + timedelta(days=2), state="refused")
        assert state_of((given, later_refusal), "newsletter.events") is ConsentState.REFUSED

    @pytest.mark.parametrize("weak", ["not-asked", "pre-ticked"])
    @pytest.mark.parametrize("earlier", ["valid", "refused", "withdrawn"])
    def test_a_weak_record_does_not_displace_a_confirmed_one(self, weak: str, earlier: str) -> None:
        """A later not-asked or invalid record leaves an earlier valid/refused/withdrawn state."""
        first = {
            "valid": consent("newsletter.events", T0),
            "refused": consent("newsletter.events", T0, state="refused"),
            "withdrawn": consent("newsletter.events", T0, withdrawn_at=T0 + timedelta(days=1)),
        }[earlier]
        later_at = T0 + timedelta(days=30)
        second = (
            consent("newsletter.events", later_at, state="not-asked")
            if weak == "not-asked"
            else consent("newsletter.events", later_at, mechanism="pre-ticked")
        )
        assert state_of((first, second), "newsletter.events") is ConsentState(earlier)

    def test_a_weak_record_displaces_an_expired_one(self) -> None:
        """An expired grant is not protected: a later not-asked record names the state."""
        expired = consent("newsletter.events", T0, expires_at=T0 + timedelta(days=1))
        later = consent("newsletter.events", T0 + timedelta(days=30), state="not-asked")
        assert state_of((expired, later), "newsletter.events") is ConsentState.NOT_ASKED

    def test_a_weak_record_after_a_weak_one_decides(self) -> None:
        """Between unconfirmed records, the most recent decides."""
        first = consent("newsletter.events", T0, state="not-asked")
        second = consent("newsletter.events", T0 + SECOND, mechanism="bundled")
        assert state_of((first, second), "newsletter.events") is ConsentState.INVALID

    @pytest.mark.parametrize(
        ("higher", "lower"),
        [
            ("refused", "withdrawn"),
            ("withdrawn", "expired"),
            ("expired", "valid"),
            ("valid", "invalid"),
            ("invalid", "not-asked"),
            ("refused", "not-asked"),
        ],
    )
    def test_same_instant_ranking(self, higher: str, lower: str) -> None:
        """Same instant: refused > withdrawn > expired > valid > invalid > not-asked."""

        def make(state: str) -> Consent:
            if state == "refused":
                return consent("newsletter.events", T0, state="refused")
            if state == "not-asked":
                return consent("newsletter.events", T0, state="not-asked")
            if state == "withdrawn":
                return consent("newsletter.events", T0, withdrawn_at=AT - SECOND)
            if state == "expired":
                return consent("newsletter.events", T0, expires_at=AT - SECOND)
            if state == "invalid":
                return consent("newsletter.events", T0, mechanism="implied")
            return consent("newsletter.events", T0)

        a, b = make(higher), make(lower)
        assert state_of((a, b), "newsletter.events") is ConsentState(higher)
        assert state_of((b, a), "newsletter.events") is ConsentState(higher)

    def test_a_withdrawal_event_applies_to_covered_purposes_only(self) -> None:
        """Withdrawing newsletter.events leaves the same record's newsletter.product."""
        both = consent(("newsletter.events", "newsletter.product"), T0)
        withdrawal = Withdrawal(subject=SUBJECT, purposes="newsletter.events", at=AT - SECOND)
        assert (
            state_of((both,), "newsletter.events", withdrawals=(withdrawal,))
            is ConsentState.WITHDRAWN
        )
        assert (
            state_of((both,), "newsletter.product", withdrawals=(withdrawal,)) is ConsentState.VALID
        )

    def test_a_withdrawal_of_a_group_covers_its_members(self) -> None:
        """A withdrawal naming a group withdraws every purpose it covers."""
        record = consent("newsletter.events", T0)
        withdrawal = Withdrawal(subject=SUBJECT, purposes="newsletter", at=AT)
        assert (
            state_of((record,), "newsletter.events", withdrawals=(withdrawal,))
            is ConsentState.WITHDRAWN
        )

    def test_a_narrower_withdrawal_leaves_the_broader_purpose(self) -> None:
        """A withdrawal does not reach a processing purpose it does not cover."""
        record = consent("newsletter", T0)
        withdrawal = Withdrawal(subject=SUBJECT, purposes="newsletter.events", at=T0 + SECOND)
        events = SubjectEvents(consents=(record,), withdrawals=(withdrawal,))
        assert consent_state(events, "newsletter.product", AT)[0] is ConsentState.VALID
        assert consent_state(events, "newsletter.events", AT)[0] is ConsentState.WITHDRAWN

    def test_a_withdrawal_applies_only_to_consents_given_before_it(self) -> None:
        """A consent given after a withdrawal stays valid; one given at its instant does not."""
        withdrawal = Withdrawal(subject=SUBJECT, purposes="newsletter.events", at=T0 + SECOND)
        renewed = consent("newsletter.events", T0 + 2 * SECOND)
        same_instant = consent("newsletter.events", T0 + SECOND)
        assert (
            state_of((renewed,), "newsletter.events", withdrawals=(withdrawal,))
            is ConsentState.VALID
        )
        assert (
            state_of((same_instant,), "newsletter.events", withdrawals=(withdrawal,))
            is ConsentState.WITHDRAWN
        )

    def test_a_withdrawal_after_t_is_ignored_and_the_earliest_counts(self) -> None:
        """A withdrawal after T does not count at T; the earliest of record and events counts."""
        record = consent("newsletter.events", T0, withdrawn_at=AT + SECOND)
        later = Withdrawal(subject=SUBJECT, purposes="newsletter.events", at=AT + SECOND)
        assert state_of((record,), "newsletter.events", withdrawals=(later,)) is ConsentState.VALID
        expiring = consent("newsletter.events", T0, expires_at=AT - SECOND)
        event = Withdrawal(subject=SUBJECT, purposes="newsletter.events", at=AT - 2 * SECOND)
        assert (
            state_of((expiring,), "newsletter.events", withdrawals=(event,))
            is ConsentState.WITHDRAWN
        )

    def test_naive_instant_refused(self) -> None:
        """consent_state refuses a naive instant."""
        with pytest.raises(NaiveDatetimeError):
            consent_state(SubjectEvents(), "newsletter.events", datetime(2025, 1, 1))

    @settings(max_examples=100, deadline=None)
    @given(st.data())
    def test_order_of_records_never_matters(self, data: st.DataObject) -> None:
        """The consent state does not depend on the order the records are stored in."""
        offsets = st.integers(min_value=0, max_value=5)
        records = data.draw(
            st.lists(
                st.builds(
                    lambda purpose, given, state, w, e, mech: consent(
                        purpose,
                        T0 + timedelta(days=given),
                        state=state,
                        withdrawn_at=None if w is None else T0 + timedelta(days=given + w),
                        expires_at=None if e is None else T0 + timedelta(days=e),
                        mechanism=mech,
                    ),
                    st.sampled_from(["newsletter", "newsletter.events"]),
                    offsets,
                    st.sampled_from(["given", "refused", "not-asked"]),
                    st.none() | offsets,
                    st.none() | offsets,
                    st.sampled_from([None, "button", "pre-ticked"]),
                ),
                max_size=5,
            )
        )
        at = T0 + timedelta(days=data.draw(offsets))
        shuffled = data.draw(st.permutations(records))
        assert state_of(tuple(records), "newsletter.events", at) is state_of(
            tuple(shuffled), "newsletter.events", at
        )


# =========================================================================== step 1 and no purpose


class TestUnknownIds:
    """Step 1: undeclared purposes and categories are configuration errors, decided as such."""

    def test_unknown_processing_purpose(self) -> None:
        """An undeclared processing purpose (a group too) is `unknown-purpose`, rule `register`."""
        engine = engine_with()
        for p in ("nope", "prospection", "client.orders.nope"):
            d = judge(engine, "client.orders", p)
            assert (d.allowed, d.reason, d.rule) == (False, Reason.UNKNOWN_PURPOSE, "register")
            assert p in d.explanation

    def test_unknown_collection_purpose(self) -> None:
        """An undeclared collection purpose is `unknown-purpose` too."""
        d = judge(engine_with(), "hr", "hr.recruitment")
        assert (d.reason, d.rule) == (Reason.UNKNOWN_PURPOSE, "register")
        assert "collection purpose hr " in d.explanation

    def test_unknown_category(self) -> None:
        """An undeclared category is `unknown-category`; the unknown purpose is reported first."""
        engine = engine_with()
        assert judge(engine, "client.orders", "client.orders", "shoe_size").reason is (
            Reason.UNKNOWN_CATEGORY
        )
        assert judge(engine, "client.orders", "nope", "shoe_size").reason is Reason.UNKNOWN_PURPOSE

    def test_unknown_ids_outside_the_syntax_are_not_echoed(self) -> None:
        """An undeclared id that is not an id (an e-mail typed by mistake) is not repeated."""
        d = judge(engine_with(), "client.orders", "jeanne@example.com")
        assert d.reason is Reason.UNKNOWN_PURPOSE
        assert "jeanne" not in d.explanation

    def test_unknown_purpose_is_decided_before_retention(self) -> None:
        """Step 1 precedes every other step, even for data long past its retention."""
        d = judge(engine_with(), "client.orders", "nope", at=T0 + timedelta(days=365 * 40))
        assert d.reason is Reason.UNKNOWN_PURPOSE

    def test_no_purpose(self) -> None:
        """A read with no processing purpose is `no-purpose` for every category."""
        engine = engine_with()
        decision = engine.decide(tag("client.orders"), ["identity.name", "contact.email"], None, AT)
        assert not decision.allowed
        assert decision.reason is Reason.NO_PURPOSE
        assert decision.purpose is None
        assert decision.collected_for == "client.orders"
        assert {c.reason for c in decision.categories} == {Reason.NO_PURPOSE}
        d, until = engine.decide_category(
            None, "client.orders", "identity.name", SUBJECT, T0, None, None, AT
        )
        assert (d.reason, until) == (Reason.NO_PURPOSE, None)


def tag(
    p0: str,
    *,
    subject: str = SUBJECT,
    collected_at: datetime = T0,
    last_contact: datetime | None = None,
    contract_end: datetime | None = None,
) -> CollectionTag:
    return CollectionTag(
        subject=subject,
        collection=Collection(purpose=p0),
        collected_at=collected_at,
        last_contact_at=last_contact,
        contract_ended_at=contract_end,
    )


# ============================================================ allow paths and hierarchy


class TestAllowPaths:
    """The allow paths of DESIGN §3, in order, and matching by hierarchy."""

    def test_same_purpose(self) -> None:
        """P == P0 is allowed as `same-purpose`, rule `purpose:<P>`."""
        d = judge(engine_with(), "client.orders", "client.orders")
        assert (d.allowed, d.reason, d.rule) == (True, Reason.SAME_PURPOSE, "purpose:client.orders")

    def test_narrower_purpose_is_covered(self) -> None:
        """A descendant of P0 is allowed as `narrower-purpose`."""
        d = judge(engine_with(), "client.orders", "client.orders.confirmation", at=EARLY)
        assert (d.allowed, d.reason, d.rule) == (
            True,
            Reason.NARROWER_PURPOSE,
            "purpose:client.orders.confirmation",
        )

    def test_broader_purpose_is_not_covered(self) -> None:
        """Data collected for a narrower purpose is not usable under its parent."""
        d = judge(engine_with(), "client.orders.confirmation", "client.orders")
        assert (d.allowed, d.reason, d.rule) == (
            False,
            Reason.INCOMPATIBLE,
            "purpose:client.orders",
        )

    def test_siblings_never_cover_each_other(self) -> None:
        """Siblings never cover each other: consent for newsletter.events is not product news."""
        engine = engine_with(consent("newsletter.events", T0))
        assert judge(engine, "newsletter.events", "newsletter.events", "contact.email").allowed
        d = judge(engine, "newsletter.events", "newsletter.product", "contact.email")
        assert (d.allowed, d.reason) == (False, Reason.CONSENT_MISSING)

    def test_compatible_entry(self) -> None:
        """A compatible entry covering P0 -> P allows with `compatibility:<id>`."""
        d = judge(engine_with(), "client.orders", "prospection.postal", last_contact=AT)
        assert (d.allowed, d.reason, d.rule) == (
            True,
            Reason.COMPATIBLE,
            "compatibility:contract-to-postal",
        )

    def test_compatible_entry_covers_descendants_of_from(self) -> None:
        """An entry naming client.orders covers data collected for client.orders.confirmation."""
        d = judge(engine_with(), "client.orders.confirmation", "prospection.postal")
        assert d.reason is Reason.COMPATIBLE

    def test_deepest_to_then_deepest_from_decides(self) -> None:
        """Of overlapping entries, the deepest `to` decides, then the deepest `from`."""
        register = Register(
            PURPOSES,
            CATEGORIES,
            (
                _compatible("a-orders-to-prospection", "client.orders", "prospection"),
                _compatible("b-client-to-postal", "client", "prospection.postal"),
                _compatible("c-orders-to-postal", "client.orders", "prospection.postal"),
                _compatible("d-client-to-all", "client", "prospection"),
            ),
        )
        engine = Engine(register)
        assert judge(engine, "client.orders", "prospection.postal").rule == (
            "compatibility:c-orders-to-postal"
        )
        assert judge(engine, "client.orders.confirmation", "prospection.postal").rule == (
            "compatibility:c-orders-to-postal"
        )
        register2 = Register(
            PURPOSES,
            CATEGORIES,
            (
                _compatible("a-orders-to-prospection", "client.orders", "prospection"),
                _compatible("b-client-to-postal", "client", "prospection.postal"),
            ),
        )
        d = judge(Engine(register2), "client.orders", "prospection.postal")
        assert d.rule == "compatibility:b-client-to-postal"

    def test_presumed_compatible(self) -> None:
        """An archiving_or_statistics purpose is presumed compatible (art. 5(1)(b), 89(1))."""
        d = judge(engine_with(), "hr.recruitment", "statistics.sales")
        assert (d.allowed, d.reason, d.rule) == (
            True,
            Reason.PRESUMED_COMPATIBLE,
            "purpose:statistics.sales",
        )

    def test_incompatible_without_a_path(self) -> None:
        """Without any path the read is `incompatible`, rule `purpose:<P>`."""
        d = judge(engine_with(), "hr.recruitment", "fraud.prevention")
        assert (d.allowed, d.reason, d.rule) == (
            False,
            Reason.INCOMPATIBLE,
            "purpose:fraud.prevention",
        )

    def test_consent_path(self) -> None:
        """A valid consent for P opens the `consent` path, rule `consent:<id>`."""
        record = consent("fraud.prevention", T0, id_="c-1")
        d = judge(engine_with(record), "hr.recruitment", "fraud.prevention", at=EARLY)
        assert (d.allowed, d.reason, d.rule) == (True, Reason.CONSENT, "consent:c-1")

    def test_the_earlier_path_gives_the_reason(self) -> None:
        """When several paths allow, the first in the order of DESIGN §3 names the reason."""
        engine = engine_with(
            consent("prospection.postal", T0),
            Authorisation(
                id="auth-1",
                from_="client",
                to="prospection",
                reference="CNIL decision 2025-001",
                valid_from=T0,
            ),
        )
        d = judge(engine, "client.orders", "prospection.postal", last_contact=AT)
        assert d.reason is Reason.COMPATIBLE


class TestAuthorisations:
    """The authorisation path: validity window, from/to, categories and subjects."""

    AUTH = Authorisation(
        id="court-order-7",
        from_=("hr",),
        to="fraud.prevention",
        reference="TJ Paris, order 2025/123",
        valid_from=AT - timedelta(days=10),
        valid_until=AT + timedelta(days=10),
        categories=("identity",),
    )

    def test_authorisation_allows_within_its_window(self) -> None:
        """Valid from valid_from included to valid_until excluded."""
        engine = engine_with(self.AUTH)
        start, end = self.AUTH.valid_from, self.AUTH.valid_until
        assert end is not None
        d = judge(engine, "hr.recruitment", "fraud.prevention", at=start)
        assert (d.allowed, d.reason, d.rule) == (
            True,
            Reason.AUTHORISATION,
            "authorisation:court-order-7",
        )
        assert judge(engine, "hr.recruitment", "fraud.prevention", at=end - MICRO).allowed
        assert not judge(engine, "hr.recruitment", "fraud.prevention", at=start - MICRO).allowed
        assert judge(engine, "hr.recruitment", "fraud.prevention", at=end).reason is (
            Reason.INCOMPATIBLE
        )

    def test_authorisation_categories_cover_descendants_only(self) -> None:
        """An authorisation for `identity` covers identity.name, not contact.email."""
        engine = engine_with(self.AUTH)
        assert judge(engine, "hr.recruitment", "fraud.prevention", "identity.name").allowed
        assert not judge(engine, "hr.recruitment", "fraud.prevention", "contact.email").allowed

    def test_authorisation_from_and_to(self) -> None:
        """The authorisation covers only data from its from-purposes, for its to-purpose."""
        engine = engine_with(self.AUTH)
        assert not judge(engine, "client.orders", "fraud.prevention").allowed

    def test_authorisation_subjects(self) -> None:
        """An authorisation naming subjects covers those only, compared exactly."""
        auth = attrs.evolve(self.AUTH, subjects=(SUBJECT,))
        engine = engine_with(auth)
        assert judge(engine, "hr.recruitment", "fraud.prevention").allowed
        assert not judge(engine, "hr.recruitment", "fraud.prevention", subject=OTHER).allowed
        assert not judge(
            engine, "hr.recruitment", "fraud.prevention", subject=SUBJECT.upper()
        ).allowed

    def test_the_most_specific_authorisation_decides(self) -> None:
        """Of two matching authorisations, the one naming the deepest `to` names the rule."""
        broad = Authorisation(id="a-broad", from_="hr", to="fraud", reference="law", valid_from=T0)
        engine = engine_with(broad, attrs.evolve(self.AUTH, id="z-specific"))
        assert judge(engine, "hr.recruitment", "fraud.prevention").rule == (
            "authorisation:z-specific"
        )

    def test_an_authorisation_within_retention_is_preferred(self) -> None:
        """A broader authorisation within retention allows when the most specific one is out."""
        old = Authorisation(
            id="old-specific",
            from_="hr.recruitment",
            to="fraud.prevention",
            reference="order 1",
            valid_from=T0,
        )
        recent = Authorisation(
            id="recent-broad", from_="hr", to="fraud", reference="order 2", valid_from=AT
        )
        later = AT + timedelta(days=30)  # old-specific's path ended 2025-01-10 (P1Y)
        d = judge(engine_with(old, recent), "hr.recruitment", "fraud.prevention", at=later)
        assert (d.allowed, d.rule) == (True, "authorisation:recent-broad")
        d2 = judge(engine_with(old), "hr.recruitment", "fraud.prevention", at=later)
        assert (d2.reason, d2.rule) == (Reason.RETENTION_EXPIRED, "retention:fraud.prevention")

    def test_inline_authorisation_is_for_one_call(self) -> None:
        """An authorisation passed to decide() counts for that call only and is not stored."""
        engine = engine_with()
        decision = engine.decide(
            tag("hr.recruitment"),
            ["identity.name"],
            "fraud.prevention",
            AT,
            authorisations=[self.AUTH],
        )
        assert decision.reason is Reason.AUTHORISATION
        assert engine.store.authorisations() == ()
        assert not engine.decide(
            tag("hr.recruitment"), ["identity.name"], "fraud.prevention", AT
        ).allowed


# =========================================================================== retention


class TestRetention:
    """Step 2 and the retention of each path (GDPR art. 5(1)(e))."""

    def test_one_second_before_the_end_allowed_at_the_end_denied(self) -> None:
        """fraud.prevention keeps data P1Y from collection: [T0, T0+P1Y)."""
        engine = engine_with()
        end = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)
        assert judge(engine, "fraud.prevention", "fraud.prevention", at=end - SECOND).allowed
        d = judge(engine, "fraud.prevention", "fraud.prevention", at=end)
        assert (d.allowed, d.reason, d.rule) == (
            False,
            Reason.RETENTION_EXPIRED,
            "retention:fraud.prevention",
        )

    def test_leap_day_plus_one_year(self) -> None:
        """Collected 2024-02-29, P1Y ends 2025-02-28 (calendar clamping)."""
        engine = engine_with()
        leap = datetime(2024, 2, 29, 12, 0, tzinfo=UTC)
        end = datetime(2025, 2, 28, 12, 0, tzinfo=UTC)
        args = ("fraud.prevention", "fraud.prevention", "identity.name")
        assert judge(engine, *args, at=end - SECOND, collected_at=leap).allowed
        assert not judge(engine, *args, at=end, collected_at=leap).allowed

    def test_last_contact_restarts_the_clock(self) -> None:
        """A last-contact retention runs from the last contact when known."""
        engine = engine_with()
        contact = datetime(2025, 1, 1, tzinfo=UTC)
        end = datetime(2027, 1, 1, tzinfo=UTC)  # hr.recruitment: P2Y from last contact
        args = ("hr.recruitment", "hr.recruitment")
        assert judge(engine, *args, at=end - SECOND, last_contact=contact).allowed
        assert judge(engine, *args, at=end, last_contact=contact).reason is (
            Reason.RETENTION_EXPIRED
        )

    def test_last_contact_missing_falls_back_to_collection(self) -> None:
        """Without a last contact the clock runs from collection."""
        engine = engine_with()
        end = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
        assert judge(engine, "hr.recruitment", "hr.recruitment", at=end - SECOND).allowed
        assert not judge(engine, "hr.recruitment", "hr.recruitment", at=end).allowed

    def test_last_contact_after_t_is_ignored(self) -> None:
        """A last contact recorded after T does not extend retention at T."""
        engine = engine_with()
        end = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
        d = judge(engine, "hr.recruitment", "hr.recruitment", at=end, last_contact=end + SECOND)
        assert d.reason is Reason.RETENTION_EXPIRED
        assert judge(
            engine, "hr.recruitment", "hr.recruitment", at=end + SECOND, last_contact=end + SECOND
        ).allowed

    def test_end_of_contract_unknown_never_expires(self) -> None:
        """While the contract is ongoing (end unknown) the end-of-contract clock has not started."""
        engine = engine_with()
        far = datetime(2090, 1, 1, tzinfo=UTC)
        assert judge(engine, "client.orders", "client.orders", at=far).allowed
        assert until_of(engine, "client.orders", "client.orders", at=far) is None

    def test_end_of_contract_known(self) -> None:
        """Once the contract ended, P5Y runs from its end; an end recorded after T is ignored."""
        engine = engine_with()
        ended = datetime(2025, 3, 31, tzinfo=UTC)
        end = datetime(2030, 3, 31, tzinfo=UTC)
        assert judge(
            engine, "client.orders", "client.orders", at=end - SECOND, contract_end=ended
        ).allowed
        assert not judge(
            engine, "client.orders", "client.orders", at=end, contract_end=ended
        ).allowed
        assert judge(
            engine, "client.orders", "client.orders", at=end, contract_end=end + SECOND
        ).allowed

    def test_own_line_needs_both_retentions_and_names_the_one_that_ran_out(self) -> None:
        """A compatible path needs P's and P0's retention; the rule names the clock that ran out."""
        engine = engine_with()
        ended = datetime(2025, 1, 1, tzinfo=UTC)  # client.orders: P5Y from end of contract
        contact = datetime(2025, 1, 1, tzinfo=UTC)  # prospection.postal: P3Y from last contact
        at = datetime(2028, 1, 1, tzinfo=UTC)
        d = judge(
            engine,
            "client.orders",
            "prospection.postal",
            at=at,
            contract_end=ended,
            last_contact=contact,
        )
        assert (d.reason, d.rule) == (Reason.RETENTION_EXPIRED, "retention:prospection.postal")
        late_contact = datetime(2027, 6, 1, tzinfo=UTC)
        at2 = datetime(2030, 1, 1, tzinfo=UTC)
        d2 = judge(
            engine,
            "client.orders",
            "prospection.postal",
            at=at2,
            contract_end=ended,
            last_contact=late_contact,
        )
        assert (d2.reason, d2.rule) == (Reason.RETENTION_EXPIRED, "retention:client.orders")

    def test_archive_waives_the_collection_purposes_retention(self) -> None:
        """An archive purpose reads data whose active retention ended, within its own retention."""
        engine = engine_with()
        ended = datetime(2025, 1, 1, tzinfo=UTC)
        at = datetime(2031, 1, 1, tzinfo=UTC)  # client.orders ended 2030-01-01
        assert judge(
            engine, "client.orders", "client.orders", at=at, contract_end=ended
        ).reason is (Reason.RETENTION_EXPIRED)
        d = judge(engine, "client.orders", "archive.accounting", at=at, contract_end=ended)
        assert (d.allowed, d.reason) == (True, Reason.COMPATIBLE)
        end = datetime(2034, 1, 10, 9, 0, tzinfo=UTC)  # P10Y from collection
        d2 = judge(engine, "client.orders", "archive.accounting", at=end, contract_end=ended)
        assert (d2.reason, d2.rule) == (Reason.RETENTION_EXPIRED, "retention:archive.accounting")

    def test_a_consent_is_a_new_basis_counted_from_its_given_at(self) -> None:
        """The consent path counts P's retention from the later of the anchor and the consent."""
        given = datetime(2027, 1, 1, tzinfo=UTC)
        engine = engine_with(consent("fraud.prevention", given, id_="renewed"))
        at = datetime(2027, 6, 1, tzinfo=UTC)  # the own line ended 2025-01-10
        d = judge(engine, "fraud.prevention", "fraud.prevention", at=at)
        assert (d.allowed, d.reason, d.rule) == (True, Reason.CONSENT, "consent:renewed")
        end = datetime(2028, 1, 1, tzinfo=UTC)
        assert judge(engine, "fraud.prevention", "fraud.prevention", at=end - SECOND).allowed
        d2 = judge(engine, "fraud.prevention", "fraud.prevention", at=end)
        assert (d2.reason, d2.rule) == (Reason.RETENTION_EXPIRED, "retention:fraud.prevention")

    def test_a_consent_path_counts_only_ps_retention(self) -> None:
        """A consent lifting a reuse ignores P0's retention."""
        given = datetime(2024, 6, 1, tzinfo=UTC)
        engine = engine_with(consent("fraud.prevention", given))
        at = datetime(
            2025, 5, 1, tzinfo=UTC
        )  # hr.recruitment would still be fine; P1Y from consent
        assert judge(engine, "hr.recruitment", "fraud.prevention", at=at).reason is Reason.CONSENT
        at2 = datetime(2025, 6, 1, tzinfo=UTC)
        d = judge(engine, "hr.recruitment", "fraud.prevention", at=at2)
        assert (d.reason, d.rule) == (Reason.RETENTION_EXPIRED, "retention:fraud.prevention")

    def test_an_authorisation_is_a_new_basis_counted_from_valid_from(self) -> None:
        """The authorisation path counts P's retention from its valid_from when later."""
        auth = Authorisation(
            id="auth-9",
            from_="hr",
            to="fraud.prevention",
            reference="loi 2025-1",
            valid_from=datetime(2030, 1, 1, tzinfo=UTC),
        )
        engine = engine_with(auth)
        assert judge(
            engine, "hr.recruitment", "fraud.prevention", at=datetime(2030, 12, 31, tzinfo=UTC)
        ).allowed
        d = judge(engine, "hr.recruitment", "fraud.prevention", at=datetime(2031, 1, 1, tzinfo=UTC))
        assert d.reason is Reason.RETENTION_EXPIRED

    def test_retention_expired_needs_an_existing_path(self) -> None:
        """Old data with no allow path at all is `incompatible`, not `retention-expired`."""
        far = datetime(2060, 1, 1, tzinfo=UTC)
        assert judge(engine_with(), "hr.recruitment", "fraud.prevention", at=far).reason is (
            Reason.INCOMPATIBLE
        )

    def test_retention_is_checked_before_objection_and_excess(self) -> None:
        """Step 2 precedes steps 3 and 4."""
        engine = engine_with(Objection(subject=SUBJECT, at=T0))
        far = datetime(2060, 1, 1, tzinfo=UTC)
        assert judge(
            engine, "client.orders", "prospection.postal", at=far, contract_end=T0
        ).reason is (Reason.RETENTION_EXPIRED)
        assert judge(
            engine, "fraud.prevention", "fraud.prevention", "special.health", at=far
        ).reason is (Reason.RETENTION_EXPIRED)

    def test_retention_expired_ignores_a_prohibition(self) -> None:
        """Paths blocked by a prohibition still count for step 2 (steps 3-6 are ignored there)."""
        register = Register(
            PURPOSES,
            CATEGORIES,
            (*COMPATIBILITY, _prohibited("no-stats", "hr", "statistics")),
        )
        engine = Engine(register)
        assert judge(engine, "hr.recruitment", "statistics.sales").reason is Reason.PROHIBITED
        far = datetime(2060, 1, 1, tzinfo=UTC)
        d = judge(engine, "hr.recruitment", "statistics.sales", at=far)
        assert d.reason is Reason.RETENTION_EXPIRED


# ============================================================ objection and minimisation


class TestObjection:
    """Step 3: an objection blocks every direct-marketing purpose, and only those (GDPR art. 21)."""

    def test_objection_blocks_direct_marketing_only(self) -> None:
        """Marketing purposes are blocked; order confirmation and password reset are not."""
        objection = Objection(subject=SUBJECT, at=T0 + SECOND, id="obj-1")
        engine = engine_with(
            objection,
            consent(("newsletter", "prospection.email_b2c"), T0),
        )
        blocked = [
            ("client.orders", "prospection.postal", "identity.name"),
            ("client.orders", "prospection.email_b2c", "contact.email"),
            ("newsletter.events", "newsletter.events", "contact.email"),
            ("newsletter.product", "newsletter.product", "contact.email"),
        ]
        for p0, p, category in blocked:
            d = judge(engine, p0, p, category, last_contact=AT)
            assert (d.allowed, d.reason, d.rule) == (False, Reason.OBJECTION, "objection:obj-1"), p
        allowed = [
            ("client.orders", "client.orders.confirmation", "contact.email"),
            ("account.password_reset", "account.password_reset", "contact.email"),
            ("client.orders", "client.orders", "identity.name"),
            ("client.orders", "statistics.sales", "identity.name"),
        ]
        for p0, p, category in allowed:
            assert judge(engine, p0, p, category, at=T0 + timedelta(days=100)).allowed, p

    def test_objection_window(self) -> None:
        """An objection counts from its `at` included until its withdrawal excluded."""
        made, withdrawn = T0 + timedelta(days=10), T0 + timedelta(days=20)
        engine = engine_with(Objection(subject=SUBJECT, at=made, withdrawn_at=withdrawn))
        args = ("client.orders", "prospection.postal")
        assert judge(engine, *args, at=made - MICRO).allowed
        assert judge(engine, *args, at=made).reason is Reason.OBJECTION
        assert judge(engine, *args, at=withdrawn - MICRO).reason is Reason.OBJECTION
        assert judge(engine, *args, at=withdrawn).allowed

    def test_objection_of_another_subject_does_not_count(self) -> None:
        """Objections are per data subject."""
        engine = engine_with(Objection(subject=OTHER, at=T0))
        assert judge(engine, "client.orders", "prospection.postal").allowed

    def test_objection_beats_consent_and_comes_before_excess(self) -> None:
        """A consent does not lift an objection, and step 3 precedes step 4."""
        engine = engine_with(
            Objection(subject=SUBJECT, at=T0), consent("prospection.email_b2c", T0)
        )
        assert judge(engine, "client.orders", "prospection.email_b2c", "contact.email").reason is (
            Reason.OBJECTION
        )
        assert judge(engine, "client.orders", "prospection.postal", "transaction").reason is (
            Reason.OBJECTION
        )

    def test_store_withdraw_objection(self) -> None:
        """Withdrawing an objection in the store lifts it from its withdrawal on."""
        objection = Objection(subject=SUBJECT, at=T0, id="obj-2")
        engine = engine_with(objection)
        assert isinstance(engine.store, InMemoryStore)
        engine.store.withdraw_objection("obj-2", AT)
        assert judge(engine, "client.orders", "prospection.postal", at=AT - SECOND).reason is (
            Reason.OBJECTION
        )
        assert judge(engine, "client.orders", "prospection.postal", at=AT).allowed


class TestMinimisation:
    """Step 4: `excessive` (GDPR art. 5(1)(c)), and check_collection at collection time."""

    def test_listed_category_covers_descendants(self) -> None:
        """A purpose listing `identity` may use identity.name."""
        assert judge(engine_with(), "client.orders", "client.orders", "identity.name").allowed

    def test_broader_category_is_excessive(self) -> None:
        """A purpose listing contact.email may not use `contact` as a whole."""
        d = judge(engine_with(), "client.orders", "client.orders.confirmation", "contact")
        assert (d.allowed, d.reason, d.rule) == (
            False,
            Reason.EXCESSIVE,
            "purpose:client.orders.confirmation",
        )
        assert "contact" in d.explanation

    def test_sibling_category_is_excessive_even_for_the_same_purpose(self) -> None:
        """Minimisation applies when P == P0."""
        d = judge(
            engine_with(),
            "client.orders.confirmation",
            "client.orders.confirmation",
            "contact.postal_address",
        )
        assert d.reason is Reason.EXCESSIVE

    def test_sensitive_category_needs_sensitive_categories(self) -> None:
        """Sensitive data covered only through `categories` is excessive."""
        engine = engine_with()
        d = judge(engine, "fraud.prevention", "fraud.prevention", "nir", at=EARLY)
        assert (d.reason, d.rule) == (Reason.EXCESSIVE, "purpose:fraud.prevention")
        assert "sensitive" in d.explanation
        assert judge(engine, "hr.recruitment", "hr.recruitment", "special.health").allowed
        assert judge(engine, "hr.recruitment", "hr.recruitment", "special").reason is (
            Reason.EXCESSIVE
        )

    def test_excess_comes_before_consent(self) -> None:
        """Step 4 precedes step 5."""
        d = judge(engine_with(), "newsletter.events", "newsletter.events", "identity.name")
        assert d.reason is Reason.EXCESSIVE

    def test_check_collection(self) -> None:
        """At collection: excessive and unknown categories, once each, in order."""
        engine = engine_with()
        assert engine.check_collection("newsletter.events", ["contact.email"]) == []
        assert engine.check_collection(
            "newsletter.events", ["contact.email", "nir", "shoe_size", "nir", "identity.name"]
        ) == [
            ("nir", Reason.EXCESSIVE),
            ("shoe_size", Reason.UNKNOWN_CATEGORY),
            ("identity.name", Reason.EXCESSIVE),
        ]
        assert engine.check_collection("nope", ["contact.email"]) == [
            ("contact.email", Reason.UNKNOWN_PURPOSE)
        ]


# =========================================================================== consent-based purposes


class TestConsentBasedPurposes:
    """Step 5, the step-7 `consent` reason, and the issue's consent cases."""

    P0 = "newsletter.events"

    def read(
        self, engine: Engine, p: str = "newsletter.events", at: datetime = AT
    ) -> CategoryDecision:
        return judge(engine, self.P0, p, "contact.email", at=at)

    def test_never_asked_refused_withdrew_are_three_reasons(self) -> None:
        """Never asked, refused and withdrew give three distinct reasons, all denials."""
        never = self.read(engine_with())
        not_asked = self.read(engine_with(consent(self.P0, T0, state="not-asked", id_="na-1")))
        refused = self.read(engine_with(consent(self.P0, T0, state="refused", id_="r-1")))
        withdrew = self.read(engine_with(consent(self.P0, T0, withdrawn_at=AT, id_="w-1")))
        assert (never.reason, never.rule) == (Reason.CONSENT_MISSING, "purpose:newsletter.events")
        assert (not_asked.reason, not_asked.rule) == (Reason.CONSENT_MISSING, "consent:na-1")
        assert (refused.reason, refused.rule) == (Reason.CONSENT_REFUSED, "consent:r-1")
        assert (withdrew.reason, withdrew.rule) == (Reason.CONSENT_WITHDRAWN, "consent:w-1")
        assert len({never.reason, refused.reason, withdrew.reason}) == 3
        assert not any(d.allowed for d in (never, not_asked, refused, withdrew))

    def test_expired_and_invalid(self) -> None:
        """An expired or unclear consent denies with its own reason."""
        expired = self.read(engine_with(consent(self.P0, T0, expires_at=AT)))
        invalid = self.read(engine_with(consent(self.P0, T0, mechanism="pre-ticked")))
        assert expired.reason is Reason.CONSENT_EXPIRED
        assert invalid.reason is Reason.CONSENT_INVALID

    def test_a_valid_consent_allows_with_reason_consent_even_for_the_same_purpose(self) -> None:
        """When P rests on consent, the consent is what makes the read lawful (step 7)."""
        d = self.read(engine_with(consent(self.P0, T0, id_="ok-1")))
        assert (d.allowed, d.reason, d.rule) == (True, Reason.CONSENT, "consent:ok-1")

    def test_a_consent_withdrawn_at_exactly_t_denies_at_t(self) -> None:
        """Withdrawal takes effect at its instant, included."""
        engine = engine_with(
            consent(self.P0, T0), Withdrawal(subject=SUBJECT, purposes=self.P0, at=AT)
        )
        assert self.read(engine, at=AT - MICRO).allowed
        assert self.read(engine, at=AT).reason is Reason.CONSENT_WITHDRAWN

    def test_withdrawing_one_newsletter_leaves_the_other_intact(self) -> None:
        """Withdrawing events news leaves the same person's product-news consent intact."""
        store = InMemoryStore([consent(("newsletter.events", "newsletter.product"), T0)])
        store.withdraw(SUBJECT, "newsletter.events", AT - timedelta(days=1))
        engine = Engine(REGISTER, store)
        assert self.read(engine).reason is Reason.CONSENT_WITHDRAWN
        d = judge(engine, "newsletter.product", "newsletter.product", "contact.email")
        assert (d.allowed, d.reason) == (True, Reason.CONSENT)

    def test_recording_the_same_consent_twice_changes_nothing(self) -> None:
        """Idempotent recording: same decision, same store version."""
        record = consent(self.P0, T0)
        store = InMemoryStore([record])
        version = store.version
        engine = Engine(REGISTER, store)
        before = self.read(engine)
        assert store.record(record) is False
        assert store.version == version
        assert self.read(engine) == before
        assert before.allowed

    @pytest.mark.parametrize("weaker", ["not-asked", "pre-ticked"])
    def test_a_later_weaker_record_does_not_downgrade_but_a_withdrawal_does(
        self, weaker: str
    ) -> None:
        """A not-asked re-import or pre-ticked re-submission never downgrades; a withdrawal does."""
        later = T0 + timedelta(days=60)
        weak = (
            consent(self.P0, later, state="not-asked")
            if weaker == "not-asked"
            else consent(self.P0, later, mechanism="pre-ticked")
        )
        store = InMemoryStore([consent(self.P0, T0, id_="first"), weak])
        engine = Engine(REGISTER, store)
        assert self.read(engine).rule == "consent:first"
        store.withdraw(SUBJECT, self.P0, later + SECOND)
        assert self.read(engine).reason is Reason.CONSENT_WITHDRAWN

    def test_not_asked_never_allows(self) -> None:
        """A not-asked record is never a consent, whatever else holds."""
        engine = engine_with(consent("newsletter", T0, state="not-asked"))
        for p in ("newsletter.events", "newsletter.product"):
            assert not judge(engine, p, p, "contact.email").allowed

    def test_compatible_entry_is_the_basis_for_a_consent_purpose(self) -> None:
        """A compatible entry (soft opt-in) covering the reuse makes consent unnecessary."""
        engine = engine_with()
        d = judge(
            engine, "client.orders", "prospection.email_b2c", "contact.email", last_contact=AT
        )
        assert (d.allowed, d.reason, d.rule) == (
            True,
            Reason.COMPATIBLE,
            "compatibility:orders-to-email",
        )

    @pytest.mark.parametrize(
        ("state", "reason"),
        [("refused", Reason.CONSENT_REFUSED), ("withdrawn", Reason.CONSENT_WITHDRAWN)],
    )
    def test_an_expressed_refusal_counts_despite_a_compatible_entry(
        self, state: str, reason: Reason
    ) -> None:
        """A refusal or withdrawal for P denies even when a compatible entry covers the reuse."""
        record = (
            consent("prospection.email_b2c", T0, state="refused")
            if state == "refused"
            else consent("prospection.email_b2c", T0, withdrawn_at=AT - SECOND)
        )
        d = judge(
            engine_with(record),
            "client.orders",
            "prospection.email_b2c",
            "contact.email",
            last_contact=AT,
        )
        assert (d.allowed, d.reason) == (False, reason)

    def test_an_expired_or_invalid_consent_does_not_undo_a_compatible_entry(self) -> None:
        """Only a refusal or a withdrawal counts against a compatible entry."""
        for record in (
            consent("prospection.email_b2c", T0, expires_at=T0 + SECOND),
            consent("prospection.email_b2c", T0, mechanism="silence"),
            consent("prospection.email_b2c", T0, state="not-asked"),
        ):
            d = judge(
                engine_with(record),
                "client.orders",
                "prospection.email_b2c",
                "contact.email",
                last_contact=AT,
            )
            assert d.reason is Reason.COMPATIBLE

    def test_inline_consent_counts_for_one_call_and_other_subjects_are_ignored(self) -> None:
        """Inline events add to the store's for this call; they are never written."""
        engine = engine_with()
        mine = consent(self.P0, T0)
        theirs = consent(self.P0, T0, subject=OTHER)
        t = tag(self.P0)
        assert engine.decide(t, ["contact.email"], self.P0, AT, consents=[mine]).allowed
        assert not engine.decide(t, ["contact.email"], self.P0, AT, consents=[theirs]).allowed
        assert engine.store.subject_events(SUBJECT) == SubjectEvents()
        withdrawal = Withdrawal(subject=SUBJECT, purposes=self.P0, at=T0 + SECOND)
        assert (
            engine.decide(
                t, ["contact.email"], self.P0, AT, consents=[mine], withdrawals=[withdrawal]
            ).reason
            is Reason.CONSENT_WITHDRAWN
        )
        objection = Objection(subject=SUBJECT, at=T0)
        assert (
            engine.decide(
                t, ["contact.email"], self.P0, AT, consents=[mine], objections=[objection]
            ).reason
            is Reason.OBJECTION
        )


# =========================================================================== prohibited reuse


class TestProhibited:
    """Step 6 and its refinement: recruitment data under prospection purposes."""

    def test_recruitment_data_under_any_prospection_purpose_is_denied(self) -> None:
        """Recruitment data under any prospection purpose is denied without the consent."""
        engine = engine_with()
        postal = judge(engine, "hr.recruitment", "prospection.postal")
        assert (postal.allowed, postal.reason, postal.rule) == (
            False,
            Reason.PROHIBITED,
            "compatibility:recruitment-no-prospection",
        )
        # prospection.email_b2c rests on consent: step 5 speaks first (DESIGN §6's example).
        email = judge(engine, "hr.recruitment", "prospection.email_b2c", "contact.email")
        assert (email.allowed, email.reason) == (False, Reason.CONSENT_MISSING)

    def test_the_candidates_consent_lifts_the_prohibition_for_that_prospection_only(self) -> None:
        """A consent to postal prospection lifts the prohibition for postal prospection only."""
        engine = engine_with(consent("prospection.postal", T0, id_="cand-1"))
        d = judge(engine, "hr.recruitment", "prospection.postal")
        assert (d.allowed, d.reason, d.rule) == (True, Reason.CONSENT, "consent:cand-1")
        assert not judge(engine, "hr.recruitment", "prospection.email_b2c", "contact.email").allowed
        engine2 = engine_with(consent("prospection.email_b2c", T0))
        assert judge(
            engine2, "hr.recruitment", "prospection.email_b2c", "contact.email"
        ).reason is (Reason.CONSENT)

    def test_an_authorisation_lifts_the_prohibition(self) -> None:
        """An authorisation valid at T for the reuse lifts a prohibition."""
        auth = Authorisation(
            id="auth-p",
            from_="hr.recruitment",
            to="prospection.postal",
            reference="decision 2025-7",
            valid_from=T0,
        )
        d = judge(engine_with(auth), "hr.recruitment", "prospection.postal")
        assert (d.allowed, d.reason, d.rule) == (True, Reason.AUTHORISATION, "authorisation:auth-p")

    @pytest.mark.parametrize(
        ("record", "reason"),
        [
            (consent("prospection.postal", T0, state="refused"), Reason.CONSENT_REFUSED),
            (consent("prospection.postal", T0, withdrawn_at=T0 + SECOND), Reason.CONSENT_WITHDRAWN),
            (consent("prospection.postal", T0, expires_at=T0 + SECOND), Reason.CONSENT_EXPIRED),
            (consent("prospection.postal", T0, mechanism="bundled"), Reason.CONSENT_INVALID),
            (consent("prospection.postal", T0, state="not-asked"), Reason.PROHIBITED),
        ],
    )
    def test_the_consent_state_refines_prohibited(self, record: Consent, reason: Reason) -> None:
        """A withdrawn, expired, refused or invalid consent replaces `prohibited`."""
        d = judge(engine_with(record), "hr.recruitment", "prospection.postal")
        assert (d.allowed, d.reason) == (False, reason)
        if reason is not Reason.PROHIBITED:
            assert d.rule == f"consent:{record.id}"

    def test_the_consent_state_refines_incompatible(self) -> None:
        """Step 8 too names the consent state when it is withdrawn, expired, refused or invalid."""
        record = consent("fraud.prevention", T0, state="refused")
        d = judge(engine_with(record), "hr.recruitment", "fraud.prevention")
        assert (d.reason, d.rule) == (Reason.CONSENT_REFUSED, f"consent:{record.id}")

    def test_a_consent_out_of_retention_does_not_lift_a_prohibition(self) -> None:
        """A valid consent whose new retention has ended is an existing path out of retention."""
        record = consent("prospection.postal", T0, id_="cand-2")
        late = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)  # P3Y from the consent
        engine = engine_with(record)
        assert judge(engine, "hr.recruitment", "prospection.postal", at=late - SECOND).allowed
        d = judge(engine, "hr.recruitment", "prospection.postal", at=late)
        assert (d.reason, d.rule) == (Reason.RETENTION_EXPIRED, "retention:prospection.postal")

    def test_a_prohibition_beats_the_hierarchy(self) -> None:
        """A prohibited entry beats even a narrower-purpose path."""
        register = Register(
            PURPOSES,
            CATEGORIES,
            (
                *COMPATIBILITY,
                _prohibited("no-confirmations", "client.orders", "client.orders.confirmation"),
            ),
        )
        d = judge(Engine(register), "client.orders", "client.orders.confirmation")
        assert (d.reason, d.rule) == (Reason.PROHIBITED, "compatibility:no-confirmations")


# ============================================================ records and combination


class TestDecide:
    """The record-level decision of decide() (DESIGN §6)."""

    def test_the_earliest_denial_in_the_order_decides(self) -> None:
        """Top-level reason is the category whose denial comes earliest; allowed only if all are."""
        engine = engine_with()
        decision = engine.decide(
            tag("client.orders"),
            ["identity.name", "nir", "shoe_size"],
            "client.orders",
            AT,
        )
        assert not decision.allowed
        assert decision.reason is Reason.UNKNOWN_CATEGORY
        assert [c.reason for c in decision.categories] == [
            Reason.SAME_PURPOSE,
            Reason.EXCESSIVE,
            Reason.UNKNOWN_CATEGORY,
        ]
        ok = engine.decide(
            tag("client.orders"), ["identity.name", "contact.email"], "client.orders", AT
        )
        assert ok.allowed
        assert ok.reason is Reason.SAME_PURPOSE
        assert ok.to_dict()["categories"] == {
            "identity.name": {"allowed": True, "reason": "same-purpose"},
            "contact.email": {"allowed": True, "reason": "same-purpose"},
        }

    def test_empty_categories_refused(self) -> None:
        """A decision needs at least one category."""
        with pytest.raises(ValueError, match="at least one"):
            engine_with().decide(tag("client.orders"), [], "client.orders", AT)

    def test_default_instant_is_the_engines_clock(self) -> None:
        """Without `at`, the engine's clock gives the instant."""
        end = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)
        assert (
            engine_with(clock=end - SECOND)
            .decide(tag("fraud.prevention"), ["identity.name"], "fraud.prevention")
            .allowed
        )
        assert (
            engine_with(clock=end)
            .decide(tag("fraud.prevention"), ["identity.name"], "fraud.prevention")
            .reason
            is Reason.RETENTION_EXPIRED
        )

    def test_naive_instants_are_refused(self) -> None:
        """A naive `at` or a naive clock is refused."""
        engine = Engine(REGISTER, clock=lambda: datetime(2025, 1, 1))
        with pytest.raises(NaiveDatetimeError):
            engine.now()
        with pytest.raises(NaiveDatetimeError):
            engine_with().decide(
                tag("client.orders"),
                ["identity.name"],
                "client.orders",
                datetime(2025, 1, 1),
            )

    def test_engine_defaults(self) -> None:
        """Default store: a new in-memory one; default clock: aware; audit kept as given."""
        marker = object()
        engine = Engine(REGISTER, audit=marker)
        assert isinstance(engine.store, InMemoryStore)
        assert engine.audit is marker
        assert engine.now().utcoffset() == timedelta(0)
        assert engine.register is REGISTER

    def test_a_new_register_clears_the_compiled_plans(self) -> None:
        """Setting another register makes the engine decide by it."""
        engine = engine_with()
        assert not judge(engine, "hr.recruitment", "fraud.prevention", at=EARLY).allowed
        engine.register = Register(
            PURPOSES, CATEGORIES, (*COMPATIBILITY, _compatible("hr-fraud", "hr", "fraud"))
        )
        d = judge(engine, "hr.recruitment", "fraud.prevention", at=EARLY)
        assert d.rule == "compatibility:hr-fraud"

    def test_no_store_lookup_when_nothing_subject_dependent_matters(self) -> None:
        """A same-purpose read under a non-consent, non-marketing purpose never reads the store."""

        class CountingStore:
            """A Store that counts its reads."""

            def __init__(self) -> None:
                self.inner = InMemoryStore()
                self.reads = 0

            @property
            def version(self) -> int | None:
                return self.inner.version

            def subject_events(self, subject: str) -> SubjectEvents:
                self.reads += 1
                return self.inner.subject_events(subject)

            def authorisations(self) -> tuple[Authorisation, ...]:
                self.reads += 1
                return self.inner.authorisations()

        store = CountingStore()
        engine = Engine(REGISTER, store)
        assert judge(engine, "client.orders", "client.orders").allowed
        assert judge(engine, "client.orders", "archive.accounting").allowed
        assert judge(engine, "client.orders", "client.orders", "nir").reason is Reason.EXCESSIVE
        assert store.reads == 0
        assert judge(engine, "client.orders", "prospection.postal", last_contact=AT).allowed
        assert store.reads == 1
        engine.decide(
            tag("hr.recruitment"), ["identity.name", "contact.email"], "fraud.prevention", AT
        )
        assert store.reads == 3  # one events read and one authorisations read for the whole record

    def test_thread_safety(self) -> None:
        """Concurrent first decisions give the same answers as sequential ones."""
        engine = engine_with(consent("prospection.postal", T0))
        cases = [(p0, p, c) for p0 in PURPOSE_IDS for p in PURPOSE_IDS for c in CATEGORY_IDS]
        expected = {
            case: judge(engine_with(consent("prospection.postal", T0)), *case) for case in cases
        }
        results: dict[tuple[str, str, str], CategoryDecision] = {}

        def work(chunk: list[tuple[str, str, str]]) -> None:
            for case in chunk:
                results[case] = judge(engine, *case)

        threads = [threading.Thread(target=work, args=(cases[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == expected


# =========================================================================== the `until` instant


class TestUntil:
    """decide_category's second item: the decision holds on [at, until)."""

    def assert_holds(
        self,
        engine: Engine,
        p0: str,
        p: str,
        category: str,
        at: datetime,
        **anchors: datetime | None,
    ) -> datetime | None:
        first, until = engine.decide_category(
            p,
            p0,
            category,
            SUBJECT,
            anchors.get("collected_at") or T0,
            anchors.get("last_contact"),
            anchors.get("contract_end"),
            at,
        )
        assert until is None or until > at
        if until is not None:
            later, _ = engine.decide_category(
                p,
                p0,
                category,
                SUBJECT,
                anchors.get("collected_at") or T0,
                anchors.get("last_contact"),
                anchors.get("contract_end"),
                until - MICRO,
            )
            assert later == first
        return until

    def test_retention_end(self) -> None:
        """Until is the retention end for a plain same-purpose read."""
        engine = engine_with()
        until = self.assert_holds(
            engine, "fraud.prevention", "fraud.prevention", "identity.name", T0
        )
        assert until == datetime(2025, 1, 10, 9, 0, tzinfo=UTC)

    def test_consent_withdrawal(self) -> None:
        """Until is a later withdrawal of the deciding consent."""
        w = AT + timedelta(days=3)
        engine = engine_with(
            consent("newsletter.events", T0),
            Withdrawal(subject=SUBJECT, purposes="newsletter", at=w),
        )
        until = self.assert_holds(
            engine, "newsletter.events", "newsletter.events", "contact.email", AT
        )
        assert until == w
        assert judge(
            engine, "newsletter.events", "newsletter.events", "contact.email", at=w
        ).reason is (Reason.CONSENT_WITHDRAWN)

    def test_later_contact_and_contract_end(self) -> None:
        """A last contact or contract end dated after T bounds the decision."""
        engine = engine_with()
        contact = AT + timedelta(days=5)
        until = self.assert_holds(
            engine, "hr.recruitment", "hr.recruitment", "identity.name", AT, last_contact=contact
        )
        assert until == contact
        ended = AT + timedelta(days=7)
        until2 = self.assert_holds(
            engine, "client.orders", "client.orders", "identity.name", AT, contract_end=ended
        )
        assert until2 == ended

    def test_objection_and_authorisation(self) -> None:
        """A later objection or the end of an authorisation bounds the decision."""
        made = AT + timedelta(days=2)
        engine = engine_with(Objection(subject=SUBJECT, at=made))
        assert (
            self.assert_holds(
                engine, "client.orders", "prospection.postal", "identity.name", AT, last_contact=AT
            )
            == made
        )
        ends = AT + timedelta(days=4)
        auth = Authorisation(
            id="a",
            from_="hr",
            to="fraud.prevention",
            reference="r",
            valid_from=T0,
            valid_until=ends,
        )
        engine2 = engine_with(auth)
        assert (
            self.assert_holds(engine2, "hr.recruitment", "fraud.prevention", "identity.name", AT)
            == ends
        )

    def test_never_changes(self) -> None:
        """Unknown ids and unstarted clocks never change."""
        engine = engine_with()
        assert self.assert_holds(engine, "client.orders", "nope", "identity.name", AT) is None
        assert (
            self.assert_holds(engine, "client.orders", "client.orders", "identity.name", AT) is None
        )

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.data())
    def test_decision_is_constant_on_at_until(self, data: st.DataObject) -> None:
        """For random events and instants, the decision is constant on [at, until)."""
        days = st.integers(min_value=0, max_value=3000)

        def instant(d: int) -> datetime:
            return T0 + timedelta(days=d)

        purposes = st.sampled_from(
            [
                "newsletter",
                "newsletter.events",
                "prospection",
                "prospection.postal",
                "fraud.prevention",
                "hr",
            ]
        )
        consents = st.lists(
            st.builds(
                lambda p, g, state, w, e, mech: consent(
                    p,
                    instant(g),
                    state=state,
                    withdrawn_at=None if w is None else instant(g + w),
                    expires_at=None if e is None else instant(e),
                    mechanism=mech,
                ),
                purposes,
                days,
                st.sampled_from(["given", "given", "refused", "not-asked"]),
                st.none() | days,
                st.none() | days,
                st.sampled_from([None, "button", "pre-ticked"]),
            ),
            max_size=4,
        )
        withdrawals = st.lists(
            st.builds(
                lambda p, d: Withdrawal(subject=SUBJECT, purposes=p, at=instant(d)), purposes, days
            ),
            max_size=2,
        )
        objections = st.lists(
            st.builds(
                lambda a, w: Objection(
                    subject=SUBJECT,
                    at=instant(a),
                    withdrawn_at=None if w is None else instant(a + w),
                ),
                days,
                st.none() | days,
            ),
            max_size=2,
        )
        auths = st.lists(
            st.builds(
                lambda i, f, t, v, u: Authorisation(
                    id=f"auth-{i}",
                    from_=f,
                    to=t,
                    reference="ref",
                    valid_from=instant(v),
                    valid_until=None if u is None else instant(v + u + 1),
                ),
                st.integers(0, 9),
                st.sampled_from(["hr", "client", "newsletter"]),
                st.sampled_from(["fraud.prevention", "prospection", "statistics.sales"]),
                days,
                st.none() | days,
            ),
            max_size=2,
            unique_by=lambda a: a.id,
        )
        events = SubjectEvents(
            consents=tuple(data.draw(consents)),
            withdrawals=tuple(data.draw(withdrawals)),
            objections=tuple(data.draw(objections)),
        )
        authorisations = tuple(data.draw(auths))
        p0 = data.draw(st.sampled_from(PURPOSE_IDS))
        p = data.draw(st.sampled_from(PURPOSE_IDS))
        category = data.draw(st.sampled_from(CATEGORY_IDS))
        collected = instant(data.draw(st.integers(0, 300)))
        contact = data.draw(st.none() | days.map(instant))
        ended = data.draw(st.none() | days.map(instant))
        at = instant(data.draw(days)) + timedelta(seconds=data.draw(st.integers(0, 86399)))

        def at_instant(t: datetime) -> tuple[CategoryDecision, datetime | None]:
            return ENGINE.decide_category(
                p,
                p0,
                category,
                SUBJECT,
                collected,
                contact,
                ended,
                t,
                events=events,
                authorisations=authorisations,
            )

        first, until = at_instant(at)
        assert until is None or until > at
        horizon = until if until is not None else at + timedelta(days=20000)
        span = int((horizon - at) / MICRO)
        for offset in {0, span - 1, data.draw(st.integers(0, span - 1))}:
            assert at_instant(at + offset * MICRO)[0] == first


ENGINE = Engine(REGISTER)


# =========================================================================== properties


@st.composite
def subject_ids(draw: st.DrawFn) -> str:
    """Distinctive subject ids (e-mail addresses) that cannot occur in policy text by chance."""
    local = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=12))
    return f"{local}.{draw(st.integers(1000, 9999))}@mail.example"


class TestProperties:
    """Hypothesis properties of the pure core."""

    @settings(max_examples=150, deadline=None)
    @given(
        p=st.sampled_from(PURPOSES),
        offset=st.integers(min_value=0, max_value=200),
        subject=subject_ids(),
    )
    def test_compatibility_is_reflexive(self, p: Purpose, offset: int, subject: str) -> None:
        """Same purpose, listed category, in retention, no objection: allowed.

        A purpose resting on consent also needs the consent (step 5).
        """
        categories = [c for c in CATEGORY_IDS if not ENGINE._plan(p.id, p.id, c).excessive]
        assert categories
        at = T0 + timedelta(days=offset)
        events = SubjectEvents(consents=(consent(p.id, T0, subject=subject),))
        for category in categories:
            d, _ = ENGINE.decide_category(
                p.id, p.id, category, subject, T0, None, None, at, events=events, authorisations=()
            )
            assert d.allowed
            assert d.reason in (Reason.SAME_PURPOSE, Reason.CONSENT)
            if p.legal_basis != "consent":
                d2, _ = ENGINE.decide_category(
                    p.id,
                    p.id,
                    category,
                    subject,
                    T0,
                    None,
                    None,
                    at,
                    events=SubjectEvents(),
                    authorisations=(),
                )
                assert d2.reason is Reason.SAME_PURPOSE

    @settings(max_examples=150, deadline=None)
    @given(
        p0=st.sampled_from(PURPOSE_IDS),
        p=st.sampled_from(PURPOSE_IDS),
        category=st.sampled_from(CATEGORY_IDS),
        given_day=st.integers(0, 400),
        ends_after=st.integers(0, 400),
        kind=st.sampled_from(["withdrawn", "expired", "withdrawal-event"]),
        after=st.integers(0, 400),
    )
    def test_a_withdrawn_or_expired_consent_never_allows(
        self, p0: str, p: str, category: str, given_day: int, ends_after: int, kind: str, after: int
    ) -> None:
        """A withdrawn or expired consent never allows through the consent path."""
        given_at = T0 + timedelta(days=given_day)
        end = given_at + timedelta(days=ends_after)
        at = end + timedelta(days=after)
        record = consent(
            p,
            given_at,
            withdrawn_at=end if kind == "withdrawn" else None,
            expires_at=end if kind == "expired" else None,
        )
        withdrawals = (
            (Withdrawal(subject=SUBJECT, purposes=p, at=end),) if kind == "withdrawal-event" else ()
        )
        events = SubjectEvents(consents=(record,), withdrawals=withdrawals)
        d, _ = ENGINE.decide_category(
            p, p0, category, SUBJECT, T0, None, None, at, events=events, authorisations=()
        )
        assert d.reason is not Reason.CONSENT
        without, _ = ENGINE.decide_category(
            p, p0, category, SUBJECT, T0, None, None, at, events=SubjectEvents(), authorisations=()
        )
        assert without.allowed or not d.allowed  # it never adds a permission

    @settings(max_examples=150, deadline=None)
    @given(
        subject=subject_ids(),
        value=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=8, max_size=16),
        p0=st.sampled_from((*PURPOSE_IDS, "undeclared")),
        p=st.none() | st.sampled_from((*PURPOSE_IDS, "undeclared")),
        categories=st.lists(st.sampled_from((*CATEGORY_IDS, "shoe_size")), min_size=1, max_size=3),
        with_events=st.booleans(),
        day=st.integers(0, 4000),
    )
    def test_no_decision_holds_a_value_or_the_subject_id(
        self,
        subject: str,
        value: str,
        p0: str,
        p: str | None,
        categories: list[str],
        with_events: bool,
        day: int,
    ) -> None:
        """Neither repr nor to_dict of a decision contains a field value or the subject id."""
        record = {"name": value, "email": subject}
        events: dict[str, object] = {}
        if with_events:
            events = {
                "consents": [consent("prospection", T0, subject=subject, state="refused")],
                "objections": [Objection(subject=subject, at=T0)],
                "withdrawals": [Withdrawal(subject=subject, purposes="newsletter", at=T0)],
            }
        decision = ENGINE.decide(
            tag(p0, subject=record["email"]),
            categories,
            p,
            T0 + timedelta(days=day),
            **events,  # type: ignore[arg-type]
        )
        assert isinstance(decision, Decision)
        text = repr(decision) + repr(decision.to_dict()) + str(decision.to_dict())
        assert subject not in text
        assert value not in text
        for part in decision.categories:
            assert subject not in part.explanation
