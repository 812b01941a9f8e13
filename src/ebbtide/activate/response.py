"""Expected response to each action when no campaign has been measured: the prior model.

Why a prior: a shop planning its first campaign has no log to learn uplift from, yet still
needs a ranking of who to contact. The numbers below are *assumptions*, not estimates, and
every effect computed from them is flagged ``assumption=True`` so nobody mistakes it for a
measurement; replace them with learned uplift once a campaign has run
(`ebbtide campaign uplift`).

Incremental conversion probability of a contact, by segment (recommendation push or email):
active 0 (they come anyway), cooling 0.03, at_risk 0.02, dormant 0.01, lost 0. A coupon
multiplies it by ``1 + 10 × discount`` (10% off doubles it). The effects table has the shape
`planner.build_candidates` prices: it turns uplift into value (conversions, or uplift × order
value × margin) and adds a coupon's expected redemptions, ``discount × order value ×
P(conversion)``, to its cost, so the discount paid to customers who would have bought anyway
is counted as spend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ebbtide.activate.actions import NONE, Action
from ebbtide.errors import ConfigError

__all__ = ["COUPON_GAIN", "PRIOR_LIFT", "prior_effects"]

#: Assumed incremental conversion probability of one contact, by segment.
PRIOR_LIFT: Mapping[str, float] = {
    "active": 0.0,
    "cooling": 0.03,
    "at_risk": 0.02,
    "dormant": 0.01,
    "lost": 0.0,
}
#: A coupon's lift is the contact lift × (1 + COUPON_GAIN × discount).
COUPON_GAIN = 10.0


def prior_effects(
    users: pd.DataFrame,
    actions: Sequence[Action],
    *,
    lift: Mapping[str, float] = PRIOR_LIFT,
) -> pd.DataFrame:
    """One row per (user, paid action): the assumed uplift and P(conversion) under it.

    Parameters
    ----------
    users : DataFrame
        ``user_id``, ``segment`` and optionally ``p_buy`` (P(conversion) without contact;
        0 when absent or NaN).
    actions : sequence of Action
        The catalogue's actions; the free "none" action is skipped.
    lift : mapping of segment -> float
        Incremental conversion probability of a plain contact per segment.

    Returns
    -------
    DataFrame
        user_id, action, uplift, p_conversion, assumption (always True here).

    Examples
    --------
    >>> from ebbtide.activate.actions import default_actions
    >>> users = pd.DataFrame({"user_id": ["a"], "segment": ["cooling"], "p_buy": [0.2]})
    >>> prior_effects(users, default_actions().actions).set_index("action").uplift.round(3)
    action
    push         0.030
    email        0.030
    coupon_5     0.045
    coupon_10    0.060
    Name: uplift, dtype: float64
    """
    unknown = sorted(set(users["segment"]) - set(lift))
    if unknown:
        raise ConfigError(f"no prior lift for segments {unknown}; known: {sorted(lift)}")
    base = users["segment"].map(lift).to_numpy(dtype=float)
    if "p_buy" in users:
        p_buy = np.nan_to_num(users["p_buy"].to_numpy(dtype=float), nan=0.0)
    else:
        p_buy = np.zeros(len(users))
    frames = []
    for action in actions:
        if action.name == NONE:
            continue
        discount = float(action.discount or 0.0)
        gain = base * (1.0 + COUPON_GAIN * discount) if action.kind == "coupon" else base
        frames.append(
            pd.DataFrame(
                {
                    "user_id": users["user_id"].to_numpy(),
                    "action": action.name,
                    "uplift": gain,
                    "p_conversion": np.minimum(p_buy + gain, 1.0),
                    "assumption": True,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["user_id", "action", "uplift", "p_conversion", "assumption"])
    return pd.concat(frames, ignore_index=True)
