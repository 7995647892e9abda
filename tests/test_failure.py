"""Failure: the audit sink down, the registry unreachable, the disk full.

purposelimit fails closed: when it cannot record a read (audit set to fail
closed) or cannot decide it (registry unreachable), the read raises and the
value is not returned — in monitor mode too. When the disk fills while the
filter writes its output, the command exits 1 with an error naming the file,
and no partial output is left behind. Every enforcement test runs in both
enforce and monitor modes.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from purposelimit._audit import Audit, AuditEvent, InMemoryAuditSink
from purposelimit._cli import main
from purposelimit._context import _CURRENT, processing, set_engine
from purposelimit._engine import Engine
from purposelimit._errors import AuditError, StoreError
from purposelimit._model import Collection, DataCategory, Purpose, Retention
from purposelimit._records import TaggedRecord, personal, record, unguarded
from purposelimit._register import Register
from purposelimit._registry import SQLiteStore, open_store
from purposelimit._store import SubjectEvents

SECRET = "Ada-5e1f-SECRET"
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
MODES = ("enforce", "monitor")
ROOT = Path(__file__).resolve().parent.parent

MAPPING = """\
[subject]
column = "Email"
email = true
[collection]
purpose = "prospection.email_b2b"
collected_at = "2025-09-15"
[columns]
Email = "contact.email"
Name = "identity.name"
"""


def make_register() -> Register:
    return Register(
        [
            Purpose(
                "client.contract",
                "Contracts",
                "Managing our customers' contracts",
                "contract",
                Retention("P5Y"),
                categories=["identity"],
            ),
            Purpose(
                "news.letter",
                "Product news",
                "E-mailing news about our products",
                "consent",
                Retention("P3Y"),
                categories=["identity"],
                direct_marketing=True,
            ),
        ],
        [DataCategory("identity"), DataCategory("identity.name")],
        version="failure-1",
    )


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")


def lead(purpose: str = "client.contract") -> Lead:
    return Lead(SECRET, subject="lead-1", collection=Collection(purpose), collected_at=T0)


class Sink:
    """An audit sink that can be taken down and brought back."""

    def __init__(self) -> None:
        self.down = True
        self.events: list[AuditEvent] = []

    def emit(self, events: Sequence[AuditEvent]) -> None:
        if self.down:
            raise ConnectionError("audit service unreachable")
        self.events.extend(events)


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


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PURPOSELIMIT_PSEUDONYM_KEY", raising=False)


# --------------------------------------------------------------------------- audit sink down


def test_a_fail_closed_audit_denies_the_read_that_cannot_be_recorded(mode: Any) -> None:
    """Sink down, audit fail-closed (the default): the read that fills the buffer raises
    AuditError instead of returning the value, and so does every read after it until the sink
    is back (each drains itself); then every event arrives, none lost. Both modes."""
    sink = Sink()
    audit = Audit([sink], capacity=3)
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    record_ = lead()
    outcomes: list[object] = []
    with processing("client.contract", actor="billing", engine=engine, mode=mode):
        for _ in range(5):
            try:
                outcomes.append(record_.name)
            except AuditError as error:
                outcomes.append(str(error))
        sink.down = False
        outcomes.append(record_.name)
    failed = [o for o in outcomes if o != SECRET]
    assert outcomes == [SECRET, SECRET, *failed, SECRET]
    assert len(failed) == 3
    assert all("Remedy" in str(o) and SECRET not in str(o) for o in failed)
    assert len(sink.events) == 6
    assert audit.lost == 0
    assert audit.pending == 0


def test_a_block_exit_that_cannot_drain_raises(mode: Any) -> None:
    """The events still buffered at a block's exit must reach the sink: if they cannot, the
    exit raises AuditError (fail closed)."""
    sink = Sink()
    engine = Engine(make_register(), clock=lambda: NOW, audit=Audit([sink], capacity=100))
    with pytest.raises(AuditError):  # noqa: SIM117 - the exit is what raises
        with processing("client.contract", actor="billing", engine=engine, mode=mode):
            assert lead().name == SECRET  # buffered: the drain is at the exit


def test_a_continuing_audit_lets_reads_through_and_reports(
    mode: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """on_failure="continue": reads go on, each failure is reported on the purposelimit
    logger (no value), the events wait for retry, and past max_pending the oldest are counted
    as lost."""
    caplog.set_level(logging.ERROR, logger="purposelimit")
    sink = Sink()
    audit = Audit([sink], capacity=1, on_failure="continue", max_pending=3)
    engine = Engine(make_register(), clock=lambda: NOW, audit=audit)
    record_ = lead()
    with processing("client.contract", actor="billing", engine=engine, mode=mode):
        values = [record_.name for _ in range(5)]
    assert values == [SECRET] * 5
    assert "sink Sink failed (ConnectionError)" in caplog.text
    assert "discarded" in caplog.text
    assert SECRET not in caplog.text
    assert (audit.pending, audit.lost) == (3, 2)
    sink.down = False
    audit.flush()
    assert len(sink.events) == 3
    assert audit.pending == 0


def test_the_escape_hatch_stays_shut_while_the_audit_is_down() -> None:
    """unguarded() records before it returns: with the sink down and the audit fail-closed,
    it raises AuditError (no value)."""
    sink = Sink()
    engine = Engine(make_register(), clock=lambda: NOW, audit=Audit([sink]))
    with set_engine(engine), pytest.raises(AuditError):
        unguarded(lead(), "name", actor="migration", reason="ticket 1")


# --------------------------------------------------------------------------- registry unreachable


@pytest.mark.parametrize("where", ["a folder", "a missing folder", "not a database"])
def test_an_sqlite_registry_that_cannot_be_opened_is_an_error(tmp_path: Path, where: str) -> None:
    """A registry file that cannot be opened raises StoreError naming the problem: no engine
    can be built on it, so nothing can be decided (let alone allowed)."""
    if where == "a folder":
        path = tmp_path
    elif where == "a missing folder":
        path = tmp_path / "missing" / "registry.db"
    else:
        path = tmp_path / "registry.db"
        path.write_bytes(b"this is not an SQLite database " * 200)
    with pytest.raises(StoreError, match="cannot open the database") as caught:
        SQLiteStore(path)
    assert "registry" in str(caught.value)


def test_a_registry_lost_mid_block_fails_the_read_closed(tmp_path: Path, mode: Any) -> None:
    """The registry becomes unusable after reads were allowed and memoised: the next read
    raises StoreError instead of serving the memo or allowing — in monitor mode too."""
    store = SQLiteStore(tmp_path / "registry.db")
    sink = InMemoryAuditSink()
    engine = Engine(make_register(), store, clock=lambda: NOW, audit=Audit([sink]))
    record_ = lead()
    with processing("client.contract", actor="billing", engine=engine, mode=mode):
        assert record_.name == SECRET
        store.close()  # the database is gone for this process
        with pytest.raises(StoreError):
            _ = record_.name
    assert [e.allowed for e in sink.events] == [True]  # the failed read returned nothing


class BrokenStore:
    """A store whose backend is unreachable: every question raises."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @property
    def version(self) -> int | None:
        raise self.error

    def subject_events(self, subject: str) -> SubjectEvents:
        raise self.error

    def authorisations(self) -> tuple[()]:
        raise self.error


@pytest.mark.parametrize(
    "error", [StoreError("registry unreachable"), ConnectionError("connection refused")]
)
def test_an_unreachable_store_never_allows_a_read(mode: Any, error: Exception) -> None:
    """Whatever the store raises (its own StoreError, or a driver's error) propagates from the
    read: the read never returns the value."""
    engine = Engine(make_register(), BrokenStore(error), clock=lambda: NOW)
    record_ = lead("news.letter")
    with (
        processing("news.letter", actor="mailer", engine=engine, mode=mode),
        pytest.raises(type(error)),
    ):
        _ = record_.name


def test_a_postgresql_registry_on_a_closed_port_fails_closed_and_fast() -> None:
    """open_store on a PostgreSQL URL nobody listens on (127.0.0.1:1) raises StoreError within
    seconds, naming the store without credentials or values."""
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot be reached") as caught:
        open_store("postgresql+psycopg://auditor:s3cret-pw@127.0.0.1:1/registry")
    assert time.monotonic() - started < 15
    assert "s3cret-pw" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["sqlite:////nonexistent-folder/registry.db", "postgresql+psycopg://u@127.0.0.1:1/db"]
)
def test_the_command_line_refuses_an_unreachable_registry(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """decide and filter with --registry on an unreachable store: exit 2 (usage error), an
    error naming --registry, no answer and no output file."""
    if url.startswith("postgresql"):
        pytest.importorskip("psycopg")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"x-a": 1}\n')))
    assert main(["decide", "--preset", "cnil-commercial", "--registry", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--registry" in captured.err
    leads = tmp_path / "leads.csv"
    leads.write_text("Email,Name\nada@example.org,Ada\n", encoding="utf-8")
    (tmp_path / "m.toml").write_text(MAPPING, encoding="utf-8")
    out = tmp_path / "usable.csv"
    code = main(
        [
            "filter",
            str(leads),
            "--preset",
            "cnil-commercial",
            "--purpose",
            "prospection.email_b2b",
            "--mapping",
            str(tmp_path / "m.toml"),
            "--at",
            "2026-03-01",
            "--out",
            str(out),
            "--registry",
            url,
        ]
    )
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv", "m.toml"]


# --------------------------------------------------------------------------- disk full


def lead_file(folder: Path, rows: int) -> Path:
    path = folder / "leads.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("Email,Name\n")
        for i in range(rows):
            handle.write(f"lead{i}@example.org,Person number {i} with a longer name\n")
    (folder / "m.toml").write_text(MAPPING, encoding="utf-8")
    return path


def filter_args(folder: Path, out: str, *extra: str) -> list[str]:
    return [
        "filter",
        str(folder / "leads.csv"),
        "--preset",
        "cnil-commercial",
        "--purpose",
        "prospection.email_b2b",
        "--mapping",
        str(folder / "m.toml"),
        "--at",
        "2026-03-01",
        "--out",
        out,
        *extra,
    ]


def dev_full() -> Path:
    path = Path("/dev/full")
    if not path.exists() or not stat.S_ISCHR(path.stat().st_mode):
        pytest.skip("no /dev/full on this system")
    return path


def test_filter_to_a_full_device_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    """--out /dev/full: the write fails with ENOSPC; exit 1 with one line naming the file; no
    report and no temporary file left anywhere, and /dev/full is still the device (a finished
    file is never renamed onto a device)."""
    full = dev_full()
    before = set(os.listdir("/dev"))
    lead_file(tmp_path, 5_000)
    code = main(filter_args(tmp_path, str(full), "--report", str(tmp_path / "report.json")))
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == "purposelimit filter: error: /dev/full: No space left on device"
    assert stat.S_ISCHR(full.stat().st_mode)
    assert set(os.listdir("/dev")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv", "m.toml"]


def test_retention_to_a_full_device_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    """retention --out /dev/full: exit 1, an error naming the file, the device untouched."""
    full = dev_full()
    lead_file(tmp_path, 5_000)
    args = ["retention", str(tmp_path / "leads.csv"), "--preset", "cnil-commercial"]
    args += ["--mapping", str(tmp_path / "m.toml"), "--at", "2035-01-01", "--out", str(full)]
    assert main(args) == 1
    assert "/dev/full: No space left on device" in capsys.readouterr().err
    assert stat.S_ISCHR(full.stat().st_mode)


def run_limited(args: list[str], limit: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the command line in a child whose files may not grow past *limit* bytes: a disk
    that fills up (writes then fail with EFBIG, as they would with ENOSPC)."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from purposelimit._cli import main
        sys.exit(main({args!r}))
        """
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PURPOSELIMIT_PSEUDONYM_KEY", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_a_disk_filling_up_under_the_output_leaves_nothing(tmp_path: Path) -> None:
    """The disk fills while the usable rows are written: exit 1, an error naming the output
    file, and neither it, nor the report, nor any temporary file is left in the folder."""
    lead_file(tmp_path, 20_000)  # some 1.2 MB of output
    out = tmp_path / "out"
    out.mkdir()
    args = filter_args(tmp_path, str(out / "usable.csv"), "--report", str(out / "report.html"))
    done = run_limited(args, 256 * 1024, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().endswith(f"{out / 'usable.csv'}: File too large")
    assert list(out.iterdir()) == []


def test_a_disk_filling_up_under_the_excluded_rows_leaves_nothing(tmp_path: Path) -> None:
    """Every row excluded: the output is tiny but the excluded rows (spooled for the report)
    and the report fill the disk. Exit 1, and no output, no report, no temporary file: the
    output appears only once the report is complete too."""
    lead_file(tmp_path, 3_000)
    out = tmp_path / "out"
    out.mkdir()
    args = filter_args(tmp_path, str(out / "usable.csv"), "--report", str(out / "report.json"))
    args[args.index("--purpose") + 1] = "prospection.email_b2c"  # consent-based: all excluded
    done = run_limited(args, 200_000, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().endswith("File too large")
    assert list(out.iterdir()) == []


def test_writing_to_a_pipe_or_dev_stdout_writes_in_place(tmp_path: Path) -> None:
    """--out /dev/stdout (a pipe here) is written in place, not replaced by a finished file:
    the rows reach the pipe and /dev/stdout is left as it was."""
    stdout_path = Path("/dev/stdout")
    if not stdout_path.exists():
        pytest.skip("no /dev/stdout on this system")
    was_link = stdout_path.is_symlink()
    lead_file(tmp_path, 3)
    env = {k: v for k, v in os.environ.items() if k != "PURPOSELIMIT_PSEUDONYM_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "purposelimit._cli", *filter_args(tmp_path, "/dev/stdout")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Email,Name\nlead0@example.org,")
    assert stdout_path.is_symlink() is was_link


def test_an_output_that_is_a_folder_is_refused_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    """--out naming a folder: exit 1 with an error saying so; no temporary file is created
    in the folder or beside it."""
    lead_file(tmp_path, 3)
    target = tmp_path / "out"
    target.mkdir()
    assert main(filter_args(tmp_path, str(target))) == 1
    assert "is a folder" in capsys.readouterr().err
    assert list(target.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv", "m.toml", "out"]


def test_an_unreadable_byte_deep_in_the_file_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    """A byte that cannot be decoded after the first MiB (sniffed as UTF-8): exit 1, the error
    names the right line, and no output or report is left."""
    path = lead_file(tmp_path, 30_000)  # > 1 MiB of valid UTF-8
    lines = path.read_bytes().count(b"\n")
    with path.open("ab") as handle:
        handle.write(b"bad@example.org,Caf\xe9\n")
    code = main(
        filter_args(tmp_path, str(tmp_path / "usable.csv"), "--report", str(tmp_path / "r.json"))
    )
    assert code == 1
    assert f"leads.csv:{lines + 1}:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv", "m.toml"]
