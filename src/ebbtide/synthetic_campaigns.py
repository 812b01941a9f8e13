"""Synthetic campaign logs with known, heterogeneous treatment effects.

Why: an uplift learner, an off-policy estimate or a planner can only be *shown* to work
against effects that are known. No real campaign log tells you what each customer would have
done under the arm they did not get; this one does, because it draws both.

Generative process (one row per customer, arms randomised)
----------------------------------------------------------
1. **Pre-campaign features**: ``recency_days ~ Exp(mean 12)``; ``frequency = 1 + Poisson(3)``
   past orders; ``monetary`` (mean order value) lognormal around 40; ``interest_trend ~
   N(0, 1)`` (negative = interest fading); ``channel`` ∈ {email, push} (the channel the
   customer reacts to); ``segment`` from recency and trend: *active* (recency < 7 and trend ≥
   −0.5), *cooling* (recency < 21 and trend < −0.5), *at_risk* (7 ≤ recency < 21 otherwise),
   *dormant* (recency ≥ 21).
2. **Baselines**: ``P(visit) = σ(−0.5 + 0.3 log1p(frequency) − 0.06 recency + 0.3 trend)``,
   ``P(conversion) = σ(−2.2 + 0.35 log1p(frequency) − 0.05 recency + 0.3 trend)``.
3. **Effects** on the conversion probability, by segment (push, coupon):
   active (0, −0.01), cooling (+0.05, +0.10), at_risk (+0.02, +0.06), dormant (0, +0.02);
   the push effect is ×1.5 for customers whose channel is push and ×0.5 otherwise; every
   effect grows by 10% per point of fading trend (``× (1 + 0.1 · max(−trend, 0))``). The
   visit effect is twice the conversion effect. Probabilities are clipped to [0.001, 0.999];
   the clipped values *are* the truth.
4. **Assignment**: by default each arm with its share, independent of everything
   (``propensity`` = the share). With ``targeted=True`` the logged policy favours fading
   customers (softmax of ``[0, 0.4·fade, 0.8·fade]`` over control, push, coupon, shares
   mixed in 50/50), and the per-row propensity of the logged arm is written to the log.
5. **Outcomes**: ``visit``, ``conversion`` Bernoulli; ``spend`` = conversion × order value
   (lognormal around ``monetary``), 10% lower under a coupon.

Examples
--------
>>> campaign = generate_campaign(CampaignConfig(customers=1000, seed=1))
>>> sorted(campaign.log.arm.unique())
['control', 'coupon', 'push']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from ebbtide.errors import ConfigError

__all__ = ["ARMS", "CampaignConfig", "SyntheticCampaign", "generate_campaign"]

#: The arms of a synthetic campaign, control first.
ARMS = ("control", "push", "coupon")
SEGMENTS = ("active", "cooling", "at_risk", "dormant")
FEATURES = ("recency_days", "frequency", "monetary", "interest_trend", "channel", "segment")
#: Conversion effects (push, coupon) per segment, before the channel and trend modifiers.
_EFFECT = {
    "active": (0.0, -0.01),
    "cooling": (0.05, 0.10),
    "at_risk": (0.02, 0.06),
    "dormant": (0.0, 0.02),
}
_COUPON_DISCOUNT = 0.10


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignConfig:
    """Size, arm shares, assignment and seed of a synthetic campaign.

    customers : int
        Rows of the log.
    shares : tuple of 3 floats
        Shares of control, push and coupon under random assignment (sum to 1).
    targeted : bool
        Log a feature-dependent assignment (known propensities) instead of a randomised one.
    seed : int
        Same seed, same log.
    """

    customers: int = 64_000
    shares: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    targeted: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.customers, int) or not 1 <= self.customers <= 100_000_000:
            raise ConfigError(
                f"CampaignConfig.customers={self.customers!r}: use an integer in [1, 1e8]"
            )
        shares = np.asarray(self.shares, dtype=float)
        if shares.shape != (3,) or (shares <= 0).any() or not np.isclose(shares.sum(), 1.0):
            raise ConfigError(
                f"CampaignConfig.shares={self.shares!r}: give 3 positive shares "
                "(control, push, coupon) that sum to 1"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"CampaignConfig.seed={self.seed!r}: use an integer >= 0")


@dataclass(frozen=True)
class SyntheticCampaign:
    """A campaign log and what every customer would have done under every arm.

    log : DataFrame
        ``user_id, arm, propensity, visit, conversion, spend`` and the features.
    truth : DataFrame
        Per customer and arm the true ``p_visit_<arm>``, ``p_conversion_<arm>`` and
        ``spend_<arm>`` (expected spend).
    """

    log: pd.DataFrame
    truth: pd.DataFrame

    def true_effect(self, arm: str, outcome: str = "conversion") -> np.ndarray:
        """τ(x) of `arm` against control on `outcome`, per customer (log order)."""
        column = _truth_column(outcome)
        return (self.truth[f"{column}_{arm}"] - self.truth[f"{column}_control"]).to_numpy()

    def policy_value(self, policy: np.ndarray | pd.Series, outcome: str = "conversion") -> float:
        """Mean expected `outcome` per customer had each received ``policy[i]`` (an arm name).

        The target an off-policy estimate of that policy must cover.
        """
        policy = np.asarray(policy)
        unknown = set(np.unique(policy)) - set(ARMS)
        if unknown:
            raise ConfigError(f"unknown arms in policy: {sorted(unknown)}; use {list(ARMS)}")
        column = _truth_column(outcome)
        values = np.zeros(policy.size)
        for arm in ARMS:
            pick = policy == arm
            values[pick] = self.truth[f"{column}_{arm}"].to_numpy()[pick]
        return float(values.mean())


def _truth_column(outcome: str) -> str:
    names = {"visit": "p_visit", "conversion": "p_conversion", "spend": "spend"}
    if outcome not in names:
        raise ConfigError(f"unknown outcome {outcome!r}; use one of {sorted(names)}")
    return names[outcome]


def _segments(recency: np.ndarray, trend: np.ndarray) -> np.ndarray:
    return np.select(
        [recency >= 21, (recency < 7) & (trend >= -0.5), trend < -0.5],
        ["dormant", "active", "cooling"],
        default="at_risk",
    )


def generate_campaign(config: CampaignConfig | None = None) -> SyntheticCampaign:
    """Draw a campaign log with known effects (see the module docstring for the process)."""
    cfg = config or CampaignConfig()
    rng = np.random.default_rng(cfg.seed)
    n = cfg.customers
    recency = rng.exponential(12.0, n)
    frequency = 1 + rng.poisson(3.0, n)
    monetary = rng.lognormal(np.log(40.0), 0.5, n)
    trend = rng.normal(0.0, 1.0, n)
    channel = np.where(rng.random(n) < 0.5, "email", "push")
    segment = _segments(recency, trend)

    base_visit = expit(-0.5 + 0.3 * np.log1p(frequency) - 0.06 * recency + 0.3 * trend)
    base_conv = expit(-2.2 + 0.35 * np.log1p(frequency) - 0.05 * recency + 0.3 * trend)
    fade = np.maximum(-trend, 0.0)
    push_effect = np.zeros(n)
    coupon_effect = np.zeros(n)
    for name, (push, coupon) in _EFFECT.items():
        pick = segment == name
        push_effect[pick], coupon_effect[pick] = push, coupon
    push_effect *= np.where(channel == "push", 1.5, 0.5)
    boost = 1.0 + 0.1 * fade
    effects = {"control": np.zeros(n), "push": push_effect * boost, "coupon": coupon_effect * boost}

    truth = {"user_id": [f"c{i + 1}" for i in range(n)]}
    for arm in ARMS:
        p_conv = np.clip(base_conv + effects[arm], 0.001, 0.999)
        truth[f"p_visit_{arm}"] = np.clip(base_visit + 2.0 * effects[arm], 0.001, 0.999)
        truth[f"p_conversion_{arm}"] = p_conv
        discount = _COUPON_DISCOUNT if arm == "coupon" else 0.0
        truth[f"spend_{arm}"] = p_conv * monetary * (1.0 - discount)
    truth_frame = pd.DataFrame(truth)

    shares = np.asarray(cfg.shares, dtype=float)
    if cfg.targeted:
        tilt = softmax(np.stack([0 * fade, 0.4 * fade, 0.8 * fade], axis=1), axis=1)
        probs = 0.5 * tilt + 0.5 * shares
    else:
        probs = np.broadcast_to(shares, (n, 3))
    arm_idx = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    arm_idx = np.minimum(arm_idx, 2)
    arms = np.asarray(ARMS)[arm_idx]
    p_visit = truth_frame[[f"p_visit_{a}" for a in ARMS]].to_numpy()[np.arange(n), arm_idx]
    p_conv = truth_frame[[f"p_conversion_{a}" for a in ARMS]].to_numpy()[np.arange(n), arm_idx]
    conversion = rng.random(n) < p_conv
    order_value = rng.lognormal(np.log(monetary) - 0.125, 0.5)  # mean = monetary
    discount = np.where(arms == "coupon", _COUPON_DISCOUNT, 0.0)
    log = pd.DataFrame(
        {
            "user_id": truth_frame.user_id,
            "arm": arms,
            "propensity": probs[np.arange(n), arm_idx],
            "visit": (rng.random(n) < p_visit).astype(int),
            "conversion": conversion.astype(int),
            "spend": np.round(conversion * order_value * (1.0 - discount), 2),
            "recency_days": np.round(recency, 2),
            "frequency": frequency,
            "monetary": np.round(monetary, 2),
            "interest_trend": np.round(trend, 3),
            "channel": channel,
            "segment": segment,
        }
    )
    return SyntheticCampaign(log=log, truth=truth_frame)
