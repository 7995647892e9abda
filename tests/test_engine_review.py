"""An independent review of the decision engine against DESIGN §3 and §6.

Every test names, in its docstring, the DESIGN sentence it checks, and adds
coverage beyond tests/test_engine.py. The "interpretations" section pins the
reading purposelimit takes of sentences of DESIGN that can be read two ways
(docs/decisions.md, "Interpretations"): each docstring states the reading and
why, and each test fails under the other reading. The last section checks the
engine against a small, literal reference reading of §3 on random inputs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purposelimit._engine import Engine, consent_state
from purposelimit._ids import covers, depth
from purposelimit._model import (
    Authorisation,
    CategoryDecision,
    Collection,
    CollectionTag,
    Compatibility,
    Consent,
    ConsentAnswer,
    ConsentState,
    DataCategory,
    Evidence,
    Objection,
    Purpose,
    Reason,
    Retention,
    Verdict,
)
from purposelimit._register import Register
from purposelimit._store import SubjectEvents, Withdrawal
from purposelimit._time import add_duration

# --------------------------------------------------------------------------- a small register

S = "lead-42"
T0 = datetime(2024, 1, 10, 9, 0, tzinfo=UTC)
AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MICRO = timedelta(microseconds=1)


def _p(
    id_: str, basis: str, duration: str, anchor: str, cats: tuple[str, ...], **kw: object
) -> Purpose:
    return Purpose(
        id=id_,
        label=id_,
        description=f"the {id_} purpose of the review register",
        legal_basis=basis,
        retention=Retention(duration, anchor),
        categories=cats,
        **kw,  # type: ignore[arg-type]
    )


def _compatible(id_: str, from_: str, to: str) -> Compatibility:
    return Compatibility(
        id=id_,
        from_=from_,
        to=to,
        verdict="compatible",
        link="l",
        context="c",
        nature="n",
        consequences="c",
        safeguards=("s",),
    )


def _prohibited(id_: str, from_: str, to: str) -> Compatibility:
    return Compatibility(id=id_, from_=from_, to=to, verdict="prohibited", source="review")


CATEGORIES = (
    DataCategory(id="identity"),
    DataCategory(id="identity.name"),
    DataCategory(id="contact"),
    DataCategory(id="contact.email"),
    DataCategory(id="transaction"),
    DataCategory(id="special", sensitive=True),
    DataCategory(id="special.health"),
)

PURPOSES = (
    _p("orders", "contract", "P5Y", "end-of-contract", ("identity", "contact", "transaction")),
    _p("orders.confirm", "contract", "P3Y", "collection", ("identity.name", "contact.email")),
    _p(
        "mkt.postal",
        "legitimate-interests",
        "P3Y",
        "last-contact",
        ("identity", "contact"),
        direct_marketing=True,
    ),
    # a child of a direct-marketing purpose that does not declare the flag itself
    _p(
        "mkt.postal.partner", "legitimate-interests", "P3Y", "last-contact", ("identity", "contact")
    ),
    _p(
        "mkt.email",
        "consent",
        "P3Y",
        "last-contact",
        ("identity", "contact.email"),
        direct_marketing=True,
    ),
    _p("news", "consent", "P1Y", "last-contact", ("contact.email",), direct_marketing=True),
    _p(
        "stats",
        "legitimate-interests",
        "P5Y",
        "collection",
        ("identity", "transaction"),
        archiving_or_statistics=True,
    ),
    _p("stats.detail", "legitimate-interests", "P5Y", "collection", ("identity", "transaction")),
    _p(
        "archive",
        "legal-obligation",
        "P10Y",
        "collection",
        ("identity", "transaction"),
        archive=True,
    ),
    _p("archive.extra", "legal-obligation", "P10Y", "collection", ("identity", "transaction")),
    _p(
        "hr",
        "contract",
        "P2Y",
        "last-contact",
        ("identity", "contact"),
        sensitive_categories=("special.health",),
    ),
    _p("fraud", "legitimate-interests", "P1Y", "collection", ("identity", "contact")),
    _p("vault", "legitimate-interests", "P1Y", "collection", ("identity",)),
    _p("care", "contract", "P1Y", "collection", ("identity",)),
)

COMPATIBILITY = (
    _compatible("orders-postal", "orders", "mkt.postal"),
    _compatible("orders-email", "orders", "mkt.email"),
    _compatible("orders-archive", "orders", "archive"),
    _compatible("fraud-postal", "fraud", "mkt.postal"),
    _prohibited("hr-no-mkt", "hr", "mkt"),
    _prohibited("hr-no-stats", "hr", "stats"),
    _prohibited("vault-sealed", "vault", "vault"),
)

REGISTER = Register(PURPOSES, CATEGORIES, COMPATIBILITY, version="review")
ENGINE = Engine(REGISTER)


def judge(
    p0: str,
    p: str,
    category: str = "identity.name",
    at: datetime = AT,
    *,
    consents: tuple[Consent, ...] = (),
    withdrawals: tuple[Withdrawal, ...] = (),
    objections: tuple[Objection, ...] = (),
    authorisations: tuple[Authorisation, ...] = (),
    collected_at: datetime = T0,
    last_contact: datetime | None = None,
    contract_end: datetime | None = None,
) -> CategoryDecision:
    decision, _until = ENGINE.decide_category(
        p,
        p0,
        category,
        S,
        collected_at,
        last_contact,
        contract_end,
        at,
        events=SubjectEvents(consents, withdrawals, objections),
        authorisations=authorisations,
    )
    return decision


def grant(
    purposes: str | tuple[str, ...],
    given_at: datetime,
    *,
    id_: str,
    state: str = "given",
    withdrawn_at: datetime | None = None,
    expires_at: datetime | None = None,
    mechanism: str | None = "button",
) -> Consent:
    return Consent(
        subject=S,
        purposes=purposes,
        given_at=given_at,
        state=state,
        withdrawn_at=withdrawn_at,
        expires_at=expires_at,
        evidence=Evidence(mechanism=mechanism) if mechanism else None,
        id=id_,
    )


def auth(id_: str, from_: str, to: str, valid_from: datetime = T0, **kw: object) -> Authorisation:
    return Authorisation(
        id=id_,
        from_=from_,
        to=to,
        reference=f"order {id_}",
        valid_from=valid_from,
        **kw,  # type: ignore[arg-type]
    )


def state(
    *records: Consent,
    purpose: str = "news",
    at: datetime = AT,
    withdrawals: tuple[Withdrawal, ...] = (),
) -> ConsentState:
    return consent_state(SubjectEvents(consents=records, withdrawals=withdrawals), purpose, at)[0]


# =========================================================================== consent state


class TestConsentStateReview:
    """DESIGN §3 "Consent state at T", cases beyond tests/test_engine.py."""

    def test_two_weak_records_after_a_valid_one_leave_it_valid(self) -> None:
        """DESIGN §3: "a `not-asked` or `invalid` record does not displace an earlier record
        whose state at T is `valid`" — neither does a chain of them (not-asked, then invalid)."""
        records = (
            grant("news", T0, id_="ok"),
            grant("news", T0 + DAY, id_="na", state="not-asked"),
            grant("news", T0 + 2 * DAY, id_="pt", mechanism="pre-ticked"),
        )
        assert state(*records) is ConsentState.VALID, (
            "DESIGN §3: 'a not-asked or invalid record does not displace an earlier record whose "
            "state at T is valid'"
        )

    def test_same_instant_weak_pair_after_a_valid_one(self) -> None:
        """DESIGN §3: same-instant ranking "invalid > not-asked" picks the invalid record, which
        still does not displace the earlier `valid` one."""
        records = (
            grant("news", T0, id_="ok"),
            grant("news", T0 + DAY, id_="na", state="not-asked"),
            grant("news", T0 + DAY, id_="pt", mechanism="silence"),
        )
        assert consent_state(SubjectEvents(consents=records), "news", AT) == (
            ConsentState.VALID,
            records[0],
        )

    def test_same_instant_expired_beats_not_asked_after_a_valid_one(self) -> None:
        """DESIGN §3: "Records given at the same instant rank ... expired > ... > not-asked";
        the expired one is not weak, so it displaces the earlier valid record."""
        later = T0 + DAY
        records = (
            grant("news", T0, id_="ok"),
            grant("news", later, id_="na", state="not-asked"),
            grant("news", later, id_="ex", expires_at=later + DAY),
        )
        assert state(*records) is ConsentState.EXPIRED

    def test_a_withdrawn_invalid_grant_tie_with_expiry_is_withdrawn(self) -> None:
        """DESIGN §3: "the earlier one names the state (withdrawal on a tie), and a withdrawn or
        expired grant is `withdrawn` or `expired` even if it was invalid"."""
        end = T0 + 10 * DAY
        record = grant("news", T0, id_="x", withdrawn_at=end, expires_at=end, mechanism="bundled")
        assert state(record) is ConsentState.WITHDRAWN
        assert state(record, at=end - MICRO) is ConsentState.INVALID

    def test_given_and_withdrawn_at_exactly_t(self) -> None:
        """DESIGN §3: "an event dated exactly T has happened at T": a grant given and withdrawn
        at the same instant T is withdrawn at T (also by a withdrawal event at T)."""
        record = grant("news", AT, id_="x", withdrawn_at=AT)
        assert state(record) is ConsentState.WITHDRAWN
        plain = grant("news", AT, id_="y")
        event = Withdrawal(subject=S, purposes="news", at=AT)
        assert state(plain, withdrawals=(event,)) is ConsentState.WITHDRAWN

    def test_a_more_specific_record_given_after_t_does_not_hide_the_broader_one(self) -> None:
        """DESIGN §3: "Take S's records whose purposes cover P, given at or before T, and keep
        those naming the most specific covering purpose" — records given after T are filtered
        first, so a later refusal naming P itself does not hide a grant naming its group."""
        records = (
            grant("mkt", T0, id_="group"),
            grant("mkt.email", AT + DAY, id_="later", state="refused"),
        )
        assert state(*records, purpose="mkt.email") is ConsentState.VALID
        assert state(*records, purpose="mkt.email", at=AT + DAY) is ConsentState.REFUSED


# ================================================================= flags, groups, hierarchy


class TestFlagsAndHierarchy:
    """DESIGN §2 "Flags are not inherited" and §3 "Matching by hierarchy"."""

    def test_direct_marketing_is_not_inherited(self) -> None:
        """DESIGN §2: "Flags are not inherited: each purpose declares its own" — step 3 only
        applies when "P is flagged `direct_marketing`"."""
        objection = (Objection(subject=S, at=T0, id="obj"),)
        assert judge("mkt.postal", "mkt.postal", objections=objection).reason is Reason.OBJECTION
        d = judge("mkt.postal", "mkt.postal.partner", objections=objection)
        assert (d.allowed, d.reason) == (True, Reason.NARROWER_PURPOSE)

    def test_archiving_or_statistics_is_not_inherited(self) -> None:
        """DESIGN §2 "Flags are not inherited"; §3 presumed-compatible needs "P is flagged
        `archiving_or_statistics`"."""
        assert judge("fraud", "stats").reason is Reason.PRESUMED_COMPATIBLE
        assert judge("fraud", "stats.detail").reason is Reason.INCOMPATIBLE

    def test_archive_is_not_inherited(self) -> None:
        """DESIGN §3: "P0's clause is waived when P is flagged `archive`" — a child of an archive
        purpose reached by the same compatible entry still needs P0's retention."""
        ended = datetime(2024, 3, 1, tzinfo=UTC)
        late = add_duration(ended, Retention("P5Y").duration)  # orders' retention has ended
        assert judge("orders", "archive", at=late, contract_end=ended).reason is Reason.COMPATIBLE
        d = judge("orders", "archive.extra", at=late, contract_end=ended)
        assert (d.reason, d.rule) == (Reason.RETENTION_EXPIRED, "retention:orders")

    def test_a_group_is_not_a_collection_purpose(self) -> None:
        """DESIGN §2: "A group is not a purpose: nothing is processed 'for' a group" — data
        said to be collected for a group is `unknown-purpose` (step 1)."""
        d = judge("mkt", "mkt.postal")
        assert (d.reason, d.rule) == (Reason.UNKNOWN_PURPOSE, "register")


# =========================================================================== prohibition


class TestProhibitionReview:
    """DESIGN §3 step 6: "A prohibition beats every other path, the hierarchy included"."""

    def test_a_prohibition_beats_the_same_purpose(self) -> None:
        """Step 6: "A prohibition beats every other path" — the same-purpose path too; only a
        consent or an authorisation within retention lifts it."""
        d = judge("vault", "vault")
        assert (d.reason, d.rule) == (Reason.PROHIBITED, "compatibility:vault-sealed")
        lifted = judge("vault", "vault", consents=(grant("vault", T0, id_="v"),))
        assert (lifted.reason, lifted.rule) == (Reason.CONSENT, "consent:v")
        by_order = judge("vault", "vault", authorisations=(auth("court", "vault", "vault"),))
        assert (by_order.reason, by_order.rule) == (Reason.AUTHORISATION, "authorisation:court")

    def test_a_prohibition_beats_presumed_compatibility(self) -> None:
        """Step 6 beats the presumed-compatible path; step 8-style refinement in step 6 names
        the consent state instead of `prohibited` (refused here)."""
        assert judge("hr", "stats").reason is Reason.PROHIBITED
        refused = grant("stats", T0, id_="no", state="refused")
        d = judge("hr", "stats", consents=(refused,))
        assert (d.reason, d.rule) == (Reason.CONSENT_REFUSED, "consent:no")

    def test_an_authorisation_ending_exactly_at_t_no_longer_lifts(self) -> None:
        """DESIGN §3: every validity window "includes its start and excludes its end"."""
        a = auth("a1", "hr", "mkt.postal", valid_from=AT - DAY, valid_until=AT)
        assert judge("hr", "mkt.postal", at=AT - MICRO, authorisations=(a,)).allowed
        assert judge("hr", "mkt.postal", authorisations=(a,)).reason is Reason.PROHIBITED
        b = auth("a2", "hr", "mkt.postal", valid_from=AT)
        assert judge("hr", "mkt.postal", authorisations=(b,)).reason is Reason.AUTHORISATION


# =========================================================================== retention


class TestRetentionReview:
    """DESIGN §3 "Retention of a path" and step 2."""

    def test_a_consent_basis_keeps_a_consent_purpose_alive_after_its_own_line_ends(self) -> None:
        """Step 2: retention-expired only when "every existing path is out of retention"; a
        consent given later is a new basis ("its anchor is moved to ... the consent's given-at")
        so the same-purpose read of a consent-based purpose goes on, with reason `consent`."""
        late = T0 + timedelta(days=400)  # news: P1Y from the last contact (T0 here)
        assert judge("news", "news", "contact.email", late).reason is Reason.RETENTION_EXPIRED
        renewed = grant("news", T0 + timedelta(days=300), id_="renew")
        d = judge("news", "news", "contact.email", late, consents=(renewed,))
        assert (d.reason, d.rule) == (Reason.CONSENT, "consent:renew")

    def test_retention_expired_comes_before_consent_missing_and_refused(self) -> None:
        """Step 2 precedes step 5: the same-purpose path exists and is out of retention."""
        late = T0 + timedelta(days=400)
        refused = grant("news", T0, id_="r", state="refused")
        for consents in ((), (refused,)):
            d = judge("news", "news", "contact.email", late, consents=consents)
            assert (d.reason, d.rule) == (Reason.RETENTION_EXPIRED, "retention:news")

    def test_an_unstarted_clock_stays_unstarted_for_a_consent_path(self) -> None:
        """DESIGN §3: "A clock that has not started (end of contract unknown) stays unstarted";
        a contract end dated after T is ignored."""
        c = grant("orders", T0, id_="c")
        far = datetime(2090, 1, 1, tzinfo=UTC)
        assert judge("fraud", "orders", at=far, consents=(c,)).reason is Reason.CONSENT
        assert (
            judge("fraud", "orders", at=far, consents=(c,), contract_end=far + DAY).reason
            is Reason.CONSENT
        )
        ended = datetime(2030, 1, 1, tzinfo=UTC)
        assert (
            judge("fraud", "orders", at=far, consents=(c,), contract_end=ended).reason
            is Reason.RETENTION_EXPIRED
        )

    def test_a_consent_anchor_is_the_later_of_anchor_and_given_at(self) -> None:
        """DESIGN §3: a consent path's anchor "is moved to the later of the anchor and the
        consent's given-at" — here the contract end is later than the consent."""
        c = grant("orders", T0, id_="c")
        ended = datetime(2026, 1, 1, tzinfo=UTC)
        end = datetime(2031, 1, 1, tzinfo=UTC)  # orders: P5Y from end of contract
        kw = {"consents": (c,), "contract_end": ended}
        assert judge("fraud", "orders", at=end - MICRO, **kw).reason is Reason.CONSENT  # type: ignore[arg-type]
        assert judge("fraud", "orders", at=end, **kw).reason is Reason.RETENTION_EXPIRED  # type: ignore[arg-type]

    def test_a_last_contact_after_t_is_ignored_for_the_authorisation_anchor(self) -> None:
        """DESIGN §3: "Anything dated after T is ignored ... a last contact"; "last contact
        (T1, falling back to T0 when unknown)"; an authorisation's anchor moves to valid-from."""
        a = auth("a", "care", "mkt.postal.partner", valid_from=T0 - timedelta(days=30))
        end = add_duration(T0, Retention("P3Y").duration)
        assert judge("care", "mkt.postal.partner", at=end - MICRO, authorisations=(a,)).allowed
        d = judge("care", "mkt.postal.partner", at=end, authorisations=(a,), last_contact=end + DAY)
        assert d.reason is Reason.RETENTION_EXPIRED


# =========================================================================== objections


class TestObjectionReview:
    """DESIGN §3 step 3 at the boundaries, through decide()."""

    def test_objection_window_is_half_open_through_decide(self) -> None:
        """Step 3: "an objection made at or before T and not withdrawn at T"."""
        tag = CollectionTag(
            subject=S, collection=Collection("orders"), collected_at=T0, last_contact_at=T0
        )
        made = Objection(subject=S, at=AT, id="o1")
        d = ENGINE.decide(tag, ["identity.name"], "mkt.postal", AT, objections=[made])
        assert (d.reason, d.rule) == (Reason.OBJECTION, "objection:o1")
        gone = Objection(subject=S, at=T0, withdrawn_at=AT, id="o2")
        d2 = ENGINE.decide(tag, ["identity.name"], "mkt.postal", AT, objections=[gone])
        assert d2.reason is Reason.COMPATIBLE


# =========================================================================== record level


class TestRecordLevelReview:
    """DESIGN §6: "those of the category whose denial comes earliest in the order of §3 (ties:
    request order); when all are allowed, those of the first category"."""

    TAG = CollectionTag(subject=S, collection=Collection("hr"), collected_at=T0)

    def test_category_specific_authorisations(self) -> None:
        """Categories are judged one by one (§3 "The steps"); an authorisation covers "the
        category being judged" only."""
        a = auth("names", "hr", "mkt.postal", categories=("identity",))
        d = ENGINE.decide(
            self.TAG, ["identity.name", "contact.email"], "mkt.postal", AT, authorisations=[a]
        )
        assert not d.allowed
        assert [c.reason for c in d.categories] == [Reason.AUTHORISATION, Reason.PROHIBITED]
        assert (d.reason, d.rule) == (Reason.PROHIBITED, "compatibility:hr-no-mkt")

    def test_all_allowed_gives_the_first_categorys_rule(self) -> None:
        """§6: "when all are allowed, those of the first category"."""
        a = auth("names", "hr", "mkt.postal", categories=("identity",))
        b = auth("mails", "hr", "mkt.postal", categories=("contact",))
        d = ENGINE.decide(
            self.TAG, ["contact.email", "identity.name"], "mkt.postal", AT, authorisations=[a, b]
        )
        assert d.allowed
        assert (d.reason, d.rule) == (Reason.AUTHORISATION, "authorisation:mails")

    def test_an_earlier_step_in_a_later_category_wins(self) -> None:
        """§6: the earliest denial "in the order of §3" wins over request order: `excessive`
        (step 4) first in the request, `retention-expired` (step 2) second."""
        late = T0 + timedelta(days=1200)
        a = auth("old", "hr", "fraud", valid_from=T0, categories=("identity",))
        d = ENGINE.decide(
            self.TAG, ["transaction", "identity.name"], "fraud", late, authorisations=[a]
        )
        assert [c.reason for c in d.categories] == [Reason.EXCESSIVE, Reason.RETENTION_EXPIRED]
        assert (d.reason, d.rule) == (Reason.RETENTION_EXPIRED, "retention:fraud")


# =========================================================================== interpretations
#
# Each test below pins the reading purposelimit takes of a DESIGN sentence that can be read two
# ways (docs/decisions.md, "Interpretations"); each would fail under the other reading.


def test_a_weak_record_displaces_an_expired_record_even_after_a_valid_one() -> None:
    """DESIGN §3: "The most recent of them by given-at decides — except that a `not-asked` or
    `invalid` record does not displace an earlier record whose state at T is `valid`, `refused`
    or `withdrawn`".

    Reading taken: the exception protects the record in force when the weak record comes; a
    valid record already displaced by a later expired one is no longer a confirmed consent to
    protect, so valid -> expired -> not-asked is `not-asked`, not `expired`.
    """
    records = (
        grant("news", T0, id_="ok"),
        grant("news", T0 + DAY, id_="ex", expires_at=T0 + 2 * DAY),
        grant("news", T0 + 3 * DAY, id_="na", state="not-asked"),
    )
    assert consent_state(SubjectEvents(consents=records), "news", AT) == (
        ConsentState.NOT_ASKED,
        records[2],
    )
    d = judge("news", "news", "contact.email", consents=records)
    assert (d.allowed, d.reason, d.rule) == (False, Reason.CONSENT_MISSING, "consent:na")


def test_an_authorisation_within_retention_beats_a_more_specific_one_out_of_it() -> None:
    """DESIGN §3: "where several of the same kind match, the one naming the most specific purpose
    decides"; step 2: `retention-expired` only when "every existing path is out of retention".

    Reading taken: among authorisations valid at T, specificity ranks only those whose path is
    within retention; each authorisation is a basis of its own, so one within retention is an
    existing path within retention and step 2 cannot deny.
    """
    broad = auth("broad", "care", "mkt", valid_from=T0 + timedelta(days=300))
    narrow = auth("narrow", "care", "mkt.postal.partner", valid_from=T0)
    at = T0 + timedelta(days=3 * 365 + 10)  # narrow: P3Y from T0 has ended; broad has not
    alone = judge("care", "mkt.postal.partner", at=at, authorisations=(narrow,))
    assert (alone.reason, alone.rule) == (
        Reason.RETENTION_EXPIRED,
        "retention:mkt.postal.partner",
    )
    d = judge("care", "mkt.postal.partner", at=at, authorisations=(broad, narrow))
    assert (d.allowed, d.reason, d.rule) == (True, Reason.AUTHORISATION, "authorisation:broad")


def test_a_lifted_prohibition_is_allowed_with_the_lifting_paths_reason() -> None:
    """DESIGN §3 step 6: "only a `consent` or `authorisation` path (within retention) lifts it.
    A prohibition beats every other path"; step 7: "Allowed, with the reason of the first allow
    path that is within retention".

    Reading taken: a lifted prohibition is allowed at step 6 with the reason and rule of the
    path that lifted it (`consent`, `authorisation`), not those of an own-line path such as
    `presumed-compatible` that the prohibition beats and that therefore makes nothing lawful.
    """
    assert judge("hr", "stats").reason is Reason.PROHIBITED
    d = judge("hr", "stats", consents=(grant("stats", T0, id_="ok"),))
    assert (d.allowed, d.reason, d.rule) == (True, Reason.CONSENT, "consent:ok")
    by_order = judge("hr", "stats", authorisations=(auth("court", "hr", "stats"),))
    assert (by_order.allowed, by_order.reason, by_order.rule) == (
        True,
        Reason.AUTHORISATION,
        "authorisation:court",
    )


def test_a_refusal_overrides_a_compatible_entry_only_for_a_consent_based_purpose() -> None:
    """DESIGN §3 step 5: "A withdrawn or refused consent for P denies even when a `compatible`
    entry covers the reuse: an expressed refusal always counts."

    Reading taken: the sentence belongs to step 5, so it applies to purposes resting on consent
    only; for another legal basis consent is not what makes the read lawful, and the person's
    way to stop direct marketing is an objection (step 3).
    """
    refused = grant("mkt.postal", T0, id_="no", state="refused")
    d = judge("orders", "mkt.postal", consents=(refused,), last_contact=AT)
    assert (d.allowed, d.reason, d.rule) == (True, Reason.COMPATIBLE, "compatibility:orders-postal")
    refused_email = grant("mkt.email", T0, id_="no-mail", state="refused")
    e = judge("orders", "mkt.email", consents=(refused_email,), last_contact=AT)
    assert (e.allowed, e.reason, e.rule) == (False, Reason.CONSENT_REFUSED, "consent:no-mail")


def test_a_grant_without_a_recorded_mechanism_is_valid() -> None:
    """DESIGN §3: "`valid` (given, with a valid mechanism, given-at ≤ T, ...)"; "A grant is
    `invalid` when its evidence shows it was not a clear affirmative act: mechanism
    `pre-ticked`, `bundled` ..., `implied` or `silence`".

    Reading taken: only a recorded invalid mechanism makes a grant `invalid`; evidence and its
    mechanism are optional (§6), and a grant recording none shows no invalid act, so it is
    `valid`.
    """
    bare = grant("news", T0, id_="bare", mechanism=None)
    assert consent_state(SubjectEvents(consents=(bare,)), "news", AT) == (ConsentState.VALID, bare)
    d = judge("news", "news", "contact.email", consents=(bare,))
    assert (d.allowed, d.reason, d.rule) == (True, Reason.CONSENT, "consent:bare")
    pre_ticked = grant("news", T0, id_="pt", mechanism="pre-ticked")
    assert state(pre_ticked) is ConsentState.INVALID


def test_a_read_before_collection_is_not_denied_for_retention() -> None:
    """DESIGN §3: "Every validity window (consent, authorisation, retention) includes its start
    and excludes its end".

    Reading taken: only the end of a retention window is checked; retention is storage
    limitation (art. 5(1)(e)), which an instant before T0 cannot break, and an impossible
    collection date is an input error (`invalid-row` in bulk), not a retention denial.
    """
    d = judge("fraud", "fraud", at=T0 - DAY)
    assert (d.allowed, d.reason, d.rule) == (True, Reason.SAME_PURPOSE, "purpose:fraud")


def test_an_authorisation_with_an_empty_subject_list_covers_no_one() -> None:
    """DESIGN §3: an authorisation "covers P0 → P and the category being judged, and S if it
    names subjects"; §6: `"subjects"?: [ids] (default: everyone)`.

    Reading taken: only an absent subject list means everyone; an explicit empty list names no
    one, so the authorisation covers nobody — an emptied list must not turn into a permission
    for every data subject.
    """
    nobody = auth("a", "care", "mkt.postal.partner", subjects=())
    d = judge("care", "mkt.postal.partner", authorisations=(nobody,))
    assert (d.allowed, d.reason, d.rule) == (
        False,
        Reason.INCOMPATIBLE,
        "purpose:mkt.postal.partner",
    )
    everyone = auth("b", "care", "mkt.postal.partner")
    named = auth("c", "care", "mkt.postal.partner", subjects=(S,))
    for a in (everyone, named):
        allowed = judge("care", "mkt.postal.partner", authorisations=(a,))
        assert (allowed.reason, allowed.rule) == (Reason.AUTHORISATION, f"authorisation:{a.id}")


def test_explanations_say_the_data_subject_never_the_subject_id() -> None:
    """DESIGN §6 example: `"explanation": "prospection.email_b2c rests on consent and lead-42 has
    given none"`.

    Reading taken: explanations say "the data subject" and never contain the subject id; §2 says
    a decision "Never contains a personal value", and subject ids are often e-mail addresses.
    """
    tag = CollectionTag(subject=S, collection=Collection("hr"), collected_at=T0)
    d = ENGINE.decide(tag, ["identity.name"], "mkt.email", AT)
    assert (d.allowed, d.reason, d.rule) == (False, Reason.CONSENT_MISSING, "purpose:mkt.email")
    assert d.explanation == "mkt.email rests on consent and the data subject has given none"
    assert S not in repr(d)


def test_derived_ids_ignore_offsets_and_purpose_order() -> None:
    """DESIGN §3: "Records without an id get a stable one derived from their content"."""
    paris = datetime(2024, 1, 10, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    a = Consent(subject=S, purposes=("news", "mkt"), given_at=paris)
    b = Consent(subject=S, purposes=("mkt", "news"), given_at=paris.astimezone(UTC))
    assert a.given_at == b.given_at
    assert a.id == b.id, (
        "DESIGN §3: 'Records without an id get a stable one derived from their content' — same "
        f"subject, instant and purposes, yet ids {a.id} and {b.id}"
    )


# =========================================================================== reference reading


_RANK = {
    ConsentState.REFUSED: 5,
    ConsentState.WITHDRAWN: 4,
    ConsentState.EXPIRED: 3,
    ConsentState.VALID: 2,
    ConsentState.INVALID: 1,
    ConsentState.NOT_ASKED: 0,
}
_PROTECTED = {ConsentState.VALID, ConsentState.REFUSED, ConsentState.WITHDRAWN}
_WEAK = {ConsentState.INVALID, ConsentState.NOT_ASKED}
_CONSENT_REASONS = {
    ConsentState.WITHDRAWN: Reason.CONSENT_WITHDRAWN,
    ConsentState.EXPIRED: Reason.CONSENT_EXPIRED,
    ConsentState.REFUSED: Reason.CONSENT_REFUSED,
    ConsentState.INVALID: Reason.CONSENT_INVALID,
    ConsentState.NOT_ASKED: Reason.CONSENT_MISSING,
    ConsentState.NONE: Reason.CONSENT_MISSING,
}
_REFINING = {
    ConsentState.WITHDRAWN,
    ConsentState.EXPIRED,
    ConsentState.REFUSED,
    ConsentState.INVALID,
}


def _covers_any(ids: tuple[str, ...] | None, x: str) -> bool:
    return ids is not None and any(covers(i, x) for i in ids)


def _ref_record_state(
    rec: Consent, p: str, withdrawals: tuple[Withdrawal, ...], t: datetime
) -> ConsentState:
    if rec.state is ConsentAnswer.REFUSED:
        return ConsentState.REFUSED
    if rec.state is ConsentAnswer.NOT_ASKED:
        return ConsentState.NOT_ASKED
    ws = [w.at for w in withdrawals if _covers_any(w.purposes, p) and rec.given_at <= w.at]
    ws += [rec.withdrawn_at] if rec.withdrawn_at is not None else []
    ws = [w for w in ws if w <= t]
    w = min(ws) if ws else None
    e = rec.expires_at if rec.expires_at is not None and rec.expires_at <= t else None
    if w is not None and (e is None or w <= e):
        return ConsentState.WITHDRAWN
    if e is not None:
        return ConsentState.EXPIRED
    mech = rec.evidence.mechanism if rec.evidence else None
    return ConsentState.INVALID if mech is not None and not mech.is_valid else ConsentState.VALID


def _ref_consent_state(
    ev: SubjectEvents, p: str, t: datetime
) -> tuple[ConsentState, Consent | None]:
    def spec(r: Consent) -> int:
        return max((depth(i) for i in r.purposes if covers(i, p)), default=0)

    recs = [r for r in ev.consents if spec(r) and r.given_at <= t]
    if not recs:
        return ConsentState.NONE, None
    best = max(spec(r) for r in recs)
    judged = [(r, _ref_record_state(r, p, ev.withdrawals, t)) for r in recs if spec(r) == best]
    per_instant = []
    for instant in sorted({r.given_at for r, _ in judged}):
        same = sorted(
            (x for x in judged if x[0].given_at == instant), key=lambda x: (_RANK[x[1]], x[0].id)
        )
        per_instant.append(same[-1])
    current = per_instant[0]
    for record, s in per_instant[1:]:
        if not (s in _WEAK and current[1] in _PROTECTED):
            current = (record, s)
    return current[1], current[0]


def _ref_end(
    purpose: Purpose,
    t0: datetime,
    t1: datetime | None,
    t2: datetime | None,
    basis: datetime | None = None,
) -> datetime | None:
    anchor = purpose.retention.anchor.value
    base = t0 if anchor == "collection" else (t1 or t0) if anchor == "last-contact" else t2
    if base is None:
        return None
    if basis is not None and basis > base:
        base = basis
    return add_duration(base, purpose.retention.duration)


def _ref_decide(
    p0: str,
    p: str,
    cat: str,
    t0: datetime,
    t1: datetime | None,
    t2: datetime | None,
    t: datetime,
    ev: SubjectEvents,
    auths: tuple[Authorisation, ...],
) -> tuple[Reason, str | None]:
    """§3 read literally, with the engine's documented interpretations (docs/decisions.md)."""
    pur, pur0 = REGISTER.purpose(p), REGISTER.purpose(p0)
    if pur is None or pur0 is None:
        return Reason.UNKNOWN_PURPOSE, "register"
    if REGISTER.category(cat) is None:
        return Reason.UNKNOWN_CATEGORY, "register"
    t1 = t1 if t1 is not None and t1 <= t else None
    t2 = t2 if t2 is not None and t2 <= t else None

    def inside(end: datetime | None) -> bool:
        return end is None or t < end

    entries = [e for e in REGISTER.compatibility if covers(e.from_, p0) and covers(e.to, p)]
    compatible = [e for e in entries if e.verdict is Verdict.COMPATIBLE]
    prohibited = [e for e in entries if e.verdict is Verdict.PROHIBITED]
    own: tuple[Reason, str] | None = None
    if p == p0:
        own = (Reason.SAME_PURPOSE, f"purpose:{p}")
    elif covers(p0, p):
        own = (Reason.NARROWER_PURPOSE, f"purpose:{p}")
    elif compatible:
        own = (Reason.COMPATIBLE, f"compatibility:{compatible[0].id}")
    elif pur.archiving_or_statistics:
        own = (Reason.PRESUMED_COMPATIBLE, f"purpose:{p}")
    own_in = (
        own is not None
        and inside(_ref_end(pur, t0, t1, t2))
        and (p == p0 or pur.archive or inside(_ref_end(pur0, t0, t1, t2)))
    )
    st_, rec = _ref_consent_state(ev, p, t)
    consent_exists = st_ is ConsentState.VALID
    consent_in = (
        consent_exists and rec is not None and inside(_ref_end(pur, t0, t1, t2, rec.given_at))
    )
    valid = [
        a
        for a in auths
        if covers(a.to, p)
        and _covers_any(a.from_, p0)
        and (a.categories is None or _covers_any(a.categories, cat))
        and (a.subjects is None or S in a.subjects)
        and a.valid_from <= t
        and (a.valid_until is None or t < a.valid_until)
    ]
    auth_in = [a for a in valid if inside(_ref_end(pur, t0, t1, t2, a.valid_from))]
    # step 2
    if (own or consent_exists or valid) and not (own_in or consent_in or auth_in):
        return Reason.RETENTION_EXPIRED, None
    # step 3
    if pur.direct_marketing and any(
        o.at <= t and (o.withdrawn_at is None or t < o.withdrawn_at) for o in ev.objections
    ):
        return Reason.OBJECTION, None
    # step 4
    if REGISTER.is_sensitive(cat):
        if not _covers_any(pur.sensitive_categories, cat):
            return Reason.EXCESSIVE, f"purpose:{p}"
    elif not (_covers_any(pur.categories, cat) or _covers_any(pur.sensitive_categories, cat)):
        return Reason.EXCESSIVE, f"purpose:{p}"
    consent_rule = f"consent:{rec.id}" if rec is not None else f"purpose:{p}"
    # step 5
    step5 = pur.legal_basis.value == "consent" and not compatible
    if step5 and st_ is not ConsentState.VALID:
        return _CONSENT_REASONS[st_], consent_rule
    if (
        pur.legal_basis.value == "consent"
        and compatible
        and st_ in (ConsentState.WITHDRAWN, ConsentState.REFUSED)
    ):
        return _CONSENT_REASONS[st_], consent_rule
    # step 6
    if prohibited:
        if consent_in:
            return Reason.CONSENT, consent_rule
        if auth_in:
            return Reason.AUTHORISATION, None
        if st_ in _REFINING:
            return _CONSENT_REASONS[st_], consent_rule
        return Reason.PROHIBITED, f"compatibility:{prohibited[0].id}"
    # step 7
    if step5 and consent_in:
        return Reason.CONSENT, consent_rule
    if own_in and own is not None:
        return own
    if consent_in:
        return Reason.CONSENT, consent_rule
    if auth_in:
        return Reason.AUTHORISATION, None
    # step 8
    if st_ in _REFINING:
        return _CONSENT_REASONS[st_], consent_rule
    return Reason.INCOMPATIBLE, f"purpose:{p}"


_PURPOSE_IDS = tuple(p.id for p in PURPOSES)
_NAMES = (*_PURPOSE_IDS, "mkt", "news", "hr", "stats")
_CATEGORY_IDS = tuple(c.id for c in CATEGORIES)


def _day(d: int) -> datetime:
    return T0 + timedelta(days=d)


_days = st.integers(min_value=-60, max_value=2200)
_consents = st.lists(
    st.builds(
        lambda i, ps, g, s, w, e, m: Consent(
            subject=S,
            purposes=ps,
            given_at=_day(g),
            state=s,
            withdrawn_at=None if w is None else _day(g + w),
            expires_at=None if e is None else _day(g + e),
            evidence=Evidence(mechanism=m) if m else None,
            id=f"c{i}",
        ),
        st.integers(0, 99),
        st.lists(st.sampled_from(_NAMES), min_size=1, max_size=2).map(tuple),
        _days,
        st.sampled_from(["given", "given", "given", "refused", "not-asked"]),
        st.none() | st.integers(0, 900),
        st.none() | st.integers(-5, 900),
        st.sampled_from([None, "button", "pre-ticked", "silence"]),
    ),
    max_size=4,
    unique_by=lambda c: c.id,
)
_withdrawals = st.lists(
    st.builds(
        lambda p, d: Withdrawal(subject=S, purposes=(p,), at=_day(d)),
        st.sampled_from(_NAMES),
        _days,
    ),
    max_size=2,
)
_objections = st.lists(
    st.builds(
        lambda i, a, w: Objection(
            subject=S, at=_day(a), withdrawn_at=None if w is None else _day(a + w), id=f"o{i}"
        ),
        st.integers(0, 9),
        _days,
        st.none() | st.integers(0, 400),
    ),
    max_size=2,
    unique_by=lambda o: o.id,
)
_auths = st.lists(
    st.builds(
        lambda i, f, to, v, u, c, s: Authorisation(
            id=f"z{i}",
            from_=f,
            to=to,
            reference="r",
            valid_from=_day(v),
            valid_until=None if u is None else _day(v + u),
            categories=c,
            subjects=s,
        ),
        st.integers(0, 9),
        st.lists(st.sampled_from(_NAMES), min_size=1, max_size=2).map(tuple),
        st.sampled_from(_NAMES),
        _days,
        st.none() | st.integers(0, 900),
        st.none() | st.sampled_from(_CATEGORY_IDS).map(lambda c: (c,)),
        st.none() | st.sampled_from([(S,), ("someone-else",)]),
    ),
    max_size=2,
    unique_by=lambda a: a.id,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_engine_agrees_with_a_literal_reading_of_section_3(data: st.DataObject) -> None:
    """DESIGN §3 as a whole ("Consent state at T", "Allow paths", "Retention of a path", steps
    1-8 and the refinement of steps 6 and 8), read literally with the engine's documented
    interpretations, agrees with decide_category on random registers events and instants —
    including instants exactly at an event's date."""
    ev = SubjectEvents(
        tuple(data.draw(_consents)), tuple(data.draw(_withdrawals)), tuple(data.draw(_objections))
    )
    auths = tuple(data.draw(_auths))
    p0 = data.draw(st.sampled_from(_PURPOSE_IDS))
    p = data.draw(st.sampled_from(_PURPOSE_IDS))
    cat = data.draw(st.sampled_from(_CATEGORY_IDS))
    t0 = _day(data.draw(st.integers(0, 200)))
    t1 = data.draw(st.none() | _days.map(_day))
    t2 = data.draw(st.none() | _days.map(_day))
    boundaries = [_day(data.draw(_days))]
    for c in ev.consents:
        boundaries += [x for x in (c.given_at, c.withdrawn_at, c.expires_at) if x is not None]
    for o in ev.objections:
        boundaries += [x for x in (o.at, o.withdrawn_at) if x is not None]
    for a in auths:
        boundaries += [x for x in (a.valid_from, a.valid_until) if x is not None]
    t = data.draw(st.sampled_from(boundaries))
    got, _ = ENGINE.decide_category(p, p0, cat, S, t0, t1, t2, t, events=ev, authorisations=auths)
    want = _ref_decide(p0, p, cat, t0, t1, t2, t, ev, auths)
    assert got.reason is want[0], (
        f"DESIGN §3 gives {want[0].value} for {p0} -> {p} ({cat}) at {t.isoformat()}; "
        f"the engine gave {got.reason.value} ({got.rule})"
    )
    if want[1] is not None:
        assert got.rule == want[1]
