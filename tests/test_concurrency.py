"""Concurrency: no purpose bleeds between threads or tasks, and context crossing is as documented.

The processing purpose lives in a :class:`contextvars.ContextVar` (DESIGN §4).
Here 100 threads and 1,000 asyncio tasks read the *same* records under ten
different purposes, where whether a read is allowed depends on the purpose:
each must get the decision of its own purpose, and each audit event must name
the purpose of the actor that read. Records memoise one decision per field,
so sharing them between purposes is the hard case.

Then what docs/enforcement.md says about crossing a block: tasks inherit the
block active when they are created, threads and pool workers do not (unless
the call runs in ``contextvars.copy_context()``), callbacks run in the context
captured when they were scheduled, and a generator that yields inside a block
leaves it open in its caller between items.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from purposelimit._audit import Audit, AuditEvent, InMemoryAuditSink
from purposelimit._context import _CURRENT, current_processing, processing, set_engine
from purposelimit._engine import Engine
from purposelimit._errors import ProcessingDenied
from purposelimit._model import (
    Collection,
    Consent,
    DataCategory,
    Evidence,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._records import TaggedRecord, personal, record
from purposelimit._register import Register
from purposelimit._registry import SQLiteStore
from purposelimit._store import InMemoryStore, Withdrawal

T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
MODES = ("enforce", "monitor")
PURPOSES = tuple(f"service.p{i}" for i in range(10))
NEWSLETTER = "newsletter.product"


def make_register() -> Register:
    purposes = [
        Purpose(
            p,
            f"Service {i}",
            f"Service number {i}",
            "contract",
            Retention("P5Y"),
            categories=["identity"],
        )
        for i, p in enumerate(PURPOSES)
    ]
    purposes.append(
        Purpose(
            NEWSLETTER,
            "Product news",
            "E-mailing news about our products",
            "consent",
            Retention("P3Y"),
            categories=["identity"],
            direct_marketing=True,
        )
    )
    return Register(
        purposes,
        [DataCategory("identity"), DataCategory("identity.name")],
        version="concurrency-1",
    )


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")


COLLECTIONS = {p: Collection(p, source="test") for p in PURPOSES}


def make_leads() -> list[Lead]:
    """One record per purpose: record k is readable under purpose k only (same-purpose)."""
    return [
        Lead(f"value-{k}", subject=f"lead-{k}", collection=COLLECTIONS[p], collected_at=T0)
        for k, p in enumerate(PURPOSES)
    ]


@pytest.fixture(autouse=True)
def _reset_context() -> Iterator[None]:
    """Every test starts and ends with no processing block and no default engine."""
    token = set_engine(None, mode="enforce")
    context_token = _CURRENT.set(None)
    yield
    _CURRENT.reset(context_token)
    token.reset()


@pytest.fixture
def sink() -> InMemoryAuditSink:
    return InMemoryAuditSink()


@pytest.fixture
def engine(sink: InMemoryAuditSink) -> Engine:
    # A small buffer: readers in many threads drain it themselves, concurrently.
    return Engine(
        make_register(), InMemoryStore(), clock=lambda: NOW, audit=Audit([sink], capacity=7)
    )


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Any:
    return request.param


def read_all(leads: list[Lead], order: list[int]) -> dict[int, bool]:
    """Read every record in *order*; whether each read returned its own value."""
    seen: dict[int, bool] = {}
    for k in order:
        try:
            value: str | None = leads[k].name
        except ProcessingDenied:
            value = None
        assert value in (None, f"value-{k}")  # a value is only ever the record's own
        seen[k] = value is not None
    return seen


def check_events(events: tuple[AuditEvent, ...], mode: str, reads: int) -> None:
    """Every event names its actor's purpose, and is allowed exactly for that purpose's record."""
    assert len(events) == reads  # no event lost or duplicated
    for event in events:
        purpose = PURPOSES[int(event.actor.rsplit("-", 1)[1]) % 10]  # type: ignore[union-attr]
        assert event.purpose == purpose
        assert event.allowed is (event.collected_for == purpose)
        assert event.reason is (Reason.SAME_PURPOSE if event.allowed else Reason.INCOMPATIBLE)
        assert event.monitored is (not event.allowed and mode == "monitor")


# --------------------------------------------------------------------------- isolation


def test_100_threads_under_10_purposes_each_get_their_own_decisions(
    engine: Engine, sink: InMemoryAuditSink, mode: Any
) -> None:
    """100 threads share ten records and read them all, many times, in random orders, under
    ten purposes: each thread's reads are decided for its own purpose only, and so are the
    audit events (the records' memo slots are shared between purposes)."""
    count, rounds = 100, 40
    leads = make_leads()
    barrier = threading.Barrier(count)
    failures: list[str] = []

    def worker(i: int) -> None:
        purpose = PURPOSES[i % 10]
        mine = i % 10
        shuffle = random.Random(i)
        try:
            with processing(purpose, actor=f"thread-{i}", engine=engine, mode=mode):
                barrier.wait()  # every thread is inside its own block at once
                for _ in range(rounds):
                    order = list(range(10))
                    shuffle.shuffle(order)
                    seen = read_all(leads, order)
                    expected = {k: (k == mine or mode == "monitor") for k in range(10)}
                    if seen != expected:
                        failures.append(f"thread {i}: {seen}")
                    scope = current_processing()
                    if scope is None or scope.purpose != purpose:
                        failures.append(f"thread {i}: scope {scope}")
        except Exception as exc:  # reported below, with the thread
            failures.append(f"thread {i}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    check_events(sink.events, mode, count * rounds * 10)


def test_1000_tasks_under_10_purposes_each_get_their_own_decisions(
    engine: Engine, sink: InMemoryAuditSink, mode: Any
) -> None:
    """1,000 asyncio tasks interleave at every await while reading the same records under ten
    purposes: no task ever gets another task's decision."""
    count = 1000
    leads = make_leads()

    async def task(i: int) -> list[str]:
        purpose = PURPOSES[i % 10]
        mine = i % 10
        problems = []
        async with processing(purpose, actor=f"task-{i}", engine=engine, mode=mode):
            for k in random.Random(i).sample(range(10), 10):
                await asyncio.sleep(0)  # every other task runs here
                seen = read_all(leads, [k])
                if seen[k] is not (k == mine or mode == "monitor"):
                    problems.append(f"task {i} read {k}: {seen[k]}")
                scope = current_processing()
                if scope is None or scope.purpose != purpose:
                    problems.append(f"task {i}: scope {scope}")
        return problems

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(task(i) for i in range(count)))

    assert [p for p in asyncio.run(main()) if p] == []
    check_events(sink.events, mode, count * 10)


def test_threads_and_tasks_together_do_not_mix(engine: Engine, sink: InMemoryAuditSink) -> None:
    """Threads each running their own event loop of tasks, all on shared records: still no
    purpose crosses a thread or a task."""
    leads = make_leads()
    results: dict[int, list[bool]] = {}

    def thread_main(t: int) -> None:
        async def task(i: int) -> bool:
            purpose = PURPOSES[i % 10]
            with processing(purpose, actor=f"tt-{i}", engine=engine):
                await asyncio.sleep(0)
                seen = read_all(leads, list(range(10)))
                return seen == {k: k == i % 10 for k in range(10)}

        async def run() -> list[bool]:
            return await asyncio.gather(*(task(t * 100 + j) for j in range(100)))

        results[t] = asyncio.run(run())

    threads = [threading.Thread(target=thread_main, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(all(r) for r in results.values())
    assert len(results) == 8
    check_events(sink.events, "enforce", 8 * 100 * 10)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_no_read_is_allowed_after_a_withdrawal_returns(tmp_path: Any, backend: str) -> None:
    """Readers in 8 threads loop over a consent-based read while a withdrawal is recorded:
    every read that starts after ``record()`` returned is denied (``consent-withdrawn``), even
    though the records memoised an allowed decision a moment before."""
    store: InMemoryStore | SQLiteStore = (
        InMemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "registry.db")
    )
    # Over SQLite the withdrawal comes through another connection, as from another process.
    writer = store if backend == "memory" else SQLiteStore(tmp_path / "registry.db")
    writer.record(
        Consent(
            "lead-n",
            [NEWSLETTER],
            NOW - timedelta(days=1),
            evidence=Evidence("double-opt-in"),
        )
    )
    engine = Engine(make_register(), store, clock=lambda: NOW, audit=Audit([InMemoryAuditSink()]))
    lead = Lead("value-n", subject="lead-n", collection=Collection(NEWSLETTER), collected_at=T0)
    withdrawn = threading.Event()
    stop = threading.Event()
    late_allowed: list[int] = []
    counts = {"before": 0, "after": 0}
    lock = threading.Lock()

    def reader() -> None:
        with processing(NEWSLETTER, actor="mailer", engine=engine):
            while not stop.is_set():
                after = withdrawn.is_set()  # observed before the read starts
                reason = None
                try:
                    _ = lead.name
                except ProcessingDenied as denied:
                    reason = denied.reason
                allowed = reason is None
                with lock:
                    if reason not in (None, Reason.CONSENT_WITHDRAWN):
                        late_allowed.append(2)  # any other denial is a failure too
                    counts["after" if after else "before"] += 1
                    if after and allowed:
                        late_allowed.append(1)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    writer.record(Withdrawal("lead-n", [NEWSLETTER], NOW - timedelta(hours=1)))
    withdrawn.set()
    time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    for closable in {id(store): store, id(writer): writer}.values():
        closable.close()
    assert counts["before"] > 0
    assert counts["after"] > 0
    assert late_allowed == []


def test_audit_drains_from_many_threads_lose_nothing(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """With a buffer of 7 reads, 50 threads reading 200 times each drain it concurrently:
    every read becomes exactly one event, in each thread's own read order."""
    leads = make_leads()

    def worker(i: int) -> None:
        with processing(PURPOSES[i % 10], actor=f"drain-{i}", engine=engine):
            for _ in range(200):
                _ = leads[i % 10].name

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = sink.events
    assert len(events) == 50 * 200
    per_actor: dict[str | None, list[datetime]] = {}
    for event in events:
        per_actor.setdefault(event.actor, []).append(event.time)
    assert all(len(times) == 200 for times in per_actor.values())


# --------------------------------------------------------------------------- crossing a block


def test_a_task_inherits_the_block_active_when_it_was_created(engine: Engine) -> None:
    """Docs: each asyncio task sees the block active when it was created, plus its own."""
    lead = make_leads()[3]

    async def child() -> tuple[str | None, str]:
        scope = current_processing()
        return (scope.purpose if scope else None), lead.name

    async def main() -> tuple[str | None, str]:
        with processing(PURPOSES[3], actor="parent", engine=engine):
            task = asyncio.create_task(child())
        # the block has ended here; the task was created inside it
        return await task

    assert asyncio.run(main()) == (PURPOSES[3], "value-3")


def test_a_callback_runs_in_the_context_captured_when_scheduled(engine: Engine) -> None:
    """call_soon captures the current context: a callback scheduled inside a block reads under
    it; one scheduled with an empty context reads under no purpose (denied)."""
    lead = make_leads()[4]
    outcomes: dict[str, object] = {}

    def callback(name: str) -> None:
        try:
            outcomes[name] = lead.name
        except ProcessingDenied as denied:
            outcomes[name] = denied.reason

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with processing(PURPOSES[4], actor="cb", engine=engine):
            loop.call_soon(callback, "captured")
            loop.call_soon(callback, "empty", context=contextvars.Context())
        loop.call_soon(callback, "outside")
        await asyncio.sleep(0)

    with set_engine(engine):
        asyncio.run(main())
    assert outcomes == {
        "captured": "value-4",
        "empty": Reason.NO_PURPOSE,
        "outside": Reason.NO_PURPOSE,
    }


def test_threads_and_pools_do_not_carry_the_block(engine: Engine, mode: Any) -> None:
    """Docs: a thread or a pool worker does not see the caller's block (its reads have no
    purpose: denied in enforce mode), unless the call runs in copy_context()."""
    lead = make_leads()[2]

    def read() -> object:
        try:
            return lead.name
        except ProcessingDenied as denied:
            return denied.reason

    with set_engine(engine, mode=mode), processing(PURPOSES[2], actor="caller", engine=engine):
        with ThreadPoolExecutor(2) as pool:
            bare = pool.submit(read).result()
            copied = pool.submit(contextvars.copy_context().run, read).result()
        box: list[object] = []
        thread = threading.Thread(target=lambda: box.append(read()))
        thread.start()
        thread.join()
        context = contextvars.copy_context()
        carried: list[object] = []
        thread = threading.Thread(target=lambda: carried.append(context.run(read)))
        thread.start()
        thread.join()
    denied = Reason.NO_PURPOSE if mode == "enforce" else "value-2"  # monitor lets it through
    assert (bare, copied, box[0], carried[0]) == (denied, "value-2", denied, "value-2")


def test_to_thread_carries_the_block_and_run_in_executor_does_not(engine: Engine) -> None:
    """asyncio.to_thread copies the context; loop.run_in_executor does not."""
    lead = make_leads()[5]

    def read() -> object:
        try:
            return lead.name
        except ProcessingDenied as denied:
            return denied.reason

    async def main() -> tuple[object, object]:
        with processing(PURPOSES[5], actor="async", engine=engine):
            carried = await asyncio.to_thread(read)
            plain = await asyncio.get_running_loop().run_in_executor(None, read)
        return carried, plain

    with set_engine(engine):
        assert asyncio.run(main()) == ("value-5", Reason.NO_PURPOSE)


def test_a_generator_made_in_a_block_reads_where_it_is_consumed(engine: Engine) -> None:
    """A generator's body runs when it is consumed, in the consumer's context: made inside a
    block but consumed outside, its reads have no purpose (denied). Enter the block where it
    is consumed (docs)."""
    leads = make_leads()

    def names() -> Iterator[str]:
        for lead in leads[:2]:
            yield lead.name

    with processing(PURPOSES[0], actor="maker", engine=engine):
        rows = names()
    with set_engine(engine), pytest.raises(ProcessingDenied) as caught:
        next(rows)
    assert caught.value.reason is Reason.NO_PURPOSE
    with processing(PURPOSES[0], actor="consumer", engine=engine):
        assert next(names()) == "value-0"


def test_a_generator_yielding_inside_a_block_leaves_it_open_in_its_caller(engine: Engine) -> None:
    """Docs: a generator that yields inside its own block leaves that block active in the
    caller between items; the block ends when the generator finishes or is closed."""
    leads = make_leads()

    def names() -> Generator[str, None, None]:
        with processing(PURPOSES[1], actor="generator", engine=engine):
            for lead in leads[1:2]:
                yield lead.name

    rows = names()
    assert next(rows) == "value-1"
    scope = current_processing()
    assert scope is not None
    assert scope.purpose == PURPOSES[1]  # open in the caller, between items
    assert leads[1].name == "value-1"  # and the caller's own reads are decided under it
    rows.close()
    assert current_processing() is None  # closed: restored


def test_a_generator_exiting_its_block_inside_the_callers_block_is_reported(
    engine: Engine,
) -> None:
    """If the caller enters a block between items and the generator then ends its own,
    blocks would exit out of order: a RuntimeError names the cause instead of restoring the
    wrong purpose."""

    def names() -> Iterator[int]:
        with processing(PURPOSES[6], actor="generator", engine=engine):
            yield 1

    rows = names()
    next(rows)
    with (
        pytest.raises(RuntimeError, match="generator"),
        processing(PURPOSES[7], actor="caller", engine=engine),
    ):
        next(rows, None)
