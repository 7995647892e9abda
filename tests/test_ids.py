"""Dotted ids of purposes, groups and categories (DESIGN §9) and matching by hierarchy (§3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purposelimit._ids import ancestors, covers, depth, is_valid_id, validate_id

SEGMENT = st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True)
IDS = st.lists(SEGMENT, min_size=1, max_size=4).map(".".join)


class TestSyntax:
    """Lower-case ASCII letters, digits, '_' and '-', joined by single dots."""

    @pytest.mark.parametrize(
        "value",
        ["a", "prospection", "prospection.email_b2c", "client.contract-2", "a.b.c.d", "0", "x_-.y"],
    )
    def test_valid(self, value: str) -> None:
        """Ids in the syntax are accepted."""
        assert is_valid_id(value)
        assert validate_id(value) is None

    @pytest.mark.parametrize(
        "value",
        [
            "",
            ".",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a/b",
            "a:b",
            "Prospection",
            "PROSPECTION",
            "prospection.Email",
            "prospection\n",
            "prospection ",
            "prospection\t.postal",
        ],
    )
    def test_invalid(self, value: str) -> None:
        """Empty segments, spaces, punctuation, upper case and trailing newlines are refused."""
        assert not is_valid_id(value)
        assert validate_id(value) is not None

    @pytest.mark.parametrize(
        "value",
        [
            "\u0440rospection",  # Cyrillic er, looks like a Latin p
            "pr\u043espection",  # Cyrillic o
            "prospection.\u0435mail",  # Cyrillic ie
            "prospection.postal\u200b",  # zero-width space
            "\uff50rospection",  # fullwidth p
            "prospecti\u00f3n",  # Latin small o with acute
            "r\u00e9tention",
            "prospection\u2024postal",  # one-dot leader, looks like a dot
            "\u0131d",  # dotless i
            "\u01c4",  # a letter whose lower-case form is not ASCII
        ],
    )
    def test_look_alike_and_mixed_script_refused(self, value: str) -> None:
        """Look-alike, mixed-script and invisible characters are refused; the message says why."""
        assert not is_valid_id(value)
        problem = validate_id(value)
        assert problem is not None
        assert "ASCII" in problem

    def test_upper_case_message(self) -> None:
        """An upper-case id is told to be lower-case."""
        assert validate_id("Prospection") == "'Prospection' is not a valid id: ids are lower-case"

    @pytest.mark.parametrize("value", [None, 3, b"prospection", ["a"]])
    def test_not_a_string(self, value: object) -> None:
        """Non-strings are invalid and described by type."""
        assert not is_valid_id(value)
        assert validate_id(value) == f"an id must be a string, not {type(value).__name__}"

    def test_empty_message(self) -> None:
        """The empty id is named as such."""
        assert validate_id("") == "an id must not be empty"

    def test_long_values_are_shortened(self) -> None:
        """A long invalid value is not repeated whole in the message."""
        problem = validate_id("x " * 200)
        assert problem is not None
        assert len(problem) < 200
        assert "..." in problem

    @settings(max_examples=200, deadline=None)
    @given(IDS)
    def test_generated_ids_are_valid(self, value: str) -> None:
        """Every dotted join of valid segments is a valid id."""
        assert is_valid_id(value)

    @settings(max_examples=200, deadline=None)
    @given(st.text(min_size=1, max_size=20))
    def test_valid_ids_are_plain_ascii(self, value: str) -> None:
        """Whatever the text, it is valid only if it is lower-case ASCII in the id alphabet."""
        if is_valid_id(value):
            assert value.isascii()
            assert value == value.lower()
            assert all(part for part in value.split("."))
            assert set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-.")


class TestHierarchy:
    """covers, ancestors and depth: an id covers itself and its dotted descendants."""

    def test_covers(self) -> None:
        """Equal and ancestor ids cover; a longer segment or the reverse does not."""
        assert covers("prospection", "prospection")
        assert covers("prospection", "prospection.postal")
        assert covers("prospection", "prospection.postal.b2b")
        assert not covers("prospection.postal", "prospection")
        assert not covers("prospection.postal", "prospection.postal_b2b")
        assert not covers("prospection.postal", "prospection.email_b2c")
        assert not covers("prospect", "prospection")

    def test_ancestors_and_depth(self) -> None:
        """Ancestors run from the id itself to the root; depth counts segments."""
        assert list(ancestors("a.b.c")) == ["a.b.c", "a.b", "a"]
        assert list(ancestors("a")) == ["a"]
        assert depth("a") == 1
        assert depth("prospection.email_b2c") == 2

    @settings(max_examples=200, deadline=None)
    @given(IDS, IDS)
    def test_hierarchy_properties(self, a: str, b: str) -> None:
        """covers is reflexive and antisymmetric, and agrees with ancestors and depth."""
        assert covers(a, a)
        if covers(a, b) and covers(b, a):
            assert a == b
        assert covers(a, b) == (a in list(ancestors(b)))
        if covers(a, b) and a != b:
            assert depth(a) < depth(b)
        assert depth(b) == len(list(ancestors(b)))
        assert all(covers(x, b) for x in ancestors(b))

    @settings(max_examples=200, deadline=None)
    @given(IDS, SEGMENT, SEGMENT)
    def test_siblings_never_cover_each_other(self, parent: str, x: str, y: str) -> None:
        """Two different children of one parent never cover each other."""
        if x != y:
            assert not covers(f"{parent}.{x}", f"{parent}.{y}")
            assert not covers(f"{parent}.{y}", f"{parent}.{x}")
