"""The re-activation plan end to end on the real Taobao slice: scores to items, all accounted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ebbtide.activate.actions import default_actions, override
from ebbtide.activate.reactivation import PLAN_COLUMNS, plan_reactivation
from ebbtide.activate.response import PRIOR_LIFT
from ebbtide.errors import ConfigError, QueryTimeError
from ebbtide.features.catalog import item_categories
from ebbtide.features.history import snapshot
from ebbtide.models.decay import DecayModel
from ebbtide.models.popular import PopularModel
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.fixture(scope="module")
def model(taobao: EventStore) -> DecayModel:
    return DecayModel().fit(taobao, cutoff=CUT)


def test_prior_plan_on_real_data(model: DecayModel, taobao: EventStore) -> None:
    result = plan_reactivation(model, taobao, at=CUT, horizon=WEEK, order_value=30.0, top_k=4)
    table = result.table
    assert list(table.columns) == PLAN_COLUMNS
    assert table.user_id.is_unique and len(table) == len(
        model.p_return(snapshot(taobao, at=CUT), horizon=WEEK)
    )
    contacted = table[table.action != "none"]
    assert len(contacted) > 0 and table.assumption[table.action != "none"].all()
    # the prior gives no lift to active or lost users: the plan leaves them alone
    zero = [s for s, lift in PRIOR_LIFT.items() if lift == 0]
    assert not contacted.segment.isin(zero).any()
    assert result.plan.total_cost <= 5000 + 1e-9
    np.testing.assert_allclose(contacted.cost.sum(), result.plan.total_cost)
    np.testing.assert_allclose(
        table.expected_uplift.sum(), result.summary()["expected_conversions"]
    )
    # items: k per contacted user, each with its category as of the plan time and the
    # user's interest in that category from the model
    assert (contacted["items"].map(len) == 4).all()
    assert (table.loc[table.action == "none", "items"].map(len) == 0).all()
    category = item_categories(taobao, before=CUT).set_index("item_id")["category_id"]
    interest = model.interest(snapshot(taobao, at=CUT), horizon=WEEK).set_index(
        ["user_id", "category_id"]
    )
    for row in contacted.head(10).itertuples():
        assert row.item_categories == [category[item] for item in row.items]
        for cat, value in zip(row.item_categories, row.category_interest, strict=True):
            if (row.user_id, cat) in interest.index:
                assert value == pytest.approx(interest.loc[(row.user_id, cat), "p_engage"])
            else:
                assert np.isnan(value)  # a category the user never touched
    by = result.by_action_and_segment()
    assert by.users.sum() == len(table)
    assert any("prior response model" in note for note in result.notes)


def test_budget_caps_and_determinism(model: DecayModel, taobao: EventStore) -> None:
    catalogue = override(default_actions(), budget=0.05)
    history = pd.Series({"1000027": 2.0, "1000581": 30.0})
    first = plan_reactivation(
        model, taobao, at=CUT, catalogue=catalogue, order_value=30.0,
        last_contact_days_ago=history,
    )  # fmt: skip
    again = plan_reactivation(
        model, taobao, at=CUT, catalogue=catalogue, order_value=30.0,
        last_contact_days_ago=history,
    )  # fmt: skip
    pd.testing.assert_frame_equal(first.table, again.table)
    assert first.plan.total_cost <= 0.05 + 1e-12
    recent = first.table.set_index("user_id").loc["1000027"]
    assert recent.action == "none" and "contacted 2 days ago" in recent.reason


def test_without_prices_coupons_are_left_out_and_said_so(
    model: DecayModel, taobao: EventStore
) -> None:
    result = plan_reactivation(model, taobao, at=CUT)
    assert not result.table.action.str.startswith("coupon").any()
    assert any("coupon_5, coupon_10 left out" in note for note in result.notes)


def test_learned_effects_replace_the_prior(model: DecayModel, taobao: EventStore) -> None:
    users = model.p_return(snapshot(taobao, at=CUT), horizon=WEEK).user_id
    effects = pd.DataFrame(
        {
            "user_id": [*users[:3], "stranger"],
            "action": ["push", "email", "push", "push"],
            "uplift": [0.2, 0.1, -0.05, 0.5],
        }
    )
    result = plan_reactivation(model, taobao, at=CUT, effects=effects)
    table = result.table.set_index("user_id")
    assert table.loc[users[0], "action"] == "push"
    assert table.loc[users[0], "expected_uplift"] == pytest.approx(0.2)
    assert table.loc[users[2], "action"] == "none"  # a negative effect is never bought
    assert (table.action != "none").sum() == 2 and not table.assumption.any()
    assert any("1 effect rows name users" in note for note in result.notes)
    with pytest.raises(ConfigError, match="uplift"):
        plan_reactivation(model, taobao, at=CUT, effects=effects.drop(columns="uplift"))
    with pytest.raises(ConfigError, match="number"):
        plan_reactivation(model, taobao, at=CUT, effects=effects.assign(uplift="high"))


def test_models_and_times_that_cannot_plan(model: DecayModel, taobao: EventStore) -> None:
    popular = PopularModel().fit(taobao, cutoff=CUT)
    with pytest.raises(ConfigError, match="p_return"):
        plan_reactivation(popular, taobao, at=CUT)
    with pytest.raises(QueryTimeError, match="earlier instant"):
        plan_reactivation(model, taobao, at=datetime(2000, 1, 1, tzinfo=UTC))
    with pytest.raises(ConfigError, match="top_k"):
        plan_reactivation(model, taobao, at=CUT, top_k=0)
