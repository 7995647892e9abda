"""The register: GDPR art. 30's record of processing activities, as the policy the engine applies.

Built in code with :class:`Register` or loaded from TOML/JSON with
:func:`purposelimit.load_register`. Either way the same checks run, and every
problem is reported at once in a :class:`~purposelimit.RegisterError`.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._errors import RegisterError, RegisterProblem
from ._ids import ancestors
from ._model import Compatibility, DataCategory, Purpose, Verdict

__all__ = ["Register", "check_register"]

_FACTORS = ("link", "context", "nature", "consequences", "safeguards")

#: At most this many compatible/prohibited overlaps are listed: a hostile register of
#: n entries each way could otherwise produce n * n problems.
OVERLAPS_LISTED = 1_000
#: The work did-you-mean hints may do in one check (candidates compared, summed).
SUGGESTION_BUDGET = 500_000


def _with_prefixes(ids: Iterable[str]) -> frozenset[str]:
    """Every id and each of its dotted prefixes: the ids that name a declared one or a group."""
    return frozenset(a for id_ in ids for a in ancestors(id_))


def check_register(
    purposes: Sequence[Purpose],
    categories: Sequence[DataCategory],
    compatibility: Sequence[Compatibility],
    *,
    paths: Mapping[str, Sequence[str]] | None = None,
) -> list[RegisterProblem]:
    """Return every semantic problem of a register (DESIGN §3 and §9); empty when sound.

    Checked: duplicate ids; categories a purpose lists that are neither declared
    nor a group of declared categories; ``from``/``to`` that are neither a
    declared purpose nor a group of declared purposes; a ``compatible`` entry
    missing one of the five GDPR art. 6(4) factors; a ``prohibited`` entry with
    neither ``source`` nor ``justification``; a ``compatible`` and a
    ``prohibited`` entry covering the same reuse.

    Args:
        paths: optional display paths per section (``{"purposes": ["purposes[0]", ...]}``),
            used when the sequences were merged from several sources.
    """
    problems: list[RegisterProblem] = []

    def where(section: str, index: int) -> str:
        if paths is not None and section in paths:
            return paths[section][index]
        return f"{section}[{index}]"

    def dupes(section: str, items: Sequence[Any]) -> None:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                problems.append(
                    RegisterProblem(
                        f"{where(section, i)}.id",
                        f"duplicate id {item.id!r} "
                        f"(first declared at {where(section, seen[item.id])})",
                    )
                )
            else:
                seen[item.id] = i

    dupes("categories", categories)
    dupes("purposes", purposes)
    dupes("compatibility", compatibility)

    category_ids = [c.id for c in categories]
    purpose_ids = [p.id for p in purposes]
    category_names = _with_prefixes(category_ids)
    purpose_names = _with_prefixes(purpose_ids)
    hint = _Hints()

    for i, p in enumerate(purposes):
        for key in ("categories", "sensitive_categories"):
            for j, cat in enumerate(getattr(p, key)):
                if cat not in category_names:
                    problems.append(
                        RegisterProblem(
                            f"{where('purposes', i)}.{key}[{j}]",
                            f"{cat!r} is not a declared category" + hint(cat, category_ids),
                        )
                    )

    for i, entry in enumerate(compatibility):
        base = where("compatibility", i)
        for key, value in (("from", entry.from_), ("to", entry.to)):
            if value not in purpose_names:
                problems.append(
                    RegisterProblem(
                        f"{base}.{key}",
                        f"{value!r} is neither a declared purpose nor a group of declared purposes"
                        + hint(value, purpose_ids),
                    )
                )
        if entry.verdict is Verdict.COMPATIBLE:
            missing = [f for f in _FACTORS if not _filled(getattr(entry, f))]
            if missing:
                problems.append(
                    RegisterProblem(
                        base,
                        "a compatible entry must write down the five GDPR art. 6(4) factors; "
                        f"missing: {', '.join(missing)}",
                    )
                )
        elif not entry.source.strip() and not entry.justification.strip():
            problems.append(
                RegisterProblem(base, "a prohibited entry needs a source or a justification")
            )

    compatible = [(i, e) for i, e in enumerate(compatibility) if e.verdict is Verdict.COMPATIBLE]
    prohibited = [(i, e) for i, e in enumerate(compatibility) if e.verdict is Verdict.PROHIBITED]
    pairs, more = _overlapping([e for _, e in compatible], [e for _, e in prohibited])
    for a, b in pairs:
        (i, allowing), (j, forbidding) = compatible[a], prohibited[b]
        problems.append(
            RegisterProblem(
                where("compatibility", i),
                f"compatible entry {allowing.id!r} overlaps prohibited entry "
                f"{forbidding.id!r} "
                f"({where('compatibility', j)}): a reuse cannot be both assessed as "
                "compatible and prohibited",
            )
        )
    if more:
        problems.append(
            RegisterProblem(
                "compatibility",
                "more compatible entries overlap prohibited ones than are listed here "
                f"(at most {OVERLAPS_LISTED:,} overlaps are listed)",
            )
        )
    return problems


def _strict_ancestors(id_: str) -> list[str]:
    return list(ancestors(id_))[1:]


def _below(keys: Sequence[str], id_: str) -> Sequence[str]:
    """The ids of the sorted *keys* strictly below *id_* (a contiguous run of the sort order)."""
    prefix = id_ + "."
    start = bisect.bisect_left(keys, prefix)
    return keys[start : bisect.bisect_left(keys, prefix + "\x7f", start)]


def _overlapping(
    compatible: Sequence[Compatibility], prohibited: Sequence[Compatibility]
) -> tuple[list[tuple[int, int]], bool]:
    """``(i, j)`` for compatible entry *i* overlapping prohibited entry *j*, in ``(i, j)`` order.

    Two entries overlap when their ``from`` ids are on one line of the
    hierarchy (equal, or one an ancestor of the other), and so are their
    ``to`` ids. Indexed on the hierarchy: the work grows with the entries and
    the overlaps found, not with their product. At most :data:`OVERLAPS_LISTED`
    pairs are returned; the flag says whether more exist.
    """
    if not compatible or not prohibited:
        return [], False
    pair: dict[tuple[str, str], list[int]] = {}
    by_from: dict[str, list[int]] = {}
    by_to: dict[str, list[int]] = {}
    for j, e in enumerate(prohibited):
        pair.setdefault((e.from_, e.to), []).append(j)
        by_from.setdefault(e.from_, []).append(j)
        by_to.setdefault(e.to, []).append(j)
    # Per from (to): the tos (froms) of its entries, sorted, each with its entries.
    tos_of = {f: _grouped(js, prohibited, "to") for f, js in by_from.items()}
    froms_of = {t: _grouped(js, prohibited, "from_") for t, js in by_to.items()}
    # Both ids strictly below: looked up from the prohibited side, by the compatible pairs.
    allowing: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(compatible):
        allowing.setdefault((e.from_, e.to), []).append(i)
    beneath: dict[int, list[int]] = {}
    found = 0
    for j, e in enumerate(prohibited):
        for f in _strict_ancestors(e.from_):
            for t in _strict_ancestors(e.to):
                for i in allowing.get((f, t), ()):
                    beneath.setdefault(i, []).append(j)
                    found += 1
        if found > OVERLAPS_LISTED:
            break
    pairs: list[tuple[int, int]] = []
    for i, e in enumerate(compatible):
        js: list[int] = list(beneath.get(i, ()))
        up_from, up_to = list(ancestors(e.from_)), list(ancestors(e.to))
        for f in up_from:
            for t in up_to:  # both ids above or equal
                js.extend(pair.get((f, t), ()))
            keys, groups = tos_of.get(f, ((), {}))
            for t in _below(keys, e.to):  # from above or equal, to strictly below
                js.extend(groups[t])
        for t in up_to:
            keys, groups = froms_of.get(t, ((), {}))
            for f in _below(keys, e.from_):  # from strictly below, to above or equal
                js.extend(groups[f])
        pairs.extend((i, j) for j in sorted(set(js)))
        if len(pairs) > OVERLAPS_LISTED:
            return pairs[:OVERLAPS_LISTED], True
    return pairs, found > OVERLAPS_LISTED


def _grouped(
    js: list[int], entries: Sequence[Compatibility], attribute: str
) -> tuple[list[str], dict[str, list[int]]]:
    groups: dict[str, list[int]] = {}
    for j in js:
        groups.setdefault(getattr(entries[j], attribute), []).append(j)
    return sorted(groups), groups


def _filled(value: object) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return bool(value) and all(isinstance(v, str) and v.strip() for v in value)  # type: ignore[attr-defined]


def _did_you_mean(value: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Hints:
    """Did-you-mean hints within :data:`SUGGESTION_BUDGET`: thousands of unknown ids among
    thousands of declared ones cost a bounded amount of work, not their product."""

    __slots__ = ("budget",)

    def __init__(self) -> None:
        self.budget = SUGGESTION_BUDGET

    def __call__(self, value: str, candidates: Sequence[str]) -> str:
        if len(candidates) > self.budget:
            return ""
        self.budget -= len(candidates)
        return _did_you_mean(value, candidates)


class Register:
    """The policy: purposes, data categories and compatibility entries (DESIGN §9).

    GDPR art. 30(1) record of processing activities. Immutable once built.

    Args:
        purposes: the declared purposes.
        categories: the declared data categories.
        compatibility: the compatibility entries (GDPR art. 6(4)).
        controller: the controller's name (art. 30(1)(a)).
        version: the register's version, recorded in every audit event.

    Raises:
        RegisterError: listing every problem :func:`check_register` finds.

    Attributes:
        content_hash: ``sha256:<hex>`` of the register's canonical content;
            recorded in every audit event beside :attr:`version`.
    """

    __slots__ = (
        "_categories",
        "_children",
        "_compatibility",
        "_groups",
        "_purposes",
        "_sensitive",
        "content_hash",
        "controller",
        "version",
    )

    def __init__(
        self,
        purposes: Iterable[Purpose],
        categories: Iterable[DataCategory],
        compatibility: Iterable[Compatibility] = (),
        *,
        controller: str = "",
        version: str = "",
        _problems_source: str | None = None,
        _paths: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        purposes = tuple(purposes)
        categories = tuple(categories)
        compatibility = tuple(compatibility)
        problems = check_register(purposes, categories, compatibility, paths=_paths)
        if problems:
            raise RegisterError(problems, _problems_source)
        self.controller = controller
        self.version = version
        self._purposes: dict[str, Purpose] = {p.id: p for p in purposes}
        self._categories: dict[str, DataCategory] = {c.id: c for c in categories}
        self._compatibility: tuple[Compatibility, ...] = compatibility
        flagged = {c.id for c in categories if c.sensitive}
        self._sensitive = frozenset(
            c.id for c in categories if any(a in flagged for a in ancestors(c.id))
        )
        self._groups = frozenset(
            a for pid in self._purposes for a in list(ancestors(pid))[1:] if a not in self._purposes
        )
        children: dict[str, list[str]] = {}
        for pid in self._purposes:
            for a in list(ancestors(pid))[1:]:
                children.setdefault(a, []).append(pid)
        self._children = {k: tuple(v) for k, v in children.items()}
        self.content_hash = (
            "sha256:"
            + hashlib.sha256(
                json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode()
            ).hexdigest()
        )

    # ------------------------------------------------------------------ lookups

    @property
    def purposes(self) -> Mapping[str, Purpose]:
        """The declared purposes by id, in declaration order."""
        return self._purposes

    @property
    def categories(self) -> Mapping[str, DataCategory]:
        """The declared data categories by id, in declaration order."""
        return self._categories

    @property
    def compatibility(self) -> tuple[Compatibility, ...]:
        """The compatibility entries, in declaration order."""
        return self._compatibility

    @property
    def groups(self) -> frozenset[str]:
        """Dotted prefixes of declared purposes that are not themselves declared."""
        return self._groups

    def purpose(self, id_: str) -> Purpose | None:
        """Return the declared purpose *id_*, or ``None``."""
        return self._purposes.get(id_)

    def category(self, id_: str) -> DataCategory | None:
        """Return the declared data category *id_*, or ``None``."""
        return self._categories.get(id_)

    def is_sensitive(self, category_id: str) -> bool:
        """Whether the declared category is sensitive, by itself or through an ancestor."""
        return category_id in self._sensitive

    def descendants(self, id_: str) -> tuple[str, ...]:
        """The declared purposes strictly below the purpose or group *id_*."""
        return self._children.get(id_, ())

    # ------------------------------------------------------------------ export

    def to_dict(self) -> dict[str, Any]:
        """Return the register in the file shape of DESIGN §9 (a JSON-compatible dict)."""
        from ._convert import unstructure_register

        return unstructure_register(self)

    def __repr__(self) -> str:
        return (
            f"<Register version={self.version!r} purposes={len(self._purposes)} "
            f"categories={len(self._categories)} compatibility={len(self._compatibility)}>"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Register):
            return NotImplemented
        return self.content_hash == other.content_hash

    def __hash__(self) -> int:
        return hash(self.content_hash)
