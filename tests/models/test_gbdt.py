"""The gbdt family on the real Taobao slice: honest windows, sane accuracy, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ebbtide.errors import ConfigError, EbbtideError
from ebbtide.evaluate import engagement_labels, purchase_labels
from ebbtide.features.history import snapshot
from ebbtide.models.base import Model
from ebbtide.models.gbdt import GBDTConfig, GBDTModel
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)  # 2017-12-02 00:00 China time
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def model(taobao: EventStore) -> GBDTModel:
    return GBDTModel().fit(taobao, cutoff=CUT)


def test_category_reengagement_and_purchase_beat_chance(taobao: EventStore, model: GBDTModel):
    interest = model.interest(snapshot(taobao, at=CUT), horizon=DAY)
    assert len(interest) == 15_930  # every (user, category) touched before the cut
    engaged = engagement_labels(taobao, interest, at=CUT, horizon=DAY)
    assert 0.10 < engaged.mean() < 0.16  # about 13% of pairs come back within the day
    assert roc_auc_score(engaged, interest.p_engage) > 0.70
    p_buy = model.p_buy(snapshot(taobao, at=CUT), horizon=DAY)
    bought = purchase_labels(taobao, p_buy.user_id, at=CUT, horizon=DAY)
    assert roc_auc_score(bought, p_buy.p_buy) > 0.55


def test_save_load_same_seed_same_numbers(taobao: EventStore, model: GBDTModel, tmp_path: Path):
    before = model.p_return(snapshot(taobao, at=CUT), ["1", "100"], horizon=DAY)
    loaded = Model.load(model.save(tmp_path / "m"))
    pd.testing.assert_frame_equal(
        loaded.p_return(snapshot(taobao, at=CUT), ["1", "100"], horizon=DAY), before
    )
    again = GBDTModel().fit(taobao, cutoff=CUT)
    pd.testing.assert_frame_equal(
        again.p_return(snapshot(taobao, at=CUT), ["1", "100"], horizon=DAY), before
    )


def test_any_horizon_is_answered_and_old_saves_are_refused(
    model: GBDTModel, taobao: EventStore, tmp_path: Path
) -> None:
    history = snapshot(taobao, at=CUT)
    grid = model.horizons_days_
    assert grid[0] == pytest.approx(1 / 24) and 2 <= grid[-1] <= 4  # ~7 days of log: 1 h..3 d
    beyond = model.p_return(history, ["1", "100"], horizon=timedelta(days=300))
    at_top = model.p_return(history, ["1", "100"], horizon=timedelta(days=float(grid[-1])))
    pd.testing.assert_frame_equal(beyond, at_top)  # constant past the grid, as documented
    saved = model.save(tmp_path / "m")
    meta = saved / "config.json"
    meta.write_text(meta.read_text().replace('"format_version": 3', '"format_version": 2'))
    with pytest.raises(EbbtideError, match="gbdt format 2; this ebbtide reads format 3"):
        Model.load(saved)
    with pytest.raises(ConfigError, match="anchors"):
        GBDTConfig(anchors=0)
    with pytest.raises(ConfigError, match="horizons_days"):
        GBDTConfig(horizons_days=(1.0, -2.0))
    assert GBDTConfig(horizons_days=[1, 7]).horizons_days == (1.0, 7.0)  # JSON gives lists


def test_a_log_without_categories_is_answered_per_user(tmp_path: Path, datasets: Path) -> None:
    """CDNOW has no categories: interest is the user's own, one implicit category."""
    from ebbtide.features.history import UNCATEGORISED
    from ebbtide.ingest import ingest_file

    cut, quarter = datetime(1997, 10, 1, tzinfo=UTC), timedelta(weeks=13)
    with EventStore(tmp_path / "cdnow.duckdb") as store:
        ingest_file(store, datasets / "cdnow/CDNOW_sample.txt", "cdnow")
        model = GBDTModel(GBDTConfig(max_iter=50)).fit(store, cutoff=cut)
        now = snapshot(store, at=cut)
        p_buy = model.p_buy(now, horizon=quarter)
        assert len(p_buy) == 2357 and p_buy.p_buy.between(0, 1).all()
        assert model.answers == {"p_return", "p_buy", "interest"}
        interest = model.interest(now, horizon=quarter)
        assert set(interest.category_id) == {UNCATEGORISED} and len(interest) == 2357
        loaded = Model.load(model.save(tmp_path / "m"))
        pd.testing.assert_frame_equal(loaded.p_buy(now, horizon=quarter), p_buy)


def test_too_few_examples_of_an_outcome_give_the_base_rate_and_say_so(store: EventStore, tmp_path):
    from ebbtide.errors import DataQualityWarning
    from ebbtide.ingest import ingest_file

    log = tmp_path / "tiny.csv"
    log.write_text(
        "7,1,1,pv,1511544070\n7,2,1,buy,1511644170\n8,1,1,pv,1511744270\n8,3,2,cart,1511844270\n"
    )
    ingest_file(store, log, "taobao")
    cut = datetime(2017, 11, 28, 5, tzinfo=UTC)
    with pytest.warns(DataQualityWarning, match="too few to learn from"):
        tiny = GBDTModel().fit(store, cutoff=cut)
    answer = tiny.p_return(snapshot(store, at=cut), horizon=DAY)
    assert answer["p_return"].nunique() == 1 and 0 < answer["p_return"].iloc[0] < 1
