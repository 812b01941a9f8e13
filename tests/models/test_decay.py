"""The decay family: recovers known half-lives, round-trips, never peeks, stays finite."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ebbtide.datasets import taobao_sample_path
from ebbtide.errors import ConfigError
from ebbtide.evaluate import engagement_labels, purchase_labels
from ebbtide.features.history import UNCATEGORISED, History, snapshot
from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.models.base import Model
from ebbtide.models.decay import DecayConfig, DecayModel
from ebbtide.store import EventStore
from ebbtide.synthetic import generate, recovery_config, write_taobao_csv

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)  # 2017-12-02 00:00 China time
DAY = timedelta(days=1)
USERS = ["1", "100", "1000"]


@pytest.fixture(scope="module")
def fitted(taobao: EventStore) -> DecayModel:
    return DecayModel().fit(taobao, cutoff=CUT)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        DecayConfig(behavior_weights=(1.0, 1.0, 1.0))
    with pytest.raises(ConfigError):
        DecayConfig(shrink_events=-1.0)
    with pytest.raises(ConfigError):
        DecayConfig(max_iter=0)


@pytest.mark.parametrize("basket", [1.0, 2.5])
def test_recovers_synthetic_half_lives(tmp_path: Path, basket: float) -> None:
    """Median relative error of the half-lives of well-observed categories is at most 20%,
    with one row per event and with baskets (an event written as several same-second rows,
    which counted one by one would drive the half-lives to their floor).

    Dense pairs (about 50 events each) keep the incidental-parameter bias of the per-pair
    baselines small; users never go dormant.
    """
    cfg = replace(recovery_config(users=1000), basket_size_mean=basket)
    log = generate(cfg)
    path = tmp_path / "synth.csv"
    write_taobao_csv(log, path)
    with EventStore(tmp_path / "synth.duckdb") as store:
        ingest_file(store, path, "taobao")
        model = DecayModel().fit(store, cutoff=cfg.start + timedelta(days=cfg.days))
    truth = log.truth_categories.to_pandas().set_index("category_id")
    ids = model.catalogue_.category_ids
    fitted_half_life = pd.Series(math.log(2.0) / model.delta_, index=ids)
    well_observed = truth[truth.n_events >= 500]
    assert len(well_observed) >= 20
    error = (fitted_half_life[well_observed.index] / well_observed.half_life_days - 1).abs()
    assert error.median() <= 0.20, error.median()
    assert np.isfinite(model.metrics_["loglik_per_event"])
    assert 1 <= model.metrics_["iterations"] <= DecayConfig().max_iter


def _answers(model: Model, history: History) -> list[pd.DataFrame]:
    return [
        model.interest(history, USERS, horizon=DAY),
        model.p_return(history, USERS, horizon=DAY),
        model.p_buy(history, USERS, horizon=DAY),
        model.expected_return_time(history, USERS),
        model.recommend(history, USERS, k=5),
    ]


def test_save_load_and_refit_give_identical_answers(
    fitted: DecayModel, taobao: EventStore, tmp_path: Path
) -> None:
    history = snapshot(taobao, at=CUT)
    before = _answers(fitted, history)
    loaded = Model.load(fitted.save(tmp_path / "m"))
    assert type(loaded) is DecayModel
    again = DecayModel().fit(taobao, cutoff=CUT)
    for frame, other, third in zip(
        before, _answers(loaded, history), _answers(again, history), strict=True
    ):
        pd.testing.assert_frame_equal(other, frame)
        pd.testing.assert_frame_equal(third, frame)
    assert np.array_equal(again.delta_, fitted.delta_)


def test_answers_ignore_events_at_or_after_the_query_instant(
    fitted: DecayModel, taobao: EventStore, tmp_path: Path
) -> None:
    at = CUT + timedelta(hours=6)
    before = _answers(fitted, snapshot(taobao, at=at))
    future = tmp_path / "future.csv"
    second = int(at.timestamp())
    future.write_text(f"1,999,999,buy,{second}\n100,998,2355072,pv,{second + 10}\n")
    with EventStore(tmp_path / "copy.duckdb") as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        ingest_file(store, future, "taobao")
        model = DecayModel().fit(store, cutoff=CUT)
        after = _answers(model, snapshot(store, at=at))
    for frame, other in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(other, frame)


def test_duplicate_times_and_huge_gaps_stay_finite(store: EventStore, tmp_path: Path) -> None:
    base = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
    late = base + 1000 * 86_400
    rows = [
        f"u1,i1,c1,pv,{base}",
        f"u1,i1,c1,pv,{base}",
        f"u1,i2,c1,buy,{base}",
        f"u1,i3,c2,pv,{base + 60}",
        f"u1,i1,c1,cart,{late}",
        f"u1,i1,c1,pv,{late}",
        f"u2,i3,c2,pv,{base}",
        f"u2,i4,c3,fav,{late}",
        f"u2,i4,c3,fav,{late}",
    ]
    path = tmp_path / "tiny.csv"
    path.write_text("\n".join(rows) + "\n")
    ingest_file(store, path, "taobao")
    cutoff = datetime.fromtimestamp(late + 3600, tz=UTC)
    model = DecayModel().fit(store, cutoff=cutoff)
    assert np.all(np.isfinite(model.delta_)) and np.all(np.isfinite(model.alpha_))
    assert np.all((model.delta_ >= 1e-4) & (model.delta_ <= 1e3))
    for at in (cutoff, cutoff + timedelta(days=400)):
        for frame in _tiny_answers(model, snapshot(store, at=at)):
            numbers = frame.select_dtypes("number").to_numpy(dtype=float)
            assert np.all(np.isfinite(numbers)), frame


def _tiny_answers(model: Model, history: History) -> list[pd.DataFrame]:
    users = ["u1", "u2"]
    return [
        model.interest(history, users, horizon=DAY),
        model.p_return(history, users, horizon=DAY),
        model.p_buy(history, users, horizon=DAY),
        model.expected_return_time(history, users),
        model.recommend(history, users, k=3, exclude_bought=True),
    ]


def test_taobao_interest_ranks_next_day_engagement(fitted: DecayModel, taobao: EventStore) -> None:
    interest = fitted.interest(snapshot(taobao, at=CUT), horizon=DAY)
    assert interest.groupby("user_id").p_engage.apply(lambda s: s.is_monotonic_decreasing).all()
    assert interest.p_engage.between(0, 1).all() and (interest.half_life_days > 0).all()
    label = engagement_labels(taobao, interest, at=CUT, horizon=DAY)
    interest_auc = roc_auc_score(label, interest.p_engage)
    assert interest_auc > 0.70, interest_auc

    buy = fitted.p_buy(snapshot(taobao, at=CUT), horizon=DAY)
    buy_auc = roc_auc_score(purchase_labels(taobao, buy.user_id, at=CUT, horizon=DAY), buy.p_buy)
    ret = fitted.p_return(snapshot(taobao, at=CUT), horizon=DAY)
    assert ret.p_return.between(0, 1).all() and (buy.p_buy <= ret.p_return + 1e-12).all()
    print(f"interest AUC {interest_auc:.3f}, purchase AUC {buy_auc:.3f}")
    assert buy_auc > 0.5, buy_auc


def test_recommendations_are_ranked_and_skip_purchases(
    fitted: DecayModel, taobao: EventStore
) -> None:
    recs = fitted.recommend(snapshot(taobao, at=CUT), k=10)
    assert recs.groupby("user_id").size().eq(10).all()
    assert recs.groupby("user_id").score.apply(lambda s: s.is_monotonic_decreasing).all()
    assert not recs.duplicated(["user_id", "item_id"]).any()
    bought = taobao.con.execute(
        "SELECT u.user_id, i.item_id FROM events e JOIN users u USING (user_idx)"
        " JOIN items i USING (item_idx) WHERE behavior = 3 AND ts < ?",
        [CUT],
    ).fetchall()
    assert not set(zip(recs.user_id, recs.item_id, strict=True)) & set(bought)


def test_a_log_without_categories_is_modelled_per_user(store: EventStore, tmp_path: Path) -> None:
    """One implicit category: recency and frequency count, and the answer says so."""
    base = int(datetime(2021, 1, 1, tzinfo=UTC).timestamp())
    rows = ["user_id,item_id,ts"]
    for user, gaps in (("often", range(0, 300, 5)), ("once", [0]), ("gone", range(0, 60, 3))):
        rows += [f"{user},i{g % 7},{base + g * 86_400}" for g in gaps]
    path = tmp_path / "orders.csv"
    path.write_text("\n".join(rows) + "\n")
    mapping = ColumnMapping(user_col="user_id", item_col="item_id", time_col="ts",
                            behavior="buy", time_format="epoch_s")  # fmt: skip
    ingest_file(store, path, "generic", mapping=mapping)
    at = datetime.fromtimestamp(base + 301 * 86_400, tz=UTC)
    model = DecayModel().fit(store, cutoff=at)
    now = snapshot(store, at=at)
    p = model.p_return(now, horizon=timedelta(days=30)).set_index("user_id").p_return
    assert p["often"] > p["gone"] and p["often"] > p["once"], p
    interest = model.interest(now, horizon=DAY)
    assert set(interest.category_id) == {UNCATEGORISED}
    assert model.metrics_["pairs"] == 3


def test_purchases_without_buys_are_not_answered(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "views.csv"
    path.write_text("1,1,1,pv,1600000000\n1,2,1,pv,1600086400\n2,1,1,pv,1600000000\n")
    ingest_file(store, path, "taobao")
    model = DecayModel().fit(store, cutoff=datetime(2020, 9, 20, tzinfo=UTC))
    assert "p_buy" not in model.answers and "p_return" in model.answers
