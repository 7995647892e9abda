"""Benchmark: ``purposelimit filter`` end-to-end against the I/O floor, in the same run.

The floor is a plain read-and-write pass over the same file with the same CSV
reader and writer (same encoding, delimiter and line ending): what any tool
that reads and rewrites the file must pay. ``filter`` decides every row and
every column under the French preset, spools the excluded rows and writes the
JSON report, and should run at no less than half the floor's speed
(the target of docs/performance.md).

Usage::

    python benchmarks/bench_filter.py                 # 1,000,000 rows, 3 runs each
    python benchmarks/bench_filter.py --rows 200000
    python benchmarks/bench_filter.py --memory 1.0    # peak RSS on a ~1 GB file vs a 1/10 file

The generated file looks like a CRM export: an id, names, company, title,
e-mail (the subject), phone, industry, website, head-count, lead source,
status, country, a collection-purpose column (80 % prospection.email_b2b,
15 % client.contract, 5 % hr.recruitment), a collection date (day precision
over three years) and a last-activity date (empty for 60 % of rows). One
subject in 200 has an objection and one in 200 a consent record. The
processing purpose is prospection.email_b2b, decided at 2026-03-01.

``--memory`` runs ``filter`` in a child process on two files with the same
number of distinct subjects (``--distinct``), one about ten times the size of
the other, and reports each child's peak RSS (``resource.getrusage``): memory
grows with distinct subjects, not with the file size.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HEADER = [
    "Id",
    "FirstName",
    "LastName",
    "Company",
    "Title",
    "Email",
    "Phone",
    "Industry",
    "Website",
    "NumberOfEmployees",
    "LeadSource",
    "Status",
    "Country",
    "CollectedFor",
    "CreatedDate",
    "LastActivityDate",
]

MAPPING = """\
[subject]
column = "Email"
email = true

[collection]
purpose_column = "CollectedFor"
collected_at_column = "CreatedDate"
last_contact_at_column = "LastActivityDate"
source_column = "LeadSource"

[columns]
Id = "identity.internal_id"
FirstName = "identity.name"
LastName = "identity.name"
Company = "professional"
Title = "professional"
Email = "contact.email"
Phone = "contact.phone"
Industry = "professional"
Website = "professional"
LeadSource = "source_provenance"
Status = "relationship_history"
Country = "contact.postal_address"
CollectedFor = "source_provenance"
CreatedDate = "relationship_history"
LastActivityDate = "relationship_history"

[not_personal]
NumberOfEmployees = "head-count of the company"
"""

FIRST = [
    "Emma",
    "Lucas",
    "Ava",
    "Zoe",
    "Ruth",
    "Ivy",
    "Ethan",
    "Liam",
    "Noah",
    "Mia",
    "Kai",
    "Nora",
]
LAST = ["Patel", "Osei", "Idris", "Ali", "Costa", "Chen", "Silva", "Moreau", "Garcia", "Novak"]
COMPANIES = ["Corex Medical", "Deltaline Logistics", "Granite Fintech", "Northwind Robotics"]
TITLES = ["CFO", "VP Revenue Operations", "Head of RevOps", "Salesforce Administrator", ""]
INDUSTRIES = ["Logistics", "Computer Software", "Healthcare", "Financial Services", ""]
SOURCES = ["Web - Search", "AppExchange", "Leadpipe", "RB2B", "Manually Created"]
STATUSES = ["New", "Working", "Nurture"]
COUNTRIES = ["FR", "DE", "US", "CA", "FI"]
PURPOSES = ["prospection.email_b2b"] * 16 + ["client.contract"] * 3 + ["hr.recruitment"]
AT = datetime(2026, 3, 1, tzinfo=UTC)


def generate(path: Path, rows: int, distinct: int | None, seed: int = 7) -> int:
    """Write *rows* generated leads to *path*; return the file's size in bytes."""
    rng = random.Random(seed)
    start = date(2023, 3, 1)
    days = (date(2026, 2, 28) - start).days
    distinct = distinct or rows
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(rows):
            s = i % distinct
            first, last = FIRST[s % len(FIRST)], LAST[(s // 7) % len(LAST)]
            company = COMPANIES[s % len(COMPANIES)]
            domain = company.split()[0].lower()
            created = start + timedelta(days=rng.randrange(days))
            activity = ""
            if rng.random() < 0.4:
                activity = (
                    created + timedelta(days=rng.randrange((date(2026, 2, 28) - created).days + 1))
                ).isoformat()
            writer.writerow(
                [
                    f"00Q{s:012d}",
                    first,
                    last,
                    company,
                    rng.choice(TITLES),
                    f"{first.lower()}.{last.lower()}.{s}@{domain}.example.com",
                    f"+1 415 555 {rng.randrange(10000):04d}" if rng.random() < 0.5 else "",
                    rng.choice(INDUSTRIES),
                    f"https://www.{domain}.example.com",
                    str(rng.choice([45, 120, 300, 850, 2400])),
                    rng.choice(SOURCES),
                    rng.choice(STATUSES),
                    rng.choice(COUNTRIES),
                    rng.choice(PURPOSES),
                    created.isoformat(),
                    activity,
                ]
            )
    return path.stat().st_size


def events(folder: Path, distinct: int) -> tuple[Path, Path]:
    """One subject in 200 objected, one in 200 (others) gave a consent record."""
    objections = folder / "objections.csv"
    consents = folder / "consents.csv"
    with (
        objections.open("w", encoding="utf-8", newline="") as o,
        consents.open("w", encoding="utf-8", newline="") as c,
    ):
        ow = csv.writer(o, lineterminator="\n")
        cw = csv.writer(c, lineterminator="\n")
        ow.writerow(["subject", "at"])
        cw.writerow(["subject", "purposes", "given_at", "state"])
        for s in range(0, distinct, 200):
            first, last = FIRST[s % len(FIRST)], LAST[(s // 7) % len(LAST)]
            domain = COMPANIES[s % len(COMPANIES)].split()[0].lower()
            ow.writerow([f"{first.lower()}.{last.lower()}.{s}@{domain}.example.com", "2025-06-01"])
            t = s + 100
            if t < distinct:
                first, last = FIRST[t % len(FIRST)], LAST[(t // 7) % len(LAST)]
                domain = COMPANIES[t % len(COMPANIES)].split()[0].lower()
                cw.writerow(
                    [
                        f"{first.lower()}.{last.lower()}.{t}@{domain}.example.com",
                        "prospection",
                        "2025-06-01",
                        "refused",
                    ]
                )
    return objections, consents


def floor(src: Path, dst: Path) -> float:
    """The I/O floor: read and rewrite every row with the same csv reader and writer."""
    t = time.perf_counter()
    with (
        src.open(encoding="utf-8", newline="") as f,
        dst.open("w", encoding="utf-8", newline="") as g,
    ):
        reader = csv.reader(f, delimiter=",")
        writer = csv.writer(g, delimiter=",", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        for row in reader:
            writer.writerow(row)
    return time.perf_counter() - t


def run_filter(
    src: Path, dst: Path, folder: Path, objections: Path, consents: Path
) -> tuple[float, dict[str, object]]:
    """``filter`` end to end (in process): mapping, events, decisions, output, JSON report."""
    from purposelimit._bulk import filter_csv, load_mapping, normalise_email
    from purposelimit._presets import load_preset
    from purposelimit._protocol import load_consents, load_objections

    t = time.perf_counter()
    mapping = load_mapping(folder / "mapping.toml")
    summary = filter_csv(
        src,
        dst,
        register=load_preset("cnil-commercial"),
        purpose="prospection.email_b2b",
        mapping=mapping,
        at=AT,
        consents=load_consents(consents, subject_key=normalise_email),
        objections=load_objections(objections, subject_key=normalise_email),
        drop_unmapped=True,
        report=folder / "report.json",
    )
    elapsed = time.perf_counter() - t
    return elapsed, {
        "kept": summary.rows_kept,
        "excluded": summary.rows_excluded,
        "reasons": summary.reasons,
    }


def speed(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-filter-") as tmp:
        folder = Path(tmp)
        (folder / "mapping.toml").write_text(MAPPING, encoding="utf-8")
        src = folder / "leads.csv"
        t = time.perf_counter()
        size = generate(src, args.rows, args.distinct)
        objections, consents = events(folder, args.distinct or args.rows)
        print(
            f"generated {args.rows:,} rows ({size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s"
        )
        floors, filters = [], []
        info: dict[str, object] = {}
        for _ in range(args.repeat):
            floors.append(floor(src, folder / "floor.csv"))
            elapsed, info = run_filter(src, folder / "usable.csv", folder, objections, consents)
            filters.append(elapsed)
        f, g = statistics.median(floors), statistics.median(filters)
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; medians of {args.repeat} runs"
        )
        print(f"I/O floor (csv read + write):  {f:7.2f} s  {args.rows / f / 1e3:8.0f} k rows/s")
        print(f"filter end-to-end:             {g:7.2f} s  {args.rows / g / 1e3:8.0f} k rows/s")
        print(f"filter speed / floor speed:    {f / g:7.2f}x  (target >= 0.5x)")
        print(f"result: {json.dumps(info)}")


def _child_rss(src: Path, folder: Path, objections: Path, consents: Path) -> tuple[float, int]:
    """Run ``filter`` in a fresh interpreter; return its time and peak RSS (KiB)."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(src),
        str(folder),
        str(objections),
        str(consents),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    elapsed, rss = out.stdout.split()
    return float(elapsed), int(rss)


def child(args: list[str]) -> None:
    """The child side of ``--memory``: filter once, print seconds and peak RSS (KiB)."""
    src, folder, objections, consents = (Path(a) for a in args)
    elapsed, _ = run_filter(src, folder / "usable.csv", folder, objections, consents)
    print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def memory(args: argparse.Namespace) -> None:
    distinct = args.distinct or 200_000
    with tempfile.TemporaryDirectory(prefix="bench-filter-mem-") as tmp:
        folder = Path(tmp)
        (folder / "mapping.toml").write_text(MAPPING, encoding="utf-8")
        objections, consents = events(folder, distinct)
        big_rows = int(args.memory * 1e9 / 175)
        for label, rows in (("small", big_rows // 10), ("large", big_rows)):
            src = folder / f"{label}.csv"
            size = generate(src, rows, distinct)
            elapsed, rss_kib = _child_rss(src, folder, objections, consents)
            print(
                f"{label}: {rows:,} rows, {size / 1e9:.2f} GB, {distinct:,} distinct subjects: "
                f"filter {elapsed:.1f} s, peak RSS {rss_kib / 1024:.0f} MiB"
            )
            src.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows to generate (default 1,000,000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (medians)")
    parser.add_argument(
        "--distinct", type=int, default=None, help="distinct subjects (default: one per row)"
    )
    parser.add_argument(
        "--memory", type=float, metavar="GB", help="peak-RSS run on a file of about GB gigabytes"
    )
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    args = parser.parse_args()
    if args.memory:
        memory(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
