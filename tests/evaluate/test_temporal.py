"""The temporal holdout on the real Taobao slice: targets read right, nothing leaks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ebbtide.datasets import taobao_sample_path
from ebbtide.errors import ConfigError
from ebbtide.evaluate.holdout import engagement_labels
from ebbtide.evaluate.temporal import (
    evaluate_model,
    holdout_targets,
    temporal_holdout,
)
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.decay import DecayModel
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def targets(taobao: EventStore):
    return holdout_targets(taobao, cutoff=CUT, horizon=DAY, dormant_days=3)


def test_targets_match_the_events(taobao: EventStore, targets) -> None:
    events = taobao.events().to_pandas()
    ts = pd.to_datetime(events["ts"], utc=True)
    before, window = events[ts < CUT], events[(ts >= CUT) & (ts < CUT + DAY)]
    users = targets.users.set_index("user_id")
    assert set(users.index) == set(before.user_id)
    returned = set(window.user_id) & set(before.user_id)
    assert set(users.index[users.returned]) == returned
    first = pd.to_datetime(window.groupby("user_id").ts.min(), utc=True)
    some = sorted(returned)[:20]
    expected = ((first[some] - pd.Timestamp(CUT)).dt.total_seconds() / 86_400).to_numpy()
    np.testing.assert_allclose(users.loc[some, "days_to_return"], expected)
    assert (users.loc[~users.returned, "days_to_return"] == 1.0).all()
    # engagement agrees with the older label function; dormant = untouched for 3 days
    np.testing.assert_array_equal(
        targets.pairs.engaged, engagement_labels(taobao, targets.pairs, at=CUT, horizon=DAY)
    )
    last = before.groupby(["user_id", "category_id"]).ts.max()
    last = pd.to_datetime(last, utc=True)
    pairs = targets.pairs.set_index(["user_id", "category_id"])
    dormant = last < pd.Timestamp(CUT) - pd.Timedelta(days=3)
    assert (pairs.loc[dormant.index, "dormant"] == dormant).all()
    assert set(targets.items.user_id) <= returned
    assert targets.n_window_events == len(window)


def test_scores_do_not_depend_on_the_window(taobao: EventStore, targets, tmp_path) -> None:
    """A model fitted on a store that never had the window's events scores the same."""
    with EventStore(tmp_path / "cut.duckdb") as cut:
        ingest_file(cut, taobao_sample_path(), "taobao")
        cut.con.execute("DELETE FROM events WHERE ts >= ?", [CUT])
        blind_model = DecayModel().fit(cut, cutoff=CUT)
        blind = evaluate_model(blind_model, snapshot(cut, at=CUT), targets, k=10)
    full_model = DecayModel().fit(taobao, cutoff=CUT)
    full = evaluate_model(full_model, snapshot(taobao, at=CUT), targets, k=10)
    assert blind.keys() == full.keys() and len(full) >= 12
    for name, value in full.items():
        assert blind[name] == pytest.approx(value), name


def test_next_item_metrics_by_hand(taobao: EventStore, targets) -> None:
    model = DecayModel().fit(taobao, cutoff=CUT)
    k = 5
    history = snapshot(taobao, at=CUT)
    scores = evaluate_model(model, history, targets, k=k)
    wanted = targets.items.groupby("user_id").item_id.agg(set)
    recs = model.recommend(history, list(wanted.index), k=k, exclude_bought=False)
    recall, ndcg = [], []
    for user, items in wanted.items():
        top = recs[recs.user_id == user].sort_values("rank").item_id.tolist()
        gains = [1 / np.log2(r + 2) for r, item in enumerate(top) if item in items]
        ideal = sum(1 / np.log2(r + 2) for r in range(min(len(items), k)))
        recall.append(len(gains) / len(items))
        ndcg.append(sum(gains) / ideal)
    assert scores["recall_at_k"] == pytest.approx(np.mean(recall))
    assert scores["ndcg_at_k"] == pytest.approx(np.mean(ndcg))


def test_comparison_table(taobao: EventStore) -> None:
    result = temporal_holdout(taobao, ["popular", "decay"], cutoff=CUT, horizon=DAY, k=10)
    table = result.table.set_index("model")
    assert list(table.index) == ["popular", "decay"]
    assert np.isnan(table.loc["popular", "return_auc"])  # popular does not answer it
    assert 0.5 < table.loc["decay", "return_auc"] <= 1 and table.loc["decay", "fit_seconds"] > 0
    assert result.split["users"] == 815 and result.split["history_events"] > 0
    json.dumps(result.to_dict(), allow_nan=False)
    markdown = result.to_markdown()
    assert "| decay |" in markdown and "recall@10" in markdown and "815 users" in markdown


def test_bad_options(taobao: EventStore) -> None:
    with pytest.raises(ConfigError, match="no models"):
        temporal_holdout(taobao, [], cutoff=CUT, horizon=DAY)
    with pytest.raises(ConfigError, match="k=0"):
        temporal_holdout(taobao, ["decay"], cutoff=CUT, horizon=DAY, k=0)
    with pytest.raises(ConfigError, match="no events before"):
        holdout_targets(taobao, cutoff=datetime(2000, 1, 1, tzinfo=UTC), horizon=DAY)
    with pytest.raises(ConfigError, match="horizon"):
        holdout_targets(taobao, cutoff=CUT, horizon=timedelta(0))
