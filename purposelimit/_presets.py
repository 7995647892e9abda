"""The registers shipped with purposelimit (DESIGN §7).

A preset is a register file in the format of DESIGN §9, in the package folder
``purposelimit/presets/`` (``cnil-commercial.toml``: the French client/prospect
preset, from the CNIL référentiel "gestion des activités commerciales",
délibération 2021-131). Load one on its own with :func:`load_preset`, or start
a register file from it with ``preset = "<name>"`` in its ``[register]`` table:
the file's entries are added to the preset's, and an entry with the id of a
preset entry replaces it, with a written ``justification`` (the référentiel's
durations are soft law: a controller may depart from them if it justifies it).
"""

from __future__ import annotations

import difflib
import functools
import re
from importlib import resources
from importlib.resources.abc import Traversable

from ._errors import ConfigurationError
from ._register import Register

__all__ = ["load_preset", "preset_names", "preset_path", "preset_text"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")


def _folder() -> Traversable:
    return resources.files("purposelimit").joinpath("presets")


def preset_names() -> list[str]:
    """Return the names of the shipped presets, sorted (``["cnil-commercial"]``).

    A preset's name is its file name in ``purposelimit/presets/`` without ``.toml``.
    """
    try:
        found = [
            entry.name[: -len(".toml")]
            for entry in _folder().iterdir()
            if entry.name.endswith(".toml") and entry.is_file()
        ]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name for name in found if _NAME.match(name))


def _resource(name: str) -> Traversable:
    names = preset_names()
    if not isinstance(name, str):
        raise ConfigurationError(f"a preset name is a string, not {type(name).__name__}")
    if name not in names:
        shown = repr(name if len(name) <= 40 else name[:37] + "...")
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        available = ", ".join(names) if names else "none are installed"
        raise ConfigurationError(f"unknown preset {shown}{hint}; available presets: {available}")
    return _folder().joinpath(f"{name}.toml")


def preset_path(name: str) -> str:
    """Return where the preset *name* is stored, for display or to copy it.

    Raises:
        ConfigurationError: there is no preset of that name (the message lists them).
    """
    return str(_resource(name))


def preset_text(name: str) -> str:
    """Return the TOML text of the preset *name* (DESIGN §9 format).

    Raises:
        ConfigurationError: there is no preset of that name (the message lists them).
    """
    return _preset_file(name)[1]


@functools.cache
def _preset_file(name: str) -> tuple[str, str]:
    resource = _resource(name)
    return str(resource), resource.read_text(encoding="utf-8")


@functools.cache
def load_preset(name: str) -> Register:
    """Load the shipped preset *name* as a :class:`~purposelimit.Register` (cached).

    Args:
        name: one of :func:`preset_names` (``"cnil-commercial"``).

    Returns:
        The preset's register; the same object on every call.

    Raises:
        ConfigurationError: there is no preset of that name (the message lists them).
        RegisterError: the preset file is refused (every problem, with the
            preset file's path and lines).
    """
    from ._loader import _loads

    file, text = _preset_file(name)
    return _loads(text, "toml", file, allow_preset=False)
