"""Personal-data fields and tagged records, on attrs; the one place a read asks the engine.

A record class declares which of its fields are personal data and their data
category with :func:`personal`; :func:`record` (a wrapper of
:func:`attrs.define`) makes each instance carry its collection tag and guards
every personal field: reading it asks the engine under the active
``processing`` block, records the decision in the audit trail, and then
returns the value — or raises :class:`~purposelimit.ProcessingDenied`.

Per record, the tag costs two slots beyond the subject id and the three dates
the record would hold anyway: a reference to the shared
:class:`~purposelimit.Collection` and one slot that stays ``None`` until the
record has per-field tags or memoised decisions.

Legal source: GDPR art. 5(1)(b), (c) and (e); LIL art. 4.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import reprlib
import types
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

import attrs
from typing_extensions import dataclass_transform

from ._audit import Audit, Memo
from ._compiled import SPEEDUPS
from ._context import (
    _CURRENT,
    Active,
    default_mode,
    fallback_audit,
    get_engine,
    runtime_for,
)
from ._errors import (
    CollectionRefused,
    ConfigurationError,
    DenialDetails,
    ProcessingDenied,
    _new_denied,
)
from ._ids import validate_id
from ._model import CategoryDecision, Collection, CollectionTag, Decision, Reason
from ._time import ensure_aware

if TYPE_CHECKING:
    from ._engine import Engine
    from ._register import Register

__all__ = [
    "PERSONAL_KEY",
    "FrozenTaggedRecord",
    "PersonalField",
    "TaggedRecord",
    "is_record",
    "personal",
    "personal_fields",
    "record",
    "remedy",
    "tag_of",
    "unguarded",
    "validate_collection",
]

_T = TypeVar("_T")

#: The attrs field ``metadata`` key under which :func:`personal` puts its
#: :class:`PersonalField`. Other tools may read it; a field without it is an
#: ordinary, unguarded field.
PERSONAL_KEY = "purposelimit"

#: Names a record class may not use for its own fields: the tag's.
TAG_FIELDS = ("subject", "collection", "collected_at", "last_contact_at", "contract_ended_at")
_EXTRA = "field_tags"
_RESERVED = frozenset((*TAG_FIELDS, _EXTRA))

_log = logging.getLogger("purposelimit")


@attrs.frozen(slots=True)
class PersonalField:
    """What :func:`personal` records in a field's metadata: the field's data category.

    Attributes:
        category: the data category id (``contact.email``), DESIGN §2.
    """

    category: str = attrs.field()

    @category.validator
    def _check(self, _attribute: attrs.Attribute[str], value: str) -> None:
        problem = validate_id(value)
        if problem is not None:
            raise ValueError(f"category: {problem}")


def personal(
    category: str,
    *,
    default: Any = attrs.NOTHING,
    validator: Any = None,
    repr: bool = True,
    hash: bool | None = None,
    init: bool = True,
    metadata: Mapping[Any, Any] | None = None,
    converter: Any = None,
    factory: Callable[[], Any] | None = None,
    kw_only: bool = False,
    eq: bool | None = None,
    order: bool | None = None,
    on_setattr: Any = None,
    alias: str | None = None,
    type: Any = None,
) -> Any:
    """Declare a personal-data field of a record class, holding data of *category*.

    Use it where :func:`attrs.field` would go; every other argument is passed
    to it. The category is stored as ``metadata["purposelimit"] =
    PersonalField(category)``.

    Args:
        category: the data category id (``"contact.email"``), as the register declares it.

    Returns:
        An attrs field definition.

    Raises:
        ValueError: *category* is not in the id syntax of DESIGN §9.
        ConfigurationError: *metadata* already holds the ``"purposelimit"`` key.

    In a record's ``repr`` the field shows as ``<category>``; ``repr=False``
    leaves it out entirely.
    """
    meta = dict(metadata or {})
    if PERSONAL_KEY in meta:
        raise ConfigurationError(f"metadata[{PERSONAL_KEY!r}] is reserved for personal()")
    meta[PERSONAL_KEY] = PersonalField(category)
    options: dict[str, Any] = {}
    if type is not None:
        options["type"] = type
    return attrs.field(
        default=default,
        validator=validator,
        repr=repr,
        hash=hash,
        init=init,
        metadata=meta,
        converter=converter,
        factory=factory,
        kw_only=kw_only,
        eq=eq,
        order=order,
        on_setattr=on_setattr,
        alias=alias,
        **options,
    )


# --------------------------------------------------------------------------- per-record extra slot


_NO_TAGS: Mapping[str, CollectionTag] = types.MappingProxyType({})


class _Extra(Mapping[str, CollectionTag]):
    """The record's optional slot: its per-field tags (a read-only mapping) and memoised decisions.

    Shared between a record and its shallow copies; a change of the record's
    tag replaces it instead of changing it (copy-on-write), so a copy never
    reuses decisions made for another tag. Pickling, deep copies and
    :func:`attrs.evolve` keep the field tags and drop the memo.
    """

    __slots__ = ("denials", "memo", "tags")

    def __init__(self, field_tags: Mapping[str, CollectionTag] | None = None) -> None:
        self.tags: Mapping[str, CollectionTag] = dict(field_tags) if field_tags else _NO_TAGS
        #: One memoised decision per personal field, at its guard's index (a
        #: list: indexing it is the cheapest lookup of the read path); grown on
        #: demand, :data:`_NO_MEMO` where nothing is memoised.
        self.memo: list[Memo] = []
        #: Per guard index: the last memo a denial was raised for, and the
        #: ``args`` (one DenialDetails) every denial raised for that memo shares.
        self.denials: dict[int, tuple[Memo, tuple[DenialDetails]]] | None = None

    def __getitem__(self, name: str) -> CollectionTag:
        return self.tags[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tags)

    def __len__(self) -> int:
        return len(self.tags)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Extra, (dict(self.tags),))

    def __repr__(self) -> str:
        return f"FieldTags({self.tags!r})"


def _to_extra(value: object) -> _Extra | None:
    if value is None:
        return None
    if isinstance(value, _Extra):  # attrs.evolve and setters pass the slot's value back in
        return _Extra(value.tags) if value.tags else None
    if not isinstance(value, Mapping):
        raise TypeError("field_tags must be a mapping of field name to CollectionTag")
    tags = dict(value)
    for name, tag in tags.items():
        if not isinstance(tag, CollectionTag):
            raise TypeError(f"field_tags[{name!r}] must be a CollectionTag")
    return _Extra(tags) if tags else None


def _check_extra(inst: Any, _attribute: attrs.Attribute[Any], value: _Extra | None) -> None:
    if value is None or not value.tags:
        return
    info: _RecordInfo = type(inst).__purposelimit_record__
    for name, tag in value.tags.items():
        if name not in info.categories:
            raise ValueError(f"field_tags: {type(inst).__name__} has no personal field {name!r}")
        if tag.subject != inst.subject:
            raise ValueError(
                f"field_tags[{name!r}]: a field tag must name the record's own data subject"
            )


def _EXTRA_SET(obj: Any, value: _Extra | None) -> None:  # noqa: N802 - a setter constant
    """Set the extra slot past frozen classes and setters (it is the library's, not a field's)."""
    object.__setattr__(obj, _EXTRA, value)


def _renew_memo(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> Any:
    """``on_setattr`` of the tag fields: a changed tag makes earlier decisions void.

    The new value is stored first and the memo replaced after, so a read racing
    with the change never memoises a decision for the old tag in the new memo.
    """
    object.__setattr__(inst, attribute.name, value)
    extra = getattr(inst, _EXTRA, None)
    if extra is not None:
        _EXTRA_SET(inst, _Extra(extra.tags) if extra.tags else None)
    return value


def _check_subject(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError("subject: the data subject's id is a non-empty string")


def _check_instant(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        ensure_aware(value, attribute.name)  # type: ignore[arg-type]  # checked there


# --------------------------------------------------------------------------- the guard

_current_get = _CURRENT.get
#: The memo of a field nothing is memoised for: its binding is no block's.
_NO_MEMO: Memo = (object(), math.inf, -math.inf, None, False, None, "", "", None)  # type: ignore[assignment]  # a placeholder, never audited
_CONSTRUCTING: contextvars.ContextVar[object] = contextvars.ContextVar(
    "purposelimit_constructing", default=None
)
_constructing_get = _CONSTRUCTING.get


class _PyGuard:
    """A personal field's read, in Python: the reference for ``_speedups.Guard``.

    ``_member`` is the field's original slot and ``index`` its position among
    its class's personal fields (its memo's index); :class:`_Guard` sets both.
    """

    __slots__ = ("_member", "index")

    _member: Any
    index: int
    _get: Callable[[Any, Any], Any]

    def _bind(self, owner: type) -> None:
        """Bind the guard to the record class it is installed on (the C base reads its slots)."""

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # The common path, in as few steps as possible: a decision memoised on the
        # record for this field under the active block's purpose (its binding),
        # valid now and for this store version; the read goes to the audit buffer
        # (one extend, see ENTRY_ITEMS), then the value is returned — or, for a
        # memoised denial in enforce mode, its exception raised. Whatever is
        # missing — no block (active is None), no memo yet (field_tags is None,
        # or the list is short), an access on the class (obj is None) — raises
        # AttributeError or IndexError here and takes the full path, _read; a
        # full buffer and monitor mode end in _settle.
        # A memo is its field's (memo[8] is the guard that made it): after an
        # ``obj.__class__`` swap another field may sit at the same index.
        # _read runs outside the except clause, so that an exception it raises
        # keeps the caller's in-flight exception, not this lookup's, as context.
        active: Active = _current_get()  # type: ignore[assignment]  # None fails in the try
        try:
            memo = obj.field_tags.memo[self.index]
            fresh = memo[0] is active.binding and memo[8] is self
        except (AttributeError, IndexError):
            fresh = False
        if fresh:
            # Callables kept in slots are fetched, then called: `active.now()` would
            # compile to a method lookup CPython 3.11 cannot specialise for a slot.
            clock = active.now
            now = clock()
            if memo[1] <= now < memo[2] and memo[3] == active.store.version:
                buffer = active.buffer
                buffer.extend((active, self, memo, now))
                if len(buffer) < active.audit._limit:
                    if memo[4]:
                        get = self._get
                        return get(obj, objtype)
                    if not active.monitor:
                        raise _denial(self, memo, active.audit, obj.field_tags)  # type: ignore[arg-type]  # a _Guard
                return _settle(self, obj, objtype, active, memo)  # type: ignore[arg-type]  # a _Guard
        return _read(self, obj, objtype, active)  # type: ignore[arg-type]  # a _Guard


if TYPE_CHECKING:
    _GuardBase = _PyGuard
else:
    _GuardBase = _PyGuard if SPEEDUPS is None else SPEEDUPS.Guard


class _Guard(_GuardBase):
    """The descriptor replacing a personal field's slot: reads ask the engine first.

    Writes and deletes go straight to the original slot (attrs' ``__init__``,
    ``__setstate__`` and setters use them); reads are decided, audited, and
    only then fetched (:class:`_PyGuard`, or its compiled twin).
    """

    # The compiled base derives `_get` from `_member` (read-only); the Python one keeps it.
    __slots__ = ("category", "name", "record_type") + (("_get",) if SPEEDUPS is None else ())

    def __init__(
        self, member: Any, name: str, category: str, record_type: str, index: int = 0
    ) -> None:
        self._member = member
        if SPEEDUPS is None:
            self._get = member.__get__
        self.name = name
        self.category = category
        self.record_type = record_type
        #: The field's position among its class's personal fields: its memo's index.
        self.index = index

    def __copy__(self) -> _Guard:
        return self  # a guard is part of its record class: copies of a memo share it

    def __deepcopy__(self, memo: dict[int, Any]) -> _Guard:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(
            f"the guard of {self.record_type}.{self.name} is part of its record class: "
            "pickle the record instead"
        )

    def __set__(self, obj: Any, value: Any) -> None:
        self._member.__set__(obj, value)

    def __delete__(self, obj: Any) -> None:
        self._member.__delete__(obj)

    def __repr__(self) -> str:
        return f"<personal field {self.record_type}.{self.name} ({self.category})>"


def _read(guard: _Guard, obj: Any, objtype: Any, active: Active | None) -> Any:
    """The read path beyond the memoised common case: decide, memoise, audit, return or raise.

    The memo keeps one decision per field: the last processing purpose's.
    """
    if obj is None:
        return guard  # an access on the class
    if _constructing_get() is obj:
        # The record's own __init__ (validators, __attrs_post_init__) is collection, not a read.
        return guard._get(obj, objtype)
    if active is None:
        return _read_unbound(guard, obj, objtype)
    extra = obj.field_tags
    if extra is None:
        extra = _Extra()
        _EXTRA_SET(obj, extra)
    stamp, instant = active.instant()
    version = active.store.version
    binding = active.binding
    index = guard.index
    memos = extra.memo
    memo = memos[index] if index < len(memos) else _NO_MEMO
    if (
        memo[0] is not binding
        or memo[8] is not guard
        or not (memo[1] <= stamp < memo[2])
        or version is None
        or memo[3] != version
    ):
        memo = _decide(guard, obj, extra, active, stamp, instant, version)
        if version is not None:
            if index >= len(memos):
                memos.extend([_NO_MEMO] * (index + 1 - len(memos)))
            memos[index] = memo
    active.buffer.extend((active, guard, memo, stamp))
    return _settle(guard, obj, objtype, active, memo)


def _settle(guard: _Guard, obj: Any, objtype: Any, active: Active, memo: Memo) -> Any:
    """The end of a read already in the audit buffer: drain a full buffer, return or raise."""
    audit = active.audit
    if len(active.buffer) >= audit._limit:
        audit._drain()
    if memo[4] or active.monitor:
        return guard._get(obj, objtype)
    # Made by a function and raised here as a temporary: an exception held in a
    # local of a frame it passes through would form a cycle only the garbage
    # collector frees.
    raise _denial(guard, memo, audit, obj.field_tags)


def _tag_parts(
    guard: _Guard, obj: Any, extra: _Extra | None
) -> tuple[str, str, datetime, datetime | None, datetime | None]:
    tag = None if extra is None else extra.tags.get(guard.name)
    if tag is None:
        return (
            obj.subject,
            obj.collection.purpose,
            obj.collected_at,
            obj.last_contact_at,
            obj.contract_ended_at,
        )
    return (
        tag.subject,
        tag.collection.purpose,
        tag.collected_at,
        tag.last_contact_at,
        tag.contract_ended_at,
    )


def _decide(
    guard: _Guard,
    obj: Any,
    extra: _Extra,
    active: Active,
    stamp: float,
    instant: datetime,
    version: int | None,
) -> Memo:
    """Ask the engine about one field of one record: the one place a read is decided."""
    subject, collected_for, t0, t1, t2 = _tag_parts(guard, obj, extra)
    purpose = active.scope.purpose
    category = guard.category
    decided, until = active.engine.decide_category(
        purpose, collected_for, category, subject, t0, t1, t2, instant
    )
    if decided.allowed and active.runtime.collectable(collected_for, category) is Reason.EXCESSIVE:
        # The data should never have been collected: no purpose may read it.
        decided = _over_collected(collected_for, category)
    decision = active.runtime.decision(purpose, collected_for, decided)
    until_stamp = math.inf if until is None else until.timestamp()
    return (
        active.binding,
        stamp,
        until_stamp,
        version,
        decided.allowed,
        decision,
        subject,
        collected_for,
        guard,
    )


def _over_collected(collected_for: str, category: str) -> CategoryDecision:
    return CategoryDecision(
        category=category,
        allowed=False,
        reason=Reason.EXCESSIVE,
        rule=f"purpose:{collected_for}",
        explanation=(
            f"{category} is not among the data categories {collected_for} may use, so it should "
            "not have been collected (minimisation, GDPR art. 5(1)(c))"
        ),
    )


class _Unbound:
    """The reader of a read outside any ``processing`` block, as audit events describe it."""

    __slots__ = ("mode", "register")

    actor: str | None = None
    purpose: str | None = None

    def __init__(self, mode: Any, register: Register | None) -> None:
        self.mode = mode
        self.register = register


def _no_purpose(category: str) -> CategoryDecision:
    return CategoryDecision(
        category=category,
        allowed=False,
        reason=Reason.NO_PURPOSE,
        rule="context",
        explanation=(
            "no processing purpose is bound, and personal data is read only for a declared "
            "purpose (GDPR art. 5(1)(b))"
        ),
    )


def _read_unbound(guard: _Guard, obj: Any, objtype: Any) -> Any:
    """A guarded read with no purpose bound: ``no-purpose``, denied in enforce mode."""
    engine = get_engine()
    mode = default_mode()
    if engine is None:
        audit = fallback_audit()
        register = None
        instant = datetime.now(UTC)
    else:
        runtime = runtime_for(engine)
        audit = runtime.audit
        register = runtime.register
        instant = ensure_aware(engine.clock(), "the engine's clock")
    subject, collected_for, *_ = _tag_parts(guard, obj, obj.field_tags)
    decision = Decision.combine(None, collected_for, (_no_purpose(guard.category),))
    stamp = instant.timestamp()
    memo: Memo = (None, stamp, stamp, None, False, decision, subject, collected_for, guard)
    audit._append((_Unbound(mode, register), guard, memo, stamp))
    if mode == "monitor":
        return guard._get(obj, objtype)
    raise _denial(guard, memo, audit)


def _denial(
    guard: _Guard, memo: Memo, audit: Audit, extra: _Extra | None = None
) -> ProcessingDenied:
    """The exception of a denied read: no string is formatted here.

    Its :class:`DenialDetails` (the message and remedy built when first shown)
    are made once per memoised denial and kept in the record's *extra*, so a
    read denied again costs only the exception itself.
    """
    args = None
    denials = None
    if extra is not None:
        denials = extra.denials
        if denials is None:
            denials = extra.denials = {}
        hit = denials.get(guard.index)
        if hit is not None and hit[0] is memo:
            args = hit[1]
    if args is None:
        decision = memo[5]
        args = (
            DenialDetails(
                decision,
                guard.record_type,
                guard.name,
                audit.subject_ref(memo[6]),
                functools.partial(remedy, decision, field=guard.name, category=guard.category),
            ),
        )
        if denials is not None:
            denials[guard.index] = (memo, args)
    error = _new_denied(ProcessingDenied)
    error.args = args
    return error


# --------------------------------------------------------------------------- the escape hatch

#: The longest ``actor`` or ``reason`` :func:`unguarded` accepts (they land in audit lines).
_HATCH_TEXT_MAX = 200


class _Hatch:
    """The reader of an :func:`unguarded` read, as audit events describe it."""

    __slots__ = ("actor", "mode", "purpose", "register")

    def __init__(
        self, actor: str, purpose: str | None, mode: Any, register: Register | None
    ) -> None:
        self.actor = actor
        self.purpose = purpose
        self.mode = mode
        self.register = register


def _hatch_text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"unguarded: {name} must be a non-empty string")
    if len(value) > _HATCH_TEXT_MAX or not value.isprintable():
        raise ConfigurationError(
            f"unguarded: {name} must be one line of printable text of at most "
            f"{_HATCH_TEXT_MAX} characters"
        )
    return value


def unguarded(record: object, field: str, *, actor: str, reason: str) -> Any:
    """Read a personal field without a purpose check: the audited escape hatch.

    For the rare code that must move data whatever its purpose — a data
    migration, a schema conversion, an export answering the person's own
    access request (GDPR art. 15, 20). The value is returned whatever the
    engine would decide, but the read is **always** audited first: one audit
    event naming *actor* and carrying ``rule = "unguarded:<reason>"``, with
    ``allowed`` and ``reason`` saying what the engine would have decided under
    the active ``processing`` block (``no-purpose`` outside any block). The
    event is handed to the sinks before the value is returned: when a sink
    fails and the audit is set to fail closed, :class:`~purposelimit.AuditError`
    is raised and the value is not returned.

    Every other way of reading a personal field is guarded; reading the slot
    behind the guard is outside the threat model (SECURITY.md).

    Args:
        record: a tagged record.
        field: the name of one of its personal fields.
        actor: who reads (a migration's name, a user id): one printable line,
            at most 200 characters.
        reason: why (a ticket, the migration's purpose): one printable line, at
            most 200 characters, recorded in the audit trail — never a personal
            value.

    Returns:
        The field's value.

    Raises:
        TypeError: *record* is not a tagged record.
        KeyError: *field* is not one of its personal fields.
        ConfigurationError: *actor* or *reason* is empty, too long or not one
            printable line.
        AuditError: the audit could not record the read and is set to fail closed.
        NaiveDatetimeError: the block's or the engine's clock returned a naive datetime.

    .. versionadded:: 0.1
    """
    actor = _hatch_text(actor, "actor")
    reason = _hatch_text(reason, "reason")
    if field not in personal_fields(record):
        raise KeyError(field)
    obj: Any = record
    guard: _Guard = _find_descriptor(type(obj), field)
    active = _current_get()
    engine: Engine | None
    if active is not None:
        engine, runtime, audit = active.engine, active.runtime, active.audit
        purpose: str | None = active.scope.purpose
        mode = active.scope.mode
        stamp, instant = active.instant()
    else:
        engine, purpose, mode = get_engine(), None, default_mode()
        if engine is None:
            audit = fallback_audit()
            instant = datetime.now(UTC)
        else:
            runtime = runtime_for(engine)
            audit = runtime.audit
            instant = ensure_aware(engine.clock(), "the engine's clock")
        stamp = instant.timestamp()
    subject, collected_for, t0, t1, t2 = _tag_parts(guard, obj, obj.field_tags)
    if engine is None or purpose is None:
        part = _no_purpose(guard.category)
        register = None if engine is None else runtime.register
    else:
        part, _until = engine.decide_category(
            purpose, collected_for, guard.category, subject, t0, t1, t2, instant
        )
        if part.allowed and runtime.collectable(collected_for, guard.category) is Reason.EXCESSIVE:
            part = _over_collected(collected_for, guard.category)
        register = runtime.register
    part = attrs.evolve(part, rule=f"unguarded:{reason}")
    decision = Decision.combine(purpose, collected_for, (part,))
    memo: Memo = (None, stamp, stamp, None, part.allowed, decision, subject, collected_for, guard)
    audit._append((_Hatch(actor, purpose, mode, register), guard, memo, stamp))
    audit.flush()  # recorded before the value leaves: AuditError when it cannot be
    return guard._get(obj, type(obj))


def remedy(decision: Decision, *, field: str = "", category: str = "") -> str:
    """What would make a denied read lawful, in one sentence (for :class:`ProcessingDenied`).

    Args:
        decision: the denial.
        field: the field read, named in the minimisation remedy.
        category: the field's data category.

    Returns:
        The remedy for the decision's reason code; empty for an allowed decision.
    """
    p = decision.purpose or "(no purpose)"
    p0 = decision.collected_for or "(unknown)"
    category = category or (decision.categories[0].category if decision.categories else "")
    reason = decision.reason
    if reason is Reason.NO_PURPOSE:
        return (
            "wrap the read in `with processing(<purpose>, actor=...)`, naming the purpose "
            "the read serves"
        )
    if reason is Reason.UNKNOWN_PURPOSE:
        return (
            f"declare the purpose {p if 'processing purpose' in decision.explanation else p0} "
            "in the register (GDPR art. 30), or fix its id"
        )
    if reason is Reason.UNKNOWN_CATEGORY:
        return f"declare the data category {category} in the register, or fix the field's category"
    if reason is Reason.RETENTION_EXPIRED:
        return (
            "the retention period ended: erase or anonymise the data, or move it to an "
            "archive purpose (GDPR art. 5(1)(e))"
        )
    if reason is Reason.OBJECTION:
        return (
            f"stop: the person objected to direct marketing (GDPR art. 21(3)); {p} may not "
            "use their data while the objection stands"
        )
    if reason is Reason.EXCESSIVE:
        if decision.rule == f"purpose:{p0}" and p0 != p:
            return (
                f"erase the field {field or category}: {p0} should not have collected "
                f"{category} (minimisation, GDPR art. 5(1)(c))"
            )
        return (
            f"remove the field {field or category} from this processing (minimisation, GDPR "
            f"art. 5(1)(c)), or declare {category} among the categories of {p} if it truly "
            "needs it"
        )
    if reason is Reason.CONSENT_WITHDRAWN:
        return (
            f"stop: the person withdrew consent for {p} (GDPR art. 7(3)); only a new consent "
            "can lift it"
        )
    if reason is Reason.CONSENT_REFUSED:
        return f"stop: the person refused consent for {p}; only a new consent can lift it"
    if reason is Reason.CONSENT_EXPIRED:
        return f"ask the person to renew their consent for {p}, and record it"
    if reason is Reason.CONSENT_INVALID:
        return (
            f"record the person's consent for {p}, given by a clear affirmative act (not "
            "pre-ticked, bundled, implied or silent: GDPR art. 4(11))"
        )
    if reason is Reason.CONSENT_MISSING:
        return f"record the person's consent for {p} (GDPR art. 6(1)(a) and 7)"
    if reason is Reason.PROHIBITED:
        return (
            f"the register prohibits reusing {p0} data for {p}: record the person's consent "
            f"for {p}, or an authorisation for this reuse"
        )
    if reason is Reason.INCOMPATIBLE:
        return (
            f"record the person's consent for {p}, or declare a compatibility assessment from "
            f"{p0} to {p} in the register (GDPR art. 6(4))"
        )
    return ""


# --------------------------------------------------------------------------- record classes


@attrs.frozen(slots=True)
class _RecordInfo:
    """What :func:`record` remembers about a record class (``cls.__purposelimit_record__``)."""

    #: Personal field name -> data category id, in field order.
    categories: Mapping[str, str]


def is_record(obj: object) -> bool:
    """Whether *obj* is a record class made by :func:`record` or an instance of one."""
    cls = obj if isinstance(obj, type) else type(obj)
    return hasattr(cls, "__purposelimit_record__")


def personal_fields(cls: type | object) -> Mapping[str, str]:
    """Return the personal fields of a record class (or instance): name -> data category id.

    Raises:
        TypeError: *cls* is not a record class.
    """
    klass = cls if isinstance(cls, type) else type(cls)
    info: _RecordInfo | None = getattr(klass, "__purposelimit_record__", None)
    if info is None:
        raise TypeError(f"{klass.__name__} is not a record class (decorate it with @record)")
    return info.categories


def tag_of(record: object, field: str | None = None) -> CollectionTag:
    """Return the collection tag of *record*, or of one of its fields.

    Args:
        record: a tagged record.
        field: a personal field's name: its own tag when it was collected
            later under another purpose, else the record's.

    Returns:
        A new :class:`~purposelimit.CollectionTag` (built on demand: records
        keep its parts in slots).

    Raises:
        TypeError: *record* is not a tagged record.
        KeyError: *field* is not a personal field of the record.
    """
    categories = personal_fields(record)
    obj: Any = record
    if field is not None:
        if field not in categories:
            raise KeyError(field)
        extra: _Extra | None = getattr(obj, _EXTRA)
        if extra is not None and field in extra.tags:
            return extra.tags[field]
    return CollectionTag(
        subject=obj.subject,
        collection=obj.collection,
        collected_at=obj.collected_at,
        last_contact_at=obj.last_contact_at,
        contract_ended_at=obj.contract_ended_at,
    )


def _collection_problems(obj: Any, engine: Engine) -> list[tuple[str, str, str, Reason]]:
    """(field, category, collection purpose, reason) for every field its collection may not hold."""
    runtime = runtime_for(engine)
    info: _RecordInfo = type(obj).__purposelimit_record__
    extra: _Extra | None = getattr(obj, _EXTRA)
    tags = None if extra is None else extra.tags
    purpose = obj.collection.purpose
    found = []
    for name, category in info.categories.items():
        tag = None if tags is None else tags.get(name)
        collected_for = purpose if tag is None else tag.collection.purpose
        reason = runtime.collectable(collected_for, category)
        if reason is not None:
            found.append((name, category, collected_for, reason))
    return found


def validate_collection(record: object, engine: Engine | None = None) -> None:
    """Check that *record*'s collection purpose (or its fields' own) may hold each field's category.

    Records check this at construction when an engine is reachable (the
    active block's, else the default engine); this function checks a record
    built without one, or against another engine.

    Args:
        record: a tagged record.
        engine: the engine; the active block's, else the default engine, when omitted.

    Raises:
        CollectionRefused: a field's category is ``excessive`` for its
            collection purpose (GDPR art. 5(1)(c)): the NIR at newsletter signup.
        ConfigurationError: no engine is reachable, or a collection purpose or
            category is not declared in the register.
        TypeError: *record* is not a tagged record.
    """
    personal_fields(record)
    if engine is None:
        engine = _reachable_engine()
        if engine is None:
            raise ConfigurationError(
                "validate_collection: no engine. Remedy: pass engine=..., or install one "
                "with purposelimit.set_engine(engine)"
            )
    _raise_collection(record, _collection_problems(record, engine))


def _raise_collection(record: object, problems: list[tuple[str, str, str, Reason]]) -> None:
    if not problems:
        return
    record_type = type(record).__name__
    unknown = [p for p in problems if p[3] is not Reason.EXCESSIVE]
    if unknown:
        name, category, collected_for, reason = unknown[0]
        what = (
            f"the collection purpose {collected_for}"
            if reason is Reason.UNKNOWN_PURPOSE
            else f"the data category {category} (field {name})"
        )
        raise ConfigurationError(
            f"{record_type} cannot be collected for {collected_for}: {reason.value} — {what} "
            "is not declared in the register. Remedy: declare it in the register, or fix the id"
        )
    first = problems[0][2]
    raise CollectionRefused(
        record_type, first, [(name, category) for name, category, p, _ in problems if p == first]
    )


def _reachable_engine() -> Engine | None:
    active = _current_get()
    if active is not None:
        return active.engine
    return get_engine()


def _check_at_construction(obj: Any) -> None:
    active = _current_get()
    engine = active.engine if active is not None else get_engine()
    if engine is None:
        return  # checked at each first read instead, and by validate_collection()
    problems = _collection_problems(obj, engine)
    if not problems:
        return
    monitor = active.monitor if active is not None else default_mode() == "monitor"
    if not monitor:
        _raise_collection(obj, problems)
    for name, category, collected_for, reason in problems:
        _log.warning(
            "purposelimit: monitor mode let %s be collected for %s with field %s (%s): %s",
            type(obj).__name__,
            collected_for,
            name,
            category,
            reason.value,
        )


def _wrap_init(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807 - it is __init__
        token = _CONSTRUCTING.set(self)
        try:
            init(self, *args, **kwargs)
        finally:
            _CONSTRUCTING.reset(token)
        _check_at_construction(self)

    return __init__


@reprlib.recursive_repr("<...>")
def _record_repr(self: Any) -> str:
    """A record's repr: ordinary fields as attrs shows them, personal ones as ``<category>``."""
    cls = type(self)
    info: _RecordInfo = cls.__purposelimit_record__
    extra: _Extra | None = getattr(self, _EXTRA, None)
    tags = None if extra is None else extra.tags
    collection = getattr(self, "collection", None)
    head = "collected_for=" + (repr(collection.purpose) if collection is not None else "?")
    parts = [head]
    for attribute in attrs.fields(cls):
        name = attribute.name
        if name in _RESERVED or attribute.repr is False:
            continue
        if name in info.categories:
            tag = None if tags is None else tags.get(name)
            shown = info.categories[name]
            if tag is not None:
                shown += f", collected for {tag.collection.purpose}"
            parts.append(f"{name}=<{shown}>")
            continue
        value = getattr(self, name, attrs.NOTHING)
        if value is attrs.NOTHING:
            continue
        shown_value = attribute.repr(value) if callable(attribute.repr) else repr(value)
        parts.append(f"{name}={shown_value}")
    return f"{cls.__qualname__}({', '.join(parts)})"


_REFUSED_OPTIONS = {
    "slots": (False, "records are slotted: values live in slots the guards stand in front of"),
    "eq": (True, "records compare by identity, so equality never reveals a value"),
    "order": (True, "records have no value order, so sorting never reveals a value"),
    "unsafe_hash": (True, "records hash by identity, so a hash never reveals a value"),
    "hash": (True, "records hash by identity, so a hash never reveals a value"),
    "cmp": (True, "records compare by identity, so equality never reveals a value"),
}


def _inject_tag_fields(cls: type, frozen: bool) -> None:
    """Declare the tag's keyword-only fields on *cls* before attrs builds it."""
    annotations = cls.__annotations__  # the class's own dict (created when absent)
    setter = None if frozen else attrs.setters.pipe(attrs.setters.validate, _renew_memo)
    definitions: dict[str, tuple[Any, Any]] = {
        "subject": (str, attrs.field(kw_only=True, validator=_check_subject, on_setattr=setter)),
        "collection": (
            Collection,
            attrs.field(
                kw_only=True,
                validator=attrs.validators.instance_of(Collection),
                on_setattr=setter,
            ),
        ),
        "collected_at": (
            datetime,
            attrs.field(kw_only=True, validator=_check_instant, on_setattr=setter),
        ),
        "last_contact_at": (
            datetime | None,
            attrs.field(default=None, kw_only=True, validator=_check_instant, on_setattr=setter),
        ),
        "contract_ended_at": (
            datetime | None,
            attrs.field(default=None, kw_only=True, validator=_check_instant, on_setattr=setter),
        ),
        _EXTRA: (
            Mapping[str, CollectionTag] | None,
            attrs.field(
                default=None,
                kw_only=True,
                converter=_to_extra,
                validator=_check_extra,
                repr=False,
                on_setattr=(
                    None
                    if frozen
                    else attrs.setters.pipe(attrs.setters.convert, attrs.setters.validate)
                ),
            ),
        ),
    }
    for name, (annotation, definition) in definitions.items():
        annotations[name] = annotation
        setattr(cls, name, definition)


def _find_descriptor(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def _build(cls: type[_T], options: dict[str, Any]) -> type[_T]:
    for option, (refused, why) in _REFUSED_OPTIONS.items():
        if option in options and options[option] == refused:
            raise ConfigurationError(f"@record({option}={refused!r}) is not supported: {why}")
    own = set(inspect.get_annotations(cls)) | {
        k for k, v in cls.__dict__.items() if isinstance(v, attrs.Attribute) or _is_field(v)
    }
    clash = sorted(own & _RESERVED)
    if clash:
        raise ConfigurationError(
            f"{cls.__name__}: {', '.join(clash)} name the record's collection tag; "
            "rename your field(s)"
        )
    inherited = any("__purposelimit_record__" in vars(base) for base in cls.__mro__[1:])
    if not inherited:
        _inject_tag_fields(cls, bool(options.get("frozen", False)))
    user_repr = "__repr__" in cls.__dict__
    built: type[_T] = attrs.define(
        cls, **{**options, "slots": True, "eq": False, "order": False, "repr": False}
    )
    categories: dict[str, str] = {}
    for attribute in attrs.fields(built):  # type: ignore[arg-type]  # attrs.define made it one
        spec = attribute.metadata.get(PERSONAL_KEY)
        if spec is None:
            continue
        if not isinstance(spec, PersonalField):
            raise ConfigurationError(
                f"{cls.__name__}.{attribute.name}: metadata[{PERSONAL_KEY!r}] must be a "
                "PersonalField (use personal())"
            )
        descriptor = _find_descriptor(built, attribute.name)
        member = descriptor._member if isinstance(descriptor, _Guard) else descriptor
        if not isinstance(member, types.MemberDescriptorType):
            raise ConfigurationError(
                f"{cls.__name__}.{attribute.name}: a personal field must be a plain slotted "
                "attribute"
            )
        guard = _Guard(member, attribute.name, spec.category, cls.__name__, len(categories))
        setattr(built, attribute.name, guard)
        guard._bind(built)
        categories[attribute.name] = spec.category
    built.__purposelimit_record__ = _RecordInfo(types.MappingProxyType(categories))  # type: ignore[attr-defined]  # the marker of record classes
    built.__init__ = _wrap_init(built.__init__)  # type: ignore[method-assign]  # wrap attrs' init
    if not user_repr:
        built.__repr__ = _record_repr  # type: ignore[method-assign]  # our repr
    return built


def _is_field(value: object) -> bool:
    return type(value).__name__ == "_CountingAttr"


@overload
def record(maybe_cls: type[_T], /) -> type[_T]: ...


@overload
def record(
    maybe_cls: None = None,
    /,
    *,
    frozen: bool = False,
    kw_only: bool = False,
    **options: Any,
) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(field_specifiers=(attrs.field, personal))
def record(maybe_cls: type[_T] | None = None, /, **options: Any) -> Any:
    """Make a tagged record class: :func:`attrs.define` plus the collection tag and read guards.

    Usable bare (``@record``) or with attrs options (``@record(frozen=True)``),
    passed through to :func:`attrs.define`. Every instance takes, besides its
    own fields, the keyword-only tag arguments:

    * ``subject`` (str): the data subject's id;
    * ``collection`` (:class:`~purposelimit.Collection`): the shared collection
      purpose and source;
    * ``collected_at`` (aware datetime): T0;
    * ``last_contact_at``, ``contract_ended_at`` (aware datetime or ``None``): T1, T2;
    * ``field_tags`` (mapping of personal field name to
      :class:`~purposelimit.CollectionTag`, optional): a field collected later
      under another purpose, decided against its own tag.

    Each field declared with :func:`personal` is guarded: reading it asks the
    engine under the active ``processing`` block. A record compares and hashes
    by identity (``eq``, ``order`` and ``hash`` options are refused) and its
    ``repr`` shows the collection purpose and ``<category>`` placeholders,
    never a personal value nor the subject id. The tag fields are readable
    attributes; a change to one of them (mutable classes) voids the memoised
    decisions.

    At construction, when an engine is reachable (the active block's, else the
    default engine), a field whose category its collection purpose may not use
    raises :class:`~purposelimit.CollectionRefused` (a warning in monitor
    mode). With no engine reachable the check happens at the field's first
    read (see :func:`validate_collection`).

    Raises:
        ConfigurationError: a refused option, or a field named like a tag field.
    """

    def wrap(cls: type[_T]) -> type[_T]:
        return _build(cls, options)

    if maybe_cls is None:
        return wrap
    return wrap(maybe_cls)


if TYPE_CHECKING:

    @record
    class TaggedRecord:
        """A base that shows type checkers the tag of a :func:`record` class (see there)."""

        __attrs_attrs__: ClassVar[Any]
        subject: str = attrs.field(kw_only=True)
        collection: Collection = attrs.field(kw_only=True)
        collected_at: datetime = attrs.field(kw_only=True)
        last_contact_at: datetime | None = attrs.field(kw_only=True, default=None)
        contract_ended_at: datetime | None = attrs.field(kw_only=True, default=None)
        field_tags: Mapping[str, CollectionTag] | None = attrs.field(kw_only=True, default=None)

    @record(frozen=True)
    class FrozenTaggedRecord:
        """:class:`TaggedRecord` for ``@record(frozen=True)`` classes."""

        __attrs_attrs__: ClassVar[Any]
        subject: str = attrs.field(kw_only=True)
        collection: Collection = attrs.field(kw_only=True)
        collected_at: datetime = attrs.field(kw_only=True)
        last_contact_at: datetime | None = attrs.field(kw_only=True, default=None)
        contract_ended_at: datetime | None = attrs.field(kw_only=True, default=None)
        field_tags: Mapping[str, CollectionTag] | None = attrs.field(kw_only=True, default=None)

else:

    class TaggedRecord:
        """An optional base for :func:`record` classes, for static type checkers.

        ``@record`` adds the tag's keyword-only arguments (``subject``,
        ``collection``, ``collected_at``, ``last_contact_at``,
        ``contract_ended_at``, ``field_tags``) at run time, where type checkers
        cannot see them. Inheriting from this base (empty at run time) shows
        them: ``@record class Lead(TaggedRecord): ...``.
        """

        __slots__ = ()

    class FrozenTaggedRecord:
        """:class:`TaggedRecord` for ``@record(frozen=True)`` classes."""

        __slots__ = ()


if SPEEDUPS is not None:
    SPEEDUPS.configure_guards(_Extra, _PyGuard.__get__, _read, _settle, _denial, ProcessingDenied)
