"""Segments and the churn early warning, read off a model's answers at one instant.

Why here and not in the models: a segment is a business reading of the predictions (which
thresholds count as "at risk" is a shop's choice), so it works on the tables any family's
`score_users` returns, and every user's segment comes with the numbers that put it there.

Rules, first match wins (thresholds in `SegmentRules`):

- **lost**: ``p_return < lost_below``;
- **dormant**: ``p_return < dormant_below`` (unlikely to return unaided, not lost);
- **at_risk**: ``p_return < at_risk_below``;
- **cooling**: projected interest change over the horizon ``≤ cooling_change`` — the
  interest is falling: with no new events, ``Σ_c (baseline_c + excitation_c · 2^(−H / h_c))``
  over ``Σ_c level_c``, minus 1;
- **active**: everyone else.

A family without `interest` (btyd, gbdt) gets no *cooling*: its ``interest_change`` is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from ebbtide.errors import ConfigError
from ebbtide.features.history import snapshot
from ebbtide.models.base import Model
from ebbtide.models.scoring import score_users
from ebbtide.store import EventStore

__all__ = [
    "SEGMENTS",
    "SegmentRules",
    "assign_segments",
    "early_warning",
    "interest_summary",
]

#: Segment names, most engaged first.
SEGMENTS = ("active", "cooling", "at_risk", "dormant", "lost")


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentRules:
    """Thresholds of the segment rules (see the module docstring).

    lost_below, dormant_below, at_risk_below : float
        Increasing cut-offs on ``p_return`` over the scoring horizon.
    cooling_change : float
        Projected relative interest change at or below which an otherwise healthy user is
        cooling (−0.3: the interest falls by 30% or more over the horizon).
    """

    lost_below: float = 0.05
    dormant_below: float = 0.2
    at_risk_below: float = 0.5
    cooling_change: float = -0.3

    def __post_init__(self) -> None:
        cuts = (self.lost_below, self.dormant_below, self.at_risk_below)
        if not all(isinstance(c, int | float) and 0.0 <= c <= 1.0 for c in cuts) or not (
            cuts[0] <= cuts[1] <= cuts[2]
        ):
            raise ConfigError(
                f"SegmentRules: need 0 <= lost_below <= dormant_below <= at_risk_below <= 1,"
                f" got {cuts}"
            )
        if not isinstance(self.cooling_change, int | float) or not -1.0 <= self.cooling_change <= 0:
            raise ConfigError(
                f"SegmentRules.cooling_change={self.cooling_change!r}: use a number in [-1, 0]"
            )


def interest_summary(categories: pd.DataFrame | None, horizon_days: float) -> pd.DataFrame:
    """Per user: ``interest_now`` (events/day over touched categories) and ``interest_change``,
    the relative change of that interest over the horizon if nothing new happens."""
    if categories is None or categories.empty:
        return pd.DataFrame(columns=["user_id", "interest_now", "interest_change"])
    faded = categories["excitation"] * np.exp2(
        -horizon_days / categories["half_life_days"].clip(lower=1e-9)
    )
    frame = pd.DataFrame(
        {
            "user_id": categories["user_id"],
            "now": categories["level"],
            "later": categories["baseline"] + faded,
        }
    )
    totals = frame.groupby("user_id", sort=False)[["now", "later"]].sum()
    now, later = totals["now"].to_numpy(), totals["later"].to_numpy()
    change = np.divide(later, now, out=np.ones_like(now), where=now > 0) - 1.0
    return pd.DataFrame(
        {
            "user_id": totals.index,
            "interest_now": now,
            "interest_change": change,
        }
    )


def assign_segments(
    users: pd.DataFrame,
    categories: pd.DataFrame | None,
    *,
    horizon: timedelta,
    rules: SegmentRules | None = None,
) -> pd.DataFrame:
    """A segment and its reason for every user of `users` (a `score_users` table).

    Returns
    -------
    DataFrame
        user_id, segment, p_return, interest_now, interest_change, reason.
    """
    rules = rules or SegmentRules()
    if "p_return" not in users.columns:
        raise ConfigError(
            "segments need p_return: score with a model that answers it (neural, decay, gbdt, btyd)"
        )
    summary = interest_summary(categories, horizon / timedelta(days=1))
    table = users[["user_id", "p_return"]].merge(summary, on="user_id", how="left")
    p = table["p_return"].to_numpy(dtype=float)
    change = table["interest_change"].to_numpy(dtype=float)
    conditions = [
        p < rules.lost_below,
        p < rules.dormant_below,
        p < rules.at_risk_below,
        change <= rules.cooling_change,  # NaN compares False: no cooling without interest
    ]
    table["segment"] = np.select(conditions, ["lost", "dormant", "at_risk", "cooling"], "active")
    days = horizon / timedelta(days=1)
    p_text = [f"p_return {v:.2f}" for v in p]
    reasons = {
        "lost": f"< {rules.lost_below:g} over {days:g} d",
        "dormant": f"< {rules.dormant_below:g} over {days:g} d",
        "at_risk": f"< {rules.at_risk_below:g} over {days:g} d",
    }
    reason = []
    for segment, text, c in zip(table["segment"], p_text, change, strict=True):
        if segment in reasons:
            reason.append(f"{text} {reasons[segment]}")
        elif segment == "cooling":
            reason.append(f"interest {c:+.0%} over {days:g} d (<= {rules.cooling_change:+.0%})")
        else:
            trend = "" if np.isnan(c) else f", interest {c:+.0%} over {days:g} d"
            reason.append(f"{text} >= {rules.at_risk_below:g}{trend}")
    table["reason"] = reason
    columns = ["user_id", "segment", "p_return", "interest_now", "interest_change", "reason"]
    return table[columns]


def early_warning(
    model: Model | None,
    store: EventStore | None,
    *,
    before: datetime,
    at: datetime,
    horizon: timedelta,
    top: int | None = 100,
    faded_categories: int = 3,
    earlier: tuple[pd.DataFrame, pd.DataFrame | None] | None = None,
    now: tuple[pd.DataFrame, pd.DataFrame | None] | None = None,
) -> pd.DataFrame:
    """Users whose return probability dropped the most between `before` and `at`, ranked.

    Both scorings use only events before their own instant, and the model must be fitted at
    or before `before` (a later fit knows what happened after `before`: the query is
    refused). One model scoring both instants shows the change the users' own events made.
    `earlier` and `now`, `score_users` results at `before` and `at` with the same horizon
    (each from a model fitted no later than its instant), replace the scoring; then `model`
    and `store` may be None. Users need history before `before`. Ties in the p_return drop
    are broken by the larger interest drop.

    Returns
    -------
    DataFrame
        rank, user_id, p_return_before, p_return_now, p_return_change, interest_before,
        interest_now, interest_change (relative), faded_categories (list of category ids
        whose interest fell the most), faded_change (list of their relative changes).
    """
    if not before < at:
        raise ConfigError(f"early warning needs before < at, got {before} and {at}")
    if (earlier is None or now is None) and (model is None or store is None):
        raise ConfigError("early warning needs a model and a store, or both scorings")
    if earlier is None:
        earlier = score_users(model, snapshot(store, at=before), horizon=horizon, k=1)
    if now is None:
        now = score_users(model, snapshot(store, at=at), horizon=horizon, k=1)
    return _compare(earlier, now, horizon=horizon, top=top, faded_categories=faded_categories)


def _compare(
    earlier: tuple[pd.DataFrame, pd.DataFrame | None],
    now: tuple[pd.DataFrame, pd.DataFrame | None],
    *,
    horizon: timedelta,
    top: int | None = 100,
    faded_categories: int = 3,
) -> pd.DataFrame:
    """The early-warning list from two `score_users` results."""
    (earlier_users, earlier_cats), (now_users, now_cats) = earlier, now
    table = earlier_users[["user_id", "p_return"]].merge(
        now_users[["user_id", "p_return"]], on="user_id", suffixes=("_before", "_now")
    )
    table["p_return_change"] = table["p_return_now"] - table["p_return_before"]
    days = horizon / timedelta(days=1)
    level_before = interest_summary(earlier_cats, days)[["user_id", "interest_now"]]
    level_now = interest_summary(now_cats, days)[["user_id", "interest_now"]]
    levels = level_before.merge(level_now, on="user_id", how="outer", suffixes=("_b", "_n"))
    levels = levels.rename(
        columns={"interest_now_b": "interest_before", "interest_now_n": "interest_now"}
    )
    levels["interest_change"] = levels["interest_now"] / levels["interest_before"] - 1
    table = table.merge(levels, on="user_id", how="left")
    table = table.merge(_faded(earlier_cats, now_cats, faded_categories), on="user_id", how="left")
    table = table.sort_values(
        ["p_return_change", "interest_change", "user_id"], kind="stable", na_position="last"
    )
    if top is not None:
        table = table.head(top)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def _faded(earlier: pd.DataFrame | None, now: pd.DataFrame | None, n: int) -> pd.DataFrame:
    """Per user, the `n` categories whose level fell the most (relative), with the change."""
    if earlier is None or now is None:
        return pd.DataFrame(columns=["user_id", "faded_categories", "faded_change"])
    pairs = earlier[["user_id", "category_id", "level"]].merge(
        now[["user_id", "category_id", "level"]],
        on=["user_id", "category_id"],
        suffixes=("_b", "_n"),
    )
    pairs = pairs[pairs["level_b"] > 0]
    pairs["change"] = pairs["level_n"] / pairs["level_b"] - 1
    pairs = pairs[pairs["change"] < 0].sort_values(
        ["user_id", "change", "category_id"], kind="stable"
    )
    top = pairs.groupby("user_id", sort=False).head(n)
    return (
        top.groupby("user_id", sort=False)
        .agg(faded_categories=("category_id", list), faded_change=("change", list))
        .reset_index()
    )
