"""Labels of the temporal holdout: did the user engage / buy in ``[at, at + horizon)``?

Models answer at `at` from events before it; these functions read only the window after
it, so a label can never feed a prediction. Joins happen in DuckDB and pandas, not loops.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from ebbtide.schema import Behavior
from ebbtide.store import USER_ACTIVITY, EventStore


def _window(store: EventStore, at: datetime, horizon: timedelta) -> pd.DataFrame:
    return store.con.execute(
        f"""SELECT DISTINCT u.user_id, c.category_id, e.behavior = ? AS buy
        FROM events e JOIN users u USING (user_idx)
        LEFT JOIN categories c USING (category_idx)
        WHERE e.ts >= ? AND e.ts < ? AND e.{USER_ACTIVITY}""",
        [Behavior.BUY.code, at, at + horizon],
    ).df()


def engagement_labels(
    store: EventStore, pairs: pd.DataFrame, *, at: datetime, horizon: timedelta
) -> np.ndarray:
    """For each (user_id, category_id) row of `pairs`: engaged with it in the window?"""
    seen = _window(store, at, horizon)[["user_id", "category_id"]].drop_duplicates()
    seen["engaged"] = True
    merged = pairs[["user_id", "category_id"]].merge(
        seen, how="left", on=["user_id", "category_id"]
    )
    return merged["engaged"].fillna(False).to_numpy(dtype=bool)


def purchase_labels(
    store: EventStore, users: pd.Series, *, at: datetime, horizon: timedelta
) -> np.ndarray:
    """For each user id in `users`: bought anything in the window?"""
    window = _window(store, at, horizon)
    return users.isin(window.loc[window["buy"], "user_id"]).to_numpy(dtype=bool)
