"""Recency, frequency, monetary and decayed-counter features at an instant, vectorised.

`user_features(events, users, at)` and `pair_features(events, at)` read only the
`EventArrays` they are given; pass arrays loaded with ``before=at`` and nothing after
`at` can leak in. Every feature is a numpy reduction (`bincount`, `maximum.at`) over all
events at once, never a loop over events or users.
"""

from __future__ import annotations

import numpy as np

from ebbtide.features.sequences import EventArrays
from ebbtide.schema import ITEM_BEHAVIORS

#: Half-lives (days) of the decayed counters: yesterday's pulse and last week's habit.
HALF_LIVES_DAYS: tuple[float, ...] = (1.0, 7.0)
_NO_EVENT_DAYS = 1e4  # recency of "never", large but finite for tree models


def _decay(events: EventArrays, at: float, half_life: float) -> np.ndarray:
    return np.exp2(-(at - events.t) / half_life)


def user_features(events: EventArrays, users: np.ndarray, at: float) -> dict[str, np.ndarray]:
    """One row per user in `users`: recency, counts, decayed counts, breadth, tenure."""
    n = events.n_users
    counts = np.bincount(events.user_idx, minlength=n).astype(np.float64)
    last = np.full(n, -np.inf)
    first = np.full(n, np.inf)
    np.maximum.at(last, events.user_idx, events.t)
    np.minimum.at(first, events.user_idx, events.t)
    features: dict[str, np.ndarray] = {
        "recency_days": np.where(counts > 0, at - last, _NO_EVENT_DAYS),
        "tenure_days": np.where(counts > 0, at - first, 0.0),
        "events": counts,
        "active_days": _distinct_per_user(events.user_idx, np.floor(events.t), n),
        "items": _distinct_per_user(events.user_idx, events.item_idx, n),
        "categories": _distinct_per_user(events.user_idx, events.category_idx, n),
    }
    for behavior in ITEM_BEHAVIORS:
        mask = events.behavior == behavior.code
        features[f"{behavior.value}_events"] = np.bincount(
            events.user_idx[mask], minlength=n
        ).astype(np.float64)
        last_b = np.full(n, -np.inf)
        np.maximum.at(last_b, events.user_idx[mask], events.t[mask])
        features[f"{behavior.value}_recency_days"] = np.where(
            np.isfinite(last_b), at - last_b, _NO_EVENT_DAYS
        )
        for half_life in HALF_LIVES_DAYS:
            weights = _decay(events, at, half_life)[mask]
            features[f"{behavior.value}_decayed_{half_life:g}d"] = np.bincount(
                events.user_idx[mask], weights, minlength=n
            )
    return {name: values[users] for name, values in features.items()}


def pair_features(events: EventArrays, at: float) -> dict[str, np.ndarray]:
    """One row per (user, category) the user touched: its recency, counts and decay.

    Returns ``user_idx`` and ``category_idx`` beside the features, sorted by user then
    category; events without a category are left out.
    """
    has = events.category_idx >= 0
    code = (
        events.user_idx[has].astype(np.int64) * max(events.n_categories, 1)
        + events.category_idx[has]
    )
    pairs, inverse = np.unique(code, return_inverse=True)
    t = events.t[has]
    behavior = events.behavior[has]
    m = pairs.size
    last = np.full(m, -np.inf)
    np.maximum.at(last, inverse, t)
    user_total = np.bincount(events.user_idx, minlength=events.n_users).astype(np.float64)
    user_idx = (pairs // max(events.n_categories, 1)).astype(np.int64)
    out: dict[str, np.ndarray] = {
        "user_idx": user_idx,
        "category_idx": (pairs % max(events.n_categories, 1)).astype(np.int64),
        "pair_recency_days": at - last,
        "pair_events": np.bincount(inverse, minlength=m).astype(np.float64),
    }
    out["pair_share"] = out["pair_events"] / np.maximum(user_total[user_idx], 1.0)
    for half_life in HALF_LIVES_DAYS:
        weights = np.exp2(-(at - t) / half_life)
        out[f"pair_decayed_{half_life:g}d"] = np.bincount(inverse, weights, minlength=m)
        buy = behavior == ITEM_BEHAVIORS[-1].code
        out[f"pair_buy_decayed_{half_life:g}d"] = np.bincount(
            inverse[buy], weights[buy], minlength=m
        )
    return out


def _distinct_per_user(user_idx: np.ndarray, values: np.ndarray, n_users: int) -> np.ndarray:
    """Number of distinct `values` per user (values < 0 are ignored)."""
    keep = values >= 0
    pairs = np.unique(np.stack([user_idx[keep], values[keep].astype(np.int64)]), axis=1)
    return np.bincount(pairs[0], minlength=n_users).astype(np.float64)
