"""One cattrs converter for the register values: the file shape of DESIGN §9 in and out.

Structuring is strict, because a register is the policy a data-protection
officer reviews: a string is never taken for a number, ``"false"`` is never
taken for a boolean, a single string is never taken for a list, ids follow the
DESIGN §9 syntax and enum values are spelled exactly. Every problem of an entry
is collected at once (cattrs' detailed validation) and turned into
:class:`~purposelimit.RegisterProblem` values, each with its path
(``purposes[3].retention.duration``).

Spellings in files: :attr:`Compatibility.from_ <purposelimit.Compatibility>`
and :attr:`Retention.anchor <purposelimit.Retention>` are both spelled
``from``. Keys beginning with ``x-`` are free for tools and are dropped before
structuring.
"""

from __future__ import annotations

import datetime as _dt
import difflib
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._ids import validate_id
from ._model import (
    Compatibility,
    Confidence,
    DataCategory,
    LegalBasis,
    Purpose,
    Retention,
    RetentionAnchor,
    Verdict,
)
from ._time import Duration, parse_duration

if TYPE_CHECKING:
    from ._register import Register

__all__ = [
    "ENTRY_TYPES",
    "RegisterHeader",
    "converter",
    "describe_value",
    "file_keys",
    "strip_tool_keys",
    "structure_entry",
    "unknown_key_message",
    "unstructure_register",
]

T = TypeVar("T")


@attrs.frozen(slots=True)
class RegisterHeader:
    """The ``[register]`` table of a register file (DESIGN §9).

    Attributes:
        controller: the controller's name (GDPR art. 30(1)(a)).
        version: the register's version, recorded in every audit event.
        preset: the name of a shipped preset the file starts from, if any.
    """

    controller: str = ""
    version: str = ""
    preset: str | None = None


#: The register sections holding entries, with the value type of their entries.
ENTRY_TYPES: Mapping[str, type[Any]] = {
    "categories": DataCategory,
    "purposes": Purpose,
    "compatibility": Compatibility,
}

# Attribute name -> key in files, where they differ.
_RENAMES: dict[type[Any], dict[str, str]] = {
    Retention: {"anchor": "from"},
    Compatibility: {"from_": "from"},
}

# Keys people plausibly write for another one, beyond what difflib finds.
_HINTS: dict[str, str] = {
    "anchor": "from",
    "from_": "from",
    "start": "from",
    "since": "from",
    "basis": "legal_basis",
    "lawful_basis": "legal_basis",
    "legal-basis": "legal_basis",
    "name": "label",
    "title": "label",
    "purpose": "id",
    "sensitive-categories": "sensitive_categories",
    "direct-marketing": "direct_marketing",
    "archiving-or-statistics": "archiving_or_statistics",
}


def file_keys(cls: type[Any]) -> list[str]:
    """Return the keys a file may use for the attrs class *cls*, in declaration order."""
    renames = _RENAMES.get(cls, {})
    return [renames.get(a.name, a.name) for a in attrs.fields(cls)]


def _file_key(cls: type[Any], name: str) -> str:
    return _RENAMES.get(cls, {}).get(name, name)


# --------------------------------------------------------------------------- messages


def describe_value(value: object) -> str:
    """Name the TOML/JSON type of *value* for an error message, without showing the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return "a date or time (write it in quotes to make it a string)"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _shown(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def unknown_key_message(key: object, allowed: Sequence[str]) -> str:
    """Return the message for an unknown key, with a did-you-mean when one is close."""
    text = key if isinstance(key, str) else str(key)
    guess = _HINTS.get(text)
    if guess is None or guess not in allowed:
        close = difflib.get_close_matches(text, list(allowed), n=1, cutoff=0.6)
        guess = close[0] if close else None
    hint = f" (did you mean {guess!r}?)" if guess is not None else ""
    return (
        f"unknown key {_shown(text)}{hint}; allowed: {', '.join(allowed)}, "
        "and keys beginning with 'x-' (free for tools)"
    )


class _RefusedError(ValueError):
    """A value refused by a strict hook; the message is what the user sees."""


# --------------------------------------------------------------------------- strict hooks


def _structure_str(value: object, _type: object = str) -> str:
    if isinstance(value, str):
        return value
    raise _RefusedError(f"expected a string, found {describe_value(value)}")


def _structure_bool(value: object, _type: object = bool) -> bool:
    if isinstance(value, bool):
        return value
    raise _RefusedError(f"expected true or false, found {describe_value(value)}")


def _structure_text(value: object, _type: object = str) -> str:
    text = _structure_str(value)
    if not text.strip():
        raise _RefusedError("must not be empty")
    return text


def _structure_id(value: object, _type: object = str) -> str:
    problem = validate_id(value)
    if problem is not None:
        raise _RefusedError(problem)
    return value  # type: ignore[return-value]  # validate_id accepted it: a str


def _structure_duration(value: object, _type: object = Duration) -> Duration:
    if not isinstance(value, str):
        raise _RefusedError(
            f"expected an ISO-8601 duration string such as 'P3Y', found {describe_value(value)}"
        )
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _RefusedError(str(exc)) from None


def _array_of(item_hook: Callable[[Any, Any], T], what: str) -> Callable[[Any, Any], tuple[T, ...]]:
    """Build a hook structuring an array (a list) into a tuple, every item checked."""

    def hook(value: object, type_: Any) -> tuple[T, ...]:
        if not isinstance(value, list | tuple):
            raise _RefusedError(f"expected an array of {what}, found {describe_value(value)}")
        items: list[T] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(item_hook(item, None))
            except Exception as exc:  # collected: every bad item is reported
                exc.__notes__ = [
                    *getattr(exc, "__notes__", []),
                    IterableValidationNote(f"Structuring {type_} @ index {index}", index, str),
                ]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {type_}", errors, tuple)
        return tuple(items)

    return hook


_structure_ids = _array_of(_structure_id, "ids")
_structure_strs = _array_of(_structure_str, "strings")


def _is_str_tuple(type_: Any) -> bool:
    return get_origin(type_) is tuple and get_args(type_) == (str, ...)


_ENUMS: tuple[type[Enum], ...] = (LegalBasis, RetentionAnchor, Verdict, Confidence)


def _enum_value(member: Enum) -> str:
    return str(member.value)


def _enum_hook(enum_type: type[Enum]) -> Callable[[Any, Any], Enum]:
    allowed = [str(member.value) for member in enum_type]

    def hook(value: object, _type: object) -> Enum:
        if isinstance(value, str):
            for member in enum_type:
                if member.value == value:
                    return member
            folded = {a.casefold(): a for a in allowed}
            close = [folded[value.casefold()]] if value.casefold() in folded else []
            close = close or difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _RefusedError(f"{_shown(value)} is not one of: {', '.join(allowed)}{hint}")
        raise _RefusedError(f"expected one of: {', '.join(allowed)}; found {describe_value(value)}")

    return hook


def _table(
    cls: type[T], fn: Callable[[Mapping[str, Any], Any], T], example: str
) -> Callable[[Any, Any], T]:
    """Guard a generated class hook: the value must be a table, or the error says so."""

    def hook(value: object, type_: Any) -> T:
        if not isinstance(value, Mapping):
            raise _RefusedError(
                f"expected a table such as {example}, found {describe_value(value)}"
            )
        return fn(value, type_)

    hook.__name__ = f"structure_{cls.__name__}"
    return hook


# --------------------------------------------------------------------------- the converter


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(Duration, _structure_duration)
    conv.register_unstructure_hook(Duration, str)
    # The enums are str subclasses: register them by class so that they win
    # over the strict ``str`` hook (singledispatch picks the most specific class).
    for enum_type in _ENUMS:
        conv.register_structure_hook(enum_type, _enum_hook(enum_type))
        conv.register_unstructure_hook(enum_type, _enum_value)
    conv.register_structure_hook_factory(_is_str_tuple, lambda _t: _structure_strs)
    conv.register_unstructure_hook_factory(_is_str_tuple, lambda _t: list)

    conv.register_structure_hook(
        Retention,
        _table(
            Retention,
            make_dict_structure_fn(Retention, conv, anchor=override(rename="from")),
            '{ duration = "P3Y", from = "collection" }',
        ),
    )
    conv.register_structure_hook(
        DataCategory,
        _table(
            DataCategory,
            make_dict_structure_fn(DataCategory, conv, id=override(struct_hook=_structure_id)),
            '{ id = "contact.email", label = "E-mail address" }',
        ),
    )
    conv.register_structure_hook(
        Purpose,
        _table(
            Purpose,
            make_dict_structure_fn(
                Purpose,
                conv,
                id=override(struct_hook=_structure_id),
                label=override(struct_hook=_structure_text),
                description=override(struct_hook=_structure_text),
                categories=override(struct_hook=_structure_ids),
                sensitive_categories=override(struct_hook=_structure_ids),
            ),
            "[[purposes]]",
        ),
    )
    conv.register_structure_hook(
        Compatibility,
        _table(
            Compatibility,
            make_dict_structure_fn(
                Compatibility,
                conv,
                id=override(struct_hook=_structure_id),
                from_=override(rename="from", struct_hook=_structure_id),
                to=override(struct_hook=_structure_id),
            ),
            "[[compatibility]]",
        ),
    )
    conv.register_structure_hook(
        RegisterHeader,
        _table(
            RegisterHeader,
            make_dict_structure_fn(RegisterHeader, conv),
            '[register] with controller = "Example SAS"',
        ),
    )

    # Unstructuring: keys equal to their default are left out to keep files
    # small, except the ones a reader always expects to see.
    conv.register_unstructure_hook(
        Retention,
        make_dict_unstructure_fn(
            Retention, conv, anchor=override(rename="from", omit_if_default=False)
        ),
    )
    conv.register_unstructure_hook(
        DataCategory,
        make_dict_unstructure_fn(
            DataCategory, conv, _cattrs_omit_if_default=True, label=override(omit_if_default=False)
        ),
    )
    conv.register_unstructure_hook(
        Purpose, make_dict_unstructure_fn(Purpose, conv, _cattrs_omit_if_default=True)
    )
    conv.register_unstructure_hook(
        Compatibility,
        make_dict_unstructure_fn(
            Compatibility, conv, _cattrs_omit_if_default=True, from_=override(rename="from")
        ),
    )
    return conv


#: The converter for register values (DESIGN §9 shapes). Strict: see the module docstring.
converter: cattrs.Converter = _make_converter()


# --------------------------------------------------------------------------- structuring


def strip_tool_keys(value: Any) -> Any:
    """Return *value* with the keys beginning with ``x-`` removed from it and its tables.

    Only tables are entered (an entry and its ``retention``): arrays of a
    register hold plain values, and a value nested where none belongs is
    left for structuring to refuse.
    """
    if not isinstance(value, Mapping):
        return value
    return {
        k: strip_tool_keys(v)
        for k, v in value.items()
        if not (isinstance(k, str) and k.startswith("x-"))
    }


def structure_entry(
    data: object, cls: type[T], path: str
) -> tuple[T | None, list[tuple[str, str]]]:
    """Structure one register entry (or the ``[register]`` table) of a file.

    Args:
        data: the entry as parsed from TOML or JSON.
        cls: :class:`~purposelimit.Purpose`, :class:`~purposelimit.DataCategory`,
            :class:`~purposelimit.Compatibility` or :class:`RegisterHeader`.
        path: the entry's path in the file (``purposes[3]``).

    Returns:
        ``(value, [])`` when the entry is sound, else ``(None, problems)``
        with every ``(path, message)`` found in the entry at once.
    """
    try:
        return converter.structure(strip_tool_keys(data), cls), []
    except Exception as exc:  # every structuring failure becomes problems, never a traceback
        return None, _problems(exc, path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _problems(exc: BaseException, path: str) -> list[tuple[str, str]]:
    if isinstance(exc, ClassValidationError):
        found: list[tuple[str, str]] = []
        with_notes, others = exc.group_exceptions()
        for sub, note in with_notes:
            sub_path = _join(path, _file_key(exc.cl, note.name))
            if isinstance(sub, KeyError):
                found.append((sub_path, "required key is missing"))
            else:
                found.extend(_problems(sub, sub_path))
        for sub in others:
            if isinstance(sub, ForbiddenExtraKeysError):
                allowed = file_keys(sub.cl)
                for key in sorted(sub.extra_fields, key=str):
                    found.append((_join(path, str(key)), unknown_key_message(key, allowed)))
            else:
                found.extend(_problems(sub, path))
        return found
    if isinstance(exc, IterableValidationError):
        found = []
        with_index, others = exc.group_exceptions()
        for sub, index_note in with_index:
            found.extend(_problems(sub, f"{path}[{index_note.index}]"))
        for sub in others:
            found.extend(_problems(sub, path))
        return found
    if isinstance(exc, _RefusedError | ValueError | TypeError):
        return [(path, str(exc))]
    return [(path, f"could not be read ({type(exc).__name__})")]


# --------------------------------------------------------------------------- unstructuring


def unstructure_register(register: Register) -> dict[str, Any]:
    """Return *register* in the file shape of DESIGN §9, as a JSON-compatible dict.

    The shape is ``{"register": {"controller", "version"}, "categories": [...],
    "purposes": [...], "compatibility": [...]}``. Keys equal to their default
    are left out of entries to keep files small; ``id``, ``label``,
    ``description``, ``legal_basis``, ``retention`` (with its ``from``) and
    ``verdict`` are always written. A register loaded with a ``preset`` comes
    out whole: the preset's entries merged with the file's.

    :func:`purposelimit.register_from_dict` of the result gives back an equal register.
    """
    return {
        "register": {"controller": register.controller, "version": register.version},
        "categories": [
            converter.unstructure(c, DataCategory) for c in register.categories.values()
        ],
        "purposes": [converter.unstructure(p, Purpose) for p in register.purposes.values()],
        "compatibility": [converter.unstructure(e, Compatibility) for e in register.compatibility],
    }
