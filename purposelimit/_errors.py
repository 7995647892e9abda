"""The exception tree: one base class, builtin meanings inherited where they match.

Every exception here pickles, and none ever carries a personal value: denials
carry the decision (ids and reason codes), register errors carry paths and
policy text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from ._model import Decision, Reason

__all__ = [
    "AuditError",
    "CollectionRefused",
    "ConfigurationError",
    "EventRefused",
    "NaiveDatetimeError",
    "OutOfRangeError",
    "Problem",
    "ProcessingDenied",
    "PurposeLimitError",
    "RegisterError",
    "RegisterProblem",
    "StoreError",
]


class PurposeLimitError(Exception):
    """The base class of every error raised by purposelimit."""


class ConfigurationError(PurposeLimitError, ValueError):
    """The library is used in a way that cannot work (no engine installed, bad option)."""


class NaiveDatetimeError(PurposeLimitError, ValueError):
    """A datetime without a timezone was given where an instant is needed (DESIGN §3)."""


class OutOfRangeError(PurposeLimitError, ValueError):
    """An ISO-8601 date-time whose offset puts it outside the years 1 to 9999 in UTC."""


class StoreError(PurposeLimitError, RuntimeError):
    """A consent, authorisation or objection store failed to read or write."""


class EventRefused(PurposeLimitError, ValueError):
    """A store refused to record an event: another event already has its id, a
    setting requires evidence or an actor it lacks, or it contradicts what is
    recorded (an objection withdrawn before it was made).

    Nothing was recorded. The message names the event's kind and id, never a
    personal value.
    """


class AuditError(PurposeLimitError, RuntimeError):
    """An audit sink failed; raised when the engine is set to fail closed."""


@attrs.frozen(slots=True)
class Problem:
    """One problem found in a policy file (a register, a case file).

    Attributes:
        path: where in the file, as ``purposes[3].retention.duration``.
        message: what is wrong, in one sentence (never a personal value).
        line: the 1-based line in the file, when known.
        file: the file's name, when the content came from a file.
    """

    #: Shown in place of an empty path: the problem is about the whole file.
    WHOLE: ClassVar[str] = "(file)"

    path: str
    message: str
    line: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = self.path or self.WHOLE
        if self.file is not None:
            loc = self.file if self.line is None else f"{self.file}:{self.line}"
            return f"{loc}: {where}: {self.message}"
        if self.line is not None:
            return f"line {self.line}: {where}: {self.message}"
        return f"{where}: {self.message}"


@attrs.frozen(slots=True)
class RegisterProblem(Problem):
    """One problem found in a register: its path (``purposes[3].retention.duration``),
    message, and line and file when known."""

    WHOLE: ClassVar[str] = "(register)"


class RegisterError(PurposeLimitError, ValueError):
    """A register was refused; :attr:`problems` lists every problem found, all at once.

    ``str()`` gives one line per problem, each with its path and, when known,
    its file and line.
    """

    def __init__(self, problems: Iterable[RegisterProblem], source: str | None = None) -> None:
        self.problems: tuple[RegisterProblem, ...] = tuple(problems)
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"register {self.source} refused" if self.source else "register refused"
        count = len(self.problems)
        lines = [f"{head}: {count} problem{'s' if count != 1 else ''}"]
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.source))


class DenialDetails:
    """What a :class:`ProcessingDenied` carries; its message and remedy are built lazily.

    The read path keeps one per memoised denial (field and decision) and hands
    the same one to every :class:`ProcessingDenied` it raises for it: raising
    formats no string. The remedy and the message are built the first time
    they are asked for, and kept. ``str()`` and ``repr()`` are the message's,
    so the exception's ``args`` read as a message. Never holds a personal value.
    """

    __slots__ = ("_message", "_remedy", "decision", "field", "record_type", "subject_ref")

    def __init__(
        self,
        decision: Decision,
        record_type: str,
        field: str,
        subject_ref: str | None,
        remedy: str | Callable[[], str],
    ) -> None:
        self.decision = decision
        self.record_type = record_type
        self.field = field
        self.subject_ref = subject_ref
        self._remedy = remedy
        self._message: str | None = None

    @property
    def remedy(self) -> str:
        """What would make the read lawful, in one sentence."""
        remedy = self._remedy
        if not isinstance(remedy, str):
            remedy = self._remedy = remedy()
        return remedy

    def __str__(self) -> str:
        message = self._message
        if message is None:
            decision = self.decision
            message = self._message = (
                f"{self.record_type}.{self.field} denied under purpose "
                f"{decision.purpose or '(none)'} (collected for "
                f"{decision.collected_for or '(none)'}): {decision.reason} — "
                f"{decision.explanation}. Remedy: {self.remedy}"
            )
        return message

    def __repr__(self) -> str:
        return repr(str(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            DenialDetails,
            (self.decision, self.record_type, self.field, self.subject_ref, self.remedy),
        )


class ProcessingDenied(PurposeLimitError, PermissionError):
    """A read of personal data was denied by the register.

    Attributes:
        decision: the :class:`~purposelimit.Decision` (reason code, rule, purposes).
        reason: the reason code (``"incompatible"``, ``"consent-missing"``, …).
        record_type: the record class's name.
        field: the field that was read.
        subject_ref: the data subject's id, or its keyed pseudonym when configured.
        remedy: what would make the read lawful.

    The message names the record type, field, both purposes, reason and remedy;
    it never contains the value that was read. It is built when first shown
    (``str()``), not when the exception is raised; ``args`` holds one item
    whose ``str()`` and ``repr()`` are the message's.
    """

    def __init__(
        self,
        decision: Decision,
        *,
        record_type: str,
        field: str,
        subject_ref: str | None,
        remedy: str,
    ) -> None:
        super().__init__(DenialDetails(decision, record_type, field, subject_ref, remedy))

    @property
    def _details(self) -> DenialDetails:
        details: DenialDetails = self.args[0]
        return details

    @property
    def decision(self) -> Decision:
        """The decision (reason code, rule, purposes)."""
        return self._details.decision

    @property
    def reason(self) -> Reason:
        """The reason code."""
        return self._details.decision.reason

    @property
    def record_type(self) -> str:
        """The record class's name."""
        return self._details.record_type

    @property
    def field(self) -> str:
        """The field that was read."""
        return self._details.field

    @property
    def subject_ref(self) -> str | None:
        """The data subject's id, or its keyed pseudonym when configured."""
        return self._details.subject_ref

    @property
    def remedy(self) -> str:
        """What would make the read lawful."""
        return self._details.remedy

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_denied,
            (
                type(self),
                self.decision,
                self.record_type,
                self.field,
                self.subject_ref,
                self.remedy,
            ),
        )


#: ``OSError.__new__``: the read path makes a :class:`ProcessingDenied` with it and
#: sets ``args`` to its :class:`DenialDetails`, skipping ``__init__``.
_new_denied = ProcessingDenied.__new__


def _rebuild_denied(
    cls: type[ProcessingDenied],
    decision: Decision,
    record_type: str,
    field: str,
    subject_ref: str | None,
    remedy: str,
) -> ProcessingDenied:
    return cls(
        decision, record_type=record_type, field=field, subject_ref=subject_ref, remedy=remedy
    )


class CollectionRefused(PurposeLimitError, ValueError):
    """A record was created with a field its collection purpose may not use (``excessive``).

    GDPR art. 5(1)(c) (minimisation): a newsletter form has no business asking
    for a social security number. Carries the record type, the collection
    purpose and the offending ``(field, category)`` pairs — never the values.
    """

    reason = "excessive"

    def __init__(self, record_type: str, purpose: str, fields: Iterable[tuple[str, str]]) -> None:
        self.record_type = record_type
        self.purpose = purpose
        self.fields: tuple[tuple[str, str], ...] = tuple(fields)
        listed = ", ".join(f"{name} ({category})" for name, category in self.fields)
        super().__init__(
            f"{record_type} cannot be collected for {purpose}: excessive — {listed} "
            f"is not among the data categories {purpose} may use (GDPR art. 5(1)(c)). "
            f"Remedy: do not collect these fields, or declare them in the purpose's categories "
            f"if the purpose truly needs them"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.record_type, self.purpose, self.fields))
