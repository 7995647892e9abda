"""Hostile input: registers, decide requests, lead files and paths that try to break things.

Fuzzed with hypothesis (atheris is not used: the property tests cover the same
entry points and run everywhere). Each entry point either succeeds or raises
its documented error — RegisterError for registers, ProtocolError / InputError
for requests and files, exit status 1 or 2 for the command line — never
anything else, never a hang, and within bounded memory (deep nesting, a 1 GiB
line, a register of 100,000 purposes, quadratic corner cases).

Ids are limited to the DESIGN §9 syntax: look-alike and mixed-script ids are
refused (or decided ``unknown-*``, as the protocol says) with a clear message
everywhere ids enter. Subject ids are compared exactly, except where the
mapping says subjects are e-mail addresses. Output paths write into the folder
the operating system resolves for them, and nowhere else.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purposelimit import _files
from purposelimit._bulk import LeadMapping, filter_csv, filter_leads, load_mapping
from purposelimit._cli import main
from purposelimit._context import _CURRENT, processing, set_engine
from purposelimit._engine import Engine
from purposelimit._errors import ConfigurationError, ProcessingDenied, RegisterError
from purposelimit._ids import ID_PATTERN
from purposelimit._loader import MAX_ENTRIES, load_register, loads_register, register_from_dict
from purposelimit._model import (
    Collection,
    Compatibility,
    Consent,
    DataCategory,
    Evidence,
    Purpose,
    Reason,
    Retention,
)
from purposelimit._presets import load_preset
from purposelimit._protocol import (
    DecideRequest,
    InputError,
    ProtocolError,
    decide_request,
    load_authorisations,
    load_consents,
    load_objections,
    parse_request,
    parse_request_line,
)
from purposelimit._records import TaggedRecord, personal, record
from purposelimit._register import OVERLAPS_LISTED, Register, _overlapping

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MODES = ("enforce", "monitor")
ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)

#: Ids that look like, or nearly like, a declared one.
LOOKALIKES = {
    "cyrillic o": "prospecti\u043en.postal",
    "greek omicron": "pr\u03bfspection.postal",
    "full-width p": "\uff50rospection.postal",
    "zero-width joiner": "prospection\u200d.postal",
    "combining accent": "prospection.poste\u0301",
    "no-break space": "prospection.\u00a0postal",
    "trailing dot": "prospection.postal.",
    "leading dot": ".prospection.postal",
    "double dot": "prospection..postal",
    "upper case": "Prospection.postal",
    "space": "prospection postal",
    "slash": "prospection/postal",
}


@pytest.fixture(autouse=True)
def _reset_context() -> Iterator[None]:
    """Every test starts and ends with no processing block and no default engine."""
    token = set_engine(None, mode="enforce")
    context_token = _CURRENT.set(None)
    yield
    _CURRENT.reset(context_token)
    token.reset()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(autouse=True)
def _no_pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PURPOSELIMIT_PSEUDONYM_KEY", raising=False)


def refused(call: Callable[[], object], *errors: type[Exception]) -> Exception | None:
    """Run *call*: ``None`` when it succeeds, the error when it raises one of *errors* (any
    other exception fails the test)."""
    try:
        call()
    except errors as error:
        return error
    return None


# --------------------------------------------------------------------------- strategies

#: Keys a register or a request uses: fuzzed structures hit the real code paths.
KEYS = [
    "register", "categories", "purposes", "compatibility", "id", "label", "description",
    "legal_basis", "retention", "duration", "from", "to", "verdict", "sensitive_categories",
    "preset", "version", "controller", "sensitive", "link", "context", "nature",
    "consequences", "safeguards", "source", "confidence", "justification",
    "direct_marketing", "archive", "archiving_or_statistics", "purpose", "at", "record",
    "subject", "collected_for", "collected_at", "last_contact_at", "contract_ended_at",
    "consents", "authorisations", "objections", "given_at", "withdrawn_at", "expires_at",
    "state", "evidence", "mechanism", "scope", "valid_from", "valid_until", "reference",
    "subjects", "x-tool",
]  # fmt: skip
VALUES = [
    "p", "p.a", "identity", "identity.name", "consent", "contract", "legitimate-interests",
    "P1Y", "P0D", "P99999Y", "PT1S", "collection", "last-contact", "end-of-contract",
    "compatible", "prohibited", "S", "U", "cnil-commercial", "", " ", "2026-03-01",
    "2026-03-01T10:00:00", "2026-03-01T10:00:00+01:00", "9999-12-31T23:59:59-14:00",
    "given", "refused", "pre-ticked", "direct-marketing", "\u043e", "\x00", "x" * 300,
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.sampled_from(VALUES)
    | st.text(max_size=12)
)
structures = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=40,
)

GOOD_REGISTER: dict[str, Any] = {
    "register": {"controller": "Example SAS", "version": "1"},
    "categories": [{"id": "identity"}, {"id": "identity.name"}, {"id": "nir", "sensitive": True}],
    "purposes": [
        {
            "id": "client.contract",
            "label": "Contracts",
            "description": "Managing contracts",
            "legal_basis": "contract",
            "categories": ["identity"],
            "retention": {"duration": "P5Y", "from": "end-of-contract"},
        },
        {
            "id": "prospection.postal",
            "label": "Postal offers",
            "description": "Offers by post",
            "legal_basis": "legitimate-interests",
            "categories": ["identity.name"],
            "direct_marketing": True,
            "retention": {"duration": "P3Y", "from": "last-contact"},
        },
    ],
    "compatibility": [
        {
            "id": "contract-to-postal",
            "from": "client.contract",
            "to": "prospection.postal",
            "verdict": "compatible",
            "link": "l",
            "context": "c",
            "nature": "n",
            "consequences": "c",
            "safeguards": ["s"],
        }
    ],
}

GOOD_REQUEST: dict[str, Any] = {
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
    "consents": [
        {
            "subject": "lead-42",
            "purposes": ["prospection"],
            "given_at": "2025-06-01",
            "evidence": {"mechanism": "double-opt-in"},
        }
    ],
    "authorisations": [
        {
            "id": "a1",
            "from": ["hr"],
            "to": "prospection",
            "valid_from": "2025-01-01",
            "reference": "order 1",
        }
    ],
    "objections": [{"subject": "lead-42", "at": "2025-02-01", "scope": "direct-marketing"}],
}


def paths_of(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) inside a JSON-like value."""
    found = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*here, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """*base* with one to three values replaced, deleted or added at random paths."""
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_of(value)))
        if not path:
            continue
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(structures)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(structures)
        else:
            parent.append(draw(structures))
    return value


# --------------------------------------------------------------------------- the register loader


@FUZZ
@given(text=st.text(max_size=400), fmt=st.sampled_from(["toml", "json"]))
def test_any_text_is_a_register_or_a_register_error(text: str, fmt: Any) -> None:
    """loads_register on arbitrary text: a Register, or RegisterError listing problems."""
    error = refused(lambda: loads_register(text, format=fmt), RegisterError)
    if isinstance(error, RegisterError):
        assert error.problems
        assert str(error).startswith("register refused")


@FUZZ
@given(data=structures)
def test_any_nested_structure_is_a_register_or_a_register_error(data: Any) -> None:
    """register_from_dict on arbitrary nested values (as a section or as the whole file)."""
    for value in (data, {"purposes": data}, {"register": data, "compatibility": data}):
        shaped = value if isinstance(value, dict) else {"categories": value}
        error = refused(functools.partial(register_from_dict, shaped), RegisterError)
        if isinstance(error, RegisterError):
            assert all(problem.message for problem in error.problems)


@FUZZ
@given(data=mutated(GOOD_REGISTER))
def test_a_mutated_register_is_a_register_or_a_register_error(data: Any) -> None:
    """A sound register with values replaced, removed or added: loads or is refused, both as a
    dict and as the JSON and TOML-free text of it."""
    from_dict = refused(lambda: register_from_dict(data), RegisterError)
    from_text = refused(lambda: loads_register(json.dumps(data), format="json"), RegisterError)
    assert (from_dict is None) == (from_text is None)  # the same verdict either way


@FUZZ
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.sampled_from(["", "[", "]", '"', "=", "\n", "\x00", "é", "{"]),
        ),
        max_size=4,
    )
)
def test_a_damaged_register_file_is_refused_cleanly(edits: list[tuple[int, str]]) -> None:
    """The shipped example register with characters inserted or removed: a Register or a
    RegisterError, never another exception."""
    text = (ROOT / "examples" / "register.toml").read_text(encoding="utf-8")
    for position, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at + (0 if insert else 1) :]
    error = refused(lambda: loads_register(text), RegisterError)
    if isinstance(error, RegisterError):
        assert error.problems


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("[" * 100_000 + "]" * 100_000, "json"),
        ('{"purposes": ' + "[" * 50_000 + "]" * 50_000 + "}", "json"),
        ("a = " + "[" * 100_000 + "]" * 100_000, "toml"),
        ("a = " + "{b = " * 20_000 + "1" + "}" * 20_000, "toml"),
        ('{"version": ' + "9" * 50_000 + "}", "json"),
    ],
    ids=["json-arrays", "json-in-purposes", "toml-arrays", "toml-tables", "long-number"],
)
def test_deeply_nested_or_huge_registers_are_refused_quickly(text: str, fmt: Any) -> None:
    """Deep nesting and absurd numbers are one problem each, found within a second."""
    started = time.monotonic()
    with pytest.raises(RegisterError) as caught:
        loads_register(text, format=fmt)
    assert time.monotonic() - started < 2
    assert len(caught.value.problems) == 1


def _purposes_json(count: int, extra: str = "") -> str:
    item = (
        '{{"id": "p.p{i}", "label": "L", "description": "d", "legal_basis": "contract", '
        '"categories": ["identity"], "retention": {{"duration": "P1Y", "from": "collection"}}'
        + extra
        + "}}"
    )
    body = ",".join(item.format(i=i) for i in range(count))
    return f'{{"categories": [{{"id": "identity"}}], "purposes": [{body}]}}'


def test_a_register_of_100000_purposes_loads_within_seconds() -> None:
    """100,000 purposes: loaded in seconds (every check is linear in the register)."""
    text = _purposes_json(100_000)
    started = time.monotonic()
    register = loads_register(text, format="json")
    assert len(register.purposes) == 100_000
    assert time.monotonic() - started < 30


def test_a_register_larger_than_16_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    """A register file of a million purposes (far more than 16 MiB) is refused at once, without
    being read whole."""
    path = tmp_path / "huge.json"
    with path.open("w", encoding="utf-8") as handle:
        handle.write('{"purposes": [')
        chunk = ",".join(f'{{"id": "p.p{i}", "label": "a purpose"}}' for i in range(10_000))
        for _ in range(100):  # a million purposes, some 40 MB
            handle.write(chunk + ",")
        handle.write('{"id": "last"}]}')
    started = time.monotonic()
    with pytest.raises(RegisterError, match="larger than 16 MiB"):
        load_register(path)
    assert time.monotonic() - started < 2


def test_too_many_entries_are_refused_before_they_are_checked() -> None:
    """More than 100,000 entries in a section (here tiny ones, under 16 MiB) are refused once
    parsed, before any entry is structured or checked."""
    text = '{"purposes": [' + ",".join(["{}"] * (MAX_ENTRIES + 1)) + "]}"
    started = time.monotonic()
    with pytest.raises(RegisterError, match="at most 100,000 purposes") as caught:
        loads_register(text, format="json")
    assert time.monotonic() - started < 5
    assert len(caught.value.problems) == 1


def _compatibility(count: int, verdict: str, offset: int, **extra: Any) -> list[dict[str, Any]]:
    factors = {"link": "l", "context": "c", "nature": "n", "consequences": "c", "safeguards": ["s"]}
    entries = []
    for i in range(count):
        a, b = (i, i + 1) if verdict == "compatible" else (i + 1, i)
        entry: dict[str, Any] = {
            "id": f"{verdict[0]}{i}",
            "from": f"p.p{a + offset}",
            "to": f"p.p{b + offset}",
        }
        entry |= factors if verdict == "compatible" else {"source": "s"}
        entries.append({**entry, "verdict": verdict, **extra})
    return entries


def test_many_compatibility_entries_are_checked_in_linear_time() -> None:
    """10,000 compatible and 10,000 prohibited entries that never overlap: checked in seconds
    (a pairwise check would compare 100 million pairs)."""
    data = json.loads(_purposes_json(20_002))
    data["compatibility"] = _compatibility(10_000, "compatible", 0) + _compatibility(
        10_000, "prohibited", 10_001
    )
    started = time.monotonic()
    register = register_from_dict(data)
    assert len(register.compatibility) == 20_000
    assert time.monotonic() - started < 20


def test_thousands_of_unknown_references_are_refused_in_linear_time() -> None:
    """5,000 entries naming undeclared purposes among 50,000 declared ones: every problem is
    listed, within seconds (did-you-mean hints stop when their work budget is spent)."""
    data = json.loads(_purposes_json(50_000))
    data["compatibility"] = [
        {"id": f"c{i}", "from": f"q.x{i}", "to": f"p.p{i}", "verdict": "prohibited", "source": "s"}
        for i in range(5_000)
    ]
    started = time.monotonic()
    with pytest.raises(RegisterError) as caught:
        register_from_dict(data)
    assert time.monotonic() - started < 20
    assert len(caught.value.problems) == 5_000


def test_a_register_of_overlapping_entries_lists_a_bounded_number_of_problems() -> None:
    """1,500 compatible and 1,500 prohibited entries all covering the same reuse: refused,
    listing at most 1,000 overlaps plus one problem saying more exist."""
    data = json.loads(_purposes_json(2))
    same = {"from": "p", "to": "p.p1"}
    data["compatibility"] = [
        {**entry, **same} for entry in _compatibility(1_500, "compatible", 0)
    ] + [{**entry, **same} for entry in _compatibility(1_500, "prohibited", 0)]
    started = time.monotonic()
    with pytest.raises(RegisterError) as caught:
        register_from_dict(data)
    assert time.monotonic() - started < 10
    overlaps = [p for p in caught.value.problems if "overlap" in p.message]
    assert len(overlaps) == OVERLAPS_LISTED + 1
    assert "more compatible entries overlap" in overlaps[-1].message


ID_SEGMENTS = st.sampled_from(["a", "b", "c", "ab"])


@FUZZ
@given(
    entries=st.lists(
        st.tuples(
            st.lists(ID_SEGMENTS, min_size=1, max_size=3).map(".".join),
            st.lists(ID_SEGMENTS, min_size=1, max_size=3).map(".".join),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_indexed_overlap_detection_equals_the_pairwise_definition(
    entries: list[tuple[str, str, bool]],
) -> None:
    """The index finds exactly the (compatible, prohibited) pairs whose from ids and to ids are
    each on one line of the hierarchy (DESIGN §3), in the same order as comparing all pairs."""

    def line(a: str, b: str) -> bool:
        return a == b or a.startswith(b + ".") or b.startswith(a + ".")

    def entry(i: int, from_: str, to: str, allowing: bool) -> Compatibility:
        if allowing:
            return Compatibility(
                f"e{i}", from_, to, "compatible", link="l", context="c", nature="n",
                consequences="c", safeguards=["s"],
            )  # fmt: skip
        return Compatibility(f"e{i}", from_, to, "prohibited", source="s")

    built = [entry(i, *e) for i, e in enumerate(entries)]
    compatible = [e for e in built if e.verdict.value == "compatible"]
    prohibited = [e for e in built if e.verdict.value == "prohibited"]
    expected = [
        (i, j)
        for i, a in enumerate(compatible)
        for j, b in enumerate(prohibited)
        if line(a.from_, b.from_) and line(a.to, b.to)
    ]
    assert _overlapping(compatible, prohibited) == (expected, False)


# --------------------------------------------------------------------------- the JSON protocol


@FUZZ
@given(text=st.text(max_size=300))
def test_any_line_is_a_request_or_a_protocol_error(text: str) -> None:
    """parse_request_line on arbitrary text: a DecideRequest or a ProtocolError."""
    error = refused(lambda: parse_request_line(text), ProtocolError)
    assert error is None or str(error)


PRESET_ENGINE = Engine(load_preset("cnil-commercial"), clock=lambda: NOW)


@FUZZ
@given(data=mutated(GOOD_REQUEST))
def test_a_mutated_request_is_decided_or_refused(data: Any) -> None:
    """A sound request with values replaced, removed or added: either refused with a
    ProtocolError naming a field, or decided — and every decision is JSON with a reason code."""
    requests: list[DecideRequest] = []
    error = refused(lambda: requests.append(parse_request(data)), ProtocolError)
    if error is not None:
        assert str(error)
        return
    decision = decide_request(PRESET_ENGINE, requests[0], NOW)
    shown = json.loads(json.dumps(decision.to_dict()))
    assert shown["reason"] in {r.value for r in Reason}


def run_decide(monkeypatch: pytest.MonkeyPatch, data: bytes) -> tuple[int, list[Any], str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = main(["decide", "--preset", "cnil-commercial", "--at", "2026-03-01"])
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


@FUZZ
@given(
    lines=st.lists(
        st.binary(max_size=60) | st.sampled_from([json.dumps(GOOD_REQUEST).encode()]), max_size=6
    )
)
def test_decide_answers_every_line_of_any_input(lines: list[bytes]) -> None:
    """`purposelimit decide` on arbitrary bytes: exit 0 or 1, one JSON answer per non-blank
    line, in order, each a decision or {"error", "line"} with the right line number."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        cleaned = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
        code, answers, err = run_decide(monkeypatch, b"\n".join(cleaned) + b"\n")
    expected_lines = [n for n, line in enumerate(cleaned, start=1) if answered(line, n)]
    assert code in (0, 1)
    assert err == ""
    assert len(answers) == len(expected_lines)
    for answer, number in zip(answers, expected_lines, strict=True):
        assert answer.get("line", number) == number
        assert ("error" in answer) is not ("allowed" in answer)
    assert code == (1 if any("error" in a for a in answers) else 0)


def answered(line: bytes, number: int) -> bool:
    """Whether decide answers this input line: it is not UTF-8, or it is not blank."""
    if number == 1 and line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    try:
        return bool(line.decode("utf-8").strip())
    except UnicodeDecodeError:
        return True


@pytest.mark.parametrize(
    "line",
    [
        "[" * 200_000 + "]" * 200_000,
        '{"purpose": ' + "{" * 100_000,
        '{"purpose": ' + "9" * 100_000 + "}",
        "\x00" * 10_000,
        '{"purpose": "a", "purpose": "b"}',
    ],
    ids=["nested-arrays", "nested-objects", "long-number", "nul-bytes", "duplicate-key"],
)
def test_hostile_requests_get_an_error_line(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deep nesting, enormous numbers, NUL bytes, duplicate keys: each gets an error line."""
    started = time.monotonic()
    code, answers, err = run_decide(monkeypatch, line.encode() + b"\n")
    assert time.monotonic() - started < 5
    assert code == 1
    assert err == ""
    assert answers == [{"error": answers[0]["error"], "line": 1}]


def _child_memory(script: str, stdin: Any = None) -> tuple[int, int, str, str]:
    """Run *script* in a child that prints its exit status and peak memory (kB) last."""
    code = textwrap.dedent(script) + textwrap.dedent(
        """
        import resource, sys
        try:  # this process's own peak (ru_maxrss would count what the parent held at fork)
            with open("/proc/self/status") as status:
                PEAK = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
        except OSError:
            PEAK = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(STATUS, PEAK, file=sys.stderr)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PURPOSELIMIT_PSEUDONYM_KEY"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdin=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    *rest, last = done.stderr.strip().splitlines()
    status, peak = last.split()
    return int(status), int(peak), done.stdout, "\n".join(rest)


def test_a_1_gib_request_line_is_skipped_in_bounded_memory() -> None:
    """decide reads a 1 GiB line streamed on its stdin in bounded chunks: the line gets an
    error, the next request is decided, and the process never holds the line (peak memory
    well under 300 MB)."""
    generator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                out = sys.stdout.buffer
                chunk = b"x" * (1 << 20)
                for _ in range(1024):
                    out.write(chunk)
                out.write(b"\\n" + {json.dumps(GOOD_REQUEST).encode()!r} + b"\\n")
                """
            ),
        ],
        stdout=subprocess.PIPE,
    )
    started = time.monotonic()
    try:
        status, peak_kb, out, _ = _child_memory(
            """
            from purposelimit._cli import main
            STATUS = main(["decide", "--preset", "cnil-commercial"])
            """,
            stdin=generator.stdout,
        )
    finally:
        assert generator.stdout is not None
        generator.stdout.close()
        generator.wait(timeout=60)
    assert time.monotonic() - started < 60
    first, second = (json.loads(line) for line in out.splitlines())
    assert first == {"error": "the line is longer than 16,777,216 bytes", "line": 1}
    assert second["reason"] in {r.value for r in Reason}
    assert status == 1
    assert peak_kb < 150_000


def test_a_1_gib_line_in_a_lead_file_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A lead file whose second line is 1 GiB long (a sparse file on disk): the filter stops at
    16 MiB with an error naming the line, holding at most that much of it in memory."""
    leads = tmp_path / "leads.csv"
    with leads.open("wb") as handle:
        handle.write(b"Email,Name\n" + b"a@example.org," + b"x" * (2 << 20))  # > the sniffed MiB
        handle.seek(1 << 30)
        handle.write(b"\n")
    (tmp_path / "m.toml").write_text(MAPPING, encoding="utf-8")
    out = tmp_path / "usable.csv"
    status, peak_kb, _, err = _child_memory(
        f"""
        from purposelimit._cli import main
        STATUS = main(["filter", {str(leads)!r}, "--preset", "cnil-commercial",
                       "--purpose", "prospection.email_b2b",
                       "--mapping", {str(tmp_path / "m.toml")!r},
                       "--at", "2026-03-01", "--out", {str(out)!r}])
        """
    )
    assert status == 1
    assert err.endswith("leads.csv:2: not readable as CSV: a line is longer than 16,777,216 bytes")
    assert peak_kb < 150_000
    assert not out.exists()


def test_a_consents_file_of_100000_records_loads_in_linear_time(tmp_path: Path) -> None:
    """A JSON consents file of 100,000 records (one per line) loads within seconds: line numbers
    are counted once, not once per record."""
    path = tmp_path / "consents.json"
    item = '{{"subject": "s{i}", "purposes": ["prospection"], "given_at": "2025-01-01"}}'
    path.write_text("[\n" + ",\n".join(item.format(i=i) for i in range(100_000)) + "\n]\n")
    started = time.monotonic()
    assert len(load_consents(path)) == 100_000
    assert time.monotonic() - started < 10


LOADERS: dict[str, Callable[[Path], object]] = {
    "consents": load_consents,
    "objections": load_objections,
    "authorisations": load_authorisations,
}


@FUZZ
@given(
    data=st.binary(max_size=300)
    | st.builds(lambda v: json.dumps(v).encode(), st.lists(structures, max_size=3)),
    kind=st.sampled_from(sorted(LOADERS)),
    suffix=st.sampled_from([".json", ".jsonl", ".csv", ".txt"]),
)
def test_any_event_file_is_read_or_refused_with_an_input_error(
    data: bytes, kind: str, suffix: str
) -> None:
    """Consent, objection and authorisation files of arbitrary bytes: a list, or an InputError
    naming the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"events{suffix}"
        path.write_bytes(data)
        error = refused(lambda: LOADERS[kind](path), InputError)
        assert error is None or str(error).startswith(str(path))


# --------------------------------------------------------------------------- the CSV reader

MAPPING = """\
[subject]
column = "Email"
email = true
[collection]
purpose = "prospection.email_b2b"
collected_at = "2025-09-15"
[columns]
Email = "contact.email"
Name = "identity.name"
"""

CELLS = st.text(
    alphabet=st.sampled_from(list('ab@.,;\t"\r\n=+-\x00é€ \u043e')), max_size=12
) | st.sampled_from(["2025-01-01", "ada@example.org", ""])


@FUZZ
@given(
    data=st.binary(max_size=400)
    | st.lists(st.lists(CELLS, min_size=0, max_size=4), max_size=8).map(
        lambda rows: "\n".join(",".join(r) for r in [["Email", "Name"], *rows]).encode("utf-8")
    )
)
def test_any_lead_file_is_filtered_or_refused(data: bytes) -> None:
    """filter_csv on arbitrary bytes: a summary with every row accounted for and the output
    written, or an InputError / ConfigurationError and no output left behind."""
    mapping = load_mapping_text(MAPPING)
    register = load_preset("cnil-commercial")
    with tempfile.TemporaryDirectory() as folder:
        source, out = Path(folder) / "leads.csv", Path(folder) / "usable.csv"
        source.write_bytes(data)
        try:
            summary = filter_csv(
                source,
                out,
                register=register,
                purpose="prospection.email_b2b",
                mapping=mapping,
                at=NOW,
            )
        except (InputError, ConfigurationError):
            assert sorted(os.listdir(folder)) == ["leads.csv"]
            return
        assert out.exists()
        assert summary.rows_kept + summary.rows_excluded == summary.rows_read
        assert sorted(os.listdir(folder)) == ["leads.csv", "usable.csv"]


def load_mapping_text(text: str) -> LeadMapping:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.toml"
        path.write_text(text, encoding="utf-8")
        return load_mapping(path)


@FUZZ
@given(
    data=mutated(
        {
            "subject": {"column": "Email", "email": True},
            "collection": {"purpose": "p.a", "collected_at": "2025-01-01"},
            "columns": {"Email": "contact.email"},
            "not_personal": {"Size": "company size"},
        }
    )
)
def test_any_mapping_is_read_or_refused_with_an_input_error(data: Any) -> None:
    """A mapping file with values replaced, removed or added: read, or refused with an
    InputError naming the file."""
    lines = []
    for section, entries in data.items():
        if isinstance(entries, dict):
            lines.append(f"[{json.dumps(str(section))}]")
            lines += [f"{json.dumps(str(k))} = {json.dumps(v)}" for k, v in entries.items()]
    text = "\n".join(lines)
    error = refused(lambda: load_mapping_text(text), InputError)
    assert error is None or "m.toml" in str(error)


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_a_lookalike_id_in_a_register_is_refused_where_it_is_written(name: str) -> None:
    """A look-alike or mixed-script id anywhere in a register is refused, with its path and a
    message saying why."""
    bad = LOOKALIKES[name]
    for section, index, key, value, path in (
        ("purposes", 1, "id", bad, "purposes[1].id"),
        ("categories", 0, "id", bad, "categories[0].id"),
        ("purposes", 0, "categories", [bad], "purposes[0].categories[0]"),
        ("compatibility", 0, "to", bad, "compatibility[0].to"),
    ):
        data = copy.deepcopy(GOOD_REGISTER)
        data[section][index][key] = value
        with pytest.raises(RegisterError) as caught:
            register_from_dict(data)
        messages = {p.path: p.message for p in caught.value.problems}
        assert path in messages, (name, path, messages)
        assert "not a valid id" in messages[path] or "must not be empty" in messages[path]


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_a_lookalike_id_in_a_decide_request_is_never_the_real_one(name: str) -> None:
    """DESIGN §9: in a request an undeclared id, whatever its spelling, is decided
    unknown-purpose / unknown-category (a denial whose explanation says it is not an id);
    a look-alike in a consent's purposes makes the request unreadable."""
    bad = LOOKALIKES[name]
    base: dict[str, Any] = {
        "purpose": "prospection.postal",
        "record": {
            "subject": "s",
            "collected_for": "prospection.postal",
            "collected_at": "2026-01-01",
        },
        "categories": ["identity.name"],
    }
    for key, reason in (
        ("purpose", "unknown-purpose"),
        ("collected_for", "unknown-purpose"),
        ("categories", "unknown-category"),
    ):
        request = copy.deepcopy(base)
        if key == "collected_for":
            request["record"]["collected_for"] = bad
        elif key == "categories":
            request["categories"] = [bad]
        else:
            request["purpose"] = bad
        decision = decide_request(PRESET_ENGINE, parse_request_line(json.dumps(request)), NOW)
        assert (decision.allowed, decision.reason.value) == (False, reason)
        assert bad not in decision.explanation or bad.isascii()
    with pytest.raises(ProtocolError, match=r"consents\[0\]\.purposes\[0\]: not a purpose"):
        parse_request(
            {**base, "consents": [{"subject": "s", "purposes": [bad], "given_at": "2026-01-01"}]}
        )


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
@pytest.mark.parametrize("option", ["--purpose", "--collected-for"])
def test_a_lookalike_id_on_the_command_line_is_refused(
    name: str, option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--purpose / --collected-for with a look-alike id: usage error (exit 2) saying the id
    is not valid, its non-ASCII characters escaped so they show (prospecti\\u043en...)."""
    bad = LOOKALIKES[name].replace("postal", "email_b2b")
    (tmp_path / "leads.csv").write_text("Email,Name\nada@example.org,Ada\n", encoding="utf-8")
    (tmp_path / "m.toml").write_text(MAPPING, encoding="utf-8")
    args = ["filter", str(tmp_path / "leads.csv"), "--preset", "cnil-commercial"]
    args += ["--mapping", str(tmp_path / "m.toml"), "--at", "2026-03-01"]
    args += ["--out", str(tmp_path / "o.csv"), "--purpose", "prospection.email_b2b"]
    if option == "--purpose":
        args[-1] = bad
    else:
        args += ["--collected-for", bad]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not a valid id" in err
    assert ascii(bad) in err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_a_lookalike_category_in_a_mapping_is_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mapping giving a column a look-alike category, or a look-alike collection purpose:
    the mapping is refused (exit 1) naming the key and why."""
    bad = LOOKALIKES[name]
    (tmp_path / "leads.csv").write_text("Email,Name\nada@example.org,Ada\n", encoding="utf-8")
    for text in (
        MAPPING.replace('Name = "identity.name"', f"Name = {json.dumps(bad)}"),
        MAPPING.replace('purpose = "prospection.email_b2b"', f"purpose = {json.dumps(bad)}"),
    ):
        (tmp_path / "m.toml").write_text(text, encoding="utf-8")
        args = ["filter", str(tmp_path / "leads.csv"), "--preset", "cnil-commercial"]
        args += ["--purpose", "prospection.email_b2b", "--mapping", str(tmp_path / "m.toml")]
        args += ["--at", "2026-03-01", "--out", str(tmp_path / "o.csv")]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "m.toml:" in err
        assert "not a valid id" in err or "must not be empty" in err


@record
class Lead(TaggedRecord):
    name: str = personal("identity.name")


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_a_lookalike_id_in_code_is_refused_or_never_allowed(name: str, mode: Any) -> None:
    """In code: a look-alike category, collection purpose or consent purpose is a ValueError
    at once; a look-alike processing purpose decides every read unknown-purpose (never
    allowed, in either mode)."""
    bad = LOOKALIKES[name]
    with pytest.raises(ValueError, match=r"valid id|must not be empty"):
        personal(bad)
    with pytest.raises(ValueError, match=r"valid id|must not be empty"):
        Collection(bad)
    with pytest.raises(ValueError, match=r"valid id|must not be empty"):
        Consent("s", [bad], T0)
    register = Register(
        [
            Purpose(
                "prospection.postal",
                "P",
                "d",
                "contract",
                Retention("P1Y"),
                categories=["identity"],
            )
        ],
        [DataCategory("identity"), DataCategory("identity.name")],
    )
    events: list[Any] = []
    engine = Engine(register, clock=lambda: NOW, audit=_ListSink(events))
    lead = Lead("Ada", subject="s", collection=Collection("prospection.postal"), collected_at=T0)
    with processing(bad, actor="t", engine=engine, mode=mode):
        if mode == "enforce":
            with pytest.raises(ProcessingDenied) as caught:
                _ = lead.name
            assert caught.value.reason is Reason.UNKNOWN_PURPOSE
            assert "not in the id syntax" in str(caught.value)
        else:
            assert lead.name == "Ada"
    assert [(e.allowed, e.reason) for e in events] == [(False, Reason.UNKNOWN_PURPOSE)]


class _ListSink:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def emit(self, events: Any) -> None:
        self.events.extend(events)


# --------------------------------------------------------------------------- subject ids


def consent_for(subject: str) -> Consent:
    return Consent(subject, ["prospection"], T0, evidence=Evidence("double-opt-in"))


def test_subject_ids_are_compared_exactly_in_decisions() -> None:
    """CRM ids are case-sensitive: a consent of "Lead-42" (or " lead-42") is not lead-42's."""
    request = copy.deepcopy(GOOD_REQUEST)
    del request["authorisations"], request["objections"]
    request["record"]["collected_for"] = "prospection.email_b2c"
    reasons = {}
    for subject in ("lead-42", "Lead-42", "LEAD-42", " lead-42", "lead-42 ", "lead\u201042"):
        request["consents"][0]["subject"] = subject
        decision = decide_request(PRESET_ENGINE, parse_request(request), NOW)
        reasons[subject] = decision.reason.value
    assert reasons.pop("lead-42") == "consent"
    assert set(reasons.values()) == {"consent-missing"}


def test_subject_ids_are_compared_exactly_on_guarded_reads(mode: Any) -> None:
    """The same on in-process reads: only the exact subject's consent counts."""
    from purposelimit._store import InMemoryStore

    register = load_preset("cnil-commercial")
    store = InMemoryStore([consent_for("Lead-42")])
    events: list[Any] = []
    engine = Engine(register, store, clock=lambda: NOW, audit=_ListSink(events))
    exact = Lead(
        "Ada", subject="Lead-42", collection=Collection("prospection.email_b2c"), collected_at=T0
    )
    other = Lead(
        "Ada", subject="lead-42", collection=Collection("prospection.email_b2c"), collected_at=T0
    )
    with processing("prospection.email_b2c", actor="t", engine=engine, mode=mode):
        assert exact.name == "Ada"
        with contextlib.suppress(ProcessingDenied):
            _ = other.name
    assert [e.reason for e in events] == [Reason.CONSENT, Reason.CONSENT_MISSING]


@pytest.mark.parametrize(("email", "kept"), [(False, 0), (True, 1)])
def test_subjects_are_normalised_only_where_the_mapping_says_e_mail(email: bool, kept: int) -> None:
    """In a lead file, a consent of "ADA@EXAMPLE.ORG " matches the row "ada@example.org" only
    when the mapping says subjects are e-mail addresses (trimmed, lower-cased)."""
    mapping = LeadMapping(
        "Email",
        email=email,
        collected_for="prospection.email_b2c",
        collected_at=T0,
        columns={"Email": "contact.email"},
    )
    rows = [{"Email": "ada@example.org"}]
    consent = consent_for("ADA@EXAMPLE.ORG ")
    if email:
        consent = consent_for("ada@example.org")  # the command line normalises files so
    results = list(
        filter_leads(
            rows,
            register=load_preset("cnil-commercial"),
            purpose="prospection.email_b2c",
            mapping=mapping,
            at=NOW,
            consents=[consent_for("ADA@EXAMPLE.ORG "), consent][: 1 + email],
        )
    )
    assert sum(r.kept for r in results) == kept


def test_the_command_line_normalises_event_files_for_e_mail_subjects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """filter with an e-mail mapping reads " ADA@Example.org" in a consents file as the row's
    ada@example.org; with the subject as a plain CRM id it would not match."""
    (tmp_path / "leads.csv").write_text("Email,Name\nada@example.org,Ada\n", encoding="utf-8")
    (tmp_path / "c.json").write_text(
        json.dumps(
            [
                {
                    "subject": " ADA@Example.org",
                    "purposes": ["prospection.email_b2c"],
                    "given_at": "2025-10-01",
                    "evidence": {"mechanism": "double-opt-in"},
                }
            ]
        ),
        encoding="utf-8",
    )
    for email, kept in (("true", "1"), ("false", "0")):
        (tmp_path / "m.toml").write_text(
            MAPPING.replace("email = true", f"email = {email}"), encoding="utf-8"
        )
        args = ["filter", str(tmp_path / "leads.csv"), "--preset", "cnil-commercial"]
        args += ["--purpose", "prospection.email_b2c", "--mapping", str(tmp_path / "m.toml")]
        args += ["--at", "2026-03-01", "--out", str(tmp_path / "o.csv")]
        args += ["--consents", str(tmp_path / "c.json")]
        assert main(args) == 0
        assert f"kept      {kept} rows" in capsys.readouterr().out


# --------------------------------------------------------------------------- paths


def filter_command(folder: Path, *extra: str) -> list[str]:
    (folder / "leads.csv").write_text("Email,Name\nada@example.org,Ada\nbob@example.org,Bob\n")
    (folder / "m.toml").write_text(MAPPING, encoding="utf-8")
    args = ["filter", str(folder / "leads.csv"), "--preset", "cnil-commercial"]
    args += ["--purpose", "prospection.email_b2b", "--mapping", str(folder / "m.toml")]
    return [*args, "--at", "2026-03-01", *extra]


@pytest.fixture
def temp_folders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folders the library creates its temporary output files in."""
    seen: list[str] = []
    original = tempfile.mkstemp

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(os.path.realpath(kwargs["dir"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", spy)  # the module _files writes through
    return seen


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_dot_dot_through_a_link_writes_where_the_system_resolves(
    tmp_path: Path, temp_folders: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--out / --report "link/../x" where link points into another folder: the system resolves
    ".." from the link's target, so that is where the files go — and their temporary files are
    made there too, never in the folder the path merely seems to name."""
    (tmp_path / "real" / "inner").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "link").symlink_to(tmp_path / "real" / "inner")
    work = tmp_path / "work"
    args = filter_command(tmp_path, "--out", str(work / "link" / ".." / "usable.csv"))
    args += ["--report", str(work / "link" / ".." / "report.json")]
    assert main(args) == 0
    assert (tmp_path / "real" / "usable.csv").is_file()
    assert (tmp_path / "real" / "report.json").is_file()
    assert listing(work) == ["link"]
    assert set(temp_folders) == {str((tmp_path / "real").resolve())}
    assert sorted(os.listdir(tmp_path / "real")) == ["inner", "report.json", "usable.csv"]


def test_dot_dot_components_stay_in_the_folder_they_resolve_to(
    tmp_path: Path, temp_folders: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An output named "a/b/../../out/x.csv" is written in out/, its temporary file too, and
    nothing is created anywhere else."""
    for name in ("a/b", "out"):
        (tmp_path / name).mkdir(parents=True)
    args = filter_command(tmp_path, "--out", str(tmp_path / "a/b/../../out/usable.csv"))
    args += ["--report", str(tmp_path / "a/b/../../out/r.html")]
    assert main(args) == 0
    assert listing(tmp_path) == [
        "a",
        "a/b",
        "leads.csv",
        "m.toml",
        "out",
        "out/r.html",
        "out/usable.csv",
    ]
    assert set(temp_folders) == {str((tmp_path / "out").resolve())}


def test_an_output_in_a_missing_folder_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out in a folder that does not exist: exit 1, and no folder or file is created."""
    args = filter_command(tmp_path, "--out", str(tmp_path / "missing" / "usable.csv"))
    assert main(args) == 1
    assert "No such file or directory" in capsys.readouterr().err
    assert listing(tmp_path) == ["leads.csv", "m.toml"]


def test_the_audit_file_is_appended_where_it_is_named(
    tmp_path: Path,
    temp_folders: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--audit appends to the chained file it names (through "..", as resolved), with no
    temporary file: the folder it names gains that file, its head and its lock only."""
    monkeypatch.setenv("PURPOSELIMIT_AUDIT_KEY", "k" * 32)
    (tmp_path / "logs").mkdir()
    (tmp_path / "out").mkdir()
    args = filter_command(tmp_path, "--out", str(tmp_path / "out" / "usable.csv"))
    args += ["--audit", str(tmp_path / "out" / ".." / "logs" / "audit.jsonl")]
    assert main(args) == 0
    assert main(args) == 0
    assert listing(tmp_path / "logs") == ["audit.jsonl", "audit.jsonl.head", "audit.jsonl.lock"]
    lines = (tmp_path / "logs" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    runs = {json.loads(line)["subject_ref"] for line in lines}
    assert len({ref for ref in runs if ref.startswith("run:")}) == 2
    assert set(temp_folders) == {str((tmp_path / "out").resolve())}


@FUZZ
@given(
    name=st.text(
        st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]),
        min_size=1,
        max_size=40,
    )
)
def test_a_temporary_file_never_escapes_the_named_folder(name: str) -> None:
    """Whatever the output's name ('..', '.hidden', spaces, unicode), its temporary file is made
    in the output's own folder (the name is never a path to it)."""
    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, "sub", name)
        os.mkdir(os.path.join(folder, "sub"))
        try:
            fd, tmp = _files.temp_beside(target)
        except OSError:
            assert name in (".", "..")  # a folder: refused, nothing made
            return
        os.close(fd)
        assert os.path.dirname(tmp) == os.path.realpath(os.path.join(folder, "sub"))
        os.unlink(tmp)
        assert os.listdir(os.path.join(folder, "sub")) == []


@FUZZ
@given(id_=st.from_regex(ID_PATTERN, fullmatch=True))
def test_a_name_made_from_an_id_stays_in_its_folder(id_: str) -> None:
    """Ids (DESIGN §9) have no separator and no '..' segment: a file name generated from a
    purpose or category id ("report-<id>.json") cannot leave the folder it is made in."""
    folder = "/reports"
    path = os.path.normpath(os.path.join(folder, f"report-{id_}.json"))
    assert os.path.dirname(path) == folder
    assert os.sep not in id_
    assert ".." not in id_.split(".")
