"""Private aggregates: the mechanism's noise, bounds and thresholds, on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ebbtide.aggregates import Release, ReleaseConfig, discrete_laplace
from ebbtide.errors import ConfigError


@pytest.mark.parametrize("scale", [0.5, 2.0, 25.0])
def test_discrete_laplace_has_the_stated_spread(scale: float) -> None:
    draws = discrete_laplace(np.random.default_rng(7), scale, 200_000)
    assert draws.dtype == np.int64
    q = math.exp(-1.0 / scale)
    variance = 2 * q / (1 - q) ** 2
    assert abs(draws.mean()) < 4 * math.sqrt(variance / draws.size)
    assert draws.var() == pytest.approx(variance, rel=0.03)
    # P(0) = (1 - q) / (1 + q): the mass at zero pins the shape, not just the spread
    assert (draws == 0).mean() == pytest.approx((1 - q) / (1 + q), abs=0.005)


def _one_group_per_user(users: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(users)], "g": "a", "rows": 1})


def test_noise_scale_is_sensitivity_over_epsilon() -> None:
    """2,000 groups of 50 users, one group per user: the sensitivity is 1, so the noise
    over the groups has the discrete Laplace spread of scale 1 / ε."""
    groups, size, epsilon = 2000, 50, 0.5
    frame = pd.DataFrame({"user_id": range(groups * size), "g": np.arange(groups * size) % groups})
    config = ReleaseConfig(epsilon=epsilon, min_group_users=1, seed=5)
    table = (
        Release(config, tables=1)
        .counts(frame, ["g"], name="t", rows=None, events=False, max_groups=1,
                domain=pd.DataFrame({"g": range(groups)}))
        .table
    )  # fmt: skip
    assert len(table) == groups
    q = math.exp(-epsilon)
    assert (table["users"] - size).std() == pytest.approx(math.sqrt(2 * q) / (1 - q), rel=0.05)
    assert (table["users"] - size).mean() == pytest.approx(0, abs=0.2)


def test_counts_are_non_negative_integers_and_deterministic_with_a_seed() -> None:
    frame = pd.DataFrame(
        {"user_id": np.arange(300) % 30, "g": np.arange(300) % 7, "rows": np.arange(300) % 3}
    )
    config = ReleaseConfig(epsilon=0.05, min_group_users=1, seed=11)
    first = Release(config, tables=1).counts(frame, ["g"], name="t").table
    again = Release(config, tables=1).counts(frame, ["g"], name="t").table
    pd.testing.assert_frame_equal(first, again)
    for column in ("users", "events"):
        assert first[column].dtype == np.int64 and (first[column] >= 0).all()


def test_a_heavy_user_moves_the_counts_by_the_bounds_at_most() -> None:
    light = pd.DataFrame(
        {"user_id": np.repeat(np.arange(50), 2), "g": np.tile(["a", "b"], 50), "rows": 3}
    )
    heavy = pd.DataFrame({"user_id": 999, "g": list("abcdefgh"), "rows": 10_000})
    config = ReleaseConfig(epsilon=1.0, max_groups=2, max_rows=5, min_group_users=1, seed=1)
    domain = pd.DataFrame({"g": list("abcdefgh")})

    def true_bounded(frame: pd.DataFrame) -> pd.DataFrame:
        # the bounding alone: a huge ε makes the noise vanish
        huge = ReleaseConfig(
            epsilon=1e9, max_groups=2, max_rows=5, min_group_users=1, seed=config.seed
        )
        table = Release(huge, tables=1).counts(frame, ["g"], name="t", domain=domain).table
        return table.set_index("g").reindex(list("abcdefgh"), fill_value=0)

    without = true_bounded(light)
    with_heavy = true_bounded(pd.concat([light, heavy]))
    change = (with_heavy - without).abs()
    assert change["users"].sum() <= 2 and change["events"].sum() <= 2 * 5
    assert (change["users"] > 0).sum() <= 2


def test_groups_under_k_are_dropped_and_counted() -> None:
    frame = pd.DataFrame({"user_id": range(25), "g": ["big"] * 20 + ["small"] * 5, "rows": 2})
    released = Release(ReleaseConfig(), tables=1).counts(frame, ["g"], name="per g")
    assert released.table.to_dict(orient="list") == {
        "g": ["big"],
        "users": [20],
        "events": [40],
    }
    assert released.suppressed == 1
    assert "1 group under 10 users left out" in released.note()
    off = Release(ReleaseConfig(min_group_users=1), tables=1).counts(frame, ["g"], name="t")
    assert len(off.table) == 2 and off.suppressed == 0


def test_groups_from_the_data_need_the_higher_threshold() -> None:
    """A category only one user touched is released with probability at most δ."""
    frame = pd.DataFrame({"user_id": range(5000), "g": [f"rare{i}" for i in range(5000)]})
    config = ReleaseConfig(epsilon=1.0, min_group_users=1, delta=1e-3, max_groups=1, seed=2)
    released = Release(config, tables=1).counts(frame, ["g"], name="t", rows=None, events=False)
    assert released.min_group_users > 1 and released.delta == 1e-3
    assert released.suppressed is None  # how many groups the data had is not released
    assert len(released.table) <= 15  # expected at most 5 of 5,000 at δ = 1e-3


def test_the_budget_is_split_and_not_exceeded() -> None:
    frame = _one_group_per_user(30)
    release = Release(ReleaseConfig(epsilon=1.0, seed=0), tables=2)
    assert release.epsilon_per_table == 0.5
    release.counts(frame, ["g"], name="one")
    release.counts(frame, ["g"], name="two")
    with pytest.raises(ConfigError, match="budget is spent"):
        release.counts(frame, ["g"], name="three")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epsilon": 0.0}, "epsilon must be > 0"),
        ({"epsilon": -1.0}, "epsilon must be > 0"),
        ({"epsilon": float("nan")}, "not a number"),
        ({"min_group_users": 0}, "at least 1"),
        ({"max_rows": 0}, "max_rows must be at least 1"),
    ],
)
def test_bad_settings_are_refused_with_a_next_step(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReleaseConfig(**options)
