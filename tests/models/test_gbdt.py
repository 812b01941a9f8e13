"""The gbdt family on the real Taobao slice: honest windows, sane accuracy, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ebbtide.datasets import taobao_sample_path
from ebbtide.errors import ConfigError
from ebbtide.features import temporal_split
from ebbtide.ingest import ingest_file
from ebbtide.models.base import Model
from ebbtide.models.gbdt import GBDTConfig, GBDTModel
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)  # 2017-12-02 00:00 China time
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def taobao(tmp_path_factory: pytest.TempPathFactory):
    with EventStore(tmp_path_factory.mktemp("taobao") / "s.duckdb") as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        yield store


@pytest.fixture(scope="module")
def model(taobao: EventStore) -> GBDTModel:
    return GBDTModel().fit(taobao, cutoff=CUT)


def test_category_reengagement_and_purchase_beat_chance(taobao: EventStore, model: GBDTModel):
    split = temporal_split(taobao, cutoff=CUT, horizon=DAY)
    target = split.target
    interest = model.interest(at=CUT, horizon=DAY)
    assert len(interest) == 15_930  # every (user, category) touched before the cut
    user = {u: i for i, u in enumerate(model.ids_.user_ids)}
    category = {c: i for i, c in enumerate(model.ids_.category_ids)}
    engaged = set(zip(target.user_idx.tolist(), target.category_idx.tolist(), strict=True))
    y = np.array(
        [
            (user[u], category[c]) in engaged
            for u, c in zip(interest.user_id, interest.category_id, strict=True)
        ]
    )
    assert 0.10 < y.mean() < 0.16  # about 13% of pairs come back within the day
    assert roc_auc_score(y, interest.p_engage) > 0.70
    p_buy = model.p_buy(at=CUT, horizon=DAY)
    buyers = set(target.user_idx[target.behavior == 3].tolist())
    bought = np.array([user[u] in buyers for u in p_buy.user_id])
    assert roc_auc_score(bought, p_buy.p_buy) > 0.55


def test_save_load_same_seed_same_numbers(taobao: EventStore, model: GBDTModel, tmp_path: Path):
    before = model.p_return(["1", "100"], at=CUT, horizon=DAY)
    loaded = Model.load(model.save(tmp_path / "m"), taobao)
    pd.testing.assert_frame_equal(loaded.p_return(["1", "100"], at=CUT, horizon=DAY), before)
    again = GBDTModel().fit(taobao, cutoff=CUT)
    pd.testing.assert_frame_equal(again.p_return(["1", "100"], at=CUT, horizon=DAY), before)


def test_horizon_must_match_training(model: GBDTModel) -> None:
    with pytest.raises(ConfigError, match="1-day horizon"):
        model.p_return(["1"], at=CUT, horizon=timedelta(days=3))
    with pytest.raises(ConfigError):
        GBDTConfig(anchors=0)
