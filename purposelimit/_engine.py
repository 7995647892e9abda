"""The decision engine: DESIGN §3 as code.

For a read of data categories of a record (data subject S, collection purpose
P0, collected at T0, last contact T1, contract ended T2) under a processing
purpose P at an instant T, the engine answers allowed or denied with a reason
code, the rule that decided (``kind:id``) and a one-sentence explanation. It
never sees a personal field value and never names the data subject.

Speed: everything that depends only on (P0, P, category) — the static allow
paths, the deciding compatibility entry, minimisation, whether consents,
objections or authorisations can matter at all, the retention rules involved —
is compiled once into a plan kept in a dict on the :class:`Engine`. A call then
does only the subject-dependent lookups it needs and the retention arithmetic;
when the plan says nothing subject-dependent matters, the store is not read.

Legal sources: GDPR art. 5(1)(b), (c), (e), 6(4), 7, 9, 21, 89(1); French Loi
Informatique et Libertés art. 4; CPCE art. L34-5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import attrs

from ._ids import covers, depth, is_valid_id
from ._model import (
    Authorisation,
    CategoryDecision,
    CollectionTag,
    Compatibility,
    Consent,
    ConsentAnswer,
    ConsentState,
    Decision,
    LegalBasis,
    Objection,
    Purpose,
    Reason,
    Retention,
    RetentionAnchor,
    Verdict,
)
from ._register import Register
from ._store import InMemoryStore, Store, SubjectEvents, Withdrawal
from ._time import add_duration, ensure_aware

__all__ = ["Engine", "consent_state"]


# --------------------------------------------------------------------------- consent state

#: Same-instant ranking of record states (DESIGN §3): higher wins.
_RANK: dict[ConsentState, int] = {
    ConsentState.REFUSED: 5,
    ConsentState.WITHDRAWN: 4,
    ConsentState.EXPIRED: 3,
    ConsentState.VALID: 2,
    ConsentState.INVALID: 1,
    ConsentState.NOT_ASKED: 0,
}
#: States a later ``not-asked`` or ``invalid`` record does not displace.
_PROTECTED = frozenset({ConsentState.VALID, ConsentState.REFUSED, ConsentState.WITHDRAWN})
#: The unconfirmed states that do not displace a protected one.
_WEAK = frozenset({ConsentState.INVALID, ConsentState.NOT_ASKED})

_CONSENT_REASON: dict[ConsentState, Reason] = {
    ConsentState.WITHDRAWN: Reason.CONSENT_WITHDRAWN,
    ConsentState.EXPIRED: Reason.CONSENT_EXPIRED,
    ConsentState.REFUSED: Reason.CONSENT_REFUSED,
    ConsentState.INVALID: Reason.CONSENT_INVALID,
    ConsentState.NOT_ASKED: Reason.CONSENT_MISSING,
    ConsentState.NONE: Reason.CONSENT_MISSING,
}
#: Consent states that refine ``prohibited`` / ``incompatible`` (steps 6 and 8).
_REFINING = frozenset(
    {ConsentState.WITHDRAWN, ConsentState.EXPIRED, ConsentState.REFUSED, ConsentState.INVALID}
)


def _covering_depth(ids: tuple[str, ...], purpose: str) -> int:
    """Depth of the most specific id in *ids* covering *purpose*; 0 when none covers it."""
    best = 0
    for id_ in ids:
        if purpose == id_ or purpose.startswith(id_ + "."):
            found = id_.count(".") + 1
            if found > best:
                best = found
    return best


def _covers_any(ids: tuple[str, ...], target: str) -> bool:
    return any(target == id_ or target.startswith(id_ + ".") for id_ in ids)


def _record_state(
    record: Consent, purpose: str, withdrawals: tuple[Withdrawal, ...], at: datetime
) -> ConsentState:
    """The state at *at* of one consent record for *purpose* (given at or before *at*)."""
    if record.state is ConsentAnswer.REFUSED:
        return ConsentState.REFUSED
    if record.state is ConsentAnswer.NOT_ASKED:
        return ConsentState.NOT_ASKED
    withdrawn_at = record.withdrawn_at
    for event in withdrawals:
        if (
            record.given_at <= event.at <= at
            and (withdrawn_at is None or event.at < withdrawn_at)
            and _covers_any(event.purposes, purpose)
        ):
            withdrawn_at = event.at
    withdrawn = withdrawn_at is not None and withdrawn_at <= at
    expires_at = record.expires_at
    expired = expires_at is not None and expires_at <= at
    if withdrawn and expired:
        assert withdrawn_at is not None  # for the type checker
        assert expires_at is not None
        return ConsentState.WITHDRAWN if withdrawn_at <= expires_at else ConsentState.EXPIRED
    if withdrawn:
        return ConsentState.WITHDRAWN
    if expired:
        return ConsentState.EXPIRED
    evidence = record.evidence
    if evidence is not None and evidence.mechanism is not None and not evidence.mechanism.is_valid:
        return ConsentState.INVALID
    return ConsentState.VALID


def _consent_state(
    events: SubjectEvents, purpose: str, at: datetime, changes: list[datetime] | None
) -> tuple[ConsentState, Consent | None]:
    """:func:`consent_state`, also appending to *changes* every instant after *at* that matters."""
    best = 0
    candidates: list[Consent] = []
    for record in events.consents:
        specificity = _covering_depth(record.purposes, purpose)
        if not specificity:
            continue
        if changes is not None:
            for instant in (record.given_at, record.withdrawn_at, record.expires_at):
                if instant is not None and instant > at:
                    changes.append(instant)
        if record.given_at > at:
            continue
        if specificity > best:
            best = specificity
            candidates = [record]
        elif specificity == best:
            candidates.append(record)
    withdrawals = (
        tuple(w for w in events.withdrawals if _covers_any(w.purposes, purpose))
        if events.withdrawals
        else ()
    )
    if changes is not None:
        changes.extend(w.at for w in withdrawals if w.at > at)
    if not candidates:
        return ConsentState.NONE, None
    if len(candidates) == 1:
        return _record_state(candidates[0], purpose, withdrawals, at), candidates[0]
    judged = sorted(
        ((record, _record_state(record, purpose, withdrawals, at)) for record in candidates),
        key=lambda pair: (pair[0].given_at, _RANK[pair[1]], pair[0].id),
    )
    current, state = judged[0]
    for record, record_state in judged[1:]:
        if record_state in _WEAK and state in _PROTECTED:
            continue
        current, state = record, record_state
    return state, current


def consent_state(
    events: SubjectEvents, purpose: str, at: datetime
) -> tuple[ConsentState, Consent | None]:
    """The data subject's consent state for *purpose* at *at* (DESIGN §3 "Consent state at T").

    Among the subject's consent records whose purposes cover *purpose* and that
    were given at or before *at*, those naming the most specific covering
    purpose are kept; the most recent by ``given_at`` decides, except that a
    ``not-asked`` or ``invalid`` record does not displace an earlier record
    whose state is ``valid``, ``refused`` or ``withdrawn``. Records given at the
    same instant rank refused > withdrawn > expired > valid > invalid >
    not-asked. A record's withdrawal is the earliest of its own
    ``withdrawn_at`` and the :class:`~purposelimit.Withdrawal` events of
    *events* covering *purpose* dated at or after its ``given_at``; when
    withdrawal and expiry have both happened, the earlier names the state
    (withdrawal on a tie).

    Args:
        events: the events of one data subject.
        purpose: the processing purpose id.
        at: the aware instant of the decision.

    Returns:
        The state, and the record that decided (``None`` for
        :attr:`ConsentState.NONE <purposelimit.ConsentState.NONE>`).

    Legal source: GDPR art. 4(11), 7(1) and 7(3); CJEU C-673/17 Planet49.
    """
    return _consent_state(events, purpose, ensure_aware(at, "at"), None)


# --------------------------------------------------------------------------- plans

_ANCHOR_WORDS = {
    RetentionAnchor.COLLECTION: "collection",
    RetentionAnchor.LAST_CONTACT: "last contact",
    RetentionAnchor.END_OF_CONTRACT: "end of contract",
}


@attrs.frozen(slots=True)
class _Clause:
    """One retention clause of a path: the purpose whose clock it is, and its rule."""

    purpose: str
    retention: Retention


@attrs.frozen(slots=True)
class _Plan:
    """Everything about (P0, P, category) that depends neither on the subject nor on T."""

    category: str
    #: A decision of step 1 (unknown purpose / category), final whatever the subject and T.
    static: CategoryDecision | None
    p0: str = ""
    p: str = ""
    #: The allowed decision of the first own-line path (same, narrower, compatible,
    #: presumed-compatible), or None when no such path exists.
    own: CategoryDecision | None = None
    #: P's retention clause, then P0's unless waived (P == P0, or P flagged archive).
    own_clauses: tuple[_Clause, ...] = ()
    #: P's retention clause alone (consent and authorisation paths).
    p_clause: _Clause | None = None
    #: The step-4 denial, or None.
    excessive: CategoryDecision | None = None
    #: Step 5 is in play: P's legal basis is consent.
    consent_based: bool = False
    #: A compatible entry covers P0 -> P.
    compatible_covers: bool = False
    #: The deciding prohibited entry (step 6), or None.
    prohibited: Compatibility | None = None
    #: P is flagged direct_marketing (step 3).
    direct_marketing: bool = False
    #: Nothing subject-dependent can change the outcome while the own-line path
    #: is within retention: no store lookup needed then.
    simple: bool = False
    #: Whether T1 / T2 matter for some clause.
    uses_last_contact: bool = False
    uses_end_of_contract: bool = False


def _deny(category: str, reason: Reason, rule: str, explanation: str) -> CategoryDecision:
    return CategoryDecision(
        category=category, allowed=False, reason=reason, rule=rule, explanation=explanation
    )


def _allow(category: str, reason: Reason, rule: str, explanation: str) -> CategoryDecision:
    return CategoryDecision(
        category=category, allowed=True, reason=reason, rule=rule, explanation=explanation
    )


def _shown(id_: str, what: str) -> str:
    """An undeclared id as it may appear in an explanation: only when it has id syntax."""
    return id_ if is_valid_id(id_) else f"(a {what} id that is not in the id syntax)"


def _deciding_entry(entries: Iterable[Compatibility], p0: str, p: str) -> Compatibility | None:
    """The entry covering P0 -> P with the deepest ``to``, then the deepest ``from``."""
    best: Compatibility | None = None
    best_key = (0, 0)
    for entry in entries:
        if covers(entry.from_, p0) and covers(entry.to, p):
            key = (depth(entry.to), depth(entry.from_))
            if key > best_key:  # strictly: the first declared wins a tie
                best, best_key = entry, key
    return best


def _excessive(register: Register, purpose: Purpose, category: str) -> str | None:
    """Why *category* is excessive for *purpose* (one sentence), or None (GDPR art. 5(1)(c), 9)."""
    if register.is_sensitive(category):
        if _covers_any(purpose.sensitive_categories, category):
            return None
        if _covers_any(purpose.categories, category):
            return (
                f"{category} is sensitive data and {purpose.id} lists it only among its ordinary "
                "categories, not its sensitive categories (GDPR art. 9)"
            )
        return (
            f"{category} is sensitive data that {purpose.id} may not use "
            "(minimisation, GDPR art. 5(1)(c) and art. 9)"
        )
    if _covers_any(purpose.categories, category) or _covers_any(
        purpose.sensitive_categories, category
    ):
        return None
    return (
        f"{category} is not among the data categories {purpose.id} may use "
        "(minimisation, GDPR art. 5(1)(c))"
    )


def _compile(register: Register, p0_id: str, p_id: str, category: str) -> _Plan:
    p = register.purpose(p_id)
    if p is None:
        return _Plan(
            category,
            _deny(
                category,
                Reason.UNKNOWN_PURPOSE,
                "register",
                f"the processing purpose {_shown(p_id, 'purpose')} is not a purpose declared "
                "in the register",
            ),
        )
    p0 = register.purpose(p0_id)
    if p0 is None:
        return _Plan(
            category,
            _deny(
                category,
                Reason.UNKNOWN_PURPOSE,
                "register",
                f"the collection purpose {_shown(p0_id, 'purpose')} is not a purpose declared "
                "in the register",
            ),
        )
    if register.category(category) is None:
        return _Plan(
            category,
            _deny(
                category,
                Reason.UNKNOWN_CATEGORY,
                "register",
                f"the data category {_shown(category, 'category')} is not declared in the register",
            ),
        )

    entry = _deciding_entry(register.compatibility, p0_id, p_id)
    compatible = entry if entry is not None and entry.verdict is Verdict.COMPATIBLE else None
    prohibited = entry if entry is not None and entry.verdict is Verdict.PROHIBITED else None

    own: CategoryDecision | None
    if p_id == p0_id:
        own = _allow(
            category,
            Reason.SAME_PURPOSE,
            f"purpose:{p_id}",
            f"{p_id} is the purpose the data was collected for",
        )
    elif covers(p0_id, p_id):
        own = _allow(
            category,
            Reason.NARROWER_PURPOSE,
            f"purpose:{p_id}",
            f"{p_id} is narrower than {p0_id}, the purpose the data was collected for",
        )
    elif compatible is not None:
        own = _allow(
            category,
            Reason.COMPATIBLE,
            f"compatibility:{compatible.id}",
            f"compatibility entry {compatible.id} assesses reusing {p0_id} data for {p_id} "
            "as compatible (GDPR art. 6(4))",
        )
    elif p.archiving_or_statistics:
        own = _allow(
            category,
            Reason.PRESUMED_COMPATIBLE,
            f"purpose:{p_id}",
            f"{p_id} is an archiving or statistics purpose, presumed compatible with {p0_id} "
            "(GDPR art. 5(1)(b) and 89(1))",
        )
    else:
        own = None

    p_clause = _Clause(p_id, p.retention)
    own_clauses: tuple[_Clause, ...] = (p_clause,)
    if p_id != p0_id and not p.archive:
        own_clauses = (p_clause, _Clause(p0_id, p0.retention))
    anchors = {c.retention.anchor for c in own_clauses}

    why = _excessive(register, p, category)
    excessive = None if why is None else _deny(category, Reason.EXCESSIVE, f"purpose:{p_id}", why)
    consent_based = p.legal_basis is LegalBasis.CONSENT
    return _Plan(
        category,
        None,
        p0=p0_id,
        p=p_id,
        own=own,
        own_clauses=own_clauses,
        p_clause=p_clause,
        excessive=excessive,
        consent_based=consent_based,
        compatible_covers=compatible is not None,
        prohibited=prohibited,
        direct_marketing=p.direct_marketing,
        simple=(
            own is not None and prohibited is None and not consent_based and not p.direct_marketing
        ),
        uses_last_contact=RetentionAnchor.LAST_CONTACT in anchors,
        uses_end_of_contract=RetentionAnchor.END_OF_CONTRACT in anchors,
    )


# --------------------------------------------------------------------------- retention


#: Retention ends already computed, by (duration, anchor instant, its UTC offset).
#: Pure values, so sharing them between engines and threads is safe; emptied when
#: it grows large. The offset is in the key because two datetimes of one zone in
#: the repeated autumn hour (02:30 summer time, 02:30 winter time) compare and
#: hash equal, although they are an hour apart.
_ENDS: dict[tuple[int, timedelta, datetime, timedelta | None], datetime] = {}
_ENDS_MAX = 1 << 16


def _clause_end(
    clause: _Clause,
    collected_at: datetime,
    last_contact: datetime | None,
    contract_end: datetime | None,
    new_basis_at: datetime | None = None,
) -> datetime | None:
    """When *clause*'s retention ends (excluded), or None while its clock has not started.

    *last_contact* and *contract_end* are already None when dated after T.
    Calendar arithmetic in UTC (:func:`~purposelimit.add_duration`).
    """
    anchor = clause.retention.anchor
    base: datetime | None
    if anchor is RetentionAnchor.COLLECTION:
        base = collected_at
    elif anchor is RetentionAnchor.LAST_CONTACT:
        base = collected_at if last_contact is None else last_contact
    else:
        base = contract_end
    if base is None:
        return None
    if new_basis_at is not None and new_basis_at > base:
        base = new_basis_at
    duration = clause.retention.duration
    key = (duration.months, duration.delta, base, base.utcoffset())
    end = _ENDS.get(key)
    if end is None:
        end = add_duration(base, duration)
        if len(_ENDS) >= _ENDS_MAX:
            _ENDS.clear()
        _ENDS[key] = end
    return end


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a <= b else b


# --------------------------------------------------------------------------- the engine


class _Lookup:
    """Reads the store at most once per call, and only if asked."""

    __slots__ = ("_authorisations", "_events", "_store", "_subject")

    def __init__(
        self,
        store: Store,
        subject: str,
        events: SubjectEvents | None,
        authorisations: tuple[Authorisation, ...] | None,
    ) -> None:
        self._store = store
        self._subject = subject
        self._events = events
        self._authorisations = authorisations

    def events(self) -> SubjectEvents:
        if self._events is None:
            self._events = self._store.subject_events(self._subject)
        return self._events

    def authorisations(self) -> tuple[Authorisation, ...]:
        if self._authorisations is None:
            self._authorisations = self._store.authorisations()
        return self._authorisations


def _default_clock() -> datetime:
    return datetime.now(UTC)


class Epoch:
    """A value that changes whenever what ``processing`` blocks prepare may be stale.

    ``current`` is replaced by a new object when any engine's register, store,
    clock or audit is replaced, and when the default engine or mode is
    (:func:`~purposelimit.set_engine`): a block checks it with one identity
    test before reusing what it prepared. Such changes are configuration,
    rare; a block rebuilds what it prepared after each.
    """

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current = object()

    def advance(self) -> None:
        """Make every block prepare anew at its next entry."""
        self.current = object()


#: The configuration epoch shared by every engine and ``processing`` block.
EPOCH = Epoch()

#: The attributes of an :class:`Engine` whose replacement advances :data:`EPOCH`.
_CONFIGURATION = frozenset({"_register", "store", "clock", "audit"})


class Engine:
    """Decides reads of personal data as DESIGN §3 defines, from a register and a store.

    Args:
        register: the policy (purposes, categories, compatibility entries).
        store: where consents, withdrawals, objections and authorisations are
            read; a new :class:`~purposelimit.InMemoryStore` when omitted.
        clock: returns the current instant as an aware datetime; default
            ``datetime.now(UTC)``.
        audit: an audit object kept as :attr:`audit` for the callers that
            record decisions; the engine itself never touches it.

    The engine is thread-safe: its only mutable state is a cache of compiled
    plans, filled idempotently.
    """

    def __init__(
        self,
        register: Register,
        store: Store | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        audit: object | None = None,
    ) -> None:
        self._register = register
        self._plans: dict[tuple[str, str, str], _Plan] = {}
        self.store: Store = InMemoryStore() if store is None else store
        self.clock: Callable[[], datetime] = _default_clock if clock is None else clock
        self.audit = audit

    @property
    def register(self) -> Register:
        """The register the engine applies; setting another one clears the compiled plans."""
        return self._register

    @register.setter
    def register(self, register: Register) -> None:
        self._register = register
        self._plans = {}

    def __setattr__(self, name: str, value: object) -> None:
        replaced = name in _CONFIGURATION and name in self.__dict__  # not set by __init__
        object.__setattr__(self, name, value)
        if replaced:
            # The register, store, clock or audit is replaced: processing blocks
            # prepared for this engine must prepare anew (see Epoch).
            EPOCH.advance()

    def __repr__(self) -> str:
        return f"<Engine register={self._register!r} store={self.store!r}>"

    def now(self) -> datetime:
        """The current instant from the engine's clock (an aware datetime).

        Raises:
            NaiveDatetimeError: the clock returned a naive datetime.
        """
        return ensure_aware(self.clock(), "the engine's clock")

    # ------------------------------------------------------------------ plans

    def _plan(self, p0: str, p: str, category: str) -> _Plan:
        key = (p0, p, category)
        plan = self._plans.get(key)
        if plan is None:
            plan = _compile(self._register, p0, p, category)
            if plan.static is None:
                # Plans for undeclared ids are not kept: the cache stays bounded by the register.
                plan = self._plans.setdefault(key, plan)
        return plan

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        tag: CollectionTag,
        categories: Sequence[str],
        purpose: str | None,
        at: datetime | None = None,
        *,
        consents: Iterable[Consent] = (),
        withdrawals: Iterable[Withdrawal] = (),
        objections: Iterable[Objection] = (),
        authorisations: Iterable[Authorisation] = (),
    ) -> Decision:
        """Decide a read of *categories* of the record tagged *tag* under *purpose* at *at*.

        Args:
            tag: the record's collection tag (data subject, collection purpose,
                collected-at, last-contact-at, contract-ended-at).
            categories: the data category ids read; judged one by one, in order.
            purpose: the processing purpose id; ``None`` (no purpose bound)
                gives ``no-purpose`` for every category.
            at: the aware instant of the read; the engine's clock when omitted.
            consents, withdrawals, objections, authorisations: events added to
                the store's for this call only (never written to it); events
                about other data subjects are ignored.

        Returns:
            The record-level :class:`~purposelimit.Decision` (DESIGN §6): allowed
            only if every category is.

        Raises:
            ValueError: *categories* is empty.
            NaiveDatetimeError: *at* is naive.
        """
        cats = tuple(categories)
        if not cats:
            raise ValueError("categories: a decision needs at least one data category")
        # In UTC: Python orders two datetimes sharing one tzinfo by wall-clock time,
        # fold ignored, so in the repeated autumn hour a ZoneInfo instant would be
        # compared wrongly with events in the same zone.
        when = (self.now() if at is None else ensure_aware(at, "at")).astimezone(UTC)
        if purpose is None:
            return Decision.combine(None, tag.purpose, (_no_purpose(c) for c in cats))
        subject = tag.subject
        inline = SubjectEvents(
            consents=tuple(c for c in consents if c.subject == subject),
            withdrawals=tuple(w for w in withdrawals if w.subject == subject),
            objections=tuple(o for o in objections if o.subject == subject),
        )
        events: SubjectEvents | None = None
        if inline.consents or inline.withdrawals or inline.objections:
            events = self.store.subject_events(subject).merged(inline)
        extra = tuple(authorisations)
        auths: tuple[Authorisation, ...] | None = None
        if extra:
            known = self.store.authorisations()
            ids = {a.id for a in known}
            auths = known + tuple(a for a in extra if a.id not in ids)
        lookup = _Lookup(self.store, subject, events, auths)
        collected_for = tag.purpose
        parts = [
            self._judge(
                self._plan(collected_for, purpose, c),
                subject,
                tag.collected_at,
                tag.last_contact_at,
                tag.contract_ended_at,
                when,
                lookup,
            )[0]
            for c in cats
        ]
        return Decision.combine(purpose, collected_for, parts)

    def decide_category(
        self,
        purpose: str | None,
        collected_for: str,
        category: str,
        subject: str,
        collected_at: datetime,
        last_contact_at: datetime | None,
        contract_ended_at: datetime | None,
        at: datetime,
        *,
        events: SubjectEvents | None = None,
        authorisations: tuple[Authorisation, ...] | None = None,
    ) -> tuple[CategoryDecision, datetime | None]:
        """Decide one data category of one record: the hot path of guarded reads and bulk filters.

        Args:
            purpose: the processing purpose id, or ``None`` (``no-purpose``).
            collected_for: the collection purpose id (P0).
            category: the data category id.
            subject: the data subject's id.
            collected_at, last_contact_at, contract_ended_at: the record's
                aware instants T0, T1 and T2 (T1 and T2 may be unknown).
            at: the aware instant of the read (not checked beforehand, for speed:
                a naive one is named when a comparison fails on it).
            events: the data subject's events; read from the store when ``None``
                (and only if the decision depends on them).
            authorisations: the authorisations; read from the store when ``None``.

        Returns:
            The decision, and the first instant strictly after *at* at which it
            could change for the same store content (a retention end, a
            consent, withdrawal, objection or authorisation instant, a last
            contact or contract end dated after *at*), or ``None`` if it can
            never change. The decision holds for every instant in ``[at, until)``
            while the store's version is unchanged.

        Raises:
            NaiveDatetimeError: *at* (or an instant of the record) is naive.
        """
        if purpose is None:
            return _no_purpose(category), None
        if at.tzinfo is not UTC:  # one time scale (see decide); the read path's is UTC already
            at = ensure_aware(at, "at").astimezone(UTC)
        try:
            return self._judge(
                self._plan(collected_for, purpose, category),
                subject,
                collected_at,
                last_contact_at,
                contract_ended_at,
                at,
                _Lookup(self.store, subject, events, authorisations),
            )
        except TypeError:  # free unless raised: an aware and a naive instant compared
            for name, value in (
                ("at", at),
                ("collected_at", collected_at),
                ("last_contact_at", last_contact_at),
                ("contract_ended_at", contract_ended_at),
            ):
                if value is not None:
                    ensure_aware(value, name)
            raise

    def check_collection(self, purpose: str, categories: Iterable[str]) -> list[tuple[str, Reason]]:
        """The categories a record collected for *purpose* may not hold (minimisation).

        Args:
            purpose: the collection purpose id.
            categories: the data category ids the record holds.

        Returns:
            ``(category, reason)`` for each category (once, in order) that is
            ``excessive`` for *purpose* or ``unknown-category``; every category
            with ``unknown-purpose`` when *purpose* is not declared. Empty when
            the collection is lawful.

        Legal source: GDPR art. 5(1)(c) and 9; LIL art. 4 3°.
        """
        found: list[tuple[str, Reason]] = []
        seen: set[str] = set()
        for category in categories:
            if category in seen:
                continue
            seen.add(category)
            plan = self._plan(purpose, purpose, category)
            if plan.static is not None:
                found.append((category, plan.static.reason))
            elif plan.excessive is not None:
                found.append((category, Reason.EXCESSIVE))
        return found

    # ------------------------------------------------------------------ the steps

    def _judge(
        self,
        plan: _Plan,
        subject: str,
        collected_at: datetime,
        last_contact_at: datetime | None,
        contract_ended_at: datetime | None,
        at: datetime,
        lookup: _Lookup,
    ) -> tuple[CategoryDecision, datetime | None]:
        # Step 1: unknown purpose or category.
        if plan.static is not None:
            return plan.static, None

        # Anchors dated after T are ignored until they happen.
        changes: list[datetime] = []
        t1 = last_contact_at
        if t1 is not None and t1 > at:
            if plan.uses_last_contact:
                changes.append(t1)
            t1 = None
        t2 = contract_ended_at
        if t2 is not None and t2 > at:
            if plan.uses_end_of_contract:
                changes.append(t2)
            t2 = None

        # Own-line paths share one retention: P's and P0's (unless waived).
        own_end: datetime | None = None
        own_expired: _Clause | None = None
        own_in = False
        if plan.own is not None:
            expired_end: datetime | None = None
            for clause in plan.own_clauses:
                end = _clause_end(clause, collected_at, t1, t2)
                if end is None:
                    continue
                if end <= at:
                    # The clause whose clock ran out first names the rule (P0 on a tie).
                    if expired_end is None or end <= expired_end:
                        own_expired, expired_end = clause, end
                else:
                    own_end = _earliest(own_end, end)
            own_in = own_expired is None
            if own_in and own_end is not None:
                changes.append(own_end)
            if own_in and plan.simple:
                # Nothing subject-dependent matters: no store lookup.
                return plan.excessive or plan.own, _first(changes)

        # The consent path, looked up only when it can matter.
        p = plan.p
        state = ConsentState.NONE
        record: Consent | None = None
        consent_in = False
        consent_expired = False
        if plan.consent_based or plan.prohibited is not None or not own_in:
            state, record = _consent_state(lookup.events(), p, at, changes)
            if state is ConsentState.VALID:
                assert record is not None
                assert plan.p_clause is not None
                end = _clause_end(plan.p_clause, collected_at, t1, t2, record.given_at)
                consent_in = end is None or at < end
                consent_expired = not consent_in
                if consent_in and end is not None:
                    changes.append(end)

        # The authorisation path, looked up only when no earlier path is within retention.
        authorisation: Authorisation | None = None
        auth_in = False
        if not consent_in and (plan.prohibited is not None or not own_in):
            authorisation, auth_in = self._authorisation(
                plan, subject, at, lookup, changes, (collected_at, t1, t2)
            )

        until = _first(changes)

        # Step 2: retention-expired.
        if not (own_in or consent_in or auth_in) and (
            plan.own is not None or consent_expired or authorisation is not None
        ):
            named = own_expired if plan.own is not None else plan.p_clause
            assert named is not None
            return self._retention_expired(plan, named), until

        # Step 3: objection to direct marketing.
        if plan.direct_marketing:
            objection = _standing_objection(lookup.events().objections, at, changes)
            until = _first(changes)
            if objection is not None:
                return (
                    _deny(
                        plan.category,
                        Reason.OBJECTION,
                        f"objection:{objection.id}",
                        f"the data subject objected to direct marketing (objection "
                        f"{objection.id}) and {p} is a direct-marketing purpose (GDPR art. 21(3))",
                    ),
                    until,
                )

        # Step 4: minimisation.
        if plan.excessive is not None:
            return plan.excessive, until

        # Step 5: a purpose resting on consent.
        if plan.consent_based:
            if not plan.compatible_covers:
                if state is not ConsentState.VALID:
                    return _consent_denial(plan, state, record, "step5"), until
            elif state is ConsentState.WITHDRAWN or state is ConsentState.REFUSED:
                return _consent_denial(plan, state, record, "step5-compatible"), until

        # Step 6: a prohibited reuse, lifted only by consent or an authorisation.
        if plan.prohibited is not None:
            if consent_in:
                return _consent_allow(plan, record), until
            if auth_in:
                assert authorisation is not None
                return _authorisation_allow(plan, authorisation), until
            if state in _REFINING:
                return _consent_denial(plan, state, record, "prohibited"), until
            entry = plan.prohibited
            return (
                _deny(
                    plan.category,
                    Reason.PROHIBITED,
                    f"compatibility:{entry.id}",
                    f"compatibility entry {entry.id} prohibits reusing {plan.p0} data for {p}; "
                    "only the data subject's consent or an authorisation can lift it",
                ),
                until,
            )

        # Step 7: allowed by the first path within retention (consent first when step 5 applied).
        if consent_in and plan.consent_based and not plan.compatible_covers:
            return _consent_allow(plan, record), until
        if own_in:
            assert plan.own is not None
            return plan.own, until
        if consent_in:
            return _consent_allow(plan, record), until
        if auth_in:
            assert authorisation is not None
            return _authorisation_allow(plan, authorisation), until

        # Step 8: nothing allows it.
        if state in _REFINING:
            return _consent_denial(plan, state, record, "incompatible"), until
        return (
            _deny(
                plan.category,
                Reason.INCOMPATIBLE,
                f"purpose:{p}",
                f"no compatibility entry, consent or authorisation permits reusing {plan.p0} "
                f"data for {p}",
            ),
            until,
        )

    def _authorisation(
        self,
        plan: _Plan,
        subject: str,
        at: datetime,
        lookup: _Lookup,
        changes: list[datetime],
        anchors: tuple[datetime, datetime | None, datetime | None],
    ) -> tuple[Authorisation | None, bool]:
        """The deciding authorisation valid at *at* for this plan and subject, and whether
        its path is within retention; ``(None, False)`` when none is valid.

        One within retention is preferred; then the deepest ``to``, the deepest
        matching ``from``, the latest ``valid_from`` and the smallest id.
        """
        assert plan.p_clause is not None
        best: Authorisation | None = None
        best_key: tuple[bool, int, int, datetime] | None = None
        for auth in lookup.authorisations():
            if not covers(auth.to, plan.p):
                continue
            from_depth = _covering_depth(auth.from_, plan.p0)
            if not from_depth:
                continue
            if auth.categories is not None and not _covers_any(auth.categories, plan.category):
                continue
            if auth.subjects is not None and subject not in auth.subjects:
                continue
            if auth.valid_from > at:
                changes.append(auth.valid_from)
                continue
            if auth.valid_until is not None:
                if auth.valid_until <= at:
                    continue
                changes.append(auth.valid_until)
            end = _clause_end(plan.p_clause, *anchors, auth.valid_from)
            within = end is None or at < end
            if within and end is not None:
                changes.append(end)
            key = (within, depth(auth.to), from_depth, auth.valid_from)
            if (
                best is None
                or best_key is None
                or key > best_key
                or (key == best_key and auth.id < best.id)
            ):
                best, best_key = auth, key
        return best, best_key is not None and best_key[0]

    def _retention_expired(self, plan: _Plan, clause: _Clause) -> CategoryDecision:
        retention = clause.retention
        return _deny(
            plan.category,
            Reason.RETENTION_EXPIRED,
            f"retention:{clause.purpose}",
            f"the retention period of {clause.purpose} ({retention.duration} from "
            f"{_ANCHOR_WORDS[retention.anchor]}) has ended, and no basis for reading {plan.p0} "
            f"data under {plan.p} is within retention (GDPR art. 5(1)(e))",
        )


def _first(changes: list[datetime]) -> datetime | None:
    return min(changes) if changes else None


def _standing_objection(
    objections: tuple[Objection, ...], at: datetime, changes: list[datetime]
) -> Objection | None:
    """The earliest objection made at or before *at* and not withdrawn at *at* (art. 21(3))."""
    found: Objection | None = None
    for objection in objections:
        if objection.at > at:
            changes.append(objection.at)
            continue
        if objection.withdrawn_at is not None:
            if objection.withdrawn_at <= at:
                continue
            changes.append(objection.withdrawn_at)
        if found is None or (objection.at, objection.id) < (found.at, found.id):
            found = objection
    return found


def _no_purpose(category: str) -> CategoryDecision:
    return _deny(
        category,
        Reason.NO_PURPOSE,
        "context",
        "no processing purpose is bound, and personal data is read only for a declared purpose "
        "(GDPR art. 5(1)(b))",
    )


def _consent_allow(plan: _Plan, record: Consent | None) -> CategoryDecision:
    assert record is not None
    return _allow(
        plan.category,
        Reason.CONSENT,
        f"consent:{record.id}",
        f"the data subject consented to {plan.p} (consent record {record.id})",
    )


def _authorisation_allow(plan: _Plan, authorisation: Authorisation) -> CategoryDecision:
    return _allow(
        plan.category,
        Reason.AUTHORISATION,
        f"authorisation:{authorisation.id}",
        f"authorisation {authorisation.id} ({authorisation.reference}) permits reusing "
        f"{plan.p0} data for {plan.p}",
    )


_STATE_WORDS = {
    ConsentState.WITHDRAWN: "withdrew consent to {p} (consent record {id})",
    ConsentState.EXPIRED: "gave consent to {p} that has expired (consent record {id})",
    ConsentState.REFUSED: "refused consent to {p} (consent record {id})",
    ConsentState.INVALID: (
        "gave consent to {p} by a mechanism that is not a clear affirmative act "
        "(consent record {id}, GDPR art. 4(11))"
    ),
    ConsentState.NOT_ASKED: "was never asked for consent to {p} (consent record {id})",
}


def _consent_denial(
    plan: _Plan, state: ConsentState, record: Consent | None, context: str
) -> CategoryDecision:
    p = plan.p
    if record is None:
        return _deny(
            plan.category,
            Reason.CONSENT_MISSING,
            f"purpose:{p}",
            f"{p} rests on consent and the data subject has given none",
        )
    what = _STATE_WORDS[state].format(p=p, id=record.id)
    if context == "step5":
        sentence = f"{p} rests on consent and the data subject {what}"
    elif context == "step5-compatible":
        sentence = (
            f"the data subject {what}, and an expressed refusal or withdrawal counts even where a "
            f"compatibility entry covers reusing {plan.p0} data for {p}"
        )
    elif context == "prohibited":
        assert plan.prohibited is not None
        sentence = (
            f"compatibility entry {plan.prohibited.id} prohibits reusing {plan.p0} data for {p} "
            f"and the data subject {what}"
        )
    else:
        sentence = f"nothing permits reusing {plan.p0} data for {p} and the data subject {what}"
    return _deny(plan.category, _CONSENT_REASON[state], f"consent:{record.id}", sentence)
