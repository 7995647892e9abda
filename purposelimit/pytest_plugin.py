"""The purposelimit pytest plugin: compliance checks for an existing test suite.

Registered through the ``pytest11`` entry point ``purposelimit`` when the
package is installed; before that, load it with ``-p purposelimit.pytest_plugin``.

Inert unless used: loading it adds two command-line options, two ini options,
the ``purposelimit`` marker and fixture, and nothing else — no autouse
fixture, no import of the library's engine, audit or case code (those are
imported by the first test that uses the marker, the fixture, an option or a
case file).

* ``@pytest.mark.purposelimit(purpose=..., register=..., mode=..., at=..., strict=...)``
  configures the ``purposelimit`` fixture, and a marked test uses it without
  asking: ``register=`` builds the test's engine (frozen clock, in-memory
  store and audit) and installs it as the default engine, ``purpose=`` runs
  the test inside ``processing(purpose)``, ``mode=`` sets the mode.
* The ``purposelimit`` fixture: the test's engine, clock, audit capture and
  helpers (:class:`purposelimit.testing.PurposeLimitFixture`).
* ``--purposelimit-strict``: a guarded read outside any ``processing`` block
  fails the test that made it, listing every such read.
* ``--purposelimit-report=PATH``: writes the access map (which test read which
  fields of which record types under which purposes, with the decisions) as
  JSON, and prints one summary line.
* Case files (ini ``purposelimit_cases``, default ``test_*.purposelimit.toml``)
  are collected: one test item per compliance case.

See docs/testing.md.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing._fixture import PurposeLimitFixture

__all__ = ["purposelimit"]

#: The default of the ``purposelimit_cases`` ini option: which files are case files.
DEFAULT_CASE_PATTERNS = ("test_*.purposelimit.toml",)

_MARKER = (
    "purposelimit(purpose=None, register=None, mode=None, at=None, strict=True): run the "
    "test with the purposelimit fixture: register= (a register file relative to the rootdir, "
    "or a preset name) builds the test's engine, purpose= runs the test inside "
    "processing(purpose), mode= is 'enforce' or 'monitor', at= freezes the clock, "
    "strict=False exempts the test from --purposelimit-strict"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the plugin's options (inert until given)."""
    group = parser.getgroup("purposelimit", "purposelimit (purpose limitation of personal data)")
    group.addoption(
        "--purposelimit-strict",
        action="store_true",
        default=False,
        dest="purposelimit_strict",
        help="fail every test that reads a guarded personal field outside a processing "
        "block (listing every such read)",
    )
    group.addoption(
        "--purposelimit-report",
        metavar="PATH",
        default=None,
        dest="purposelimit_report",
        help="write the access map of the guarded reads (test, record type, field, "
        "purpose, decision) as JSON to PATH",
    )
    parser.addini(
        "purposelimit_register",
        "the register of the purposelimit fixture and of case files that name none: "
        "a register file (relative to the rootdir) or a preset name",
        default="",
    )
    parser.addini(
        "purposelimit_cases",
        "glob patterns of the compliance case files to collect (a pattern with '/' is "
        "matched against the path relative to the rootdir, else against the file name)",
        type="args",
        default=list(DEFAULT_CASE_PATTERNS),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker; start the recorder only when an option asks for it."""
    config.addinivalue_line("markers", _MARKER)
    if config.getoption("purposelimit_strict") or config.getoption("purposelimit_report"):
        from .testing._pytest import Recorder

        config.pluginmanager.register(Recorder(config), Recorder.name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked ``purposelimit`` uses the ``purposelimit`` fixture without asking for it."""
    for item in items:
        names = getattr(item, "fixturenames", None)
        if (
            names is not None
            and "purposelimit" not in names
            and item.get_closest_marker("purposelimit") is not None
        ):
            # Last, as if the test asked for it last: fixtures of wider scope (a session-wide
            # default engine) are set up before it and torn down after it.
            item.fixturenames = [*names, "purposelimit"]  # type: ignore[attr-defined]  # a Function item


def _is_case_file(file_path: Path, config: pytest.Config) -> bool:
    patterns: list[str] = config.getini("purposelimit_cases")
    if not patterns:
        return False
    relative: str | None = None
    for pattern in patterns:
        if "/" in pattern:
            if relative is None:
                try:
                    relative = file_path.relative_to(config.rootpath).as_posix()
                except ValueError:
                    relative = file_path.as_posix()
            if fnmatch.fnmatchcase(relative, pattern):
                return True
        elif fnmatch.fnmatchcase(file_path.name, pattern):
            return True
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect compliance case files (names matching ``purposelimit_cases``)."""
    if file_path.suffix != ".toml" or not _is_case_file(file_path, parent.config):
        return None
    from .testing._pytest import CaseFile

    return CaseFile.from_parent(parent, path=file_path)


@pytest.fixture
def purposelimit(request: pytest.FixtureRequest) -> Iterator[PurposeLimitFixture]:
    """The test's purposelimit engine, frozen clock, audit capture and helpers.

    Configured by ``@pytest.mark.purposelimit(...)``; see
    :class:`purposelimit.testing.PurposeLimitFixture` and docs/testing.md.
    """
    from .testing._pytest import fixture_session

    yield from fixture_session(request)
