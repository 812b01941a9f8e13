"""`popular`: recency-weighted popularity, the baseline every recommender must beat.

An item's score at `at` is the sum over its events before `at` of a behaviour weight
times ``2 ** (-(at - t) / half_life)``: what is popular now, not what was popular once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ebbtide.errors import ConfigError
from ebbtide.features.sequences import EventArrays
from ebbtide.models.base import Model, Progress
from ebbtide.schema import ITEM_BEHAVIORS, Behavior


@dataclass(frozen=True, slots=True, kw_only=True)
class PopularConfig:
    """Parameters of `PopularModel`.

    half_life_days : float
        How fast an event's weight halves; ``inf`` counts all history equally.
    behavior_weights : tuple of 4 floats
        Weights of view, cart, fav and buy events.
    """

    half_life_days: float = 1.0
    behavior_weights: tuple[float, float, float, float] = (1.0, 2.0, 2.0, 3.0)

    def __post_init__(self) -> None:
        if not self.half_life_days > 0:
            raise ConfigError(f"PopularConfig.half_life_days={self.half_life_days} must be > 0")
        if len(self.behavior_weights) != len(ITEM_BEHAVIORS) or min(self.behavior_weights) < 0:
            raise ConfigError(
                f"PopularConfig.behavior_weights={self.behavior_weights}: four weights >= 0"
                " (view, cart, fav, buy)"
            )


class PopularModel(Model):
    """Recommend what is most popular now, skipping what the user already bought."""

    name = "popular"
    config_class = PopularConfig
    answers = frozenset({"recommend"})

    def _fit(self, events: EventArrays, progress: Progress | None) -> None:
        self.metrics_ = {"events": events.n_events}

    def item_scores(self, events: EventArrays, at: float) -> np.ndarray:
        """Recency-weighted popularity of every item at `at` (days since epoch)."""
        weights = np.asarray(self.config.behavior_weights)[events.behavior]
        decay = np.exp2(-(at - events.t) / self.config.half_life_days)
        return np.bincount(events.item_idx, weights * decay, minlength=events.n_items)

    def _recommend(
        self, events: EventArrays, users: np.ndarray, at: float, k: int, exclude_bought: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.item_scores(events, at)
        k = min(k, events.n_items)
        bought = np.zeros(0, dtype=np.int64)
        if exclude_bought:
            mask = events.behavior == Behavior.BUY.code
            bought = np.unique(
                events.user_idx[mask].astype(np.int64) * events.n_items + events.item_idx[mask]
            )
        per_user = np.bincount(bought // max(events.n_items, 1), minlength=events.n_users)
        m = min(events.n_items, k + (int(per_user[users].max()) if users.size else 0))
        top = np.argsort(-scores, kind="stable")[:m]
        candidates = np.broadcast_to(top, (users.size, m))
        codes = users[:, None] * events.n_items + candidates
        taken = np.isin(codes, bought)
        order = np.argsort(taken, axis=1, kind="stable")[:, :k]
        items = np.take_along_axis(candidates, order, axis=1)
        return items, scores[items]
