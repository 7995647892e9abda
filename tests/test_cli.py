"""The ``purposelimit`` command line: filter, retention, decide, check, presets."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from purposelimit._cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SALESFORCE = EXAMPLES / "leads" / "salesforce-style-leads.csv"
SALESFORCE_MAP = EXAMPLES / "leads" / "salesforce-style-leads.mapping.toml"
MAUTIC = EXAMPLES / "leads" / "mautic-fake-leads.csv"
MAUTIC_MAP = EXAMPLES / "leads" / "mautic-fake-leads.mapping.toml"

REGISTER = """
[register]
controller = "Test SAS"
version = "t-1"

[[categories]]
id = "identity"
[[categories]]
id = "identity.name"
[[categories]]
id = "contact"
[[categories]]
id = "contact.email"
[[categories]]
id = "contact.phone"

[[purposes]]
id = "prospection.email"
label = "E-mail prospection"
description = "E-mails about our offers"
legal_basis = "legitimate-interests"
categories = ["identity", "contact.email"]
direct_marketing = true
retention = { duration = "P3Y", from = "last-contact" }

[[purposes]]
id = "client.contract"
label = "Contracts"
description = "Performing the contract"
legal_basis = "contract"
categories = ["identity", "contact"]
retention = { duration = "P1Y", from = "end-of-contract" }

[[compatibility]]
id = "contract-to-email"
from = "client.contract"
to = "prospection.email"
verdict = "compatible"
link = "same customer"
context = "told at checkout"
nature = "name and e-mail"
consequences = "e-mails the person can stop"
safeguards = ["objection in every e-mail"]
"""

MAPPING = """
[subject]
column = "email"
email = true

[collection]
purpose_column = "purpose"
collected_at_column = "created"

[columns]
name = "identity.name"
email = "contact.email"
phone = "contact.phone"
purpose = "identity"
created = "identity"
"""

HEADER = "name,email,phone,purpose,created\n"

#: The key of the hash-chained audit files the tests write (``--audit``).
AUDIT_KEY = "test-audit-key-of-at-least-16-bytes"


class Run:
    """The outcome of one ``main([...])`` call."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``main`` in-process with optional stdin bytes; return a :class:`Run`."""

    def run(*args: str | Path, stdin: bytes | None = None) -> Run:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the test register and mapping; no pseudonym key in the environment."""
    monkeypatch.delenv("PURPOSELIMIT_PSEUDONYM_KEY", raising=False)
    (tmp_path / "register.toml").write_text(REGISTER, encoding="utf-8")
    (tmp_path / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    return tmp_path


def leads(work: Path, body: str, name: str = "leads.csv", header: str = HEADER) -> Path:
    path = work / name
    path.write_text(header + body, encoding="utf-8", newline="")
    return path


def filter_args(work: Path, src: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "filter",
        src,
        "--register",
        work / "register.toml",
        "--purpose",
        "prospection.email",
        "--mapping",
        work / "mapping.toml",
        "--at",
        "2026-03-01",
        "--out",
        work / "out.csv",
        *extra,
    ]


def report_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def no_leftovers(folder: Path) -> bool:
    """No temporary file (``.NAME.*.tmp``) is left in *folder*."""
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- the real samples


def test_salesforce_sample_for_b2b_email_prospection(cli: Any, tmp_path: Path) -> None:
    """The real Salesforce export under the French preset: objections and suppressions excluded."""
    out, report = tmp_path / "usable.csv", tmp_path / "report.json"
    run = cli(
        "filter",
        SALESFORCE,
        "--preset",
        "cnil-commercial",
        "--purpose",
        "prospection.email_b2b",
        "--mapping",
        SALESFORCE_MAP,
        "--objections",
        EXAMPLES / "objections.csv",
        "--suppression",
        EXAMPLES / "suppression.txt",
        "--at",
        "2026-03-01",
        "--out",
        out,
        "--report",
        report,
    )
    assert run.code == 0, run
    assert "40 rows read for prospection.email_b2b" in run.out
    assert "kept      36 rows" in run.out
    assert "excluded  4 rows: objection 4" in run.out
    data = report_of(report)
    assert data["rows"] == {"read": 40, "kept": 36, "excluded": 4, "blank_lines_skipped": 0}
    assert data["reasons"] == {"same-purpose": 36, "objection": 4}
    assert [e["line"] for e in data["excluded"]] == [4, 12, 25, 27]
    assert {e["rule"] for e in data["excluded"]} == {
        "objection:obj-2025-001",
        "objection:obj-2026-002",
        "objection:suppression:suppression.txt:2",
        "objection:suppression:suppression.txt:3",
    }
    dropped = {c["column"]: c["status"] for c in data["columns"] if not c["kept"]}
    assert dropped == {"Phone": "excessive", "Status": "excessive", "Country": "excessive"}
    assert data["subjects"]["reference"] == "pseudonym"
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [
        "Id",
        "FirstName",
        "LastName",
        "Company",
        "Title",
        "Email",
        "Industry",
        "Website",
        "NumberOfEmployees",
        "LeadSource",
    ]
    assert len(rows) == 37
    assert "ava.idris@granite.example.com" not in {
        r[5] for r in rows
    }  # objected (mixed case in file)
    assert "max.chen@evergreen.example.com" in {r[5] for r in rows}  # objection withdrawn
    assert "noah.costa@granite.example.com" in {r[5] for r in rows}  # objection made after --at
    text = report.read_text(encoding="utf-8")
    assert "@" not in text.replace("example.com", "")  # no e-mail address at all
    assert "example.com" not in text


def test_salesforce_sample_for_b2c_email_needs_consent(cli: Any, tmp_path: Path) -> None:
    """Reused for consumer e-mail (consent-based), only valid consents keep a row."""
    report = tmp_path / "report.json"
    run = cli(
        "filter",
        SALESFORCE,
        "--preset",
        "cnil-commercial",
        "--purpose",
        "prospection.email_b2c",
        "--mapping",
        SALESFORCE_MAP,
        "--consents",
        EXAMPLES / "consents.json",
        "--objections",
        EXAMPLES / "objections.csv",
        "--at",
        "2026-03-01",
        "--out",
        tmp_path / "usable.csv",
        "--report",
        report,
    )
    assert run.code == 0, run
    data = report_of(report)
    assert data["reasons"] == {
        "consent": 2,
        "objection": 2,
        "consent-withdrawn": 1,
        "consent-expired": 1,
        "consent-refused": 1,
        "consent-invalid": 1,
        "consent-missing": 32,
    }
    assert {e["rule"] for e in data["excluded"] if e["reason"] == "consent-withdrawn"} == {
        "consent:c-102"
    }


def test_mautic_sample_for_postal_prospection(cli: Any, tmp_path: Path) -> None:
    """Web-shop customers reused for postal prospection; rows without e-mail are invalid."""
    report = tmp_path / "report.html"
    run = cli(
        "filter",
        MAUTIC,
        "--preset",
        "cnil-commercial",
        "--purpose",
        "prospection.postal",
        "--mapping",
        MAUTIC_MAP,
        "--at",
        "2026-03-01",
        "--out",
        tmp_path / "postal.csv",
        "--report",
        report,
    )
    assert run.code == 0, run
    assert "kept      50 rows" in run.out
    assert "excluded  4 rows: invalid-row 4" in run.out
    header = (tmp_path / "postal.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "title,firstname,lastname,city,address1,state,zipcode,country"
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert "compatible" in page
    assert "column &#x27;email&#x27;: empty subject" in page
    for forbidden in ("http://", "https://", "<script", "src="):
        assert forbidden not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_example_register_starting_from_the_preset(cli: Any, tmp_path: Path) -> None:
    """examples/register.toml (the preset plus a purpose) filters the sample for its own purpose."""
    report = tmp_path / "r.json"
    run = cli(
        "filter",
        SALESFORCE,
        "--register",
        EXAMPLES / "register.toml",
        "--purpose",
        "prospection.events_b2b",
        "--mapping",
        SALESFORCE_MAP,
        "--at",
        "2026-03-01",
        "--out",
        tmp_path / "u.csv",
        "--report",
        report,
    )
    assert run.code == 0, run
    data = report_of(report)
    assert data["register"]["version"] == "2026-12-01"
    assert data["reasons"] == {"compatible": 40}
    assert data["decisions"][0]["rule"] == "compatibility:email-b2b-to-events-b2b"
    dropped = [c["column"] for c in data["columns"] if not c["kept"]]
    assert dropped == ["Id", "Phone", "LeadSource", "Status", "Country"]
    html = tmp_path / "r.html"
    assert cli(*[a if a != report else html for a in run_args(tmp_path, report)]).code == 0
    page = html.read_text(encoding="utf-8")
    assert "No row was excluded." in page
    assert "No subject appears on more than one row." in page


def run_args(tmp_path: Path, report: Path) -> list[str | Path]:
    return [
        "filter",
        SALESFORCE,
        "--register",
        EXAMPLES / "register.toml",
        "--purpose",
        "prospection.events_b2b",
        "--mapping",
        SALESFORCE_MAP,
        "--at",
        "2026-03-01",
        "--out",
        tmp_path / "u.csv",
        "--report",
        report,
    ]


def test_console_script_runs(tmp_path: Path) -> None:
    """The installed console script runs filter and decide as documented (subprocess)."""
    script = shutil.which("purposelimit", path=str(Path(sys.executable).parent))
    assert script is not None
    version = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0
    assert version.stdout.startswith("purposelimit ")
    done = subprocess.run(
        [
            script,
            "filter",
            str(SALESFORCE),
            "--preset",
            "cnil-commercial",
            "--purpose",
            "prospection.email_b2b",
            "--mapping",
            str(SALESFORCE_MAP),
            "--at",
            "2026-03-01",
            "--out",
            str(tmp_path / "u.csv"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: no progress line, nothing extra
    assert "kept      40 rows" in done.stdout
    request = {
        "purpose": "prospection.postal",
        "at": "2026-03-01",
        "record": {
            "subject": "s",
            "collected_for": "client.contract",
            "collected_at": "2025-01-10",
        },
        "categories": ["identity.name"],
    }
    decided = subprocess.run(
        [script, "decide", "--preset", "cnil-commercial"],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert decided.returncode == 0, decided.stderr
    assert json.loads(decided.stdout)["reason"] == "compatible"


# --------------------------------------------------------------------------- filter: input files


def test_empty_file(cli: Any, work: Path) -> None:
    """An empty file is bad input: one line, exit 1, and no output file."""
    src = work / "leads.csv"
    src.write_bytes(b"")
    run = cli(*filter_args(work, src))
    assert run.code == 1
    assert run.err == (
        f"purposelimit filter: error: {src}: the file is empty: a header line naming the columns "
        "is needed\n"
    )
    assert not (work / "out.csv").exists()
    assert no_leftovers(work)


def test_header_only(cli: Any, work: Path) -> None:
    """A header without rows gives an output with the kept header and a report of zero rows."""
    src = leads(work, "")
    run = cli(*filter_args(work, src, "--report", work / "r.json"))
    assert run.code == 0, run
    assert (work / "out.csv").read_text(
        encoding="utf-8"
    ) == "name,email,purpose,created\r\n".replace("\r\n", "\n")
    assert report_of(work / "r.json")["rows"]["read"] == 0


def test_ragged_rows_are_invalid(cli: Any, work: Path) -> None:
    """Rows with too few or too many fields are excluded as invalid-row, with the field counts."""
    src = leads(
        work,
        "Jane,jane@x.example,1,prospection.email,2025-06-01\nBob,bob@x.example\n"
        "Eve,eve@x.example,1,prospection.email,2025-06-01,extra\n",
    )
    run = cli(*filter_args(work, src, "--report", work / "r.json"))
    assert run.code == 0
    excluded = report_of(work / "r.json")["excluded"]
    assert [(e["line"], e["reason"], e["detail"]) for e in excluded] == [
        (3, "invalid-row", "ragged row: 2 fields, the header has 5"),
        (4, "invalid-row", "ragged row: 6 fields, the header has 5"),
    ]
    assert all(e["subject"] is None for e in excluded)


def test_quoted_newlines_and_physical_line_numbers(cli: Any, work: Path) -> None:
    """A quoted cell may hold line breaks; report lines are the physical line a row starts on."""
    src = leads(
        work,
        '"Jane\nDoe",jane@x.example,1,prospection.email,2025-06-01\n'
        '"Bob",bob@x.example,1,prospection.email,2025-06-01T10:00\n',
    )
    run = cli(*filter_args(work, src, "--report", work / "r.json"))
    assert run.code == 0
    with (work / "out.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][0] == "Jane\nDoe"
    (excluded,) = report_of(work / "r.json")["excluded"]
    assert excluded["line"] == 4
    assert excluded["detail"].startswith("column 'created': a date-time needs an offset")


def test_mapping_naming_a_missing_column(cli: Any, work: Path) -> None:
    """A mapping naming a column the file lacks: one line naming mapping, line and column."""
    src = leads(
        work,
        "Jane,jane@x.example,1,prospection.email,2025-06-01\n",
        header="name,e-mail,phone,purpose,created\n",
    )
    run = cli(*filter_args(work, src))
    assert run.code == 1
    assert run.err == (
        f"purposelimit filter: error: {work / 'mapping.toml'}:3: subject.column: {src} has no "
        "column 'email' (did you mean 'e-mail'?)\n"
    )
    assert not (work / "out.csv").exists()


def test_unmapped_column_and_drop_unmapped(cli: Any, work: Path) -> None:
    """An unmapped column refuses the file; --drop-unmapped drops it and reports it."""
    src = leads(
        work,
        "Jane,jane@x.example,1,prospection.email,2025-06-01,x\n",
        header="name,email,phone,purpose,created,notes\n",
    )
    refused = cli(*filter_args(work, src))
    assert refused.code == 1
    assert "1 column of" in refused.err
    assert "'notes'" in refused.err
    assert "--drop-unmapped" in refused.err
    done = cli(*filter_args(work, src, "--drop-unmapped", "--report", work / "r.json"))
    assert done.code == 0
    columns = {c["column"]: c["status"] for c in report_of(work / "r.json")["columns"]}
    assert columns["notes"] == "unmapped"
    assert re.search(r"\n {12}notes +- +unmapped\n", done.out)


def test_unknown_purposes(cli: Any, work: Path) -> None:
    """An undeclared --purpose is a usage error (did-you-mean); one in a row excludes that row."""
    src = leads(
        work,
        "Jane,jane@x.example,1,prospection.emial,2025-06-01\n"
        "Bob,bob@x.example,1,client.contract,2025-06-01\n",
    )
    args = filter_args(work, src, "--report", work / "r.json")
    bad = list(args)
    bad[bad.index("prospection.email")] = "prospection.emial"
    run = cli(*bad)
    assert run.code == 2
    assert (
        "purpose 'prospection.emial' is not declared in the register "
        "(did you mean 'prospection.email'?)" in run.err
    )
    group = list(args)
    group[group.index("prospection.email")] = "prospection"
    assert "is a purpose group, not a purpose" in cli(*group).err
    done = cli(*args)
    assert done.code == 0
    data = report_of(work / "r.json")
    assert data["reasons"] == {"compatible": 1, "unknown-purpose": 1}
    assert data["excluded"][0]["rule"] == "register"


def test_dates_without_offset_and_in_the_future(cli: Any, work: Path) -> None:
    """Row dates without offset or after --at are invalid rows; such an --at is a usage error."""
    src = leads(
        work,
        "A,a@x.example,1,prospection.email,2025-06-01T10:00:00\n"
        "B,b@x.example,1,prospection.email,2026-03-02\n"
        "C,c@x.example,1,prospection.email,2026-03-01T00:00:00+00:00\n",
    )
    run = cli(*filter_args(work, src, "--report", work / "r.json"))
    assert run.code == 0
    details = [e["detail"] for e in report_of(work / "r.json")["excluded"]]
    assert details == [
        "column 'created': a date-time needs an offset ('Z' or '+01:00'); a bare date (2025-01-10) "
        "means midnight UTC",
        "column 'created': dated after the decision instant",
    ]
    args = filter_args(work, src)
    args[args.index("2026-03-01")] = "2026-03-01T10:00"
    bad = cli(*args)
    assert bad.code == 2
    assert "argument --at: a date-time needs an offset" in bad.err


def test_duplicate_subjects_are_flagged(cli: Any, work: Path) -> None:
    """A subject on several rows: each row decided on its own, every repeat listed in the report."""
    src = leads(
        work,
        "A,dup@x.example,1,prospection.email,2025-06-01\n"
        "B,other@x.example,1,prospection.email,2025-06-01\n"
        "C,DUP@x.example ,1,prospection.email,2020-01-01\n"
        "D,dup@x.example,1,client.contract,2025-06-01\n",
    )
    run = cli(*filter_args(work, src, "--report", work / "r.json"))
    assert run.code == 0
    assert "repeated  1 subjects on more than one row (2 rows, each decided on its own)" in run.out
    data = report_of(work / "r.json")
    assert [(d["line"], d["first_line"], d["kept"]) for d in data["duplicates"]] == [
        (4, 2, False),
        (5, 2, True),
    ]
    assert data["duplicates"][0]["subject"] == data["duplicates"][1]["subject"]
    assert data["subjects"]["duplicate_subjects"] == 1


def test_empty_email_is_invalid(cli: Any, work: Path) -> None:
    """A row whose e-mail subject is empty or blank is an invalid row."""
    src = leads(work, "A,,1,prospection.email,2025-06-01\nB,  ,1,prospection.email,2025-06-01\n")
    run = cli(*filter_args(work, src, "--report", work / "r.json"))
    assert run.code == 0
    excluded = report_of(work / "r.json")["excluded"]
    assert [(e["reason"], e["detail"]) for e in excluded] == [
        ("invalid-row", "column 'email': empty subject")
    ] * 2


def test_formula_like_cells(cli: Any, work: Path) -> None:
    """Cells are written as read unless --neutralise-formulas; the HTML report neutralises."""
    (work / "mapping.toml").write_text(
        MAPPING.replace('name = "identity.name"', '"=name" = "identity.name"'), encoding="utf-8"
    )
    header = '"=name",email,phone,purpose,created\n'
    src = leads(
        work,
        '=HYPERLINK("http://x"),a@x.example,+33,prospection.email,2025-06-01\n'
        "@SUM(1),b@x.example,1,prospection.email,2025-06-01\n",
        header=header,
    )
    assert cli(*filter_args(work, src, "--report", work / "r.html")).code == 0
    raw = (work / "out.csv").read_text(encoding="utf-8").splitlines()
    assert raw[1].startswith('"=HYPERLINK(""http://x"")",a@x.example')
    assert raw[2].startswith("@SUM(1),")
    assert "&#x27;=name" in (work / "r.html").read_text(encoding="utf-8")
    assert cli(*filter_args(work, src, "--neutralise-formulas")).code == 0
    safe = (work / "out.csv").read_text(encoding="utf-8").splitlines()
    assert safe[0].startswith("'=name,")
    assert safe[1].startswith('"\'=HYPERLINK(""http://x"")"')
    assert safe[2].startswith("'@SUM(1),")


def test_cp1252_file_with_accented_names(cli: Any, work: Path) -> None:
    """A cp1252 file is read as cp1252 (said on stderr) and written back in cp1252, bytes intact."""
    src = work / "leads.csv"
    src.write_bytes(
        (
            HEADER + "Zoé Lefèvre,zoe@x.example,1,prospection.email,2025-06-01\n"
            "François Œuvray,f@x.example,1,prospection.email,2025-06-01\n"
        ).encode("cp1252")
    )
    run = cli(*filter_args(work, src, "--report", work / "r.json"))
    assert run.code == 0
    assert (
        run.err == f"purposelimit: {src} is not UTF-8: read as cp1252 (and written the same way)\n"
    )
    out = (work / "out.csv").read_bytes()
    assert "Zoé Lefèvre".encode("cp1252") in out
    assert "François Œuvray".encode("cp1252") in out
    assert report_of(work / "r.json")["input"]["encoding"] == "cp1252"


def test_utf8_bom_and_semicolons_are_kept(cli: Any, work: Path) -> None:
    """A UTF-8 file with a BOM and ';' delimiters is written back the same way."""
    src = work / "leads.csv"
    src.write_bytes(
        b"\xef\xbb\xbf"
        + b"name;email;phone;purpose;created\r\n"
        + "Jos\u00e9;j@x.example;1;prospection.email;2025-06-01\r\n".encode()
    )
    assert cli(*filter_args(work, src)).code == 0
    assert (
        (work / "out.csv").read_bytes() == b"\xef\xbb\xbfname;email;purpose;created\r\n"
        b"Jos\xc3\xa9;j@x.example;prospection.email;2025-06-01\r\n"
    )


def test_a_late_byte_that_is_not_utf8_leaves_no_output(
    cli: Any, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte past the first MiB that breaks UTF-8 fails cleanly: exit 1, nothing left behind."""
    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", AUDIT_KEY)
    body = "A,a@x.example,1,prospection.email,2025-06-01\n" * 30_000
    src = work / "leads.csv"
    src.write_bytes(
        (HEADER + body).encode()
        + "Zoé,z@x.example,1,prospection.email,2025-06-01\n".encode("cp1252")
    )
    run = cli(*filter_args(work, src, "--report", work / "r.json", "--audit", work / "a.jsonl"))
    assert run.code == 1
    assert f"{src}:30002: a byte cannot be decoded as utf-8" in run.err
    assert not (work / "out.csv").exists()
    assert not (work / "r.json").exists()
    assert not (work / "a.jsonl").exists()
    assert not (work / "a.jsonl.head").exists()
    assert no_leftovers(work)


def test_failure_keeps_a_previous_output_untouched(cli: Any, work: Path) -> None:
    """When a run fails, the output file of an earlier run is left as it was."""
    (work / "out.csv").write_text("earlier\n", encoding="utf-8")
    src = leads(work, "A,a@x.example,1,prospection.email,2025-06-01\n", header="x,email\n")
    assert cli(*filter_args(work, src)).code == 1
    assert (work / "out.csv").read_text(encoding="utf-8") == "earlier\n"
    assert no_leftovers(work)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfen\x00a\x00", "UTF-16/UTF-32 text is not supported"),
        (
            HEADER.encode() + b"A,a@x.example,1,prospection.email,2025\x00-06-01\n",
            "2: the file holds NUL bytes: it is not a text CSV file",
        ),
        (
            HEADER.encode()
            + b'"A'
            + b"x" * 140_000
            + b'",a@x.example,1,prospection.email,2025-06-01\n',
            "a field is longer than 131,072 characters",
        ),
    ],
)
def test_unreadable_csv(cli: Any, work: Path, data: bytes, message: str) -> None:
    """UTF-16, NUL bytes and huge fields are refused with one line naming the file."""
    src = work / "leads.csv"
    src.write_bytes(data)
    run = cli(*filter_args(work, src))
    assert run.code == 1
    assert message in run.err
    assert run.err.count("\n") == 1
    assert not (work / "out.csv").exists()


def test_missing_input_file(cli: Any, work: Path) -> None:
    """A lead file that does not exist is bad input."""
    run = cli(*filter_args(work, work / "nope.csv"))
    assert run.code == 1
    assert "nope.csv: cannot be read: No such file or directory" in run.err


# --------------------------------------------------------------------------- filter: options


def test_collected_for_and_collected_at_options(cli: Any, work: Path) -> None:
    """--collected-for/--collected-at tag the whole file; they conflict with mapped columns."""
    (work / "mapping.toml").write_text(
        MAPPING.replace('purpose_column = "purpose"\ncollected_at_column = "created"\n', ""),
        encoding="utf-8",
    )
    src = leads(work, "A,a@x.example,1,whatever,not a date\n")
    run = cli(
        *filter_args(
            work,
            src,
            "--collected-for",
            "client.contract",
            "--collected-at",
            "2025-06-01",
            "--report",
            work / "r.json",
        )
    )
    assert run.code == 0, run
    assert report_of(work / "r.json")["reasons"] == {"compatible": 1}
    missing = cli(*filter_args(work, src, "--collected-at", "2025-06-01"))
    assert missing.code == 2
    assert "the collection purpose is unknown" in missing.err
    (work / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    conflict = cli(*filter_args(work, src, "--collected-for", "client.contract"))
    assert conflict.code == 2
    assert "--collected-for conflicts with the mapping's collection.purpose_column" in conflict.err


def test_consents_objections_suppression_files(cli: Any, work: Path) -> None:
    """CSV objections, JSON consents and a suppression list all apply, e-mails normalised."""
    src = leads(
        work,
        "A,a@x.example,1,prospection.email,2025-06-01\nB,b@x.example,1,prospection.email,2025-06-01\n"
        "C,c@x.example,1,prospection.email,2025-06-01\n",
    )
    (work / "objections.csv").write_text("subject,at\nA@X.example,2025-07-01\n", encoding="utf-8")
    (work / "suppress.txt").write_text("# do not contact\nC@x.example\n", encoding="utf-8")
    (work / "consents.json").write_text(
        '[{"subject": "b@x.example", "purposes": ["prospection"], '
        '"state": "refused", "given_at": "2025-07-01"}]',
        encoding="utf-8",
    )
    run = cli(
        *filter_args(
            work,
            src,
            "--objections",
            work / "objections.csv",
            "--suppression",
            work / "suppress.txt",
            "--consents",
            work / "consents.json",
            "--report",
            work / "r.json",
        )
    )
    assert run.code == 0, run
    data = report_of(work / "r.json")
    assert [(e["reason"], e["rule"]) for e in data["excluded"]] == [
        ("objection", "objection:objections.csv:2"),
        ("objection", "objection:suppression:suppress.txt:2"),
    ]
    assert data["reasons"] == {"same-purpose": 1, "objection": 2}


def test_bad_event_file_is_bad_input(cli: Any, work: Path) -> None:
    """A consents file with a bad date: exit 1, one line naming file, line and column, no value."""
    src = leads(work, "A,a@x.example,1,prospection.email,2025-06-01\n")
    (work / "consents.csv").write_text(
        "subject,purposes,given_at\nsecret@x.example,prospection,01/02/2025\n", encoding="utf-8"
    )
    run = cli(*filter_args(work, src, "--consents", work / "consents.csv"))
    assert run.code == 1
    assert run.err == (
        f"purposelimit filter: error: {work / 'consents.csv'}:2: column 'given_at': "
        "not an ISO-8601 "
        "date or date-time (such as 2025-01-10 or 2025-01-10T09:00:00+00:00)\n"
    )


def test_audit_events(cli: Any, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--audit appends chained entries: the kept rows per outcome, each excessive column and
    each excluded row, with the run id of the report; ids and pseudonyms only."""
    monkeypatch.setenv("PURPOSELIMIT_PSEUDONYM_KEY", "test-key-of-16-bytes")
    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", AUDIT_KEY)
    src = leads(
        work,
        "Jane,jane@x.example,+33 6,prospection.email,2025-06-01\n"
        "Bob,bob@x.example,+33 7,prospection.email,2019-06-01\n",
    )
    run = cli(*filter_args(work, src, "--audit", work / "a.jsonl", "--report", work / "r.json"))
    assert run.code == 0, run
    assert f"audit     {work / 'a.jsonl'} (3 chained entries appended, seq 1 to 3)" in run.out
    entries = [
        json.loads(line) for line in (work / "a.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    kept, column, row = entries
    run_ref = f"run:{report_of(work / 'r.json')['run']}"
    assert (kept["record_type"], kept["field"], kept["reason"], kept["allowed"]) == (
        "lead-file",
        "rows=1",
        "same-purpose",
        True,
    )
    assert kept["subject_ref"] == column["subject_ref"] == run_ref
    assert (column["field"], column["category"], column["reason"]) == (
        "phone",
        "contact.phone",
        "excessive",
    )
    assert (row["record_type"], row["field"], row["reason"], row["allowed"]) == (
        "lead-row",
        "line=3",
        "retention-expired",
        False,
    )
    assert row["subject_ref"].startswith("ps-")
    assert {e["register_version"] for e in entries} == {"t-1"}
    assert {e["collected_for"] for e in entries} == {None}  # a column: one per row
    assert {e["actor"] for e in entries} == {"purposelimit filter"}
    text = (work / "a.jsonl").read_text(encoding="utf-8")
    for value in ("jane", "bob", "Jane", "+33"):
        assert value not in text
    assert report_of(work / "r.json")["subjects"]["pseudonym_key"] == "environment"


def test_report_extension_and_same_file(cli: Any, work: Path) -> None:
    """A report neither .json nor .html, or an output that is the input: usage errors."""
    src = leads(work, "A,a@x.example,1,prospection.email,2025-06-01\n")
    bad = cli(*filter_args(work, src, "--report", work / "r.txt"))
    assert bad.code == 2
    assert "must end in .json" in bad.err
    args = filter_args(work, src)
    args[args.index(work / "out.csv")] = src
    same = cli(*args)
    assert same.code == 2
    assert "must not be the input file" in same.err


def test_forced_encoding_and_tab_delimiter(cli: Any, work: Path) -> None:
    """--encoding and --delimiter tab override detection."""
    src = work / "leads.csv"
    src.write_bytes(
        HEADER.replace(",", "\t").encode()
        + "Zoé\tz@x.example\t1\tprospection.email\t2025-06-01\n".encode("latin-1")
    )
    run = cli(*filter_args(work, src, "--encoding", "latin-1", "--delimiter", "tab"))
    assert run.code == 0, run
    assert run.err == ""
    assert (work / "out.csv").read_bytes().splitlines()[
        1
    ] == "Zoé\tz@x.example\tprospection.email\t2025-06-01".encode("latin-1")


def test_progress_only_on_a_terminal(cli: Any, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a terminal, stderr stays silent; on a terminal the progress line ends the run."""
    body = "A,a{}@x.example,1,prospection.email,2025-06-01\n"
    src = leads(work, "".join(body.format(i) for i in range(5000)))
    quiet = cli(*filter_args(work, src))
    assert (quiet.code, quiet.err) == (0, "")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([str(a) for a in filter_args(work, src)]) == 0
    assert terminal.getvalue().startswith("\rpurposelimit filter:")
    assert terminal.getvalue().endswith("100%  5,000 rows\n")


# --------------------------------------------------------------------------- retention


def test_retention_lists_expired_rows_with_their_date(cli: Any, tmp_path: Path) -> None:
    """The sweep lists rows past retention for a purpose, with the date each expired (CSV)."""
    run = cli(
        "retention",
        MAUTIC,
        "--preset",
        "cnil-commercial",
        "--mapping",
        MAUTIC_MAP,
        "--purpose",
        "prospection.postal",
        "--at",
        "2028-01-01",
    )
    assert run.code == 0, run
    rows = list(csv.DictReader(io.StringIO(run.out)))
    assert len(rows) == 50
    assert rows[0]["line"] == "2"
    assert {r["expired_at"] for r in rows} == {"2027-11-20T00:00:00+00:00"}
    assert {r["rule"] for r in rows} == {"retention:prospection.postal"}
    assert "@" not in run.out
    assert "50 row-purpose pairs past their retention" in run.err
    assert "4 rows not judged" in run.err


def test_retention_default_purpose_and_json(cli: Any, tmp_path: Path) -> None:
    """By default each row's collection purpose is checked; --out x.json writes JSON."""
    out = tmp_path / "expired.json"
    early = cli(
        "retention",
        SALESFORCE,
        "--preset",
        "cnil-commercial",
        "--mapping",
        SALESFORCE_MAP,
        "--at",
        "2026-03-01",
        "--out",
        out,
    )
    assert early.code == 0
    assert json.loads(out.read_text(encoding="utf-8"))["expired"] == []
    late = cli(
        "retention",
        SALESFORCE,
        "--preset",
        "cnil-commercial",
        "--mapping",
        SALESFORCE_MAP,
        "--at",
        "2028-10-01",
        "--out",
        out,
    )
    assert late.code == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert len(data["expired"]) == 40
    assert data["expired"][0]["expired_at"] == "2028-09-15T00:00:00+00:00"
    assert data["expired"][0]["purpose"] == "prospection.email_b2b"


def test_retention_to_stdout_is_all_or_nothing(cli: Any, work: Path) -> None:
    """A sweep that fails part-way prints nothing on stdout; JSON goes to stdout with --format."""
    body = "A,a@x.example,1,prospection.email,2020-06-01\n" * 30_000
    src = work / "leads.csv"
    late = "Zoé,z@x.example,1,prospection.email,2025-06-01\n".encode("cp1252")
    src.write_bytes((HEADER + body).encode() + late)
    args = [
        "retention",
        src,
        "--register",
        work / "register.toml",
        "--mapping",
        work / "mapping.toml",
        "--at",
        "2026-03-01",
    ]
    failed = cli(*args)
    assert failed.code == 1
    assert failed.out == ""
    assert "30002: a byte cannot be decoded as utf-8" in failed.err
    small = leads(work, "A,a@x.example,1,prospection.email,2020-06-01\n", name="small.csv")
    done = cli("retention", small, *args[2:], "--format", "json")
    assert done.code == 0
    data = json.loads(done.out)
    assert data["at"] == "2026-03-01T00:00:00+00:00"
    assert data["expired"][0]["expired_at"] == "2023-06-01T00:00:00+00:00"


def test_retention_usage_errors(cli: Any) -> None:
    """An undeclared --purpose is a usage error."""
    run = cli(
        "retention",
        MAUTIC,
        "--preset",
        "cnil-commercial",
        "--mapping",
        MAUTIC_MAP,
        "--purpose",
        "prospection.fax",
    )
    assert run.code == 2
    assert "is not declared in the register" in run.err


# --------------------------------------------------------------------------- decide


def decide_line(**changes: Any) -> str:
    request: dict[str, Any] = {
        "purpose": "prospection.email_b2c",
        "at": "2026-03-01T10:00:00+00:00",
        "record": {
            "subject": "lead-42",
            "collected_for": "hr.recruitment",
            "collected_at": "2025-01-10T09:00:00+00:00",
            "last_contact_at": None,
            "contract_ended_at": None,
        },
        "categories": ["identity.name", "contact.email"],
    }
    request.update(changes)
    return json.dumps(request)


def test_decide_protocol(cli: Any) -> None:
    """One answer per non-blank line, in order; unreadable lines get {error, line}; exit 1."""
    lines = [
        decide_line(),
        "",
        "   ",
        "not json",
        decide_line(record={"collected_for": "hr.recruitment", "collected_at": "2025-01-10"}),
        decide_line(
            record={"subject": "s", "collected_for": "x", "collected_at": "2025-01-10T09:00"}
        ),
        decide_line(
            consents=[
                {
                    "subject": "lead-42",
                    "purposes": ["prospection.email_b2c"],
                    "given_at": "2025-06-01",
                    "withdrawn_at": "2025-05-01",
                }
            ]
        ),
        decide_line(categories=[]),
        decide_line(purpose="prospection.fax"),
        decide_line(
            consents=[
                {
                    "subject": "lead-42",
                    "purposes": ["prospection.email_b2c"],
                    "given_at": "2025-06-01",
                    "evidence": {"mechanism": "double-opt-in"},
                }
            ]
        ),
    ]
    run = cli("decide", "--preset", "cnil-commercial", stdin=("\n".join(lines) + "\n").encode())
    assert run.code == 1
    answers = [json.loads(line) for line in run.out.splitlines()]
    assert len(answers) == 8
    assert answers[0]["reason"] == "consent-missing"
    assert answers[1] == {"error": "not JSON: Expecting value at column 1", "line": 4}
    assert answers[2] == {"error": "record.subject: missing (this field is required)", "line": 5}
    assert answers[3]["line"] == 6
    assert answers[3]["error"].startswith("record.collected_at: a date-time needs an offset")
    assert answers[4] == {"error": "consents[0].withdrawn_at: is before given_at", "line": 7}
    assert answers[5] == {"error": "categories: must list at least one data category", "line": 8}
    assert answers[6]["reason"] == "unknown-purpose"
    assert answers[6]["allowed"] is False
    assert answers[7]["reason"] == "consent"
    assert list(answers[1]) == ["error", "line"]
    assert run.err == ""


def test_decide_all_decided_is_exit_0(cli: Any) -> None:
    """When every request gets a decision, even a denial, the exit status is 0."""
    run = cli("decide", "--preset", "cnil-commercial", stdin=(decide_line() + "\n\n").encode())
    assert run.code == 0
    assert json.loads(run.out)["allowed"] is False


def test_decide_not_utf8_line(cli: Any) -> None:
    """A line that is not UTF-8 gets an error object and the next lines are still decided."""
    run = cli(
        "decide",
        "--preset",
        "cnil-commercial",
        stdin=b"\xff\xfe{}\n" + decide_line().encode() + b"\n",
    )
    assert run.code == 1
    first, second = (json.loads(line) for line in run.out.splitlines())
    assert first == {"error": "the line is not UTF-8 text", "line": 1}
    assert second["reason"] == "consent-missing"


def test_decide_with_event_files_and_at(cli: Any, tmp_path: Path) -> None:
    """--consents applies to every request; --at dates requests that have no "at"."""
    (tmp_path / "c.json").write_text(
        '[{"subject": "lead-42", "purposes": ["prospection"], "given_at": "2025-02-01"}]',
        encoding="utf-8",
    )
    line = json.loads(decide_line())
    del line["at"]
    run = cli(
        "decide",
        "--preset",
        "cnil-commercial",
        "--consents",
        tmp_path / "c.json",
        "--at",
        "2026-03-01",
        stdin=(json.dumps(line) + "\n").encode(),
    )
    assert run.code == 0
    assert json.loads(run.out)["reason"] == "consent"


def test_decide_usage_errors(cli: Any, tmp_path: Path) -> None:
    """No register, a missing or refused register file: exit 2 and nothing on stdout."""
    none = cli("decide", stdin=b"")
    assert none.code == 2
    assert "one of the arguments --register --preset is required" in none.err
    missing = cli("decide", "--register", tmp_path / "nope.toml", stdin=b"")
    assert missing.code == 2
    assert "no such file" in missing.err
    (tmp_path / "bad.toml").write_text("[register]\nversion = 1\n", encoding="utf-8")
    refused = cli("decide", "--register", tmp_path / "bad.toml", stdin=decide_line().encode())
    assert refused.code == 2
    assert refused.out == ""
    unknown = cli("decide", "--preset", "cnil", stdin=b"")
    assert unknown.code == 2
    assert "available presets: cnil-commercial" in unknown.err


# --------------------------------------------------------------------------- check, presets, help


def test_check_a_valid_register(cli: Any) -> None:
    """check prints the purposes, compatibility entries and retention rules of a valid register."""
    run = cli("check", EXAMPLES / "register.toml")
    assert run.code == 0, run
    assert "valid register" in run.out
    for section in ("Purposes", "Compatibility entries", "Retention rules"):
        assert f"\n{section}\n" in run.out
    assert "prospection.events_b2b" in run.out
    assert "email-b2b-to-events-b2b" in run.out
    assert "direct-marketing" in run.out
    preset = cli("check", "--preset", "cnil-commercial")
    assert preset.code == 0
    assert "c12.recruitment-to-prospection" in preset.out


def test_check_lists_every_problem(cli: Any, tmp_path: Path) -> None:
    """A refused register: exit 1 with every problem on stderr; a missing file: exit 2."""
    path = tmp_path / "bad.toml"
    path.write_text(
        REGISTER.replace('legal_basis = "contract"', 'legal_basis = "whim"').replace(
            'duration = "P3Y"', 'duration = "3 years"'
        ),
        encoding="utf-8",
    )
    run = cli("check", path)
    assert run.code == 1
    assert "2 problems" in run.err
    assert "legal_basis" in run.err
    assert "retention.duration" in run.err
    assert cli("check", tmp_path / "nope.toml").code == 2
    assert cli("check").code == 2


def test_presets(cli: Any) -> None:
    """presets lists the shipped presets."""
    run = cli("presets")
    assert run.code == 0
    assert run.out.startswith("cnil-commercial  ")
    assert "purposes" in run.out


@pytest.mark.parametrize("command", ["filter", "retention", "decide", "check", "presets"])
def test_help_has_an_example(cli: Any, command: str) -> None:
    """Every command's --help shows an example and exits 0."""
    run = cli(command, "--help")
    assert run.code == 0
    assert "example" in run.out
    assert f"purposelimit {command}" in run.out


def test_version_and_no_command(cli: Any) -> None:
    """--version prints the version; no command prints the help on stderr and exits 2."""
    version = cli("--version")
    assert version.code == 0
    assert version.out.startswith("purposelimit ")
    none = cli()
    assert none.code == 2
    assert "usage: purposelimit" in none.err
    assert "filter" in none.err
    assert "decide" in none.err
    bad = cli("filter", "--nope")
    assert bad.code == 2
    assert "usage:" in bad.err


def test_no_output_leaks_personal_values_on_errors(cli: Any, work: Path) -> None:
    """Error lines name files, lines and columns, never a cell's value."""
    src = leads(
        work,
        "Secret Name,secret@x.example,1,prospection.email,2025-06-01\n",
        header="name,email,phone,purpose,created,unmapped\n",
    )
    run = cli(*filter_args(work, src))
    assert run.code == 1
    assert "secret" not in run.err.lower()


def test_environment_is_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI module imports without a pseudonym key or a terminal."""
    monkeypatch.delenv("PURPOSELIMIT_PSEUDONYM_KEY", raising=False)
    assert os.environ.get("PURPOSELIMIT_PSEUDONYM_KEY") is None
    assert callable(main)


# --------------------------------------------------------------------------- --registry


def test_filter_reads_objections_and_withdrawals_from_a_registry(cli: Any, tmp_path: Path) -> None:
    """filter --registry: the registry's objections exclude rows (subjects compared as e-mails)
    and a consent withdrawn in the registry stops a consent-based campaign; nothing is written."""
    from purposelimit import Consent, Evidence, Objection, open_store

    db = tmp_path / "registry.db"
    registry = open_store(f"sqlite:///{db}")
    registry.record(
        Objection("  Emma.Patel@corex.example.com ", datetime(2025, 12, 1, tzinfo=UTC), id="o-1"),
        actor="test",
    )
    for subject in ("lucas.osei@deltaline.example.com", "ava.idris@granite.example.com"):
        registry.record(
            Consent(
                subject,
                ["prospection.email_b2c"],
                datetime(2025, 10, 1, tzinfo=UTC),
                evidence=Evidence("double-opt-in"),
            ),
            actor="test",
        )
    registry.withdraw(
        "ava.idris@granite.example.com",
        ["prospection.email_b2c"],
        datetime(2026, 1, 5, tzinfo=UTC),
        actor="test",
    )
    version = registry.version
    registry.close()

    def run(purpose: str, report: Path) -> dict[str, Any]:
        result = cli(
            "filter",
            SALESFORCE,
            "--preset",
            "cnil-commercial",
            "--purpose",
            purpose,
            "--mapping",
            SALESFORCE_MAP,
            "--registry",
            f"sqlite:///{db}",
            "--at",
            "2026-03-01",
            "--out",
            tmp_path / "out.csv",
            "--report",
            report,
        )
        assert result.code == 0, result
        return report_of(report)

    b2b = run("prospection.email_b2b", tmp_path / "b2b.json")
    assert b2b["reasons"] == {"same-purpose": 39, "objection": 1}
    assert [e["rule"] for e in b2b["excluded"]] == ["objection:o-1"]

    b2c = run("prospection.email_b2c", tmp_path / "b2c.json")
    assert b2c["rows"]["kept"] == 1  # only Lucas's consent still stands
    assert b2c["reasons"]["consent-withdrawn"] == 1
    with open_store(f"sqlite:///{db}") as reread:
        assert reread.version == version  # read, never written


def test_decide_reads_the_registry_at_every_request(cli: Any, tmp_path: Path) -> None:
    """decide --registry: the registry's consent allows; inline events add for one request only."""
    from purposelimit import Consent, Evidence, open_store

    db = tmp_path / "registry.db"
    registry = open_store(f"sqlite:///{db}")
    registry.record(
        Consent(
            "lead-1",
            ["newsletter.editorial"],
            datetime(2026, 1, 1, tzinfo=UTC),
            evidence=Evidence("double-opt-in"),
        ),
        actor="test",
    )
    registry.close()
    request = {
        "purpose": "newsletter.editorial",
        "at": "2026-03-01T10:00:00+00:00",
        "record": {
            "subject": "lead-1",
            "collected_for": "newsletter.editorial",
            "collected_at": "2026-01-01T00:00:00+00:00",
        },
        "categories": ["contact.email"],
    }
    withdrawn = {
        **request,
        "consents": [
            {
                "subject": "lead-1",
                "purposes": ["newsletter.editorial"],
                "given_at": "2026-01-01T00:00:00+00:00",
                "withdrawn_at": "2026-02-01T00:00:00+00:00",
                "evidence": {"mechanism": "double-opt-in"},
            }
        ],
    }
    lines = "\n".join(json.dumps(r) for r in (request, withdrawn, request)) + "\n"
    run = cli(
        "decide",
        "--preset",
        "cnil-commercial",
        "--registry",
        f"sqlite:///{db}",
        stdin=lines.encode(),
    )
    assert run.code == 0, run
    answers = [json.loads(line) for line in run.out.splitlines()]
    assert [a["reason"] for a in answers] == ["consent", "consent-withdrawn", "consent"]


def test_registry_that_does_not_exist_is_a_usage_error(cli: Any, tmp_path: Path) -> None:
    """--registry naming a missing SQLite file exits 2 and creates nothing."""
    missing = tmp_path / "nope.db"
    run = cli(
        "decide", "--preset", "cnil-commercial", "--registry", f"sqlite:///{missing}", stdin=b""
    )
    assert run.code == 2
    assert "--registry" in run.err
    assert not missing.exists()


def test_outputs_get_the_usual_file_permissions(cli: Any, work: Path) -> None:
    """The output and the report are created like any file (0o666 less the umask), not 0o600."""
    src = leads(work, "Ada,ada@example.org,,prospection.email,2026-01-10\n")
    old = os.umask(0o022)
    try:
        run = cli(*filter_args(work, src, "--report", work / "report.json"))
    finally:
        os.umask(old)
    assert run.code == 0, run
    assert (work / "out.csv").stat().st_mode & 0o777 == 0o644
    assert (work / "report.json").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ files without a header row


def test_a_lead_file_without_its_header_row_echoes_no_cell(cli: Any, work: Path) -> None:
    """A lead file whose first line is data is refused without repeating any of its cells,
    not even as a did-you-mean for a mapped column."""
    src = leads(work, "", header="Emil,emil.secret7q9@x.example,0601,client.contract,2025-01-01\n")
    run = cli(*filter_args(work, src))
    assert run.code == 1
    assert "header row" in run.err
    assert "Emil" not in run.err
    assert "secret7q9" not in run.err
    assert not (work / "out.csv").exists()


def test_an_event_file_without_its_header_row_echoes_no_cell(cli: Any, work: Path) -> None:
    """A consents or objections CSV whose first line is data is refused without echoing it."""
    src = leads(work, "Ada,ada@example.org,,client.contract,2026-01-10\n")
    consents = work / "consents.csv"
    consents.write_text("secret-7q9@x.example,prospection.email,2025-01-01\n", encoding="utf-8")
    objections = work / "objections.csv"
    objections.write_text("secret-7q9@x.example,2025-01-01\n", encoding="utf-8")
    for option, path in (("--consents", consents), ("--objections", objections)):
        run = cli(*filter_args(work, src, option, path))
        assert run.code == 1, run
        assert "not a header" in run.err
        assert "secret-7q9" not in run.err


def test_an_event_file_repeating_a_column_is_refused(cli: Any, work: Path) -> None:
    """Two 'subject' columns would give a consent to the wrong person: the file is refused."""
    src = leads(work, "Ada,ada@example.org,,client.contract,2026-01-10\n")
    consents = work / "consents.csv"
    consents.write_text(
        "subject,purposes,given_at,subject\na@x.example,prospection.email,2025-06-01,b@x.example\n",
        encoding="utf-8",
    )
    run = cli(*filter_args(work, src, "--consents", consents))
    assert run.code == 1, run
    assert "repeats a column name" in run.err
    assert "b@x.example" not in run.err


def test_a_file_whose_every_column_is_excessive_is_bad_input(cli: Any, work: Path) -> None:
    """When the purpose may use none of the file's columns, one clear error and no output."""
    mapping = work / "only-phone.toml"
    mapping.write_text(
        '[subject]\ncolumn = "phone"\n[collection]\npurpose = "client.contract"\n'
        'collected_at = "2025-01-01"\n[columns]\nphone = "contact.phone"\n',
        encoding="utf-8",
    )
    src = leads(work, "0601020304\n", header="phone\n")
    run = cli(
        "filter",
        src,
        "--register",
        work / "register.toml",
        "--purpose",
        "prospection.email",
        "--mapping",
        mapping,
        "--at",
        "2026-03-01",
        "--out",
        work / "out.csv",
    )
    assert run.code == 1, run
    assert "Traceback" not in run.err
    assert "nothing can be decided or kept" in run.err
    assert "0601020304" not in run.err
    assert not (work / "out.csv").exists()


# --------------------------------------------------------------------------- filter --audit:
# --------------------------------------------------------------------------- the hash chain
#
# `filter --audit FILE` appends to the keyed hash chain of JsonLinesAuditSink (key from
# PURPOSELIMIT_AUDIT_KEY), the format `purposelimit audit verify|tail|stats` reads.


def sample_filter(folder: Path, *extra: str | Path) -> list[str | Path]:
    """The README's run on the Salesforce-style sample, writing into *folder*."""
    return [
        "filter",
        SALESFORCE,
        "--preset",
        "cnil-commercial",
        "--purpose",
        "prospection.email_b2b",
        "--mapping",
        SALESFORCE_MAP,
        "--objections",
        EXAMPLES / "objections.csv",
        "--suppression",
        EXAMPLES / "suppression.txt",
        "--at",
        "2026-03-01",
        "--out",
        folder / "usable.csv",
        *extra,
    ]


@pytest.fixture
def audit_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """PURPOSELIMIT_AUDIT_KEY set to the tests' audit key."""
    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", AUDIT_KEY)
    return AUDIT_KEY


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_filter_audit_is_verified_tailed_and_summarised(
    cli: Any, tmp_path: Path, audit_key: str
) -> None:
    """A filter run's --audit file passes `audit verify` (exit 0) and `audit stats`/`tail` read
    it: one entry for the kept rows, one per excessive column, one per excluded row."""
    audit = tmp_path / "audit.jsonl"
    run = cli(*sample_filter(tmp_path, "--audit", audit))
    assert run.code == 0, run
    assert f"audit     {audit} (8 chained entries appended, seq 1 to 8)" in run.out
    assert (tmp_path / "audit.jsonl.head").exists()

    verify = cli("audit", "verify", audit)
    assert verify.code == 0, verify
    assert verify.out == f"{audit}: OK: 8 entries, head at seq 8\n"

    stats = cli("audit", "stats", audit, "--format", "json")
    assert stats.code == 0, stats
    summary = json.loads(stats.out)
    assert (summary["events"], summary["allowed"], summary["denied"]) == (8, 1, 7)
    assert summary["by_reason"] == {"objection": 4, "excessive": 3, "same-purpose": 1}
    assert summary["by_purpose"] == {"prospection.email_b2b": 8}
    assert summary["by_actor"] == {"purposelimit filter": 8}

    tail = cli("audit", "tail", audit, "-n", "4", "--format", "json")
    assert tail.code == 0, tail
    rows = [json.loads(line) for line in tail.out.splitlines()]
    assert [r["seq"] for r in rows] == [5, 6, 7, 8]
    assert {(r["record_type"], r["reason"], r["allowed"]) for r in rows} == {
        ("lead-row", "objection", False)
    }
    assert all(r["subject_ref"].startswith("ps-") for r in rows)
    text_tail = cli("audit", "tail", audit, "-n", "8")
    assert "lead-file.rows=36 (*)" in text_tail.out
    assert "lead-file.Phone (contact.phone)" in text_tail.out
    assert "lead-row.line=4 (*)" in text_tail.out

    written = audit.read_text(encoding="utf-8")
    assert "@" not in written  # no e-mail address: subjects are keyed pseudonyms
    for cell in ("Patel", "emma", "Corex"):
        assert cell not in written


def test_two_filter_runs_continue_one_chain(cli: Any, tmp_path: Path, audit_key: str) -> None:
    """A second run on the same --audit file continues its chain: seq follows on, the first new
    entry chains to the last old one, and the whole file still verifies."""
    audit = tmp_path / "audit.jsonl"
    assert cli(*sample_filter(tmp_path, "--audit", audit)).code == 0
    second = cli(*sample_filter(tmp_path, "--audit", audit, "--actor", "campaign-2"))
    assert second.code == 0, second
    assert "(8 chained entries appended, seq 9 to 16)" in second.out
    entries = audit_lines(audit)
    assert [e["seq"] for e in entries] == list(range(1, 17))
    assert entries[8]["prev"] == entries[7]["mac"]
    assert entries[0]["subject_ref"] != entries[8]["subject_ref"]  # two runs, two run ids
    assert {e["actor"] for e in entries[8:]} == {"campaign-2"}
    verify = cli("audit", "verify", audit)
    assert verify.code == 0, verify
    assert verify.out == f"{audit}: OK: 16 entries, head at seq 16\n"
    stats = json.loads(cli("audit", "stats", audit, "--format", "json").out)
    assert stats["by_actor"] == {"purposelimit filter": 8, "campaign-2": 8}


def test_a_tampered_filter_audit_fails_verification(
    cli: Any, tmp_path: Path, audit_key: str
) -> None:
    """Editing one entry (an exclusion turned into an allowed row) makes `audit verify` fail
    with exit 1, naming the line; a later filter run refuses to extend a chain whose last
    entry was edited, and writes no output."""
    audit = tmp_path / "audit.jsonl"
    assert cli(*sample_filter(tmp_path, "--audit", audit)).code == 0
    original = audit.read_text(encoding="utf-8").splitlines()

    def forge(index: int) -> bytes:
        lines = list(original)
        forged = json.loads(lines[index]) | {"allowed": True, "reason": "same-purpose"}
        lines[index] = json.dumps(forged, separators=(",", ":"))
        audit.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return audit.read_bytes()

    forge(5)
    verify = cli("audit", "verify", audit)
    assert verify.code == 1, verify
    assert "FAILED: line 6 (seq 6): edited" in verify.out

    before = forge(7)  # the last entry: the one a new run would chain to
    assert cli("audit", "verify", audit).code == 1
    (tmp_path / "usable.csv").unlink()
    again = cli(*sample_filter(tmp_path, "--audit", audit))
    assert again.code == 1, again
    assert again.err.startswith(f"purposelimit filter: error: {audit}: its last line does not")
    assert audit.read_bytes() == before
    assert not (tmp_path / "usable.csv").exists()


def test_filter_audit_without_a_key_writes_nothing(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PURPOSELIMIT_AUDIT_KEY (or with a key too short), --audit is a usage error
    (exit 2) naming the variable, and neither the output, the report nor the audit file is
    written; --audit-key-env names another variable, which `audit verify --key-env` reads."""
    monkeypatch.delenv("PURPOSELIMIT_AUDIT_KEY", raising=False)
    audit = tmp_path / "audit.jsonl"
    run = cli(*sample_filter(tmp_path, "--audit", audit, "--report", tmp_path / "r.json"))
    assert run.code == 2, run
    assert run.err == (
        "purposelimit filter: error: --audit: the environment variable PURPOSELIMIT_AUDIT_KEY "
        "is not set: put the audit key in it (at least 16 bytes); or name another variable "
        "with --audit-key-env\n"
    )
    assert run.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", "short")
    short = cli(*sample_filter(tmp_path, "--audit", audit))
    assert short.code == 2, short
    assert "PURPOSELIMIT_AUDIT_KEY must hold at least 16 bytes" in short.err
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    monkeypatch.setenv("CAMPAIGN_AUDIT_KEY", AUDIT_KEY)
    named = cli(*sample_filter(tmp_path, "--audit", audit, "--audit-key-env", "CAMPAIGN_AUDIT_KEY"))
    assert named.code == 0, named
    verify = cli("audit", "verify", audit, "--key-env", "CAMPAIGN_AUDIT_KEY")
    assert verify.code == 0, verify


def test_filter_audit_refuses_a_plain_json_lines_file(
    cli: Any, tmp_path: Path, audit_key: str
) -> None:
    """An existing --audit file in the old plain JSON Lines format is refused (exit 1, the file
    named), left byte for byte as it was, and no output, head or chain entry is written."""
    audit = tmp_path / "old-audit.jsonl"
    plain = b'{"event": "filter.run", "run": "0f3a", "purpose": "prospection.email_b2b"}\n'
    audit.write_bytes(plain)
    run = cli(*sample_filter(tmp_path, "--audit", audit, "--report", tmp_path / "r.json"))
    assert run.code == 1, run
    assert run.err.startswith(
        f"purposelimit filter: error: {audit}: not a hash-chained audit file (plain JSON Lines"
    )
    assert audit.read_bytes() == plain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old-audit.jsonl"]


def test_filter_audit_with_another_key_leaves_the_chain_alone(
    cli: Any, tmp_path: Path, audit_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Continuing a chain with a key it was not written with is refused before the run
    (exit 1): the chain and the earlier output are left as they were."""
    audit = tmp_path / "audit.jsonl"
    assert cli(*sample_filter(tmp_path, "--audit", audit)).code == 0
    before = audit.read_bytes(), (tmp_path / "usable.csv").read_bytes()
    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", "another-key-of-16-bytes-or-more")
    run = cli(*sample_filter(tmp_path, "--audit", audit))
    assert run.code == 1, run
    assert f"{audit}: the head file does not verify with this key" in run.err
    assert (audit.read_bytes(), (tmp_path / "usable.csv").read_bytes()) == before
    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", audit_key)
    assert cli("audit", "verify", audit).code == 0


def test_filter_audit_leaves_invalid_rows_to_the_report(
    cli: Any, tmp_path: Path, audit_key: str
) -> None:
    """The Mautic sample's four invalid rows (no e-mail address) are not chained: nothing was
    decided for them, and the chain holds only the engine's reason codes; the report lists
    them. The chain reads back with `audit stats`."""
    audit = tmp_path / "audit.jsonl"
    report = tmp_path / "report.json"
    run = cli(
        "filter",
        MAUTIC,
        "--preset",
        "cnil-commercial",
        "--purpose",
        "prospection.postal",
        "--mapping",
        MAUTIC_MAP,
        "--at",
        "2026-03-01",
        "--out",
        tmp_path / "postal.csv",
        "--report",
        report,
        "--audit",
        audit,
    )
    assert run.code == 0, run
    entries = audit_lines(audit)
    assert [e for e in entries if e["record_type"] == "lead-row"] == []
    assert {e["collected_for"] for e in entries} == {"client.contract"}
    assert [r["reason"] for r in json.loads(report.read_text())["excluded"]] == ["invalid-row"] * 4
    stats = json.loads(cli("audit", "stats", audit, "--format", "json").out)
    assert stats["by_reason"] == {"excessive": 7, "compatible": 1}
    assert cli("audit", "verify", audit).code == 0


def test_filter_audit_must_not_be_the_output_or_the_report(
    cli: Any, tmp_path: Path, audit_key: str
) -> None:
    """--audit naming the output or the report file is a usage error (exit 2), nothing written."""
    for same in (tmp_path / "usable.csv", tmp_path / "r.json"):
        run = cli(*sample_filter(tmp_path, "--report", tmp_path / "r.json", "--audit", same))
        assert run.code == 2, run
        assert "the audit file must differ from the lead, output and report files" in run.err
        assert list(tmp_path.iterdir()) == []


def test_filter_audit_stats_count_subjects_not_runs(
    cli: Any, tmp_path: Path, audit_key: str
) -> None:
    """`audit stats` counts the subjects of the excluded rows, not the `run:` references of a
    filter run's file-level entries."""
    audit = tmp_path / "audit.jsonl"
    assert cli(*sample_filter(tmp_path, "--audit", audit)).code == 0
    stats = json.loads(cli("audit", "stats", audit, "--format", "json").out)
    refs = {e["subject_ref"] for e in audit_lines(audit) if e["record_type"] == "lead-row"}
    assert stats["subjects"] == len(refs) == 4


def test_filter_audit_says_when_pseudonyms_cannot_be_linked(
    cli: Any, tmp_path: Path, audit_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PURPOSELIMIT_PSEUDONYM_KEY the audit file's pseudonyms use a key drawn for the
    run: the command says so once it has written them; with the key set it says nothing."""
    audit = tmp_path / "audit.jsonl"
    monkeypatch.delenv("PURPOSELIMIT_PSEUDONYM_KEY", raising=False)
    run = cli(*sample_filter(tmp_path, "--audit", audit))
    assert run.code == 0, run
    assert "PURPOSELIMIT_PSEUDONYM_KEY is not set" in run.err
    monkeypatch.setenv("PURPOSELIMIT_PSEUDONYM_KEY", "test-key-of-16-bytes")
    (tmp_path / "usable.csv").unlink()
    again = cli(*sample_filter(tmp_path, "--audit", audit))
    assert again.code == 0, again
    assert "PSEUDONYM" not in again.err


@pytest.mark.parametrize("where", ["folder", "missing-folder"])
def test_filter_audit_destination_is_checked_before_the_run(
    cli: Any, tmp_path: Path, audit_key: str, where: str
) -> None:
    """--audit naming a folder, or a file in a folder that does not exist, is bad input
    (exit 1) reported before the lead file is read: nothing is written."""
    out = tmp_path / "out"
    out.mkdir()
    audit = out if where == "folder" else tmp_path / "missing" / "audit.jsonl"
    run = cli(*sample_filter(out, "--audit", audit))
    assert run.code == 1, run
    assert str(audit) in run.err
    assert list(out.iterdir()) == []
    assert not (tmp_path / "missing").exists()
