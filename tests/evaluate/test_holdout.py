"""Holdout labels read only the window after `at`, and read it right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from ebbtide.evaluate import engagement_labels, purchase_labels
from ebbtide.ingest import ingest_file
from ebbtide.store import EventStore

T = 1_511_568_000  # 2017-11-25 00:00 UTC
AT = datetime.fromtimestamp(T + 86_400, tz=UTC)


def test_labels_by_hand(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        f"a,i1,c1,buy,{T}\n"  # before `at`: never a label
        f"a,i2,c2,pv,{T + 86_400}\n"  # at `at`: in the window
        f"b,i3,c1,buy,{T + 86_400 + 3_600}\n"
        f"c,i4,c1,buy,{T + 3 * 86_400}\n"  # after the window
    )
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_file(store, log, "taobao")
        pairs = pd.DataFrame(
            {"user_id": ["a", "a", "b", "c"], "category_id": ["c1", "c2", "c1", "c1"]}
        )
        engaged = engagement_labels(store, pairs, at=AT, horizon=timedelta(days=1))
        bought = purchase_labels(store, pairs.user_id, at=AT, horizon=timedelta(days=1))
    assert engaged.tolist() == [False, True, True, False]
    assert bought.tolist() == [False, False, True, False]
