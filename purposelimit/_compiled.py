"""Loads the compiled read path, ``purposelimit._speedups``, where it can run.

See purposelimit/_speedups.c: the C twin of the read path's common case. The
pure-Python code in _records.py, _context.py and _audit.py is the reference
and the fallback.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

__all__ = ["API", "COMPILED", "SPEEDUPS"]

#: The version of the compiled module's interface this package expects
#: (``SPEEDUPS_API`` in purposelimit/_speedups.c).
API = 3


def _load_speedups() -> Any:
    """The compiled read path (``purposelimit._speedups``), or ``None``.

    ``None`` when it was not built (no C compiler at install time), when it
    was built from another version of the package (a warning says so), in a
    sub-interpreter (its state is the main interpreter's), or when the
    environment variable ``PURPOSELIMIT_PURE_PYTHON`` is set to anything but
    ``""`` or ``"0"``; the pure-Python read path, the reference, is used then.
    """
    if os.environ.get("PURPOSELIMIT_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except Exception:  # not built, or not loadable here (a warning made an error, ...)
        return None
    if getattr(_speedups, "API", None) != API:
        warnings.warn(
            "purposelimit: the compiled read path was built for another version of "
            "purposelimit and is not used (rebuild it: pip install -e . in a checkout); "
            "the pure-Python read path runs",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _speedups if _speedups.in_main_interpreter() else None


#: The compiled read path, or ``None`` where the pure-Python one runs.
SPEEDUPS: Any = _load_speedups()

#: Whether reads of personal fields and ``processing`` blocks run the compiled
#: read path (``purposelimit/_speedups.c``, built at install time where a C
#: compiler is available) rather than the pure-Python one. Both decide, audit
#: and raise alike; the compiled one is about three times faster
#: (docs/performance.md). ``PURPOSELIMIT_PURE_PYTHON=1`` in the environment
#: before import selects the pure-Python one.
COMPILED: bool = SPEEDUPS is not None
