"""Each reader on the real files: the counts published in their PROVENANCE must come out."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

from ebbtide.datasets import TAOBAO_SAMPLE_FACTS, taobao_sample_path
from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.ingest.formats import CDNOW_ITEM
from ebbtide.schema import Behavior
from ebbtide.store import EventStore


def _distinct(store: EventStore, column: str) -> int:
    return len(pc.unique(store.events([column]).column(column)))


def test_taobao_slice_reproduces_provenance_counts(store: EventStore) -> None:
    summary = ingest_file(store, taobao_sample_path(), "taobao")
    facts = TAOBAO_SAMPLE_FACTS
    assert (summary.rows_read, summary.loaded, summary.duplicates, summary.quarantined) == (
        84_475,
        84_475,
        0,
        0,
    )
    stats = store.stats(tz="Asia/Shanghai")
    assert (stats.users, stats.items, stats.categories) == (815, 55_368, 2_914)
    assert stats.events_by_behavior == facts["behaviors"]
    assert (stats.period, stats.period_chosen) == ("day", True)  # a 9-day log: per day
    per_day = dict(stats.events_per_period)
    assert per_day["2017-11-25"] == 8_697
    assert per_day["2017-12-02"] == 11_520
    assert per_day["2017-12-03"] == 11_377
    assert stats.events_per_user["min"] == 4
    assert stats.events_per_user["median"] == 78
    assert stats.events_per_user["max"] == 539
    # 35 rows fall before the 9-day window (China time), as PROVENANCE says.
    window_start = datetime(2017, 11, 24, 16, tzinfo=UTC)
    early = pc.sum(pc.less(store.events(["ts"]).column("ts"), window_start)).as_py()
    assert early == 35


def test_taobao_raw_file_and_bundled_copy_are_the_same_events(
    store: EventStore, datasets: Path
) -> None:
    ingest_file(store, taobao_sample_path(), "taobao")
    again = ingest_file(
        store, datasets / "taobao_userbehavior/UserBehavior_head_slice.csv", "taobao"
    )
    assert again.loaded == 0 and again.duplicates == 84_475  # same rows, other file (plain text)
    assert not again.already_ingested


def test_rees46_slice(store: EventStore, datasets: Path) -> None:
    path = datasets / "rees46_2019oct_head_slice/2019-Oct_head_slice.csv"
    summary = ingest_file(store, path, "rees46")
    # 17,434 rows; 3 lines occur more than once (4x, 2x, 2x): 5 exact duplicates.
    assert (summary.rows_read, summary.loaded, summary.duplicates, summary.quarantined) == (
        17_434,
        17_429,
        5,
        0,
    )
    stats = store.stats()
    assert (stats.users, stats.items, stats.categories) == (4_504, 6_493, 434)
    assert stats.events_by_behavior == {"view": 17_055 - 4, "cart": 165 - 1, "fav": 0, "buy": 214}
    assert stats.first_event == datetime(2019, 10, 1, 0, 0, tzinfo=UTC)
    assert stats.last_event == datetime(2019, 10, 1, 2, 50, tzinfo=UTC)
    events = store.events(["price", "brand", "session_id"])
    assert pc.min(events.column("price")).as_py() == 0.0
    assert pc.max(events.column("price")).as_py() == pytest.approx(2574.07)
    assert len(pc.unique(events.column("session_id"))) == 5_066
    names = store.con.execute(
        "SELECT count(*) FROM categories WHERE category_name = 'electronics.smartphone'"
    ).fetchone()[0]
    assert names == 1


def test_rees46_remove_from_cart_is_kept_in_quarantine(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "rees.csv"
    path.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-11-01 00:00:01 UTC,cart,5,7,a.b,acme,1.50,9,s1\n"
        "2019-11-01 00:00:09 UTC,remove_from_cart,5,7,a.b,acme,1.50,9,s1\n"
    )
    summary = ingest_file(store, path, "rees46")
    assert (summary.loaded, summary.quarantined) == (1, 1)
    assert summary.reasons == {"excluded_behavior": 1}
    row = store.quarantine().to_pylist()[0]
    assert "remove_from_cart" in row["raw"]


def test_cdnow_master_keeps_same_day_repeat_purchases(store: EventStore, datasets: Path) -> None:
    summary = ingest_file(store, datasets / "cdnow/CDNOW_master.txt", "cdnow")
    assert (summary.rows_read, summary.loaded, summary.quarantined) == (69_659, 69_659, 0)
    stats = store.stats()
    assert stats.users == 23_570
    assert stats.events_by_behavior[Behavior.BUY.value] == 69_659
    assert stats.first_event == datetime(1997, 1, 1, tzinfo=UTC)
    assert stats.last_event == datetime(1998, 6, 30, tzinfo=UTC)
    total = store.con.execute("SELECT sum(price * quantity), sum(quantity) FROM events").fetchone()
    expected_value, expected_cds = _cdnow_totals(datasets / "cdnow/CDNOW_master.txt", skip=1)
    assert total[0] == pytest.approx(expected_value, rel=1e-9)
    assert total[1] == expected_cds
    assert _distinct(store, "item_id") == 1
    assert store.events(["item_id"]).column("item_id")[0].as_py() == CDNOW_ITEM
    again = ingest_file(store, datasets / "cdnow/CDNOW_master.txt", "cdnow")
    assert again.loaded == 0


def test_cdnow_sample_uses_master_ids(store: EventStore, datasets: Path) -> None:
    summary = ingest_file(store, datasets / "cdnow/CDNOW_sample.txt", "cdnow")
    assert (summary.rows_read, summary.loaded) == (6_919, 6_919)
    assert store.stats().users == 2_357
    master = ingest_file(store, datasets / "cdnow/CDNOW_master.txt", "cdnow")
    # The sample is a subset of the master file: its transactions are recognised as known.
    assert master.duplicates == 6_919
    assert master.loaded == 69_659 - 6_919


def _cdnow_totals(path: Path, skip: int) -> tuple[float, int]:
    value, cds = 0.0, 0
    for line in path.read_text().splitlines()[skip:]:
        fields = line.split()
        cds += int(fields[-2])
        value += float(fields[-1])
    return value, cds


def test_movielens_atomic_file(store: EventStore, datasets: Path) -> None:
    summary = ingest_file(store, datasets / "ml-100k/ml-100k.inter", "movielens")
    assert (summary.rows_read, summary.loaded, summary.quarantined) == (100_000, 100_000, 0)
    stats = store.stats()
    assert (stats.users, stats.items, stats.categories) == (943, 1_682, 0)
    assert stats.events_by_behavior == {"view": 0, "cart": 0, "fav": 0, "buy": 0, "rate": 100_000}
    values = store.events(["value"]).column("value").to_numpy()
    assert values.min() == 1.0 and values.max() == 5.0 and abs(values.mean() - 3.5299) < 1e-4
    assert stats.first_event.year == 1997 and stats.last_event.year == 1998


def test_retailrocket_fixture_from_documented_format(store: EventStore, tmp_path: Path) -> None:
    # RetailRocket events.csv: timestamp (ms), visitorid, event, itemid, transactionid.
    path = tmp_path / "events.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(
            "timestamp,visitorid,event,itemid,transactionid\n"
            "1433221332117,257597,view,355908,\n"
            "1433224214164,992329,view,248676,\n"
            "1433221999827,111016,addtocart,7943,\n"
            "1433222276276,483717,transaction,5411,4000\n"
            "1433221999827,111016,addtocart,7943,\n"
        )
    summary = ingest_file(store, path, "retailrocket")
    assert (summary.rows_read, summary.loaded, summary.duplicates) == (5, 4, 1)
    events = store.events(["user_id", "behavior", "ts"]).to_pylist()
    by_user = {e["user_id"]: e for e in events}
    assert by_user["483717"]["behavior"] == Behavior.BUY.code
    assert by_user["111016"]["behavior"] == Behavior.CART.code
    assert by_user["257597"]["ts"] == datetime.fromtimestamp(1433221332.117, tz=UTC)


def test_generic_csv_with_mapping(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_text(
        "when;customer;sku;dept;action;amount;qty\n"
        "2024-03-01 10:00:00;c1;s1;shoes;PV;;\n"
        "2024-03-01 10:05:00;c1;s1;shoes;basket;;\n"
        "2024-03-01 10:09:00;c1;s1;shoes;order;59.90;2\n"
    )
    mapping = ColumnMapping(
        user_col="customer",
        item_col="sku",
        category_col="dept",
        behavior_col="action",
        time_col="when",
        time_format="%Y-%m-%d %H:%M:%S",
        behavior_map="pv=view,basket=cart,order=buy",
        price_col="amount",
        quantity_col="qty",
        delimiter=";",
    )
    summary = ingest_file(store, path, "generic", mapping=mapping)
    assert (summary.loaded, summary.quarantined) == (3, 0)
    buy = next(e for e in store.events().to_pylist() if e["behavior"] == Behavior.BUY.code)
    assert (buy["price"], buy["quantity"], buy["category_id"]) == (59.90, 2, "shoes")
    assert buy["ts"] == datetime(2024, 3, 1, 10, 9, tzinfo=UTC)


def test_generic_jsonl_and_parquet(store: EventStore, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        '{"u": "a", "i": "x", "t": 1700000000, "b": "view"}\n'
        '{"u": "b", "i": "y", "t": 1700000100, "b": "buy", "extra": [1, 2]}\n'
    )
    mapping = ColumnMapping(
        user_col="u", item_col="i", time_col="t", behavior_col="b", time_format="epoch_s"
    )
    assert ingest_file(store, jsonl, "generic", mapping=mapping).loaded == 2
    parquet = tmp_path / "orders.parquet"
    pq.write_table(
        pa.table(
            {
                "u": ["c", "d"],
                "i": ["z", "z"],
                "t": pa.array([1_700_000_200_000, 1_700_000_300_000]),
            }
        ),
        parquet,
    )
    orders = ColumnMapping(
        user_col="u", item_col="i", time_col="t", behavior="buy", time_format="epoch_ms"
    )
    summary = ingest_file(store, parquet, "generic", mapping=orders)
    assert (summary.rows_read, summary.loaded) == (2, 2)
    assert store.stats().events_by_behavior == {"view": 1, "cart": 0, "fav": 0, "buy": 3}
