"""The ``processing`` context: binding, nesting, isolation, decorators, modes and defaults."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from purposelimit._audit import Audit, InMemoryAuditSink, LoggingAuditSink
from purposelimit._context import (
    _CURRENT,
    EngineToken,
    ProcessingScope,
    current_processing,
    default_mode,
    get_audit,
    get_engine,
    processing,
    set_engine,
)
from purposelimit._engine import Engine
from purposelimit._errors import AuditError, ConfigurationError, ProcessingDenied
from purposelimit._model import Collection, DataCategory, Purpose, Reason, Retention
from purposelimit._records import TaggedRecord, personal, record
from purposelimit._register import Register

SECRET = "SECRET-VALUE-123"
T0 = datetime(2026, 1, 10, tzinfo=UTC)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
MODES = ("enforce", "monitor")
PURPOSES = [f"service.p{i}" for i in range(10)]


def make_register() -> Register:
    return Register(
        [
            Purpose(
                pid,
                f"Purpose {pid}",
                f"Processing for {pid}",
                "contract",
                Retention("P1Y"),
                categories=["contact"],
            )
            for pid in PURPOSES
        ],
        [DataCategory("contact"), DataCategory("contact.email")],
    )


@record
class Lead(TaggedRecord):
    email: str = personal("contact.email")


def lead_for(purpose: str, subject: str = "lead-1") -> Lead:
    tag: dict[str, Any] = {
        "subject": subject,
        "collection": COLLECTIONS[purpose],
        "collected_at": T0,
    }
    return Lead(SECRET, **tag)


COLLECTIONS = {pid: Collection(pid) for pid in PURPOSES}


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
    return Engine(make_register(), clock=lambda: NOW, audit=Audit([sink]))


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Any:
    return request.param


# --------------------------------------------------------------------------- binding


def test_a_block_binds_and_restores(engine: Engine, mode: Any) -> None:
    """Inside the block current_processing() names purpose, actor and mode; after, None."""
    assert current_processing() is None
    with processing("service.p1", actor="crm-export", engine=engine, mode=mode) as scope:
        assert current_processing() is scope
        assert scope == ProcessingScope("service.p1", "crm-export", mode, engine)
        assert (scope.purpose, scope.actor, scope.mode) == ("service.p1", "crm-export", mode)
    assert current_processing() is None


def test_blocks_nest_inner_wins_outer_restored(engine: Engine, mode: Any) -> None:
    """A nested block wins inside; on its exit the outer block is active again."""
    lead = lead_for("service.p1")
    with processing("service.p1", actor="outer", engine=engine, mode=mode):
        with processing("service.p2", actor="inner", engine=engine, mode=mode):
            scope = current_processing()
            assert scope is not None
            assert scope.purpose == "service.p2"
            if mode == "enforce":
                with pytest.raises(ProcessingDenied):
                    _ = lead.email
        scope = current_processing()
        assert scope is not None
        assert scope.actor == "outer"
        assert lead.email == SECRET


def test_the_block_is_restored_on_error(engine: Engine, mode: Any) -> None:
    """An exception leaving the block restores the previous binding and propagates."""
    with processing("service.p1", actor="outer", engine=engine, mode=mode):
        with pytest.raises(KeyError), processing("service.p2", actor="inner", engine=engine):
            raise KeyError("boom")
        scope = current_processing()
        assert scope is not None
        assert scope.purpose == "service.p1"
    assert current_processing() is None


def test_a_denial_inside_the_block_restores_it(engine: Engine) -> None:
    """A ProcessingDenied raised by a read leaves no binding behind."""
    lead = lead_for("service.p1")
    with pytest.raises(ProcessingDenied), processing("service.p2", actor="a", engine=engine):
        _ = lead.email
    assert current_processing() is None


def test_the_same_block_object_can_be_reentered(engine: Engine, mode: Any) -> None:
    """One processing object nests inside itself and is reusable afterwards."""
    block = processing("service.p1", actor="a", engine=engine, mode=mode)
    with block:
        with block:
            assert current_processing() is not None
        assert current_processing() is not None
    assert current_processing() is None
    with block:
        assert current_processing() is not None


def test_exiting_out_of_order_is_reported(engine: Engine) -> None:
    """Exiting an outer block while an inner one is active is a programming error."""
    outer = processing("service.p1", actor="a", engine=engine)
    inner = processing("service.p2", actor="a", engine=engine)
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match="reverse order"):
        outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert current_processing() is None


def test_arguments_are_checked() -> None:
    """An empty purpose, a missing actor, a bad mode or clock are configuration errors."""
    with pytest.raises(ConfigurationError):
        processing("", actor="a")
    with pytest.raises(ConfigurationError, match="actor"):
        processing("service.p1", actor=" ")
    with pytest.raises(ConfigurationError, match="mode"):
        processing("service.p1", actor="a", mode="audit")  # type: ignore[arg-type]  # refused
    with pytest.raises(ConfigurationError, match="clock"):
        processing("service.p1", actor="a", clock=NOW)  # type: ignore[arg-type]  # refused


def test_entering_without_an_engine_is_a_configuration_error() -> None:
    """With no engine= and no default engine, entering says how to configure one."""
    with pytest.raises(ConfigurationError, match="set_engine"), processing("service.p1", actor="a"):
        pass  # pragma: no cover - not entered


# --------------------------------------------------------------------------- decorators


def test_decorating_a_function_binds_each_call(engine: Engine, mode: Any) -> None:
    """A decorated function runs in a fresh block per call; metadata is kept."""
    scopes: list[ProcessingScope | None] = []

    @processing("service.p3", actor="job", engine=engine, mode=mode)
    def export(lead: Lead) -> str:
        """Export one lead."""
        scopes.append(current_processing())
        return lead.email

    assert export.__name__ == "export"
    assert export.__doc__ == "Export one lead."
    assert export(lead_for("service.p3")) == SECRET
    assert export(lead_for("service.p3")) == SECRET
    assert current_processing() is None
    assert [s.purpose if s else None for s in scopes] == ["service.p3", "service.p3"]


def test_decorated_function_restores_on_error(engine: Engine, mode: Any) -> None:
    """An exception from a decorated function restores the caller's binding."""

    @processing("service.p3", actor="job", engine=engine, mode=mode)
    def fail() -> None:
        raise ValueError("boom")

    with processing("service.p1", actor="caller", engine=engine):
        with pytest.raises(ValueError, match="boom"):
            fail()
        scope = current_processing()
        assert scope is not None
        assert scope.purpose == "service.p1"


def test_decorated_recursion_nests(engine: Engine) -> None:
    """A decorated function calling itself nests blocks and unwinds them in order."""
    depth: list[int] = []

    @processing("service.p4", actor="job", engine=engine)
    def walk(n: int) -> int:
        depth.append(n)
        return n if n == 0 else walk(n - 1)

    assert walk(5) == 0
    assert current_processing() is None


def test_decorating_an_async_function(engine: Engine, mode: Any) -> None:
    """An async function runs in a fresh block per call; the binding ends with the call."""

    @processing("service.p5", actor="worker", engine=engine, mode=mode)
    async def fetch(lead: Lead) -> tuple[str, str | None]:
        await asyncio.sleep(0)
        scope = current_processing()
        return lead.email, scope.purpose if scope else None

    async def main() -> tuple[tuple[str, str | None], ProcessingScope | None]:
        result = await fetch(lead_for("service.p5"))
        return result, current_processing()

    result, after = asyncio.run(main())
    assert result == (SECRET, "service.p5")
    assert after is None


def test_async_decorated_function_restores_on_error(engine: Engine) -> None:
    """An async decorated function raising restores its caller's binding."""

    @processing("service.p5", actor="worker", engine=engine)
    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def main() -> str | None:
        with processing("service.p1", actor="caller", engine=engine):
            with pytest.raises(ValueError, match="boom"):
                await fail()
            scope = current_processing()
            return scope.purpose if scope else None

    assert asyncio.run(main()) == "service.p1"


def test_async_with(engine: Engine) -> None:
    """`async with processing(...)` binds like `with`."""

    async def main() -> str | None:
        async with processing("service.p6", actor="worker", engine=engine):
            await asyncio.sleep(0)
            scope = current_processing()
            return scope.purpose if scope else None

    assert asyncio.run(main()) == "service.p6"
    assert current_processing() is None


def test_generator_functions_are_refused(engine: Engine) -> None:
    """A generator body runs after the call returns: decorating one is refused with advice."""

    def rows() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="inside it"):
        processing("service.p1", actor="a", engine=engine)(rows)


# --------------------------------------------------------------------------- isolation


def test_no_purpose_bleeds_between_100_threads(engine: Engine, sink: InMemoryAuditSink) -> None:
    """100 threads in blocks of different purposes each read under their own purpose only."""
    count = 100
    barrier = threading.Barrier(count)
    seen: dict[int, tuple[str | None, bool]] = {}
    leads = {i: lead_for(PURPOSES[i % 10], f"lead-{i}") for i in range(count)}

    def worker(i: int) -> None:
        purpose = PURPOSES[i % 10]
        with processing(purpose, actor=f"thread-{i}", engine=engine):
            barrier.wait()  # every thread is inside its block at once
            scope = current_processing()
            try:
                _ = leads[i].email
                ok = True
            except ProcessingDenied:
                ok = False
            seen[i] = (scope.purpose if scope else None, ok)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {i: (PURPOSES[i % 10], True) for i in range(count)}
    events = sink.events
    assert len(events) == count
    assert all(e.actor == f"thread-{int(e.subject_ref[5:])}" for e in events)
    assert all(e.purpose == PURPOSES[int(e.subject_ref[5:]) % 10] for e in events)


def test_no_purpose_bleeds_between_1000_tasks(engine: Engine, sink: InMemoryAuditSink) -> None:
    """1000 asyncio tasks under different purposes, interleaving at awaits, never mix them."""
    count = 1000

    async def task(i: int) -> tuple[str | None, str]:
        purpose = PURPOSES[i % 10]
        with processing(purpose, actor=f"task-{i}", engine=engine):
            await asyncio.sleep(0)
            value = lead_for(purpose, f"lead-{i}").email
            await asyncio.sleep(0)
            scope = current_processing()
            return (scope.purpose if scope else None), value

    async def main() -> list[tuple[str | None, str]]:
        return await asyncio.gather(*(task(i) for i in range(count)))

    results = asyncio.run(main())
    assert results == [(PURPOSES[i % 10], SECRET) for i in range(count)]
    events = sink.events
    assert len(events) == count
    assert all(e.purpose == PURPOSES[int(e.subject_ref[5:]) % 10] for e in events)


def test_tasks_inherit_the_block_active_at_creation(engine: Engine) -> None:
    """A task created inside a block sees it; entering a block inside a task stays in the task."""

    async def child() -> str | None:
        scope = current_processing()
        with processing("service.p9", actor="child", engine=engine):
            await asyncio.sleep(0)
        return scope.purpose if scope else None

    async def main() -> tuple[str | None, str | None]:
        with processing("service.p1", actor="parent", engine=engine):
            inherited = await asyncio.create_task(child())
            scope = current_processing()
            return inherited, scope.purpose if scope else None

    assert asyncio.run(main()) == ("service.p1", "service.p1")


def test_thread_pools_need_copy_context(engine: Engine) -> None:
    """A pool thread does not see the caller's block unless the call runs in a copied context."""
    with processing("service.p2", actor="a", engine=engine), ThreadPoolExecutor(1) as pool:
        bare = pool.submit(current_processing).result()
        context = contextvars.copy_context()
        copied = pool.submit(context.run, current_processing).result()
    assert bare is None
    assert copied is not None
    assert copied.purpose == "service.p2"


# --------------------------------------------------------------------------- defaults and modes


def test_set_engine_installs_a_process_wide_default(engine: Engine) -> None:
    """set_engine() is seen by every thread; its token restores the previous default."""
    assert get_engine() is None
    token = set_engine(engine)
    assert isinstance(token, EngineToken)
    seen: list[Engine | None] = []
    thread = threading.Thread(target=lambda: seen.append(get_engine()))
    thread.start()
    thread.join()
    assert seen == [engine]
    with processing("service.p1", actor="a") as scope:
        assert scope.engine is engine
        assert lead_for("service.p1").email == SECRET
    token.reset()
    token.reset()  # a second reset does nothing
    assert get_engine() is None


def test_set_engine_as_a_context_manager(engine: Engine) -> None:
    """`with set_engine(engine):` restores the previous default on exit."""
    with set_engine(engine, mode="monitor"):
        assert get_engine() is engine
        assert default_mode() == "monitor"
    assert get_engine() is None
    assert default_mode() == "enforce"


def test_an_explicit_engine_wins_over_the_default(engine: Engine) -> None:
    """engine= beats set_engine()."""
    other = Engine(make_register(), clock=lambda: NOW, audit=Audit([InMemoryAuditSink()]))
    set_engine(other)
    with processing("service.p1", actor="a", engine=engine) as scope:
        assert scope.engine is engine


def test_the_default_mode_applies_to_blocks_without_one(engine: Engine) -> None:
    """set_engine(mode='monitor') makes blocks without mode= monitor; mode= still wins."""
    set_engine(engine, mode="monitor")
    lead = lead_for("service.p1")
    with processing("service.p2", actor="a") as scope:
        assert scope.mode == "monitor"
        assert lead.email == SECRET
    with processing("service.p2", actor="a", mode="enforce"), pytest.raises(ProcessingDenied):
        _ = lead.email
    with pytest.raises(ConfigurationError):
        set_engine(engine, mode="loud")  # type: ignore[arg-type]  # refused


def test_an_injected_clock_decides_the_block(engine: Engine, mode: Any) -> None:
    """processing(clock=...) decides reads at its instants (retention here), not the engine's."""
    lead = lead_for("service.p1")
    later = T0 + timedelta(days=366)
    with processing("service.p1", actor="a", engine=engine, mode=mode, clock=lambda: later):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied, match="retention-expired"):
                _ = lead.email
        else:
            assert lead.email == SECRET
    with processing("service.p1", actor="a", engine=engine, mode=mode):
        assert lead.email == SECRET


def test_a_naive_clock_is_refused(engine: Engine) -> None:
    """A clock returning a naive datetime fails the read instead of guessing a zone."""
    lead = lead_for("service.p1")
    naive = datetime(2026, 3, 1)  # naive on purpose
    with (
        processing("service.p1", actor="a", engine=engine, clock=lambda: naive),
        pytest.raises(ValueError, match="naive"),
    ):
        _ = lead.email


def test_a_replaced_register_applies_from_the_next_block(engine: Engine) -> None:
    """Setting engine.register takes effect for blocks entered afterwards."""
    lead = lead_for("service.p1")
    with processing("service.p1", actor="a", engine=engine):
        assert lead.email == SECRET
    engine.register = Register(
        [
            Purpose(
                "service.p1",
                "p1",
                "Processing",
                "contract",
                Retention("P1Y"),
                categories=["identity"],
            )
        ],
        [DataCategory("identity"), DataCategory("contact"), DataCategory("contact.email")],
    )
    with (
        processing("service.p1", actor="a", engine=engine),
        pytest.raises(ProcessingDenied, match="excessive"),
    ):
        _ = lead.email


def test_get_audit_resolves_the_engines_audit(engine: Engine, sink: InMemoryAuditSink) -> None:
    """get_audit() gives the engine's Audit, a default one, or wraps a bare sink."""
    audit = get_audit(engine)
    assert audit.sinks == (sink,)
    bare = Engine(make_register())
    default = get_audit(bare)
    assert isinstance(default.sinks[0], LoggingAuditSink)
    assert get_audit(bare) is default  # the same one every time
    wrapped = Engine(make_register(), audit=sink)
    assert get_audit(wrapped).sinks == (sink,)
    with pytest.raises(ConfigurationError, match="audit"):
        get_audit(Engine(make_register(), audit="logs"))
    with processing("service.p1", actor="a", engine=engine):
        assert get_audit() is audit


def test_the_block_exit_drains_the_audit(engine: Engine, sink: InMemoryAuditSink) -> None:
    """Events are built when the block exits, not on the read."""
    lead = lead_for("service.p1")
    with processing("service.p1", actor="a", engine=engine):
        _ = lead.email
        before = sink.events
    after = sink.events
    assert before == ()
    assert [e.reason for e in after] == [Reason.SAME_PURPOSE]


def test_an_audit_failure_at_exit_is_noted_on_the_error_in_flight() -> None:
    """When a block ends with an error and the audit fails too, the error carries a note."""

    class Broken:
        down = True

        def emit(self, events: Any) -> None:
            if self.down:
                raise OSError("disk full")

    broken = Broken()
    audit = Audit([broken])
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    lead = lead_for("service.p1")

    def failing_block() -> None:
        with processing("service.p1", actor="a", engine=engine):
            _ = lead.email
            raise KeyError("boom")

    with pytest.raises(KeyError) as caught:
        failing_block()
    assert any("audit could not be written" in note for note in caught.value.__notes__)
    with pytest.raises(AuditError), processing("service.p1", actor="a", engine=engine):
        _ = lead.email
    broken.down = False
    audit.flush()
    assert audit.pending == 0


def test_an_engine_is_freed_once_nothing_uses_it() -> None:
    """The per-engine read-path state does not keep an engine (or its audit) alive."""
    import gc
    import weakref

    engine = Engine(make_register(), clock=lambda: NOW, audit=Audit([InMemoryAuditSink()]))
    with processing("service.p1", actor="a", engine=engine):
        _ = lead_for("service.p1").email
    gone = weakref.ref(engine)
    del engine
    gc.collect()
    assert gone() is None
