"""The JSON decision protocol's shapes (DESIGN §6) and the event files of the command line."""

from __future__ import annotations

import contextlib
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purposelimit._engine import Engine
from purposelimit._model import ConsentAnswer, Mechanism, Reason
from purposelimit._presets import load_preset
from purposelimit._protocol import (
    SUPPRESSION_AT,
    InputError,
    ProtocolError,
    authorisation_from_json,
    consent_from_json,
    decide_request,
    load_authorisations,
    load_consents,
    load_objections,
    load_suppression,
    objection_from_json,
    parse_request,
    parse_request_line,
    pick_delimiter,
)
from purposelimit._store import InMemoryStore

SECRET = "jane.secret@example.com"


def request(**changes: Any) -> dict[str, Any]:
    """A valid request (DESIGN §6's example), with *changes* applied at the top level."""
    base: dict[str, Any] = {
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
        "consents": [],
        "authorisations": [],
        "objections": [],
    }
    base.update(changes)
    return base


def record(**changes: Any) -> dict[str, Any]:
    base = dict(request()["record"])
    base.update(changes)
    return base


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_preset("cnil-commercial"))


# --------------------------------------------------------------------------- requests


def test_design_example_is_decided_as_design_says(engine: Engine) -> None:
    """DESIGN §6's example request gets exactly DESIGN §6's example decision."""
    decision = decide_request(engine, parse_request(request()))
    assert decision.to_dict() == {
        "allowed": False,
        "reason": "consent-missing",
        "rule": "purpose:prospection.email_b2c",
        "purpose": "prospection.email_b2c",
        "collected_for": "hr.recruitment",
        "categories": {
            "identity.name": {"allowed": False, "reason": "consent-missing"},
            "contact.email": {"allowed": False, "reason": "consent-missing"},
        },
        "explanation": "prospection.email_b2c rests on consent and the data subject has given none",
    }


def test_optional_fields_may_be_left_out() -> None:
    """consents, authorisations, objections, at and the record's optional dates may be absent."""
    minimal = {
        "purpose": "prospection.postal",
        "record": {
            "subject": "s",
            "collected_for": "client.contract",
            "collected_at": "2025-01-10",
        },
        "categories": ["identity.name"],
    }
    parsed = parse_request(minimal)
    assert parsed.at is None
    assert parsed.last_contact_at is None
    assert parsed.collected_at == datetime(2025, 1, 10, tzinfo=UTC)
    assert parsed.consents == ()
    assert parsed.objections == ()
    assert parsed.authorisations == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "a request must be a JSON object, not an array"),
        ({k: v for k, v in request().items() if k != "purpose"}, "purpose: missing"),
        (request(record=None), "record: record must be a JSON object, not null"),
        (
            request(record={k: v for k, v in record().items() if k != "subject"}),
            "record.subject: missing",
        ),
        (request(record=record(subject="")), "record.subject: must not be empty"),
        (request(record=record(subject=42)), "record.subject: expected a string, found an integer"),
        (
            request(record=record(collected_at="2025-01-10T09:00:00")),
            "record.collected_at: a date-time needs an offset",
        ),
        (
            request(record=record(collected_at="10/01/2025")),
            "record.collected_at: not an ISO-8601 date",
        ),
        (
            request(record=record(last_contact_at=20250110)),
            "record.last_contact_at: expected an ISO-8601 date-time string",
        ),
        (request(categories=[]), "categories: must list at least one data category"),
        (
            request(categories="identity.name"),
            "categories: expected a list of strings, found a string",
        ),
        (
            request(categories=["identity.name", 3]),
            "categories[1]: expected a string, found an integer",
        ),
        (request(at="2026-03-01T10:00"), "at: a date-time needs an offset"),
        (request(objection=[]), "objection: unknown key 'objection' (did you mean 'objections'?)"),
        (
            request(record=record(colected_at="2025-01-10")),
            "record.colected_at: unknown key 'colected_at' (did you mean 'collected_at'?)",
        ),
        (request(consents={}), "consents: expected a list of objects, found a table"),
        (
            request(
                consents=[
                    {
                        "subject": "s",
                        "purposes": ["prospection"],
                        "given_at": "2025-06-01",
                        "withdrawn_at": "2025-05-01",
                    }
                ]
            ),
            "consents[0].withdrawn_at: is before given_at",
        ),
        (
            request(consents=[{"subject": "s", "purposes": [], "given_at": "2025-06-01"}]),
            "consents[0].purposes: must not be an empty list",
        ),
        (
            request(objections=[{"subject": "s", "at": "2025-06-01"}]),
            "objections[0].scope: missing",
        ),
        (
            request(objections=[{"subject": "s", "at": "2025-06-01", "scope": "profiling"}]),
            "objections[0].scope: expected one of direct-marketing",
        ),
        (
            request(
                authorisations=[
                    {"id": "a", "from": ["hr"], "to": "prospection", "valid_from": "2025-01-01"}
                ]
            ),
            "authorisations[0].reference: missing",
        ),
    ],
)
def test_unreadable_requests_name_the_field(value: object, message: str) -> None:
    """A request that cannot be read is refused with a message starting with the field's path."""
    with pytest.raises(ProtocolError) as info:
        parse_request(value)
    assert str(info.value).startswith(message)


def test_messages_never_show_the_value() -> None:
    """An error about a field names the field and its type, never its value (a subject's e-mail)."""
    bad_dates = request(record=record(subject=SECRET, collected_at=SECRET))
    with pytest.raises(ProtocolError) as info:
        parse_request(bad_dates)
    assert SECRET not in str(info.value)
    bad_consent = request(
        consents=[{"subject": SECRET, "purposes": [SECRET], "given_at": "2025-01-01"}]
    )
    with pytest.raises(ProtocolError) as info2:
        parse_request(bad_consent)
    assert SECRET not in str(info2.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON: Expecting value at column 1"),
        ('{"purpose": "a", "purpose": "b"}', "purpose: appears twice in one JSON object"),
        ("[" * 100_000, "not JSON this program can read: nested too deeply"),
        ("42", "a request must be a JSON object, not an integer"),
    ],
)
def test_lines_that_are_not_a_json_object(line: str, message: str) -> None:
    """Not JSON, a duplicate key, absurd nesting or a scalar give one clear message."""
    with pytest.raises(ProtocolError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_request_line(line)


def test_unknown_purposes_and_categories_are_decisions_whatever_the_spelling(
    engine: Engine,
) -> None:
    """Undeclared ids, even outside the id syntax, are decided unknown-purpose/unknown-category."""
    bad_collection = parse_request(request(record=record(collected_for="Not An Id!")))
    assert decide_request(engine, bad_collection).reason is Reason.UNKNOWN_PURPOSE
    bad_purpose = parse_request(request(purpose="prospection.carrier_pigeon"))
    assert decide_request(engine, bad_purpose).reason is Reason.UNKNOWN_PURPOSE
    bad_category = parse_request(
        request(
            purpose="prospection.postal",
            record=record(collected_for="client.contract"),
            categories=["identity.name", "Shoe Size"],
        )
    )
    decision = decide_request(engine, bad_category)
    assert decision.reason is Reason.UNKNOWN_CATEGORY
    assert decision.categories[0].allowed


def test_null_purpose_is_no_purpose(engine: Engine) -> None:
    """``"purpose": null`` is a read with no purpose bound: denied ``no-purpose``."""
    decision = decide_request(engine, parse_request(request(purpose=None)))
    assert decision.reason is Reason.NO_PURPOSE
    assert not decision.allowed


def test_inline_events_count_for_that_request_only() -> None:
    """Inline consents add to the store for one request and are never written to it (§6)."""
    store = InMemoryStore()
    engine = Engine(load_preset("cnil-commercial"), store)
    consent = {
        "subject": "lead-42",
        "purposes": ["prospection.email_b2c"],
        "given_at": "2025-06-01",
        "evidence": {"mechanism": "double-opt-in"},
    }
    with_consent = decide_request(engine, parse_request(request(consents=[consent])))
    assert with_consent.allowed
    assert with_consent.reason is Reason.CONSENT
    assert store.version == 0
    without = decide_request(engine, parse_request(request()))
    assert without.reason is Reason.CONSENT_MISSING


def test_inline_objection_and_authorisation_are_applied() -> None:
    """An inline objection blocks direct marketing; an inline authorisation lifts a prohibition."""
    engine = Engine(load_preset("cnil-commercial"))
    postal = {"purpose": "prospection.postal", "record": record(collected_for="client.contract")}
    objection = {"subject": "lead-42", "at": "2025-06-01", "scope": "direct-marketing"}
    decision = decide_request(engine, parse_request(request(**postal, objections=[objection])))
    assert decision.reason is Reason.OBJECTION
    auth = {
        "id": "court-1",
        "from": ["hr.recruitment"],
        "to": "prospection.postal",
        "valid_from": "2025-01-01",
        "reference": "Court order 2025-17",
    }
    lifted = parse_request(
        request(purpose="prospection.postal", categories=["identity.name"], authorisations=[auth])
    )
    assert decide_request(engine, lifted).reason is Reason.AUTHORISATION


def test_at_defaults_to_the_given_instant(engine: Engine) -> None:
    """A request without ``at`` is decided at the caller's instant (``--at``), else now."""
    parsed = parse_request(
        {
            "purpose": "hr.recruitment",
            "record": record(collected_at="2025-01-10"),
            "categories": ["identity.name"],
        }
    )
    early = decide_request(engine, parsed, datetime(2025, 2, 1, tzinfo=UTC))
    late = decide_request(engine, parsed, datetime(2026, 2, 1, tzinfo=UTC))
    assert early.reason is Reason.SAME_PURPOSE
    assert late.reason is Reason.RETENTION_EXPIRED


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_json_value_is_decided_or_refused_cleanly(value: object) -> None:
    """Whatever JSON value comes in, parsing returns a request or raises ProtocolError only."""
    with contextlib.suppress(ProtocolError):
        parse_request(value)


# --------------------------------------------------------------------------- event shapes


def test_consent_shape_with_evidence_and_default_state() -> None:
    """A consent reads every field of §6; state defaults to given; the subject key normalises."""
    consent = consent_from_json(
        {
            "id": "c-1",
            "subject": " Jane@Example.COM ",
            "purposes": ["prospection", "newsletter.editorial"],
            "given_at": "2025-06-01T10:00:00+02:00",
            "expires_at": "2027-06-01",
            "evidence": {
                "mechanism": "double-opt-in",
                "collection_point": "form-7",
                "notice_version": "v3",
                "source": "own site",
                "channel": "web",
            },
        },
        subject_key=lambda s: s.strip().lower(),
    )
    assert consent.subject == "jane@example.com"
    assert consent.state is ConsentAnswer.GIVEN
    assert consent.evidence is not None
    assert consent.evidence.mechanism is Mechanism.DOUBLE_OPT_IN
    assert consent.id == "c-1"
    assert consent.expires_at == datetime(2027, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"subject": "s", "purposes": ["p"], "given_at": "2025-01-01", "state": "maybe"},
            "state: expected one of given, refused, not-asked",
        ),
        (
            {
                "subject": "s",
                "purposes": ["p"],
                "given_at": "2025-01-01",
                "evidence": {"mechanism": "wink"},
            },
            "evidence.mechanism: expected one of",
        ),
        (
            {"subject": "s", "purposes": ["p"], "given_at": "2025-01-01", "evidence": {"how": "x"}},
            "evidence.how: unknown key",
        ),
        (
            {"subject": "s", "purposes": ["Prospection"], "given_at": "2025-01-01"},
            "purposes[0]: not a purpose or category id",
        ),
        (
            {"subject": "s", "purposes": ["p"], "given_at": "2025-01-01", "id": " "},
            "id: must not be empty",
        ),
    ],
)
def test_consent_refusals(value: dict[str, Any], message: str) -> None:
    """Bad consent fields are refused with their path (here without a prefix)."""
    with pytest.raises(ProtocolError) as info:
        consent_from_json(value, "")
    assert str(info.value).startswith(message)


def test_authorisation_shape() -> None:
    """An authorisation reads every field of §6; a reversed validity window is refused."""
    auth = authorisation_from_json(
        {
            "id": "a-1",
            "from": ["hr.recruitment"],
            "to": "prospection",
            "categories": ["identity"],
            "subjects": ["A@X.example"],
            "valid_from": "2025-01-01",
            "valid_until": "2026-01-01",
            "reference": "CNIL decision 2025-1",
        },
        subject_key=str.lower,
    )
    assert auth.from_ == ("hr.recruitment",)
    assert auth.subjects == ("a@x.example",)
    assert auth.categories == ("identity",)
    with pytest.raises(ProtocolError, match=r"^valid_until: is before valid_from"):
        authorisation_from_json(
            {
                "id": "a",
                "from": ["x"],
                "to": "y",
                "valid_from": "2025-01-01",
                "valid_until": "2024-01-01",
                "reference": "r",
            },
            "",
        )


def test_objection_shape() -> None:
    """An objection needs subject, at and scope; it may be withdrawn, not before it was made."""
    objection = objection_from_json(
        {
            "subject": "s",
            "at": "2025-01-01",
            "scope": "direct-marketing",
            "withdrawn_at": "2025-02-01",
        }
    )
    assert objection.withdrawn_at == datetime(2025, 2, 1, tzinfo=UTC)
    with pytest.raises(ProtocolError, match="withdrawn_at: is before at"):
        objection_from_json(
            {
                "subject": "s",
                "at": "2025-03-01",
                "scope": "direct-marketing",
                "withdrawn_at": "2025-02-01",
            }
        )


def test_errors_pickle() -> None:
    """InputError and ProtocolError survive pickling with their attributes."""
    error = InputError("f.csv", "bad", line=3, column="given_at")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == "f.csv:3: column 'given_at': bad"
    assert (copy.file, copy.line, copy.column) == ("f.csv", 3, "given_at")
    assert str(pickle.loads(pickle.dumps(ProtocolError("x: y")))) == "x: y"


# --------------------------------------------------------------------------- files


def test_consents_from_a_json_array_with_default_ids(tmp_path: Path) -> None:
    """A JSON array of consents loads in order; a record without id is named file:line."""
    path = tmp_path / "consents.json"
    path.write_text(
        '[\n  {"id": "c-1", "subject": "a", "purposes": ["prospection"],\n'
        '   "given_at": "2025-01-01"},\n'
        '  {"subject": "b", "purposes": ["prospection"], "given_at": "2025-01-02"}\n]\n',
        encoding="utf-8",
    )
    consents = load_consents(path)
    assert [c.id for c in consents] == ["c-1", "consents.json:4"]


def test_consents_json_error_names_the_line(tmp_path: Path) -> None:
    """A bad item of a JSON array is reported with the line it starts on, and no value."""
    path = tmp_path / "consents.json"
    path.write_text(
        '[\n {"subject": "a", "purposes": ["p"], "given_at": "2025-01-01"},\n\n'
        f' {{"subject": "{SECRET}", "purposes": ["p"],\n  "given_at": "2025-01-01T10:00"}}\n]',
        encoding="utf-8",
    )
    with pytest.raises(InputError) as info:
        load_consents(path)
    assert str(info.value) == (
        f"{path}:4: given_at: a date-time needs an offset ('Z' or '+01:00'); "
        "a bare date (2025-01-10) means midnight UTC"
    )
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{"subject": "a"}', 1, "a JSON file of events must hold one array"),
        (
            '[{"subject": "a", "purposes": ["p"], "given_at": "2025-01-01"} {"x": 1}]',
            1,
            "not JSON: expected ',' or ']' after an item",
        ),
        ("[\n\n{oops}]", 3, "not JSON: Expecting property name"),
        ("[] []", 1, "not JSON: extra data after the array"),
    ],
)
def test_broken_json_files(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Broken JSON event files give one line naming the file and the line."""
    path = tmp_path / "events.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_consents(path)
    assert info.value.line == line
    assert info.value.message.startswith(message)


def test_consents_from_json_lines(tmp_path: Path) -> None:
    """JSON Lines files load one event per non-blank line; errors name the line."""
    path = tmp_path / "consents.jsonl"
    path.write_text(
        '{"subject": "a", "purposes": ["prospection"], "given_at": "2025-01-01"}\n\n'
        '{"subject": "b", "purposes": ["prospection"]}\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError) as info:
        load_consents(path)
    assert str(info.value) == f"{path}:3: given_at: missing (this field is required)"


def test_consents_from_csv(tmp_path: Path) -> None:
    """CSV consents: purposes split on | or ;, evidence columns, x- columns ignored."""
    path = tmp_path / "consents.csv"
    path.write_text(
        "id,subject,purposes,state,given_at,withdrawn_at,mechanism,collection_point,x-note\n"
        "c-1,A@Example.com,prospection.email_b2c|newsletter.editorial,,2025-01-01,,double-opt-in,form-3,hi\n"
        ',b@example.com,"prospection.postal; prospection.phone",refused,2025-01-02,,,,\n',
        encoding="utf-8",
    )
    first, second = load_consents(path, subject_key=str.lower)
    assert first.purposes == ("prospection.email_b2c", "newsletter.editorial")
    assert first.subject == "a@example.com"
    assert first.evidence is not None
    assert first.evidence.collection_point == "form-3"
    assert second.purposes == ("prospection.postal", "prospection.phone")
    assert second.state is ConsentAnswer.REFUSED
    assert second.id == "consents.csv:3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "subject,purpose,given_at\na,p,2025-01-01\n",
            "consents.csv:1: column 'purpose': unknown column 'purpose' (did you mean 'purposes'?)",
        ),
        (
            "subject,given_at\na,2025-01-01\n",
            "consents.csv:1: the header has no 'purposes' column (it is required)",
        ),
        (
            "subject,purposes,given_at\na,,2025-01-01\n",
            "consents.csv:2: column 'purposes': empty (this column is required)",
        ),
        (
            "subject,purposes,given_at\na,p,2025-01-01,extra\n",
            "consents.csv:2: ragged row: 4 fields, the header has 3",
        ),
        (
            f"subject,purposes,given_at\n{SECRET},p,yesterday\n",
            "consents.csv:2: column 'given_at': not an ISO-8601 date",
        ),
        (
            "subject,purposes,given_at,withdrawn_at\na,p,2025-02-01,2025-01-01\n",
            "consents.csv:2: column 'withdrawn_at': is before given_at",
        ),
    ],
)
def test_consents_csv_errors(tmp_path: Path, text: str, expected: str) -> None:
    """Each CSV problem is one line naming the file, the line and the column — never a value."""
    path = tmp_path / "consents.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_consents(path)
    assert str(info.value).replace(str(tmp_path) + "/", "").startswith(expected)
    assert SECRET not in str(info.value)


def test_cp1252_event_files_are_read(tmp_path: Path) -> None:
    """Event files in cp1252 are decoded as such (accented ids)."""
    path = tmp_path / "objections.csv"
    path.write_bytes("subject,at\nrené@exemple.fr,2025-01-01\n".encode("cp1252"))
    (objection,) = load_objections(path)
    assert objection.subject == "rené@exemple.fr"


def test_objections_csv_scope_defaults_and_json_requires_it(tmp_path: Path) -> None:
    """In CSV the scope column is optional; in JSON the §6 shape requires it."""
    csv_path = tmp_path / "objections.csv"
    csv_path.write_text("subject;at\nA@x.example;2025-01-01\n", encoding="utf-8")
    (objection,) = load_objections(csv_path, subject_key=str.lower)
    assert objection.subject == "a@x.example"
    assert objection.scope == "direct-marketing"
    assert objection.id == "objections.csv:2"
    json_path = tmp_path / "objections.json"
    json_path.write_text('[{"subject": "a", "at": "2025-01-01"}]', encoding="utf-8")
    with pytest.raises(InputError, match="scope: missing"):
        load_objections(json_path)


def test_authorisations_from_csv_and_json(tmp_path: Path) -> None:
    """Authorisations load from CSV (lists split on |) and from JSON."""
    csv_path = tmp_path / "auths.csv"
    csv_path.write_text(
        "id,from,to,categories,valid_from,reference\n"
        "a-1,hr.recruitment|client,prospection.postal,identity,2025-01-01,Order 12\n",
        encoding="utf-8",
    )
    (auth,) = load_authorisations(csv_path)
    assert auth.from_ == ("hr.recruitment", "client")
    assert auth.categories == ("identity",)
    json_path = tmp_path / "auths.json"
    json_path.write_text(
        json.dumps(
            [
                {
                    "id": "a-2",
                    "from": ["x"],
                    "to": "y",
                    "valid_from": "2025-01-01",
                    "reference": "Order 13",
                }
            ]
        ),
        encoding="utf-8",
    )
    assert load_authorisations(json_path)[0].id == "a-2"


def test_suppression_list(tmp_path: Path) -> None:
    """One subject per line; blanks and comments skipped; each entry an objection since 1970."""
    path = tmp_path / "do-not-contact.txt"
    path.write_text(
        "# people who asked\n\n  Jane@Example.com \nbob@example.com\n", encoding="utf-8"
    )
    entries = load_suppression(path, subject_key=lambda s: s.strip().lower())
    assert [e.subject for e in entries] == ["jane@example.com", "bob@example.com"]
    assert [e.id for e in entries] == [
        "suppression:do-not-contact.txt:3",
        "suppression:do-not-contact.txt:4",
    ]
    assert all(e.at == SUPPRESSION_AT and e.withdrawn_at is None for e in entries)


def test_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    """A missing event file is one clear line naming it."""
    with pytest.raises(InputError, match="cannot be read"):
        load_consents(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("a,b,c\n1,2,3\n", ","),
        ("a;b;c\n1;2;3\n", ";"),
        ("a\tb\n1\t2\n", "\t"),
        ("a|b\n1|2\n", "|"),
        ("email\nx@y.z\n", ","),
        ('name;note\n"a, b";c\n', ";"),
    ],
)
def test_pick_delimiter(sample: str, expected: str) -> None:
    """The delimiter is one of , ; TAB | as the sample shows; a single column means ','."""
    assert pick_delimiter(sample) == expected
