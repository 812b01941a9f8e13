"""The budgeted planner: feasible, optimal (exact), bounded (greedy), deterministic, explained."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebbtide.activate.actions import Budget, Caps, default_actions, override
from ebbtide.activate.planner import build_candidates, plan, plan_campaign
from ebbtide.errors import ConfigError, DataQualityWarning, InputFormatError

ACTIONS = ("a", "b", "c")
TOL = 1e-9


@st.composite
def instances(draw, quarter_costs: bool = True):
    """Up to 8 users × 3 actions, values of any sign, random budget, caps and contact
    history. Quarter costs add up exactly, so optimality can be checked to 1e-9; values
    under 1e-6 in size are set to 0, as they are below the MILP solver's tolerances."""
    n_users = draw(st.integers(1, 8))
    value = st.floats(-5, 5, allow_nan=False).map(lambda v: v if abs(v) >= 1e-6 else 0.0)
    if quarter_costs:
        cost = st.integers(0, 40).map(lambda q: q / 4)
    else:
        cost = st.floats(0, 10, allow_nan=False, allow_infinity=False)
    rows = []
    for user in range(n_users):
        names = draw(st.lists(st.sampled_from(ACTIONS), unique=True, max_size=3))
        rows += [(user, name, draw(value), draw(cost)) for name in names]
        if not names or draw(st.booleans()):
            rows.append((user, "none", 0.0, 0.0))
    frame = pd.DataFrame(rows, columns=["user", "action", "value", "cost"])
    budget = draw(st.integers(0, 80).map(lambda q: q / 4) if quarter_costs else st.floats(0, 30))
    caps = Caps(draw(st.sampled_from([0.0, 7.0])), draw(st.one_of(st.none(), st.integers(0, 8))))
    days = pd.Series(
        [draw(st.one_of(st.just(math.nan), st.floats(0, 20))) for _ in range(n_users)],
        index=range(n_users),
    )
    allowed = pd.Series([draw(st.booleans()) for _ in range(n_users)], index=range(n_users))
    return frame, budget, caps, days, allowed


def contactable(caps, days, allowed):
    return allowed.to_numpy() & ~(days.to_numpy() < caps.min_days_between_contacts)


def brute_force(frame, budget, caps, reachable):
    """The optimum by enumerating every combination of one option per user."""
    totals_v, totals_c, totals_n = np.zeros(1), np.zeros(1), np.zeros(1)
    for user in range(len(reachable)):
        rows = frame[(frame.user == user) & (frame.action != "none")] if reachable[user] else []
        ov = np.r_[0.0, rows["value"]] if len(rows) else np.zeros(1)
        oc = np.r_[0.0, rows["cost"]] if len(rows) else np.zeros(1)
        on = np.r_[0.0, np.ones(len(rows))]
        totals_v = (totals_v[:, None] + ov[None, :]).ravel()
        totals_c = (totals_c[:, None] + oc[None, :]).ravel()
        totals_n = (totals_n[:, None] + on[None, :]).ravel()
    feasible = totals_c <= budget
    if caps.max_contacts is not None:
        feasible &= totals_n <= caps.max_contacts
    return float(totals_v[feasible].max())


def check_feasible(result, frame, budget, caps, reachable):
    table = result.assignments
    assert table["user"].tolist() == sorted(frame["user"].unique())  # each user exactly once
    contacted = table["action"] != "none"
    assert table["cost"].sum() <= budget * (1 + 1e-12) + 1e-12
    assert result.total_cost <= budget * (1 + 1e-12) + 1e-12
    if caps.max_contacts is not None:
        assert contacted.sum() <= caps.max_contacts
    assert not (contacted & ~reachable).any()
    assert (table.loc[contacted, "value"] > 0).all()
    merged = table[contacted].merge(frame, on=["user", "action"], suffixes=("", "_in"))
    assert len(merged) == contacted.sum()
    np.testing.assert_array_equal(merged["value"], merged["value_in"])
    np.testing.assert_array_equal(merged["cost"], merged["cost_in"])
    assert result.n_contacts == contacted.sum()
    assert math.isclose(result.total_value, table["value"].sum(), abs_tol=TOL)


def run(frame, budget, caps, days, allowed, method):
    return plan_campaign(
        frame, budget, caps=caps, last_contact_days_ago=days, contactable=allowed, method=method
    )


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(instances())
def test_exact_is_feasible_and_matches_brute_force(instance):
    frame, budget, caps, days, allowed = instance
    reachable = contactable(caps, days, allowed)
    result = run(frame, budget, caps, days, allowed, "exact")
    assert result.method == "exact"
    check_feasible(result, frame, budget, caps, reachable)
    assert result.total_value == pytest.approx(brute_force(frame, budget, caps, reachable), abs=TOL)
    assert result.gap == pytest.approx(0.0, abs=TOL)


@FAST
@given(instances())
def test_greedy_is_feasible_and_its_bound_holds(instance):
    frame, budget, caps, days, allowed = instance
    reachable = contactable(caps, days, allowed)
    result = run(frame, budget, caps, days, allowed, "greedy")
    assert result.method == "greedy"
    check_feasible(result, frame, budget, caps, reachable)
    optimum = brute_force(frame, budget, caps, reachable)
    assert result.total_value <= optimum + TOL
    assert optimum <= result.upper_bound + TOL
    assert result.total_value <= result.upper_bound + TOL
    assert result.total_value >= result.upper_bound - result.gap - TOL
    assert 0 <= result.gap_relative <= 1


@FAST
@given(instances(quarter_costs=False), st.sampled_from(["exact", "greedy"]))
def test_float_costs_never_overspend(instance, method):
    frame, budget, caps, days, allowed = instance
    result = run(frame, budget, caps, days, allowed, method)
    check_feasible(result, frame, budget, caps, contactable(caps, days, allowed))


@FAST
@given(instances(quarter_costs=False))
def test_greedy_with_ample_budget_gives_each_user_its_best_option(instance):
    frame = instance[0]
    result = plan_campaign(frame, float(frame["cost"].sum()) + 1.0, method="greedy")
    best = frame.groupby("user")["value"].max().clip(lower=0.0)
    np.testing.assert_array_equal(result.assignments["value"].to_numpy(), best.to_numpy())
    assert result.gap == pytest.approx(0.0, abs=TOL)


@settings(max_examples=60, deadline=None)
@given(instances(), st.sampled_from(["exact", "greedy"]), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(instance, method, random):
    frame, budget, caps, days, allowed = instance
    first = run(frame, budget, caps, days, allowed, method)
    order = list(range(len(frame)))
    random.shuffle(order)
    shuffled = frame.iloc[order].reset_index(drop=True)
    again = run(
        shuffled,
        budget,
        caps,
        days.sample(frac=1.0, random_state=1),
        allowed.sample(frac=1.0, random_state=2),
        method,
    )
    pd.testing.assert_frame_equal(first.assignments, again.assignments)
    assert first.to_dict() == again.to_dict()


def knapsack():
    """Greedy takes A (ratio 1), cannot fit B (0.9), still fits C (0.8)."""
    return pd.DataFrame(
        {
            "user": ["A", "B", "C", "D", "E"],
            "action": ["push", "push", "push", "push", "none"],
            "value": [8.0, 4.5, 1.6, -1.0, 0.0],
            "cost": [8.0, 5.0, 2.0, 1.0, 0.0],
        }
    )


def test_greedy_skips_what_no_longer_fits_and_reports_the_lp_gap():
    result = plan_campaign(knapsack(), Budget(10.0), method="greedy")
    table = result.assignments.set_index("user")
    assert table["action"].to_dict() == {
        "A": "push",
        "B": "none",
        "C": "push",
        "D": "none",
        "E": "none",
    }
    assert result.total_value == pytest.approx(9.6)
    assert result.total_cost == pytest.approx(10.0)
    assert result.upper_bound == pytest.approx(8 + 2 / 5 * 4.5)
    assert result.gap == pytest.approx(0.2)
    assert result.gap_relative == pytest.approx(0.2 / 9.8)
    assert table.loc["A", "reason"] == "best value per cost (1 conv/EUR) within budget"
    assert table.loc["B", "reason"] == "no action: budget exhausted"
    assert table.loc["D", "reason"] == "no action: no action has positive expected value"
    assert table.loc["E", "reason"] == "no action: no action has positive expected value"


def test_auto_picks_exact_for_small_inputs_and_greedy_above_the_threshold():
    assert plan_campaign(knapsack(), 10.0).method == "exact"
    assert plan_campaign(knapsack(), 10.0, exact_max_rows=2).method == "greedy"


def test_reasons_for_caps_and_unaffordable_actions():
    frame = pd.DataFrame(
        {
            "user": [1, 2, 3, 4, 5],
            "action": ["push"] * 5,
            "value": [1.0, 1.0, 1.0, 0.5, 2.0],
            "cost": [1.0, 1.0, 0.0, 1.0, 50.0],
        }
    )
    catalogue = override(
        default_actions(), budget=10.0, min_days_between_contacts=7, max_contacts=1
    )
    days = pd.Series({1: 3.0, 2: math.nan, 3: 10.0, 4: math.nan, 5: math.nan})
    result = plan(
        frame,
        catalogue,
        last_contact_days_ago=days,
        contactable={1: True, 2: False, 3: True, 4: True, 5: True},
    )
    reasons = result.assignments.set_index("user")["reason"].to_dict()
    assert reasons == {
        1: "no action: not contactable (contacted 3 days ago, cap 7 days)",
        2: "no action: not contactable (excluded by caller)",
        3: "positive expected value at no cost",
        4: "no action: contact cap reached (max_contacts = 1)",
        5: "no action: every action with positive value costs more than the whole budget",
    }


def test_frequency_cap_needs_a_contact_history():
    catalogue = default_actions()  # min_days_between_contacts = 7
    frame = knapsack().assign(action="email")
    with pytest.raises(ConfigError, match="last_contact_days_ago"):
        plan_campaign(frame, catalogue)
    with pytest.raises(InputFormatError, match=r"lacks 1 candidate users \(e.g. 'E'\)"):
        plan_campaign(frame, catalogue, last_contact_days_ago=pd.Series(np.nan, index=list("ABCD")))
    with pytest.raises(InputFormatError, match="negative"):
        plan_campaign(frame, catalogue, last_contact_days_ago=pd.Series(-1.0, index=list("ABCDE")))
    result = plan_campaign(
        frame, catalogue, last_contact_days_ago=pd.Series(np.nan, index=list("ABCDE"))
    )
    assert result.n_contacts == 3


def test_contact_cap_binding_greedy_is_close_to_exact():
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "user": np.repeat(np.arange(n), 3),
            "action": np.tile(["email", "push", "coupon"], n),
            "value": rng.gamma(2.0, 0.02, 3 * n) * np.tile([0.3, 1.0, 2.0], n),
            "cost": np.tile([0.002, 0.01, 0.5], n) * rng.uniform(0.5, 1.5, 3 * n),
        }
    )
    caps = Caps(0.0, 60)
    exact = plan_campaign(frame, 8.0, caps=caps, method="exact")
    greedy = plan_campaign(frame, 8.0, caps=caps, method="greedy")
    assert greedy.n_contacts <= 60 and greedy.total_cost <= 8.0
    assert exact.total_value <= greedy.upper_bound + TOL
    assert greedy.total_value >= 0.97 * exact.total_value
    assert greedy.gap_relative < 0.05


def test_value_per_cost_unit_subtracts_cost():
    frame = pd.DataFrame(
        {"user": [1, 2], "action": ["coupon", "coupon"], "value": [5.0, 3.0], "cost": [2.0, 4.0]}
    )
    result = plan_campaign(frame, Budget(100.0, "EUR", "margin"), value_per_cost_unit=1.0)
    table = result.assignments
    assert table["action"].tolist() == ["coupon", "none"]
    assert table["value"].tolist() == [3.0, 0.0]
    assert result.objective == "net margin"
    assert table["reason"][0] == "part of the optimal plan within budget (1.5 net EUR margin/EUR)"


def test_to_dict_is_json_ready():
    result = plan_campaign(knapsack(), 10.0)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["method"] == "exact" and data["n_users"] == 5
    assert data["assignments"][0] == {
        "user": "A",
        "action": "push",
        "value": 8.0,
        "cost": 8.0,
        "reason": "part of the optimal plan within budget (1 conv/EUR)",
    }
    assert "assignments" not in repr(result)


def test_mapping_input_and_user_id_column():
    result = plan_campaign(
        {
            "user_id": ["x", "y"],
            "action": ["push", "push"],
            "value": [1.0, 2.0],
            "cost": [1.0, 1.0],
        },
        1.0,
    )
    assert list(result.assignments.columns) == ["user_id", "action", "value", "cost", "reason"]
    assert result.assignments["action"].tolist() == ["none", "push"]


def test_empty_candidates_give_an_empty_plan():
    empty = pd.DataFrame(
        {
            "user": pd.Series([], dtype=int),
            "action": pd.Series([], dtype=str),
            "value": pd.Series([], dtype=float),
            "cost": pd.Series([], dtype=float),
        }
    )
    for method in ("exact", "greedy"):
        result = plan_campaign(empty, 10.0, method=method)
        assert result.assignments.empty and result.total_value == 0.0


BAD_TABLES = [
    ({"action": ["email", "email"]}, "push", "more than once"),
    ({"value": [math.nan, 1.0]}, "push", "NaN"),
    ({"cost": [-1.0, 1.0]}, "push", "cost = -1.0"),
    ({}, "teleport", "not in the catalogue"),
    ({"value": [1.0, 1.0], "action": ["none", "push"]}, None, "'none' a non-zero"),
]


@pytest.mark.parametrize(("change", "action", "message"), BAD_TABLES)
def test_bad_candidates_raise(change, action, message):
    frame = pd.DataFrame(
        {"user": [1, 1], "action": [action, "email"], "value": [1.0, 1.0], "cost": [1.0, 1.0]}
    ).assign(**change)
    with pytest.raises(InputFormatError, match=message):
        plan_campaign(frame, override(default_actions(), min_days_between_contacts=0))


def test_bad_options_raise():
    with pytest.raises(ConfigError, match="method"):
        plan_campaign(knapsack(), 1.0, method="lp")
    with pytest.raises(ConfigError, match="total"):
        plan_campaign(knapsack(), -1.0)
    with pytest.raises(ConfigError, match="value_per_cost_unit"):
        plan_campaign(knapsack(), 1.0, value_per_cost_unit=-1)
    with pytest.raises(ConfigError, match="override"):
        plan_campaign(knapsack(), default_actions(), caps=Caps())
    with pytest.raises(InputFormatError, match="user column"):
        plan_campaign(knapsack().rename(columns={"user": "customer"}), 1.0)


def test_build_candidates_prices_redemptions():
    catalogue = override(default_actions(), objective="margin")
    effects = pd.DataFrame(
        {
            "user_id": ["u", "u", "u"],
            "action": ["none", "push", "coupon_10"],
            "uplift": [0.0, 0.02, 0.05],
            "p_conversion": [0.1, 0.12, 0.15],
            "order_value": [40.0, 40.0, 40.0],
        }
    )
    candidates = build_candidates(effects, catalogue)
    assert candidates["value"].tolist() == pytest.approx([0.0, 0.02 * 40 * 0.3, 0.05 * 40 * 0.3])
    assert candidates["cost"].tolist() == pytest.approx([0.0, 0.01, 0.05 + 0.10 * 40 * 0.15])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = build_candidates(effects.drop(columns="order_value"), default_actions())
    assert any(issubclass(w.category, DataQualityWarning) for w in caught)
    assert plain["value"].tolist() == [0.0, 0.02, 0.05]
    assert plain["cost"].tolist() == [0.0, 0.01, 0.05]
    with pytest.raises(InputFormatError, match="order_value"):
        build_candidates(effects.drop(columns="order_value"), catalogue)
