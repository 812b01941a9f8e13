"""`ebbtide score --queries-out`: which recent searches drive each user's interest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

GENERIC = [
    "--format", "generic", "--user-col", "user_id", "--item-col", "item_id",
    "--category-col", "category_id", "--behavior-col", "behavior", "--time-col", "timestamp",
    "--time-format", "epoch_s", "--query-col", "query", "--value-col", "value",
    "--placement-col", "placement",
]  # fmt: skip
CUT = "2017-11-28T16:00:00+00:00"  # day 4 of the synthetic log


def test_score_writes_the_queries_behind_interest(cli, tmp_path: Path) -> None:
    log, db = tmp_path / "log.csv", tmp_path / "shop.duckdb"
    cli.ok("synth", "--out", str(log), "--users", "150", "--days", "5", "--behaviours", "all",
           "--seed", "2", "--quiet")  # fmt: skip
    cli.ok("ingest", str(log), "--db", str(db), *GENERIC, "--quiet")
    for family in ("decay", "popular"):
        cli.ok("train", "--db", str(db), "--model", family, "--cutoff", CUT,
               "--out-dir", str(tmp_path / family), "--quiet")  # fmt: skip
    queries = tmp_path / "queries.csv"
    result = cli.ok("score", "--model-dir", str(tmp_path / "decay"), "--db", str(db),
                    "--at", CUT, "--out", str(tmp_path / "s.parquet"),
                    "--queries-out", str(queries))  # fmt: skip
    assert "queries behind interest" in result.stdout
    frame = pd.read_csv(queries, dtype={"user_id": str, "category_id": str})
    assert list(frame.columns) == [
        "user_id", "category_id", "query", "searches", "last_searched_at", "contribution",
    ]  # fmt: skip
    assert len(frame) > 0 and (frame["contribution"] > 0).all()
    assert frame.groupby(["user_id", "category_id"]).size().max() <= 3
    assert (pd.to_datetime(frame["last_searched_at"], utc=True) < pd.Timestamp(CUT)).all()
    refused = cli("score", "--model-dir", str(tmp_path / "popular"), "--db", str(db),
                  "--at", CUT, "--out", str(tmp_path / "p.parquet"),
                  "--queries-out", str(queries))  # fmt: skip
    assert refused.exit_code == 1
    assert "--queries-out applies to the decay model only" in refused.output
