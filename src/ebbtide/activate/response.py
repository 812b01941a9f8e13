"""Expected response to each action when no campaign has been measured: the prior model.

Why a prior: a shop planning its first campaign has no log to learn uplift from, yet still
needs a ranking of who to contact. The numbers below are *assumptions*, not estimates, and
every value computed from them is flagged ``assumption=True`` so nobody mistakes them for
measurements; replace them with learned uplift once a campaign has run
(`ebbtide campaign uplift`).

Incremental conversion probability of a contact, by segment (recommendation push):
active 0 (they come anyway), cooling 0.03, at_risk 0.02, dormant 0.01, lost 0. A coupon
multiplies it by ``1 + 10 × discount`` (10% off doubles it). For the margin objective the
value is ``lift × order value × (margin − discount)`` minus, for coupons, the discount paid
to customers who would have bought anyway (``discount × order value × p_buy``). A coupon's
cost adds the expected redemptions, ``discount × order value × (p_buy + lift)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ebbtide.errors import ConfigError

__all__ = ["COUPON_GAIN", "PRIOR_LIFT", "candidate_actions"]

#: Assumed incremental conversion probability of one push, by segment.
PRIOR_LIFT: Mapping[str, float] = {
    "active": 0.0,
    "cooling": 0.03,
    "at_risk": 0.02,
    "dormant": 0.01,
    "lost": 0.0,
}
#: A coupon's lift is the push lift × (1 + COUPON_GAIN × discount).
COUPON_GAIN = 10.0


def candidate_actions(
    users: pd.DataFrame,
    actions: list,
    *,
    objective: str,
    order_value: float,
    lift: Mapping[str, float] = PRIOR_LIFT,
) -> pd.DataFrame:
    """One row per (user, paid action) with its expected value and cost under the prior.

    Parameters
    ----------
    users : DataFrame
        ``user_id``, ``segment`` and optionally ``p_buy`` (0 when absent).
    actions : list of Action
        The catalogue's actions (``name``, ``kind``, ``cost``, ``discount``, ``margin``);
        the free "none" action is skipped.
    objective : {"conversions", "margin"}
    order_value : float
        Mean order value, in the budget's currency.

    Returns
    -------
    DataFrame
        user, action, lift, value, cost, assumption (always True here).
    """
    if objective not in ("conversions", "margin"):
        raise ConfigError(f"objective {objective!r}: use 'conversions' or 'margin'")
    if not np.isfinite(order_value) or order_value <= 0:
        raise ConfigError(f"order value {order_value!r} must be a positive number")
    unknown = sorted(set(users["segment"]) - set(lift))
    if unknown:
        raise ConfigError(f"no prior lift for segments {unknown}; known: {sorted(lift)}")
    base = users["segment"].map(lift).to_numpy(dtype=float)
    p_buy = users["p_buy"].to_numpy(dtype=float) if "p_buy" in users else np.zeros(len(users))
    p_buy = np.nan_to_num(p_buy, nan=0.0)
    frames = []
    for action in actions:
        if action.name == "none":
            continue
        discount = float(action.discount or 0.0)
        gain = base * (1.0 + COUPON_GAIN * discount) if action.kind == "coupon" else base
        cost = np.full(len(users), float(action.cost))
        cost = cost + discount * order_value * (p_buy + gain)
        if objective == "conversions":
            value = gain
        else:
            if action.margin is None:
                raise ConfigError(
                    f"action {action.name!r} has no margin; the margin objective needs one"
                )
            value = gain * order_value * (action.margin - discount)
            value = value - discount * order_value * p_buy
        frames.append(
            pd.DataFrame(
                {
                    "user": users["user_id"].to_numpy(),
                    "action": action.name,
                    "lift": gain,
                    "value": value,
                    "cost": cost,
                    "assumption": True,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["user", "action", "lift", "value", "cost", "assumption"])
    return pd.concat(frames, ignore_index=True)
