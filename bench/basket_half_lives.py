"""Does `decay` recover known half-lives when every event is written as a basket of rows?

The half-life recovery log (`ebbtide.synthetic.recovery_config`: 30 categories, half-lives
log-uniform on 0.25-5 days, 1,000 users, 20 days) is written with 1, 2.5 and 4 rows per
event on average (`SynthConfig.basket_size_mean`: the extra rows share the event's second
and category, as an order's lines do). The process and its truth are the same; `decay` is
fitted on the whole log and its per-category half-lives are compared with the truth on the
categories with at least 500 events (median absolute relative error; the bar is 20%).

    python bench/basket_half_lives.py [--users 1000] [--no-write]

Writes the section "Half-life recovery with baskets" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from _results import machine, write_section
from ebbtide.ingest import ingest_file
from ebbtide.models.decay import DecayModel
from ebbtide.store import EventStore
from ebbtide.synthetic import generate, recovery_config, write_taobao_csv

BASKETS = (1.0, 2.5, 4.0)
TITLE = "Half-life recovery with baskets"


def recover(users: int, basket: float, folder: Path) -> dict:
    cfg = replace(recovery_config(users=users), basket_size_mean=basket)
    log = generate(cfg)
    path = folder / f"basket-{basket}.csv"
    write_taobao_csv(log, path)
    with EventStore(folder / f"basket-{basket}.duckdb") as store:
        summary = ingest_file(store, path, "taobao")
        started = time.perf_counter()
        model = DecayModel().fit(store, cutoff=cfg.start + timedelta(days=cfg.days))
        seconds = time.perf_counter() - started
    truth = log.truth_categories.to_pandas().set_index("category_id")
    fitted = pd.Series(math.log(2.0) / model.delta_, index=model.catalogue_.category_ids)
    well = truth[truth.n_events >= 500]
    error = (fitted[well.index] / well.half_life_days - 1).abs()
    return {
        "rows": summary.rows_read,
        "loaded": summary.loaded,
        "categories": len(well),
        "median_error": float(error.median()),
        "fit_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ebbtide-baskets-") as tmp:
        results = {b: recover(args.users, b, Path(tmp)) for b in BASKETS}
    lines = [
        f"## {TITLE}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {machine()}. Command: `python bench/basket_half_lives.py`.",
        "",
        "`decay` on the half-life recovery log written with baskets: each event becomes"
        " 1 + Poisson(b − 1) same-second rows of its category (an order's lines); the truth is"
        " unchanged. Rows of one (user, category) at one instant are one occurrence for the"
        " model. Bar: median relative error of the half-lives within 20%. Nothing was tuned"
        " on this log.",
        "",
        "| rows per event (mean) | rows read | rows loaded | categories (≥ 500 events) |"
        " median error | fit s |",
        "|---|---|---|---|---|---|",
    ]
    for basket, r in results.items():
        lines.append(
            f"| {basket:g} | {r['rows']:,} | {r['loaded']:,} | {r['categories']} |"
            f" {r['median_error']:.1%} | {r['fit_seconds']:.1f} |"
        )
    lines += [
        "",
        "Rows loaded < rows read: a basket that draws the same item twice in one second is"
        " an exact duplicate row, dropped at ingest. The error is the same at every basket"
        " size because the occurrences are the same events. Before baskets were one"
        " occurrence (commit 47d3c50), the 3-rows-per-event log drove every half-life to"
        " the 1-minute floor (median 0.017 h against a true median of about a day).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(TITLE, text)


if __name__ == "__main__":
    main()
