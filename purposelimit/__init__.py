"""purposelimit: executable purpose limitation.

GDPR art. 5(1)(b), (c) and (e); French Loi Informatique et Libertés art. 4.
Data collected for one purpose must not be processed for an incompatible one,
must be limited to what the purpose needs and must not outlive it. This
package turns a register of purposes into decisions, enforced on reads of
tagged records, on lead files and in test suites.
"""

from ._engine import Engine, consent_state
from ._errors import (
    AuditError,
    CollectionRefused,
    ConfigurationError,
    NaiveDatetimeError,
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
from ._register import Register
from ._store import InMemoryStore, Store, SubjectEvents, Withdrawal
from ._time import Duration, add_duration, parse_datetime, parse_duration

__all__ = [
    "AuditError",
    "Authorisation",
    "CategoryDecision",
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
    "Evidence",
    "InMemoryStore",
    "LegalBasis",
    "Mechanism",
    "NaiveDatetimeError",
    "Objection",
    "ProcessingDenied",
    "Purpose",
    "PurposeLimitError",
    "Reason",
    "Register",
    "RegisterError",
    "RegisterProblem",
    "Retention",
    "RetentionAnchor",
    "Store",
    "StoreError",
    "SubjectEvents",
    "Verdict",
    "Withdrawal",
    "add_duration",
    "consent_state",
    "load_preset",
    "load_register",
    "loads_register",
    "parse_datetime",
    "parse_duration",
    "preset_names",
    "preset_path",
    "preset_text",
    "register_from_dict",
]

__version__ = "0.1.0.dev0"
