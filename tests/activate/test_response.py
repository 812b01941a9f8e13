"""The prior response model: documented lifts by segment, priced by the planner's rules."""

from __future__ import annotations

import pandas as pd
import pytest

from ebbtide.activate.actions import Action, ActionCatalogue, Budget
from ebbtide.activate.planner import build_candidates
from ebbtide.activate.response import prior_effects
from ebbtide.errors import ConfigError

PUSH = Action("push", "recommendation", "push", 0.01, margin=0.3)
COUPON = Action("coupon_10", "coupon", "email", 0.05, discount=0.1, margin=0.3)
USERS = pd.DataFrame({"user_id": ["a", "b"], "segment": ["cooling", "active"], "p_buy": [0.2, 0.5]})


def test_lifts_by_hand() -> None:
    table = prior_effects(USERS, [PUSH, COUPON]).set_index(["user_id", "action"])
    assert table.assumption.all() and len(table) == 4
    assert table.loc[("a", "push"), "uplift"] == pytest.approx(0.03)
    assert table.loc[("a", "coupon_10"), "uplift"] == pytest.approx(0.06)  # × (1 + 10 × 0.1)
    assert table.loc[("a", "coupon_10"), "p_conversion"] == pytest.approx(0.26)
    assert table.loc[("b", "push"), "uplift"] == 0.0


def test_costs_include_redemptions_and_margin_nets_the_giveaway() -> None:
    effects = prior_effects(USERS, [COUPON]).assign(order_value=40.0)
    catalogue = ActionCatalogue((COUPON,), Budget(100.0, objective="margin"))
    priced = build_candidates(effects, catalogue).set_index("user_id")
    # cost = 0.05 + 0.1 × 40 × P(conversion); user a converts with 0.2 + 0.06
    assert priced.loc["a", "cost"] == pytest.approx(0.05 + 4 * 0.26)
    # net margin of an active user (no lift): only the discount given to a buyer anyway
    net_b = priced.loc["b", "value"] - priced.loc["b", "cost"]
    assert net_b == pytest.approx(-0.05 - 0.1 * 40 * 0.5)


def test_unknown_segment_is_named() -> None:
    with pytest.raises(ConfigError, match="vip"):
        prior_effects(USERS.assign(segment=["vip", "active"]), [PUSH])
