"""Segments and early warning: rules applied as documented, numbers that explain them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ebbtide.activate.segments import (
    SEGMENTS,
    SegmentRules,
    assign_segments,
    early_warning,
    interest_summary,
)
from ebbtide.errors import ConfigError, QueryTimeError
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.metrics_core import roc_auc
from ebbtide.models.decay import DecayModel
from ebbtide.models.scoring import score_users
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)
WEEK = timedelta(days=7)


def _categories(rows: list[tuple[str, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["user_id", "level", "baseline", "excitation", "half_life_days"]
    ).assign(category_id="c")


def test_interest_summary_projects_the_decay_by_hand() -> None:
    # user a: level 3 = 1 + 2, half-life 7 days: over 7 days → 1 + 1 = 2, change −1/3
    # user b: pure baseline, no change
    cats = _categories([("a", 3.0, 1.0, 2.0, 7.0), ("b", 0.5, 0.5, 0.0, 1.0)])
    summary = interest_summary(cats, 7.0).set_index("user_id")
    assert summary.loc["a", "interest_now"] == pytest.approx(3.0)
    assert summary.loc["a", "interest_change"] == pytest.approx(-1 / 3)
    assert summary.loc["b", "interest_change"] == pytest.approx(0.0)


def test_rules_apply_in_order_with_reasons() -> None:
    users = pd.DataFrame(
        {"user_id": ["lost", "dorm", "risk", "cool", "act"], "p_return": [0.01, 0.1, 0.3, 0.9, 0.9]}
    )
    cats = _categories(
        [
            ("cool", 3.0, 0.1, 2.9, 0.5),  # falls by ~97% in a week
            ("act", 1.0, 1.0, 0.0, 1.0),
            ("lost", 3.0, 0.1, 2.9, 0.5),  # p_return decides first
        ]
    )
    table = assign_segments(users, cats, horizon=WEEK).set_index("user_id")
    assert table["segment"].to_dict() == {
        "lost": "lost",
        "dorm": "dormant",
        "risk": "at_risk",
        "cool": "cooling",
        "act": "active",
    }
    assert "p_return 0.10 < 0.2" in table.loc["dorm", "reason"]
    assert "interest -97%" in table.loc["cool", "reason"]
    stricter = assign_segments(users, cats, horizon=WEEK, rules=SegmentRules(at_risk_below=0.95))
    assert set(stricter.segment) == {"lost", "dormant", "at_risk"}


def test_rules_are_checked() -> None:
    with pytest.raises(ConfigError, match="lost_below"):
        SegmentRules(lost_below=0.5, dormant_below=0.2)
    with pytest.raises(ConfigError, match="cooling_change"):
        SegmentRules(cooling_change=0.5)
    with pytest.raises(ConfigError, match="p_return"):
        assign_segments(pd.DataFrame({"user_id": ["a"]}), None, horizon=WEEK)


def test_segments_on_real_data(taobao: EventStore) -> None:
    model = DecayModel().fit(taobao, cutoff=CUT)
    users, cats = score_users(model, snapshot(taobao, at=CUT), horizon=WEEK)
    table = assign_segments(users, cats, horizon=WEEK)
    assert len(table) == len(users) and table.user_id.is_unique
    assert set(table.segment) <= set(SEGMENTS)
    assert table.reason.str.len().min() > 0
    # the rules hold row by row
    cooling = table[table.segment == "cooling"]
    assert (cooling.interest_change <= -0.3).all() and (cooling.p_return >= 0.5).all()
    assert (table[table.segment == "lost"].p_return < 0.05).all()


def test_early_warning_ranks_drops_and_names_faded_categories(taobao: EventStore) -> None:
    before = CUT - timedelta(days=3)
    model = DecayModel().fit(taobao, cutoff=before)  # fitted no later than `before`
    day = timedelta(days=1)
    warning = early_warning(model, taobao, before=before, at=CUT, horizon=day, top=20)
    assert list(warning["rank"]) == list(range(1, len(warning) + 1))
    # lowest interest against the usual level first (whole percent), then the largest fall
    shown = warning.interest_vs_usual.round(2).to_numpy()
    assert np.all(np.diff(shown) >= 0)
    fall = (warning.interest_vs_usual / warning.interest_vs_usual_before).to_numpy()
    same = shown[1:] == shown[:-1]
    assert np.all(np.diff(fall)[same] >= 0)
    assert warning.reason.str.startswith("interest at ").all()
    assert warning.reason.str.contains("P(return 1 d)", regex=False).all()
    expected = warning.p_return_now - warning.p_return_before
    np.testing.assert_allclose(warning.p_return_change, expected)
    faded = warning.dropna(subset=["faded_categories"])
    assert len(faded) > 0
    for changes in faded.faded_change:
        assert all(c < 0 for c in changes) and changes == sorted(changes)
    # scoring at `before` must not see later events: the earlier p_return is what the
    # model scored at `before` says, whatever happened after
    alone = model.p_return(snapshot(taobao, at=before), list(warning.user_id), horizon=day)
    np.testing.assert_allclose(
        alone.set_index("user_id").loc[warning.user_id, "p_return"], warning.p_return_before
    )
    # scorings the caller already has give the same list
    earlier = score_users(model, snapshot(taobao, at=before), horizon=day, k=1)
    now = score_users(model, snapshot(taobao, at=CUT), horizon=day, k=1)
    reused = early_warning(
        None, None, before=before, at=CUT, horizon=day, top=20, earlier=earlier, now=now
    )
    pd.testing.assert_frame_equal(reused, warning)
    with pytest.raises(ConfigError, match="before < at"):
        early_warning(model, taobao, before=CUT, at=before, horizon=WEEK)
    # a model fitted after `before` knows what came next: its earlier scores are refused
    later = DecayModel().fit(taobao, cutoff=CUT)
    with pytest.raises(QueryTimeError, match="earlier instant"):
        early_warning(later, taobao, before=before, at=CUT, horizon=day)


def _scoring(
    users: list[tuple[str, float, float]], rows: list[tuple[str, str, float, float]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A `score_users` result: (user, p_return, expected_return_days) and
    (user, category, level, baseline) rows."""
    table = pd.DataFrame(users, columns=["user_id", "p_return", "expected_return_days"])
    cats = pd.DataFrame(rows, columns=["user_id", "category_id", "level", "baseline"])
    return table, cats.assign(excitation=cats.level - cats.baseline, half_life_days=1.0)


def test_early_warning_rule_and_reasons_by_hand() -> None:
    before, at = CUT - WEEK, CUT
    earlier = _scoring(
        [("a", 0.9, 1.0), ("b", 0.9, 1.0), ("c", 0.9, 1.0), ("d", 0.9, 1.0), ("z", 0.5, 2.0)],
        [
            ("a", "x", 4.0, 1.0), ("a", "y", 1.0, 1.0),  # 250% of usual
            ("b", "x", 2.0, 1.0),  # 200%
            ("c", "x", 1.0, 1.0),  # 100%
            ("d", "x", 1.0, 1.0),
            ("z", "x", 1.0, 0.0),  # no usual level
        ],
    )  # fmt: skip
    now = _scoring(
        [("a", 0.8, 1.0), ("b", 0.7, 1.0), ("c", 0.9, 1.0), ("d", 0.95, 1.0), ("z", 0.1, 9.0)],
        [
            ("a", "x", 1.0, 1.0), ("a", "y", 1.0, 1.0),  # 100%, fell from 250%
            ("b", "x", 1.0, 1.0),  # 100%, fell from 200%
            ("c", "x", 1.5, 2.0),  # 75%: lowest, first
            ("d", "x", 3.0, 1.0),  # 300%: rising
            ("z", "x", 1.0, 0.0),
        ],
    )  # fmt: skip
    table = early_warning(None, None, before=before, at=at, horizon=WEEK, earlier=earlier, now=now)
    assert list(table.user_id) == ["c", "a", "b", "d", "z"]
    rows = table.set_index("user_id")
    assert rows.loc["a", "interest_vs_usual"] == pytest.approx(1.0)
    assert rows.loc["a", "interest_vs_usual_before"] == pytest.approx(2.5)
    assert rows.loc["a", "reason"] == (
        "interest at 100% of usual (was 250% at 2017-11-24T16:00+00:00);"
        " fell most in x (-75%); P(return 7 d) 0.90 -> 0.80"
    )
    assert rows.loc["c", "reason"].startswith("interest at 75% of usual (was 100% at ")
    assert "fell most" not in rows.loc["d", "reason"]
    assert np.isnan(rows.loc["z", "interest_vs_usual"])
    assert rows.loc["z", "reason"].startswith("usual interest level is 0 or unknown")
    assert list(table["rank"]) == [1, 2, 3, 4, 5]
    # no interest per category (btyd): the rise in expected days to return ranks
    no_interest = early_warning(
        None, None, before=before, at=at, horizon=WEEK,
        earlier=(earlier[0], None), now=(now[0], None),
    )  # fmt: skip
    assert list(no_interest.user_id) == ["z", "b", "a", "c", "d"]
    assert no_interest.interest_vs_usual.isna().all()
    assert no_interest.set_index("user_id").loc["z", "reason"] == (
        "no interest per category from this model: ranked by the rise in expected days"
        " to return, 2.0 -> 9.0 d; P(return 7 d) 0.50 -> 0.10"
    )
    # nor expected return days (gbdt): the P(return) change, as before
    plain = early_warning(
        None, None, before=before, at=at, horizon=WEEK,
        earlier=(earlier[0].drop(columns="expected_return_days"), None),
        now=(now[0].drop(columns="expected_return_days"), None),
    )  # fmt: skip
    assert list(plain.user_id) == ["z", "b", "a", "c", "d"]
    assert plain.reason.str.startswith("no interest per category from this model: ranked by").all()
    assert "expected_return_days_now" not in plain.columns


def _fading_store(path: Path, share: float = 0.2, kept: float = 0.2) -> tuple[EventStore, dict]:
    """A synthetic log where a random `share` of users fade: from a time F_u (60–85% of
    the window) each of their events is kept with probability `kept`, which scales their
    true intensity by `kept` (thinning a point process)."""
    config = SynthConfig(
        users=400, days=14.0, categories=20, items_per_category=20, dormant_share=0.0,
        events_per_user_day=7.0, seed=3,
    )  # fmt: skip
    log = generate(config)
    events = log.events.to_pandas()
    rng = np.random.default_rng(7)
    users = np.array(sorted(set(events.user_id)))
    fades = rng.random(users.size) < share
    start = config.start.timestamp()
    fade_at = start + config.days * 86_400 * rng.uniform(0.6, 0.85, users.size)
    from_ts = pd.Series(np.where(fades, fade_at, np.inf), index=users)
    thinned = events.ts.to_numpy() >= from_ts.loc[events.user_id].to_numpy()
    events = events[~thinned | (rng.random(len(events)) < kept)]
    table = pa.Table.from_pandas(events, preserve_index=False)
    write_taobao_csv(dataclasses.replace(log, events=table), path / "log.csv")
    store = EventStore(path / "store.duckdb")
    ingest_file(store, path / "log.csv", "taobao")
    return store, {"config": config, "fades": pd.Series(fades, index=users)}


def test_early_warning_finds_users_whose_intensity_was_made_to_fall(tmp_path: Path) -> None:
    store, truth = _fading_store(tmp_path)
    config = truth["config"]
    before = config.start + timedelta(days=0.6 * config.days)  # no user fades before it
    at = config.start + timedelta(days=config.days)
    with store:
        model = DecayModel().fit(store, cutoff=before)
        table = early_warning(
            model, store, before=before, at=at, horizon=timedelta(days=1), top=None
        )
    assert len(table) == 400 and table.user_id.is_unique
    faded = truth["fades"].loc[table.user_id].to_numpy()
    alarm = -table["rank"].to_numpy()  # rank 1 is the most alarming
    auc = roc_auc(faded, alarm)
    assert auc >= 0.8, auc
    # the old rule, by the P(return) change alone, on the same scores (for the record)
    old = roc_auc(faded, -table.p_return_change.to_numpy())
    assert 0.5 < old < 1.0
    assert table.reason.str.startswith("interest at ").all()
