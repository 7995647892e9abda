"""Table-driven compliance cases: a TOML file of decisions the register must give.

A data-protection officer reviews a table, not Python: each case is a record's
collection tag, the data categories read, the processing purpose, the instant
and the data subject's consents, objections and authorisations, with the
decision the register must give — like a policy test of an access-control
engine (principal × resource × action → expected effect, with a pinned clock).
The same files run as pytest items (through the ``purposelimit`` plugin) and
from the command line (``purposelimit test CASES.toml``), which prints a
pass/fail table and exits non-zero on a failure.

A case is a request of the JSON decision protocol (DESIGN §6) written in TOML,
plus an ``id`` and the expected outcome::

    [suite]
    preset = "cnil-commercial"        # or: register = "register.toml" (relative to this file)
    at = 2026-03-01T10:00:00Z         # the default instant of every case

    [[cases]]
    id = "recruitment-to-postal-prospection"
    purpose = "prospection.postal"
    record = { subject = "cand-1", collected_for = "hr.recruitment",
               collected_at = 2026-01-10T09:00:00Z }
    categories = ["identity.name", "contact.postal_address"]
    expect = "prohibited"             # a reason code, or "allowed" / "denied"
    rule = "compatibility:c12.recruitment-to-prospection"   # optional

A bad file is refused with every problem at once, each naming the file, the
line and the field (``cases.toml:14: cases[2].record.collected_at: a date-time
needs an offset``). No message or report ever shows a personal value: cases
hold ids and dates only, and decisions never hold a value.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, TextIO

import attrs

from ._engine import Engine
from ._errors import ConfigurationError, Problem, PurposeLimitError, RegisterError
from ._loader import _UNPARSED, _LineMap, _parse_toml
from ._model import Decision, Reason
from ._protocol import DecideRequest, ProtocolError, decide_request, parse_request
from ._register import Register

__all__ = [
    "EXPECT_WORDS",
    "Case",
    "CaseFileError",
    "CaseProblem",
    "CaseResult",
    "CaseSuite",
    "add_test_command",
    "format_results",
    "load_cases",
    "loads_cases",
    "resolve_register",
    "run_case",
    "run_cases",
    "run_test_command",
]

#: Besides a reason code, what ``expect`` may say: any allow reason, any deny reason.
EXPECT_WORDS = ("allowed", "denied")

_TOP_KEYS = ("suite", "cases")
_SUITE_KEYS = ("name", "description", "register", "preset", "at")
_CASE_KEYS = (
    "id",
    "description",
    "purpose",
    "at",
    "record",
    "categories",
    "consents",
    "objections",
    "authorisations",
    "expect",
    "rule",
)
_OWN_KEYS = ("id", "description", "expect", "rule")
_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_REASONS = tuple(r.value for r in Reason)


# --------------------------------------------------------------------------- problems


@attrs.frozen(slots=True)
class CaseProblem(Problem):
    """One problem found in a case file: its path (``cases[2].record.collected_at``),
    message (never a value), and line and file when known."""


class CaseFileError(PurposeLimitError, ValueError):
    """A case file was refused; :attr:`problems` lists every problem found, all at once.

    ``str()`` gives one line per problem, each with its file, line and field path.
    """

    def __init__(self, problems: Iterable[CaseProblem], source: str | None = None) -> None:
        self.problems: tuple[CaseProblem, ...] = tuple(problems)
        self.source = source
        count = len(self.problems)
        head = f"case file {source} refused" if source else "case file refused"
        lines = [f"{head}: {count} problem{'s' if count != 1 else ''}"]
        lines.extend(f"  {p}" for p in self.problems)
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.source))


# --------------------------------------------------------------------------- values


@attrs.frozen(slots=True)
class Case:
    """One compliance case: a decision request and the outcome the register must give.

    Attributes:
        id: the case's id, unique in its file (the pytest item's name).
        request: the decision request (DESIGN §6), with an aware ``at``.
        expect: a reason code (``"prohibited"``), ``"allowed"`` or ``"denied"``.
        rule: the ``kind:id`` of the rule that must decide, or ``None``.
        description: free text for the reviewer.
        line: the line of the case in its file, when known.
        file: the file, when the case came from one.
    """

    id: str
    request: DecideRequest
    expect: str
    rule: str | None = None
    description: str = ""
    line: int | None = None
    file: str | None = None

    @property
    def location(self) -> str:
        """``file:line`` (or what is known of it), for messages."""
        if self.file is None:
            return f"line {self.line}" if self.line is not None else "(text)"
        return self.file if self.line is None else f"{self.file}:{self.line}"


@attrs.frozen(slots=True)
class CaseSuite:
    """The cases of one file, with the register they are written against.

    Attributes:
        cases: the cases, in file order.
        name: the suite's name (``[suite] name``), or ``""``.
        description: free text.
        register: the register file named in ``[suite] register``, resolved
            against the case file's folder; ``None`` when not named.
        preset: the preset named in ``[suite] preset``; ``None`` when not named.
        file: the case file, when the suite came from one.
    """

    cases: tuple[Case, ...]
    name: str = ""
    description: str = ""
    register: str | None = None
    preset: str | None = None
    file: str | None = None


@attrs.frozen(slots=True)
class CaseResult:
    """The outcome of one case.

    Attributes:
        case: the case.
        decision: the engine's decision.
        passed: whether the decision matches ``case.expect`` (and ``case.rule``).
    """

    case: Case
    decision: Decision
    passed: bool

    @property
    def got(self) -> str:
        """The decision's reason code."""
        return self.decision.reason.value

    def explain(self) -> str:
        """Why the case failed (or what it decided), in a few lines; never a value."""
        decision = self.decision
        verdict = "allowed" if decision.allowed else "denied"
        lines = [f"expected {self.case.expect}, got {decision.reason.value} ({verdict})"]
        rule = f"rule: {decision.rule}"
        if self.case.rule is not None and self.case.rule != decision.rule:
            rule += f" (expected {self.case.rule})"
        lines.append(rule)
        lines.append(f"explanation: {decision.explanation}")
        if len(decision.categories) > 1:
            lines.append(
                "categories: "
                + ", ".join(f"{c.category} {c.reason.value}" for c in decision.categories)
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------- loading


def _plain(value: Any) -> Any:
    """TOML values in the JSON shapes of DESIGN §6: dates and times become ISO strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _typed(value: object, expected: str) -> str:
    from ._convert import describe_value

    return f"expected {expected}, found {describe_value(value)}"


class _Reader:
    def __init__(self, file: str | None, text: str) -> None:
        self.file = file
        self.lines = _LineMap(text, "toml")
        self.problems: list[CaseProblem] = []

    def problem(self, path: str, message: str, line: int | None = None) -> None:
        if line is None:
            line = self.lines.line(path)
        self.problems.append(CaseProblem(path, message, line, self.file))

    def keys(self, table: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        from ._protocol import unknown_key_message

        for key in table:
            if key not in allowed and not key.startswith("x-"):
                where = f"{path}.{key}" if path else key
                self.problem(where, unknown_key_message(key, allowed))


def _protocol_problem(reader: _Reader, base: str, error: ProtocolError) -> None:
    text = str(error)
    head, sep, rest = text.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z0-9_.\[\]-]+", head):
        path, message = f"{base}.{head}", rest
    else:
        path, message = base, text
    reader.problem(path, message.replace("a JSON object", "a table").replace("JSON", "TOML"))


def _instant_text(reader: _Reader, path: str, value: object) -> str | None:
    from ._protocol import parse_instant

    plain = _plain(value)
    if not isinstance(plain, str):
        reader.problem(path, _typed(value, "a date-time with an offset"))
        return None
    try:
        parse_instant(plain, path)
    except ProtocolError as error:
        reader.problem(path, str(error).partition(": ")[2])
        return None
    return plain


def _suite(reader: _Reader, data: Mapping[str, Any], base_dir: str | None) -> dict[str, Any]:
    raw = data.get("suite", {})
    found: dict[str, Any] = {"name": "", "description": "", "register": None, "preset": None}
    found["at"] = None
    found["has_at"] = False
    if not isinstance(raw, dict):
        reader.problem("suite", _typed(raw, "a table ([suite])"))
        return found
    reader.keys(raw, "suite", _SUITE_KEYS)
    for key in ("name", "description", "register", "preset"):
        if key in raw:
            if isinstance(raw[key], str) and raw[key].strip():
                found[key] = raw[key]
            else:
                reader.problem(f"suite.{key}", _typed(raw[key], "a non-empty string"))
    if found["register"] is not None and found["preset"] is not None:
        reader.problem("suite.preset", "name a register or a preset, not both")
    if found["register"] is not None:
        name = os.path.expanduser(found["register"])
        if base_dir is not None and not os.path.isabs(name):
            name = os.path.join(base_dir, name)
        found["register"] = os.path.normpath(name)
    found["has_at"] = "at" in raw
    if "at" in raw:
        found["at"] = _instant_text(reader, "suite.at", raw["at"])
    return found


def _expect(reader: _Reader, path: str, value: object) -> str | None:
    if not isinstance(value, str):
        reader.problem(path, _typed(value, "a reason code, 'allowed' or 'denied'"))
        return None
    if value in _REASONS or value in EXPECT_WORDS:
        return value
    choices = [*_REASONS, *EXPECT_WORDS]
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = value if len(value) <= 40 else value[:37] + "..."
    reader.problem(
        path,
        f"{shown!r} is not a reason code{hint}; expect a reason code "
        f"({', '.join(_REASONS)}) or 'allowed' / 'denied'",
    )
    return None


def _with_subject(items: object, subject: object) -> object:
    """Consents and objections without a ``subject`` are about the case's record."""
    if not isinstance(items, list) or not isinstance(subject, str):
        return items
    return [
        {"subject": subject, **item} if isinstance(item, dict) and "subject" not in item else item
        for item in items
    ]


def _case(
    reader: _Reader,
    index: int,
    raw: object,
    default_at: str | None,
    seen: dict[str, str],
    *,
    suite_at: bool = False,
) -> Case | None:
    base = f"cases[{index}]"
    if not isinstance(raw, dict):
        reader.problem(base, _typed(raw, "a table ([[cases]])"))
        return None
    reader.keys(raw, base, _CASE_KEYS)
    before = len(reader.problems)
    case_id = raw.get("id")
    if not isinstance(case_id, str) or not _CASE_ID.match(case_id):
        if case_id is None:
            reader.problem(f"{base}.id", "missing: every case needs an id (its test name)")
        else:
            reader.problem(
                f"{base}.id",
                "expected an id of letters, digits, '_', '-' and '.', starting with a letter "
                "or digit",
            )
        case_id = None
    elif case_id in seen:
        reader.problem(f"{base}.id", f"duplicate id {case_id!r} (first used at {seen[case_id]})")
    else:
        seen[case_id] = base
    description = raw.get("description", "")
    if not isinstance(description, str):
        reader.problem(f"{base}.description", _typed(description, "a string"))
        description = ""
    expect = None
    if "expect" not in raw:
        reader.problem(
            f"{base}.expect", "missing: say what the register must decide (a reason code)"
        )
    else:
        expect = _expect(reader, f"{base}.expect", raw["expect"])
    rule = raw.get("rule")
    if rule is not None and (not isinstance(rule, str) or not rule.strip()):
        reader.problem(f"{base}.rule", _typed(rule, "a rule as 'kind:id'"))
        rule = None
    request: dict[str, Any] = {
        k: _plain(v) for k, v in raw.items() if k in _CASE_KEYS and k not in _OWN_KEYS
    }
    if "at" in raw:
        at = _instant_text(reader, f"{base}.at", raw["at"])
    elif default_at is not None:
        at = default_at
    else:
        if not suite_at:  # an unreadable [suite] at is reported once, there
            reader.problem(
                f"{base}.at", "missing: give the case's instant, or a default in [suite] at"
            )
        at = None
    request["at"] = at
    if "purpose" not in request:
        request["purpose"] = None  # let the protocol say it is missing
        reader.problem(f"{base}.purpose", "missing: name the processing purpose")
    record = request.get("record")
    subject = record.get("subject") if isinstance(record, dict) else None
    for key in ("consents", "objections"):
        if key in request:
            request[key] = _with_subject(request[key], subject)
    try:
        parsed = parse_request(request)
    except ProtocolError as error:
        _protocol_problem(reader, base, error)
        return None
    if len(reader.problems) > before or at is None:
        return None
    assert case_id is not None  # checked above
    assert expect is not None
    return Case(
        id=case_id,
        request=parsed,
        expect=expect,
        rule=rule,
        description=description,
        line=reader.lines.line(base),
        file=reader.file,
    )


def loads_cases(text: str, *, source: str | None = None, base_dir: str | None = None) -> CaseSuite:
    """Read the cases of a case file's text.

    Args:
        text: the TOML text.
        source: the file name to show in problems.
        base_dir: the folder ``[suite] register`` is relative to (the file's
            folder); the current folder when ``None``.

    Returns:
        The :class:`CaseSuite`.

    Raises:
        CaseFileError: every problem of the text at once, each with its line
            and field path.
    """
    reader = _Reader(source, text)
    data, syntax = _parse_toml(text)
    if data is _UNPARSED:
        raise CaseFileError([CaseProblem(p, m, line, source) for p, m, line in syntax], source)
    reader.keys(data, "", _TOP_KEYS)
    suite = _suite(reader, data, base_dir)
    raw_cases = data.get("cases")
    cases: list[Case] = []
    if raw_cases is None:
        reader.problem("cases", "a case file lists at least one case in [[cases]]", 1)
    elif not isinstance(raw_cases, list) or not raw_cases:
        reader.problem("cases", _typed(raw_cases, "a non-empty array of tables ([[cases]])"))
    else:
        seen: dict[str, str] = {}
        for index, raw in enumerate(raw_cases):
            case = _case(reader, index, raw, suite["at"], seen, suite_at=suite["has_at"])
            if case is not None:
                cases.append(case)
    if reader.problems:
        ordered = sorted(reader.problems, key=lambda p: p.line if p.line is not None else 1 << 30)
        raise CaseFileError(ordered, source)
    return CaseSuite(
        cases=tuple(cases),
        name=suite["name"],
        description=suite["description"],
        register=suite["register"],
        preset=suite["preset"],
        file=source,
    )


def load_cases(path: str | os.PathLike[str], *, source: str | None = None) -> CaseSuite:
    """Read the case file at *path* (TOML, UTF-8).

    Args:
        path: the case file.
        source: the name shown in problems and case locations; *path* as given
            when omitted.

    Returns:
        The :class:`CaseSuite`; ``[suite] register`` is resolved against the
        file's folder.

    Raises:
        CaseFileError: the file cannot be read or is refused; every problem at
            once, each naming the file, the line and the field.
    """
    name = os.fspath(path)
    shown = name if source is None else source
    try:
        with open(name, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CaseFileError(
            [CaseProblem("", f"the file cannot be read: {reason}", None, shown)], shown
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise CaseFileError(
            [CaseProblem("", "the file is not UTF-8 text", line, shown)], shown
        ) from None
    return loads_cases(text, source=shown, base_dir=os.path.dirname(os.path.abspath(name)))


# --------------------------------------------------------------------------- running


def resolve_register(
    suite: CaseSuite, *, register: str | None = None, preset: str | None = None
) -> Register:
    """The register *suite* runs against: *register* or *preset* if given, else the file's.

    Args:
        suite: the cases.
        register: a register file that overrides the suite's.
        preset: a preset name that overrides the suite's.

    Raises:
        ConfigurationError: no register at all, or an unknown preset.
        RegisterError: the register file cannot be read or is refused.
    """
    from ._loader import load_register
    from ._presets import load_preset

    if register is not None:
        return load_register(register)
    if preset is not None:
        return load_preset(preset)
    if suite.register is not None:
        return load_register(suite.register)
    if suite.preset is not None:
        return load_preset(suite.preset)
    where = suite.file or "the cases"
    raise ConfigurationError(
        f'{where} names no register. Remedy: add `register = "<file>"` or '
        '`preset = "<name>"` to its [suite] table, or pass --register / --preset'
    )


def _matches(case: Case, decision: Decision) -> bool:
    expect = case.expect
    if expect == "allowed":
        ok = decision.allowed
    elif expect == "denied":
        ok = not decision.allowed
    else:
        ok = decision.reason.value == expect
    return ok and (case.rule is None or case.rule == decision.rule)


def run_case(engine: Engine, case: Case) -> CaseResult:
    """Decide *case* with *engine* and compare with what it expects.

    The case's consents, objections and authorisations add to the engine's
    store for this decision only; nothing is written to it.
    """
    decision = decide_request(engine, case.request)
    return CaseResult(case=case, decision=decision, passed=_matches(case, decision))


def run_cases(suite: CaseSuite, register: Register | Engine | None = None) -> list[CaseResult]:
    """Run every case of *suite*.

    Args:
        suite: the cases.
        register: the register (or a whole engine) to run against; the one the
            suite names when ``None``.

    Returns:
        One :class:`CaseResult` per case, in file order.

    Raises:
        ConfigurationError, RegisterError: as :func:`resolve_register`.
    """
    if isinstance(register, Engine):
        engine = register
    else:
        engine = Engine(register if register is not None else resolve_register(suite))
    return [run_case(engine, case) for case in suite.cases]


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_results(results: Sequence[CaseResult]) -> str:
    """The pass/fail table of *results*, then the explanation of each failure.

    Returns:
        Text lines: ``result  case  purpose  expected  got``, one row per case
        (the reason codes, and the rules when a case names one that differs);
        below, for each failed case, its location and why it failed.
    """
    rows = [("result", "case", "purpose", "expected", "got")]
    for result in results:
        case = result.case
        expected, got = case.expect, result.got
        if case.rule is not None and case.rule != result.decision.rule:
            expected, got = f"{expected} {case.rule}", f"{got} {result.decision.rule}"
        rows.append(
            (
                "PASS" if result.passed else "FAIL",
                case.id,
                case.request.purpose or "(none)",
                expected,
                got,
            )
        )
    lines = _table(rows)
    failed = [r for r in results if not r.passed]
    if failed:
        lines.append("")
        lines.append("failures:")
        for result in failed:
            lines.append(f"  {result.case.id} ({result.case.location})")
            lines.extend(f"    {line}" for line in result.explain().splitlines())
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line

_EPILOG = """\
examples:
  purposelimit test examples/cases/cnil-commercial.toml
  purposelimit test cases.toml --register register.toml

The register is --register or --preset when given, else the one the case
file names in its [suite] table.

exit status: 0 every case passed; 1 a case failed or a case file was refused;
2 usage error (no register, unreadable or refused register).
"""


def add_test_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``test`` command to the ``purposelimit`` command line's subparsers.

    ``purposelimit test CASES.toml [CASES.toml ...] [--register FILE | --preset NAME]``
    runs the cases, prints a pass/fail table per file and exits non-zero on a
    failure; the handler is :func:`run_test_command` (set as ``handler``).
    """
    parser = subparsers.add_parser(
        "test",
        help="run table-driven compliance cases",
        description="Run the compliance cases of TOML case files against a register\n"
        "and print a pass/fail table (format: docs/testing.md).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("cases", metavar="CASES.toml", nargs="+", help="case files")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--register", metavar="REGISTER.toml", help="the register file (overrides the files')"
    )
    group.add_argument("--preset", metavar="NAME", help="a shipped register (overrides the files')")
    parser.set_defaults(handler=run_test_command)


def run_test_command(args: argparse.Namespace) -> int:
    """Run ``purposelimit test``: every case file of ``args.cases``, with a table per file.

    Args:
        args: ``cases`` (file names), ``register`` and ``preset`` (or ``None``).

    Returns:
        0 every case passed; 1 a case failed or a case file was refused; 2
        usage error (no register, an unreadable or refused register, an
        unknown preset).
    """
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    prog = "purposelimit test"
    override: Register | None = None
    if args.register is not None or args.preset is not None:
        try:
            override = resolve_register(
                CaseSuite(cases=()), register=args.register, preset=args.preset
            )
        except (ConfigurationError, RegisterError) as error:
            err.write(f"{prog}: error: {error}\n")
            return 2
    status = 0
    passed = failed = 0
    for name in args.cases:
        try:
            suite = load_cases(name)
        except CaseFileError as error:
            err.write(f"{prog}: {error}\n")
            status = max(status, 1)
            continue
        try:
            register = override if override is not None else resolve_register(suite)
        except (ConfigurationError, RegisterError) as error:
            err.write(f"{prog}: error: {error}\n")
            status = 2
            continue
        results = run_cases(suite, register)
        source = args.register or (f"preset {args.preset}" if args.preset else None)
        if source is None:
            source = suite.register or f"preset {suite.preset}"
        out.write(f"{name} (register: {source}, version {register.version or '-'})\n")
        out.write(format_results(results) + "\n\n")
        ok = sum(r.passed for r in results)
        passed += ok
        failed += len(results) - ok
        if ok != len(results):
            status = max(status, 1)
    total = passed + failed
    out.write(f"{total} case{'s' if total != 1 else ''}: {passed} passed, {failed} failed\n")
    return status
