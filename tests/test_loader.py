"""Loading registers from TOML, JSON and dicts: values, every problem at once, lines, presets."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purposelimit import _presets
from purposelimit._convert import unstructure_register
from purposelimit._errors import ConfigurationError, RegisterError, RegisterProblem
from purposelimit._ids import ancestors
from purposelimit._loader import load_register, loads_register, register_from_dict
from purposelimit._model import (
    Compatibility,
    Confidence,
    DataCategory,
    LegalBasis,
    Purpose,
    Retention,
    RetentionAnchor,
    Verdict,
)
from purposelimit._register import Register
from purposelimit._time import parse_duration

SOUND = """\
# An example register
[register]
controller = "Example SAS"
version = "2026-11-01"

[[categories]]
id = "identity"
label = "Identity"

[[categories]]
id = "identity.name"
label = "Name"

[[categories]]
id = "contact.email"
label = "E-mail address"
source = "GDPR art. 4(1)"
confidence = "P"

[[categories]]
id = "special"
label = "Special categories of data"
sensitive = true
source = "GDPR art. 9(1)"

[[purposes]]
id = "client.contract"
label = "Contracts"
description = "Orders, delivery, invoices and payments"
legal_basis = "contract"
categories = ["identity", "contact.email"]
retention = { duration = "P5Y", from = "end-of-contract" }

[[purposes]]
id = "prospection.email_b2c"
label = "Consumer e-mail prospection"
description = "Sending our own offers by e-mail to consumers who agreed to receive them"
legal_basis = "consent"
categories = ["identity.name", "contact.email"]
retention = { duration = "P3Y", from = "last-contact" }
direct_marketing = true
source = "CPCE art. L34-5"
confidence = "S"

[[purposes]]
id = "hr.recruitment"
label = "Recruitment"
description = "Assessing candidates for a job"
legal_basis = "contract"
categories = ["identity"]
retention = { duration = "P3M", from = "last-contact" }

[[compatibility]]
id = "contract-to-email"
from = "client.contract"
to = "prospection.email_b2c"
verdict = "compatible"
link = "same customer relationship, offers for similar products"
context = "the customer bought from us"
nature = "name and e-mail address only"
consequences = "e-mails the customer can stop at any time"
safeguards = ["objection offered at collection", "unsubscribe link in every e-mail"]
source = "CPCE art. L34-5"
confidence = "S"

[[compatibility]]
id = "no-recruits"
from = "hr"
to = "prospection"
verdict = "prohibited"
source = "GDPR art. 6(4)"
"""


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """The 1-based line of the *nth* occurrence of *needle* in *text*."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    return text.count("\n", 0, start) + 1


def refused(text: str, **kwargs: Any) -> list[RegisterProblem]:
    with pytest.raises(RegisterError) as caught:
        loads_register(text, **kwargs)
    return list(caught.value.problems)


def outcome(load: Callable[[], Register]) -> RegisterError | None:
    """Run *load*; return the RegisterError it raised, or None when it gave a register."""
    try:
        load()
    except RegisterError as error:
        return error
    return None


def triples(problems: list[RegisterProblem]) -> list[tuple[str, int | None, str]]:
    return [(p.path, p.line, p.message) for p in problems]


# --------------------------------------------------------------------------- sound registers


def test_a_sound_toml_register_loads_into_the_value_types() -> None:
    """Every key of the file lands in the matching attribute, ``from`` included."""
    register = loads_register(SOUND)
    assert register.controller == "Example SAS"
    assert register.version == "2026-11-01"
    assert register.category("contact.email") == DataCategory(
        "contact.email", label="E-mail address", source="GDPR art. 4(1)", confidence=Confidence.P
    )
    assert register.is_sensitive("special")
    assert register.purpose("prospection.email_b2c") == Purpose(
        id="prospection.email_b2c",
        label="Consumer e-mail prospection",
        description="Sending our own offers by e-mail to consumers who agreed to receive them",
        legal_basis=LegalBasis.CONSENT,
        retention=Retention(parse_duration("P3Y"), RetentionAnchor.LAST_CONTACT),
        categories=("identity.name", "contact.email"),
        direct_marketing=True,
        source="CPCE art. L34-5",
        confidence=Confidence.S,
    )
    first, second = register.compatibility
    assert (first.from_, first.to, first.verdict) == (
        "client.contract",
        "prospection.email_b2c",
        Verdict.COMPATIBLE,
    )
    assert first.safeguards == (
        "objection offered at collection",
        "unsubscribe link in every e-mail",
    )
    assert (second.from_, second.to, second.verdict) == ("hr", "prospection", Verdict.PROHIBITED)


def test_json_of_the_same_shape_gives_the_same_register() -> None:
    """A JSON file with the TOML file's shape loads into an equal register."""
    as_json = json.dumps(tomllib.loads(SOUND), indent=2)
    assert loads_register(as_json, format="json") == loads_register(SOUND)


def test_load_register_reads_toml_and_json_files_by_suffix(tmp_path: Path) -> None:
    """``.json`` files are read as JSON, everything else as TOML."""
    toml_file = tmp_path / "register.toml"
    toml_file.write_text(SOUND, encoding="utf-8")
    json_file = tmp_path / "register.JSON"
    json_file.write_text(json.dumps(tomllib.loads(SOUND)), encoding="utf-8")
    assert load_register(toml_file) == load_register(str(json_file)) == loads_register(SOUND)


@pytest.mark.parametrize("text", ["", "\n\n", "# a comment, nothing else\n", "{}"])
def test_an_empty_file_is_refused(text: str) -> None:
    """A file with nothing in it (a truncated copy) is refused, not read as an empty register."""
    fmt = "json" if text == "{}" else "toml"
    with pytest.raises(RegisterError) as caught:
        loads_register(text, format=fmt, source="register.toml")
    (problem,) = caught.value.problems
    assert "the file is empty" in problem.message
    assert (problem.path, problem.line) == ("", 1)


def test_every_section_is_optional() -> None:
    """A file with only its header table is a register with nothing declared."""
    register = loads_register('[register]\ncontroller = "Example SAS"\n')
    assert (register.version, len(register.purposes), len(register.categories)) == ("", 0, 0)


def test_x_keys_are_accepted_at_every_level_and_ignored() -> None:
    """Keys beginning with ``x-`` are free for tools: accepted everywhere, not kept."""
    tooled = 'x-generator = "crm-export"\n' + SOUND.replace(
        'version = "2026-11-01"', 'version = "2026-11-01"\nx-reviewed = true'
    ).replace('label = "Identity"', 'label = "Identity"\nx-label-fr = "Identité"').replace(
        'legal_basis = "contract"', 'legal_basis = "contract"\nx-owner = "sales"', 1
    ).replace('from = "last-contact" }', 'from = "last-contact", x-note = "click" }', 1).replace(
        'verdict = "prohibited"', 'verdict = "prohibited"\nx-ticket = 42'
    )
    assert tooled.count("x-") == 6
    assert loads_register(tooled) == loads_register(SOUND)


# --------------------------------------------------------------------------- syntax errors


def test_a_toml_syntax_error_is_one_problem_with_its_line() -> None:
    """tomllib's error becomes one RegisterProblem with the line, never a traceback."""
    text = SOUND.replace('label = "Name"', 'label = "Name', 1)
    [problem] = refused(text, source="register.toml")
    assert problem.line == line_of(text, 'label = "Name')
    assert problem.file == "register.toml"
    assert problem.path == ""
    assert problem.message.startswith("invalid TOML: ")
    assert "(column " in problem.message


def test_a_toml_error_at_the_end_points_to_the_last_line() -> None:
    """An error tomllib places 'at end of document' gets the last line."""
    [problem] = refused('[register]\nversion = "1"\ncontroller = ')
    assert (problem.line, problem.message) == (
        3,
        "invalid TOML: Invalid value (at end of document)",
    )


def test_a_json_syntax_error_is_one_problem_with_its_line() -> None:
    """json's error becomes one RegisterProblem with its line and column."""
    [problem] = refused('{\n  "register": {\n    "version": \n  }\n}', format="json")
    assert (problem.path, problem.line) == ("", 4)
    assert problem.message == "invalid JSON: Expecting value (column 3)"


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        (
            "null",
            "json",
            "a register must be a table with the sections register, categories, "
            "purposes and compatibility; found null",
        ),
        ("x = " + "1" * 5000, "toml", "invalid TOML: a number is too long"),
        ('{"x-n": ' + "1" * 5000 + "}", "json", "invalid JSON: a number is too long"),
        ("[" * 100_000, "json", "invalid JSON: nested too deeply"),
    ],
)
def test_texts_no_parser_can_read_as_a_register_are_one_problem(
    text: str, fmt: Literal["toml", "json"], message: str
) -> None:
    """JSON null, numbers too long to convert and deep nesting give one problem each."""
    [problem] = refused(text, format=fmt)
    assert (problem.path, problem.message) == ("", message)


def test_deeply_nested_values_are_refused_like_any_wrong_value() -> None:
    """A value nested where none belongs is a wrong type, whatever its depth."""
    deep = "[" * 900 + "]" * 900
    text = '{"purposes": [{"id": "a", "label": ' + deep + ', "x-tool": ' + deep + "}]}"
    problems = refused(text, format="json")
    assert [(p.path, p.message) for p in problems][:2] == [
        ("purposes[0].label", "expected a string, found an array"),
        ("purposes[0].description", "required key is missing"),
    ]


def test_duplicate_json_keys_are_refused_with_the_other_problems() -> None:
    """JSON silently keeps the last of two equal keys; the loader refuses them instead."""
    text = '{\n "register": {"version": "1", "version": "2"},\n "purposes": 3\n}'
    problems = refused(text, format="json")
    assert triples(problems) == [
        ("register.version", 2, "duplicate key 'version': each key may appear once"),
        ("purposes", 3, "expected an array of tables ([[purposes]]), found an integer"),
    ]


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 give one problem with the line, not a UnicodeDecodeError."""
    path = tmp_path / "latin1.toml"
    path.write_bytes('[register]\ncontroller = "Société"\n'.encode("latin-1"))
    with pytest.raises(RegisterError) as caught:
        load_register(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.message) == (
        str(path),
        2,
        "the file is not UTF-8 text",
    )


def test_a_missing_file_is_a_register_error(tmp_path: Path) -> None:
    """An unreadable file is refused like a bad one, naming the file."""
    path = tmp_path / "nowhere.toml"
    with pytest.raises(RegisterError) as caught:
        load_register(path)
    [problem] = caught.value.problems
    assert problem.file == str(path)
    assert problem.message.startswith("the file cannot be read: ")
    assert caught.value.source == str(path)


def test_an_unknown_format_is_a_configuration_error() -> None:
    """loads_register knows toml and json only."""
    with pytest.raises(ConfigurationError, match="format must be 'toml' or 'json'"):
        loads_register("", format="yaml")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- every problem at once

BAD = """\
[register]
controller = "Example SAS"
version = 2026-11-01
colour = "blue"

[[categories]]
id = "identity"
label = "Identity"

[[categories]]
id = "Contact.Email"
label = "E-mail"

[[categories]]
id = "identity"
label = "Identity again"

[[purposes]]
id = "client.contract"
label = "Contracts"
description = "Orders"
legal_basis = "contract"
categories = ["identity"]
retention = { duration = "P5Y", from = "end-of-contract" }

[[purposes]]
id = "prospection.postal"
label = "Postal"
description = "Postal offers"
legal_basis = "legitimate-interest"
categories = [
  "identity",
  "contact.postal",
]
retention = { duration = "3 years", from = "last-contact" }
direct_marketing = "yes"

[[purposes]]
id = "hr.recruitment"
label = "Recruitment"
legal_basis = "contract"
retention = { duration = "P3M", anchor = "collection" }
labl = "typo"

[[compatibility]]
id = "contract-to-postal"
from = "client.contract"
to = "prospection.postl"
verdict = "compatible"
link = "same customer"

[[compatibility]]
id = "no-recruits"
from = "hr.recruitment"
to = "prospection"
verdict = "prohibited"
"""


def test_a_bad_file_is_refused_with_every_problem_path_and_line() -> None:
    """One RegisterError lists every structural and semantic problem, in file order."""
    with pytest.raises(RegisterError) as caught:
        loads_register(BAD, source="register.toml")
    error = caught.value
    assert error.source == "register.toml"
    assert all(p.file == "register.toml" for p in error.problems)
    keys = "id, label, description, legal_basis, retention, categories, sensitive_categories"
    assert triples(list(error.problems)) == [
        (
            "register.version",
            3,
            "expected a string, found a date or time (write it in quotes to make it a string)",
        ),
        (
            "register.colour",
            4,
            "unknown key 'colour'; allowed: controller, version, preset, "
            "and keys beginning with 'x-' (free for tools)",
        ),
        ("categories[1].id", 11, "'Contact.Email' is not a valid id: ids are lower-case"),
        ("categories[2].id", 15, "duplicate id 'identity' (first declared at categories[0])"),
        (
            "purposes[1].legal_basis",
            line_of(BAD, "legitimate-interest"),
            "'legitimate-interest' is not one of: consent, contract, legal-obligation, "
            "vital-interests, public-task, legitimate-interests "
            "(did you mean 'legitimate-interests'?)",
        ),
        (
            "purposes[1].categories[1]",
            line_of(BAD, '"contact.postal"'),
            "'contact.postal' is not a declared category",
        ),
        (
            "purposes[1].retention.duration",
            line_of(BAD, "3 years"),
            "'3 years' is not an ISO-8601 duration (such as 'P3Y', 'P13M' or 'P90D')",
        ),
        (
            "purposes[1].direct_marketing",
            line_of(BAD, 'direct_marketing = "yes"'),
            "expected true or false, found a string",
        ),
        ("purposes[2].description", line_of(BAD, "[[purposes]]", 2), "required key is missing"),
        (
            "purposes[2].retention.anchor",
            line_of(BAD, "anchor ="),
            "unknown key 'anchor' (did you mean 'from'?); allowed: duration, from, "
            "and keys beginning with 'x-' (free for tools)",
        ),
        (
            "purposes[2].labl",
            line_of(BAD, "labl"),
            f"unknown key 'labl' (did you mean 'label'?); allowed: {keys}, direct_marketing, "
            "archiving_or_statistics, archive, source, confidence, justification, "
            "and keys beginning with 'x-' (free for tools)",
        ),
        (
            "compatibility[0]",
            line_of(BAD, "[[compatibility]]"),
            "a compatible entry must write down the five GDPR art. 6(4) factors; "
            "missing: context, nature, consequences, safeguards",
        ),
        (
            "compatibility[0].to",
            line_of(BAD, '"prospection.postl"'),
            "'prospection.postl' is neither a declared purpose nor a group of declared purposes "
            "(did you mean 'prospection.postal'?)",
        ),
        (
            "compatibility[1]",
            line_of(BAD, "[[compatibility]]", 1),
            "a prohibited entry needs a source or a justification",
        ),
    ]
    text = str(error)
    assert text.splitlines()[0] == "register register.toml refused: 14 problems"
    duration_line = line_of(BAD, "3 years")
    assert (
        f"  register.toml:{duration_line}: purposes[1].retention.duration: "
        "'3 years' is not an ISO-8601 duration"
    ) in text
    assert "Traceback" not in text


def test_the_same_bad_register_in_json_has_the_same_problems_with_json_lines() -> None:
    """A JSON file is checked the same way; lines are those of the JSON text."""
    data = tomllib.loads(BAD.replace("version = 2026-11-01", 'version = "2026-11-01"'))
    text = json.dumps(data, indent=2)
    problems = refused(text, format="json", source="register.json")
    assert [p.path for p in problems] == [
        "register.colour",
        "categories[1].id",
        "categories[2].id",
        "purposes[1].legal_basis",
        "purposes[1].categories[1]",
        "purposes[1].retention.duration",
        "purposes[1].direct_marketing",
        "purposes[2].description",
        "purposes[2].retention.anchor",
        "purposes[2].labl",
        "compatibility[0]",
        "compatibility[0].to",
        "compatibility[1]",
    ]
    lines = {p.path: p.line for p in problems}
    assert lines["purposes[1].retention.duration"] == line_of(text, '"3 years"')
    assert lines["categories[1].id"] == line_of(text, '"Contact.Email"')
    assert lines["compatibility[0]"] == line_of(text, '"id": "contract-to-postal"') - 1
    assert lines["purposes[2].description"] == line_of(text, '"id": "hr.recruitment"') - 1


def test_problems_of_a_dict_have_paths_but_no_lines() -> None:
    """register_from_dict reports the same paths; a dict has no lines."""
    data = tomllib.loads(BAD.replace("version = 2026-11-01", 'version = "1"'))
    with pytest.raises(RegisterError) as caught:
        register_from_dict(data, source="crm")
    assert caught.value.source == "crm"
    assert {p.line for p in caught.value.problems} == {None}
    assert {p.file for p in caught.value.problems} == {"crm"}
    assert "purposes[1].retention.duration" in {p.path for p in caught.value.problems}


# --------------------------------------------------------------------------- structural problems

PURPOSE = """\
[[categories]]
id = "identity"
label = "Identity"

[[purposes]]
id = "client.contract"
label = "Contracts"
description = "Orders"
legal_basis = "contract"
categories = ["identity"]
retention = { duration = "P5Y", from = "end-of-contract" }
"""


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ('label = "Contracts"', "label = 12345", "label", "expected a string, found an integer"),
        ('label = "Contracts"', 'label = "  "', "label", "must not be empty"),
        ('description = "Orders"', 'description = ""', "description", "must not be empty"),
        (
            'categories = ["identity"]',
            'categories = "identity"',
            "categories",
            "expected an array of ids, found a string",
        ),
        (
            'categories = ["identity"]',
            'categories = ["identity", 7]',
            "categories[1]",
            "an id must be a string, not int",
        ),
        (
            'legal_basis = "contract"',
            "legal_basis = true",
            "legal_basis",
            "expected one of: consent, contract, legal-obligation, vital-interests, "
            "public-task, legitimate-interests; found a boolean",
        ),
        (
            '{ duration = "P5Y", from = "end-of-contract" }',
            '"P5Y"',
            "retention",
            'expected a table such as { duration = "P3Y", from = "collection" }, found a string',
        ),
        (
            'duration = "P5Y"',
            "duration = 5",
            "retention.duration",
            "expected an ISO-8601 duration string such as 'P3Y', found an integer",
        ),
        (
            'from = "end-of-contract"',
            'from = "end-of-relationship"',
            "retention.from",
            "'end-of-relationship' is not one of: collection, last-contact, end-of-contract",
        ),
        (
            'categories = ["identity"]',
            'categories = ["identity"]\nconfidence = "s"',
            "confidence",
            "'s' is not one of: P, S, K, U (did you mean 'S'?)",
        ),
        (
            'categories = ["identity"]',
            'categories = ["identity"]\narchive = "false"',
            "archive",
            "expected true or false, found a string",
        ),
    ],
)
def test_wrong_values_are_refused_with_their_path(
    old: str, new: str, path: str, message: str
) -> None:
    """Strict structuring: no coercion of strings, numbers or booleans into one another."""
    text = PURPOSE.replace(old, new)
    assert text != PURPOSE
    [problem] = refused(text)
    assert (problem.path, problem.message) == (f"purposes[0].{path}", message)
    assert problem.line == line_of(text, new.splitlines()[-1])


@pytest.mark.parametrize("key", ["id", "label", "description", "legal_basis", "retention"])
def test_a_purpose_without_a_required_key_is_refused(key: str) -> None:
    """A purpose must be explicit: id, label, description, legal basis and retention."""
    text = "\n".join(
        line for line in PURPOSE.splitlines() if not line.startswith(f"{key} =") or "[[" in line
    )
    if key == "id":  # the category's id line would go too: keep it
        text = text.replace('[[categories]]\nlabel = "Identity"', CATEGORY_IDENTITY)
    [problem] = refused(text)
    assert (problem.path, problem.message) == (f"purposes[0].{key}", "required key is missing")
    assert problem.line == line_of(text, "[[purposes]]")


CATEGORY_IDENTITY = '[[categories]]\nid = "identity"\nlabel = "Identity"'


@pytest.mark.parametrize("key", ["id", "from", "to", "verdict"])
def test_a_compatibility_entry_without_a_required_key_is_refused(key: str) -> None:
    """id, from, to and verdict are required on every compatibility entry."""
    fields = {"id": "no-recruits", "from": "client", "to": "client", "verdict": "prohibited"}
    del fields[key]
    body = "".join(f'{k} = "{v}"\n' for k, v in fields.items())
    text = f'{PURPOSE}\n[[compatibility]]\n{body}source = "GDPR art. 6(4)"\n'
    [problem] = refused(text)
    assert (problem.path, problem.message) == (f"compatibility[0].{key}", "required key is missing")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("Client.contract", "'Client.contract' is not a valid id: ids are lower-case"),
        (
            "client.contr\u0430ct",  # Cyrillic a
            "'client.contrаct' is not a valid id: only lower-case ASCII letters, digits, '_' and "
            "'-' joined by dots are allowed (look-alike and non-ASCII characters are refused)",
        ),
        (
            "client..contract",
            "'client..contract' is not a valid id: use lower-case ASCII letters, digits, '_' "
            "and '-' joined by single dots",
        ),
        (
            "client contract",
            "'client contract' is not a valid id: use lower-case ASCII letters, digits, '_' "
            "and '-' joined by single dots",
        ),
        ("", "an id must not be empty"),
    ],
)
def test_ids_outside_the_design_syntax_are_refused(bad: str, message: str) -> None:
    """Ids are lower-case ASCII letters, digits, _ and -, joined by dots (DESIGN §9)."""
    text = PURPOSE.replace('id = "client.contract"', f'id = "{bad}"')
    [problem] = refused(text)
    assert (problem.path, problem.line, problem.message) == (
        "purposes[0].id",
        line_of(text, f'id = "{bad}"'),
        message,
    )


def test_an_invalid_id_in_a_reference_is_refused_where_it_is_written() -> None:
    """A malformed category, from or to id is refused at its own path."""
    text = (
        PURPOSE.replace('categories = ["identity"]', 'categories = ["Identity"]')
        + '\n[[compatibility]]\nid = "x"\nfrom = "client"\nto = "Prospection"\n'
        'verdict = "prohibited"\nsource = "s"\n'
    )
    assert [(p.path, p.message) for p in refused(text)] == [
        ("purposes[0].categories[0]", "'Identity' is not a valid id: ids are lower-case"),
        ("compatibility[0].to", "'Prospection' is not a valid id: ids are lower-case"),
    ]


@pytest.mark.parametrize(
    ("text", "path", "hint"),
    [
        ('[[purpose]]\nid = "a"\n', "purpose", "(did you mean 'purposes'?)"),
        ('[register]\ncontroler = "x"\n', "register.controler", "(did you mean 'controller'?)"),
        (
            '[[categories]]\nid = "a"\nsensitve = true\n',
            "categories[0].sensitve",
            "(did you mean 'sensitive'?)",
        ),
        (
            PURPOSE.replace("legal_basis =", "legal_base ="),
            "purposes[0].legal_base",
            "(did you mean 'legal_basis'?)",
        ),
        (
            PURPOSE.replace("legal_basis =", "basis =") + 'legal_basis = "contract"\n',
            "purposes[0].basis",
            "(did you mean 'legal_basis'?)",
        ),
        (
            PURPOSE.replace('from = "end', 'start = "end'),
            "purposes[0].retention.start",
            "(did you mean 'from'?)",
        ),
        (
            PURPOSE + '[[compatibility]]\nid = "x"\nfrom = "client"\nto = "client"\n'
            'verdict = "prohibited"\nsource = "s"\nsafegards = []\n',
            "compatibility[0].safegards",
            "(did you mean 'safeguards'?)",
        ),
    ],
)
def test_unknown_keys_are_refused_at_every_level_with_a_did_you_mean(
    text: str, path: str, hint: str
) -> None:
    """Any key that is neither known nor ``x-`` is refused, with the closest known key."""
    problems = refused(text)
    [problem] = [p for p in problems if p.path == path]
    assert hint in problem.message
    assert problem.message.endswith("and keys beginning with 'x-' (free for tools)")
    assert problem.line == line_of(text, path.rsplit(".", 1)[-1].split("[")[0])


def test_register_keys_outside_the_register_table_are_pointed_to_it() -> None:
    """``preset = ...`` at the top of the file belongs in ``[register]``."""
    [problem] = refused('preset = "cnil-commercial"\n[register]\nversion = "1"\n')
    assert (problem.path, problem.line, problem.message) == (
        "preset",
        1,
        "'preset' belongs in the [register] table (register.preset)",
    )


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            [],
            "",
            "a register must be a table with the sections register, categories, "
            "purposes and compatibility; found an array",
        ),
        (
            {"register": "v1"},
            "register",
            'expected a table such as [register] with controller = "Example SAS", found a string',
        ),
        (
            {"categories": {"id": "a"}},
            "categories",
            "expected an array of tables ([[categories]]), found a table",
        ),
        (
            {"purposes": ["a"]},
            "purposes[0]",
            "expected a table such as [[purposes]], found a string",
        ),
        (
            {"compatibility": [None]},
            "compatibility[0]",
            "expected a table such as [[compatibility]], found null",
        ),
    ],
)
def test_wrong_shapes_are_refused(data: Any, path: str, message: str) -> None:
    """Sections are arrays of tables; the register and each entry are tables."""
    with pytest.raises(RegisterError) as caught:
        register_from_dict(data)
    assert [(p.path, p.message) for p in caught.value.problems] == [(path, message)]


def test_messages_never_repeat_a_value_that_is_not_an_id() -> None:
    """A wrong value is described by its type only: the file could hold anything there."""
    text = '[register]\ncontroller = ["Jean Dupont", "jean@example.com"]\nversion = 33612345678\n'
    problems = refused(text)
    assert [p.message for p in problems] == [
        "expected a string, found an array",
        "expected a string, found an integer",
    ]
    assert "Dupont" not in str(RegisterError(problems))
    assert "33612345678" not in str(RegisterError(problems))


# --------------------------------------------------------------------------- semantic problems


def test_references_to_an_entry_that_failed_are_not_reported_again() -> None:
    """A purpose refused for its retention is still declared for references and duplicates."""
    text = (
        PURPOSE.replace('duration = "P5Y"', 'duration = "five years"')
        + '\n[[compatibility]]\nid = "x"\nfrom = "client.contract"\nto = "client"\n'
        'verdict = "prohibited"\nsource = "s"\n' + PURPOSE.split("\n\n")[1]
    )
    assert [p.path for p in refused(text)] == ["purposes[0].retention.duration", "purposes[1].id"]


def test_semantic_problems_carry_lines_of_the_entry() -> None:
    """Overlap and undeclared categories point to the entry lines of the file."""
    text = (
        SOUND.replace('to = "prospection"', 'to = "prospection.email_b2c"').replace(
            'from = "hr"', 'from = "client"'
        )
        + '\n[[purposes]]\nid = "a"\nlabel = "A"\ndescription = "A"\nlegal_basis = "consent"\n'
        + ('retention = { duration = "P1Y" }\nsensitive_categories = ["special.health"]\n')
    )
    problems = refused(text, source="r.toml")
    assert triples(problems) == [
        (
            "compatibility[0]",
            line_of(text, "[[compatibility]]"),
            "compatible entry 'contract-to-email' overlaps prohibited entry 'no-recruits' "
            "(compatibility[1]): a reuse cannot be both assessed as compatible and prohibited",
        ),
        (
            "purposes[3].sensitive_categories[0]",
            line_of(text, "sensitive_categories"),
            "'special.health' is not a declared category",
        ),
    ]


# --------------------------------------------------------------------------- line mapping


def test_lines_follow_table_layouts_dotted_keys_and_subtables() -> None:
    """[purposes.retention] sub-tables and dotted keys map to their own lines."""
    text = f"""\
{CATEGORY_IDENTITY}

[[purposes]]
id = "a"
label = "A"
description = \"\"\"
[[purposes]]
id = "not a real entry"
\"\"\"
legal_basis = "consent"
retention.duration = "P1Y"
retention.from = "collection"
categories = [  # a comment with [[purposes]]
  "identity",
  # "not.this",
  "Bad",
]

# [[purposes]] in a comment does not count
[[purposes]]
id = "b"
label = 'B'
description = 'B'
legal_basis = "consent"

[purposes.retention]
duration = "1Y"
"""
    problems = refused(text)
    assert triples(problems) == [
        (
            "purposes[0].categories[1]",
            line_of(text, '"Bad"'),
            "'Bad' is not a valid id: ids are lower-case",
        ),
        (
            "purposes[1].retention.duration",
            line_of(text, 'duration = "1Y"'),
            "'1Y' is not an ISO-8601 duration (such as 'P3Y', 'P13M' or 'P90D')",
        ),
    ]


def test_inline_table_keys_map_to_the_line_of_the_table() -> None:
    """``retention = { ..., from = ... }``: the inner key's problem has the table's line."""
    text = PURPOSE.replace('from = "end-of-contract"', 'from = "at-once"')
    [problem] = refused(text)
    assert (problem.path, problem.line) == ("purposes[0].retention.from", line_of(text, "at-once"))


# --------------------------------------------------------------------------- presets


PRESET = """\
[register]
controller = "Preset"
version = "p1"

[[categories]]
id = "identity"
label = "Identity"
source = "NS-048"
confidence = "U"

[[categories]]
id = "contact.email"
label = "E-mail address"

[[purposes]]
id = "client.contract"
label = "Contracts"
description = "Orders"
legal_basis = "contract"
categories = ["identity"]
retention = { duration = "P5Y", from = "end-of-contract" }

[[purposes]]
id = "prospection.postal"
label = "Postal prospection"
description = "Postal offers"
legal_basis = "legitimate-interests"
categories = ["identity"]
retention = { duration = "P3Y", from = "last-contact" }
direct_marketing = true
source = "CNIL délibération 2021-131"

[[compatibility]]
id = "contract-to-postal"
from = "client.contract"
to = "prospection.postal"
verdict = "compatible"
link = "l"
context = "c"
nature = "n"
consequences = "q"
safeguards = ["s"]
"""


@pytest.fixture
def presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A preset folder of our own, with ``test-preset``; caches cleared around the test."""
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "test-preset.toml").write_text(PRESET, encoding="utf-8")
    (folder / "README.md").write_text("not a preset", encoding="utf-8")
    monkeypatch.setattr(_presets, "_folder", lambda: folder)
    _presets.load_preset.cache_clear()
    _presets._preset_file.cache_clear()
    yield folder
    _presets.load_preset.cache_clear()
    _presets._preset_file.cache_clear()


USER = """\
[register]
controller = "Example SAS"
version = "2026-11-01"
preset = "test-preset"

[[purposes]]
id = "newsletter.editorial"
label = "Newsletter"
description = "Our editorial newsletter"
legal_basis = "consent"
categories = ["contact.email"]
retention = { duration = "P3Y", from = "last-contact" }
"""


def test_a_register_starting_from_a_preset_adds_its_entries(presets: Path) -> None:
    """The file's entries are added after the preset's; controller and version are the file's."""
    register = loads_register(USER)
    assert list(register.purposes) == [
        "client.contract",
        "prospection.postal",
        "newsletter.editorial",
    ]
    assert list(register.categories) == ["identity", "contact.email"]
    assert [e.id for e in register.compatibility] == ["contract-to-postal"]
    assert (register.controller, register.version) == ("Example SAS", "2026-11-01")


def test_replacing_a_preset_entry_needs_a_justification(presets: Path) -> None:
    """An entry with a preset id replaces it only with a written justification."""
    override = (
        '\n[[purposes]]\nid = "prospection.postal"\nlabel = "Postal prospection"\n'
        'description = "Postal offers"\nlegal_basis = "legitimate-interests"\n'
        'categories = ["identity"]\nretention = { duration = "P2Y", from = "last-contact" }\n'
    )
    text = USER + override
    [problem] = refused(text, source="register.toml")
    assert (problem.file, problem.path, problem.line) == (
        "register.toml",
        "purposes[1].justification",
        line_of(text, "[[purposes]]", 1),
    )
    assert problem.message == (
        "replaces the purpose 'prospection.postal' of preset 'test-preset': a written "
        "justification is required to depart from a preset entry"
    )
    justified = text + 'justification = "we re-contact prospects every two years"\n'
    register = loads_register(justified)
    postal = register.purpose("prospection.postal")
    assert postal is not None
    assert str(postal.retention.duration) == "P2Y"
    assert list(register.purposes) == [
        "client.contract",
        "prospection.postal",
        "newsletter.editorial",
    ]


def test_replacing_a_preset_category_or_entry_needs_a_justification_too(presets: Path) -> None:
    """Categories and compatibility entries are replaced under the same rule."""
    text = USER + (
        '\n[[categories]]\nid = "identity"\nlabel = "Identity"\njustification = " "\n'
        '\n[[compatibility]]\nid = "contract-to-postal"\nfrom = "client.contract"\n'
        'to = "prospection.postal"\nverdict = "prohibited"\nsource = "our DPO"\n'
    )
    assert [p.path for p in refused(text)] == [
        "categories[0].justification",
        "compatibility[0].justification",
    ]


def test_problems_between_a_file_and_its_preset_point_to_both(presets: Path) -> None:
    """An overlap with a preset entry is reported on it, in the preset file, naming ours."""
    text = USER + (
        '\n[[compatibility]]\nid = "no-postal"\nfrom = "client"\nto = "prospection"\n'
        'verdict = "prohibited"\nsource = "our DPO"\n'
    )
    [problem] = refused(text, source="register.toml")
    assert problem.file == _presets.preset_path("test-preset")
    assert (problem.path, problem.line) == (
        "compatibility[0]",
        line_of(PRESET, "[[compatibility]]"),
    )
    assert problem.message == (
        "compatible entry 'contract-to-postal' overlaps prohibited entry 'no-postal' "
        "(compatibility[0] of register.toml): a reuse cannot be both assessed as compatible "
        "and prohibited"
    )


def test_a_duplicate_in_the_file_of_a_preset_id_names_the_first_declaration(
    presets: Path,
) -> None:
    """The first entry with a preset id replaces it; a second one is a duplicate."""
    entry = '\n[[categories]]\nid = "identity"\nlabel = "Identity"\njustification = "ours"\n'
    [problem] = refused(USER + entry + entry, source="register.toml")
    assert (problem.file, problem.path) == ("register.toml", "categories[1].id")
    assert problem.message == "duplicate id 'identity' (first declared at categories[0])"


def test_an_unknown_preset_lists_the_available_ones(presets: Path) -> None:
    """A misspelt preset name is refused with a did-you-mean and the list of presets."""
    [problem] = refused(USER.replace('"test-preset"', '"test-prest"'))
    assert (problem.path, problem.line) == ("register.preset", 4)
    assert problem.message == (
        "unknown preset 'test-prest' (did you mean 'test-preset'?); available presets: test-preset"
    )


def test_a_refused_preset_reports_its_own_problems_with_its_file(presets: Path) -> None:
    """If the preset itself is refused, its problems name the preset file and lines."""
    (presets / "broken.toml").write_text(
        PRESET.replace('legal_basis = "contract"', 'legal_basis = "contrat"'), encoding="utf-8"
    )
    text = USER.replace('"test-preset"', '"broken"').replace("P3Y", "3Y")
    problems = refused(text, source="register.toml")
    assert [(p.file, p.path) for p in problems] == [
        ("register.toml", "purposes[0].retention.duration"),
        (str(presets / "broken.toml"), "purposes[0].legal_basis"),
    ]


def test_a_preset_cannot_start_from_a_preset(presets: Path) -> None:
    """Presets are flat: ``preset`` inside a preset file is refused."""
    (presets / "nested.toml").write_text('[register]\npreset = "test-preset"\n', encoding="utf-8")
    with pytest.raises(RegisterError) as caught:
        _presets.load_preset("nested")
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("register.preset", 2)
    assert problem.message == "a preset cannot itself start from another preset"


def test_a_merged_register_exports_whole(presets: Path) -> None:
    """to_dict of a merged register holds the preset's entries too, and loads alone."""
    register = loads_register(USER)
    data = register.to_dict()
    assert "preset" not in data["register"]
    assert register_from_dict(data) == register


# --------------------------------------------------------------------------- properties

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=5)
IDS = st.lists(SEGMENT, min_size=1, max_size=3).map(".".join)
TEXT = st.text(max_size=12)
NONEMPTY = st.text(min_size=1, max_size=12).filter(lambda s: bool(s.strip()))
CONFIDENCE = st.none() | st.sampled_from(Confidence)


@st.composite
def durations(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(st.sampled_from(["Y", "M", "W", "D", "H", "TM", "S"]), min_size=1, unique=True)
    )
    order = ["Y", "M", "W", "D", "H", "TM", "S"]
    date = "".join(f"{draw(st.integers(0, 99))}{u}" for u in order[:4] if u in parts)
    time = "".join(f"{draw(st.integers(0, 99))}{u[-1]}" for u in order[4:] if u in parts)
    return "P" + date + (f"T{time}" if time else "")


@st.composite
def registers(draw: st.DrawFn) -> Register:
    """Small valid registers: every value type, every optional key, groups as ends."""
    category_ids = draw(st.lists(IDS, min_size=1, max_size=5, unique=True))
    categories = [
        DataCategory(
            id=c,
            label=draw(TEXT),
            sensitive=draw(st.booleans()),
            description=draw(TEXT),
            source=draw(TEXT),
            confidence=draw(CONFIDENCE),
            justification=draw(TEXT),
        )
        for c in category_ids
    ]
    purpose_ids = draw(st.lists(IDS, min_size=1, max_size=5, unique=True))
    purposes = [
        Purpose(
            id=p,
            label=draw(NONEMPTY),
            description=draw(NONEMPTY),
            legal_basis=draw(st.sampled_from(LegalBasis)),
            retention=Retention(draw(durations()), draw(st.sampled_from(RetentionAnchor))),
            categories=tuple(draw(st.lists(st.sampled_from(category_ids), max_size=3))),
            sensitive_categories=tuple(draw(st.lists(st.sampled_from(category_ids), max_size=2))),
            direct_marketing=draw(st.booleans()),
            archiving_or_statistics=draw(st.booleans()),
            archive=draw(st.booleans()),
            source=draw(TEXT),
            confidence=draw(CONFIDENCE),
            justification=draw(TEXT),
        )
        for p in purpose_ids
    ]
    ends = sorted({a for p in purpose_ids for a in ancestors(p)})
    entries: list[Compatibility] = []
    for entry_id in draw(st.lists(IDS, max_size=4, unique=True)):
        verdict = draw(st.sampled_from(Verdict))
        entry = Compatibility(
            id=entry_id,
            from_=draw(st.sampled_from(ends)),
            to=draw(st.sampled_from(ends)),
            verdict=verdict,
            link=draw(NONEMPTY if verdict is Verdict.COMPATIBLE else TEXT),
            context=draw(NONEMPTY if verdict is Verdict.COMPATIBLE else TEXT),
            nature=draw(NONEMPTY if verdict is Verdict.COMPATIBLE else TEXT),
            consequences=draw(NONEMPTY if verdict is Verdict.COMPATIBLE else TEXT),
            safeguards=tuple(draw(st.lists(NONEMPTY, min_size=1, max_size=2))),
            source=draw(NONEMPTY if verdict is Verdict.PROHIBITED else TEXT),
            confidence=draw(CONFIDENCE),
            justification=draw(TEXT),
        )
        if verdict is Verdict.PROHIBITED and any(
            _overlaps(e, entry) for e in entries if e.verdict is Verdict.COMPATIBLE
        ):
            continue
        if verdict is Verdict.COMPATIBLE and any(
            _overlaps(e, entry) for e in entries if e.verdict is Verdict.PROHIBITED
        ):
            continue
        entries.append(entry)
    return Register(purposes, categories, entries, controller=draw(TEXT), version=draw(TEXT))


def _overlaps(a: Compatibility, b: Compatibility) -> bool:
    def meet(x: str, y: str) -> bool:
        return x == y or x.startswith(y + ".") or y.startswith(x + ".")

    return meet(a.from_, b.from_) and meet(a.to, b.to)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registers())
def test_registers_round_trip_through_the_converter(register: Register) -> None:
    """register_from_dict(unstructure_register(r)) == r, and through JSON text too."""
    data = unstructure_register(register)
    assert register_from_dict(data) == register
    again = loads_register(json.dumps(data, ensure_ascii=False), format="json")
    assert again == register
    assert again.to_dict() == data
    assert list(again.purposes.values()) == list(register.purposes.values())
    assert list(again.categories.values()) == list(register.categories.values())
    assert again.compatibility == register.compatibility


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "register",
                    "purposes",
                    "categories",
                    "compatibility",
                    "id",
                    "label",
                    "from",
                    "retention",
                    "duration",
                    "verdict",
                    "x-a",
                    "preset",
                    "version",
                    "zz",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(JSONISH)
def test_any_data_gives_a_register_or_a_register_error(data: Any) -> None:
    """Whatever the dict holds, the loader answers with a Register or a RegisterError."""
    error = outcome(lambda: register_from_dict(data))
    if error is not None:
        assert error.problems
        assert all(isinstance(p, RegisterProblem) for p in error.problems)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_change_to_a_sound_file_gives_a_register_or_a_register_error(
    data: st.DataObject,
) -> None:
    """Replacing any value of a sound register by any value never gives a traceback."""
    document = tomllib.loads(SOUND)
    spots: list[tuple[Any, Any]] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                spots.append((value, key))
                collect(item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                spots.append((value, index))
                collect(item)

    collect(document)
    holder, key = data.draw(st.sampled_from(spots))
    holder[key] = data.draw(JSONISH)
    text = json.dumps(document, indent=1)
    error = outcome(lambda: loads_register(text, format="json"))
    if error is not None:
        last = text.count("\n") + 1
        assert all(p.line is None or 1 <= p.line <= last for p in error.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="[]{}=\"'#.,\n abcxP3Y-_", max_size=80))
def test_any_text_gives_a_register_or_a_register_error(text: str) -> None:
    """Arbitrary text is either a register or a RegisterError, in TOML and in JSON."""
    formats: tuple[Literal["toml", "json"], ...] = ("toml", "json")
    for fmt in formats:
        error = outcome(lambda: loads_register(text, format=fmt))  # noqa: B023 (called at once)
        assert error is None or error.problems


def test_check_refuses_an_empty_register_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``purposelimit check`` on a 0-byte file is bad input (exit 1), naming the file and line."""
    from purposelimit._cli import main

    empty = tmp_path / "register.toml"
    empty.write_bytes(b"")
    assert main(["check", str(empty)]) == 1
    err = capsys.readouterr().err
    assert f"{empty}:1:" in err
    assert "the file is empty" in err


def test_a_reader_closing_the_pipe_is_not_bad_input(tmp_path: Path) -> None:
    """``purposelimit check FILE | head -1``: the reader goes away; the command stops quietly
    with 141 (SIGPIPE's status), not 1, which means the register was refused."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from purposelimit._cli import main\n"
        "sys.stdout.close()\n"  # as when the reader of the pipe has gone
        "class Gone:\n"
        "    def write(self, text): raise BrokenPipeError(32, 'Broken pipe')\n"
        "    def flush(self): pass\n"
        "sys.stdout = Gone()\n"
        "sys.exit(main(['check', 'examples/register.toml']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""
