"""Consent lookup and recording in the SQLite registry, against hand-written sqlite3.

Fills an SQLite registry with N consent events (default 1,000,000; fast: one
transaction, ``executemany``), then measures in one run:

* the consent lookup of one decision — ``SQLiteStore.consent_events(subject,
  purpose, T)``: the indexed query and the decoding of the events it finds —
  against the equivalent hand-written sqlite3 query on the same tables (the
  events of the subject naming the purpose or one of its ancestors, dated at or
  before T), rows fetched but not interpreted; and the same lookup followed by
  the DESIGN §3 consent-state rules (``consent_state_at``). "Cold": new random
  subjects each round and no decoded event kept; "warm": the same lookups again.
* recording one event — ``SQLiteStore.record(consent, actor=...)`` — against a
  bare sqlite3 ``INSERT`` of a prepared row into the same table and ``COMMIT``
  on a connection with the store's durability setting (WAL,
  ``synchronous=FULL``), one of each in turn so that both meet the same disk.

Prints medians over rounds and the ratios (targets: lookup <= 1.5x, record <= 1.5x).

    python benchmarks/bench_consent_lookup.py [--events 1000000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from purposelimit import Consent, Evidence
from purposelimit._ids import ancestors
from purposelimit._registry import SQLiteStore, dumps, lineage_sql, to_us

PURPOSES = (
    "newsletter",
    "newsletter.product",
    "newsletter.events",
    "prospection.email_b2c",
    "prospection.postal",
    "prospection.phone_b2c",
)
BASE = datetime(2020, 1, 1, tzinfo=UTC)
SPAN_US = 5 * 365 * 86_400 * 1_000_000
EVENTS_PER_SUBJECT = 10


def fill(path: Path, count: int, rng: random.Random) -> int:
    """Write *count* consent and withdrawal events straight into the registry tables."""
    SQLiteStore(path).close()  # creates the schema
    subjects = max(1, count // EVENTS_PER_SUBJECT)
    base_us = to_us(BASE)
    recorded_us = to_us(datetime.now(UTC))
    events: list[tuple[int, str, str, str, int, int, str, str, str]] = []
    purposes: list[tuple[str, str, int, int]] = []
    for seq in range(1, count + 1):
        subject = f"lead-{rng.randrange(subjects)}"
        named = rng.sample(PURPOSES, 2 if rng.random() < 0.2 else 1)
        at_us = base_us + rng.randrange(SPAN_US)
        at = (BASE + timedelta(microseconds=at_us - base_us)).isoformat()
        if rng.random() < 0.8:
            kind, event_id = "consent", f"c-{seq}"
            state = "refused" if rng.random() < 0.1 else "given"
            body = {
                "id": event_id,
                "subject": subject,
                "purposes": named,
                "state": state,
                "given_at": at,
                "evidence": {"mechanism": "unticked-checkbox", "collection_point": "form-7"},
            }
        else:
            kind, event_id = "withdrawal", f"w-{seq}"
            body = {"id": event_id, "subject": subject, "purposes": named, "at": at}
        text = json.dumps(body, separators=(",", ":"))
        events.append((seq, kind, event_id, subject, at_us, recorded_us, "bench", "", text))
        purposes.extend((subject, p, at_us, seq) for p in named)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO purposelimit_events (seq, kind, event_id, subject, at_us, recorded_us, "
        "actor, flags, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        events,
    )
    conn.executemany(
        "INSERT INTO purposelimit_event_purposes (subject, purpose, at_us, seq) "
        "VALUES (?, ?, ?, ?)",
        purposes,
    )
    conn.execute("UPDATE purposelimit_meta SET value = ? WHERE key = 'version'", (count,))
    conn.execute("COMMIT")
    conn.close()
    return subjects


def per_op(work: Callable[[], None], ops: int) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) / ops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--lookups", type=int, default=2000, help="lookups per round")
    parser.add_argument("--records", type=int, default=40, help="records per round")
    args = parser.parse_args()
    rng = random.Random(20261101)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.db"
        started = time.perf_counter()
        subjects = fill(path, args.events, rng)
        print(
            f"filled {args.events:,} events for {subjects:,} subjects "
            f"in {time.perf_counter() - started:.1f} s ({path.stat().st_size / 1e6:.0f} MB)"
        )

        store = SQLiteStore(path)
        bare = sqlite3.connect(path, isolation_level=None)
        bare.execute("PRAGMA synchronous = FULL")

        def lookups() -> list[tuple[str, str, datetime]]:
            return [
                (
                    f"lead-{rng.randrange(subjects)}",
                    rng.choice(PURPOSES),
                    BASE + timedelta(microseconds=rng.randrange(SPAN_US)),
                )
                for _ in range(args.lookups)
            ]

        def by_store(batch: list[tuple[str, str, datetime]]) -> None:
            for subject, purpose, at in batch:
                store.consent_events(subject, purpose, at)

        def state_by_store(batch: list[tuple[str, str, datetime]]) -> None:
            for subject, purpose, at in batch:
                store.consent_state_at(subject, purpose, at)

        def by_hand(batch: list[tuple[str, str, datetime]]) -> None:
            for subject, purpose, at in batch:
                lineage = tuple(ancestors(purpose))
                bare.execute(
                    lineage_sql(len(lineage), False), (subject, *lineage, to_us(at))
                ).fetchall()

        timings: dict[str, list[float]] = {
            name: [] for name in ("hand", "cold", "warm", "state cold", "state warm")
        }
        rows = 0
        for _ in range(args.rounds):
            batch = lookups()
            rows += sum(
                len(bare.execute(lineage_sql(len(lin), False), (s, *lin, to_us(at))).fetchall())
                for s, lin, at in ((s, tuple(ancestors(p)), at) for s, p, at in batch)
            )
            timings["hand"].append(per_op(lambda b=batch: by_hand(b), len(batch)))
            store._decoded.clear()  # cold: nothing decoded yet (a peek for the benchmark)
            timings["cold"].append(per_op(lambda b=batch: by_store(b), len(batch)))
            timings["warm"].append(per_op(lambda b=batch: by_store(b), len(batch)))
            store._decoded.clear()
            timings["state cold"].append(per_op(lambda b=batch: state_by_store(b), len(batch)))
            timings["state warm"].append(per_op(lambda b=batch: state_by_store(b), len(batch)))
        print(f"lookup rows per decision: {rows / (args.rounds * args.lookups):.2f} on average")

        made = [0]

        def consents(prefix: str) -> list[Consent]:
            out = []
            for _ in range(args.records):
                made[0] += 1
                out.append(
                    Consent(
                        subject=f"lead-{rng.randrange(subjects)}",
                        purposes=("newsletter.product",),
                        given_at=datetime.now(UTC),
                        evidence=Evidence(mechanism="button", collection_point="form-7"),
                        id=f"{prefix}-{made[0]}",
                    )
                )
            return out

        insert = (
            "INSERT INTO purposelimit_events (kind, event_id, subject, at_us, recorded_us, "
            "actor, flags, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )

        def bare_row(e: Consent) -> tuple[object, ...]:
            at = to_us(e.given_at)
            return ("consent", e.id, e.subject, at, at, "bench", "", dumps(e))

        # one bare INSERT + COMMIT, then one store.record, in turn: both see the same disk
        rec_store: list[float] = []
        rec_bare: list[float] = []
        for _ in range(args.rounds):
            pairs = zip(consents("bench"), map(bare_row, consents("bare")), strict=True)
            for event, row in pairs:
                started = time.perf_counter()
                bare.execute("BEGIN")
                bare.execute(insert, row)
                bare.execute("COMMIT")
                middle = time.perf_counter()
                store.record(event, actor="bench")
                rec_store.append((time.perf_counter() - middle) * 1e6)
                rec_bare.append((middle - started) * 1e6)
        store.close()
        bare.close()

    def line(name: str, ours: list[float], base: list[float]) -> None:
        a, b = statistics.median(ours), statistics.median(base)
        print(f"{name:<34} store {a:9.1f} us   sqlite3 {b:9.1f} us   ratio {a / b:5.2f}x")

    print(f"medians over {args.rounds} rounds ({args.events:,} events; records: over each one)")
    line("consent lookup, cold", timings["cold"], timings["hand"])
    line("consent lookup, warm", timings["warm"], timings["hand"])
    line("lookup + consent rules, cold", timings["state cold"], timings["hand"])
    line("lookup + consent rules, warm", timings["state warm"], timings["hand"])
    line("record one event (commit)", rec_store, rec_bare)


if __name__ == "__main__":
    main()
