"""The JSON decision protocol of DESIGN §6, and the consent, objection and authorisation files.

A request of ``purposelimit decide`` is one JSON object per line::

    {"purpose": "prospection.email_b2c", "at": "2026-03-01T10:00:00+00:00",
     "record": {"subject": "lead-42", "collected_for": "hr.recruitment",
                "collected_at": "2025-01-10T09:00:00+00:00", "last_contact_at": null,
                "contract_ended_at": null},
     "categories": ["identity.name", "contact.email"],
     "consents": [], "authorisations": [], "objections": []}

This module turns such objects into values (:class:`DecideRequest`,
:class:`~purposelimit.Consent`, :class:`~purposelimit.Authorisation`,
:class:`~purposelimit.Objection`) and refuses anything it cannot read with a
:class:`ProtocolError` whose message names the field (``record.collected_at:
a date-time needs an offset ...``). Messages name fields and types, never the
values: a request holds a data subject's id.

It also reads the files the command line takes: consents, objections and
authorisations as CSV or JSON (the same shapes), and suppression lists (one
subject per line, each counted as an objection). A bad file raises
:class:`InputError`, one line naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from ._convert import describe_value
from ._engine import Engine
from ._errors import NaiveDatetimeError, PurposeLimitError
from ._ids import is_valid_id
from ._model import (
    Authorisation,
    Collection,
    CollectionTag,
    Consent,
    Decision,
    Evidence,
    Objection,
)
from ._store import SubjectEvents
from ._time import OutOfRangeError, parse_datetime

__all__ = [
    "SUPPRESSION_AT",
    "DecideRequest",
    "InputError",
    "ProtocolError",
    "authorisation_from_json",
    "consent_from_json",
    "decide_request",
    "load_authorisations",
    "load_consents",
    "load_objections",
    "load_suppression",
    "objection_from_json",
    "parse_instant",
    "parse_request",
    "parse_request_line",
    "unknown_key_message",
]

#: The instant a suppression-list entry is taken to have been made: 1970-01-01T00:00:00Z.
#: A suppression list records people who must not be contacted, without dates;
#: dating its entries at the start of Unix time makes them stand at every
#: instant a decision is taken (an objection counts when made at or before T).
SUPPRESSION_AT: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: Subject normaliser: ``str.strip().lower()`` for e-mail addresses, or ``None``.
SubjectKey = Callable[[str], str] | None


class ProtocolError(PurposeLimitError, ValueError):
    """A request, consent, authorisation or objection of DESIGN §6 cannot be read.

    The message starts with the field's path (``record.collected_at``,
    ``consents[0].withdrawn_at``) and never contains the field's value.
    """


class InputError(PurposeLimitError, ValueError):
    """An input file (lead file, mapping, consents, objections...) cannot be used.

    ``str()`` is one line: ``FILE:LINE: column 'NAME': problem``, with the line
    and the column when known. It never contains a cell's value.

    Attributes:
        file: the file as the user named it.
        message: what is wrong.
        line: the 1-based physical line, when known.
        column: the column (header name or field path), when known.
    """

    def __init__(
        self, file: str, message: str, *, line: int | None = None, column: str | None = None
    ) -> None:
        self.file = file
        self.message = message
        self.line = line
        self.column = column
        where = file if line is None else f"{file}:{line}"
        what = message if column is None else f"column {column!r}: {message}"
        super().__init__(f"{where}: {what}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_input_error, (self.file, self.message, self.line, self.column))


def _rebuild_input_error(
    file: str, message: str, line: int | None, column: str | None
) -> InputError:
    return InputError(file, message, line=line, column=column)


# --------------------------------------------------------------------------- field readers


def parse_instant(text: str, name: str) -> datetime:
    """Parse an ISO-8601 instant as DESIGN §6 requires, with a message that never shows it.

    Args:
        text: ``2025-01-10T09:00:00+00:00``, ``...Z`` or a bare date (midnight UTC).
        name: the field's name or path, for the message.

    Returns:
        An aware datetime.

    Raises:
        ProtocolError: not ISO-8601, a date-time without an offset, or one
            whose offset puts it outside the years 1 to 9999 in UTC.
    """
    try:
        return parse_datetime(text, name)
    except NaiveDatetimeError:
        raise ProtocolError(
            f"{name}: a date-time needs an offset ('Z' or '+01:00'); "
            "a bare date (2025-01-10) means midnight UTC"
        ) from None
    except OutOfRangeError:
        raise ProtocolError(
            f"{name}: out of range: an instant must fall between the years 1 and 9999 in UTC"
        ) from None
    except ValueError:
        raise ProtocolError(
            f"{name}: not an ISO-8601 date or date-time "
            "(such as 2025-01-10 or 2025-01-10T09:00:00+00:00)"
        ) from None


def instant_argument(text: str) -> datetime:
    """An argparse ``type=`` for instants: ISO-8601 with an offset, or a bare date (UTC midnight).

    Raises:
        argparse.ArgumentTypeError: *text* is not such an instant.
    """
    import argparse

    try:
        return parse_instant(text, "date")
    except ProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def unknown_key_message(key: str, allowed: Sequence[str], what: str = "key") -> str:
    """The message for an unknown key or column, with a did-you-mean when one is close."""
    import difflib

    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = key if len(key) <= 40 else key[:37] + "..."
    return (
        f"unknown {what} {shown!r}{hint}; allowed: {', '.join(allowed)}, "
        "and names beginning with 'x-' (ignored)"
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Fields:
    """Typed access to the fields of one JSON object, with path-prefixed errors."""

    __slots__ = ("path", "value")

    def __init__(self, value: object, path: str, what: str) -> None:
        if not isinstance(value, dict):
            where = f"{path}: " if path else ""
            raise ProtocolError(f"{where}{what} must be a JSON object, not {describe_value(value)}")
        self.value: dict[str, Any] = value
        self.path = path

    def check_keys(self, allowed: Sequence[str]) -> None:
        for key in self.value:
            if key not in allowed and not (isinstance(key, str) and key.startswith("x-")):
                raise ProtocolError(f"{_join(self.path, key)}: {unknown_key_message(key, allowed)}")

    def name(self, key: str) -> str:
        return _join(self.path, key)

    def present(self, key: str) -> bool:
        return self.value.get(key) is not None

    def required(self, key: str) -> object:
        if key not in self.value:
            raise ProtocolError(f"{self.name(key)}: missing (this field is required)")
        return self.value[key]

    def string(self, key: str, *, nonempty: bool = False) -> str:
        value = self.required(key)
        if not isinstance(value, str):
            raise ProtocolError(
                f"{self.name(key)}: expected a string, found {describe_value(value)}"
            )
        if nonempty and not value.strip():
            raise ProtocolError(f"{self.name(key)}: must not be empty")
        return value

    def opt_string(self, key: str) -> str | None:
        if self.value.get(key) is None:
            return None
        return self.string(key)

    def instant(self, key: str) -> datetime:
        value = self.required(key)
        if not isinstance(value, str):
            raise ProtocolError(
                f"{self.name(key)}: expected an ISO-8601 date-time string, "
                f"found {describe_value(value)}"
            )
        return parse_instant(value, self.name(key))

    def opt_instant(self, key: str) -> datetime | None:
        if self.value.get(key) is None:
            return None
        return self.instant(key)

    def strings(self, key: str, *, nonempty: bool = True) -> tuple[str, ...]:
        value = self.required(key)
        if not isinstance(value, list):
            raise ProtocolError(
                f"{self.name(key)}: expected a list of strings, found {describe_value(value)}"
            )
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ProtocolError(
                    f"{self.name(key)}[{i}]: expected a string, found {describe_value(item)}"
                )
        if nonempty and not value:
            raise ProtocolError(f"{self.name(key)}: must not be an empty list")
        return tuple(value)

    def opt_strings(self, key: str) -> tuple[str, ...] | None:
        if self.value.get(key) is None:
            return None
        return self.strings(key, nonempty=False)

    def objects(self, key: str) -> list[object]:
        value = self.value.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ProtocolError(
                f"{self.name(key)}: expected a list of objects, found {describe_value(value)}"
            )
        return value


def _ids(fields: _Fields, key: str, values: Sequence[str]) -> None:
    for i, value in enumerate(values):
        if not is_valid_id(value):
            raise ProtocolError(
                f"{fields.name(key)}[{i}]: not a purpose or category id (lower-case ASCII "
                "letters, digits, '_' and '-' joined by dots)"
            )


def _subject(fields: _Fields, key: str, subject_key: SubjectKey) -> str:
    subject = fields.string(key, nonempty=True)
    if subject_key is not None:
        subject = subject_key(subject)
    return subject


def _value_error(path: str, exc: ValueError) -> ProtocolError:
    where = f"{path}: " if path else ""
    return ProtocolError(f"{where}{exc}")


# --------------------------------------------------------------------------- events

_CONSENT_KEYS = (
    "id",
    "subject",
    "purposes",
    "state",
    "given_at",
    "withdrawn_at",
    "expires_at",
    "evidence",
)
_EVIDENCE_KEYS = ("mechanism", "collection_point", "notice_version", "source", "channel")
_CONSENT_STATES = ("given", "refused", "not-asked")
_MECHANISMS = (
    "unticked-checkbox",
    "double-opt-in",
    "signed-form",
    "recorded-oral",
    "button",
    "pre-ticked",
    "bundled",
    "implied",
    "silence",
)
_AUTHORISATION_KEYS = (
    "id",
    "from",
    "to",
    "categories",
    "subjects",
    "valid_from",
    "valid_until",
    "reference",
)
_OBJECTION_KEYS = ("id", "subject", "at", "scope", "withdrawn_at")


def _choice(fields: _Fields, key: str, allowed: Sequence[str], default: str | None) -> str | None:
    if fields.value.get(key) is None:
        return default
    value = fields.string(key)
    if value not in allowed:
        raise ProtocolError(f"{fields.name(key)}: expected one of {', '.join(allowed)}")
    return value


def consent_from_json(
    value: object,
    path: str = "consent",
    *,
    subject_key: SubjectKey = None,
    default_id: str | None = None,
) -> Consent:
    """Build a :class:`~purposelimit.Consent` from its DESIGN §6 JSON shape.

    Shape: ``{"id"?, "subject", "purposes": [ids], "state"?: "given" | "refused" |
    "not-asked", "given_at", "withdrawn_at"?, "expires_at"?, "evidence"?:
    {"mechanism"?, "collection_point"?, "notice_version"?, "source"?, "channel"?}}``.
    For a refusal or a not-asked record, ``given_at`` is when it was recorded.

    Args:
        value: the parsed JSON object.
        path: where it is, for messages (``consents[0]``).
        subject_key: a normaliser applied to the subject (e-mail comparison).
        default_id: the id to use when the object has none (else one derived
            from the content).

    Returns:
        The consent record (GDPR art. 7(1)).

    Raises:
        ProtocolError: a missing, unknown or ill-typed field, a date without an
            offset, ``withdrawn_at`` before ``given_at``, an empty ``purposes``.
    """
    fields = _Fields(value, path, "a consent")
    fields.check_keys(_CONSENT_KEYS)
    subject = _subject(fields, "subject", subject_key)
    purposes = fields.strings("purposes")
    _ids(fields, "purposes", purposes)
    state = _choice(fields, "state", _CONSENT_STATES, "given")
    given_at = fields.instant("given_at")
    withdrawn_at = fields.opt_instant("withdrawn_at")
    expires_at = fields.opt_instant("expires_at")
    evidence: Evidence | None = None
    if fields.present("evidence"):
        ev = _Fields(fields.value["evidence"], fields.name("evidence"), "evidence")
        ev.check_keys(_EVIDENCE_KEYS)
        evidence = Evidence(
            mechanism=_choice(ev, "mechanism", _MECHANISMS, None),
            collection_point=ev.opt_string("collection_point"),
            notice_version=ev.opt_string("notice_version"),
            source=ev.opt_string("source"),
            channel=ev.opt_string("channel"),
        )
    if withdrawn_at is not None and withdrawn_at < given_at:
        raise ProtocolError(f"{fields.name('withdrawn_at')}: is before given_at")
    record_id = fields.opt_string("id")
    if record_id is not None and not record_id.strip():
        raise ProtocolError(f"{fields.name('id')}: must not be empty")
    try:
        return Consent(
            subject=subject,
            purposes=purposes,
            given_at=given_at,
            state=state or "given",
            withdrawn_at=withdrawn_at,
            expires_at=expires_at,
            evidence=evidence,
            id=record_id if record_id is not None else default_id,  # type: ignore[arg-type]  # None: derived id
        )
    except ValueError as exc:
        raise _value_error(path, exc) from None


def authorisation_from_json(
    value: object, path: str = "authorisation", *, subject_key: SubjectKey = None
) -> Authorisation:
    """Build an :class:`~purposelimit.Authorisation` from its DESIGN §6 JSON shape.

    Shape: ``{"id", "from": [purpose ids or groups], "to": purpose id or group,
    "categories"?: [ids] (default: all), "subjects"?: [ids] (default: everyone),
    "valid_from", "valid_until"?, "reference"}``.

    Raises:
        ProtocolError: a missing, unknown or ill-typed field, a date without an
            offset, ``valid_until`` before ``valid_from``.
    """
    fields = _Fields(value, path, "an authorisation")
    fields.check_keys(_AUTHORISATION_KEYS)
    auth_id = fields.string("id", nonempty=True)
    from_ = fields.strings("from")
    _ids(fields, "from", from_)
    to = fields.string("to")
    if not is_valid_id(to):
        raise ProtocolError(f"{fields.name('to')}: not a purpose id")
    categories = fields.opt_strings("categories")
    if categories is not None:
        _ids(fields, "categories", categories)
    subjects = fields.opt_strings("subjects")
    if subjects is not None and subject_key is not None:
        subjects = tuple(subject_key(s) for s in subjects)
    valid_from = fields.instant("valid_from")
    valid_until = fields.opt_instant("valid_until")
    if valid_until is not None and valid_until < valid_from:
        raise ProtocolError(f"{fields.name('valid_until')}: is before valid_from")
    reference = fields.string("reference", nonempty=True)
    try:
        return Authorisation(
            id=auth_id,
            from_=from_,
            to=to,
            reference=reference,
            valid_from=valid_from,
            valid_until=valid_until,
            categories=categories,
            subjects=subjects,
        )
    except ValueError as exc:
        raise _value_error(path, exc) from None


def objection_from_json(
    value: object,
    path: str = "objection",
    *,
    subject_key: SubjectKey = None,
    default_id: str | None = None,
    scope_required: bool = True,
) -> Objection:
    """Build an :class:`~purposelimit.Objection` from its DESIGN §6 JSON shape.

    Shape: ``{"id"?, "subject", "at", "scope": "direct-marketing", "withdrawn_at"?}``
    (GDPR art. 21(2)-(3)).

    Args:
        scope_required: whether ``scope`` must be present (JSON: yes, as in
            DESIGN §6; the CSV files make it optional).

    Raises:
        ProtocolError: a missing, unknown or ill-typed field, a date without an
            offset, another scope, ``withdrawn_at`` before ``at``.
    """
    fields = _Fields(value, path, "an objection")
    fields.check_keys(_OBJECTION_KEYS)
    subject = _subject(fields, "subject", subject_key)
    at = fields.instant("at")
    if scope_required:
        fields.required("scope")
    _choice(fields, "scope", ("direct-marketing",), "direct-marketing")
    withdrawn_at = fields.opt_instant("withdrawn_at")
    if withdrawn_at is not None and withdrawn_at < at:
        raise ProtocolError(f"{fields.name('withdrawn_at')}: is before at")
    record_id = fields.opt_string("id")
    if record_id is not None and not record_id.strip():
        raise ProtocolError(f"{fields.name('id')}: must not be empty")
    try:
        return Objection(
            subject=subject,
            at=at,
            withdrawn_at=withdrawn_at,
            id=record_id if record_id is not None else default_id,  # type: ignore[arg-type]  # None: derived id
        )
    except ValueError as exc:
        raise _value_error(path, exc) from None


# --------------------------------------------------------------------------- requests

_REQUEST_KEYS = (
    "purpose",
    "at",
    "record",
    "categories",
    "consents",
    "authorisations",
    "objections",
)
_RECORD_KEYS = (
    "subject",
    "collected_for",
    "collected_at",
    "last_contact_at",
    "contract_ended_at",
    "source",
)


@attrs.frozen(slots=True)
class DecideRequest:
    """One request of ``purposelimit decide`` (DESIGN §6), read and checked.

    Purpose and category ids are kept as written: an id that is not declared,
    whatever its spelling, is decided as ``unknown-purpose`` /
    ``unknown-category``.

    Attributes:
        purpose: the processing purpose id; ``None`` when the request says
            ``"purpose": null`` (decided as ``no-purpose``).
        at: the aware instant of the decision; ``None``: now.
        subject: the data subject's id (not shown in ``repr``).
        collected_for: the collection purpose id.
        collected_at, last_contact_at, contract_ended_at: aware instants T0, T1, T2.
        source: where the record came from, if given.
        categories: the data category ids read (at least one).
        consents, authorisations, objections: inline events, added to the
            store's for this request only.
    """

    purpose: str | None
    at: datetime | None
    subject: str = attrs.field(repr=False)
    collected_for: str
    collected_at: datetime
    last_contact_at: datetime | None
    contract_ended_at: datetime | None
    source: str | None
    categories: tuple[str, ...]
    consents: tuple[Consent, ...] = ()
    authorisations: tuple[Authorisation, ...] = ()
    objections: tuple[Objection, ...] = ()


def parse_request(value: object) -> DecideRequest:
    """Read one request of the JSON decision protocol (DESIGN §6).

    ``consents``, ``authorisations`` and ``objections`` are optional; ``at`` is
    optional (now when absent); ``record.last_contact_at``,
    ``record.contract_ended_at`` and ``record.source`` are optional. Keys
    beginning with ``x-`` are ignored; any other unknown key is refused (a typo
    such as ``"objection"`` must not silently drop an objection).

    Args:
        value: the parsed JSON value of one line.

    Returns:
        The checked :class:`DecideRequest`.

    Raises:
        ProtocolError: the request cannot be read; the message names the field.
    """
    fields = _Fields(value, "", "a request")
    fields.check_keys(_REQUEST_KEYS)
    raw_purpose = fields.required("purpose")
    purpose = None if raw_purpose is None else fields.string("purpose")
    at = fields.opt_instant("at")
    record = _Fields(fields.required("record"), "record", "record")
    record.check_keys(_RECORD_KEYS)
    subject = record.string("subject", nonempty=True)
    collected_for = record.string("collected_for")
    collected_at = record.instant("collected_at")
    last_contact_at = record.opt_instant("last_contact_at")
    contract_ended_at = record.opt_instant("contract_ended_at")
    source = record.opt_string("source")
    categories = fields.strings("categories", nonempty=False)
    if not categories:
        raise ProtocolError("categories: must list at least one data category")
    consents = tuple(
        consent_from_json(item, f"consents[{i}]")
        for i, item in enumerate(fields.objects("consents"))
    )
    authorisations = tuple(
        authorisation_from_json(item, f"authorisations[{i}]")
        for i, item in enumerate(fields.objects("authorisations"))
    )
    objections = tuple(
        objection_from_json(item, f"objections[{i}]")
        for i, item in enumerate(fields.objects("objections"))
    )
    return DecideRequest(
        purpose=purpose,
        at=at,
        subject=subject,
        collected_for=collected_for,
        collected_at=collected_at,
        last_contact_at=last_contact_at,
        contract_ended_at=contract_ended_at,
        source=source,
        categories=categories,
        consents=consents,
        authorisations=authorisations,
        objections=objections,
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ProtocolError(f"{key}: appears twice in one JSON object")
        result[key] = value
    return result


def _loads(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ProtocolError("not JSON this program can read: nested too deeply") from None
    except ProtocolError:  # a duplicate key, from the hook
        raise
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise ProtocolError("not JSON this program can read: a number is too long") from None


def parse_request_line(line: str) -> DecideRequest:
    """Parse one line of ``purposelimit decide``'s input (a JSON object).

    Raises:
        ProtocolError: not JSON, or a request that cannot be read.
    """
    return parse_request(_loads(line))


def decide_request(engine: Engine, request: DecideRequest, at: datetime | None = None) -> Decision:
    """Decide one protocol request with *engine*.

    Inline consents, authorisations and objections add to the engine's store
    for this request only; they are never written to it (DESIGN §6).

    Args:
        engine: the engine (register and store).
        request: the request.
        at: the instant used when the request has no ``at`` (default: now).

    Returns:
        The decision (a collection purpose that is not a declared id, whatever
        its spelling, gives ``unknown-purpose``).
    """
    when = request.at or at or engine.now()
    if is_valid_id(request.collected_for):
        tag = CollectionTag(
            subject=request.subject,
            collection=Collection(purpose=request.collected_for, source=request.source),
            collected_at=request.collected_at,
            last_contact_at=request.last_contact_at,
            contract_ended_at=request.contract_ended_at,
        )
        return engine.decide(
            tag,
            request.categories,
            request.purpose,
            when,
            consents=request.consents,
            objections=request.objections,
            authorisations=request.authorisations,
        )
    # A collection purpose outside the id syntax cannot be a Collection; it is
    # undeclared, so every category is decided without reading any event.
    parts = [
        engine.decide_category(
            request.purpose,
            request.collected_for,
            category,
            request.subject,
            request.collected_at,
            request.last_contact_at,
            request.contract_ended_at,
            when,
            events=SubjectEvents(),
            authorisations=(),
        )[0]
        for category in request.categories
    ]
    return Decision.combine(request.purpose, request.collected_for, parts)


# --------------------------------------------------------------------------- files

#: Delimiters the CSV readers consider.
DELIMITERS: Final = ",;\t|"


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode a whole small file: UTF-8 (with or without BOM), else cp1252, else Latin-1.

    Returns:
        ``(text, encoding)`` with encoding ``utf-8``, ``utf-8-sig``, ``cp1252`` or ``latin-1``.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def pick_delimiter(sample: str) -> str:
    """Guess the delimiter of CSV text from a sample: one of ``, ; TAB |``.

    :class:`csv.Sniffer` restricted to those four decides; when it cannot, the
    candidate found most often in the first line wins, and ``,`` when none is.
    """
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
        if dialect.delimiter in DELIMITERS:
            first = sample.split("\n", 1)[0]
            if dialect.delimiter in first or not any(d in first for d in DELIMITERS):
                return dialect.delimiter
    except csv.Error:
        pass
    first = sample.split("\n", 1)[0]
    counts = {d: first.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_file(path: str | os.PathLike[str]) -> tuple[str, str]:
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InputError(name, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    return name, decode_bytes(data)[0]


def _kind(name: str, text: str) -> str:
    lower = name.lower()
    if lower.endswith(".json"):
        return "json"
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    head = text.lstrip()[:1]
    return "json" if head == "[" else "jsonl" if head == "{" else "csv"


def _json_items(name: str, text: str) -> Iterator[tuple[int, object]]:
    """Yield ``(line, item)`` for each element of a JSON array, or each line of JSON Lines."""
    if _kind(name, text) == "jsonl":
        for number, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                try:
                    yield number, _loads(raw)
                except ProtocolError as exc:
                    raise InputError(name, str(exc), line=number) from None
        return
    decoder = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)
    pos = _skip_ws(text, 0)
    if text[pos : pos + 1] != "[":
        raise InputError(
            name, "a JSON file of events must hold one array: [ {...}, {...} ]", line=1
        )
    pos = _skip_ws(text, pos + 1)
    if text[pos : pos + 1] == "]":
        _expect_end(name, text, pos + 1)
        return
    line, counted = 1, 0  # lines counted incrementally: one pass over the text, not one per item
    while True:
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(name, f"not JSON: {exc.msg}", line=exc.lineno) from None
        except ProtocolError as exc:
            raise InputError(name, str(exc), line=line) from None
        except RecursionError:
            raise InputError(
                name, "not JSON this program can read: nested too deeply", line=line
            ) from None
        except ValueError:  # an integer of more than 4300 digits
            raise InputError(
                name, "not JSON this program can read: a number is too long", line=line
            ) from None
        yield line, item
        pos = _skip_ws(text, pos)
        sep = text[pos : pos + 1]
        if sep == "]":
            _expect_end(name, text, pos + 1)
            return
        if sep != ",":
            raise InputError(
                name,
                "not JSON: expected ',' or ']' after an item",
                line=text.count("\n", 0, pos) + 1,
            )
        pos = _skip_ws(text, pos + 1)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _expect_end(name: str, text: str, pos: int) -> None:
    pos = _skip_ws(text, pos)
    if pos < len(text):
        raise InputError(
            name, "not JSON: extra data after the array", line=text.count("\n", 0, pos) + 1
        )


def _csv_table(name: str, text: str) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header, and ``(line, {column: cell})`` for each non-blank row (empty cells left out)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=pick_delimiter(text[:65536]))
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as exc:
        raise InputError(name, f"not readable as CSV: {exc}", line=1) from None

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        end = reader.line_num
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise InputError(
                        name,
                        f"ragged row: {len(row)} fields, the header has {len(header)}",
                        line=start,
                    )
                yield start, {h: c.strip() for h, c in zip(header, row, strict=True) if c.strip()}
        except csv.Error as exc:
            raise InputError(name, f"not readable as CSV: {exc}", line=end + 1) from None

    return header, rows()


def _split_ids(cell: str) -> list[str]:
    parts = cell.replace(";", "|").split("|")
    return [p.strip() for p in parts if p.strip()]


def _csv_events(
    name: str,
    text: str,
    columns: Sequence[str],
    required: Sequence[str],
    lists: Sequence[str],
    nested: Mapping[str, str],
) -> Iterator[tuple[int, dict[str, object]]]:
    """CSV rows as the JSON objects of DESIGN §6: list columns split on ``|`` or ``;``."""
    header, rows = _csv_table(name, text)
    known = [*columns, *nested]
    if not set(required).intersection(header):
        # None of the required column names: most likely a file without a header
        # row, whose first line is a person's data. Its cells are not repeated.
        raise InputError(
            name,
            "the first line is not a header: a CSV event file starts with its column "
            f"names ({', '.join(required)} required)",
            line=1,
        )
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise InputError(name, "the header repeats a column name", line=1, column=column)
        seen.add(column)
    for column in header:
        if column not in known and not column.startswith("x-"):
            raise InputError(
                name, unknown_key_message(column, known, "column"), line=1, column=column
            )
    for column in required:
        if column not in header:
            raise InputError(name, f"the header has no {column!r} column (it is required)", line=1)
    for line, row in rows:
        obj: dict[str, Any] = {}
        for column, cell in row.items():
            if column.startswith("x-"):
                continue
            if column in nested:
                obj.setdefault(nested[column], {})[column] = cell
            elif column in lists:
                obj[column] = _split_ids(cell)
            else:
                obj[column] = cell
        for column in required:
            if column not in obj:
                raise InputError(name, "empty (this column is required)", line=line, column=column)
        yield line, obj


def _csv_problem(name: str, line: int, exc: ProtocolError) -> InputError:
    text = str(exc)
    column, sep, message = text.partition(": ")
    if sep and column and " " not in column:
        return InputError(name, message, line=line, column=column.split(".")[-1].split("[")[0])
    return InputError(name, text, line=line)


def _default_id(name: str, line: int) -> str:
    return f"{os.path.basename(name)}:{line}"


def load_consents(path: str | os.PathLike[str], *, subject_key: SubjectKey = None) -> list[Consent]:
    """Read a consents file: a JSON array, JSON Lines, or CSV.

    JSON items have the consent shape of DESIGN §6. CSV has a header naming
    the columns ``subject``, ``purposes`` (ids separated by ``|`` or ``;``) and
    ``given_at`` (required), and ``id``, ``state``, ``withdrawn_at``,
    ``expires_at``, ``mechanism``, ``collection_point``, ``notice_version``,
    ``source``, ``channel`` (optional); columns beginning with ``x-`` are
    ignored. A record without an id gets ``<file name>:<line>``, so a decision's
    rule (``consent:consents.csv:4``) points at the line that decided.

    Args:
        path: the file; its name's ending (``.json``, ``.jsonl``, ``.csv``)
            chooses the format, else its first character.
        subject_key: a normaliser applied to subjects (e-mail comparison).

    Returns:
        The consent records (GDPR art. 7(1)), in file order.

    Raises:
        InputError: the file cannot be read, or a record is refused (file,
            line and column named).
    """
    name, text = _read_file(path)
    found: list[Consent] = []
    if _kind(name, text) == "csv":
        evidence = dict.fromkeys(_EVIDENCE_KEYS, "evidence")
        rows = _csv_events(
            name,
            text,
            [k for k in _CONSENT_KEYS if k != "evidence"],
            ("subject", "purposes", "given_at"),
            ("purposes",),
            evidence,
        )
        for line, obj in rows:
            try:
                found.append(
                    consent_from_json(
                        obj, "", subject_key=subject_key, default_id=_default_id(name, line)
                    )
                )
            except ProtocolError as exc:
                raise _csv_problem(name, line, exc) from None
        return found
    for line, item in _json_items(name, text):
        try:
            found.append(
                consent_from_json(
                    item, "", subject_key=subject_key, default_id=_default_id(name, line)
                )
            )
        except ProtocolError as exc:
            raise InputError(name, str(exc), line=line) from None
    return found


def load_objections(
    path: str | os.PathLike[str], *, subject_key: SubjectKey = None
) -> list[Objection]:
    """Read an objections file (GDPR art. 21(2)-(3)): a JSON array, JSON Lines, or CSV.

    JSON items have the objection shape of DESIGN §6 (``scope`` required). CSV
    has the columns ``subject`` and ``at`` (required), and ``id``, ``scope``
    (default ``direct-marketing``, the only scope) and ``withdrawn_at``
    (optional). A record without an id gets ``<file name>:<line>``.

    Raises:
        InputError: the file cannot be read, or a record is refused.
    """
    name, text = _read_file(path)
    found: list[Objection] = []
    if _kind(name, text) == "csv":
        for line, obj in _csv_events(name, text, _OBJECTION_KEYS, ("subject", "at"), (), {}):
            try:
                found.append(
                    objection_from_json(
                        obj,
                        "",
                        subject_key=subject_key,
                        default_id=_default_id(name, line),
                        scope_required=False,
                    )
                )
            except ProtocolError as exc:
                raise _csv_problem(name, line, exc) from None
        return found
    for line, item in _json_items(name, text):
        try:
            found.append(
                objection_from_json(
                    item, "", subject_key=subject_key, default_id=_default_id(name, line)
                )
            )
        except ProtocolError as exc:
            raise InputError(name, str(exc), line=line) from None
    return found


def load_authorisations(
    path: str | os.PathLike[str], *, subject_key: SubjectKey = None
) -> list[Authorisation]:
    """Read an authorisations file: a JSON array, JSON Lines, or CSV.

    JSON items have the authorisation shape of DESIGN §6. CSV has the columns
    ``id``, ``from`` (ids separated by ``|`` or ``;``), ``to``, ``valid_from``
    and ``reference`` (required), and ``categories``, ``subjects`` (separated
    the same way) and ``valid_until`` (optional).

    Raises:
        InputError: the file cannot be read, or a record is refused.
    """
    name, text = _read_file(path)
    found: list[Authorisation] = []
    if _kind(name, text) == "csv":
        rows = _csv_events(
            name,
            text,
            _AUTHORISATION_KEYS,
            ("id", "from", "to", "valid_from", "reference"),
            ("from", "categories", "subjects"),
            {},
        )
        for line, obj in rows:
            try:
                found.append(authorisation_from_json(obj, "", subject_key=subject_key))
            except ProtocolError as exc:
                raise _csv_problem(name, line, exc) from None
        return found
    for line, item in _json_items(name, text):
        try:
            found.append(authorisation_from_json(item, "", subject_key=subject_key))
        except ProtocolError as exc:
            raise InputError(name, str(exc), line=line) from None
    return found


def load_suppression(
    path: str | os.PathLike[str], *, subject_key: SubjectKey = None
) -> list[Objection]:
    """Read a suppression list: one e-mail address or subject id per line.

    Blank lines and lines starting with ``#`` are ignored. Each entry counts as
    an objection to direct marketing (GDPR art. 21(3)) made at
    :data:`SUPPRESSION_AT` (1970-01-01T00:00:00Z), so it stands at every
    instant decided, with the id ``suppression:<file name>:<line>``.

    Args:
        subject_key: a normaliser applied to each entry (e-mail comparison);
            without one, entries are compared exactly after trimming spaces.

    Raises:
        InputError: the file cannot be read.
    """
    name, text = _read_file(path)
    base = os.path.basename(name)
    found: list[Objection] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        subject = subject_key(entry) if subject_key is not None else entry
        found.append(
            Objection(subject=subject, at=SUPPRESSION_AT, id=f"suppression:{base}:{number}")
        )
    return found
