"""The registry and audit commands of the command line: consent, objection, audit.

``add_commands(subparsers)`` adds three command groups to the ``purposelimit``
parser:

* ``consent grant|withdraw|show|import|export`` — the person's answers about
  purposes, kept in a registry (``--registry URL``);
* ``objection add|withdraw|show`` — objections to direct marketing (GDPR art. 21);
* ``audit verify|tail|stats`` — the hash-chained audit trail, in a JSON Lines
  file or in the registry database's audit table.

Every subcommand sets ``func`` (and ``handler``, the attribute ``purposelimit``'s
``main`` dispatches on) to a function ``(args) -> int`` that prints its own
one-line errors and returns the exit status: 0 done; 1 bad input (a refused
event, an unreadable import file, a broken audit chain, a store that failed);
2 usage error (no registry named, a registry that cannot be opened, a missing
key). No message shows a data subject's id.

Consents are exported and imported as JSON or CSV following the public
description of the ISO/IEC TS 27560:2023 consent record (see
docs/consent-and-audit.md for the field mapping and what is uncertain in it),
with statuses from the W3C Data Privacy Vocabulary (:data:`DPV_CONSENT_STATUS`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final, TextIO

from ._audit_chain import (
    AUDIT_KEY_ENV,
    ChainedEvent,
    SQLAuditTable,
    VerificationResult,
    audit_key_from_env,
    open_audit_table,
    read_audit_file,
    verify_audit_file,
    verify_audit_table,
)
from ._errors import AuditError, ConfigurationError, PurposeLimitError, StoreError
from ._files import temp_beside
from ._model import (
    Authorisation,
    Consent,
    ConsentAnswer,
    ConsentState,
    Evidence,
    Mechanism,
    Objection,
)
from ._protocol import (
    InputError,
    ProtocolError,
    instant_argument,
    parse_instant,
    unknown_key_message,
)
from ._registry import event_to_dict, open_store
from ._store import (
    EMPTY_EVENTS,
    Event,
    InMemoryStore,
    RecordedEvent,
    Registry,
    Store,
    SubjectEvents,
    Withdrawal,
)
from ._time import add_duration, parse_duration

__all__ = [
    "ACTOR_ENV",
    "DPV_CONSENT_STATUS",
    "REGISTRY_ENV",
    "SCHEMA_27560",
    "RegistryOverlay",
    "add_commands",
    "consents_from_27560",
    "consents_to_27560",
    "open_registry_url",
    "registry_snapshot",
]

PROG: Final = "purposelimit"

#: The environment variable naming the registry when ``--registry`` is not given.
REGISTRY_ENV: Final = "PURPOSELIMIT_REGISTRY"
#: The environment variable naming the actor of writes when ``--actor`` is not given.
ACTOR_ENV: Final = "PURPOSELIMIT_ACTOR"

#: ``schema_version`` of the consent records this module writes.
SCHEMA_27560: Final = "purposelimit:iso-27560-json/1"

#: Our consent states (DESIGN §3) as W3C DPV consent statuses.
DPV_CONSENT_STATUS: Final[Mapping[ConsentState, str]] = {
    ConsentState.VALID: "dpv:ConsentGiven",
    ConsentState.WITHDRAWN: "dpv:ConsentWithdrawn",
    ConsentState.EXPIRED: "dpv:ConsentExpired",
    ConsentState.REFUSED: "dpv:ConsentRefused",
    ConsentState.INVALID: "dpv:ConsentInvalidated",
    ConsentState.NOT_ASKED: "dpv:ConsentUnknown",
    ConsentState.NONE: "dpv:ConsentUnknown",
}

_GIVEN, _REFUSED, _UNKNOWN = "ConsentGiven", "ConsentRefused", "ConsentUnknown"
_WITHDRAWN, _EXPIRED, _INVALIDATED = "ConsentWithdrawn", "ConsentExpired", "ConsentInvalidated"
_STATUSES = (_GIVEN, _INVALIDATED, _REFUSED, _UNKNOWN, _WITHDRAWN, _EXPIRED)
_DPV_IRI = "https://w3id.org/dpv#"

#: The consent type (27560 "event type") written for each mechanism.
_CONSENT_TYPE: Final[Mapping[Mechanism, str]] = {
    Mechanism.UNTICKED_CHECKBOX: "dpv:ExpressedConsent",
    Mechanism.DOUBLE_OPT_IN: "dpv:ExpressedConsent",
    Mechanism.BUTTON: "dpv:ExpressedConsent",
    Mechanism.SIGNED_FORM: "dpv:ExpressedConsent",
    Mechanism.RECORDED_ORAL: "dpv:ExpressedConsent",
    Mechanism.BUNDLED: "dpv:ExpressedConsent",
    Mechanism.PRE_TICKED: "dpv:ImpliedConsent",
    Mechanism.IMPLIED: "dpv:ImpliedConsent",
    Mechanism.SILENCE: "dpv:ImpliedConsent",
}
_INVALID_MECHANISMS = tuple(m.value for m in Mechanism if not m.is_valid)

#: The 27560 record fields (from the public description) read or accepted and not kept.
_RECORD_KEYS = ("schema_version", "record_id", "pii_principal_id", "purposes", "events")
_RECORD_OPTIONAL = ("privacy_notice", "collection_method")
_RECORD_IGNORED = (
    "receipt_id",
    "language",
    "pii_controllers",
    "pii_information",
    "processing_method",
    "storage_locations",
    "retention_period",
    "processing_location",
    "geographic_restrictions",
    "services",
    "jurisdiction",
    "recipient_third_parties",
    "withdrawal_method",
    "privacy_rights",
    "codes_of_conduct",
    "impact_assessment",
    "authority_party",
)
_EVENT_KEYS = ("event_time", "event_state", "event_type", "validity_duration", "entity_id")
_X_EVENT_KEYS = (
    "x-mechanism",
    "x-collection-point",
    "x-channel",
    "x-expires-at",
    "x-recorded-by",
    "x-recorded-at",
)
#: The columns of the 27560 CSV export: one row per consent event.
CSV_27560_COLUMNS: Final = (
    "record_id",
    "pii_principal_id",
    "purposes",
    "privacy_notice",
    "collection_method",
    "event_time",
    "event_state",
    "event_type",
    "validity_duration",
    "entity_id",
    *_X_EVENT_KEYS,
)

_HELP_FMT = argparse.RawDescriptionHelpFormatter


class _UsageError(PurposeLimitError):
    """Exit status 2: a missing or unusable option, registry or key."""


# --------------------------------------------------------------------------- helpers


def _out() -> TextIO:
    return sys.stdout


def _err() -> TextIO:
    return sys.stderr


def _now() -> datetime:
    return datetime.now(UTC)


def _subject(text: str) -> str:
    """The subject argument; ``-`` reads it from the first line of stdin (kept out of ``ps``)."""
    if text == "-":
        text = sys.stdin.readline().rstrip("\r\n")
    if not text.strip():
        raise _UsageError("the data subject's id is empty")
    return text


def open_registry_url(url: str | None, *, must_exist: bool = False) -> Registry:
    """Open the registry named by *url*, else by ``$PURPOSELIMIT_REGISTRY``.

    There is no default file: a withdrawal recorded in a registry no process
    reads would silently not take effect, so the registry is always named.

    Args:
        url: ``sqlite:///registry.db``, ``memory://`` or a SQLAlchemy URL; ``None``
            reads :data:`REGISTRY_ENV`.
        must_exist: refuse an SQLite file that does not exist yet (commands
            that only read, so that a typo does not create an empty registry).

    Raises:
        ConfigurationError: no registry is named, or its URL is malformed;
            the SQLite file is missing while *must_exist*.
        StoreError: the registry cannot be opened.
    """
    url = url or os.environ.get(REGISTRY_ENV, "").strip() or None
    if url is None:
        raise ConfigurationError(
            f"name the registry: --registry sqlite:///registry.db (or any SQLAlchemy URL), "
            f"or set {REGISTRY_ENV}; there is no default file"
        )
    if must_exist and url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :].partition("?")[0]
        if not os.path.exists(path):
            raise ConfigurationError(f"--registry: there is no registry at {path}")
    return open_store(url)


@contextlib.contextmanager
def _open(args: argparse.Namespace, *, write: bool) -> Iterator[Registry]:
    """The registry of ``--registry``, closed afterwards; failing to open it is a usage error."""
    try:
        registry = open_registry_url(args.registry, must_exist=not write)
    except (ConfigurationError, StoreError) as exc:
        raise _UsageError(str(exc)) from None
    try:
        yield registry
    finally:
        registry.close()


def _actor(args: argparse.Namespace) -> str | None:
    actor: str | None = args.actor or os.environ.get(ACTOR_ENV, "").strip() or None
    if actor is None:
        _note(args, f"no --actor (nor {ACTOR_ENV}): recorded without one (flagged 'no-actor')")
    return actor


def _note(args: argparse.Namespace, message: str) -> None:
    _err().write(f"{PROG} {args.command_name}: {message}\n")


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """Write to *path* all at once (temporary file, then rename), or to stdout when ``None``."""
    if path is None:
        yield _out()
        return
    fd, tmp = temp_beside(path)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _iso(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat()


def _dpv(value: str) -> str:
    """A DPV term without its prefix: ``dpv:ConsentGiven``, the IRI or the bare name."""
    if value.startswith(_DPV_IRI):
        return value[len(_DPV_IRI) :]
    return value.removeprefix("dpv:")


# ------------------------------------------------------------------------ registry + inline events


class RegistryOverlay:
    """A read-only :class:`~purposelimit.Store`: a registry plus events given for one run.

    For ``decide --registry`` and ``filter --registry``: DESIGN §6 reads the
    consents, objections and authorisations of the registry *and* those given
    inline, which add to it for this run only and are never written to it.

    Args:
        base: the registry (any :class:`~purposelimit.Store`).
        consents, objections, authorisations: the inline events.

    ``version`` is the base's (the inline events are fixed at construction).
    """

    def __init__(
        self,
        base: Store,
        *,
        consents: Iterable[Consent] = (),
        objections: Iterable[Objection] = (),
        authorisations: Iterable[Authorisation] = (),
    ) -> None:
        self.base = base
        self._extra = InMemoryStore(consents, objections=objections, authorisations=authorisations)

    @property
    def version(self) -> int | None:
        """The base store's version."""
        return self.base.version

    def subject_events(self, subject: str) -> SubjectEvents:
        """The subject's events in the registry and inline, without duplicates."""
        extra = self._extra.subject_events(subject)
        found = self.base.subject_events(subject)
        return found if extra is EMPTY_EVENTS else found.merged(extra)

    def authorisations(self) -> tuple[Authorisation, ...]:
        """The registry's authorisations, then the inline ones not already there."""
        found = self.base.authorisations()
        seen = {a.id for a in found}
        return found + tuple(a for a in self._extra.authorisations() if a.id not in seen)

    def __repr__(self) -> str:
        return f"<RegistryOverlay of {self.base!r}>"


def registry_snapshot(
    registry: Registry, *, known_at: datetime | None = None
) -> tuple[list[Consent], list[Withdrawal], list[Objection], list[Authorisation]]:
    """Every event of *registry* as lists, for code that takes events rather than a store.

    For ``filter --registry``: the bulk filter takes consents, objections and
    authorisations as lists (and should take withdrawals too: a registry's
    withdrawals are events of their own). Objections come back with the
    withdrawals recorded for them applied (``withdrawn_at`` set).

    Args:
        registry: the registry to read (the whole log, in one pass).
        known_at: aware instant; only the events recorded at or before it.

    Returns:
        ``(consents, withdrawals, objections, authorisations)``, in log order.

    Raises:
        StoreError: the registry cannot be read.
    """
    from ._store import fold_events

    entries = [e.event for e in registry.history() if known_at is None or e.recorded_at <= known_at]
    authorisations = [e for e in entries if isinstance(e, Authorisation)]
    folded = fold_events(e for e in entries if not isinstance(e, Authorisation))
    return list(folded.consents), list(folded.withdrawals), list(folded.objections), authorisations


# --------------------------------------------------------------------------- ISO/IEC TS 27560


def _duration_text(delta: timedelta) -> str:
    """An exact ISO-8601 duration of a non-negative *delta*: ``P30D``, ``P1DT60S``, ``PT0.5S``."""
    days, seconds, micro = delta.days, delta.seconds, delta.microseconds
    time_part = ""
    if seconds or micro:
        fraction = f".{micro:06d}".rstrip("0") if micro else ""
        time_part = f"T{seconds}{fraction}S"
    if days or not time_part:
        return f"P{days}D{time_part}" if days else "PT0S"
    return f"P{time_part}"


_EXACT = re.compile(r"P(?:(\d+)D)?(?:T(\d+)(?:\.(\d{1,6}))?S)?\Z")


def _add_validity(start: datetime, text: str) -> datetime:
    """*start* + the ISO-8601 duration *text* (calendar years and months allowed).

    Raises:
        ValueError: not an ISO-8601 duration.
    """
    exact = _EXACT.match(text)
    if exact is not None and text not in ("P", "PT"):
        days, seconds, micro = exact.groups()
        return start + timedelta(
            days=int(days or 0),
            seconds=int(seconds or 0),
            microseconds=int((micro or "0").ljust(6, "0")),
        )
    try:
        duration = parse_duration(text)
    except ValueError:
        raise ValueError("not an ISO-8601 duration (such as P1Y or P365D)") from None
    return add_duration(start, duration).astimezone(start.tzinfo)


def _purposes(ids: Sequence[str]) -> list[dict[str, str]]:
    return [{"purpose": p, "lawful_basis": "dpv:Consent"} for p in ids]


def _recorded(entry: RecordedEvent) -> dict[str, str]:
    out = {"x-recorded-at": entry.recorded_at.isoformat()}
    if entry.actor is not None:
        out["x-recorded-by"] = entry.actor
    return out


def _consent_record(entry: RecordedEvent, consent: Consent, now: datetime) -> dict[str, Any]:
    evidence = consent.evidence
    mechanism = None if evidence is None else evidence.mechanism
    record: dict[str, Any] = {
        "schema_version": SCHEMA_27560,
        "record_id": consent.id,
        "pii_principal_id": consent.subject,
        "purposes": _purposes(consent.purposes),
    }
    if evidence is not None and evidence.notice_version is not None:
        record["privacy_notice"] = evidence.notice_version
    if evidence is not None and evidence.source is not None:
        record["collection_method"] = evidence.source
    if consent.state is ConsentAnswer.GIVEN:
        status = _GIVEN if mechanism is None or mechanism.is_valid else _INVALIDATED
    else:
        status = _REFUSED if consent.state is ConsentAnswer.REFUSED else _UNKNOWN
    first: dict[str, Any] = {
        "event_time": consent.given_at.isoformat(),
        "event_state": "dpv:" + status,
    }
    if consent.state is ConsentAnswer.GIVEN and mechanism is not None:
        first["event_type"] = _CONSENT_TYPE[mechanism]
    if consent.expires_at is not None:
        if consent.expires_at >= consent.given_at:
            first["validity_duration"] = _duration_text(consent.expires_at - consent.given_at)
        else:
            first["x-expires-at"] = consent.expires_at.isoformat()
    if consent.state is not ConsentAnswer.NOT_ASKED:
        first["entity_id"] = consent.subject
    if evidence is not None:
        for key, value in (
            ("x-mechanism", None if mechanism is None else mechanism.value),
            ("x-collection-point", evidence.collection_point),
            ("x-channel", evidence.channel),
        ):
            if value is not None:
                first[key] = value
    first.update(_recorded(entry))
    later: list[dict[str, Any]] = []
    if consent.withdrawn_at is not None:
        later.append(
            {
                "event_time": consent.withdrawn_at.isoformat(),
                "event_state": "dpv:" + _WITHDRAWN,
                "entity_id": consent.subject,
            }
        )
    expires = consent.expires_at
    if consent.state is ConsentAnswer.GIVEN and expires is not None and expires <= now:
        later.append({"event_time": expires.isoformat(), "event_state": "dpv:" + _EXPIRED})
    later.sort(key=lambda e: datetime.fromisoformat(e["event_time"]))
    record["events"] = [first, *later]
    return record


def _withdrawal_record(entry: RecordedEvent, withdrawal: Withdrawal) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_time": withdrawal.at.isoformat(),
        "event_state": "dpv:" + _WITHDRAWN,
        "entity_id": withdrawal.subject,
    }
    if withdrawal.channel is not None:
        event["x-channel"] = withdrawal.channel
    event.update(_recorded(entry))
    return {
        "schema_version": SCHEMA_27560,
        "record_id": withdrawal.id,
        "pii_principal_id": withdrawal.subject,
        "purposes": _purposes(withdrawal.purposes),
        "events": [event],
    }


def consents_to_27560(
    entries: Iterable[RecordedEvent], *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The consent records of a registry's log, shaped after ISO/IEC TS 27560 (JSON).

    One record per :class:`~purposelimit.Consent` (its answer as the first
    event; its own withdrawal, and its expiry once past *now*, as later
    events) and one per :class:`~purposelimit.Withdrawal` (a single
    ``dpv:ConsentWithdrawn`` event); other events are skipped. Fields and
    statuses are documented in docs/consent-and-audit.md.

    Args:
        entries: the log, as :meth:`~purposelimit.Registry.history` yields it.
        now: aware instant deciding whether an expiry is an event already
            (default: now).

    Returns:
        JSON-compatible dicts, in log order.
    """
    now = _now() if now is None else now
    out: list[dict[str, Any]] = []
    for entry in entries:
        event = entry.event
        if isinstance(event, Consent):
            out.append(_consent_record(entry, event, now))
        elif isinstance(event, Withdrawal):
            out.append(_withdrawal_record(entry, event))
    return out


class _Bad(Exception):
    """A 27560 record that cannot be imported: the message names the field, never its value."""


def _field(obj: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise _Bad(f"{path}{key}: missing (it is required)")
        return None
    if not isinstance(value, str):
        raise _Bad(f"{path}{key}: expected a string, not {type(value).__name__}")
    return value


def _time(obj: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> datetime | None:
    text = _field(obj, key, path, required=required)
    if text is None:
        return None
    try:
        return parse_instant(text, f"{path}{key}")
    except ProtocolError as exc:
        raise _Bad(str(exc)) from None


def _check_keys(obj: Mapping[str, Any], allowed: Sequence[str], path: str, what: str) -> None:
    for key in obj:
        if not isinstance(key, str):
            raise _Bad(f"{path}: a key is not a string")
        if key not in allowed and not key.startswith("x-"):
            raise _Bad(f"{path}{unknown_key_message(key, allowed, what)}")
        if key.startswith("x-") and what == "event field" and key not in _X_EVENT_KEYS:
            raise _Bad(f"{path}{unknown_key_message(key, _X_EVENT_KEYS, 'extension field')}")


def _status(event: Mapping[str, Any], path: str) -> str:
    text = _field(event, "event_state", path)
    assert text is not None  # required
    status = _dpv(text)
    if status not in _STATUSES:
        raise _Bad(
            f"{path}event_state: expected one of {', '.join('dpv:' + s for s in _STATUSES)} "
            "(other DPV statuses, such as ConsentRequested or ConsentRevoked, have no "
            "purposelimit equivalent)"
        )
    return status


def _mechanism(event: Mapping[str, Any], path: str) -> Mechanism | None:
    text = _field(event, "x-mechanism", path, required=False)
    if text is not None:
        try:
            return Mechanism(text)
        except ValueError:
            raise _Bad(
                f"{path}x-mechanism: expected one of {', '.join(m.value for m in Mechanism)}"
            ) from None
    kind = _field(event, "event_type", path, required=False)
    if kind is not None and _dpv(kind) == "ImpliedConsent":
        return Mechanism.IMPLIED
    return None


def consents_from_27560(record: object, path: str = "") -> Consent | Withdrawal:
    """Build the registry event of one consent record shaped after ISO/IEC TS 27560.

    The inverse of :func:`consents_to_27560`, also reading records written by
    other tools from the same fields: a record whose first event is
    ``dpv:ConsentGiven``, ``dpv:ConsentInvalidated``, ``dpv:ConsentRefused`` or
    ``dpv:ConsentUnknown`` is a :class:`~purposelimit.Consent` (given, given with
    an invalid mechanism, refused, not asked), whose later events may be
    ``dpv:ConsentWithdrawn`` and ``dpv:ConsentExpired``; a record holding one
    ``dpv:ConsentWithdrawn`` event is a :class:`~purposelimit.Withdrawal`.
    Statuses are accepted with the ``dpv:`` prefix, as the full IRI or bare.

    Args:
        record: the parsed JSON object.
        path: where it is, for messages (``consents.json:12: ``).

    Raises:
        ValueError: the record cannot be imported; the message names the field,
            never its value.
    """
    try:
        return _from_27560(record, path)
    except _Bad as exc:
        raise ValueError(str(exc)) from None


def _from_27560(record: object, path: str) -> Consent | Withdrawal:
    if not isinstance(record, dict):
        raise _Bad(f"{path}a consent record must be a JSON object")
    _check_keys(record, (*_RECORD_KEYS, *_RECORD_OPTIONAL, *_RECORD_IGNORED), path, "field")
    record_id = _field(record, "record_id", path)
    subject = _field(record, "pii_principal_id", path)
    assert record_id is not None  # required
    assert subject is not None  # required
    items = record.get("purposes")
    if not isinstance(items, list) or not items:
        raise _Bad(f'{path}purposes: expected a non-empty list of {{"purpose": id}} objects')
    purposes: list[str] = []
    for index, item in enumerate(items):
        value = item.get("purpose") if isinstance(item, dict) else item
        if not isinstance(value, str) or not value:
            raise _Bad(f'{path}purposes[{index}]: expected {{"purpose": a purpose id}}')
        purposes.append(value)
    events = record.get("events")
    if not isinstance(events, list) or not events:
        raise _Bad(f"{path}events: expected a non-empty list of consent events")
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise _Bad(f"{path}events[{index}]: expected a JSON object")
        _check_keys(event, (*_EVENT_KEYS, *_X_EVENT_KEYS), f"{path}events[{index}].", "event field")
    first, where = events[0], f"{path}events[0]."
    status = _status(first, where)
    given_at = _time(first, "event_time", where)
    assert given_at is not None  # required
    if status == _WITHDRAWN:
        if len(events) > 1:
            raise _Bad(f"{path}events: a withdrawal record holds one dpv:ConsentWithdrawn event")
        withdrawal: Withdrawal = _build(
            Withdrawal,
            subject=subject,
            purposes=purposes,
            at=given_at,
            channel=_field(first, "x-channel", where, required=False),
            id=record_id,
            path=path,
        )
        return withdrawal
    if status in (_EXPIRED,):
        raise _Bad(f"{where}event_state: a record starts with the person's answer, not an expiry")
    mechanism = _mechanism(first, where)
    if status == _INVALIDATED and (mechanism is None or mechanism.is_valid):
        raise _Bad(
            f"{where}x-mechanism: a dpv:ConsentInvalidated grant must say why: one of "
            f"{', '.join(_INVALID_MECHANISMS)}"
        )
    answer = {_REFUSED: ConsentAnswer.REFUSED, _UNKNOWN: ConsentAnswer.NOT_ASKED}.get(
        status, ConsentAnswer.GIVEN
    )
    expires_at = _time(first, "x-expires-at", where, required=False)
    validity = _field(first, "validity_duration", where, required=False)
    if validity is not None:
        try:
            expires_at = _add_validity(given_at, validity)
        except ValueError as exc:
            raise _Bad(f"{where}validity_duration: {exc}") from None
    withdrawn_at: datetime | None = None
    for index, event in enumerate(events[1:], start=1):
        here = f"{path}events[{index}]."
        later = _status(event, here)
        at = _time(event, "event_time", here)
        assert at is not None  # required
        if later == _WITHDRAWN:
            withdrawn_at = at if withdrawn_at is None else min(withdrawn_at, at)
        elif later == _EXPIRED:
            if expires_at is None:
                expires_at = at
            elif expires_at != at:
                raise _Bad(f"{here}event_time: the expiry disagrees with validity_duration")
        else:
            raise _Bad(
                f"{here}event_state: after the answer, a record holds only "
                "dpv:ConsentWithdrawn and dpv:ConsentExpired events"
            )
    proof = {
        "mechanism": mechanism,
        "collection_point": _field(first, "x-collection-point", where, required=False),
        "notice_version": _field(record, "privacy_notice", path, required=False),
        "source": _field(record, "collection_method", path, required=False),
        "channel": _field(first, "x-channel", where, required=False),
    }
    evidence = Evidence(**proof) if any(v is not None for v in proof.values()) else None
    consent: Consent = _build(
        Consent,
        subject=subject,
        purposes=purposes,
        given_at=given_at,
        state=answer,
        withdrawn_at=withdrawn_at,
        expires_at=expires_at,
        evidence=evidence,
        id=record_id,
        path=path,
    )
    return consent


def _build(cls: Any, path: str, **fields: Any) -> Any:
    try:
        return cls(**fields)
    except ValueError as exc:
        raise _Bad(f"{path}{exc}") from None


def _csv_27560(handle: IO[str], records: Sequence[Mapping[str, Any]]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(CSV_27560_COLUMNS)
    for record in records:
        for event in record["events"]:
            row = {**{k: v for k, v in record.items() if k != "events"}, **event}
            row["purposes"] = "|".join(p["purpose"] for p in record["purposes"])
            writer.writerow([row.get(column, "") for column in CSV_27560_COLUMNS])


_CSV_RECORD_COLUMNS = ("pii_principal_id", "purposes", "privacy_notice", "collection_method")


def _records_from_csv(name: str, text: str) -> list[tuple[int, dict[str, Any]]]:
    """The 27560 records of CSV *text* (one row per event), grouped by ``record_id``."""
    from ._protocol import _csv_table

    header, rows = _csv_table(name, text)
    for column in header:
        if column not in CSV_27560_COLUMNS and not column.startswith("x-"):
            raise InputError(name, unknown_key_message(column, CSV_27560_COLUMNS, "column"), line=1)
    for column in ("record_id", "pii_principal_id", "purposes", "event_time", "event_state"):
        if column not in header:
            raise InputError(name, f"the header has no {column!r} column (it is required)", line=1)
    records: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, row in rows:
        record_id = row.get("record_id", "")
        if not record_id:
            raise InputError(name, "empty (this column is required)", line=line, column="record_id")
        found = records.get(record_id)
        if found is None:
            record: dict[str, Any] = {"record_id": record_id, "events": []}
            for column in _CSV_RECORD_COLUMNS:
                if column in row:
                    record[column] = row[column]
            if "purposes" in record:
                parts = record["purposes"].replace(";", "|").split("|")
                record["purposes"] = [{"purpose": p.strip()} for p in parts if p.strip()]
            found = records[record_id] = (line, record)
        else:
            for column in _CSV_RECORD_COLUMNS:
                if column in row and column != "purposes" and found[1].get(column) != row[column]:
                    raise InputError(
                        name,
                        "differs from the record's first row (same record_id)",
                        line=line,
                        column=column,
                    )
        event = {
            k: v
            for k, v in row.items()
            if k not in ("record_id", *_CSV_RECORD_COLUMNS) and k in CSV_27560_COLUMNS
        }
        found[1]["events"].append(event)
    return list(records.values())


def _is_27560(name: str, text: str) -> bool:
    head = text.lstrip()[:65536]
    return "pii_principal_id" in head and "record_id" in head


def _load_27560(name: str, text: str) -> list[Consent | Withdrawal]:
    from ._protocol import _json_items, _kind

    items: list[tuple[int, object]]
    if _kind(name, text) == "csv":
        items = list(_records_from_csv(name, text))
    else:
        items = [(line, item) for line, item in _json_items(name, text)]
    found: list[Consent | Withdrawal] = []
    for line, item in items:
        try:
            found.append(_from_27560(item, ""))
        except _Bad as exc:
            raise InputError(name, str(exc), line=line) from None
    return found


# --------------------------------------------------------------------------- running commands


def _runner(work: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn *work* into a subcommand function: one-line errors on stderr, the exit status."""

    def run(args: argparse.Namespace) -> int:
        prefix = f"{PROG} {getattr(args, 'command_name', 'registry')}"
        try:
            return work(args)
        except (_UsageError, ConfigurationError) as exc:
            _err().write(f"{prefix}: error: {exc}\n")
            return 2
        except (PurposeLimitError, ValueError) as exc:  # input, refused events, stores, chains
            _err().write(f"{prefix}: error: {exc}\n")
            return 1
        except KeyboardInterrupt:
            _err().write(f"\n{prefix}: interrupted\n")
            return 130
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            _err().write(f"{prefix}: error: {where}{exc.strerror or type(exc).__name__}\n")
            return 1

    run.__name__ = work.__name__
    run.__doc__ = work.__doc__
    return run


def _evidence(args: argparse.Namespace) -> Evidence | None:
    proof = {
        "mechanism": args.mechanism,
        "collection_point": args.collection_point,
        "notice_version": args.notice_version,
        "source": args.source,
        "channel": args.channel,
    }
    return Evidence(**proof) if any(v is not None for v in proof.values()) else None


def _cmd_consent_grant(args: argparse.Namespace) -> int:
    subject = _subject(args.subject)
    fields: dict[str, Any] = {
        "subject": subject,
        "purposes": args.purpose,
        "given_at": args.at or _now(),
        "state": args.state,
        "expires_at": args.expires_at,
        "evidence": _evidence(args),
    }
    if args.id is not None:
        fields["id"] = args.id
    consent = Consent(**fields)
    with _open(args, write=True) as registry:
        new = registry.record(consent, actor=_actor(args))
    what = f"{consent.state.value} consent {consent.id}"
    if new:
        _out().write(
            f"recorded {what}: {len(consent.purposes)} purpose(s), given at "
            f"{consent.given_at.isoformat()}\n"
        )
    else:
        _out().write(f"already recorded: {what} (nothing changed)\n")
    return 0


def _cmd_consent_withdraw(args: argparse.Namespace) -> int:
    subject = _subject(args.subject)
    withdrawal = Withdrawal(
        subject=subject, purposes=args.purpose, at=args.at or _now(), channel=args.channel
    )
    with _open(args, write=True) as registry:
        new = registry.record(withdrawal, actor=_actor(args))
    if new:
        _out().write(
            f"recorded withdrawal {withdrawal.id}: {len(withdrawal.purposes)} purpose(s), "
            f"effective {withdrawal.at.isoformat()}\n"
        )
    else:
        _out().write(f"already recorded: withdrawal {withdrawal.id} (nothing changed)\n")
    return 0


def _event_line(entry: RecordedEvent) -> str:
    event = entry.event
    details: list[str] = []
    if isinstance(event, Consent):
        details.append(event.state.value)
        details.append("purposes=" + ",".join(event.purposes))
        details.append(f"given_at={event.given_at.isoformat()}")
        if event.expires_at is not None:
            details.append(f"expires_at={event.expires_at.isoformat()}")
        if event.withdrawn_at is not None:
            details.append(f"withdrawn_at={event.withdrawn_at.isoformat()}")
        if event.evidence is not None and event.evidence.mechanism is not None:
            details.append(f"mechanism={event.evidence.mechanism.value}")
    elif isinstance(event, Withdrawal):
        details.append("purposes=" + ",".join(event.purposes))
        details.append(f"at={event.at.isoformat()}")
    elif isinstance(event, Objection):
        details.append(f"at={event.at.isoformat()}")
    elif not isinstance(event, Authorisation):
        details.append(f"objection={event.objection} at={event.at.isoformat()}")
    if getattr(event, "channel", None):
        details.append(f"channel={event.channel}")  # type: ignore[union-attr]  # checked by getattr
    flags = f" flags={','.join(entry.flags)}" if entry.flags else ""
    return (
        f"  {entry.seq:>6}  {entry.recorded_at.isoformat()}  {entry.kind:<20}  {event.id}\n"
        f"          {' '.join(details)}  recorded by {entry.actor or '(no actor)'}{flags}\n"
    )


def _cmd_consent_show(args: argparse.Namespace) -> int:
    subject = _subject(args.subject)
    at = args.at or _now()
    with _open(args, write=False) as registry:
        entries = [
            e
            for e in registry.history(subject)
            if args.known_at is None or e.recorded_at <= args.known_at
        ]
        purposes = list(args.purpose or ())
        if not purposes:
            for entry in entries:
                if isinstance(entry.event, Consent | Withdrawal):
                    purposes.extend(p for p in entry.event.purposes if p not in purposes)
        states = [
            (p, *registry.consent_state_at(subject, p, at, known_at=args.known_at))
            for p in sorted(purposes)
        ]
    consent_entries = [e for e in entries if isinstance(e.event, Consent | Withdrawal)]
    if args.format == "json":
        document = {
            "at": at.isoformat(),
            "known_at": None if args.known_at is None else args.known_at.isoformat(),
            "events": [_entry_json(e) for e in consent_entries],
            "states": [
                {
                    "purpose": p,
                    "state": state.value,
                    "dpv": DPV_CONSENT_STATUS[state],
                    "decided_by": None if decided is None else decided.id,
                }
                for p, state, decided in states
            ],
        }
        _out().write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return 0
    out = _out()
    out.write(f"{len(consent_entries)} consent event(s) recorded for this data subject\n")
    for entry in consent_entries:
        out.write(_event_line(entry))
    known = "" if args.known_at is None else f", as recorded by {args.known_at.isoformat()}"
    out.write(f"consent state at {at.isoformat()}{known}:\n")
    if not states:
        out.write("  (no purpose: name one with --purpose)\n")
    width = max((len(p) for p, _, _ in states), default=0)
    for purpose, state, decided in states:
        by = "" if decided is None else f"  (record {decided.id})"
        out.write(f"  {purpose.ljust(width)}  {state.value:<9}  {DPV_CONSENT_STATUS[state]}{by}\n")
    return 0


def _entry_json(entry: RecordedEvent) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "recorded_at": entry.recorded_at.isoformat(),
        "actor": entry.actor,
        "flags": list(entry.flags),
        "event": event_to_dict(entry.event),
    }


def _cmd_consent_import(args: argparse.Namespace) -> int:
    from ._protocol import _read_file, load_consents

    name, text = _read_file(args.file)
    fmt = args.format
    if fmt == "auto":
        fmt = "27560" if _is_27560(name, text) else "design"
    events: list[Event] = (
        list(_load_27560(name, text)) if fmt == "27560" else list(load_consents(args.file))
    )
    with _open(args, write=True) as registry:
        recorded = registry.record_many(events, actor=_actor(args))
    kinds = Counter("withdrawal" if isinstance(e, Withdrawal) else "consent" for e in events)
    read = ", ".join(f"{n} {k}(s)" for k, n in sorted(kinds.items())) or "nothing"
    _out().write(
        f"{name}: read {read} ({'ISO/IEC TS 27560' if fmt == '27560' else 'DESIGN section 6'} "
        f"format); recorded {recorded}, {len(events) - recorded} already recorded\n"
    )
    return 0


def _cmd_consent_export(args: argparse.Namespace) -> int:
    fmt = args.format or ("csv" if (args.out or "").lower().endswith(".csv") else "json")
    subject = None if args.subject is None else _subject(args.subject)
    with _open(args, write=False) as registry:
        records = consents_to_27560(registry.history(subject), now=args.at or _now())
    with _output(args.out) as handle:
        if fmt == "csv":
            _csv_27560(handle, records)
        else:
            handle.write(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    if args.out is not None:
        _note(args, f"{len(records)} consent record(s) -> {args.out}")
    return 0


def _cmd_objection_add(args: argparse.Namespace) -> int:
    subject = _subject(args.subject)
    fields: dict[str, Any] = {"subject": subject, "at": args.at or _now()}
    if args.id is not None:
        fields["id"] = args.id
    objection = Objection(**fields)
    with _open(args, write=True) as registry:
        new = registry.record(objection, actor=_actor(args))
    if new:
        _out().write(f"recorded objection {objection.id}: made {objection.at.isoformat()}\n")
    else:
        _out().write(f"already recorded: objection {objection.id} (nothing changed)\n")
    return 0


def _cmd_objection_withdraw(args: argparse.Namespace) -> int:
    at = args.at or _now()
    with _open(args, write=True) as registry:
        try:
            objection = registry.withdraw_objection(
                args.objection, at, channel=args.channel, actor=_actor(args)
            )
        except KeyError:
            raise InputError("--objection", "no objection with this id is recorded") from None
    _out().write(
        f"recorded the withdrawal of objection {objection.id}: effective "
        f"{_iso(objection.withdrawn_at)}\n"
    )
    return 0


def _cmd_objection_show(args: argparse.Namespace) -> int:
    subject = _subject(args.subject)
    at = args.at or _now()
    with _open(args, write=False) as registry:
        objections = registry.subject_events(subject, known_at=args.known_at).objections
    rows = [(o, o.at <= at and (o.withdrawn_at is None or o.withdrawn_at > at)) for o in objections]
    if args.format == "json":
        document = {
            "at": at.isoformat(),
            "objecting": any(standing for _, standing in rows),
            "objections": [
                {
                    "id": o.id,
                    "at": o.at.isoformat(),
                    "withdrawn_at": None if o.withdrawn_at is None else o.withdrawn_at.isoformat(),
                    "scope": o.scope,
                    "standing": standing,
                }
                for o, standing in rows
            ],
        }
        _out().write(json.dumps(document, indent=2) + "\n")
        return 0
    out = _out()
    standing_any = any(standing for _, standing in rows)
    out.write(
        f"{len(rows)} objection(s) recorded for this data subject; at {at.isoformat()} "
        f"direct marketing is {'BLOCKED (objection standing)' if standing_any else 'not blocked'}"
        "\n"
    )
    for objection, standing in rows:
        out.write(
            f"  {objection.id}  made {objection.at.isoformat()}  withdrawn "
            f"{_iso(objection.withdrawn_at)}  {'standing' if standing else 'not standing'}\n"
        )
    return 0


# --------------------------------------------------------------------------- audit commands


def _audit_source(args: argparse.Namespace) -> SQLAuditTable | None:
    """The audit table of ``--registry`` (opened for reading), or ``None`` when FILE is given."""
    if (args.file is None) == (args.registry is None):
        raise _UsageError("name an audit file, or --registry URL for its audit table (one of them)")
    if args.file is not None:
        return None
    try:
        return open_audit_table(args.registry, None)
    except AuditError as exc:
        raise _UsageError(str(exc)) from None


def _chained_events(args: argparse.Namespace) -> tuple[str, Iterator[ChainedEvent], Any]:
    table = _audit_source(args)
    if table is None:
        if not os.path.exists(args.file):
            raise _UsageError(f"{args.file}: no such file")
        return args.file, read_audit_file(args.file), contextlib.nullcontext()
    return table.name, table.events(), table


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    try:
        key = audit_key_from_env(args.key_env)
    except ConfigurationError as exc:
        raise _UsageError(f"--key-env: {exc}") from None
    table = _audit_source(args)
    result: VerificationResult
    if table is None:
        if not os.path.exists(args.file):
            raise _UsageError(f"{args.file}: no such file")
        result = verify_audit_file(args.file, key)
    else:
        with table:
            result = verify_audit_table(table, key)
    if args.format == "json":
        problem = result.problem
        document = {
            "source": result.source,
            "ok": result.ok,
            "entries": result.entries,
            "last_seq": result.last_seq,
            "head_seq": result.head_seq,
            "unconfirmed": result.unconfirmed,
            "problem": None
            if problem is None
            else {
                "kind": problem.kind,
                "line": problem.line,
                "seq": problem.seq,
                "message": problem.message,
            },
            "warnings": list(result.warnings),
        }
        _out().write(json.dumps(document, indent=2) + "\n")
    else:
        _out().write(f"{result}\n")
    return 0 if result.ok else 1


def _event_text(chained: ChainedEvent) -> str:
    e = chained.event
    verdict = "allowed" if e.allowed else ("MONITORED" if e.monitored else "DENIED")
    return (
        f"{chained.seq:>8}  {e.time.isoformat()}  {verdict:<9}  {e.reason.value:<19}  "
        f"{e.record_type}.{e.field} ({e.category})  purpose={e.purpose or '-'}  "
        f"collected_for={e.collected_for or '-'}  actor={e.actor or '-'}  "
        f"subject={e.subject_ref}\n"
    )


def _cmd_audit_tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise _UsageError("--lines: give 0 or more")
    _, events, closing = _chained_events(args)
    with closing:
        last: deque[ChainedEvent] = deque(events, maxlen=args.lines)
    out = _out()
    for chained in last:
        if args.format == "json":
            out.write(
                json.dumps({"seq": chained.seq, **chained.event.to_dict(), "mac": chained.mac})
                + "\n"
            )
        else:
            out.write(_event_text(chained))
    return 0


def _cmd_audit_stats(args: argparse.Namespace) -> int:
    name, events, closing = _chained_events(args)
    total = allowed = denied = monitored = 0
    reasons: Counter[str] = Counter()
    purposes: Counter[str] = Counter()
    actors: Counter[str] = Counter()
    subjects: set[str] = set()
    first: datetime | None = None
    last: datetime | None = None
    with closing:
        for chained in events:
            e = chained.event
            if args.since is not None and e.time < args.since:
                continue
            if args.until is not None and e.time >= args.until:
                continue
            total += 1
            if e.allowed:
                allowed += 1
            elif e.monitored:
                monitored += 1
            else:
                denied += 1
            reasons[e.reason.value] += 1
            purposes[e.purpose or "(none)"] += 1
            actors[e.actor or "(none)"] += 1
            if not e.subject_ref.startswith("run:"):  # `filter --audit`'s run entries
                subjects.add(e.subject_ref)
            first = e.time if first is None or e.time < first else first
            last = e.time if last is None or e.time > last else last
    if args.format == "json":
        document = {
            "source": name,
            "events": total,
            "allowed": allowed,
            "denied": denied,
            "monitored": monitored,
            "subjects": len(subjects),
            "first": None if first is None else first.isoformat(),
            "last": None if last is None else last.isoformat(),
            "by_reason": dict(reasons.most_common()),
            "by_purpose": dict(purposes.most_common()),
            "by_actor": dict(actors.most_common()),
        }
        _out().write(json.dumps(document, indent=2) + "\n")
        return 0
    out = _out()
    span = "" if first is None else f" from {first.isoformat()} to {_iso(last)}"
    out.write(f"{name}: {total:,} events{span}\n")
    out.write(
        f"  allowed {allowed:,}, denied {denied:,}, monitored (would-be denials) {monitored:,}; "
        f"{len(subjects):,} distinct subject reference{'' if len(subjects) == 1 else 's'}\n"
    )
    for title, counter in (("reason", reasons), ("purpose", purposes), ("actor", actors)):
        if counter:
            listed = ", ".join(f"{k} {n:,}" for k, n in counter.most_common())
            out.write(f"  by {title}: {listed}\n")
    return 0


# --------------------------------------------------------------------------- the parsers

_CONSENT_EPILOG = """\
examples:
  purposelimit consent grant lead-42 --purpose newsletter.product \\
      --mechanism double-opt-in --collection-point https://example.com/form \\
      --registry sqlite:///registry.db --actor back-office
  purposelimit consent show lead-42 --registry sqlite:///registry.db

The registry is named with --registry URL or PURPOSELIMIT_REGISTRY (no default).
"""

_EPILOGS: Final[Mapping[str, str]] = {
    "consent grant": """\
example:
  purposelimit consent grant lead-42 --purpose newsletter.product --purpose newsletter.events \\
      --at 2025-03-01T10:00:00+00:00 --mechanism double-opt-in --notice-version 2025-02 \\
      --registry sqlite:///registry.db --actor web-form

Records the person's answer (given by default; --state refused or not-asked).
A SUBJECT of - is read from stdin, out of the process list and shell history.
exit status: 0 recorded (or already recorded), 1 refused, 2 usage error.
""",
    "consent withdraw": """\
example:
  purposelimit consent withdraw lead-42 --purpose newsletter.events \\
      --channel unsubscribe-link --registry sqlite:///registry.db --actor mailer

Takes effect at --at (default now), for the future only (GDPR art. 7(3)).
""",
    "consent show": """\
example:
  purposelimit consent show lead-42 --purpose newsletter.product \\
      --at 2025-06-15 --known-at 2025-06-15 --registry sqlite:///registry.db

Lists the subject's consent events and the consent state of each purpose at
--at (default now), with its W3C DPV status; --known-at ignores what was
recorded later ("what did we hold, with what we knew then?").
""",
    "consent import": """\
examples:
  purposelimit consent import consents-27560.json --registry sqlite:///registry.db --actor import
  purposelimit consent import consents.csv --registry sqlite:///registry.db --actor import

Reads ISO/IEC TS 27560-shaped records (JSON or CSV, as `consent export` writes
them) or the consent files of `filter --consents` (DESIGN section 6); the
format is detected unless --format says. All records are recorded in one
transaction, or none. Records already recorded are skipped.
""",
    "consent export": """\
example:
  purposelimit consent export --registry sqlite:///registry.db --out consents.json
  purposelimit consent export --registry sqlite:///registry.db --format csv --out consents.csv

Writes consent records shaped after ISO/IEC TS 27560 (statuses from W3C DPV):
one per consent and one per withdrawal; the CSV has one row per event.
""",
    "objection add": """\
example:
  purposelimit objection add lead-42 --at 2026-01-05 \\
      --registry sqlite:///registry.db --actor call-centre

An objection to direct marketing (GDPR art. 21(2)-(3)) blocks every purpose
flagged direct_marketing while it stands.
""",
    "objection withdraw": """\
example:
  purposelimit objection withdraw objection-3f2a... --channel phone \\
      --registry sqlite:///registry.db --actor call-centre
""",
    "objection show": """\
example:
  purposelimit objection show lead-42 --registry sqlite:///registry.db
""",
    "audit verify": """\
examples:
  PURPOSELIMIT_AUDIT_KEY=... purposelimit audit verify audit.jsonl
  purposelimit audit verify --registry sqlite:///registry.db --key-env AUDIT_KEY

Checks every entry's MAC, the chain and the head; names the first edited,
removed, reordered or missing entry. Entries after the head (a crash during
the last batch) are reported as unconfirmed, not as a failure.
exit status: 0 the chain verifies, 1 it does not, 2 usage error (no key, no file).
""",
    "audit tail": """\
example:
  purposelimit audit tail audit.jsonl -n 20
  purposelimit audit tail --registry sqlite:///registry.db --format json

Shows the last entries (MACs not checked: use `audit verify`).
""",
    "audit stats": """\
example:
  purposelimit audit stats audit.jsonl --since 2026-03-01 --until 2026-04-01

Counts entries by outcome, reason, purpose and actor (MACs not checked).
""",
}


def _registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        metavar="URL",
        help=f"sqlite:///registry.db or a SQLAlchemy URL (default: ${REGISTRY_ENV}; required)",
    )


def _actor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actor", metavar="NAME", help=f"who records it (default: ${ACTOR_ENV})")


def _format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")


def _leaf(
    group: Any,
    name: str,
    full: str,
    work: Callable[[argparse.Namespace], int],
    help_: str,
    description: str,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=help_,
        description=description,
        epilog=_EPILOGS[full],
        formatter_class=_HELP_FMT,
    )
    func = _runner(work)
    parser.set_defaults(func=func, handler=func, command_name=full)
    return parser


def _group_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(args: argparse.Namespace) -> int:
        del args
        parser.print_help(_err())
        return 2

    return show


def add_commands(subparsers: Any) -> None:
    """Add the ``consent``, ``objection`` and ``audit`` command groups to *subparsers*.

    Args:
        subparsers: what ``parser.add_subparsers()`` returned for the
            ``purposelimit`` parser.

    Each subcommand's namespace gets ``func`` and ``handler`` (the same
    function ``(args) -> int``, returning the exit status and printing its own
    errors) and ``command_name`` (``"consent grant"``). A group named alone
    (``purposelimit consent``) prints its help on stderr and returns 2.
    """
    # ------------------------------------------------------------------ consent
    consent = subparsers.add_parser(
        "consent",
        help="record, show, import and export consents",
        description="Consents in the registry: the person's answers about purposes "
        "(GDPR art. 4(11), 7).",
        epilog=_CONSENT_EPILOG,
        formatter_class=_HELP_FMT,
    )
    show_consent = _group_help(consent)
    consent.set_defaults(func=show_consent, handler=show_consent, command_name="consent")
    group = consent.add_subparsers(dest="consent_command", metavar="COMMAND")

    p = _leaf(
        group,
        "grant",
        "consent grant",
        _cmd_consent_grant,
        "record a consent (given, refused or not asked)",
        "Record a data subject's answer about one or more purposes, with its evidence "
        "(GDPR art. 7(1)).",
    )
    p.add_argument("subject", metavar="SUBJECT", help="the data subject's id (- reads stdin)")
    p.add_argument(
        "--purpose", metavar="ID", action="append", required=True, help="a purpose (repeatable)"
    )
    p.add_argument(
        "--at", metavar="DATETIME", type=instant_argument, help="when it was given (now)"
    )
    p.add_argument(
        "--state", choices=("given", "refused", "not-asked"), default="given", help="the answer"
    )
    p.add_argument(
        "--expires-at", metavar="DATETIME", type=instant_argument, help="when the grant lapses"
    )
    p.add_argument("--mechanism", choices=[m.value for m in Mechanism], help="how it was given")
    p.add_argument("--collection-point", metavar="TEXT", help="form id, URL, recording id")
    p.add_argument("--notice-version", metavar="TEXT", help="version of the notice shown")
    p.add_argument("--source", metavar="TEXT", help="who collected it")
    p.add_argument("--channel", metavar="TEXT", help="web, phone, paper...")
    p.add_argument("--id", metavar="ID", help="the record's id (default: derived from it)")
    _registry_option(p)
    _actor_option(p)

    p = _leaf(
        group,
        "withdraw",
        "consent withdraw",
        _cmd_consent_withdraw,
        "record a withdrawal of consent",
        "Record that a data subject withdrew consent for some purposes (GDPR art. 7(3)).",
    )
    p.add_argument("subject", metavar="SUBJECT", help="the data subject's id (- reads stdin)")
    p.add_argument(
        "--purpose", metavar="ID", action="append", required=True, help="a purpose (repeatable)"
    )
    p.add_argument(
        "--at", metavar="DATETIME", type=instant_argument, help="when it took effect (now)"
    )
    p.add_argument("--channel", metavar="TEXT", help="unsubscribe link, phone, letter...")
    _registry_option(p)
    _actor_option(p)

    p = _leaf(
        group,
        "show",
        "consent show",
        _cmd_consent_show,
        "show a subject's consents and consent states",
        "Show a data subject's consent events and the consent state of each purpose "
        "(DESIGN section 3).",
    )
    p.add_argument("subject", metavar="SUBJECT", help="the data subject's id (- reads stdin)")
    p.add_argument("--purpose", metavar="ID", action="append", help="purposes to show (repeatable)")
    p.add_argument("--at", metavar="DATETIME", type=instant_argument, help="the instant (now)")
    p.add_argument(
        "--known-at", metavar="DATETIME", type=instant_argument, help="ignore events recorded later"
    )
    _format_option(p)
    _registry_option(p)

    p = _leaf(
        group,
        "import",
        "consent import",
        _cmd_consent_import,
        "import consents (ISO/IEC TS 27560 JSON or CSV, or DESIGN section 6 files)",
        "Import consent records into the registry, all in one transaction.",
    )
    p.add_argument("file", metavar="FILE", help="a .json, .jsonl or .csv file")
    p.add_argument(
        "--format", choices=("auto", "27560", "design"), default="auto", help="default: detected"
    )
    _registry_option(p)
    _actor_option(p)

    p = _leaf(
        group,
        "export",
        "consent export",
        _cmd_consent_export,
        "export consents (ISO/IEC TS 27560 JSON or CSV)",
        "Export the registry's consents and withdrawals as records shaped after "
        "ISO/IEC TS 27560, with W3C DPV statuses.",
    )
    p.add_argument("--subject", metavar="SUBJECT", help="only this data subject (- reads stdin)")
    p.add_argument(
        "--format", choices=("json", "csv"), help="default: json, or csv for a .csv --out"
    )
    p.add_argument("--out", metavar="FILE", help="write here (atomically) instead of stdout")
    p.add_argument(
        "--at",
        metavar="DATETIME",
        type=instant_argument,
        help="expiries up to this instant are written as events (now)",
    )
    _registry_option(p)

    # ------------------------------------------------------------------ objection
    objection = subparsers.add_parser(
        "objection",
        help="record and show objections to direct marketing",
        description="Objections to direct marketing (GDPR art. 21(2)-(3)) in the registry.",
        epilog="example:\n  purposelimit objection add lead-42 --registry sqlite:///registry.db"
        " --actor call-centre\n",
        formatter_class=_HELP_FMT,
    )
    show_objection = _group_help(objection)
    objection.set_defaults(func=show_objection, handler=show_objection, command_name="objection")
    group = objection.add_subparsers(dest="objection_command", metavar="COMMAND")

    p = _leaf(
        group,
        "add",
        "objection add",
        _cmd_objection_add,
        "record an objection",
        "Record a data subject's objection to direct marketing (GDPR art. 21).",
    )
    p.add_argument("subject", metavar="SUBJECT", help="the data subject's id (- reads stdin)")
    p.add_argument("--at", metavar="DATETIME", type=instant_argument, help="when it was made (now)")
    p.add_argument("--id", metavar="ID", help="the record's id (default: derived from it)")
    _registry_option(p)
    _actor_option(p)

    p = _leaf(
        group,
        "withdraw",
        "objection withdraw",
        _cmd_objection_withdraw,
        "record that an objection was withdrawn",
        "Record that the person withdrew an objection (appended; the objection is not changed).",
    )
    p.add_argument("objection", metavar="OBJECTION_ID", help="the objection's id")
    p.add_argument(
        "--at", metavar="DATETIME", type=instant_argument, help="when it took effect (now)"
    )
    p.add_argument("--channel", metavar="TEXT", help="phone, letter...")
    _registry_option(p)
    _actor_option(p)

    p = _leaf(
        group,
        "show",
        "objection show",
        _cmd_objection_show,
        "show a subject's objections",
        "Show a data subject's objections and whether one stands.",
    )
    p.add_argument("subject", metavar="SUBJECT", help="the data subject's id (- reads stdin)")
    p.add_argument("--at", metavar="DATETIME", type=instant_argument, help="the instant (now)")
    p.add_argument(
        "--known-at", metavar="DATETIME", type=instant_argument, help="ignore events recorded later"
    )
    _format_option(p)
    _registry_option(p)

    # ------------------------------------------------------------------ audit
    audit = subparsers.add_parser(
        "audit",
        help="verify and read the hash-chained audit trail",
        description="The audit trail of guarded reads, as written by JsonLinesAuditSink "
        "or the registry database's audit table.",
        epilog="example:\n  PURPOSELIMIT_AUDIT_KEY=... purposelimit audit verify audit.jsonl\n",
        formatter_class=_HELP_FMT,
    )
    show_audit = _group_help(audit)
    audit.set_defaults(func=show_audit, handler=show_audit, command_name="audit")
    group = audit.add_subparsers(dest="audit_command", metavar="COMMAND")

    def source(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", metavar="FILE", nargs="?", help="a JSON Lines audit file")
        parser.add_argument(
            "--registry", metavar="URL", help="read the audit table of this database instead"
        )

    p = _leaf(
        group,
        "verify",
        "audit verify",
        _cmd_audit_verify,
        "verify the hash chain and name the first broken entry",
        "Verify an audit trail's keyed hash chain and its head.",
    )
    source(p)
    p.add_argument(
        "--key-env",
        metavar="VAR",
        default=AUDIT_KEY_ENV,
        help=f"the environment variable holding the key (default {AUDIT_KEY_ENV})",
    )
    _format_option(p)

    p = _leaf(
        group,
        "tail",
        "audit tail",
        _cmd_audit_tail,
        "show the last entries",
        "Show the last entries of an audit trail.",
    )
    source(p)
    p.add_argument("-n", "--lines", metavar="N", type=int, default=10, help="how many (10)")
    _format_option(p)

    p = _leaf(
        group,
        "stats",
        "audit stats",
        _cmd_audit_stats,
        "count entries by outcome, reason, purpose and actor",
        "Count an audit trail's entries.",
    )
    source(p)
    p.add_argument(
        "--since", metavar="DATETIME", type=instant_argument, help="from this instant (included)"
    )
    p.add_argument(
        "--until", metavar="DATETIME", type=instant_argument, help="to this instant (excluded)"
    )
    _format_option(p)
