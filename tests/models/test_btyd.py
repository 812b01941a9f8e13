"""The btyd model through the store: CDNOW's published estimates and honest queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebbtide.errors import EbbtideError
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.base import Model
from ebbtide.models.btyd import BTYDConfig, BTYDModel
from ebbtide.store import EventStore

CUT = datetime(1997, 10, 1, tzinfo=UTC)  # calibration = weeks 1-39 (to 1997-09-30)
HOLDOUT = timedelta(weeks=39)


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory: pytest.TempPathFactory, datasets: Path):
    with EventStore(tmp_path_factory.mktemp("cdnow") / "s.duckdb") as store:
        ingest_file(store, datasets / "cdnow/CDNOW_sample.txt", "cdnow")
        yield store


@pytest.mark.parametrize(
    ("kind", "published"),
    [
        ("pareto_nbd", (0.553, 10.578 * 7, 0.606, 11.669 * 7)),
        ("bgnbd", (0.243, 4.414 * 7, 0.793, 2.426)),
    ],
)
def test_reproduces_published_cdnow_estimates(cdnow: EventStore, kind: str, published) -> None:
    model = BTYDModel(BTYDConfig(kind=kind)).fit(cdnow, cutoff=CUT)
    # Fitted in days; the papers work in weeks, so the time scales alpha, beta are x7.
    assert np.allclose(model.buy_params_, published, rtol=0.01)


def test_holdout_purchases_and_probabilities(cdnow: EventStore) -> None:
    model = BTYDModel().fit(cdnow, cutoff=CUT)
    expected = model.expected_purchases(snapshot(cdnow, at=CUT), horizon=HOLDOUT)
    actual = cdnow.con.execute(
        "SELECT count(DISTINCT (user_idx, ts::DATE)) FROM events WHERE ts >= ? AND ts < ?",
        [CUT, CUT + HOLDOUT],
    ).fetchone()[0]
    assert actual == 1_882
    assert expected.expected_purchases.sum() == pytest.approx(1_665.5, rel=0.01)
    p = model.p_buy(snapshot(cdnow, at=CUT), horizon=HOLDOUT)
    assert p.p_buy.between(0, 1).all() and len(p) == 2_357
    buyers = set(
        r[0]
        for r in cdnow.con.execute(
            "SELECT DISTINCT u.user_id FROM events e JOIN users u USING (user_idx)"
            " WHERE ts >= ? AND ts < ?",
            [CUT, CUT + HOLDOUT],
        ).fetchall()
    )
    # Buyers in the holdout had higher predicted probabilities than the rest.
    bought = p.user_id.isin(buyers)
    assert p.p_buy[bought].mean() > p.p_buy[~bought].mean() + 0.2
    days = model.expected_return_time(snapshot(cdnow, at=CUT))
    assert days.expected_return_days.between(0, 365).all()


def test_save_load_and_no_future(cdnow: EventStore, tmp_path: Path) -> None:
    model = BTYDModel().fit(cdnow, cutoff=CUT)
    history = snapshot(cdnow, at=CUT)
    before = model.p_return(history, ["00004", "00018"], horizon=timedelta(days=30))
    loaded = Model.load(model.save(tmp_path / "m"))
    pd.testing.assert_frame_equal(
        loaded.p_return(history, ["00004", "00018"], horizon=timedelta(days=30)), before
    )
    with pytest.raises(EbbtideError, match="does not answer recommend"):
        model.recommend(snapshot(cdnow, at=CUT), ["00004"])
