"""Dotted identifiers of purposes, purpose groups, data categories and register entries.

DESIGN §9: ids are lower-case ASCII letters, digits, ``_`` and ``-``, joined by
dots. Dots make a hierarchy: ``prospection.email_b2c`` is narrower than
``prospection``. Matching by hierarchy means an entry naming ``A`` covers ``A``
and its descendants.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["ID_PATTERN", "ancestors", "covers", "depth", "is_valid_id", "validate_id"]

#: The syntax of every purpose, category and register-entry id (DESIGN §9).
ID_PATTERN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")


def is_valid_id(value: object) -> bool:
    """Return whether *value* is a string in the dotted-id syntax of DESIGN §9."""
    return isinstance(value, str) and ID_PATTERN.match(value) is not None


def validate_id(value: object) -> str | None:
    """Return a one-line problem description for an invalid id, or ``None`` when valid.

    The message never repeats a long value whole: ids are policy, not personal
    data, but a hostile file could hold anything in that place.
    """
    if not isinstance(value, str):
        return f"an id must be a string, not {type(value).__name__}"
    if ID_PATTERN.match(value) is not None:
        return None
    shown = value if len(value) <= 60 else value[:57] + "..."
    if not value:
        return "an id must not be empty"
    if not value.isascii():
        return (
            f"{shown!r} is not a valid id: only lower-case ASCII letters, digits, '_' and '-' "
            "joined by dots are allowed (look-alike and non-ASCII characters are refused)"
        )
    if value != value.lower():
        return f"{shown!r} is not a valid id: ids are lower-case"
    return (
        f"{shown!r} is not a valid id: use lower-case ASCII letters, digits, '_' and '-' "
        "joined by single dots"
    )


def covers(broad: str, narrow: str) -> bool:
    """Return whether the id *broad* covers *narrow*: equal, or a dotted ancestor of it.

    >>> covers("prospection", "prospection.postal")
    True
    >>> covers("prospection.postal", "prospection")
    False
    >>> covers("prospection.postal", "prospection.postal_b2b")
    False
    """
    return narrow == broad or narrow.startswith(broad + ".")


def ancestors(id_: str) -> Iterable[str]:
    """Yield *id_* and each dotted ancestor, from the most specific to the root.

    >>> list(ancestors("a.b.c"))
    ['a.b.c', 'a.b', 'a']
    """
    while True:
        yield id_
        cut = id_.rfind(".")
        if cut < 0:
            return
        id_ = id_[:cut]


def depth(id_: str) -> int:
    """Return the number of dotted segments of *id_* (``prospection.postal`` has 2)."""
    return id_.count(".") + 1
