"""The compiled read path (purposelimit/_speedups.c) against its pure-Python reference.

``purposelimit._speedups`` completes in C only the memoised read of a personal
field and ``processing``'s entry and exit; every other case goes to the Python
reference before any side effect. These tests pin that contract:

* a differential run: the same seeded random walk over the read path (reads
  allowed and denied, enforce and monitor, nested and foreign blocks, store
  writes, clock moves past retention limits, tag changes, a tiny audit buffer
  and a failing sink) in two fresh interpreters, one compiled and one with
  ``PURPOSELIMIT_PURE_PYTHON=1``, must print the same trace and audit events;
* the edge cases of the compiled path, run with whichever implementation is
  loaded (and again under the pure-Python one, in a subprocess);
* garbage collection and memory: the C types traverse what they hold, and a
  long run of memoised reads neither leaks memory nor references;
* the build check CI relies on (``PURPOSELIMIT_REQUIRE_COMPILED``).

Test data are synthetic; no personal value is ever shown in a message.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import threading
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _read_path_support import make_register

import purposelimit
from purposelimit._audit import Audit, InMemoryAuditSink
from purposelimit._compiled import SPEEDUPS
from purposelimit._context import (
    _CURRENT,
    _PyBlock,
    current_processing,
    processing,
    set_engine,
)
from purposelimit._engine import Engine
from purposelimit._errors import NaiveDatetimeError, ProcessingDenied
from purposelimit._model import (
    Collection,
    Compatibility,
    Consent,
    DataCategory,
    Evidence,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._records import TaggedRecord, _PyGuard, _read, personal, record
from purposelimit._register import Register
from purposelimit._store import InMemoryStore

ROOT = Path(__file__).resolve().parents[1]


def _built() -> bool:
    """Whether the extension was built here (importable), whatever the environment says."""
    try:
        return importlib.util.find_spec("purposelimit._speedups") is not None
    except ImportError:
        return False


BUILT = _built()
#: Whether this process runs the compiled read path.
COMPILED = SPEEDUPS is not None
#: Set in the subprocess that runs this file again under the pure-Python read path.
TWIN = "PURPOSELIMIT_SPEEDUPS_TWIN"

SECRET = "SECRET-VALUE-123"
OTHER_SECRET = "OTHER-SECRET-4567"
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
CONTRACT = Collection("client.contract", source="checkout")
MODES = ("enforce", "monitor")
OUT_OF_ORDER = (
    " exited while another processing block was active: blocks must exit in the reverse "
    "order of entry (a generator that yields inside a block leaves it open in its caller)"
)


@record
class Lead(TaggedRecord):
    name: str = personal("identity")
    email: str = personal("contact.email")


class PlainSubLead(Lead):
    """A plain subclass of a record class: it has a __dict__."""


class SlottedSubLead(Lead):
    """A slotted subclass of a record class."""

    __slots__ = ()


def lead(subject: str = "lead-1", cls: type[Lead] = Lead, **tag: Any) -> Lead:
    tag = {"subject": subject, "collection": CONTRACT, "collected_at": T0, **tag}
    return cls("Ada", SECRET, **tag)


class Clock:
    """A clock tests move by hand; it raises while `broken`, returns a naive datetime while
    `naive`."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.broken = False
        self.naive = False

    def __call__(self) -> datetime:
        if self.broken:
            raise ClockBroken("the clock is broken")
        if self.naive:
            return self.now.replace(tzinfo=None)
        return self.now


class ClockBroken(Exception):
    """Raised by a broken Clock."""


class StoreBroken(Exception):
    """Raised by a FragileStore's version while it is broken."""


class FragileStore(InMemoryStore):
    """An InMemoryStore whose ``version`` property raises while `broken`, and reads
    `probe()` (a guarded read) once per outer access while a probe is set."""

    def __init__(self) -> None:
        self.broken = False
        self.probe: Callable[[], str] | None = None
        self.probed: list[int] = []
        self._inside = False
        self._version = 0
        super().__init__()

    @property
    def version(self) -> int:
        if self.broken:
            raise StoreBroken("the store is unreachable")
        if self.probe is not None and not self._inside:
            self._inside = True
            try:
                self.probed.append(len(self.probe()))
            finally:
                self._inside = False
        return self._version

    @version.setter
    def version(self, value: int) -> None:
        self._version = value


class DropSink:
    """An audit sink that drops every event."""

    def __init__(self) -> None:
        self.count = 0

    def emit(self, events: Any) -> None:
        self.count += len(events)


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
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def engine(sink: InMemoryAuditSink, clock: Clock) -> Engine:
    return Engine(make_register(), clock=clock, audit=Audit([sink]))


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Any:
    return request.param


def outcome(action: Callable[[], Any]) -> Any:
    """The value *action* returns, or the exception it raises."""
    try:
        return action()
    except Exception as error:
        return error


def reference_calls(action: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    """Run *action*; count the calls of the Python reference's ``__get__`` and ``_read``."""
    codes = {_PyGuard.__get__.__code__: "get", _read.__code__: "read"}
    calls = {"get": 0, "read": 0}

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code in codes:
            calls[codes[frame.f_code]] += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        result = outcome(action)
    finally:
        sys.setprofile(previous)
    return result, calls


def fields_of(sink: InMemoryAuditSink) -> list[str]:
    return [event.field for event in sink.events]


def events_of(sink: InMemoryAuditSink) -> list[tuple[Any, ...]]:
    return [
        (e.actor, e.purpose, e.record_type, e.field, e.allowed, e.reason, e.mode, e.monitored)
        for e in sink.events
    ]


# =========================================================================== 1. differential

#: The scenario run by the differential test, in a fresh interpreter per implementation:
#: ``python scenario.py STEPS SEED...`` prints one JSON object. Values never leave it:
#: a read's outcome is the value's length, or the denial's reason code, field, record type,
#: subject reference (a keyed pseudonym) and a fingerprint of its message.
SCENARIO = r'''"""A seeded random walk over the read path; prints a JSON trace."""

import contextvars
import hashlib
import json
import logging
import math
import random
import sys
from datetime import UTC, datetime, timedelta

import purposelimit
import purposelimit._context as context_module
import purposelimit._records as records_module
from purposelimit import (
    Audit,
    AuditError,
    Collection,
    CollectionTag,
    Compatibility,
    Consent,
    DataCategory,
    Engine,
    Evidence,
    FrozenTaggedRecord,
    InMemoryStore,
    Objection,
    ObjectionWithdrawal,
    ProcessingDenied,
    Purpose,
    Register,
    Retention,
    TaggedRecord,
    Withdrawal,
    current_processing,
    personal,
    processing,
    record,
    set_engine,
)
from purposelimit._time import add_duration, parse_duration

START = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
PURPOSES = (
    "client.contract",
    "prospection.postal",
    "newsletter.product",
    "hr.recruitment",
    "analytics.usage",
    "undeclared.purpose",
)
SUBJECTS = ("s-0", "s-1", "s-2", "s-3")


class Clock:
    """The scenario's clock: moved by the steps."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class View:
    """Another clock object reading the same time (replacing the engine's clock with it
    rebuilds the engine's runtime: new bindings, every memo stale)."""

    def __init__(self, base):
        self.base = base

    def __call__(self):
        return self.base.now


class Collector:
    """The sink whose events the trace reports."""

    def __init__(self):
        self.events = []
        self.batches = []

    def emit(self, events):
        self.batches.append(len(events))
        self.events.extend(events)


class Flaky:
    """A sink whose next `failures` batches fail."""

    def __init__(self):
        self.failures = 0
        self.received = 0

    def emit(self, events):
        if self.failures:
            self.failures -= 1
            raise OSError("sink down")
        self.received += len(events)


def make_register():
    return Register(
        [
            Purpose(
                "client.contract",
                "Contracts",
                "Managing contracts",
                "contract",
                Retention("P1Y"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "prospection.postal",
                "Postal offers",
                "Offers by post",
                "legitimate-interests",
                Retention("P2Y", "last-contact"),
                categories=["identity", "contact"],
                direct_marketing=True,
            ),
            Purpose(
                "newsletter.product",
                "Product news",
                "News by e-mail",
                "consent",
                Retention("P1Y", "last-contact"),
                categories=["identity.name", "contact.email"],
                direct_marketing=True,
            ),
            Purpose(
                "hr.recruitment",
                "Recruitment",
                "Assessing applications",
                "legitimate-interests",
                Retention("P6M"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "analytics.usage",
                "Usage analytics",
                "Counting visits",
                "legitimate-interests",
                Retention("P3M"),
                categories=["identity.name"],
            ),
        ],
        [
            DataCategory("identity"),
            DataCategory("identity.name"),
            DataCategory("contact"),
            DataCategory("contact.email"),
            DataCategory("contact.phone"),
        ],
        [
            Compatibility(
                "contract-to-postal",
                "client.contract",
                "prospection.postal",
                "compatible",
                link="same customers",
                context="told at checkout",
                nature="name and address",
                consequences="postal mail",
                safeguards=["objection offered"],
            ),
            Compatibility(
                "recruitment-not-prospection",
                "hr.recruitment",
                "prospection",
                "prohibited",
                source="synthetic test entry",
            ),
        ],
        version="diff-1",
    )


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")
    company: str = ""


@record(frozen=True)
class Card(FrozenTaggedRecord):
    phone: str = personal("contact.phone")


@record
class Swapped(Lead):
    """Lead with `name` declared again under another category: no new slot (a Lead's
    __class__ can become Swapped and back), but the field order and memo indices differ."""

    name: str = personal("contact.email", default="")


class SubLead(Lead):
    """A plain subclass of a record class (it has a __dict__)."""


@record
class Vip(Lead):
    """A record subclass of a record class, with a personal field of its own."""

    tier: str = personal("identity", default="gold")


def fingerprint(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def descriptor(cls, name):
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    raise KeyError(name)


def scope_of():
    scope = current_processing()
    return None if scope is None else [scope.purpose, scope.actor, scope.mode]


def run(seed, steps):
    rng = random.Random(seed)
    clock = Clock(START + timedelta(days=rng.randrange(0, 30)))
    view = View(clock)
    store = InMemoryStore(clock=clock)
    collector = Collector()
    flaky = Flaky()
    audit = Audit(
        [collector, flaky],
        capacity=rng.choice((1, 2, 3, 5, 8)),
        pseudonym_key=b"synthetic-test-key-0123456789",
        on_failure=rng.choice(("fail-closed", "continue")),
    )
    engine = Engine(make_register(), store, clock=clock, audit=audit)
    collections = {p: Collection(p, source="src") for p in PURPOSES[:5]}

    def tag(i):
        return {
            "subject": SUBJECTS[i % len(SUBJECTS)],
            "collection": collections[PURPOSES[i % 5]],
            "collected_at": clock.now - timedelta(days=rng.randrange(0, 200)),
        }

    # Built with no engine reachable: an over-collected field is decided (excessive) at reads.
    recs = []
    for i in range(10):
        kind = i % 4
        if kind == 0:
            recs.append(Lead("n" * (3 + i), "e" * (10 + i), "co", **tag(i)))
        elif kind == 1:
            recs.append(Card("p" * (20 + i), **tag(i)))
        elif kind == 2:
            recs.append(SubLead("n" * (30 + i), "e" * (40 + i), **tag(i)))
        else:
            recs.append(Vip("n" * (50 + i), "e" * (60 + i), tier="t" * (70 + i), **tag(i)))
    fields = {Lead: ("name", "email"), Card: ("phone",), SubLead: ("name", "email"),
              Vip: ("name", "email", "tier"), Swapped: ("name", "email")}
    default_token = set_engine(engine, mode=rng.choice(("enforce", "monitor")))
    pool = []
    for i in range(8):
        purpose = rng.choice(PURPOSES)
        pool.append(
            processing(
                purpose,
                actor=f"actor-{i}",
                engine=rng.choice((engine, None)),
                mode=rng.choice(("enforce", "monitor", None)),
                clock=rng.choice((None, None, clock)),
            )
        )
    stack = []
    trace = []
    py_get = records_module._PyGuard.__get__.__code__
    counters = {"reads": 0, "python_get": 0}

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is py_get:
            counters["python_get"] += 1

    def outcome_of_read(action):
        counters["reads"] += 1
        sys.setprofile(profile)
        try:
            value = action()
        except ProcessingDenied as error:
            sys.setprofile(None)
            context = error.__context__
            return [
                "denied",
                str(error.reason),
                error.field,
                error.record_type,
                error.subject_ref,
                fingerprint(str(error)),
                fingerprint(error.remedy),
                None if context is None else type(context).__name__,
                audit.buffered,
            ]
        except (AuditError, AttributeError) as error:
            sys.setprofile(None)
            return ["error", type(error).__name__, audit.buffered]
        sys.setprofile(None)
        return ["ok", len(value), audit.buffered]

    def read_step():
        r = rng.choice(recs)
        scope = current_processing()
        if scope is not None and rng.random() < 0.4:
            # Often a record collected for the block's purpose, or one compatible with it.
            matching = [x for x in recs if x.collection.purpose == scope.purpose]
            if scope.purpose == "prospection.postal":
                matching += [x for x in recs if x.collection.purpose == "client.contract"]
            if matching:
                r = rng.choice(matching)
        cls = type(r)
        name = rng.choice(fields[cls])
        style = rng.random()
        if style < 0.3:
            return ["read", name] + outcome_of_read(lambda: getattr(r, name))
        if style < 0.6:  # a burst: memoised reads
            return ["burst", name] + [
                outcome_of_read(lambda: getattr(r, name)) for _ in range(rng.randrange(2, 8))
            ]
        if style < 0.7:
            guard = descriptor(cls, name)
            return ["get1", name] + outcome_of_read(lambda: guard.__get__(r))
        if style < 0.75:
            guard = descriptor(cls, name)
            return ["get-none", name] + outcome_of_read(lambda: guard.__get__(r, None))
        if style < 0.8:
            guard = descriptor(cls, name)
            return ["get-type", name] + outcome_of_read(lambda: guard.__get__(r, cls))
        if style < 0.85 and isinstance(r, Lead) and name in ("name", "email"):
            # Lead's own guard on a subclass instance (SubLead, Vip shares the index).
            guard = Lead.__dict__[name]
            return ["base-guard", name] + outcome_of_read(lambda: guard.__get__(r, cls))
        # Inside an except block: a denial's __context__ is the handled exception.
        def in_handler():
            try:
                raise KeyError("handled")
            except KeyError:
                return getattr(r, name)

        return ["in-except", name] + outcome_of_read(in_handler)

    def enter_step():
        roll = rng.random()
        if roll < 0.2 and stack:
            block = rng.choice(stack)  # a block nested in itself
        elif roll < 0.8:
            block = rng.choice(pool)
        else:
            block = processing(
                rng.choice(PURPOSES),
                actor="fresh",
                engine=rng.choice((engine, None)),
                mode=rng.choice(("enforce", "monitor", None)),
            )
        scope = block.__enter__()
        stack.append(block)
        return ["enter", [scope.purpose, scope.actor, scope.mode], scope_of()]

    def exit_step():
        if len(stack) >= 2 and rng.random() < 0.1:
            block = stack[rng.randrange(len(stack) - 1)]
            if block is not stack[-1]:
                try:
                    block.__exit__(None, None, None)
                except RuntimeError as error:
                    return ["exit-out-of-order", str(error), scope_of()]
                return ["exit-out-of-order", "no error", scope_of()]
        block = stack.pop()
        error = None
        if rng.random() < 0.2:
            error = ValueError("in flight")
        try:
            block.__exit__(None if error is None else ValueError, error, None)
        except AuditError as failure:
            return ["exit", "AuditError", fingerprint(str(failure)), scope_of()]
        notes = [] if error is None else list(getattr(error, "__notes__", []))
        return ["exit", "ok", len(notes), scope_of(), audit.buffered]

    def foreign_step():
        """The top block entered (or exited and entered) in another context meanwhile."""
        block = stack[-1]
        seen = []

        def top_level():
            block.__enter__()
            seen.append(scope_of())
            r = rng.choice(recs)
            name = rng.choice(fields[type(r)])
            seen.append(outcome_of_read(lambda: getattr(r, name)))

        def exit_then_enter():
            block.__exit__(None, None, None)
            seen.append(scope_of())
            block.__enter__()
            seen.append(scope_of())

        if rng.random() < 0.5:
            contextvars.Context().run(top_level)
            kind = "foreign-top"
        else:
            try:
                contextvars.copy_context().run(exit_then_enter)
            except AuditError as failure:
                seen.append(["AuditError", fingerprint(str(failure))])
            kind = "foreign-nested"
        return [kind, seen, scope_of()]

    def copied_read_step():
        seen = []

        def inside():
            block = rng.choice(pool)
            with block:
                r = rng.choice(recs)
                name = rng.choice(fields[type(r)])
                seen.append(outcome_of_read(lambda: getattr(r, name)))

        try:
            contextvars.copy_context().run(inside)
        except AuditError as failure:
            seen.append(["AuditError", fingerprint(str(failure))])
        return ["copied", seen, scope_of()]

    def boundary_step():
        """A read, then the clock onto its memo's end of validity (or just before), a read."""
        r = rng.choice(recs)
        name = rng.choice(fields[type(r)])
        first = outcome_of_read(lambda: getattr(r, name))
        index = descriptor(type(r), name).index
        extra = r.field_tags
        if extra is None or index >= len(extra.memo) or not math.isfinite(extra.memo[index][2]):
            return ["boundary", name, first]
        end = datetime.fromtimestamp(extra.memo[index][2], UTC)
        clock.now = end + timedelta(microseconds=rng.choice((0, 0, -1)))
        second = outcome_of_read(lambda: getattr(r, name))
        return ["boundary", name, first, clock.now.isoformat(), second]

    def store_step():
        subject = rng.choice(SUBJECTS)
        roll = rng.random()
        at = clock.now - timedelta(minutes=rng.randrange(0, 600))
        if roll < 0.5:
            mechanism = rng.choice(("double-opt-in", "double-opt-in", "pre-ticked", None))
            event = Consent(
                subject=subject,
                purposes=(
                    rng.choice(("newsletter.product", "prospection.postal", "hr.recruitment")),
                ),
                given_at=at,
                state=rng.choice(("given", "given", "given", "refused")),
                expires_at=(
                    None if rng.random() < 0.7 else at + timedelta(days=rng.randrange(1, 90))
                ),
                evidence=None if mechanism is None else Evidence(mechanism=mechanism),
                id=f"c-{step}",
            )
        elif roll < 0.8:
            event = Withdrawal(subject, (rng.choice(("newsletter.product", "prospection")),), at,
                               id=f"w-{step}")
        elif roll < 0.85 or not objections:
            event = Objection(subject, at=at, id=f"o-{step}")
            objections.append(event)
        else:
            objection = objections.pop(rng.randrange(len(objections)))
            event = ObjectionWithdrawal(objection.id, objection.subject, at=max(at, objection.at),
                                        id=f"ow-{step}")
        recorded = store.record(event, actor="scenario")
        return ["store", type(event).__name__, recorded, store.version]

    def clock_step():
        roll = rng.random()
        if roll < 0.15:
            # Onto a retention limit, or a microsecond either side: a memo's validity bound.
            r = rng.choice(recs)
            anchor = r.last_contact_at if rng.random() < 0.5 else None
            anchor = anchor or r.collected_at
            limit = add_duration(anchor, parse_duration(rng.choice(("P1Y", "P6M", "P3M", "P2Y"))))
            clock.now = limit + timedelta(microseconds=rng.choice((0, 0, -1, 1)))
            return ["clock", "limit", clock.now.isoformat()]
        if roll < 0.7:
            delta = timedelta(seconds=rng.randrange(1, 7200))
        elif roll < 0.92:
            delta = timedelta(days=rng.randrange(1, 20))
        elif roll < 0.96:
            delta = timedelta(days=rng.randrange(100, 400))
        else:
            delta = -timedelta(minutes=rng.randrange(1, 60 * 24 * 20))
        clock.now = clock.now + delta
        if clock.now > START + timedelta(days=420):  # wrap around: keep decisions varied
            clock.now = START + timedelta(days=rng.randrange(0, 60))
        return ["clock", clock.now.isoformat()]

    def touch_step():
        mutable = [r for r in recs if not isinstance(r, Card)]
        r = rng.choice(mutable)
        roll = rng.random()
        if roll < 0.5:
            r.last_contact_at = clock.now - timedelta(days=rng.randrange(0, 10))
            return ["touch", "last_contact_at"]
        if roll < 0.65:
            r.contract_ended_at = clock.now
            return ["touch", "contract_ended_at"]
        if roll < 0.8:
            r.field_tags = {
                "email": CollectionTag(
                    r.subject,
                    collections[rng.choice(PURPOSES[:5])],
                    clock.now - timedelta(days=rng.randrange(0, 100)),
                )
            }
            return ["touch", "field_tags"]
        if roll < 0.9:
            r.field_tags = None
            return ["touch", "field_tags-none"]
        if id(r) not in deleted:
            del r.email
            deleted.add(id(r))
            return ["touch", "deleted"]
        r.email = "e" * 7
        deleted.discard(id(r))
        return ["touch", "restored"]

    def swap_step():
        """A Lead becomes a Swapped (same slots, other categories) or back: its memos are
        another class's fields' now."""
        swappable = [r for r in recs if type(r) in (Lead, Swapped)]
        r = rng.choice(swappable)
        before = rng.choice(("name", "email"))
        first = outcome_of_read(lambda: getattr(r, before))
        r.__class__ = Swapped if type(r) is Lead else Lead
        after = rng.choice(("name", "email"))
        second = outcome_of_read(lambda: getattr(r, after))
        return ["swap", type(r).__name__, before, first, after, second]

    def class_step():
        cls = rng.choice((Lead, Card, SubLead, Vip))
        name = rng.choice(fields[cls])
        guard = descriptor(cls, name)
        through_get = guard.__get__(None, cls)
        return [
            "class",
            cls.__name__,
            name,
            getattr(cls, name) is guard,
            through_get is guard,
            repr(guard),
            audit.buffered,
        ]

    def misc_step():
        roll = rng.random()
        if roll < 0.3:
            try:
                audit.flush()
            except AuditError as failure:
                return ["flush", "AuditError", fingerprint(str(failure))]
            return ["flush", "ok"]
        if roll < 0.5:
            flaky.failures = rng.randrange(1, 6)
            return ["flaky", flaky.failures]
        if roll < 0.65:
            engine.clock = clock  # the same clock: only the configuration epoch advances
            return ["reclock", "same"]
        if roll < 0.75:
            engine.clock = rng.choice((clock, view))  # maybe another clock: a new runtime
            return ["reclock", type(engine.clock).__name__]
        if roll < 0.9:
            block = rng.choice(pool)
            block.mode = rng.choice(("enforce", "monitor", None))
            return ["mode", block.purpose, block.mode]
        nonlocal default_token
        default_token.reset()
        default_token = set_engine(engine, mode=rng.choice(("enforce", "monitor")))
        return ["default-mode"]

    objections = []
    deleted = set()
    table = (
        (0.42, read_step),
        (0.54, lambda: enter_step() if len(stack) < 5 else read_step()),
        (0.62, lambda: exit_step() if stack else read_step()),
        (0.64, lambda: foreign_step() if stack else read_step()),
        (0.66, copied_read_step),
        (0.68, lambda: boundary_step() if stack else read_step()),
        (0.72, store_step),
        (0.80, clock_step),
        (0.85, touch_step),
        (0.88, class_step),
        (0.89, swap_step),
        (1.00, misc_step),
    )
    for step in range(steps):
        roll = rng.random()
        for bound, action in table:
            if roll < bound:
                trace.append(action())
                break
    while stack:
        block = stack.pop()
        try:
            block.__exit__(None, None, None)
        except AuditError:
            trace.append(["final-exit", "AuditError"])
    flaky.failures = 0
    audit.flush()
    default_token.reset()
    events = [
        [
            e.time.isoformat(),
            e.actor,
            e.purpose,
            e.collected_for,
            e.record_type,
            e.subject_ref,
            e.field,
            e.category,
            e.allowed,
            str(e.reason),
            e.rule,
            e.mode,
            e.monitored,
            e.register_version,
        ]
        for e in collector.events
    ]
    return {
        "trace": trace,
        "events": events,
        "batches": collector.batches,
        "flaky": flaky.received,
        "lost": audit.lost,
    }, counters


def main():
    logging.getLogger("purposelimit").disabled = True  # sink failures are expected here
    steps = int(sys.argv[1])
    seeds = [int(s) for s in sys.argv[2:]]
    runs = {}
    counts = {}
    for seed in seeds:
        runs[str(seed)], counts[str(seed)] = run(seed, steps)
    speedups = context_module.SPEEDUPS
    json.dump(
        {
            "compiled": speedups is not None,
            "package": purposelimit.__file__,
            "guard_base": records_module._Guard.__mro__[1].__module__,
            "block_base": processing.__mro__[1].__module__,
            "runs": runs,
            "counts": counts,
        },
        sys.stdout,
    )


main()
'''

SEEDS = (11, 23, 37, 41, 59, 73)
STEPS = 3000


def _environment(pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURPOSELIMIT_")}
    if pure:
        env["PURPOSELIMIT_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    env["PYTHONHASHSEED"] = "0"
    return env


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The scenario's output under each implementation (both interpreters run at once)."""
    if not BUILT:
        pytest.skip(
            "purposelimit._speedups is not built in this environment (no C compiler at "
            "install time?): there is no compiled read path to compare with the reference"
        )
    if os.environ.get(TWIN):
        pytest.skip("the pure-Python twin run does not start the differential run again")
    script = tmp_path_factory.mktemp("speedups") / "scenario.py"
    script.write_text(SCENARIO, encoding="utf-8")
    command = [sys.executable, str(script), str(STEPS), *map(str, SEEDS)]
    running = {
        name: subprocess.Popen(
            command,
            cwd=ROOT,
            env=_environment(pure=name == "pure"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("compiled", "pure")
    }
    results: dict[str, Any] = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (
            f"the {name} scenario run failed (exit status {process.returncode}):\n{err[-3000:]}"
        )
        results[name] = json.loads(out)
    return results


def _first_difference(left: list[Any], right: list[Any]) -> str:
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return f"first difference at item {index}:\n  compiled: {a!r}\n  pure:     {b!r}"
    return f"lengths differ: {len(left)} compiled, {len(right)} pure"


@pytest.mark.parametrize("seed", SEEDS)
def test_differential_traces_are_identical(traces: dict[str, Any], seed: int) -> None:
    """For each seed, the compiled and the pure-Python read paths give the same outcome at
    every step (value length, denial reason, field, record type, subject reference and message
    fingerprint, exception context, audit buffer fill, active scope), the same audit events in
    the same batches, and the same retries to a failing sink."""
    compiled = traces["compiled"]["runs"][str(seed)]
    pure = traces["pure"]["runs"][str(seed)]
    for key in ("trace", "events", "batches"):
        assert compiled[key] == pure[key], f"seed {seed}, {key}: " + _first_difference(
            compiled[key], pure[key]
        )
    assert (compiled["flaky"], compiled["lost"]) == (pure["flaky"], pure["lost"])
    assert len(compiled["events"]) > STEPS // 2  # the walk read a lot


def test_differential_runs_compare_the_compiled_path_with_the_reference(
    traces: dict[str, Any],
) -> None:
    """Without PURPOSELIMIT_PURE_PYTHON the scenario ran the C extension
    (``purposelimit._context.SPEEDUPS is not None``, the guard and block bases are the
    compiled ones) and the C code completed most memoised reads itself; with it, every read went
    through the Python reference. Both runs imported this checkout of purposelimit."""
    compiled, pure = traces["compiled"], traces["pure"]
    package = str(Path(purposelimit.__file__).resolve())
    assert str(Path(compiled["package"]).resolve()) == package
    assert str(Path(pure["package"]).resolve()) == package
    assert compiled["compiled"] is True
    assert (compiled["guard_base"], compiled["block_base"]) == ("purposelimit._speedups",) * 2
    assert pure["compiled"] is False
    assert (pure["guard_base"], pure["block_base"]) == (
        "purposelimit._records",
        "purposelimit._context",
    )
    for seed in map(str, SEEDS):
        reads = compiled["counts"][seed]["reads"]
        assert compiled["counts"][seed]["reads"] == pure["counts"][seed]["reads"]
        assert pure["counts"][seed]["python_get"] == reads
        # Over half of the reads were memoised and completed in C, without the reference.
        assert compiled["counts"][seed]["python_get"] < reads // 2


# =========================================================================== 2. edge cases


def test_memoised_reads_complete_without_the_python_reference(engine: Engine, mode: Any) -> None:
    """With the extension loaded, a memoised read (allowed, or denied in either mode) calls
    neither the reference ``__get__`` nor ``_read``; a first read, a read on the class and a
    read with no block hand over to ``__get__``; a memo made stale by a store write goes
    straight to ``_read``."""
    if not COMPILED:
        pytest.skip("the pure-Python read path is running: nothing compiled to check")
    record_ = lead()
    assert reference_calls(lambda: Lead.name)[1] == {"get": 1, "read": 1}
    with processing("client.contract", actor="a", engine=engine, mode=mode):
        assert reference_calls(lambda: record_.name) == ("Ada", {"get": 1, "read": 1})
        assert reference_calls(lambda: record_.name) == ("Ada", {"get": 0, "read": 0})
        assert reference_calls(lambda: Lead.name)[1] == {"get": 1, "read": 1}
        store = engine.store
        assert isinstance(store, InMemoryStore)
        store.record(
            Consent(
                subject="someone-else",
                purposes=("newsletter.product",),
                given_at=T0,
                evidence=Evidence(mechanism="double-opt-in"),
                id="c-1",
            )
        )
        assert reference_calls(lambda: record_.name) == ("Ada", {"get": 0, "read": 1})
    with processing("newsletter.product", actor="a", engine=engine, mode=mode):
        first, calls = reference_calls(lambda: record_.email)
        assert calls == {"get": 1, "read": 1}
        again, calls = reference_calls(lambda: record_.email)
        assert calls == {"get": 0, "read": 0}
        if mode == "enforce":
            assert isinstance(first, ProcessingDenied)
            assert isinstance(again, ProcessingDenied)
        else:
            assert first == again == SECRET
    with set_engine(engine):  # no block: a no-purpose read, audited by the default engine
        result, calls = reference_calls(lambda: record_.name)
    assert calls == {"get": 1, "read": 1}
    assert isinstance(result, ProcessingDenied)
    assert result.reason is Reason.NO_PURPOSE


def test_a_raising_clock_propagates_and_audits_nothing(
    engine: Engine, sink: InMemoryAuditSink, mode: Any
) -> None:
    """A block clock raising (or returning a naive datetime) on a read, first or memoised,
    allowed or denied, propagates its exception and adds no audit entry for that read; the
    next read after the clock is fixed is decided and audited normally."""
    audit = engine.audit
    assert isinstance(audit, Audit)
    clock = Clock(NOW)
    record_ = lead()
    untouched = lead("lead-2")
    for purpose, expected in (("client.contract", "Ada"), ("newsletter.product", None)):
        with processing(purpose, actor="a", engine=engine, mode=mode, clock=clock):
            clock.broken = True
            assert isinstance(outcome(lambda: untouched.name), ClockBroken)  # no memo yet
            assert audit.buffered == 0
            clock.broken = False
            first = outcome(lambda: record_.name)  # memoised now
            assert audit.buffered == 1
            clock.broken = True
            error = outcome(lambda: record_.name)
            assert isinstance(error, ClockBroken)
            assert str(error) == "the clock is broken"
            clock.broken = False
            clock.naive = True
            assert isinstance(outcome(lambda: record_.name), NaiveDatetimeError)
            clock.naive = False
            assert audit.buffered == 1
            again = outcome(lambda: record_.name)
            assert audit.buffered == 2
        if expected is None and mode == "enforce":
            assert isinstance(first, ProcessingDenied)
            assert isinstance(again, ProcessingDenied)
        else:
            assert first == again == "Ada"
    assert [(e.purpose, e.field) for e in sink.events] == [
        ("client.contract", "name"),
        ("client.contract", "name"),
        ("newsletter.product", "name"),
        ("newsletter.product", "name"),
    ]


def test_a_raising_store_version_propagates(sink: InMemoryAuditSink, mode: Any) -> None:
    """A store whose ``version`` raises makes the read raise that exception, memoised or not,
    with no audit entry; once the store answers again the read goes on."""
    store = FragileStore()
    audit = Audit([sink])
    engine = Engine(make_register(), store, clock=lambda: NOW, audit=audit)
    record_ = lead()
    with processing("client.contract", actor="a", engine=engine, mode=mode):
        store.broken = True
        assert isinstance(outcome(lambda: record_.email), StoreBroken)
        assert audit.buffered == 0
        store.broken = False
        assert record_.email == SECRET
        store.broken = True
        error = outcome(lambda: record_.email)
        assert isinstance(error, StoreBroken)
        assert str(error) == "the store is unreachable"
        assert audit.buffered == 1
        store.broken = False
        assert record_.email == SECRET
        assert audit.buffered == 2
    assert fields_of(sink) == ["email", "email"]


def test_a_store_version_reading_a_guarded_field_is_reentrant(sink: InMemoryAuditSink) -> None:
    """A store ``version`` property that itself reads another record's guarded field under the
    same block (a re-entrant read in the middle of a read) leaves both reads correct: every
    value is right, each read is audited once, and each memoised outer read is audited right
    after the inner read its version check made."""
    store = FragileStore()
    engine = Engine(make_register(), store, clock=lambda: NOW, audit=Audit([sink]))
    outer = lead("lead-1")
    inner = Lead("Grace", OTHER_SECRET, subject="lead-2", collection=CONTRACT, collected_at=T0)
    store.probe = lambda: inner.name
    values = []
    with processing("client.contract", actor="a", engine=engine):
        for _ in range(5):
            values.append(outer.email)
    assert values == [SECRET] * 5
    assert store.probed
    assert set(store.probed) == {len("Grace")}
    fields = fields_of(sink)
    assert fields.count("email") == 5
    assert fields.count("name") == len(store.probed)
    assert len(fields) == 5 + len(store.probed)
    assert fields[-8:] == ["name", "email"] * 4  # the memoised reads
    assert all(e.allowed for e in sink.events)
    assert {e.subject_ref for e in sink.events if e.field == "name"} == {"lead-2"}


@pytest.mark.parametrize("capacity", [1, 2, 3])
@pytest.mark.parametrize("purpose", ["client.contract", "newsletter.product"])
def test_a_buffer_filling_at_capacity_drains_and_the_read_completes(
    sink: InMemoryAuditSink, mode: Any, capacity: int, purpose: str
) -> None:
    """When a read fills the audit buffer exactly to its capacity, the buffer is drained into
    the sinks at that read, which still returns the value (allowed, or denied in monitor mode)
    or raises its denial (enforce mode) — at every multiple of the capacity."""
    audit = Audit([sink], capacity=capacity)
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    record_ = lead()
    denied = purpose == "newsletter.product" and mode == "enforce"
    with processing(purpose, actor="a", engine=engine, mode=mode):
        for count in range(1, 3 * capacity + 2):
            result = outcome(lambda: record_.email)
            if denied:
                assert isinstance(result, ProcessingDenied)
                assert result.reason is Reason.CONSENT_MISSING
            else:
                assert result == SECRET
            assert audit.buffered == count % capacity
            assert len(sink.events) == count - count % capacity
    assert len(sink.events) == 3 * capacity + 1
    assert all(e.allowed is (purpose == "client.contract") for e in sink.events)


def test_a_denial_in_an_except_block_has_the_handled_exception_as_context(
    engine: Engine,
) -> None:
    """A denial raised while an exception is being handled — the field's first (decided by
    the Python reference) or a memoised one — has that exception as its ``__context__``
    (neither cause nor suppressed context), as a ``raise`` there would; one raised outside any
    handler has none (no internal lookup error leaks in as context)."""
    record_ = lead()
    with processing("newsletter.product", actor="a", engine=engine):
        for _ in range(2):  # the first denial, then a memoised one
            try:
                raise KeyError("handled")
            except KeyError as error:
                handled = error
                caught = outcome(lambda: record_.email)
            assert isinstance(caught, ProcessingDenied)
            assert caught.__context__ is handled
            assert caught.__cause__ is None
            assert caught.__suppress_context__ is False
        other = lead("lead-2")
        for _ in range(2):
            plain = outcome(lambda: other.email)
            assert isinstance(plain, ProcessingDenied)
            assert plain.__context__ is None
    with set_engine(engine):  # no block: a no-purpose denial
        unbound = outcome(lambda: other.email)
    assert isinstance(unbound, ProcessingDenied)
    assert unbound.reason is Reason.NO_PURPOSE
    assert unbound.__context__ is None


def test_memoised_denials_match_the_first_one_and_hold_no_value(
    sink: InMemoryAuditSink,
) -> None:
    """A denial from the memoised path has the same message, reason, field, record type,
    subject reference, remedy and decision as the field's first denial, shares its details,
    pickles to the same message, and shows no personal value anywhere; a store write makes new
    details with the same message."""
    audit = Audit([sink], pseudonym_key=b"k" * 32)
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    record_ = lead()
    with processing("newsletter.product", actor="a", engine=engine):
        first = outcome(lambda: record_.email)
        second = outcome(lambda: record_.email)
        third = outcome(lambda: record_.email)
        store = engine.store
        assert isinstance(store, InMemoryStore)
        store.record(
            Consent(
                subject="someone-else",
                purposes=("newsletter.product",),
                given_at=T0,
                evidence=Evidence(mechanism="double-opt-in"),
                id="c-1",
            )
        )
        renewed = outcome(lambda: record_.email)
    assert all(isinstance(e, ProcessingDenied) for e in (first, second, third, renewed))
    assert first is not second
    assert second is not third
    for other in (second, third, renewed):
        assert str(other) == str(first)
        assert repr(other) == repr(first)
        assert other.reason is first.reason is Reason.CONSENT_MISSING
        assert (other.field, other.record_type) == ("email", "Lead")
        assert other.subject_ref == first.subject_ref == audit.subject_ref("lead-1")
        assert other.remedy == first.remedy
        assert other.decision == first.decision
        assert type(other) is ProcessingDenied
        assert str(pickle.loads(pickle.dumps(other))) == str(first)
    assert second.args[0] is first.args[0] is third.args[0]
    assert renewed.args[0] is not first.args[0]
    for error in (first, second, renewed):
        for text in (str(error), repr(error), repr(error.args), error.remedy):
            assert SECRET not in text
            assert "Ada" not in text
            assert "lead-1" not in text  # pseudonymised
    assert len(sink.events) == 4


@pytest.mark.parametrize("cls", [PlainSubLead, SlottedSubLead])
def test_a_subclass_instance_is_guarded(
    engine: Engine, sink: InMemoryAuditSink, mode: Any, cls: type[Lead]
) -> None:
    """An instance of a (plain or slotted) subclass of a record class is read through the
    record class's guards: allowed reads return the value, memoised reads too, denials raise
    in enforce mode, and every read is audited under the record class's name."""
    record_ = lead(cls=cls)
    with processing("client.contract", actor="a", engine=engine, mode=mode):
        assert [record_.email, record_.email, record_.name] == [SECRET, SECRET, "Ada"]
    with processing("newsletter.product", actor="b", engine=engine, mode=mode):
        for _ in range(2):
            result = outcome(lambda: record_.email)
            if mode == "enforce":
                assert isinstance(result, ProcessingDenied)
                assert (result.record_type, result.field) == ("Lead", "email")
            else:
                assert result == SECRET
    assert (
        events_of(sink)
        == [
            ("a", "client.contract", "Lead", "email", True, Reason.SAME_PURPOSE, mode, False),
            ("a", "client.contract", "Lead", "email", True, Reason.SAME_PURPOSE, mode, False),
            ("a", "client.contract", "Lead", "name", True, Reason.SAME_PURPOSE, mode, False),
        ]
        + [
            (
                "b",
                "newsletter.product",
                "Lead",
                "email",
                False,
                Reason.CONSENT_MISSING,
                mode,
                mode == "monitor",
            )
        ]
        * 2
    )


def test_the_descriptor_protocol_reads_like_attribute_access(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """``Lead.__dict__[f].__get__(record)`` and ``.__get__(record, None)`` and
    ``.__get__(record, Lead)`` read like ``record.f`` (decided, audited once each, memoised),
    and an access on the class — ``Lead.f``, ``__get__(None, Lead)`` — returns the descriptor
    itself, inside a block or not, without any audit entry."""
    guard: Any = Lead.__dict__["email"]
    owner: Any = Lead  # typed loosely: on the class, `email` is the descriptor
    subclass: Any = PlainSubLead
    record_ = lead()
    for _ in range(2):
        assert owner.email is guard
        assert guard.__get__(None, Lead) is guard
        assert "contact.email" in repr(guard)
        with processing("client.contract", actor="a", engine=engine):
            assert owner.email is guard
            assert guard.__get__(None, Lead) is guard
            assert subclass.email is guard
            assert guard.__get__(record_) == SECRET
            assert guard.__get__(record_, None) == SECRET
            assert guard.__get__(record_, Lead) == SECRET
            assert record_.email == SECRET
    assert fields_of(sink) == ["email"] * 8


def test_exiting_out_of_order_raises_the_reference_message(engine: Engine) -> None:
    """Exiting a block while another one is active — or while none is — raises RuntimeError with
    the reference's message (the block's repr and the rule), changes nothing, and the blocks
    then unwind normally."""
    outer = processing("client.contract", actor="outer", engine=engine)
    inner = processing("prospection.postal", actor="inner", engine=engine, mode="monitor")
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError) as caught:
        outer.__exit__(None, None, None)
    assert str(caught.value) == repr(outer) + OUT_OF_ORDER
    with pytest.raises(RuntimeError) as reference:
        _PyBlock.__exit__(outer, None, None, None)
    assert str(reference.value) == str(caught.value)
    scope = current_processing()
    assert scope is not None
    assert scope.actor == "inner"
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert current_processing() is None
    with pytest.raises(RuntimeError) as caught:
        inner.__exit__(None, None, None)
    assert str(caught.value) == repr(inner) + OUT_OF_ORDER
    assert current_processing() is None


def _purpose() -> str | None:
    scope = current_processing()
    return None if scope is None else scope.purpose


def test_a_block_reentered_in_another_thread_still_exits_here(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """A block object entered here and entered again in another thread (which overwrites the
    shared entry's token) exits here to the previous binding (none), and is reusable after."""
    block = processing("client.contract", actor="a", engine=engine)
    record_ = lead()
    seen: list[Any] = []
    block.__enter__()

    def worker() -> None:
        block.__enter__()
        seen.append((_purpose(), record_.name))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [("client.contract", "Ada")]
    assert _purpose() == "client.contract"
    assert record_.email == SECRET
    block.__exit__(None, None, None)
    assert _purpose() is None
    with block:
        assert _purpose() == "client.contract"
    assert _purpose() is None
    engine_audit = engine.audit
    assert isinstance(engine_audit, Audit)
    engine_audit.flush()
    assert fields_of(sink) == ["name", "email"]


def test_a_block_exited_in_another_context_stays_active_here(engine: Engine) -> None:
    """A block exited in another context (a thread running a copy of this one) leaves that
    context with the previous binding and this one inside the block, which then exits here."""
    outer = processing("prospection.postal", actor="outer", engine=engine)
    block = processing("client.contract", actor="a", engine=engine)
    seen: list[Any] = []
    with outer:
        block.__enter__()
        context = contextvars.copy_context()

        def worker() -> None:
            context.run(block.__exit__, None, None, None)
            seen.append(context.run(_purpose))

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen == ["prospection.postal"]
        assert _purpose() == "client.contract"
        block.__exit__(None, None, None)
        assert _purpose() == "prospection.postal"
    assert _purpose() is None


def test_a_nested_entry_overwritten_in_another_context_restores_the_outer_block(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """A nested entry whose shared state another context reused (exit then enter again there:
    the entry's token is now that context's) exits here to the outer block, not to none."""
    outer = processing("prospection.postal", actor="outer", engine=engine)
    inner = processing("client.contract", actor="inner", engine=engine)
    record_ = lead()
    outer.__enter__()
    inner.__enter__()
    other = contextvars.copy_context()
    other.run(inner.__exit__, None, None, None)
    assert other.run(_purpose) == "prospection.postal"
    other.run(inner.__enter__)
    assert other.run(_purpose) == "client.contract"
    assert _purpose() == "client.contract"
    assert record_.name == "Ada"
    inner.__exit__(None, None, None)
    assert _purpose() == "prospection.postal"
    assert record_.name == "Ada"
    outer.__exit__(None, None, None)
    assert _purpose() is None
    assert [(e.purpose, e.reason) for e in sink.events] == [
        ("client.contract", Reason.SAME_PURPOSE),
        ("prospection.postal", Reason.COMPATIBLE),
    ]


# =========================================================================== 3. memory and GC


def test_a_record_class_and_its_read_records_are_garbage_collected(engine: Engine) -> None:
    """A record class made in a function, whose records were read (allowed and denied, so
    they hold memoised decisions and denial details) under blocks, is freed once unreferenced:
    the C guard traverses the class it is bound to and the field's slot."""

    def make() -> type:
        @record
        class Temporary:
            name: str = personal("identity")
            email: str = personal("contact.email")

        return Temporary

    cls = make()
    records = [
        cls("Ada", SECRET, subject=f"lead-{i}", collection=CONTRACT, collected_at=T0)
        for i in range(3)
    ]
    with processing("client.contract", actor="a", engine=engine):
        for item in records:
            assert (item.name, item.email, item.email) == ("Ada", SECRET, SECRET)
    with processing("newsletter.product", actor="a", engine=engine):
        for item in records:
            for _ in range(2):
                with contextlib.suppress(ProcessingDenied):
                    _ = item.email
    assert records[0].field_tags.denials  # details are kept on the record
    class_ref = weakref.ref(cls)
    record_ref = weakref.ref(records[0]) if hasattr(records[0], "__weakref__") else None
    del cls, records, item
    gc.collect()
    assert class_ref() is None
    assert record_ref is None or record_ref() is None


def test_a_processing_object_and_its_cached_state_are_garbage_collected(engine: Engine) -> None:
    """A processing object entered at top level and nested in itself holds its prepared state
    (``_cache``, ``_nested``), which refers back to it: a cycle that only the garbage collector
    frees, so the C block must traverse both; the block's clock goes with it."""

    class Tracked(processing):
        __slots__ = ("__weakref__",)

    clock = Clock(NOW)
    block = Tracked("client.contract", actor="gc", engine=engine, clock=clock)
    record_ = lead()
    with block:
        with block:
            assert record_.name == "Ada"
        assert record_.name == "Ada"
    assert block._cache is not None
    assert block._nested is not None
    refs = (weakref.ref(block), weakref.ref(clock))
    enabled = gc.isenabled()
    gc.disable()
    try:
        del block, clock
        assert refs[0]() is not None  # a reference cycle keeps it: only gc frees it
        gc.collect()
        assert [ref() for ref in refs] == [None, None]
    finally:
        if enabled:
            gc.enable()


def _traced_growth(action: Callable[[], None]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


#: Far below a leak of one float per read (24 B x 200,000 = 4.8 MB).
GROWTH_BOUND = 1_000_000


def test_many_allowed_reads_do_not_grow_memory() -> None:
    """200,000 memoised allowed reads, the audit draining into a sink that drops the events,
    leave traced memory where it was (within a bound a leaked float per read would exceed
    five times over)."""
    drop = DropSink()
    audit = Audit([drop], capacity=256)
    # The default clock: the compiled path reads time.time() with no Python code at all.
    engine = Engine(make_register(), audit=audit)
    record_ = lead(collected_at=datetime.now(UTC) - timedelta(days=1))
    block = processing("client.contract", actor="memory", engine=engine)
    reads = 200_000

    def run() -> None:
        with block:
            for _ in range(reads):
                _ = record_.name
        audit.flush()

    with block:
        for _ in range(2_000):  # warm up: memo, caches, buffer at full size
            _ = record_.name
    growth = _traced_growth(run)
    assert drop.count == reads + 2_000
    assert growth < GROWTH_BOUND, f"traced memory grew by {growth} B over {reads} reads"


def test_many_denied_reads_do_not_grow_memory() -> None:
    """50,000 memoised denials (a new exception each, sharing one denial's details) leave
    traced memory where it was."""
    drop = DropSink()
    audit = Audit([drop], capacity=256)
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    record_ = lead()
    block = processing("newsletter.product", actor="memory", engine=engine)
    reads = 50_000

    def run() -> None:
        with block:
            for _ in range(reads):
                with contextlib.suppress(ProcessingDenied):
                    _ = record_.email

    run()
    growth = _traced_growth(run)
    assert drop.count == 2 * reads
    assert growth < GROWTH_BOUND / 4, f"traced memory grew by {growth} B over {reads} denials"


def test_reads_keep_reference_counts_balanced(engine: Engine, mode: Any) -> None:
    """Memoised reads, allowed and denied, take no lasting reference to the guard, the
    record, its memo, the denial details, the active block state or the clock once the audit
    buffer is drained."""
    clock = Clock(NOW)
    record_ = lead()
    guard = Lead.__dict__["email"]
    audit = engine.audit
    assert isinstance(audit, Audit)
    for purpose in ("client.contract", "newsletter.product"):
        with processing(purpose, actor="a", engine=engine, mode=mode, clock=clock):
            for _ in range(3):
                outcome(lambda: record_.email)
            audit.flush()
            active = _CURRENT.get()
            extra: Any = record_.field_tags
            memo = extra.memo[guard.index]
            details = (extra.denials or {}).get(guard.index)
            watched = [guard, record_, memo, active, clock]
            if details is not None:
                watched += details  # the memo again, and the DenialDetails
            gc.collect()
            before = [sys.getrefcount(item) for item in watched]
            for _ in range(1000):
                outcome(lambda: record_.email)
            audit.flush()
            gc.collect()
            after = [sys.getrefcount(item) for item in watched]
        assert after == before


# =========================================================================== 4. build and twin


def test_the_compiled_read_path_is_loaded_when_required() -> None:
    """With PURPOSELIMIT_REQUIRE_COMPILED set (CI sets it), the C extension must be loaded:
    a build that silently failed, or a run that disabled it, fails here."""
    required = os.environ.get("PURPOSELIMIT_REQUIRE_COMPILED", "")
    if required in ("", "0"):
        pytest.skip("PURPOSELIMIT_REQUIRE_COMPILED is not set: the pure-Python path is allowed")
    assert BUILT, (
        "purposelimit._speedups was not built (is a C compiler installed? reinstall with "
        "`pip install -e .`): PURPOSELIMIT_REQUIRE_COMPILED requires it"
    )
    assert COMPILED, (
        "purposelimit._speedups is built but not loaded (PURPOSELIMIT_PURE_PYTHON="
        f"{os.environ.get('PURPOSELIMIT_PURE_PYTHON', '')!r}): PURPOSELIMIT_REQUIRE_COMPILED "
        "requires the compiled read path"
    )
    from purposelimit._records import _Guard

    assert issubclass(_Guard, SPEEDUPS.Guard)
    assert issubclass(processing, SPEEDUPS.Block)


#: The test files of the read path, run again under the pure-Python read path.
READ_PATH_TESTS = (
    "tests/test_records.py",
    "tests/test_context.py",
    "tests/test_fast_paths.py",
    "tests/test_side_doors.py",
    "tests/test_concurrency.py",
    "tests/test_audit.py",
    "tests/test_testing.py",
)


def test_the_in_process_tests_pass_under_the_pure_python_read_path() -> None:
    """This file's in-process tests and the read path's test files also pass when run with
    PURPOSELIMIT_PURE_PYTHON=1 (in a subprocess): they pin the reference's behaviour, not the
    C code's, and the pure-Python path is what runs where no C compiler was available."""
    if os.environ.get(TWIN):
        pytest.skip("this is the twin run")
    if not COMPILED:
        pytest.skip("this process already runs the pure-Python read path")
    env = _environment(pure=True)
    env[TWIN] = "1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            __file__,
            *READ_PATH_TESTS,
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            "-k",
            "not differential and not pure_python_read_path",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


# =========================================================================== 5. review findings
#
# Regression tests for the bugs an adversarial review of the compiled read path found (each
# one reproduced by a script run on both implementations). They run with whichever
# implementation is loaded (and again in the pure-Python twin run); a scenario whose bug was a
# crash runs in a fresh interpreter, so that a segfault fails its test instead of the run.


def _run_isolated(script: str, *args: str) -> Any:
    """Run *script* in a fresh interpreter on this process's read path (compiled or pure), with
    this file importable as ``base``; return the JSON object its last output line holds. A
    crash fails here with its exit status instead of killing the test run."""
    import textwrap

    here = Path(__file__).resolve()
    prelude = f"import sys\nsys.path.insert(0, {str(here.parent)!r})\nimport {here.stem} as base\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script), *args],
        cwd=ROOT,
        env=_environment(pure=not COMPILED),
        capture_output=True,
        text=True,
        timeout=120,
    )
    status = result.returncode
    assert status == 0, (
        f"the isolated run failed (exit status {status}"
        + (f": killed by signal {-status}" if status < 0 else "")
        + f"):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


#: A clock that, on a memoised read, swaps the record's class from a throwaway subclass back
#: to the record class and collects: the subclass, now referenced by nothing but the read in
#: progress, must stay alive until that read is over. With "spy", `_settle` records the class
#: the stale read hands it.
CLASS_FREED_BY_THE_CLOCK = r"""
import gc
import json
import weakref
from datetime import timedelta

import purposelimit._records as records_module
from purposelimit import ProcessingDenied, processing

seen = {}
state = {"armed": False, "now": base.NOW}


def clock():
    if state["armed"]:
        state["armed"] = False
        record_.__class__ = base.Lead  # drops the record's reference to Sub
        gc.collect()  # Sub (a cycle: its MRO) is freed here unless the read holds it
        seen["alive_in_clock"] = sub_ref() is not None
    return state["now"]


if sys.argv[1:] == ["spy"]:
    settle = records_module._settle

    def spy_settle(guard, obj, objtype, active, memo):
        seen["objtype"] = objtype.__name__
        return settle(guard, obj, objtype, active, memo)

    records_module._settle = spy_settle


def make():
    class Sub(base.Lead):
        __slots__ = ()

    return base.lead(cls=Sub)


sink = base.InMemoryAuditSink()
engine = base.Engine(base.make_register(), clock=clock, audit=base.Audit([sink]))
record_ = make()
sub_ref = weakref.ref(type(record_))
with processing("client.contract", actor="t", engine=engine):
    seen["first"] = record_.name  # memoised
    state["now"] = base.NOW + timedelta(days=400)  # past retention: the memo is stale
    state["armed"] = True
    try:
        seen["second"] = ["read", record_.name]
    except ProcessingDenied as error:
        seen["second"] = ["denied", error.reason.value]
gc.collect()
seen["class_now"] = type(record_).__name__
seen["freed_after"] = sub_ref() is None
seen["events"] = [[e.record_type, e.field, e.allowed, e.reason.value] for e in sink.events]
print(json.dumps(seen))
"""


@pytest.mark.parametrize("spy", [False, True], ids=["plain", "spy-on-settle"])
def test_a_class_freed_by_the_clock_mid_read_stays_alive_until_the_read_ends(spy: bool) -> None:
    """A clock that swaps a record's ``__class__`` from a throwaway subclass back to the record
    class and collects the subclass in the middle of a memoised read does not crash it (the read
    holds the class it was given until it ends): the subclass is alive after the collection,
    the stale memo is decided again (retention expired, denied and audited) with that class
    handed to ``_settle``, and once the read is over the subclass is freed."""
    seen = _run_isolated(CLASS_FREED_BY_THE_CLOCK, *(["spy"] if spy else []))
    assert seen.pop("objtype", "Sub") == "Sub"
    assert seen == {
        "alive_in_clock": True,
        "first": "Ada",
        "second": ["denied", "retention-expired"],
        "class_now": "Lead",
        "freed_after": True,
        "events": [
            ["Lead", "name", True, "same-purpose"],
            ["Lead", "name", False, "retention-expired"],
        ],
    }


#: A clock that binds a guard of Lead again, mid-read, to a record class whose `field_tags`
#: slot lies far beyond the end of a Lead instance.
REBIND_BY_THE_CLOCK = r"""
import json

from purposelimit import ProcessingDenied, processing

namespace = {"__annotations__": {f"f{i}": object for i in range(60)}}
namespace.update({f"f{i}": None for i in range(60)})
Big = base.record(type("Big", (), namespace))
guard = base.Lead.__dict__["name"]
state = {"armed": False}


def clock():
    if state["armed"]:
        state["armed"] = False
        guard._bind(Big)
        _ = [bytearray(64) for _ in range(1000)]
    return base.NOW


def outcome(action):
    try:
        return ["read", action()]
    except ProcessingDenied as error:
        return ["denied", error.reason.value]
    except Exception as error:
        return ["raised", type(error).__name__, str(error)]


audit = base.Audit([base.InMemoryAuditSink()])
engine = base.Engine(base.make_register(), clock=clock, audit=audit)
record_ = base.lead()
result = {"bigger": Big.__basicsize__ > base.Lead.__basicsize__ + 8 * 50}
with processing("newsletter.product", actor="t", engine=engine):
    result["first"] = outcome(lambda: record_.name)
    state["armed"] = True
    result["rebound"] = outcome(lambda: record_.name)
    result["after"] = outcome(lambda: record_.name)
result["again"] = outcome(lambda: guard._bind(base.Lead))
result["elsewhere"] = outcome(lambda: guard._bind(Big))
with processing("client.contract", actor="t", engine=engine):
    result["allowed"] = [outcome(lambda: record_.name) for _ in range(2)]
print(json.dumps(result))
"""


def test_a_guard_is_bound_once_even_from_inside_a_read() -> None:
    """Compiled path: ``guard._bind(...)`` on a guard already bound raises RuntimeError("a guard
    is bound once, to its record class") — from a clock in the middle of a read (the read then
    raises it, without reading past the record) as at top level, to its own class or another —
    and the guard goes on reading its own record class's slots."""
    if not COMPILED:
        pytest.skip("the pure-Python read path is running: its _bind does nothing")
    bound_once = ["raised", "RuntimeError", "a guard is bound once, to its record class"]
    result = _run_isolated(REBIND_BY_THE_CLOCK)
    assert result == {
        "bigger": True,
        "first": ["denied", "consent-missing"],
        "rebound": bound_once,
        "after": ["denied", "consent-missing"],
        "again": bound_once,
        "elsewhere": bound_once,
        "allowed": [["read", "Ada"], ["read", "Ada"]],
    }


class NanVersionStore(InMemoryStore):
    """An InMemoryStore whose ``version`` is always the same NaN object: not equal to itself."""

    NAN = float("nan")

    @property
    def version(self) -> Any:
        return self.NAN

    @version.setter
    def version(self, value: Any) -> None:
        pass


def test_a_store_version_never_equal_to_itself_is_decided_at_every_read(
    sink: InMemoryAuditSink,
) -> None:
    """A store whose ``version`` is one NaN object (``==`` says it is not equal to itself)
    never validates a memo: the compiled path, like Python's ``memo[3] == version``, takes no
    identity shortcut, so every read is decided again by ``_read``, and an objection recorded
    in the middle of a block denies the very next read (``objection``)."""
    from purposelimit._model import Objection

    register = Register(
        [
            Purpose(
                "client.contract",
                "Contracts",
                "Managing contracts",
                "contract",
                Retention("P1Y"),
                categories=["identity", "contact"],
            ),
            Purpose(
                "prospection.postal",
                "Postal offers",
                "Offers by post",
                "legitimate-interests",
                Retention("P1Y"),
                categories=["identity", "contact"],
                direct_marketing=True,
            ),
        ],
        [DataCategory("identity"), DataCategory("contact"), DataCategory("contact.email")],
        [
            Compatibility(
                "contract-to-postal",
                "client.contract",
                "prospection.postal",
                "compatible",
                link="same customers",
                context="told at checkout",
                nature="name and address",
                consequences="postal mail",
                safeguards=["objection offered"],
            )
        ],
    )
    store = NanVersionStore()
    engine = Engine(register, store, clock=lambda: NOW, audit=Audit([sink]))
    record_ = lead()
    with processing("prospection.postal", actor="a", engine=engine):
        first = outcome(lambda: record_.name)
        again = [reference_calls(lambda: record_.name) for _ in range(2)]
        store.record(Objection("lead-1", at=NOW - timedelta(days=1)))
        after, calls = reference_calls(lambda: record_.name)
    assert first == "Ada"
    for value, counts in again:
        assert value == "Ada"
        assert counts["read"] == 1  # decided again: the memo never matches the version
    assert isinstance(after, ProcessingDenied)
    assert after.reason is Reason.OBJECTION
    assert calls["read"] == 1
    assert [(e.allowed, e.reason) for e in sink.events] == [(True, Reason.COMPATIBLE)] * 3 + [
        (False, Reason.OBJECTION)
    ]


class CountingBuffer(list[Any]):
    """An audit buffer that is a list subclass (an instrumented one): it records the number
    of items each ``extend`` adds."""

    def __init__(self) -> None:
        super().__init__()
        self.extends: list[int] = []

    def extend(self, items: Any) -> None:
        items = list(items)
        self.extends.append(len(items))
        super().extend(items)


@pytest.mark.parametrize("purpose", ["client.contract", "newsletter.product"])
def test_an_audit_buffer_that_is_a_list_subclass_is_extended_like_a_list(
    sink: InMemoryAuditSink, mode: Any, purpose: str
) -> None:
    """An audit buffer that is a list subclass is used like a list by both read paths: a first
    read and a memoised one, allowed or denied, each return their value (or raise their denial
    in enforce mode) and add one entry through the buffer's own ``extend`` (its four items);
    two reads, two audit events."""
    audit = Audit([sink])
    buffer = CountingBuffer()
    audit._buffer = buffer
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    record_ = lead()
    denied = purpose == "newsletter.product" and mode == "enforce"
    with processing(purpose, actor="a", engine=engine, mode=mode):
        for count in (1, 2):
            result = outcome(lambda: record_.email)
            if denied:
                assert isinstance(result, ProcessingDenied)
                assert result.reason is Reason.CONSENT_MISSING
            else:
                assert result == SECRET
            assert buffer.extends == [4] * count
            assert audit.buffered == count
    assert audit._buffer is buffer
    assert buffer == []
    assert [(e.field, e.allowed, e.mode) for e in sink.events] == [
        ("email", purpose == "client.contract", mode)
    ] * 2


def test_a_block_whose_activate_returns_an_active_subclass_enters_and_exits(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """A ``processing`` subclass whose ``_activate`` returns (and keeps) an ``Active`` subclass
    enters, reads (first and memoised reads), has a plain block nested in it, is nested in one,
    and exits, again and again, as with an exact ``Active``."""
    from purposelimit._context import Active

    class ExtendedActive(Active):
        __slots__ = ("extra",)

    class ExtendedProcessing(processing):
        __slots__ = ()

        def _activate(self) -> Active:
            active = super()._activate()
            cache = self._cache
            assert cache is not None
            extended = ExtendedActive(active.scope, active.runtime, self)
            self._cache = (cache[0], extended)  # kept: later entries reuse it
            return extended

    block = ExtendedProcessing("client.contract", actor="a", engine=engine)
    outer = processing("prospection.postal", actor="outer", engine=engine)
    record_ = lead()
    for _ in range(3):
        with block as scope:
            assert (scope.purpose, scope.actor) == ("client.contract", "a")
            assert type(_CURRENT.get()) is ExtendedActive
            assert [record_.name, record_.name] == ["Ada", "Ada"]
            with outer:
                assert _purpose() == "prospection.postal"
                assert record_.name == "Ada"
            assert type(_CURRENT.get()) is ExtendedActive
        assert current_processing() is None
        with outer:
            with block:
                assert _purpose() == "client.contract"
                assert record_.email == SECRET
            assert _purpose() == "prospection.postal"
        assert current_processing() is None
    assert [(e.actor, e.field) for e in sink.events] == [
        ("a", "name"),
        ("a", "name"),
        ("outer", "name"),
        ("a", "email"),
    ] * 3


def _copies(block: processing) -> Iterator[tuple[str, processing]]:
    import copy

    yield "copy", copy.copy(block)
    yield "deepcopy", copy.deepcopy(block)
    try:
        data = pickle.dumps(block)
    except (TypeError, AttributeError, pickle.PicklingError):
        return  # the engine (or clock) does not pickle
    yield "pickle", pickle.loads(data)


@pytest.mark.parametrize("with_engine", [True, False], ids=["engine", "default-engine"])
def test_a_copied_or_pickled_processing_object_is_a_fresh_block(
    engine: Engine, sink: InMemoryAuditSink, clock: Clock, with_engine: bool
) -> None:
    """``copy.copy``, ``copy.deepcopy`` and a pickle round trip (when the engine pickles; a block
    resolving the default engine always does) of a ``processing`` object already entered —
    prepared, nested in itself, even still active — give a new block with the same purpose,
    actor, mode, engine and clock and nothing prepared: it enters and exits on its own (alone,
    inside the original, around it, while the original is active), and after its ``with``
    statement no purpose is left bound: a read outside any block is denied ``no-purpose``."""
    original = processing(
        "client.contract",
        actor="a",
        engine=engine if with_engine else None,
        mode="monitor",
        clock=clock if with_engine else None,
    )
    record_ = lead()
    with set_engine(engine):
        with original, original:
            assert record_.name == "Ada"
        assert original._cache is not None
        assert original._nested is not None
        made = list(_copies(original))
        with original:
            made += [(f"{kind} of an active block", new) for kind, new in _copies(original)]
        assert [kind for kind, _ in made][:2] == ["copy", "deepcopy"]
        if not with_engine:
            assert "pickle" in dict(made)
        for kind, new in made:
            assert type(new) is processing, kind
            assert new is not original, kind
            assert (new.purpose, new.actor, new.mode) == ("client.contract", "a", "monitor")
            assert new.engine is original.engine, kind
            assert new.clock is original.clock, kind
            assert (new._cache, new._nested) == (None, None), kind
            with new as scope:
                assert (scope.purpose, scope.actor, scope.mode) == (
                    "client.contract",
                    "a",
                    "monitor",
                )
                assert record_.email == SECRET
            assert current_processing() is None, kind
            with original:
                with new:
                    assert _CURRENT.get().block is new  # type: ignore[union-attr]
                assert _CURRENT.get().block is original  # type: ignore[union-attr]
            with new:
                with original:
                    assert record_.name == "Ada"
                assert _CURRENT.get().block is new  # type: ignore[union-attr]
            with original:
                pass
            assert current_processing() is None, kind
            denied = outcome(lambda: record_.name)
            assert isinstance(denied, ProcessingDenied), kind
            assert denied.reason is Reason.NO_PURPOSE
    audit = engine.audit
    assert isinstance(audit, Audit)
    audit.flush()
    assert [e.reason for e in sink.events].count(Reason.NO_PURPOSE) == len(made)
    assert {e.actor for e in sink.events if e.reason is not Reason.NO_PURPOSE} == {"a"}


def test_a_guards_member_is_set_once(engine: Engine) -> None:
    """Compiled path: a guard's ``_member`` (the slot its reads return) is set once, by its
    ``__init__``; setting it again — to another field's slot or to its own — raises
    AttributeError, and the guard goes on returning its own field, on first and memoised reads
    alike."""
    if not COMPILED:
        pytest.skip("the pure-Python read path is running: reads use _get, not _member")

    @record
    class Pair:
        name: str = personal("identity")
        email: str = personal("contact.email")

    name_guard: Any = Pair.__dict__["name"]
    email_guard: Any = Pair.__dict__["email"]
    with pytest.raises(AttributeError, match="set once"):
        name_guard._member = email_guard._member
    with pytest.raises(AttributeError, match="set once"):
        name_guard._member = name_guard._member
    make: Any = Pair
    record_ = make("Ada", SECRET, subject="lead-1", collection=CONTRACT, collected_at=T0)
    with processing("client.contract", actor="a", engine=engine):
        assert [record_.name for _ in range(3)] == ["Ada"] * 3
        assert [record_.email for _ in range(3)] == [SECRET] * 3


def test_exit_takes_keyword_arguments_and_has_a_signature(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """``__exit__`` called with keywords (``exc_type=``, ``exc=``, ``tb=``), or with positional
    and keyword arguments mixed, exits the block as a ``with`` statement does (the audit buffer
    drained); a wrong call raises TypeError and leaves the block active; ``inspect.signature``
    gives both methods' parameters, on the class and on a block."""
    import inspect

    block: Any = processing("client.contract", actor="a", engine=engine)  # called loosely
    record_ = lead()
    block.__enter__()
    assert record_.name == "Ada"
    block.__exit__(exc_type=None, exc=None, tb=None)
    assert current_processing() is None
    assert fields_of(sink) == ["name"]
    block.__enter__()
    assert record_.email == SECRET
    block.__exit__(None, exc=None, tb=None)
    assert current_processing() is None
    assert fields_of(sink) == ["name", "email"]
    block.__enter__()
    for call in (
        lambda: block.__exit__(None, None, None, None),
        lambda: block.__exit__(None, None),
        lambda: block.__exit__(None, None, exc=None),
        lambda: block.__exit__(None, None, bogus=None),
    ):
        assert isinstance(outcome(call), TypeError)
        assert _purpose() == "client.contract"
    block.__exit__(None, None, None)
    assert current_processing() is None
    cls = type(block)
    assert list(inspect.signature(cls.__exit__).parameters) == ["self", "exc_type", "exc", "tb"]
    assert list(inspect.signature(block.__exit__).parameters) == ["exc_type", "exc", "tb"]
    assert list(inspect.signature(cls.__enter__).parameters) == ["self"]
    assert list(inspect.signature(block.__enter__).parameters) == []


#: Importing purposelimit in a sub-interpreter, then using it in the main one, before and
#: after the sub-interpreter is destroyed.
#: What the sub-interpreter scripts share: a block and a record in the main interpreter,
#: `check()` (a block binds, reads are allowed inside and denied outside), and how a script
#: runs code in a sub-interpreter and reads back what that code dumps as JSON to `report`.
SUB_INTERPRETER_PRELUDE = r'''
import json
import os
import tempfile

import _xxsubinterpreters as interpreters

import purposelimit
from purposelimit import ProcessingDenied, current_processing, processing
from purposelimit._audit import AuditEvent
from purposelimit._context import _CURRENT

sink = base.InMemoryAuditSink()
engine = base.Engine(base.make_register(), clock=lambda: base.NOW, audit=base.Audit([sink]))
record_ = base.lead()


def check(email=False):
    with processing("client.contract", actor="t", engine=engine):
        scope = current_processing()
        seen = [None if scope is None else scope.purpose, record_.name, record_.name]
        if email:
            seen.append(record_.email)
    seen.append(current_processing() is None)
    try:
        record_.name
    except ProcessingDenied as error:
        seen.append(error.reason.value)
    return seen


def new_interpreter():
    # Not isolated: it may import single-phase extension modules (3.12's default refuses them).
    return interpreters.create(isolated=False)


def run_in(interpreter, code):
    """Run *code* in *interpreter* on this sys.path; return what it dumps to `report`."""
    report = os.path.join(tempfile.mkdtemp(), "sub.json")
    setup = f"import json, sys\nsys.path[:0] = {sys.path!r}\nreport = {report!r}\n"
    interpreters.run_string(interpreter, setup + code)
    with open(report) as out:
        return json.load(out)
'''


SUB_INTERPRETER = (
    SUB_INTERPRETER_PRELUDE
    + r'''
result = {"main_compiled": purposelimit.COMPILED, "before": check(email=True)}
interpreter = new_interpreter()
result["sub"] = run_in(
    interpreter,
    """
import purposelimit
from purposelimit._context import SPEEDUPS
with open(report, "w") as out:
    json.dump([purposelimit.COMPILED, SPEEDUPS is not None], out)
""",
)
result["after_import"] = check(email=True)
interpreters.destroy(interpreter)
result["after_destroy"] = check(email=True)
garbage = [bytearray(200) for _ in range(20000)]
active = processing("client.contract", actor="t", engine=engine)._activate()
token = _CURRENT.set(active)
try:
    result["set_by_hand"] = [record_.name, record_.email, record_.email]
finally:
    _CURRENT.reset(token)
result["main_compiled_after"] = purposelimit.COMPILED
print(json.dumps(result))
'''
)


def test_a_sub_interpreter_importing_purposelimit_leaves_the_main_one_working() -> None:
    """Importing purposelimit in a sub-interpreter (``_xxsubinterpreters``) runs it on the
    pure-Python read path there (``purposelimit.COMPILED`` is False: the extension does not
    configure itself outside the main interpreter) and changes nothing in the main one: after
    the import, and after the sub-interpreter is destroyed, ``with processing(...)`` binds its
    purpose, guarded reads are allowed inside and denied ``no-purpose`` outside, and a block
    set by hand reads too. Run in a fresh interpreter (a crash fails the test)."""
    if importlib.util.find_spec("_xxsubinterpreters") is None:
        pytest.skip("_xxsubinterpreters is not available in this Python")
    result = _run_isolated(SUB_INTERPRETER)
    working = ["client.contract", "Ada", "Ada", SECRET, True, "no-purpose"]
    assert result == {
        "main_compiled": COMPILED,
        "before": working,
        "sub": [False, False],
        "after_import": working,
        "after_destroy": working,
        "set_by_hand": ["Ada", SECRET, SECRET],
        "main_compiled_after": COMPILED,
    }


class HookClock(Clock):
    """A Clock that runs `hook` once (then forgets it) before it answers."""

    def __init__(self, now: datetime) -> None:
        super().__init__(now)
        self.hook: Callable[[], object] | None = None

    def __call__(self) -> datetime:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return super().__call__()


@pytest.mark.parametrize(
    ("purpose", "mode"),
    [
        ("client.contract", "enforce"),
        ("newsletter.product", "enforce"),
        ("newsletter.product", "monitor"),
    ],
)
def test_field_tags_deleted_by_the_clock_in_the_middle_of_a_read(
    sink: InMemoryAuditSink, purpose: str, mode: Any
) -> None:
    """A clock that deletes the record's ``field_tags`` slot in the middle of a memoised read:
    the read, audited already, returns the value when it is allowed or monitored; a denial in
    enforce mode, whose details live on ``field_tags``, raises the AttributeError
    ``obj.field_tags`` raises (not a denial made from nothing, not a crash)."""
    clock = HookClock(NOW)
    audit = Audit([sink])
    engine = Engine(make_register(), clock=clock, audit=audit)
    record_ = lead()
    denied = purpose == "newsletter.product" and mode == "enforce"
    with processing(purpose, actor="a", engine=engine, mode=mode):
        first = outcome(lambda: record_.name)  # memoised
        if denied:
            assert isinstance(first, ProcessingDenied)
        else:
            assert first == "Ada"
        clock.hook = lambda: object.__delattr__(record_, "field_tags")
        result = outcome(lambda: record_.name)
        assert clock.hook is None  # the read called the clock
        assert audit.buffered == 2
    assert isinstance(outcome(lambda: record_.field_tags), AttributeError)
    if denied:
        assert type(result) is AttributeError
        assert "field_tags" in str(result)
    else:
        assert result == "Ada"
    assert [(e.field, e.allowed, e.mode) for e in sink.events] == [
        ("name", purpose == "client.contract", mode)
    ] * 2


@record
class _Reordered(Lead):
    """Lead with `name` declared again: no new slot (a Lead's ``__class__`` can become this
    class), but its personal fields come in another order, so their memo indices differ."""

    name: str = personal("identity")


def test_a_class_swap_never_reuses_another_fields_decision() -> None:
    """After ``obj.__class__`` becomes a class whose personal fields sit at other memo
    indices, a field never reuses the decision memoised for another field: `email` (not
    usable for `support`) stays denied although `name` was allowed at its index."""
    register = Register(
        [Purpose("support", "Support", "Support", "contract", Retention("P1Y"), ["identity"])],
        [DataCategory("identity"), DataCategory("contact"), DataCategory("contact.email")],
        [],
    )
    sink = InMemoryAuditSink()
    engine = Engine(register, clock=lambda: NOW, audit=Audit([sink]))
    assert Lead.__dict__["name"].index != _Reordered.__dict__["name"].index
    record_ = Lead(
        "Ada",
        "ada@example.org",
        subject="lead-1",
        collection=Collection("support"),
        collected_at=NOW - timedelta(days=1),
    )
    with processing("support", actor="test", engine=engine):
        assert len(record_.name) == 3  # allowed: memoised at name's index
        record_.__class__ = _Reordered
        with pytest.raises(ProcessingDenied) as denied:
            _ = record_.email  # the same index under the new class
        assert denied.value.reason is Reason.EXCESSIVE
        assert len(record_.name) == 3  # still allowed, decided again for its own index
    assert [(e.field, e.category, e.allowed) for e in sink.events] == [
        ("name", "identity", True),
        ("email", "contact.email", False),
        ("name", "identity", True),
    ]


def test_a_negative_memo_index_takes_the_python_path() -> None:
    """A guard whose index was set negative (a private attribute) does not read outside the
    memo list: the read goes to the Python reference, which raises IndexError or decides."""
    outcome_ = _run_isolated(
        """
        import json
        from purposelimit._records import _Guard
        register = base.make_register()
        engine = base.Engine(register, clock=lambda: base.NOW)
        lead = base.lead()
        guard = type(lead).__dict__["name"]
        with base.processing("client.contract", actor="test", engine=engine):
            lead.name
            guard.index = -1
            try:
                value = lead.name
                result = "read" if isinstance(value, str) else "other"
            except Exception as error:
                result = type(error).__name__
        print(json.dumps(result))
        """
    )
    assert outcome_ in ("read", "IndexError")


def test_a_guard_without_its_slot_takes_the_python_path() -> None:
    """A guard made without ``__init__`` (no `_member`) but bound to a record class never calls
    a missing slot getter: the read raises AttributeError instead of crashing."""
    outcome_ = _run_isolated(
        """
        import json
        from purposelimit._records import _Guard
        engine = base.Engine(base.make_register(), clock=lambda: base.NOW)
        lead = base.lead()
        guard = type(lead).__dict__["name"]
        with base.processing("client.contract", actor="test", engine=engine):
            lead.name  # memoised for the real guard
            bare = _Guard.__new__(_Guard)
            bare.index = guard.index
            bare._bind(type(lead))
            try:
                bare.__get__(lead, type(lead))
                result = "read"
            except AttributeError:
                result = "AttributeError"
        print(json.dumps(result))
        """
    )
    assert outcome_ == "AttributeError"


@record
class _Fallback(TaggedRecord):
    """A record class whose ``__getattr__`` answers for any missing attribute."""

    name: str = personal("identity")
    email: str = personal("contact.email")

    def __getattr__(self, name: str) -> Any:
        return None


def test_field_tags_deleted_under_a_class_getattr_still_gives_the_denial() -> None:
    """When the clock deletes ``field_tags`` of a record whose class defines ``__getattr__``,
    a memoised denial is still the ProcessingDenied Python gives (not a SystemError)."""
    clock = HookClock(NOW)
    engine = Engine(make_register(), clock=clock, audit=Audit([InMemoryAuditSink()]))
    record_ = _Fallback("Ada", SECRET, subject="lead-1", collection=CONTRACT, collected_at=T0)
    with processing("newsletter.product", actor="test", engine=engine):
        with pytest.raises(ProcessingDenied):
            _ = record_.email  # decided and memoised
        clock.hook = lambda: object.__delattr__(record_, "field_tags")
        with pytest.raises(ProcessingDenied) as denied:
            _ = record_.email
    assert denied.value.reason is Reason.CONSENT_MISSING
    assert SECRET not in str(denied.value)


def test_a_compiled_module_of_another_version_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compiled module whose API is not the one this package expects (a stale build left
    by an earlier checkout) is not used: a RuntimeWarning says so and the pure-Python read
    path runs."""
    import types

    import purposelimit._compiled as compiled

    stale = types.ModuleType("purposelimit._speedups")
    stale.API = compiled.API - 1  # type: ignore[attr-defined]  # a module attribute
    monkeypatch.setitem(sys.modules, "purposelimit._speedups", stale)
    monkeypatch.setattr(purposelimit, "_speedups", stale, raising=False)
    monkeypatch.delenv("PURPOSELIMIT_PURE_PYTHON", raising=False)
    with pytest.warns(RuntimeWarning, match="another version of purposelimit"):
        assert compiled._load_speedups() is None


def test_a_processing_subclass_copies_as_its_own_class() -> None:
    """``copy.copy`` of a subclass of ``processing`` gives an instance of that subclass."""
    import copy

    class Audited(processing):
        __slots__ = ()

    block = Audited("client.contract", actor="test", engine=Engine(make_register()))
    assert type(copy.copy(block)) is Audited
    assert type(copy.deepcopy(block)) is Audited


# =========================================================================== 6. second review
#
# Regression tests for the bugs a second adversarial review of the compiled read path found
# (reproducers run on both implementations). As in section 5, they run with whichever
# implementation is loaded (and again in the pure-Python twin run), and a scenario whose bug was
# a crash or a memory corruption runs in a fresh interpreter (``_run_isolated``).

#: A dict key whose ``__eq__``, run by the lookup of a memoised denial's details in
#: ``extra.denials``, replaces ``extra.denials`` with None: with "crash" the dict free list is
#: filled first, so the dict being searched goes back to the allocator (poisoned under
#: ``PYTHONMALLOC=debug``) unless the lookup holds it; with "swap" a new dict mapping the same
#: index to forged args takes the memory of the searched one unless the lookup holds it.
DENIALS_REPLACED_MID_LOOKUP = r"""
import json
import sys

from purposelimit import ProcessingDenied, processing
from purposelimit._errors import DenialDetails

mode = sys.argv[1]
audit = base.Audit([base.InMemoryAuditSink()])
engine = base.Engine(base.make_register(), clock=lambda: base.NOW, audit=audit)
record_ = base.lead()
guard = base.Lead.__dict__["name"]
with processing("newsletter.product", actor="t", engine=engine):
    try:
        record_.name  # decided, memoised, its details kept in extra.denials
    except ProcessingDenied:
        pass
extra = record_.field_tags
memo = extra.memo[guard.index]
junk = [{} for _ in range(200)]
hold = []
compared = []
replaced = []


class Evil:
    def __hash__(self):
        return guard.index  # the key the lookup looks for: its __eq__ runs

    def __eq__(self, other):
        compared.append(other)
        if extra.denials is not None:
            replaced.append(mode)
            if mode == "crash":
                junk.clear()  # fill the dict free list
                extra.denials = None  # the searched dict is freed unless the lookup holds it
            else:
                extra.denials = None  # the searched dict goes to the free list...
                hold.append({guard.index: (memo, ("FORGED ARGS FROM ANOTHER DICT",))})
        return False


denials = {Evil(): "x"}
for i in range(1, 30):
    denials[i * 2**61] = i  # hash i: the probe walks a full table
extra.denials = denials
del denials
with processing("newsletter.product", actor="t", engine=engine):
    try:
        result = ["read", record_.name]
    except ProcessingDenied as error:
        details = error.args[0]
        result = [
            "denied",
            error.reason.value,
            len(error.args),
            isinstance(details, DenialDetails),
            (details.record_type, details.field),
            "FORGED" in str(error),
            type(error).__name__,
        ]
# The lookup ran Evil.__eq__ (comparing it with the guard's index) and it replaced the dict.
ran = bool(compared) and all(key == guard.index for key in compared)
print(json.dumps({"compared": ran and replaced == [mode], "result": result}))
"""


@pytest.mark.parametrize("variant", ["crash", "swap"])
def test_denials_replaced_by_a_key_during_their_lookup_give_the_normal_denial(
    monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    """A key of ``extra.denials`` whose ``__eq__`` — run by the lookup of a memoised denial's
    details — replaces ``extra.denials`` neither crashes the read (the dict being searched is
    held until the lookup ends; the "crash" variant runs under ``PYTHONMALLOC=debug``) nor
    hands it args from another dict ("swap"): the read raises the normal ProcessingDenied (an
    exact one), its one arg a DenialDetails for Lead.name made anew. Run in a fresh interpreter
    (a crash fails the test)."""
    if variant == "crash":
        monkeypatch.setenv("PYTHONMALLOC", "debug")
    seen = _run_isolated(DENIALS_REPLACED_MID_LOOKUP, variant)
    assert seen == {
        "compared": True,
        "result": [
            "denied",
            "consent-missing",
            1,
            True,
            ["Lead", "name"],
            False,
            "ProcessingDenied",
        ],
    }


#: A finalizer (of a reference cycle collected while the block exits: the garbage collector
#: runs at its threshold of one allocation) that sets the exiting Active's `token` and
#: `previous` to None: the token the exit resets with, and the outer value it restores, must
#: stay alive until the exit is done. Arguments: ALLOCATIONS THRESHOLD.
EXIT_STATE_DROPPED_BY_A_FINALIZER = r"""
import gc
import json
import sys

from purposelimit import processing
from purposelimit._context import _CURRENT

allocations, threshold = int(sys.argv[1]), int(sys.argv[2])
engine = base.Engine(base.make_register(), clock=lambda: base.NOW)
events = []


class Payload:
    __slots__ = ("__weakref__", "data")

    def __init__(self):
        self.data = "outer-value"

    def __del__(self):
        events.append("Payload freed")


class Cycle:
    __slots__ = ("active", "me")

    def __del__(self):
        active = self.active
        events.append(f"finalizer (current={type(_CURRENT.get()).__name__})")
        active.token = None  # the token the exit is resetting with
        active.previous = None  # the value that token restores


block = processing("client.contract", actor="t", engine=engine)
payload = Payload()
outer_token = _CURRENT.set(payload)
block.__enter__()
active = _CURRENT.get()
del payload
gc.collect()
thresholds = gc.get_threshold()
gc.set_threshold(threshold)
extra = [[] for _ in range(allocations)]
cycle = Cycle()
cycle.me = cycle
cycle.active = active
del cycle, active
block.__exit__(None, None, None)
gc.set_threshold(*thresholds)
junk = [bytearray(40) for _ in range(1000)]  # reuse whatever memory was freed
current = _CURRENT.get()
result = {
    "events": list(events),
    "current": [type(current).__name__, getattr(current, "data", None)],
}
_CURRENT.reset(outer_token)
print(json.dumps(result))
"""


def test_a_finalizer_dropping_the_exit_token_mid_exit_restores_the_outer_value() -> None:
    """A finalizer run by the garbage collector while a nested block exits, which sets the
    exiting Active's ``token`` and ``previous`` to None, does not crash the exit (the token
    and the value it restores are held until the exit is done): the outer value — a
    ``Payload`` holding "outer-value" that only the exiting entry still references — is
    restored and alive, and the finalizer ran while the block was still active. Run in a fresh
    interpreter (a crash fails the test)."""
    seen = _run_isolated(EXIT_STATE_DROPPED_BY_A_FINALIZER, "0", "1")
    assert seen["current"] == ["Payload", "outer-value"]
    # The collection is timed by allocation counts tuned on CPython 3.11, where the finalizer
    # runs inside the exit; other versions may collect elsewhere, which must be as safe.
    ran_inside = ["finalizer (current=Active)"]
    if sys.version_info[:2] == (3, 11):
        assert seen["events"] == ran_inside
    else:
        assert seen["events"] in ([], ran_inside)


#: ``ProcessingDenied.__new__`` patched after import to return a bytearray: a memoised denial
#: must not be made with it (the compiled path once wrote the denial's args into that object).
DENIED_NEW_PATCHED = r"""
import json

from purposelimit import ProcessingDenied, processing
from purposelimit._errors import DenialDetails

engine = base.Engine(base.make_register(), clock=lambda: base.NOW)
record_ = base.lead()
seen = {}
with processing("newsletter.product", actor="t", engine=engine):
    try:
        record_.name
    except ProcessingDenied as error:
        seen["first"] = error.reason.value
victim = bytearray(b"A" * 64)
patched = []


def patched_new(cls, *args, **kwargs):
    patched.append(cls.__name__)
    return victim


had_own = "__new__" in vars(ProcessingDenied)
original = ProcessingDenied.__new__
ProcessingDenied.__new__ = staticmethod(patched_new)
reads = []
try:
    with processing("newsletter.product", actor="t", engine=engine):
        for _ in range(2):
            try:
                reads.append(["read", record_.name])
            except BaseException as error:
                reads.append(
                    [
                        type(error).__name__,
                        getattr(getattr(error, "reason", None), "value", None),
                        isinstance(error.args[0], DenialDetails),
                    ]
                )
finally:
    if had_own:
        ProcessingDenied.__new__ = original
    else:
        del ProcessingDenied.__new__
junk = [bytearray(64) for _ in range(1000)]
seen["reads"] = reads
seen["patched_calls"] = patched
seen["victim"] = [len(victim), bytes(victim) == b"A" * 64]
print(json.dumps(seen))
"""


def test_a_patched_processing_denied_new_does_not_make_memoised_denials() -> None:
    """``ProcessingDenied.__new__`` replaced after import (instrumentation, a test double) by
    one returning another object does not make the read path's denials: memoised denials are
    still ProcessingDenied (``consent-missing``, their arg a DenialDetails), made with the
    ``__new__`` captured at import, which the patch is never called for, and the object the
    patch would hand back is intact (no memory written into it). The patch is undone in a
    ``finally``. Run in a fresh interpreter (a crash fails the test)."""
    seen = _run_isolated(DENIED_NEW_PATCHED)
    assert seen == {
        "first": "consent-missing",
        "reads": [["ProcessingDenied", "consent-missing", True]] * 2,
        "patched_calls": [],
        "victim": [64, True],
    }


def test_a_guards_get_is_read_only_and_is_its_slots_getter(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """Compiled path: a guard's ``_get`` (what the Python reference returns a value through) is
    derived from its slot: it equals ``_member.__get__`` (and not another field's), reads the
    slot itself, and cannot be replaced or deleted (AttributeError), so a replacement can never
    make first and memoised reads return different things; reads go on returning the field."""
    if not COMPILED:
        pytest.skip("the pure-Python read path is running: its _get is a plain slot")
    guard: Any = Lead.__dict__["email"]
    other: Any = Lead.__dict__["name"]
    record_ = lead()
    assert guard._get == guard._member.__get__
    assert guard._get != other._get
    assert guard._get(record_, Lead) == SECRET  # the slot itself: no decision, no audit
    with pytest.raises(AttributeError, match="not writable"):
        guard._get = lambda obj, objtype=None: "***redacted***"
    with pytest.raises(AttributeError):
        del guard._get
    assert guard._get == guard._member.__get__
    with processing("client.contract", actor="a", engine=engine):
        assert [record_.email for _ in range(3)] == [SECRET] * 3
    assert fields_of(sink) == ["email"] * 3


def test_an_active_subclass_from_activate_or_under_is_made_once_per_entry(
    engine: Engine, sink: InMemoryAuditSink
) -> None:
    """A block whose ``_activate`` (or ``_under``) returns an ``Active`` subclass has it called
    once per entry that needs it, never twice, and binds the very instance it returned — the
    first entry of a block binds its ``_activate``'s instance, not the plain Active that
    ``super()._activate()`` cached — identically on both read paths: a later entry reuses the
    cached Active (or nested Active) without calling them, as the reference's inlined
    ``_activate``/``_under`` do; a block nested in another restores it on exit."""
    from purposelimit._context import Active

    calls: list[str] = []

    class TaggedActive(Active):
        __slots__ = ("tag",)

        tag: str

    class Extended(processing):
        __slots__ = ()

        def _activate(self) -> Active:
            active = super()._activate()
            calls.append("activate")
            extended = TaggedActive(active.scope, active.runtime, self)
            extended.tag = "mine"
            return extended

        def _under(self, active: Active, previous: Active) -> Active:
            calls.append("under")
            nested = super()._under(active, previous)
            return TaggedActive(nested.scope, nested.runtime, self, previous)

    class UnderOnly(processing):
        __slots__ = ()

        def _under(self, active: Active, previous: Active) -> Active:
            calls.append("under")
            return TaggedActive(active.scope, active.runtime, self, previous)

    record_ = lead()

    def enter(block: processing) -> tuple[list[str], str, str | None]:
        """Enter *block*, read, exit: the calls the entry made and the Active it bound."""
        calls.clear()
        with block:
            active = _CURRENT.get()
            assert active is not None
            assert active.block is block
            assert record_.name == "Ada"
            bound = (type(active).__name__, getattr(active, "tag", None))
        made = list(calls)
        return made, *bound

    top = Extended("client.contract", actor="top", engine=engine)
    assert enter(top) == (["activate"], "TaggedActive", "mine")
    assert enter(top) == ([], "Active", None)
    assert current_processing() is None
    outer = processing("prospection.postal", actor="outer", engine=engine)
    for block, first in (
        (Extended("client.contract", actor="nested", engine=engine), ["activate", "under"]),
        (UnderOnly("client.contract", actor="under", engine=engine), ["under"]),
    ):
        with outer:
            outer_active = _CURRENT.get()
            assert enter(block) == (first, "TaggedActive", None)
            assert _CURRENT.get() is outer_active
            again = enter(block)
            assert _CURRENT.get() is outer_active
        assert current_processing() is None
        if isinstance(block, Extended):
            assert again == ([], "Active", None)  # the cached Active and the nested one reused
        else:
            assert again == (["under"], "TaggedActive", None)  # _nested never set: asked again
    assert [e.actor for e in sink.events] == ["top", "top", "nested", "nested", "under", "under"]


#: ``__exit__`` called otherwise than a ``with`` statement does, with arguments that do not fit.
BAD_EXIT_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((None,), {}),
    ((None, None), {}),
    ((None, None, None, None), {}),
    ((None, None, None), {"foo": 1}),
    ((None, None), {"exc": None}),
    ((), {"a": None, "b": None, "c": None}),
    ((1, 2, 3, 4, 5), {}),
    ((), {"exc_type": None, "exc": None}),
]


@pytest.mark.parametrize(
    ("args", "kwargs"), BAD_EXIT_CALLS, ids=[f"call{i}" for i in range(len(BAD_EXIT_CALLS))]
)
def test_a_badly_called_exit_raises_the_reference_type_error_and_stays_active(
    engine: Engine, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """``__exit__`` called with arguments that do not fit (too few, too many, an unknown or a
    repeated keyword) raises the TypeError ``_PyBlock.__exit__`` raises for them, with the same
    message, on both read paths, and leaves the block active; it then exits normally."""
    block: Any = processing("client.contract", actor="a", engine=engine)  # called loosely
    block.__enter__()
    entered = _CURRENT.get()
    assert entered is not None
    caught = outcome(lambda: block.__exit__(*args, **kwargs))
    assert type(caught) is TypeError
    reference = outcome(lambda: _PyBlock.__exit__(block, *args, **kwargs))
    assert type(reference) is TypeError
    assert str(caught) == str(reference)
    assert "__exit__()" in str(caught)
    assert _CURRENT.get() is entered
    assert _purpose() == "client.contract"
    block.__exit__(None, None, None)
    assert current_processing() is None
    assert entered.block is block


#: ``configure_events`` misused: a field named twice, a class that is not a plain slotted one.
#: Each must be refused and leave the module configured as it was; the real AuditEvent is
#: configured again at the end, and the audit works.
CONFIGURE_EVENTS_MISUSE = r"""
import json

import attrs

from purposelimit import _speedups as speedups
from purposelimit import processing
from purposelimit._audit import AuditEvent

names = tuple(field.name for field in attrs.fields(AuditEvent))


def attempt(action):
    try:
        action()
    except Exception as error:
        return [type(error).__name__, str(error)]
    return ["accepted"]


def made():
    event = speedups.new_event(*range(len(names)))
    return [type(event) is AuditEvent, [getattr(event, name) for name in names]]


@attrs.frozen(slots=True)
class Twice:
    a: object


Unusual = type("Unusual", (Exception,), {"__slots__": ("a",)})
result = {
    "dup": attempt(lambda: speedups.configure_events(Twice, ("a", "a"))),
    "after_dup": made(),
    "exception_class": attempt(lambda: speedups.configure_events(Unusual, ("a",))),
    "after_exception_class": made(),
}
speedups.configure_events(AuditEvent, names)
sink = base.InMemoryAuditSink()
engine = base.Engine(base.make_register(), clock=lambda: base.NOW, audit=base.Audit([sink]))
record_ = base.lead()
with processing("client.contract", actor="t", engine=engine):
    record_.name
result["audited"] = [[type(e) is AuditEvent, e.field, e.allowed] for e in sink.events]
print(json.dumps(result))
"""


def test_configure_events_refuses_a_field_named_twice_and_an_unusual_class() -> None:
    """Compiled path: ``_speedups.configure_events`` refuses a field named twice (ValueError:
    a duplicate once leaked a reference per event) and a class that is not a plain slotted
    class, such as an exception class (TypeError: its events were half-built), and leaves
    ``new_event`` making the AuditEvent it was configured with. Run in a fresh interpreter,
    where the real AuditEvent is configured again after the misuse."""
    if not COMPILED:
        pytest.skip("the pure-Python read path is running: configure_events is not used")
    seen = _run_isolated(CONFIGURE_EVENTS_MISUSE)
    still = [True, list(range(15))]
    assert seen == {
        "dup": ["ValueError", "configure_events: a field named twice"],
        "after_dup": still,
        "exception_class": ["TypeError", "configure_events: a plain slotted class is expected"],
        "after_exception_class": still,
        "audited": [[True, "name", True]],
    }


#: The compiled module's entry points called directly in a sub-interpreter (where purposelimit
#: runs the pure-Python read path): each must raise rather than work on the main interpreter's
#: state (its AuditEvent class, its ContextVar); the main interpreter works before and after.
SUB_INTERPRETER_ENTRY_POINTS = (
    SUB_INTERPRETER_PRELUDE
    + r'''
result = {"before": check()}
interpreter = new_interpreter()
result["sub"] = run_in(
    interpreter,
    """
import attrs
import purposelimit._audit as audit_module
import purposelimit._speedups as speedups


def attempt(action):
    try:
        made = action()
    except BaseException as error:
        return ["raised", type(error).__name__, str(error)]
    return ["made", type(made).__qualname__]


count = len(attrs.fields(audit_module.AuditEvent))
block = speedups.Block()
seen = {
    "main": speedups.in_main_interpreter(),
    "new_event": attempt(lambda: speedups.new_event(*[None] * count)),
    "enter": attempt(block.__enter__),
    "exit": attempt(lambda: block.__exit__(None, None, None)),
}
with open(report, "w") as out:
    json.dump(seen, out)
""",
)
result["after_calls"] = check()
interpreters.destroy(interpreter)
result["after_destroy"] = check()
result["events"] = [[type(e) is AuditEvent, e.field, e.allowed] for e in sink.events]
print(json.dumps(result))
'''
)


def test_compiled_entry_points_refuse_a_sub_interpreter() -> None:
    """In a sub-interpreter (``_xxsubinterpreters``, not isolated), calling the compiled
    module's ``new_event``, ``Block.__enter__`` or ``Block.__exit__`` directly raises — the
    ImportError "runs in the main interpreter only" when the main interpreter configured the
    module, the RuntimeError "not configured" when it runs the pure-Python path — instead of
    making the main interpreter's AuditEvent or setting its ContextVar; the main interpreter
    keeps working (blocks, reads, audit events) after the calls and after the sub-interpreter
    is destroyed. Run in a fresh interpreter (a crash fails the test)."""
    if importlib.util.find_spec("_xxsubinterpreters") is None:
        pytest.skip("_xxsubinterpreters is not available in this Python")
    if not BUILT:
        pytest.skip("purposelimit._speedups is not built: no compiled entry point to call")
    result = _run_isolated(SUB_INTERPRETER_ENTRY_POINTS)
    if COMPILED:
        main_only = [
            "raised",
            "ImportError",
            "purposelimit._speedups runs in the main interpreter only",
        ]
        refused = {"new_event": main_only, "enter": main_only, "exit": main_only}
    else:
        not_configured = ["raised", "RuntimeError", "purposelimit._speedups is not configured"]
        refused = {
            "new_event": ["raised", "RuntimeError", "configure_events() comes first"],
            "enter": not_configured,
            "exit": not_configured,
        }
    working = ["client.contract", "Ada", "Ada", True, "no-purpose"]
    assert result == {
        "before": working,
        "sub": {"main": False, **refused},
        "after_calls": working,
        "after_destroy": working,
        "events": [[True, "name", True]] * 6,  # a read outside any block: the fallback audit
    }


def test_a_guard_copies_as_itself_and_refuses_to_pickle(engine: Engine) -> None:
    """``copy.copy`` and ``copy.deepcopy`` of a guard return the guard itself (it is part of its
    record class), so a deep copy of a memo tuple works and still names its field's guard;
    ``pickle.dumps`` of a guard raises TypeError naming the record class and the field, with
    every protocol — on both read paths."""
    import copy

    record_ = lead()
    for field in ("name", "email"):
        guard: Any = Lead.__dict__[field]
        assert copy.copy(guard) is guard
        assert copy.deepcopy(guard) is guard
        assert copy.deepcopy([guard, (guard,)]) == [guard, (guard,)]
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(TypeError) as refused:
                pickle.dumps(guard, protocol=protocol)
            assert f"Lead.{field}" in str(refused.value)
        with processing("client.contract", actor="a", engine=engine):
            assert getattr(record_, field) in ("Ada", SECRET)
        extra: Any = record_.field_tags
        memo = extra.memo[guard.index]
        assert memo[8] is guard
        copied = copy.deepcopy(memo)
        assert type(copied) is tuple
        assert copied is not memo
        assert len(copied) == len(memo)
        assert copied[8] is guard
        assert copied[1:5] == memo[1:5]
        assert copied[6:8] == memo[6:8]
        with processing("client.contract", actor="a", engine=engine):
            assert getattr(record_, field) in ("Ada", SECRET)  # the memo is still the record's
        assert extra.memo[guard.index] is memo
