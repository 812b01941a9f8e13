"""Reading a lake: every row used or counted, clear errors, times as the store has them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ebbtide.errors import InputFormatError
from ebbtide.features.sequences import SECONDS_PER_DAY
from ebbtide.ingest.validation import REASONS
from ebbtide.spark.decay_fit import numpy_linear_quantile
from ebbtide.spark.lake import read_lake
from ebbtide.spark.numbering import number_events
from ebbtide.spark.partitions import by_user, epoch_days, partition_arrays

NOW = datetime(2024, 1, 1, tzinfo=UTC)
CUT = datetime(2017, 11, 26, tzinfo=UTC)

GARBLED = """user_id,item_id,category_id,behavior,ts
u1,i1,c1,view,2017-11-25T01:00:00Z
u1,i2,c1,buy,2017-11-25 02:00:00
u1,i2,c1,buy,2017-11-25 02:00:00
u2,i1,,cart,2017-11-25T03:00:00+08:00
u2,i3,c2,fav,2017-11-27T00:00:00Z
u3,i1,c1,view
u3,i1,c1,view,2017-11-25T01:00:00Z,extra
u3,i1,c1,pv,2017-11-25T01:00:00Z
,i1,c1,view,2017-11-25T01:00:00Z
u3,i1,c1,view,yesterday
u3,i1,c1,view,1970-01-02T00:00:00Z
u3,"i1,c1,view,2017-11-25T01:00:00Z
"""


@pytest.fixture(scope="module")
def garbled(spark, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("garbled") / "events.csv"
    path.write_text(GARBLED, encoding="utf-8")
    return read_lake(spark, [str(path)], now=NOW)


def test_every_garbled_row_is_counted_with_its_reason(garbled) -> None:
    summary = garbled.summary(CUT)
    assert summary.rows_read == 12
    assert summary.used == 3  # u1 view, u1 buy (one copy), u2 cart
    assert summary.later == 1  # u2 fav, after the cut
    assert summary.duplicates == 1
    assert summary.rejected == {
        "wrong_field_count": 2,
        "unknown_behavior": 1,
        "missing_user_id": 1,
        "bad_time": 1,
        "time_out_of_range": 1,
        "malformed_line": 1,
    }
    assert summary.balanced()
    assert set(summary.rejected) <= set(REASONS)
    rejected = {(r["reason"], r["detail"], r["raw"]) for r in garbled.rejected().collect()}
    assert ("unknown_behavior", "behaviour pv", "u3,i1,c1,pv,2017-11-25T01:00:00Z") in rejected
    assert ("bad_time", "time yesterday", "u3,i1,c1,view,yesterday") in rejected
    assert ("wrong_field_count", None, "u3,i1,c1,view") in rejected


def test_valid_rows_are_typed_and_numbered(garbled) -> None:
    before = garbled.before(CUT)
    rows = sorted(tuple(r) for r in before.collect())
    assert rows == [
        ("u1", "i1", "c1", 0, 1_511_571_600_000_000),
        ("u1", "i2", "c1", 3, 1_511_575_200_000_000),
        ("u2", "i1", None, 1, 1_511_550_000_000_000),  # +08:00 read as such
    ]
    numbered = number_events(before)
    assert numbered.catalogue.category_ids.tolist() == ["c1", "(uncategorised)"]
    assert numbered.catalogue.user_ids.tolist() == ["u1", "u2"]
    parts = by_user(numbered.events, 1).toArrow().to_batches()
    arrays = partition_arrays(parts, n_users=2, n_items=2, n_categories=2, before=CUT)
    assert arrays.offsets.tolist() == [0, 2, 3]
    assert arrays.category_idx.tolist() == [0, 0, 1]
    assert arrays.behavior.tolist() == [0, 3, 1]


def test_a_missing_path_is_a_clear_error(spark, tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match=r"no file or folder at .*nowhere"):
        read_lake(spark, [str(tmp_path / "nowhere" / "*.parquet")])


def test_a_lake_without_the_canonical_columns_names_them(spark, tmp_path: Path) -> None:
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"user_id": ["a"], "item_id": ["b"], "when": [1]}), path)
    with pytest.raises(InputFormatError, match=r"lacks the canonical column.*behavior, ts"):
        read_lake(spark, [str(path)])


def test_days_are_the_stores_days_to_the_bit() -> None:
    """`load_events` reads ``epoch(ts) / 86400`` from DuckDB; so must every partition."""
    micros = np.random.default_rng(0).integers(1_400_000_000_000_000, 1_700_000_000_000_000, 5000)
    table = pa.table({"ts": pa.array(micros, pa.timestamp("us", tz="UTC"))})
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", table)
    days = con.execute(f"SELECT epoch(ts) / {SECONDS_PER_DAY} AS t FROM events").fetchnumpy()["t"]
    assert np.array_equal(epoch_days(micros), days)


@pytest.mark.parametrize("n", [1, 2, 7, 1001, 4567])
def test_the_start_quantile_is_numpys_to_the_bit(n: int) -> None:
    x = np.sort(np.random.default_rng(n).uniform(17_000.0, 17_500.0, n))
    for q in (0.001, 0.3, 0.5, 0.77, 1.0):
        assert numpy_linear_quantile(n, q, x.__getitem__) == float(np.quantile(x, q))
