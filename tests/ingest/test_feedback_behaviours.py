"""Searches, clicks, impressions and ratings load with their content, or are quarantined.

The behaviours beside view/cart/fav/buy keep what makes them useful: a search its words,
a click or impression its placement, a rating its value. Their own bad forms (a search
without words, a rating out of range or not a number) are quarantined with a reason, and
every row stays accounted for.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from ebbtide.features.sequences import load_events, load_searches
from ebbtide.ingest import ingest_file
from ebbtide.schema import Behavior
from ebbtide.store import EventStore
from ebbtide.synthetic_behaviours import GENERIC_MAPPING

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TS = 1_700_000_000
HEADER = "user_id,item_id,category_id,behavior,timestamp,query,value,placement"
MAPPING = GENERIC_MAPPING  # the columns `ebbtide synth --behaviours all` writes
GOOD = [
    f"u1,i1,c1,view,{TS},,,",
    f"u1,,,search,{TS + 10},  Red   Running shoes ,,",
    f"u1,i2,c1,impression,{TS + 20},,,home_recs",
    f"u1,i2,c1,click,{TS + 30},,,home_recs",
    f"u1,i2,c1,buy,{TS + 40},,,",
    f"u1,i2,c1,rate,{TS + 50},,4.5,",
    f"u2,,,impression,{TS + 60},,,email:spring",
    f"u2,,,click,{TS + 70},,,email:spring",
]


def _write(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "log.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_each_behaviour_loads_with_its_content(store: EventStore, tmp_path: Path) -> None:
    summary = ingest_file(store, _write(tmp_path, GOOD), "generic", mapping=MAPPING, now=NOW)
    assert (summary.rows_read, summary.loaded, summary.quarantined) == (8, 8, 0)
    rows = store.events(["user_id", "item_id", "behavior", "query", "value", "placement"])
    by_code = {}
    for row in rows.to_pylist():
        by_code.setdefault(row["behavior"], []).append(row)
    (search,) = by_code[Behavior.SEARCH.code]
    assert search["query"] == "Red Running shoes" and search["item_id"] is None
    (rating,) = by_code[Behavior.RATE.code]
    assert rating["value"] == 4.5 and rating["item_id"] == "i2"
    placements = sorted(r["placement"] for r in by_code[Behavior.CLICK.code])
    assert placements == ["email:spring", "home_recs"]
    assert store.stats().events_by_behavior == {
        "view": 1, "cart": 0, "fav": 0, "buy": 1,
        "search": 1, "click": 2, "impression": 2, "rate": 1,
    }  # fmt: skip
    again = ingest_file(store, _write(tmp_path, GOOD), "generic", mapping=MAPPING, now=NOW)
    assert again.loaded == 0 and store.stats().events == 8


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (f"u3,,,search,{TS},,,", "missing_query"),
        (f"u3,,,search,{TS},   ,,", "missing_query"),
        (f"u3,,,search,{TS},{'w' * 2000},,", "query_too_long"),
        (f"u3,i1,c1,rate,{TS},,,", "missing_value"),
        (f"u3,i1,c1,rate,{TS},,7,", "value_out_of_range"),
        (f"u3,i1,c1,rate,{TS},,0.5,", "value_out_of_range"),
        (f"u3,i1,c1,rate,{TS},,five,", "bad_value"),
        (f"u3,i1,c1,rate,{TS},,nan,", "bad_value"),
        (f"u3,,c1,rate,{TS},,4,", "missing_item_id"),
        (f"u3,,c1,view,{TS},,,", "missing_item_id"),
        (f"u3,i1,c1,click,{TS},,,{'p' * 300}", "id_too_long"),
        (f"u3,i1,c1,like,{TS},,,", "unknown_behavior"),
    ],
)
def test_bad_rows_are_quarantined_with_a_reason(
    store: EventStore, tmp_path: Path, row: str, reason: str
) -> None:
    rows = [*GOOD[:4], row, *GOOD[4:]]
    summary = ingest_file(store, _write(tmp_path, rows), "generic", mapping=MAPPING, now=NOW)
    assert summary.rows_read == summary.loaded + summary.duplicates + summary.quarantined == 9
    assert summary.reasons == {reason: 1}
    (kept,) = store.quarantine().to_pylist()
    assert kept["reason"] == reason and kept["raw"].startswith("u3,")


def test_models_see_clicks_and_ratings_as_views_and_searches_apart(
    store: EventStore, tmp_path: Path
) -> None:
    ingest_file(store, _write(tmp_path, GOOD), "generic", mapping=MAPPING, now=NOW)
    before = datetime(2030, 1, 1, tzinfo=UTC)
    events = load_events(store, before=before)
    # u1: view, click (a view of i2), buy, rate (a view of i2); u2's item-less rows are out.
    assert events.behavior.tolist() == [0, 0, 3, 0]
    assert events.lengths().tolist() == [4, 0]
    searches = load_searches(store, before=before)
    assert searches.query.tolist() == ["Red Running shoes"] and searches.user_idx.tolist() == [0]
    assert load_searches(store, before=datetime.fromtimestamp(TS + 10, UTC)).n_searches == 0


def test_a_store_written_before_the_new_columns_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with EventStore(path) as store:
        ingest_file(store, _write(tmp_path, GOOD[:1]), "generic", mapping=MAPPING, now=NOW)
    with duckdb.connect(str(path)) as con:  # as an earlier version wrote it
        con.execute("ALTER TABLE events DROP COLUMN query")
        con.execute("ALTER TABLE events DROP COLUMN value")
        con.execute("ALTER TABLE events DROP COLUMN placement")
        con.execute("DELETE FROM events")
        con.execute("ALTER TABLE events ALTER COLUMN item_idx SET NOT NULL")
    with EventStore(path, read_only=True) as store:
        assert not store.has_feedback_columns
        assert load_searches(store, before=NOW).n_searches == 0
        assert store.events().column_names[-3:] == ["query", "value", "placement"]
    with EventStore(path) as store:
        assert store.has_feedback_columns
        summary = ingest_file(store, _write(tmp_path, GOOD), "generic", mapping=MAPPING, now=NOW)
        assert summary.loaded == 8


def test_movielens_ratings_out_of_its_range_are_quarantined(
    store: EventStore, tmp_path: Path
) -> None:
    path = tmp_path / "ml.inter"
    good = [f"1\t{10 + i}\t{1 + i % 5}\t{TS + i}" for i in range(6)]
    bad = [f"1\t20\t6\t{TS}", f"2\t10\t0\t{TS}"]
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "\n".join([*good[:3], *bad, *good[3:]])
        + "\n",
        encoding="utf-8",
    )
    summary = ingest_file(store, path, "movielens", now=NOW)
    assert (summary.loaded, summary.reasons) == (6, {"value_out_of_range": 2})
    assert store.events(["value"]).column("value").to_pylist() == [1, 2, 3, 4, 5, 1]


def test_the_readme_example_file_loads_as_the_readme_says(store: EventStore) -> None:
    example = Path(__file__).parents[2] / "docs" / "examples" / "feedback.csv"
    mapping = replace(GENERIC_MAPPING, time_format="iso")
    later = datetime(2027, 1, 1, tzinfo=UTC)
    summary = ingest_file(store, example, "generic", mapping=mapping, now=later)
    assert (summary.rows_read, summary.loaded, summary.quarantined) == (17, 15, 2)
    assert summary.reasons == {"missing_query": 1, "value_out_of_range": 1}
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert "17 rows read, 15 loaded, 2 quarantined: missing_query 1, value_out_of_range 1" in readme
