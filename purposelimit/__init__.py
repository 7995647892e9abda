"""purposelimit: executable purpose limitation.

GDPR art. 5(1)(b), (c) and (e); French Loi Informatique et Libertés art. 4.
Data collected for one purpose must not be processed for an incompatible one,
must be limited to what the purpose needs and must not outlive it. This
package turns a register of purposes into decisions, enforced on reads of
tagged records, on lead files and in test suites.
"""

from typing import TYPE_CHECKING

from ._audit import (
    Audit,
    AuditEvent,
    AuditSink,
    FailurePolicy,
    InMemoryAuditSink,
    LoggingAuditSink,
    Mode,
    pseudonym,
)
from ._audit_chain import (
    AuditFileError,
    ChainedEvent,
    ChainProblem,
    InMemorySubjectKeys,
    JsonLinesAuditSink,
    SQLiteAuditSink,
    SQLiteSubjectKeys,
    SubjectKeyStore,
    VerificationResult,
    audit_key_from_env,
    open_audit_table,
    read_audit_file,
    verify_audit_file,
    verify_audit_table,
)
from ._bulk import (
    FilterSummary,
    LeadMapping,
    RetentionRow,
    RowResult,
    filter_csv,
    filter_leads,
    load_mapping,
    normalise_email,
    retention_sweep,
)
from ._compiled import COMPILED
from ._context import (
    EngineToken,
    ProcessingScope,
    current_processing,
    default_mode,
    get_audit,
    get_engine,
    processing,
    set_engine,
)
from ._engine import Engine, consent_state
from ._errors import (
    AuditError,
    CollectionRefused,
    ConfigurationError,
    EventRefused,
    NaiveDatetimeError,
    OutOfRangeError,
    Problem,
    ProcessingDenied,
    PurposeLimitError,
    RegisterError,
    RegisterProblem,
    StoreError,
)
from ._loader import load_register, loads_register, register_from_dict
from ._model import (
    Authorisation,
    CategoryDecision,
    Collection,
    CollectionTag,
    Compatibility,
    Confidence,
    Consent,
    ConsentAnswer,
    ConsentState,
    DataCategory,
    Decision,
    Evidence,
    LegalBasis,
    Mechanism,
    Objection,
    Purpose,
    Reason,
    Retention,
    RetentionAnchor,
    Verdict,
)
from ._presets import load_preset, preset_names, preset_path, preset_text
from ._protocol import (
    InputError,
    ProtocolError,
    load_authorisations,
    load_consents,
    load_objections,
    load_suppression,
)
from ._records import (
    PERSONAL_KEY,
    FrozenTaggedRecord,
    PersonalField,
    TaggedRecord,
    is_record,
    personal,
    personal_fields,
    record,
    remedy,
    tag_of,
    unguarded,
    validate_collection,
)
from ._register import Register
from ._registry import SQLiteStore, open_store
from ._store import (
    InMemoryStore,
    ObjectionWithdrawal,
    RecordedEvent,
    Registry,
    RegistryView,
    Store,
    SubjectEvents,
    Withdrawal,
)
from ._time import Duration, add_duration, parse_datetime, parse_duration

if TYPE_CHECKING:
    from ._sqlalchemy_store import SQLAlchemyAuditSink as SQLAlchemyAuditSink
    from ._sqlalchemy_store import SQLAlchemyStore as SQLAlchemyStore

__all__ = [
    "COMPILED",
    "PERSONAL_KEY",
    "Audit",
    "AuditError",
    "AuditEvent",
    "AuditFileError",
    "AuditSink",
    "Authorisation",
    "CategoryDecision",
    "ChainProblem",
    "ChainedEvent",
    "Collection",
    "CollectionRefused",
    "CollectionTag",
    "Compatibility",
    "Confidence",
    "ConfigurationError",
    "Consent",
    "ConsentAnswer",
    "ConsentState",
    "DataCategory",
    "Decision",
    "Duration",
    "Engine",
    "EngineToken",
    "EventRefused",
    "Evidence",
    "FailurePolicy",
    "FilterSummary",
    "FrozenTaggedRecord",
    "InMemoryAuditSink",
    "InMemoryStore",
    "InMemorySubjectKeys",
    "InputError",
    "JsonLinesAuditSink",
    "LeadMapping",
    "LegalBasis",
    "LoggingAuditSink",
    "Mechanism",
    "Mode",
    "NaiveDatetimeError",
    "Objection",
    "ObjectionWithdrawal",
    "OutOfRangeError",
    "PersonalField",
    "Problem",
    "ProcessingDenied",
    "ProcessingScope",
    "ProtocolError",
    "Purpose",
    "PurposeLimitError",
    "Reason",
    "RecordedEvent",
    "Register",
    "RegisterError",
    "RegisterProblem",
    "Registry",
    "RegistryView",
    "Retention",
    "RetentionAnchor",
    "RetentionRow",
    "RowResult",
    "SQLiteAuditSink",
    "SQLiteStore",
    "SQLiteSubjectKeys",
    "Store",
    "StoreError",
    "SubjectEvents",
    "SubjectKeyStore",
    "TaggedRecord",
    "Verdict",
    "VerificationResult",
    "Withdrawal",
    "add_duration",
    "audit_key_from_env",
    "consent_state",
    "current_processing",
    "default_mode",
    "filter_csv",
    "filter_leads",
    "get_audit",
    "get_engine",
    "is_record",
    "load_authorisations",
    "load_consents",
    "load_mapping",
    "load_objections",
    "load_preset",
    "load_register",
    "load_suppression",
    "loads_register",
    "normalise_email",
    "open_audit_table",
    "open_store",
    "parse_datetime",
    "parse_duration",
    "personal",
    "personal_fields",
    "preset_names",
    "preset_path",
    "preset_text",
    "processing",
    "pseudonym",
    "read_audit_file",
    "record",
    "register_from_dict",
    "remedy",
    "retention_sweep",
    "set_engine",
    "tag_of",
    "unguarded",
    "validate_collection",
    "verify_audit_file",
    "verify_audit_table",
]

__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> object:
    # The SQLAlchemy classes load on first use: `import purposelimit` never imports SQLAlchemy.
    if name in ("SQLAlchemyStore", "SQLAlchemyAuditSink"):
        from . import _sqlalchemy_store

        return getattr(_sqlalchemy_store, name)
    raise AttributeError(f"module 'purposelimit' has no attribute {name!r}")
