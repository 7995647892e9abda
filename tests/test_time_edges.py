"""Time edges: DST, leap days, windows ending exactly at T, clock skew, naive datetimes.

DESIGN §3: instants are timezone-aware; durations are added in UTC with
calendar arithmetic, a day past the end of a short month clamped to its last
day; every window includes its start and excludes its end; anything dated
after T is ignored when deciding at T. Every enforcement test runs in both
enforce and monitor modes.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from purposelimit._audit import Audit, InMemoryAuditSink
from purposelimit._bulk import LeadMapping, filter_leads, retention_sweep
from purposelimit._cli import main
from purposelimit._context import _CURRENT, processing, set_engine
from purposelimit._engine import Engine, consent_state
from purposelimit._errors import ConfigurationError, NaiveDatetimeError, ProcessingDenied
from purposelimit._model import (
    Authorisation,
    Collection,
    CollectionTag,
    Compatibility,
    Consent,
    DataCategory,
    Evidence,
    Objection,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._protocol import ProtocolError, decide_request, parse_request_line
from purposelimit._records import TaggedRecord, personal, record
from purposelimit._register import Register
from purposelimit._registry import SQLiteStore
from purposelimit._store import InMemoryStore, ObjectionWithdrawal, Withdrawal
from purposelimit._time import add_duration, parse_datetime, parse_duration

PARIS = ZoneInfo("Europe/Paris")
PLUS1 = timezone(timedelta(hours=1))
PLUS2 = timezone(timedelta(hours=2))
MODES = ("enforce", "monitor")
US = timedelta(microseconds=1)
NAIVE = datetime(2026, 3, 1, 10, 0)
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


def make_register() -> Register:
    def purpose(id_: str, duration: str, basis: str = "contract", **extra: Any) -> Purpose:
        return Purpose(
            id_,
            id_,
            f"The {id_} purpose",
            basis,
            Retention(duration),
            categories=["identity"],
            **extra,
        )

    return Register(
        [
            purpose("short.day", "P1D"),
            purpose("short.month", "P1M"),
            purpose("long.year", "P1Y"),
            purpose("long.four", "P4Y"),
            purpose("news.letter", "P3Y", "consent", direct_marketing=True),
            purpose("mail.postal", "P3Y", "legitimate-interests", direct_marketing=True),
            purpose("hr.recruitment", "P2Y", "legitimate-interests"),
        ],
        [DataCategory("identity"), DataCategory("identity.name")],
        [
            Compatibility(
                "recruitment-not-mail",
                "hr.recruitment",
                "mail.postal",
                "prohibited",
                source="CNIL délibération 2021-131",
            )
        ],
        version="time-1",
    )


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")


class Clock:
    """A clock tests move by hand (any aware instant, in any zone)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True)
def _reset_context() -> Iterator[None]:
    """Every test starts and ends with no processing block and no default engine."""
    token = set_engine(None, mode="enforce")
    context_token = _CURRENT.set(None)
    yield
    _CURRENT.reset(context_token)
    token.reset()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Any:
    return request.param


def tag(
    purpose: str, collected_at: datetime, subject: str = "lead-1", **extra: Any
) -> CollectionTag:
    return CollectionTag(subject, Collection(purpose), collected_at, **extra)


def decide(
    purpose: str, collected_for: str, collected_at: datetime, at: datetime, **events: Any
) -> Reason:
    engine = Engine(make_register())
    return engine.decide(
        tag(collected_for, collected_at), ["identity.name"], purpose, at, **events
    ).reason


def guarded_read(
    purpose: str,
    collection: str,
    collected_at: datetime,
    at: datetime,
    mode: Any,
    store: Any = None,
) -> tuple[Reason, bool]:
    """Read a record's guarded field at *at*: (the audited reason, whether a value came back)."""
    sink = InMemoryAuditSink()
    engine = Engine(make_register(), store, clock=lambda: at, audit=Audit([sink]))
    lead = Lead(
        "Ada", subject="lead-1", collection=Collection(collection), collected_at=collected_at
    )
    got = False
    with processing(purpose, actor="t", engine=engine, mode=mode):
        try:
            got = lead.name == "Ada"
        except ProcessingDenied:
            got = False
    return sink.events[-1].reason, got


# --------------------------------------------------------------------------- DST


def test_a_day_across_spring_forward_is_24_hours_of_utc() -> None:
    """Paris skips 02:00-03:00 on 2026-03-29: P1D from 12:00+01:00 the day before ends at
    13:00+02:00 (11:00Z), not at 12:00 local time."""
    collected = datetime(2026, 3, 28, 12, 0, tzinfo=PLUS1)
    end = datetime(2026, 3, 29, 13, 0, tzinfo=PLUS2)
    assert add_duration(collected, parse_duration("P1D")) == end
    assert decide("short.day", "short.day", collected, end - US) is Reason.SAME_PURPOSE
    assert decide("short.day", "short.day", collected, end) is Reason.RETENTION_EXPIRED
    same_instant_other_offset = datetime(2026, 3, 29, 12, 0, tzinfo=PLUS1)
    assert decide("short.day", "short.day", collected, same_instant_other_offset) is (
        Reason.RETENTION_EXPIRED
    )


def test_zoneinfo_instants_are_decided_as_instants(mode: Any) -> None:
    """Europe/Paris datetimes (zoneinfo) across the autumn change: the repeated hour's two
    02:30 are an hour apart, and each retention ends 24 hours of UTC later."""
    first = datetime(2026, 10, 25, 2, 30, tzinfo=PARIS)  # 00:30Z, summer time
    second = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS)  # 01:30Z, winter time
    at = datetime(2026, 10, 26, 1, 0, tzinfo=UTC)  # between the two ends
    assert guarded_read("short.day", "short.day", first, at, mode) == (
        Reason.RETENTION_EXPIRED,
        mode == "monitor",
    )
    assert guarded_read("short.day", "short.day", second, at, mode) == (Reason.SAME_PURPOSE, True)


def test_an_event_later_in_the_repeated_hour_is_not_yet_there() -> None:
    """A consent given at 02:30 (winter time, 01:30Z) does not count at 02:45 summer time
    (00:45Z), though the wall clock reads later: decisions compare instants."""
    given = datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS)
    at = datetime(2026, 10, 25, 2, 45, fold=0, tzinfo=PARIS)
    consent = Consent("lead-1", ["news.letter"], given, evidence=Evidence("double-opt-in"))
    objection = Objection("lead-1", given)
    assert decide("news.letter", "short.day", T0, at, consents=[consent]) is Reason.CONSENT_MISSING
    earlier = Consent("lead-1", ["news.letter"], T0, evidence=Evidence("double-opt-in"))
    assert (
        decide("news.letter", "news.letter", T0, at, consents=[earlier], objections=[objection])
        is Reason.CONSENT
    )  # the objection is made after T
    one_hour_later = at + timedelta(hours=1)  # 01:45Z: both now stand
    assert (
        decide(
            "news.letter",
            "news.letter",
            T0,
            one_hour_later,
            consents=[earlier],
            objections=[objection],
        )
        is Reason.OBJECTION
    )


def test_the_protocol_reads_paris_offsets_as_instants() -> None:
    """decide requests with +01:00 and +02:00 offsets give the decisions of their UTC instants."""
    engine = Engine(make_register())

    def line(at: str) -> str:
        return json.dumps(
            {
                "purpose": "short.day",
                "at": at,
                "record": {
                    "subject": "lead-1",
                    "collected_for": "short.day",
                    "collected_at": "2026-03-28T12:00:00+01:00",
                },
                "categories": ["identity.name"],
            }
        )

    reasons = [
        decide_request(engine, parse_request_line(line(at))).reason
        for at in (
            "2026-03-29T12:59:59.999999+02:00",
            "2026-03-29T10:59:59.999999Z",
            "2026-03-29T13:00:00+02:00",
            "2026-03-29T11:00:00+00:00",
        )
    ]
    assert reasons == [Reason.SAME_PURPOSE] * 2 + [Reason.RETENTION_EXPIRED] * 2


# --------------------------------------------------------------------------- leap days


@pytest.mark.parametrize(
    ("start", "duration", "end"),
    [
        ("2024-02-29", "P1Y", "2025-02-28"),
        ("2024-02-29", "P4Y", "2028-02-29"),
        ("2024-02-29", "P12M", "2025-02-28"),
        ("2024-01-31", "P1M", "2024-02-29"),
        ("2023-01-31", "P1M", "2023-02-28"),
        ("2023-02-28", "P1Y", "2024-02-28"),
        ("2024-02-29", "P1Y1D", "2025-03-01"),
        ("2024-02-28", "P1D", "2024-02-29"),
    ],
)
def test_calendar_arithmetic_clamps_to_short_months(start: str, duration: str, end: str) -> None:
    """Years and months first, clamped to the end of a short month, then days (DESIGN §3)."""
    assert add_duration(parse_datetime(start), parse_duration(duration)) == parse_datetime(end)


@pytest.mark.parametrize(
    ("purpose", "end"), [("long.year", "2025-02-28"), ("long.four", "2028-02-29")]
)
def test_retention_from_a_leap_day_ends_on_the_clamped_day(
    purpose: str, end: str, mode: Any
) -> None:
    """Data collected on 2024-02-29: P1Y ends at 2025-02-28T00:00Z, P4Y at 2028-02-29T00:00Z;
    read a microsecond before, allowed; at the end, denied."""
    collected = datetime(2024, 2, 29, tzinfo=UTC)
    stop = parse_datetime(end)
    assert guarded_read(purpose, purpose, collected, stop - US, mode) == (Reason.SAME_PURPOSE, True)
    assert guarded_read(purpose, purpose, collected, stop, mode) == (
        Reason.RETENTION_EXPIRED,
        mode == "monitor",
    )


# --------------------------------------------------------------------------- windows ending at T

T = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


def test_retention_ending_exactly_at_t_is_expired_at_t(mode: Any) -> None:
    """A retention window excludes its end: allowed a microsecond before T, expired at T."""
    collected = T - timedelta(days=1)
    assert guarded_read("short.day", "short.day", collected, T - US, mode)[0] is Reason.SAME_PURPOSE
    assert guarded_read("short.day", "short.day", collected, T, mode)[0] is Reason.RETENTION_EXPIRED


@pytest.mark.parametrize(
    ("events", "before", "at_t"),
    [
        # given exactly at T: valid at T, not before
        (
            {"consents": [Consent("lead-1", ["news.letter"], T, evidence=Evidence("button"))]},
            Reason.CONSENT_MISSING,
            Reason.CONSENT,
        ),
        # expiring exactly at T: valid before, expired at T
        (
            {
                "consents": [
                    Consent(
                        "lead-1", ["news.letter"], T0, expires_at=T, evidence=Evidence("button")
                    )
                ]
            },
            Reason.CONSENT,
            Reason.CONSENT_EXPIRED,
        ),
        # withdrawn exactly at T
        (
            {
                "consents": [Consent("lead-1", ["news.letter"], T0, evidence=Evidence("button"))],
                "withdrawals": [Withdrawal("lead-1", ["news.letter"], T)],
            },
            Reason.CONSENT,
            Reason.CONSENT_WITHDRAWN,
        ),
        # objection made exactly at T (news.letter is direct marketing)
        (
            {
                "consents": [Consent("lead-1", ["news.letter"], T0, evidence=Evidence("button"))],
                "objections": [Objection("lead-1", T)],
            },
            Reason.CONSENT,
            Reason.OBJECTION,
        ),
    ],
)
def test_an_event_dated_exactly_t_has_happened_at_t(
    events: dict[str, Any], before: Reason, at_t: Reason
) -> None:
    """DESIGN §3: an event dated exactly T has happened at T; a microsecond before, it has not."""
    assert decide("news.letter", "news.letter", T0, T - US, **events) is before
    assert decide("news.letter", "news.letter", T0, T, **events) is at_t


def test_an_objection_withdrawn_exactly_at_t_no_longer_stands(tmp_path: Path) -> None:
    """An objection withdrawn at T stands until T and not at T."""
    store = InMemoryStore(
        [Consent("lead-1", ["news.letter"], T0, evidence=Evidence("button"))],
        objections=[Objection("lead-1", T0, id="obj-1")],
    )
    store.record(ObjectionWithdrawal("obj-1", "lead-1", T))
    engine = Engine(make_register(), store)
    at = tag("news.letter", T0)
    assert engine.decide(at, ["identity.name"], "news.letter", T - US).reason is Reason.OBJECTION
    assert engine.decide(at, ["identity.name"], "news.letter", T).reason is Reason.CONSENT


def test_an_authorisation_window_includes_its_start_and_excludes_its_end() -> None:
    """An authorisation valid from T until T+1h lifts a prohibition on [T, T+1h) only."""
    authorisation = Authorisation(
        "court-1", ["hr.recruitment"], "mail.postal", "TJ Paris 2027-123", T, T + timedelta(hours=1)
    )
    events = {"authorisations": [authorisation]}
    reasons = [
        decide("mail.postal", "hr.recruitment", T0, at, **events)
        for at in (T - US, T, T + timedelta(hours=1) - US, T + timedelta(hours=1))
    ]
    assert reasons == [
        Reason.PROHIBITED,
        Reason.AUTHORISATION,
        Reason.AUTHORISATION,
        Reason.PROHIBITED,
    ]


def test_a_memoised_read_is_redecided_when_the_clock_reaches_the_end(mode: Any) -> None:
    """A read allowed a microsecond before the end is memoised until the end: at the end the
    memo is void and the read is denied; sent back before it, allowed again."""
    clock = Clock(T - US)
    sink = InMemoryAuditSink()
    engine = Engine(make_register(), clock=clock, audit=Audit([sink]))
    lead = Lead(
        "Ada",
        subject="lead-1",
        collection=Collection("short.day"),
        collected_at=T - timedelta(days=1),
    )
    with processing("short.day", actor="t", engine=engine, mode=mode):
        assert lead.name == "Ada"
        clock.now = T
        if mode == "enforce":
            with pytest.raises(ProcessingDenied):
                _ = lead.name
        else:
            assert lead.name == "Ada"
        clock.now = T - timedelta(seconds=1)  # the clock goes backwards
        assert lead.name == "Ada"
    assert [e.reason for e in sink.events] == [
        Reason.SAME_PURPOSE,
        Reason.RETENTION_EXPIRED,
        Reason.SAME_PURPOSE,
    ]


def test_a_clock_going_backwards_is_never_served_a_later_decision(mode: Any) -> None:
    """A denial decided at T (consent withdrawn at T) is not reused at T-1s: the memo is valid
    from the instant it was decided at, and the earlier read is decided anew (allowed)."""
    clock = Clock(T)
    sink = InMemoryAuditSink()
    store = InMemoryStore([Consent("lead-1", ["news.letter"], T0, evidence=Evidence("button"))])
    store.record(Withdrawal("lead-1", ["news.letter"], T))
    engine = Engine(make_register(), store, clock=clock, audit=Audit([sink]))
    lead = Lead("Ada", subject="lead-1", collection=Collection("news.letter"), collected_at=T0)
    with processing("news.letter", actor="t", engine=engine, mode=mode):
        with contextlib.suppress(ProcessingDenied):
            _ = lead.name
        clock.now = T - timedelta(seconds=1)
        assert lead.name == "Ada"
    assert [e.reason for e in sink.events] == [Reason.CONSENT_WITHDRAWN, Reason.CONSENT]


# --------------------------------------------------------------------------- clock skew


def test_each_process_decides_at_its_own_instant_over_a_shared_registry(tmp_path: Path) -> None:
    """Two processes share an SQLite registry; one's clock is 5 minutes ahead and records a
    consent 'now' by its clock. The other, behind, decides at its own instant: the consent is
    dated after it and does not count yet. Neither uses the other's notion of now."""
    path = tmp_path / "registry.db"
    ahead = T + timedelta(minutes=5)
    writer = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                from datetime import datetime
                from purposelimit._model import Consent, Evidence
                from purposelimit._registry import SQLiteStore
                store = SQLiteStore({str(path)!r})
                store.record(Consent("lead-1", ["news.letter"],
                                     datetime.fromisoformat({ahead.isoformat()!r}),
                                     evidence=Evidence("button")))
                store.close()
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert writer.returncode == 0, writer.stderr
    store = SQLiteStore(path)
    try:
        behind = Engine(make_register(), store, clock=lambda: T)
        on_time = Engine(make_register(), store, clock=lambda: ahead)
        record_tag = tag("short.day", T0)
        assert behind.decide(record_tag, ["identity.name"], "news.letter").reason is (
            Reason.CONSENT_MISSING
        )
        assert on_time.decide(record_tag, ["identity.name"], "news.letter").reason is Reason.CONSENT
        # the explicit instant wins over either clock
        assert behind.decide(record_tag, ["identity.name"], "news.letter", ahead).reason is (
            Reason.CONSENT
        )
    finally:
        store.close()


def test_a_record_read_under_two_skewed_clocks_is_decided_for_each(mode: Any) -> None:
    """One record read by two engines whose clocks disagree (one past the retention end, one
    before it): neither reuses the other's memoised decision."""
    end = T
    sink = InMemoryAuditSink()
    audit = Audit([sink])
    late = Engine(make_register(), clock=lambda: end + timedelta(minutes=2), audit=audit)
    early = Engine(make_register(), clock=lambda: end - timedelta(minutes=2), audit=audit)
    lead = Lead(
        "Ada",
        subject="lead-1",
        collection=Collection("short.day"),
        collected_at=end - timedelta(days=1),
    )
    for engine in (early, late, early, late):
        with (
            processing("short.day", actor="t", engine=engine, mode=mode),
            contextlib.suppress(ProcessingDenied),
        ):
            _ = lead.name
    assert [e.reason for e in sink.events] == [
        Reason.SAME_PURPOSE,
        Reason.RETENTION_EXPIRED,
    ] * 2


def test_a_block_clock_in_another_zone_is_the_same_instant(mode: Any) -> None:
    """A processing clock returning Paris time decides exactly as one returning UTC."""
    collected = T - timedelta(days=1)
    for at in (T - US, T):
        in_paris = at.astimezone(PARIS)
        assert guarded_read("short.day", "short.day", collected, in_paris, mode) == guarded_read(
            "short.day", "short.day", collected, at, mode
        )


# --------------------------------------------------------------------------- naive datetimes

STORE = InMemoryStore()

#: Everything that takes an instant, given a naive one.
NAIVE_DOORS: dict[str, Callable[[], object]] = {
    "Engine.decide(at=)": lambda: Engine(make_register()).decide(
        tag("short.day", T0), ["identity.name"], "short.day", NAIVE
    ),
    "Engine clock": lambda: Engine(make_register(), clock=lambda: NAIVE).decide(
        tag("short.day", T0), ["identity.name"], "short.day"
    ),
    "Engine.decide_category(at)": lambda: Engine(make_register()).decide_category(
        "short.day", "short.day", "identity.name", "lead-1", T0, None, None, NAIVE
    ),
    "CollectionTag.collected_at": lambda: tag("short.day", NAIVE),
    "CollectionTag.last_contact_at": lambda: tag("short.day", T0, last_contact_at=NAIVE),
    "CollectionTag.contract_ended_at": lambda: tag("short.day", T0, contract_ended_at=NAIVE),
    "Consent.given_at": lambda: Consent("s", ["news.letter"], NAIVE),
    "Consent.withdrawn_at": lambda: Consent("s", ["news.letter"], T0, withdrawn_at=NAIVE),
    "Consent.expires_at": lambda: Consent("s", ["news.letter"], T0, expires_at=NAIVE),
    "Objection.at": lambda: Objection("s", NAIVE),
    "Objection.withdrawn_at": lambda: Objection("s", T0, withdrawn_at=NAIVE),
    "Authorisation.valid_from": lambda: Authorisation("a", ["x"], "y", "ref", NAIVE),
    "Authorisation.valid_until": lambda: Authorisation("a", ["x"], "y", "ref", T0, NAIVE),
    "Withdrawal.at": lambda: Withdrawal("s", ["news.letter"], NAIVE),
    "ObjectionWithdrawal.at": lambda: ObjectionWithdrawal("o", "s", NAIVE),
    "record collected_at": lambda: Lead(
        "x", subject="s", collection=Collection("a"), collected_at=NAIVE
    ),
    "record last_contact_at": lambda: Lead(
        "x", subject="s", collection=Collection("a"), collected_at=T0, last_contact_at=NAIVE
    ),
    "record setattr": lambda: setattr(
        Lead("x", subject="s", collection=Collection("a"), collected_at=T0),
        "contract_ended_at",
        NAIVE,
    ),
    "add_duration": lambda: add_duration(NAIVE, parse_duration("P1D")),
    "consent_state": lambda: consent_state(STORE.subject_events("s"), "news.letter", NAIVE),
    "store.withdraw": lambda: InMemoryStore().withdraw("s", ["news.letter"], NAIVE),
    "store.as_of": lambda: STORE.as_of(NAIVE),
    "parse_datetime": lambda: parse_datetime("2026-03-01T10:00:00"),
}


@pytest.mark.parametrize("door", sorted(NAIVE_DOORS))
def test_a_naive_datetime_is_refused_everywhere(door: str) -> None:
    """Every place an instant enters refuses a naive datetime with NaiveDatetimeError, whose
    message says how to fix it."""
    with pytest.raises(NaiveDatetimeError) as caught:
        NAIVE_DOORS[door]()
    message = str(caught.value)
    assert "naive" in message or "offset" in message
    assert "timezone" in message or "offset" in message


def test_a_naive_processing_clock_is_refused_in_both_modes(mode: Any) -> None:
    """A block whose clock returns a naive datetime fails the read (closed) in both modes."""
    engine = Engine(make_register(), audit=Audit([InMemoryAuditSink()]))
    lead = Lead("Ada", subject="s", collection=Collection("short.day"), collected_at=T0)
    with (
        processing("short.day", actor="t", engine=engine, mode=mode, clock=lambda: NAIVE),
        pytest.raises(NaiveDatetimeError, match="naive"),
    ):
        _ = lead.name


def test_a_naive_instant_in_bulk_filters_is_refused() -> None:
    """filter_leads and retention_sweep refuse naive ``at`` / ``collected_at``."""
    mapping = LeadMapping(
        "id", collected_for="short.day", collected_at=T0, columns={"name": "identity.name"}
    )
    rows = [{"id": "lead-1", "name": "Ada"}]
    register = make_register()
    with pytest.raises((NaiveDatetimeError, ConfigurationError), match="naive"):
        list(filter_leads(rows, register=register, purpose="short.day", mapping=mapping, at=NAIVE))
    bare = attrs.evolve(mapping, collected_at=None)
    with pytest.raises((NaiveDatetimeError, ConfigurationError), match="naive"):
        list(
            filter_leads(
                rows, register=register, purpose="short.day", mapping=bare, collected_at=NAIVE
            )
        )


def test_a_naive_instant_in_a_retention_sweep_is_refused(tmp_path: Path) -> None:
    """retention_sweep refuses a naive ``at``."""
    leads = tmp_path / "leads.csv"
    leads.write_text("id,name\nlead-1,Ada\n", encoding="utf-8")
    mapping = LeadMapping(
        "id", collected_for="short.day", collected_at=T0, columns={"name": "identity.name"}
    )
    with pytest.raises((NaiveDatetimeError, ConfigurationError), match="naive"):
        list(retention_sweep(leads, register=make_register(), mapping=mapping, at=NAIVE))


def test_protocol_requests_refuse_dates_without_an_offset() -> None:
    """In a decide request, a date-time without an offset is an error naming the field."""
    request = {
        "purpose": "short.day",
        "at": "2026-03-01T10:00:00",
        "record": {"subject": "s", "collected_for": "short.day", "collected_at": "2026-01-01"},
        "categories": ["identity.name"],
    }
    with pytest.raises(ProtocolError, match=r"^at: a date-time needs an offset"):
        parse_request_line(json.dumps(request))
    request["at"] = "2026-03-01"  # a bare date is midnight UTC
    assert parse_request_line(json.dumps(request)).at == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("option", ["--at", "--collected-at"])
def test_the_command_line_refuses_an_instant_without_offset(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--at / --collected-at without an offset is a usage error (exit 2) saying what to add."""
    leads = tmp_path / "leads.csv"
    leads.write_text("id,name\nlead-1,Ada\n", encoding="utf-8")
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[subject]\ncolumn = "id"\n[collection]\npurpose = "short.day"\n'
        '[columns]\nname = "identity.name"\n',
        encoding="utf-8",
    )
    code = main(
        [
            "retention",
            str(leads),
            "--preset",
            "cnil-commercial",
            "--mapping",
            str(mapping),
            option,
            "2026-03-01T10:00:00",
        ]
    )
    assert code == 2
    assert "needs an offset" in capsys.readouterr().err


def test_decide_answers_a_naive_date_with_an_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`purposelimit decide` answers a request whose date lacks an offset with an error line,
    and goes on with the next request."""
    good = {
        "purpose": "prospection.postal",
        "at": "2026-03-01T10:00:00+01:00",
        "record": {
            "subject": "s",
            "collected_for": "prospection.postal",
            "collected_at": "2026-01-01",
        },
        "categories": ["identity.name"],
    }
    bad = {**good, "at": "2026-03-01T10:00:00"}
    stdin = io.TextIOWrapper(
        io.BytesIO(f"{json.dumps(bad)}\n{json.dumps(good)}\n".encode()), encoding="utf-8"
    )
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["decide", "--preset", "cnil-commercial"]) == 1
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first == {"error": first["error"], "line": 1}
    assert "offset" in first["error"]
    assert second["allowed"] is True


# --------------------------------------------------------------------------- out of range


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-14:00", "0001-01-01T00:00:00+14:00"])
def test_an_instant_outside_utcs_years_is_refused_when_read(text: str) -> None:
    """An offset that pushes an instant outside the years 1-9999 in UTC is refused when read
    (protocol, files, options), instead of failing later in arithmetic."""
    request = {
        "purpose": "short.day",
        "at": text,
        "record": {"subject": "s", "collected_for": "short.day", "collected_at": "2026-01-01"},
        "categories": ["identity.name"],
    }
    with pytest.raises(ProtocolError, match="out of range"):
        parse_request_line(json.dumps(request))
    with pytest.raises(ValueError, match="out of range"):
        parse_datetime(text)


def test_extreme_in_process_instants_do_not_crash_the_arithmetic() -> None:
    """Instants built in code at the edges of the calendar give a decision, not an OverflowError:
    the retention of data collected at the end of time never ends; a retention counted from
    the start of time ends early, never late."""
    latest = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-14)))
    assert add_duration(latest, parse_duration("P1Y")) == datetime.max.replace(tzinfo=UTC)
    earliest = datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=14)))
    assert add_duration(earliest, parse_duration("P1D")) == datetime(1, 1, 2, tzinfo=UTC)
    engine = Engine(make_register())
    decision = engine.decide(tag("short.day", latest), ["identity.name"], "short.day", T)
    assert decision.reason is Reason.SAME_PURPOSE
