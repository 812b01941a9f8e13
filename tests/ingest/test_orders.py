"""Order logs: one row per product of an order, every row stamped with the order's time.

Two orders of one user holding the same product in the same second look identical unless
the order id is loaded; the summary must say when purchases collapse, and mapping the
order id must keep every order line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ebbtide.errors import ConfigError, DataQualityWarning
from ebbtide.ingest import ColumnMapping, IngestSummary, ingest_file
from ebbtide.store import EventStore

#: o1 and o2 are two orders of u1 in the same second, both with p1 and p2; o3 is u2's.
ORDERS = (
    "order_id,user_id,product_id,ts\n"
    "o1,u1,p1,2024-01-05T10:00:00\n"
    "o1,u1,p2,2024-01-05T10:00:00\n"
    "o1,u1,p3,2024-01-05T10:00:00\n"
    "o2,u1,p1,2024-01-05T10:00:00\n"
    "o2,u1,p2,2024-01-05T10:00:00\n"
    "o3,u2,p1,2024-01-06T11:30:00\n"
)


def _mapping(**extra: object) -> ColumnMapping:
    return ColumnMapping(
        user_col="user_id", item_col="product_id", time_col="ts", behavior="buy", **extra
    )


def _accounted(summary: IngestSummary) -> None:
    assert summary.rows_read == summary.loaded + summary.duplicates + summary.quarantined


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS)
    return path


def test_same_second_orders_without_order_id_are_counted_and_explained(
    store: EventStore, orders: Path
) -> None:
    with pytest.warns(DataQualityWarning, match="--order-col order_id"):
        summary = ingest_file(store, orders, "generic", mapping=_mapping())
    _accounted(summary)
    assert (summary.rows_read, summary.loaded, summary.duplicates) == (6, 4, 2)
    assert (summary.duplicates_in_file, summary.duplicate_buys_in_file) == (2, 2)
    (note,) = summary.notes
    assert "2 purchase rows were dropped as duplicates" in note
    assert "--order-col order_id" in note and "new store" in note
    assert summary.to_dict()["notes"] == summary.notes


@pytest.mark.parametrize("column", ["order_col", "session_col"])
def test_order_id_keeps_every_order_line(store: EventStore, orders: Path, column: str) -> None:
    summary = ingest_file(store, orders, "generic", mapping=_mapping(**{column: "order_id"}))
    _accounted(summary)
    assert (summary.rows_read, summary.loaded, summary.duplicates) == (6, 6, 0)
    assert summary.notes == ()
    events = store.events(["user_id", "item_id", "session_id"]).to_pylist()
    assert sorted((e["session_id"], e["item_id"]) for e in events if e["user_id"] == "u1") == [
        ("o1", "p1"),
        ("o1", "p2"),
        ("o1", "p3"),
        ("o2", "p1"),
        ("o2", "p2"),
    ]


def test_rows_of_different_orders_never_collapse_across_files(
    store: EventStore, tmp_path: Path
) -> None:
    first, second = tmp_path / "jan.csv", tmp_path / "jan_late.csv"
    first.write_text("order_id,user_id,product_id,ts\no1,u1,p1,2024-01-05T10:00:00\n")
    second.write_text(
        "order_id,user_id,product_id,ts\n"
        "o1,u1,p1,2024-01-05T10:00:00\n"  # the same order line again: a duplicate
        "o2,u1,p1,2024-01-05T10:00:00\n"  # another order, same user, item and second
    )
    ingest_file(store, first, "generic", mapping=_mapping(order_col="order_id"))
    summary = ingest_file(store, second, "generic", mapping=_mapping(order_col="order_id"))
    _accounted(summary)
    assert (summary.loaded, summary.duplicates, summary.duplicates_in_file) == (1, 1, 0)
    assert summary.notes == ()  # the duplicate was stored before, not repeated in the file
    assert store.stats().events == 2


def test_one_order_listing_a_product_twice_points_to_keep_repeats(
    store: EventStore, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "order_id,user_id,product_id,ts\n"
        "o1,u1,p1,2024-01-05T10:00:00\n"
        "o1,u1,p1,2024-01-05T10:00:00\n"
        "o1,u1,p2,2024-01-05T10:00:00\n"
    )
    with pytest.warns(DataQualityWarning):
        summary = ingest_file(store, path, "generic", mapping=_mapping(order_col="order_id"))
    assert (summary.loaded, summary.duplicate_buys_in_file) == (2, 1)
    (note,) = summary.notes
    assert note.startswith("1 purchase row was dropped as a duplicate")
    assert "--keep-repeats" in note and "--order-col" not in note
    kept = ingest_file(
        store, path, "generic", mapping=_mapping(order_col="order_id", keep_repeats=True)
    )
    assert (kept.loaded, kept.duplicates, kept.notes) == (1, 2, ())  # only the second p1 line
    assert store.stats().events == 3


def test_repeated_views_are_counted_but_need_no_note(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("u,i,t,b\nu1,p1,1700000000,view\nu1,p1,1700000000,view\nu1,p1,1700000000,buy\n")
    mapping = ColumnMapping(
        user_col="u", item_col="i", time_col="t", behavior_col="b", time_format="epoch_s"
    )
    summary = ingest_file(store, path, "generic", mapping=mapping)
    _accounted(summary)
    assert (summary.duplicates_in_file, summary.duplicate_buys_in_file) == (1, 0)
    assert summary.notes == ()


def test_named_format_says_it_has_no_order_id(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "taobao.csv"
    path.write_text("1,10,100,buy,1511544070\n1,10,100,buy,1511544070\n")
    with pytest.warns(DataQualityWarning, match="taobao format has no order id"):
        summary = ingest_file(store, path, "taobao")
    assert (summary.loaded, summary.duplicates, summary.duplicate_buys_in_file) == (1, 1, 1)


def test_order_col_and_session_col_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"--order-col.*--session-col.*not both"):
        _mapping(order_col="order_id", session_col="basket")
