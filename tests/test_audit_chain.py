"""The tamper-evident audit sinks: the keyed hash chain, its head, verification, erasure.

Covers ``purposelimit._audit_chain`` (JSON Lines and SQLite) and the
SQLAlchemy audit table on PostgreSQL: every line or row chains to the previous
one under an HMAC; verification names the first edited, removed, reordered,
duplicated, spliced or missing entry; a crash leaves at most one batch after
the head; failing sinks go through the Audit's fail-closed / continue
setting; per-person keys make an erased person unidentifiable while the chain
still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _registry_support import postgres_schema, postgres_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purposelimit._audit import Audit, AuditEvent, pseudonym
from purposelimit._audit_chain import (
    CHAIN_FIELDS,
    GENESIS,
    AuditFileError,
    InMemorySubjectKeys,
    JsonLinesAuditSink,
    SQLiteAuditSink,
    SQLiteSubjectKeys,
    audit_key_from_env,
    canonical_json,
    entry_mac,
    open_audit_table,
    read_audit_file,
    verify_audit_file,
    verify_audit_table,
)
from purposelimit._context import _CURRENT, processing, set_engine
from purposelimit._engine import Engine
from purposelimit._errors import AuditError, ConfigurationError, StoreError
from purposelimit._model import Collection, DataCategory, Purpose, Reason, Retention
from purposelimit._records import TaggedRecord, personal, record
from purposelimit._register import Register

KEY = b"audit-chain-key-0123456789abcdef"
OTHER_KEY = b"another-key-of-32-bytes-00000000"
SUBJECT = "jeanne.martin@example.com"
SECRET = "SECRET-VALUE-123"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
TESTS = Path(__file__).resolve().parent
MODES = ("enforce", "monitor")


def event(number: int = 0, subject: str = SUBJECT, *, allowed: bool = True) -> AuditEvent:
    """An audit event, distinct per *number*."""
    return AuditEvent(
        time=T0 + timedelta(seconds=number),
        actor="crm-export",
        purpose="client.contract",
        collected_for="client.contract",
        record_type="Lead",
        subject_ref=subject,
        field="email",
        category="contact.email",
        allowed=allowed,
        reason=Reason.SAME_PURPOSE if allowed else Reason.INCOMPATIBLE,
        rule="purpose:client.contract",
        mode="enforce",
        monitored=False,
        register_version="2026-11-01",
        register_hash="sha256:" + "0" * 64,
    )


def events(count: int, start: int = 0) -> list[AuditEvent]:
    return [event(n) for n in range(start, start + count)]


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="ascii")


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """A JSON Lines chain of 8 entries written in two batches (5, then 3)."""
    path = tmp_path / "audit.jsonl"
    with JsonLinesAuditSink(path, KEY) as sink:
        sink.emit(events(5))
        sink.emit(events(3, start=5))
    return path


# --------------------------------------------------------------------------- the chain


def test_each_line_carries_seq_fields_prev_and_an_hmac_over_itself(chain: Path) -> None:
    """Every line is seq, the event's fields, prev (the previous MAC; 64 zeros first) and mac =
    HMAC-SHA256(key, canonical JSON of the line without mac) — recomputed here independently."""
    prev = GENESIS
    for number, line in enumerate(lines_of(chain), start=1):
        entry = json.loads(line)
        assert list(entry) == [*sorted(f for f in CHAIN_FIELDS if f != "mac"), "mac"]
        assert set(entry) == set(CHAIN_FIELDS)
        assert entry["seq"] == number
        assert entry["prev"] == prev
        body = {k: v for k, v in entry.items() if k != "mac"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        assert canonical == canonical_json(body)
        assert line == canonical.decode()[:-1] + f',"mac":"{entry["mac"]}"}}'
        assert entry["mac"] == hmac.new(KEY, canonical, hashlib.sha256).hexdigest()
        assert entry["mac"] == entry_mac(KEY, entry)
        assert entry["time"] == (T0 + timedelta(seconds=number - 1)).isoformat()
        prev = entry["mac"]


def test_the_head_records_the_last_entry_and_is_replaced_atomically(chain: Path) -> None:
    """<file>.head holds the last seq and MAC under a MAC of its own; no temporary file is left."""
    head = json.loads(chain.with_name("audit.jsonl.head").read_text())
    last = json.loads(lines_of(chain)[-1])
    assert (head["seq"], head["mac"]) == (8, last["mac"])
    assert set(head) == {"format", "seq", "mac", "head_mac"}
    assert sorted(p.name for p in chain.parent.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.head",
        "audit.jsonl.lock",
    ]
    assert oct(chain.stat().st_mode & 0o777) == "0o600"


def test_an_intact_chain_verifies(chain: Path) -> None:
    """verify_audit_file says OK, with the count and the head, and no warning."""
    result = verify_audit_file(chain, KEY)
    assert (result.ok, result.entries, result.last_seq, result.head_seq) == (True, 8, 8, 8)
    assert (result.problem, result.warnings, result.unconfirmed) == (None, (), 0)
    assert str(result) == f"{chain}: OK: 8 entries, head at seq 8"


def test_reopening_continues_the_chain(chain: Path) -> None:
    """A sink opened on an existing file chains its first line to the file's last MAC."""
    last_mac = json.loads(lines_of(chain)[-1])["mac"]
    with JsonLinesAuditSink(chain, KEY) as sink:
        assert sink.seq == 8
        sink.emit(events(2, start=8))
    entry = json.loads(lines_of(chain)[8])
    assert (entry["seq"], entry["prev"]) == (9, last_mac)
    assert verify_audit_file(chain, KEY).entries == 10


def test_entries_read_back_as_the_events_written(chain: Path) -> None:
    """read_audit_file gives back the AuditEvents, in order, with their seq and MACs."""
    read = list(read_audit_file(chain))
    assert [c.event for c in read] == events(8)
    assert [c.seq for c in read] == list(range(1, 9))
    assert read[1].prev == read[0].mac


def test_reading_a_line_that_is_not_an_entry_names_file_and_line(tmp_path: Path) -> None:
    """A line that parses but is no audit entry raises AuditFileError with FILE:LINE."""
    path = tmp_path / "x.jsonl"
    write_lines(path, [json.dumps({"seq": 1, "prev": GENESIS, "mac": GENESIS})])
    with pytest.raises(AuditFileError, match=r"x\.jsonl:1: not an audit entry"):
        list(read_audit_file(path))


def test_several_threads_share_one_sink(tmp_path: Path) -> None:
    """Batches from four threads interleave whole; the chain verifies with every entry once."""
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesAuditSink(path, KEY, fsync=False)

    def work(offset: int) -> None:
        for batch in range(10):
            sink.emit(events(3, start=offset + batch * 3))

    threads = [threading.Thread(target=work, args=(1000 * n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.entries) == (True, 120)
    assert len({c.event.time for c in read_audit_file(path)}) == 120


# --------------------------------------------------------------------------- tampering


def _swap(lines: list[str], a: int, b: int) -> list[str]:
    lines = list(lines)
    lines[a], lines[b] = lines[b], lines[a]
    return lines


def _edit(lines: list[str], index: int, **changes: Any) -> list[str]:
    lines = list(lines)
    entry = json.loads(lines[index])
    entry.update(changes)
    lines[index] = json.dumps(entry, separators=(",", ":"))
    return lines


TAMPERING: dict[str, tuple[Callable[[list[str]], list[str]], str, int]] = {
    # name: (change to the 8 lines, kind, line reported)
    "a field edited": (lambda ls: _edit(ls, 3, allowed=False), "edited", 4),
    "the reason edited": (lambda ls: _edit(ls, 6, reason="consent"), "edited", 7),
    "a seq renumbered": (lambda ls: _edit(ls, 2, seq=30), "edited", 3),
    "a line removed": (lambda ls: ls[:2] + ls[3:], "removed", 3),
    "two lines removed": (lambda ls: ls[:2] + ls[4:], "removed", 3),
    "two lines swapped": (lambda ls: _swap(ls, 4, 5), "reordered", 5),
    "a line moved to the end": (lambda ls: ls[:1] + ls[2:] + ls[1:2], "reordered", 2),
    "a line copied": (lambda ls: [*ls[:5], ls[2], *ls[5:]], "duplicated", 6),
    "the last lines removed": (lambda ls: ls[:6], "truncated", 7),
    "every line removed": (lambda ls: [], "truncated", 1),
    "a line that is not JSON": (lambda ls: [*ls[:3], "{not json", *ls[4:]], "malformed", 4),
    "a key written twice": (
        lambda ls: [*ls[:1], ls[1][:-1] + ',"allowed":false}', *ls[2:]],
        "malformed",
        2,
    ),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_verification_names_the_first_tampered_line(chain: Path, name: str) -> None:
    """Each kind of tampering is caught at the first line it affects, with what is wrong."""
    change, kind, line = TAMPERING[name]
    write_lines(chain, change(lines_of(chain)))
    result = verify_audit_file(chain, KEY)
    assert not result.ok
    assert result.problem is not None
    assert (result.problem.kind, result.problem.line) == (kind, line)
    assert f"line {line}" in result.problem.message
    assert kind in str(result) or kind == "malformed"


def test_a_line_from_another_chain_with_the_same_key_is_spliced(tmp_path: Path) -> None:
    """A valid line taken from another file at the same seq does not chain: 'spliced'."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with JsonLinesAuditSink(a, KEY) as sink:
        sink.emit(events(4))
    with JsonLinesAuditSink(b, KEY) as sink:
        sink.emit(events(4, start=100))
    mixed = lines_of(a)
    mixed[2] = lines_of(b)[2]
    write_lines(a, mixed)
    result = verify_audit_file(a, KEY)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.line) == ("spliced", 3)


def test_a_missing_or_edited_head_fails_verification(chain: Path) -> None:
    """Without its head, truncation cannot be ruled out; an edited head does not verify."""
    head = chain.with_name("audit.jsonl.head")
    saved = head.read_text()
    head.write_text(saved.replace('"seq":8', '"seq":7'))
    result = verify_audit_file(chain, KEY)
    assert result.problem is not None
    assert result.problem.kind == "head"
    head.unlink()
    result = verify_audit_file(chain, KEY)
    assert result.problem is not None
    assert result.problem.kind == "head"
    assert "(truncation) cannot be ruled out" in result.problem.message


def test_a_head_over_rewritten_entries_fails_verification(tmp_path: Path) -> None:
    """A valid head of one chain next to another chain of the same length: the MACs differ."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path, start in ((a, 0), (b, 50)):
        with JsonLinesAuditSink(path, KEY) as sink:
            sink.emit(events(3, start=start))
    shutil.copy(b.with_name("b.jsonl.head"), a.with_name("a.jsonl.head"))
    result = verify_audit_file(a, KEY)
    assert result.problem is not None
    assert result.problem.kind == "head"


def test_the_wrong_key_is_named_as_such(chain: Path) -> None:
    """With another key, neither line 1 nor the head verify: the message says the key is wrong."""
    result = verify_audit_file(chain, OTHER_KEY)
    assert result.problem is not None
    assert result.problem.kind == "edited"
    assert "the key is not the one" in result.problem.message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, 7),
    field=st.sampled_from([f for f in CHAIN_FIELDS if f not in ("seq", "prev", "mac")]),
    value=st.one_of(st.text(max_size=8), st.booleans(), st.none(), st.integers(-5, 5)),
)
def test_any_change_to_any_field_is_detected(index: int, field: str, value: object) -> None:
    """Whatever field of whatever line is given whatever other value, verification fails at
    that line (and only a real change counts)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        with JsonLinesAuditSink(path, KEY, fsync=False) as sink:
            sink.emit(events(8))
        lines = lines_of(path)
        if json.loads(lines[index])[field] == value:
            return
        write_lines(path, _edit(lines, index, **{field: value}))
        result = verify_audit_file(path, KEY)
        assert result.problem is not None
        assert (result.problem.kind, result.problem.line) == ("edited", index + 1)


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(st.text(), min_size=9, max_size=9),
    flags=st.tuples(st.booleans(), st.booleans()),
    seq=st.integers(1, 2**53),
)
def test_the_fast_canonical_form_is_canonical_json(
    texts: list[str], flags: tuple[bool, bool], seq: int
) -> None:
    """The writer's canonical JSON (the C encoder built once) is byte for byte canonical_json,
    whatever the text: non-ASCII, quotes, control characters, lone surrogates."""
    from purposelimit._audit_chain import _canonical_text

    names = ["actor", "purpose", "collected_for", "record_type", "subject_ref", "field"]
    entry: dict[str, Any] = dict(zip([*names, "category", "rule", "time"], texts, strict=True))
    entry.update(allowed=flags[0], monitored=flags[1], seq=seq, prev=GENESIS, register_hash=None)
    assert _canonical_text(entry).encode("ascii") == canonical_json(entry)


# --------------------------------------------------------------------------- crashes


def test_lines_after_the_head_are_unconfirmed_not_failed(tmp_path: Path) -> None:
    """A crash between a batch's append and its head update leaves lines after the head: they
    verify, and are reported as unconfirmed in a warning; the next writer confirms them."""
    path = tmp_path / "audit.jsonl"
    head = tmp_path / "audit.jsonl.head"
    with JsonLinesAuditSink(path, KEY) as sink:
        sink.emit(events(5))
        before = head.read_bytes()
        sink.emit(events(4, start=5))
    head.write_bytes(before)  # the head as it was when the second batch was being written
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.entries, result.head_seq, result.unconfirmed) == (True, 9, 5, 4)
    assert "4 entries after the head (seq 6 to 9) unconfirmed" in result.warnings[0]
    assert "warning: 4 entries after the head" in str(result)
    with JsonLinesAuditSink(path, KEY) as sink:
        sink.emit(events(1, start=9))
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.unconfirmed, result.head_seq, result.warnings) == (True, 0, 10, ())


def test_an_incomplete_last_line_is_a_warning_and_the_next_writer_removes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write cut in the middle of a line: verify warns (it was never an entry); the next
    sink cuts it off before appending, and the chain goes on from the last whole line."""
    path = tmp_path / "audit.jsonl"
    with JsonLinesAuditSink(path, KEY) as sink:
        sink.emit(events(3))
    whole = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(whole.splitlines(keepends=True)[0][:57])
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.entries) == (True, 3)
    assert "line 4 is incomplete" in result.warnings[0]
    caplog.set_level(logging.WARNING, logger="purposelimit")
    with JsonLinesAuditSink(path, KEY) as sink:
        sink.emit(events(1, start=3))
    assert "removed an incomplete last line" in caplog.text
    assert path.read_bytes().startswith(whole)
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.entries, result.warnings) == (True, 4, ())


CHILD = """
import sys
from datetime import UTC, datetime, timedelta
from purposelimit._audit import AuditEvent
from purposelimit._audit_chain import JsonLinesAuditSink
from purposelimit._model import Reason

sink = JsonLinesAuditSink(sys.argv[1], sys.argv[2].encode())
batch = int(sys.argv[3])
number = 0
t0 = datetime(2026, 3, 1, tzinfo=UTC)
while True:
    events = []
    for _ in range(batch):
        events.append(AuditEvent(t0 + timedelta(microseconds=number), "kill-target", "p.a",
                                 "p.a", "Lead", f"lead-{number % 7}", "email", "contact.email",
                                 True, Reason.SAME_PURPOSE, "purpose:p.a", "enforce", False,
                                 "v1", None))
        number += 1
    sink.emit(events)
    sys.stdout.write(f"{sink.seq}\\n")
    sys.stdout.flush()
"""


def test_a_writer_killed_mid_batch_leaves_a_chain_that_verifies(tmp_path: Path) -> None:
    """SIGKILL a process appending batches of 50: every seq it printed after emit returned is
    in the file; the chain verifies; at most one batch is after the head; a new writer goes
    on and the chain verifies without warning."""
    path = tmp_path / "audit.jsonl"
    batch = 50
    printed: list[int] = []
    for _round in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), KEY.decode(), str(batch)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(TESTS),
        )
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        seen = 0
        while seen < 5 + _round and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            printed.append(int(line))
            seen += 1
        time.sleep(0.001 * _round)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        printed.extend(int(line) for line in child.stdout.read().split())
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        result = verify_audit_file(path, KEY)
        assert result.ok, result
        assert result.last_seq >= max(printed)
        assert result.head_seq is not None
        assert result.last_seq - result.head_seq <= batch
        assert max(printed) <= result.head_seq + batch
    with JsonLinesAuditSink(path, KEY) as sink:
        sink.emit(events(2))
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.unconfirmed) == (True, 0)
    assert [w for w in result.warnings if "incomplete" not in w] == []


def test_several_processes_append_to_one_file(tmp_path: Path) -> None:
    """Three processes append batches at once under the file lock: one chain, nothing lost."""
    path = tmp_path / "audit.jsonl"
    code = CHILD.replace("while True:", "for _round in range(20):")
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(path), KEY.decode(), "5"], cwd=str(TESTS))
        for _ in range(3)
    ]
    for child in children:
        assert child.wait(timeout=120) == 0
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.entries, result.head_seq) == (True, 300, 300)


# --------------------------------------------------------------------------- refusing to go on


def test_a_sink_never_continues_a_tampered_chain(chain: Path) -> None:
    """Opening a file whose last line does not verify, whose head records more than it holds
    or whose head is gone raises AuditError: appending would hide the damage."""
    head = chain.with_name("audit.jsonl.head")
    lines = lines_of(chain)
    write_lines(chain, lines[:6])
    with pytest.raises(AuditError, match="the head records seq 8 but the file ends at seq 6"):
        JsonLinesAuditSink(chain, KEY)
    write_lines(chain, _edit(lines, 7, allowed=False))
    with pytest.raises(AuditError, match="last line does not verify"):
        JsonLinesAuditSink(chain, KEY)
    write_lines(chain, lines)
    with pytest.raises(AuditError, match="does not verify with this key"):
        JsonLinesAuditSink(chain, OTHER_KEY)
    head.unlink()
    with pytest.raises(AuditError, match=r"head file audit\.jsonl\.head is missing"):
        JsonLinesAuditSink(chain, KEY)


def test_a_sink_sees_what_another_handle_appended(tmp_path: Path) -> None:
    """Two sinks on one file take turns: each re-reads the file's end before its batch."""
    path = tmp_path / "audit.jsonl"
    first, second = JsonLinesAuditSink(path, KEY), JsonLinesAuditSink(path, KEY)
    first.emit(events(2))
    second.emit(events(2, start=2))
    first.emit(events(2, start=4))
    first.close()
    second.close()
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.entries) == (True, 6)


def test_bad_keys_and_options_are_refused(tmp_path: Path) -> None:
    """A short or missing key is a ConfigurationError; so is a pseudonym store that is none."""
    for bad in (b"short", "a-str-key-of-more-than-16", None):
        with pytest.raises(ConfigurationError, match="at least 16 bytes"):
            JsonLinesAuditSink(tmp_path / "a.jsonl", bad)  # type: ignore[arg-type]  # on purpose
    with pytest.raises(ConfigurationError, match="pseudonyms"):
        JsonLinesAuditSink(tmp_path / "a.jsonl", KEY, pseudonyms=object())  # type: ignore[arg-type]  # on purpose
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        verify_audit_file(tmp_path / "a.jsonl", b"x")


def test_the_key_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """audit_key_from_env gives the variable's UTF-8 bytes; unset or short is refused."""
    monkeypatch.setenv("MY_AUDIT_KEY", KEY.decode())
    assert audit_key_from_env("MY_AUDIT_KEY") == KEY
    monkeypatch.setenv("MY_AUDIT_KEY", "short")
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        audit_key_from_env("MY_AUDIT_KEY")
    monkeypatch.delenv("MY_AUDIT_KEY")
    with pytest.raises(ConfigurationError, match="MY_AUDIT_KEY is not set"):
        audit_key_from_env("MY_AUDIT_KEY")


# --------------------------------------------------------------------------- failures


def test_a_failed_batch_leaves_nothing_and_the_retry_takes_the_same_seqs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync that fails once: the batch is cut off again, AuditError says nothing was
    written; the same batch retried gets the same sequence numbers, once."""
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesAuditSink(path, KEY)
    sink.emit(events(2))
    size = path.stat().st_size
    real = os.fsync
    calls = {"n": 0}

    def flaky(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", flaky)
    with pytest.raises(AuditError, match=r"cannot append 3 event.*nothing was written"):
        sink.emit(events(3, start=2))
    assert path.stat().st_size == size
    assert sink.seq == 2
    sink.emit(events(3, start=2))
    sink.close()
    result = verify_audit_file(path, KEY)
    assert (result.ok, result.entries) == (True, 5)
    assert [c.event for c in read_audit_file(path)] == events(5)


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")


def make_engine(audit: Audit) -> Engine:
    register = Register(
        [
            Purpose(
                "client.contract",
                "Contracts",
                "Managing contracts",
                "contract",
                Retention("P5Y"),
                categories=["identity", "contact"],
            )
        ],
        [
            DataCategory("identity"),
            DataCategory("identity.name"),
            DataCategory("contact"),
            DataCategory("contact.email"),
        ],
        version="2026-11-01",
    )
    return Engine(register, clock=lambda: NOW, audit=audit)


def lead(subject: str = SUBJECT) -> Lead:
    tag: dict[str, Any] = {
        "subject": subject,
        "collection": Collection("client.contract"),
        "collected_at": datetime(2026, 1, 10, tzinfo=UTC),
    }
    return Lead("Ada", SECRET, **tag)


@pytest.fixture(autouse=True)
def _reset_context() -> Iterator[None]:
    """Every test starts and ends with no processing block and no default engine."""
    token = set_engine(None, mode="enforce")
    context_token = _CURRENT.set(None)
    yield
    _CURRENT.reset(context_token)
    token.reset()


def full_disk_sink(tmp_path: Path) -> JsonLinesAuditSink:
    """A chained sink whose file is /dev/full: every append fails with ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("this system has no /dev/full")
    link = tmp_path / "audit.jsonl"
    link.symlink_to("/dev/full")
    return JsonLinesAuditSink(link, KEY)


def read_only_table(tmp_path: Path) -> SQLiteAuditSink:
    """A chained SQLite sink whose connection is PRAGMA query_only: every append fails."""
    sink = SQLiteAuditSink(tmp_path / "registry.db", KEY)
    sink._conn().execute("PRAGMA query_only = ON")
    return sink


def closed_table(tmp_path: Path) -> SQLiteAuditSink:
    sink = SQLiteAuditSink(tmp_path / "registry.db", KEY)
    sink.close()
    return sink


FAILING: dict[str, Callable[[Path], JsonLinesAuditSink | SQLiteAuditSink]] = {
    "full disk": full_disk_sink,
    "read-only table": read_only_table,
    "closed": closed_table,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", list(FAILING))
def test_fail_closed_denies_reads_that_cannot_be_audited(
    tmp_path: Path,
    how: str,
    mode: Any,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """With on_failure='fail-closed' a read whose audit entry cannot be written raises
    AuditError (in enforce and monitor mode alike); the failure is reported on the
    'purposelimit' logger, without the value or the subject."""
    sink = FAILING[how](tmp_path)
    request.addfinalizer(sink.close)
    audit = Audit([sink], capacity=1, on_failure="fail-closed")
    engine = make_engine(audit)
    caplog.set_level(logging.ERROR, logger="purposelimit")
    record_ = lead()
    with (
        processing("client.contract", actor="crm", engine=engine, mode=mode),
        pytest.raises(AuditError, match="fail closed") as caught,
    ):
        _ = record_.email
    assert f"{type(sink).__name__} failed (AuditError)" in caplog.text
    for text in (caplog.text, str(caught.value), str(caught.value.__cause__)):
        assert SECRET not in text
        assert SUBJECT not in text
    assert audit.pending == 1


@pytest.mark.parametrize("how", list(FAILING))
def test_continue_reads_on_and_keeps_the_entries_for_retry(
    tmp_path: Path,
    how: str,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """With on_failure='continue' reads go on; each failure is reported and the events wait."""
    sink = FAILING[how](tmp_path)
    request.addfinalizer(sink.close)
    audit = Audit([sink], capacity=1, on_failure="continue")
    engine = make_engine(audit)
    caplog.set_level(logging.ERROR, logger="purposelimit")
    record_ = lead()
    with processing("client.contract", actor="crm", engine=engine):
        for _ in range(3):
            assert record_.email == SECRET
    assert audit.pending == 3
    assert "kept for retry" in caplog.text
    assert SECRET not in caplog.text
    assert SUBJECT not in caplog.text


def test_a_recovered_table_receives_the_waiting_entries_in_order(tmp_path: Path) -> None:
    """A table that was read-only comes back: the Audit's retry writes every waiting event
    once, in read order, and the chain verifies."""
    sink = read_only_table(tmp_path)
    audit = Audit([sink], capacity=1, on_failure="continue")
    engine = make_engine(audit)
    record_ = lead()
    with processing("client.contract", actor="crm", engine=engine):
        _ = record_.email
        _ = record_.name
        sink._conn().execute("PRAGMA query_only = OFF")
        _ = record_.email
    assert audit.pending == 0
    assert [c.event.field for c in sink.events()] == ["email", "name", "email"]
    assert verify_audit_table(sink, KEY).ok
    sink.close()


# --------------------------------------------------------------------------- pseudonyms and erasure


def test_per_person_keys_name_subjects_by_pseudonym_only(tmp_path: Path) -> None:
    """With a SubjectKeyStore, entries carry pseudonym(subject, that person's key); the id
    itself never reaches the file; two people get unrelated pseudonyms."""
    keys = SQLiteSubjectKeys(tmp_path / "keys.db")
    path = tmp_path / "audit.jsonl"
    with JsonLinesAuditSink(path, KEY, pseudonyms=keys) as sink:
        sink.emit([event(0), event(1, "lead-2"), event(2)])
    refs = [c.event.subject_ref for c in read_audit_file(path)]
    assert refs[0] == refs[2] == keys.pseudonym_of(SUBJECT)
    assert refs[1] == keys.pseudonym_of("lead-2") != refs[0]
    assert refs[0] != pseudonym(SUBJECT, KEY)
    assert SUBJECT not in path.read_text()
    assert "lead-2" not in path.read_text()
    keys.close()


def test_erasing_a_person_keeps_the_chain_verifiable_and_the_person_unidentifiable(
    tmp_path: Path,
) -> None:
    """erase_subject destroys the person's key (GDPR art. 17): the file is unchanged and still
    verifies; the key is gone from the key store's files; nothing links the old pseudonym to
    the person any more; a later read gets a new, unrelated pseudonym; others are untouched."""
    keys = SQLiteSubjectKeys(tmp_path / "keys.db")
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesAuditSink(path, KEY, pseudonyms=keys)
    sink.emit([event(0), event(1, "lead-2"), event(2)])
    old_ref = keys.pseudonym_of(SUBJECT)
    assert old_ref is not None
    old_key = keys.keys_for([SUBJECT])[SUBJECT]
    other_ref = keys.pseudonym_of("lead-2")
    before = path.read_bytes()

    assert sink.erase_subject(SUBJECT) is True
    assert sink.erase_subject(SUBJECT) is False
    assert path.read_bytes() == before
    assert verify_audit_file(path, KEY).ok
    assert keys.pseudonym_of(SUBJECT) is None
    assert keys.pseudonym_of("lead-2") == other_ref
    for name in ("keys.db", "keys.db-wal"):
        stored = tmp_path / name
        if stored.exists():
            assert old_key not in stored.read_bytes()
    assert old_ref in path.read_text()  # the entries remain, unattributable

    sink.emit([event(3)])
    new_ref = list(read_audit_file(path))[-1].event.subject_ref
    assert new_ref != old_ref
    assert new_ref == keys.pseudonym_of(SUBJECT)
    assert verify_audit_file(path, KEY).ok
    sink.close()
    keys.close()


def test_erasure_works_the_same_in_an_sql_table(tmp_path: Path) -> None:
    """The SQLite audit table MACs the pseudonym too: erasing leaves its chain verifiable."""
    keys = InMemorySubjectKeys()
    with SQLiteAuditSink(tmp_path / "registry.db", KEY, pseudonyms=keys) as sink:
        sink.emit([event(0), event(1, "lead-2")])
        old_ref = keys.pseudonym_of(SUBJECT)
        assert sink.erase_subject(SUBJECT)
        assert verify_audit_table(sink, KEY).ok
        assert next(sink.events()).event.subject_ref == old_ref
        assert keys.pseudonym_of(SUBJECT) is None
    raw = (tmp_path / "registry.db").read_bytes()
    assert SUBJECT.encode() not in raw


def test_one_key_for_everybody_cannot_erase_one_person(tmp_path: Path) -> None:
    """pseudonyms=<bytes> names everyone with one key; erase_subject refuses and says why;
    a sink without pseudonyms refuses too."""
    with JsonLinesAuditSink(tmp_path / "a.jsonl", KEY, pseudonyms=OTHER_KEY) as sink:
        sink.emit([event(0)])
        with pytest.raises(ConfigurationError, match="cannot be destroyed for one person"):
            sink.erase_subject(SUBJECT)
    first = next(read_audit_file(tmp_path / "a.jsonl"))
    assert first.event.subject_ref == pseudonym(SUBJECT, OTHER_KEY)
    with (
        JsonLinesAuditSink(tmp_path / "b.jsonl", KEY) as plain,
        pytest.raises(ConfigurationError, match="pseudonyms=SQLiteSubjectKeys"),
    ):
        plain.erase_subject(SUBJECT)


def test_a_failing_key_store_fails_the_batch_without_naming_anyone(tmp_path: Path) -> None:
    """When the per-person keys cannot be read the batch fails with AuditError, nothing is
    written, and the message names no subject."""
    keys = SQLiteSubjectKeys(tmp_path / "keys.db")
    keys.close()
    path = tmp_path / "audit.jsonl"
    with (
        JsonLinesAuditSink(path, KEY, pseudonyms=keys) as sink,
        pytest.raises(AuditError, match="pseudonym keys cannot be read") as caught,
    ):
        sink.emit([event(0)])
    assert SUBJECT not in str(caught.value)
    assert path.read_bytes() == b""
    with pytest.raises(StoreError, match="closed"):
        keys.keys_for([SUBJECT])


def test_key_stores_in_several_processes_agree(tmp_path: Path) -> None:
    """Two handles on one key file give one key per person (created once, read by both)."""
    a, b = SQLiteSubjectKeys(tmp_path / "keys.db"), SQLiteSubjectKeys(tmp_path / "keys.db")
    assert a.keys_for([SUBJECT, "lead-2"]) == b.keys_for(["lead-2", SUBJECT])
    assert a.erase_subject(SUBJECT)
    assert b.pseudonym_of(SUBJECT) is None
    a.close()
    b.close()
    assert "keys.db" in repr(a)
    assert SUBJECT not in repr(a)


# --------------------------------------------------------------------------- SQL tables


def _tamper(path: Path, sql: str, *params: Any) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_the_sqlite_table_holds_the_same_chain(tmp_path: Path) -> None:
    """One row per entry with the chain fields; MACs as in files; head in the same database;
    reopening continues; the registry in the same file is untouched."""
    from purposelimit._registry import SQLiteStore

    store = SQLiteStore(tmp_path / "registry.db")
    with SQLiteAuditSink(store, KEY) as sink:
        sink.emit(events(3))
    with SQLiteAuditSink(tmp_path / "registry.db", KEY) as sink:
        sink.emit(events(2, start=3))
        entries = list(sink.entries())
        assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
        assert all(e["mac"] == entry_mac(KEY, e) for e in entries)
        assert entries[3]["prev"] == entries[2]["mac"]
        assert [c.event for c in sink.events()] == events(5)
        result = verify_audit_table(sink, KEY)
        assert (result.ok, result.entries, result.head_seq) == (True, 5, 5)
    assert store.version == 0
    store.close()


SQL_TAMPERING: dict[str, tuple[str, str, int]] = {
    "a row edited": ("UPDATE purposelimit_audit SET allowed = 0 WHERE seq = 2", "edited", 2),
    "a row removed": ("DELETE FROM purposelimit_audit WHERE seq = 3", "removed", 4),
    "the last rows removed": ("DELETE FROM purposelimit_audit WHERE seq >= 4", "truncated", 4),
    "the head moved back": (
        "UPDATE purposelimit_audit_head SET seq = 3 WHERE id = 1",
        "head",
        3,
    ),
}


@pytest.mark.parametrize("name", list(SQL_TAMPERING))
def test_sql_verification_names_the_first_tampered_row(tmp_path: Path, name: str) -> None:
    """Rows edited, removed or cut off at the end, or a head moved: caught at the right seq;
    and the sink refuses to continue a chain whose head and last row disagree."""
    sql, kind, seq = SQL_TAMPERING[name]
    path = tmp_path / "registry.db"
    with SQLiteAuditSink(path, KEY) as sink:
        sink.emit(events(5))
    _tamper(path, sql)
    with SQLiteAuditSink(path, None) as reader:
        result = verify_audit_table(reader, KEY)
    assert result.problem is not None
    assert (result.problem.kind, result.problem.seq) == (kind, seq)
    if kind in ("truncated", "head"):
        with SQLiteAuditSink(path, KEY) as sink, pytest.raises(AuditError, match="not continued"):
            sink.emit([event(9)])


def test_a_table_opened_without_a_key_only_reads(tmp_path: Path) -> None:
    """key=None opens read-only: verify and read work; emit raises; a missing table is said."""
    path = tmp_path / "registry.db"
    with pytest.raises(AuditError, match="no such database file"):
        SQLiteAuditSink(path, None)
    with SQLiteAuditSink(path, KEY) as sink:
        sink.emit(events(1))
    with open_audit_table(f"sqlite:///{path}") as reader:
        assert verify_audit_table(reader, KEY).ok
        with pytest.raises(AuditError, match="for reading only"):
            reader.emit(events(1))
    sqlite3.connect(tmp_path / "empty.db").close()
    with (
        SQLiteAuditSink(tmp_path / "empty.db", None) as empty,
        pytest.raises(AuditError, match="no audit table"),
    ):
        verify_audit_table(empty, KEY)


def test_open_audit_table_checks_its_url(tmp_path: Path) -> None:
    """memory:// and malformed URLs are ConfigurationErrors."""
    for url in ("memory://", "registry.db", "sqlite://relative"):
        with pytest.raises(ConfigurationError):
            open_audit_table(url, KEY)
    with open_audit_table(f"sqlite:///{tmp_path / 'r.db'}", KEY) as table:
        assert isinstance(table, SQLiteAuditSink)


def test_the_postgresql_table_holds_the_same_chain() -> None:
    """Through SQLAlchemy on PostgreSQL: rows chain, a second handle continues the chain,
    per-person pseudonyms apply, an edited or removed row is named, the head lags never."""
    from purposelimit._sqlalchemy_store import SQLAlchemyAuditSink, SQLAlchemyStore

    url = postgres_url()
    keys = InMemorySubjectKeys()
    with postgres_schema(url) as schema:
        store = SQLAlchemyStore(url, schema=schema)
        first = SQLAlchemyAuditSink(store, KEY, pseudonyms=keys)
        second = SQLAlchemyAuditSink(url, KEY, schema=schema, pseudonyms=keys)
        first.emit(events(3))
        second.emit(events(2, start=3))
        first.emit(events(1, start=5))
        result = verify_audit_table(second, KEY)
        assert (result.ok, result.entries, result.head_seq) == (True, 6, 6)
        read = list(first.events())
        assert {c.event.subject_ref for c in read} == {keys.pseudonym_of(SUBJECT)}
        assert [c.event.time for c in read] == [e.time for e in events(6)]
        assert first.erase_subject(SUBJECT)
        assert verify_audit_table(first, KEY).ok
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE \"{schema}\".purposelimit_audit SET rule = 'x' WHERE seq = 4")
            )
        result = verify_audit_table(first, KEY)
        assert result.problem is not None
        assert (result.problem.kind, result.problem.seq) == ("edited", 4)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DELETE FROM "{schema}".purposelimit_audit WHERE seq >= 4'))
        result = verify_audit_table(first, KEY)
        assert result.problem is not None
        assert result.problem.kind == "truncated"
        with pytest.raises(AuditError, match="not continued"):
            first.emit(events(1))
        engine.dispose()
        reader = SQLAlchemyAuditSink(url, None, schema=schema)
        assert [c.seq for c in reader.events()] == [1, 2, 3]
        reader.close()
        first.close()
        second.close()
        store.close()


def test_a_postgresql_table_that_cannot_be_written_fails_the_batch_cleanly() -> None:
    """A read-only PostgreSQL session: AuditError says read-only and nothing was written,
    without the statement or any value."""
    from purposelimit._sqlalchemy_store import SQLAlchemyAuditSink

    url = postgres_url()
    with postgres_schema(url) as schema:
        SQLAlchemyAuditSink(url, KEY, schema=schema).close()
        options = {"connect_args": {"options": "-c default_transaction_read_only=on"}}
        sink = SQLAlchemyAuditSink(url, KEY, schema=schema, engine_options=options)
        with pytest.raises(AuditError, match=r"read-only.*nothing was written") as caught:
            sink.emit([event(0)])
        assert SUBJECT not in str(caught.value)
        assert "INSERT" not in str(caught.value)
        sink.close()


def test_no_personal_value_in_sink_reprs(tmp_path: Path) -> None:
    """Sinks and key stores show paths and counts, never a subject."""
    keys = InMemorySubjectKeys()
    keys.keys_for([SUBJECT])
    with JsonLinesAuditSink(tmp_path / "a.jsonl", KEY, pseudonyms=keys) as sink:
        sink.emit([event(0)])
        for text in (repr(sink), repr(keys)):
            assert SUBJECT not in text
    with SQLiteAuditSink(tmp_path / "r.db", KEY) as table:
        assert SUBJECT not in repr(table)
