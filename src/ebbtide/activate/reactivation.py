"""The re-activation plan end to end: scores -> segments -> effects -> budgeted plan -> items.

Why one function: a marketer asks "who gets what, and what will it buy?"; answering it takes a
model's scores at one instant, the segment rules, an effect per (user, action) (learned from a
campaign, or the documented prior in `activate.response`), the catalogue's costs and caps, and
the planner. `plan_reactivation` chains them and keeps every number that rests on the prior
flagged as an assumption.

Each contacted user also gets the top-K items to show, each with the category it belongs to
and the user's interest in that category (P(engage within the horizon)), so the message can
say *why* an item was picked. Items are only computed for contacted users, which keeps the
plan cheap when most users get nothing.

Only events before ``at`` are read: scores, segments, order values and item categories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from ebbtide.activate.actions import NONE, ActionCatalogue, default_actions
from ebbtide.activate.planner import Plan, build_candidates, plan_campaign
from ebbtide.activate.response import prior_effects
from ebbtide.activate.segments import SegmentRules, assign_segments
from ebbtide.errors import ConfigError
from ebbtide.features.catalog import item_categories, mean_order_value
from ebbtide.features.history import UNCATEGORISED, History, snapshot
from ebbtide.models.base import Model
from ebbtide.store import EventStore

__all__ = ["PLAN_COLUMNS", "ReactivationPlan", "plan_reactivation"]

#: Columns of `ReactivationPlan.table`, in order.
PLAN_COLUMNS = [
    "user_id",
    "segment",
    "action",
    "items",
    "item_categories",
    "category_interest",
    "expected_uplift",
    "value",
    "cost",
    "reason",
    "assumption",
]


@dataclass(frozen=True)
class ReactivationPlan:
    """Who gets which action and which items, what it costs, and what it should buy.

    Attributes
    ----------
    table : DataFrame
        One row per scored user, in `PLAN_COLUMNS` order: the segment, the action
        (``"none"`` when not contacted), the top-K ``items`` with their ``item_categories``
        and the user's ``category_interest`` in each, ``expected_uplift`` (incremental
        conversion probability), ``value`` (in the objective's unit), ``cost``, ``reason``
        and ``assumption`` (True when the effect comes from the prior response model).
    plan : Plan
        The solver's result: totals, bound and gap.
    catalogue : ActionCatalogue
        The catalogue planned with (after option overrides).
    at : datetime
    horizon : timedelta
    notes : list of str
        What was assumed or left out, in words, for the report.
    """

    table: pd.DataFrame
    plan: Plan
    catalogue: ActionCatalogue
    at: datetime
    horizon: timedelta
    notes: list[str] = field(default_factory=list)

    def by_action_and_segment(self) -> pd.DataFrame:
        """Users, spend and expected incremental conversions per (action, segment)."""
        return (
            self.table.groupby(["action", "segment"], sort=True)
            .agg(
                users=("user_id", "size"),
                cost=("cost", "sum"),
                expected_conversions=("expected_uplift", "sum"),
                value=("value", "sum"),
            )
            .reset_index()
        )

    def summary(self) -> dict[str, Any]:
        """The headline numbers as plain Python values (JSON-ready)."""
        budget = self.catalogue.budget
        return {
            "at": self.at.isoformat(),
            "horizon_days": self.horizon / timedelta(days=1),
            "users": len(self.table),
            "contacts": int((self.table["action"] != NONE).sum()),
            "budget": budget.total,
            "currency": budget.currency,
            "objective": self.plan.objective,
            "spend": self.plan.total_cost,
            "expected_conversions": float(self.table["expected_uplift"].sum()),
            "value": self.plan.total_value,
            "upper_bound": self.plan.upper_bound,
            "gap": self.plan.gap,
            "method": self.plan.method,
            "assumed_effects": bool(self.table["assumption"].any()),
            "notes": list(self.notes),
        }


def plan_reactivation(
    model: Model,
    store: EventStore,
    *,
    at: datetime,
    horizon: timedelta = timedelta(days=7),
    catalogue: ActionCatalogue | None = None,
    effects: pd.DataFrame | None = None,
    last_contact_days_ago: pd.Series | None = None,
    order_value: float | None = None,
    top_k: int = 5,
    rules: SegmentRules | None = None,
    method: str = "auto",
) -> ReactivationPlan:
    """Plan one re-activation campaign at `at` for every user with history before it.

    Parameters
    ----------
    model : Model
        A fitted model that answers ``p_return`` (for segments); ``p_buy``, ``interest`` and
        ``recommend`` are used when it answers them.
    store : EventStore
        The store the model reads (for order values and item categories).
    at : datetime
        Plan as of this instant; only earlier events are used.
    horizon : timedelta
        Window of the return and engagement probabilities.
    catalogue : ActionCatalogue, optional
        Actions, budget and caps; default `default_actions()`.
    effects : DataFrame, optional
        Learned effects: ``user_id``, ``action``, ``uplift`` (incremental conversion
        probability against "none") and optionally ``p_conversion``. Default: the prior
        response model by segment, flagged ``assumption=True``.
    last_contact_days_ago : Series, optional
        Days since each user's last contact, indexed by user id (missing: never contacted).
        Without it nobody counts as recently contacted, and a note says so.
    order_value : float, optional
        Mean order value in the budget's currency; default: the mean purchase value in the
        log before `at`. Without either, coupon actions are left out (their redemption cost
        is unknown) and a note says so.
    top_k : int
        Items per contacted user.
    rules : SegmentRules, optional
    method : {"auto", "exact", "greedy"}
        Passed to `plan_campaign`.

    Returns
    -------
    ReactivationPlan

    Raises
    ------
    ConfigError
        Bad options, effects naming unknown actions or lacking columns, a model without
        ``p_return``, or no users with history before `at`.
    """
    catalogue = catalogue or default_actions()
    if not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k={top_k!r}: use an integer >= 1 (items per contacted user)")
    notes: list[str] = []
    at_plan = snapshot(store, at=at)
    users, categories = _score(model, at_plan, horizon)
    segments = assign_segments(users, categories, horizon=horizon, rules=rules)
    if "p_buy" in users:
        segments = segments.merge(users[["user_id", "p_buy"]], on="user_id", how="left")

    actions = list(catalogue.actions)
    if order_value is None:
        order_value = mean_order_value(store, before=at)
    if order_value is None and any(a.discount > 0 for a in actions):
        dropped = [a.name for a in actions if a.discount > 0]
        actions = [a for a in actions if a.discount == 0]
        notes.append(
            f"the log has no prices before {at.isoformat()}, so coupon redemption costs are "
            f"unknown: {', '.join(dropped)} left out; to plan coupons, give a mean order"
            " value (`ebbtide plan --order-value`; order_value= in Python)"
        )
    elif order_value is not None and (not np.isfinite(order_value) or order_value <= 0):
        raise ConfigError(f"order_value={order_value!r}: use a positive amount")
    allowed = {a.name for a in actions}

    if effects is None:
        chosen_effects = prior_effects(segments, actions)
        notes.append(
            "effects are the prior response model's assumptions (activate.response), not "
            "measurements: replace them with learned uplift once a campaign has run"
        )
    else:
        chosen_effects = _learned(effects, segments, allowed, notes)
    chosen_effects = chosen_effects[chosen_effects["action"].isin(allowed)]
    if order_value is not None:
        chosen_effects = chosen_effects.assign(order_value=float(order_value))
    candidates = build_candidates(chosen_effects.drop(columns="assumption"), catalogue)
    nobody = pd.DataFrame(
        {"user_id": segments["user_id"], "action": NONE, "value": 0.0, "cost": 0.0}
    )
    candidates = pd.concat([candidates, nobody], ignore_index=True)

    if last_contact_days_ago is None:
        last_contact_days_ago = pd.Series(np.nan, index=segments["user_id"].to_numpy())
        if catalogue.caps.min_days_between_contacts > 0:
            notes.append(
                "no contact history given: the frequency cap of "
                f"{catalogue.caps.min_days_between_contacts:g} days assumes nobody was "
                "contacted recently"
            )
    else:
        history = pd.Series(last_contact_days_ago, dtype=float)
        history.index = history.index.astype(str)
        last_contact_days_ago = history.reindex(segments["user_id"].to_numpy())
    net = 1.0 if catalogue.budget.objective == "margin" else None
    plan = plan_campaign(
        candidates,
        catalogue,
        last_contact_days_ago=last_contact_days_ago,
        method=method,
        value_per_cost_unit=net,
    )
    table = _assemble(plan, segments, chosen_effects)
    _attach_items(table, model, store, at_plan, categories, k=top_k, notes=notes)
    return ReactivationPlan(
        table=table[PLAN_COLUMNS],
        plan=plan,
        catalogue=catalogue,
        at=at,
        horizon=horizon,
        notes=notes,
    )


def _score(model: Model, history: History, horizon: timedelta) -> tuple[pd.DataFrame, Any]:
    """p_return (required), p_buy and per-category interest when the model answers them."""
    if "p_return" not in model.answers:
        raise ConfigError(
            f"planning needs p_return and the {model.name} model does not answer it: "
            "use neural, decay, gbdt or btyd"
        )
    users = model.p_return(history, horizon=horizon)
    if users.empty:
        raise ConfigError(
            f"no user has events before {history.at.isoformat()}: plan at a later time"
        )
    if "p_buy" in model.answers:
        users = users.merge(model.p_buy(history, horizon=horizon), on="user_id", how="left")
    categories = None
    if "interest" in model.answers:
        categories = model.interest(history, horizon=horizon)
    return users, categories


def _learned(
    effects: pd.DataFrame, segments: pd.DataFrame, allowed: set[str], notes: list[str]
) -> pd.DataFrame:
    """Check a learned effects table and keep the rows of scored users and allowed actions."""
    missing = [name for name in ("user_id", "action", "uplift") if name not in effects.columns]
    if missing:
        raise ConfigError(
            f"effects lack column(s) {missing}; need user_id, action, uplift "
            "(and optionally p_conversion)"
        )
    frame = effects.copy()
    frame["user_id"] = frame["user_id"].astype(str)
    uplift = pd.to_numeric(frame["uplift"], errors="coerce")
    if uplift.isna().any():
        bad = frame.loc[uplift.isna(), "uplift"].iloc[0]
        raise ConfigError(f"effects: uplift must be a number on every row, found {bad!r}")
    frame["uplift"] = uplift.astype(float)
    if "p_conversion" not in frame:
        frame["p_conversion"] = np.nan
    known = frame["user_id"].isin(segments["user_id"])
    if not known.all():
        notes.append(
            f"{int((~known).sum())} effect rows name users without history before the plan "
            "time; they are left out"
        )
    frame = frame[known & frame["action"].isin(allowed)]
    frame["assumption"] = False
    if "p_buy" in segments and frame["p_conversion"].isna().any():
        p_buy = frame["user_id"].map(segments.set_index("user_id")["p_buy"])
        guess = (p_buy.fillna(0.0) + frame["uplift"]).clip(0.0, 1.0)
        frame["p_conversion"] = frame["p_conversion"].fillna(guess)
    return frame[["user_id", "action", "uplift", "p_conversion", "assumption"]]


def _assemble(plan: Plan, segments: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """Join the chosen action of each user with its segment and effect."""
    chosen = plan.assignments.rename(columns={"user": "user_id"})
    table = segments[["user_id", "segment", "reason"]].rename(columns={"reason": "why_segment"})
    table = table.merge(chosen, on="user_id", how="left")
    picked = effects[["user_id", "action", "uplift", "assumption"]]
    table = table.merge(picked, on=["user_id", "action"], how="left")
    table["expected_uplift"] = table["uplift"].fillna(0.0)
    table["assumption"] = table["assumption"].astype("boolean").fillna(False).astype(bool)
    table["reason"] = table["why_segment"] + "; " + table["reason"]
    return table.sort_values("user_id", kind="stable").reset_index(drop=True)


def _attach_items(
    table: pd.DataFrame,
    model: Model,
    store: EventStore,
    history: History,
    categories: pd.DataFrame | None,
    *,
    k: int,
    notes: list[str],
) -> None:
    """Fill items, item_categories and category_interest for contacted users (in place)."""
    empty = [[] for _ in range(len(table))]
    table["items"], table["item_categories"], table["category_interest"] = empty, empty, empty
    contacted = table.loc[table["action"] != NONE, "user_id"].to_numpy()
    if contacted.size == 0:
        return
    if "recommend" not in model.answers:
        notes.append(f"the {model.name} model does not recommend items: item lists are empty")
        return
    recs = model.recommend(history, list(contacted), k=k)
    item_category = item_categories(store, before=history.at).set_index("item_id")["category_id"]
    # Items the log gives no category belong to the models' implicit one.
    recs["category_id"] = recs["item_id"].map(item_category).astype(object)
    recs["category_id"] = recs["category_id"].where(recs["category_id"].notna(), UNCATEGORISED)
    if categories is not None:
        interest = categories[["user_id", "category_id", "p_engage"]]
        recs = recs.merge(interest, on=["user_id", "category_id"], how="left")
    else:
        recs["p_engage"] = np.nan
    # `recommend` gives every user the same number of rows, in rank order: one reshape
    # turns the columns into per-user lists without a Python-level group-by.
    recs = recs.sort_values(["user_id", "rank"], kind="stable")
    width = int(recs["rank"].max())
    users = recs["user_id"].to_numpy()[::width]
    rows = table.set_index("user_id").index.get_indexer(users)
    for column, source in (
        ("items", "item_id"),
        ("item_categories", "category_id"),
        ("category_interest", "p_engage"),
    ):
        values = table[column].to_list()
        lists = recs[source].to_numpy(dtype=float if source == "p_engage" else object)
        for row, value in zip(rows, lists.reshape(-1, width).tolist(), strict=True):
            values[row] = value
        table[column] = values
