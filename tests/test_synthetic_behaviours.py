"""Tests of the synthetic searches, recommendations and ratings: shape, determinism, and that
the log follows the truth written beside it (query categories, CTR, conversion, ratings)."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ebbtide.activate.campaign_log import prepare_campaign, read_campaign_log
from ebbtide.errors import ConfigError
from ebbtide.synthetic import SynthConfig, generate
from ebbtide.synthetic_behaviours import (
    ARMS,
    GENERIC_COLUMNS,
    BehaviourConfig,
    BehaviourLog,
    generate_behaviours,
    write_behaviour_truth,
    write_generic_csv,
)

SMALL = BehaviourConfig(log=SynthConfig(users=200, days=4.0, categories=20, seed=11))
#: z of a two-sided 99.9% normal band.
Z999 = 3.29


@pytest.fixture(scope="module")
def medium() -> BehaviourLog:
    """About 250k rows: enough clicks per arm for a binomial band a few points wide."""
    return generate_behaviours(
        BehaviourConfig(log=SynthConfig(users=3000, days=9.0, categories=40, seed=4))
    )


@pytest.fixture(scope="module")
def frame(medium: BehaviourLog) -> pd.DataFrame:
    return medium.events.to_pandas()


def _within_binomial_band(successes: int, trials: int, p: float) -> bool:
    return abs(successes / trials - p) <= Z999 * math.sqrt(p * (1.0 - p) / trials)


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    a, b = generate_behaviours(SMALL), generate_behaviours(SMALL)
    assert a.events.equals(b.events)
    for suffix in (".csv", ".csv.gz"):
        first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        assert write_generic_csv(a, first) == a.events.num_rows
        write_generic_csv(b, second)
        assert first.read_bytes() == second.read_bytes()
    other = dataclasses.replace(SMALL, log=dataclasses.replace(SMALL.log, seed=12))
    assert not generate_behaviours(other).events.equals(a.events)


def test_base_log_and_other_steps_stay_put() -> None:
    """The added steps have streams of their own: the view/cart/fav/buy log is `generate`'s,
    and changing the click model leaves the searches as they were."""
    log = generate_behaviours(SMALL)
    assert log.base.events.equals(generate(SMALL.log).events)
    assert log.base.config == SMALL.log
    clicky = generate_behaviours(dataclasses.replace(SMALL, ctr=(0.3, 0.5)))
    assert clicky.truth_searches.equals(log.truth_searches)
    assert clicky.assignments.column("arm").equals(log.assignments.column("arm"))


def test_file_has_every_behaviour_with_its_fields(tmp_path: Path) -> None:
    log = generate_behaviours(SMALL)
    path = tmp_path / "log.csv"
    write_generic_csv(log, path)
    assert path.read_text().splitlines()[0] == ",".join(GENERIC_COLUMNS)
    read = pd.read_csv(path, dtype={"user_id": str, "item_id": str, "category_id": str})
    assert len(read) == log.events.num_rows
    words = {"view", "cart", "fav", "buy", "search", "click", "impression", "rate"}
    assert set(read.behavior) == words
    search = read[read.behavior == "search"]
    assert search["query"].str.strip().str.len().gt(0).all()
    assert search[["item_id", "category_id"]].isna().all().all()
    others = read[read.behavior != "search"]
    assert others["query"].isna().all() and others[["item_id", "category_id"]].notna().all().all()
    shown = read.behavior.isin(["impression", "click"])
    assert (read.placement[shown] == SMALL.placement).all()
    assert read.placement[~shown].isna().all()
    rated = read.behavior == "rate"
    assert read.value[rated].isin([1, 2, 3, 4, 5]).all() and read.value[~rated].isna().all()
    key = list(zip(read.user_id.astype(str), read.timestamp, strict=True))
    assert key == sorted(key, key=lambda k: (k[0], k[1]))


def test_every_click_follows_an_impression_of_it(frame: pd.DataFrame) -> None:
    columns = ["user_id", "item_id", "placement", "timestamp"]
    impressions = frame[frame.behavior == "impression"][columns].sort_values("timestamp")
    clicks = frame[frame.behavior == "click"][columns].sort_values("timestamp")
    joined = pd.merge_asof(
        clicks,
        impressions.rename(columns={"timestamp": "shown_at"}),
        left_on="timestamp",
        right_on="shown_at",
        by=["user_id", "item_id", "placement"],
    )
    assert len(clicks) > 1000
    assert joined.shown_at.notna().all()
    lag = joined.timestamp - joined.shown_at
    assert lag.min() >= 2 and lag.median() < 60


def test_ctr_and_conversion_per_arm_match_the_truth(
    medium: BehaviourLog, frame: pd.DataFrame
) -> None:
    """Counted on the log as a reader would: clicks per impression, and clicks followed by a
    buy of the same item by the same user within the window."""
    arm_of = medium.assignments.to_pandas().set_index("user_id")["arm"]
    truth = medium.truth_arms.to_pandas().set_index("arm")
    window = int(truth.attribution_window_s.iloc[0])
    shown = frame[frame.behavior == "impression"]
    clicks = frame[frame.behavior == "click"][["user_id", "item_id", "timestamp"]]
    buys = frame[frame.behavior == "buy"][["user_id", "item_id", "timestamp"]]
    pairs = clicks.reset_index().merge(buys, on=["user_id", "item_id"], suffixes=("", "_buy"))
    delay = pairs.timestamp_buy - pairs.timestamp
    converted = set(pairs["index"][(delay > 0) & (delay <= window)])
    clicks = clicks.assign(converted=clicks.index.isin(converted))
    for arm in ARMS:
        n_shown = int((shown.user_id.map(arm_of) == arm).sum())
        arm_clicks = clicks[clicks.user_id.map(arm_of) == arm]
        assert _within_binomial_band(len(arm_clicks), n_shown, truth.ctr[arm]), arm
        n_converted = int(arm_clicks.converted.sum())
        assert _within_binomial_band(n_converted, len(arm_clicks), truth.conversion[arm]), arm
        assert (truth.impressions[arm], truth.clicks[arm]) == (n_shown, len(arm_clicks))
        # Only a repeated click of the same item within a window can count a buy twice.
        assert 0 <= n_converted - truth.conversions[arm] <= 0.01 * len(arm_clicks)


def test_arms_split_users_about_evenly(medium: BehaviourLog) -> None:
    users = medium.truth_arms.column("users").to_pylist()
    assert sum(users) == 3000
    assert abs(users[1] - 1500) <= Z999 * math.sqrt(3000 * 0.25)


def test_queries_name_one_true_category(medium: BehaviourLog) -> None:
    queries = medium.truth_queries.to_pandas()
    assert queries["query"].is_unique
    assert set(medium.truth_searches.column("query").to_pylist()) <= set(queries["query"])
    words = medium.truth_words.to_pandas()
    assert (words[~words.shared].groupby("word").category_id.nunique() == 1).all()
    assert (words[words.shared].groupby("word").category_id.nunique() >= 2).any()
    own = set(zip(words.word[~words.shared], words.category_id[~words.shared], strict=True))
    for text, category in zip(queries["query"], queries.category_id, strict=True):
        assert any((word, category) in own for word in text.split()), text
    assert np.allclose(queries.groupby("category_id").weight.sum(), 1.0)
    assert queries.has_shared_word.any() and (queries.n_words <= 3).all()


def test_searches_announce_what_follows(medium: BehaviourLog, frame: pd.DataFrame) -> None:
    searches = medium.truth_searches.to_pandas()
    assert len(searches) == int((frame.behavior == "search").sum())
    share = searches.kind.value_counts(normalize=True)
    assert 0.05 < share["noise"] < 0.15 and share["new_interest"] > 0.02
    engaged = searches[searches.kind != "noise"]
    assert (engaged.engaged_at >= engaged.timestamp).all()
    # An announced event of the search's category is there (new interests: when in the window).
    events = frame[frame.behavior.isin(["view", "cart", "fav", "buy"])]
    seen = set(zip(events.user_id, events.category_id, events.timestamp, strict=True))
    new = medium.truth_new_interests.to_pandas()
    users = medium.base.truth_users.to_pandas().set_index("user_id")
    cfg = medium.config.log
    end = users.dormant_at_ts.fillna(cfg.start.timestamp() + cfg.days * 86_400)
    live = new[new.first_event_at < new.user_id.map(end)]
    assert len(live) > 1000 and (live.n_events > 0).all()
    for row in live.itertuples():
        assert (row.user_id, row.category_id, row.first_event_at) in seen
    burst = engaged[engaged.kind == "burst"].head(500)
    for row in burst.itertuples():
        assert (row.user_id, row.category_id, row.engaged_at) in seen
    # A new interest is new: the base log has no event of the user in that category.
    base = medium.base.events.to_pandas()
    assert not set(zip(live.user_id, live.category_id, strict=True)) & set(
        zip(base.user_id, base.category_id, strict=True)
    )


def test_ratings_follow_their_model(medium: BehaviourLog, frame: pd.DataFrame) -> None:
    truth = medium.truth_ratings.to_pandas()
    rated = frame[frame.behavior == "rate"]
    assert int(truth.n_ratings.sum()) == len(rated)
    expected = (truth.n_ratings * truth.expected_rating).sum() / truth.n_ratings.sum()
    assert abs(rated.value.mean() - expected) <= 4.0 * rated.value.std() / math.sqrt(len(rated))
    assert truth.expected_rating.between(1, 5).all()
    one = truth.iloc[:3]  # organic, control, personalised of one category
    assert list(one.source) == ["organic", *ARMS]
    shift = medium.config.rating_shift[1]
    assert one.latent_mean.iloc[2] == pytest.approx(one.latent_mean.iloc[0] + shift)


def test_truth_files_and_campaign_log(tmp_path: Path) -> None:
    log = generate_behaviours(SMALL)
    written = write_behaviour_truth(log, tmp_path / "truth")
    names = {p.name for p in written}
    for name in (
        "query_categories.parquet",
        "searches.parquet",
        "arms.parquet",
        "assignments.csv",
        "ratings.parquet",
        "interests.parquet",
        "README.txt",
    ):
        assert name in names and (tmp_path / "truth" / name).exists()
    arms = pq.read_table(tmp_path / "truth" / "arms.parquet").to_pandas()
    assert list(arms.arm) == list(ARMS) and list(arms.ctr) == [0.04, 0.08]
    campaign = read_campaign_log(tmp_path / "truth" / "assignments.csv")
    data = prepare_campaign(
        campaign, arm_col="arm", control="control", outcomes=["clicked", "converted"]
    )
    assert data.arm_counts().sum() == SMALL.log.users and data.dropped.empty
    assert "query_categories.parquet" in (tmp_path / "truth" / "README.txt").read_text()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ctr", (0.1, 1.5)),
        ("conversion", (0.1,)),
        ("noise_search_share", 0.7),
        ("queries_per_category", 0),
        ("slate_size", 2.5),
        ("placement", "a,b"),
        ("attribution_window", timedelta(0)),
        ("log", SynthConfig(basket_size_mean=2.0)),
    ],
)
def test_config_validation_names_field(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"BehaviourConfig\.{name} "):
        BehaviourConfig(**{name: value})


def test_edge_configs_generate() -> None:
    quiet = BehaviourConfig(
        log=SynthConfig(users=30, days=1.0, categories=1, seed=2),
        new_interests_mean=0.0,
        noise_search_share=0.0,
        impression_prob=0.0,
        rating_prob=0.0,
        queries_per_category=64,
    )
    log = generate_behaviours(quiet)
    words = set(log.events.column("behavior").to_pylist())
    assert "impression" not in words and "rate" not in words and "click" not in words
    assert log.truth_new_interests.num_rows == 0
    everything = dataclasses.replace(
        quiet, impression_prob=1.0, ctr=(1.0, 1.0), conversion=(1.0, 1.0), rating_prob=1.0
    )
    log = generate_behaviours(everything)
    arms = log.truth_arms.to_pandas()
    assert (arms.clicks == arms.impressions).all() and (arms.conversions == arms.clicks).all()
    for seed in range(3):  # logs with almost no events: nothing to recommend or engage with
        sparse = SynthConfig(users=3, days=0.5, categories=7, events_per_user_day=0.01, seed=seed)
        generate_behaviours(BehaviourConfig(log=sparse))


def test_cli_writes_the_generic_log_and_its_truth(cli, tmp_path: Path) -> None:
    out = tmp_path / "feedback.csv.gz"
    args = ("synth", "--users", "120", "--days", "3", "--seed", "5", "--out", str(out))
    result = cli.ok(*args, "--behaviours", "all", "--ctr", "0.1,0.3", "--quiet")
    assert "--format generic" in result.stdout and "--query-col query" in result.stdout
    frame = pd.read_csv(out, dtype={"user_id": str, "item_id": str, "category_id": str})
    assert list(frame.columns) == list(GENERIC_COLUMNS)
    assert {"search", "impression", "click", "rate"} <= set(frame.behavior)
    truth = tmp_path / "feedback.truth"
    arms = pq.read_table(truth / "arms.parquet").to_pandas()
    assert list(arms.ctr) == [0.1, 0.3] and list(arms.conversion) == [0.1, 0.2]
    for name in ("query_categories.parquet", "ratings.parquet", "assignments.csv"):
        assert (truth / name).exists()
    expected = generate_behaviours(
        BehaviourConfig(log=SynthConfig(users=120, days=3.0, seed=5), ctr=(0.1, 0.3))
    )
    assert len(frame) == expected.events.num_rows


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (("--ctr", "0.1,0.2"), "--ctr"),  # without --behaviours all
        (("--behaviours", "all", "--ctr", "0.1"), "--ctr"),
        (("--behaviours", "all", "--conversion", "0.1,2"), "--conversion"),
    ],
)
def test_cli_refuses_bad_click_options(cli, tmp_path: Path, options, flag: str) -> None:
    out = tmp_path / "bad.csv"
    result = cli("synth", "--users", "20", "--out", str(out), *options, "--quiet")
    assert result.exit_code == 1 and flag in result.output
    assert "Traceback" not in result.output and not out.exists()
