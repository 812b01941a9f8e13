"""Where Pareto/NBD's CDNOW holdout forecast falls short: month by month.

Both BG/NBD and Pareto/NBD (ours and lifetimes' agree to the digit) predict 11-12% fewer
holdout purchase days than CDNOW's customers made. This script asks *when* the missing
purchases happen: it fits `btyd` (Pareto/NBD) on the calibration period of
bench/cdnow_peers.py and compares, per calendar month, the model's expected purchase days
of the cohort (differences of the cumulative forecast) with the actual ones, for the
calibration period (the in-sample fit: expected repeat purchases since each customer's
first) and for the 39-week holdout.

    python bench/cdnow_tracking.py

Writes the RESULTS.md section "CDNOW: where the forecast falls short".
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from _results import machine, write_section
from cdnow_peers import CUT, DATA, HOLDOUT
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.btyd import BTYDModel
from ebbtide.store import EventStore


def _month_starts(first: datetime, last: datetime) -> list[datetime]:
    months = pd.date_range(first, last, freq="MS", tz=UTC).to_pydatetime().tolist()
    return sorted({first, *months, last})


def tracking() -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as folder, EventStore(Path(folder) / "s.duckdb") as store:
        ingest_file(store, DATA, "cdnow")
        days = store.con.execute(
            """SELECT user_idx, CAST(floor(epoch(ts) / 86400) AS BIGINT) AS day
               FROM events GROUP BY ALL"""
        ).df()
        model = BTYDModel().fit(store, cutoff=CUT)
        history = snapshot(store, at=CUT)
        edges = _month_starts(CUT, CUT + HOLDOUT)
        cumulative = [
            float(model.expected_purchases(history, horizon=edge - CUT)["expected_purchases"].sum())
            if edge > CUT
            else 0.0
            for edge in edges
        ]
    days["date"] = pd.to_datetime(days["day"], unit="D", utc=True)
    first = days.groupby("user_idx")["day"].transform("min")
    repeat = days[days["day"] > first]
    rows = []
    forecast = dict(zip(edges, cumulative, strict=True))
    for lo, hi in itertools.pairwise(edges):
        before, after = forecast[lo], forecast[hi]
        actual = int(((repeat["date"] >= lo) & (repeat["date"] < hi)).sum())
        rows.append(
            {
                "period": f"{lo:%Y-%m-%d} – {(hi - timedelta(days=1)):%Y-%m-%d}",
                "days": (hi - lo).days,
                "actual": actual,
                "predicted": after - before,
            }
        )
    frame = pd.DataFrame(rows)
    frame["gap"] = frame["actual"] - frame["predicted"]
    return frame


def _section(frame: pd.DataFrame, command: str) -> str:
    total_gap = frame["gap"].sum()
    lines = [
        "## CDNOW: where the forecast falls short",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}",
        f"- command: `{command}`",
        "- `btyd` (Pareto/NBD) fitted on purchases before 1997-10-01 (the protocol above);"
        " predicted = the cohort's expected purchase days in the period (difference of the"
        " cumulative forecast from the cut-off); actual = purchase days in the period",
        "",
        "| holdout period | days | actual | predicted | actual − predicted | share of the gap |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in frame.to_dict(orient="records"):
        lines.append(
            f"| {row['period']} | {row['days']} | {row['actual']:,} | {row['predicted']:,.0f} | "
            f"{row['gap']:+,.0f} | {row['gap'] / total_gap:.0%} |"
        )
    lines.append(
        f"| total | {frame['days'].sum()} | {frame['actual'].sum():,} | "
        f"{frame['predicted'].sum():,.0f} | {total_gap:+,.0f} | 100% |"
    )
    top = frame.nlargest(3, "gap")
    rest = frame.drop(top.index)
    rest_error = rest["predicted"].sum() / rest["actual"].sum() - 1
    lines += [
        "",
        f"The three months with the largest shortfall ({', '.join(top['period'])}) hold"
        f" {top['gap'].sum() / total_gap:.0%} of it; over the other"
        f" {len(rest)} months the forecast is off by {rest_error:+.1%} (months picked after"
        " seeing the gaps: this says where the error is, not that it could be forecast)."
        " Two of the three are the holiday season. A model of purchase"
        " counts fitted on January–September 1997 has seen no Christmas season and no"
        " spring 1998; a calendar bump it never saw is what a ±5% aggregate bar would ask it"
        " to forecast.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    frame = tracking()
    section = _section(frame, "python bench/cdnow_tracking.py")
    print(section)
    if not args.no_write:
        write_section("CDNOW: where the forecast falls short", section)


if __name__ == "__main__":
    main()
