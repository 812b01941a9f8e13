"""decay fitted by the local engine and by Spark on the same synthetic log: time and agreement.

The log (`SynthConfig(users=N, days=9)`, about 100 events per user) is ingested into a
store for the local engine and written as a Parquet lake for Spark; both fit before the
same cut-off (the end of the log). Timed:

- local: `DecayModel().fit(store, cutoff=...)` (reading the store's events included);
- Spark: `fit_decay(read_lake(...).valid, cutoff=...)` on a warm session (reading and
  checking the lake, numbering, the start quantile, the barrier fit, assembling the
  model); the session's start and the lake's row accounting are timed apart.

The fits must agree (largest relative difference of every fitted array); the bar is Spark
within 3x of local.

    python bench/spark_decay.py [--users 10000] [--master local[2]]

Writes the section "Spark decay, N users" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from _results import machine, write_section
from ebbtide.ingest import ingest_file
from ebbtide.models.decay import DecayModel
from ebbtide.spark.decay_fit import fit_decay
from ebbtide.spark.lake import read_lake
from ebbtide.spark.session import spark_session
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

BAR = 3.0


def _lake(events: pa.Table, path: Path) -> None:
    """The synthetic log in the canonical columns (Taobao's ``pv`` is ``view``)."""
    behavior = pc.if_else(pc.equal(events["behavior"], "pv"), "view", events["behavior"])
    ts = pc.multiply(events["ts"].cast(pa.int64()), 1_000_000).cast(pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {
            "user_id": events["user_id"],
            "item_id": events["item_id"],
            "category_id": events["category_id"],
            "behavior": behavior,
            "ts": ts,
        }
    )
    pq.write_table(table, path, row_group_size=1 << 20)


def _largest_difference(a: DecayModel, b: DecayModel) -> tuple[str, float]:
    worst = ("", 0.0)
    for name in DecayModel.state_attributes:
        x = np.asarray(getattr(a, name), dtype=np.float64)
        y = np.asarray(getattr(b, name), dtype=np.float64)
        if x.shape != y.shape:
            return name, float("inf")
        rel = float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-9), initial=0.0))
        worst = max(worst, (name, rel), key=lambda item: item[1])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = parser.parse_args()

    config = SynthConfig(users=args.users, days=9)
    cutoff = config.start + timedelta(days=config.days)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log = generate(config)
        rows = log.events.num_rows
        write_taobao_csv(log, folder / "log.csv")
        _lake(log.events, folder / "lake.parquet")
        del log
        with EventStore(folder / "store.duckdb") as store:
            ingest_file(store, folder / "log.csv", "taobao")
            started = time.perf_counter()
            local = DecayModel().fit(store, cutoff=cutoff)
            local_s = time.perf_counter() - started
        events = local.metrics_["events"]
        print(f"local: {local_s:.1f} s for {rows:,} rows", flush=True)

        started = time.perf_counter()
        spark = spark_session(
            args.master, app_name="ebbtide-bench", driver_memory=args.driver_memory
        )
        spark.range(1).count()
        session_s = time.perf_counter() - started
        started = time.perf_counter()
        lake = read_lake(spark, [str(folder / "lake.parquet")])
        fitted = fit_decay(lake.valid, cutoff=cutoff)
        spark_s = time.perf_counter() - started
        print(f"spark: {spark_s:.1f} s (session {session_s:.1f} s)", flush=True)
        started = time.perf_counter()
        summary = lake.summary(cutoff)
        summary_s = time.perf_counter() - started
        partitions = spark.sparkContext.defaultParallelism
        spark.stop()

    name, worst = _largest_difference(fitted, local)
    ratio = spark_s / local_s
    verdict = "meets" if ratio <= BAR else "misses"
    command = "python bench/spark_decay.py " + " ".join(sys.argv[1:])
    title = f"Spark decay, {args.users:,} users"
    section = f"""## {title}

{machine()}; {datetime.now(UTC):%Y-%m-%d}; `{command.strip()}`.

`decay` fitted on one synthetic log (`SynthConfig(users={args.users:,}, days=9)`:
{rows:,} rows, {summary.used:,} distinct events before the cut-off, {events:,} occurrences)
by the local engine (store -> `DecayModel.fit`) and by Spark `{args.master}` (Parquet
lake -> checks -> numbering -> start quantile -> barrier EM over {partitions} partitions ->
model), same cut-off.

| engine | fit (s) | events/s |
|---|---:|---:|
| local | {local_s:.1f} | {summary.used / local_s:,.0f} |
| Spark {args.master} | {spark_s:.1f} | {summary.used / spark_s:,.0f} |

Spark / local: **{ratio:.2f}x** ({verdict} the 3x bar). Not in the Spark time: starting
the session ({session_s:.1f} s) and counting every lake row for the summary
({summary_s:.1f} s; rows read {summary.rows_read:,}, duplicates {summary.duplicates:,},
rejected {summary.rejected_total:,}). Largest relative difference between the two fits:
{worst:.1e} (`{name}`).
"""
    print(section)
    if not args.no_write:
        write_section(title, section)


if __name__ == "__main__":
    main()
