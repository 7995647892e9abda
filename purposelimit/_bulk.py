"""The bulk enforcement point (DESIGN §5.2): a table of leads filtered for one purpose.

A lead file — a CRM export — holds rows about data subjects and columns of
personal data. For a processing purpose P, :class:`LeadFilter` keeps:

* the **columns** whose data category P may use; a column whose category P may
  not use is dropped from every row (``excessive``, GDPR art. 5(1)(c)), and a
  column the mapping declares as not personal data is kept as it is;
* the **rows** the register allows under P: a row is excluded for a
  record-level reason (``retention-expired``, ``objection``, ``consent-*``,
  ``prohibited``, ``incompatible``, ``unknown-purpose``) or because the row
  itself is invalid (``invalid-row``: empty subject, empty collection purpose,
  unparseable or future date, ragged row).

Each row is decided by the same :class:`~purposelimit._engine.Engine` as every
other enforcement point. Decisions are cached per distinct (collection
purpose, collected-at, last-contact-at, contract-ended-at) strings for the
data subjects who have no consent, objection or subject-specific
authorisation; the others are decided row by row. Memory grows with the number
of distinct data subjects (kept to flag duplicates), never with the file size:
the caches are bounded and excluded rows are spooled to disk for the report.

:func:`filter_leads` filters an iterable of dicts; :func:`filter_csv` streams a
CSV file to a CSV file and writes the report and audit trail;
:func:`retention_sweep` lists the rows already past their retention.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import IO, Any, Final, TextIO

import attrs

from ._audit import _PSEUDONYM_HEX, _PSEUDONYM_PREFIX
from ._convert import describe_value
from ._engine import Engine
from ._errors import ConfigurationError
from ._files import is_special, temp_beside, text_writer
from ._ids import validate_id
from ._model import Authorisation, Consent, Decision, Objection, Reason
from ._protocol import (
    InputError,
    ProtocolError,
    parse_instant,
    pick_delimiter,
    unknown_key_message,
)
from ._register import Register
from ._store import InMemoryStore, SubjectEvents, Withdrawal

__all__ = [
    "INVALID_ROW",
    "PSEUDONYM_KEY_ENV",
    "ColumnInfo",
    "FilterSummary",
    "LeadFilter",
    "LeadMapping",
    "Pseudonymiser",
    "RetentionRow",
    "RowResult",
    "check_purpose",
    "filter_csv",
    "filter_leads",
    "load_mapping",
    "mapping_from_dict",
    "neutralise_cell",
    "normalise_email",
    "retention_sweep",
]

#: The reason code of a row excluded because the row itself is invalid (DESIGN §5).
INVALID_ROW: Final = "invalid-row"
#: The environment variable holding the key of subject pseudonyms in reports and audit events.
PSEUDONYM_KEY_ENV: Final = "PURPOSELIMIT_PSEUDONYM_KEY"

#: How many bytes are read to choose the encoding and the delimiter before any output.
SNIFF_BYTES: Final = 1 << 20
#: Bound of the decision and date caches; they are cleared when they grow past it.
CACHE_LIMIT: Final = 200_000
#: The longest physical line of a lead file, in bytes: a longer one refuses the file
#: (a file of one endless line cannot make the reader hold it all in memory).
MAX_LINE_BYTES: Final = 1 << 24

_EMPTY_EVENTS: Final = SubjectEvents()
_EXPIRED: Final = Reason.RETENTION_EXPIRED.value


def normalise_email(value: str) -> str:
    """Return the e-mail address *value* as subjects are compared: trimmed and lower-cased."""
    return value.strip().lower()


# --------------------------------------------------------------------------- pseudonyms


class Pseudonymiser:
    """Keyed pseudonyms of data subjects for reports and audit events (HMAC-SHA256).

    Args:
        key: the secret key, at least 16 bytes. ``None`` reads
            :data:`PSEUDONYM_KEY_ENV`; when that is unset or empty, a random
            key is drawn for this run only (the pseudonyms then cannot be
            linked across runs).

    Attributes:
        key_source: ``"environment"``, ``"given"`` or ``"random per run"``.

    Raises:
        ConfigurationError: the key is shorter than 16 bytes.

    A pseudonym is :func:`purposelimit._audit.pseudonym`: ``ps-`` and the first
    32 hexadecimal digits of HMAC-SHA256(key, subject in UTF-8) — the same as
    the audit events of in-process reads under the same key. Without the key
    it cannot be reversed or recomputed from a guessed e-mail address
    (GDPR art. 4(5), 32(1)(a)).
    """

    __slots__ = ("_key", "_mac", "key_source")

    def __init__(self, key: bytes | str | None = None) -> None:
        if key is None:
            env = os.environ.get(PSEUDONYM_KEY_ENV, "")
            if env:
                self._key = env.encode("utf-8")
                self.key_source = "environment"
            else:
                self._key = secrets.token_bytes(32)
                self.key_source = "random per run"
        else:
            self._key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
            self.key_source = "given"
        if len(self._key) < 16:
            where = PSEUDONYM_KEY_ENV if self.key_source == "environment" else "the pseudonym key"
            raise ConfigurationError(f"{where} must hold at least 16 bytes")
        # The keyed state, prepared once: a copy per subject skips the key schedule.
        self._mac = hmac.new(self._key, digestmod="sha256")

    def __call__(self, subject: str) -> str:
        """Return the pseudonym of *subject* (``ps-`` + 32 hexadecimal digits).

        The same value as :func:`purposelimit._audit.pseudonym` with this key.
        """
        mac = self._mac.copy()
        mac.update(subject.encode("utf-8"))
        return _PSEUDONYM_PREFIX + mac.hexdigest()[:_PSEUDONYM_HEX]

    def __repr__(self) -> str:
        return f"<Pseudonymiser key_source={self.key_source!r}>"


# --------------------------------------------------------------------------- the mapping


@attrs.frozen(slots=True)
class LeadMapping:
    """How a lead file's columns map to a collection tag and to data categories.

    Usually loaded from a TOML file with :func:`load_mapping` (format: docs/cli.md).

    Attributes:
        subject_column: the column holding the data subject's id.
        email: the subject is an e-mail address: compared trimmed and
            lower-cased, here and in consents, objections and suppression lists.
        pseudonymise: reports and audit events show a keyed pseudonym instead
            of the subject id (default: when *email*).
        collected_for: the collection purpose of every row, or ``None``.
        collected_for_column: the column holding each row's collection purpose.
        collected_at: the collection instant of every row (aware), or ``None``.
        collected_at_column: the column holding each row's collection instant.
        last_contact_at_column: the column holding the last contact (optional).
        contract_ended_at_column: the column holding the end of contract (optional).
        source: where every row came from, or ``None``.
        source_column: the column naming each row's source (optional).
        columns: column name -> data category id.
        not_personal: column name -> why it is not personal data; kept as is.
        file: the mapping file, for messages.
        lines: ``{"columns.Email": 12, ...}``: where each key is in the file.
    """

    subject_column: str
    email: bool = False
    pseudonymise: bool | None = None
    collected_for: str | None = None
    collected_for_column: str | None = None
    collected_at: datetime | None = None
    collected_at_column: str | None = None
    last_contact_at_column: str | None = None
    contract_ended_at_column: str | None = None
    source: str | None = None
    source_column: str | None = None
    columns: Mapping[str, str] = attrs.field(factory=dict)
    not_personal: Mapping[str, str] = attrs.field(factory=dict)
    file: str = "mapping"
    lines: Mapping[str, int] = attrs.field(factory=dict, repr=False, eq=False)

    def where(self, key: str) -> int | None:
        """The line of *key* (``columns.Email``, ``subject.column``) in the file, when known."""
        return self.lines.get(key)

    @property
    def uses_pseudonyms(self) -> bool:
        """Whether subjects are shown as keyed pseudonyms."""
        return self.email if self.pseudonymise is None else self.pseudonymise

    def role_columns(self) -> dict[str, str]:
        """The columns the collection tag is read from: ``{role: column}``."""
        roles = {
            "subject.column": self.subject_column,
            "collection.purpose_column": self.collected_for_column,
            "collection.collected_at_column": self.collected_at_column,
            "collection.last_contact_at_column": self.last_contact_at_column,
            "collection.contract_ended_at_column": self.contract_ended_at_column,
            "collection.source_column": self.source_column,
        }
        return {role: column for role, column in roles.items() if column is not None}


_MAPPING_KEYS: Final = ("subject", "collection", "columns", "not_personal")
_SUBJECT_KEYS: Final = ("column", "email", "pseudonymise")
_COLLECTION_KEYS: Final = (
    "purpose",
    "purpose_column",
    "collected_at",
    "collected_at_column",
    "last_contact_at_column",
    "contract_ended_at_column",
    "source",
    "source_column",
)


def _locate(text: str | None, section: str, key: str | None) -> int | None:
    """The line of ``key`` in ``[section]`` of a TOML text (or of the section), when found."""
    if text is None:
        return None
    current = ""
    header = re.compile(r"\s*\[\s*([^\]]+?)\s*\]\s*(?:#.*)?$")
    for number, line in enumerate(text.splitlines(), start=1):
        m = header.match(line)
        if m:
            current = m.group(1).strip().strip("\"'")
            if key is None and current == section:
                return number
            if not section and key is not None and current == key:
                return number
            continue
        if key is not None and current == section:
            m2 = re.match(r"\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[A-Za-z0-9_-]+)\s*=", line)
            if m2:
                found = m2.group(1)
                if found[:1] in "\"'":
                    try:
                        found = tomllib.loads(f"k = {found}")["k"]
                    except tomllib.TOMLDecodeError:
                        continue
                if found == key:
                    return number
    return None


def mapping_from_dict(
    data: Mapping[str, Any], *, file: str = "mapping", text: str | None = None
) -> LeadMapping:
    """Build a :class:`LeadMapping` from the parsed mapping file (format: docs/cli.md).

    Args:
        data: the parsed TOML (``{"subject": {...}, "collection": {...},
            "columns": {...}, "not_personal": {...}}``).
        file: the file's name, for messages.
        text: the file's text, to name the line of a problem.

    Raises:
        InputError: an unknown key, a missing subject column, an ill-typed
            value, a category id outside the id syntax, a column both mapped and
            declared not personal, a value given both as a column and for the
            whole file, a date without an offset.
    """

    def fail(section: str, key: str | None, message: str) -> InputError:
        where = section if key is None else f"{section}.{key}"
        line = _locate(text, section, key) or _locate(text, section, None)
        return InputError(file, f"{where}: {message}", line=line)

    def table(name: str, allowed: Sequence[str] | None) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise fail(name, None, f"expected a table, found {describe_value(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed and not key.startswith("x-"):
                    raise fail(name, key, unknown_key_message(key, allowed))
        return value

    def text_of(section: dict[str, Any], name: str, key: str) -> str | None:
        value = section.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(name, key, f"expected a non-empty string, found {describe_value(value)}")
        return value

    def flag(section: dict[str, Any], name: str, key: str) -> bool | None:
        value = section.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise fail(name, key, f"expected true or false, found {describe_value(value)}")
        return value

    for key in data:
        if key not in _MAPPING_KEYS and not key.startswith("x-"):
            raise InputError(
                file, unknown_key_message(key, _MAPPING_KEYS), line=_locate(text, "", key)
            )
    subject = table("subject", _SUBJECT_KEYS)
    collection = table("collection", _COLLECTION_KEYS)
    columns = table("columns", None)
    not_personal = table("not_personal", None)

    subject_column = text_of(subject, "subject", "column")
    if subject_column is None:
        raise fail("subject", "column", "missing: name the column holding the data subject's id")

    for column, category in columns.items():
        if not isinstance(category, str):
            raise fail(
                "columns", column, f"expected a data category id, found {describe_value(category)}"
            )
        problem = validate_id(category)
        if problem is not None:
            raise fail("columns", column, problem)
    for column, why in not_personal.items():
        if not isinstance(why, str) or not why.strip():
            raise fail(
                "not_personal",
                column,
                "expected a non-empty string saying why the column is not personal data",
            )
        if column in columns:
            raise fail(
                "not_personal", column, "the column is also given a data category under [columns]"
            )

    def either(fixed: str, column: str) -> tuple[str | None, str | None]:
        a, b = text_of(collection, "collection", fixed), text_of(collection, "collection", column)
        if a is not None and b is not None:
            raise fail(
                "collection", column, f"give either {fixed} (whole file) or {column}, not both"
            )
        return a, b

    purpose, purpose_column = either("purpose", "purpose_column")
    if purpose is not None and (problem := validate_id(purpose)) is not None:
        raise fail("collection", "purpose", problem)
    at_text, at_column = either("collected_at", "collected_at_column")
    collected_at = None
    if at_text is not None:
        try:
            collected_at = parse_instant(at_text, "collected_at")
        except ProtocolError as exc:
            raise fail("collection", "collected_at", str(exc).partition(": ")[2]) from None
    source, source_column = either("source", "source_column")
    lines: dict[str, int] = {}
    for section in ("subject", "collection", "columns", "not_personal"):
        found = _locate(text, section, None)
        if found is not None:
            lines[section] = found
    for section, entries in (
        ("subject", subject),
        ("collection", collection),
        ("columns", columns),
        ("not_personal", not_personal),
    ):
        for key in entries:
            line = _locate(text, section, key)
            if line is not None:
                lines[f"{section}.{key}"] = line
    return LeadMapping(
        subject_column=subject_column,
        email=bool(flag(subject, "subject", "email")),
        pseudonymise=flag(subject, "subject", "pseudonymise"),
        collected_for=purpose,
        collected_for_column=purpose_column,
        collected_at=collected_at,
        collected_at_column=at_column,
        last_contact_at_column=text_of(collection, "collection", "last_contact_at_column"),
        contract_ended_at_column=text_of(collection, "collection", "contract_ended_at_column"),
        source=source,
        source_column=source_column,
        columns=dict(columns),
        not_personal=dict(not_personal),
        file=file,
        lines=lines,
    )


def load_mapping(path: str | os.PathLike[str]) -> LeadMapping:
    """Load a mapping file (TOML, UTF-8; format: docs/cli.md).

    Raises:
        InputError: the file cannot be read, is not TOML, or is refused
            (one line naming the file, the line and the key).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InputError(name, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            name, "is not UTF-8 text", line=raw.count(b"\n", 0, exc.start) + 1
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)\Z", message)
        line = int(m.group(1)) if m else None
        message = message[: m.start()].strip() if m else message
        raise InputError(name, f"not TOML: {message}", line=line) from None
    return mapping_from_dict(data, file=name, text=text)


# --------------------------------------------------------------------------- results


@attrs.frozen(slots=True)
class ColumnInfo:
    """What happens to one column of the input.

    Attributes:
        name: the header name.
        index: its 0-based position.
        category: its data category, or ``None`` (not personal data, or unmapped).
        kept: whether it is in the output.
        status: ``used`` (personal data the purpose may use), ``not-personal``,
            ``excessive`` (dropped: GDPR art. 5(1)(c)) or ``unmapped`` (dropped
            by ``--drop-unmapped``).
        rule: what decided, as ``kind:id`` (``purpose:prospection.postal``), or ``None``.
        explanation: one sentence.
    """

    name: str
    index: int
    category: str | None
    kept: bool
    status: str
    rule: str | None
    explanation: str


@attrs.frozen(slots=True)
class RowResult:
    """The decision for one row of a lead file.

    Attributes:
        line: the physical line where the row starts (CSV), or the 1-based
            record number (iterables of dicts).
        kept: whether the row is usable for the purpose.
        reason: the reason code (``same-purpose``, ``objection``, ``invalid-row``...).
        rule: what decided, as ``kind:id``.
        subject: the subject reference — the subject id, or its keyed pseudonym
            when the mapping says so (e-mail subjects) — or ``None`` for a row
            without a usable subject.
        detail: for ``invalid-row``: what is wrong (never the value).
        duplicate_of: the line of the first row with the same subject, for a
            row whose subject appeared before.
        values: the usable cells of a kept row (the output columns), else ``None``.
            Not shown in ``repr``.
    """

    line: int
    kept: bool
    reason: str
    rule: str
    subject: str | None
    detail: str | None = None
    duplicate_of: int | None = None
    values: dict[str, str] | None = attrs.field(default=None, repr=False)


@attrs.frozen(slots=True)
class RetentionRow:
    """A row already past its retention for a purpose (GDPR art. 5(1)(e)).

    Attributes:
        line: the physical line where the row starts.
        subject: the subject reference (id or keyed pseudonym).
        purpose: the purpose whose retention has ended for the row.
        collected_for: the row's collection purpose.
        expired_at: the instant the row went out of retention for *purpose*
            (aware, UTC), or ``None`` when it cannot be told.
        rule: the rule that decided (``retention:<purpose id>``).
    """

    line: int
    subject: str | None
    purpose: str
    collected_for: str
    expired_at: datetime | None
    rule: str


class _Outcome:
    """One distinct row outcome; interned, so that counting a row is one increment."""

    __slots__ = ("allowed", "detail", "explanation", "reason", "rows", "rule")

    def __init__(
        self, allowed: bool, reason: str, rule: str, detail: str | None, explanation: str
    ) -> None:
        self.allowed = allowed
        self.reason = reason
        self.rule = rule
        self.detail = detail
        self.explanation = explanation
        self.rows = 0


# --------------------------------------------------------------------------- the filter


def _did_you_mean(value: str, candidates: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(value, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_purpose(register: Register, purpose: str, what: str = "purpose") -> str | None:
    """Return why *purpose* cannot be processed for (not an id, undeclared, a group), or ``None``.

    An id outside the DESIGN §9 syntax (a look-alike Cyrillic ``о``, full-width
    letters, a zero-width joiner, upper case) is named as such, with its
    non-ASCII characters escaped: ``'prospecti\\u043en'`` would otherwise print
    like the declared id it imitates.
    """
    if register.purpose(purpose) is not None:
        return None
    syntax = validate_id(purpose)
    if syntax is not None:
        shown = ascii(purpose) if len(purpose) <= 60 else ascii(purpose[:57] + "...")
        why = syntax.rpartition(" is not a valid id: ")[2]
        return f"{what} {shown} is not a valid id: {why}" + _did_you_mean(
            purpose, register.purposes
        )
    if purpose in register.groups:
        inside = ", ".join(register.descendants(purpose)[:6])
        return (
            f"{what} {purpose!r} is a purpose group, not a purpose: nothing is processed for a "
            f"group; name one of its purposes ({inside})"
        )
    return f"{what} {purpose!r} is not declared in the register" + _did_you_mean(
        purpose, register.purposes
    )


class LeadFilter:
    """A lead table's columns and rows, judged for one processing purpose (DESIGN §5.2).

    Build one per (register, purpose, mapping, header); then decide rows with
    :func:`filter_leads` or :func:`filter_csv`; :attr:`columns` and
    :attr:`output_header` say what happens to each column before any row is read.

    Args:
        register: the register (GDPR art. 30 record of processing).
        purpose: the processing purpose id.
        mapping: how the columns map to the collection tag and data categories.
        header: the column names, in order.
        at: the aware instant of the decisions (default: now).
        collected_for: the collection purpose of every row, overriding the mapping's.
        collected_at: the collection instant of every row, overriding the mapping's.
        consents, withdrawals, objections, authorisations: events from files or
            a registry; subjects are normalised as the mapping says (e-mail:
            trimmed, lower-cased).
        drop_unmapped: drop the columns the mapping does not mention instead of
            refusing the file.
        pseudonymiser: computes subject pseudonyms (default: a new
            :class:`Pseudonymiser`, keyed from the environment).
        engine: the engine to decide with (default: a new one on *register*).
        file: the table's name, for messages.
        minimise: drop the columns *purpose* may not use (``False``: every
            mapped column counts, as the retention sweep needs).

    Raises:
        ConfigurationError: *purpose* or *collected_for* is not a declared
            purpose, *at* or *collected_at* is naive, *collected_at* is after *at*.
        InputError: the mapping does not fit the header (a mapped column is
            missing, a column is unmapped, a category is not declared, no
            collection purpose or instant is given), or the header repeats a name.
    """

    def __init__(
        self,
        register: Register,
        purpose: str,
        mapping: LeadMapping,
        header: Sequence[str],
        *,
        at: datetime | None = None,
        collected_for: str | None = None,
        collected_at: datetime | None = None,
        consents: Iterable[Consent] = (),
        objections: Iterable[Objection] = (),
        withdrawals: Iterable[Withdrawal] = (),
        authorisations: Iterable[Authorisation] = (),
        drop_unmapped: bool = False,
        pseudonymiser: Pseudonymiser | None = None,
        engine: Engine | None = None,
        file: str = "leads",
        minimise: bool = True,
    ) -> None:
        self.register = register
        self.purpose = purpose
        self.mapping = mapping
        self.header = tuple(header)
        self.file = file
        self.engine = engine if engine is not None else Engine(register)
        self.at = self.engine.now() if at is None else at
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ConfigurationError("at: a naive datetime; give it a timezone")
        self.pseudonymiser = pseudonymiser if pseudonymiser is not None else Pseudonymiser()

        problem = check_purpose(register, purpose)
        if problem is not None:
            raise ConfigurationError(problem)
        self._check_header()
        self._collected_for = self._whole_file_purpose(collected_for)
        self._collected_at = self._whole_file_instant(collected_at)
        self.columns = self._plan_columns(drop_unmapped, minimise)

        index = {name: i for i, name in enumerate(self.header)}
        self._subject_index = index[mapping.subject_column]
        self._email = mapping.email
        self._pseudonyms = mapping.uses_pseudonyms
        key_columns = [
            mapping.collected_for_column,
            mapping.collected_at_column,
            mapping.last_contact_at_column,
            mapping.contract_ended_at_column,
        ]
        # The row's key: the cells of the collection-tag columns that exist. For
        # each role (purpose, collected-at, last contact, end of contract): its
        # position in the key, or None when the role is not read from a column.
        present = [c for c in key_columns if c is not None]
        roles: list[int | None] = []
        for c in key_columns:
            roles.append(None if c is None else present.index(c))
        self._roles: tuple[int | None, int | None, int | None, int | None] = (
            roles[0],
            roles[1],
            roles[2],
            roles[3],
        )
        self._role_names = tuple(key_columns)
        positions = [index[c] for c in present]
        self._key: Callable[[Sequence[str]], Any]
        if not positions:
            self._key = _no_key
        elif len(positions) == 1:
            only = positions[0]
            self._key = lambda row: (row[only],)
        else:
            self._key = itemgetter(*positions)
        kept = [c.index for c in self.columns if c.kept]
        self.output_header = [self.header[i] for i in kept]
        self._project: Callable[[Sequence[str]], Sequence[str]] | None
        if len(kept) == len(self.header):
            self._project = None
        elif not kept:
            self._project = lambda row: ()
        elif len(kept) == 1:
            single = kept[0]
            self._project = lambda row: (row[single],)
        else:
            self._project = itemgetter(*kept)

        used = list(dict.fromkeys(c.category for c in self.columns if c.status == "used"))
        if not used:
            raise InputError(
                mapping.file,
                f"no column of {file} holds personal data {purpose} may use: "
                "nothing can be decided or kept",
            )
        self._categories: tuple[str, ...] = tuple(c for c in used if c is not None)

        subject_key = normalise_email if mapping.email else None
        consent_list = [_rekey(c, subject_key) for c in consents]
        objection_list = [_rekey(o, subject_key) for o in objections]
        withdrawal_list = [_rekey(w, subject_key) for w in withdrawals]
        self._authorisations = tuple(
            a
            if a.subjects is None or subject_key is None
            else attrs.evolve(a, subjects=tuple(subject_key(s) for s in a.subjects))
            for a in authorisations
        )
        self._store = InMemoryStore(
            consent_list, withdrawals=withdrawal_list, objections=objection_list
        )
        event_subjects = {e.subject for e in (*consent_list, *withdrawal_list, *objection_list)}
        for auth in self._authorisations:
            if auth.subjects is not None:
                event_subjects.update(auth.subjects)
        self._event_subjects = frozenset(event_subjects)
        # Categories judged per row: all the used ones, or one when no authorisation
        # is restricted to some categories — then (DESIGN §3) every declared,
        # non-excessive category gets the same decision from steps 2-8.
        if any(a.categories is not None for a in self._authorisations):
            self._judged = self._categories
        else:
            self._judged = self._categories[:1]

        self._cache: dict[Any, _Outcome] = {}
        self._within: dict[tuple[object, ...], tuple[datetime, _Outcome]] = {}
        self._monotone = not self._authorisations
        self._dates: dict[str, datetime | str] = {}
        self._outcomes: dict[tuple[bool, str, str, str | None], _Outcome] = {}

    # ------------------------------------------------------------------ set-up

    def _check_header(self) -> None:
        m = self.mapping
        mapped = {*m.role_columns().values(), *m.columns, *m.not_personal}
        if not mapped.intersection(self.header):
            # No cell of the first line is a column the mapping names: most likely a
            # file without a header row, whose first line is a person's data. Its
            # cells are not repeated (no did-you-mean), since they may be values.
            raise InputError(
                self.file,
                f"the first line names none of the columns of {os.path.basename(m.file)}: "
                "is it a header row? (a lead file starts with its column names)",
                line=1,
            )
        seen: dict[str, int] = {}
        for i, name in enumerate(self.header):
            if name in seen:
                raise InputError(
                    self.file,
                    f"the header repeats the column name (columns {seen[name] + 1} and {i + 1})",
                    line=1,
                    column=name,
                )
            seen[name] = i
        names = list(self.header)
        for role, column in m.role_columns().items():
            if column not in seen:
                raise InputError(
                    m.file,
                    f"{role}: {self.file} has no column {column!r}" + _did_you_mean(column, names),
                    line=m.where(role),
                )
        for section, entries in (("columns", m.columns), ("not_personal", m.not_personal)):
            for column in entries:
                if column not in seen:
                    raise InputError(
                        m.file,
                        f"{section}.{column}: {self.file} has no column {column!r}"
                        + _did_you_mean(column, names),
                        line=m.where(f"{section}.{column}"),
                    )

    def _whole_file_purpose(self, override: str | None) -> str | None:
        m = self.mapping
        if override is not None:
            if m.collected_for_column is not None:
                raise ConfigurationError(
                    f"--collected-for conflicts with the mapping's collection.purpose_column "
                    f"({m.collected_for_column!r}): the rows name their collection purpose"
                )
            problem = check_purpose(self.register, override, "collection purpose")
            if problem is not None:
                raise ConfigurationError(problem)
            return override
        if m.collected_for is not None:
            problem = check_purpose(self.register, m.collected_for, "collection purpose")
            if problem is not None:
                raise InputError(
                    m.file, f"collection.purpose: {problem}", line=m.where("collection.purpose")
                )
            return m.collected_for
        if m.collected_for_column is None:
            raise ConfigurationError(
                "the collection purpose is unknown: map collection.purpose_column, set "
                "collection.purpose in the mapping, or pass --collected-for"
            )
        return None

    def _whole_file_instant(self, override: datetime | None) -> datetime | None:
        m = self.mapping
        value = override
        if override is not None:
            if m.collected_at_column is not None:
                raise ConfigurationError(
                    f"--collected-at conflicts with the mapping's collection.collected_at_column "
                    f"({m.collected_at_column!r}): the rows give their collection instant"
                )
            if override.tzinfo is None or override.utcoffset() is None:
                raise ConfigurationError("collected_at: a naive datetime; give it a timezone")
        elif m.collected_at is not None:
            value = m.collected_at
        elif m.collected_at_column is None:
            raise ConfigurationError(
                "the collection instant is unknown: map collection.collected_at_column, set "
                "collection.collected_at in the mapping, or pass --collected-at"
            )
        if value is not None and value > self.at:
            raise ConfigurationError(
                "the collection instant of the file is after the decision instant"
            )
        return value

    def _plan_columns(self, drop_unmapped: bool, minimise: bool) -> tuple[ColumnInfo, ...]:
        m = self.mapping
        categories = list(self.register.categories)
        for column, category in m.columns.items():
            if self.register.category(category) is None:
                raise InputError(
                    m.file,
                    f"columns.{column}: {category!r} is not a data category declared in the "
                    "register" + _did_you_mean(category, categories),
                    line=m.where(f"columns.{column}"),
                )
        excessive = {}
        if minimise:
            excessive = dict(self.engine.check_collection(self.purpose, list(m.columns.values())))
        out: list[ColumnInfo] = []
        unmapped: list[str] = []
        for i, name in enumerate(self.header):
            if name in m.not_personal:
                out.append(
                    ColumnInfo(name, i, None, True, "not-personal", None, m.not_personal[name])
                )
            elif name in m.columns:
                category = m.columns[name]
                if category in excessive:
                    out.append(
                        ColumnInfo(
                            name,
                            i,
                            category,
                            False,
                            Reason.EXCESSIVE.value,
                            f"purpose:{self.purpose}",
                            self._excessive_why(category),
                        )
                    )
                else:
                    out.append(
                        ColumnInfo(
                            name,
                            i,
                            category,
                            True,
                            "used",
                            f"purpose:{self.purpose}",
                            f"{category} is among the data categories {self.purpose} may use",
                        )
                    )
            else:
                unmapped.append(name)
                out.append(
                    ColumnInfo(
                        name,
                        i,
                        None,
                        False,
                        "unmapped",
                        None,
                        "the mapping does not say what the column holds",
                    )
                )
        if unmapped and not drop_unmapped:
            shown = ", ".join(repr(u) for u in unmapped[:5]) + (" ..." if len(unmapped) > 5 else "")
            raise InputError(
                m.file,
                f"{len(unmapped)} column{'s' if len(unmapped) != 1 else ''} of {self.file} "
                f"{'are' if len(unmapped) != 1 else 'is'} not in the mapping: {shown}; give each "
                "a data category under [columns], declare it under [not_personal], or pass "
                "--drop-unmapped to leave it out of the output",
                line=m.where("columns"),
            )
        return tuple(out)

    def _excessive_why(self, category: str) -> str:
        decision, _ = self.engine.decide_category(
            self.purpose,
            self.purpose,
            category,
            "",
            self.at,
            None,
            None,
            self.at,
            events=_EMPTY_EVENTS,
            authorisations=(),
        )
        if decision.reason is Reason.EXCESSIVE:
            return decision.explanation
        return (
            f"{category} is not among the data categories {self.purpose} may use "
            "(minimisation, GDPR art. 5(1)(c))"
        )

    # ------------------------------------------------------------------ deciding

    def subject_ref(self, subject: str) -> str:
        """The reference shown for *subject*: its keyed pseudonym, or the id itself."""
        return self.pseudonymiser(subject) if self._pseudonyms else subject

    def _intern(
        self, allowed: bool, reason: str, rule: str, detail: str | None, explanation: str
    ) -> _Outcome:
        key = (allowed, reason, rule, detail)
        found = self._outcomes.get(key)
        if found is None:
            found = self._outcomes[key] = _Outcome(allowed, reason, rule, detail, explanation)
        return found

    def _invalid(self, detail: str) -> _Outcome:
        return self._intern(False, INVALID_ROW, "row", detail, f"the row is invalid: {detail}")

    def _instant(self, text: str, column: str, required: bool) -> datetime | _Outcome | None:
        cached = self._dates.get(text)
        if cached is None:
            if not text.strip():
                if required:
                    return self._invalid(f"column {column!r}: empty (a date is required)")
                return None
            try:
                value: datetime | str = parse_instant(text, "x")
            except ProtocolError as exc:
                value = str(exc).partition(": ")[2]
            if isinstance(value, datetime) and value > self.at:
                value = "dated after the decision instant"
            if len(self._dates) >= CACHE_LIMIT:
                self._dates.clear()
            self._dates[text] = cached = value
        if isinstance(cached, str):
            return self._invalid(f"column {column!r}: {cached}")
        return cached

    def _tag(
        self, key: Sequence[str]
    ) -> tuple[str, datetime, datetime | None, datetime | None] | _Outcome:
        """The collection tag of a row from its key cells, or the ``invalid-row`` outcome."""
        r0, r1, r2, r3 = self._roles
        dates = self._dates
        if r0 is None:
            p0 = self._collected_for
            assert p0 is not None  # checked at set-up: a column or a whole-file value
        else:
            p0 = key[r0].strip()
            if not p0:
                return self._invalid(f"column {self._role_names[0]!r}: empty collection purpose")
        if r1 is None:
            t0 = self._collected_at
            assert t0 is not None  # checked at set-up
        else:
            cached = dates.get(key[r1])
            if type(cached) is datetime:  # the common case: a date text seen before
                t0 = cached
            else:
                found = self._instant(key[r1], self._role_names[1] or "", True)
                if not isinstance(found, datetime):
                    return found  # type: ignore[return-value]  # an _Outcome: required dates are never None
                t0 = found
        t1 = t2 = None
        if r2 is not None and key[r2]:
            cached = dates.get(key[r2])
            if type(cached) is datetime:
                t1 = cached
            else:
                found2 = self._instant(key[r2], self._role_names[2] or "", False)
                if isinstance(found2, _Outcome):
                    return found2
                t1 = found2
        if r3 is not None and key[r3]:
            cached = dates.get(key[r3])
            if type(cached) is datetime:
                t2 = cached
            else:
                found3 = self._instant(key[r3], self._role_names[3] or "", False)
                if isinstance(found3, _Outcome):
                    return found3
                t2 = found3
        return p0, t0, t1, t2

    def _decide(self, key: Sequence[str], subject: str, events: SubjectEvents) -> _Outcome:
        """Decide a row from its key cells and subject with the engine (DESIGN §3)."""
        tag = self._tag(key)
        if isinstance(tag, _Outcome):
            return tag
        return self._ask(tag, subject, events)

    def _ask(
        self,
        tag: tuple[str, datetime, datetime | None, datetime | None],
        subject: str,
        events: SubjectEvents,
    ) -> _Outcome:
        p0, t0, t1, t2 = tag
        decide = self.engine.decide_category
        auths = self._authorisations
        judged = self._judged
        if len(judged) == 1:
            one, _ = decide(
                self.purpose,
                p0,
                judged[0],
                subject,
                t0,
                t1,
                t2,
                self.at,
                events=events,
                authorisations=auths,
            )
            return self._intern(one.allowed, one.reason.value, one.rule, None, one.explanation)
        parts = [
            decide(
                self.purpose,
                p0,
                category,
                subject,
                t0,
                t1,
                t2,
                self.at,
                events=events,
                authorisations=auths,
            )[0]
            for category in judged
        ]
        decision = Decision.combine(self.purpose, p0, parts)
        return self._intern(
            decision.allowed, decision.reason.value, decision.rule, None, decision.explanation
        )

    def _outcome(self, row: Sequence[str], subject: str) -> _Outcome:
        key = self._key(row)
        if subject in self._event_subjects:
            return self._decide(key, subject, self._store.subject_events(subject))
        return self._cache.get(key) or self._miss(key, subject)

    def _miss(self, key: Sequence[str], subject: str) -> _Outcome:
        """Decide a row whose subject has no event and whose key is not cached.

        For a data subject with no consent, objection or authorisation, DESIGN
        §3 leaves one date-dependent question: are all the own-line retention
        clauses still running at T? Every clause ends at its anchor plus a
        duration, and a later last contact (or, when it is unknown, a later
        collection) can only end a clause later. So, for a fixed collection
        purpose, end of contract and — when a last contact is known —
        collection instant, a row whose last contact (else collection) is at or
        after that of a row decided within retention gets that row's decision:
        past step 2, nothing else depends on dates. Rows decided
        ``retention-expired`` are never reused this way (the clause that ran out
        first, named in the rule, varies). Used only without authorisations; if
        the engine ever contradicted it, the shortcut is switched off.

        The key is cached, except when a known last contact was settled by the
        shortcut (such keys rarely repeat, and the shortcut is cheap).
        """
        tag = self._tag(key)
        if isinstance(tag, _Outcome):
            outcome = tag
        elif not self._monotone:
            outcome = self._ask(tag, subject, _EMPTY_EVENTS)
        else:
            p0, t0, t1, t2 = tag
            context: tuple[object, ...]
            if t1 is not None:
                context, value = (p0, t0, t2), t1
            else:
                context, value = (p0, None, t2), t0
            known = self._within.get(context)
            if known is not None and value >= known[0]:
                if t1 is not None:
                    return known[1]
                outcome = known[1]
            else:
                outcome = self._ask(tag, subject, _EMPTY_EVENTS)
                if outcome.reason != _EXPIRED:
                    if known is not None and known[1] is not outcome:
                        self._monotone = False  # never expected: trust the engine row by row
                        self._within.clear()
                    else:
                        if len(self._within) >= CACHE_LIMIT:
                            self._within.clear()
                        self._within[context] = (value, outcome)
        cache = self._cache
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = outcome
        return outcome

    def _judge(self, row: Sequence[str]) -> tuple[_Outcome, str | None]:
        """Decide one row (a list of cells in header order): ``(outcome, subject)``.

        The subject is normalised as the mapping says, or ``None`` when the row
        has none (ragged row, empty subject).
        """
        if len(row) != len(self.header):
            return self._invalid(
                f"ragged row: {len(row)} fields, the header has {len(self.header)}"
            ), None
        subject = row[self._subject_index]
        if self._email:
            subject = subject.strip().lower()
        if not subject.strip():
            return self._invalid(f"column {self.mapping.subject_column!r}: empty subject"), None
        return self._outcome(row, subject), subject

    def project(self, row: Sequence[str]) -> Sequence[str]:
        """The cells of *row* that go to the output, in header order."""
        return row if self._project is None else self._project(row)

    def _outcomes_seen(self) -> list[_Outcome]:
        """Every distinct outcome met so far."""
        return list(self._outcomes.values())

    def _expired_since(
        self, purpose: str, subject: str, key: Sequence[str], events: SubjectEvents
    ) -> tuple[bool, datetime | None, str]:
        """For the retention sweep: is the row out of retention for *purpose*, and since when?

        The row is out of retention when every judged category is decided
        ``retention-expired`` at the decision instant. For each, the engine's
        change instants are walked from the collection instant up to the
        decision instant; a category's expiry is the start of its last stretch
        decided ``retention-expired``, and the row's is the latest of them.

        Returns:
            ``(expired, since, rule)``; *since* is ``None`` when it cannot be told.
        """
        tag = self._tag(key)
        assert not isinstance(tag, _Outcome)  # the caller judged the row valid
        p0, t0, t1, t2 = tag
        decide = self.engine.decide_category
        auths = self._authorisations
        latest: datetime | None = None
        rule = ""
        for category in self._judged:
            final, _ = decide(
                purpose,
                p0,
                category,
                subject,
                t0,
                t1,
                t2,
                self.at,
                events=events,
                authorisations=auths,
            )
            if final.reason is not Reason.RETENTION_EXPIRED:
                return False, None, final.rule
            rule = rule or final.rule
            since: datetime | None = None
            instant = t0
            for _ in range(256):
                if instant > self.at:
                    break
                decision, until = decide(
                    purpose,
                    p0,
                    category,
                    subject,
                    t0,
                    t1,
                    t2,
                    instant,
                    events=events,
                    authorisations=auths,
                )
                if decision.reason is Reason.RETENTION_EXPIRED:
                    if since is None:
                        since = instant
                else:
                    since = None
                if until is None or until <= instant:
                    break
                instant = until
            if since is None:
                return True, None, rule
            latest = since if latest is None or since > latest else latest
        return True, latest, rule


def _no_key(_row: Sequence[str]) -> tuple[()]:
    return ()


def _rekey(event: Any, subject_key: Callable[[str], str] | None) -> Any:
    if subject_key is None:
        return event
    normalised = subject_key(event.subject)
    return event if normalised == event.subject else attrs.evolve(event, subject=normalised)


# --------------------------------------------------------------------------- dict API


def _cells_of(header: Sequence[str]) -> Callable[[Mapping[str, str]], Sequence[str]]:
    """A function giving a record's cells in *header* order (an itemgetter: one C call)."""
    if len(header) == 1:
        only = header[0]
        return lambda record: (record[only],)
    get: Callable[[Mapping[str, str]], Sequence[str]] = itemgetter(*header)
    return get


def filter_leads(
    rows: Iterable[Mapping[str, str]],
    *,
    register: Register,
    purpose: str,
    mapping: LeadMapping,
    at: datetime | None = None,
    collected_for: str | None = None,
    collected_at: datetime | None = None,
    consents: Iterable[Consent] = (),
    objections: Iterable[Objection] = (),
    withdrawals: Iterable[Withdrawal] = (),
    authorisations: Iterable[Authorisation] = (),
    drop_unmapped: bool = False,
    pseudonymiser: Pseudonymiser | None = None,
    engine: Engine | None = None,
) -> Iterator[RowResult]:
    """Filter rows given as dicts (column -> cell) for *purpose*; yield one result per row.

    The first row's keys are the header; a later row with other keys is
    ``invalid-row`` (ragged). Lines are record numbers (1 for the first row).
    Kept rows carry their usable cells in :attr:`RowResult.values`; excluded
    rows carry no value at all. Arguments as for :class:`LeadFilter`.

    Raises:
        ConfigurationError, InputError: as :class:`LeadFilter` (when the first
            row is read).

    Legal source: GDPR art. 5(1)(b), (c), (e), 6(4), 7(3), 21(3).
    """
    lead_filter: LeadFilter | None = None
    seen: dict[str, int] = {}
    names: set[str] = set()
    cells: Callable[[Mapping[str, str]], Sequence[str]] = tuple
    for number, record in enumerate(rows, start=1):
        if lead_filter is None:
            lead_filter = LeadFilter(
                register,
                purpose,
                mapping,
                list(record),
                at=at,
                collected_for=collected_for,
                collected_at=collected_at,
                consents=consents,
                objections=objections,
                withdrawals=withdrawals,
                authorisations=authorisations,
                drop_unmapped=drop_unmapped,
                pseudonymiser=pseudonymiser,
                engine=engine,
            )
            # What every row needs, looked up once.
            header = lead_filter.header
            names = set(header)
            cells = _cells_of(header)
            judge = lead_filter._judge
            refer = lead_filter.pseudonymiser if lead_filter._pseudonyms else None
            output_header = lead_filter.output_header
            project = lead_filter.project
        row: Sequence[str]
        if record.keys() == names:  # the header's columns, no other (set comparison, in C)
            row = cells(record)
        else:
            ragged = list(record.values())
            if len(ragged) == len(names):
                ragged.append("")  # other keys: a ragged row all the same
            row = ragged
        outcome, subject = judge(row)
        outcome.rows += 1
        duplicate = None
        ref = subject
        if subject is not None:
            first = seen.setdefault(subject, number)
            duplicate = first if first != number else None
            if refer is not None:
                ref = refer(subject)
        values = None
        if outcome.allowed:
            values = dict(zip(output_header, project(row), strict=True))
        yield RowResult(
            line=number,
            kept=outcome.allowed,
            reason=outcome.reason,
            rule=outcome.rule,
            subject=ref,
            detail=outcome.detail,
            duplicate_of=duplicate,
            values=values,
        )


# --------------------------------------------------------------------------- CSV input


class _HashingReader(io.RawIOBase):
    """A raw binary reader that hashes (SHA-256) and counts the bytes it returns.

    It also refuses a physical line longer than :data:`MAX_LINE_BYTES` (raising
    :class:`csv.Error`, reported like any unreadable CSV), so that the text and
    CSV readers above it never hold more than that much of one line.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.position = 0
        self._run = 0  # bytes since the last newline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._handle.readinto(buffer)  # type: ignore[attr-defined]  # a buffered binary file
        if n:
            chunk = memoryview(buffer)[:n]
            self.sha256.update(chunk)
            self.position += n
            last = bytes(chunk).rfind(b"\n")
            self._run = self._run + n if last < 0 else n - last - 1
            if self._run > MAX_LINE_BYTES:
                raise csv.Error(f"a line is longer than {MAX_LINE_BYTES:,} bytes")
        return int(n or 0)

    def close(self) -> None:
        self._handle.close()
        super().close()


@attrs.frozen(slots=True)
class _Sniffed:
    encoding: str
    delimiter: str
    newline: str
    note: str | None


def sniff_csv(path: str, *, encoding: str | None = None, delimiter: str | None = None) -> _Sniffed:
    """Choose the encoding, delimiter and line ending of a CSV file from its first MiB.

    UTF-8 with a BOM, else UTF-8 when the sample decodes, else cp1252 (Latin-1
    when the sample holds a byte cp1252 leaves undefined). The delimiter is
    one of ``, ; TAB |``.

    Raises:
        InputError: the file cannot be read, is empty, is UTF-16/32, or the
            given encoding cannot decode the sample.
    """
    try:
        with open(path, "rb") as handle:
            sample = handle.read(SNIFF_BYTES)
            more = bool(handle.read(1))
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    if not sample.strip(b" \t\r\n\xef\xbb\xbf"):
        raise InputError(path, "the file is empty: a header line naming the columns is needed")
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(path, "UTF-16/UTF-32 text is not supported: save the file as UTF-8")
    if b"\x00" in sample:
        raise InputError(
            path,
            "the file holds NUL bytes: it is not a text CSV file (UTF-16 without a BOM?)",
            line=sample.count(b"\n", 0, sample.index(b"\x00")) + 1,
        )
    note = None
    if encoding is None:
        if sample.startswith(b"\xef\xbb\xbf"):
            encoding = "utf-8-sig"
        else:
            try:
                _decode_sample(sample, "utf-8", more)
                encoding = "utf-8"
            except UnicodeDecodeError:
                try:
                    _decode_sample(sample, "cp1252", more)
                    encoding = "cp1252"
                except UnicodeDecodeError:
                    encoding = "latin-1"
                note = f"{path} is not UTF-8: read as {encoding} (and written the same way)"
    try:
        text = _decode_sample(sample, encoding, more)
    except UnicodeDecodeError as exc:
        line = sample.count(b"\n", 0, exc.start) + 1
        raise InputError(
            path, f"byte 0x{sample[exc.start]:02x} cannot be decoded as {encoding}", line=line
        ) from None
    except LookupError:
        raise InputError(path, f"unknown encoding {encoding!r}") from None
    head = text[:65536]
    if len(text) > 65536 and "\n" in head:
        head = head[: head.rfind("\n") + 1]
    if delimiter is None:
        delimiter = pick_delimiter(head)
    newline = "\r\n" if "\r\n" in head else "\n"
    return _Sniffed(encoding, delimiter, newline, note)


def _decode_sample(sample: bytes, encoding: str, more: bool) -> str:
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    text: str = decoder.decode(sample, final=not more)
    return text


# --------------------------------------------------------------------------- CSV filter


@attrs.frozen(slots=True)
class FilterSummary:
    """What a :func:`filter_csv` run did; also the head of its report.

    Attributes:
        input: the lead file; input_sha256: its SHA-256 (hex); input_bytes: its size.
        encoding, delimiter: as read (and written).
        purpose: the processing purpose; at: the aware decision instant.
        register_version, register_hash, controller: the register that decided.
        rows_read, rows_kept, rows_excluded, blank_lines: row counts.
        reasons: rows per reason code (kept and excluded), in DESIGN §3 order.
        columns: what happened to each column.
        duplicate_rows: rows whose subject appeared on an earlier row;
        duplicate_subjects: subjects appearing more than once.
        subject_reference: ``"pseudonym"`` or ``"id"``; pseudonym_key: where the key came from.
        outcomes: ``(reason, rule, allowed, rows, explanation)`` per distinct outcome.
        run_id: a random id shared by the report and the audit events.
        output: the usable CSV file.
    """

    input: str
    input_sha256: str
    input_bytes: int
    encoding: str
    delimiter: str
    purpose: str
    at: datetime
    register_version: str
    register_hash: str
    controller: str
    rows_read: int
    rows_kept: int
    rows_excluded: int
    blank_lines: int
    reasons: dict[str, int]
    columns: tuple[ColumnInfo, ...]
    duplicate_rows: int
    duplicate_subjects: int
    subject_reference: str
    pseudonym_key: str | None
    outcomes: tuple[tuple[str, str, bool, int, str], ...]
    run_id: str
    output: str

    def to_dict(self) -> dict[str, Any]:
        """The report's head (everything but the per-row lists), JSON-compatible."""
        return {
            "run": self.run_id,
            "purpose": self.purpose,
            "at": self.at.isoformat(),
            "input": {
                "file": self.input,
                "sha256": self.input_sha256,
                "bytes": self.input_bytes,
                "encoding": self.encoding,
                "delimiter": self.delimiter,
            },
            "output": self.output,
            "register": {
                "version": self.register_version,
                "content_hash": self.register_hash,
                "controller": self.controller,
            },
            "rows": {
                "read": self.rows_read,
                "kept": self.rows_kept,
                "excluded": self.rows_excluded,
                "blank_lines_skipped": self.blank_lines,
            },
            "reasons": dict(self.reasons),
            "decisions": [
                {"reason": r, "rule": rule, "allowed": ok, "rows": n, "explanation": why}
                for r, rule, ok, n, why in self.outcomes
            ],
            "columns": [
                {
                    "column": c.name,
                    "category": c.category,
                    "kept": c.kept,
                    "status": c.status,
                    "rule": c.rule,
                    "explanation": c.explanation,
                }
                for c in self.columns
            ],
            "subjects": {
                "reference": self.subject_reference,
                "pseudonym_key": self.pseudonym_key,
                "duplicate_subjects": self.duplicate_subjects,
                "duplicate_rows": self.duplicate_rows,
            },
        }


#: Reason codes in report order: allow reasons, then DESIGN §3's deny order, then invalid-row.
REASON_ORDER: Final = (
    *(r.value for r in Reason if r.allows),
    "no-purpose",
    "unknown-purpose",
    "unknown-category",
    "retention-expired",
    "objection",
    "excessive",
    "consent-withdrawn",
    "consent-expired",
    "consent-refused",
    "consent-invalid",
    "consent-missing",
    "prohibited",
    "incompatible",
    INVALID_ROW,
)

_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(cell: str) -> str:
    """Prefix a cell a spreadsheet would run as a formula (``= + - @``, TAB, CR) with ``'``."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


class _Progress:
    """Carriage-return progress on a terminal, at most four updates a second."""

    def __init__(self, stream: TextIO | None, total: int, label: str) -> None:
        self.stream = stream
        self.total = max(total, 1)
        self.label = label
        self.last = 0.0

    def update(self, done: int, rows: int) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self.last < 0.25:
            return
        self.last = now
        pct = min(100, done * 100 // self.total)
        self.stream.write(f"\r{self.label}: {pct:3d}%  {rows:,} rows")
        self.stream.flush()

    def finish(self, rows: int) -> None:
        if self.stream is None or not self.last:
            return
        self.stream.write(f"\r{self.label}: 100%  {rows:,} rows\n")
        self.stream.flush()


#: What ``filter_csv(audit=...)`` may call instead of appending plain JSON Lines: it
#: receives the run's :class:`FilterSummary` and an iterator over the excluded rows
#: (``{"line", "subject", "reason", "rule", "detail"}`` each: ids, codes and pseudonyms).
AuditWriter = Callable[[FilterSummary, Iterator[dict[str, Any]]], None]


def filter_csv(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    register: Register,
    purpose: str,
    mapping: LeadMapping,
    at: datetime | None = None,
    collected_for: str | None = None,
    collected_at: datetime | None = None,
    consents: Iterable[Consent] = (),
    objections: Iterable[Objection] = (),
    withdrawals: Iterable[Withdrawal] = (),
    authorisations: Iterable[Authorisation] = (),
    drop_unmapped: bool = False,
    neutralise_formulas: bool = False,
    report: str | os.PathLike[str] | None = None,
    audit: str | os.PathLike[str] | AuditWriter | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    progress: TextIO | None = None,
    notice: Callable[[str], None] | None = None,
    actor: str = "purposelimit filter",
) -> FilterSummary:
    """Stream the lead file *source* to *out*, keeping the rows and columns usable for *purpose*.

    The output keeps the input's encoding (a BOM included), delimiter, line
    ending and column order, without the dropped columns and the excluded rows;
    cells are written as read unless *neutralise_formulas*. The output, and the
    report, appear only once complete (written to a temporary file in the same
    folder, then renamed); after any error neither is left behind.

    Args:
        source: the CSV lead file (UTF-8 with or without BOM, else cp1252/Latin-1).
        out: where the usable rows go (CSV).
        report: a ``.json`` or ``.html`` report file (see docs/cli.md), if wanted.
        audit: a JSON Lines file to append the audit events to: one for the run
            and one per excluded row (ids, reason codes and pseudonyms only);
            or a callable ``audit(summary, excluded)``
            that records the run itself — the command line's ``--audit``
            writes a hash chain this way. Either way the audit is written once
            the output and report are complete and before they are renamed
            into place, so an audit failure leaves neither behind.
        encoding, delimiter: force them instead of detecting them.
        progress: a terminal stream for a progress line, or ``None``.
        notice: called with a one-line notice (the encoding chosen when not UTF-8).
        actor: who runs the filter, recorded in the audit events.
        Others: as :class:`LeadFilter`.

    Returns:
        The :class:`FilterSummary` (also the report's head).

    Raises:
        InputError: the lead file, the mapping or an event file cannot be used
            (one line naming the file, the line and the column).
        ConfigurationError: a bad argument (unknown purpose, naive datetime...).
    """
    from ._report import report_format, write_report

    src = os.fspath(source)
    dst = os.fspath(out)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ConfigurationError("the output file must not be the input file")
    report_path = None if report is None else os.fspath(report)
    if report_path is not None:
        report_format(report_path)  # refuse an unknown extension before any work
        if os.path.abspath(report_path) in (os.path.abspath(src), os.path.abspath(dst)):
            raise ConfigurationError("the report file must differ from the input and output files")
    sniffed = sniff_csv(src, encoding=encoding, delimiter=delimiter)
    if sniffed.note and notice is not None:
        notice(sniffed.note)
    size = os.path.getsize(src)
    pseudonymiser = pseudonymiser if pseudonymiser is not None else Pseudonymiser()
    tmp: str | None = None
    if is_special(dst):
        # A device or a pipe (/dev/stdout): written in place, as rows are decided;
        # renaming a finished file onto it would replace the device itself.
        fd = os.open(dst, os.O_WRONLY)
    else:
        fd, tmp = temp_beside(dst)
    report_tmp: str | None = None
    done = False
    with contextlib.ExitStack() as stack:
        if tmp is not None:
            stack.callback(_cleanup, tmp, lambda: done)
        stack.callback(lambda: None if done or report_tmp is None else _cleanup(report_tmp))
        sink = stack.enter_context(text_writer(fd, dst, sniffed.encoding))
        excluded_spool = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
        duplicate_spool = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
        raw = _HashingReader(stack.enter_context(open(src, "rb")))
        text = stack.enter_context(
            io.TextIOWrapper(io.BufferedReader(raw, 1 << 16), encoding=sniffed.encoding, newline="")
        )
        reader = csv.reader(text, delimiter=sniffed.delimiter)
        try:
            header = next(reader, None)
            while header == []:
                header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _read_error(src, exc, reader.line_num, sniffed.encoding) from None
        if header is None:
            raise InputError(src, "the file is empty: a header line naming the columns is needed")
        lead_filter = LeadFilter(
            register,
            purpose,
            mapping,
            header,
            at=at,
            collected_for=collected_for,
            collected_at=collected_at,
            consents=consents,
            objections=objections,
            withdrawals=withdrawals,
            authorisations=authorisations,
            drop_unmapped=drop_unmapped,
            pseudonymiser=pseudonymiser,
            file=src,
        )
        writer = csv.writer(
            sink,
            delimiter=sniffed.delimiter,
            lineterminator=sniffed.newline,
            quoting=csv.QUOTE_MINIMAL,
        )
        header_out = lead_filter.output_header
        writer.writerow(
            [neutralise_cell(h) for h in header_out] if neutralise_formulas else header_out
        )
        bar = _Progress(progress, size, "purposelimit filter") if progress else None
        counts = _scan(
            lead_filter,
            reader,
            writer,
            excluded_spool,
            duplicate_spool,
            neutralise_formulas,
            bar,
            raw,
            src,
            sniffed.encoding,
        )
        if bar is not None:
            bar.finish(counts[0])
        sink.close()
        rows_read, rows_kept, blank, dup_rows, dup_subjects = counts
        outcomes = lead_filter._outcomes_seen()
        reasons: dict[str, int] = {}
        for code in REASON_ORDER:
            n = sum(o.rows for o in outcomes if o.reason == code)
            if n:
                reasons[code] = n
        summary = FilterSummary(
            input=src,
            input_sha256=raw.sha256.hexdigest(),
            input_bytes=raw.position,
            encoding=sniffed.encoding,
            delimiter=sniffed.delimiter,
            purpose=purpose,
            at=lead_filter.at,
            register_version=register.version,
            register_hash=register.content_hash,
            controller=register.controller,
            rows_read=rows_read,
            rows_kept=rows_kept,
            rows_excluded=rows_read - rows_kept,
            blank_lines=blank,
            reasons=reasons,
            columns=lead_filter.columns,
            duplicate_rows=dup_rows,
            duplicate_subjects=dup_subjects,
            subject_reference="pseudonym" if mapping.uses_pseudonyms else "id",
            pseudonym_key=pseudonymiser.key_source if mapping.uses_pseudonyms else None,
            outcomes=tuple(
                (o.reason, o.rule, o.allowed, o.rows, o.explanation)
                for o in sorted(outcomes, key=lambda o: (not o.allowed, _rank(o.reason), o.rule))
                if o.rows
            ),
            run_id=uuid.uuid4().hex,
            output=dst,
        )
        if report_path is not None:
            excluded_spool.seek(0)
            duplicate_spool.seek(0)
            report_tmp = write_report(
                report_path,
                summary.to_dict(),
                _lines(excluded_spool),
                _lines(duplicate_spool),
                commit=False,
            )
        if audit is not None:
            excluded_spool.seek(0)
            if callable(audit):
                audit(summary, _lines(excluded_spool))
            else:
                _append_audit(os.fspath(audit), summary, _lines(excluded_spool), actor)
        if tmp is not None:
            os.replace(tmp, dst)
        if report_tmp is not None and report_path is not None:
            os.replace(report_tmp, report_path)
        done = True
        return summary
    raise AssertionError("unreachable")  # pragma: no cover


def _cleanup(path: str, keep: Callable[[], bool] = lambda: False) -> None:
    if not keep():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _rank(reason: str) -> int:
    return REASON_ORDER.index(reason) if reason in REASON_ORDER else len(REASON_ORDER)


def _lines(spool: IO[str]) -> Iterator[dict[str, Any]]:
    for line in spool:
        yield json.loads(line)


def _undecodable_line(file: str, encoding: str) -> int | None:
    """The physical line holding the first byte *encoding* cannot decode, read in bounded
    blocks (a newline byte is never part of a multi-byte UTF-8 sequence, so counting the
    newlines before the bad byte gives its line)."""
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    decoder = codecs.getincrementaldecoder(codec)("strict")
    number = 1
    try:
        with open(file, "rb") as handle:
            # In bounded blocks, not lines: a line may be longer than memory.
            for block in iter(lambda: handle.read(1 << 16), b""):
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    return number + block.count(b"\n", 0, max(exc.start - pending, 0))
                number += block.count(b"\n")
    except OSError:
        return None
    return None


def _read_error(file: str, exc: Exception, line: int, encoding: str) -> InputError:
    if isinstance(exc, UnicodeDecodeError):
        return InputError(
            file,
            f"a byte cannot be decoded as {encoding}, although the first MiB could: "
            "the file mixes encodings; convert it to UTF-8 or pass --encoding",
            line=_undecodable_line(file, encoding) or line,
        )
    message = str(exc)
    if "field larger than field limit" in message:
        message = f"a field is longer than {csv.field_size_limit():,} characters"
    return InputError(file, f"not readable as CSV: {message}", line=line)


def _scan(
    lead_filter: LeadFilter,
    reader: Any,
    writer: Any,
    excluded: IO[str],
    duplicates: IO[str],
    neutralise: bool,
    bar: _Progress | None,
    raw: _HashingReader,
    file: str,
    encoding: str,
) -> tuple[int, int, int, int, int]:
    """The hot loop: decide every row, write the kept ones, spool the rest.

    The common row (right width, a subject without events, a cached key)
    takes the inlined fast path; every other row goes through
    :meth:`LeadFilter._judge` / :meth:`LeadFilter._outcome`, which decide
    exactly the same way.
    """
    judge = lead_filter._judge
    slow = lead_filter._outcome
    miss = lead_filter._miss
    cache_get = lead_filter._cache.get
    key_of = lead_filter._key
    with_events = lead_filter._event_subjects
    width = len(lead_filter.header)
    subject_at = lead_filter._subject_index
    email = lead_filter._email
    project = lead_filter._project
    ref = lead_filter.subject_ref
    write = writer.writerow
    spool = excluded.write
    dumps = json.dumps
    seen: dict[str, int] = {}
    setdefault = seen.setdefault
    multi: set[str] = set()
    end = reader.line_num
    blank = dup_rows = 0
    try:
        for row in reader:
            start = end + 1
            end = reader.line_num
            if not row:
                blank += 1
                continue
            subject: str | None
            if len(row) != width:
                outcome, subject = judge(row)  # ragged
            else:
                subject = row[subject_at]
                if email:
                    subject = subject.strip().lower()
                if not subject or subject.isspace():
                    outcome, subject = judge(row)  # empty subject
                elif subject in with_events:
                    outcome = slow(row, subject)
                else:
                    key = key_of(row)
                    outcome = cache_get(key) or miss(key, subject)
            outcome.rows += 1
            if outcome.allowed:
                cells = row if project is None else project(row)
                if neutralise:
                    cells = [neutralise_cell(c) for c in cells]
                write(cells)
            else:
                spool(
                    dumps(
                        {
                            "line": start,
                            "subject": None if subject is None else ref(subject),
                            "reason": outcome.reason,
                            "rule": outcome.rule,
                            "detail": outcome.detail,
                        }
                    )
                    + "\n"
                )
            if subject is not None:
                first = setdefault(subject, start)
                if first != start:
                    dup_rows += 1
                    multi.add(subject)
                    duplicates.write(
                        dumps(
                            {
                                "line": start,
                                "subject": ref(subject),
                                "first_line": first,
                                "kept": outcome.allowed,
                            }
                        )
                        + "\n"
                    )
            if bar is not None and not end & 4095:
                bar.update(raw.position, end - 1 - blank)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _read_error(file, exc, end + 1, encoding) from None
    outcomes = lead_filter._outcomes_seen()
    rows = sum(o.rows for o in outcomes)
    kept = sum(o.rows for o in outcomes if o.allowed)
    return rows, kept, blank, dup_rows, len(multi)


def _append_audit(
    path: str, summary: FilterSummary, excluded: Iterable[Mapping[str, Any]], actor: str
) -> None:
    """Append the run's audit events as JSON Lines (never a personal value)."""
    now = datetime.now(UTC).isoformat()
    base = {
        "run": summary.run_id,
        "time": now,
        "actor": actor,
        "purpose": summary.purpose,
        "at": summary.at.isoformat(),
        "register_version": summary.register_version,
        "register_hash": summary.register_hash,
    }
    try:
        with open(path, "a", encoding="utf-8") as handle:
            run = {
                "event": "filter.run",
                **base,
                "input": {"file": summary.input, "sha256": summary.input_sha256},
                "output": summary.output,
                "rows": {
                    "read": summary.rows_read,
                    "kept": summary.rows_kept,
                    "excluded": summary.rows_excluded,
                },
                "reasons": summary.reasons,
                "dropped_columns": [
                    {"column": c.name, "category": c.category, "status": c.status}
                    for c in summary.columns
                    if not c.kept
                ],
                "subject_reference": summary.subject_reference,
            }
            handle.write(json.dumps(run, ensure_ascii=False) + "\n")
            for entry in excluded:
                event = {"event": "filter.row-excluded", **base, **entry}
                handle.write(json.dumps(event, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise InputError(path, f"the audit file cannot be written: {exc.strerror}") from None


# --------------------------------------------------------------------------- retention


def retention_sweep(
    source: str | os.PathLike[str],
    *,
    register: Register,
    mapping: LeadMapping,
    purposes: Sequence[str] = (),
    at: datetime | None = None,
    collected_for: str | None = None,
    collected_at: datetime | None = None,
    consents: Iterable[Consent] = (),
    objections: Iterable[Objection] = (),
    withdrawals: Iterable[Withdrawal] = (),
    authorisations: Iterable[Authorisation] = (),
    pseudonymiser: Pseudonymiser | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    notice: Callable[[str], None] | None = None,
    skipped: list[tuple[int, str]] | None = None,
) -> Iterator[RetentionRow]:
    """List the rows of a lead file already past their retention (GDPR art. 5(1)(e)).

    For each valid row and each purpose of *purposes* — by default the row's
    own collection purpose — the row is listed when the engine decides
    ``retention-expired`` at *at*, with the instant it went out of retention.
    Columns need no category check here: every column of the mapping is kept
    in mind, and unmapped columns are ignored.

    Args:
        purposes: the purposes to check; empty: each row's collection purpose.
        skipped: if given, receives ``(line, reason)`` for each row that could
            not be judged (invalid row, unknown collection purpose).
        Others: as :func:`filter_csv`.

    Yields:
        :class:`RetentionRow` values, in file order (and *purposes* order per row).

    Raises:
        InputError, ConfigurationError: as :func:`filter_csv`.
    """
    src = os.fspath(source)
    for p in purposes:
        problem = check_purpose(register, p)
        if problem is not None:
            raise ConfigurationError(problem)
    sniffed = sniff_csv(src, encoding=encoding, delimiter=delimiter)
    if sniffed.note and notice is not None:
        notice(sniffed.note)
    raw = _HashingReader(open(src, "rb"))  # noqa: SIM115  # closed with the text reader
    with io.TextIOWrapper(
        io.BufferedReader(raw, 1 << 16), encoding=sniffed.encoding, newline=""
    ) as text:
        reader = csv.reader(text, delimiter=sniffed.delimiter)
        try:
            header = next(reader, None)
            while header == []:
                header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _read_error(src, exc, reader.line_num, sniffed.encoding) from None
        if header is None:
            raise InputError(src, "the file is empty: a header line naming the columns is needed")
        check = next((p for p in purposes), None)
        base_purpose = check or _any_purpose(register, mapping, collected_for)
        lead_filter = LeadFilter(
            register,
            base_purpose,
            mapping,
            header,
            at=at,
            collected_for=collected_for,
            collected_at=collected_at,
            consents=consents,
            objections=objections,
            withdrawals=withdrawals,
            authorisations=authorisations,
            drop_unmapped=True,
            pseudonymiser=pseudonymiser,
            file=src,
            minimise=False,
        )
        cache: dict[Any, tuple[bool, datetime | None, str]] = {}
        end = reader.line_num
        try:
            for row in reader:
                start = end + 1
                end = reader.line_num
                if not row:
                    continue
                outcome, subject = lead_filter._judge(row)
                if outcome.reason == INVALID_ROW or subject is None:
                    if skipped is not None:
                        skipped.append((start, outcome.detail or INVALID_ROW))
                    continue
                key = lead_filter._key(row)
                tag = lead_filter._tag(key)
                assert not isinstance(tag, _Outcome)  # judged valid above
                p0 = tag[0]
                if register.purpose(p0) is None:
                    if skipped is not None:
                        skipped.append((start, "unknown-purpose"))
                    continue
                has_events = subject in lead_filter._event_subjects
                events = lead_filter._store.subject_events(subject) if has_events else _EMPTY_EVENTS
                for p in purposes or (p0,):
                    cache_key = (p, key)
                    found = None if has_events else cache.get(cache_key)
                    if found is None:
                        found = lead_filter._expired_since(p, subject, key, events)
                        if not has_events:
                            if len(cache) >= CACHE_LIMIT:
                                cache.clear()
                            cache[cache_key] = found
                    expired, since, rule = found
                    if expired:
                        yield RetentionRow(
                            line=start,
                            subject=lead_filter.subject_ref(subject),
                            purpose=p,
                            collected_for=p0,
                            expired_at=None if since is None else since.astimezone(UTC),
                            rule=rule,
                        )
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _read_error(src, exc, end + 1, sniffed.encoding) from None


def _any_purpose(register: Register, mapping: LeadMapping, collected_for: str | None) -> str:
    chosen = collected_for or mapping.collected_for
    if chosen is not None and register.purpose(chosen) is not None:
        return chosen
    return next(iter(register.purposes))
