"""The consent, objection and audit commands (``purposelimit._registry_cli``).

Run through a tiny argparse harness (a fresh parser given ``add_commands``),
and through the real ``purposelimit`` entry point (``_cli.main``) with the
commands added to its parser, as the lead will wire them. Exit codes: 0 done,
1 bad input, 2 usage error. No error message shows a data subject's id.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _registry_support import postgres_schema, postgres_url

from purposelimit import _cli
from purposelimit._audit import AuditEvent
from purposelimit._audit_chain import JsonLinesAuditSink, SQLiteAuditSink
from purposelimit._engine import Engine
from purposelimit._model import (
    Authorisation,
    Collection,
    CollectionTag,
    Consent,
    ConsentState,
    DataCategory,
    Evidence,
    Objection,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._register import Register
from purposelimit._registry import SQLiteStore, open_store
from purposelimit._registry_cli import (
    DPV_CONSENT_STATUS,
    RegistryOverlay,
    add_commands,
    consents_from_27560,
    consents_to_27560,
    registry_snapshot,
)
from purposelimit._store import Withdrawal

SUBJECT = "jeanne.martin@example.com"
KEY = "audit-cli-key-0123456789abcdefgh"
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
PARIS = timezone(timedelta(hours=2))


def harness() -> argparse.ArgumentParser:
    """A fresh parser with only the registry commands."""
    parser = argparse.ArgumentParser(prog="purposelimit")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


class Run:
    """Runs commands through the harness and keeps stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str], registry: str) -> None:
        self.capsys = capsys
        self.registry = registry
        self.out = ""
        self.err = ""

    def __call__(self, *argv: str, registry: bool = True) -> int:
        args = list(argv)
        if registry:
            args += ["--registry", self.registry]
        parser = harness()
        try:
            namespace = parser.parse_args(args)
            code = int(namespace.func(namespace))
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        return code


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.delenv("PURPOSELIMIT_REGISTRY", raising=False)
    monkeypatch.delenv("PURPOSELIMIT_ACTOR", raising=False)
    return Run(capsys, f"sqlite:///{db}")


def history(db: Path) -> list[Any]:
    with SQLiteStore(db) as store:
        return list(store.history())


# --------------------------------------------------------------------------- consent grant, show


def test_grant_records_the_answer_with_its_evidence_and_actor(run: Run, db: Path) -> None:
    """consent grant records one Consent with purposes, instant, expiry and evidence, by the
    actor named; the output names the record, never the subject."""
    code = run(
        "consent",
        "grant",
        SUBJECT,
        "--purpose",
        "newsletter.product",
        "--purpose",
        "newsletter.events",
        "--at",
        "2025-03-01T12:00:00+02:00",
        "--expires-at",
        "2027-03-01",
        "--mechanism",
        "double-opt-in",
        "--collection-point",
        "https://example.com/form",
        "--notice-version",
        "2025-02",
        "--source",
        "own website",
        "--channel",
        "web",
        "--actor",
        "web-form",
    )
    assert code == 0, run.err
    [entry] = history(db)
    consent = entry.event
    assert isinstance(consent, Consent)
    assert (consent.subject, consent.purposes) == (
        SUBJECT,
        ("newsletter.product", "newsletter.events"),
    )
    assert consent.given_at == T0
    assert consent.given_at.utcoffset() == timedelta(hours=2)
    assert consent.expires_at == datetime(2027, 3, 1, tzinfo=UTC)
    assert consent.evidence == Evidence(
        "double-opt-in", "https://example.com/form", "2025-02", "own website", "web"
    )
    assert (entry.actor, entry.flags) == ("web-form", ())
    assert run.out == (
        f"recorded given consent {consent.id}: 2 purpose(s), given at 2025-03-01T12:00:00+02:00\n"
    )
    assert SUBJECT not in run.out + run.err
    assert (
        run(
            "consent",
            "grant",
            SUBJECT,
            "--purpose",
            "newsletter.product",
            "--purpose",
            "newsletter.events",
            "--at",
            "2025-03-01T12:00:00+02:00",
            "--expires-at",
            "2027-03-01",
            "--mechanism",
            "double-opt-in",
            "--collection-point",
            "https://example.com/form",
            "--notice-version",
            "2025-02",
            "--source",
            "own website",
            "--channel",
            "web",
            "--actor",
            "web-form",
        )
        == 0
    )
    assert run.out.startswith("already recorded")
    assert len(history(db)) == 1


def test_withdraw_then_show_gives_each_purposes_state_and_dpv_status(run: Run, db: Path) -> None:
    """A withdrawal for one purpose: show lists both events and the state per purpose at --at,
    with the W3C DPV status; --known-at answers as the registry stood then."""
    assert (
        run(
            "consent",
            "grant",
            SUBJECT,
            "--purpose",
            "newsletter.product",
            "--purpose",
            "newsletter.events",
            "--at",
            "2025-03-01",
            "--mechanism",
            "button",
            "--actor",
            "web",
        )
        == 0
    )
    assert (
        run(
            "consent",
            "withdraw",
            SUBJECT,
            "--purpose",
            "newsletter.events",
            "--at",
            "2025-04-01",
            "--channel",
            "unsubscribe-link",
            "--actor",
            "mailer",
        )
        == 0
    )
    [_, withdrawal] = history(db)
    assert run.out == (
        f"recorded withdrawal {withdrawal.event.id}: 1 purpose(s), "
        "effective 2025-04-01T00:00:00+00:00\n"
    )
    assert run("consent", "show", SUBJECT, "--at", "2025-05-01") == 0
    assert "2 consent event(s) recorded" in run.out
    assert "newsletter.events   withdrawn  dpv:ConsentWithdrawn" in run.out
    assert "newsletter.product  valid      dpv:ConsentGiven" in run.out
    assert "channel=unsubscribe-link" in run.out
    assert run("consent", "show", SUBJECT, "--at", "2025-05-01", "--format", "json") == 0
    document = json.loads(run.out)
    assert [(s["purpose"], s["state"], s["dpv"]) for s in document["states"]] == [
        ("newsletter.events", "withdrawn", "dpv:ConsentWithdrawn"),
        ("newsletter.product", "valid", "dpv:ConsentGiven"),
    ]
    assert [e["kind"] for e in document["events"]] == ["consent", "withdrawal"]
    past = (withdrawal.recorded_at - timedelta(microseconds=1)).isoformat()
    assert (
        run(
            "consent",
            "show",
            SUBJECT,
            "--purpose",
            "newsletter.events",
            "--at",
            "2025-05-01",
            "--known-at",
            past,
            "--format",
            "json",
        )
        == 0
    )
    assert json.loads(run.out)["states"][0]["state"] == "valid"


@pytest.mark.parametrize(
    ("options", "state"),
    [
        (["--mechanism", "double-opt-in"], ConsentState.VALID),
        (["--mechanism", "pre-ticked"], ConsentState.INVALID),
        (["--state", "refused"], ConsentState.REFUSED),
        (["--state", "not-asked"], ConsentState.NOT_ASKED),
        (["--mechanism", "button", "--expires-at", "2025-04-01"], ConsentState.EXPIRED),
    ],
)
def test_every_state_shows_its_dpv_status(
    run: Run, options: list[str], state: ConsentState
) -> None:
    """Given, invalid, refused, not-asked and expired grants read as the documented DPV status."""
    assert (
        run(
            "consent",
            "grant",
            SUBJECT,
            "--purpose",
            "prospection",
            "--at",
            "2025-03-01",
            *options,
            "--actor",
            "test",
        )
        == 0
    )
    assert run("consent", "show", SUBJECT, "--at", "2025-06-01", "--format", "json") == 0
    [shown] = json.loads(run.out)["states"]
    assert (shown["state"], shown["dpv"]) == (state.value, DPV_CONSENT_STATUS[state])


def test_the_dpv_mapping_covers_every_state() -> None:
    """Each consent state maps to one of the six DPV statuses the docs list."""
    assert set(DPV_CONSENT_STATUS) == set(ConsentState)
    assert set(DPV_CONSENT_STATUS.values()) == {
        "dpv:ConsentGiven",
        "dpv:ConsentRefused",
        "dpv:ConsentWithdrawn",
        "dpv:ConsentExpired",
        "dpv:ConsentInvalidated",
        "dpv:ConsentUnknown",
    }


def test_the_subject_can_come_from_stdin(
    run: Run, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SUBJECT '-' reads the id from stdin, keeping it out of the process list."""
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{SUBJECT}\n"))
    assert run("consent", "grant", "-", "--purpose", "prospection", "--actor", "x") == 0
    assert history(db)[0].event.subject == SUBJECT


def test_a_missing_actor_is_flagged_and_said(
    run: Run, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --actor the write is recorded flagged 'no-actor' with a note on stderr;
    PURPOSELIMIT_ACTOR fills it in."""
    assert run("consent", "withdraw", SUBJECT, "--purpose", "prospection") == 0
    assert "no --actor" in run.err
    assert history(db)[0].flags == ("no-actor",)
    monkeypatch.setenv("PURPOSELIMIT_ACTOR", "nightly-job")
    assert run("objection", "add", SUBJECT) == 0
    assert history(db)[1].actor == "nightly-job"


# --------------------------------------------------------------------------- the registry option


def test_the_registry_must_be_named(run: Run, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --registry and no PURPOSELIMIT_REGISTRY: exit 2, saying how; the variable works."""
    assert run("consent", "grant", SUBJECT, "--purpose", "prospection", registry=False) == 2
    assert "name the registry" in run.err
    assert "there is no default file" in run.err
    monkeypatch.setenv("PURPOSELIMIT_REGISTRY", f"sqlite:///{db}")
    assert (
        run("consent", "grant", SUBJECT, "--purpose", "prospection", "--actor", "a", registry=False)
        == 0
    )
    assert len(history(db)) == 1


def test_reading_commands_never_create_a_registry(run: Run, tmp_path: Path) -> None:
    """show/export on a missing SQLite file: exit 2, and no file appears."""
    missing = tmp_path / "typo.db"
    run.registry = f"sqlite:///{missing}"
    assert run("consent", "show", SUBJECT) == 2
    assert "there is no registry at" in run.err
    assert run("consent", "export") == 2
    assert not missing.exists()
    run.registry = "nosuch://x"
    assert run("consent", "show", SUBJECT) == 2


def test_a_refused_event_is_exit_1_without_the_subject(run: Run) -> None:
    """Another consent with a used id: exit 1, the error names the id, never the subject."""
    assert (
        run("consent", "grant", SUBJECT, "--purpose", "prospection", "--id", "c-1", "--actor", "a")
        == 0
    )
    assert (
        run("consent", "grant", SUBJECT, "--purpose", "newsletter", "--id", "c-1", "--actor", "a")
        == 1
    )
    assert "purposelimit consent grant: error: another consent with id 'c-1'" in run.err
    assert SUBJECT not in run.err


def test_a_read_only_registry_is_exit_1_and_records_nothing(run: Run, db: Path) -> None:
    """A write to a registry opened ?mode=ro fails with exit 1 and 'nothing was recorded'."""
    assert run("objection", "add", SUBJECT, "--actor", "a") == 0
    run.registry += "?mode=ro"
    assert run("consent", "withdraw", SUBJECT, "--purpose", "prospection", "--actor", "a") == 1
    assert "read-only" in run.err
    assert "nothing was recorded" in run.err
    assert SUBJECT not in run.err
    assert len(history(db)) == 1


def test_bad_options_are_usage_errors(run: Run) -> None:
    """A missing required option or an unparseable date: exit 2 from argparse."""
    assert run("consent", "grant", SUBJECT) == 2
    assert run("consent", "grant", SUBJECT, "--purpose", "p", "--at", "01/02/2025") == 2
    assert "not an ISO-8601 date" in run.err
    assert run("consent", "grant", SUBJECT, "--purpose", "p", "--mechanism", "telepathy") == 2


# --------------------------------------------------------------------------- objections


def test_objection_add_show_and_withdraw(run: Run, db: Path) -> None:
    """An objection stands from its instant until withdrawn; show says whether direct
    marketing is blocked at --at; an unknown objection id is exit 1."""
    assert (
        run(
            "objection",
            "add",
            SUBJECT,
            "--at",
            "2025-06-01",
            "--id",
            "obj-1",
            "--actor",
            "call-centre",
        )
        == 0
    )
    assert run.out == "recorded objection obj-1: made 2025-06-01T00:00:00+00:00\n"
    assert run("objection", "show", SUBJECT, "--at", "2025-06-15") == 0
    assert "direct marketing is BLOCKED" in run.out
    assert (
        run(
            "objection",
            "withdraw",
            "obj-1",
            "--at",
            "2025-07-01",
            "--channel",
            "phone",
            "--actor",
            "call-centre",
        )
        == 0
    )
    assert "effective 2025-07-01T00:00:00+00:00" in run.out
    assert run("objection", "show", SUBJECT, "--at", "2025-08-01", "--format", "json") == 0
    document = json.loads(run.out)
    assert document["objecting"] is False
    assert document["objections"][0]["withdrawn_at"] == "2025-07-01T00:00:00+00:00"
    assert run("objection", "withdraw", "obj-9", "--actor", "a") == 1
    assert "no objection with this id" in run.err
    assert [e.kind for e in history(db)] == ["objection", "objection-withdrawal"]


# --------------------------------------------------------------------------- ISO/IEC TS 27560


def sample_events() -> list[Consent | Withdrawal]:
    """One of each: given with evidence and expiry, invalid, refused, not asked, withdrawn in
    the record, expired, and a separate withdrawal; offsets other than UTC."""
    return [
        Consent(
            subject=SUBJECT,
            purposes=["newsletter.product", "newsletter.events"],
            given_at=T0.astimezone(PARIS),
            expires_at=datetime(2027, 3, 1, 9, 30, 0, 500000, tzinfo=UTC),
            evidence=Evidence("double-opt-in", "https://example.com/f", "2025-02", "site", "web"),
            id="c-given",
        ),
        Consent(
            subject="lead-2",
            purposes=["prospection"],
            given_at=T0,
            evidence=Evidence("pre-ticked"),
            id="c-invalid",
        ),
        Consent(
            subject="lead-3", purposes=["prospection"], given_at=T0, state="refused", id="c-no"
        ),
        Consent(
            subject="lead-4", purposes=["prospection"], given_at=T0, state="not-asked", id="c-na"
        ),
        Consent(
            subject="lead-5",
            purposes=["prospection"],
            given_at=T0,
            withdrawn_at=T0 + timedelta(days=3),
            id="c-wd",
        ),
        Consent(
            subject="lead-6",
            purposes=["prospection"],
            given_at=T0,
            expires_at=T0 + timedelta(days=30),
            evidence=Evidence("button"),
            id="c-exp",
        ),
        Withdrawal(
            subject=SUBJECT,
            purposes=["newsletter.events"],
            at=T0 + timedelta(days=9),
            channel="letter",
            id="w-1",
        ),
    ]


def test_export_follows_the_27560_fields_and_dpv_statuses(run: Run, db: Path) -> None:
    """Export writes one record per consent and per withdrawal, with the documented 27560
    field names, DPV statuses, the validity as an ISO-8601 duration and x- extensions."""
    with SQLiteStore(db) as store:
        store.record_many(sample_events(), actor="seed")
    assert run("consent", "export", "--at", "2026-01-01") == 0
    records = json.loads(run.out)
    by_id = {r["record_id"]: r for r in records}
    given = by_id["c-given"]
    assert given["schema_version"] == "purposelimit:iso-27560-json/1"
    assert given["pii_principal_id"] == SUBJECT
    assert given["purposes"] == [
        {"purpose": "newsletter.product", "lawful_basis": "dpv:Consent"},
        {"purpose": "newsletter.events", "lawful_basis": "dpv:Consent"},
    ]
    assert (given["privacy_notice"], given["collection_method"]) == ("2025-02", "site")
    [first] = given["events"]
    assert first["event_time"] == "2025-03-01T12:00:00+02:00"
    assert first["event_state"] == "dpv:ConsentGiven"
    assert first["event_type"] == "dpv:ExpressedConsent"
    assert first["validity_duration"] == "P729DT84600.5S"
    assert (first["x-mechanism"], first["x-collection-point"], first["x-channel"]) == (
        "double-opt-in",
        "https://example.com/f",
        "web",
    )
    assert first["x-recorded-by"] == "seed"
    states = {r["record_id"]: [e["event_state"] for e in r["events"]] for r in records}
    assert states == {
        "c-given": ["dpv:ConsentGiven"],
        "c-invalid": ["dpv:ConsentInvalidated"],
        "c-no": ["dpv:ConsentRefused"],
        "c-na": ["dpv:ConsentUnknown"],
        "c-wd": ["dpv:ConsentGiven", "dpv:ConsentWithdrawn"],
        "c-exp": ["dpv:ConsentGiven", "dpv:ConsentExpired"],
        "w-1": ["dpv:ConsentWithdrawn"],
    }
    assert by_id["c-invalid"]["events"][0]["event_type"] == "dpv:ImpliedConsent"


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_then_import_gives_back_the_same_events(
    run: Run, db: Path, tmp_path: Path, fmt: str
) -> None:
    """JSON and CSV exports import into another registry as equal events (ids, instants,
    evidence, answers, expiries, withdrawals); importing again records nothing."""
    with SQLiteStore(db) as store:
        store.record_many(sample_events(), actor="seed")
    out = tmp_path / f"consents.{fmt}"
    assert run("consent", "export", "--out", str(out)) == 0
    other = tmp_path / "other.db"
    run.registry = f"sqlite:///{other}"
    assert run("consent", "import", str(out), "--actor", "import") == 0
    assert "read 6 consent(s), 1 withdrawal(s) (ISO/IEC TS 27560 format); recorded 7" in run.out
    assert [e.event for e in history(other)] == sample_events()
    assert all(e.actor == "import" for e in history(other))
    assert run("consent", "import", str(out), "--actor", "import") == 0
    assert "recorded 0, 7 already recorded" in run.out


def test_import_reads_the_filter_consent_files_too(run: Run, db: Path) -> None:
    """A DESIGN section 6 consents file (as filter --consents reads) is detected and imported."""
    source = Path(__file__).resolve().parent.parent / "examples" / "consents.json"
    assert run("consent", "import", str(source), "--actor", "import") == 0
    assert "(DESIGN section 6 format)" in run.out
    assert len(history(db)) == len(json.loads(source.read_text()))


def test_a_bad_record_imports_nothing_and_names_file_line_and_field(
    run: Run, db: Path, tmp_path: Path
) -> None:
    """One bad record among good ones: exit 1 with FILE:LINE and the field; nothing recorded;
    the subject never appears in the message."""
    records = consents_to_27560(
        [_recorded(e) for e in sample_events()[:2]], now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    records[1]["events"][0]["event_state"] = "dpv:ConsentRequested"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records, indent=2))
    assert run("consent", "import", str(path), "--actor", "import") == 1
    starts = [
        n for n, text in enumerate(json.dumps(records, indent=2).splitlines(), 1) if text == "  {"
    ]
    line = starts[1]
    assert f"bad.json:{line}: events[0].event_state: expected one of dpv:ConsentGiven" in run.err
    assert "ConsentRequested" in run.err  # the status named in the explanation, not a value
    assert SUBJECT not in run.err
    assert not db.exists() or history(db) == []


def _recorded(event: Consent | Withdrawal) -> Any:
    from purposelimit._store import RecordedEvent

    return RecordedEvent(1, event, T0, "seed")


FOREIGN = {
    "schema_version": "https://w3id.org/dpv/schema/dpv-27560#record",
    "record_id": "a6f58318-72e6-46a2-bfd7-f36d795e30cd",
    "pii_principal_id": "lead-77",
    "language": "FR",
    "jurisdiction": "loc:EU",
    "purposes": [{"purpose": "newsletter", "purpose_type": "dpv:Marketing"}],
    "events": [
        {
            "event_time": "2025-01-15T09:00:00Z",
            "event_state": "https://w3id.org/dpv#ConsentGiven",
            "event_type": "ExpressedConsent",
            "validity_duration": "P1Y",
        },
        {"event_time": "2025-06-01T00:00:00Z", "event_state": "ConsentWithdrawn"},
    ],
}


def test_records_from_other_tools_import_from_the_same_fields() -> None:
    """Full DPV IRIs or bare names, a calendar validity (P1Y), ignored 27560 fields: a Consent
    with its expiry and withdrawal."""
    consent = consents_from_27560(FOREIGN)
    assert isinstance(consent, Consent)
    assert consent.id == FOREIGN["record_id"]
    assert consent.expires_at == datetime(2026, 1, 15, 9, tzinfo=UTC)
    assert consent.withdrawn_at == datetime(2025, 6, 1, tzinfo=UTC)
    assert consent.evidence is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pii_principal_id": None}, "pii_principal_id: missing"),
        ({"purposes": []}, "purposes: expected a non-empty list"),
        ({"record_idd": "x"}, "unknown field 'record_idd' (did you mean 'record_id'?)"),
        (
            {"events": [{"event_time": "2025-01-15", "event_state": "dpv:ConsentExpired"}]},
            "a record starts with the person's answer",
        ),
        (
            {"events": [{"event_time": "2025-01-15", "event_state": "dpv:ConsentInvalidated"}]},
            "must say why",
        ),
        (
            {"events": [{"event_time": "15/01/2025", "event_state": "dpv:ConsentGiven"}]},
            "events[0].event_time: not an ISO-8601 date",
        ),
        (
            {
                "events": [
                    {
                        "event_time": "2025-01-15",
                        "event_state": "dpv:ConsentGiven",
                        "validity_duration": "one year",
                    }
                ]
            },
            "not an ISO-8601 duration",
        ),
        (
            {
                "events": [
                    {
                        "event_time": "2025-01-15",
                        "event_state": "dpv:ConsentGiven",
                        "validty_duration": "P1Y",
                    }
                ]
            },
            "did you mean 'validity_duration'",
        ),
    ],
)
def test_a_record_that_cannot_be_imported_names_the_field(
    change: dict[str, Any], message: str
) -> None:
    """Each problem is named by its field path, never by the value."""
    record = {**FOREIGN, **change}
    with pytest.raises(ValueError, match=r"\S") as caught:
        consents_from_27560(record)
    assert message in str(caught.value)
    assert "lead-77" not in str(caught.value)


def test_export_writes_nothing_when_it_cannot_finish(run: Run, db: Path, tmp_path: Path) -> None:
    """--out in a folder that does not exist: exit 1, and no partial file anywhere."""
    with SQLiteStore(db) as store:
        store.record_many(sample_events(), actor="seed")
    assert run("consent", "export", "--out", str(tmp_path / "missing" / "c.json")) == 1
    assert not (tmp_path / "missing").exists()
    assert run("consent", "export", "--subject", SUBJECT, "--out", str(tmp_path / "one.csv")) == 0
    rows = (tmp_path / "one.csv").read_text().splitlines()
    assert rows[0].startswith("record_id,pii_principal_id,purposes,privacy_notice")
    assert [r.split(",")[0] for r in rows[1:]] == ["c-given", "w-1"]


# --------------------------------------------------------------------------- audit commands


def audit_event(number: int, *, allowed: bool = True, monitored: bool = False) -> AuditEvent:
    return AuditEvent(
        time=datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=number),
        actor="crm" if number % 2 else "mailer",
        purpose="client.contract",
        collected_for="client.contract",
        record_type="Lead",
        subject_ref=f"lead-{number % 3}",
        field="email",
        category="contact.email",
        allowed=allowed,
        reason=Reason.SAME_PURPOSE if allowed else Reason.INCOMPATIBLE,
        rule="purpose:client.contract",
        mode="monitor" if monitored else "enforce",
        monitored=monitored,
        register_version="v1",
        register_hash=None,
    )


@pytest.fixture
def audit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", KEY)
    path = tmp_path / "audit.jsonl"
    with JsonLinesAuditSink(path, KEY.encode()) as sink:
        sink.emit([audit_event(n, allowed=n % 4 != 0, monitored=n == 4) for n in range(10)])
    return path


def test_audit_verify_says_ok_or_names_the_first_broken_line(run: Run, audit_file: Path) -> None:
    """Exit 0 and OK for an intact chain; exit 1 naming line and kind for an edited one."""
    assert run("audit", "verify", str(audit_file), registry=False) == 0
    assert run.out == f"{audit_file}: OK: 10 entries, head at seq 10\n"
    lines = audit_file.read_text().splitlines()
    lines[6] = lines[6].replace('"allowed":true', '"allowed":false')
    audit_file.write_text("\n".join(lines) + "\n")
    assert run("audit", "verify", str(audit_file), "--format", "json", registry=False) == 1
    document = json.loads(run.out)
    assert (document["ok"], document["problem"]["kind"], document["problem"]["line"]) == (
        False,
        "edited",
        7,
    )


def test_audit_verify_needs_its_key(
    run: Run, audit_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key in the variable: exit 2 saying which; --key-env picks another variable."""
    assert run("audit", "verify", str(audit_file), "--key-env", "NOPE", registry=False) == 2
    assert "NOPE is not set" in run.err
    monkeypatch.setenv("OTHER_KEY", "x" * 32)
    assert run("audit", "verify", str(audit_file), "--key-env", "OTHER_KEY", registry=False) == 1
    assert "the key is not the one" in run.out
    assert run("audit", "verify", str(audit_file) + ".nope", registry=False) == 2


def test_audit_tail_and_stats_read_a_file(run: Run, audit_file: Path) -> None:
    """tail shows the last N entries; stats counts outcomes, reasons, purposes and actors."""
    assert run("audit", "tail", str(audit_file), "-n", "2", registry=False) == 0
    shown = run.out.splitlines()
    assert len(shown) == 2
    assert shown[0].split()[0] == "9"
    assert "subject=lead-2" in shown[0]
    assert run("audit", "tail", str(audit_file), "-n", "1", "--format", "json", registry=False) == 0
    assert json.loads(run.out)["seq"] == 10
    assert run("audit", "stats", str(audit_file), "--format", "json", registry=False) == 0
    stats = json.loads(run.out)
    assert (stats["events"], stats["allowed"], stats["denied"], stats["monitored"]) == (10, 7, 2, 1)
    assert stats["by_reason"] == {"same-purpose": 7, "incompatible": 3}
    assert stats["subjects"] == 3
    assert (
        run(
            "audit",
            "stats",
            str(audit_file),
            "--since",
            "2026-03-01T05:00:00Z",
            "--until",
            "2026-03-01T08:00:00Z",
            registry=False,
        )
        == 0
    )
    assert "3 events from 2026-03-01T05:00:00+00:00 to 2026-03-01T07:00:00+00:00" in run.out


def test_audit_commands_read_the_registry_table(
    run: Run, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--registry URL verifies and reads the database's audit table; FILE and --registry
    together, or neither, is a usage error."""
    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", KEY)
    with SQLiteAuditSink(db, KEY.encode()) as sink:
        sink.emit([audit_event(n) for n in range(4)])
    assert run("audit", "verify") == 0
    assert "OK: 4 entries, head at seq 4" in run.out
    assert run("audit", "stats", "--format", "json") == 0
    assert json.loads(run.out)["events"] == 4
    assert run("audit", "tail", "-n", "1") == 0
    assert run.out.split()[0] == "4"
    assert run("audit", "tail", "x.jsonl") == 2
    assert run("audit", "tail", registry=False) == 2
    assert "one of them" in run.err


# --------------------------------------------------------------------------- help and wiring


def _leaves(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _leaves(child, (*prefix, name))
            return
    yield prefix


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """--help on every command exits 0 and shows at least one example."""
    leaves = list(_leaves(harness()))
    assert len(leaves) == 11
    for command in leaves:
        with pytest.raises(SystemExit) as exited:
            harness().parse_args([*command, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text, command
        assert "purposelimit " + " ".join(command) in text


def test_the_commands_run_through_purposelimit_main(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through _cli.main: writes and reads work with the exit codes of the rest of the CLI;
    a group alone prints its help and exits 2; bad options exit 2."""
    monkeypatch.delenv("PURPOSELIMIT_REGISTRY", raising=False)
    registry = ["--registry", f"sqlite:///{db}"]
    assert (
        _cli.main(
            ["consent", "grant", SUBJECT, "--purpose", "prospection", "--actor", "a", *registry]
        )
        == 0
    )
    assert _cli.main(["consent", "show", SUBJECT, *registry]) == 0
    assert "valid" in capsys.readouterr().out
    assert _cli.main(["consent"]) == 2
    assert "grant" in capsys.readouterr().err
    assert _cli.main(["consent", "grant", SUBJECT]) == 2
    assert _cli.main(["consent", "show", SUBJECT]) == 2
    assert "name the registry" in capsys.readouterr().err
    assert _cli.main(["objection", "withdraw", "nope", "--actor", "a", *registry]) == 1
    assert _cli.main(["--help"]) == 0


def test_the_commands_work_on_postgresql(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """--registry with a PostgreSQL URL: grant, show, export and the audit table."""
    url = postgres_url()
    with postgres_schema(url) as schema:
        run.registry = f"{url}?options=-csearch_path%3D{schema}"
        assert (
            run(
                "consent",
                "grant",
                SUBJECT,
                "--purpose",
                "prospection",
                "--at",
                "2025-01-01",
                "--mechanism",
                "button",
                "--actor",
                "a",
            )
            == 0
        )
        assert run("consent", "show", SUBJECT, "--at", "2025-02-01", "--format", "json") == 0
        assert json.loads(run.out)["states"][0]["dpv"] == "dpv:ConsentGiven"
        assert run("consent", "export") == 0
        assert json.loads(run.out)[0]["pii_principal_id"] == SUBJECT
        from purposelimit._sqlalchemy_store import SQLAlchemyAuditSink

        sink = SQLAlchemyAuditSink(url, KEY.encode(), schema=schema)
        sink.emit([audit_event(n) for n in range(3)])
        sink.close()
        monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", KEY)
        assert run("audit", "verify") == 0
        assert "OK: 3 entries" in run.out


# --------------------------------------------------------------------------- decide with a registry


def test_a_registry_overlay_adds_inline_events_and_never_writes(db: Path) -> None:
    """RegistryOverlay reads the registry's events plus inline ones (DESIGN section 6); the
    engine decides from both; the registry is not written to; its version is the registry's."""
    register = Register(
        [
            Purpose(
                "hr.recruitment",
                "Hiring",
                "Hiring",
                "legitimate-interests",
                Retention("P2Y"),
                categories=["contact"],
            ),
            Purpose(
                "newsletter",
                "News",
                "News",
                "consent",
                Retention("P3Y"),
                categories=["contact"],
                direct_marketing=True,
            ),
        ],
        [DataCategory("contact"), DataCategory("contact.email")],
    )
    registry = open_store(f"sqlite:///{db}")
    registry.record(
        Consent(subject=SUBJECT, purposes=["newsletter"], given_at=T0, evidence=Evidence("button")),
        actor="web",
    )
    inline = Objection(subject=SUBJECT, at=T0 + timedelta(days=1))
    auth = Authorisation(
        id="order-1",
        from_=["hr.recruitment"],
        to="newsletter",
        reference="court order",
        valid_from=T0,
    )
    overlay = RegistryOverlay(registry, objections=[inline], authorisations=[auth])
    events = overlay.subject_events(SUBJECT)
    assert (len(events.consents), events.objections) == (1, (inline,))
    assert overlay.authorisations() == (auth,)
    assert overlay.version == registry.version == 1
    tag = CollectionTag(SUBJECT, Collection("hr.recruitment"), T0)
    engine = Engine(register, overlay)
    before = engine.decide(tag, ["contact.email"], "newsletter", at=T0 + timedelta(hours=1))
    after = engine.decide(tag, ["contact.email"], "newsletter", at=T0 + timedelta(days=2))
    assert (before.allowed, before.reason) == (True, Reason.CONSENT)
    assert (after.allowed, after.reason) == (False, Reason.OBJECTION)
    assert registry.version == 1
    assert overlay.subject_events("nobody").consents == ()
    registry.close()


def test_a_registry_snapshot_lists_every_event_for_the_bulk_filter(db: Path) -> None:
    """registry_snapshot gives consents, withdrawals, objections (their withdrawals applied)
    and authorisations, in log order; known_at leaves out what was recorded later."""
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    with SQLiteStore(db, clock=lambda: clock[0]) as store:
        store.record_many(sample_events(), actor="seed")
        objection = Objection(subject=SUBJECT, at=T0, id="o-1")
        store.record(objection, actor="cc")
        clock[0] = datetime(2026, 2, 1, tzinfo=UTC)
        store.withdraw_objection("o-1", T0 + timedelta(days=1), actor="cc")
        auth = Authorisation(
            id="a-1", from_=["hr"], to="legal", reference="court order", valid_from=T0
        )
        store.record(auth, actor="legal")
        consents, withdrawals, objections, auths = registry_snapshot(store)
        assert [c.id for c in consents] == [e.id for e in sample_events()[:-1]]
        assert [w.id for w in withdrawals] == ["w-1"]
        assert [(o.id, o.withdrawn_at) for o in objections] == [("o-1", T0 + timedelta(days=1))]
        assert auths == [auth]
        earlier = registry_snapshot(store, known_at=datetime(2026, 1, 15, tzinfo=UTC))
        assert [(o.id, o.withdrawn_at) for o in earlier[2]] == [("o-1", None)]
        assert earlier[3] == []
