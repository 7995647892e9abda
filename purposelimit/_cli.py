"""The ``purposelimit`` command line: filter, retention, decide, check, presets.

Exit codes (every command): 0 done; 1 bad input (a lead file, mapping,
consents, objections or suppression file that cannot be used, a refused
register for ``check``, a protocol request that could not be read for
``decide``); 2 usage error (bad options, unreadable or refused register);
130 interrupted; 141 standard output closed by its reader (a broken pipe).

Errors are one line on stderr naming the file, line and column; nothing is
half-written: output files appear only once complete. No message, report or
audit event ever shows a personal value.

``filter --audit FILE`` appends to a keyed hash chain (:class:`JsonLinesAuditSink`,
key from ``PURPOSELIMIT_AUDIT_KEY`` or ``--audit-key-env``), the format
``purposelimit audit verify|tail|stats`` reads.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn, TextIO

from ._audit import AuditEvent
from ._audit_chain import AUDIT_KEY_ENV, JsonLinesAuditSink, audit_key_from_env
from ._bulk import (
    INVALID_ROW,
    PSEUDONYM_KEY_ENV,
    FilterSummary,
    LeadMapping,
    Pseudonymiser,
    RetentionRow,
    filter_csv,
    load_mapping,
    normalise_email,
    retention_sweep,
)
from ._cases import add_test_command
from ._engine import Engine
from ._errors import (
    AuditError,
    ConfigurationError,
    PurposeLimitError,
    RegisterError,
    StoreError,
)
from ._files import is_special, temp_beside, text_writer
from ._model import Authorisation, Consent, Objection, Reason
from ._protocol import (
    InputError,
    ProtocolError,
    decide_request,
    instant_argument,
    load_authorisations,
    load_consents,
    load_objections,
    load_suppression,
    parse_request_line,
)
from ._register import Register
from ._registry_cli import RegistryOverlay, open_registry_url, registry_snapshot
from ._registry_cli import add_commands as add_registry_commands
from ._store import InMemoryStore, Registry, Store, Withdrawal

__all__ = ["main"]

PROG = "purposelimit"


class UsageError(PurposeLimitError):
    """A bad option or an unusable register: exit status 2."""


# --------------------------------------------------------------------------- helpers


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("purposelimit")
    except PackageNotFoundError:  # run from a source tree: the package's own version
        from . import __version__

        return __version__


def _out() -> TextIO:
    return sys.stdout


def _err() -> TextIO:
    return sys.stderr


def _say(message: str) -> None:
    _err().write(f"{PROG}: {message}\n")


def _load_register(args: argparse.Namespace) -> Register:
    from ._loader import load_register
    from ._presets import load_preset

    if args.preset is not None:
        try:
            return load_preset(args.preset)
        except (ConfigurationError, RegisterError) as exc:
            raise UsageError(f"--preset: {exc}") from None
    path = args.register
    if not os.path.isfile(path):
        raise UsageError(f"--register {path}: no such file")
    try:
        return load_register(path)
    except RegisterError as exc:
        raise UsageError(str(exc)) from None


def _events(
    args: argparse.Namespace, email: bool
) -> tuple[list[Consent], list[Withdrawal], list[Objection], list[Authorisation]]:
    """The events of the files given, plus those of ``--registry`` (read once, now)."""
    key = normalise_email if email else None
    consents = load_consents(args.consents, subject_key=key) if args.consents else []
    objections = load_objections(args.objections, subject_key=key) if args.objections else []
    if getattr(args, "suppression", None):
        objections += load_suppression(args.suppression, subject_key=key)
    auths = load_authorisations(args.authorisations, subject_key=key) if args.authorisations else []
    withdrawals: list[Withdrawal] = []
    if getattr(args, "registry", None):
        registry = _open_registry(args.registry)
        try:
            held = registry_snapshot(registry)
        finally:
            registry.close()
        consents += held[0]
        withdrawals += held[1]
        objections += held[2]
        auths += held[3]
    return consents, withdrawals, objections, auths


def _open_registry(url: str) -> Registry:
    try:
        return open_registry_url(url, must_exist=True)
    except StoreError as exc:
        raise UsageError(f"--registry: {exc}") from None


@contextlib.contextmanager
def _atomic_text(path: str | None, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """Write to *path* all at once (temporary file, then rename), or to stdout when ``None``.

    Either way nothing is written unless the block completes: stdout output is
    spooled (in memory, then on disk past 8 MiB) and copied at the end.
    """
    if path is None:
        with tempfile.SpooledTemporaryFile(
            8 << 20, mode="w+", encoding=encoding, newline=""
        ) as spool:
            yield spool
            spool.seek(0)
            out = _out()
            for chunk in iter(lambda: spool.read(1 << 16), ""):
                out.write(chunk)
            out.flush()
        return
    if is_special(path):
        # A device or a pipe (/dev/stdout): written in place; renaming a finished
        # file onto it would replace the device itself.
        with text_writer(os.open(path, os.O_WRONLY), path, encoding) as handle:
            yield handle
        return
    fd, tmp = temp_beside(path)
    try:
        with text_writer(fd, path, encoding) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- filter


def _cmd_filter(args: argparse.Namespace) -> int:
    audit = _ChainedAudit.prepare(args) if args.audit is not None else None
    try:
        register = _load_register(args)
        mapping = load_mapping(args.mapping)
        pseudonymiser = Pseudonymiser()
        consents, withdrawals, objections, auths = _events(args, mapping.email)
        if audit is not None:
            audit.open_existing(_whole_file_purpose(args, mapping))
        summary = filter_csv(
            args.leads,
            args.out,
            register=register,
            purpose=args.purpose,
            mapping=mapping,
            at=args.at,
            collected_for=args.collected_for,
            collected_at=args.collected_at,
            consents=consents,
            objections=objections,
            withdrawals=withdrawals,
            authorisations=auths,
            drop_unmapped=args.drop_unmapped,
            neutralise_formulas=args.neutralise_formulas,
            report=args.report,
            audit=audit,
            pseudonymiser=pseudonymiser,
            encoding=args.encoding,
            delimiter=args.delimiter,
            progress=_err() if _err().isatty() else None,
            notice=_say,
            actor=args.actor,
        )
    finally:
        if audit is not None:
            audit.close()
    unlinkable = mapping.uses_pseudonyms and pseudonymiser.key_source != "environment"
    if audit is not None and audit.written and unlinkable:
        _say(
            f"--audit: {PSEUDONYM_KEY_ENV} is not set: the subject pseudonyms in the audit "
            "file use a key drawn for this run only and cannot be linked to other runs"
        )
    _print_summary(summary, args.report, audit)
    return 0


def _whole_file_purpose(args: argparse.Namespace, mapping: LeadMapping) -> str | None:
    """The collection purpose of every row, when one is given for the whole file."""
    if args.collected_for:
        return str(args.collected_for)
    return mapping.collected_for if mapping.collected_for_column is None else None


class _ChainedAudit:
    """``filter --audit FILE``: the run's audit entries, appended to a keyed hash chain.

    :meth:`prepare` reads the key and refuses a file that is not a chain,
    before anything is read or written; :meth:`open_existing` opens an
    existing file's chain (checking its last line and head with the key)
    before the run; the file is created only when the run has succeeded.
    ``filter_csv`` calls the object once the output is complete and before it
    is renamed into place: the entries go in as one batch, so a failure
    leaves neither the output nor part of the batch.
    """

    def __init__(self, path: str, key: bytes) -> None:
        self.path = path
        self.key = key
        self.actor: str | None = None
        self.collected_for: str | None = None
        self.sink: JsonLinesAuditSink | None = None
        self.written = 0
        self.first_seq = 0

    @classmethod
    def prepare(cls, args: argparse.Namespace) -> _ChainedAudit:
        """Read the key (usage error without one) and check the file's format (bad input)."""
        path = str(args.audit)
        try:
            key = audit_key_from_env(args.audit_key_env)
        except ConfigurationError as exc:
            raise UsageError(
                f"--audit: {exc}; or name another variable with --audit-key-env"
            ) from None
        here = os.path.abspath(path)
        if os.path.isdir(path):
            raise InputError(path, "is a folder: --audit names the audit file")
        if not os.path.isdir(os.path.dirname(here)):
            raise InputError(path, "its folder does not exist: nothing was written")
        others = [args.leads, args.out] + ([args.report] if args.report else [])
        if here in {os.path.abspath(str(o)) for o in others}:
            raise UsageError(
                "--audit: the audit file must differ from the lead, output and report files"
            )
        if os.path.isfile(path) and not _chained_file(path):
            raise InputError(
                path,
                "not a hash-chained audit file (plain JSON Lines, as an earlier `filter --audit` "
                "wrote?): appending would mix two formats, so it is left untouched and nothing "
                "was written; name a new audit file",
            )
        audit = cls(path, key)
        audit.actor = args.actor
        return audit

    def open_existing(self, collected_for: str | None) -> None:
        """Continue an existing file's chain: its last line and head must verify with the key."""
        self.collected_for = collected_for
        if os.path.exists(self.path):
            self.sink = self._open()

    def _open(self) -> JsonLinesAuditSink:
        try:
            return JsonLinesAuditSink(self.path, self.key)
        except AuditError as exc:
            raise InputError(self.path, _audit_reason(exc, self.path)) from None

    def __call__(self, summary: FilterSummary, excluded: Iterator[dict[str, Any]]) -> None:
        events = _filter_events(summary, excluded, self.actor, self.collected_for)
        if not events:
            return
        if self.sink is None:
            self.sink = self._open()
        try:
            self.sink.emit(events)
        except AuditError as exc:
            raise InputError(self.path, _audit_reason(exc, self.path)) from None
        self.written = len(events)
        self.first_seq = self.sink.seq - len(events) + 1

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def _chained_file(path: str) -> bool:
    """Whether *path* is empty or its first line is an entry of a hash chain (seq, prev, mac)."""
    with open(path, "rb") as handle:
        first = handle.readline(1 << 20)
    if not first.strip():
        return True
    try:
        entry = json.loads(first)
    except ValueError:
        return False
    return isinstance(entry, dict) and all(k in entry for k in ("seq", "prev", "mac"))


def _audit_reason(exc: AuditError, path: str) -> str:
    """The sink's message without its ``audit file PATH:`` prefix (the error names the file)."""
    text = str(exc)
    return text.removeprefix(f"audit file {Path(path).absolute()}: ")


def _filter_events(
    summary: FilterSummary,
    excluded: Iterator[dict[str, Any]],
    actor: str | None,
    collected_for: str | None,
) -> list[AuditEvent]:
    """The chain entries of a filter run (docs/cli.md, "Audit events"): never a personal value.

    * per kind of allowed outcome: ``lead-file.rows=N``, subject ``run:<run id>``;
    * per excessive (dropped) column: ``lead-file.<column>`` with its category;
    * per excluded row: ``lead-row.line=N``, the subject's reference (a keyed
      pseudonym, or the id when the mapping does not pseudonymise; ``-`` when
      the row has none). An invalid row is not one: nothing was decided nor
      processed for it (its collection tag cannot be read), and no reason code
      of the engine says "invalid row"; the report lists it.
    """
    now = datetime.now(UTC)
    run = f"run:{summary.run_id}"

    def event(
        record_type: str,
        subject: str,
        field: str,
        category: str,
        reason: Reason,
        rule: str,
    ) -> AuditEvent:
        return AuditEvent(
            time=now,
            actor=actor,
            purpose=summary.purpose,
            collected_for=collected_for,
            record_type=record_type,
            subject_ref=subject,
            field=field,
            category=category,
            allowed=reason.allows,
            reason=reason,
            rule=rule,
            mode="enforce",
            monitored=False,
            register_version=summary.register_version or None,
            register_hash=summary.register_hash or None,
        )

    events = [
        event("lead-file", run, f"rows={rows}", "*", Reason(code), rule)
        for code, rule, allowed, rows, _ in summary.outcomes
        if allowed and rows
    ]
    events += [
        event(
            "lead-file",
            run,
            c.name,
            c.category,
            Reason.EXCESSIVE,
            c.rule or f"purpose:{summary.purpose}",
        )
        for c in summary.columns
        if c.status == "excessive" and c.category is not None
    ]
    for row in excluded:
        code = str(row["reason"])
        if code == INVALID_ROW:  # no decision was made: the report lists it
            continue
        subject = row.get("subject")
        events.append(
            event(
                "lead-row",
                "-" if subject is None else str(subject),
                f"line={row['line']}",
                "*",
                Reason(code),
                str(row["rule"]),
            )
        )
    return events


def _print_summary(summary: FilterSummary, report: str | None, audit: _ChainedAudit | None) -> None:
    out = _out()
    out.write(
        f"{summary.input}: {summary.rows_read:,} rows read for {summary.purpose} "
        f"(register version {summary.register_version or '(none)'})\n"
    )
    out.write(f"  kept      {summary.rows_kept:,} rows -> {summary.output}\n")
    excluded = {r: n for r, n in summary.reasons.items() if not _allows(r)}
    detail = ", ".join(f"{r} {n:,}" for r, n in excluded.items())
    out.write(
        f"  excluded  {summary.rows_excluded:,} rows" + (f": {detail}" if detail else "") + "\n"
    )
    dropped = [c for c in summary.columns if not c.kept]
    if dropped:
        names = max(len(c.name) for c in dropped)
        cats = max(len(c.category or "-") for c in dropped)
        for i, c in enumerate(dropped):
            label = "  dropped   " if i == 0 else " " * 12
            out.write(
                f"{label}{c.name.ljust(names)}  {(c.category or '-').ljust(cats)}  {c.status}\n"
            )
    else:
        out.write("  dropped   no column\n")
    if summary.duplicate_rows:
        out.write(
            f"  repeated  {summary.duplicate_subjects:,} subjects on more than one row "
            f"({summary.duplicate_rows:,} rows, each decided on its own)\n"
        )
    if report is not None:
        out.write(f"  report    {report}\n")
    if audit is not None:
        if audit.written:
            last = audit.first_seq + audit.written - 1
            what = (
                f"{audit.written:,} chained entries appended, seq {audit.first_seq:,} to {last:,}"
            )
        else:
            what = "nothing to append"
        out.write(f"  audit     {audit.path} ({what})\n")


def _allows(reason: str) -> bool:
    return reason in {
        "same-purpose",
        "narrower-purpose",
        "compatible",
        "presumed-compatible",
        "consent",
        "authorisation",
    }


# --------------------------------------------------------------------------- retention


def _cmd_retention(args: argparse.Namespace) -> int:
    register = _load_register(args)
    mapping = load_mapping(args.mapping)
    consents, withdrawals, objections, auths = _events(args, mapping.email)
    fmt = args.format or ("json" if (args.out or "").lower().endswith(".json") else "csv")
    if args.at is None:
        args.at = datetime.now(UTC)
    skipped: list[tuple[int, str]] = []
    rows = retention_sweep(
        args.leads,
        register=register,
        mapping=mapping,
        purposes=args.purpose or (),
        at=args.at,
        collected_for=args.collected_for,
        collected_at=args.collected_at,
        consents=consents,
        objections=objections,
        withdrawals=withdrawals,
        authorisations=auths,
        pseudonymiser=Pseudonymiser(),
        encoding=args.encoding,
        delimiter=args.delimiter,
        notice=_say,
        skipped=skipped,
    )
    count = 0
    with _atomic_text(args.out) as handle:
        if fmt == "csv":
            count = _retention_csv(handle, rows)
        else:
            count = _retention_json(handle, rows, register, args, skipped)
    where = args.out or "stdout"
    _say(f"retention: {count:,} row-purpose pairs past their retention -> {where}")
    if skipped:
        lines = ", ".join(str(line) for line, _ in skipped[:10])
        more = " ..." if len(skipped) > 10 else ""
        _say(
            f"retention: {len(skipped):,} rows not judged (invalid row or undeclared "
            f"collection purpose): lines {lines}{more}"
        )
    return 0


_RETENTION_COLUMNS = ("line", "subject", "purpose", "collected_for", "expired_at", "rule")


def _retention_csv(handle: IO[str], rows: Iterator[RetentionRow]) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(_RETENTION_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(
            [
                row.line,
                row.subject or "",
                row.purpose,
                row.collected_for,
                row.expired_at.isoformat() if row.expired_at else "",
                row.rule,
            ]
        )
        count += 1
    return count


def _retention_json(
    handle: IO[str],
    rows: Iterator[RetentionRow],
    register: Register,
    args: argparse.Namespace,
    skipped: list[tuple[int, str]],
) -> int:
    handle.write("{\n")
    head = {
        "input": args.leads,
        "at": args.at.isoformat(),
        "register": {"version": register.version, "content_hash": register.content_hash},
        "purposes": list(args.purpose or []) or "each row's collection purpose",
    }
    for key, value in head.items():
        handle.write(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},\n")
    handle.write('  "expired": [')
    count = 0
    for row in rows:
        item = {
            "line": row.line,
            "subject": row.subject,
            "purpose": row.purpose,
            "collected_for": row.collected_for,
            "expired_at": row.expired_at.isoformat() if row.expired_at else None,
            "rule": row.rule,
        }
        handle.write(("\n    " if not count else ",\n    ") + json.dumps(item, ensure_ascii=False))
        count += 1
    handle.write("\n  ],\n" if count else "],\n")
    not_judged = [{"line": line, "why": why} for line, why in skipped]
    handle.write(f'  "not_judged": {json.dumps(not_judged)}\n}}\n')
    return count


# --------------------------------------------------------------------------- decide


#: The longest request line ``decide`` reads (bytes, or characters from a text stream). A
#: longer line is answered with an error and skipped in bounded chunks: memory stays bounded.
MAX_REQUEST_LINE = 1 << 24


def _bounded_lines(read: Callable[[int], Any], newline: Any) -> Iterator[tuple[Any, bool]]:
    """Yield ``(line, too_long)`` from ``read(limit)`` (a ``readline``); never more than the limit.

    A line longer than :data:`MAX_REQUEST_LINE` is yielded once, empty, with
    ``too_long``, after the rest of it has been read and dropped chunk by chunk.
    """
    while True:
        line = read(MAX_REQUEST_LINE + 1)
        if not line:
            return
        if len(line) <= MAX_REQUEST_LINE or line.endswith(newline):
            yield line, False
            continue
        while line and not line.endswith(newline):
            line = read(1 << 20)
        yield newline[:0], True


def _stdin_lines() -> Iterator[tuple[str | None, str | None]]:
    """Yield ``(text, problem)`` per input line; bytes are decoded as UTF-8 line by line."""
    stream = sys.stdin
    too_long = f"the line is longer than {MAX_REQUEST_LINE:,} bytes"
    raw = getattr(stream, "buffer", None)
    if raw is None:
        for line, long in _bounded_lines(stream.readline, "\n"):
            yield (None, too_long) if long else (line, None)
        return
    first = True
    for data, long in _bounded_lines(raw.readline, b"\n"):
        if long:
            first = False
            yield None, too_long
            continue
        if first and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        first = False
        try:
            yield data.decode("utf-8"), None
        except UnicodeDecodeError:
            yield None, "the line is not UTF-8 text"


def _cmd_decide(args: argparse.Namespace) -> int:
    register = _load_register(args)
    registry_url = args.registry
    args.registry = None  # read live below, not as a snapshot
    consents, withdrawals, objections, auths = _events(args, False)
    base: Registry | None = None
    store: Store
    if registry_url:
        # Read the registry at every request: a withdrawal recorded while the
        # stream runs takes effect at the next line. File events add to it.
        base = _open_registry(registry_url)
        store = RegistryOverlay(
            base, consents=consents, objections=objections, authorisations=auths
        )
    else:
        store = InMemoryStore(
            consents, withdrawals=withdrawals, objections=objections, authorisations=auths
        )
    try:
        return _decide_lines(Engine(register, store), args.at)
    finally:
        if base is not None:
            base.close()


def _decide_lines(engine: Engine, at: datetime | None) -> int:
    out = _out()
    failed = False
    for number, (text, problem) in enumerate(_stdin_lines(), start=1):
        if text is not None and not text.strip():
            continue
        answer: dict[str, Any]
        try:
            if problem is not None:
                raise ProtocolError(problem)
            assert text is not None
            request = parse_request_line(text)
            answer = decide_request(engine, request, at).to_dict()
        except (ProtocolError, ValueError) as exc:
            failed = True
            answer = {"error": str(exc), "line": number}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 1 if failed else 0


# --------------------------------------------------------------------------- check & presets


def _cmd_check(args: argparse.Namespace) -> int:
    from ._loader import load_register
    from ._presets import load_preset

    if (args.register is None) == (args.preset is None):
        raise UsageError("check: name a register file, or --preset NAME (one of them)")
    if args.preset is not None:
        name = f"preset {args.preset}"
        try:
            register = load_preset(args.preset)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        except RegisterError as exc:
            _err().write(f"{exc}\n")
            return 1
    else:
        name = args.register
        if not os.path.isfile(name):
            raise UsageError(f"{name}: no such file")
        try:
            register = load_register(name)
        except RegisterError as exc:
            _err().write(f"{exc}\n")
            return 1
    _print_register(name, register)
    return 0


def _flags(purpose: Any) -> str:
    names = [
        flag.replace("_", "-")
        for flag in ("direct_marketing", "archiving_or_statistics", "archive")
        if getattr(purpose, flag)
    ]
    return ", ".join(names) or "-"


def _retention_text(purpose: Any) -> str:
    return f"{purpose.retention.duration} from {purpose.retention.anchor.value}"


def _print_register(name: str, register: Register) -> None:
    out = _out()
    out.write(f"{name}: valid register\n")
    out.write(f"  controller    {register.controller or '(none)'}\n")
    out.write(f"  version       {register.version or '(none)'}\n")
    out.write(f"  content hash  {register.content_hash}\n")
    out.write(
        f"  {len(register.purposes)} purposes, {len(register.categories)} data categories, "
        f"{len(register.compatibility)} compatibility entries\n"
    )
    purposes = list(register.purposes.values())
    out.write("\nPurposes\n")
    _columns(
        out,
        ("id", "legal basis", "retention", "flags"),
        [(p.id, p.legal_basis.value, _retention_text(p), _flags(p)) for p in purposes],
    )
    out.write("\nCompatibility entries\n")
    if register.compatibility:
        _columns(
            out,
            ("id", "from", "to", "verdict"),
            [(c.id, c.from_, c.to, c.verdict.value) for c in register.compatibility],
        )
    else:
        out.write("  (none: every reuse to another purpose is incompatible unless consented)\n")
    out.write("\nRetention rules\n")
    rules: dict[str, list[str]] = {}
    for p in purposes:
        rules.setdefault(_retention_text(p), []).append(p.id)
    _columns(out, ("rule", "purposes"), [(rule, ", ".join(ids)) for rule, ids in rules.items()])


def _columns(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    for row in (headers, *rows):
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        out.write("  " + "  ".join(cells).rstrip() + "\n")


def _cmd_presets(args: argparse.Namespace) -> int:
    from ._presets import load_preset, preset_names, preset_path

    del args
    names = preset_names()
    if not names:
        _out().write("no preset is installed\n")
        return 0
    for name in names:
        try:
            reg = load_preset(name)
        except RegisterError:
            _out().write(f"{name}  (refused: run `{PROG} check --preset {name}`)\n")
            continue
        _out().write(
            f"{name}  {reg.controller}\n"
            f"    version {reg.version}: {len(reg.purposes)} purposes, "
            f"{len(reg.categories)} data categories, "
            f"{len(reg.compatibility)} compatibility entries\n"
            f"    {preset_path(name)}\n"
        )
    return 0


# --------------------------------------------------------------------------- the parser

_MAIN_EPILOG = """\
example:
  purposelimit filter examples/leads/salesforce-style-leads.csv --preset cnil-commercial \\
      --purpose prospection.email_b2b \\
      --mapping examples/leads/salesforce-style-leads.mapping.toml \\
      --at 2026-03-01 --out usable.csv --report report.html

exit status: 0 done, 1 bad input, 2 usage error (bad options, unreadable register).
Documentation: docs/cli.md in the source distribution.
"""

_FILTER_EPILOG = """\
example:
  purposelimit filter examples/leads/salesforce-style-leads.csv \\
      --preset cnil-commercial --purpose prospection.email_b2b \\
      --mapping examples/leads/salesforce-style-leads.mapping.toml \\
      --objections examples/objections.csv --suppression examples/suppression.txt \\
      --at 2026-03-01 --out usable.csv --report report.html

Excluded rows are absent from the output; columns the purpose may not use
(excessive) are dropped from every row. The report lists each excluded row by
line number, subject reference and reason - never a personal value. Subjects
that are e-mail addresses are shown as keyed pseudonyms (HMAC-SHA256, key from
PURPOSELIMIT_PSEUDONYM_KEY, else a random key for this run).

--audit FILE appends the run to a tamper-evident audit file (a keyed hash
chain, key from PURPOSELIMIT_AUDIT_KEY): check it with
`PURPOSELIMIT_AUDIT_KEY=... purposelimit audit verify FILE`.

exit status: 0 done, 1 bad input (lead file, mapping, event files, an audit
file that is not a chain or cannot be continued), 2 usage error (no audit key).
"""

_RETENTION_EPILOG = """\
example:
  purposelimit retention examples/leads/mautic-fake-leads.csv --preset cnil-commercial \\
      --mapping examples/leads/mautic-fake-leads.mapping.toml --at 2029-06-01

Without --purpose, each row is checked against its own collection purpose.
Output columns: line, subject, purpose, collected_for, expired_at, rule.
"""

_DECIDE_EPILOG = """\
example:
  echo '{"purpose": "prospection.email_b2c", "at": "2026-03-01T10:00:00+00:00",
         "record": {"subject": "lead-42", "collected_for": "hr.recruitment",
                    "collected_at": "2025-01-10T09:00:00+00:00"},
         "categories": ["identity.name", "contact.email"]}' | tr -d '\\n' \\
    | purposelimit decide --preset cnil-commercial

One JSON request per line on stdin, one JSON answer per request on stdout, in
order; blank lines are skipped. A request that cannot be read gets
{"error": "<message>", "line": N}. Shapes: DESIGN section 6, docs/cli.md.

exit status: 0 every request decided, 1 some request unreadable, 2 usage error.
"""

_CHECK_EPILOG = """\
examples:
  purposelimit check examples/register.toml
  purposelimit check --preset cnil-commercial

exit status: 0 valid, 1 refused (every problem listed on stderr), 2 usage error.
"""

_PRESETS_EPILOG = """\
example:
  purposelimit presets

Start a register from a preset with preset = "<name>" in its [register] table.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(_err())
        self.exit(2, f"{self.prog}: error: {message}\n")


def _register_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--register", metavar="REGISTER.toml", help="the register file (TOML or JSON)"
    )
    group.add_argument("--preset", metavar="NAME", help="a shipped register, e.g. cnil-commercial")


def _registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        metavar="URL",
        help="also read consents, withdrawals, objections and authorisations from this "
        "registry (sqlite:///path.db or a SQLAlchemy URL); it is never written to",
    )


def _table_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("leads", metavar="LEADS.csv", help="the lead file (CSV)")
    _register_options(parser)
    parser.add_argument(
        "--mapping",
        metavar="MAPPING.toml",
        required=True,
        help="which column holds what (format: docs/cli.md)",
    )
    parser.add_argument(
        "--collected-for",
        metavar="ID",
        help="the collection purpose of every row (else from the mapping)",
    )
    parser.add_argument(
        "--collected-at",
        metavar="DATETIME",
        type=instant_argument,
        help="when every row was collected (ISO-8601 with offset, or a date)",
    )
    parser.add_argument(
        "--at",
        metavar="DATETIME",
        type=instant_argument,
        help="decide at this instant (default: now)",
    )
    parser.add_argument(
        "--consents", metavar="FILE", help="consents (CSV or JSON, DESIGN section 6)"
    )
    parser.add_argument("--objections", metavar="FILE", help="objections (CSV or JSON)")
    parser.add_argument("--authorisations", metavar="FILE", help="authorisations (CSV or JSON)")
    _registry_option(parser)
    parser.add_argument(
        "--suppression",
        metavar="FILE",
        help="one e-mail or subject id per line; each counts as an objection",
    )
    parser.add_argument(
        "--encoding",
        choices=("utf-8", "utf-8-sig", "cp1252", "latin-1"),
        metavar="ENCODING",
        help="force the input's encoding: utf-8, utf-8-sig, cp1252 or latin-1 (default: detected)",
    )
    parser.add_argument(
        "--delimiter",
        choices=(",", ";", "tab", "|"),
        metavar="DELIMITER",
        help="force the input's delimiter: , ; tab or | (default: detected)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the ``purposelimit`` argument parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Executable purpose limitation (GDPR art. 5(1)(b), (c), (e); LIL art. 4).",
        epilog=_MAIN_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "filter",
        help="keep the rows and columns usable for a purpose",
        description="Filter a lead file to the rows and columns usable for a "
        "purpose, with a reason for every exclusion (DESIGN section 5).",
        epilog=_FILTER_EPILOG,
        formatter_class=fmt,
    )
    _table_options(p)
    p.add_argument("--purpose", metavar="ID", required=True, help="the processing purpose")
    p.add_argument("--out", metavar="USABLE.csv", required=True, help="where the usable rows go")
    p.add_argument("--report", metavar="REPORT.json|REPORT.html", help="write a report")
    p.add_argument(
        "--audit",
        metavar="AUDIT.jsonl",
        help="append the run's audit entries to this hash-chained file (key from "
        f"{AUDIT_KEY_ENV}; read it with `purposelimit audit verify|tail|stats`)",
    )
    p.add_argument(
        "--audit-key-env",
        metavar="VAR",
        default=AUDIT_KEY_ENV,
        help=f"the environment variable holding the audit key (default {AUDIT_KEY_ENV})",
    )
    p.add_argument(
        "--drop-unmapped",
        action="store_true",
        help="drop the columns the mapping does not mention (else: an error)",
    )
    p.add_argument(
        "--neutralise-formulas",
        action="store_true",
        help="prefix cells beginning with = + - @ (or TAB, CR) with ' for spreadsheets",
    )
    p.add_argument(
        "--actor", default="purposelimit filter", help="who runs it, for the audit events"
    )
    p.set_defaults(handler=_cmd_filter)

    p = sub.add_parser(
        "retention",
        help="list the rows already past their retention",
        description="List the rows of a lead file already past their retention "
        "(GDPR art. 5(1)(e)), with the date each one expired.",
        epilog=_RETENTION_EPILOG,
        formatter_class=fmt,
    )
    _table_options(p)
    p.add_argument(
        "--purpose",
        metavar="ID",
        action="append",
        help="check this purpose (repeatable; default: each row's collection purpose)",
    )
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    p.add_argument(
        "--format", choices=("csv", "json"), help="default: csv, or json for a .json --out"
    )
    p.set_defaults(handler=_cmd_retention)

    p = sub.add_parser(
        "decide",
        help="answer JSON decision requests on stdin",
        description="The JSON decision protocol (DESIGN section 6): JSON Lines "
        "requests on stdin, one JSON answer per request on stdout.",
        epilog=_DECIDE_EPILOG,
        formatter_class=fmt,
    )
    _register_options(p)
    p.add_argument(
        "--at",
        metavar="DATETIME",
        type=instant_argument,
        help='the instant for requests without "at" (default: now)',
    )
    p.add_argument("--consents", metavar="FILE", help="consents every request sees (CSV or JSON)")
    p.add_argument("--objections", metavar="FILE", help="objections every request sees")
    p.add_argument("--authorisations", metavar="FILE", help="authorisations every request sees")
    _registry_option(p)
    p.set_defaults(handler=_cmd_decide)

    p = sub.add_parser(
        "check",
        help="validate a register and print it",
        description="Validate a register and print its purposes, compatibility "
        "entries and retention rules; every problem is listed at once.",
        epilog=_CHECK_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("register", metavar="REGISTER.toml", nargs="?", help="the register file")
    p.add_argument("--preset", metavar="NAME", help="check a shipped preset instead")
    p.set_defaults(handler=_cmd_check)

    p = sub.add_parser(
        "presets",
        help="list the shipped presets",
        description="List the registers shipped with purposelimit.",
        epilog=_PRESETS_EPILOG,
        formatter_class=fmt,
    )
    p.set_defaults(handler=_cmd_presets)

    add_test_command(sub)
    add_registry_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``purposelimit`` command line; return the exit status.

    Args:
        argv: the arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 done; 1 bad input; 2 usage error; 130 interrupted; 141 standard output
        closed by its reader (a broken pipe).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if getattr(args, "delimiter", None) == "tab":
        args.delimiter = "\t"
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(_err())
        return 2
    prefix = f"{PROG} {args.command}"
    try:
        return handler(args)
    except UsageError as exc:
        _err().write(f"{prefix}: error: {exc}\n")
        return 2
    except (ConfigurationError, StoreError) as exc:
        _err().write(f"{prefix}: error: {exc}\n")
        return 2
    except InputError as exc:
        _err().write(f"{prefix}: error: {exc}\n")
        return 1
    except BrokenPipeError:
        # The reader went away (`purposelimit check ... | head -1`): stop quietly with the
        # status of a process killed by SIGPIPE, as other tools do, not 1 (bad input).
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # silence the interpreter's flush at exit
        return 141
    except KeyboardInterrupt:
        _err().write(f"\n{prefix}: interrupted; no output was written\n")
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _err().write(f"{prefix}: error: {where}{exc.strerror or exc}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
