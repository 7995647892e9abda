"""Table-driven compliance cases: loading with clear errors, running, the table, the command.

The shipped example files must pass; a bad case file is refused with every
problem at once, each naming its file, line and field; ``purposelimit test``
prints a pass/fail table and exits non-zero on a failure.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from purposelimit import ConfigurationError, Engine, Reason, RegisterError, load_preset
from purposelimit._cases import (
    CaseFileError,
    CaseProblem,
    add_test_command,
    format_results,
    load_cases,
    loads_cases,
    resolve_register,
    run_case,
    run_cases,
)
from purposelimit.testing import make_register

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "cases").glob("*.toml"))
CNIL = ROOT / "examples" / "cases" / "cnil-commercial.toml"

HEAD = """\
[suite]
preset = "cnil-commercial"
at = 2026-03-01T10:00:00Z
"""

TWO_CASES = (
    HEAD
    + """
[[cases]]
id = "customer-postal"
purpose = "prospection.postal"
record = { subject = "cust-1", collected_for = "client.contract", collected_at = 2026-01-10 }
categories = ["identity.name"]
expect = "compatible"

[[cases]]
id = "candidate-postal"
description = "Recruitment data may not feed prospection."
purpose = "prospection.postal"
record = { subject = "cand-1", collected_for = "hr.recruitment", collected_at = 2026-01-10 }
categories = ["identity.name", "contact.postal_address"]
expect = "compatible"
rule = "compatibility:c2.contract-to-postal"
"""
)


def write(tmp_path: Path, text: str, name: str = "cases.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


# --------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_case_files_pass(path: Path) -> None:
    """Every shipped example case passes against the register it names."""
    results = run_cases(load_cases(path))
    assert results
    failed = [r.case.id + ": " + r.explain() for r in results if not r.passed]
    assert failed == []


def test_cnil_example_covers_the_french_preset() -> None:
    """The CNIL example pins the preset's key answers: reuse, objection, retention, consent."""
    suite = load_cases(CNIL)
    assert suite.preset == "cnil-commercial"
    seen = {
        (c.request.collected_for, c.request.purpose, c.expect, len(c.request.objections) > 0)
        for c in suite.cases
    }
    for expected in [
        ("hr.recruitment", "prospection.email_b2c", "consent-missing", False),
        ("hr.recruitment", "prospection.postal", "prohibited", False),
        ("client.contract", "prospection.postal", "compatible", False),
        ("client.contract", "prospection.postal", "objection", True),
        ("client.contract", "client.contract", "same-purpose", True),
        ("client.contract", "client.contract", "retention-expired", False),
        ("newsletter.editorial", "newsletter.editorial", "consent", False),
        ("newsletter.editorial", "newsletter.editorial", "consent-withdrawn", False),
        ("newsletter.editorial", "newsletter.editorial", "excessive", False),
    ]:
        assert expected in seen
    by_id = {c.id: c for c in suite.cases}
    before = by_id["contract-data-one-second-before-retention-end"].request.at
    at_end = by_id["contract-data-at-retention-end"].request.at
    assert before is not None
    assert at_end is not None
    assert (at_end - before).total_seconds() == 1
    assert by_id["nir-excessive-for-the-newsletter"].request.categories == ("nir",)


# --------------------------------------------------------------------------- loading


def test_loads_cases_reads_the_request_and_the_expectation(tmp_path: Path) -> None:
    """Suite defaults fill the cases; bare dates are midnight UTC; events default to the record's
    subject; x- keys are ignored."""
    suite = loads_cases(
        HEAD
        + """
x-owner = "dpo"

[[cases]]
id = "newsletter"
x-ticket = "GDPR-12"
purpose = "newsletter.editorial"
record = { subject = "sub-1", collected_for = "newsletter.editorial", collected_at = 2026-01-10 }
categories = ["contact.email"]
consents = [{ purposes = ["newsletter.editorial"], given_at = 2026-01-10 }]
objections = [{ at = 2026-02-01T00:00:00+01:00, scope = "direct-marketing" }]
expect = "objection"
""",
        source="inline.toml",
    )
    (case,) = suite.cases
    assert case.id == "newsletter"
    assert case.location == "inline.toml:7"
    assert case.request.at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert case.request.collected_at == datetime(2026, 1, 10, tzinfo=UTC)
    assert [c.subject for c in case.request.consents] == ["sub-1"]
    assert [o.subject for o in case.request.objections] == ["sub-1"]
    assert run_case(Engine(load_preset("cnil-commercial")), case).passed


def test_a_bad_case_file_lists_every_problem_with_file_line_and_field(tmp_path: Path) -> None:
    """Every problem is reported at once, each with its file, line and field path."""
    path = write(
        tmp_path,
        """\
[suite]
preset = "cnil-commercial"
register = "register.toml"
at = 2026-03-01T10:00:00

[[cases]]
id = "one"
purpose = "prospection.postal"
record = { subject = "c", collected_for = "client.contract", collected_at = 2026-01-10T09:00:00 }
categories = ["identity.name"]
expcet = "compatible"

[[cases]]
id = "one"
purpose = "prospection.postal"
record = { subject = "c", collected_for = "client.contract", collected_at = 2026-01-10 }
categories = ["identity.name"]
at = 2026-03-01
expect = "prohibted"

[[cases]]
id = "three"
purpose = "prospection.postal"
at = 2026-03-01
record = { subject = "c", collected_for = "client.contract", collected_at = 2026-01-10 }
categories = []
expect = "denied"
""",
    )
    with pytest.raises(CaseFileError) as refused:
        load_cases(path)
    shown = str(path)
    assert str(refused.value) == "\n".join(
        [
            f"case file {shown} refused: 8 problems",
            f"  {shown}:2: suite.preset: name a register or a preset, not both",
            f"  {shown}:4: suite.at: a date-time needs an offset ('Z' or '+01:00'); a bare "
            "date (2025-01-10) means midnight UTC",
            f"  {shown}:6: cases[0].expect: missing: say what the register must decide (a "
            "reason code)",
            f"  {shown}:9: cases[0].record.collected_at: a date-time needs an offset ('Z' or "
            "'+01:00'); a bare date (2025-01-10) means midnight UTC",
            f"  {shown}:11: cases[0].expcet: unknown key 'expcet' (did you mean 'expect'?); "
            "allowed: id, description, purpose, at, record, categories, consents, objections, "
            "authorisations, expect, rule, and names beginning with 'x-' (ignored)",
            f"  {shown}:14: cases[1].id: duplicate id 'one' (first used at cases[0])",
            f"  {shown}:19: cases[1].expect: 'prohibted' is not a reason code (did you mean "
            "'prohibited'?); expect a reason code (same-purpose, narrower-purpose, compatible, "
            "presumed-compatible, consent, authorisation, no-purpose, unknown-purpose, "
            "unknown-category, retention-expired, objection, excessive, consent-withdrawn, "
            "consent-expired, consent-refused, consent-invalid, consent-missing, prohibited, "
            "incompatible) or 'allowed' / 'denied'",
            f"  {shown}:26: cases[2].categories: must list at least one data category",
        ]
    )
    assert [p.line for p in refused.value.problems] == [2, 4, 6, 9, 11, 14, 19, 26]


def test_protocol_problems_name_the_case_field_and_line(tmp_path: Path) -> None:
    """A request the decision protocol cannot read is reported at the field's own line."""
    path = write(
        tmp_path,
        HEAD
        + """
[[cases]]
id = "naive"
purpose = "prospection.postal"
record = { subject = "c", collected_for = "client.contract", collected_at = 2026-01-10T09:00:00 }
categories = ["identity.name"]
expect = "compatible"

[[cases]]
id = "empty"
purpose = "prospection.postal"
record = { subject = "c", collected_for = "client.contract", collected_at = 2026-01-10 }
categories = []
expect = "compatible"

[[cases]]
id = "typed"
purpose = "prospection.postal"
record = "cust-1"
categories = ["identity.name"]
expect = "compatible"

[[cases]]
id = "consent"
purpose = "prospection.postal"
record = { subject = "c", collected_for = "client.contract", collected_at = 2026-01-10 }
categories = ["identity.name"]
consents = [
  { purposes = ["prospection.postal"], given_at = 2026-01-10, withdrawn_at = 2026-01-01 },
]
expect = "compatible"
""",
        name="protocol.toml",
    )
    with pytest.raises(CaseFileError) as refused:
        load_cases(path, source="protocol.toml")
    assert [str(p) for p in refused.value.problems] == [
        "protocol.toml:8: cases[0].record.collected_at: a date-time needs an offset ('Z' or "
        "'+01:00'); a bare date (2025-01-10) means midnight UTC",
        "protocol.toml:16: cases[1].categories: must list at least one data category",
        "protocol.toml:22: cases[2].record: record must be a table, not a string",
        "protocol.toml:32: cases[3].consents[0].withdrawn_at: is before given_at",
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[suite\n", "cases.toml:1: (file): invalid TOML: Expected ']' at the end of a table "),
        (b"\xff\xfe", "cases.toml:1: (file): the file is not UTF-8 text"),
        (b"[suite]\n", "cases.toml:1: cases: a case file lists at least one case in [[cases]]"),
        (b"cases = 3\n", "cases.toml:1: cases: expected a non-empty array of tables"),
        (b"[[cases]]\nid = 'a b'\n", "cases.toml:2: cases[0].id: expected an id of letters"),
        (b"suite = 1\n[[cases]]\n", "cases.toml:1: suite: expected a table ([suite])"),
    ],
)
def test_unreadable_case_files_are_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    """Syntax errors, encodings and shapes are reported with their line."""
    path = tmp_path / "cases.toml"
    path.write_bytes(content)
    with pytest.raises(CaseFileError) as refused:
        load_cases(path, source="cases.toml")
    assert any(str(p).startswith(problem) for p in refused.value.problems)


def test_a_missing_case_file_is_refused(tmp_path: Path) -> None:
    """A file that cannot be read is one problem naming it."""
    with pytest.raises(CaseFileError) as refused:
        load_cases(tmp_path / "nowhere.toml", source="nowhere.toml")
    assert refused.value.problems == (
        CaseProblem("", "the file cannot be read: No such file or directory", None, "nowhere.toml"),
    )


def test_case_file_errors_pickle_and_never_show_values(tmp_path: Path) -> None:
    """The error pickles; no message repeats a subject id or a value."""
    import pickle

    path = write(
        tmp_path,
        HEAD
        + """
[[cases]]
id = "x"
purpose = "prospection.postal"
record = { subject = "SUBJECT-SECRET", collected_for = "client.contract", collected_at = "soon" }
categories = ["identity.name"]
expect = "compatible"
""",
    )
    with pytest.raises(CaseFileError) as refused:
        load_cases(path)
    again = pickle.loads(pickle.dumps(refused.value))
    assert again.problems == refused.value.problems
    assert "SUBJECT-SECRET" not in str(refused.value)
    assert "soon" not in str(refused.value)


# --------------------------------------------------------------------------- running


def test_run_cases_compares_reason_and_rule(tmp_path: Path) -> None:
    """A case passes when the reason (and the rule, if named) match; explain() says why not."""
    results = run_cases(loads_cases(TWO_CASES))
    assert [r.passed for r in results] == [True, False]
    assert results[1].got == "prohibited"
    assert results[1].explain() == (
        "expected compatible, got prohibited (denied)\n"
        "rule: compatibility:c12.recruitment-to-prospection (expected "
        "compatibility:c2.contract-to-postal)\n"
        "explanation: compatibility entry c12.recruitment-to-prospection prohibits reusing "
        "hr.recruitment data for prospection.postal; only the data subject's consent or an "
        "authorisation can lift it\n"
        "categories: identity.name prohibited, contact.postal_address prohibited"
    )
    assert "cand-1" not in results[1].explain()


@pytest.mark.parametrize(("expect", "passed"), [("allowed", True), ("denied", False)])
def test_expect_allowed_or_denied_match_any_reason(expect: str, passed: bool) -> None:
    """'allowed' matches every allow reason, 'denied' every deny reason."""
    suite = loads_cases(TWO_CASES.replace('expect = "compatible"\n\n', f'expect = "{expect}"\n\n'))
    assert run_cases(suite)[0].passed is passed


def test_run_cases_accepts_a_register_or_an_engine() -> None:
    """The suite's register may be replaced by a register or a whole engine."""
    suite = loads_cases(TWO_CASES)
    register = make_register(
        ["client.contract", "prospection.postal", "hr.recruitment"],
        compatible=[("client.contract", "prospection.postal")],
    )
    assert [r.got for r in run_cases(suite, register)] == ["compatible", "incompatible"]
    assert [r.got for r in run_cases(suite, Engine(register))] == ["compatible", "incompatible"]


def test_format_results_prints_a_pass_fail_table() -> None:
    """The table has one row per case; failures are explained below it."""
    results = run_cases(loads_cases(TWO_CASES, source="two.toml"))
    assert format_results(results).splitlines() == [
        "result  case              purpose             expected                              "
        "          got",
        "PASS    customer-postal   prospection.postal  compatible                            "
        "          compatible",
        "FAIL    candidate-postal  prospection.postal  compatible "
        "compatibility:c2.contract-to-postal  prohibited "
        "compatibility:c12.recruitment-to-prospection",
        "",
        "failures:",
        "  candidate-postal (two.toml:12)",
        "    expected compatible, got prohibited (denied)",
        "    rule: compatibility:c12.recruitment-to-prospection (expected "
        "compatibility:c2.contract-to-postal)",
        "    explanation: compatibility entry c12.recruitment-to-prospection prohibits reusing "
        "hr.recruitment data for prospection.postal; only the data subject's consent or an "
        "authorisation can lift it",
        "    categories: identity.name prohibited, contact.postal_address prohibited",
    ]


def test_resolve_register_order_and_relative_paths(tmp_path: Path) -> None:
    """Command-line choices win; a suite's register path is relative to its file."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "register.toml").write_text(
        '[[categories]]\nid = "contact"\n\n[[purposes]]\nid = "a"\nlabel = "A"\n'
        'description = "Processing A"\nlegal_basis = "contract"\ncategories = ["contact"]\n'
        'retention = { duration = "P1Y", from = "collection" }\n',
        "utf-8",
    )
    path = write(
        tmp_path / "sub",
        '[suite]\nregister = "register.toml"\nat = 2026-03-01\n\n[[cases]]\nid = "a"\n'
        'purpose = "a"\nrecord = { subject = "s", collected_for = "a", collected_at = 2026-01-01 }'
        '\ncategories = ["contact"]\nexpect = "same-purpose"\n',
    )
    suite = load_cases(path)
    assert suite.register == str(tmp_path / "sub" / "register.toml")
    assert list(resolve_register(suite).purposes) == ["a"]
    assert resolve_register(suite, preset="cnil-commercial") is load_preset("cnil-commercial")
    assert run_cases(suite)[0].passed
    bare = loads_cases(TWO_CASES.replace('preset = "cnil-commercial"\n', ""), source="bare.toml")
    with pytest.raises(ConfigurationError) as missing:
        resolve_register(bare)
    assert str(missing.value) == (
        'bare.toml names no register. Remedy: add `register = "<file>"` or `preset = "<name>"` '
        "to its [suite] table, or pass --register / --preset"
    )
    with pytest.raises(RegisterError):
        resolve_register(bare, register=str(tmp_path / "nowhere.toml"))


# --------------------------------------------------------------------------- purposelimit test


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="purposelimit")
    add_test_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def test_test_command_passes_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    """`purposelimit test` on the shipped examples: a table of PASS rows, exit status 0."""
    assert run_cli(["test", *map(str, EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert f"{EXAMPLES[0]} (register: preset cnil-commercial, version 2026-11-29)" in out
    assert "FAIL" not in out
    assert out.endswith(" passed, 0 failed\n")


def test_test_command_prints_the_table_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing case gives the table, its explanation and exit status 1."""
    path = write(tmp_path, TWO_CASES)
    assert run_cli(["test", str(path)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{path} (register: preset cnil-commercial, version 2026-11-29)"
    assert lines[2].startswith("PASS    customer-postal")
    assert lines[3].startswith("FAIL    candidate-postal")
    assert lines[-1] == "2 cases: 1 passed, 1 failed"


def test_test_command_register_option_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--preset replaces the files' register; an unknown one is a usage error (2)."""
    path = write(tmp_path, TWO_CASES.replace('preset = "cnil-commercial"\n', ""))
    assert run_cli(["test", str(path)]) == 2
    assert "names no register" in capsys.readouterr().err
    assert run_cli(["test", str(path), "--preset", "cnil-commercial"]) == 1
    assert run_cli(["test", str(path), "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("purposelimit test: error: ")
    assert run_cli(["test", str(path), "--register", str(tmp_path / "nowhere.toml")]) == 2


def test_test_command_reports_refused_files_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused case file is listed on stderr (exit 1); the other files still run."""
    bad = write(tmp_path, "[suite\n", name="bad.toml")
    good = write(tmp_path, TWO_CASES.split('[[cases]]\nid = "candidate')[0], name="good.toml")
    assert run_cli(["test", str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"purposelimit test: case file {bad} refused: 1 problem\n")
    assert captured.out.endswith("1 case: 1 passed, 0 failed\n")


def test_register_and_preset_together_are_refused(tmp_path: Path) -> None:
    """--register and --preset exclude each other (argparse usage error)."""
    with pytest.raises(SystemExit) as usage:
        run_cli(["test", "x.toml", "--register", "r.toml", "--preset", "cnil-commercial"])
    assert usage.value.code == 2


def test_the_cli_runs_the_test_command_once_wired(capsys: pytest.CaptureFixture[str]) -> None:
    """`purposelimit test` through the main command line (skipped until it is wired)."""
    from purposelimit._cli import build_parser, main

    if "test" not in build_parser().format_help():
        pytest.skip("the test command is not wired into purposelimit._cli yet")
    assert main(["test", str(CNIL)]) == 0
    assert "0 failed" in capsys.readouterr().out


def test_reason_codes_are_the_protocols() -> None:
    """expect accepts exactly the stable reason codes of DESIGN §6."""
    suite = loads_cases(TWO_CASES)
    for reason in Reason:
        text = TWO_CASES.replace('expect = "compatible"\n\n', f'expect = "{reason.value}"\n\n')
        assert loads_cases(text).cases[0].expect == reason.value
    assert suite.cases[0].expect == "compatible"
