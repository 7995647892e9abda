"""The value types of purposelimit: purposes, categories, register entries, consents, decisions.

All are frozen, slotted attrs classes: hashable, shareable across threads and
safe in logs (none holds a personal field value; subject ids are identifiers
the controller chose). Vocabulary: DESIGN §2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import attrs

from ._ids import validate_id
from ._time import Duration, ensure_aware, parse_duration

__all__ = [
    "ALLOW_REASONS",
    "DENY_ORDER",
    "Authorisation",
    "CategoryDecision",
    "Collection",
    "CollectionTag",
    "Compatibility",
    "Confidence",
    "Consent",
    "ConsentAnswer",
    "ConsentState",
    "DataCategory",
    "Decision",
    "Evidence",
    "LegalBasis",
    "Mechanism",
    "Objection",
    "Purpose",
    "Reason",
    "Retention",
    "RetentionAnchor",
    "Verdict",
]


class LegalBasis(StrEnum):
    """The lawful bases of GDPR art. 6(1), (a) to (f)."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal-obligation"
    VITAL_INTERESTS = "vital-interests"
    PUBLIC_TASK = "public-task"
    LEGITIMATE_INTERESTS = "legitimate-interests"


class RetentionAnchor(StrEnum):
    """What a retention duration is counted from (DESIGN §3, "Retention of a path")."""

    COLLECTION = "collection"
    LAST_CONTACT = "last-contact"
    END_OF_CONTRACT = "end-of-contract"


class Verdict(StrEnum):
    """The verdict of a compatibility entry (DESIGN §2)."""

    COMPATIBLE = "compatible"
    PROHIBITED = "prohibited"


class Confidence(StrEnum):
    """How well a register entry's legal fact is established (legal-reference §0.1).

    ``P`` primary text, ``S`` secondary source, ``K`` background knowledge,
    ``U`` uncertain: to be verified before it drives a rule.
    """

    P = "P"
    S = "S"
    K = "K"
    U = "U"


class ConsentAnswer(StrEnum):
    """What a consent record says the data subject answered."""

    GIVEN = "given"
    REFUSED = "refused"
    NOT_ASKED = "not-asked"


class Mechanism(StrEnum):
    """How a consent was expressed. The last four are not a clear affirmative act.

    ``pre-ticked``, ``bundled``, ``implied`` and ``silence`` make a grant
    ``invalid`` (GDPR art. 4(11); CJEU C-673/17 Planet49; EDPB guidelines
    05/2020; CNIL SAN-2022-017 Accor).
    """

    UNTICKED_CHECKBOX = "unticked-checkbox"
    DOUBLE_OPT_IN = "double-opt-in"
    SIGNED_FORM = "signed-form"
    RECORDED_ORAL = "recorded-oral"
    BUTTON = "button"
    PRE_TICKED = "pre-ticked"
    BUNDLED = "bundled"
    IMPLIED = "implied"
    SILENCE = "silence"

    @property
    def is_valid(self) -> bool:
        """Whether this mechanism is a clear affirmative act."""
        return self not in _INVALID_MECHANISMS


_INVALID_MECHANISMS = frozenset(
    {Mechanism.PRE_TICKED, Mechanism.BUNDLED, Mechanism.IMPLIED, Mechanism.SILENCE}
)


class ConsentState(StrEnum):
    """The state at an instant T of a data subject's consent for a purpose (DESIGN §3)."""

    VALID = "valid"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    REFUSED = "refused"
    INVALID = "invalid"
    NOT_ASKED = "not-asked"
    NONE = "none"


class Reason(StrEnum):
    """The stable reason codes of a decision (DESIGN §6).

    Used in decisions, exceptions, audit events and reports.
    """

    # allow
    SAME_PURPOSE = "same-purpose"
    NARROWER_PURPOSE = "narrower-purpose"
    COMPATIBLE = "compatible"
    PRESUMED_COMPATIBLE = "presumed-compatible"
    CONSENT = "consent"
    AUTHORISATION = "authorisation"
    # deny
    NO_PURPOSE = "no-purpose"
    UNKNOWN_PURPOSE = "unknown-purpose"
    UNKNOWN_CATEGORY = "unknown-category"
    RETENTION_EXPIRED = "retention-expired"
    OBJECTION = "objection"
    EXCESSIVE = "excessive"
    CONSENT_WITHDRAWN = "consent-withdrawn"
    CONSENT_EXPIRED = "consent-expired"
    CONSENT_REFUSED = "consent-refused"
    CONSENT_INVALID = "consent-invalid"
    CONSENT_MISSING = "consent-missing"
    PROHIBITED = "prohibited"
    INCOMPATIBLE = "incompatible"

    @property
    def allows(self) -> bool:
        """Whether this reason code means the read is allowed."""
        return self in ALLOW_REASONS


#: The allow reasons, in the order of the allow paths of DESIGN §3.
ALLOW_REASONS: tuple[Reason, ...] = (
    Reason.SAME_PURPOSE,
    Reason.NARROWER_PURPOSE,
    Reason.COMPATIBLE,
    Reason.PRESUMED_COMPATIBLE,
    Reason.CONSENT,
    Reason.AUTHORISATION,
)

#: Deny reasons in the order of the steps of DESIGN §3 (earliest first).
DENY_ORDER: tuple[Reason, ...] = (
    Reason.NO_PURPOSE,
    Reason.UNKNOWN_PURPOSE,
    Reason.UNKNOWN_CATEGORY,
    Reason.RETENTION_EXPIRED,
    Reason.OBJECTION,
    Reason.EXCESSIVE,
    Reason.CONSENT_WITHDRAWN,
    Reason.CONSENT_EXPIRED,
    Reason.CONSENT_REFUSED,
    Reason.CONSENT_INVALID,
    Reason.CONSENT_MISSING,
    Reason.PROHIBITED,
    Reason.INCOMPATIBLE,
)


# --------------------------------------------------------------------------- validators


def _check_id(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = validate_id(value)
    if problem is not None:
        raise ValueError(f"{attribute.name}: {problem}")


def _check_ids(_inst: object, attribute: attrs.Attribute[Any], value: Iterable[object]) -> None:
    for item in value:
        problem = validate_id(item)
        if problem is not None:
            raise ValueError(f"{attribute.name}: {problem}")


def _check_nonempty(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty string")


def _check_aware(_inst: object, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    if value is not None:
        ensure_aware(value, attribute.name)


def _to_tuple(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _to_optional_tuple(value: Iterable[str] | str | None) -> tuple[str, ...] | None:
    return None if value is None else _to_tuple(value)


def _to_duration(value: Duration | str) -> Duration:
    return value if isinstance(value, Duration) else parse_duration(value)


def _canonical(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def _stable_id(prefix: str, payload: Mapping[str, object]) -> str:
    """Derive a record id from its content: the same content gives the same id.

    Instants count in UTC (the same instant written with another offset is the
    same content) and the order of a ``purposes`` list does not count.
    """
    canonical = dict(payload)
    if isinstance(canonical.get("purposes"), list | tuple):
        canonical["purposes"] = sorted(set(canonical["purposes"]))  # type: ignore[call-overload]
    text = json.dumps(canonical, sort_keys=True, default=_canonical, separators=(",", ":"))
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


# --------------------------------------------------------------------------- register values


@attrs.frozen(slots=True)
class DataCategory:
    """A data category from the register's dotted taxonomy (``contact.email``).

    Attributes:
        id: dotted id; ``contact.email`` is narrower than ``contact``.
        label: human-readable name.
        sensitive: special-category data (GDPR art. 9), criminal data (art. 10)
            or the French NIR. Inherited by descendants: the register reports a
            category as sensitive when it or any ancestor is flagged.
        description, source, confidence, justification: documentation; ``source``
            names the legal text, ``confidence`` its mark (P, S, K, U).
    """

    id: str = attrs.field(validator=_check_id)
    label: str = ""
    sensitive: bool = False
    description: str = ""
    source: str = ""
    confidence: Confidence | None = attrs.field(
        default=None, converter=attrs.converters.optional(Confidence)
    )
    justification: str = ""


@attrs.frozen(slots=True)
class Retention:
    """A retention rule: an ISO-8601 duration counted from an anchor (GDPR art. 5(1)(e)).

    Attributes:
        duration: ISO-8601 duration (``"P3Y"``); a string is parsed.
        anchor: ``collection`` (T0), ``last-contact`` (T1, falling back to T0
            when unknown) or ``end-of-contract`` (T2; while unknown the contract
            is ongoing and the clock has not started). Spelled ``from`` in files.
    """

    duration: Duration = attrs.field(converter=_to_duration)
    anchor: RetentionAnchor = attrs.field(
        default=RetentionAnchor.COLLECTION, converter=RetentionAnchor
    )


@attrs.frozen(slots=True)
class Purpose:
    """A determined, explicit and legitimate purpose (GDPR art. 5(1)(b); LIL art. 4 2°).

    Attributes:
        id: dotted id (``prospection.email_b2c``); dots make a hierarchy.
        label: short name.
        description: what the processing does; required, a purpose must be explicit.
        legal_basis: the GDPR art. 6(1) basis.
        retention: how long data may be processed for it (art. 5(1)(e)).
        categories: the data categories it may use; each covers its descendants
            (minimisation, art. 5(1)(c)).
        sensitive_categories: the sensitive categories it explicitly may use
            (explicit consent or another art. 9(2) ground).
        direct_marketing: an objection (art. 21(2)-(3)) blocks it.
        archiving_or_statistics: presumed-compatible reuse (art. 5(1)(b), 89(1));
            under French law it must not serve decisions about the persons
            (LIL art. 4 2°).
        archive: an intermediate-archive purpose: may read data whose active
            retention ended, within its own retention.
        source, confidence, justification: the legal source, its confidence
            mark, and the reasoning (required when overriding a preset entry).

    Flags are not inherited: each purpose declares its own.
    """

    id: str = attrs.field(validator=_check_id)
    label: str = attrs.field(validator=_check_nonempty)
    description: str = attrs.field(validator=_check_nonempty)
    legal_basis: LegalBasis = attrs.field(converter=LegalBasis)
    retention: Retention
    categories: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple, validator=_check_ids)
    sensitive_categories: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_check_ids
    )
    direct_marketing: bool = False
    archiving_or_statistics: bool = False
    archive: bool = False
    source: str = ""
    confidence: Confidence | None = attrs.field(
        default=None, converter=attrs.converters.optional(Confidence)
    )
    justification: str = ""


@attrs.frozen(slots=True)
class Compatibility:
    """A compatibility entry: an assessed reuse from purpose (group) A to B (GDPR art. 6(4)).

    A ``compatible`` entry is a reasoned permission and must write down the five
    art. 6(4) factors: ``link``, ``context``, ``nature``, ``consequences`` and
    ``safeguards``. A ``prohibited`` entry is a reuse only consent or an
    authorisation can lift; it needs a ``source`` or a ``justification``.
    ``from_`` is spelled ``from`` in files.
    """

    id: str = attrs.field(validator=_check_id)
    from_: str = attrs.field(validator=_check_id)
    to: str = attrs.field(validator=_check_id)
    verdict: Verdict = attrs.field(converter=Verdict)
    link: str = ""
    context: str = ""
    nature: str = ""
    consequences: str = ""
    safeguards: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    source: str = ""
    confidence: Confidence | None = attrs.field(
        default=None, converter=attrs.converters.optional(Confidence)
    )
    justification: str = ""


# --------------------------------------------------------------------------- subject events


@attrs.frozen(slots=True)
class Evidence:
    """How and where a consent was expressed (GDPR art. 7(1): the controller must prove it).

    Attributes:
        mechanism: the act; ``pre-ticked``, ``bundled``, ``implied`` and
            ``silence`` make the grant invalid.
        collection_point: form id, URL or call-recording id.
        notice_version: version of the information notice shown.
        source: who collected it (first collector, broker, partner).
        channel: the channel it was given through (web, phone, paper…).
    """

    mechanism: Mechanism | None = attrs.field(
        default=None, converter=attrs.converters.optional(Mechanism)
    )
    collection_point: str | None = None
    notice_version: str | None = None
    source: str | None = None
    channel: str | None = None


@attrs.frozen(slots=True)
class Consent:
    """A data subject's recorded answer about one or more purposes (GDPR art. 4(11), 7).

    Attributes:
        subject: the data subject's id (compared exactly).
        purposes: purpose ids or groups the answer is about; each covers its descendants.
        given_at: aware datetime the answer was given (for a refusal or a
            not-asked record: when it was recorded).
        state: ``given`` (default), ``refused`` or ``not-asked``.
        withdrawn_at: aware datetime of the withdrawal, if any (art. 7(3)).
        expires_at: aware datetime the grant lapses, if any.
        evidence: how it was given; a grant without a valid mechanism is invalid
            only when the mechanism is one of the invalid ones.
        id: the record's id; when omitted, a stable id derived from its content.

    Raises:
        ValueError: an empty ``purposes`` list, or ``withdrawn_at`` before ``given_at``.
        NaiveDatetimeError: a naive datetime.
    """

    subject: str
    purposes: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_check_ids)
    given_at: datetime = attrs.field(validator=_check_aware)
    state: ConsentAnswer = attrs.field(default=ConsentAnswer.GIVEN, converter=ConsentAnswer)
    withdrawn_at: datetime | None = attrs.field(default=None, validator=_check_aware)
    expires_at: datetime | None = attrs.field(default=None, validator=_check_aware)
    evidence: Evidence | None = None
    id: str = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if not self.purposes:
            raise ValueError("purposes: a consent names at least one purpose")
        if self.withdrawn_at is not None and self.withdrawn_at < self.given_at:
            raise ValueError("withdrawn_at is before given_at")
        if self.id is None:
            payload = {
                "subject": self.subject,
                "purposes": list(self.purposes),
                "given_at": self.given_at,
                "state": str(self.state),
                "withdrawn_at": self.withdrawn_at,
                "expires_at": self.expires_at,
                "evidence": attrs.asdict(self.evidence) if self.evidence else None,
            }
            object.__setattr__(self, "id", _stable_id("consent", payload))

    def __repr__(self) -> str:
        return (
            f"Consent(id={self.id!r}, purposes={self.purposes!r}, state={self.state.value!r}, "
            f"given_at={self.given_at.isoformat()!r})"
        )


@attrs.frozen(slots=True)
class Authorisation:
    """A non-consent permission for a reuse: a legal obligation, a supervisory-authority
    decision, a court order.

    Attributes:
        id: the record's id.
        from_: purpose ids or groups the data may come from (``from`` in JSON).
        to: the purpose id or group it may be reused for.
        reference: the legal reference (statute, decision number, order).
        valid_from: aware datetime it takes effect (included).
        valid_until: aware datetime it ends (excluded), if any.
        categories: the categories it covers (each covers descendants); ``None`` = all.
        subjects: the data subjects it names; ``None`` = everyone.
    """

    id: str
    from_: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_check_ids)
    to: str = attrs.field(validator=_check_id)
    reference: str = attrs.field(validator=_check_nonempty)
    valid_from: datetime = attrs.field(validator=_check_aware)
    valid_until: datetime | None = attrs.field(default=None, validator=_check_aware)
    categories: tuple[str, ...] | None = attrs.field(default=None, converter=_to_optional_tuple)
    subjects: tuple[str, ...] | None = attrs.field(default=None, converter=_to_optional_tuple)

    def __repr__(self) -> str:
        return (
            f"Authorisation(id={self.id!r}, from_={self.from_!r}, to={self.to!r}, "
            f"reference={self.reference!r})"
        )


@attrs.frozen(slots=True)
class Objection:
    """A data subject's objection to direct marketing (GDPR art. 21(2)-(3)).

    Absolute while it stands: it blocks every purpose flagged
    ``direct_marketing`` and only those. It may itself be withdrawn.

    Attributes:
        subject: the data subject's id.
        at: aware datetime it was made (effective from that instant, included).
        withdrawn_at: aware datetime the person withdrew it, if any.
        scope: ``"direct-marketing"`` (the only scope defined).
        id: the record's id; when omitted, a stable id derived from its content.
    """

    subject: str
    at: datetime = attrs.field(validator=_check_aware)
    withdrawn_at: datetime | None = attrs.field(default=None, validator=_check_aware)
    scope: str = attrs.field(default="direct-marketing")
    id: str = attrs.field(default=None)

    @scope.validator
    def _check_scope(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if value != "direct-marketing":
            raise ValueError("scope: the only objection scope is 'direct-marketing'")

    def __attrs_post_init__(self) -> None:
        if self.withdrawn_at is not None and self.withdrawn_at < self.at:
            raise ValueError("withdrawn_at is before at")
        if self.id is None:
            payload = {
                "subject": self.subject,
                "at": self.at,
                "withdrawn_at": self.withdrawn_at,
            }
            object.__setattr__(self, "id", _stable_id("objection", payload))

    def __repr__(self) -> str:
        return f"Objection(id={self.id!r}, at={self.at.isoformat()!r})"


# --------------------------------------------------------------------------- collection tags


@attrs.frozen(slots=True, eq=False)
class Collection:
    """How a batch of records was collected: the collection purpose and the source.

    One object is shared by every record collected the same way (a web form, a
    CRM import), so a tagged record costs one reference beyond its own subject
    id and dates. Compared by identity.

    Attributes:
        purpose: the collection purpose id (DESIGN §2).
        source: where the data came from (GDPR art. 14(2)(f)): a form id, a
            broker, a partner.
    """

    purpose: str = attrs.field(validator=_check_id)
    source: str | None = None


@attrs.frozen(slots=True)
class CollectionTag:
    """What a record says about its own collection (DESIGN §2).

    Attributes:
        subject: the data subject's id (compared exactly).
        collection: the shared :class:`Collection` (purpose and source).
        collected_at: aware datetime of collection (T0).
        last_contact_at: aware datetime of the last contact from the person (T1), if known.
        contract_ended_at: aware datetime the contract ended (T2), if known;
            unknown means the contract is ongoing.
    """

    subject: str
    collection: Collection
    collected_at: datetime = attrs.field(validator=_check_aware)
    last_contact_at: datetime | None = attrs.field(default=None, validator=_check_aware)
    contract_ended_at: datetime | None = attrs.field(default=None, validator=_check_aware)

    @property
    def purpose(self) -> str:
        """The collection purpose id."""
        return self.collection.purpose

    def __repr__(self) -> str:
        return (
            f"CollectionTag(purpose={self.collection.purpose!r}, "
            f"collected_at={self.collected_at.isoformat()!r})"
        )


# --------------------------------------------------------------------------- decisions


@attrs.frozen(slots=True)
class CategoryDecision:
    """The engine's answer for one data category of a read."""

    category: str
    allowed: bool
    reason: Reason
    rule: str
    explanation: str


@attrs.frozen(slots=True)
class Decision:
    """The engine's answer for one (record, categories, processing purpose, instant).

    ``allowed`` is true only if every category is allowed; ``reason``, ``rule``
    and ``explanation`` are those of the category whose denial comes earliest
    in the order of DESIGN §3 (ties: request order), or of the first category
    when all are allowed. Never contains a personal value.

    Attributes:
        allowed: whether the read is lawful.
        reason: the reason code (:class:`Reason`).
        rule: what decided, as ``kind:id`` (``compatibility:contract-to-postal``,
            ``consent:<id>``, ``retention:<purpose>``, ``purpose:<id>``, ``register``…).
        purpose: the processing purpose id (``None`` for ``no-purpose``).
        collected_for: the collection purpose id.
        categories: one :class:`CategoryDecision` per category, in request order.
        explanation: one sentence.
    """

    allowed: bool
    reason: Reason
    rule: str
    purpose: str | None
    collected_for: str | None
    categories: tuple[CategoryDecision, ...]
    explanation: str

    @classmethod
    def combine(
        cls, purpose: str | None, collected_for: str | None, parts: Iterable[CategoryDecision]
    ) -> Decision:
        """Build the record-level decision from per-category decisions (DESIGN §6)."""
        items = tuple(parts)
        if not items:
            raise ValueError("a decision needs at least one category")
        denied = [c for c in items if not c.allowed]
        # min() keeps the first of equals: ties go to request order.
        head = min(denied, key=lambda c: _DENY_RANK[c.reason]) if denied else items[0]
        return cls(
            allowed=not denied,
            reason=head.reason,
            rule=head.rule,
            purpose=purpose,
            collected_for=collected_for,
            categories=items,
            explanation=head.explanation,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape of DESIGN §6."""
        return {
            "allowed": self.allowed,
            "reason": self.reason.value,
            "rule": self.rule,
            "purpose": self.purpose,
            "collected_for": self.collected_for,
            "categories": {
                c.category: {"allowed": c.allowed, "reason": c.reason.value}
                for c in self.categories
            },
            "explanation": self.explanation,
        }


_DENY_RANK = {reason: rank for rank, reason in enumerate(DENY_ORDER)}
