"""The shipped presets: discovery, caching, and the content of ``cnil-commercial`` (DESIGN §7)."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import pytest

from purposelimit._errors import ConfigurationError, RegisterError
from purposelimit._ids import covers
from purposelimit._loader import loads_register
from purposelimit._model import (
    Collection,
    CollectionTag,
    Compatibility,
    DataCategory,
    LegalBasis,
    Purpose,
    Reason,
    RetentionAnchor,
)
from purposelimit._presets import load_preset, preset_names, preset_path, preset_text
from purposelimit._register import Register

NAME = "cnil-commercial"


@pytest.fixture(scope="module")
def preset() -> Register:
    return load_preset(NAME)


# --------------------------------------------------------------------------- discovery


def test_the_cnil_preset_is_listed() -> None:
    """preset_names() lists the .toml files of purposelimit/presets, sorted."""
    names = preset_names()
    assert NAME in names
    assert names == sorted(names)


def test_load_preset_is_cached() -> None:
    """Loading a preset twice gives the same register object."""
    assert load_preset(NAME) is load_preset(NAME)


def test_preset_text_and_path_give_the_file() -> None:
    """The text is the TOML file at preset_path; loading it gives the same register."""
    assert preset_path(NAME).endswith(f"{NAME}.toml")
    text = preset_text(NAME)
    assert tomllib.loads(text)["register"]["version"] == load_preset(NAME).version
    assert loads_register(text) == load_preset(NAME)


@pytest.mark.parametrize("call", [load_preset, preset_text, preset_path])
def test_an_unknown_preset_lists_the_available_ones(call: object) -> None:
    """Asking for an unknown preset names the ones that exist, with a did-you-mean."""
    with pytest.raises(ConfigurationError) as caught:
        call("cnil-comercial")  # type: ignore[operator]
    assert str(caught.value).startswith(
        "unknown preset 'cnil-comercial' (did you mean 'cnil-commercial'?); available presets: "
    )
    assert NAME in str(caught.value)


@pytest.mark.parametrize("name", ["../_model", "cnil-commercial.toml", ""])
def test_preset_names_cannot_reach_other_files(name: str) -> None:
    """Only listed names are accepted: no path, no suffix."""
    with pytest.raises(ConfigurationError):
        preset_text(name)


# --------------------------------------------------------------------------- cnil-commercial

CATEGORY_TREE = [
    "identity",
    "identity.name",
    "identity.birth_date",
    "identity.internal_id",
    "contact",
    "contact.email",
    "contact.phone",
    "contact.postal_address",
    "professional",
    "household",
    "transaction",
    "relationship_history",
    "payment",
    "payment.means",
    "payment.card",
    "invoice_settlement",
    "id_document",
    "call_recording",
    "consent_proof",
    "suppression_entry",
    "online_identifier",
    "source_provenance",
    "nir",
    "special",
    "special.health",
    "special.religion",
    "special.politics",
    "special.union",
    "special.ethnicity",
    "special.sex_life",
    "special.biometric",
    "special.genetic",
    "criminal",
]
SENSITIVE_ROOTS = ["nir", "special", "criminal"]

# Legal reference §5.1 (ids as given there).
PURPOSES_5_1 = [
    "client.contract",
    "client.accounting",
    "client.loyalty",
    "client.relationship",
    "client.studies",
    "client.financial_stats",
    "prospection.technical",
    "prospection.selection",
    "prospection.postal",
    "prospection.phone",
    "prospection.email_b2c",
    "prospection.email_b2b",
    "prospection.partner_transfer",
    "prospection.bloctel_update",
    "marketing.stats",
    "marketing.contests",
    "rights.requests",
    "client.debt_litigation",
    "client.reviews",
    "payment.card",
    "account.online",
    "hr.recruitment",
    "newsletter.editorial",
]


def test_the_preset_loads_cleanly_from_its_file() -> None:
    """The shipped file passes every check of the loader (no RegisterError)."""
    try:
        register = load_preset(NAME)
    except RegisterError as error:  # pragma: no cover - the message is the diagnosis
        pytest.fail(f"the preset is refused:\n{error}")
    assert register.version
    assert register.content_hash.startswith("sha256:")


def test_the_preset_has_the_category_tree_of_design_7(preset: Register) -> None:
    """Every category of DESIGN §7 is declared; solvency_score is left out."""
    missing = [c for c in CATEGORY_TREE if c not in preset.categories]
    assert missing == []
    assert "solvency_score" not in preset.categories


def test_nir_special_and_criminal_data_are_sensitive_with_their_descendants(
    preset: Register,
) -> None:
    """GDPR art. 9 and 10 data and the NIR are sensitive, and so is everything below them."""
    for category in preset.categories:
        below_sensitive = any(covers(root, category) for root in SENSITIVE_ROOTS)
        assert preset.is_sensitive(category) == below_sensitive, category
    assert preset.is_sensitive("special.health")


def test_the_purposes_of_the_legal_reference_exist(preset: Register) -> None:
    """Every purpose of legal reference §5.1 is declared, with a description."""
    missing = [p for p in PURPOSES_5_1 if p not in preset.purposes]
    assert missing == []
    assert all(p.description.strip() for p in preset.purposes.values())


@pytest.mark.parametrize(
    ("purpose", "basis"),
    [
        ("client.contract", LegalBasis.CONTRACT),
        ("client.accounting", LegalBasis.LEGAL_OBLIGATION),
        ("prospection.postal", LegalBasis.LEGITIMATE_INTERESTS),
        ("prospection.email_b2c", LegalBasis.CONSENT),  # CPCE L34-5
        ("prospection.phone", LegalBasis.CONSENT),  # loi 2025-594, from 2026-08-11
        ("prospection.email_b2b", LegalBasis.LEGITIMATE_INTERESTS),
        ("prospection.bloctel_update", LegalBasis.LEGAL_OBLIGATION),
        ("rights.requests", LegalBasis.LEGAL_OBLIGATION),
        ("newsletter.editorial", LegalBasis.CONSENT),
        ("marketing.stats", LegalBasis.LEGITIMATE_INTERESTS),
    ],
)
def test_purposes_rest_on_the_legal_basis_of_the_reference(
    preset: Register, purpose: str, basis: LegalBasis
) -> None:
    """Legal bases follow legal reference §4 and §5.1."""
    declared = preset.purpose(purpose)
    assert declared is not None
    assert declared.legal_basis is basis


@pytest.mark.parametrize(
    "purpose",
    [
        "prospection.postal",
        "prospection.phone",
        "prospection.email_b2c",
        "prospection.email_b2b",
        "prospection.partner_transfer",
        "newsletter.editorial",
    ],
)
def test_marketing_purposes_are_flagged_direct_marketing(preset: Register, purpose: str) -> None:
    """An objection (GDPR art. 21(2)-(3)) must block every prospection channel."""
    declared = preset.purpose(purpose)
    assert declared is not None
    assert declared.direct_marketing


@pytest.mark.parametrize(
    "purpose", ["client.contract", "client.accounting", "hr.recruitment", "rights.requests"]
)
def test_non_marketing_purposes_are_not_flagged_direct_marketing(
    preset: Register, purpose: str
) -> None:
    """Contract, accounting, recruitment and rights handling survive an objection."""
    declared = preset.purpose(purpose)
    assert declared is not None
    assert not declared.direct_marketing


def test_statistics_are_presumed_compatible(preset: Register) -> None:
    """marketing.stats is flagged archiving_or_statistics (GDPR art. 5(1)(b), 89(1))."""
    stats = preset.purpose("marketing.stats")
    assert stats is not None
    assert stats.archiving_or_statistics
    assert not stats.archive


@pytest.mark.parametrize(
    ("purpose", "duration", "anchor"),
    [
        ("prospection.postal", "P3Y", RetentionAnchor.LAST_CONTACT),
        ("prospection.email_b2c", "P3Y", RetentionAnchor.LAST_CONTACT),
        ("newsletter.editorial", "P3Y", RetentionAnchor.LAST_CONTACT),
        ("account.online", "P2Y", RetentionAnchor.LAST_CONTACT),
        ("hr.recruitment", "P3M", RetentionAnchor.LAST_CONTACT),
    ],
)
def test_retention_follows_the_reference(
    preset: Register, purpose: str, duration: str, anchor: RetentionAnchor
) -> None:
    """Durations and anchors of legal reference §2.5, §5.1 and §8."""
    declared = preset.purpose(purpose)
    assert declared is not None
    assert (str(declared.retention.duration), declared.retention.anchor) == (duration, anchor)


def test_intermediate_archives_are_archive_purposes_reached_by_compatible_entries(
    preset: Register,
) -> None:
    """Accounting (P10Y) and contract proof (P5Y from end of contract) are archive purposes."""
    archives = {p.id: p for p in preset.purposes.values() if p.archive}
    durations = {str(p.retention.duration) for p in archives.values()}
    assert {"P10Y", "P5Y"} <= durations
    reached = {e.to for e in preset.compatibility if e.verdict.value == "compatible"}
    assert set(archives) <= reached


def test_no_purpose_may_use_the_nir_special_or_criminal_data(preset: Register) -> None:
    """No client or prospect purpose lists a sensitive category (legal reference §5.2)."""
    for purpose in preset.purposes.values():
        listed = purpose.categories + purpose.sensitive_categories
        assert not [c for c in listed if preset.is_sensitive(c)], purpose.id
        assert not [c for c in listed if any(covers(c, r) for r in SENSITIVE_ROOTS)], purpose.id


def test_every_entry_carries_its_source_and_confidence(preset: Register) -> None:
    """Purposes, categories and compatibility entries all name a source and a confidence mark."""
    entries: list[Purpose | DataCategory | Compatibility] = [
        *preset.purposes.values(),
        *preset.categories.values(),
        *preset.compatibility,
    ]
    lacking = [e.id for e in entries if not e.source.strip() or e.confidence is None]
    assert lacking == []


def test_recruitment_data_is_prohibited_for_the_prospection_group(preset: Register) -> None:
    """A prohibited entry from hr.recruitment to the prospection group exists (legal ref. C12)."""
    assert "prospection" in preset.groups
    found = [
        e
        for e in preset.compatibility
        if e.from_ == "hr.recruitment" and e.to == "prospection" and e.verdict.value == "prohibited"
    ]
    assert len(found) == 1


def test_a_user_register_overrides_a_soft_law_duration_with_a_justification() -> None:
    """Starting from the preset, a purpose is replaced only with a written justification."""
    text = """\
[register]
controller = "Example SAS"
version = "2026-11-01"
preset = "cnil-commercial"

[[purposes]]
id = "prospection.postal"
label = "Postal prospection"
description = "Sending our own offers by post to clients and prospects"
legal_basis = "legitimate-interests"
categories = ["identity.name", "contact.postal_address"]
retention = { duration = "P2Y", from = "last-contact" }
direct_marketing = true
"""
    with pytest.raises(RegisterError) as caught:
        loads_register(text, source="register.toml")
    [problem] = caught.value.problems
    assert (problem.file, problem.path, problem.line) == (
        "register.toml",
        "purposes[0].justification",
        6,
    )
    register = loads_register(text + 'justification = "we keep prospects two years only"\n')
    postal = register.purpose("prospection.postal")
    assert postal is not None
    assert str(postal.retention.duration) == "P2Y"
    assert len(register.purposes) == len(load_preset(NAME).purposes)


# --------------------------------------------------------------------------- decisions

AT = datetime(2026, 3, 1, 10, tzinfo=UTC)
READ = ["identity.name", "contact.postal_address"]


def test_recruitment_data_read_for_postal_prospection_is_prohibited(preset: Register) -> None:
    """hr.recruitment -> prospection.postal is denied by the prohibited entry."""
    engine = pytest.importorskip("purposelimit._engine").Engine(preset)
    tag = CollectionTag(
        "candidate-1", Collection("hr.recruitment"), datetime(2026, 2, 1, tzinfo=UTC)
    )
    decision = engine.decide(tag, READ, "prospection.postal", AT)
    assert not decision.allowed
    assert decision.reason is Reason.PROHIBITED
    assert decision.rule.startswith("compatibility:")


def test_client_data_read_for_postal_prospection_is_compatible(preset: Register) -> None:
    """client.contract -> prospection.postal is allowed by a compatible entry."""
    engine = pytest.importorskip("purposelimit._engine").Engine(preset)
    tag = CollectionTag("client-1", Collection("client.contract"), datetime(2025, 6, 1, tzinfo=UTC))
    decision = engine.decide(tag, READ, "prospection.postal", AT)
    assert decision.allowed
    assert decision.reason is Reason.COMPATIBLE


@pytest.mark.parametrize("purpose", [p for p in PURPOSES_5_1 if p.startswith("prospection.")])
def test_recruitment_data_is_denied_for_every_prospection_purpose(
    preset: Register, purpose: str
) -> None:
    """Without the candidate's consent, no prospection purpose may read recruitment data."""
    engine = pytest.importorskip("purposelimit._engine").Engine(preset)
    tag = CollectionTag(
        "candidate-1", Collection("hr.recruitment"), datetime(2026, 2, 1, tzinfo=UTC)
    )
    declared = preset.purpose(purpose)
    assert declared is not None
    decision = engine.decide(tag, declared.categories[:1], purpose, AT)
    assert not decision.allowed
    # A consent-based purpose asks for the consent first (DESIGN §3 step 5), then step 6.
    expected = (
        Reason.CONSENT_MISSING if declared.legal_basis is LegalBasis.CONSENT else Reason.PROHIBITED
    )
    assert decision.reason is expected
