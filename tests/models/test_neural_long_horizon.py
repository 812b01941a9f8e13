"""The neural family on a long log without categories: users who stop must fade.

A synthetic MovieLens-style log (views only, no categories, 200 days): half the users
keep coming in sessions to the end, the others stop for good at some day before the
cut-off, some of them after bursts of many events. A model whose long-term rate holds
until the next event takes an old burst for an active user and ranks the returners
worse than the days since the last event do (on MovieLens-100k: ROC-AUC 0.39 against
0.84); the point process must decay after the last event and know who is gone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ebbtide.evaluate import metrics
from ebbtide.evaluate.temporal import holdout_targets
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.neural import NeuralConfig, NeuralModel, auto_validation_days
from ebbtide.store import EventStore

START = datetime(2021, 1, 1, tzinfo=UTC)
CUT = START + timedelta(days=170)
SMALL = {
    "hidden": 16,
    "embedding": 8,
    "rank": 4,
    "max_len": 100,
    "epochs": 4,
    "batch_size": 16,
    "max_train_seconds": 60.0,  # a cap: 4 epochs take about 15 s
    "item_epochs": 1,
    "item_max_seconds": 3.0,
    "seed": 1,
}


def _log(seed: int = 7, n_users: int = 240) -> list[tuple[int, int, int]]:
    """(user, item, epoch seconds) of sessions at a per-user rate, until each user stops."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        begin = rng.uniform(0.0, 100.0)
        stays = user % 2 == 0
        end = 200.0 if stays else rng.uniform(begin + 10.0, 165.0)
        rate = np.exp(rng.uniform(np.log(0.1), np.log(0.6)))  # sessions per day
        burst = np.exp(rng.uniform(0.0, np.log(30.0)))  # events per session
        n_sessions = max(rng.poisson(rate * (end - begin)), 1)
        for day in np.sort(rng.uniform(begin, end, n_sessions)):
            n = 1 + rng.poisson(burst)
            seconds = day * 86_400 + np.cumsum(rng.exponential(300.0, n))
            items = rng.zipf(1.5, n) % 300
            rows += [(user, int(i), int(s)) for i, s in zip(items, seconds, strict=True)]
    base = int(START.timestamp())
    return [(u, i, base + s) for u, i, s in rows if s < 200 * 86_400]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("long") / "long.inter"
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t3\t{s}" for u, i, s in _log()]
    path.write_text("\n".join(lines) + "\n")
    with EventStore(path.with_suffix(".duckdb")) as events:
        ingest_file(events, path, "movielens")
        yield events


@pytest.fixture(scope="module")
def fitted(store: EventStore):
    history = snapshot(store, at=CUT)
    return history, NeuralModel(NeuralConfig(**SMALL)).fit(history)


def test_auto_validation_window_scales_with_the_log() -> None:
    assert auto_validation_days(8.0) == 1.0  # the Taobao sample keeps its day
    assert auto_validation_days(170.0) == pytest.approx(17.0)
    assert auto_validation_days(500.0) == 30.0


def test_validation_window_is_inside_the_training_period(fitted) -> None:
    _, model = fitted
    # a tenth of the span from the log's 1st percentile of times (about day 4) to day 170
    assert 14.0 <= float(model.validation_days_) <= 17.0
    assert model.metrics_["validation_days"] == pytest.approx(float(model.validation_days_))


@pytest.mark.parametrize("days", [1, 7, 30])
def test_return_ranks_like_recency_and_beats_the_base_rate(store, fitted, days: int) -> None:
    history, model = fitted
    horizon = timedelta(days=days)
    users = holdout_targets(store, cutoff=CUT, horizon=horizon).users
    returned = users["returned"].to_numpy()
    answer = model.p_return(history, horizon=horizon)
    p = users[["user_id"]].merge(answer, on="user_id", how="left")["p_return"].to_numpy()
    last = store.con.execute(
        "SELECT u.user_id, epoch(?::TIMESTAMPTZ - max(ts)) / 86400 AS days"
        " FROM events JOIN users u USING (user_idx) WHERE ts < ? GROUP BY ALL",
        [CUT, CUT],
    ).df()
    recency = users[["user_id"]].merge(last, on="user_id")["days"].to_numpy()
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    auc, recency_auc = metrics.roc_auc(returned, p), metrics.roc_auc(returned, -recency)
    # 1 day: 0.804 against recency's 0.843 since the long-run level (issue 16; 0.81+ with
    # the state's floor before it), a known shortfall; 7 and 30 days within 0.03
    slack = 0.05 if days == 1 else 0.03
    assert auc >= recency_auc - slack, (auc, recency_auc)
    base = returned.mean()
    assert np.mean((p - returned) ** 2) < base * (1 - base), (np.mean(p), base)


def test_return_grows_with_the_horizon(fitted) -> None:
    history, model = fitted
    p = [
        model.p_return(history, horizon=timedelta(days=d))["p_return"].to_numpy()
        for d in (1, 7, 30)
    ]
    assert (p[0] <= p[1] + 1e-12).all() and (p[1] <= p[2] + 1e-12).all()
    assert p[0].mean() < p[1].mean() < p[2].mean()
