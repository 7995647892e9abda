"""Factories for tests: registers, engines, records, consents, objections, authorisations.

Each builds the library's own values with defaults a test rarely cares about,
so a test states only what matters to it. Instants are aware datetimes or
ISO-8601 strings with an offset (a bare date means midnight UTC).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs

from .._audit import Audit, InMemoryAuditSink
from .._context import _CURRENT, get_engine
from .._engine import Engine
from .._ids import ancestors
from .._model import (
    Authorisation,
    Collection,
    Compatibility,
    Consent,
    DataCategory,
    Evidence,
    Objection,
    Purpose,
    Retention,
)
from .._records import PERSONAL_KEY, personal_fields
from .._register import Register
from .._store import InMemoryStore, Store, Withdrawal
from .._time import ensure_aware, parse_datetime
from ._clock import FrozenClock

__all__ = [
    "BASE_CATEGORIES",
    "SENSITIVE_CATEGORIES",
    "collection_for",
    "make_authorisation",
    "make_consent",
    "make_engine",
    "make_objection",
    "make_record",
    "make_register",
    "make_withdrawal",
]

_R = TypeVar("_R")

#: Categories every :func:`make_register` register declares.
BASE_CATEGORIES: tuple[str, ...] = (
    "identity",
    "identity.name",
    "contact",
    "contact.email",
    "contact.phone",
    "contact.postal_address",
)
#: Sensitive categories every :func:`make_register` register declares (GDPR art. 9; the NIR).
SENSITIVE_CATEGORIES: tuple[str, ...] = ("nir", "special", "special.health")

#: The five GDPR art. 6(4) factors of a compatible entry made by :func:`make_register`.
_FACTORS = {
    "link": "declared by make_register: the reuse is assessed compatible",
    "context": "declared by make_register",
    "nature": "declared by make_register",
    "consequences": "declared by make_register",
    "safeguards": ("declared by make_register",),
}


def _instant(value: datetime | str, name: str) -> datetime:
    if isinstance(value, str):
        return parse_datetime(value, name)
    return ensure_aware(value, name)


def _opt_instant(value: datetime | str | None, name: str) -> datetime | None:
    return None if value is None else _instant(value, name)


# --------------------------------------------------------------------------- registers


def _retention(value: object) -> Retention:
    if isinstance(value, Retention):
        return value
    if isinstance(value, str):
        return Retention(value)
    if isinstance(value, tuple | list) and len(value) == 2:
        return Retention(value[0], value[1])
    raise TypeError(
        "retention: a Retention, an ISO-8601 duration ('P3Y') or a (duration, anchor) pair "
        "such as ('P3Y', 'last-contact')"
    )


def _purpose(purpose_id: str, spec: Mapping[str, Any] | None) -> Purpose:
    options = dict(spec or {})
    options.setdefault("label", purpose_id)
    options.setdefault("description", f"Processing for {purpose_id}")
    options.setdefault("legal_basis", "contract")
    options["retention"] = _retention(options.get("retention", "P3Y"))
    options.setdefault("categories", ("identity", "contact"))
    return Purpose(purpose_id, **options)


def _entry(verdict: str, index: int, item: Compatibility | tuple[str, str]) -> Compatibility:
    if isinstance(item, Compatibility):
        return item
    from_, to = item
    if verdict == "compatible":
        return Compatibility(f"compatible-{index}", from_, to, "compatible", **_FACTORS)  # type: ignore[arg-type]  # the factors' types match Compatibility's
    return Compatibility(
        f"prohibited-{index}", from_, to, "prohibited", source="declared by make_register"
    )


def make_register(
    purposes: Iterable[str | Purpose] | Mapping[str, Mapping[str, Any] | None] = (),
    *,
    categories: Iterable[str | DataCategory] = (),
    sensitive: Iterable[str] = (),
    compatible: Iterable[Compatibility | tuple[str, str]] = (),
    prohibited: Iterable[Compatibility | tuple[str, str]] = (),
    version: str = "test",
    controller: str = "test",
) -> Register:
    """Build a small, valid register for a test (GDPR art. 30 record of processing).

    ::

        register = make_register(
            {"client.contract": {"retention": ("P5Y", "end-of-contract")},
             "newsletter.product": {"legal_basis": "consent", "direct_marketing": True},
             "prospection.postal": {"legal_basis": "legitimate-interests",
                                    "direct_marketing": True}},
            compatible=[("client.contract", "prospection.postal")],
        )

    Args:
        purposes: purpose ids (or :class:`~purposelimit.Purpose` values), or a
            mapping of purpose id to :class:`~purposelimit.Purpose` keyword
            arguments. Defaults: label = the id, a description, legal basis
            ``contract``, retention ``P3Y`` from collection, categories
            ``identity`` and ``contact``. ``retention`` may be a duration
            (``"P1Y"``) or a ``(duration, anchor)`` pair.
        categories: extra data categories to declare (ids or
            :class:`~purposelimit.DataCategory` values).
        sensitive: extra sensitive category ids to declare.
        compatible: ``(from, to)`` pairs (or entries) assessed compatible; the
            five art. 6(4) factors are filled with placeholder text.
        prohibited: ``(from, to)`` pairs (or entries) prohibited.
        version, controller: the register's header.

    Every register declares :data:`BASE_CATEGORIES` (identity, contact and
    their usual children), :data:`SENSITIVE_CATEGORIES` (``nir``,
    ``special``, ``special.health``), and every category a purpose lists,
    with its ancestors.

    Returns:
        The :class:`~purposelimit.Register`.

    Raises:
        RegisterError: the result is not a valid register (every problem listed).
        ValueError: an id that is not in the syntax of DESIGN §9.
        TypeError: a bad ``retention`` value.
    """
    built: list[Purpose] = []
    if isinstance(purposes, Mapping):
        built = [_purpose(pid, spec) for pid, spec in purposes.items()]
    else:
        built = [p if isinstance(p, Purpose) else _purpose(p, None) for p in purposes]
    declared: dict[str, DataCategory] = {}
    for cid in SENSITIVE_CATEGORIES:
        declared[cid] = DataCategory(cid, label=cid, sensitive=cid in ("nir", "special"))
    for cid in sensitive:
        for ancestor in reversed(list(ancestors(cid))):
            declared.setdefault(ancestor, DataCategory(ancestor, label=ancestor))
        declared[cid] = DataCategory(cid, label=cid, sensitive=True)
    listed: list[str] = list(BASE_CATEGORIES)
    for item in categories:
        if isinstance(item, DataCategory):
            declared[item.id] = item
        else:
            listed.append(item)
    for purpose in built:
        listed.extend(purpose.categories)
        listed.extend(purpose.sensitive_categories)
    for cid in listed:
        for ancestor in reversed(list(ancestors(cid))):
            declared.setdefault(ancestor, DataCategory(ancestor, label=ancestor))
    entries = [_entry("compatible", i, item) for i, item in enumerate(compatible)]
    entries += [_entry("prohibited", i, item) for i, item in enumerate(prohibited)]
    return Register(built, declared.values(), entries, version=version, controller=controller)


# --------------------------------------------------------------------------- engines


def _register(value: Register | str | os.PathLike[str]) -> Register:
    if isinstance(value, Register):
        return value
    from .._loader import load_register
    from .._presets import load_preset, preset_names

    name = os.fspath(value)
    if name in preset_names():
        return load_preset(name)
    return load_register(name)


def make_engine(
    register: Register | str | os.PathLike[str],
    *,
    at: datetime | str | None = None,
    clock: Callable[[], datetime] | None = None,
    store: Store | None = None,
    consents: Iterable[Consent] = (),
    withdrawals: Iterable[Withdrawal] = (),
    objections: Iterable[Objection] = (),
    authorisations: Iterable[Authorisation] = (),
    audit: Audit | None = None,
) -> Engine:
    """Build an engine for a test: a frozen clock, an in-memory store and an in-memory audit.

    Args:
        register: a :class:`~purposelimit.Register`, a preset name
            (``"cnil-commercial"``) or the path of a register file.
        at: freeze the engine's clock at this instant (a :class:`FrozenClock`);
            the current instant when neither *at* nor *clock* is given.
        clock: a clock to use instead (for example a :class:`FrozenClock`
            shared with other engines).
        store: the consent store; a new :class:`~purposelimit.InMemoryStore`
            holding *consents*, *withdrawals*, *objections* and
            *authorisations* when omitted.
        audit: the audit; ``Audit([InMemoryAuditSink()])`` when omitted, so
            tests log nothing (read the events with :func:`capture_audit`).

    Returns:
        The :class:`~purposelimit.Engine`; ``engine.clock`` is the frozen clock.

    Raises:
        ValueError: both *at* and *clock*; or *store* together with events.
        RegisterError: the register file is refused.
        ConfigurationError: an unknown preset name.
    """
    if at is not None and clock is not None:
        raise ValueError("make_engine: give at= or clock=, not both")
    events: tuple[Consent | Withdrawal | Objection | Authorisation, ...] = (
        *consents,
        *withdrawals,
        *objections,
        *authorisations,
    )
    if store is not None and events:
        raise ValueError("make_engine: record events in the store you pass, or pass no store")
    if clock is None:
        clock = FrozenClock(datetime.now(UTC) if at is None else at)
    if store is None:
        store = InMemoryStore()
        if events:
            store.record_many(events, actor="make_engine")
    return Engine(
        _register(register),
        store,
        clock=clock,
        audit=Audit([InMemoryAuditSink()]) if audit is None else audit,
    )


# --------------------------------------------------------------------------- records

_collections: dict[tuple[str, str | None], Collection] = {}
_collections_lock = threading.Lock()
_subjects = itertools.count(1)


def collection_for(purpose: str, source: str | None = None) -> Collection:
    """Return the shared :class:`~purposelimit.Collection` for (*purpose*, *source*).

    Records collected the same way share one ``Collection`` object; this
    factory hands out the same object for the same pair.
    """
    key = (purpose, source)
    found = _collections.get(key)
    if found is None:
        with _collections_lock:
            found = _collections.setdefault(key, Collection(purpose, source))
    return found


def _now() -> datetime:
    active = _CURRENT.get()
    engine = active.engine if active is not None else get_engine()
    if engine is None:
        return datetime.now(UTC)
    return engine.now()


def make_record(
    cls: Callable[..., _R],
    /,
    *args: Any,
    collected_for: str | None = None,
    subject: str | None = None,
    collected_at: datetime | str | None = None,
    last_contact_at: datetime | str | None = None,
    contract_ended_at: datetime | str | None = None,
    source: str | None = None,
    collection: Collection | None = None,
    **fields: Any,
) -> _R:
    """Build a tagged record of class *cls* with a plausible tag and placeholder values.

    ::

        lead = make_record(Lead, collected_for="client.contract", email="ada@example.org")

    Personal fields given neither positionally nor by keyword, and without a
    default, get the placeholder ``"<category>"`` (``"<identity.name>"``).
    The record's collection is checked like any record's (a field its
    collection purpose may not hold raises :class:`~purposelimit.CollectionRefused`
    when an engine is reachable).

    Args:
        cls: a class made by :func:`~purposelimit.record`.
        args, fields: the record's own field values.
        collected_for: the collection purpose id (or give *collection*).
        subject: the data subject's id; ``"subject-<n>"``, new for each call, when omitted.
        collected_at: T0; the reachable engine's current instant (else now) when omitted.
        last_contact_at, contract_ended_at: T1 and T2, or ``None``.
        source: the collection source (with *collected_for*).
        collection: a :class:`~purposelimit.Collection` instead of *collected_for* and *source*.

    Returns:
        The record.

    Raises:
        TypeError: *cls* is not a record class; or neither or both of
            *collected_for* and *collection*.
        CollectionRefused: a field its collection purpose may not use.
    """
    categories = personal_fields(cls)
    if (collected_for is None) == (collection is None):
        raise TypeError("make_record: give collected_for= (a purpose id) or collection=")
    if collection is None:
        assert collected_for is not None  # for the type checker
        collection = collection_for(collected_for, source)
    klass: Any = cls
    declared: tuple[attrs.Attribute[Any], ...] = tuple(attrs.fields(klass))
    positional = {a.name for a in declared[: len(args)]}
    for attribute in declared:
        name = attribute.name
        if (
            name in categories
            and name not in fields
            and name not in positional
            and attribute.default is attrs.NOTHING
            and attribute.init
            and PERSONAL_KEY in attribute.metadata
        ):
            fields[name] = f"<{categories[name]}>"
    return cls(
        *args,
        subject=subject if subject is not None else f"subject-{next(_subjects)}",
        collection=collection,
        collected_at=_now() if collected_at is None else _instant(collected_at, "collected_at"),
        last_contact_at=_opt_instant(last_contact_at, "last_contact_at"),
        contract_ended_at=_opt_instant(contract_ended_at, "contract_ended_at"),
        **fields,
    )


# --------------------------------------------------------------------------- events


def make_consent(
    subject: str,
    *purposes: str,
    at: datetime | str,
    state: str = "given",
    mechanism: str | None = "double-opt-in",
    withdrawn_at: datetime | str | None = None,
    expires_at: datetime | str | None = None,
    id: str | None = None,
) -> Consent:
    """Build a consent record (GDPR art. 4(11), 7): valid unless told otherwise.

    Args:
        subject: the data subject's id.
        purposes: the purpose ids or groups it is about (at least one).
        at: when it was given (or, for a refusal or a not-asked record, recorded).
        state: ``"given"``, ``"refused"`` or ``"not-asked"``.
        mechanism: the evidence's mechanism; ``"double-opt-in"`` by default,
            ``"pre-ticked"`` / ``"bundled"`` / ``"implied"`` / ``"silence"``
            make it invalid; ``None`` records no evidence.
        withdrawn_at, expires_at: the withdrawal (GDPR art. 7(3)) and expiry, if any.
        id: the record's id; derived from its content when omitted.

    Raises:
        ValueError: no purpose, an unknown state or mechanism, ``withdrawn_at``
            before *at*.
        NaiveDatetimeError: an instant without a timezone.
    """
    return Consent(
        subject=subject,
        purposes=purposes,
        given_at=_instant(at, "at"),
        state=state,
        withdrawn_at=_opt_instant(withdrawn_at, "withdrawn_at"),
        expires_at=_opt_instant(expires_at, "expires_at"),
        evidence=None if mechanism is None else Evidence(mechanism),
        id=id,  # type: ignore[arg-type]  # None: a derived id
    )


def make_withdrawal(subject: str, *purposes: str, at: datetime | str) -> Withdrawal:
    """Build a withdrawal of consent for *purposes* at *at* (GDPR art. 7(3))."""
    return Withdrawal(subject, purposes, _instant(at, "at"))


def make_objection(
    subject: str,
    *,
    at: datetime | str,
    withdrawn_at: datetime | str | None = None,
    id: str | None = None,
) -> Objection:
    """Build an objection to direct marketing made at *at* (GDPR art. 21(2)-(3))."""
    return Objection(
        subject,
        _instant(at, "at"),
        withdrawn_at=_opt_instant(withdrawn_at, "withdrawn_at"),
        id=id,  # type: ignore[arg-type]  # None: a derived id
    )


def make_authorisation(
    from_: str | Iterable[str],
    to: str,
    *,
    valid_from: datetime | str,
    valid_until: datetime | str | None = None,
    reference: str = "authorisation for a test",
    categories: Iterable[str] | None = None,
    subjects: Iterable[str] | None = None,
    id: str | None = None,
) -> Authorisation:
    """Build an authorisation for reusing *from_* data for *to* (a legal obligation, an order).

    Args:
        from_: the purpose ids or groups the data may come from.
        to: the purpose id or group it may be reused for.
        valid_from, valid_until: its validity window (start included, end excluded).
        reference: the legal reference.
        categories: the categories it covers; all when ``None``.
        subjects: the data subjects it names; everyone when ``None``.
        id: its id; ``"authorisation-<to>"`` when omitted.
    """
    sources = (from_,) if isinstance(from_, str) else tuple(from_)
    return Authorisation(
        id=id if id is not None else f"authorisation-{to}",
        from_=sources,
        to=to,
        reference=reference,
        valid_from=_instant(valid_from, "valid_from"),
        valid_until=_opt_instant(valid_until, "valid_until"),
        categories=None if categories is None else tuple(categories),
        subjects=None if subjects is None else tuple(subjects),
    )
