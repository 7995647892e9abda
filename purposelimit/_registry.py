"""Durable registries: the event codec, the shared SQL logic, SQLite, and :func:`open_store`.

A registry is an append-only log of events (see :class:`~purposelimit.Registry`).
In SQL it is three tables (docs/consent-and-audit.md documents them):

* ``purposelimit_events`` — one row per event: ``seq`` (its place in the log),
  ``kind``, ``event_id``, ``subject``, ``at_us`` (the event's own instant:
  ``given_at``, ``at`` or ``valid_from``), ``recorded_us``, ``actor``,
  ``flags`` and ``body`` (the event as canonical JSON, instants as ISO-8601 text
  with their offset, so they round-trip exactly). Instants in columns are UTC
  microseconds since 1970 (integers: exact, indexable, portable).
* ``purposelimit_event_purposes`` — one row per (consent or withdrawal, purpose
  it names), keyed ``(subject, purpose, at_us, seq)``: the index of the
  consent lookup of a decision.
* ``purposelimit_meta`` — ``schema_version`` and ``version`` (the number of
  events recorded; every write transaction bumps it, so another process's
  commit is seen at the next read).

Rows are only ever inserted. This module never imports SQLAlchemy; the
SQLAlchemy store lives in ``_sqlalchemy_store`` and is imported only when a
non-SQLite URL is opened.
"""

from __future__ import annotations

import contextlib
import functools
import json
import json.scanner
import os
import re
import sqlite3
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs

from ._errors import ConfigurationError, StoreError
from ._model import Authorisation, Consent, ConsentAnswer, Evidence, Mechanism, Objection
from ._store import (
    EMPTY_EVENTS,
    Event,
    InMemoryStore,
    ObjectionWithdrawal,
    RecordedEvent,
    Registry,
    RegistryBase,
    Requirement,
    SubjectEvents,
    Withdrawal,
    event_kind,
    fold_events,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "event_from_dict", "event_to_dict", "open_store"]

#: The schema version this code writes; older databases are migrated when opened.
SCHEMA_VERSION = 2

_T = TypeVar("_T")

# --------------------------------------------------------------------------- instants

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_fromiso = datetime.fromisoformat
_MICROSECOND = timedelta(microseconds=1)


def to_us(instant: datetime) -> int:
    """Return the aware *instant* as integer UTC microseconds since 1970 (exact)."""
    return (instant - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    """Return the aware UTC datetime of *value* microseconds since 1970 (exact)."""
    return _EPOCH + timedelta(microseconds=value)


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat()


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = _fromiso(text)
    if value.tzinfo is None:
        raise ValueError("an instant in the registry has no offset")
    return value


def _required_instant(text: str) -> datetime:
    value = _instant(text)
    assert value is not None  # for the type checker: text is a str
    return value


# --------------------------------------------------------------------------- the codec


def event_to_dict(event: Event) -> dict[str, Any]:
    """Return the JSON shape of *event* (DESIGN §6 for consents, authorisations, objections).

    Instants are ISO-8601 text with their offset; absent optional fields are
    left out. The inverse of :func:`event_from_dict`.
    """
    data: dict[str, Any]
    if isinstance(event, Consent):
        data = {
            "id": event.id,
            "subject": event.subject,
            "purposes": list(event.purposes),
            "state": event.state.value,
            "given_at": event.given_at.isoformat(),
        }
        if event.withdrawn_at is not None:
            data["withdrawn_at"] = event.withdrawn_at.isoformat()
        if event.expires_at is not None:
            data["expires_at"] = event.expires_at.isoformat()
        if event.evidence is not None:
            evidence = event.evidence
            data["evidence"] = {
                key: value
                for key, value in (
                    ("mechanism", None if evidence.mechanism is None else evidence.mechanism.value),
                    ("collection_point", evidence.collection_point),
                    ("notice_version", evidence.notice_version),
                    ("source", evidence.source),
                    ("channel", evidence.channel),
                )
                if value is not None
            }
        return data
    if isinstance(event, Withdrawal):
        data = {
            "id": event.id,
            "subject": event.subject,
            "purposes": list(event.purposes),
            "at": event.at.isoformat(),
        }
        if event.channel is not None:
            data["channel"] = event.channel
        return data
    if isinstance(event, Objection):
        data = {
            "id": event.id,
            "subject": event.subject,
            "at": event.at.isoformat(),
            "scope": event.scope,
        }
        if event.withdrawn_at is not None:
            data["withdrawn_at"] = event.withdrawn_at.isoformat()
        return data
    if isinstance(event, ObjectionWithdrawal):
        data = {
            "id": event.id,
            "objection": event.objection,
            "subject": event.subject,
            "at": event.at.isoformat(),
        }
        if event.channel is not None:
            data["channel"] = event.channel
        return data
    if isinstance(event, Authorisation):
        data = {
            "id": event.id,
            "from": list(event.from_),
            "to": event.to,
            "reference": event.reference,
            "valid_from": event.valid_from.isoformat(),
        }
        if event.valid_until is not None:
            data["valid_until"] = event.valid_until.isoformat()
        if event.categories is not None:
            data["categories"] = list(event.categories)
        if event.subjects is not None:
            data["subjects"] = list(event.subjects)
        return data
    raise TypeError(f"cannot encode a {type(event).__name__}")


def event_from_dict(kind: str, data: Mapping[str, Any]) -> Event:
    """Build the event of *kind* (see :func:`~purposelimit.event_kind`) from its JSON shape.

    Raises:
        ValueError: *kind* is unknown, or *data* is not a valid event of that kind.
        KeyError: a required key is missing.
    """
    if kind == "consent":
        evidence = data.get("evidence")
        return Consent(
            subject=data["subject"],
            purposes=tuple(data["purposes"]),
            given_at=_required_instant(data["given_at"]),
            state=data.get("state", "given"),
            withdrawn_at=_instant(data.get("withdrawn_at")),
            expires_at=_instant(data.get("expires_at")),
            evidence=None if evidence is None else Evidence(**evidence),
            id=data["id"],
        )
    if kind == "withdrawal":
        return Withdrawal(
            subject=data["subject"],
            purposes=tuple(data["purposes"]),
            at=_required_instant(data["at"]),
            channel=data.get("channel"),
            id=data["id"],
        )
    if kind == "objection":
        return Objection(
            subject=data["subject"],
            at=_required_instant(data["at"]),
            withdrawn_at=_instant(data.get("withdrawn_at")),
            scope=data.get("scope", "direct-marketing"),
            id=data["id"],
        )
    if kind == "objection-withdrawal":
        return ObjectionWithdrawal(
            objection=data["objection"],
            subject=data["subject"],
            at=_required_instant(data["at"]),
            channel=data.get("channel"),
            id=data["id"],
        )
    if kind == "authorisation":
        categories = data.get("categories")
        subjects = data.get("subjects")
        return Authorisation(
            id=data["id"],
            from_=tuple(data["from"]),
            to=data["to"],
            reference=data["reference"],
            valid_from=_required_instant(data["valid_from"]),
            valid_until=_instant(data.get("valid_until")),
            categories=None if categories is None else tuple(categories),
            subjects=None if subjects is None else tuple(subjects),
        )
    raise ValueError(f"unknown event kind {kind!r}")


_new = object.__new__
_set = object.__setattr__
_MECHANISMS = {m.value: m for m in Mechanism}
_ANSWERS = {a.value: a for a in ConsentAnswer}
#: The fields :func:`_stored` sets, checked against the model classes by the tests.
STORED_FIELDS = {
    Consent: (
        "subject",
        "purposes",
        "given_at",
        "state",
        "withdrawn_at",
        "expires_at",
        "evidence",
        "id",
    ),
    Evidence: ("mechanism", "collection_point", "notice_version", "source", "channel"),
    Withdrawal: ("subject", "purposes", "at", "channel", "id"),
}


_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    cast(Any, json.JSONDecoder())  # the decoder carries the scanner's settings
)


def _parse(body: str) -> Any:
    """``json.loads`` for the compact bodies this registry writes, in half the time.

    Calls the decoder's C scanner directly (skipping the whitespace handling
    ``loads`` adds around it); anything but a single compact JSON value goes
    through ``json.loads``.
    """
    try:
        value, end = _scan(body, 0)
    except StopIteration:
        end = -1
    return value if end == len(body) else json.loads(body)


def _stored(kind: str, data: dict[str, Any]) -> Event:
    """Rebuild an event from a body this registry wrote.

    Consents and withdrawals, read at every decision, are assembled field by
    field without the checks that were made when they were recorded (about
    twice as fast; the round trip is tested against :func:`event_from_dict`);
    the other kinds go through it.
    """
    if kind == "consent":
        consent = _new(Consent)
        _set(consent, "subject", data["subject"])
        _set(consent, "purposes", tuple(data["purposes"]))
        _set(consent, "given_at", _instant(data["given_at"]))
        _set(consent, "state", _ANSWERS[data["state"]])
        _set(consent, "withdrawn_at", _instant(data.get("withdrawn_at")))
        _set(consent, "expires_at", _instant(data.get("expires_at")))
        proof = data.get("evidence")
        if proof is not None:
            evidence = _new(Evidence)
            mechanism = proof.get("mechanism")
            _set(evidence, "mechanism", None if mechanism is None else _MECHANISMS[mechanism])
            _set(evidence, "collection_point", proof.get("collection_point"))
            _set(evidence, "notice_version", proof.get("notice_version"))
            _set(evidence, "source", proof.get("source"))
            _set(evidence, "channel", proof.get("channel"))
            proof = evidence
        _set(consent, "evidence", proof)
        _set(consent, "id", data["id"])
        return consent
    if kind == "withdrawal":
        withdrawal = _new(Withdrawal)
        _set(withdrawal, "subject", data["subject"])
        _set(withdrawal, "purposes", tuple(data["purposes"]))
        _set(withdrawal, "at", _instant(data["at"]))
        _set(withdrawal, "channel", data.get("channel"))
        _set(withdrawal, "id", data["id"])
        return withdrawal
    return event_from_dict(kind, data)


def dumps(event: Event) -> str:
    """The canonical JSON text of *event*, as stored in the ``body`` column."""
    return json.dumps(event_to_dict(event), ensure_ascii=False, separators=(",", ":"))


def loads(kind: str, body: str) -> Event:
    """The event stored as *body* (see :func:`dumps`)."""
    return event_from_dict(kind, json.loads(body))


def _instant_of(event: Event) -> datetime:
    if isinstance(event, Consent):
        return event.given_at
    if isinstance(event, Authorisation):
        return event.valid_from
    return event.at


def event_row(
    event: Event, actor: str | None, flags: Sequence[str], recorded_us: int
) -> tuple[str, str, str | None, int, int, str | None, str, str]:
    """The columns of *event*: kind, event_id, subject, at_us, recorded_us, actor, flags, body."""
    subject = None if isinstance(event, Authorisation) else event.subject
    return (
        event_kind(event),
        event.id,
        subject,
        to_us(_instant_of(event)),
        recorded_us,
        actor,
        ",".join(flags),
        dumps(event),
    )


def purpose_rows(event: Event, seq: int) -> list[tuple[str, str, int, int]]:
    """The lookup rows of a consent or withdrawal, (subject, purpose, at_us, seq); else none."""
    if isinstance(event, Consent | Withdrawal):
        at_us = to_us(_instant_of(event))
        return [(event.subject, purpose, at_us, seq) for purpose in dict.fromkeys(event.purposes)]
    return []


def backfill_purpose_rows(rows: Iterable[tuple[int, str, str]]) -> list[tuple[str, str, int, int]]:
    """The lookup rows of already recorded events, given as (seq, kind, body) (migration 2)."""
    out: list[tuple[str, str, int, int]] = []
    for seq, kind, body in rows:
        if kind in ("consent", "withdrawal"):
            out.extend(purpose_rows(loads(kind, body), seq))
    return out


Row = tuple[int, str, str]
HistoryRow = tuple[int, str, str, int, str | None, str]

_DECODED_MAX = 65_536
_SUBJECTS_MAX = 16_384


# --------------------------------------------------------------------------- the shared SQL logic


class SQLRegistry(RegistryBase):
    """What the SQL stores share: decoding, the bounded cache, and the reading logic.

    Subclasses give the queries (``_select_*``), the transaction (``_write``)
    and ``close``. Rows are immutable once committed, so a decoded event is
    kept by its ``seq``; what may change (new events) is always asked of the
    database, except within the ``cache_seconds`` window.
    """

    def __init__(
        self,
        *,
        cache_seconds: float,
        require_evidence: Requirement,
        require_actor: Requirement,
        clock: Callable[[], datetime] | None,
    ) -> None:
        super().__init__(
            require_evidence=require_evidence, require_actor=require_actor, clock=clock
        )
        if not isinstance(cache_seconds, int | float) or not 0 <= cache_seconds <= 3600:
            raise ConfigurationError("cache_seconds must be a number of seconds from 0 to 3600")
        self.cache_seconds = float(cache_seconds)
        self._lock = threading.Lock()
        self._decoded: dict[int, Event] = {}
        self._subjects: dict[str, SubjectEvents] = {}
        self._known_version = -1
        self._checked_until = 0.0
        self._auth_seq = 0
        self._auth: tuple[Authorisation, ...] = ()
        self._auth_version = -1

    # ------------------------------------------------------------------ primitives

    @abstractmethod
    def _select_version(self) -> int: ...

    @abstractmethod
    def _select_subject(self, subject: str, known_us: int | None) -> list[Row]: ...

    @abstractmethod
    def _select_lineage(
        self, subject: str, lineage: tuple[str, ...], at_us: int, known_us: int | None
    ) -> list[Row]: ...

    @abstractmethod
    def _select_authorisations(
        self, after_seq: int, known_us: int | None
    ) -> list[tuple[int, str]]: ...

    @abstractmethod
    def _select_history(
        self, after_seq: int, subject: str | None, flagged: bool, limit: int
    ) -> list[HistoryRow]: ...

    @abstractmethod
    def _select_event(self, kind: str, id_: str) -> str | None: ...

    # ------------------------------------------------------------------ decoding

    def _event(self, seq: int, kind: str, body: str) -> Event:
        event = self._decoded.get(seq)
        if event is None:
            event = self._decode(kind, body)
            if len(self._decoded) >= _DECODED_MAX:
                self._decoded.clear()
            self._decoded[seq] = event
        return event

    def _decode(self, kind: str, body: str) -> Event:
        try:
            return _stored(kind, _parse(body))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problem = type(exc).__name__
        raise StoreError(f"registry {self!r}: a stored {kind} event cannot be read ({problem})")

    # ------------------------------------------------------------------ the version and the cache

    @property
    def version(self) -> int:
        """The number of events recorded, read from the database.

        With ``cache_seconds`` > 0 it is re-read at most once per window;
        otherwise at every access.
        """
        now = time.monotonic()
        if self.cache_seconds and now < self._checked_until:
            return self._known_version
        version = self._select_version()
        if version != self._known_version:
            self._subjects = {}
            self._known_version = version
        self._checked_until = now + self.cache_seconds
        return version

    def _wrote(self) -> None:
        """After a commit: the next read asks the database again."""
        self._checked_until = 0.0

    # ------------------------------------------------------------------ reading

    def subject_events(self, subject: str, *, known_at: datetime | None = None) -> SubjectEvents:
        """Return the events of *subject* (recorded at or before *known_at*, if given).

        Raises:
            StoreError: the database cannot be read.
        """
        if known_at is not None:
            return self._fold(self._select_subject(subject, to_us(known_at)))
        if not self.cache_seconds:
            return self._fold(self._select_subject(subject, None))
        version = self.version
        cached = self._subjects.get(subject)
        if cached is None:
            cached = self._fold(self._select_subject(subject, None))
            if self._known_version == version:
                if len(self._subjects) >= _SUBJECTS_MAX:
                    self._subjects = {}
                self._subjects[subject] = cached
        return cached

    def _fold(self, rows: list[Row]) -> SubjectEvents:
        if not rows:
            return EMPTY_EVENTS
        return fold_events([self._event(seq, kind, body) for seq, kind, body in rows])

    def _consent_events(
        self, subject: str, lineage: tuple[str, ...], at: datetime, known_at: datetime | None
    ) -> SubjectEvents:
        if self.cache_seconds and known_at is None:
            return self.subject_events(subject)
        rows = self._select_lineage(
            subject, lineage, to_us(at), None if known_at is None else to_us(known_at)
        )
        consents: dict[int, Consent] = {}
        withdrawals: dict[int, Withdrawal] = {}
        for seq, kind, body in rows:
            event = self._event(seq, kind, body)
            if isinstance(event, Consent):
                consents[seq] = event
            elif isinstance(event, Withdrawal):
                withdrawals[seq] = event
        return SubjectEvents(tuple(consents.values()), tuple(withdrawals.values()))

    def authorisations(self, *, known_at: datetime | None = None) -> tuple[Authorisation, ...]:
        """Return the authorisations (recorded at or before *known_at*, if given).

        Raises:
            StoreError: the database cannot be read.
        """
        if known_at is not None:
            rows = self._select_authorisations(0, to_us(known_at))
            return tuple(self._authorisation(seq, body) for seq, body in rows)
        with self._lock:
            version = self.version if self.cache_seconds else None
            if version is not None and version == self._auth_version:
                return self._auth
            rows = self._select_authorisations(self._auth_seq, None)
            if rows:
                self._auth = self._auth + tuple(
                    self._authorisation(seq, body) for seq, body in rows
                )
                self._auth_seq = rows[-1][0]
            if version is not None:
                self._auth_version = version
            return self._auth

    def _authorisation(self, seq: int, body: str) -> Authorisation:
        event = self._event(seq, "authorisation", body)
        assert isinstance(event, Authorisation)  # the query selects authorisations only
        return event

    def history(
        self, subject: str | None = None, *, flagged: bool = False
    ) -> Iterator[RecordedEvent]:
        """Yield the recorded events in log order: all, or *subject*'s, or only flagged ones.

        Read page by page (no transaction is held open between pages).

        Raises:
            StoreError: the database cannot be read.
        """
        after = 0
        while True:
            rows = self._select_history(after, subject, flagged, 1000)
            for seq, kind, body, recorded_us, actor, flags in rows:
                yield RecordedEvent(
                    seq=seq,
                    event=self._event(seq, kind, body),
                    recorded_at=from_us(recorded_us),
                    actor=actor,
                    flags=tuple(flags.split(",")) if flags else (),
                )
            if len(rows) < 1000:
                return
            after = rows[-1][0]

    def _find(self, kind: str, id_: str) -> Event | None:
        body = self._select_event(kind, id_)
        return None if body is None else self._decode(kind, body)


# --------------------------------------------------------------------------- SQLite

_T_EVENTS = "purposelimit_events"
_T_PURPOSES = "purposelimit_event_purposes"
_T_META = "purposelimit_meta"

_SQL_VERSION = f"SELECT value FROM {_T_META} WHERE key = 'version'"
_SQL_BUMP = f"UPDATE {_T_META} SET value = value + ? WHERE key = 'version'"
_SQL_FIND = f"SELECT body FROM {_T_EVENTS} WHERE kind = ? AND event_id = ?"
_SQL_INSERT = (
    f"INSERT INTO {_T_EVENTS} (kind, event_id, subject, at_us, recorded_us, actor, flags, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_PURPOSE = (
    f"INSERT INTO {_T_PURPOSES} (subject, purpose, at_us, seq) VALUES (?, ?, ?, ?)"
)
_SQL_SUBJECT = f"SELECT seq, kind, body FROM {_T_EVENTS} WHERE subject = ? ORDER BY seq"
_SQL_SUBJECT_KNOWN = (
    f"SELECT seq, kind, body FROM {_T_EVENTS} WHERE subject = ? AND recorded_us <= ? ORDER BY seq"
)
_SQL_AUTH = (
    f"SELECT seq, body FROM {_T_EVENTS} WHERE kind = 'authorisation' AND seq > ? "
    "AND recorded_us <= ? ORDER BY seq"
)
_NO_LIMIT_US = 2**62


@functools.lru_cache(maxsize=64)
def lineage_sql(count: int, known: bool) -> str:
    """The consent lookup of a decision: the events of a subject naming one of *count*
    purposes (a purpose and its ancestors), dated at or before an instant.
    """
    marks = ", ".join("?" * count)
    return (
        f"SELECT e.seq, e.kind, e.body FROM {_T_PURPOSES} AS p "
        f"JOIN {_T_EVENTS} AS e ON e.seq = p.seq "
        f"WHERE p.subject = ? AND p.purpose IN ({marks}) AND p.at_us <= ?"
        + (" AND e.recorded_us <= ?" if known else "")
    )


def _sqlite_v1(conn: sqlite3.Connection) -> None:
    conn.execute(f"CREATE TABLE {_T_META} (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute(f"INSERT INTO {_T_META} (key, value) VALUES ('schema_version', 0), ('version', 0)")
    conn.execute(
        f"CREATE TABLE {_T_EVENTS} ("
        "seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "kind TEXT NOT NULL, "
        "event_id TEXT NOT NULL, "
        "subject TEXT, "
        "at_us INTEGER NOT NULL, "
        "recorded_us INTEGER NOT NULL, "
        "actor TEXT, "
        "flags TEXT NOT NULL DEFAULT '', "
        "body TEXT NOT NULL, "
        "UNIQUE (kind, event_id))"
    )
    conn.execute(f"CREATE INDEX {_T_EVENTS}_subject ON {_T_EVENTS} (subject, seq)")


def _sqlite_v2(conn: sqlite3.Connection) -> None:
    conn.execute(
        f"CREATE TABLE {_T_PURPOSES} ("
        "subject TEXT NOT NULL, purpose TEXT NOT NULL, at_us INTEGER NOT NULL, "
        f"seq INTEGER NOT NULL REFERENCES {_T_EVENTS} (seq), "
        "PRIMARY KEY (subject, purpose, at_us, seq)) WITHOUT ROWID"
    )
    rows = conn.execute(
        f"SELECT seq, kind, body FROM {_T_EVENTS} WHERE kind IN ('consent', 'withdrawal')"
    ).fetchall()
    conn.executemany(_SQL_INSERT_PURPOSE, backfill_purpose_rows(rows))


#: The SQLite schema's history: migration N brings a database from version N-1 to N.
SQLITE_MIGRATIONS: tuple[tuple[str, Callable[[sqlite3.Connection], None]], ...] = (
    ("the event log and the meta table", _sqlite_v1),
    ("the purpose lookup table of consents and withdrawals, filled from the log", _sqlite_v2),
)


def sqlite_schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of the registry in *conn*'s database (0: none yet)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_T_META,)
    ).fetchall()
    if not exists:
        return 0
    rows = conn.execute(f"SELECT value FROM {_T_META} WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def migrate_sqlite(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the registry in *conn* (autocommit mode) to schema *target*, in one transaction.

    Returns:
        The schema version found before migrating.

    Raises:
        StoreError: the database's schema is newer than this code knows.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = sqlite_schema_version(conn)
        if found > SCHEMA_VERSION:
            raise StoreError(_newer_schema(found))
        for number in range(found + 1, target + 1):
            SQLITE_MIGRATIONS[number - 1][1](conn)
            conn.execute(f"UPDATE {_T_META} SET value = ? WHERE key = 'schema_version'", (number,))
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return found


def _newer_schema(found: int) -> str:
    return (
        f"the registry's schema is version {found}, newer than this purposelimit knows "
        f"({SCHEMA_VERSION}): upgrade purposelimit"
    )


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        # SQLite may have rolled the transaction back itself (disk full): nothing left to undo.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


_PRAGMA_NAME = re.compile(r"[a-z_]+\Z")
_PRAGMA_VALUE = re.compile(r"-?\d+\Z|[A-Za-z_]+\Z")


def _sqlite_reason(exc: sqlite3.Error, timeout: float) -> str:
    """What went wrong, from SQLite's error code; SQLite's messages never hold row values."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code.startswith("SQLITE_READONLY") or "readonly" in str(exc):
        return (
            "the database is read-only (opened with mode=ro or read_only=True, "
            "PRAGMA query_only, or a read-only file or medium)"
        )
    if code.startswith("SQLITE_FULL") or "full" in str(exc):
        return "the disk, or the database's size limit (PRAGMA max_page_count), is full"
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"the database stayed locked by another connection for more than {timeout:g} s"
    if code.startswith("SQLITE_CANTOPEN"):
        return "the database file cannot be opened"
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return "the file is not a readable SQLite database"
    return f"{code or type(exc).__name__}: {exc}"


class SQLiteStore(SQLRegistry):
    """A :class:`~purposelimit.Registry` in an SQLite file: the embedded default.

    Standard-library :mod:`sqlite3`, WAL mode, safe for several threads and
    processes on one machine (not on a network file system). Each write is one
    transaction (``BEGIN IMMEDIATE``), durable when it returns
    (``synchronous=FULL``). Reads always see what any process has committed,
    unless ``cache_seconds`` allows a short window. The schema is created on
    first use and migrated when an older one is found.

    Args:
        path: the database file (created if missing, with its directory's write access).
        read_only: open with SQLite's ``mode=ro``: every write raises
            :class:`~purposelimit.StoreError`.
        timeout: seconds a write waits for another process's write to finish.
        cache_seconds: how long this store may answer reads from memory without
            asking the database whether anything changed (0, the default:
            never). A withdrawal committed by another process is seen at most
            this long after its commit.
        pragmas: extra ``PRAGMA name = value`` settings for each connection
            (``{"cache_size": -64000}``); applied after the store's own.
        require_evidence, require_actor, clock: see
            :class:`~purposelimit.InMemoryStore`.

    Raises:
        ConfigurationError: ``":memory:"`` as path (use ``open_store("memory://")``),
            or a bad option.
        StoreError: the file cannot be opened as a registry (not SQLite, newer
            schema, read-only without a registry in it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        timeout: float = 30.0,
        cache_seconds: float = 0.0,
        pragmas: Mapping[str, str | int] | None = None,
        require_evidence: Requirement = "flag",
        require_actor: Requirement = "flag",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(
            cache_seconds=cache_seconds,
            require_evidence=require_evidence,
            require_actor=require_actor,
            clock=clock,
        )
        if os.fspath(path) in ("", ":memory:"):
            raise ConfigurationError(
                "SQLiteStore needs a file; for a registry in memory use open_store('memory://')"
            )
        self.path = Path(path).absolute()
        self.read_only = read_only
        self.timeout = float(timeout)
        self._pragmas: list[tuple[str, str | int]] = []
        for name, value in (pragmas or {}).items():
            if not _PRAGMA_NAME.match(name) or not _PRAGMA_VALUE.match(str(value)):
                raise ConfigurationError(
                    f"pragmas: {name!r} = {value!r} is not a simple PRAGMA setting"
                )
            self._pragmas.append((name, value))
        self._local = threading.local()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._closed = False
        try:
            self._run("open the database", self._open)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}{' read-only' if self.read_only else ''}>"

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        uri = self.path.as_uri() + ("?mode=ro" if self.read_only else "?mode=rwc")
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=128,
        )
        try:
            conn.execute("PRAGMA synchronous = FULL")
            for name, value in self._pragmas:
                conn.execute(f"PRAGMA {name} = {value}")
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._connections.append((os.getpid(), conn))
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            if self._closed:
                raise StoreError(f"registry {self!r} is closed")
            conn = self._connect()
            local.conn = conn
            local.pid = os.getpid()
        return conn

    def _open(self) -> None:
        conn = self._conn()
        if self.read_only:
            found = sqlite_schema_version(conn)
            if found != SCHEMA_VERSION:
                raise StoreError(
                    _newer_schema(found)
                    if found > SCHEMA_VERSION
                    else f"registry {self!r} has schema version {found}, not {SCHEMA_VERSION}: "
                    "open it once writable to create or migrate it"
                )
            return
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        if sqlite_schema_version(conn) != SCHEMA_VERSION:
            migrate_sqlite(conn)

    def close(self) -> None:
        """Close this process's connections; the store cannot be used afterwards."""
        with self._lock:
            self._closed = True
            pid = os.getpid()
            for owner, conn in self._connections:
                if owner == pid:
                    conn.close()
            self._connections = []
        self._local = threading.local()

    def _run(self, what: str, work: Callable[[], _T], *, write: bool = False) -> _T:
        """Run *work*, turning an SQLite error into a :class:`StoreError` without its cause.

        The cause is dropped on purpose: driver errors may quote statements or values.
        """
        try:
            return work()
        except sqlite3.Error as exc:
            reason = _sqlite_reason(exc, self.timeout)
        suffix = "; nothing was recorded" if write else ""
        raise StoreError(f"registry {self!r}: cannot {what}: {reason}{suffix}")

    # ------------------------------------------------------------------ queries

    def _rows(self, sql: str, params: Sequence[object]) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            reason = _sqlite_reason(exc, self.timeout)
        raise StoreError(f"registry {self!r}: cannot read: {reason}")

    def _select_version(self) -> int:
        rows = self._rows(_SQL_VERSION, ())
        return int(rows[0][0])

    def _select_subject(self, subject: str, known_us: int | None) -> list[Row]:
        if known_us is None:
            return self._rows(_SQL_SUBJECT, (subject,))
        return self._rows(_SQL_SUBJECT_KNOWN, (subject, known_us))

    def _select_lineage(
        self, subject: str, lineage: tuple[str, ...], at_us: int, known_us: int | None
    ) -> list[Row]:
        sql = lineage_sql(len(lineage), known_us is not None)
        params: tuple[object, ...] = (subject, *lineage, at_us)
        return self._rows(sql, params if known_us is None else (*params, known_us))

    def _select_authorisations(self, after_seq: int, known_us: int | None) -> list[tuple[int, str]]:
        return self._rows(_SQL_AUTH, (after_seq, _NO_LIMIT_US if known_us is None else known_us))

    def _select_history(
        self, after_seq: int, subject: str | None, flagged: bool, limit: int
    ) -> list[HistoryRow]:
        where = ["seq > ?"]
        params: list[object] = [after_seq]
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        if flagged:
            where.append("flags <> ''")
        sql = (
            f"SELECT seq, kind, body, recorded_us, actor, flags FROM {_T_EVENTS} "
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT {int(limit)}"
        )
        return self._rows(sql, params)

    def _select_event(self, kind: str, id_: str) -> str | None:
        rows = self._rows(_SQL_FIND, (kind, id_))
        return str(rows[0][0]) if rows else None

    # ------------------------------------------------------------------ writing

    def _write(self, events: tuple[Event, ...], actor: str | None, recorded_at: datetime) -> int:
        recorded_us = to_us(recorded_at)

        def work() -> int:
            conn = self._conn()

            def find(kind: str, id_: str) -> Event | None:
                rows = conn.execute(_SQL_FIND, (kind, id_)).fetchall()
                return self._decode(kind, rows[0][0]) if rows else None

            conn.execute("BEGIN IMMEDIATE")
            try:
                count = 0
                for event in events:
                    flags = self._admit(event, actor, find)
                    if flags is None:
                        continue
                    seq = conn.execute(
                        _SQL_INSERT, event_row(event, actor, flags, recorded_us)
                    ).lastrowid
                    assert seq is not None  # an INSERT into a rowid table
                    conn.executemany(_SQL_INSERT_PURPOSE, purpose_rows(event, seq))
                    count += 1
                if count:
                    conn.execute(_SQL_BUMP, (count,))
                    conn.execute("COMMIT")
                else:
                    conn.execute("ROLLBACK")
                return count
            except BaseException:
                _rollback(conn)
                raise

        count = self._run("record events", work, write=True)
        if count:
            self._wrote()
        return count


# --------------------------------------------------------------------------- open_store


def open_store(
    url: str,
    *,
    cache_seconds: float = 0.0,
    require_evidence: Requirement = "flag",
    require_actor: Requirement = "flag",
    clock: Callable[[], datetime] | None = None,
) -> Registry:
    """Open the registry at *url*, creating or migrating its schema on first use.

    * ``memory://`` — an :class:`~purposelimit.InMemoryStore` (nothing kept;
      ``cache_seconds`` does not apply: it is never stale).
    * ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` — a
      :class:`SQLiteStore`; ``?mode=ro`` opens it read-only.
    * anything else — a ``SQLAlchemyStore`` (SQLAlchemy 2 must be installed:
      ``pip install 'purposelimit[postgresql]'``), e.g.
      ``postgresql+psycopg://user@host/db``.

    Args:
        url: where the registry is.
        cache_seconds: see :class:`SQLiteStore`; 0 by default.
        require_evidence, require_actor, clock: see :class:`~purposelimit.InMemoryStore`.

    Returns:
        The open registry; close it with ``close()`` or a ``with`` block.

    Raises:
        ConfigurationError: a malformed URL, an unknown option, or SQLAlchemy missing.
        StoreError: the database cannot be opened.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            "a registry URL looks like memory://, sqlite:///registry.db or "
            "postgresql+psycopg://user@host/db"
        )
    scheme, _, rest = url.partition("://")
    if scheme == "memory":
        if rest:
            raise ConfigurationError("memory:// takes no path or option")
        return InMemoryStore(
            require_evidence=require_evidence, require_actor=require_actor, clock=clock
        )
    if scheme == "sqlite":
        path, _, query = rest.partition("?")
        if not path.startswith("/") or len(path) < 2:
            raise ConfigurationError(
                "an SQLite registry URL names a file: sqlite:///path/to/registry.db"
            )
        options = parse_qs(query, keep_blank_values=True)
        mode = options.pop("mode", [""])
        if options or mode[-1] not in ("", "ro", "rw", "rwc"):
            raise ConfigurationError(
                "an SQLite registry URL takes one option: ?mode=ro (read-only)"
            )
        return SQLiteStore(
            path[1:],
            read_only=mode[-1] == "ro",
            cache_seconds=cache_seconds,
            require_evidence=require_evidence,
            require_actor=require_actor,
            clock=clock,
        )
    try:
        from ._sqlalchemy_store import SQLAlchemyStore
    except ImportError:
        raise ConfigurationError(
            f"a {scheme}:// registry needs SQLAlchemy 2: pip install 'purposelimit[sql]' "
            "(and a driver, such as 'purposelimit[postgresql]')"
        ) from None
    return SQLAlchemyStore(
        url,
        cache_seconds=cache_seconds,
        require_evidence=require_evidence,
        require_actor=require_actor,
        clock=clock,
    )
