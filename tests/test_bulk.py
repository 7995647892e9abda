"""The bulk enforcement point: lead tables filtered to the rows and columns usable for a purpose."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purposelimit._audit import pseudonym
from purposelimit._bulk import (
    INVALID_ROW,
    LeadFilter,
    LeadMapping,
    Pseudonymiser,
    _Progress,
    filter_csv,
    filter_leads,
    load_mapping,
    mapping_from_dict,
    neutralise_cell,
    normalise_email,
    retention_sweep,
)
from purposelimit._engine import Engine
from purposelimit._errors import ConfigurationError
from purposelimit._loader import loads_register
from purposelimit._model import (
    Authorisation,
    Collection,
    CollectionTag,
    Consent,
    Evidence,
    Objection,
)
from purposelimit._protocol import InputError
from purposelimit._register import Register

AT = datetime(2026, 3, 1, tzinfo=UTC)

REGISTER = """
[register]
controller = "Test SAS"
version = "t-1"

[[categories]]
id = "identity"
[[categories]]
id = "identity.name"
[[categories]]
id = "identity.internal_id"
[[categories]]
id = "contact"
[[categories]]
id = "contact.email"
[[categories]]
id = "contact.phone"
[[categories]]
id = "professional"
[[categories]]
id = "special"
sensitive = true
[[categories]]
id = "special.health"

[[purposes]]
id = "prospection.email"
label = "E-mail prospection"
description = "E-mails about our offers"
legal_basis = "legitimate-interests"
categories = ["identity", "contact.email", "professional"]
direct_marketing = true
retention = { duration = "P3Y", from = "last-contact" }

[[purposes]]
id = "prospection.sms"
label = "SMS prospection"
description = "Text messages about our offers"
legal_basis = "consent"
categories = ["identity", "contact.phone"]
direct_marketing = true
retention = { duration = "P3Y", from = "last-contact" }

[[purposes]]
id = "client.contract"
label = "Contracts"
description = "Performing the contract"
legal_basis = "contract"
categories = ["identity", "contact"]
retention = { duration = "P1Y", from = "end-of-contract" }

[[purposes]]
id = "hr.recruitment"
label = "Recruitment"
description = "Assessing candidates"
legal_basis = "contract"
categories = ["identity", "contact"]
retention = { duration = "P3M", from = "last-contact" }

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

[[compatibility]]
id = "recruitment-to-prospection"
from = "hr.recruitment"
to = "prospection"
verdict = "prohibited"
source = "test"
"""


@pytest.fixture(scope="module")
def register() -> Register:
    return loads_register(REGISTER, source="test-register.toml")


def mapping(**changes: Any) -> LeadMapping:
    base: dict[str, Any] = {
        "subject": {"column": "email", "email": True},
        "collection": {
            "purpose_column": "purpose",
            "collected_at_column": "created",
            "last_contact_at_column": "last_contact",
        },
        "columns": {
            "id": "identity.internal_id",
            "name": "identity.name",
            "email": "contact.email",
            "phone": "contact.phone",
            "purpose": "professional",
            "created": "professional",
            "last_contact": "professional",
        },
    }
    for key, value in changes.items():
        base[key] = value
    return mapping_from_dict(base, file="mapping.toml")


HEADER = ["id", "name", "email", "phone", "purpose", "created", "last_contact"]


def row(
    email: str,
    purpose: str = "prospection.email",
    created: str = "2025-06-01",
    last: str = "",
    *,
    rid: str = "1",
    name: str = "Jane",
    phone: str = "+33 1",
) -> dict[str, str]:
    return dict(zip(HEADER, [rid, name, email, phone, purpose, created, last], strict=True))


def run(
    register: Register,
    rows: list[dict[str, str]],
    purpose: str = "prospection.email",
    **kwargs: Any,
) -> list[Any]:
    return list(
        filter_leads(
            rows,
            register=register,
            purpose=purpose,
            mapping=kwargs.pop("m", mapping()),
            at=AT,
            **kwargs,
        )
    )


# --------------------------------------------------------------------------- rows and columns


def test_rows_are_kept_or_excluded_with_the_engine_reason(register: Register) -> None:
    """Each row gets the engine's record-level reason; kept rows carry only the usable cells."""
    results = run(
        register,
        [
            row("a@x.example"),
            row("b@x.example", purpose="client.contract"),
            row("c@x.example", purpose="hr.recruitment"),
            row("d@x.example", created="2022-01-01"),
            row("e@x.example", purpose="marketing.unknown"),
        ],
    )
    assert [(r.line, r.kept, r.reason) for r in results] == [
        (1, True, "same-purpose"),
        (2, True, "compatible"),
        (3, False, "prohibited"),
        (4, False, "retention-expired"),
        (5, False, "unknown-purpose"),
    ]
    assert results[2].rule == "compatibility:recruitment-to-prospection"
    assert results[3].rule == "retention:prospection.email"
    assert results[0].values is not None
    assert "phone" not in results[0].values  # contact.phone is excessive for prospection.email
    assert results[0].values["email"] == "a@x.example"
    assert all(r.values is None for r in results[2:])


def test_excessive_columns_are_dropped_from_every_row(register: Register) -> None:
    """A column whose category the purpose may not use is dropped and explained (art. 5(1)(c))."""
    lead_filter = LeadFilter(register, "prospection.email", mapping(), HEADER, at=AT)
    phone = next(c for c in lead_filter.columns if c.name == "phone")
    assert (phone.kept, phone.status, phone.rule) == (
        False,
        "excessive",
        "purpose:prospection.email",
    )
    assert "minimisation" in phone.explanation
    assert lead_filter.output_header == [
        "id",
        "name",
        "email",
        "purpose",
        "created",
        "last_contact",
    ]


def test_sensitive_column_is_excessive(register: Register) -> None:
    """A sensitive category no purpose lists among its sensitive categories is dropped."""
    m = mapping(columns={**mapping().columns, "health": "special.health"})
    lead_filter = LeadFilter(register, "prospection.email", m, [*HEADER, "health"], at=AT)
    health = next(c for c in lead_filter.columns if c.name == "health")
    assert health.status == "excessive"
    assert "sensitive" in health.explanation


def test_not_personal_columns_pass_with_their_reason(register: Register) -> None:
    """A column declared not personal data is kept as is, with the mapping's reason."""
    m = mapping(not_personal={"size": "head-count of the company"})
    results = run(register, [{**row("a@x.example"), "size": "45"}], m=m)
    assert results[0].values is not None
    assert results[0].values["size"] == "45"


def test_unmapped_columns_are_an_error_unless_dropped(register: Register) -> None:
    """Nothing passes silently: an unmapped column refuses the file, or --drop-unmapped drops it."""
    with pytest.raises(InputError, match=r"1 column of leads is not in the mapping: 'notes'"):
        LeadFilter(register, "prospection.email", mapping(), [*HEADER, "notes"], at=AT)
    lead_filter = LeadFilter(
        register, "prospection.email", mapping(), [*HEADER, "notes"], at=AT, drop_unmapped=True
    )
    notes = lead_filter.columns[-1]
    assert (notes.kept, notes.status) == (False, "unmapped")


@pytest.mark.parametrize(
    ("cells", "detail"),
    [
        ({"email": "  "}, "column 'email': empty subject"),
        ({"purpose": " "}, "column 'purpose': empty collection purpose"),
        ({"created": ""}, "column 'created': empty (a date is required)"),
        ({"created": "2025-06-01T10:00:00"}, "column 'created': a date-time needs an offset"),
        ({"created": "01/06/2025"}, "column 'created': not an ISO-8601 date"),
        ({"created": "2027-01-01"}, "column 'created': dated after the decision instant"),
        (
            {"last_contact": "2026-03-01T00:00:01Z"},
            "column 'last_contact': dated after the decision instant",
        ),
    ],
)
def test_invalid_rows(register: Register, cells: dict[str, str], detail: str) -> None:
    """Empty subject or purpose, unparseable, offset-less or future dates make an invalid row."""
    (result,) = run(register, [{**row("a@x.example"), **cells}])
    assert (result.kept, result.reason, result.rule) == (False, INVALID_ROW, "row")
    assert result.detail is not None
    assert result.detail.startswith(detail)


def test_ragged_dict_rows_are_invalid(register: Register) -> None:
    """A dict with other keys than the first row's is a ragged, invalid row."""
    first = row("a@x.example")
    other = {k: v for k, v in row("b@x.example").items() if k != "phone"}
    results = run(register, [first, other, {**first, "extra": "1"}])
    assert [r.reason for r in results] == ["same-purpose", INVALID_ROW, INVALID_ROW]
    assert results[1].detail is not None
    assert results[1].detail.startswith("ragged row")


def test_duplicates_are_decided_per_row_and_flagged(register: Register) -> None:
    """A subject on two rows is decided on each row and the second names the first."""
    results = run(
        register,
        [row("A@x.example"), row("b@x.example"), row(" a@X.example ", created="2020-01-01")],
    )
    assert [r.reason for r in results] == ["same-purpose", "same-purpose", "retention-expired"]
    assert results[2].duplicate_of == 1
    assert results[0].duplicate_of is None


def test_email_subjects_are_normalised_everywhere(register: Register) -> None:
    """E-mail subjects match consents, objections and authorisations trimmed and lower-cased."""
    objection = Objection(subject="  BOB@X.example", at=datetime(2025, 1, 1, tzinfo=UTC))
    results = run(
        register,
        [row("bob@x.example"), row("Bob@X.EXAMPLE "), row("carol@x.example")],
        objections=[objection],
    )
    assert [r.reason for r in results] == ["objection", "objection", "same-purpose"]


def test_cached_decisions_never_leak_between_subjects(register: Register) -> None:
    """Rows with the same dates but a subject with events are decided on their own."""
    consent = Consent(
        subject="c@x.example",
        purposes=("prospection.sms",),
        given_at=datetime(2025, 7, 1, tzinfo=UTC),
        evidence=Evidence(mechanism="double-opt-in"),
    )
    m = mapping(columns={**mapping().columns, "phone": "contact.phone", "email": "identity"})
    rows = [row("a@x.example"), row("c@x.example"), row("d@x.example")]
    results = run(register, rows, purpose="prospection.sms", m=m, consents=[consent])
    assert [r.reason for r in results] == ["consent-missing", "consent", "consent-missing"]


def test_subject_specific_authorisation(register: Register) -> None:
    """An authorisation naming subjects lifts a prohibition for them only."""
    auth = Authorisation(
        id="order-1",
        from_=("hr.recruitment",),
        to="prospection.email",
        reference="Order 1",
        valid_from=datetime(2025, 1, 1, tzinfo=UTC),
        subjects=("A@x.example",),
    )
    rows = [
        row("a@x.example", purpose="hr.recruitment"),
        row("b@x.example", purpose="hr.recruitment"),
    ]
    results = run(register, rows, authorisations=[auth])
    assert [r.reason for r in results] == ["authorisation", "prohibited"]


def test_category_restricted_authorisation_judges_every_column(register: Register) -> None:
    """An authorisation for some categories leaves the row out when another column is denied."""
    auth = Authorisation(
        id="order-2",
        from_=("hr.recruitment",),
        to="prospection.email",
        reference="Order 2",
        valid_from=datetime(2025, 1, 1, tzinfo=UTC),
        categories=("identity.name",),
    )
    results = run(register, [row("a@x.example", purpose="hr.recruitment")], authorisations=[auth])
    assert results[0].reason == "prohibited"
    m = mapping(
        columns={"name": "identity.name"}, not_personal={c: "test" for c in HEADER if c != "name"}
    )
    only_name = run(
        register, [row("a@x.example", purpose="hr.recruitment")], authorisations=[auth], m=m
    )
    assert only_name[0].reason == "authorisation"


def test_whole_file_collection_values(register: Register) -> None:
    """The collection purpose and instant can be given for the whole file instead of columns."""
    m = mapping(collection={"purpose": "client.contract", "collected_at": "2025-01-10"})
    results = run(register, [row("a@x.example", purpose="ignored", created="not a date")], m=m)
    assert results[0].reason == "compatible"
    override = run(register, [row("a@x.example")], m=m, collected_for="hr.recruitment")
    assert override[0].reason == "prohibited"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"purpose": "prospection"}, "purpose 'prospection' is a purpose group, not a purpose"),
        ({"purpose": "prospection.emial"}, "did you mean 'prospection.email'?"),
        (
            {"collected_for": "client.contract"},
            "--collected-for conflicts with the mapping's collection.purpose_column",
        ),
        ({"collected_at": AT}, "--collected-at conflicts"),
    ],
)
def test_configuration_errors(register: Register, kwargs: dict[str, Any], message: str) -> None:
    """Unknown or group purposes and conflicting whole-file values are refused before any row."""
    purpose = kwargs.pop("purpose", "prospection.email")
    with pytest.raises(
        ConfigurationError,
        match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?"),
    ):
        LeadFilter(register, purpose, mapping(), HEADER, at=AT, **kwargs)


def test_future_whole_file_instant_is_refused(register: Register) -> None:
    """A whole-file collection instant after the decision instant is refused."""
    m = mapping(collection={"purpose": "client.contract", "collected_at": "2027-01-01"})
    with pytest.raises(ConfigurationError, match="after the decision instant"):
        LeadFilter(register, "prospection.email", m, HEADER, at=AT)


def test_mapping_that_does_not_fit_the_header(register: Register) -> None:
    """A mapping naming a missing column or an undeclared category is refused (did-you-mean)."""
    with pytest.raises(
        InputError, match=r"subject.column: leads has no column 'email' \(did you mean 'e-mail'\?\)"
    ):
        LeadFilter(
            register,
            "prospection.email",
            mapping(),
            ["e-mail" if h == "email" else h for h in HEADER],
            at=AT,
        )
    bad = mapping(columns={**mapping().columns, "name": "identity.nme"})
    with pytest.raises(
        InputError, match=r"'identity.nme' is not a data category declared .* 'identity.name'"
    ):
        LeadFilter(register, "prospection.email", bad, HEADER, at=AT)
    with pytest.raises(InputError, match="the header repeats the column name"):
        LeadFilter(register, "prospection.email", mapping(), [*HEADER, "id"], at=AT)


# --------------------------------------------------------------------------- the mapping file


def test_mapping_file_round_trip(tmp_path: Path) -> None:
    """A mapping file loads every key of the documented format."""
    path = tmp_path / "m.toml"
    path.write_text(
        '[subject]\ncolumn = "Email"\nemail = true\npseudonymise = false\n\n'
        '[collection]\npurpose = "client.contract"\ncollected_at = "2025-01-10T09:00:00+01:00"\n'
        'last_contact_at_column = "Last"\ncontract_ended_at_column = "End"\nsource = "shop"\n\n'
        '[columns]\nEmail = "contact.email"\n"First Name" = "identity.name"\n\n'
        '[not_personal]\nSize = "company head-count"\n',
        encoding="utf-8",
    )
    m = load_mapping(path)
    assert (m.subject_column, m.email, m.uses_pseudonyms) == ("Email", True, False)
    assert m.collected_at == datetime(2025, 1, 10, 8, tzinfo=UTC)
    assert m.columns == {"Email": "contact.email", "First Name": "identity.name"}
    assert m.not_personal == {"Size": "company head-count"}
    assert m.where("columns.First Name") == 15


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[subject]\ncolumn = "e"\n[colums]\n',
            "m.toml:3: unknown key 'colums' (did you mean 'columns'?)",
        ),
        (
            '[subject]\ncolumn = "e"\nemial = true\n',
            "m.toml:3: subject.emial: unknown key 'emial' (did you mean 'email'?)",
        ),
        (
            "[subject]\nemail = true\n",
            "m.toml:1: subject.column: missing: name the column holding the data subject's id",
        ),
        (
            '[subject]\ncolumn = "e"\nemail = "yes"\n',
            "m.toml:3: subject.email: expected true or false, found a string",
        ),
        (
            '[subject]\ncolumn = "e"\n[collection]\npurpose = "a"\npurpose_column = "p"\n',
            "m.toml:5: collection.purpose_column: give either purpose (whole file) or",
        ),
        (
            '[subject]\ncolumn = "e"\n[collection]\ncollected_at = "2025-01-10T10:00"\n',
            "m.toml:4: collection.collected_at: a date-time needs an offset",
        ),
        (
            '[subject]\ncolumn = "e"\n[columns]\ne = "Contact.Email"\n',
            "m.toml:4: columns.e: 'Contact.Email' is not a valid id: ids are lower-case",
        ),
        (
            '[subject]\ncolumn = "e"\n[columns]\ne = 3\n',
            "m.toml:4: columns.e: expected a data category id, found an integer",
        ),
        (
            '[subject]\ncolumn = "e"\n[not_personal]\ne = ""\n',
            "m.toml:4: not_personal.e: expected a non-empty string",
        ),
        (
            '[subject]\ncolumn = "e"\n[columns]\ne = "contact"\n[not_personal]\ne = "x"\n',
            "m.toml:6: not_personal.e: the column is also given a data category",
        ),
        ('[subject\ncolumn = "e"\n', "m.toml:1: not TOML: "),
    ],
)
def test_mapping_file_errors(tmp_path: Path, text: str, message: str) -> None:
    """Every mapping problem is one line naming the file, the line and the key."""
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_mapping(path)
    assert str(info.value).replace(str(tmp_path) + "/", "").startswith(message)


# --------------------------------------------------------------------------- pseudonyms and cells


def test_pseudonyms_are_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pseudonyms are the audit's keyed ones: environment key, else a random per-run key."""
    key = "a-secret-key-of-32-characters..."
    monkeypatch.setenv("PURPOSELIMIT_PSEUDONYM_KEY", key)
    a, b = Pseudonymiser(), Pseudonymiser()
    assert a.key_source == "environment"
    assert a("jane@example.com") == b("jane@example.com")
    assert a("jane@example.com") == pseudonym("jane@example.com", key.encode())
    assert a("jane@example.com").startswith("ps-")
    assert len(a("jane@example.com")) == 35
    assert "jane" not in a("jane@example.com")
    monkeypatch.delenv("PURPOSELIMIT_PSEUDONYM_KEY")
    c, d = Pseudonymiser(), Pseudonymiser()
    assert c.key_source == "random per run"
    assert c("jane@example.com") != d("jane@example.com")
    assert Pseudonymiser(key.encode())("jane@example.com") == a("jane@example.com")
    assert key not in repr(a)
    monkeypatch.setenv("PURPOSELIMIT_PSEUDONYM_KEY", "short")
    with pytest.raises(ConfigurationError, match="KEY must hold at least 16"):
        Pseudonymiser()


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+33 1 23", "'+33 1 23"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("Jane", "Jane"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_neutralise_cell(cell: str, expected: str) -> None:
    """Cells a spreadsheet would run as formulas get a leading quote; others are unchanged."""
    assert neutralise_cell(cell) == expected


def test_normalise_email() -> None:
    """E-mail subjects compare trimmed and lower-cased."""
    assert normalise_email("  Jane.Doe@Example.COM\t") == "jane.doe@example.com"


def test_progress_is_throttled_carriage_return_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress line rewrites itself with CR, at most 4 times a second, then ends the line."""
    stream = io.StringIO()
    clock = iter([100.0, 100.1, 100.5])
    monkeypatch.setattr("purposelimit._bulk.time.monotonic", lambda: next(clock))
    bar = _Progress(stream, 1000, "purposelimit filter")
    bar.update(100, 4096)
    bar.update(200, 8192)  # 0.1 s later: skipped
    bar.update(500, 12288)
    bar.finish(20000)
    assert stream.getvalue() == (
        "\rpurposelimit filter:  10%  4,096 rows\rpurposelimit filter:  50%  12,288 rows"
        "\rpurposelimit filter: 100%  20,000 rows\n"
    )


# --------------------------------------------------------------------------- CSV


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_filter_csv_streams_and_reports(register: Register, tmp_path: Path) -> None:
    """filter_csv writes the usable rows and columns, and a JSON report listing each exclusion."""
    src = write_csv(
        tmp_path / "leads.csv",
        [
            ["1", "Jane", "jane@x.example", "+33", "prospection.email", "2025-06-01", ""],
            ["2", "Bob", "bob@x.example", "+33", "hr.recruitment", "2025-06-01", ""],
            ["3", "Jane", "JANE@x.example", "+33", "prospection.email", "2025-07-01", ""],
        ],
    )
    summary = filter_csv(
        src,
        tmp_path / "out.csv",
        register=register,
        purpose="prospection.email",
        mapping=mapping(),
        at=AT,
        report=tmp_path / "r.json",
    )
    assert (summary.rows_read, summary.rows_kept, summary.rows_excluded) == (3, 2, 1)
    assert summary.reasons == {"same-purpose": 2, "prohibited": 1}
    assert (summary.duplicate_rows, summary.duplicate_subjects) == (1, 1)
    out = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert out[0] == "id,name,email,purpose,created,last_contact"
    assert len(out) == 3
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["excluded"][0]["line"] == 3
    assert report["excluded"][0]["reason"] == "prohibited"
    assert report["duplicates"][0]["first_line"] == 2
    assert "bob@x.example" not in (tmp_path / "r.json").read_text(encoding="utf-8")


def test_cache_is_bounded(
    register: Register, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision and date caches are cleared past their bound: memory does not grow with rows."""
    monkeypatch.setattr("purposelimit._bulk.CACHE_LIMIT", 5)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [
        [
            str(i),
            "N",
            f"s{i}@x.example",
            "",
            "prospection.email",
            (start + timedelta(days=i)).date().isoformat(),
            "",
        ]
        for i in range(40)
    ]
    src = write_csv(tmp_path / "leads.csv", rows)
    seen: list[int] = []
    original = LeadFilter._miss

    def spy(self: LeadFilter, key: Any, subject: str) -> Any:
        seen.append(len(self._cache))
        return original(self, key, subject)

    monkeypatch.setattr(LeadFilter, "_miss", spy)
    summary = filter_csv(
        src,
        tmp_path / "o.csv",
        register=register,
        purpose="prospection.email",
        mapping=mapping(),
        at=AT,
    )
    assert summary.rows_kept == 40
    assert len(seen) == 40
    assert max(seen) <= 5


def test_retention_sweep_dates_each_expiry(register: Register, tmp_path: Path) -> None:
    """The sweep lists rows past retention with the instant each expired (P3Y from last contact)."""
    src = write_csv(
        tmp_path / "leads.csv",
        [
            ["1", "A", "a@x.example", "", "prospection.email", "2021-01-10", ""],
            ["2", "B", "b@x.example", "", "prospection.email", "2021-01-10", "2022-05-04"],
            ["3", "C", "c@x.example", "", "prospection.email", "2025-01-10", ""],
            ["4", "D", "", "", "prospection.email", "2021-01-10", ""],
        ],
    )
    skipped: list[tuple[int, str]] = []
    rows = list(
        retention_sweep(
            src,
            register=register,
            mapping=mapping(),
            at=AT,
            skipped=skipped,
            pseudonymiser=Pseudonymiser(b"key-of-16-bytes!"),
        )
    )
    assert [(r.line, r.purpose, r.expired_at) for r in rows] == [
        (2, "prospection.email", datetime(2024, 1, 10, tzinfo=UTC)),
        (3, "prospection.email", datetime(2025, 5, 4, tzinfo=UTC)),
    ]
    assert rows[0].rule == "retention:prospection.email"
    assert rows[0].subject == Pseudonymiser(b"key-of-16-bytes!")("a@x.example")
    assert skipped == [(5, "column 'email': empty subject")]


def test_retention_sweep_for_other_purposes(register: Register, tmp_path: Path) -> None:
    """With purposes given, each row is checked against each; only expired pairs are listed."""
    src = write_csv(
        tmp_path / "leads.csv",
        [
            ["1", "A", "a@x.example", "", "client.contract", "2021-01-10", ""],
        ],
    )
    rows = list(
        retention_sweep(
            src,
            register=register,
            mapping=mapping(),
            at=AT,
            purposes=["prospection.email", "client.contract"],
        )
    )
    assert [(r.purpose, r.expired_at) for r in rows] == [
        ("prospection.email", datetime(2024, 1, 10, tzinfo=UTC))
    ]


# --------------------------------------------------------------------------- agreement


_DAYS = [(AT + timedelta(days=d)).date().isoformat() for d in range(-2200, 31, 150)]


def _dates() -> st.SearchStrategy[str]:
    """Few distinct dates on both sides of every retention end, so rows share contexts."""
    return st.one_of(
        st.just(""), st.sampled_from(_DAYS), st.sampled_from(["2025-06-01T10:00", "garbage"])
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a@x.example", "b@x.example", "c@x.example", "d@x.example", ""]),
            st.sampled_from(
                [
                    "prospection.email",
                    "client.contract",
                    "hr.recruitment",
                    "prospection.sms",
                    "nope",
                ]
            ),
            _dates(),
            _dates(),
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["prospection.email", "prospection.sms", "client.contract"]),
)
def test_filter_agrees_with_the_engine(
    register: Register, rows: list[tuple[str, str, str, str]], purpose: str
) -> None:
    """Every valid row gets the decision Engine.decide gives its record (DESIGN §5)."""
    objection = Objection(subject="b@x.example", at=datetime(2025, 1, 1, tzinfo=UTC))
    consent = Consent(
        subject="c@x.example",
        purposes=("prospection",),
        given_at=datetime(2024, 6, 1, tzinfo=UTC),
        evidence=Evidence(mechanism="button"),
    )
    dicts = [row(s, p, c, last) for s, p, c, last in rows]
    results = list(
        filter_leads(
            dicts,
            register=register,
            purpose=purpose,
            mapping=mapping(),
            at=AT,
            consents=[consent],
            objections=[objection],
        )
    )
    engine = Engine(register)
    lead_filter = LeadFilter(register, purpose, mapping(), HEADER, at=AT)
    categories = [c.category for c in lead_filter.columns if c.status == "used" and c.category]
    for (subject, p0, created, last), result in zip(rows, results, strict=True):
        if result.reason == INVALID_ROW:
            assert (
                not subject
                or not created
                or created in ("2025-06-01T10:00", "garbage")
                or last in ("2025-06-01T10:00", "garbage")
                or created > "2026-03-01"
                or last > "2026-03-01"
            )
            continue
        tag = CollectionTag(
            subject=subject,
            collection=Collection(purpose=p0) if p0 != "nope" else Collection(purpose="nope"),
            collected_at=datetime.fromisoformat(created).replace(tzinfo=UTC),
            last_contact_at=datetime.fromisoformat(last).replace(tzinfo=UTC) if last else None,
        )
        expected = engine.decide(
            tag, categories, purpose, AT, consents=[consent], objections=[objection]
        )
        assert (result.kept, result.reason, result.rule) == (
            expected.allowed,
            expected.reason.value,
            expected.rule,
        )


def _iter_lines(text: str) -> Iterator[str]:
    yield from text.splitlines()


def test_monotone_shortcut_matches_the_engine_on_a_threshold(register: Register) -> None:
    """Rows sharing a collection date, with last contacts on both sides of the retention end
    and in any order, get exactly the engine's decisions."""
    engine = Engine(register)
    lasts = [
        (AT - timedelta(days=d)).date().isoformat()
        for d in (10, 1200, 1094, 1096, 1095, 5, 2000, 1097)
    ]
    rows = [row(f"s{i}@x.example", created="2022-01-01", last=last) for i, last in enumerate(lasts)]
    results = run(register, rows)
    for last, result in zip(lasts, results, strict=True):
        tag = CollectionTag(
            subject="s",
            collection=Collection(purpose="prospection.email"),
            collected_at=datetime(2022, 1, 1, tzinfo=UTC),
            last_contact_at=datetime.fromisoformat(last).replace(tzinfo=UTC),
        )
        expected = engine.decide(tag, ["identity.internal_id"], "prospection.email", AT)
        assert (result.reason, result.rule) == (expected.reason.value, expected.rule)
    assert [r.kept for r in results] == [True, False, True, False, True, True, False, False]


def test_monotone_shortcut_switches_off_when_contradicted(
    register: Register, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the engine ever gave two different in-retention answers in one context, rows are
    then decided one by one by the engine."""
    lead_filter = LeadFilter(register, "prospection.email", mapping(), HEADER, at=AT)
    answers = iter(["same-purpose", "compatible", "same-purpose"])
    original = lead_filter._ask

    def fake(tag: Any, subject: str, events: Any) -> Any:
        original(tag, subject, events)
        return lead_filter._intern(True, next(answers), "purpose:x", None, "test")

    monkeypatch.setattr(lead_filter, "_ask", fake)
    first = lead_filter._miss(("prospection.email", "2025-06-01", "2025-08-01"), "a")
    second = lead_filter._miss(("prospection.email", "2025-06-01", "2025-07-01"), "b")
    assert (first.reason, second.reason) == ("same-purpose", "compatible")
    assert lead_filter._monotone is False
    third = lead_filter._miss(("prospection.email", "2025-06-01", "2025-09-01"), "c")
    assert third.reason == "same-purpose"  # asked the engine, not reused
