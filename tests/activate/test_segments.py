"""Segments and early warning: rules applied as documented, numbers that explain them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
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
from ebbtide.models.decay import DecayModel
from ebbtide.models.scoring import score_users
from ebbtide.store import EventStore

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
    assert np.all(np.diff(warning.p_return_change) >= 0)  # biggest drop first
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
