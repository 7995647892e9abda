"""The report of a ``purposelimit filter`` run: JSON for machines, one HTML page for people.

Both hold the run (input file hash, register version and hash, purpose,
instant, rows and columns, counts per reason code) and one entry per excluded
row and per duplicate row: line number, subject reference (the subject id, or
its keyed pseudonym when the subject is an e-mail address), reason code and
rule. Neither ever holds a personal value: the filter never hands one over.

The HTML page is self-contained (inline CSS and SVG, no script, no external
resource); every text is HTML-escaped, and text a spreadsheet would run as a
formula (beginning with ``=``, ``+``, ``-``, ``@``, TAB or CR) is prefixed with
``'`` so that pasting the page's tables into a spreadsheet is safe.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, Final

from ._errors import ConfigurationError
from ._files import temp_beside, text_writer

__all__ = ["HTML_ROW_LIMIT", "neutralise", "render_html", "report_format", "write_report"]

#: At most this many excluded (and duplicate) rows are listed in the HTML page;
#: the JSON report lists them all.
HTML_ROW_LIMIT: Final = 5_000

_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """Prefix *text* with ``'`` when a spreadsheet would run it as a formula (CSV injection)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def report_format(path: str | os.PathLike[str]) -> str:
    """Return ``"json"`` or ``"html"`` from the report file's name.

    Raises:
        ConfigurationError: the name ends in neither ``.json`` nor ``.html`` / ``.htm``.
    """
    name = os.fspath(path).lower()
    if name.endswith(".json"):
        return "json"
    if name.endswith((".html", ".htm")):
        return "html"
    raise ConfigurationError(
        "the report file's name must end in .json (for machines) or .html (for people)"
    )


def write_report(
    path: str | os.PathLike[str],
    head: Mapping[str, Any],
    excluded: Iterable[Mapping[str, Any]],
    duplicates: Iterable[Mapping[str, Any]],
    *,
    commit: bool = True,
) -> str:
    """Write a report, JSON or HTML as the file's name says, all at once or not at all.

    Args:
        path: the report file (``.json`` or ``.html``).
        head: the run (:meth:`purposelimit._bulk.FilterSummary.to_dict`).
        excluded: one mapping per excluded row (``line``, ``subject``,
            ``reason``, ``rule``, ``detail``), streamed.
        duplicates: one mapping per duplicate row (``line``, ``subject``,
            ``first_line``, ``kept``), streamed.
        commit: rename the finished temporary file to *path* (``False``: leave
            it and return its name, for the caller to rename when its own
            output is complete).

    Returns:
        The file written: *path*, or the temporary file when not *commit*.

    Raises:
        ConfigurationError: an unknown report extension.
        OSError: the file cannot be written (the temporary file is removed).
    """
    name = os.fspath(path)
    fmt = report_format(name)
    fd, tmp = temp_beside(name)
    try:
        with text_writer(fd, name, "utf-8") as handle:  # a failed write names the report
            if fmt == "json":
                _write_json(handle, head, excluded, duplicates)
            else:
                for chunk in render_html(head, excluded, duplicates):
                    handle.write(chunk)
        if commit:
            os.replace(tmp, name)
            return name
        return tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_json(
    handle: IO[str],
    head: Mapping[str, Any],
    excluded: Iterable[Mapping[str, Any]],
    duplicates: Iterable[Mapping[str, Any]],
) -> None:
    from . import __version__

    document = {"report": "purposelimit filter", "purposelimit": __version__, **head}
    text = json.dumps(document, indent=2, ensure_ascii=False)
    handle.write(text[: text.rfind("}")].rstrip())
    for key, items in (("excluded", excluded), ("duplicates", duplicates)):
        handle.write(f',\n  "{key}": [')
        first = True
        for item in items:
            handle.write("\n    " if first else ",\n    ")
            handle.write(json.dumps(item, ensure_ascii=False))
            first = False
        handle.write("]" if first else "\n  ]")
    handle.write("\n}\n")


# --------------------------------------------------------------------------- HTML


def _e(value: object) -> str:
    """Escape any value for HTML text or attributes, neutralising formula-like text."""
    text = "" if value is None else str(value)
    return html.escape(neutralise(text), quote=True)


_ALLOW: Final = frozenset(
    {
        "same-purpose",
        "narrower-purpose",
        "compatible",
        "presumed-compatible",
        "consent",
        "authorisation",
    }
)

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#1b1f24;line-height:1.4}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
dd{margin:0;word-break:break-all}.ok{color:#116329}.no{color:#a40e26}.inv{color:#6e7781}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem;border-radius:4px}
code{font-size:.85rem}
"""


def _bar_chart(reasons: Mapping[str, int]) -> str:
    """An inline SVG horizontal bar chart of rows per reason code."""
    items = [(r, n) for r, n in reasons.items() if n > 0]
    if not items:
        return "<p>No row was read.</p>"
    top = max(n for _, n in items)
    label_w, bar_w, count_w, row_h = 190, 420, 80, 26
    width = label_w + bar_w + count_w
    height = row_h * len(items) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="rows per reason code">'
    ]
    for i, (reason, n) in enumerate(items):
        y = 5 + i * row_h
        w = max(2, round(bar_w * n / top))
        colour = (
            "#2da44e" if reason in _ALLOW else "#8c959f" if reason == "invalid-row" else "#cf222e"
        )
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" font-size="13">'
            f"{_e(reason)}</text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row_h - 8}" fill="{colour}">'
            f"<title>{_e(reason)}: {n}</title></rect>"
            f'<text x="{label_w + w + 6}" y="{y + 17}" font-size="13">{n:,}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Iterable[str], rows: Iterable[Iterable[tuple[object, str]]]) -> Iterator[str]:
    yield (
        "<table><thead><tr>"
        + "".join(f"<th>{_e(h)}</th>" for h in headers)
        + "</tr></thead><tbody>"
    )
    for row in rows:
        yield (
            "<tr>"
            + "".join(
                f'<td class="{cls}">{_e(v)}</td>' if cls else f"<td>{_e(v)}</td>" for v, cls in row
            )
            + "</tr>\n"
        )
    yield "</tbody></table>"


def _limited(
    items: Iterable[Mapping[str, Any]], limit: int, counter: list[int]
) -> Iterator[Mapping[str, Any]]:
    for item in items:
        counter[0] += 1
        if counter[0] <= limit:
            yield item


def render_html(
    head: Mapping[str, Any],
    excluded: Iterable[Mapping[str, Any]],
    duplicates: Iterable[Mapping[str, Any]],
    *,
    limit: int = HTML_ROW_LIMIT,
) -> Iterator[str]:
    """Yield the HTML report page in chunks (self-contained; everything escaped).

    Args:
        head: the run (as in :func:`write_report`).
        excluded, duplicates: the per-row entries; at most *limit* of each are listed.
        limit: the most rows listed per table; the page says how many were left out.
    """
    purpose = head.get("purpose", "")
    rows = head.get("rows", {})
    inp = head.get("input", {})
    reg = head.get("register", {})
    subjects = head.get("subjects", {})
    delimiter = {"\t": "TAB", ",": ",", ";": ";", "|": "|"}.get(inp.get("delimiter", ""), "?")
    yield (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>purposelimit filter report: {_e(purpose)}</title>"
        f"<style>{_CSS}</style></head><body>\n"
        f"<h1>Lead file filtered for <code>{_e(purpose)}</code></h1>\n"
    )
    summary = [
        ("Input file", inp.get("file")),
        ("Input SHA-256", inp.get("sha256")),
        ("Encoding / delimiter", f"{inp.get('encoding')} / {delimiter}"),
        ("Output file", head.get("output")),
        ("Processing purpose", purpose),
        ("Decided at", head.get("at")),
        (
            "Register",
            f"{reg.get('controller') or '(no controller)'}, "
            f"version {reg.get('version') or '(none)'}",
        ),
        ("Register content hash", reg.get("content_hash")),
        (
            "Rows",
            f"{rows.get('read', 0):,} read, {rows.get('kept', 0):,} kept, "
            f"{rows.get('excluded', 0):,} excluded",
        ),
        (
            "Duplicates",
            f"{subjects.get('duplicate_subjects', 0):,} subjects on more than one row "
            f"({subjects.get('duplicate_rows', 0):,} repeated rows)",
        ),
        ("Subjects shown as", subjects.get("reference")),
        ("Run id", head.get("run")),
    ]
    yield "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in summary) + "</dl>\n"
    if subjects.get("reference") == "pseudonym":
        key = subjects.get("pseudonym_key")
        if key == "random per run":
            text = (
                "Subjects are shown as keyed pseudonyms (HMAC-SHA256) under a random key drawn "
                "for this run only: they cannot be linked to other runs. Set "
                "PURPOSELIMIT_PSEUDONYM_KEY to keep pseudonyms stable across runs."
            )
        else:
            text = f"Subjects are shown as keyed pseudonyms (HMAC-SHA256); key: {key}."
        yield f'<p class="note">{_e(text)}</p>\n'

    yield "<h2>Rows per reason</h2>\n" + _bar_chart(head.get("reasons", {})) + "\n"
    yield "<h2>Decisions</h2>\n"
    yield from _table(
        ("reason", "rule", "rows", "explanation"),
        (
            [
                (d.get("reason"), "ok" if d.get("allowed") else "no"),
                (d.get("rule"), ""),
                (f"{d.get('rows', 0):,}", "n"),
                (d.get("explanation"), ""),
            ]
            for d in head.get("decisions", [])
        ),
    )
    yield "<h2>Columns</h2>\n"
    yield from _table(
        ("column", "category", "kept", "status", "rule", "explanation"),
        (
            [
                (c.get("column"), ""),
                (c.get("category") or "", ""),
                ("yes" if c.get("kept") else "no", "ok" if c.get("kept") else "no"),
                (c.get("status"), ""),
                (c.get("rule") or "", ""),
                (c.get("explanation"), ""),
            ]
            for c in head.get("columns", [])
        ),
    )

    total = rows.get("excluded", 0)
    yield f"<h2>Excluded rows ({total:,})</h2>\n"
    if not total:
        yield "<p>No row was excluded.</p>\n"
    else:
        yield "<p>Line numbers are the physical line where each row starts in the input file.</p>\n"
        seen = [0]
        yield from _table(
            ("line", "subject", "reason", "rule", "detail"),
            (
                [
                    (f"{x.get('line')}", "n"),
                    (x.get("subject") or "", ""),
                    (x.get("reason"), "inv" if x.get("reason") == "invalid-row" else "no"),
                    (x.get("rule"), ""),
                    (x.get("detail") or "", ""),
                ]
                for x in _limited(excluded, limit, seen)
            ),
        )
        if seen[0] > limit:
            more = seen[0] - limit
            yield f'<p class="note">{more:,} more excluded rows are in the JSON report.</p>\n'

    yield "<h2>Subjects on more than one row</h2>\n"
    if not subjects.get("duplicate_rows", 0):
        yield "<p>No subject appears on more than one row.</p>\n"
    else:
        dup_seen = [0]
        yield from _table(
            ("line", "subject", "first seen on line", "kept"),
            (
                [
                    (f"{d.get('line')}", "n"),
                    (d.get("subject") or "", ""),
                    (f"{d.get('first_line')}", "n"),
                    ("yes" if d.get("kept") else "no", "ok" if d.get("kept") else "no"),
                ]
                for d in _limited(duplicates, limit, dup_seen)
            ),
        )
        if dup_seen[0] > limit:
            more = dup_seen[0] - limit
            yield f'<p class="note">{more:,} more duplicate rows are in the JSON report.</p>\n'
    yield (
        "<p><small>Written by purposelimit. This page holds no personal value: rows are named by "
        "line number and subject reference only.</small></p>\n</body></html>\n"
    )
