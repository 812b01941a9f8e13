"""The prior response model: documented lifts, costs with redemptions, flagged as assumed."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from ebbtide.activate.response import candidate_actions
from ebbtide.errors import ConfigError

PUSH = SimpleNamespace(name="push", kind="recommendation", cost=0.01, discount=0.0, margin=0.3)
COUPON = SimpleNamespace(name="coupon_10", kind="coupon", cost=0.05, discount=0.1, margin=0.3)
NONE = SimpleNamespace(name="none", kind="none", cost=0.0, discount=0.0, margin=None)
USERS = pd.DataFrame({"user_id": ["a", "b"], "segment": ["cooling", "active"], "p_buy": [0.2, 0.5]})


def test_conversions_by_hand() -> None:
    table = candidate_actions(USERS, [NONE, PUSH, COUPON], objective="conversions", order_value=40)
    table = table.set_index(["user", "action"])
    assert table.assumption.all() and "none" not in table.index.get_level_values("action")
    assert table.loc[("a", "push"), "value"] == pytest.approx(0.03)
    assert table.loc[("a", "coupon_10"), "value"] == pytest.approx(0.06)  # × (1 + 10 × 0.1)
    # coupon cost = 0.05 + 0.1 × 40 × (0.2 + 0.06)
    assert table.loc[("a", "coupon_10"), "cost"] == pytest.approx(0.05 + 4 * 0.26)
    assert table.loc[("b", "push"), "value"] == 0.0


def test_margin_counts_the_discount_paid_to_buyers_anyway() -> None:
    table = candidate_actions(USERS, [COUPON], objective="margin", order_value=40)
    value = table.set_index("user").loc["b", "value"]
    assert value == pytest.approx(0.0 - 0.1 * 40 * 0.5)  # active: no lift, only giveaway


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="objective"):
        candidate_actions(USERS, [PUSH], objective="clicks", order_value=40)
    with pytest.raises(ConfigError, match="order value"):
        candidate_actions(USERS, [PUSH], objective="conversions", order_value=0)
    odd = USERS.assign(segment=["vip", "active"])
    with pytest.raises(ConfigError, match="vip"):
        candidate_actions(odd, [PUSH], objective="conversions", order_value=40)
    no_margin = SimpleNamespace(**{**vars(PUSH), "margin": None})
    with pytest.raises(ConfigError, match="margin"):
        candidate_actions(USERS, [no_margin], objective="margin", order_value=40)
