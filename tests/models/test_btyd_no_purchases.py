"""btyd on logs without purchases (MovieLens ratings): the return model alone, said so;
and its fitting messages name the way to pass a penalizer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ebbtide.errors import ConvergenceWarning, DataQualityWarning, UnsupportedQueryError
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.base import Model
from ebbtide.models.btyd import MIN_BUYERS, BTYDConfig, BTYDModel
from ebbtide.store import EventStore

MONTH = timedelta(days=30)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory, datasets: Path):
    with EventStore(tmp_path_factory.mktemp("ml100k") / "s.duckdb") as store:
        ingest_file(store, datasets / "ml-100k/ml-100k.inter", "movielens")
        yield store


def test_views_only_fit_the_return_model_and_leave_purchases_out(
    movielens: EventStore, tmp_path: Path
) -> None:
    last = movielens.con.execute("SELECT max(ts) FROM events").fetchone()[0]
    cut = last + timedelta(seconds=1) - MONTH
    history = snapshot(movielens, at=cut)
    with pytest.warns(DataQualityWarning, match="purchase model not fitted: 0 customer"):
        model = BTYDModel().fit(history)
    assert model.answers == {"p_return", "expected_return_time"}
    assert model.metrics_["buyers"] == 0 and "not fitted" in model.metrics_["buy_model"]
    for ask in (model.p_buy, model.expected_purchases):
        with pytest.raises(UnsupportedQueryError, match="does not answer p_buy"):
            ask(history, horizon=MONTH)
    p = model.p_return(history, horizon=MONTH)
    came_back = set(
        movielens.con.execute(
            "SELECT DISTINCT user_id FROM events JOIN users USING (user_idx) WHERE ts >= ?",
            [cut],
        )
        .df()
        .user_id
    )
    returned = p.user_id.isin(came_back)
    assert len(p) == 782 and 0.08 < returned.mean() < 0.13  # about 1 in 10 comes back
    assert abs(p.p_return.mean() - returned.mean()) < 0.05  # calibrated on average
    assert roc_auc_score(returned, p.p_return) > 0.85  # recency alone gives 0.84
    loaded = Model.load(model.save(tmp_path / "m"))
    assert loaded.answers == model.answers
    np.testing.assert_allclose(loaded.p_return(history, horizon=MONTH).p_return, p.p_return)


def test_a_doubtful_fit_names_the_penalizer_option(store: EventStore, tmp_path: Path) -> None:
    """Buyers who never buy twice: purchase rate and dropout cannot be told apart."""
    log = tmp_path / "once.csv"
    start = int(datetime(2017, 11, 1, tzinfo=UTC).timestamp())
    log.write_text(
        "".join(
            f"{u},1,1,pv,{start + u * 86_400}\n{u},2,1,buy,{start + u * 86_400 + 60}\n"
            f"{u},3,1,pv,{start + (u + 3) * 86_400}\n"
            for u in range(1, MIN_BUYERS + 3)
        )
    )
    ingest_file(store, log, "taobao")
    with pytest.warns(ConvergenceWarning, match="ebbtide train --penalizer 0.001"):
        BTYDModel().fit(store, cutoff=datetime(2017, 12, 1, tzinfo=UTC))
    assert BTYDModel(BTYDConfig(penalizer=0.001)).config.penalizer == 0.001
