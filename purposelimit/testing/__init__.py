"""purposelimit.testing: assert compliance in a test suite, with or without pytest.

* :func:`capture_audit` — the audit events of the guarded reads made in a block;
* :func:`assert_allowed` / :func:`assert_denied` — context managers failing with
  a message that lists every offending read (purpose, record type, field,
  reason code, remedy — never the value);
* :class:`FrozenClock` / :func:`frozen_clock` — decisions at pinned instants;
* factories: :func:`make_register`, :func:`make_engine`, :func:`make_record`,
  :func:`make_consent`, :func:`make_withdrawal`, :func:`make_objection`,
  :func:`make_authorisation`;
* table-driven compliance cases: :func:`load_cases`, :func:`run_cases`;
* hypothesis strategies in :mod:`purposelimit.testing.strategies` (needs hypothesis);
* the pytest plugin, :mod:`purposelimit.pytest_plugin` (registered by the
  ``pytest11`` entry point): the ``purposelimit`` marker and fixture,
  ``--purposelimit-strict`` and ``--purposelimit-report``.

This package imports neither pytest nor hypothesis. See docs/testing.md.
"""

from .._cases import (
    Case,
    CaseFileError,
    CaseProblem,
    CaseResult,
    CaseSuite,
    format_results,
    load_cases,
    loads_cases,
    resolve_register,
    run_case,
    run_cases,
)
from ._capture import (
    AuditCapture,
    Read,
    ReasonSpec,
    assert_allowed,
    assert_denied,
    capture_audit,
    describe_reads,
    flush_audits,
)
from ._clock import FrozenClock, frozen_clock
from ._factories import (
    BASE_CATEGORIES,
    SENSITIVE_CATEGORIES,
    collection_for,
    make_authorisation,
    make_consent,
    make_engine,
    make_objection,
    make_record,
    make_register,
    make_withdrawal,
)
from ._fixture import PurposeLimitFixture

__all__ = [
    "BASE_CATEGORIES",
    "SENSITIVE_CATEGORIES",
    "AuditCapture",
    "Case",
    "CaseFileError",
    "CaseProblem",
    "CaseResult",
    "CaseSuite",
    "FrozenClock",
    "PurposeLimitFixture",
    "Read",
    "ReasonSpec",
    "assert_allowed",
    "assert_denied",
    "capture_audit",
    "collection_for",
    "describe_reads",
    "flush_audits",
    "format_results",
    "frozen_clock",
    "load_cases",
    "loads_cases",
    "make_authorisation",
    "make_consent",
    "make_engine",
    "make_objection",
    "make_record",
    "make_register",
    "make_withdrawal",
    "resolve_register",
    "run_case",
    "run_cases",
]
