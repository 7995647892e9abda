"""Tamper-evident audit sinks: a keyed hash chain in JSON Lines or in an SQL table.

Every audit event becomes one entry of a chain::

    {"seq": 7, "time": "...", "actor": "...", ..., "prev": "<mac of entry 6>", "mac": "<hex>"}

``mac`` is HMAC-SHA256(key, canonical JSON of the entry without ``mac``) —
canonical JSON being :func:`canonical_json`: keys sorted, no spaces, ASCII
escapes. Because each entry's MAC covers the previous entry's MAC (``prev``;
64 zeros for the first), editing, removing, reordering or inserting an entry
breaks the chain from that point on, and nobody without the key can forge a
replacement. A **head** — the last sequence number and MAC, itself MACed — is
kept apart from the entries (a ``<file>.head`` file, or a one-row table) so
that removing entries at the end (truncation) is detected too.

Subjects can be named by keyed pseudonyms with a destroyable key per person
(:class:`SQLiteSubjectKeys`): the chain MACs the pseudonym, never the subject's
id, so destroying the person's key (GDPR art. 17, erasure) leaves the chain
verifiable while nobody can tell any more which entries were about that person.

Legal source: GDPR art. 5(2) (accountability), 5(1)(f) and 32(1)(b)
(integrity), 17 (erasure); CNIL délibération 2021-131 (access traceability).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import attrs

from ._audit import AuditEvent, pseudonym
from ._errors import AuditError, ConfigurationError, PurposeLimitError, StoreError
from ._model import Reason

if TYPE_CHECKING:
    from ._registry import SQLiteStore

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover  # not POSIX: no advisory locks, one writer only
    _fcntl = None  # type: ignore[assignment]  # checked before every use

__all__ = [
    "AUDIT_KEY_ENV",
    "CHAIN_FIELDS",
    "GENESIS",
    "AuditFileError",
    "ChainProblem",
    "ChainedEvent",
    "InMemorySubjectKeys",
    "JsonLinesAuditSink",
    "SQLiteAuditSink",
    "SQLiteSubjectKeys",
    "SubjectKeyStore",
    "VerificationResult",
    "audit_key_from_env",
    "canonical_json",
    "entry_mac",
    "open_audit_table",
    "read_audit_file",
    "verify_audit_file",
    "verify_audit_table",
]

#: The environment variable the command line reads the audit key from by default.
AUDIT_KEY_ENV: Final = "PURPOSELIMIT_AUDIT_KEY"

#: ``prev`` of the first entry of a chain: 64 zeros.
GENESIS: Final = "0" * 64

#: The fields of an audit event, in the order an entry carries them.
EVENT_FIELDS: Final = (
    "time",
    "actor",
    "purpose",
    "collected_for",
    "record_type",
    "subject_ref",
    "field",
    "category",
    "allowed",
    "reason",
    "rule",
    "mode",
    "monitored",
    "register_version",
    "register_hash",
)

#: Every field of a chain entry, in the order of the audit table's columns.
CHAIN_FIELDS: Final = ("seq", *EVENT_FIELDS, "prev", "mac")

_HEAD_FORMAT: Final = "purposelimit-audit-head/1"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TAIL_BLOCK = 65_536
_MIN_KEY = 16

#: Failures of audit sinks and key stores are reported here (never with a value).
_log = logging.getLogger("purposelimit")


# --------------------------------------------------------------------------- keys and MACs


def _check_key(key: object, what: str) -> bytes:
    if not isinstance(key, bytes) or len(key) < _MIN_KEY:
        raise ConfigurationError(f"{what}: give a secret key of at least {_MIN_KEY} bytes")
    return key


def audit_key_from_env(variable: str = AUDIT_KEY_ENV) -> bytes:
    """Return the audit key held by the environment variable *variable*, as UTF-8 bytes.

    The command line reads the key this way (``--key-env``); an application
    writing the chain should read it the same way so both use the same bytes.

    Args:
        variable: the variable's name (``PURPOSELIMIT_AUDIT_KEY`` by default).

    Returns:
        The key: the variable's value encoded in UTF-8 (at least 16 bytes).

    Raises:
        ConfigurationError: the variable is unset, empty or shorter than 16 bytes.
    """
    value = os.environ.get(variable, "")
    if not value:
        raise ConfigurationError(
            f"the environment variable {variable} is not set: put the audit key in it "
            f"(at least {_MIN_KEY} bytes)"
        )
    key = value.encode("utf-8")
    if len(key) < _MIN_KEY:
        raise ConfigurationError(f"{variable} must hold at least {_MIN_KEY} bytes")
    return key


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """The canonical JSON of *value* that MACs are computed over.

    Keys sorted, no whitespace (``","`` and ``":"`` separators), non-ASCII
    characters as ``\\uXXXX`` escapes, no NaN; the result as ASCII bytes.
    """
    return json.dumps(
        value, ensure_ascii=True, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode("ascii")


def entry_mac(key: bytes, entry: Mapping[str, Any]) -> str:
    """Return the MAC of a chain *entry*: HMAC-SHA256(key, canonical JSON without ``mac``), hex.

    Args:
        key: the chain's secret key.
        entry: the entry; a ``mac`` key in it is left out of the computation.

    Returns:
        64 lower-case hexadecimal digits.
    """
    body = {k: v for k, v in entry.items() if k != "mac"}
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, seq: int, mac: str) -> str:
    body = {"format": _HEAD_FORMAT, "seq": seq, "mac": mac}
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- per-person keys


@runtime_checkable
class SubjectKeyStore(Protocol):
    """Where the per-person pseudonym keys live: one random key per data subject.

    A chained sink given such a store names each subject by
    ``pseudonym(subject, key_of_that_subject)``; destroying the key
    (:meth:`erase_subject`) makes the person's entries unattributable while the
    chain still verifies (GDPR art. 17).
    """

    def keys_for(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """Return the key of each of *subjects*, creating the missing ones."""
        ...

    def pseudonym_of(self, subject: str) -> str | None:
        """Return the pseudonym *subject* has now, or ``None`` when it has no key."""
        ...

    def erase_subject(self, subject: str) -> bool:
        """Destroy *subject*'s key; return whether there was one."""
        ...


class InMemorySubjectKeys:
    """A :class:`SubjectKeyStore` in memory (tests, one-process tools): keys die with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}

    def keys_for(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """Return the key of each of *subjects* (32 random bytes, created when missing)."""
        with self._lock:
            return {s: self._keys.setdefault(s, secrets.token_bytes(32)) for s in subjects}

    def pseudonym_of(self, subject: str) -> str | None:
        """The pseudonym *subject* has now, or ``None`` when it has no key."""
        key = self._keys.get(subject)
        return None if key is None else pseudonym(subject, key)

    def erase_subject(self, subject: str) -> bool:
        """Forget *subject*'s key; return whether there was one."""
        with self._lock:
            return self._keys.pop(subject, None) is not None

    def __repr__(self) -> str:
        return f"<InMemorySubjectKeys subjects={len(self._keys)}>"


_T_KEYS = "purposelimit_subject_keys"
_KEY_CHUNK = 500


class SQLiteSubjectKeys:
    """A :class:`SubjectKeyStore` in an SQLite file: one random 32-byte key per data subject.

    The table ``purposelimit_subject_keys (subject, key, created_us)`` holds the
    subjects' ids: it is personal data, to be protected like the registry. Keep
    it apart from the audit trail (another file, other backups): the audit
    trail is only unattributable while this store is the sole place that can
    link a pseudonym to a person.

    :meth:`erase_subject` deletes the row with SQLite's ``secure_delete`` on
    (the freed bytes are overwritten with zeros) and truncates the write-ahead
    log, so the key no longer appears in the database files. Copies elsewhere —
    backups, file-system snapshots, free disk blocks — are beyond the library's
    reach: handle them in your retention policy.

    Safe for several threads and processes on one machine (WAL mode).

    Args:
        path: the database file (created if missing); may be the registry's file.
        timeout: seconds a write waits for another process's write.

    Raises:
        StoreError: the file cannot be opened as an SQLite database.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path).absolute()
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._conn_pid = -1
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._run("open the key store", self._create)

    def __repr__(self) -> str:
        return f"<SQLiteSubjectKeys {str(self.path)!r}>"

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"key store {self!r} is closed")
        if self._conn is None or self._conn_pid != os.getpid():
            conn = sqlite3.connect(
                self.path.as_uri() + "?mode=rwc",
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("PRAGMA synchronous = FULL")
            self._conn, self._conn_pid = conn, os.getpid()
        return self._conn

    def _create(self) -> None:
        conn = self._connection()
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_T_KEYS} (subject TEXT PRIMARY KEY, "
            "key BLOB NOT NULL, created_us INTEGER NOT NULL) WITHOUT ROWID"
        )

    def _run(self, what: str, work: Any) -> Any:
        with self._lock:
            try:
                return work()
            except sqlite3.Error as exc:
                from ._registry import _sqlite_reason

                reason = _sqlite_reason(exc, self.timeout)
        raise StoreError(f"key store {self!r}: cannot {what}: {reason}")

    def _select(self, conn: sqlite3.Connection, subjects: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(subjects), _KEY_CHUNK):
            chunk = subjects[start : start + _KEY_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT subject, key FROM {_T_KEYS} WHERE subject IN ({marks})", chunk
            ).fetchall()
            found.update((str(s), bytes(k)) for s, k in rows)
        return found

    def keys_for(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """Return the key of each of *subjects*, creating the missing ones in one transaction.

        Raises:
            StoreError: the database cannot be read or written.
        """
        wanted = list(dict.fromkeys(subjects))
        if not wanted:
            return {}

        def work() -> dict[str, bytes]:
            conn = self._connection()
            found = self._select(conn, wanted)
            missing = [s for s in wanted if s not in found]
            if not missing:
                return found
            now_us = time.time_ns() // 1000
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    f"INSERT OR IGNORE INTO {_T_KEYS} (subject, key, created_us) VALUES (?, ?, ?)",
                    [(s, secrets.token_bytes(32), now_us) for s in missing],
                )
                found.update(self._select(conn, missing))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            return found

        result: dict[str, bytes] = self._run("read or create pseudonym keys", work)
        return result

    def pseudonym_of(self, subject: str) -> str | None:
        """The pseudonym *subject* has now, or ``None`` when it has no key (never had, or erased).

        Raises:
            StoreError: the database cannot be read.
        """
        found: dict[str, bytes] = self._run(
            "read a pseudonym key", lambda: self._select(self._connection(), [subject])
        )
        key = found.get(subject)
        return None if key is None else pseudonym(subject, key)

    def erase_subject(self, subject: str) -> bool:
        """Destroy *subject*'s key (GDPR art. 17): their audit entries can no longer be linked.

        The row is deleted with ``secure_delete`` on and the write-ahead log is
        checkpointed and truncated. A later read of the same person gets a new
        key, hence a new pseudonym unrelated to the old one.

        Returns:
            Whether the subject had a key.

        Raises:
            StoreError: the database cannot be written.
        """

        def work() -> bool:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute(
                    f"DELETE FROM {_T_KEYS} WHERE subject = ?", (subject,)
                ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return bool(deleted)

        erased: bool = self._run("erase a pseudonym key", work)
        return erased

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._closed = True
            if self._conn is not None and self._conn_pid == os.getpid():
                self._conn.close()
            self._conn = None


class _GlobalKey:
    """One pseudonym key for everybody (not erasable per person)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def keys_for(self, subjects: Iterable[str]) -> dict[str, bytes]:
        return dict.fromkeys(subjects, self.key)

    def pseudonym_of(self, subject: str) -> str | None:
        return pseudonym(subject, self.key)

    def erase_subject(self, subject: str) -> bool:
        raise ConfigurationError(
            "this sink names subjects with one pseudonym key for everybody, which cannot be "
            "destroyed for one person: give it a SubjectKeyStore (SQLiteSubjectKeys) instead"
        )


def _key_store(value: SubjectKeyStore | bytes | None) -> SubjectKeyStore | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return _GlobalKey(_check_key(value, "pseudonyms"))
    if not all(callable(getattr(value, m, None)) for m in ("keys_for", "erase_subject")):
        raise ConfigurationError(
            f"pseudonyms: expected a SubjectKeyStore or a key (bytes), not {type(value).__name__}"
        )
    return value


# --------------------------------------------------------------------------- building entries


def _no_default(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _make_canonical() -> Callable[[Mapping[str, Any]], str]:
    """:func:`canonical_json` as text, through the C encoder built once when there is one."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover  # an interpreter without the C accelerator
        return lambda value: canonical_json(value).decode("ascii")
    encode = make(None, _no_default, _quote, None, ":", ",", True, False, False)
    return lambda value: "".join(encode(value, 0))


_canonical_text = _make_canonical()


def _entries(
    events: Sequence[AuditEvent],
    start: int,
    prev: str,
    key: bytes,
    keys: SubjectKeyStore | None,
) -> list[tuple[dict[str, Any], str]]:
    """The chain entries of *events*, numbered from *start*, the first chained to *prev*.

    Returns each entry with its JSON line (without the newline): the
    canonical JSON of the entry without ``mac`` — what the MAC is computed
    over — with ``"mac"`` appended as its last key.
    """
    refs: dict[str, str] = {}
    if keys is not None:
        subject_keys = keys.keys_for({e.subject_ref for e in events})
        refs = {s: pseudonym(s, k) for s, k in subject_keys.items()}
    out: list[tuple[dict[str, Any], str]] = []
    seq = start
    digest = hashlib.sha256
    new = hmac.new
    canonical = _canonical_text
    for event in events:
        entry = event.to_dict()
        entry["seq"] = seq
        if keys is not None:
            entry["subject_ref"] = refs[event.subject_ref]
        entry["prev"] = prev
        body = canonical(entry)
        prev = entry["mac"] = new(key, body.encode("ascii"), digest).hexdigest()
        out.append((entry, f'{body[:-1]},"mac":"{prev}"}}'))
        seq += 1
    return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("a key appears twice")
        out[key] = value
    return out


def _parse_entry(raw: bytes | str) -> dict[str, Any] | str:
    """The entry of a JSON line, or what is wrong with its shape (a short sentence)."""
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return "not a JSON object (or a key appears twice)"
    if not isinstance(value, dict):
        return "not a JSON object"
    seq = value.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return "no valid 'seq' (a positive integer)"
    for name in ("prev", "mac"):
        field = value.get(name)
        if not isinstance(field, str) or not _HEX64.match(field):
            return f"no valid {name!r} (64 hexadecimal digits)"
    return value


def _mac_ok(key: bytes, entry: Mapping[str, Any]) -> bool:
    try:
        expected = entry_mac(key, entry)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, entry["mac"])


# --------------------------------------------------------------------------- results


ProblemKind = Literal[
    "edited", "removed", "reordered", "duplicated", "spliced", "malformed", "truncated", "head"
]


@attrs.frozen(slots=True)
class ChainProblem:
    """The first place where an audit chain is broken.

    Attributes:
        kind: ``edited`` (an entry's MAC does not match its content: changed,
            or written with another key), ``removed`` (sequence numbers
            missing before this entry), ``reordered`` (an entry is out of
            place), ``duplicated`` (an entry appears a second time),
            ``spliced`` (the entry does not chain to the one before it),
            ``malformed`` (not an entry at all), ``truncated`` (the head
            records entries the file or table no longer holds), ``head``
            (the head is missing, edited, or disagrees with the entries).
        line: the 1-based line of a JSON Lines file (``None`` for a table or the head).
        seq: the sequence number concerned, when known.
        message: one sentence saying what is wrong, with the line or row.
    """

    kind: ProblemKind
    line: int | None
    seq: int | None
    message: str


@attrs.frozen(slots=True)
class VerificationResult:
    """What :func:`verify_audit_file` or :func:`verify_audit_table` found.

    Attributes:
        source: the file or table checked (no personal value).
        ok: whether the chain verifies.
        entries: how many entries were verified in order before any problem.
        last_seq: the sequence number of the last entry verified (0: none).
        head_seq: the sequence number the head records (``None`` without a head).
        unconfirmed: entries after the head: written by a batch whose head
            update had not finished (a crash, or a writer still running);
            verified, reported as a warning, not a failure.
        problem: the first problem, or ``None``.
        warnings: sentences worth a look that do not break the chain.
    """

    source: str
    ok: bool
    entries: int
    last_seq: int
    head_seq: int | None
    unconfirmed: int = 0
    problem: ChainProblem | None = None
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.problem is not None:
            return f"{self.source}: FAILED: {self.problem.message}"
        head = "no head" if self.head_seq is None else f"head at seq {self.head_seq:,}"
        text = f"{self.source}: OK: {self.entries:,} entries, {head}"
        return text + "".join(f"\n  warning: {w}" for w in self.warnings)


class AuditFileError(PurposeLimitError, ValueError):
    """An audit file or table cannot be read (``FILE:LINE: problem``); never holds a value."""


# --------------------------------------------------------------------------- the head file


@attrs.frozen(slots=True)
class _Head:
    seq: int
    mac: str
    valid: bool


def _read_head_file(path: Path, key: bytes | None) -> _Head | str | None:
    """The head, or what is wrong with it, or ``None`` when there is no head file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return f"the head file {path.name} is not JSON"
    if not isinstance(value, dict) or value.get("format") != _HEAD_FORMAT:
        return f"the head file {path.name} is not a purposelimit audit head"
    seq, mac, tag = value.get("seq"), value.get("mac"), value.get("head_mac")
    if (
        not isinstance(seq, int)
        or isinstance(seq, bool)
        or seq < 0
        or not isinstance(mac, str)
        or not _HEX64.match(mac)
        or not isinstance(tag, str)
    ):
        return f"the head file {path.name} lacks a valid seq, mac or head_mac"
    valid = key is None or hmac.compare_digest(_head_mac(key, seq, mac), tag)
    return _Head(seq, mac, valid)


def _write_head_file(path: Path, key: bytes, seq: int, mac: str, sync: bool) -> None:
    """Replace the head file atomically: temporary file, fsync, ``os.replace``, fsync the folder."""
    record = {"format": _HEAD_FORMAT, "seq": seq, "mac": mac, "head_mac": _head_mac(key, seq, mac)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            _write_all(fd, json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n")
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover  # a platform without directory descriptors
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse to fsync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _rfind_newline(fd: int, before: int) -> int:
    """The offset of the last ``\\n`` before offset *before* in the file, or -1."""
    pos = before
    while pos > 0:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        chunk = os.pread(fd, step, pos)
        index = chunk.rfind(b"\n")
        if index >= 0:
            return pos + index
    return -1


# --------------------------------------------------------------------------- the JSON Lines sink


class JsonLinesAuditSink:
    """An :class:`~purposelimit.AuditSink` appending a keyed hash chain to a JSON Lines file.

    Each event is one line: ``seq``, the event's fields (:class:`~purposelimit.AuditEvent`,
    times in ISO-8601 UTC), ``prev`` (the previous line's MAC; 64 zeros for the
    first) and ``mac`` = HMAC-SHA256(*key*, canonical JSON of the line without
    ``mac``), written as that canonical JSON with ``"mac"`` appended last.
    Beside the file, ``<path>.head`` records the last ``seq`` and ``mac`` under
    a MAC of its own, replaced atomically after each batch, so a truncated
    file is detected. Check a file with :func:`verify_audit_file` or
    ``purposelimit audit verify FILE``.

    Each batch (one drain of the :class:`~purposelimit.Audit`'s buffer) is
    written with one ``write``, then fsync'ed, then the head is replaced: when
    ``emit`` returns, the batch is durable. When anything fails the batch is
    cut off the file again and the sink raises :class:`~purposelimit.AuditError`,
    so the Audit's ``on_failure`` setting applies and the retried batch takes
    the same sequence numbers. After a crash (``kill -9``) between the
    append and the head update, the lines of that one batch are after the
    head: verification reports them as unconfirmed (a warning); a line cut
    in the middle is removed by the next writer before it appends.

    Reopening a file continues its chain, after checking that its last line
    verifies with *key* and that the head does not record more than the file
    holds (a truncated chain is never continued). Several processes on one
    machine may share a file: each batch is written under an exclusive
    ``fcntl.flock`` on ``<path>.lock`` and the sink re-reads the file's end
    when another process has appended. Not on network file systems; on
    platforms without ``fcntl``, one writer process only.

    Args:
        path: the JSON Lines file (created with mode 0600 if missing).
        key: the chain's secret key, at least 16 bytes (keep it away from the
            file: whoever holds it can rewrite the chain).
        pseudonyms: how subjects are named in entries: a
            :class:`SubjectKeyStore` (one destroyable key per person; see
            :meth:`erase_subject`), a key (``bytes``: one pseudonym key for
            everybody), or ``None`` (the ``subject_ref`` the Audit gives: the
            subject's id, or the Audit's own pseudonym).
        fsync: fsync each batch and the head (default); ``False`` trades
            durability on power loss for speed.

    Raises:
        ConfigurationError: a bad key or option.
        AuditError: the file cannot be opened, its last line does not verify
            with *key*, or the head records more entries than the file holds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: bytes,
        *,
        pseudonyms: SubjectKeyStore | bytes | None = None,
        fsync: bool = True,
    ) -> None:
        self._key = _check_key(key, "key")
        self.pseudonyms = _key_store(pseudonyms)
        self.path = Path(path).absolute()
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.fsync = bool(fsync)
        self._lock = threading.Lock()
        self._fd = -1
        self._lock_fd = -1
        self._pid = -1
        self._seq = 0
        self._mac = GENESIS
        self._size = -1  # the file size the state above belongs to; -1: unknown
        self._closed = False
        with self._lock:
            try:
                self._open()
                with self._file_lock():
                    self._sync()
            except OSError as exc:
                self._close_fds()
                raise AuditError(self._cannot("open", exc)) from None
            except BaseException:
                self._close_fds()
                raise

    def __repr__(self) -> str:
        return f"<JsonLinesAuditSink {str(self.path)!r} seq={self._seq}>"

    @property
    def seq(self) -> int:
        """The sequence number of the last entry this sink wrote or found."""
        return self._seq

    # ------------------------------------------------------------------ files

    def _cannot(self, what: str, exc: OSError) -> str:
        reason = exc.strerror or type(exc).__name__
        return f"audit file {self.path}: cannot {what}: {reason}"

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        if _fcntl is not None:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._pid = os.getpid()
        self._size = -1

    def _close_fds(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0 and self._pid == os.getpid():
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = -1

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if _fcntl is None or self._lock_fd < 0:
            yield
            return
        _fcntl.flock(self._lock_fd, _fcntl.LOCK_EX)
        try:
            yield
        finally:
            _fcntl.flock(self._lock_fd, _fcntl.LOCK_UN)

    def _sync(self) -> None:
        """Read where the chain stands from the file's end and the head (under the file lock).

        Cheap when nobody else appended since this sink's last write.
        """
        size = os.fstat(self._fd).st_size
        if size == self._size:
            return
        end = _rfind_newline(self._fd, size) + 1
        head = _read_head_file(self.head_path, self._key)
        if isinstance(head, str):
            raise AuditError(f"audit file {self.path}: {head}; run `purposelimit audit verify`")
        if head is not None and not head.valid:
            raise AuditError(
                f"audit file {self.path}: the head file does not verify with this key (edited, "
                "or another key); the chain is not continued: run `purposelimit audit verify`"
            )
        if end == 0:
            seq, mac = 0, GENESIS
        else:
            start = _rfind_newline(self._fd, end - 1) + 1
            entry = _parse_entry(os.pread(self._fd, end - 1 - start, start))
            if isinstance(entry, str) or not _mac_ok(self._key, entry):
                raise AuditError(
                    f"audit file {self.path}: its last line does not verify with this key "
                    "(edited, or another key); the chain is not continued: run "
                    "`purposelimit audit verify`"
                )
            seq, mac = int(entry["seq"]), str(entry["mac"])
        if head is None:
            if end:
                raise AuditError(
                    f"audit file {self.path}: the head file {self.head_path.name} is missing, so "
                    "truncation cannot be ruled out; the chain is not continued: run "
                    "`purposelimit audit verify`"
                )
        elif head.seq > seq or (head.seq == seq and head.mac != mac):
            raise AuditError(
                f"audit file {self.path}: the head records seq {head.seq} but the file ends at "
                f"seq {seq}: entries were removed; the chain is not continued: run "
                "`purposelimit audit verify`"
            )
        if end < size:
            # A line cut by a crash in the middle of a write: never confirmed, not an event.
            os.ftruncate(self._fd, end)
            _log.warning(
                "purposelimit audit: removed an incomplete last line of %s (%d bytes) left by "
                "an interrupted write",
                self.path,
                size - end,
            )
        if head is None:
            _write_head_file(self.head_path, self._key, 0, GENESIS, self.fsync)
        self._seq, self._mac, self._size = seq, mac, end

    # ------------------------------------------------------------------ the sink

    def emit(self, events: Sequence[AuditEvent]) -> None:
        """Append *events* as chained lines, fsync them, then move the head.

        Raises:
            AuditError: the file, the head or the key store could not be
                written or read, or the file was tampered with; nothing of
                the batch is left in the file.
        """
        if not events:
            return
        with self._lock:
            if self._closed:
                raise AuditError(f"audit file {self.path}: the sink is closed")
            if self._pid != os.getpid():  # a forked child: its own descriptors and lock
                self._open()
            try:
                with self._file_lock():
                    self._sync()
                    self._append(events)
            except OSError as exc:
                raise AuditError(
                    self._cannot(f"append {len(events)} event(s)", exc) + "; nothing was written"
                ) from None
            except StoreError as exc:
                raise AuditError(
                    f"audit file {self.path}: the pseudonym keys cannot be read ({exc}); "
                    "nothing was written"
                ) from None

    def _append(self, events: Sequence[AuditEvent]) -> None:
        entries = _entries(events, self._seq + 1, self._mac, self._key, self.pseudonyms)
        data = "".join(f"{line}\n" for _, line in entries).encode("ascii")
        start = self._size
        try:
            _write_all(self._fd, data)
            if self.fsync:
                os.fsync(self._fd)
            last = entries[-1][0]
            _write_head_file(self.head_path, self._key, last["seq"], last["mac"], self.fsync)
        except BaseException:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._size = -1  # re-read the file's end before the next batch
            raise
        self._seq, self._mac, self._size = last["seq"], last["mac"], start + len(data)

    def erase_subject(self, subject: str) -> bool:
        """Destroy *subject*'s pseudonym key (GDPR art. 17); see :class:`SQLiteSubjectKeys`.

        Returns:
            Whether the subject had a key.

        Raises:
            ConfigurationError: the sink has no per-person key store.
        """
        return _erase(self.pseudonyms, subject)

    def close(self) -> None:
        """Close the file; later batches fail with :class:`~purposelimit.AuditError`."""
        with self._lock:
            self._closed = True
            self._close_fds()

    def __enter__(self) -> JsonLinesAuditSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _erase(keys: SubjectKeyStore | None, subject: str) -> bool:
    if keys is None:
        raise ConfigurationError(
            "this sink writes subject ids as the Audit gives them: to erase a person from it, "
            "give it pseudonyms=SQLiteSubjectKeys(...) when you open it"
        )
    return keys.erase_subject(subject)


# --------------------------------------------------------------------------- verifying a file


def _lines(path: Path, skip: int = 0) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(line number, bytes without the newline, complete)`` from line *skip* + 1 on."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number <= skip:
                continue
            complete = raw.endswith(b"\n")
            yield number, raw[:-1] if complete else raw, complete


def _find_seq_later(path: Path, after_line: int, low: int, high: int) -> tuple[int, int] | None:
    """The first line after *after_line* holding a seq in ``[low, high)``: (line, seq)."""
    for number, raw, _ in _lines(path, after_line):
        entry = _parse_entry(raw)
        if not isinstance(entry, str) and low <= entry["seq"] < high:
            return number, int(entry["seq"])
    return None


def verify_audit_file(path: str | os.PathLike[str], key: bytes) -> VerificationResult:
    """Check the hash chain of a JSON Lines audit file and its head; name the first problem.

    Every line must parse, its MAC must match its content under *key*, its
    ``seq`` must follow the previous line's and its ``prev`` must be the
    previous line's MAC; the head file (``<path>.head``) must verify and must
    not record more entries than the file holds. The first failure is
    reported with its line: an **edited** line, lines **removed** before a
    line, a **reordered** or **duplicated** line, a line **spliced** from
    another chain, lines missing at the end (**truncated**), a **head**
    missing or edited.

    Lines after the head (a crash between a batch's append and its head
    update; or a writer still running) verify like the others and are
    reported as ``unconfirmed`` in a warning, not as a failure: their MACs
    prove the key's holder wrote them, and the head only vouches that nothing
    before it was removed. A last line cut in the middle (an interrupted
    write) is a warning too: it was never an entry.

    Args:
        path: the JSON Lines file.
        key: the key the chain was written with.

    Returns:
        The :class:`VerificationResult`; ``ok`` is ``False`` with a ``problem`` when
        the chain is broken.

    Raises:
        ConfigurationError: a bad key.
        OSError: the file cannot be read.
    """
    key = _check_key(key, "key")
    path = Path(path)
    source = str(path)
    head_path = path.with_name(path.name + ".head")
    head = _read_head_file(head_path, key)
    head_seq = head.seq if isinstance(head, _Head) else None
    expected, prev, entries = 1, GENESIS, 0
    mac_at_head: str | None = GENESIS if head_seq == 0 else None
    warnings: list[str] = []

    def failed(problem: ChainProblem) -> VerificationResult:
        return VerificationResult(source, False, entries, expected - 1, head_seq, 0, problem)

    for number, raw, complete in _lines(path):
        if not complete:
            warnings.append(
                f"line {number} is incomplete (a write interrupted by a crash); it is not an "
                "entry and the next writer removes it"
            )
            break
        entry = _parse_entry(raw)
        if isinstance(entry, str):
            return failed(ChainProblem("malformed", number, None, f"line {number}: {entry}"))
        seq = int(entry["seq"])
        if not _mac_ok(key, entry):
            if number == 1 and isinstance(head, _Head) and not head.valid:
                message = (
                    "line 1: its MAC does not match, and neither does the head's: the key is "
                    "not the one this file was written with (or both were edited)"
                )
            else:
                message = (
                    f"line {number} (seq {seq}): edited: its MAC does not match its content "
                    "(the line was changed, or written with another key)"
                )
            return failed(ChainProblem("edited", number, seq, message))
        if seq > expected:
            later = _find_seq_later(path, number, expected, seq)
            if later is not None:
                message = (
                    f"line {number} (seq {seq}): reordered: seq {later[1]} should come before it "
                    f"but is at line {later[0]}"
                )
                return failed(ChainProblem("reordered", number, seq, message))
            gap = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
            message = (
                f"line {number} (seq {seq}): removed: {seq - expected} entr"
                f"{'y' if seq - expected == 1 else 'ies'} ({gap}) missing before this line"
            )
            return failed(ChainProblem("removed", number, seq, message))
        if seq < expected:
            message = (
                f"line {number} (seq {seq}): duplicated: seq {seq} already appeared at line {seq} "
                "(a line copied or moved here)"
            )
            return failed(ChainProblem("duplicated", number, seq, message))
        if entry["prev"] != prev:
            message = (
                f"line {number} (seq {seq}): spliced: its prev is not the MAC of the line before "
                "(lines were replaced by lines of another chain)"
            )
            return failed(ChainProblem("spliced", number, seq, message))
        prev = entry["mac"]
        if seq == head_seq:
            mac_at_head = prev
        expected += 1
        entries += 1
    last = expected - 1
    if head is None:
        if last == 0:
            warnings.append(f"no head file {head_path.name}: the file has never been written")
            return VerificationResult(source, True, 0, 0, None, 0, None, tuple(warnings))
        return failed(
            ChainProblem(
                "head",
                None,
                None,
                f"the head file {head_path.name} is missing: removed lines at the end "
                "(truncation) cannot be ruled out",
            )
        )
    if isinstance(head, str):
        return failed(ChainProblem("head", None, None, head))
    if not head.valid:
        return failed(
            ChainProblem(
                "head",
                None,
                head.seq,
                f"the head file {head_path.name} does not verify: edited, or written with "
                "another key",
            )
        )
    if head.seq > last:
        missing = head.seq - last
        message = (
            f"line {last + 1}: truncated: the head records {head.seq:,} entries but the file "
            f"ends at seq {last:,}; {missing:,} entr{'y' if missing == 1 else 'ies'} "
            f"(seq {last + 1} to {head.seq}) removed at the end"
        )
        return failed(ChainProblem("truncated", last + 1, last + 1, message))
    if mac_at_head != head.mac:
        return failed(
            ChainProblem(
                "head",
                head.seq or None,
                head.seq,
                f"the head's MAC does not match line {head.seq} (seq {head.seq}): the entries up "
                "to the head were rewritten",
            )
        )
    unconfirmed = last - head.seq
    if unconfirmed:
        warnings.insert(
            0,
            f"{unconfirmed:,} entr{'y' if unconfirmed == 1 else 'ies'} after the head "
            f"(seq {head.seq + 1} to {last}) unconfirmed: the batch that wrote "
            f"{'it' if unconfirmed == 1 else 'them'} had not updated the head (a crash, or a "
            "writer still running); their MACs verify",
        )
    return VerificationResult(
        source, True, entries, last, head.seq, unconfirmed, None, tuple(warnings)
    )


# --------------------------------------------------------------------------- reading entries


@attrs.frozen(slots=True)
class ChainedEvent:
    """One entry of an audit chain, as read back (not verified: see :func:`verify_audit_file`).

    Attributes:
        seq: its sequence number.
        event: the :class:`~purposelimit.AuditEvent` (``subject_ref`` as written: a
            pseudonym when the sink was configured with one).
        prev: the previous entry's MAC.
        mac: its MAC.
    """

    seq: int
    event: AuditEvent
    prev: str
    mac: str


def _event_of(entry: Mapping[str, Any]) -> AuditEvent:
    """The :class:`AuditEvent` of a chain entry (``ValueError``, ``KeyError``, ``TypeError``)."""
    time_ = datetime.fromisoformat(entry["time"])
    if time_.tzinfo is None:
        raise ValueError("time has no offset")
    mode = entry["mode"]
    if mode not in ("enforce", "monitor"):
        raise ValueError("bad mode")
    for name in ("allowed", "monitored"):
        if not isinstance(entry[name], bool):
            raise TypeError(name)
    return AuditEvent(
        time=time_,
        actor=entry["actor"],
        purpose=entry["purpose"],
        collected_for=entry["collected_for"],
        record_type=str(entry["record_type"]),
        subject_ref=str(entry["subject_ref"]),
        field=str(entry["field"]),
        category=str(entry["category"]),
        allowed=entry["allowed"],
        reason=Reason(entry["reason"]),
        rule=str(entry["rule"]),
        mode=mode,
        monitored=entry["monitored"],
        register_version=entry["register_version"],
        register_hash=entry["register_hash"],
    )


def _chained(entry: Mapping[str, Any], where: str) -> ChainedEvent:
    try:
        event = _event_of(entry)
    except (KeyError, ValueError, TypeError) as exc:
        problem = f"field {exc.args[0]!r} missing" if isinstance(exc, KeyError) else "a bad field"
        raise AuditFileError(f"{where}: not an audit entry ({problem})") from None
    return ChainedEvent(int(entry["seq"]), event, str(entry["prev"]), str(entry["mac"]))


def read_audit_file(path: str | os.PathLike[str]) -> Iterator[ChainedEvent]:
    """Yield the entries of a JSON Lines audit file in file order, without checking MACs.

    An incomplete last line (an interrupted write) is skipped.

    Raises:
        AuditFileError: a line is not an audit entry (``FILE:LINE: ...``).
        OSError: the file cannot be read.
    """
    path = Path(path)
    for number, raw, complete in _lines(path):
        if not complete:
            return
        entry = _parse_entry(raw)
        if isinstance(entry, str):
            raise AuditFileError(f"{path}:{number}: {entry}")
        yield _chained(entry, f"{path}:{number}")


# --------------------------------------------------------------------------- SQL audit tables

_T_AUDIT = "purposelimit_audit"
_T_AUDIT_HEAD = "purposelimit_audit_head"
#: The schema version of the audit tables (kept in the head row).
AUDIT_SCHEMA_VERSION: Final = 1
_BOOL_COLUMNS = frozenset({"allowed", "monitored"})


def entry_row(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """The column values of a chain entry, in :data:`CHAIN_FIELDS` order (booleans as 0/1)."""
    return tuple(int(entry[c]) if c in _BOOL_COLUMNS else entry[c] for c in CHAIN_FIELDS)


def row_entry(row: Sequence[Any]) -> dict[str, Any]:
    """The chain entry of a table row given in :data:`CHAIN_FIELDS` order.

    Raises:
        ValueError: a boolean column holds something else than 0 or 1.
    """
    entry: dict[str, Any] = {}
    for name, value in zip(CHAIN_FIELDS, row, strict=True):
        if name in _BOOL_COLUMNS:
            if value not in (0, 1) or isinstance(value, float):
                raise ValueError(f"column {name} holds neither 0 nor 1")
            value = bool(value)
        elif name == "seq":
            value = int(value)
        entry[name] = value
    return entry


class SQLAuditTable:
    """What the SQL audit sinks share: the chain, pseudonyms, verification and reading.

    Subclasses provide the storage primitives: ``_append_locked`` (one
    transaction that reads the head, calls :meth:`_chain` and stores the
    entries and the new head), ``rows``, ``head`` and ``close``. The entries
    live in ``purposelimit_audit`` (one column per :data:`CHAIN_FIELDS` entry)
    and the head in ``purposelimit_audit_head`` (one row: ``schema_version``,
    ``seq``, ``mac``, ``head_mac``), both updated in the same transaction.
    """

    name: str

    def __init__(self, key: bytes | None, pseudonyms: SubjectKeyStore | bytes | None) -> None:
        self._key = None if key is None else _check_key(key, "key")
        self.pseudonyms = _key_store(pseudonyms)

    def _require_key(self) -> bytes:
        if self._key is None:
            raise AuditError(f"audit table {self.name}: opened without a key, for reading only")
        return self._key

    def _chain(
        self,
        events: Sequence[AuditEvent],
        head_seq: int,
        head_mac: str,
        tag: str,
        last: tuple[int, str] | None,
    ) -> list[dict[str, Any]]:
        """Check the locked head and the last row, then build the entries that follow them."""
        key = self._require_key()
        if not hmac.compare_digest(_head_mac(key, head_seq, head_mac), tag):
            raise AuditError(
                f"audit table {self.name}: the head row does not verify with this key (edited, "
                "or another key); the chain is not continued: run `purposelimit audit verify`"
            )
        found = (0, GENESIS) if last is None else last
        if found != (head_seq, head_mac):
            raise AuditError(
                f"audit table {self.name}: the head records seq {head_seq} but the last row is "
                f"seq {found[0]}: rows were removed or added; the chain is not continued: run "
                "`purposelimit audit verify`"
            )
        return [entry for entry, _ in _entries(events, head_seq + 1, head_mac, key, None)]

    def _pseudonymised(self, events: Sequence[AuditEvent]) -> Sequence[AuditEvent]:
        """*events* with subject_ref replaced by pseudonyms (before any transaction begins)."""
        if self.pseudonyms is None:
            return events
        try:
            keys = self.pseudonyms.keys_for({e.subject_ref for e in events})
        except StoreError as exc:
            raise AuditError(
                f"audit table {self.name}: the pseudonym keys cannot be read ({exc}); "
                "nothing was written"
            ) from None
        refs = {s: pseudonym(s, k) for s, k in keys.items()}
        return [attrs.evolve(e, subject_ref=refs[e.subject_ref]) for e in events]

    def head_mac_of(self, seq: int, mac: str) -> str:
        """The MAC the head row carries for (*seq*, *mac*)."""
        return _head_mac(self._require_key(), seq, mac)

    def emit(self, events: Sequence[AuditEvent]) -> None:
        """Append *events* as chained rows and move the head, in one transaction.

        Raises:
            AuditError: the database, the key store or the chain failed; nothing was written.
        """
        if not events:
            return
        self._require_key()
        self._append_locked(self._pseudonymised(events))

    def _append_locked(self, events: Sequence[AuditEvent]) -> None:  # pragma: no cover
        raise NotImplementedError

    def rows(  # pragma: no cover
        self, after_seq: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The entries with ``seq`` > *after_seq*, in ``seq`` order, at most *limit*."""
        raise NotImplementedError

    def head(self) -> tuple[int, str, str] | None:  # pragma: no cover
        """The head row: (seq, mac, head_mac), or ``None`` when the tables do not exist."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        """Release the connection."""
        raise NotImplementedError

    def erase_subject(self, subject: str) -> bool:
        """Destroy *subject*'s pseudonym key (GDPR art. 17); see :class:`SQLiteSubjectKeys`.

        Raises:
            ConfigurationError: the sink has no per-person key store.
        """
        return _erase(self.pseudonyms, subject)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Yield every entry in ``seq`` order, page by page."""
        after = 0
        while True:
            page = self.rows(after, 1000)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1]["seq"]

    def events(self) -> Iterator[ChainedEvent]:
        """Yield every entry as a :class:`ChainedEvent`, in ``seq`` order (MACs not checked).

        Raises:
            AuditFileError: a row is not an audit entry.
        """
        for entry in self.entries():
            yield _chained(entry, f"{self.name} row seq {entry['seq']}")

    def __enter__(self) -> SQLAuditTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def verify_audit_table(table: SQLAuditTable, key: bytes) -> VerificationResult:
    """Check the hash chain of an SQL audit table and its head row; name the first problem.

    Rows are read in ``seq`` order: a row whose MAC does not match its
    columns is **edited**, a gap in ``seq`` means rows were **removed**, a row
    that does not chain to the one before was **spliced**, and a head
    recording more rows than the table holds means rows were removed at the
    end (**truncated**). The head is updated in the same transaction as the
    rows, so rows after the head are not expected; they are reported as
    unconfirmed, as for files.

    Args:
        table: an open audit table (``open_audit_table(url)``; no key needed to read).
        key: the key the chain was written with.

    Raises:
        ConfigurationError: a bad key.
        AuditError: the table cannot be read.
    """
    key = _check_key(key, "key")
    source = table.name
    found = table.head()
    if found is None:
        raise AuditError(f"audit table {source}: no audit table in this database")
    head_seq, head_mac, tag = found
    head_valid = hmac.compare_digest(_head_mac(key, head_seq, head_mac), tag)
    expected, prev, count = 1, GENESIS, 0
    mac_at_head = GENESIS if head_seq == 0 else None

    def failed(problem: ChainProblem) -> VerificationResult:
        return VerificationResult(source, False, count, expected - 1, head_seq, 0, problem)

    for raw in table.entries():
        seq = int(raw["seq"])
        if not _mac_ok(key, raw):
            message = (
                f"row seq {seq}: its MAC does not match, and neither does the head's: the key is "
                "not the one this table was written with (or both were edited)"
                if count == 0 and not head_valid
                else f"row seq {seq}: edited: its MAC does not match its columns (the row was "
                "changed, or written with another key)"
            )
            return failed(ChainProblem("edited", None, seq, message))
        if seq > expected:
            gap = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
            return failed(
                ChainProblem(
                    "removed",
                    None,
                    seq,
                    f"row seq {seq}: removed: {seq - expected} row(s) ({gap}) missing before it",
                )
            )
        if raw["prev"] != prev:
            return failed(
                ChainProblem(
                    "spliced",
                    None,
                    seq,
                    f"row seq {seq}: spliced: its prev is not the MAC of row seq {seq - 1}",
                )
            )
        prev = raw["mac"]
        if seq == head_seq:
            mac_at_head = prev
        expected += 1
        count += 1
    last = expected - 1
    if not head_valid:
        return failed(
            ChainProblem(
                "head", None, head_seq, "the head row does not verify: edited, or another key"
            )
        )
    if head_seq > last:
        return failed(
            ChainProblem(
                "truncated",
                None,
                last + 1,
                f"truncated: the head records {head_seq:,} rows but the table ends at seq "
                f"{last:,}: seq {last + 1} to {head_seq} removed at the end",
            )
        )
    if mac_at_head != head_mac:
        return failed(
            ChainProblem(
                "head",
                None,
                head_seq,
                f"the head's MAC does not match row seq {head_seq}: the rows were rewritten",
            )
        )
    unconfirmed = last - head_seq
    warnings = (
        (f"{unconfirmed:,} row(s) after the head (seq {head_seq + 1} to {last}) unconfirmed",)
        if unconfirmed
        else ()
    )
    return VerificationResult(source, True, count, last, head_seq, unconfirmed, None, warnings)


_SQLITE_AUDIT_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_T_AUDIT} ("
    "seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT, purpose TEXT, "
    "collected_for TEXT, record_type TEXT NOT NULL, subject_ref TEXT NOT NULL, "
    "field TEXT NOT NULL, category TEXT NOT NULL, allowed INTEGER NOT NULL, "
    "reason TEXT NOT NULL, rule TEXT NOT NULL, mode TEXT NOT NULL, "
    "monitored INTEGER NOT NULL, register_version TEXT, register_hash TEXT, "
    "prev TEXT NOT NULL, mac TEXT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {_T_AUDIT_HEAD} ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), schema_version INTEGER NOT NULL, "
    "seq INTEGER NOT NULL, mac TEXT NOT NULL, head_mac TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {_T_AUDIT}_subject ON {_T_AUDIT} (subject_ref, seq)",
)
_SQL_AUDIT_INSERT = (
    f"INSERT INTO {_T_AUDIT} ({', '.join(CHAIN_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(CHAIN_FIELDS))})"
)


class SQLiteAuditSink(SQLAuditTable):
    """An :class:`~purposelimit.AuditSink` keeping the hash chain in an SQLite table.

    The same chain as :class:`JsonLinesAuditSink`, one row per entry, in the
    table ``purposelimit_audit`` of an SQLite database — typically the
    registry's own file — with the head in ``purposelimit_audit_head``. Each
    batch is one ``BEGIN IMMEDIATE`` transaction (rows and head together,
    ``synchronous=FULL``): committed entirely or not at all, serialised across
    processes. Tables are created on first use.

    Args:
        database: the SQLite file, or an open ``SQLiteStore`` (its file is used).
        key: the chain's secret key (at least 16 bytes); ``None`` opens the
            table for reading only (:func:`verify_audit_table`, ``events()``).
        pseudonyms: as for :class:`JsonLinesAuditSink`. Keep per-person keys
            in another file than the audit table when you can.
        read_only: open with SQLite's ``mode=ro`` (reading only).
        timeout: seconds a batch waits for another writer.

    Raises:
        ConfigurationError: a bad key or option.
        AuditError: the database cannot be opened, or has no audit table when
            opened read-only.
    """

    def __init__(
        self,
        database: str | os.PathLike[str] | SQLiteStore,
        key: bytes | None,
        *,
        pseudonyms: SubjectKeyStore | bytes | None = None,
        read_only: bool = False,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(key, pseudonyms)
        store_path = getattr(database, "path", None)
        path = store_path if isinstance(store_path, Path) else Path(database)  # type: ignore[arg-type]  # a path when not a store
        self.path = path.absolute()
        self.name = f"{self.path}#{_T_AUDIT}"
        self.read_only = read_only or key is None
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._conn_obj: sqlite3.Connection | None = None
        self._conn_pid = -1
        self._closed = False
        if self.read_only:
            if not self.path.exists():
                raise AuditError(f"audit table {self.name}: no such database file")
            self._run("open the audit table", lambda: None)
        else:
            self._run("create the audit table", self._create)

    def __repr__(self) -> str:
        return f"<SQLiteAuditSink {str(self.path)!r}>"

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise AuditError(f"audit table {self.name}: the sink is closed")
        if self._conn_obj is None or self._conn_pid != os.getpid():
            mode = "ro" if self.read_only else "rwc"
            conn = sqlite3.connect(
                f"{self.path.as_uri()}?mode={mode}",
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA synchronous = FULL")
            self._conn_obj, self._conn_pid = conn, os.getpid()
        return self._conn_obj

    def _run(self, what: str, work: Any, *, write: bool = False) -> Any:
        with self._lock:
            try:
                return work()
            except sqlite3.Error as exc:
                from ._registry import _sqlite_reason

                reason = _sqlite_reason(exc, self.timeout)
        suffix = "; nothing was written" if write else ""
        raise AuditError(f"audit table {self.name}: cannot {what}: {reason}{suffix}")

    def _create(self) -> None:
        conn = self._conn()
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SQLITE_AUDIT_SCHEMA:
                conn.execute(statement)
            if not conn.execute(f"SELECT 1 FROM {_T_AUDIT_HEAD}").fetchall():
                conn.execute(
                    f"INSERT INTO {_T_AUDIT_HEAD} (id, schema_version, seq, mac, head_mac) "
                    "VALUES (1, ?, 0, ?, ?)",
                    (AUDIT_SCHEMA_VERSION, GENESIS, self.head_mac_of(0, GENESIS)),
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _append_locked(self, events: Sequence[AuditEvent]) -> None:
        def work() -> None:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq, mac, tag = conn.execute(
                    f"SELECT seq, mac, head_mac FROM {_T_AUDIT_HEAD} WHERE id = 1"
                ).fetchone()
                last = conn.execute(
                    f"SELECT seq, mac FROM {_T_AUDIT} ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                found = None if last is None else (int(last[0]), str(last[1]))
                entries = self._chain(events, int(seq), str(mac), str(tag), found)
                conn.executemany(_SQL_AUDIT_INSERT, [entry_row(e) for e in entries])
                final = entries[-1]
                conn.execute(
                    f"UPDATE {_T_AUDIT_HEAD} SET seq = ?, mac = ?, head_mac = ? WHERE id = 1",
                    (final["seq"], final["mac"], self.head_mac_of(final["seq"], final["mac"])),
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

        self._run(f"append {len(events)} event(s)", work, write=True)

    def rows(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The entries with ``seq`` > *after_seq*, in ``seq`` order, at most *limit*.

        Raises:
            AuditError: the table cannot be read, or a row's boolean column is not 0/1.
        """
        sql = (
            f"SELECT {', '.join(CHAIN_FIELDS)} FROM {_T_AUDIT} WHERE seq > ? "
            f"ORDER BY seq LIMIT {int(limit)}"
        )
        rows: list[Any] = self._run(
            "read the audit table", lambda: self._conn().execute(sql, (after_seq,)).fetchall()
        )
        try:
            return [row_entry(r) for r in rows]
        except ValueError as exc:
            raise AuditError(f"audit table {self.name}: {exc}") from None

    def head(self) -> tuple[int, str, str] | None:
        """The head row (seq, mac, head_mac), or ``None`` when the database has no audit table."""

        def work() -> tuple[int, str, str] | None:
            conn = self._conn()
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_T_AUDIT_HEAD,)
            ).fetchall()
            if not exists:
                return None
            row = conn.execute(
                f"SELECT seq, mac, head_mac FROM {_T_AUDIT_HEAD} WHERE id = 1"
            ).fetchone()
            return None if row is None else (int(row[0]), str(row[1]), str(row[2]))

        found: tuple[int, str, str] | None = self._run("read the audit head", work)
        return found

    def close(self) -> None:
        """Close the connection; later batches fail with :class:`~purposelimit.AuditError`."""
        with self._lock:
            self._closed = True
            if self._conn_obj is not None and self._conn_pid == os.getpid():
                self._conn_obj.close()
            self._conn_obj = None


def open_audit_table(
    url: str,
    key: bytes | None = None,
    *,
    pseudonyms: SubjectKeyStore | bytes | None = None,
) -> SQLAuditTable:
    """Open the audit table of the database at *url* (the registry's URL, as for ``open_store``).

    * ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` — a
      :class:`SQLiteAuditSink`;
    * any other SQLAlchemy URL — a ``SQLAlchemyAuditSink`` (needs SQLAlchemy 2).

    Args:
        url: the database.
        key: the chain's key; ``None`` opens for reading only (verify, tail, stats).
        pseudonyms: see :class:`JsonLinesAuditSink`.

    Returns:
        The sink; close it with ``close()`` or a ``with`` block.

    Raises:
        ConfigurationError: a malformed URL, ``memory://``, or SQLAlchemy missing.
        AuditError: the database cannot be opened.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            "an audit table URL looks like sqlite:///registry.db or "
            "postgresql+psycopg://user@host/db"
        )
    scheme, _, rest = url.partition("://")
    if scheme == "memory":
        raise ConfigurationError(
            "memory:// keeps no audit table: use InMemoryAuditSink, a file or a database"
        )
    if scheme == "sqlite":
        path, _, query = rest.partition("?")
        if not path.startswith("/") or len(path) < 2:
            raise ConfigurationError("an SQLite URL names a file: sqlite:///path/to/registry.db")
        return SQLiteAuditSink(
            path[1:], key, pseudonyms=pseudonyms, read_only=query in ("mode=ro",) or key is None
        )
    try:
        from ._sqlalchemy_store import SQLAlchemyAuditSink
    except ImportError:
        raise ConfigurationError(
            f"a {scheme}:// audit table needs SQLAlchemy 2: pip install 'purposelimit[sql]'"
        ) from None
    return SQLAlchemyAuditSink(url, key, pseudonyms=pseudonyms)
