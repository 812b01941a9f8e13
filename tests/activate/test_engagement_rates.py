"""CTR, conversion and satisfaction: hand-built funnels with exact counts, and the intervals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from ebbtide.activate.engagement_rates import (
    FUNNEL_COLUMNS,
    SATISFACTION_COLUMNS,
    RatesConfig,
    engagement_events,
    engagement_rates,
    wilson_interval,
)
from ebbtide.errors import ConfigError
from ebbtide.ingest import ColumnMapping, ingest_file
from ebbtide.store import EventStore

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "feedback.csv"

T0 = pd.Timestamp("2024-05-01 12:00", tz="UTC")


def _events(*rows: tuple) -> pd.DataFrame:
    """Rows of (user, item, behavior, minutes after T0[, placement[, value]])."""
    records = []
    for row in rows:
        user, item, behavior, minutes, *rest = row
        placement = rest[0] if rest else None
        value = rest[1] if len(rest) > 1 else np.nan
        records.append(
            {
                "user_id": user,
                "item_id": item,
                "behavior": behavior,
                "ts": T0 + pd.Timedelta(minutes=minutes),
                "placement": placement,
                "value": value,
            }
        )
    return pd.DataFrame(records)


def _overall(rates) -> dict:
    return rates.funnel[rates.funnel["by"] == "overall"].iloc[0].to_dict()


def _counts(rates) -> tuple[int, int, int, int]:
    row = _overall(rates)
    return (row["impressions"], row["clicks"], row["unattributed_clicks"], row["conversions"])


def test_a_hand_built_funnel_has_exact_counts_and_rates():
    events = _events(
        ("u1", "a", "impression", 0, "home"),
        ("u1", "b", "impression", 0, "home"),
        ("u1", "c", "impression", 0, "home"),
        ("u1", "a", "click", 5, "home"),
        ("u1", "a", "buy", 120),
        ("u2", "a", "impression", 10, "home"),
        ("u2", "d", "impression", 10, "email"),
        ("u2", "d", "click", 20, "email"),
        ("u2", "d", "view", 21),
    )
    rates = engagement_rates(events)
    assert list(rates.funnel.columns) == FUNNEL_COLUMNS
    assert _counts(rates) == (5, 2, 0, 1)
    overall = _overall(rates)
    assert overall["users"] == 2
    assert overall["ctr"] == pytest.approx(2 / 5)
    assert overall["conversion"] == pytest.approx(1 / 2)
    assert overall["buys_per_impression"] == pytest.approx(1 / 5)
    placements = rates.funnel[rates.funnel["by"] == "placement"].set_index("group")
    assert placements.loc["home", ["impressions", "clicks", "conversions"]].tolist() == [4, 1, 1]
    assert placements.loc["email", ["impressions", "clicks", "conversions"]].tolist() == [1, 1, 0]
    for name in ("ctr", "conversion", "buys_per_impression"):
        assert (rates.funnel[f"{name}_low"] <= rates.funnel[name]).all()
        assert (rates.funnel[name] <= rates.funnel[f"{name}_high"]).all()


def test_a_click_without_an_impression_is_unattributed_and_not_in_ctr():
    events = _events(
        ("u1", "a", "impression", 0),
        ("u1", "b", "click", 1),  # another item
        ("u2", "a", "click", 1),  # another user
    )
    rates = engagement_rates(events)
    assert _counts(rates) == (1, 0, 2, 0)
    assert _overall(rates)["ctr"] == 0.0
    assert any("2 clicks match no impression" in note for note in rates.notes)


def test_the_click_window_is_closed_at_its_end():
    events = _events(
        ("u1", "a", "impression", 0),
        ("u1", "a", "click", 60),  # exactly one hour: counts
        ("u2", "a", "impression", 0),
        ("u2", "a", "click", 60.02),  # just after: unattributed
        ("u3", "a", "click", 0),  # before its impression: unattributed
        ("u3", "a", "impression", 1),
    )
    assert _counts(engagement_rates(events)) == (3, 1, 2, 0)
    wider = RatesConfig(click_window=timedelta(hours=2))
    assert _counts(engagement_rates(events, config=wider)) == (3, 2, 1, 0)


def test_an_impression_is_clicked_at_most_once():
    one = _events(("u1", "a", "impression", 0), ("u1", "a", "click", 1), ("u1", "a", "click", 2))
    rates = engagement_rates(one)
    assert _counts(rates) == (1, 1, 1, 0)
    assert _overall(rates)["ctr"] == 1.0
    # two impressions, then two clicks: each click takes one
    two = _events(
        ("u1", "a", "impression", 0),
        ("u1", "a", "impression", 10),
        ("u1", "a", "click", 11),
        ("u1", "a", "click", 12),
    )
    assert _counts(engagement_rates(two)) == (2, 2, 0, 0)


def test_placements_must_agree_when_both_are_named():
    events = _events(
        ("u1", "a", "impression", 0, "home"),
        ("u1", "a", "click", 1, "email"),  # another placement: unattributed
        ("u2", "a", "impression", 0, "home"),
        ("u2", "a", "click", 1),  # no placement on the click: matches
        ("u3", "a", "impression", 0),
        ("u3", "a", "click", 1, "home"),  # none on the impression: matches
    )
    rates = engagement_rates(events)
    assert _counts(rates) == (3, 2, 1, 0)
    placements = rates.funnel[rates.funnel["by"] == "placement"].set_index("group")
    assert placements.loc["home", "clicks"] == 1  # u2's click, counted with its impression
    assert placements.loc["(none)", "clicks"] == 1
    assert placements.loc["email", "unattributed_clicks"] == 1


def test_conversion_needs_a_buy_of_the_clicked_item_within_the_attribution_window():
    events = _events(
        ("u1", "a", "impression", 0),
        ("u1", "a", "click", 1),
        ("u1", "a", "buy", 1 + 24 * 60 + 1),  # a minute too late
        ("u2", "a", "impression", 0),
        ("u2", "a", "click", 1),
        ("u2", "b", "buy", 30),  # another item
        ("u3", "a", "impression", 0),
        ("u3", "a", "click", 1),
        ("u3", "a", "buy", 1 + 24 * 60),  # exactly at the end of the window
        ("u4", "a", "buy", 0),  # a buy before the click does not convert it
        ("u4", "a", "impression", 1),
        ("u4", "a", "click", 2),
    )
    rates = engagement_rates(events)
    assert _counts(rates) == (4, 4, 0, 1)
    assert _overall(rates)["conversion"] == pytest.approx(0.25)


def test_one_buy_converts_one_click_and_an_item_less_click_converts_on_any_buy():
    events = _events(
        ("u1", "a", "impression", 0),
        ("u1", "a", "click", 1),
        ("u1", "a", "impression", 100),
        ("u1", "a", "click", 101),
        ("u1", "a", "buy", 200),  # goes to the latest click only
        ("u2", None, "impression", 0, "newsletter"),
        ("u2", None, "click", 3, "newsletter"),
        ("u2", "z", "buy", 60),
    )
    rates = engagement_rates(events)
    assert _counts(rates) == (3, 3, 0, 2)
    placements = rates.funnel[rates.funnel["by"] == "placement"].set_index("group")
    assert placements.loc["newsletter", "conversions"] == 1


def test_rows_by_arm_and_segment_with_users_lacking_an_arm_noted():
    events = _events(
        ("u1", "a", "impression", 0),
        ("u1", "a", "click", 1),
        ("u2", "a", "impression", 0),
        ("u3", "a", "impression", 0),
        ("u3", "a", "click", 1),
        ("u4", "a", "impression", 0),
    )
    arms = {"u1": "push", "u2": "push", "u3": "control"}
    segments = pd.Series({"u1": "active", "u2": "dormant", "u3": "active", "u4": "dormant"})
    rates = engagement_rates(events, arms=arms, segments=segments, control="control")
    by_arm = rates.funnel[rates.funnel["by"] == "arm"].set_index("group")
    assert by_arm["impressions"].to_dict() == {"control": 1, "push": 2}
    assert by_arm["ctr"].to_dict() == {"control": 1.0, "push": 0.5}
    by_segment = rates.funnel[rates.funnel["by"] == "segment"].set_index("group")
    assert by_segment["clicks"].to_dict() == {"active": 2, "dormant": 0}
    assert any("1 users with impressions or ratings have no arm" in n for n in rates.notes)
    ctr = rates.arm_effects[rates.arm_effects["metric"] == "ctr"].iloc[0]
    assert (ctr["arm"], ctr["control"], ctr["diff"]) == ("push", "control", -0.5)


def test_impressions_are_counted_in_the_window_and_followed_past_it():
    since, until = T0, T0 + pd.Timedelta(hours=1)
    events = _events(
        ("u1", "a", "impression", -5),  # before: not counted, but it explains the click
        ("u1", "a", "click", 2),
        ("u2", "a", "impression", 50),  # inside, clicked and bought after the window
        ("u2", "a", "click", 70),
        ("u2", "a", "buy", 600),
        ("u3", "a", "impression", 61),  # after: not counted
        ("u4", "a", "click", 30),  # inside, unexplained
        ("u4", "x", "rate", 30, None, 4.0),
        ("u4", "x", "rate", 90, None, 1.0),  # a rating after the window
    )
    rates = engagement_rates(events, since=since, until=until)
    assert _counts(rates) == (1, 1, 1, 1)
    assert rates.satisfaction.iloc[0]["ratings"] == 1


def test_satisfaction_is_the_mean_rating_with_a_t_interval():
    values = [5.0, 4.0, 3.0, 5.0, 2.0]
    events = _events(*((f"u{i}", "x", "rate", i, None, v) for i, v in enumerate(values)))
    events["category_id"] = ["c1", "c1", "c2", "c2", "c2"]
    rates = engagement_rates(events)
    assert rates.funnel.empty
    assert list(rates.satisfaction.columns) == SATISFACTION_COLUMNS
    overall = rates.satisfaction.iloc[0]
    assert (overall["by"], overall["users"], overall["ratings"]) == ("overall", 5, 5)
    assert overall["mean_rating"] == pytest.approx(np.mean(values))
    # one rating per user: the clustered interval is the textbook one
    low, high = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert (overall["mean_rating_low"], overall["mean_rating_high"]) == pytest.approx((low, high))
    by_category = rates.satisfaction[rates.satisfaction["by"] == "category"].set_index("group")
    assert by_category["mean_rating"].to_dict() == pytest.approx({"c1": 4.5, "c2": 10 / 3})


def test_a_users_many_ratings_count_once_in_the_clustered_interval():
    # u1 rates 5 ten times, everyone else rates 1 once: 2 of 11 users' worth of spread
    rows = [("u1", "x", "rate", i, None, 5.0) for i in range(10)]
    rows += [(f"v{i}", "x", "rate", i, None, 1.0) for i in range(10)]
    events = _events(*rows)
    clustered = engagement_rates(events).satisfaction.iloc[0]
    independent = engagement_rates(events, config=RatesConfig(cluster_by_user=False))
    independent = independent.satisfaction.iloc[0]
    assert clustered["mean_rating"] == independent["mean_rating"] == 3.0
    width = clustered["mean_rating_high"] - clustered["mean_rating_low"]
    assert width > 1.5 * (independent["mean_rating_high"] - independent["mean_rating_low"])


def test_wilson_matches_statsmodels_and_stays_informative_at_0_and_n():
    for x, n in ((0, 10), (10, 10), (3, 10), (1, 1000), (0, 1)):
        low, high = wilson_interval(x, n)
        expected = proportion_confint(x, n, alpha=0.05, method="wilson")
        assert (float(low), float(high)) == pytest.approx(expected)
    low, high = wilson_interval(0, 20)
    assert float(low) == 0.0 and 0.0 < float(high) < 0.2
    low, high = wilson_interval(20, 20)
    assert 0.8 < float(low) < 1.0 and float(high) == 1.0
    low, high = wilson_interval(0, 0)
    assert np.isnan(low) and np.isnan(high)


def test_all_clicked_and_none_clicked_get_wilson_intervals_not_zero_width():
    rows = []
    for i in range(20):
        rows += [(f"a{i}", "x", "impression", 0, "all"), (f"a{i}", "x", "click", 1, "all")]
        rows += [(f"n{i}", "x", "impression", 0, "none")]
    rates = engagement_rates(_events(*rows))
    placements = rates.funnel[rates.funnel["by"] == "placement"].set_index("group")
    expected_none = proportion_confint(0, 20, method="wilson")
    expected_all = proportion_confint(20, 20, method="wilson")
    assert tuple(placements.loc["none", ["ctr_low", "ctr_high"]]) == pytest.approx(expected_none)
    assert tuple(placements.loc["all", ["ctr_low", "ctr_high"]]) == pytest.approx(expected_all)


def test_clustered_intervals_cover_the_true_ctr_where_independent_ones_do_not():
    """200 replicates as 200 arms: users' own CTRs vary (Beta(0.5, 4.5), mean 0.1), so a
    user's ten impressions are correlated; the clustered interval should hold its 95%."""
    rng = np.random.default_rng(7)
    arms_n, users, per = 200, 60, 10
    user = np.repeat(np.arange(arms_n * users), per)
    p_user = rng.beta(0.5, 4.5, arms_n * users)
    ts = T0 + pd.to_timedelta(np.tile(np.arange(per) * 7200, arms_n * users), unit="s")
    shown = pd.DataFrame(
        {"user_id": user.astype(str), "item_id": "x", "behavior": "impression", "ts": ts}
    )
    clicks = shown[rng.random(len(shown)) < p_user[user]].assign(
        behavior="click", ts=lambda f: f["ts"] + pd.Timedelta(minutes=1)
    )
    events = pd.concat([shown, clicks], ignore_index=True)
    arms = pd.Series(
        (np.arange(arms_n * users) // users).astype(str),
        index=np.arange(arms_n * users).astype(str),
    )
    coverage = {}
    for clustered in (True, False):
        rates = engagement_rates(events, arms=arms, config=RatesConfig(cluster_by_user=clustered))
        by_arm = rates.funnel[rates.funnel["by"] == "arm"]
        assert len(by_arm) == arms_n
        coverage[clustered] = ((by_arm["ctr_low"] <= 0.1) & (by_arm["ctr_high"] >= 0.1)).mean()
    assert coverage[True] >= 0.9
    assert coverage[False] < coverage[True] - 0.05


def test_no_impressions_gives_an_empty_funnel_and_says_so():
    rates = engagement_rates(_events(("u1", "a", "view", 0), ("u1", "a", "click", 1)))
    assert rates.funnel.empty and rates.satisfaction.empty
    assert list(rates.funnel.columns) == FUNNEL_COLUMNS
    assert rates.notes == ["no impressions in the events: no click-through or conversion rate"
                           " (1 clicks without one)"]  # fmt: skip
    nothing = engagement_rates(_events(("u1", "a", "view", 0)).iloc[:0])
    assert nothing.empty
    assert json.loads(json.dumps(nothing.to_dict()))["funnel"] == []
    assert "no impressions" in nothing.to_markdown()


def test_bad_inputs_are_refused_with_the_next_step():
    good = _events(("u1", "a", "impression", 0))
    with pytest.raises(ConfigError, match="lack column"):
        engagement_rates(good.drop(columns="ts"))
    with pytest.raises(ConfigError, match="timezone-aware"):
        engagement_rates(good.assign(ts=good["ts"].dt.tz_localize(None)))
    with pytest.raises(ConfigError, match="unknown behaviour"):
        engagement_rates(good.assign(behavior="pv"))
    with pytest.raises(ConfigError, match="rate events have no numeric value"):
        engagement_rates(good.assign(behavior="rate"))
    with pytest.raises(ConfigError, match="control arm 'holdout'"):
        engagement_rates(good, arms={"u1": "push"}, control="holdout")
    with pytest.raises(ConfigError, match="more than one of the arms"):
        engagement_rates(good, arms=pd.Series(["a", "b"], index=["u1", "u1"]))
    with pytest.raises(ConfigError, match="click_window"):
        RatesConfig(click_window=timedelta(hours=-1))


def test_results_are_json_and_markdown_and_small_groups_can_be_left_out():
    events = _events(
        *((f"u{i}", "a", "impression", 0, "home") for i in range(12)),
        ("u0", "a", "click", 1, "home"),
        ("v", "a", "impression", 0, "email"),
        ("u0", "a", "rate", 5, None, 4.0),
    )
    arms = {f"u{i}": ("push" if i % 2 else "control") for i in range(12)} | {"v": "push"}
    rates = engagement_rates(events, arms=arms, control="control")
    data = json.loads(json.dumps(rates.to_dict()))
    assert data["click_window_hours"] == 1.0 and data["attribution_window_hours"] == 24.0
    assert {row["group"] for row in data["funnel"]} == {"all", "home", "email", "push", "control"}
    text = rates.to_markdown()
    assert "| placement | home | 12 | 12 | 1 | 0 | 0 | 8.33% [" in text
    assert "clustered by user" in text
    kept = rates.without_small_groups(10)
    assert set(kept.funnel["group"]) == {"all", "home"}
    assert kept.satisfaction.empty and kept.arm_effects.empty
    assert "5 group(s) of fewer than 10 users left out." in kept.notes


def test_the_readme_example_from_the_store(store: EventStore) -> None:
    """docs/examples/feedback.csv: alice clicks one of three items shown and buys it; bob
    clicks an e-mail 4.5 hours after it was sent (unattributed with the 1-hour window)."""
    mapping = ColumnMapping(
        user_col="user_id", item_col="item_id", category_col="category_id",
        behavior_col="behavior", time_col="timestamp", query_col="query", value_col="value",
        placement_col="placement", rating_range=(1.0, 5.0),
    )  # fmt: skip
    ingest_file(store, EXAMPLE, "generic", mapping=mapping, now=datetime(2027, 1, 1, tzinfo=UTC))
    events = engagement_events(store)
    assert events["behavior"].value_counts().to_dict() == {
        "impression": 4, "click": 2, "rate": 2, "buy": 2,
    }  # fmt: skip
    assert isinstance(events["ts"].dtype, pd.DatetimeTZDtype)
    rates = engagement_rates(events)
    assert _counts(rates) == (4, 1, 1, 1)
    placements = rates.funnel[rates.funnel["by"] == "placement"].set_index("group")
    assert placements.loc["home_recs", ["impressions", "clicks", "conversions"]].tolist() == [
        3,
        1,
        1,
    ]
    assert placements.loc["email:spring-coupon", "unattributed_clicks"] == 1
    assert rates.satisfaction.iloc[0][["ratings", "mean_rating"]].tolist() == [2, 3.0]
    wide = engagement_rates(events, config=RatesConfig(click_window=timedelta(hours=5)))
    assert _counts(wide) == (4, 2, 0, 2)  # bob's e-mail click converts on any buy


def test_the_store_reader_reads_a_margin_around_the_window(store: EventStore, tmp_path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        "user_id,item_id,behavior,timestamp,placement\n"
        "u1,a,impression,2024-05-01T09:50:00Z,home\n"  # before the window, clicked inside
        "u1,a,click,2024-05-01T10:10:00Z,home\n"
        "u2,a,impression,2024-05-01T11:50:00Z,home\n"  # inside, clicked and bought after
        "u2,a,click,2024-05-01T12:20:00Z,home\n"
        "u2,a,buy,2024-05-02T09:00:00Z,\n"
        "u3,a,buy,2024-05-01T11:00:00Z,\n"  # a buy of a user who never clicked
        "u4,a,impression,2024-05-03T11:00:00Z,home\n",  # long after
        encoding="utf-8",
    )
    mapping = ColumnMapping(
        user_col="user_id", item_col="item_id", behavior_col="behavior",
        time_col="timestamp", placement_col="placement",
    )  # fmt: skip
    ingest_file(store, log, "generic", mapping=mapping, now=datetime(2027, 1, 1, tzinfo=UTC))
    since, until = datetime(2024, 5, 1, 10, tzinfo=UTC), datetime(2024, 5, 1, 12, tzinfo=UTC)
    events = engagement_events(store, since=since, until=until)
    assert events["user_id"].tolist() == ["u1", "u1", "u2", "u2", "u2"]
    rates = engagement_rates(events, since=since, until=until)
    assert _counts(rates) == (1, 1, 0, 1)
