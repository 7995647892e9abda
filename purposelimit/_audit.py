"""The audit trail: every decision on a guarded read, allowed or denied, recorded without values.

DESIGN §4: the read path only appends a compact entry to a bounded buffer;
:class:`AuditEvent` values are built when the buffer is drained — when a
``processing`` block exits, on :meth:`Audit.flush`, at interpreter exit, or by
the reading thread itself when the buffer is full. No event is ever dropped
because the buffer is full.

An audit event names who (actor), when, under which processing purpose, which
record (record type and the data subject's id or keyed pseudonym), which field
and data category, the decision (allowed, reason code, rule) and which register
decided (version and content hash). It never holds a personal field value.

Legal source: GDPR art. 5(2) (accountability) and art. 30 (record of
processing activities); CNIL délibération 2021-131 on access traceability.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

from ._compiled import SPEEDUPS
from ._errors import AuditError, ConfigurationError
from ._model import Decision, Reason

if TYPE_CHECKING:
    from ._register import Register

__all__ = [
    "AUDIT_LOGGER",
    "Audit",
    "AuditEvent",
    "AuditSink",
    "FailurePolicy",
    "InMemoryAuditSink",
    "LoggingAuditSink",
    "Mode",
    "pseudonym",
]

#: The enforcement mode of a ``processing`` block: ``enforce`` raises on a
#: denial, ``monitor`` lets the read through and records the would-be denial.
Mode = Literal["enforce", "monitor"]

#: What a sink failure does: ``fail-closed`` denies the read that triggered the
#: drain (raising :class:`~purposelimit.AuditError`), ``continue`` lets it through.
FailurePolicy = Literal["fail-closed", "continue"]

#: The name of the stdlib logger :class:`LoggingAuditSink` writes to by default.
AUDIT_LOGGER = "purposelimit.audit"

#: Sink failures are reported on this logger (never with a value).
_failure_log = logging.getLogger("purposelimit")

#: Called with every batch of built events, before the sinks get it, whatever
#: the :class:`Audit`: how ``purposelimit.testing.capture_audit()`` and the
#: pytest plugin see the reads of every engine. Empty unless a capture is open;
#: a drain then pays one truth test.
_observers: list[Callable[[tuple[AuditEvent, ...]], None]] = []

_PSEUDONYM_PREFIX = "ps-"
_PSEUDONYM_HEX = 32  # 128 bits of HMAC-SHA256


def pseudonym(subject: str, key: bytes) -> str:
    """Return the keyed pseudonym of a data subject's id: ``ps-`` + 32 hex digits.

    ``HMAC-SHA256(key, subject)`` truncated to 128 bits. The same key gives the
    same pseudonym, so audit events about one person can be linked without
    naming the person; without the key the id cannot be recovered or guessed
    by hashing candidate e-mail addresses (GDPR art. 4(5) and 32(1)(a)).

    Args:
        subject: the data subject's id, as the records carry it.
        key: the secret key (at least 16 bytes).

    Returns:
        ``"ps-"`` followed by 32 lower-case hex digits.
    """
    digest = hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()
    return _PSEUDONYM_PREFIX + digest[:_PSEUDONYM_HEX]


@attrs.frozen(slots=True)
class AuditEvent:
    """One recorded decision on a guarded read (DESIGN §2 "audit event"). Never holds a value.

    Attributes:
        time: aware datetime (UTC) of the read.
        actor: who read, as named by ``processing(..., actor=...)``; ``None``
            for a read outside any ``processing`` block.
        purpose: the processing purpose id; ``None`` for ``no-purpose``.
        collected_for: the collection purpose id of the field's tag.
        record_type: the record class's name.
        subject_ref: the data subject's id, or its keyed pseudonym
            (:func:`pseudonym`) when the :class:`Audit` has a ``pseudonym_key``.
        field: the field that was read.
        category: the field's data category id.
        allowed: the engine's answer.
        reason: the reason code (:class:`~purposelimit.Reason`).
        rule: what decided, as ``kind:id``.
        mode: ``"enforce"`` or ``"monitor"``.
        monitored: ``True`` when the engine denied the read and monitor mode
            let it through: the would-be denial to look at before enforcing.
        register_version: the register's declared version.
        register_hash: the register's content hash (``sha256:<hex>``).
    """

    time: datetime
    actor: str | None
    purpose: str | None
    collected_for: str | None
    record_type: str
    subject_ref: str
    field: str
    category: str
    allowed: bool
    reason: Reason
    rule: str
    mode: Mode
    monitored: bool
    register_version: str | None
    register_hash: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict (the time in ISO-8601, the reason as its code)."""
        return {
            "time": self.time.isoformat(),
            "actor": self.actor,
            "purpose": self.purpose,
            "collected_for": self.collected_for,
            "record_type": self.record_type,
            "subject_ref": self.subject_ref,
            "field": self.field,
            "category": self.category,
            "allowed": self.allowed,
            "reason": self.reason.value,
            "rule": self.rule,
            "mode": self.mode,
            "monitored": self.monitored,
            "register_version": self.register_version,
            "register_hash": self.register_hash,
        }

    def __str__(self) -> str:
        """One log line of ``key=value`` pairs: ids and reason codes only."""
        return (
            f"time={self.time.isoformat()} actor={self.actor or '-'} "
            f"purpose={self.purpose or '-'} collected_for={self.collected_for or '-'} "
            f"record={self.record_type} field={self.field} category={self.category} "
            f"subject={self.subject_ref} allowed={'true' if self.allowed else 'false'} "
            f"reason={self.reason.value} rule={self.rule} mode={self.mode} "
            f"monitored={'true' if self.monitored else 'false'} "
            f"register={self.register_version or '-'} hash={self.register_hash or '-'}"
        )


def _event_maker() -> Callable[..., AuditEvent]:
    """What the drain builds events with: :class:`AuditEvent`, or its compiled twin.

    The compiled one sets the slots in field order, which is all ``__init__``
    does while every field is positional, with no validator, converter or
    default, and the class has no ``__attrs_pre_init__`` or
    ``__attrs_post_init__``; otherwise the class itself is used.
    """
    fields = attrs.fields(AuditEvent)
    plain = all(
        f.init
        and not f.kw_only
        and f.validator is None
        and f.converter is None
        and f.default is attrs.NOTHING
        for f in fields
    )
    hooks = ("__attrs_pre_init__", "__attrs_post_init__")
    if SPEEDUPS is None or not plain or any(hasattr(AuditEvent, hook) for hook in hooks):
        return AuditEvent
    SPEEDUPS.configure_events(AuditEvent, tuple(f.name for f in fields))
    return SPEEDUPS.new_event  # type: ignore[no-any-return]  # the compiled AuditEvent(...)


#: Builds an :class:`AuditEvent` from its field values, in field order.
_new_event: Callable[..., AuditEvent] = _event_maker()


@runtime_checkable
class AuditSink(Protocol):
    """Where audit events go. ``emit`` receives them in read order, in batches.

    An ``emit`` that raises is a sink failure: it is reported on the
    ``purposelimit`` logger, the batch is kept to be retried at the next drain,
    and the :class:`Audit`'s ``on_failure`` setting decides whether the read
    that triggered the drain is denied.
    """

    def emit(self, events: Sequence[AuditEvent]) -> None: ...


class InMemoryAuditSink:
    """A thread-safe sink keeping every event in memory, for tests and small tools."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[AuditEvent] = []

    def emit(self, events: Sequence[AuditEvent]) -> None:
        """Keep *events*."""
        with self._lock:
            self._events.extend(events)

    @property
    def events(self) -> tuple[AuditEvent, ...]:
        """Every event received so far, in order."""
        with self._lock:
            return tuple(self._events)

    def clear(self) -> None:
        """Forget every event received so far."""
        with self._lock:
            self._events.clear()

    def __repr__(self) -> str:
        return f"<InMemoryAuditSink events={len(self._events)}>"


class LoggingAuditSink:
    """Writes one stdlib ``logging`` line per event: ids and reason codes, never a value.

    Args:
        logger: the logger or its name; ``"purposelimit.audit"`` by default.
        level: the level of allowed reads (``INFO``).
        denied_level: the level of denied and monitored reads (``WARNING``).

    Each record carries the :class:`AuditEvent` as ``record.purposelimit_event``
    for structured handlers.
    """

    def __init__(
        self,
        logger: logging.Logger | str = AUDIT_LOGGER,
        *,
        level: int = logging.INFO,
        denied_level: int = logging.WARNING,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.denied_level = denied_level

    def emit(self, events: Sequence[AuditEvent]) -> None:
        """Log each event as one line."""
        log = self.logger.log
        for event in events:
            level = self.level if event.allowed else self.denied_level
            log(level, "purposelimit audit %s", event, extra={"purposelimit_event": event})

    def __repr__(self) -> str:
        return f"<LoggingAuditSink logger={self.logger.name!r}>"


# --------------------------------------------------------------------------- raw entries


class ReadSource(Protocol):
    """What an entry's first item tells about the reader (a processing scope)."""

    @property
    def actor(self) -> str | None: ...

    @property
    def purpose(self) -> str | None: ...

    @property
    def mode(self) -> Mode: ...

    @property
    def register(self) -> Register | None: ...


class FieldSource(Protocol):
    """What an entry's second item tells about the field read (a field guard)."""

    @property
    def record_type(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def category(self) -> str: ...


#: A memoised decision as the read path keeps it: (binding: the processing
#: purpose's key in its engine's runtime, valid-from timestamp, valid-until
#: timestamp, store version, allowed, decision, subject id, collection
#: purpose, the field's guard that made it). Timestamps are POSIX seconds (floats).
Memo = tuple[object, float, float, "int | None", bool, Decision, str, str, object]

#: One read as the read path records it: (reader, field, memo, timestamp).
RawEntry = tuple[ReadSource, FieldSource, Memo, float]

#: How many buffer items one read takes: the buffer is a flat list to which the
#: read path adds a :data:`RawEntry`'s four items with one ``list.extend`` — one
#: C call, atomic under the GIL, which leaves no object behind for the garbage
#: collector to track (a tuple per read would).
ENTRY_ITEMS = 4


# --------------------------------------------------------------------------- the audit

_live: weakref.WeakSet[Audit] = weakref.WeakSet()


class Audit:
    """The audit trail of guarded reads: a bounded buffer drained into sinks.

    Give it to the engine as ``Engine(register, audit=Audit(...))``. An engine
    whose ``audit`` is ``None`` gets ``Audit()``: one :class:`LoggingAuditSink`,
    fail closed. An engine's ``audit`` may also be a single :class:`AuditSink`,
    wrapped in ``Audit([sink])``.

    Args:
        sinks: where events go; ``(LoggingAuditSink(),)`` by default.
        capacity: how many reads the buffer holds before the reading thread
            drains it itself (at least 1; 1024 by default).
        pseudonym_key: when set, audit events and denials name data subjects by
            their keyed pseudonym (:func:`pseudonym`) instead of their id.
        on_failure: ``"fail-closed"`` (default): when a sink fails, the read
            that triggered the drain raises :class:`~purposelimit.AuditError`
            and, until a drain succeeds, every read drains (and fails) itself;
            ``"continue"``: the failure is reported and reads go on.
        max_pending: how many undelivered events are kept per failing sink for
            retry (100,000 by default); beyond it the oldest are discarded and
            counted in :attr:`lost`, reported on the ``purposelimit`` logger.

    Raises:
        ConfigurationError: a bad capacity, policy or key.

    Draining is thread-safe; events reach each sink in read order per drain.
    """

    def __init__(
        self,
        sinks: Iterable[AuditSink] | None = None,
        *,
        capacity: int = 1024,
        pseudonym_key: bytes | None = None,
        on_failure: FailurePolicy = "fail-closed",
        max_pending: int = 100_000,
    ) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ConfigurationError("capacity: the audit buffer holds at least 1 entry")
        if on_failure not in ("fail-closed", "continue"):
            raise ConfigurationError(
                f"on_failure: expected 'fail-closed' or 'continue', not {on_failure!r}"
            )
        if pseudonym_key is not None and (
            not isinstance(pseudonym_key, bytes) or len(pseudonym_key) < 16
        ):
            raise ConfigurationError("pseudonym_key: give a secret of at least 16 bytes")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError("max_pending: keep at least 1 pending event")
        self.sinks: tuple[AuditSink, ...] = (LoggingAuditSink(),) if sinks is None else tuple(sinks)
        for sink in self.sinks:
            if not callable(getattr(sink, "emit", None)):
                raise ConfigurationError(f"{type(sink).__name__} is not an audit sink (no emit)")
        self.capacity = capacity
        self.pseudonym_key = pseudonym_key
        self.on_failure: FailurePolicy = on_failure
        self.max_pending = max_pending
        #: Events discarded because a sink stayed down beyond ``max_pending``.
        self.lost = 0
        # The read path extends this flat list by the ENTRY_ITEMS items of each
        # read, and drains it when len >= _limit (items, not reads; 1 while a
        # sink is down and the policy is fail-closed: every read drains then).
        self._buffer: list[Any] = []
        self._limit = capacity * ENTRY_ITEMS
        self._lock = threading.RLock()
        self._draining = False
        self._pending: list[list[AuditEvent]] = [[] for _ in self.sinks]
        _live.add(self)

    # ------------------------------------------------------------------ public

    def subject_ref(self, subject: str) -> str:
        """How audit events and denials name *subject*: its pseudonym when a key is set."""
        key = self.pseudonym_key
        return subject if key is None else pseudonym(subject, key)

    @property
    def buffered(self) -> int:
        """How many reads wait in the buffer."""
        return len(self._buffer) // ENTRY_ITEMS

    @property
    def pending(self) -> int:
        """How many built events wait for a failing sink (most among the sinks)."""
        with self._lock:
            return max((len(p) for p in self._pending), default=0)

    def flush(self) -> None:
        """Build the buffered events and hand them to every sink now.

        Raises:
            AuditError: a sink failed and ``on_failure`` is ``"fail-closed"``.
        """
        self._drain()

    def __repr__(self) -> str:
        return (
            f"<Audit sinks={len(self.sinks)} capacity={self.capacity} "
            f"on_failure={self.on_failure!r} pseudonymised={self.pseudonym_key is not None}>"
        )

    # ------------------------------------------------------------------ the read path's side

    def _append(self, entry: RawEntry) -> None:
        """Append one raw entry; drain when the buffer is full (the read path inlines this)."""
        buffer = self._buffer
        buffer.extend(entry)
        if len(buffer) >= self._limit:
            self._drain()

    def _drain(self) -> None:
        """Build and emit what is buffered (plus what failing sinks still owe).

        Raises AuditError when a sink failed and the policy is fail-closed.
        """
        with self._lock:
            if self._draining:
                # A sink read a guarded field: the outer drain picks its entry up later.
                return
            self._draining = True
            try:
                failures = self._drain_locked()
            finally:
                self._draining = False
        if failures and self.on_failure == "fail-closed":
            sink, exc = failures[0]
            raise AuditError(
                f"audit sink {type(sink).__name__} failed ({type(exc).__name__}); "
                "the audit is set to fail closed, so the read is denied. "
                "Remedy: restore the sink, or set on_failure='continue' to keep "
                "reading while events wait for retry"
            ) from exc

    def _drain_locked(self) -> list[tuple[AuditSink, BaseException]]:
        buffer = self._buffer
        # Readers in other threads may extend the buffer meanwhile: take what is
        # there now (whole reads: each read's items arrive in one atomic extend).
        count = len(buffer)
        items = buffer[:count]
        del buffer[:count]
        read = iter(items)
        # Iterated once, lazily: zip reuses its result tuple, so grouping allocates nothing.
        raw: Iterator[RawEntry] = zip(read, read, read, read, strict=True)
        events = self._build(raw)
        if _observers and events:
            for observe in tuple(_observers):
                observe(events)
        failures: list[tuple[AuditSink, BaseException]] = []
        for index, sink in enumerate(self.sinks):
            pending = self._pending[index]
            batch = (*pending, *events) if pending else events
            if not batch:
                continue
            try:
                sink.emit(batch)
            except Exception as exc:  # a sink is user code: any failure is a sink failure
                failures.append((sink, exc))
                if len(batch) > self.max_pending:
                    dropped = len(batch) - self.max_pending
                    self.lost += dropped
                    batch = batch[dropped:]
                    _failure_log.error(
                        "purposelimit audit: %d event(s) discarded: sink %s stayed down "
                        "beyond max_pending=%d",
                        dropped,
                        type(sink).__name__,
                        self.max_pending,
                    )
                self._pending[index] = list(batch)  # kept for the next drain
                _failure_log.error(
                    "purposelimit audit: sink %s failed (%s); %d event(s) kept for retry",
                    type(sink).__name__,
                    type(exc).__name__,
                    len(batch),
                )
            else:
                if pending:
                    self._pending[index] = []
        # While a sink is down and the policy is fail-closed, every read drains itself.
        self._limit = (
            1 if failures and self.on_failure == "fail-closed" else self.capacity * ENTRY_ITEMS
        )
        return failures

    def _build(self, raw: Iterable[RawEntry]) -> tuple[AuditEvent, ...]:
        """Build the events of *raw* entries; what entries share is looked up once."""
        readers: dict[int, tuple[str | None, str | None, Mode, str | None, str | None]] = {}
        refs: dict[str, str] = {}
        events: list[AuditEvent] = []
        append = events.append
        from_timestamp = datetime.fromtimestamp
        for source, field, memo, stamp in raw:
            reader = readers.get(id(source))
            if reader is None:
                register = source.register
                reader = readers[id(source)] = (
                    source.actor,
                    source.purpose,
                    source.mode,
                    None if register is None else register.version,
                    None if register is None else register.content_hash,
                )
            actor, purpose, mode, version, content_hash = reader
            subject = memo[6]
            ref = refs.get(subject)
            if ref is None:
                ref = refs[subject] = self.subject_ref(subject)
            decision = memo[5]
            allowed = memo[4]
            append(
                _new_event(
                    from_timestamp(stamp, UTC),
                    actor,
                    purpose,
                    memo[7],
                    field.record_type,
                    ref,
                    field.name,
                    field.category,
                    allowed,
                    decision.reason,
                    decision.rule,
                    mode,
                    not allowed and mode == "monitor",
                    version,
                    content_hash,
                )
            )
        return tuple(events)


def resolve_audit(value: object) -> Audit:
    """Return the :class:`Audit` an engine's ``audit`` attribute stands for.

    ``None`` gives a new default ``Audit()``; an :class:`AuditSink` is wrapped.

    Raises:
        ConfigurationError: *value* is neither.
    """
    if value is None:
        return Audit()
    if isinstance(value, Audit):
        return value
    if callable(getattr(value, "emit", None)):
        return Audit([value])  # type: ignore[list-item]  # checked just above: it has emit
    raise ConfigurationError(
        f"engine.audit must be an Audit, an audit sink or None, not {type(value).__name__}"
    )


@atexit.register
def _flush_all_at_exit() -> None:
    for audit in list(_live):
        try:
            audit.flush()
        except Exception as exc:  # at exit nothing can be denied any more: report it
            _failure_log.error(
                "purposelimit audit: flush at exit failed (%s); %d event(s) undelivered",
                type(exc).__name__,
                audit.pending,
            )
