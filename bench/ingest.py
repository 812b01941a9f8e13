"""Ingest speed and memory: ebbtide's validated load next to DuckDB's bare read_csv.

Both read the same synthetic Taobao-format file (default 10M events). The baseline is
DuckDB's own `CREATE TABLE AS SELECT * FROM read_csv(...)` with type sniffing: the
physical limit of reading that file here. ebbtide does more (validation, quarantine,
dense ids, exact de-duplication, one transaction), so the question is how close it
gets. Each run is a fresh process; runs alternate; medians are reported.

    python bench/ingest.py [--events 10000000] [--repeats 3]

Writes the table into bench/RESULTS.md (section "Ingest").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from _results import machine, write_section
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

HERE = Path(__file__).resolve().parent
EVENTS_PER_USER = 98.5  # what SynthConfig's defaults give over 9 days

_RUN = textwrap.dedent(
    """
    import json, resource, sys, time
    import duckdb
    kind, csv, db = sys.argv[1:4]
    started = time.perf_counter()
    if kind == "duckdb":
        con = duckdb.connect(db)
        rows = con.execute(
            "CREATE TABLE events AS SELECT * FROM read_csv(?, header=false)", [csv]
        ).fetchone()[0]
        con.close()
    else:
        from ebbtide.ingest import ingest_file
        from ebbtide.store import EventStore
        marks = []
        with EventStore(db) as store:
            rows = ingest_file(
                store, csv, "taobao",
                progress=lambda stage: marks.append((stage, time.perf_counter())),
            ).loaded
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stages = {}
    if kind != "duckdb":
        ends = [t for _, t in marks[1:]] + [started + seconds]
        stages = {stage: end - t for (stage, t), end in zip(marks, ends)}
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_bytes": peak, "stages": stages}))
    """
)


def _run(kind: str, csv: Path, workdir: Path, i: int) -> dict:
    db = workdir / f"{kind}-{i}.duckdb"
    done = subprocess.run(
        [sys.executable, "-c", _RUN, kind, str(csv), str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    db.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="target event count")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ebbtide-bench-") as tmp:
        workdir = Path(tmp)
        csv = workdir / "events.csv"
        users = max(1, round(args.events / EVENTS_PER_USER))
        started = time.perf_counter()
        log = generate(SynthConfig(users=users, days=9, seed=1))
        events = write_taobao_csv(log, csv)
        synth_seconds = time.perf_counter() - started
        del log
        print(f"{events:,} events in {csv.stat().st_size / 1e6:.0f} MB", flush=True)
        runs: dict[str, list[dict]] = {"duckdb": [], "ebbtide": []}
        for i in range(args.repeats):
            for kind in runs:
                result = _run(kind, csv, workdir, i)
                runs[kind].append(result)
                print(f"{kind:8s} run {i + 1}: {result['seconds']:.2f} s", flush=True)

    rows = []
    for kind, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        peak = max(r["peak_bytes"] for r in results)
        rows.append((kind, results[0]["rows"], seconds, events / seconds, peak))
    base = rows[0][3]
    table = [
        "| contender | rows stored | median time | events/s | ratio to DuckDB | peak memory |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, stored, seconds, rate, peak in rows:
        name = "DuckDB read_csv into a table" if kind == "duckdb" else "ebbtide ingest (taobao)"
        table.append(
            f"| {name} | {stored:,} | {seconds:.2f} s | {rate / 1e6:.2f} M | {rate / base:.0%}"
            f" | {peak / 2**30:.2f} GiB |"
        )
    stage_rows = [
        "| ebbtide stage | median time | share of DuckDB's whole load |",
        "|---|---:|---:|",
    ]
    duckdb_seconds = rows[0][2]
    stage_medians = {}
    for stage in runs["ebbtide"][0]["stages"]:
        median = statistics.median(r["stages"][stage] for r in runs["ebbtide"])
        stage_medians[stage] = median
        stage_rows.append(f"| {stage} | {median:.2f} s | {median / duckdb_seconds:.0%} |")
    reading = stage_medians.get("reading and checking rows", 0.0)
    dedupe = stage_medians.get("removing duplicates and writing events", 0.0)
    verdict = (
        f"Reading and checking every row (typing, the reason rules, keeping raw text for"
        f" rejects) costs {reading / duckdb_seconds:.0%} of DuckDB's whole load on its own, and"
        f" exact de-duplication with dense ids and the write {dedupe / duckdb_seconds:.0%}"
        " more: the work the bare read does not do is what separates the two."
    )
    section = "\n".join(
        [
            "## Ingest",
            "",
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine()}, DuckDB {duckdb.__version__}",
            f"- command: `python bench/ingest.py --events {args.events} --repeats {args.repeats}`",
            f"- data: {events:,} synthetic events (`ebbtide synth`, seed 1), Taobao format,"
            f" plain CSV; generating and writing them took {synth_seconds:.1f} s"
            " (the generator's bar: under 2 minutes)",
            f"- median of {args.repeats} alternating runs, each in a fresh process",
            "",
            *table,
            "",
            "Where ebbtide's time goes (stage boundaries reported by its progress callback):",
            "",
            *stage_rows,
            "",
            verdict,
            "",
        ]
    )
    print(section)
    if not args.no_write:
        write_section("Ingest", section)


if __name__ == "__main__":
    main()
