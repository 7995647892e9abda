"""The pytest plugin, run through pytester: marker, fixture, options, report file, case files.

The inner runs load the plugin with ``-p purposelimit.pytest_plugin`` and with
entry-point autoloading off, so they behave the same before and after the
``pytest11`` entry point is installed. Failure texts are pinned exactly.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from purposelimit._context import _CURRENT, set_engine

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ("-p", "purposelimit.pytest_plugin")

MODELS = """
from purposelimit import TaggedRecord, personal, record

@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")
    email: str = personal("contact.email")
    address: str = personal("contact.postal_address", default="")
"""

NO_PURPOSE_LINE = (
    "  - Lead.{field} ({category}) read outside any processing block, collected for "
    "client.contract: no-purpose. Remedy: wrap the read in `with processing(<purpose>, "
    "actor=...)`, naming the purpose the read serves"
)
PROHIBITED_REMEDY = (
    "the register prohibits reusing hr.recruitment data for prospection.postal: record the "
    "person's consent for prospection.postal, or an authorisation for this reuse"
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inner runs load only what they are told to; the context is clean before and after."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    token = set_engine(None, mode="enforce")
    context = _CURRENT.set(None)
    yield
    _CURRENT.reset(context)
    token.reset()


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with the record class of the examples in models.py."""
    pytester.makepyfile(models=MODELS)
    return pytester


def assert_lines(result: pytest.RunResult, expected: Sequence[str]) -> None:
    """The output holds *expected* as consecutive lines, exactly (the ``^^^^`` lines newer
    Pythons add under a traceback's source line aside)."""
    lines = [line for line in result.outlines if not re.fullmatch(r"\s*[\^~]+\s*", line)]
    for start, line in enumerate(lines):
        if line == expected[0] and lines[start : start + len(expected)] == list(expected):
            return
    shown = "\n".join(lines)
    raise AssertionError(f"lines not found in the output:\n{list(expected)}\n---\n{shown}")


# --------------------------------------------------------------------------- inert unless used


def test_the_plugin_leaves_an_existing_suite_unchanged(suite: pytest.Pytester) -> None:
    """Loaded, the plugin adds no fixture to unmarked tests and imports none of the toolkit."""
    suite.makepyfile(
        test_existing="""
        import sys
        from datetime import datetime, timezone
        from models import Lead
        from purposelimit import Collection, Engine, load_preset, processing

        def test_plain(request):
            assert "purposelimit" not in request.fixturenames
            for name in ("purposelimit.testing", "purposelimit._cases", "hypothesis"):
                assert name not in sys.modules, name

        def test_reads_in_blocks_still_work():
            engine = Engine(load_preset("cnil-commercial"))
            lead = Lead("Ada", "ada@example.org", subject="c-1",
                        collection=Collection("client.contract"),
                        collected_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
            with processing("client.contract", actor="t", engine=engine):
                assert lead.email == "ada@example.org"
        """
    )
    suite.makefile(".toml", register="[register]\n")  # a .toml that is not a case file
    result = suite.runpytest_subprocess(*PLUGIN, "--setup-plan", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=0)
    assert "purposelimit" not in result.stdout.str().replace("purposelimit/", "")
    result = suite.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "purposelimit" not in result.stdout.str()


def test_the_marker_is_declared(pytester: pytest.Pytester) -> None:
    """`--markers` documents it, and --strict-markers accepts it."""
    result = pytester.runpytest(*PLUGIN, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.purposelimit(purpose=None, register=None, *"])
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.purposelimit(strict=False)
        def test_marked(purposelimit):
            assert purposelimit.events is not None
        """
    )
    pytester.runpytest(*PLUGIN, "--strict-markers").assert_outcomes(passed=1)


def test_the_entry_point_is_declared() -> None:
    """pyproject.toml registers the plugin with pytest (entry point group pytest11)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert project.get("entry-points", {}).get("pytest11") == {
        "purposelimit": "purposelimit.pytest_plugin"
    }


def test_the_installed_entry_point_loads_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once installed, pytest loads the plugin with no -p option (skipped before installing)."""
    from importlib.metadata import entry_points

    if not any(ep.value == "purposelimit.pytest_plugin" for ep in entry_points(group="pytest11")):
        pytest.skip("the pytest11 entry point is not installed in this environment yet")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    pytester.makepyfile("def test_fixture(purposelimit):\n    assert purposelimit.engine is None\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the purposelimit fixture has no engine. Remedy:*"])


# --------------------------------------------------------------------------- marker and fixture


def test_the_marker_builds_the_engine_and_binds_the_purpose(suite: pytest.Pytester) -> None:
    """register= builds a frozen engine installed as default; purpose= wraps the test."""
    suite.makepyfile(
        test_marked="""
        from datetime import datetime, timezone
        import pytest
        from models import Lead
        from purposelimit import current_processing, get_engine
        from purposelimit.testing import FrozenClock

        @pytest.mark.purposelimit(purpose="prospection.postal", register="cnil-commercial",
                                  at="2026-03-01T10:00:00Z")
        def test_marked(purposelimit):
            scope = current_processing()
            assert (scope.purpose, scope.actor) == (
                "prospection.postal", "pytest:test_marked.py::test_marked")
            assert get_engine() is purposelimit.engine
            assert isinstance(purposelimit.clock, FrozenClock)
            assert purposelimit.now() == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
            lead = purposelimit.record(Lead, "Ada", "ada@example.org", "12 rue de la Paix",
                                       collected_for="client.contract")
            assert lead.address == "12 rue de la Paix"
            assert [e.reason.value for e in purposelimit.events] == ["compatible"]

        @pytest.mark.purposelimit("client.contract", register="cnil-commercial")
        def test_positional_purpose(purposelimit):
            assert current_processing().purpose == "client.contract"

        def test_after():
            assert current_processing() is None and get_engine() is None
        """
    )
    suite.runpytest(*PLUGIN, "-p", "no:randomly").assert_outcomes(passed=3)


def test_the_marker_mode_and_module_level_marking(suite: pytest.Pytester) -> None:
    """mode='monitor' lets denials through, recorded; pytestmark marks every test of a module."""
    suite.makepyfile(
        test_monitor="""
        import pytest
        from models import Lead
        from purposelimit import default_mode

        pytestmark = pytest.mark.purposelimit(register="cnil-commercial", mode="monitor")

        def test_monitored(purposelimit):
            assert default_mode() == "monitor"
            candidate = purposelimit.record(Lead, "Bob", collected_for="hr.recruitment")
            with purposelimit.processing("prospection.postal"):
                assert candidate.name == "Bob"
            (event,) = purposelimit.events.monitored
            assert (event.reason.value, event.mode) == ("prohibited", "monitor")

        def test_consent_and_objection(purposelimit):
            lead = purposelimit.record(Lead, collected_for="client.contract", subject="c-2")
            purposelimit.objection("c-2")
            purposelimit.consent("c-2", "newsletter.editorial")
            with purposelimit.processing("newsletter.editorial"):
                lead.email
            assert purposelimit.events.reasons[-1].value == "objection"
        """
    )
    suite.runpytest(*PLUGIN).assert_outcomes(passed=2)


def test_the_fixture_uses_the_installed_default_engine(suite: pytest.Pytester) -> None:
    """Without register=, the fixture works with the engine a conftest installed."""
    suite.makeconftest(
        """
        import pytest
        from purposelimit import Engine, load_preset, set_engine

        @pytest.fixture(autouse=True)
        def engine():
            engine = Engine(load_preset("cnil-commercial"))
            with set_engine(engine):
                yield engine
        """
    )
    suite.makepyfile(
        test_default="""
        import pytest
        from purposelimit import ConfigurationError

        def test_default(purposelimit, engine):
            assert purposelimit.engine is engine
            with pytest.raises(ConfigurationError, match="the engine's clock is not frozen"):
                purposelimit.clock

        @pytest.mark.purposelimit(at="2026-03-01T10:00:00Z")
        def test_frozen(purposelimit, engine):
            assert purposelimit.clock() == engine.now()
            purposelimit.clock.shift("P1D")
            assert engine.now().day == 2
        """
    )
    suite.runpytest(*PLUGIN).assert_outcomes(passed=2)


def test_registers_from_files_and_the_ini_option(suite: pytest.Pytester) -> None:
    """register= takes a file relative to the rootdir; purposelimit_register sets a default."""
    suite.makefile(
        ".toml",
        register="""
        [register]
        version = "v7"

        [[categories]]
        id = "identity"

        [[categories]]
        id = "identity.name"

        [[purposes]]
        id = "client.contract"
        label = "Contracts"
        description = "Managing contracts"
        legal_basis = "contract"
        categories = ["identity"]
        retention = { duration = "P1Y", from = "collection" }
        """,
    )
    suite.makeini("[pytest]\npurposelimit_register = cnil-commercial\n")
    suite.makepyfile(
        test_files="""
        import pytest

        @pytest.mark.purposelimit(register="register.toml")
        def test_file(purposelimit):
            assert purposelimit.register.version == "v7"

        def test_ini(purposelimit):
            assert purposelimit.register.purpose("hr.recruitment") is not None
        """
    )
    suite.runpytest(*PLUGIN).assert_outcomes(passed=2)


def test_marker_mistakes_fail_the_setup_with_a_remedy(suite: pytest.Pytester) -> None:
    """A marker that cannot work errors at setup; the message says how to fix it."""
    suite.makepyfile(
        test_mistakes="""
        import pytest

        @pytest.mark.purposelimit(purpos="client.contract")
        def test_typo():
            pass

        @pytest.mark.purposelimit(purpose="client.contract")
        def test_no_engine():
            pass

        @pytest.mark.purposelimit(register="nowhere.toml")
        def test_no_file():
            pass

        @pytest.mark.purposelimit(register="cnil-commercial", mode="loud")
        def test_mode():
            pass

        def test_no_register(purposelimit):
            purposelimit.engine
        """
    )
    result = suite.runpytest(*PLUGIN)
    result.assert_outcomes(errors=4, failed=1)
    root = suite.path
    for line in [
        "purposelimit: @pytest.mark.purposelimit: unknown argument purpos= (did you mean "
        "purpose=?); it takes purpose=, register=, mode=, at=, strict=",
        "purposelimit: purpose= needs an engine. Remedy: give the marker register=... (a "
        "register file or a preset name), set purposelimit_register in the pytest "
        "configuration, or install a default engine with purposelimit.set_engine(engine)",
        f"purposelimit: register 'nowhere.toml': no such file ({root}/nowhere.toml). Remedy: "
        f"give a register file relative to the rootdir ({root}), an absolute path, or a preset "
        "name (cnil-commercial)",
        "purposelimit: @pytest.mark.purposelimit: mode= is 'enforce' or 'monitor', not 'loud'",
    ]:
        assert_lines(result, [line])
    assert_lines(
        result,
        [
            ">       purposelimit.engine",
            "E       purposelimit._errors.ConfigurationError: the purposelimit fixture has no "
            "engine. Remedy: mark the test with @pytest.mark.purposelimit(register=...) (a "
            "register file or a preset name), set purposelimit_register in the pytest "
            "configuration, or install a default engine with purposelimit.set_engine(engine) "
            "in a fixture",
        ],
    )


# --------------------------------------------------------------------------- failure messages


def test_assertion_failures_list_every_offending_read(suite: pytest.Pytester) -> None:
    """assert_allowed / assert_denied fail at the test's line, one offending read per line."""
    suite.makepyfile(
        test_assertions="""
        import pytest
        from models import Lead
        from purposelimit.testing import assert_allowed, assert_denied

        pytestmark = pytest.mark.purposelimit(register="cnil-commercial", mode="monitor")

        def test_allowed(purposelimit):
            candidate = purposelimit.record(Lead, collected_for="hr.recruitment")
            with assert_allowed(), purposelimit.processing("prospection.postal"):
                candidate.name
                candidate.address
                candidate.name

        def test_denied(purposelimit):
            customer = purposelimit.record(Lead, collected_for="client.contract")
            with assert_denied(reason="prohibited"):
                with purposelimit.processing("prospection.email_b2c"):
                    customer.email
        """
    )
    result = suite.runpytest(*PLUGIN)
    result.assert_outcomes(failed=2)
    assert_lines(
        result,
        [
            '>       with assert_allowed(), purposelimit.processing("prospection.postal"):',
            "E       AssertionError: assert_allowed(): 3 of 3 guarded reads were denied:",
            "E         - Lead.name (identity.name) read for prospection.postal, collected for "
            f"hr.recruitment: prohibited (2 reads). Remedy: {PROHIBITED_REMEDY}",
            "E         - Lead.address (contact.postal_address) read for prospection.postal, "
            f"collected for hr.recruitment: prohibited. Remedy: {PROHIBITED_REMEDY}",
        ],
    )
    assert_lines(
        result,
        [
            'E       AssertionError: assert_denied(reason="prohibited"): none of the 1 guarded '
            "read was denied:",
            "E         - Lead.email (contact.email) read for prospection.email_b2c, collected "
            "for client.contract: compatible (allowed)",
        ],
    )
    assert "<contact.email>" not in result.stdout.str()  # never the value


# --------------------------------------------------------------------------- strict mode

STRICT_SUITE = """
import pytest
from models import Lead
from purposelimit import ProcessingDenied

pytestmark = pytest.mark.purposelimit(register="cnil-commercial", mode="monitor")

@pytest.fixture
def lead(purposelimit):
    return purposelimit.record(Lead, "Ada", "ada@example.org", collected_for="client.contract")

def test_inside(purposelimit, lead):
    with purposelimit.processing("client.contract"):
        assert lead.name == "Ada"

def test_outside(lead):
    lead.name
    lead.email
    lead.name

@pytest.mark.purposelimit(register="cnil-commercial", mode="enforce")
def test_swallowed(lead):
    try:
        lead.email
    except ProcessingDenied:
        pass

@pytest.mark.purposelimit(register="cnil-commercial", mode="monitor", strict=False)
def test_exempt(lead):
    lead.email

def test_already_failing(lead):
    lead.email
    assert 1 == 2

@pytest.fixture
def greeting(lead):
    return "Dear " + lead.name

def test_fixture_reads(greeting):
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected(lead):
    lead.email
    assert False
"""


def test_strict_mode_fails_reads_outside_processing(suite: pytest.Pytester) -> None:
    """--purposelimit-strict fails the test that read outside a block, listing every read."""
    suite.makepyfile(test_strict=STRICT_SUITE)
    result = suite.runpytest(*PLUGIN, "--purposelimit-strict")
    result.assert_outcomes(passed=2, failed=3, errors=1, xfailed=1)
    assert_lines(
        result,
        [
            "purposelimit --purposelimit-strict: 3 guarded reads outside any processing block:",
            NO_PURPOSE_LINE.format(field="name", category="identity.name").replace(
                "no-purpose.", "no-purpose (2 reads)."
            ),
            NO_PURPOSE_LINE.format(field="email", category="contact.email"),
        ],
    )
    assert_lines(
        result,
        [
            "purposelimit --purposelimit-strict: 1 guarded read outside any processing block:",
            NO_PURPOSE_LINE.format(field="email", category="contact.email"),
        ],
    )
    result.stdout.fnmatch_lines(
        [
            "FAILED test_strict.py::test_outside - purposelimit*",
            "FAILED test_strict.py::test_swallowed - purposelimit*",
            "FAILED test_strict.py::test_already_failing - assert 1 == 2",
            "ERROR test_strict.py::test_fixture_reads - purposelimit*",
        ],
        consecutive=False,
    )
    assert_lines(
        result,
        [
            "E       assert 1 == 2",
            "",
            "test_strict.py:33: AssertionError",
        ],
    )
    header = result.outlines.index("test_strict.py:33: AssertionError") + 1
    assert re.fullmatch(r"-+ purposelimit --purposelimit-strict -+", result.outlines[header])
    assert result.outlines[header + 1 : header + 3] == [
        "purposelimit --purposelimit-strict: 1 guarded read outside any processing block:",
        NO_PURPOSE_LINE.format(field="email", category="contact.email"),
    ]
    assert_lines(
        result,
        [
            "purposelimit --purposelimit-strict: 1 guarded read outside any processing block:",
            NO_PURPOSE_LINE.format(field="name", category="identity.name"),
        ],
    )


def test_strict_mode_is_off_without_the_option(suite: pytest.Pytester) -> None:
    """Without the option the same suite runs as it always did."""
    suite.makepyfile(test_strict=STRICT_SUITE)
    result = suite.runpytest(*PLUGIN)
    result.assert_outcomes(passed=5, failed=1, xfailed=1)
    assert "--purposelimit-strict" not in result.stdout.str()


# --------------------------------------------------------------------------- the report


def test_the_report_writes_the_access_map(suite: pytest.Pytester) -> None:
    """--purposelimit-report writes the access map as JSON and prints one summary line."""
    suite.makepyfile(
        test_report="""
        import pytest
        from models import Lead

        pytestmark = pytest.mark.purposelimit(register="cnil-commercial")

        def test_postal(purposelimit):
            lead = purposelimit.record(Lead, collected_for="client.contract", subject="SUBJ-1")
            with purposelimit.processing("prospection.postal"):
                lead.name
                lead.name
                lead.address

        def test_candidate(purposelimit):
            lead = purposelimit.record(Lead, collected_for="hr.recruitment", subject="SUBJ-2")
            with purposelimit.assert_denied(reason="prohibited"):
                with purposelimit.processing("prospection.postal"):
                    lead.name

        @pytest.mark.purposelimit(register="cnil-commercial", mode="monitor")
        def test_outside(purposelimit):
            lead = purposelimit.record(Lead, collected_for="client.contract", subject="SUBJ-3")
            lead.email

        def test_nothing():
            pass
        """
    )
    result = suite.runpytest(*PLUGIN, "--purposelimit-report=out/map.json")
    result.assert_outcomes(passed=4)
    path = suite.path / "out" / "map.json"
    assert_lines(
        result,
        [
            "purposelimit: 5 guarded reads in 3 tests (3 allowed, 2 denied, 1 outside "
            f"processing); access map written to {path}"
        ],
    )
    text = path.read_text("utf-8")
    assert "SUBJ-" not in text
    data = json.loads(text)

    def read(
        field: str,
        category: str,
        purpose: str | None,
        collected_for: str,
        reason: str,
        rule: str,
        count: int,
        mode: str = "enforce",
    ) -> dict[str, object]:
        return {
            "record_type": "Lead",
            "field": field,
            "category": category,
            "purpose": purpose,
            "collected_for": collected_for,
            "allowed": reason in ("compatible",),
            "reason": reason,
            "rule": rule,
            "mode": mode,
            "monitored": mode == "monitor" and reason not in ("compatible",),
            "count": count,
        }

    assert data == {
        "format": "purposelimit-access-map/1",
        "summary": {
            "tests": 3,
            "reads": 5,
            "allowed": 3,
            "denied": 2,
            "monitored": 1,
            "outside_processing": 1,
        },
        "access": [
            {
                "purpose": "prospection.postal",
                "record_type": "Lead",
                "field": "address",
                "category": "contact.postal_address",
                "collected_for": ["client.contract"],
                "decisions": {"compatible": 1},
                "tests": ["test_report.py::test_postal"],
            },
            {
                "purpose": "prospection.postal",
                "record_type": "Lead",
                "field": "name",
                "category": "identity.name",
                "collected_for": ["client.contract", "hr.recruitment"],
                "decisions": {"compatible": 2, "prohibited": 1},
                "tests": ["test_report.py::test_candidate", "test_report.py::test_postal"],
            },
            {
                "purpose": None,
                "record_type": "Lead",
                "field": "email",
                "category": "contact.email",
                "collected_for": ["client.contract"],
                "decisions": {"no-purpose": 1},
                "tests": ["test_report.py::test_outside"],
            },
        ],
        "tests": [
            {
                "test": "test_report.py::test_candidate",
                "outcome": "passed",
                "reads": [
                    read(
                        "name",
                        "identity.name",
                        "prospection.postal",
                        "hr.recruitment",
                        "prohibited",
                        "compatibility:c12.recruitment-to-prospection",
                        1,
                    ),
                ],
            },
            {
                "test": "test_report.py::test_outside",
                "outcome": "passed",
                "reads": [
                    read(
                        "email",
                        "contact.email",
                        None,
                        "client.contract",
                        "no-purpose",
                        "context",
                        1,
                        mode="monitor",
                    ),
                ],
            },
            {
                "test": "test_report.py::test_postal",
                "outcome": "passed",
                "reads": [
                    read(
                        "address",
                        "contact.postal_address",
                        "prospection.postal",
                        "client.contract",
                        "compatible",
                        "compatibility:c2.contract-to-postal",
                        1,
                    ),
                    read(
                        "name",
                        "identity.name",
                        "prospection.postal",
                        "client.contract",
                        "compatible",
                        "compatibility:c2.contract-to-postal",
                        2,
                    ),
                ],
            },
        ],
    }


# --------------------------------------------------------------------------- case files

CASES = """
[suite]
preset = "cnil-commercial"
at = 2026-03-01T10:00:00Z

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
"""


def test_case_files_are_collected_one_test_per_case(pytester: pytest.Pytester) -> None:
    """test_*.purposelimit.toml files become test items; a failing case says why."""
    pytester.makefile(".purposelimit.toml", test_rules=CASES)
    result = pytester.runpytest(*PLUGIN, "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "test_rules.purposelimit.toml::customer-postal PASSED*",
            "test_rules.purposelimit.toml::candidate-postal FAILED*",
        ]
    )
    assert_lines(
        result,
        [
            "purposelimit case candidate-postal (test_rules.purposelimit.toml:12):",
            "  Recruitment data may not feed prospection.",
            "  expected compatible, got prohibited (denied)",
            "  rule: compatibility:c12.recruitment-to-prospection",
            "  explanation: compatibility entry c12.recruitment-to-prospection prohibits reusing "
            "hr.recruitment data for prospection.postal; only the data subject's consent or an "
            "authorisation can lift it",
            "  categories: identity.name prohibited, contact.postal_address prohibited",
        ],
    )
    assert "cand-1" not in result.stdout.str()


def test_the_shipped_examples_pass_as_pytest_items(pytester: pytest.Pytester) -> None:
    """The example case files, collected through a path pattern, all pass."""
    for source in sorted((ROOT / "examples" / "cases").glob("*.toml")):
        (pytester.path / "compliance").mkdir(exist_ok=True)
        (pytester.path / "compliance" / source.name).write_text(source.read_text("utf-8"))
    pytester.makeini("[pytest]\npurposelimit_cases = compliance/*.toml\n")
    result = pytester.runpytest(*PLUGIN)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 20
    assert "failed" not in outcomes
    assert "error" not in outcomes
    assert "errors" not in outcomes


def test_case_collection_is_opt_in(pytester: pytest.Pytester) -> None:
    """Other .toml files are never read; an empty purposelimit_cases collects nothing."""
    pytester.makefile(".toml", rules=CASES, **{"pyproject": "[tool.x]\n"})
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    pytester.makefile(".purposelimit.toml", test_rules=CASES)
    pytester.makeini("[pytest]\npurposelimit_cases =\n")
    assert pytester.runpytest(*PLUGIN).ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_a_refused_case_file_is_a_collection_error(pytester: pytest.Pytester) -> None:
    """Every problem of the file is shown, with its line and field."""
    pytester.makefile(
        ".purposelimit.toml",
        test_bad="""
        [[cases]]
        id = "x"
        purpose = "prospection.postal"
        record = { subject = "c", collected_for = "client.contract", collected_at = 2026-01-10 }
        categories = ["identity.name"]
        expcet = "compatible"
        """,
    )
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(errors=1)
    assert_lines(
        result,
        [
            "case file test_bad.purposelimit.toml refused: 3 problems",
            "  test_bad.purposelimit.toml:1: cases[0].expect: missing: say what the register "
            "must decide (a reason code)",
            "  test_bad.purposelimit.toml:1: cases[0].at: missing: give the case's instant, or a "
            "default in [suite] at",
            "  test_bad.purposelimit.toml:6: cases[0].expcet: unknown key 'expcet' (did you mean "
            "'expect'?); allowed: id, description, purpose, at, record, categories, consents, "
            "objections, authorisations, expect, rule, and names beginning with 'x-' (ignored)",
        ],
    )


def test_a_case_file_without_register_uses_the_ini_or_explains(pytester: pytest.Pytester) -> None:
    """The ini option gives the register; without it, each case says how to name one."""
    pytester.makefile(
        ".purposelimit.toml", test_rules=CASES.replace('preset = "cnil-commercial"\n', "")
    )
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(failed=2)
    assert_lines(
        result,
        [
            "purposelimit case customer-postal: test_rules.purposelimit.toml names no register. "
            'Remedy: add `register = "<file>"` or `preset = "<name>"` to its [suite] table, or '
            "pass --register / --preset"
        ],
    )
    pytester.makeini("[pytest]\npurposelimit_register = cnil-commercial\n")
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1, failed=1)


# --------------------------------------------------------------------------- the docs

_DOC_FILE = re.compile(r"^```(py|toml)[ \t]*\n# file: (\S+)\n(.*?)^```[ \t]*$", re.S | re.M)


def test_the_documented_pytest_examples_pass(pytester: pytest.Pytester) -> None:
    """Every file example of docs/testing.md runs under the plugin and passes."""
    text = (ROOT / "docs" / "testing.md").read_text("utf-8")
    files = _DOC_FILE.findall(text)
    assert len(files) >= 2
    for _kind, name, body in files:
        (pytester.path / name).write_text(body, "utf-8")
    result = pytester.runpytest(*PLUGIN, "--purposelimit-strict")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 6
    assert set(outcomes) <= {"passed", "warnings"}
