"""Shared by tests/test_registry.py and tests/test_registry_processes.py.

* Finding the PostgreSQL server: the URL in ``PURPOSELIMIT_TEST_POSTGRES_URL``,
  else the local default. Unreachable: the tests skip with a message saying how
  to point them at a server — except in CI (``CI`` set), where a skip would hide
  untested code, so they fail; and except when the variable is set, because
  the user asked for those tests.
* A unique PostgreSQL schema per test, dropped afterwards, so runs never collide.
* Worker functions for the multi-process tests (importable by spawned children).
"""

from __future__ import annotations

import functools
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

POSTGRES_ENV = "PURPOSELIMIT_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def in_ci() -> bool:
    """Whether the tests run in CI (the ``CI`` environment variable is set and not false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@functools.cache
def _probe(url: str) -> str | None:
    """Connect once to *url*; return ``None`` when it answers, else why not."""
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # any failure means: no usable server
        return type(exc).__name__
    return None


def postgres_url() -> str:
    """The PostgreSQL URL to test against, or skip (fail in CI) with how to provide one."""
    explicit = os.environ.get(POSTGRES_ENV, "").strip()
    url = explicit or DEFAULT_POSTGRES_URL
    problem = _probe(url)
    if problem is None:
        return url
    message = (
        f"no PostgreSQL server answers at {_hide_password(url)} ({problem}): set {POSTGRES_ENV} "
        "to a SQLAlchemy URL such as postgresql+psycopg://user:password@host:5432/dbname "
        "to run the PostgreSQL registry tests"
    )
    if in_ci() or explicit:
        pytest.fail(message + (" (CI must run them)" if in_ci() else ""), pytrace=False)
    pytest.skip(message)


def _hide_password(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """Create a schema with a unique name for one test, and drop it afterwards."""
    import sqlalchemy as sa

    name = f"plt_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()


def open_registry(spec: dict[str, Any], **options: Any) -> Any:
    """Open the durable registry described by *spec* (``{"kind": "sqlite", "path": …}`` or
    ``{"kind": "postgresql", "url": …, "schema": …}``); used in children too."""
    if spec["kind"] == "sqlite":
        from purposelimit._registry import SQLiteStore

        return SQLiteStore(spec["path"], **options)
    from purposelimit._sqlalchemy_store import SQLAlchemyStore

    return SQLAlchemyStore(spec["url"], schema=spec["schema"], **options)


# --------------------------------------------------------------------------- process workers

PURPOSE = "newsletter.product"


def writer(spec: dict[str, Any], name: str, subjects: list[str], cycles: int, out: Any) -> None:
    """Grant, wait 4 ms, then withdraw consent for each subject, *cycles* times; report
    every commit.

    Sends ``(kind, event_id, subject, event_time_us, commit_done_ns)`` for each
    committed event: ``commit_done_ns`` is ``time.monotonic_ns()`` taken right
    after the commit returned (system-wide on Linux, so comparable across processes).
    """
    from purposelimit import Consent, Evidence

    store = open_registry(spec)
    sent: list[tuple[str, str, str, int, int]] = []
    try:
        for cycle in range(cycles):
            for subject in subjects:
                given = datetime.now(UTC)
                consent = Consent(
                    subject=subject,
                    purposes=(PURPOSE,),
                    given_at=given,
                    evidence=Evidence(mechanism="double-opt-in"),
                    id=f"{name}-c-{cycle}-{subject}",
                )
                store.record(consent, actor=name)
                sent.append(("consent", consent.id, subject, _us(given), time.monotonic_ns()))
                time.sleep(0.004)  # long enough for readers to see it valid, often
                withdrawal = store.withdraw(subject, PURPOSE, datetime.now(UTC), actor=name)
                sent.append(
                    ("withdrawal", withdrawal.id, subject, _us(withdrawal.at), time.monotonic_ns())
                )
    finally:
        store.close()
        out.put((name, sent))


def reader(spec: dict[str, Any], name: str, subjects: list[str], stop: Any, out: Any) -> None:
    """Ask the consent state of each subject in turn until *stop* is set; report every answer.

    Sends ``(subject, asked_ns, state, consent_id)``: ``asked_ns`` is taken just
    before the question, so every commit finished before it must be visible.
    """
    store = open_registry(spec)
    seen: list[tuple[str, int, str, str | None]] = []
    try:
        while not stop.is_set():
            for subject in subjects:
                asked = time.monotonic_ns()
                state, record = store.consent_state_at(subject, PURPOSE, datetime.now(UTC))
                seen.append((subject, asked, state.value, None if record is None else record.id))
    finally:
        store.close()
        out.put((name, seen))


def _us(instant: datetime) -> int:
    from purposelimit._registry import to_us

    return to_us(instant)


def kill_target(spec: dict[str, Any], batch: int) -> None:
    """Write batches of *batch* consents forever, printing each committed id and flushing.

    Run as ``python -c`` by the kill -9 test, which SIGKILLs it mid-stream.
    """
    from purposelimit import Consent, Evidence

    store = open_registry(spec)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    number = 0
    while True:
        events = []
        for _ in range(batch):
            events.append(
                Consent(
                    subject=f"lead-{number % 50}",
                    purposes=(PURPOSE,),
                    given_at=start,
                    evidence=Evidence(mechanism="button"),
                    id=f"k-{number:07d}",
                )
            )
            number += 1
        store.record_many(events, actor="kill-target")
        sys.stdout.write("".join(f"{e.id}\n" for e in events))
        sys.stdout.flush()
