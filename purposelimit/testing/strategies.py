"""Hypothesis strategies for purposelimit values, for property tests of your own.

Needs hypothesis (installed with the ``test`` extra); :mod:`purposelimit.testing`
itself does not import it. Every strategy builds valid values of the library:

* :func:`ids`, :func:`purpose_ids`, :func:`category_ids` — dotted ids (DESIGN §9);
* :func:`instants` — aware datetimes; :func:`retentions` — retention rules;
* :func:`purposes`, :func:`registers` — purposes and whole valid registers
  (with compatible and prohibited entries that never overlap);
* :func:`tags`, :func:`records` — collection tags and tagged records;
* :func:`consents`, :func:`withdrawals`, :func:`objections` — a data subject's events.

Example::

    from hypothesis import given
    from purposelimit.testing import strategies as pst

    @given(pst.registers(), pst.consents())
    def test_withdrawn_consent_never_allows(register, consent): ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import attrs
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from .._engine import Engine
from .._ids import ancestors, covers
from .._model import (
    CollectionTag,
    Compatibility,
    Consent,
    DataCategory,
    Evidence,
    LegalBasis,
    Mechanism,
    Objection,
    Purpose,
    Retention,
    RetentionAnchor,
)
from .._records import personal_fields
from .._register import Register
from .._store import Withdrawal
from ._factories import BASE_CATEGORIES, collection_for

__all__ = [
    "DURATIONS",
    "SEGMENT_ALPHABET",
    "SUBJECTS",
    "category_ids",
    "consents",
    "ids",
    "instants",
    "objections",
    "purpose_ids",
    "purposes",
    "records",
    "registers",
    "retentions",
    "tags",
    "withdrawals",
]

_R = TypeVar("_R")

#: The alphabet of one id segment (DESIGN §9).
SEGMENT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_-"
#: Durations :func:`retentions` draws from: ISO-8601, as registers write them.
DURATIONS: tuple[str, ...] = ("P1D", "P90D", "P1M", "P3M", "P13M", "P1Y", "P2Y", "P3Y", "P10Y")
#: The default pool of data subject ids: small, so that events and records meet.
SUBJECTS: tuple[str, ...] = ("subject-1", "subject-2", "subject-3")

_ZONES = (UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5, minutes=-30)))
_FACTORS: dict[str, Any] = {
    "link": "drawn by hypothesis",
    "context": "drawn by hypothesis",
    "nature": "drawn by hypothesis",
    "consequences": "drawn by hypothesis",
    "safeguards": ("drawn by hypothesis",),
}


def ids(*, max_depth: int = 3, max_segment: int = 6) -> st.SearchStrategy[str]:
    """Dotted ids: 1 to *max_depth* segments of lower-case letters, digits, ``_`` and ``-``."""
    if max_depth < 1 or max_segment < 1:
        raise InvalidArgument("ids: max_depth and max_segment are at least 1")
    segment = st.text(alphabet=SEGMENT_ALPHABET, min_size=1, max_size=max_segment)
    return st.lists(segment, min_size=1, max_size=max_depth).map(".".join)


def purpose_ids(*, max_depth: int = 3) -> st.SearchStrategy[str]:
    """Purpose ids (``prospection.email_b2c``): dotted, from a small vocabulary so they nest."""
    words = st.sampled_from(
        ("client", "contract", "prospection", "postal", "email", "hr", "stats", "archive", "x")
    )
    return st.lists(words, min_size=1, max_size=max_depth).map(".".join)


def category_ids(*, max_depth: int = 2) -> st.SearchStrategy[str]:
    """Data category ids (``contact.email``): dotted, from a small vocabulary so they nest."""
    words = st.sampled_from(("identity", "contact", "email", "name", "nir", "health", "payment"))
    return st.lists(words, min_size=1, max_size=max_depth).map(".".join)


def instants(
    min_value: datetime = datetime(2000, 1, 1, tzinfo=UTC),
    max_value: datetime = datetime(2100, 1, 1, tzinfo=UTC),
) -> st.SearchStrategy[datetime]:
    """Aware datetimes between *min_value* and *max_value*, in UTC and other offsets."""
    low = min_value.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=6)
    high = max_value.astimezone(UTC).replace(tzinfo=None) - timedelta(hours=6)
    if low > high:
        raise InvalidArgument("instants: min_value must be at least 12 hours before max_value")
    return st.datetimes(min_value=low, max_value=high, timezones=st.sampled_from(_ZONES))


def retentions(
    durations: Sequence[str] = DURATIONS,
) -> st.SearchStrategy[Retention]:
    """Retention rules: a duration of *durations* from any anchor (GDPR art. 5(1)(e))."""
    return st.builds(Retention, st.sampled_from(tuple(durations)), st.sampled_from(RetentionAnchor))


def purposes(
    *,
    ids: st.SearchStrategy[str] | None = None,
    categories: Sequence[str] = BASE_CATEGORIES,
    sensitive_categories: Sequence[str] = (),
) -> st.SearchStrategy[Purpose]:
    """Purposes drawing their categories from *categories* (and *sensitive_categories*)."""
    pool = tuple(categories)
    sensitive = tuple(sensitive_categories)
    return st.builds(
        lambda pid, basis, retention, cats, sens, flags: Purpose(
            pid,
            pid,
            f"Processing for {pid}",
            basis,
            retention,
            categories=cats,
            sensitive_categories=sens,
            direct_marketing=flags[0],
            archiving_or_statistics=flags[1],
            archive=flags[2],
        ),
        purpose_ids() if ids is None else ids,
        st.sampled_from(LegalBasis),
        retentions(),
        st.lists(st.sampled_from(pool), unique=True) if pool else st.just([]),
        st.lists(st.sampled_from(sensitive), unique=True) if sensitive else st.just([]),
        st.tuples(st.booleans(), st.booleans(), st.booleans()),
    )


def _groups(purpose_ids: Sequence[str]) -> list[str]:
    found = {a for pid in purpose_ids for a in ancestors(pid)}
    return sorted(found)


def _conflicts(entry: Compatibility, kept: Sequence[Compatibility]) -> bool:
    def overlap(a: str, b: str) -> bool:
        return covers(a, b) or covers(b, a)

    return any(
        other.verdict is not entry.verdict
        and overlap(other.from_, entry.from_)
        and overlap(other.to, entry.to)
        for other in kept
    )


@st.composite
def registers(
    draw: st.DrawFn,
    *,
    min_purposes: int = 1,
    max_purposes: int = 6,
    max_categories: int = 6,
    max_entries: int = 4,
) -> Register:
    """Valid registers: categories (some sensitive), purposes, compatibility entries.

    Compatibility entries name declared purposes or their groups, compatible
    ones fill the five GDPR art. 6(4) factors, and no compatible entry overlaps
    a prohibited one (such a register is refused, DESIGN §3).
    """
    if not 1 <= min_purposes <= max_purposes:
        raise InvalidArgument("registers: 1 <= min_purposes <= max_purposes")
    category_list = draw(
        st.lists(category_ids(), min_size=1, max_size=max(1, max_categories), unique=True)
    )
    declared: dict[str, DataCategory] = {}
    for cid in category_list:
        for ancestor in reversed(list(ancestors(cid))):
            if ancestor not in declared:
                declared[ancestor] = DataCategory(ancestor, label=ancestor)
    for cid in list(declared):
        if draw(st.integers(0, 4)) == 0:
            declared[cid] = attrs.evolve(declared[cid], sensitive=True)
    register_probe = Register([], declared.values())
    sensitive = [c for c in declared if register_probe.is_sensitive(c)]
    plain = [c for c in declared if not register_probe.is_sensitive(c)]
    pids = draw(st.lists(purpose_ids(), min_size=min_purposes, max_size=max_purposes, unique=True))
    built = [
        draw(
            purposes(
                ids=st.just(pid),
                categories=plain + sensitive,
                sensitive_categories=sensitive,
            )
        )
        for pid in pids
    ]
    names = _groups(pids)
    entries: list[Compatibility] = []
    count = draw(st.integers(0, max_entries))
    for index in range(count):
        from_ = draw(st.sampled_from(names))
        to = draw(st.sampled_from(names))
        if draw(st.booleans()):
            entry = Compatibility(f"entry-{index}", from_, to, "compatible", **_FACTORS)
        else:
            entry = Compatibility(
                f"entry-{index}", from_, to, "prohibited", source="drawn by hypothesis"
            )
        if not _conflicts(entry, entries):
            entries.append(entry)
    return Register(built, declared.values(), entries, version="hypothesis")


@st.composite
def tags(
    draw: st.DrawFn,
    register: Register | None = None,
    *,
    purposes: st.SearchStrategy[str] | None = None,
    subjects: st.SearchStrategy[str] | None = None,
    at: st.SearchStrategy[datetime] | None = None,
) -> CollectionTag:
    """Collection tags: a subject, a collection purpose (of *register* when given) and dates.

    The last contact and the end of contract, when drawn, are at or after the collection.
    """
    if purposes is None:
        if register is not None and register.purposes:
            purposes = st.sampled_from(tuple(register.purposes))
        else:
            purposes = purpose_ids()
    collected_at = draw(instants() if at is None else at)
    later = st.none() | st.timedeltas(timedelta(0), timedelta(days=3 * 366)).map(
        lambda d: collected_at + d
    )
    return CollectionTag(
        subject=draw(st.sampled_from(SUBJECTS) if subjects is None else subjects),
        collection=collection_for(draw(purposes)),
        collected_at=collected_at,
        last_contact_at=draw(later),
        contract_ended_at=draw(later),
    )


def _collectable(register: Register, categories: Sequence[str]) -> tuple[str, ...]:
    engine = Engine(register)
    return tuple(pid for pid in register.purposes if not engine.check_collection(pid, categories))


@st.composite
def records(
    draw: st.DrawFn,
    record_class: Callable[..., _R],
    *,
    register: Register | None = None,
    collected_for: st.SearchStrategy[str] | None = None,
    subjects: st.SearchStrategy[str] | None = None,
    values: st.SearchStrategy[Any] | None = None,
    at: st.SearchStrategy[datetime] | None = None,
) -> _R:
    """Tagged records of *record_class*, with drawn tags and personal values.

    Args:
        record_class: a class made by :func:`~purposelimit.record` whose
            non-personal fields have defaults.
        register: when given, the collection purpose is one of its purposes
            that may hold every personal field's category (so the record is
            never refused at collection).
        collected_for: the collection purposes to draw from instead.
        subjects: the data subject ids; :data:`SUBJECTS` by default.
        values: the personal values; short texts by default.
        at: the collection instants; :func:`instants` by default.

    Raises:
        InvalidArgument: no purpose of *register* may hold the record's categories.
    """
    categories = personal_fields(record_class)
    if collected_for is None and register is not None:
        fitting = _collectable(register, tuple(categories.values()))
        if not fitting:
            raise InvalidArgument(
                f"records: no purpose of the register may collect every category of "
                f"{getattr(record_class, '__name__', record_class)!r}"
            )
        collected_for = st.sampled_from(fitting)
    tag = draw(tags(register, purposes=collected_for, subjects=subjects, at=at))
    value = st.text(min_size=1, max_size=12) if values is None else values
    fields = {name: draw(value) for name in categories}
    return record_class(
        subject=tag.subject,
        collection=tag.collection,
        collected_at=tag.collected_at,
        last_contact_at=tag.last_contact_at,
        contract_ended_at=tag.contract_ended_at,
        **fields,
    )


@st.composite
def consents(
    draw: st.DrawFn,
    *,
    subjects: st.SearchStrategy[str] | None = None,
    purposes: st.SearchStrategy[str] | None = None,
    at: st.SearchStrategy[datetime] | None = None,
    states: Sequence[str] = ("given", "refused", "not-asked"),
    mechanisms: Sequence[Mechanism | None] = (*Mechanism, None),
) -> Consent:
    """Consent records: given, refused or not asked; maybe withdrawn, maybe expiring.

    A withdrawal, when drawn, is at or after ``given_at`` (GDPR art. 7(3)).
    """
    given_at = draw(instants() if at is None else at)
    later = st.none() | st.timedeltas(timedelta(0), timedelta(days=3 * 366)).map(
        lambda d: given_at + d
    )
    mechanism = draw(st.sampled_from(tuple(mechanisms)))
    return Consent(
        subject=draw(st.sampled_from(SUBJECTS) if subjects is None else subjects),
        purposes=draw(
            st.lists(purpose_ids() if purposes is None else purposes, min_size=1, max_size=2)
        ),
        given_at=given_at,
        state=draw(st.sampled_from(tuple(states))),
        withdrawn_at=draw(later),
        expires_at=draw(later),
        evidence=None if mechanism is None else Evidence(mechanism),
    )


@st.composite
def withdrawals(
    draw: st.DrawFn,
    *,
    subjects: st.SearchStrategy[str] | None = None,
    purposes: st.SearchStrategy[str] | None = None,
    at: st.SearchStrategy[datetime] | None = None,
) -> Withdrawal:
    """Withdrawals of consent (GDPR art. 7(3))."""
    return Withdrawal(
        draw(st.sampled_from(SUBJECTS) if subjects is None else subjects),
        draw(st.lists(purpose_ids() if purposes is None else purposes, min_size=1, max_size=2)),
        draw(instants() if at is None else at),
    )


@st.composite
def objections(
    draw: st.DrawFn,
    *,
    subjects: st.SearchStrategy[str] | None = None,
    at: st.SearchStrategy[datetime] | None = None,
) -> Objection:
    """Objections to direct marketing (GDPR art. 21), maybe withdrawn later."""
    made = draw(instants() if at is None else at)
    withdrawn = draw(
        st.none() | st.timedeltas(timedelta(0), timedelta(days=3 * 366)).map(lambda d: made + d)
    )
    return Objection(
        draw(st.sampled_from(SUBJECTS) if subjects is None else subjects),
        made,
        withdrawn_at=withdrawn,
    )
