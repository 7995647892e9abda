"""Capturing the audit trail in tests, and asserting on the reads it records.

:func:`capture_audit` is built on the audit layer: it flushes every audit's
buffer when it opens (earlier reads are not captured) and when it closes, and
while it is open it receives every batch of audit events that any
:class:`~purposelimit.Audit` builds — whatever the engine, the sink or the
thread — before the sinks do. Like structlog's ``capture_logs()`` it is a plain
context manager, usable without pytest.

Failure messages list every offending read, one per line: the record type,
field and data category, the processing and collection purposes, the reason
code and the remedy. They never show a personal value (audit events hold none)
nor the data subject's id.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TypeAlias, overload

import attrs

from .._audit import AuditEvent, _live, _observers
from .._errors import AuditError, CollectionRefused, ProcessingDenied
from .._model import CategoryDecision, Decision, Reason
from .._records import remedy as _remedy

__all__ = [
    "AuditCapture",
    "Read",
    "ReasonSpec",
    "assert_allowed",
    "assert_denied",
    "capture_audit",
    "describe_reads",
    "flush_audits",
    "group_reads",
]

#: What ``reason=`` accepts: one reason code, several, or ``None`` for any.
ReasonSpec: TypeAlias = str | Reason | Iterable[str | Reason] | None

_observers_lock = threading.Lock()


def flush_audits(*, raise_errors: bool = True) -> None:
    """Drain the buffer of every live :class:`~purposelimit.Audit` into its sinks now.

    Reads are audited through a buffer drained when a ``processing`` block
    exits; a read outside any block waits in its audit's buffer until the next
    drain. Flushing makes every read made so far visible to sinks and captures.

    Args:
        raise_errors: raise the first :class:`~purposelimit.AuditError` of a
            fail-closed audit whose sink failed (the events were built and
            captured anyway); ``False`` leaves the failure to the audit's own
            report on the ``purposelimit`` logger.

    Raises:
        AuditError: a sink failed under ``on_failure="fail-closed"`` and
            *raise_errors* is true.
    """
    first: AuditError | None = None
    for audit in list(_live):
        if not audit.buffered:
            continue
        try:
            audit.flush()
        except AuditError as error:
            if first is None:
                first = error
    if first is not None and raise_errors:
        raise first


# --------------------------------------------------------------------------- reads


@attrs.frozen(slots=True)
class Read:
    """One kind of guarded read, as failure messages list it (never a value).

    Attributes:
        record_type: the record class's name.
        field: the field read.
        category: its data category id.
        purpose: the processing purpose id; ``None`` outside any ``processing`` block.
        collected_for: the field's collection purpose id.
        allowed: the engine's answer.
        reason: the reason code.
        rule: what decided, as ``kind:id``.
        count: how many reads of this kind were made.
        at_collection: ``True`` when the record was refused at collection
            (:class:`~purposelimit.CollectionRefused`) rather than read.
    """

    record_type: str
    field: str
    category: str
    purpose: str | None
    collected_for: str | None
    allowed: bool
    reason: Reason
    rule: str
    count: int = 1
    at_collection: bool = False

    @property
    def remedy(self) -> str:
        """What would make the read lawful, in one sentence; empty when it is allowed."""
        if self.allowed:
            return ""
        if self.at_collection:
            return (
                f"do not collect {self.field}, or declare {self.category} among the categories "
                f"of {self.collected_for} if the purpose truly needs it (minimisation, GDPR "
                "art. 5(1)(c))"
            )
        if self.reason is Reason.UNKNOWN_PURPOSE:
            return (
                f"declare the purposes {self.purpose} and {self.collected_for} in the register "
                "(GDPR art. 30), or fix the id of the one that is not declared"
            )
        part = CategoryDecision(self.category, self.allowed, self.reason, self.rule, "")
        decision = Decision(
            self.allowed, self.reason, self.rule, self.purpose, self.collected_for, (part,), ""
        )
        return _remedy(decision, field=self.field, category=self.category)

    def line(self) -> str:
        """The read as one line of a failure message (no leading indentation)."""
        what = f"{self.record_type}.{self.field} ({self.category})"
        if self.at_collection:
            where = f"collected for {self.collected_for}"
        elif self.purpose is None:
            where = f"read outside any processing block, collected for {self.collected_for}"
        else:
            where = f"read for {self.purpose}, collected for {self.collected_for}"
        outcome = self.reason.value
        notes = []
        if self.allowed:
            notes.append("allowed")
        if self.at_collection:
            notes.append("refused at collection")
        if self.count > 1:
            notes.append(f"{self.count} reads")
        if notes:
            outcome += f" ({', '.join(notes)})"
        text = f"{what} {where}: {outcome}"
        fix = self.remedy
        return f"{text}. Remedy: {fix}" if fix else text


def _key(read: Read) -> tuple[object, ...]:
    return (
        read.record_type,
        read.field,
        read.category,
        read.purpose,
        read.collected_for,
        read.allowed,
        read.reason,
        read.rule,
        read.at_collection,
    )


def _from_event(event: AuditEvent) -> Read:
    return Read(
        record_type=event.record_type,
        field=event.field,
        category=event.category,
        purpose=event.purpose,
        collected_for=event.collected_for,
        allowed=event.allowed,
        reason=event.reason,
        rule=event.rule,
    )


def _from_refusal(refused: CollectionRefused) -> list[Read]:
    return [
        Read(
            record_type=refused.record_type,
            field=name,
            category=category,
            purpose=None,
            collected_for=refused.purpose,
            allowed=False,
            reason=Reason.EXCESSIVE,
            rule=f"purpose:{refused.purpose}",
            at_collection=True,
        )
        for name, category in refused.fields
    ]


def group_reads(reads: Iterable[Read | AuditEvent]) -> list[Read]:
    """Group identical reads (same field, purposes and decision), keeping first-seen order."""
    grouped: dict[tuple[object, ...], Read] = {}
    for item in reads:
        read = _from_event(item) if isinstance(item, AuditEvent) else item
        key = _key(read)
        found = grouped.get(key)
        grouped[key] = (
            read if found is None else attrs.evolve(found, count=found.count + read.count)
        )
    return list(grouped.values())


def describe_reads(reads: Iterable[Read | AuditEvent], *, indent: str = "  - ") -> str:
    """Format reads one per line (identical reads grouped with a count), for a failure message.

    Args:
        reads: audit events (as captured) or :class:`Read` values.
        indent: what starts each line.

    Returns:
        The lines joined by newlines; no personal value, no data subject id.
    """
    return "\n".join(indent + read.line() for read in group_reads(reads))


# --------------------------------------------------------------------------- capture


class AuditCapture(Sequence[AuditEvent]):
    """The audit events of the guarded reads decided while a :func:`capture_audit` block is open.

    A read-only sequence of :class:`~purposelimit.AuditEvent`, in drain order.
    While the block is open, every access first flushes the audits' buffers,
    so reads made outside ``processing`` blocks show up at once.
    """

    __slots__ = ("__weakref__", "_events", "_lock", "_open")

    def __init__(self) -> None:
        self._events: list[AuditEvent] = []
        self._lock = threading.Lock()
        self._open = True

    def _observe(self, events: tuple[AuditEvent, ...]) -> None:
        with self._lock:
            self._events.extend(events)

    def _snapshot(self) -> list[AuditEvent]:
        if self._open:
            flush_audits(raise_errors=False)
        with self._lock:
            return list(self._events)

    @property
    def events(self) -> tuple[AuditEvent, ...]:
        """Every captured event, in drain order."""
        return tuple(self._snapshot())

    @property
    def allowed(self) -> tuple[AuditEvent, ...]:
        """The events of allowed reads."""
        return tuple(e for e in self._snapshot() if e.allowed)

    @property
    def denied(self) -> tuple[AuditEvent, ...]:
        """The events of denied reads, including those monitor mode let through."""
        return tuple(e for e in self._snapshot() if not e.allowed)

    @property
    def monitored(self) -> tuple[AuditEvent, ...]:
        """The denials monitor mode let through (``monitored=True``)."""
        return tuple(e for e in self._snapshot() if e.monitored)

    @property
    def outside_processing(self) -> tuple[AuditEvent, ...]:
        """The reads made outside any ``processing`` block (reason ``no-purpose``)."""
        return tuple(e for e in self._snapshot() if e.purpose is None)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """The reason code of each captured event, in order."""
        return tuple(e.reason for e in self._snapshot())

    def describe(self) -> str:
        """Every captured read, one line each (identical reads grouped); never a value."""
        return describe_reads(self._snapshot())

    @overload
    def __getitem__(self, index: int) -> AuditEvent: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[AuditEvent]: ...

    def __getitem__(self, index: int | slice) -> AuditEvent | Sequence[AuditEvent]:
        events = self._snapshot()
        return tuple(events[index]) if isinstance(index, slice) else events[index]

    def __len__(self) -> int:
        return len(self._snapshot())

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(self._snapshot())

    def __repr__(self) -> str:
        with self._lock:
            count = len(self._events)
        state = "open" if self._open else "closed"
        return f"<AuditCapture events={count} {state}>"


def _start() -> AuditCapture:
    flush_audits(raise_errors=False)  # what was read before the block is not captured
    capture = AuditCapture()
    with _observers_lock:
        _observers.append(capture._observe)
    return capture


def _stop(capture: AuditCapture, *, raise_errors: bool) -> None:
    try:
        flush_audits(raise_errors=raise_errors)
    finally:
        with _observers_lock:
            _observers.remove(capture._observe)
        capture._open = False


@contextmanager
def capture_audit() -> Iterator[AuditCapture]:
    """Capture the audit events of every guarded read decided inside the block.

    Usable without pytest::

        with capture_audit() as events:
            with processing("client.contract", actor="billing", engine=engine):
                lead.email
        assert [e.reason for e in events] == [Reason.SAME_PURPOSE]

    Every :class:`~purposelimit.Audit` is flushed on entry (reads made before
    are not captured) and on exit (reads made outside ``processing`` blocks,
    which wait in a buffer, are). Events also reach the audits' own sinks as
    usual. Captures nest; each sees the events of its own block. The capture
    is process-wide, like the audit: reads made by other threads while the
    block is open are captured too.

    Yields:
        An :class:`AuditCapture`: a sequence of :class:`~purposelimit.AuditEvent`.

    Raises:
        AuditError: on exit, a fail-closed audit's sink failed while flushing
            (not raised when the block is already leaving with an exception).
    """
    capture = _start()
    try:
        yield capture
    except BaseException:
        _stop(capture, raise_errors=False)
        raise
    _stop(capture, raise_errors=True)


# --------------------------------------------------------------------------- assertions


def _reason_set(spec: ReasonSpec, *, allow: bool, helper: str) -> tuple[Reason, ...] | None:
    if spec is None:
        return None
    items: Iterable[str | Reason] = (spec,) if isinstance(spec, str | Reason) else spec
    found: list[Reason] = []
    codes = [r.value for r in Reason]
    for item in items:
        try:
            reason = Reason(item)
        except ValueError:
            close = difflib.get_close_matches(str(item), codes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{helper}: {str(item)!r} is not a reason code{hint}; reason codes: "
                + ", ".join(codes)
            ) from None
        if reason.allows is not allow:
            other = "assert_allowed" if reason.allows else "assert_denied"
            kind = "an allow" if reason.allows else "a deny"
            raise ValueError(
                f"{helper}: {reason.value!r} is {kind} reason code; use {other}(reason=...)"
            )
        found.append(reason)
    if not found:
        raise ValueError(f"{helper}: reason= names no reason code")
    return tuple(found)


def _title(helper: str, reasons: tuple[Reason, ...] | None) -> str:
    if reasons is None:
        return f"{helper}()"
    if len(reasons) == 1:
        return f'{helper}(reason="{reasons[0].value}")'
    listed = ", ".join(f'"{r.value}"' for r in reasons)
    return f"{helper}(reason=[{listed}])"


def _reads_word(count: int) -> str:
    return "guarded read" if count == 1 else "guarded reads"


def _nothing_read(title: str, helper: str) -> AssertionError:
    return AssertionError(
        f"{title}: no guarded read of a personal field was made in the block, so nothing was "
        f"checked. Read the record's personal fields inside `with {helper}(...):`"
    )


def _was(count: int) -> str:
    return "was" if count == 1 else "were"


class _Expectation(AbstractContextManager[AuditCapture]):
    """What :func:`assert_allowed` and :func:`assert_denied` return: a capture that checks on exit.

    A class rather than a generator so that pytest hides its frames (``__tracebackhide__``)
    and a failure points at the test's own ``with`` line.
    """

    __slots__ = ("_capture", "_helper", "_title", "_wanted")

    def __init__(self, helper: str, wanted: tuple[Reason, ...] | None) -> None:
        self._helper = helper
        self._wanted = wanted
        self._title = _title(helper, wanted)
        self._capture: AuditCapture | None = None

    def __enter__(self) -> AuditCapture:
        self._capture = _start()
        return self._capture

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        __tracebackhide__ = True  # pytest shows the test's line, not this helper's
        capture = self._capture
        assert capture is not None, "entered before exiting"
        denial = exc if isinstance(exc, ProcessingDenied | CollectionRefused) else None
        _stop(capture, raise_errors=exc is None)
        if exc is not None and denial is None:
            return False  # not a denial: let it through unchanged
        reads = [_from_event(e) for e in capture]
        if isinstance(denial, CollectionRefused):
            reads.extend(_from_refusal(denial))
        if self._helper == "assert_allowed":
            self._check_allowed(reads)
            return False  # nothing escaped (a denial always leaves an audit event)
        self._check_denied(reads)
        return denial is not None  # the expected denial stops here

    def _check_allowed(self, reads: list[Read]) -> None:
        __tracebackhide__ = True
        title = self._title
        denied = [r for r in reads if not r.allowed]
        if denied:
            raise AssertionError(
                f"{title}: {len(denied)} of {len(reads)} {_reads_word(len(reads))} "
                f"{_was(len(denied))} denied:\n{describe_reads(denied)}"
            ) from None  # the message says it all; a denial stays in __context__
        if not reads:
            raise _nothing_read(title, self._helper)
        if self._wanted is not None:
            other = [r for r in reads if r.reason not in self._wanted]
            if other:
                raise AssertionError(
                    f"{title}: {len(other)} of {len(reads)} {_reads_word(len(reads))} "
                    f"{_was(len(other))} allowed for another reason:\n{describe_reads(other)}"
                )

    def _check_denied(self, reads: list[Read]) -> None:
        __tracebackhide__ = True
        title = self._title
        if not reads:
            raise _nothing_read(title, self._helper)
        denied = [r for r in reads if not r.allowed]
        if not denied:
            raise AssertionError(
                f"{title}: none of the {len(reads)} {_reads_word(len(reads))} was denied:\n"
                f"{describe_reads(reads)}"
            )
        if self._wanted is not None:
            other = [r for r in denied if r.reason not in self._wanted]
            if other:
                raise AssertionError(
                    f"{title}: {len(other)} of {len(denied)} denied "
                    f"{'read' if len(denied) == 1 else 'reads'} {_was(len(other))} denied for "
                    f"another reason:\n{describe_reads(other)}"
                ) from None  # the message says it all; a denial stays in __context__


def assert_allowed(*, reason: ReasonSpec = None) -> AbstractContextManager[AuditCapture]:
    """Assert that every guarded read made in the block is allowed (with *reason*, if given).

    ::

        with assert_allowed(reason="compatible"):
            with processing("prospection.postal", actor="mailer", engine=engine):
                lead.address

    Works in both modes: a :class:`~purposelimit.ProcessingDenied` raised in
    the block (enforce mode), a denial monitor mode let through, and a
    :class:`~purposelimit.CollectionRefused` all fail the assertion.

    Args:
        reason: an allow reason code (``"compatible"``, a :class:`~purposelimit.Reason`)
            or several: every read must be allowed with one of them. ``None``:
            any allow reason.

    Returns:
        A context manager whose ``as`` target is the :class:`AuditCapture` of the block.

    Raises:
        AssertionError: on exit, a read was denied or allowed for another reason —
            the message lists every offending read, one per line, with its
            remedy — or no guarded read was made in the block (nothing was checked).
        ValueError: *reason* holds something that is not an allow reason code.
    """
    return _Expectation("assert_allowed", _reason_set(reason, allow=True, helper="assert_allowed"))


def assert_denied(*, reason: ReasonSpec = None) -> AbstractContextManager[AuditCapture]:
    """Assert that the block's guarded reads are denied (with *reason*, if given).

    ::

        with assert_denied(reason="prohibited"):
            with processing("prospection.postal", actor="mailer", engine=engine):
                candidate.name

    At least one read must be denied, and every denied read must carry one of
    the expected reasons; allowed reads before the denial are fine. A
    :class:`~purposelimit.ProcessingDenied` raised in the block (enforce mode)
    is the expected outcome and does not propagate when it matches; neither
    does a :class:`~purposelimit.CollectionRefused` (reason ``excessive``).
    Denials that monitor mode let through count the same.

    Args:
        reason: a deny reason code (``"prohibited"``, a :class:`~purposelimit.Reason`)
            or several. ``None``: any deny reason.

    Returns:
        A context manager whose ``as`` target is the :class:`AuditCapture` of the block.

    Raises:
        AssertionError: on exit, no read was denied, or a read was denied for
            another reason — the message lists the reads, one per line — or no
            guarded read was made in the block.
        ValueError: *reason* holds something that is not a deny reason code.
    """
    return _Expectation("assert_denied", _reason_set(reason, allow=False, helper="assert_denied"))
