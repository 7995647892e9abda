"""The exception tree: one base class, builtin meanings inherited where they match.

Every exception here pickles, and none ever carries a personal value: denials
carry the decision (ids and reason codes), register errors carry paths and
policy text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._model import Decision

__all__ = [
    "AuditError",
    "CollectionRefused",
    "ConfigurationError",
    "EventRefused",
    "NaiveDatetimeError",
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
class RegisterProblem:
    """One problem found in a register.

    Attributes:
        path: where in the register, as ``purposes[3].retention.duration``.
        message: what is wrong, in one sentence.
        line: the 1-based line in the file, when known.
        file: the file's name, when the register came from a file.
    """

    path: str
    message: str
    line: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = self.path or "(register)"
        if self.file is not None:
            loc = self.file if self.line is None else f"{self.file}:{self.line}"
            return f"{loc}: {where}: {self.message}"
        if self.line is not None:
            return f"line {self.line}: {where}: {self.message}"
        return f"{where}: {self.message}"


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
    it never contains the value that was read.
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
        self.decision = decision
        self.reason = decision.reason
        self.record_type = record_type
        self.field = field
        self.subject_ref = subject_ref
        self.remedy = remedy
        collected = decision.collected_for or "(none)"
        super().__init__(
            f"{record_type}.{field} denied under purpose {decision.purpose or '(none)'} "
            f"(collected for {collected}): {decision.reason} — {decision.explanation}. "
            f"Remedy: {remedy}"
        )

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
