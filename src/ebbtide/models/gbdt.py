"""`gbdt`: gradient-boosted trees on RFM and decayed-counter features.

The strong tabular baseline for return, purchase and category re-engagement. Training
rows come from several windows that end at the cut-off: for an anchor ``a = cutoff -
k * horizon``, features read events before ``a`` and the label is what happened in
``[a, a + horizon)``, so the trees learn exactly the question asked later, and never
see an event after the cut-off.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from ebbtide.errors import ConfigError, DataQualityWarning, EbbtideError, UnsupportedQueryError
from ebbtide.features.rfm import pair_features, user_features
from ebbtide.features.sequences import EventArrays
from ebbtide.models.base import Model, Progress
from ebbtide.schema import Behavior

_TARGETS = ("return", "buy", "engage")
_QUERY_TARGET = {"p_return": "return", "p_buy": "buy", "interest": "engage"}
#: Fewer training rows than this of the rarer outcome: no trees (early stopping's
#: stratified validation split needs a few of each), the base rate instead.
_MIN_CLASS_ROWS = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class GBDTConfig:
    """Parameters of `GBDTModel`.

    horizon_days : float
        The window the classifiers predict; queries must ask for this horizon.
    anchors : int
        Training windows ending at the cut-off (more rows, older behaviour).
    max_iter, learning_rate, max_leaf_nodes, l2_regularization : boosting settings.
    seed : int
        Makes the validation split of early stopping, and so the model, reproducible.
    """

    horizon_days: float = 1.0
    anchors: int = 4
    max_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    l2_regularization: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.horizon_days) and self.horizon_days > 0):
            raise ConfigError(f"GBDTConfig.horizon_days={self.horizon_days} must be > 0")
        if self.anchors < 1:
            raise ConfigError(f"GBDTConfig.anchors={self.anchors} must be >= 1")


class GBDTModel(Model):
    """Classifiers for P(return), P(buy) and P(engage with a category) within a horizon."""

    name = "gbdt"
    config_class = GBDTConfig
    answers = frozenset({"p_return", "p_buy", "interest"})

    def _fit(self, events: EventArrays, progress: Progress | None) -> None:
        horizon = self.config.horizon_days
        cut = self.cutoff_.timestamp() / 86_400
        rows: dict[str, list[tuple[dict[str, np.ndarray], np.ndarray]]] = {t: [] for t in _TARGETS}
        for k in range(1, self.config.anchors + 1):
            anchor = cut - k * horizon
            history = events.select(events.t < anchor)
            window = events.select((events.t >= anchor) & (events.t < anchor + horizon))
            if history.n_events == 0:
                break
            users = np.flatnonzero(history.lengths() > 0)
            features = user_features(history, users, anchor)
            acted = window.lengths()[users] > 0
            bought = (
                np.bincount(
                    window.user_idx[window.behavior == Behavior.BUY.code], minlength=events.n_users
                )[users]
                > 0
            )
            rows["return"].append((features, acted))
            rows["buy"].append((features, bought))
            pairs = pair_features(history, anchor)
            rows["engage"].append((pairs, _engaged(pairs, window)))
        if not rows["return"]:
            raise EbbtideError("no history before the first training window: lower `anchors`")
        self.classifiers_ = {}
        for target in _TARGETS:
            x, y = _stack(rows[target])
            if y.size == 0:
                # e.g. a log without categories has no (user, category) pairs: the target
                # is left out and its query answers "unsupported" rather than guessing.
                continue
            fewest = int(np.bincount(y.astype(np.int64), minlength=2).min())
            if fewest < _MIN_CLASS_ROWS:
                if fewest > 0:
                    warnings.warn(
                        f"gbdt {target}: only {fewest} training rows of the rarer outcome "
                        f"(of {y.size}), too few to learn from: it answers the base rate "
                        f"{y.mean():.3g}; a longer log or a longer horizon gives it more",
                        DataQualityWarning,
                        stacklevel=3,
                    )
                self.classifiers_[target] = ConstantRate(float(y.mean()))
            else:
                self.classifiers_[target] = self._classifier().fit(x, y)
            if progress is not None:
                progress(f"fitted {target}", math.nan)
        self._restrict_answers()
        self.metrics_ = {f"{t}_rows": int(sum(len(y) for _, y in rows[t])) for t in _TARGETS} | {
            f"{t}_base_rate": float(np.mean(np.concatenate([y for _, y in rows[t]])))
            for t in _TARGETS
            if sum(len(y) for _, y in rows[t])
        }

    def _restrict_answers(self) -> None:
        """Answer only what there were training rows for (no categories: no interest)."""
        self.answers = frozenset(q for q, t in _QUERY_TARGET.items() if t in self.classifiers_)

    def _classifier(self) -> HistGradientBoostingClassifier:
        c = self.config
        return HistGradientBoostingClassifier(
            max_iter=c.max_iter,
            learning_rate=c.learning_rate,
            max_leaf_nodes=c.max_leaf_nodes,
            l2_regularization=c.l2_regularization,
            early_stopping=True,
            random_state=c.seed,
        )

    def _check_horizon(self, horizon: float) -> None:
        if not math.isclose(horizon, self.config.horizon_days, rel_tol=1e-6):
            raise ConfigError(
                f"this gbdt model predicts a {self.config.horizon_days:g}-day horizon, not"
                f" {horizon:g} days; fit one with GBDTConfig(horizon_days={horizon:g})"
            )

    def _predict(self, target: str, features: dict[str, np.ndarray]) -> np.ndarray:
        if target not in self.classifiers_:
            raise UnsupportedQueryError(
                f"the gbdt model had no training rows for {target} (e.g. a log without"
                " categories), so it does not answer it"
            )
        x = np.column_stack(
            [features[name] for name in sorted(features) if not name.endswith("_idx")]
        )
        return self.classifiers_[target].predict_proba(x)[:, 1]

    def _p_return(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        self._check_horizon(horizon)
        return self._predict("return", user_features(events, users, at))

    def _p_buy(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        self._check_horizon(horizon)
        return self._predict("buy", user_features(events, users, at))

    def _interest(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> dict[str, np.ndarray]:
        self._check_horizon(horizon)
        pairs = pair_features(events, at)
        keep = np.isin(pairs["user_idx"], users)
        pairs = {name: values[keep] for name, values in pairs.items()}
        p = self._predict("engage", pairs)
        nan = np.full(p.size, np.nan)  # trees have no decay parameters to report
        return {
            "user_idx": pairs["user_idx"],
            "category_idx": pairs["category_idx"],
            "p_engage": p,
            "level": nan,
            "baseline": nan,
            "excitation": nan,
            "half_life_days": nan,
        }

    def _save_extra(self, directory: Path) -> None:
        joblib.dump(self.classifiers_, directory / "classifiers.joblib")

    def _load_extra(self, directory: Path) -> None:
        self.classifiers_ = joblib.load(directory / "classifiers.joblib")
        self._restrict_answers()


class ConstantRate:
    """Stands in for a classifier when every training label was the same (all 0 or all 1).

    Boosting refuses a single class; the honest prediction is that rate for everyone.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.full(len(x), self.rate)
        return np.column_stack([1.0 - p, p])


def _engaged(pairs: dict[str, np.ndarray], window: EventArrays) -> np.ndarray:
    """Whether each (user, category) pair has an event in `window`."""
    n_categories = max(window.n_categories, 1)
    has = window.category_idx >= 0
    seen = np.unique(
        window.user_idx[has].astype(np.int64) * n_categories + window.category_idx[has]
    )
    return np.isin(pairs["user_idx"] * n_categories + pairs["category_idx"], seen)


def _stack(rows: list[tuple[dict[str, np.ndarray], np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    names = sorted(name for name in rows[0][0] if not name.endswith("_idx"))
    x = np.concatenate([np.column_stack([f[name] for name in names]) for f, _ in rows])
    y = np.concatenate([labels for _, labels in rows]).astype(np.int8)
    return x, y
