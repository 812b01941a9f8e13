"""gbdt answers any horizon from one set of classifiers, monotone in the horizon, and its
stacked training windows never read an event at or after the cut-off."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.gbdt import GBDTConfig, GBDTModel, default_horizons
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

SYNTH = SynthConfig(
    users=300,
    days=100.0,
    categories=12,
    items_per_category=20,
    events_per_user_day=1.0,
    dormant_share=0.7,
    dormancy_mean_days=40.0,
    behavior_shares=(0.8, 0.08, 0.04, 0.08),
    seed=3,
)
CUT = SYNTH.start + timedelta(days=80)
HORIZONS = [timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=30)]
SMALL = GBDTConfig(max_iter=40, max_rows=20_000)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic log whole, and only its events before the cut-off."""
    folder = tmp_path_factory.mktemp("gbdt-horizons")
    log = generate(SYNTH)
    before = dataclasses.replace(
        log, events=log.events.filter(pc.less(log.events["ts"], int(CUT.timestamp())))
    )
    made = {}
    for name, part in (("whole", log), ("past", before)):
        write_taobao_csv(part, folder / f"{name}.csv")
        made[name] = EventStore(folder / f"{name}.duckdb")
        ingest_file(made[name], folder / f"{name}.csv", "taobao")
    yield made
    for store in made.values():
        store.close()


@pytest.fixture(scope="module")
def model(stores) -> GBDTModel:
    return GBDTModel(SMALL).fit(stores["whole"], cutoff=CUT)


def test_answers_every_horizon_monotone_per_user(model: GBDTModel, stores) -> None:
    history = snapshot(stores["whole"], at=CUT)
    assert model.answers == {"p_return", "p_buy", "interest"}
    assert model.horizons_days_[0] == pytest.approx(1 / 24)
    assert model.horizons_days_[-1] == pytest.approx(40.0, rel=0.05)  # half the 80 days
    for query, column in (("p_return", "p_return"), ("p_buy", "p_buy")):
        answers = [getattr(model, query)(history, horizon=h) for h in HORIZONS]
        p = np.column_stack([a[column].to_numpy() for a in answers])
        assert all((a.user_id == answers[0].user_id).all() for a in answers)
        assert ((p >= 0) & (p <= 1)).all()
        assert (np.diff(p, axis=1) >= -1e-12).all(), query  # never falls as H grows
        assert p[:, -1].mean() > p[:, 0].mean() + 0.1, query  # and does grow
    engage = [model.interest(history, horizon=h).p_engage.to_numpy() for h in HORIZONS]
    assert (np.diff(np.column_stack(engage), axis=1) >= -1e-12).all()


def test_thirty_day_return_beats_chance(model: GBDTModel, stores) -> None:
    from sklearn.metrics import roc_auc_score

    answer = model.p_return(snapshot(stores["whole"], at=CUT), horizon=timedelta(days=30))
    came_back = set(
        stores["whole"]
        .con.execute(
            "SELECT DISTINCT user_id FROM events JOIN users USING (user_idx)"
            " WHERE ts >= ? AND ts < ?",
            [CUT, CUT + timedelta(days=30)],
        )
        .df()
        .user_id
    )
    returned = answer.user_id.isin(came_back)
    assert 0.1 < returned.mean() < 0.9
    assert roc_auc_score(returned, answer.p_return) > 0.7


def test_fit_reads_nothing_at_or_after_the_cutoff(model: GBDTModel, stores) -> None:
    """Same classifiers from the whole log and from its past only: no window peeked."""
    alone = GBDTModel(SMALL).fit(stores["past"], cutoff=CUT)
    assert alone.metrics_ == model.metrics_
    for h in HORIZONS:
        for query in ("p_return", "p_buy", "interest"):
            pd.testing.assert_frame_equal(
                getattr(alone, query)(snapshot(stores["past"], at=CUT), horizon=h),
                getattr(model, query)(snapshot(stores["whole"], at=CUT), horizon=h),
                obj=f"{query} at {h}",
            )


def test_rows_are_capped_and_horizons_can_be_chosen(stores, tmp_path: Path) -> None:
    config = GBDTConfig(max_iter=20, max_rows=1_000, horizons_days=(1.0, 7.0), horizon_days=3.0)
    model = GBDTModel(config).fit(stores["whole"], cutoff=CUT)
    assert list(model.horizons_days_) == [1.0, 3.0, 7.0]
    # 3 horizons x 4 anchors = 12 blocks of at most 1000 // 12 rows each
    assert model.metrics_["return_rows"] <= 1_000 < model.metrics_["return_rows_before_cap"]
    again = GBDTModel(config).fit(stores["whole"], cutoff=CUT)
    history = snapshot(stores["whole"], at=CUT)
    pd.testing.assert_frame_equal(
        again.p_buy(history, horizon=timedelta(days=2)),
        model.p_buy(history, horizon=timedelta(days=2)),
    )


def test_default_grid_follows_the_log_span() -> None:
    assert default_horizons(1000.0)[-1] == 365.0
    assert default_horizons(160.0)[-3:] == (30.0, 60.0, 80.0)
    assert default_horizons(2.0) == (1 / 24, 3 / 24, 6 / 24, 12 / 24, 1.0)
    assert default_horizons(0.02) == (0.01,)
