"""The daily/weekly cycle: recovered from event times, a proper change of clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ebbtide.features.cycle import Cycle
from ebbtide.synthetic import generate, two_scale_config

EPOCH_DAY = 17_500.0  # 2017-11-30 (UTC), in days since the epoch


@pytest.fixture(scope="module")
def synthetic_cycle() -> tuple[Cycle, dict]:
    log = generate(two_scale_config(users=150, seed=5))
    t = log.events.column("ts").to_numpy().astype(np.float64) / 86_400.0
    end = log.config.start.timestamp() / 86_400.0 + log.config.days
    truth = log.truth_cycle.to_pylist()[0]
    return Cycle.fit(t, end=end, time_zone=truth["time_zone"]), truth


def test_recovers_the_daily_amplitude_and_peak(synthetic_cycle) -> None:
    cycle, truth = synthetic_cycle
    assert cycle.daily_amplitude == pytest.approx(truth["daily_amplitude"], rel=0.2)
    gap = abs(cycle.peak_hour - truth["peak_hour"]) % 24.0
    assert min(gap, 24.0 - gap) <= 1.5
    assert "weekly" in cycle.note  # 20 days: too short to tell a weekly cycle


def test_warp_is_the_integral_of_the_rate(synthetic_cycle) -> None:
    cycle, _ = synthetic_cycle
    t = EPOCH_DAY + np.linspace(0.0, 3.0, 2001)
    warped = cycle.warp(t)
    assert np.all(np.diff(warped) > 0)
    slope = np.diff(warped) / np.diff(t)
    midpoints = 0.5 * (t[1:] + t[:-1])
    np.testing.assert_allclose(slope, cycle.rate(midpoints), rtol=1e-4, atol=1e-6)
    # with daily harmonics only, a whole day is one operational day wherever it starts
    for start in (0.0, 0.3, 0.77):
        assert cycle.span(EPOCH_DAY + start, 1.0) == pytest.approx(1.0, abs=1e-9)
    assert cycle.rate(t).min() >= 0.1 - 1e-12


def test_round_trips_through_an_array(synthetic_cycle) -> None:
    cycle, _ = synthetic_cycle
    again = Cycle.from_array(cycle.to_array())
    t = EPOCH_DAY + np.linspace(0.0, 2.0, 50)
    np.testing.assert_array_equal(again.warp(t), cycle.warp(t))
    assert again.peak_hour == cycle.peak_hour


def test_a_time_zone_moves_the_peak_not_the_forecast() -> None:
    rng = np.random.default_rng(0)
    # events peaking at 13:00 UTC: 21:00 in Shanghai
    t = (
        EPOCH_DAY
        - 10.0
        + np.floor(rng.uniform(0, 10, 20_000))
        + (13 + rng.normal(0, 2, 20_000)) / 24
    )
    end = EPOCH_DAY
    utc = Cycle.fit(t, end=end, time_zone="UTC")
    china = Cycle.fit(t, end=end, time_zone="Asia/Shanghai")
    assert utc.peak_hour == pytest.approx(13.0, abs=0.5)
    assert china.peak_hour == pytest.approx(21.0, abs=0.5)
    grid = end + np.linspace(0, 1, 25)
    np.testing.assert_allclose(utc.rate(grid), china.rate(grid), atol=1e-9)


def test_dates_and_short_logs_give_no_daily_cycle() -> None:
    rng = np.random.default_rng(1)
    dates = EPOCH_DAY - np.floor(rng.uniform(1, 60, 5_000))  # every event at midnight
    cycle = Cycle.fit(dates, end=EPOCH_DAY)
    assert cycle.daily_amplitude == 0.0 and math.isnan(cycle.peak_hour)
    assert "dates" in cycle.note
    assert np.isclose(np.median(np.abs(cycle.periods - 7.0 / np.arange(1, 3))), 0.0)
    few = Cycle.fit(EPOCH_DAY - rng.uniform(0, 5, 50), end=EPOCH_DAY)
    assert few.is_flat and "no cycle" in few.note
    np.testing.assert_array_equal(few.warp([1.0, 2.0]), [1.0, 2.0])
