"""RFM and decayed counters against values worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from ebbtide.features import load_events
from ebbtide.features.rfm import pair_features, user_features
from ebbtide.ingest import ingest_file
from ebbtide.store import EventStore

DAY = 86_400
T0 = 1_511_568_000  # 2017-11-25 00:00 UTC


def test_user_and_pair_features_by_hand(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        f"a,i1,c1,pv,{T0}\n"
        f"a,i1,c1,buy,{T0 + DAY}\n"
        f"a,i2,c2,pv,{T0 + 2 * DAY}\n"
        f"b,i3,c1,cart,{T0 + DAY}\n"
        f"b,i3,c1,pv,{T0 + 5 * DAY}\n"  # at the query instant: must not count
    )
    at = datetime.fromtimestamp(T0 + 5 * DAY, tz=UTC)
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_file(store, log, "taobao")
        events = load_events(store, before=at)
    at_days = at.timestamp() / DAY
    users = np.array([0, 1])  # ids are given in id order: a, b
    f = user_features(events, users, at_days)
    assert f["events"].tolist() == [3, 1]
    assert f["recency_days"].tolist() == pytest.approx([3, 4])
    assert f["tenure_days"].tolist() == pytest.approx([5, 4])
    assert f["active_days"].tolist() == [3, 1]
    assert f["categories"].tolist() == [2, 1]
    assert f["buy_recency_days"][0] == pytest.approx(4)
    assert f["view_decayed_1d"][0] == pytest.approx(2**-5 + 2**-3)
    assert f["cart_decayed_7d"][1] == pytest.approx(2 ** (-4 / 7))
    p = pair_features(events, at_days)
    assert list(zip(p["user_idx"].tolist(), p["category_idx"].tolist(), strict=True)) == [
        (0, 0),
        (0, 1),
        (1, 0),
    ]
    assert p["pair_events"].tolist() == [2, 1, 1]
    assert p["pair_share"].tolist() == pytest.approx([2 / 3, 1 / 3, 1])
    assert p["pair_recency_days"].tolist() == pytest.approx([4, 3, 4])
    assert p["pair_buy_decayed_1d"].tolist() == pytest.approx([2**-4, 0, 0])
