"""Item categories and order values read back from the log, before an instant only."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from ebbtide.features.catalog import item_categories, mean_order_value
from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.store import EventStore


def test_mode_category_and_order_value(store: EventStore, tmp_path) -> None:
    log = tmp_path / "log.csv"
    pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["i1", "i1", "i1", "i2"],
            "category_id": ["c2", "c1", "c1", "c3"],
            "behavior": ["view", "buy", "buy", "buy"],
            "ts": [
                "2020-01-01T00:00Z",
                "2020-01-02T00:00Z",
                "2020-01-03T00:00Z",
                "2020-02-01T00:00Z",
            ],
            "price": [10.0, 10.0, 30.0, 99.0],
        }
    ).to_csv(log, index=False)
    mapping = ColumnMapping(
        user_col="user_id",
        item_col="item_id",
        time_col="ts",
        behavior_col="behavior",
        category_col="category_id",
        price_col="price",
    )
    summary = ingest_file(store, log, "generic", mapping=mapping)
    assert summary.loaded == 4
    cut = datetime(2020, 1, 15, tzinfo=UTC)
    cats = item_categories(store, before=cut)
    assert cats.to_dict("list") == {"item_id": ["i1"], "category_id": ["c1"]}  # i2 is later
    assert mean_order_value(store, before=cut) == 20.0  # the February 99 is not seen
    assert mean_order_value(store, before=datetime(2019, 1, 1, tzinfo=UTC)) is None
