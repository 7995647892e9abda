"""Benchmark the guarded read path against a plain attribute read and a minimal check.

Run: ``.venv/bin/python benchmarks/bench_read.py`` (about twenty seconds). It
prints, in one run, medians in nanoseconds and their ratios:

(a) a plain slotted attrs attribute read;
(b) a minimal hand-written check: a descriptor reading one ContextVar and one
    precomputed dict before the slot;
(c) an allowed guarded read on the common path (same purpose, then a compatible
    purpose), audited into the bounded buffer; once more with a store whose
    ``version`` is a plain attribute instead of a property, to show that
    cost; plus what draining costs per event, off the read path;
(d) a denied read, including raising and catching ProcessingDenied, against (c);
(e) ``processing`` enter+exit against a bare ContextVar set/reset pair;
(f) memory per tagged record against the same record untagged holding the same
    subject id and dates (tracemalloc), in bytes.

No assertions: the figures are for people.
"""

from __future__ import annotations

import contextvars
import gc
import statistics
import sys
import timeit
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from purposelimit._audit import Audit, AuditEvent
from purposelimit._context import SPEEDUPS, processing
from purposelimit._engine import Engine
from purposelimit._errors import ProcessingDenied
from purposelimit._model import (
    Collection,
    Compatibility,
    DataCategory,
    Purpose,
    Retention,
)
from purposelimit._records import TaggedRecord, personal, record
from purposelimit._register import Register

REPEAT = 7
ROUNDS = 25
UNROLL = 20


class NullSink:
    """Receives events and drops them: measures building, not storing."""

    def emit(self, events: Sequence[AuditEvent]) -> None:
        pass


def build_engine(capacity: int) -> Engine:
    register = Register(
        [
            Purpose(
                "client.contract",
                "Contracts",
                "Managing our customers' contracts",
                "contract",
                Retention("P5Y"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "prospection.postal",
                "Postal offers",
                "Sending our offers by post to our customers",
                "legitimate-interests",
                Retention("P3Y", "last-contact"),
                categories=["identity", "contact"],
                direct_marketing=False,
            ),
            Purpose(
                "prospection.email_b2c",
                "E-mail offers",
                "Sending our offers by e-mail to consumers who agreed",
                "consent",
                Retention("P3Y", "last-contact"),
                categories=["identity", "contact"],
                direct_marketing=True,
            ),
        ],
        [
            DataCategory("identity"),
            DataCategory("identity.name"),
            DataCategory("contact"),
            DataCategory("contact.email"),
        ],
        [
            Compatibility(
                "contract-to-postal",
                "client.contract",
                "prospection.postal",
                "compatible",
                link="same relationship",
                context="customers told at checkout",
                nature="name and address",
                consequences="postal mail",
                safeguards=["objection offered"],
            )
        ],
    )
    return Engine(register, audit=Audit([NullSink()], capacity=capacity))


@attrs.define
class Plain:
    name: str
    email: str


_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench", default=None)
_ALLOWED = {"client.contract": True}


class MinimalCheck:
    """(b): one ContextVar read and one precomputed dict, then the slot."""

    __slots__ = ("_get", "_set")

    def __init__(self, member: Any) -> None:
        self._get = member.__get__
        self._set = member.__set__

    def __set__(self, obj: Any, value: Any) -> None:
        self._set(obj, value)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        if _ALLOWED.get(_var.get()):  # type: ignore[arg-type]  # None is simply absent
            return self._get(obj, objtype)
        raise PermissionError("denied")


@attrs.define
class Checked:
    name: str
    email: str


setattr(Checked, "name", MinimalCheck(Checked.__dict__["name"]))  # noqa: B010 - replace the slot


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")


@attrs.define
class Untagged:
    """The same record without a tag: its fields plus the subject id and three dates."""

    name: str
    email: str
    subject: str
    collected_at: datetime
    last_contact_at: datetime | None = None
    contract_ended_at: datetime | None = None


def timed(stmt: str, namespace: dict[str, Any], number: int = 1000) -> float:
    """Nanoseconds per read of one run of *stmt* (UNROLL reads) repeated *number* times."""
    return timeit.Timer(stmt, globals=namespace).timeit(number=number) / (number * UNROLL) * 1e9


class StaticStore:
    """A store nobody writes to, whose ``version`` is a plain attribute (not a property)."""

    version = 0

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def subject_events(self, subject: str) -> Any:
        return self._inner.subject_events(subject)

    def authorisations(self) -> Any:
        return self._inner.authorisations()


def reads(expr: str) -> str:
    return "\n".join([expr] * UNROLL)


def main() -> None:
    collected = datetime(2026, 1, 10, tzinfo=UTC)
    engine = build_engine(capacity=10_000_000)
    audit = engine.audit
    assert isinstance(audit, Audit)
    contract = Collection("client.contract", source="web-form")

    plain = Plain("Ada Lovelace", "ada@example.org")
    checked = Checked("Ada Lovelace", "ada@example.org")
    lead = Lead(
        "Ada Lovelace",
        "ada@example.org",
        subject="lead-42",
        collection=contract,
        collected_at=collected,
    )
    results: dict[str, float] = {}
    ns: dict[str, Any] = {"plain": plain, "checked": checked, "lead": lead}
    static = Engine(
        engine.register, StaticStore(engine.store), audit=Audit([NullSink()], capacity=10_000_000)
    )

    def plain_run() -> float:
        return timed(reads("plain.name"), ns)

    def checked_run() -> float:
        token = _var.set("client.contract")
        try:
            return timed(reads("checked.name"), ns)
        finally:
            _var.reset(token)

    def guarded_run(purpose: str, on: Engine) -> Callable[[], float]:
        def run() -> float:
            with processing(purpose, actor="bench", engine=on):
                _ = lead.name  # warm: decided once, memoised on the record
                return timed(reads("lead.name"), ns)
            # the block's exit drains the buffer, outside the timed run

        return run

    # Interleaved rounds, so that a busy machine slows every case alike.
    cases = {
        "a": plain_run,
        "b": checked_run,
        "c_same": guarded_run("client.contract", engine),
        "c_compatible": guarded_run("prospection.postal", engine),
        "c_static": guarded_run("client.contract", static),
    }
    samples: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(ROUNDS):
        for key, run in cases.items():
            samples[key].append(run())
    results.update({key: statistics.median(values) for key, values in samples.items()})

    # Draining: building events from the buffer and handing them to a sink, per event.
    with processing("client.contract", actor="bench", engine=engine):
        for _ in range(50_000):
            _ = lead.name
        start = timeit.default_timer()
        audit.flush()
        results["drain"] = (timeit.default_timer() - start) / 50_000 * 1e9

    denied_stmt = "try:\n    lead.email\nexcept ProcessingDenied:\n    pass"
    ns["ProcessingDenied"] = ProcessingDenied
    with processing("prospection.email_b2c", actor="bench", engine=engine):
        exec(denied_stmt, ns)  # warm: decided once, memoised on the record
        runs = [timed(reads(denied_stmt), ns, number=250) for _ in range(REPEAT)]
    audit.flush()
    results["d"] = statistics.median(runs)

    block = processing("client.contract", actor="bench", engine=engine)

    def enter_exit() -> None:
        with block:
            pass

    def bare() -> None:
        reset = _var.reset
        reset(_var.set("client.contract"))

    results["e_processing"] = (
        statistics.median(timeit.repeat(enter_exit, repeat=REPEAT, number=50_000)) / 50_000 * 1e9
    )
    results["e_bare"] = (
        statistics.median(timeit.repeat(bare, repeat=REPEAT, number=50_000)) / 50_000 * 1e9
    )

    results.update(memory(contract, collected, engine))

    print(
        f"purposelimit read-path benchmark (Python {sys.version.split()[0]}, "
        f"{'compiled' if SPEEDUPS is not None else 'pure-Python'} read path; medians of "
        f"{ROUNDS} interleaved rounds for (a)-(c), {REPEAT} runs for (d)-(e))"
    )
    print(f"(a) plain slotted attrs read            {results['a']:8.1f} ns")
    print(
        f"(b) minimal check (ContextVar + dict)   {results['b']:8.1f} ns"
        f"   {results['b'] / results['a']:5.1f}x (a)"
    )
    for key, label in (
        ("c_same", "same purpose"),
        ("c_compatible", "compatible purpose"),
        ("c_static", "same, attribute version"),
    ):
        print(
            f"(c) guarded read, {label:<21} {results[key]:8.1f} ns"
            f"   {results[key] / results['a']:5.1f}x (a)   {results[key] / results['b']:4.2f}x (b)"
        )
    print(f"    audit drain, per event (off the read path) {results['drain']:8.1f} ns")
    print(
        f"(d) denied read incl. exception         {results['d']:8.1f} ns"
        f"   {results['d'] / results['c_same']:5.2f}x (c) same purpose"
    )
    print(
        f"(e) processing enter+exit               {results['e_processing']:8.1f} ns"
        f"   {results['e_processing'] / results['e_bare']:5.1f}x bare ContextVar set/reset "
        f"({results['e_bare']:.1f} ns)"
    )
    print(
        f"(f) memory per record: untagged {results['mem_untagged']:.1f} B, tagged "
        f"{results['mem_tagged']:.1f} B (+{results['mem_tagged'] - results['mem_untagged']:.1f} B"
        f"), tagged after one read {results['mem_read']:.1f} B"
    )


def memory(contract: Collection, collected: datetime, engine: Engine) -> dict[str, float]:
    count = 50_000
    name, email = "Ada Lovelace", "ada@example.org"
    subjects = [f"lead-{i}" for i in range(count)]

    def measure(make: Callable[[int], object]) -> tuple[float, list[object]]:
        items: list[object] = [None] * count  # allocated before measuring
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            items[i] = make(i)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / count, items

    untagged, _keep1 = measure(lambda i: Untagged(name, email, subjects[i], collected))
    tagged, keep2 = measure(
        lambda i: Lead(
            name, email, subject=subjects[i], collection=contract, collected_at=collected
        )
    )
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    with processing("client.contract", actor="bench", engine=engine):
        for item in keep2:
            _ = item.name  # type: ignore[attr-defined]  # a Lead
    # The block's exit drained the audit buffer: what remains is the per-record memo.
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "mem_untagged": untagged,
        "mem_tagged": tagged,
        "mem_read": tagged + (after - before) / count,
    }


if __name__ == "__main__":
    main()
