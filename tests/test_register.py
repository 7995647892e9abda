"""The register built in code: check_register's problems, hierarchy lookups, content hash."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purposelimit._errors import RegisterError, RegisterProblem
from purposelimit._model import (
    Compatibility,
    DataCategory,
    LegalBasis,
    Purpose,
    Retention,
    Verdict,
)
from purposelimit._register import Register, check_register

FACTORS = {
    "link": "same customer relationship",
    "context": "the customer bought from us and was told of postal offers",
    "nature": "identity and postal address only",
    "consequences": "postal mail the customer can stop at any time",
    "safeguards": ("objection offered at collection and in every mailing",),
}


def purpose(id_: str, **overrides: Any) -> Purpose:
    fields: dict[str, Any] = {
        "label": id_.replace(".", " ").capitalize(),
        "description": f"Processing for {id_}",
        "legal_basis": LegalBasis.LEGITIMATE_INTERESTS,
        "retention": Retention("P3Y"),
        "categories": ("identity",),
    }
    fields.update(overrides)
    return Purpose(id=id_, **fields)


def compatible(id_: str, from_: str, to: str, **overrides: Any) -> Compatibility:
    fields: dict[str, Any] = {**FACTORS, "source": "GDPR art. 6(4)"}
    fields.update(overrides)
    return Compatibility(id=id_, from_=from_, to=to, verdict=Verdict.COMPATIBLE, **fields)


def prohibited(id_: str, from_: str, to: str, **overrides: Any) -> Compatibility:
    fields: dict[str, Any] = {"source": "GDPR art. 6(4)"}
    fields.update(overrides)
    return Compatibility(id=id_, from_=from_, to=to, verdict=Verdict.PROHIBITED, **fields)


CATEGORIES = (
    DataCategory("identity", label="Identity"),
    DataCategory("identity.name", label="Name"),
    DataCategory("contact.email", label="E-mail address"),
    DataCategory("contact.postal_address", label="Postal address"),
    DataCategory("nir", label="NIR", sensitive=True),
    DataCategory("special", label="Special categories", sensitive=True),
    DataCategory("special.health", label="Health"),
    DataCategory("special.health.allergy", label="Allergies"),
)

PURPOSES = (
    purpose("client.contract", legal_basis=LegalBasis.CONTRACT),
    purpose("prospection.postal", direct_marketing=True),
    purpose("prospection.email_b2c", legal_basis=LegalBasis.CONSENT, direct_marketing=True),
    purpose("hr.recruitment", legal_basis=LegalBasis.CONTRACT),
    purpose("marketing.stats", archiving_or_statistics=True),
    purpose("newsletter", legal_basis=LegalBasis.CONSENT),
    purpose("newsletter.events", legal_basis=LegalBasis.CONSENT),
)


def build(
    purposes: tuple[Purpose, ...] = PURPOSES,
    categories: tuple[DataCategory, ...] = CATEGORIES,
    compatibility: tuple[Compatibility, ...] = (),
    **kwargs: Any,
) -> Register:
    return Register(purposes, categories, compatibility, **kwargs)


def problems_of(
    purposes: tuple[Purpose, ...] = PURPOSES,
    categories: tuple[DataCategory, ...] = CATEGORIES,
    compatibility: tuple[Compatibility, ...] = (),
) -> list[RegisterProblem]:
    with pytest.raises(RegisterError) as caught:
        build(purposes, categories, compatibility)
    return list(caught.value.problems)


def by_path(problems: list[RegisterProblem]) -> dict[str, str]:
    return {p.path: p.message for p in problems}


# --------------------------------------------------------------------------- a sound register


def test_sound_register_builds_and_exposes_its_entries_in_order() -> None:
    """A sound register keeps purposes, categories and entries by id, in declaration order."""
    entry = compatible("contract-to-postal", "client.contract", "prospection.postal")
    register = build(compatibility=(entry,), controller="Example SAS", version="2026-11-01")
    assert list(register.purposes) == [p.id for p in PURPOSES]
    assert list(register.categories) == [c.id for c in CATEGORIES]
    assert register.compatibility == (entry,)
    assert register.purpose("prospection.postal") == PURPOSES[1]
    assert register.purpose("prospection") is None
    assert register.category("contact.email") == CATEGORIES[2]
    assert register.category("contact") is None
    assert register.controller == "Example SAS"
    assert register.version == "2026-11-01"


def test_check_register_returns_no_problem_for_a_sound_register() -> None:
    """check_register is empty for a register that Register accepts."""
    entry = compatible("contract-to-postal", "client.contract", "prospection.postal")
    assert check_register(PURPOSES, CATEGORIES, (entry,)) == []


# --------------------------------------------------------------------------- every problem


def test_duplicate_purpose_ids_are_refused_at_the_second_declaration() -> None:
    """A purpose id declared twice is refused where it is declared again."""
    found = by_path(problems_of((*PURPOSES, purpose("client.contract", label="Again"))))
    assert found == {
        "purposes[7].id": "duplicate id 'client.contract' (first declared at purposes[0])"
    }


def test_duplicate_category_ids_are_refused_at_the_second_declaration() -> None:
    """A category id declared twice is refused where it is declared again."""
    found = by_path(problems_of(categories=(*CATEGORIES, DataCategory("nir"))))
    assert found == {"categories[8].id": "duplicate id 'nir' (first declared at categories[4])"}


def test_duplicate_compatibility_ids_are_refused() -> None:
    """Two compatibility entries with one id are refused."""
    entries = (
        compatible("reuse", "client.contract", "prospection.postal"),
        compatible("reuse", "client.contract", "marketing.stats"),
    )
    assert by_path(problems_of(compatibility=entries)) == {
        "compatibility[1].id": "duplicate id 'reuse' (first declared at compatibility[0])"
    }


def test_undeclared_categories_of_a_purpose_are_refused_with_a_did_you_mean() -> None:
    """A category a purpose lists must be declared or a group of declared categories."""
    bad = purpose(
        "client.contract",
        categories=("identity", "contact.emial", "payment"),
        sensitive_categories=("special.healt",),
    )
    found = by_path(problems_of((bad,)))
    assert found == {
        "purposes[0].categories[1]": "'contact.emial' is not a declared category "
        "(did you mean 'contact.email'?)",
        "purposes[0].categories[2]": "'payment' is not a declared category",
        "purposes[0].sensitive_categories[0]": "'special.healt' is not a declared category "
        "(did you mean 'special.health'?)",
    }


def test_a_group_of_declared_categories_may_be_listed() -> None:
    """``contact`` is accepted when only ``contact.email`` and ``contact.postal_address`` exist."""
    register = build((purpose("client.contract", categories=("contact", "special.health")),))
    assert register.purpose("client.contract").categories == ("contact", "special.health")  # type: ignore[union-attr]


@pytest.mark.parametrize("key", ["from", "to"])
def test_compatibility_ends_must_be_declared_purposes_or_groups(key: str) -> None:
    """``from`` and ``to`` naming neither a purpose nor a group are refused, with a did-you-mean."""
    ends = {"from_": "client.contract", "to": "prospection.postal"}
    ends["from_" if key == "from" else "to"] = (
        "client.contrat" if key == "from" else "prospection.postl"
    )
    entry = compatible("reuse", ends["from_"], ends["to"])
    found = by_path(problems_of(compatibility=(entry,)))
    wrong = ends["from_" if key == "from" else "to"]
    right = "client.contract" if key == "from" else "prospection.postal"
    assert found == {
        f"compatibility[0].{key}": f"{wrong!r} is neither a declared purpose nor a group of "
        f"declared purposes (did you mean {right!r}?)"
    }


def test_groups_are_accepted_as_compatibility_ends() -> None:
    """``prospection`` and ``client`` are groups of declared purposes: valid ends."""
    entry = prohibited("no-recruits", "hr", "prospection")
    register = build(compatibility=(entry,))
    assert register.compatibility == (entry,)
    assert {"prospection", "hr", "client", "marketing"} <= register.groups


def test_a_prefix_that_is_not_a_dotted_ancestor_is_not_a_group() -> None:
    """``prosp`` is a string prefix of ``prospection.postal`` but not a group of it."""
    entry = prohibited("no-recruits", "hr.recruitment", "prosp")
    found = by_path(problems_of(compatibility=(entry,)))
    assert list(found) == ["compatibility[0].to"]


@pytest.mark.parametrize("factor", ["link", "context", "nature", "consequences", "safeguards"])
def test_a_compatible_entry_needs_each_of_the_five_factors(factor: str) -> None:
    """A ``compatible`` entry missing one GDPR art. 6(4) factor is refused, naming it."""
    empty: Any = () if factor == "safeguards" else "  "
    entry = compatible("reuse", "client.contract", "prospection.postal", **{factor: empty})
    assert by_path(problems_of(compatibility=(entry,))) == {
        "compatibility[0]": "a compatible entry must write down the five GDPR art. 6(4) "
        f"factors; missing: {factor}"
    }


def test_a_compatible_entry_missing_every_factor_names_them_all() -> None:
    """All missing factors are listed in one problem, in the order of art. 6(4)."""
    entry = Compatibility(
        id="reuse", from_="client.contract", to="prospection.postal", verdict=Verdict.COMPATIBLE
    )
    [problem] = problems_of(compatibility=(entry,))
    assert problem.message.endswith("missing: link, context, nature, consequences, safeguards")


def test_a_blank_safeguard_does_not_count() -> None:
    """``safeguards = [""]`` is no safeguard at all."""
    entry = compatible("reuse", "client.contract", "prospection.postal", safeguards=("", "x"))
    [problem] = problems_of(compatibility=(entry,))
    assert problem.message.endswith("missing: safeguards")


def test_a_prohibited_entry_needs_a_source_or_a_justification() -> None:
    """A ``prohibited`` entry with neither is refused; with either one it is accepted."""
    bare = prohibited("no-recruits", "hr.recruitment", "prospection", source=" ")
    assert by_path(problems_of(compatibility=(bare,))) == {
        "compatibility[0]": "a prohibited entry needs a source or a justification"
    }
    justified = prohibited(
        "no-recruits", "hr.recruitment", "prospection", source="", justification="candidates"
    )
    assert build(compatibility=(justified,)).compatibility == (justified,)


@pytest.mark.parametrize(
    ("c_from", "c_to", "p_from", "p_to"),
    [
        ("client.contract", "prospection.postal", "client.contract", "prospection.postal"),
        ("client.contract", "prospection.postal", "client", "prospection"),
        ("client", "prospection", "client.contract", "prospection.email_b2c"),
        ("client.contract", "prospection", "client", "prospection.postal"),
    ],
)
def test_overlapping_compatible_and_prohibited_entries_are_refused(
    c_from: str, c_to: str, p_from: str, p_to: str
) -> None:
    """A reuse covered by a compatible and a prohibited entry is refused (DESIGN §3)."""
    entries = (compatible("yes", c_from, c_to), prohibited("no", p_from, p_to))
    assert by_path(problems_of(compatibility=entries)) == {
        "compatibility[0]": "compatible entry 'yes' overlaps prohibited entry 'no' "
        "(compatibility[1]): a reuse cannot be both assessed as compatible and prohibited"
    }


def test_sibling_entries_do_not_overlap() -> None:
    """A prohibition towards one sibling leaves a permission towards another intact."""
    entries = (
        compatible("yes", "client.contract", "prospection.postal"),
        prohibited("no", "client.contract", "prospection.email_b2c"),
    )
    assert len(build(compatibility=entries).compatibility) == 2


def test_every_problem_is_reported_at_once() -> None:
    """One RegisterError lists all problems, one line each in its message."""
    purposes = (*PURPOSES, purpose("newsletter", categories=("nothing",)))
    entries = (
        compatible("yes", "client.contract", "prospection.postal", link=""),
        prohibited("no", "hr.recruitment", "prospektion", source=""),
    )
    with pytest.raises(RegisterError) as caught:
        build(purposes, CATEGORIES, entries)
    paths = [p.path for p in caught.value.problems]
    assert paths == [
        "purposes[7].id",
        "purposes[7].categories[0]",
        "compatibility[0]",
        "compatibility[1].to",
        "compatibility[1]",
    ]
    lines = str(caught.value).splitlines()
    assert lines[0] == "register refused: 5 problems"
    assert lines[1:] == [f"  {p}" for p in caught.value.problems]


def test_source_names_the_register_in_the_error() -> None:
    """``_problems_source`` names the register in the error's first line."""
    with pytest.raises(RegisterError) as caught:
        Register((purpose("a", categories=("x",)),), (), (), _problems_source="register.toml")
    assert caught.value.source == "register.toml"
    assert str(caught.value).splitlines()[0] == "register register.toml refused: 1 problem"


def test_paths_can_be_remapped_for_merged_registers() -> None:
    """check_register's ``paths`` name entries as their origin does."""
    found = check_register(
        (purpose("a", categories=("x",)),),
        (),
        (),
        paths={"purposes": ["preset.purposes[9]"]},
    )
    assert [p.path for p in found] == ["preset.purposes[9].categories[0]"]


# --------------------------------------------------------------------------- hierarchy


def test_sensitivity_is_inherited_by_descendants() -> None:
    """``special`` flagged sensitive makes ``special.health`` and below sensitive too."""
    register = build()
    assert register.is_sensitive("nir")
    assert register.is_sensitive("special")
    assert register.is_sensitive("special.health")
    assert register.is_sensitive("special.health.allergy")
    assert not register.is_sensitive("identity")
    assert not register.is_sensitive("identity.name")
    assert not register.is_sensitive("contact.email")


def test_sensitivity_of_undeclared_categories_is_false() -> None:
    """An undeclared id, even below a sensitive one, is not reported sensitive (unknown instead)."""
    register = build()
    assert not register.is_sensitive("special.religion")
    assert not register.is_sensitive("nirvana")


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.lists(st.sampled_from("abc"), min_size=1, max_size=4).map(".".join),
        st.booleans(),
        min_size=1,
        max_size=12,
    )
)
def test_a_category_is_sensitive_exactly_when_it_or_a_declared_ancestor_is_flagged(
    flags: dict[str, bool],
) -> None:
    """is_sensitive(c) == any declared ancestor-or-self of c is flagged sensitive."""
    register = Register((), [DataCategory(id_, sensitive=s) for id_, s in flags.items()], ())
    for id_ in flags:
        parts = id_.split(".")
        lineage = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
        assert register.is_sensitive(id_) == any(flags.get(a, False) for a in lineage)


def test_groups_are_undeclared_prefixes_of_declared_purposes() -> None:
    """A group is a dotted prefix not itself declared; a declared parent is not a group."""
    register = build()
    assert register.groups == frozenset({"client", "prospection", "hr", "marketing"})
    assert "newsletter" not in register.groups  # declared, with a declared child


def test_descendants_lists_declared_purposes_strictly_below() -> None:
    """descendants() covers groups and declared parents, never the id itself or siblings."""
    register = build()
    assert register.descendants("prospection") == ("prospection.postal", "prospection.email_b2c")
    assert register.descendants("newsletter") == ("newsletter.events",)
    assert register.descendants("prospection.postal") == ()
    assert register.descendants("unknown") == ()


# --------------------------------------------------------------------------- hash, repr, export


def test_content_hash_is_stable_and_follows_content() -> None:
    """Equal content gives an equal hash; any change of content or version changes it."""
    first = build(version="v1")
    again = build(version="v1")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first.content_hash)
    assert first.content_hash == again.content_hash
    assert first == again
    assert hash(first) == hash(again)
    relabelled = (purpose("client.contract", label="Contracts"), *PURPOSES[1:])
    changes = [
        build(version="v2"),
        build(controller="Other SAS", version="v1"),
        build(relabelled, version="v1"),
        build(PURPOSES[:-1], version="v1"),
        build(
            (purpose("client.contract", retention=Retention("P5Y")), *PURPOSES[1:]), version="v1"
        ),
        build(categories=(*CATEGORIES, DataCategory("payment")), version="v1"),
    ]
    hashes = {r.content_hash for r in changes}
    assert len(hashes) == len(changes)
    assert first.content_hash not in hashes
    assert all(r != first for r in changes)


def test_a_register_is_not_equal_to_other_types() -> None:
    """Comparing a register with anything else is not equality."""
    assert build() != "register"
    assert build() != build().to_dict()


def test_repr_shows_version_and_counts_only() -> None:
    """repr names the version and the counts, never descriptions or controller text."""
    entry = compatible("contract-to-postal", "client.contract", "prospection.postal")
    register = build(compatibility=(entry,), controller="Example SAS", version="2026-11-01")
    assert repr(register) == (
        "<Register version='2026-11-01' purposes=7 categories=8 compatibility=1>"
    )


def test_to_dict_gives_the_file_shape() -> None:
    """to_dict() has the four sections of DESIGN §9 and spells ``from`` in files."""
    entry = compatible("contract-to-postal", "client.contract", "prospection.postal")
    data = build(compatibility=(entry,), controller="Example SAS", version="v1").to_dict()
    assert list(data) == ["register", "categories", "purposes", "compatibility"]
    assert data["register"] == {"controller": "Example SAS", "version": "v1"}
    assert data["purposes"][0] == {
        "id": "client.contract",
        "label": "Client contract",
        "description": "Processing for client.contract",
        "legal_basis": "contract",
        "retention": {"duration": "P3Y", "from": "collection"},
        "categories": ["identity"],
    }
    assert data["categories"][4] == {"id": "nir", "label": "NIR", "sensitive": True}
    assert data["compatibility"][0] == {
        "id": "contract-to-postal",
        "from": "client.contract",
        "to": "prospection.postal",
        "verdict": "compatible",
        "link": FACTORS["link"],
        "context": FACTORS["context"],
        "nature": FACTORS["nature"],
        "consequences": FACTORS["consequences"],
        "safeguards": list(FACTORS["safeguards"]),
        "source": "GDPR art. 6(4)",
    }
