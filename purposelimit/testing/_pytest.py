"""The pytest side of purposelimit.testing: the fixture, the recorder and case items.

Imported by :mod:`purposelimit.pytest_plugin` only when something uses it (a
marked test, the fixture, ``--purposelimit-strict``, ``--purposelimit-report``,
a case file), so that loading the plugin stays cheap.
"""

from __future__ import annotations

import difflib
import json
import os
import threading
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from .._audit import AuditEvent, Mode, _observers
from .._cases import Case, CaseFileError, CaseResult, CaseSuite, load_cases, run_case
from .._context import get_engine, set_engine
from .._engine import Engine
from .._errors import ConfigurationError, RegisterError
from .._register import Register
from .._time import ensure_aware, parse_datetime
from ._capture import _observers_lock, capture_audit, describe_reads, flush_audits
from ._clock import frozen_clock
from ._factories import make_engine
from ._fixture import PurposeLimitFixture

__all__ = ["CaseFile", "CaseItem", "MarkerOptions", "Recorder", "fixture_session"]

_MARKER_KEYS = ("purpose", "register", "mode", "at", "strict")


# --------------------------------------------------------------------------- the marker


@attrs.frozen(slots=True)
class MarkerOptions:
    """The checked arguments of ``@pytest.mark.purposelimit(...)``."""

    purpose: str | None = None
    register: object = None
    mode: Mode | None = None
    at: datetime | None = None
    strict: bool = True


def marker_options(marker: pytest.Mark | None) -> MarkerOptions:
    """Check the marker's arguments.

    Raises:
        ConfigurationError: an unknown argument, or one of the wrong type; the
            message says what is expected.
    """
    if marker is None:
        return MarkerOptions()
    kwargs = dict(marker.kwargs)
    if len(marker.args) > 1:
        raise ConfigurationError(
            "@pytest.mark.purposelimit takes at most one positional argument, the purpose"
        )
    if marker.args:
        if "purpose" in kwargs:
            raise ConfigurationError(
                "@pytest.mark.purposelimit: the purpose is given twice (positionally and as "
                "purpose=)"
            )
        kwargs["purpose"] = marker.args[0]
    for key in kwargs:
        if key not in _MARKER_KEYS:
            close = difflib.get_close_matches(key, _MARKER_KEYS, n=1)
            hint = f" (did you mean {close[0]}=?)" if close else ""
            raise ConfigurationError(
                f"@pytest.mark.purposelimit: unknown argument {key}={hint}; it takes "
                + ", ".join(f"{k}=" for k in _MARKER_KEYS)
            )
    purpose = kwargs.get("purpose")
    if purpose is not None and (not isinstance(purpose, str) or not purpose):
        raise ConfigurationError("@pytest.mark.purposelimit: purpose= is a purpose id")
    mode = kwargs.get("mode")
    if mode is not None and mode not in ("enforce", "monitor"):
        raise ConfigurationError(
            f"@pytest.mark.purposelimit: mode= is 'enforce' or 'monitor', not {mode!r}"
        )
    at = kwargs.get("at")
    if at is not None:
        if isinstance(at, str):
            at = parse_datetime(at, "@pytest.mark.purposelimit: at=")
        elif isinstance(at, datetime):
            at = ensure_aware(at, "@pytest.mark.purposelimit: at=")
        else:
            raise ConfigurationError(
                "@pytest.mark.purposelimit: at= is an aware datetime or an ISO-8601 string "
                "with an offset"
            )
    strict = kwargs.get("strict", True)
    if not isinstance(strict, bool):
        raise ConfigurationError("@pytest.mark.purposelimit: strict= is True or False")
    return MarkerOptions(purpose, kwargs.get("register"), mode, at, strict)


# --------------------------------------------------------------------------- registers

_registers: dict[tuple[str, int, int], Register] = {}
_registers_lock = threading.Lock()


def load_register_for(value: object, config: pytest.Config) -> Register:
    """The register a marker's ``register=`` (or the ini option) names.

    Args:
        value: a :class:`~purposelimit.Register`, a preset name, or a register
            file (relative to the rootdir, or absolute). Files are loaded once
            per content.

    Raises:
        ConfigurationError: no such file, or a value of the wrong type.
        RegisterError: the register file is refused.
    """
    from .._loader import load_register
    from .._presets import load_preset, preset_names

    if isinstance(value, Register):
        return value
    if not isinstance(value, str | os.PathLike):
        raise ConfigurationError(
            f"register= is a Register, a register file or a preset name, not {type(value).__name__}"
        )
    text = os.fspath(value)
    names = preset_names()
    if text in names:
        return load_preset(text)
    path = Path(text)
    if not path.is_absolute():
        path = config.rootpath / path
    try:
        stat = path.stat()
    except OSError:
        raise ConfigurationError(
            f"register {text!r}: no such file ({path}). Remedy: give a register file relative "
            f"to the rootdir ({config.rootpath}), an absolute path, or a preset name "
            f"({', '.join(names)})"
        ) from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _registers_lock:
        found = _registers.get(key)
    if found is None:
        found = load_register(path)
        with _registers_lock:
            _registers[key] = found
    return found


# --------------------------------------------------------------------------- the fixture


def fixture_session(request: pytest.FixtureRequest) -> Iterator[PurposeLimitFixture]:
    """Set up the ``purposelimit`` fixture of one test (a generator: setup, yield, teardown)."""
    node = request.node
    config = request.config
    problem: str | None = None
    try:
        options = marker_options(node.get_closest_marker("purposelimit"))
        source = options.register
        if source is None:
            source = config.getini("purposelimit_register") or None
        register = None if source is None else load_register_for(source, config)
    except (ConfigurationError, RegisterError, ValueError) as error:
        problem = str(error)
    if problem is not None:
        pytest.fail(f"purposelimit: {problem}", pytrace=False)
    with ExitStack() as stack:
        engine: Engine | None
        if register is not None:
            engine = make_engine(register, at=options.at)
            stack.enter_context(set_engine(engine, mode=options.mode))
        else:
            engine = get_engine()
            if options.mode is not None:
                stack.enter_context(set_engine(engine, mode=options.mode))
            if options.at is not None:
                if engine is None:
                    pytest.fail(
                        "purposelimit: at= needs an engine. Remedy: give the marker register=... "
                        "or install a default engine with purposelimit.set_engine(engine)",
                        pytrace=False,
                    )
                stack.enter_context(frozen_clock(options.at, engine=engine))
        if options.purpose is not None and engine is None:
            pytest.fail(
                "purposelimit: purpose= needs an engine. Remedy: give the marker register=... "
                "(a register file or a preset name), set purposelimit_register in the pytest "
                "configuration, or install a default engine with purposelimit.set_engine(engine)",
                pytrace=False,
            )
        events = stack.enter_context(capture_audit())
        helper = PurposeLimitFixture(
            engine=engine,
            events=events,
            actor=f"pytest:{node.nodeid}",
            purpose=options.purpose,
            mode=options.mode,
        )
        if options.purpose is not None:
            stack.enter_context(helper.processing())
        yield helper


# --------------------------------------------------------------------------- strict and report

_OUTSIDE_TESTS = "(outside any test)"

#: The fields of an access-map entry, in order.
_READ_FIELDS = (
    "record_type",
    "field",
    "category",
    "purpose",
    "collected_for",
    "allowed",
    "reason",
    "rule",
    "mode",
    "monitored",
)


def _entry(event: AuditEvent) -> tuple[Any, ...]:
    return (
        event.record_type,
        event.field,
        event.category,
        event.purpose,
        event.collected_for,
        event.allowed,
        event.reason.value,
        event.rule,
        event.mode,
        event.monitored,
    )


def strict_message(reads: list[AuditEvent]) -> str:
    """The failure text of ``--purposelimit-strict`` for a test's reads outside any block."""
    count = len(reads)
    noun = "guarded read" if count == 1 else "guarded reads"
    return (
        f"purposelimit --purposelimit-strict: {count} {noun} outside any processing block:\n"
        + describe_reads(reads)
    )


class Recorder:
    """Sees every audit event of the session (``--purposelimit-strict``, ``--purposelimit-report``).

    Each event is attributed to the test running when its audit was drained;
    the audits are flushed at the end of every test phase so that each read
    belongs to the phase that made it.
    """

    name = "purposelimit-recorder"

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.strict: bool = config.getoption("purposelimit_strict")
        report: str | None = config.getoption("purposelimit_report")
        self.report: Path | None = None if report is None else config.invocation_params.dir / report
        self._lock = threading.Lock()
        self._current: str | None = None
        self._unbound: list[AuditEvent] = []
        self._reads: dict[str, dict[tuple[Any, ...], int]] = {}
        self._outcomes: dict[str, str] = {}
        self._written: dict[str, int] | None = None
        self._skipped = False
        with _observers_lock:
            _observers.append(self._observe)

    # ------------------------------------------------------------------ events

    def _observe(self, events: tuple[AuditEvent, ...]) -> None:
        with self._lock:
            if self.report is not None:
                counts = self._reads.setdefault(self._current or _OUTSIDE_TESTS, {})
                for event in events:
                    key = _entry(event)
                    counts[key] = counts.get(key, 0) + 1
            if self.strict:
                self._unbound.extend(e for e in events if e.purpose is None)

    # ------------------------------------------------------------------ hooks

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        flush_audits(raise_errors=False)  # earlier reads belong to whoever made them
        with self._lock:
            self._current = item.nodeid
            self._unbound = []
        try:
            return (yield)
        finally:
            flush_audits(raise_errors=False)
            with self._lock:
                self._current = None
                self._unbound = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        flush_audits(raise_errors=False)
        report: pytest.TestReport = yield
        with self._lock:
            unbound, self._unbound = self._unbound, []
        if self.strict and unbound and _strict_for(item):
            _fail(report, strict_message(unbound))
        if self.report is not None:
            self._outcome(item.nodeid, report)
        return report

    def _outcome(self, nodeid: str, report: pytest.TestReport) -> None:
        if report.when == "setup":
            outcome = {"passed": "passed", "failed": "error", "skipped": "skipped"}[report.outcome]
        elif report.when == "call":
            outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        else:
            outcome = self._outcomes.get(nodeid, "passed")
            if report.failed and outcome == "passed":
                outcome = "error"
        self._outcomes[nodeid] = outcome

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        flush_audits(raise_errors=False)
        if self.report is None or hasattr(self.config, "workerinput"):
            return
        if getattr(self.config.option, "numprocesses", None):
            self._skipped = True  # pytest-xdist: the reads happen in the workers
            return
        data = self._access_map()
        self.report.parent.mkdir(parents=True, exist_ok=True)
        self.report.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", "utf-8")
        self._written = data["summary"]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._skipped:
            terminalreporter.write_line(
                "purposelimit: --purposelimit-report is not written under pytest-xdist "
                "(the reads happen in the workers); run without -n to get the access map"
            )
            return
        summary = self._written
        if summary is None or self.report is None:
            return
        tests = summary["tests"]
        reads = summary["reads"]
        terminalreporter.write_line(
            f"purposelimit: {reads} guarded read{'s' if reads != 1 else ''} in {tests} "
            f"test{'s' if tests != 1 else ''} ({summary['allowed']} allowed, "
            f"{summary['denied']} denied, {summary['outside_processing']} outside processing); "
            f"access map written to {self.report}"
        )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        with _observers_lock:
            if self._observe in _observers:
                _observers.remove(self._observe)

    # ------------------------------------------------------------------ the access map

    def _access_map(self) -> dict[str, Any]:
        with self._lock:
            reads = {node: dict(counts) for node, counts in self._reads.items() if counts}
        tests = []
        purposes: dict[tuple[Any, ...], dict[str, Any]] = {}
        totals = {"allowed": 0, "denied": 0, "monitored": 0, "outside_processing": 0}
        for node in sorted(reads):
            entries = []
            for key, count in sorted(reads[node].items(), key=lambda kv: _sort_key(kv[0])):
                entry: dict[str, Any] = dict(zip(_READ_FIELDS, key, strict=True))
                entry["count"] = count
                entries.append(entry)
                totals["allowed" if entry["allowed"] else "denied"] += count
                totals["monitored"] += count if entry["monitored"] else 0
                totals["outside_processing"] += count if entry["purpose"] is None else 0
                place = (entry["purpose"], entry["record_type"], entry["field"])
                view = purposes.setdefault(
                    place,
                    {
                        "purpose": entry["purpose"],
                        "record_type": entry["record_type"],
                        "field": entry["field"],
                        "category": entry["category"],
                        "collected_for": [],
                        "decisions": {},
                        "tests": [],
                    },
                )
                if entry["collected_for"] not in view["collected_for"]:
                    view["collected_for"].append(entry["collected_for"])
                view["decisions"][entry["reason"]] = (
                    view["decisions"].get(entry["reason"], 0) + count
                )
                if node not in view["tests"]:
                    view["tests"].append(node)
            tests.append({"test": node, "outcome": self._outcomes.get(node, "-"), "reads": entries})
        access = [purposes[k] for k in sorted(purposes, key=_sort_key)]
        for view in access:
            view["collected_for"].sort(key=lambda v: (v is None, v or ""))
            view["decisions"] = dict(sorted(view["decisions"].items()))
        summary = {
            "tests": len(tests),
            "reads": totals["allowed"] + totals["denied"],
            **totals,
        }
        return {
            "format": "purposelimit-access-map/1",
            "summary": summary,
            "access": access,
            "tests": tests,
        }


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, "" if v is None else str(v)) for v in key)


def _strict_for(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("purposelimit")
    return marker is None or marker.kwargs.get("strict", True) is not False


def _fail(report: pytest.TestReport, message: str) -> None:
    if hasattr(report, "wasxfail"):
        return  # an expected failure stays expected
    if report.failed:
        longrepr = report.longrepr
        addsection = getattr(longrepr, "addsection", None)
        if addsection is not None:
            addsection("purposelimit --purposelimit-strict", message)
        else:
            report.longrepr = f"{longrepr}\n\n{message}"
        return
    report.outcome = "failed"
    report.longrepr = message


# --------------------------------------------------------------------------- case files


class CaseFailed(Exception):
    """A compliance case's decision differs from what it expects."""

    def __init__(self, result: CaseResult) -> None:
        self.result = result
        super().__init__(result.case.id)


class _CaseSetupError(Exception):
    """A case file's register cannot be used (message: what and how to fix)."""


class CaseFile(pytest.File):
    """A TOML file of compliance cases: one :class:`CaseItem` per case."""

    _suite: CaseSuite | None = None
    _engine: Engine | str | None = None  # the engine, or why there is none

    def collect(self) -> Iterator[CaseItem]:
        try:
            shown = self.path.relative_to(self.config.rootpath).as_posix()
        except ValueError:
            shown = str(self.path)
        try:
            suite = load_cases(self.path, source=shown)
        except CaseFileError as error:
            raise self.CollectError(str(error)) from None
        self._suite = suite
        for case in suite.cases:
            yield CaseItem.from_parent(self, name=case.id, case=case)

    def engine(self) -> Engine:
        """The engine of the file's cases (its register, else ``purposelimit_register``)."""
        if self._engine is None:
            try:
                self._engine = Engine(self._register())
            except _CaseSetupError as error:
                self._engine = str(error)
        if isinstance(self._engine, str):
            raise _CaseSetupError(self._engine)
        return self._engine

    def _register(self) -> Register:
        from .._cases import resolve_register

        suite = self._suite
        assert suite is not None  # collected before its items run
        try:
            if suite.register is None and suite.preset is None:
                fallback = self.config.getini("purposelimit_register")
                if fallback:
                    return load_register_for(fallback, self.config)
            return resolve_register(suite)
        except (ConfigurationError, RegisterError) as error:
            raise _CaseSetupError(str(error)) from None


class CaseItem(pytest.Item):
    """One compliance case: passes when the register decides what the case expects."""

    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        parent = self.parent
        assert isinstance(parent, CaseFile)
        result = run_case(parent.engine(), self.case)
        if not result.passed:
            raise CaseFailed(result)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> Any:
        error = excinfo.value
        if isinstance(error, CaseFailed):
            case = error.result.case
            lines = [f"purposelimit case {case.id} ({case.location}):"]
            if case.description:
                lines.append(f"  {case.description}")
            lines.extend(f"  {line}" for line in error.result.explain().splitlines())
            return "\n".join(lines)
        if isinstance(error, _CaseSetupError):
            return f"purposelimit case {self.case.id}: {error}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.case.line
        return self.path, None if line is None else line - 1, f"purposelimit case {self.case.id}"
