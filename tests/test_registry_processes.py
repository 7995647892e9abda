"""The durable registries across processes, under kill -9, read-only and full.

* Several processes (multiprocessing, spawn) grant and withdraw consent for the
  same people while others ask for their consent state: no event is lost, and
  no reader sees a consent as valid after a withdrawal that committed before it
  asked. Run on SQLite and on PostgreSQL.
* A writer killed with SIGKILL in the middle of its batches: every event it
  reported committed is there, no batch is there in part, the store opens and
  its counts match.
* A read-only or full database: a clear StoreError, and nothing recorded.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _registry_support import (
    PURPOSE,
    open_registry,
    postgres_schema,
    postgres_url,
    reader,
    writer,
)

from purposelimit._errors import StoreError
from purposelimit._model import Consent, Evidence
from purposelimit._registry import SQLiteStore, open_store

TESTS = Path(__file__).resolve().parent
SUBJECT = "jeanne.martin@example.com"
T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)


def consent(number: int, subject: str = SUBJECT) -> Consent:
    """A consent with evidence, numbered."""
    return Consent(
        subject=subject,
        purposes=(PURPOSE,),
        given_at=T0,
        evidence=Evidence(mechanism="button"),
        id=f"c-{number}",
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A durable registry, its schema created, described so that child processes can open it."""
    if request.param == "sqlite":
        described: dict[str, Any] = {"kind": "sqlite", "path": str(tmp_path / "registry.db")}
        open_registry(described).close()
        yield described
        return
    url = postgres_url()
    with postgres_schema(url) as schema:
        described = {"kind": "postgresql", "url": url, "schema": schema}
        open_registry(described).close()
        yield described


# ------------------------------------------------------------------ several processes


def test_withdrawals_are_seen_by_every_process_and_no_event_is_lost(spec: dict[str, Any]) -> None:
    """Two writers grant and withdraw for the same three people while two readers ask: every
    committed event is in the store, and no answer 'valid' rests on a consent that a
    withdrawal committed before the question had already withdrawn."""
    context = multiprocessing.get_context("spawn")
    subjects = ["lead-1", "lead-2", "lead-3"]
    cycles = 12
    results: Any = context.Queue()
    stop = context.Event()
    writers = [
        context.Process(target=writer, args=(spec, f"w{i}", subjects, cycles, results))
        for i in range(2)
    ]
    readers = [
        context.Process(target=reader, args=(spec, f"r{i}", subjects, stop, results))
        for i in range(2)
    ]
    for process in readers + writers:
        process.start()
    reports: dict[str, list[Any]] = {}
    try:
        while len(reports) < len(writers):
            name, items = results.get(timeout=120)
            reports[name] = items
        stop.set()
        while len(reports) < len(writers) + len(readers):
            name, items = results.get(timeout=60)
            reports[name] = items
    finally:
        stop.set()
        for process in readers + writers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(p.exitcode == 0 for p in readers + writers)

    committed = [event for name in ("w0", "w1") for event in reports[name]]
    assert len(committed) == 2 * len(subjects) * cycles * 2
    store = open_registry(spec)
    try:
        stored = {(e.kind, e.event.id) for e in store.history()}
        assert stored == {(kind, event_id) for kind, event_id, *_ in committed}  # nothing lost
        assert store.version == len(committed)
    finally:
        store.close()

    given_us = {event_id: at_us for kind, event_id, _, at_us, _ in committed if kind == "consent"}
    withdrawals: dict[str, list[tuple[int, int]]] = {s: [] for s in subjects}
    for kind, _, subject, at_us, done_ns in committed:
        if kind == "withdrawal":
            withdrawals[subject].append((done_ns, at_us))
    answers = [answer for name in ("r0", "r1") for answer in reports[name]]
    assert len(answers) > 50
    late = []
    for subject, asked_ns, state, consent_id in answers:
        if state != "valid":
            continue
        granted = given_us[consent_id]
        if any(done < asked_ns and at >= granted for done, at in withdrawals[subject]):
            late.append((subject, consent_id))
    assert late == []
    assert {"valid", "withdrawn"} <= {state for _, _, state, _ in answers}


# ------------------------------------------------------------------ kill -9


def test_a_writer_killed_mid_batch_loses_no_committed_event(spec: dict[str, Any]) -> None:
    """SIGKILL a process writing batches of 7 events: each id it printed after its commit is
    stored, only whole batches are, in order; the store opens, counts match, writes go on."""
    batch = 7
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        f"from _registry_support import kill_target; kill_target({spec!r}, {batch})"  # in tests/
    )
    printed: list[str] = []
    for _round in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(TESTS)
        )
        assert child.stdout is not None
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            printed.append(line.strip())
            seen += 1
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        printed.extend(line.strip() for line in child.stdout.read().splitlines())
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        assert seen >= 40, "the writer did not start writing"

        store = open_registry(spec)
        try:
            stored = [e.event.id for e in store.history()]
            assert set(printed) <= set(stored)
            assert len(stored) % batch == 0
            assert sorted(stored) == stored
            assert len(set(stored)) == len(stored)
            assert store.version == len(stored)
            # at most the batch in flight was committed without being printed
            assert len(stored) - len(set(printed)) in (0, batch)
        finally:
            store.close()
        # the next writer starts numbering from 0 again: its ids are duplicates of the
        # same events, so recording them is idempotent and the log keeps growing in order
    if spec["kind"] == "sqlite":
        conn = sqlite3.connect(spec["path"])
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
    store = open_registry(spec)
    try:
        assert store.record(consent(1), actor="after")
    finally:
        store.close()


# ------------------------------------------------------------------ read-only and full


@pytest.mark.parametrize("how", ["url-mode-ro", "read_only", "query_only"])
def test_a_read_only_sqlite_registry_refuses_writes_cleanly(tmp_path: Path, how: str) -> None:
    """mode=ro, read_only=True or PRAGMA query_only: every write raises a StoreError that
    says read-only and that nothing was recorded; reads go on; the file is unchanged."""
    path = tmp_path / "registry.db"
    with SQLiteStore(path) as store:
        store.record(consent(1), actor="web")
    if how == "url-mode-ro":
        locked = open_store(f"sqlite:///{path}?mode=ro")
    elif how == "read_only":
        locked = SQLiteStore(path, read_only=True)
    else:
        locked = SQLiteStore(path, pragmas={"query_only": "ON"})
    with locked:
        attempts = [
            lambda: locked.record(consent(2), actor="web"),
            lambda: locked.record_many([consent(3), consent(4)], actor="web"),
            lambda: locked.withdraw(SUBJECT, PURPOSE, T0, actor="web"),
        ]
        for attempt in attempts:
            with pytest.raises(StoreError, match="read-only") as caught:
                attempt()
            message = str(caught.value)
            assert "nothing was recorded" in message
            assert SUBJECT not in message
            assert caught.value.__context__ is None
        assert [e.event.id for e in locked.history()] == ["c-1"]
        assert locked.consent_state_at(SUBJECT, PURPOSE, T0)[0].value == "valid"
    with SQLiteStore(path) as store:
        assert [e.event.id for e in store.history()] == ["c-1"]
        assert store.version == 1


def test_a_read_only_open_needs_an_existing_registry(tmp_path: Path) -> None:
    """Read-only, an empty or missing file cannot become a registry: a StoreError says why."""
    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(StoreError, match="open it once writable"):
        SQLiteStore(tmp_path / "empty.db", read_only=True)
    with pytest.raises(StoreError, match="cannot be opened"):
        SQLiteStore(tmp_path / "missing.db", read_only=True)


def test_a_full_sqlite_registry_records_nothing_of_a_failed_batch(tmp_path: Path) -> None:
    """When the database cannot grow (PRAGMA max_page_count, as a full disk would), a batch
    fails whole with a StoreError saying so; the file stays consistent and usable."""
    path = tmp_path / "registry.db"
    with SQLiteStore(path) as store:
        store.record_many([consent(n) for n in range(20)], actor="web")
        before = list(store.history())
    probe = sqlite3.connect(path)
    (pages,) = probe.execute("PRAGMA page_count").fetchone()
    probe.close()
    with SQLiteStore(path, pragmas={"max_page_count": pages}) as full:
        big = [consent(n, subject=f"lead-{n}") for n in range(1000, 3000)]
        with pytest.raises(StoreError, match="full") as caught:
            full.record_many(big, actor="import")
        assert "nothing was recorded" in str(caught.value)
        assert list(full.history()) == before
        assert full.version == len(before)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    (purposes,) = conn.execute("SELECT count(*) FROM purposelimit_event_purposes").fetchone()
    conn.close()
    assert purposes == len(before)
    with SQLiteStore(path) as store:
        assert store.record_many(big[:5], actor="import") == 5
        assert store.version == len(before) + 5


def test_a_read_only_postgresql_session_refuses_writes_cleanly() -> None:
    """A PostgreSQL connection in read-only mode: StoreError 'read-only', nothing recorded,
    and neither the statement nor its values in the message."""
    url = postgres_url()
    with postgres_schema(url) as schema:
        described = {"kind": "postgresql", "url": url, "schema": schema}
        with open_registry(described) as store:
            store.record(consent(1), actor="web")
        options = {"connect_args": {"options": "-c default_transaction_read_only=on"}}
        with open_registry(described, engine_options=options) as locked:
            with pytest.raises(StoreError, match="read-only") as caught:
                locked.record(consent(2), actor="web")
            message = str(caught.value)
            assert "25006" in message
            assert "nothing was recorded" in message
            assert "INSERT" not in message
            assert "UPDATE" not in message
            assert SUBJECT not in message
            assert [e.event.id for e in locked.history()] == ["c-1"]
        with open_registry(described) as store:
            assert store.version == 1
