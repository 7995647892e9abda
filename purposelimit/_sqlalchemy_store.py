"""The registry in any SQL database, through SQLAlchemy 2 Core.

Imported only when a non-SQLite URL is opened (or by users who import
``SQLAlchemyStore``): the core of purposelimit never imports SQLAlchemy. The
tables are those of the SQLite store (docs/consent-and-audit.md), with a
configurable name prefix and schema. Tested on PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ._audit import AuditEvent
from ._audit_chain import (
    AUDIT_SCHEMA_VERSION,
    CHAIN_FIELDS,
    GENESIS,
    SQLAuditTable,
    SubjectKeyStore,
    entry_row,
    row_entry,
)
from ._errors import AuditError, ConfigurationError, StoreError
from ._registry import (
    SCHEMA_VERSION,
    HistoryRow,
    Row,
    SQLRegistry,
    backfill_purpose_rows,
    event_row,
    purpose_rows,
    to_us,
)
from ._store import Event, Requirement

__all__ = ["SQLAlchemyAuditSink", "SQLAlchemyStore"]

_T = TypeVar("_T")

_EVENT_COLUMNS = ("kind", "event_id", "subject", "at_us", "recorded_us", "actor", "flags", "body")
_PURPOSE_COLUMNS = ("subject", "purpose", "at_us", "seq")
_NO_LIMIT_US = 2**62

#: SQLSTATE classes and codes worth a plain-words reason (the driver's message is never shown).
_SQLSTATE_REASONS = (
    ("25006", "the database is read-only"),
    ("53100", "the database server's disk is full"),
    ("53", "the database server is out of resources"),
    ("08", "the connection to the database failed"),
    ("28", "the database refused the credentials"),
    ("3D", "the database does not exist"),
    ("3F", "the schema does not exist"),
    ("42P01", "a registry table is missing"),
    ("42501", "the database user lacks a privilege"),
    ("57", "the database server cancelled the operation or is shutting down"),
    ("40", "the transaction was rolled back by the server (serialisation or deadlock)"),
)


def _purpose_params(row: tuple[str, str, int, int]) -> dict[str, Any]:
    return dict(zip(_PURPOSE_COLUMNS, row, strict=True))


def _reason(exc: sa_exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None)
    kind = type(orig).__name__ if orig is not None else type(exc).__name__
    detail = f"{kind}, SQLSTATE {code}" if isinstance(code, str) else kind
    if isinstance(code, str):
        for prefix, reason in _SQLSTATE_REASONS:
            if code.startswith(prefix):
                return f"{reason} ({detail})"
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return f"the database cannot be reached or used ({detail})"
    return f"the database reported an error ({detail})"


def _create_engine(url: str | sa.URL, options: Mapping[str, Any]) -> sa.Engine:
    try:
        return sa.create_engine(url, **dict(options))
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        problem = type(exc).__name__
    raise ConfigurationError(
        f"cannot use the registry URL ({problem}): check its form "
        "(postgresql+psycopg://user@host/db) and that its driver is installed"
    )


class SQLAlchemyStore(SQLRegistry):
    """A :class:`~purposelimit.Registry` in any SQL database SQLAlchemy 2 supports.

    Tested on PostgreSQL (``postgresql+psycopg://user@host/db``, with
    ``pip install 'purposelimit[postgresql]'``). Each write is one transaction
    that first locks the ``version`` row, so writers are serialised and the log
    order is the commit order; reads are single statements in autocommit mode
    and always see every committed event, unless ``cache_seconds`` allows a
    short window. The schema is created on first use and migrated when an older
    one is found (under a PostgreSQL advisory lock, so concurrent first opens
    are safe).

    Args:
        url: a SQLAlchemy URL, or an :class:`sqlalchemy.engine.Engine` (then
            :meth:`close` leaves it open).
        schema: the database schema holding the tables (must exist); default
            the connection's.
        table_prefix: prefix of the three table names (``purposelimit_``).
        cache_seconds: see ``SQLiteStore``; 0 by default.
        engine_options: keyword arguments for :func:`sqlalchemy.create_engine`.
        require_evidence, require_actor, clock: see
            :class:`~purposelimit.InMemoryStore`.

    Raises:
        ConfigurationError: a malformed URL, a missing driver, a bad option.
        StoreError: the database cannot be reached or holds a newer schema.
    """

    def __init__(
        self,
        url: str | sa.URL | sa.Engine,
        *,
        schema: str | None = None,
        table_prefix: str = "purposelimit_",
        cache_seconds: float = 0.0,
        engine_options: Mapping[str, Any] | None = None,
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
        if not table_prefix.replace("_", "a").isalnum():
            raise ConfigurationError("table_prefix: letters, digits and '_' only")
        if isinstance(url, sa.Engine):
            self._engine, self._owned = url, False
        else:
            self._engine, self._owned = _create_engine(url, engine_options or {}), True
        self._name = self._engine.url.render_as_string(hide_password=True)
        self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self.schema = schema
        self.table_prefix = table_prefix
        self._define_tables(schema, table_prefix)
        try:
            self._run("open the database", self._open)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        where = f" schema={self.schema!r}" if self.schema else ""
        return f"<SQLAlchemyStore {self._name!r}{where}>"

    # ------------------------------------------------------------------ schema

    def _define_tables(self, schema: str | None, prefix: str) -> None:
        md = sa.MetaData(schema=schema)
        self._meta = sa.Table(
            f"{prefix}meta",
            md,
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.BigInteger, nullable=False),
        )
        self._events = sa.Table(
            f"{prefix}events",
            md,
            sa.Column(
                "seq",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("event_id", sa.String(512), nullable=False),
            sa.Column("subject", sa.String(512)),
            sa.Column("at_us", sa.BigInteger, nullable=False),
            sa.Column("recorded_us", sa.BigInteger, nullable=False),
            sa.Column("actor", sa.Text),
            sa.Column("flags", sa.String(64), nullable=False, server_default=""),
            sa.Column("body", sa.Text, nullable=False),
            sa.UniqueConstraint("kind", "event_id", name=f"{prefix}events_kind_id"),
            sa.Index(f"{prefix}events_subject", "subject", "seq"),
        )
        self._purposes = sa.Table(
            f"{prefix}event_purposes",
            md,
            sa.Column("subject", sa.String(512), primary_key=True),
            sa.Column("purpose", sa.String(255), primary_key=True),
            sa.Column("at_us", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        )
        e, p, m = self._events.c, self._purposes.c, self._meta.c
        version_row = m.key == "version"
        self._q_version = sa.select(m.value).where(version_row)
        self._q_lock = sa.update(self._meta).where(version_row).values(value=m.value)
        self._q_bump = (
            sa.update(self._meta).where(version_row).values(value=m.value + sa.bindparam("n"))
        )
        self._q_find = sa.select(e.body).where(
            e.kind == sa.bindparam("kind"), e.event_id == sa.bindparam("id")
        )
        self._q_subject = (
            sa.select(e.seq, e.kind, e.body)
            .where(e.subject == sa.bindparam("subject"), e.recorded_us <= sa.bindparam("known"))
            .order_by(e.seq)
        )
        self._q_lineage = (
            sa.select(e.seq, e.kind, e.body)
            .select_from(self._purposes.join(self._events, e.seq == p.seq))
            .where(
                p.subject == sa.bindparam("subject"),
                p.purpose.in_(sa.bindparam("lineage", expanding=True)),
                p.at_us <= sa.bindparam("at"),
                e.recorded_us <= sa.bindparam("known"),
            )
        )
        self._q_auth = (
            sa.select(e.seq, e.body)
            .where(
                e.kind == "authorisation",
                e.seq > sa.bindparam("after"),
                e.recorded_us <= sa.bindparam("known"),
            )
            .order_by(e.seq)
        )
        self._q_insert = sa.insert(self._events)
        self._q_insert_purpose = sa.insert(self._purposes)

    def _migrations(self) -> tuple[Callable[[sa.Connection], None], ...]:
        """The schema's history, as for SQLite: migration N brings version N-1 to N."""

        def v1(conn: sa.Connection) -> None:
            self._meta.create(conn)
            conn.execute(
                sa.insert(self._meta),
                [{"key": "schema_version", "value": 0}, {"key": "version", "value": 0}],
            )
            self._events.create(conn)

        def v2(conn: sa.Connection) -> None:
            self._purposes.create(conn)
            e = self._events.c
            rows = conn.execute(
                sa.select(e.seq, e.kind, e.body).where(e.kind.in_(("consent", "withdrawal")))
            ).all()
            purposes = backfill_purpose_rows((int(seq), kind, body) for seq, kind, body in rows)
            if purposes:
                conn.execute(self._q_insert_purpose, [_purpose_params(r) for r in purposes])

        return (v1, v2)

    def schema_version(self, conn: sa.Connection) -> int:
        """The schema version of the registry tables seen through *conn* (0: none yet)."""
        if not sa.inspect(conn).has_table(self._meta.name, schema=self.schema):
            return 0
        found = conn.execute(
            sa.select(self._meta.c.value).where(self._meta.c.key == "schema_version")
        ).scalar()
        return int(found or 0)

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        """Bring the tables to schema *target* in one transaction; return the version found.

        Raises:
            StoreError: the tables' schema is newer than this code knows, or the
                database fails.
        """
        return self._run("migrate the schema", lambda: self._migrate(target))

    def _migrate(self, target: int) -> int:
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                key = f"purposelimit:{self.schema or ''}:{self.table_prefix}".encode()
                lock = int.from_bytes(hashlib.sha256(key).digest()[:8], "big", signed=True)
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))
            found = self.schema_version(conn)
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"registry {self!r}: the schema is version {found}, newer than this "
                    f"purposelimit knows ({SCHEMA_VERSION}): upgrade purposelimit"
                )
            steps = self._migrations()
            for number in range(found + 1, target + 1):
                steps[number - 1](conn)
                conn.execute(
                    sa.update(self._meta)
                    .where(self._meta.c.key == "schema_version")
                    .values(value=number)
                )
            return found

    def _open(self) -> None:
        with self._reader.connect() as conn:
            current = self.schema_version(conn)
        if current != SCHEMA_VERSION:
            self._migrate(SCHEMA_VERSION)

    def close(self) -> None:
        """Release the connection pool (unless the engine was given); the store is done."""
        if self._owned:
            self._engine.dispose()

    # ------------------------------------------------------------------ running

    def _run(self, what: str, work: Callable[[], _T], *, write: bool = False) -> _T:
        """Run *work*, turning a database error into a :class:`StoreError` without its cause.

        The cause is dropped on purpose: SQLAlchemy's and the driver's messages
        quote statements, parameters and rows.
        """
        try:
            return work()
        except sa_exc.SQLAlchemyError as exc:
            reason = _reason(exc)
        suffix = "; nothing was recorded" if write else ""
        raise StoreError(f"registry {self!r}: cannot {what}: {reason}{suffix}")

    def _rows(self, query: sa.Executable, params: Mapping[str, Any]) -> list[Any]:
        def work() -> list[Any]:
            with self._reader.connect() as conn:
                return list(conn.execute(query, params).all())

        return self._run("read", work)

    # ------------------------------------------------------------------ queries

    def _select_version(self) -> int:
        return int(self._rows(self._q_version, {})[0][0])

    def _select_subject(self, subject: str, known_us: int | None) -> list[Row]:
        known = _NO_LIMIT_US if known_us is None else known_us
        return self._rows(self._q_subject, {"subject": subject, "known": known})

    def _select_lineage(
        self, subject: str, lineage: tuple[str, ...], at_us: int, known_us: int | None
    ) -> list[Row]:
        known = _NO_LIMIT_US if known_us is None else known_us
        params = {"subject": subject, "lineage": list(lineage), "at": at_us, "known": known}
        return self._rows(self._q_lineage, params)

    def _select_authorisations(self, after_seq: int, known_us: int | None) -> list[tuple[int, str]]:
        known = _NO_LIMIT_US if known_us is None else known_us
        return self._rows(self._q_auth, {"after": after_seq, "known": known})

    def _select_history(
        self, after_seq: int, subject: str | None, flagged: bool, limit: int
    ) -> list[HistoryRow]:
        e = self._events.c
        query = (
            sa.select(e.seq, e.kind, e.body, e.recorded_us, e.actor, e.flags)
            .where(e.seq > after_seq)
            .order_by(e.seq)
            .limit(limit)
        )
        if subject is not None:
            query = query.where(e.subject == subject)
        if flagged:
            query = query.where(e.flags != "")
        return self._rows(query, {})

    def _select_event(self, kind: str, id_: str) -> str | None:
        rows = self._rows(self._q_find, {"kind": kind, "id": id_})
        return str(rows[0][0]) if rows else None

    # ------------------------------------------------------------------ writing

    def _write(self, events: tuple[Event, ...], actor: str | None, recorded_at: datetime) -> int:
        recorded_us = to_us(recorded_at)

        def work() -> int:
            with self._engine.connect() as conn, conn.begin() as transaction:
                # Lock the version row first: writers are serialised from here to the commit,
                # so sequence numbers are handed out in commit order.
                conn.execute(self._q_lock)

                def find(kind: str, id_: str) -> Event | None:
                    body = conn.execute(self._q_find, {"kind": kind, "id": id_}).scalar()
                    return None if body is None else self._decode(kind, body)

                count = 0
                for event in events:
                    flags = self._admit(event, actor, find)
                    if flags is None:
                        continue
                    row = dict(
                        zip(
                            _EVENT_COLUMNS, event_row(event, actor, flags, recorded_us), strict=True
                        )
                    )
                    key = conn.execute(self._q_insert, row).inserted_primary_key
                    assert key is not None  # a single-row INSERT
                    seq = int(key[0])
                    lookup = purpose_rows(event, seq)
                    if lookup:
                        conn.execute(self._q_insert_purpose, [_purpose_params(r) for r in lookup])
                    count += 1
                if count:
                    conn.execute(self._q_bump, {"n": count})
                else:
                    transaction.rollback()
                return count

        count = self._run("record events", work, write=True)
        if count:
            self._wrote()
        return count


# --------------------------------------------------------------------------- the audit table


class SQLAlchemyAuditSink(SQLAuditTable):
    """An :class:`~purposelimit.AuditSink` keeping the audit hash chain in any SQL database.

    The chain of ``purposelimit._audit_chain`` (docs/consent-and-audit.md), one
    row per entry in ``<prefix>audit`` and the head in ``<prefix>audit_head``,
    updated in one transaction per batch that first locks the head row, so
    writers in several processes are serialised. Tables are created on first
    use (on PostgreSQL under an advisory lock). Tested on PostgreSQL.

    Args:
        url: a SQLAlchemy URL, an :class:`sqlalchemy.engine.Engine`, or an open
            :class:`SQLAlchemyStore` (its engine, schema and prefix are used).
        key: the chain's secret key (at least 16 bytes); ``None`` opens the
            table for reading only.
        schema, table_prefix: as for :class:`SQLAlchemyStore`.
        pseudonyms: a ``SubjectKeyStore`` (one destroyable key per person), a
            key (``bytes``), or ``None``.
        engine_options: keyword arguments for :func:`sqlalchemy.create_engine`.

    Raises:
        ConfigurationError: a malformed URL, a missing driver, a bad option or key.
        AuditError: the database cannot be reached, or has no audit table when
            opened without a key.
    """

    def __init__(
        self,
        url: str | sa.URL | sa.Engine | SQLAlchemyStore,
        key: bytes | None,
        *,
        schema: str | None = None,
        table_prefix: str | None = None,
        pseudonyms: SubjectKeyStore | bytes | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(key, pseudonyms)
        if isinstance(url, SQLAlchemyStore):
            engine, owned = url._engine, False
            schema = url.schema if schema is None else schema
            table_prefix = url.table_prefix if table_prefix is None else table_prefix
        elif isinstance(url, sa.Engine):
            engine, owned = url, False
        else:
            engine, owned = _create_engine(url, engine_options or {}), True
        prefix = "purposelimit_" if table_prefix is None else table_prefix
        if not prefix.replace("_", "a").isalnum():
            raise ConfigurationError("table_prefix: letters, digits and '_' only")
        self._engine, self._owned = engine, owned
        self.schema = schema
        self.name = f"{engine.url.render_as_string(hide_password=True)}#{prefix}audit"
        md = sa.MetaData(schema=schema)
        columns: list[sa.Column[Any]] = [
            sa.Column(
                "seq",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                primary_key=True,
                autoincrement=False,
            ),
            sa.Column("time", sa.String(64), nullable=False),
            *(
                sa.Column(name, sa.Text, nullable=name not in _AUDIT_REQUIRED)
                for name in CHAIN_FIELDS[2:-2]
                if name not in ("allowed", "monitored")
            ),
            sa.Column("allowed", sa.SmallInteger, nullable=False),
            sa.Column("monitored", sa.SmallInteger, nullable=False),
            sa.Column("prev", sa.String(64), nullable=False),
            sa.Column("mac", sa.String(64), nullable=False),
        ]
        self._audit = sa.Table(
            f"{prefix}audit", md, *columns, sa.Index(f"{prefix}audit_subject", "subject_ref", "seq")
        )
        self._head = sa.Table(
            f"{prefix}audit_head",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("schema_version", sa.Integer, nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("mac", sa.String(64), nullable=False),
            sa.Column("head_mac", sa.String(64), nullable=False),
        )
        self._lock_key = int.from_bytes(
            hashlib.sha256(f"purposelimit-audit:{schema or ''}:{prefix}".encode()).digest()[:8],
            "big",
            signed=True,
        )
        try:
            if key is None:
                if self.head() is None:
                    raise AuditError(f"audit table {self.name}: no audit table in this database")
            else:
                self._run("create the audit table", self._create)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<SQLAlchemyAuditSink {self.name!r}>"

    def _run(self, what: str, work: Callable[[], _T], *, write: bool = False) -> _T:
        try:
            return work()
        except sa_exc.SQLAlchemyError as exc:
            reason = _reason(exc)
        suffix = "; nothing was written" if write else ""
        raise AuditError(f"audit table {self.name}: cannot {what}: {reason}{suffix}")

    def _create(self) -> None:
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(self._lock_key)))
            self._audit.metadata.create_all(conn, checkfirst=True)
            found = conn.execute(sa.select(self._head.c.id)).first()
            if found is None:
                conn.execute(
                    sa.insert(self._head).values(
                        id=1,
                        schema_version=AUDIT_SCHEMA_VERSION,
                        seq=0,
                        mac=GENESIS,
                        head_mac=self.head_mac_of(0, GENESIS),
                    )
                )

    def _append_locked(self, events: Sequence[AuditEvent]) -> None:
        h, a = self._head.c, self._audit.c

        def work() -> None:
            with self._engine.begin() as conn:
                # Lock the head row first: writers are serialised up to the commit.
                conn.execute(sa.update(self._head).where(h.id == 1).values(seq=h.seq))
                seq, mac, tag = conn.execute(
                    sa.select(h.seq, h.mac, h.head_mac).where(h.id == 1)
                ).one()
                last = conn.execute(sa.select(a.seq, a.mac).order_by(a.seq.desc()).limit(1)).first()
                entries = self._chain(
                    events,
                    int(seq),
                    str(mac),
                    str(tag),
                    None if last is None else (int(last[0]), str(last[1])),
                )
                conn.execute(
                    sa.insert(self._audit),
                    [dict(zip(CHAIN_FIELDS, entry_row(e), strict=True)) for e in entries],
                )
                final = entries[-1]
                conn.execute(
                    sa.update(self._head)
                    .where(h.id == 1)
                    .values(
                        seq=final["seq"],
                        mac=final["mac"],
                        head_mac=self.head_mac_of(final["seq"], final["mac"]),
                    )
                )

        self._run(f"append {len(events)} event(s)", work, write=True)

    def rows(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The entries with ``seq`` > *after_seq*, in ``seq`` order, at most *limit*.

        Raises:
            AuditError: the table cannot be read, or a row's boolean column is not 0/1.
        """
        a = self._audit.c
        query = (
            sa.select(*(a[name] for name in CHAIN_FIELDS))
            .where(a.seq > after_seq)
            .order_by(a.seq)
            .limit(limit)
        )

        def work() -> list[Any]:
            with self._engine.connect() as conn:
                return list(conn.execute(query).all())

        rows = self._run("read the audit table", work)
        try:
            return [row_entry(tuple(r)) for r in rows]
        except ValueError as exc:
            raise AuditError(f"audit table {self.name}: {exc}") from None

    def head(self) -> tuple[int, str, str] | None:
        """The head row (seq, mac, head_mac), or ``None`` when the database has no audit table."""
        h = self._head.c

        def work() -> tuple[int, str, str] | None:
            with self._engine.connect() as conn:
                if not sa.inspect(conn).has_table(self._head.name, schema=self.schema):
                    return None
                row = conn.execute(sa.select(h.seq, h.mac, h.head_mac).where(h.id == 1)).first()
            return None if row is None else (int(row[0]), str(row[1]), str(row[2]))

        return self._run("read the audit head", work)

    def close(self) -> None:
        """Release the connection pool (unless the engine was given)."""
        if self._owned:
            self._engine.dispose()


_AUDIT_REQUIRED = frozenset(
    {"record_type", "subject_ref", "field", "category", "reason", "rule", "mode"}
)
