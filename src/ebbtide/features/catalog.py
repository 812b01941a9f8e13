"""What the log says about items: each item's category, and the typical order value.

Why from the log: most shops' behaviour logs carry the category (and sometimes the price) on
every event rather than in a separate catalogue, so the catalogue is read back from them.
Only events before `before` are read, like every feature.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from ebbtide.features.sequences import to_days
from ebbtide.schema import Behavior
from ebbtide.store import EventStore

__all__ = ["item_categories", "mean_order_value"]


def item_categories(store: EventStore, *, before: datetime) -> pd.DataFrame:
    """item_id → category_id, the category the item was most often seen in (ties: smallest id)."""
    to_days(before)
    return store.con.execute(
        """SELECT i.item_id, c.category_id
        FROM (
            SELECT item_idx, arg_min(category_idx, (-n, category_idx)) AS category_idx
            FROM (
                SELECT item_idx, category_idx, count(*) AS n FROM events
                WHERE ts < ? AND category_idx IS NOT NULL GROUP BY ALL
            ) GROUP BY item_idx
        ) m JOIN items i USING (item_idx) JOIN categories c USING (category_idx)
        ORDER BY i.item_id""",
        [before],
    ).df()


def mean_order_value(store: EventStore, *, before: datetime) -> float | None:
    """Mean ``price × quantity`` of purchases before `before`; None when the log has no prices."""
    to_days(before)
    value = store.con.execute(
        "SELECT avg(price * coalesce(quantity, 1)) FROM events "
        "WHERE ts < ? AND behavior = ? AND price IS NOT NULL AND price > 0",
        [before, Behavior.BUY.code],
    ).fetchone()[0]
    return None if value is None else float(value)
