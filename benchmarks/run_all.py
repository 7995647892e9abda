"""Every purposelimit benchmark side by side with its peers and its floor, in one run.

Usage::

    python benchmarks/run_all.py             # full sizes: 1,000,000 rows and events (~4 min)
    python benchmarks/run_all.py --quick     # 100,000 rows and events (~1 min)
    python benchmarks/run_all.py --only read,processing --json results.json

Each section prints medians and the ratios that the performance targets are
stated in, all measured in the same run (cases are interleaved, round after
round, so that a busy machine slows every case alike):

1. **Guarded read** of one personal field of a tagged record — allowed
   same-purpose, allowed compatible, allowed by consent, and denied (raising
   and catching :class:`~purposelimit.ProcessingDenied`) — against a plain
   slotted attrs attribute read, a minimal hand-written check (a descriptor
   reading one ContextVar and one precomputed dict) and, when installed,
   pycasbin and vakt answering the same question under an equivalent policy
   translated from the same register (see :func:`static_table`).
2. **``processing`` enter + exit** against a bare ContextVar set/reset pair.
3. **Bulk decisions** over in-memory lead rows (1,000,000; 100,000 with
   ``--quick``): :func:`purposelimit._bulk.filter_leads` in rows/s against a
   naive per-row loop calling :meth:`Engine.decide`, and against pycasbin and
   vakt per row (on a sample); then **``filter`` end to end** on a CSV file of
   as many rows against the plain read-and-write pass with the same CSV reader
   (``bench_filter.py``'s generator, floor and run).
4. **Memory** per tagged record against the same record untagged holding the
   same subject id and dates (tracemalloc).
5. **Consent lookups** in an SQLite registry of 1,000,000 events (100,000
   with ``--quick``) against the equivalent hand-written indexed sqlite3
   query (``bench_consent_lookup.py``'s filler and query).

The peers (``pip install casbin vakt``) are skipped, with a note, when not
installed. They answer a simpler question than purposelimit: the register is
translated once into a static table of (collection purpose, processing
purpose, data category) triples allowed without consent, plus one entry per
(data subject, consented purpose, category) — no retention, objection,
withdrawal or time, and decisions neither explained nor audited. The
benchmark checks that on the questions it times they give purposelimit's
answer. The translation favours them: pycasbin gets its fastest
configuration (``FastEnforcer`` indexed on purpose and category).

No assertion on timings: the figures are for people (docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import gc
import importlib.metadata
import json
import operator
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_consent_lookup  # noqa: E402  # the sibling benchmark, reused
import bench_filter  # noqa: E402  # the sibling benchmark, reused

import purposelimit  # noqa: E402
from purposelimit import (  # noqa: E402
    Audit,
    AuditEvent,
    Collection,
    CollectionTag,
    Consent,
    Engine,
    Evidence,
    InMemoryStore,
    Objection,
    ProcessingDenied,
    Register,
    TaggedRecord,
    personal,
    processing,
    record,
)
from purposelimit._bulk import LeadFilter, filter_leads, mapping_from_dict  # noqa: E402
from purposelimit._ids import ancestors, covers, depth  # noqa: E402
from purposelimit._model import ConsentAnswer, LegalBasis, Verdict  # noqa: E402
from purposelimit._presets import load_preset  # noqa: E402
from purposelimit._protocol import parse_instant  # noqa: E402
from purposelimit._registry import SQLiteStore, lineage_sql, to_us  # noqa: E402

UNROLL = 20  # reads per timed statement: the loop's own cost is spread over them

# --------------------------------------------------------------------------- results


@attrs.define
class Line:
    """One printed figure: a median, and its ratio to a baseline measured in the same run."""

    section: str
    name: str
    value: float
    unit: str
    baseline: str | None = None
    ratio: float | None = None
    target: str | None = None
    holds: bool | None = None
    note: str = ""


@attrs.define
class Results:
    lines: list[Line] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)

    def add(self, line: Line) -> None:
        self.lines.append(line)
        shown = f"{line.value:12,.1f} {line.unit:<7}"
        if line.ratio is not None:
            shown += f" {line.ratio:8.2f}x {line.baseline or ''}"
        if line.target is not None:
            verdict = "holds" if line.holds else "MISSED"
            shown += f"   target {line.target}: {verdict}"
        if line.note:
            shown += f"   ({line.note})"
        print(f"  {line.name:<44}{shown}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


def median_of(samples: dict[str, list[float]]) -> dict[str, float]:
    return {key: statistics.median(values) for key, values in samples.items()}


def interleave(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run every case once per round, round after round; return each case's median."""
    samples: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(rounds):
        for key, case in cases.items():
            samples[key].append(case())
    return median_of(samples)


def timed_ns(stmt: str, namespace: dict[str, Any], number: int) -> float:
    """Nanoseconds per execution of *stmt* (timeit: the garbage collector is off meanwhile)."""
    return timeit.Timer(stmt, globals=namespace).timeit(number=number) / number * 1e9


def unrolled(stmt: str) -> str:
    return "\n".join([stmt] * UNROLL)


class NullSink:
    """An audit sink that drops what it receives: measures building events, not storing them."""

    def emit(self, events: Sequence[AuditEvent]) -> None:
        pass


def peers() -> dict[str, Any]:
    """The installed peer engines' modules, by name."""
    found: dict[str, Any] = {}
    try:
        import casbin  # type: ignore[import-untyped]  # an optional benchmark dependency

        found["casbin"] = casbin
    except ImportError:
        pass
    try:
        import vakt  # type: ignore[import-untyped]  # an optional benchmark dependency

        found["vakt"] = vakt
    except ImportError:
        pass
    return found


# --------------------------------------------------------------------------- the peer policy


def _may_use(register: Register, purpose: str, category: str) -> bool:
    """Minimisation (DESIGN §3 step 4): may *purpose* use *category*?"""
    p = register.purposes[purpose]

    def listed(ids: Iterable[str]) -> bool:
        return any(covers(i, category) for i in ids)

    if register.is_sensitive(category):
        return listed(p.sensitive_categories)
    return listed(p.categories) or listed(p.sensitive_categories)


def _deciding_entry(register: Register, p0: str, p: str) -> Any:
    """The compatibility entry covering p0 -> p with the deepest ``to``, then ``from``."""
    best, best_key = None, (0, 0)
    for entry in register.compatibility:
        if covers(entry.from_, p0) and covers(entry.to, p):
            key = (depth(entry.to), depth(entry.from_))
            if key > best_key:
                best, best_key = entry, key
    return best


def static_table(register: Register) -> tuple[set[tuple[str, str, str]], dict[str, list[str]]]:
    """Translate the register into the static policy the peers apply.

    Returns:
        The (collection purpose P0, processing purpose P, category) triples a
        read is allowed for without consent, and the categories each purpose
        may use. Per DESIGN §3 for a data subject with no consent, objection
        or authorisation and within retention: P may use the category
        (minimisation); no ``prohibited`` entry decides P0 -> P; P does not rest
        on consent unless a ``compatible`` entry covers the reuse; and an own-line
        path exists — P is P0 or narrower, a ``compatible`` entry covers the
        reuse, or P is flagged ``archiving_or_statistics``. A valid consent to
        P (a per-subject entry) allows every category P may use, whatever P0.
    """
    purposes = sorted(register.purposes)
    categories = sorted(register.categories)
    uses = {p: [c for c in categories if _may_use(register, p, c)] for p in purposes}
    allowed: set[tuple[str, str, str]] = set()
    for p0 in purposes:
        for p in purposes:
            entry = _deciding_entry(register, p0, p)
            compatible = entry is not None and entry.verdict is Verdict.COMPATIBLE
            if entry is not None and entry.verdict is Verdict.PROHIBITED:
                continue
            purpose = register.purposes[p]
            if purpose.legal_basis is LegalBasis.CONSENT and not compatible:
                continue
            if covers(p0, p) or compatible or purpose.archiving_or_statistics:
                allowed.update((p0, p, c) for c in uses[p])
    return allowed, uses


def consent_purposes(register: Register, consent: Consent) -> list[str]:
    """The declared purposes a consent covers (it names purposes or groups)."""
    return [p for p in register.purposes if any(covers(named, p) for named in consent.purposes)]


CASBIN_MATCHER = (
    'r.p == p.p && r.cat == p.cat && (p.p0 == "*" || r.p0 == p.p0)'
    ' && (p.sub == "*" || r.sub == p.sub)'
)
CASBIN_MODEL = f"""
[request_definition]
r = sub, p0, p, cat

[policy_definition]
p = sub, p0, p, cat

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = {CASBIN_MATCHER}
"""


def casbin_enforcers(
    casbin: Any, register: Register, consents: Sequence[Consent]
) -> dict[str, Callable[[str, str, str, str], bool]]:
    """pycasbin answering ``(subject, P0, P, category)``: plain, and indexed on (P, category).

    Policy lines ``p, *, P0, P, category`` for the static table and
    ``p, subject, *, P, category`` per valid consent.
    """
    allowed, uses = static_table(register)
    lines = [["*", p0, p, c] for p0, p, c in sorted(allowed)]
    for consent in consents:
        for p in consent_purposes(register, consent):
            lines.extend([consent.subject, "*", p, c] for c in uses[p])
    plain = casbin.Enforcer(casbin.Enforcer.new_model(text=CASBIN_MODEL))
    from casbin.model import FastModel  # type: ignore[import-untyped]  # optional dependency

    fast_model = FastModel([2, 3])  # policy lines indexed on (P, category)
    fast_model.load_model_from_text(CASBIN_MODEL)
    fast = casbin.FastEnforcer(fast_model, cache_key_order=[2, 3])
    found: dict[str, Callable[[str, str, str, str], bool]] = {}
    for name, enforcer in (("pycasbin", plain), ("pycasbin FastEnforcer", fast)):
        enforcer.add_policies(lines)
        found[name] = enforcer.enforce
    return found


def vakt_guard(
    vakt: Any, register: Register, consents: Sequence[Consent]
) -> Callable[[str, str, str, str], bool]:
    """vakt answering ``(subject, P0, P, category)`` with rule-based policies in memory.

    One policy per processing purpose P (action ``P``; resource
    ``collected_for`` in the P0s allowed, ``category`` in those P may use) and
    one per (consent, purpose it covers) (subject ``==`` the data subject).
    """
    from vakt.rules import Any as AnyRule  # type: ignore[import-untyped]  # optional dependency
    from vakt.rules import Eq, In

    allowed, uses = static_table(register)
    storage = vakt.MemoryStorage()
    uid = 0
    for p in sorted(register.purposes):
        for cats in {
            tuple(c for q0, q, c in allowed if q == p and q0 == p0) for p0 in register.purposes
        }:
            if not cats:
                continue
            p0s = sorted(
                {p0 for p0 in register.purposes if all((p0, p, c) in allowed for c in cats)}
            )
            uid += 1
            storage.add(
                vakt.Policy(
                    uid,
                    effect=vakt.ALLOW_ACCESS,
                    subjects=[AnyRule()],
                    actions=[Eq(p)],
                    resources=[{"collected_for": In(*p0s), "category": In(*cats)}],
                )
            )
    for consent in consents:
        for p in consent_purposes(register, consent):
            uid += 1
            storage.add(
                vakt.Policy(
                    uid,
                    effect=vakt.ALLOW_ACCESS,
                    subjects=[Eq(consent.subject)],
                    actions=[Eq(p)],
                    resources=[{"category": In(*uses[p])}],
                )
            )
    guard = vakt.Guard(storage, vakt.RulesChecker())
    inquiry = vakt.Inquiry

    def ask(subject: str, p0: str, p: str, category: str) -> bool:
        return bool(
            guard.is_allowed(
                inquiry(
                    subject=subject,
                    action=p,
                    resource={"collected_for": p0, "category": category},
                )
            )
        )

    return ask


def peer_questions(
    register: Register, consents: Sequence[Consent]
) -> dict[str, Callable[[str, str, str, str], bool]]:
    """The installed peers, each answering ``(subject, P0, P, category)``.

    Only consents given by a valid mechanism, neither withdrawn nor expiring,
    become per-subject grants: the peers know no other consent state.
    """
    consents = [
        c
        for c in consents
        if c.state is ConsentAnswer.GIVEN
        and c.withdrawn_at is None
        and c.expires_at is None
        and (c.evidence is None or c.evidence.mechanism is None or c.evidence.mechanism.is_valid)
    ]
    found = peers()
    out: dict[str, Callable[[str, str, str, str], bool]] = {}
    if "casbin" in found:
        out.update(casbin_enforcers(found["casbin"], register, consents))
    if "vakt" in found:
        import logging

        logging.getLogger("vakt").setLevel(logging.ERROR)  # its audit log is not the benchmark
        out["vakt"] = vakt_guard(found["vakt"], register, consents)
    return out


# --------------------------------------------------------------------------- 1. guarded read


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")


@attrs.define
class Plain:
    name: str
    email: str


_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench", default=None)
_ALLOWED = {"client.contract": True}


class MinimalCheck:
    """The minimal hand-written check: one ContextVar and one precomputed dict, then the slot."""

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


def read_section(results: Results, rounds: int) -> None:
    print("\n1. Guarded read of one field (ns per read; medians of interleaved rounds)", flush=True)
    register = load_preset("cnil-commercial")
    now = datetime.now(UTC)
    collected = now - timedelta(days=1)
    consent = Consent(
        subject="cand-7",
        purposes=("prospection.email_b2c",),
        given_at=now - timedelta(hours=1),
        evidence=Evidence(mechanism="double-opt-in", collection_point="careers-form"),
        id="c-7",
    )
    store = InMemoryStore([consent])
    engine = Engine(register, store, audit=Audit([NullSink()], capacity=1 << 30))
    client = Lead(
        "Ada Lovelace",
        "ada@example.org",
        subject="cust-1",
        collection=Collection("client.contract", source="web-checkout"),
        collected_at=collected,
    )
    recruitment = Collection("hr.recruitment", source="careers-form")
    consented = Lead(
        "Grace Hopper",
        "grace@example.org",
        subject="cand-7",
        collection=recruitment,
        collected_at=collected,
    )
    refused = Lead(
        "Alan Turing",
        "alan@example.org",
        subject="cand-8",
        collection=recruitment,
        collected_at=collected,
    )
    plain = Plain("Ada Lovelace", "ada@example.org")
    checked = Checked("Ada Lovelace", "ada@example.org")
    ns: dict[str, Any] = {
        "plain": plain,
        "checked": checked,
        "client": client,
        "consented": consented,
        "refused": refused,
        "ProcessingDenied": ProcessingDenied,
    }
    number = 1000
    questions = {
        # case: (purpose, statement, (subject, P0, P, category), expected)
        "same": ("client.contract", "client.name", ("cust-1", "client.contract", "identity.name")),
        "compatible": (
            "prospection.postal",
            "client.name",
            ("cust-1", "client.contract", "identity.name"),
        ),
        "consent": (
            "prospection.email_b2c",
            "consented.email",
            ("cand-7", "hr.recruitment", "contact.email"),
        ),
        "denied": (
            "prospection.email_b2c",
            "try:\n    refused.email\nexcept ProcessingDenied:\n    pass",
            ("cand-8", "hr.recruitment", "contact.email"),
        ),
    }
    expected = {"same": True, "compatible": True, "consent": True, "denied": False}

    # What purposelimit decides, and whether every peer agrees (same question, same register).
    for case, (purpose, _stmt, (subject, p0, category)) in questions.items():
        tag = CollectionTag(subject, Collection(p0), collected)
        decision = engine.decide(tag, [category], purpose)
        if decision.allowed is not expected[case]:
            raise SystemExit(f"read benchmark set-up: {case} decided {decision.reason}")
    asks = peer_questions(register, [consent])
    for name, ask in asks.items():
        for case, (purpose, _stmt, (subject, p0, category)) in questions.items():
            if ask(subject, p0, purpose, category) is not expected[case]:
                raise SystemExit(f"{name} does not give purposelimit's answer for {case}")
    agreement = table_agreement(register, engine, asks, collected, now)
    for name, (agree, total) in agreement.items():
        results.note(f"{name} agrees with the engine on {agree:,} of {total:,} static questions")
    if not asks:
        results.note("pycasbin and vakt are not installed: peers skipped (pip install casbin vakt)")

    def plain_case() -> float:
        return timed_ns(unrolled("plain.name"), ns, number) / UNROLL

    def minimal_case() -> float:
        token = _var.set("client.contract")
        try:
            return timed_ns(unrolled("checked.name"), ns, number) / UNROLL
        finally:
            _var.reset(token)

    def guarded(purpose: str, stmt: str, warm: str) -> Callable[[], float]:
        block = processing(purpose, actor="bench", engine=engine)

        def case() -> float:
            with block:
                exec(warm, ns)  # decided once, memoised on the record
                return timed_ns(unrolled(stmt), ns, number) / UNROLL
            # the block's exit drains the audit buffer, outside the timed part

        return case

    def peer(ask: Callable[[str, str, str, str], bool], args: tuple[str, str, str, str]) -> float:
        count = 200
        start = time.perf_counter()
        for _ in range(count):
            ask(*args)
        return (time.perf_counter() - start) / count * 1e9

    cases: dict[str, Callable[[], float]] = {"plain": plain_case, "minimal": minimal_case}
    for case, (purpose, stmt, _question) in questions.items():
        cases[case] = guarded(purpose, stmt, stmt)
    for name, ask in asks.items():
        for case, (purpose, _stmt, (subject, p0, category)) in questions.items():
            args = (subject, p0, purpose, category)
            cases[f"{name}|{case}"] = functools.partial(peer, ask, args)
    medians = interleave(cases, rounds)

    plain_ns, minimal_ns = medians["plain"], medians["minimal"]
    results.add(Line("read", "plain slotted attrs read", plain_ns, "ns"))
    results.add(
        Line(
            "read",
            "minimal check (ContextVar + dict)",
            minimal_ns,
            "ns",
            "plain",
            minimal_ns / plain_ns,
        )
    )
    labels = {
        "same": "guarded read, allowed same purpose",
        "compatible": "guarded read, allowed compatible",
        "consent": "guarded read, allowed by consent",
        "denied": "guarded read, denied (raise + catch)",
    }
    for case in ("same", "compatible", "consent"):
        value = medians[case]
        results.add(
            Line(
                "read",
                labels[case],
                value,
                "ns",
                "minimal check",
                value / minimal_ns,
                "<= 2x",
                value / minimal_ns <= 2,
            )
        )
    denied = medians["denied"]
    results.add(
        Line(
            "read",
            labels["denied"],
            denied,
            "ns",
            "allowed same-purpose read",
            denied / medians["same"],
            "<= 3x",
            denied / medians["same"] <= 3,
            note=f"{denied / minimal_ns:.1f}x the minimal check",
        )
    )
    for name in asks:
        for case in questions:
            value = medians[f"{name}|{case}"]
            ours = medians[case]
            allowed_case = case != "denied"
            results.add(
                Line(
                    "read",
                    f"{name}, {case}",
                    value,
                    "ns",
                    f"purposelimit {case}",
                    value / ours,
                    ">= 20x" if allowed_case else None,
                    (value / ours >= 20) if allowed_case else None,
                    note="purposelimit is this many times faster",
                )
            )

    # Draining: building events from the buffer and handing them to a sink, per event.
    audit = engine.audit
    assert isinstance(audit, Audit)
    with processing("client.contract", actor="bench", engine=engine):
        for _ in range(50_000):
            _ = client.name
        start = time.perf_counter()
        audit.flush()
        drain = (time.perf_counter() - start) / 50_000 * 1e9
    results.add(
        Line(
            "read",
            "audit drain per event (off the read path)",
            drain,
            "ns",
            "allowed same-purpose read",
            drain / medians["same"],
            note="paid when a block exits or the buffer (1024 reads by default) fills",
        )
    )


def table_agreement(
    register: Register,
    engine: Engine,
    asks: dict[str, Callable[[str, str, str, str], bool]],
    collected: datetime,
    now: datetime,
    sample: int = 3000,
) -> dict[str, tuple[int, int]]:
    """How many static questions (P0, P, category; no consent, recent data) each peer
    answers as the engine does, on a random sample."""
    rng = random.Random(6)
    purposes = sorted(register.purposes)
    categories = sorted(register.categories)
    triples = [
        (rng.choice(purposes), rng.choice(purposes), rng.choice(categories)) for _ in range(sample)
    ]
    truth = [
        engine.decide_category(p, p0, c, "nobody", collected, None, None, now)[0].allowed
        for p0, p, c in triples
    ]
    return {
        name: (
            sum(ask("nobody", p0, p, c) is t for (p0, p, c), t in zip(triples, truth, strict=True)),
            sample,
        )
        for name, ask in asks.items()
    }


# --------------------------------------------------------------------------- 2. processing


class MinimalBlock:
    """The least a class-based context manager can do: set the ContextVar, reset it."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _var.set("client.contract")

    def __exit__(self, *exc: object) -> None:
        _var.reset(self._token)


def processing_section(results: Results, rounds: int) -> None:
    print("\n2. processing enter + exit (ns per pair)", flush=True)
    register = load_preset("cnil-commercial")
    engine = Engine(register, audit=Audit([NullSink()]))
    ns: dict[str, Any] = {
        "block": processing("client.contract", actor="bench", engine=engine),
        "outer": processing("client.relationship", actor="bench", engine=engine),
        "minimal": MinimalBlock(),
        "var": _var,
        "processing": processing,
        "engine": engine,
    }
    number = 2000
    statements = {
        "bare": "reset = var.reset\nreset(var.set('client.contract'))",
        "minimal": "with minimal:\n    pass",
        "processing": "with block:\n    pass",
        "inline": "with processing('client.contract', actor='bench', engine=engine):\n    pass",
    }
    cases: dict[str, Callable[[], float]] = {
        key: functools.partial(lambda stmt: timed_ns(unrolled(stmt), ns, number) / UNROLL, stmt)
        for key, stmt in statements.items()
    }

    def nested() -> float:
        with ns["outer"]:
            return timed_ns(unrolled(statements["processing"]), ns, number) / UNROLL

    cases["nested"] = nested
    block, var = ns["block"], _var

    def bare_call() -> None:
        reset = var.reset
        reset(var.set("client.contract"))

    def block_call() -> None:
        with block:
            pass

    # As benchmarks/bench_read.py measures: each pair inside a function call.
    cases["bare_fn"] = lambda: (
        timeit.timeit(bare_call, number=number * UNROLL) / (number * UNROLL) * 1e9
    )
    cases["block_fn"] = lambda: (
        timeit.timeit(block_call, number=number * UNROLL) / (number * UNROLL) * 1e9
    )
    medians = interleave(cases, rounds)
    bare = medians["bare"]
    results.add(Line("processing", "bare ContextVar set + reset", bare, "ns"))
    results.add(
        Line(
            "processing",
            "minimal context manager (set, reset)",
            medians["minimal"],
            "ns",
            "bare ContextVar set/reset",
            medians["minimal"] / bare,
            note="the with statement's own cost: the floor of any class-based one",
        )
    )
    ratio = medians["processing"] / bare
    results.add(
        Line(
            "processing",
            "processing(...) enter + exit",
            medians["processing"],
            "ns",
            "bare ContextVar set/reset",
            ratio,
            "<= 2x",
            ratio <= 2,
            note=f"{medians['processing'] / medians['minimal']:.2f}x the minimal context manager",
        )
    )
    results.add(
        Line(
            "processing",
            "  the same, nested in another block",
            medians["nested"],
            "ns",
            "bare ContextVar set/reset",
            medians["nested"] / bare,
        )
    )
    results.add(
        Line(
            "processing",
            "  with processing(...) built at each entry",
            medians["inline"],
            "ns",
            "bare ContextVar set/reset",
            medians["inline"] / bare,
            note="construction and preparation included",
        )
    )
    ratio = medians["block_fn"] / medians["bare_fn"]
    results.add(
        Line(
            "processing",
            "  the pair measured inside a function call",
            medians["block_fn"],
            "ns",
            "the same for set/reset",
            ratio,
            note=f"as bench_read.py measures it; set/reset so: {medians['bare_fn']:.0f} ns",
        )
    )


# --------------------------------------------------------------------------- 3. bulk and filter

BULK_MAPPING = """
[subject]
column = "Email"
email = true

[collection]
purpose_column = "CollectedFor"
collected_at_column = "CreatedDate"
last_contact_at_column = "LastActivityDate"

[columns]
Id = "identity.internal_id"
Name = "identity.name"
Company = "professional"
Email = "contact.email"
Phone = "contact.phone"
CollectedFor = "source_provenance"
CreatedDate = "relationship_history"
LastActivityDate = "relationship_history"
"""


def lead_rows(count: int) -> tuple[list[dict[str, str]], list[Consent], list[Objection]]:
    """*count* CRM-like rows (as bench_filter's generator: 80 % collected for
    prospection.email_b2b, 15 % client.contract, 5 % hr.recruitment; collection
    dates over three years, a last activity on 40 % of rows), one subject in
    200 with an objection and one in 200 with a refused consent."""
    rng = random.Random(7)
    start = date(2023, 3, 1)
    end = date(2026, 2, 28)
    days = (end - start).days
    rows = []
    for i in range(count):
        created = start + timedelta(days=rng.randrange(days))
        activity = ""
        if rng.random() < 0.4:
            activity = (
                created + timedelta(days=rng.randrange((end - created).days + 1))
            ).isoformat()
        rows.append(
            {
                "Id": f"00Q{i:012d}",
                "Name": bench_filter.FIRST[i % len(bench_filter.FIRST)],
                "Company": bench_filter.COMPANIES[i % len(bench_filter.COMPANIES)],
                "Email": f"lead.{i}@corex.example.com",
                "Phone": "+1 415 555 0100" if rng.random() < 0.5 else "",
                "CollectedFor": rng.choice(bench_filter.PURPOSES),
                "CreatedDate": created.isoformat(),
                "LastActivityDate": activity,
            }
        )
    at = datetime(2025, 6, 1, tzinfo=UTC)
    objections = [
        Objection(subject=f"lead.{i}@corex.example.com", at=at, id=f"o-{i}")
        for i in range(0, count, 200)
    ]
    consents = [
        Consent(
            subject=f"lead.{i}@corex.example.com",
            purposes=("prospection",),
            given_at=at,
            state="refused",
            id=f"c-{i}",
        )
        for i in range(100, count, 200)
    ]
    return rows, consents, objections


def bulk_section(results: Results, rows_count: int, repeat: int, sample: int) -> None:
    import tomllib

    print(f"\n3. Bulk decisions over {rows_count:,} in-memory lead rows", flush=True)
    register = load_preset("cnil-commercial")
    purpose = "prospection.email_b2b"
    at = bench_filter.AT
    mapping = mapping_from_dict(tomllib.loads(BULK_MAPPING))
    rows, consents, objections = lead_rows(rows_count)
    header = list(rows[0])
    categories = LeadFilter(
        register, purpose, mapping, header, at=at, drop_unmapped=True
    )._categories
    output = [c for c in header if c != "Phone"]  # contact.phone: excessive for e-mail B2B

    def bulk() -> tuple[float, dict[str, int]]:
        counts: dict[str, int] = {}
        start = time.perf_counter()
        for result in filter_leads(
            rows,
            register=register,
            purpose=purpose,
            mapping=mapping,
            at=at,
            consents=consents,
            objections=objections,
            drop_unmapped=True,
        ):
            counts[result.reason] = counts.get(result.reason, 0) + 1
        return time.perf_counter() - start, counts

    def naive() -> tuple[float, dict[str, int]]:
        """Per row: normalise the subject, parse the dates, build the tag, ask Engine.decide."""
        engine = Engine(register, InMemoryStore(consents, objections=objections))
        counts: dict[str, int] = {}
        collections: dict[str, Collection] = {}
        start = time.perf_counter()
        for row in rows:
            p0 = row["CollectedFor"]
            collection = collections.get(p0) or collections.setdefault(p0, Collection(p0))
            last = row["LastActivityDate"]
            tag = CollectionTag(
                row["Email"].strip().lower(),
                collection,
                parse_instant(row["CreatedDate"], "CreatedDate"),
                parse_instant(last, "LastActivityDate") if last else None,
            )
            decision = engine.decide(tag, categories, purpose, at)
            if decision.allowed:
                _kept = {column: row[column] for column in output}
            counts[decision.reason.value] = counts.get(decision.reason.value, 0) + 1
        return time.perf_counter() - start, counts

    def decisions_only() -> float:
        """The row decisions alone: LeadFilter's judgement of each row, no result objects,
        pseudonyms, duplicates or kept values (what the peers' per-row figures compare to)."""
        lead_filter = LeadFilter(
            register,
            purpose,
            mapping,
            header,
            at=at,
            consents=consents,
            objections=objections,
            drop_unmapped=True,
        )
        judge = lead_filter._judge
        cells = operator.itemgetter(*header)
        start = time.perf_counter()
        for row in rows:
            judge(cells(row))
        return time.perf_counter() - start

    bulk_times, naive_times, decision_times = [], [], []
    bulk_counts: dict[str, int] = {}
    for _ in range(repeat):
        seconds, bulk_counts = bulk()
        bulk_times.append(seconds)
        seconds, naive_counts = naive()
        naive_times.append(seconds)
        decision_times.append(decisions_only())
        if naive_counts != bulk_counts:
            raise SystemExit(f"bulk and naive loop disagree: {bulk_counts} != {naive_counts}")
    bulk_s, naive_s = statistics.median(bulk_times), statistics.median(naive_times)
    decisions_s = statistics.median(decision_times)
    results.add(Line("bulk", "naive loop calling Engine.decide", rows_count / naive_s, "rows/s"))
    results.add(
        Line(
            "bulk",
            "row decisions alone (LeadFilter)",
            rows_count / decisions_s,
            "rows/s",
            "naive loop (speed)",
            naive_s / decisions_s,
            note="no result objects, pseudonyms or duplicate tracking",
        )
    )
    ratio = naive_s / bulk_s
    results.add(
        Line(
            "bulk",
            "filter_leads (in-memory rows)",
            rows_count / bulk_s,
            "rows/s",
            "naive loop (speed)",
            ratio,
            ">= 2x",
            ratio >= 2,
            note=(
                f"{len(categories)} categories; outcomes {json.dumps(bulk_counts, sort_keys=True)}"
            ),
        )
    )

    asks = peer_questions(register, consents)
    first = categories[0]
    picked = rows[: min(sample, rows_count)]
    truth = {}
    for result in filter_leads(
        picked,
        register=register,
        purpose=purpose,
        mapping=mapping,
        at=at,
        consents=consents,
        objections=objections,
        drop_unmapped=True,
    ):
        truth[result.line] = result.kept
    for name, ask in asks.items():
        agree = 0
        start = time.perf_counter()
        for number, row in enumerate(picked, start=1):
            answer = ask(row["Email"].strip().lower(), row["CollectedFor"], purpose, first)
            agree += answer is truth[number]
        seconds = time.perf_counter() - start
        speed = len(picked) / seconds
        results.add(
            Line(
                "bulk",
                f"{name} per row (sample of {len(picked):,})",
                speed,
                "rows/s",
                "row decisions alone (speed)",
                (rows_count / decisions_s) / speed,
                note=(
                    f"purposelimit is this many times faster; agrees on {agree:,} rows "
                    "(the peers know no retention or objection)"
                ),
            )
        )


def filter_section(results: Results, rows_count: int, repeat: int) -> None:
    print(f"\n3b. filter end to end on a {rows_count:,}-row CSV file", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-run-all-") as tmp:
        folder = Path(tmp)
        (folder / "mapping.toml").write_text(bench_filter.MAPPING, encoding="utf-8")
        src = folder / "leads.csv"
        size = bench_filter.generate(src, rows_count, None)
        objections, consents = bench_filter.events(folder, rows_count)
        floors, filters = [], []
        for _ in range(repeat):
            floors.append(bench_filter.floor(src, folder / "floor.csv"))
            seconds, _info = bench_filter.run_filter(
                src, folder / "usable.csv", folder, objections, consents
            )
            filters.append(seconds)
    floor_s, filter_s = statistics.median(floors), statistics.median(filters)
    results.add(
        Line(
            "filter",
            "I/O floor: csv read + write",
            rows_count / floor_s,
            "rows/s",
            note=f"{size / 1e6:.0f} MB",
        )
    )
    ratio = floor_s / filter_s
    results.add(
        Line(
            "filter",
            "purposelimit filter, end to end",
            rows_count / filter_s,
            "rows/s",
            "I/O floor (speed)",
            ratio,
            ">= 0.5x",
            ratio >= 0.5,
        )
    )


# --------------------------------------------------------------------------- 4. memory


@attrs.define
class Untagged:
    """The same record without a tag: its fields plus the subject id and the three dates."""

    name: str
    email: str
    subject: str
    collected_at: datetime
    last_contact_at: datetime | None = None
    contract_ended_at: datetime | None = None


def memory_section(results: Results) -> None:
    print("\n4. Memory per record (tracemalloc, bytes)", flush=True)
    count = 50_000
    register = load_preset("cnil-commercial")
    engine = Engine(register, audit=Audit([NullSink()]))
    contract = Collection("client.contract", source="web-checkout")
    collected = datetime.now(UTC) - timedelta(days=1)
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

    untagged, _keep = measure(lambda i: Untagged(name, email, subjects[i], collected))
    tagged, leads = measure(
        lambda i: Lead(
            name, email, subject=subjects[i], collection=contract, collected_at=collected
        )
    )
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    with processing("client.contract", actor="bench", engine=engine):
        for lead in leads:
            _ = lead.name  # type: ignore[attr-defined]  # a Lead
    after = tracemalloc.get_traced_memory()[0]  # the block's exit drained the audit buffer
    tracemalloc.stop()
    read = (after - before) / count
    results.add(Line("memory", "untagged record (fields, subject id, 3 dates)", untagged, "B"))
    overhead = tagged - untagged
    results.add(
        Line(
            "memory",
            "tagged record",
            tagged,
            "B",
            note=f"+{overhead:.1f} B: the tag (two 8-byte slots; tracemalloc's blocks blur it)",
            target="tag <= 16 B",
            holds=overhead <= 16.5,  # tracemalloc rounds to its blocks
        )
    )
    results.add(
        Line(
            "memory",
            "memoised decisions after one read",
            read,
            "B",
            note="per record read once under a purpose (the memo list and its tuple)",
        )
    )


# --------------------------------------------------------------------------- 5. consent lookups


def consent_section(results: Results, events: int, rounds: int) -> None:
    print(
        f"\n5. Consent lookups in an SQLite registry of {events:,} events (us per lookup)",
        flush=True,
    )
    rng = random.Random(20261101)
    lookups_per_round = 1000
    with tempfile.TemporaryDirectory(prefix="bench-run-all-") as tmp:
        path = Path(tmp) / "registry.db"
        subjects = bench_consent_lookup.fill(path, events, rng)
        store = SQLiteStore(path)
        bare = sqlite3.connect(path, isolation_level=None)
        span = bench_consent_lookup.SPAN_US
        base = bench_consent_lookup.BASE
        purposes = bench_consent_lookup.PURPOSES

        def batch() -> list[tuple[str, str, datetime]]:
            return [
                (
                    f"lead-{rng.randrange(subjects)}",
                    rng.choice(purposes),
                    base + timedelta(microseconds=rng.randrange(span)),
                )
                for _ in range(lookups_per_round)
            ]

        def per_lookup(
            work: Callable[[list[tuple[str, str, datetime]]], None],
            items: list[tuple[str, str, datetime]],
        ) -> float:
            start = time.perf_counter()
            work(items)
            return (time.perf_counter() - start) / len(items) * 1e6

        def by_hand(items: list[tuple[str, str, datetime]]) -> None:
            for subject, purpose, at in items:
                lineage = tuple(ancestors(purpose))
                bare.execute(
                    lineage_sql(len(lineage), False), (subject, *lineage, to_us(at))
                ).fetchall()

        def by_store(items: list[tuple[str, str, datetime]]) -> None:
            for subject, purpose, at in items:
                store.consent_events(subject, purpose, at)

        def state(items: list[tuple[str, str, datetime]]) -> None:
            for subject, purpose, at in items:
                store.consent_state_at(subject, purpose, at)

        samples: dict[str, list[float]] = {k: [] for k in ("hand", "cold", "warm", "state")}
        for _ in range(rounds):
            items = batch()
            samples["hand"].append(per_lookup(by_hand, items))
            store._decoded.clear()  # cold: nothing decoded yet (a peek for the benchmark)
            samples["cold"].append(per_lookup(by_store, items))
            samples["warm"].append(per_lookup(by_store, items))
            store._decoded.clear()
            samples["state"].append(per_lookup(state, items))
        store.close()
        bare.close()
    medians = median_of(samples)
    hand = medians["hand"]
    results.add(Line("consent", "hand-written indexed sqlite3 query", hand, "us"))
    for key, label in (
        ("cold", "SQLiteStore.consent_events, cold"),
        ("warm", "SQLiteStore.consent_events, warm"),
        ("state", "lookup + DESIGN §3 consent rules, cold"),
    ):
        results.add(
            Line("consent", label, medians[key], "us", "hand-written query", medians[key] / hand)
        )


# --------------------------------------------------------------------------- main


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("attrs", "cattrs", "casbin", "vakt"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "read_path": "compiled" if purposelimit.COMPILED else "pure-Python",
        **versions,
    }


SECTIONS = ("read", "processing", "bulk", "filter", "memory", "consent")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="100,000 rows and events, fewer rounds"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections of {', '.join(SECTIONS)}",
    )
    parser.add_argument("--rows", type=int, help="lead rows (default 1,000,000; 100,000 quick)")
    parser.add_argument(
        "--events", type=int, help="consent events (default 1,000,000; 100,000 quick)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 31; 15 quick)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    events = args.events or (100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (15 if args.quick else 31)
    repeat = 3

    info = machine()
    print(
        f"purposelimit benchmarks: Python {info['python']}, {info['cpus']} CPUs ({info['cpu']}); "
        f"attrs {info['attrs']}, cattrs {info['cattrs']}, casbin {info['casbin']}, "
        f"vakt {info['vakt']}; {info['read_path']} read path"
    )
    results = Results()
    started = time.perf_counter()
    if "read" in only:
        read_section(results, rounds)
    if "processing" in only:
        processing_section(results, rounds)
    if "bulk" in only:
        bulk_section(results, rows, repeat, sample=2000 if args.quick else 5000)
    if "filter" in only:
        filter_section(results, rows, repeat)
    if "memory" in only:
        memory_section(results)
    if "consent" in only:
        consent_section(results, events, rounds)
    elapsed = time.perf_counter() - started
    missed = [line for line in results.lines if line.holds is False]
    print(f"\n{len(results.lines)} figures in {elapsed:.0f} s; targets missed: {len(missed)}")
    for line in missed:
        print(f"  {line.section}: {line.name} — {line.ratio:.2f}x, target {line.target}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "arguments": {
                        "rows": rows,
                        "events": events,
                        "rounds": rounds,
                        "quick": args.quick,
                    },
                    "lines": [attrs.asdict(line) for line in results.lines],
                    "notes": results.notes,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
