"""`neural` keeps its two time scales apart, recovers the session scale and the daily cycle.

A CI-sized version of bench/two_scale_recovery.py: a small `two_scale_config` log (interest
half-lives 1–10 days, session half-lives 0.2–2 hours, a daily cycle of amplitude 0.6 peaking
at 21:00 China time).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.neural import NeuralConfig, NeuralModel
from ebbtide.store import EventStore
from ebbtide.synthetic import generate, two_scale_config, write_taobao_csv

SETTINGS = {
    "epochs": 6,
    "validation_days": 0.0,
    "max_train_seconds": 600.0,
    "rate_lr_scale": 10.0,
    "item_weight": 0.0,
    "item_epochs": 1,
    "hidden": 16,
    "embedding": 8,
    "rank": 4,
    "time_zone": "Asia/Shanghai",
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    cfg = two_scale_config(users=120, seed=3, categories=4)
    log = generate(cfg)
    folder = tmp_path_factory.mktemp("two_scales")
    write_taobao_csv(log, folder / "log.csv")
    with EventStore(folder / "s.duckdb") as store:
        ingest_file(store, folder / "log.csv", "taobao")
        cutoff = cfg.start + timedelta(days=cfg.days)
        model = NeuralModel(NeuralConfig(**SETTINGS)).fit(store, cutoff=cutoff)
        yield model, log, snapshot(store, at=cutoff)


def test_scales_stay_apart_and_the_session_scale_is_recovered(fitted) -> None:
    model, log, _ = fitted
    truth = log.truth_categories.to_pandas().set_index("category_id")
    table = model.half_lives().set_index("category_id").loc[truth.index]
    split = 0.5  # days: session half-lives are shorter, interest ones longer
    assert (table.interest_half_life_days > split).all()
    assert (table.session_half_life_days < split).all()
    session_error = (table.session_half_life_days / truth.session_half_life_days - 1).abs()
    assert session_error.median() <= 0.3
    for scale in ("interest", "session"):
        point = table[f"{scale}_half_life_days"]
        assert (table[f"{scale}_low"] <= point).all() and (point <= table[f"{scale}_high"]).all()


def test_the_daily_cycle_is_recovered(fitted) -> None:
    model, log, _ = fitted
    cycle = log.truth_cycle.to_pylist()[0]
    assert model.cycle.daily_amplitude == pytest.approx(cycle["daily_amplitude"], rel=0.2)
    gap = abs(model.cycle.peak_hour - cycle["peak_hour"])
    assert min(gap, 24 - gap) <= 1.5
    assert model.metrics_["daily_cycle_amplitude"] == model.cycle.daily_amplitude


def test_interest_splits_the_level_into_its_parts(fitted) -> None:
    model, _, history = fitted
    table = model.interest(history, horizon=timedelta(days=1))
    parts = table.baseline + table.excitation + table.session
    np.testing.assert_allclose(table.level, parts, rtol=1e-9)
    assert (table.usual >= table.baseline).all()  # β ≤ 1 is a share of the usual level
    assert (table.half_life_days > table.session_half_life_days).all()


def test_quiet_hours_are_short_operational_hours(fitted) -> None:
    """The forecast follows the cycle: an hour at the trough (09:00 China time, twelve hours
    from the 21:00 peak) is a short operational stretch, an hour at the peak a long one."""
    model, _, history = fitted
    midnight = history.at.timestamp() / 86_400  # midnight in China
    trough = model.cycle.span(midnight + 9 / 24, 1 / 24)
    peak = model.cycle.span(midnight - 3 / 24, 1 / 24)
    assert trough < 0.6 / 24 and peak > 1.4 / 24
    hour = model.p_return(history, horizon=timedelta(hours=1)).p_return
    day = model.p_return(history, horizon=timedelta(days=1)).p_return
    assert (hour <= day).all()
