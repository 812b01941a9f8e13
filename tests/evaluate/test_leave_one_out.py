"""Leave-one-out: the split holds out each user's last two events, and ranks are exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebbtide.errors import ConfigError
from ebbtide.evaluate.leave_one_out import leave_one_out, split_leave_one_out
from ebbtide.ingest import ingest_file
from ebbtide.store import EventStore

T0 = 1_511_544_000


def _shop(path: Path) -> Path:
    """20 users: five distinct items each, then the shared 'hot' item last.

    'hot' is also everybody's third event, so in training it is the most popular item; the
    final events all come after every other event, so at each test instant a popularity
    ranking has seen all training events and must put 'hot' first.
    """
    rows = []
    for user in range(20):
        items = [f"a{user}", f"b{user}", "hot", f"c{user}", f"d{user}", "hot"]
        for step, item in enumerate(items):
            behavior = "buy" if step == 0 else "pv"  # a purchase, so BTYD has customers
            when = T0 + 3600 * user + 60 * step if step < 5 else T0 + 86_400 + 60 * user
            rows.append(f"{user},{item},1,{behavior},{when}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_split_holds_out_the_last_two_events(tmp_path: Path) -> None:
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_file(store, _shop(tmp_path / "log.csv"), "taobao")
        split = split_leave_one_out(store, tmp_path / "split")
        users = store.con.execute("SELECT * FROM users ORDER BY user_idx").df()
    targets = split.targets.set_index("user_id")
    assert len(targets) == 20 and split.n_events == 120
    assert (targets.test_item == "hot").all()
    assert targets.loc["3", "valid_item"] == "d3"
    assert (targets.valid_ts < targets.test_ts).all()
    for path, expected in ((split.train, 80), (split.train_valid, 100)):
        with EventStore(path, read_only=True) as copy:
            assert copy.con.execute("SELECT count(*) FROM events").fetchone()[0] == expected
            same = copy.con.execute("SELECT * FROM users ORDER BY user_idx").df()
            pd.testing.assert_frame_equal(same, users)  # identical dense ids
    with EventStore(split.train, read_only=True) as train:
        left = train.events().to_pandas()
    assert not ((left.user_id == "3") & (left.item_id == "d3")).any()


def test_popularity_finds_the_hot_item(tmp_path: Path) -> None:
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_file(store, _shop(tmp_path / "log.csv"), "taobao")
        result = leave_one_out(store, ["popular", "btyd"], k=5)
    row = result.table.set_index("model").loc["popular"]
    # test target 'hot' is the most popular training item: rank 1 for everybody
    assert row["test_hr@5"] == 1.0 and row["test_ndcg@5"] == 1.0 and row["test_mrr@5"] == 1.0
    # validation targets d{u} were never seen in training: outside any top-5
    assert row["valid_hr@5"] == 0.0
    assert list(result.table.model) == ["popular"]
    assert any("btyd does not rank items" in note for note in result.notes)
    json.dumps(result.to_dict(), allow_nan=False)
    assert "| popular |" in result.to_markdown()


def test_ndcg_and_mrr_from_ranks(tmp_path: Path) -> None:
    from ebbtide.evaluate.leave_one_out import _scores

    ranks = np.array([1, 2, 11, 4])
    scores = _scores(ranks, 10)
    assert scores["hr@10"] == 0.75
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(5)) / 4)
    assert scores["mrr@10"] == pytest.approx((1 + 0.5 + 0.25) / 4)


def test_bad_options(tmp_path: Path) -> None:
    with EventStore(tmp_path / "s.duckdb") as store:
        ingest_file(store, _shop(tmp_path / "log.csv"), "taobao")
        with pytest.raises(ConfigError, match="min_events"):
            split_leave_one_out(store, tmp_path / "x", min_events=2)
        with pytest.raises(ConfigError, match="no user has 7"):
            split_leave_one_out(store, tmp_path / "x", min_events=7)
        with pytest.raises(ConfigError, match="no models"):
            leave_one_out(store, [])
