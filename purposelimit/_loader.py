"""Loading a register from a TOML or JSON file, text or dict (DESIGN §9).

A bad register is refused with every problem listed at once, in one
:class:`~purposelimit.RegisterError`: each problem names its path
(``purposes[3].retention.duration``), and, when the register came from a file
or text, its file and line. Nothing in a register file ever produces a raw
traceback.

How a register is read:

1. the text is parsed (TOML, or JSON for ``.json`` files); a syntax error is
   one problem with its line;
2. the top level, the ``[register]`` table and every entry are structured on
   their own through the cattrs converter of :mod:`purposelimit._convert`, so
   that a bad entry does not hide the problems of the others;
3. with ``preset = "<name>"`` in ``[register]``, the file's entries are merged
   into the shipped preset: an entry with the id of a preset entry replaces it
   (and must carry a written ``justification``), the others are added;
4. the semantic checks of :func:`purposelimit._register.check_register` run on
   the merged, sound entries; their problems point to the file and entry they
   come from, the preset's file included.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import attrs

from ._convert import (
    ENTRY_TYPES,
    RegisterHeader,
    describe_value,
    file_keys,
    structure_entry,
    unknown_key_message,
)
from ._errors import ConfigurationError, RegisterError, RegisterProblem
from ._ids import is_valid_id
from ._model import DataCategory, LegalBasis, Purpose, Retention
from ._register import Register, check_register

__all__ = ["load_register", "loads_register", "register_from_dict"]

Format = Literal["toml", "json"]

_SECTIONS = tuple(ENTRY_TYPES)
_TOP_KEYS = ("register", *_SECTIONS)

#: The largest register text read (bytes of a file, characters of a text): 16 MiB,
#: some 250 times the shipped preset. Parsing never starts on more.
MAX_REGISTER_SIZE = 1 << 24
#: The most entries one section (purposes, categories, compatibility) may hold.
MAX_ENTRIES = 100_000


# --------------------------------------------------------------------------- public API


def load_register(path: str | os.PathLike[str]) -> Register:
    """Load the register file at *path* (DESIGN §9; GDPR art. 30 record of processing).

    Args:
        path: a TOML file, or a JSON file of the same shape when its name ends
            in ``.json``. Text is UTF-8.

    Returns:
        The :class:`~purposelimit.Register`, merged with its preset when the
        file names one in ``[register] preset``.

    Raises:
        RegisterError: the file cannot be read or is refused; ``problems``
            lists every problem at once, each with the file as given, its path
            and, when known, its line. A file larger than 16 MiB, or a section
            of more than 100,000 entries, is refused before it is parsed or
            checked.
    """
    name = os.fspath(path)
    fmt: Format = "json" if name.lower().endswith(".json") else "toml"
    try:
        with open(name, "rb") as handle:
            raw = handle.read(MAX_REGISTER_SIZE + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RegisterError(
            [RegisterProblem("", f"the file cannot be read: {reason}", None, name)], name
        ) from None
    if len(raw) > MAX_REGISTER_SIZE:
        raise RegisterError([RegisterProblem("", _TOO_LARGE, None, name)], name)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RegisterError(
            [RegisterProblem("", "the file is not UTF-8 text", line, name)], name
        ) from None
    return _loads(text, fmt, name, allow_preset=True)


def loads_register(text: str, *, format: Format = "toml", source: str | None = None) -> Register:
    """Load a register from the text of a register file (DESIGN §9).

    Args:
        text: the file's content.
        format: ``"toml"`` (default) or ``"json"``; both have the same shape.
        source: the file name to show in problems, if the text came from one.

    Returns:
        The :class:`~purposelimit.Register`, merged with its preset when the
        text names one.

    Raises:
        RegisterError: every problem of the text at once, each with its path
            and line.
        ConfigurationError: *format* is neither ``"toml"`` nor ``"json"``.
    """
    if format not in ("toml", "json"):
        raise ConfigurationError(f"format must be 'toml' or 'json', not {format!r}")
    return _loads(text, format, source, allow_preset=True)


def register_from_dict(data: Mapping[str, Any], *, source: str | None = None) -> Register:
    """Build a register from a dict of the file shape (DESIGN §9), as parsed from TOML or JSON.

    ``register_from_dict(register.to_dict()) == register`` for every register.

    Args:
        data: ``{"register": {...}, "categories": [...], "purposes": [...],
            "compatibility": [...]}``; every section is optional.
        source: a name to show in problems.

    Returns:
        The :class:`~purposelimit.Register`.

    Raises:
        RegisterError: every problem at once, each with its path (no lines: a
            dict has none).
    """
    return _build(data, _Source(source, None), allow_preset=True)


# --------------------------------------------------------------------------- parsing

_UNPARSED = object()  # the text could not be parsed: its problems say why
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\Z")


_TOO_LARGE = (
    f"the register is larger than {MAX_REGISTER_SIZE >> 20} MiB, more than any record of "
    "processing activities needs: it is not read"
)


#: The problem of a file with nothing in it (GDPR art. 30: a record lists its processing).
_NOTHING_DECLARED = (
    "the file is empty (or holds {what}): a record of processing activities "
    "(GDPR art. 30) declares its purposes. Is the file truncated?"
)


def _loads(text: str, fmt: Format, source: str | None, *, allow_preset: bool) -> Register:
    if len(text) > MAX_REGISTER_SIZE:
        raise RegisterError([RegisterProblem("", _TOO_LARGE, None, source)], source)
    if fmt == "json":
        data, problems = _parse_json(text)
    else:
        data, problems = _parse_toml(text)
    src = _Source(source, _LineMap(text, fmt))
    found = [src.problem(path, message, line) for path, message, line in problems]
    if data is _UNPARSED:
        raise RegisterError(found, source)
    if isinstance(data, Mapping) and not data:
        what = "an empty object" if fmt == "json" else "only comments"
        found.append(src.problem("", _NOTHING_DECLARED.format(what=what), 1))
    return _build(data, src, allow_preset=allow_preset, problems=found)


def _parse_toml(text: str) -> tuple[Any, list[tuple[str, str, int | None]]]:
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_AT.search(message)
        if found is not None:
            line: int | None = int(found[1])
            message = f"{message[: found.start()]} (column {found[2]})"
        else:
            line = text.count("\n") + (0 if text.endswith("\n") else 1) or 1
        return _UNPARSED, [("", f"invalid TOML: {message}", line)]
    except (ValueError, RecursionError) as exc:  # a number too long to convert, deep nesting
        return _UNPARSED, [("", f"invalid TOML: {_plain(exc)}", None)]


def _parse_json(text: str) -> tuple[Any, list[tuple[str, str, int | None]]]:
    repeated: list[tuple[dict[str, Any], list[str]]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        again: list[str] = []
        for key, value in items:
            if key in result:
                again.append(key)
            result[key] = value
        if again:
            repeated.append((result, again))
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        return _UNPARSED, [("", f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno)]
    except (ValueError, RecursionError) as exc:  # a number too long to convert, deep nesting
        return _UNPARSED, [("", f"invalid JSON: {_plain(exc)}", None)]
    if not repeated:
        return data, []
    owners = {id(obj): keys for obj, keys in repeated}
    problems: list[tuple[str, str, int | None]] = [
        (_join(path, key), f"duplicate key {key!r}: each key may appear once", None)
        for path, obj in _walk(data, "")
        for key in owners.get(id(obj), ())
    ]
    return data, problems


def _plain(exc: BaseException) -> str:
    """A parser error without the value it quotes."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "a number is too long" if "integer string conversion" in str(exc) else "unreadable"


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(path, table)`` for every table in *value*, depth first, without recursion."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        here, item = stack.pop()
        if isinstance(item, dict):
            yield here, item
            stack.extend((_join(here, k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{here}[{i}]", v) for i, v in reversed(list(enumerate(item))))


# --------------------------------------------------------------------------- line maps


_LAST_STEP = re.compile(r"(?:\.[^.\[\]]*|\[\d+\])\Z")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str:
    found = _LAST_STEP.search(path)
    return path[: found.start()] if found is not None else ""


class _LineMap:
    """Maps paths (``purposes[3].retention.duration``) to 1-based lines of a source text.

    Built on first use only (a sound file never needs it). A path the map does
    not know falls back to its nearest known parent's line.
    """

    def __init__(self, text: str, fmt: Format) -> None:
        self._text = text
        self._fmt = fmt
        self._lines: dict[str, int] | None = None

    def line(self, path: str) -> int | None:
        if self._lines is None:
            self._lines = {}
            scan = _toml_lines if self._fmt == "toml" else _json_lines
            # A line map is a convenience: keep what was mapped, never fail a load over it.
            with contextlib.suppress(Exception):
                scan(self._text, self._lines)
        while True:
            if path in self._lines:
                return self._lines[path]
            if not path:
                return None
            path = _parent(path)


class _Text:
    """A cursor over a source text that knows the line of every offset."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self._newlines = [m.start() for m in re.finditer("\n", text)]

    def line_at(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1

    def peek(self, k: int = 1) -> str:
        return self.s[self.i : self.i + k]


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_lines(text: str, lines: dict[str, int]) -> None:
    """Map the paths of a (valid) TOML text to the lines they are written on.

    Knows ``[table]`` and ``[[array-of-tables]]`` headers (counted per name,
    nested ones per parent element), ``key = value`` lines, dotted keys, inline
    tables (each inner key maps to its own line) and arrays (each item to its
    line). Multi-line strings and comments are skipped.
    """
    t = _Text(text)
    counts: dict[str, int] = {}

    def record(path: str, offset: int) -> None:
        lines.setdefault(path, t.line_at(offset))

    def blank(newlines: bool) -> None:
        while t.i < t.n:
            c = t.s[t.i]
            if c in " \t\r" or (newlines and c == "\n"):
                t.i += 1
            elif c == "#":
                end = t.s.find("\n", t.i)
                t.i = t.n if end < 0 else end
            else:
                return

    def key() -> list[str]:
        parts: list[str] = []
        while True:
            blank(False)
            c = t.peek()
            if c == '"':
                end, value = _basic_string(t.s, t.i)
                parts.append(value)
                t.i = end
            elif c == "'":
                end = t.s.index("'", t.i + 1)
                parts.append(t.s[t.i + 1 : end])
                t.i = end + 1
            else:
                found = _BARE.match(t.s, t.i)
                if found is None:
                    raise ValueError("not a key")
                parts.append(found.group())
                t.i = found.end()
            blank(False)
            if t.peek() != ".":
                return parts
            t.i += 1

    def keyval(prefix: str) -> None:
        start = t.i
        path = prefix
        for part in key():
            path = _join(path, part)
            record(path, start)
        blank(False)
        if t.peek() != "=":
            raise ValueError("expected '='")
        t.i += 1
        blank(False)
        value(path)

    def value(path: str) -> None:
        c = t.peek()
        if t.peek(3) in ('"""', "'''"):
            quote = t.peek(3)
            j = t.i + 3
            while True:
                if quote == '"""' and t.s[j] == "\\":
                    j += 2
                elif t.s.startswith(quote, j):
                    j += 3
                    while j < t.n and t.s[j] == quote[0]:
                        j += 1
                    break
                else:
                    j += 1
            t.i = j
        elif c == '"':
            t.i, _ = _basic_string(t.s, t.i)
        elif c == "'":
            t.i = t.s.index("'", t.i + 1) + 1
        elif c == "[":
            t.i += 1
            index = 0
            while True:
                blank(True)
                if t.peek() == "]":
                    t.i += 1
                    return
                item = f"{path}[{index}]"
                record(item, t.i)
                value(item)
                blank(True)
                if t.peek() == ",":
                    t.i += 1
                index += 1
        elif c == "{":
            t.i += 1
            while True:
                blank(False)
                if t.peek() == "}":
                    t.i += 1
                    return
                keyval(path)
                blank(False)
                if t.peek() == ",":
                    t.i += 1
        else:
            end = re.compile(r"[,\]}\n#]").search(t.s, t.i)
            t.i = t.n if end is None else end.start()

    def header(parts: list[str], array: bool, offset: int) -> str:
        path = ""
        for position, part in enumerate(parts):
            path = _join(path, part)
            if array and position == len(parts) - 1:
                count = counts.get(path, 0)
                counts[path] = count + 1
                record(path, offset)
                path = f"{path}[{count}]"
            elif path in counts:
                path = f"{path}[{counts[path] - 1}]"
        record(path, offset)
        return path

    prefix = ""
    while True:
        blank(True)
        if t.i >= t.n:
            return
        before = t.i
        if t.peek(2) == "[[":
            t.i += 2
            parts = key()
            t.i += 2  # ]]
            prefix = header(parts, True, before)
        elif t.peek() == "[":
            t.i += 1
            parts = key()
            t.i += 1  # ]
            prefix = header(parts, False, before)
        else:
            keyval(prefix)
        if t.i <= before:
            raise ValueError("no progress")


def _basic_string(s: str, start: int) -> tuple[int, str]:
    """Read a TOML or JSON basic string starting at the quote; return (end, content)."""
    j = start + 1
    while s[j] != '"':
        j += 2 if s[j] == "\\" else 1
    return j + 1, s[start + 1 : j]


def _json_lines(text: str, lines: dict[str, int]) -> None:
    """Map the paths of a (valid) JSON text to the line each value starts on."""
    t = _Text(text)
    decoder = json.JSONDecoder()
    space = re.compile(r"[ \t\n\r]*")

    def skip() -> None:
        found = space.match(t.s, t.i)
        if found is not None:
            t.i = found.end()

    def value(path: str) -> None:
        skip()
        lines.setdefault(path, t.line_at(t.i))
        c = t.peek()
        if c == "{":
            t.i += 1
            while True:
                skip()
                if t.peek() == "}":
                    t.i += 1
                    return
                end, _ = _basic_string(t.s, t.i)
                name = json.loads(t.s[t.i : end])
                t.i = end
                skip()
                t.i += 1  # :
                value(_join(path, name))
                skip()
                if t.peek() == ",":
                    t.i += 1
        elif c == "[":
            t.i += 1
            index = 0
            while True:
                skip()
                if t.peek() == "]":
                    t.i += 1
                    return
                value(f"{path}[{index}]")
                index += 1
                skip()
                if t.peek() == ",":
                    t.i += 1
        else:
            _, t.i = decoder.raw_decode(t.s, t.i)

    value("")


# --------------------------------------------------------------------------- building


@attrs.frozen
class _Source:
    """Where entries come from: a file name (or none) and its line map (or none)."""

    name: str | None
    lines: _LineMap | None = attrs.field(eq=False)

    def problem(self, path: str, message: str, line: int | None = None) -> RegisterProblem:
        if line is None and self.lines is not None:
            line = self.lines.line(path)
        return RegisterProblem(path, message, line, self.name)


@attrs.frozen
class _Origin:
    """The file and path one entry of a (possibly merged) register comes from."""

    source: _Source
    path: str
    label: str


@attrs.frozen
class _Entry:
    value: Any
    origin: _Origin
    justified: bool


_TOKEN = re.compile("\x00(\\d+)\x00")


def _stand_in(section: str, raw: object) -> Any:
    """A placeholder for an entry that failed structuring, so that references to its
    id and duplicates of it are judged as if it were sound (no spurious problems)."""
    if not isinstance(raw, Mapping) or not is_valid_id(raw.get("id")):
        return None
    id_ = raw["id"]
    if section == "categories":
        return DataCategory(id=id_)
    if section == "purposes":

        def ids(key: str) -> tuple[str, ...]:
            listed = raw.get(key)
            if isinstance(listed, list) and all(is_valid_id(v) for v in listed):
                return tuple(listed)
            return ()

        return Purpose(
            id=id_,
            label="-",
            description="-",
            legal_basis=LegalBasis.CONSENT,
            retention=Retention("P1D"),
            categories=ids("categories"),
            sensitive_categories=ids("sensitive_categories"),
        )
    return None


def _justified(raw: object) -> bool:
    if not isinstance(raw, Mapping):
        return False
    text = raw.get("justification")
    return isinstance(text, str) and bool(text.strip())


def _build(
    data: object,
    src: _Source,
    *,
    allow_preset: bool,
    problems: list[RegisterProblem] | None = None,
) -> Register:
    problems = [] if problems is None else problems

    def report(path: str, message: str) -> None:
        problems.append(src.problem(path, message))

    if not isinstance(data, Mapping):
        report(
            "",
            "a register must be a table with the sections register, categories, purposes "
            f"and compatibility; found {describe_value(data)}",
        )
        raise RegisterError(problems, src.name)

    for key in data:
        if isinstance(key, str) and key.startswith("x-"):
            continue
        if key in file_keys(RegisterHeader):
            report(str(key), f"{key!r} belongs in the [register] table (register.{key})")
        elif key not in _TOP_KEYS:
            report(str(key), unknown_key_message(key, _TOP_KEYS))

    header = RegisterHeader()
    found_header, header_problems = structure_entry(
        data.get("register", {}), RegisterHeader, "register"
    )
    for path, message in header_problems:
        report(path, message)
    if found_header is not None:
        header = found_header

    oversized = [
        section
        for section in _SECTIONS
        if isinstance(data.get(section), list) and len(data[section]) > MAX_ENTRIES
    ]
    if oversized:
        for section in oversized:
            report(
                section,
                f"{len(data[section]):,} entries: a register holds at most {MAX_ENTRIES:,} "
                f"{section} entries; it is not checked further",
            )
        raise RegisterError(problems, src.name)

    entries: dict[str, list[_Entry]] = {section: [] for section in _SECTIONS}
    own_label = f"{src.name}" if src.name else "the register"
    for section, cls in ENTRY_TYPES.items():
        raw_section = data.get(section, [])
        if not isinstance(raw_section, list):
            report(
                section,
                f"expected an array of tables ([[{section}]]), found {describe_value(raw_section)}",
            )
            continue
        for index, raw in enumerate(raw_section):
            path = f"{section}[{index}]"
            value, entry_problems = structure_entry(raw, cls, path)
            for problem_path, message in entry_problems:
                report(problem_path, message)
            if value is None:
                value = _stand_in(section, raw)
            if value is not None:
                entries[section].append(
                    _Entry(value, _Origin(src, path, own_label), _justified(raw))
                )

    semantic = True
    merged = entries
    if header.preset is not None:
        if not allow_preset:
            report("register.preset", "a preset cannot itself start from another preset")
        else:
            preset = _preset_entries(header.preset)
            if isinstance(preset, str):
                report("register.preset", preset)
                semantic = False
            elif isinstance(preset, RegisterError):
                problems.extend(preset.problems)
                semantic = False
            else:
                merged = _merge(preset, entries, header.preset, report)

    if semantic:
        origins: list[_Origin] = []
        paths: dict[str, list[str]] = {}
        for section in _SECTIONS:
            paths[section] = []
            for entry in merged[section]:
                paths[section].append(f"\x00{len(origins)}\x00")
                origins.append(entry.origin)
        found = check_register(
            [e.value for e in merged["purposes"]],
            [e.value for e in merged["categories"]],
            [e.value for e in merged["compatibility"]],
            paths=paths,
        )
        problems.extend(_resolve(p, origins, src) for p in found)

    if problems:
        ordered = sorted(problems, key=lambda p: (p.file != src.name, p.line is None, p.line or 0))
        raise RegisterError(ordered, src.name)
    return Register(
        [e.value for e in merged["purposes"]],
        [e.value for e in merged["categories"]],
        [e.value for e in merged["compatibility"]],
        controller=header.controller,
        version=header.version,
        _problems_source=src.name,
    )


def _resolve(problem: RegisterProblem, origins: list[_Origin], src: _Source) -> RegisterProblem:
    """Turn a check_register problem about merged entries back into file and path terms."""
    found = _TOKEN.match(problem.path)
    if found is not None:
        origin = origins[int(found[1])]
        owner = origin.source
        path = origin.path + problem.path[found.end() :]
    else:
        owner, path = src, problem.path

    def mention(token: re.Match[str]) -> str:
        other = origins[int(token[1])]
        return other.path if other.source is owner else f"{other.path} of {other.label}"

    return owner.problem(path, _TOKEN.sub(mention, problem.message))


def _preset_entries(name: str) -> dict[str, list[_Entry]] | RegisterError | str:
    """The entries of preset *name* with their origins; a RegisterError if the preset is
    refused; a message if there is no such preset."""
    from ._presets import _preset_file, load_preset, preset_names

    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        available = ", ".join(names) if names else "none are installed"
        shown = name if len(name) <= 40 else name[:37] + "..."
        return f"unknown preset {shown!r}{hint}; available presets: {available}"
    try:
        register = load_preset(name)
    except RegisterError as exc:
        return exc
    file, text = _preset_file(name)
    source = _Source(file, _LineMap(text, "toml"))
    label = f"preset {name!r}"
    sections: dict[str, list[Any]] = {
        "categories": list(register.categories.values()),
        "purposes": list(register.purposes.values()),
        "compatibility": list(register.compatibility),
    }
    return {
        section: [
            _Entry(value, _Origin(source, f"{section}[{index}]", label), True)
            for index, value in enumerate(values)
        ]
        for section, values in sections.items()
    }


def _merge(
    preset: dict[str, list[_Entry]],
    own: dict[str, list[_Entry]],
    name: str,
    report: Callable[[str, str], None],
) -> dict[str, list[_Entry]]:
    """Add the file's entries to the preset's; an entry with a preset id replaces it."""
    merged: dict[str, list[_Entry]] = {}
    kinds = {
        "categories": "category",
        "purposes": "purpose",
        "compatibility": "compatibility entry",
    }
    for section in _SECTIONS:
        result = list(preset[section])
        position = {entry.value.id: index for index, entry in enumerate(result)}
        replaced: set[str] = set()
        for entry in own[section]:
            id_ = entry.value.id
            if id_ in position and id_ not in replaced:
                replaced.add(id_)
                if not entry.justified:
                    report(
                        f"{entry.origin.path}.justification",
                        f"replaces the {kinds[section]} {id_!r} of preset {name!r}: a written "
                        "justification is required to depart from a preset entry",
                    )
                result[position[id_]] = entry
            else:
                result.append(entry)
        merged[section] = result
    return merged
