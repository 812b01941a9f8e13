"""`gbdt`: gradient-boosted trees on RFM and decayed-counter features, for any horizon.

The strong tabular baseline for return, purchase and category re-engagement. One
classifier per target answers every positive horizon ``H``: its inputs are the features
at the query instant plus ``log(H)``, on which the trees are constrained to be
non-decreasing (``monotonic_cst``), so P(event within H) never falls as H grows.

Training rows are stacked over a grid of horizons (`GBDTConfig.horizons_days`, by default
a ladder from one hour to half the log's span before the cut-off, at most a year; the
span starts at the 1st percentile of event times, so stray early timestamps do not count). Each
horizon gets its own training windows ``[a, a + H)`` ending at or before the cut-off;
anchors ``a`` lie on whole days before the cut-off, at least a day (and one horizon)
apart, so every window starts at the cut-off's time of day and short horizons do not learn
one hour of the day only. Features read events before ``a`` and are computed once per
anchor, then reused by every horizon that starts there; a window's labels come from each
user's first event at or after ``a``. The fit never sees an event at or after the
cut-off. On big logs every (anchor, horizon) block keeps at most an equal share of
`GBDTConfig.max_rows`, a seeded subsample.

Asked for a horizon outside the trained grid, the trees answer as for the nearest end of
the grid (trees are constant beyond the values they were split on): a 2-year question
to a model trained up to 90 days gets its 90-day answer. `horizons_days_` says which
grid a fitted model learned.
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
#: stratified validation split needs a few of each), the base rate per horizon instead.
_MIN_CLASS_ROWS = 10
#: The automatic horizon grid: about a doubling per step, through the horizons people ask
#: (an hour, a day, a week, a month, a quarter, a year), cut at `_MAX_HORIZON_DAYS` and at
#: `_SPAN_SHARE` of the log's span before the cut-off (longer windows leave too little
#: history before them).
_LADDER_DAYS = (
    1 / 24, 3 / 24, 6 / 24, 12 / 24, 1.0, 2.0, 4.0, 7.0, 14.0, 30.0, 60.0, 91.0, 182.0, 365.0,
)  # fmt: skip
_MAX_HORIZON_DAYS = 365.0
_SPAN_SHARE = 0.5
_BULK_START_QUANTILE = 0.01
#: Share of users whose rows early stopping validates on (and the trees do not see).
_VALIDATION_SHARE = 0.1
#: The log-horizon input, the last column of every classifier's inputs.
HORIZON_FEATURE = "log_horizon_days"


@dataclass(frozen=True, slots=True, kw_only=True)
class GBDTConfig:
    """Parameters of `GBDTModel`.

    horizons_days : tuple of float, optional
        The horizons (days) training windows are stacked over. None (the default) picks
        a ladder (1 h, 3 h, 6 h, 12 h, 1 d, 2 d, 4 d, 7 d, 14 d, 30 d, 60 d, 91 d, 182 d,
        365 d) up to half the log's span before the cut-off and at most a year. Any
        positive horizon can be asked; outside the grid the answer is the nearest end's.
    horizon_days : float, optional
        One more horizon to train on exactly, added to the grid (the report passes the
        holdout it checks the model on).
    anchors : int
        Training windows per horizon, the latest ones ending at or before the cut-off
        (more rows, older behaviour).
    max_rows : int
        At most this many training rows per target: each (anchor, horizon) block keeps an
        equal share, a subsample drawn with `seed`. Bounds time and memory on big logs.
    max_iter, learning_rate, max_leaf_nodes, l2_regularization : boosting settings.
    seed : int
        Makes the subsample and the validation split of early stopping, and so the model,
        reproducible.
    """

    horizons_days: tuple[float, ...] | None = None
    horizon_days: float | None = None
    anchors: int = 4
    max_rows: int = 300_000
    max_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    l2_regularization: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.horizons_days is not None:
            try:
                horizons = tuple(float(h) for h in self.horizons_days)
            except (TypeError, ValueError):
                horizons = ()
            if not horizons or not all(math.isfinite(h) and h > 0 for h in horizons):
                raise ConfigError(
                    f"GBDTConfig.horizons_days={self.horizons_days!r} must be one or more"
                    " horizons in days, each > 0 (or None for the automatic grid)"
                )
            object.__setattr__(self, "horizons_days", horizons)
        if self.horizon_days is not None and not (
            isinstance(self.horizon_days, int | float)
            and math.isfinite(self.horizon_days)
            and self.horizon_days > 0
        ):
            raise ConfigError(f"GBDTConfig.horizon_days={self.horizon_days!r} must be > 0")
        if not isinstance(self.anchors, int) or self.anchors < 1:
            raise ConfigError(f"GBDTConfig.anchors={self.anchors!r} must be an integer >= 1")
        if not isinstance(self.max_rows, int) or self.max_rows < 1_000:
            raise ConfigError(f"GBDTConfig.max_rows={self.max_rows!r} must be an integer >= 1000")


def default_horizons(span_days: float) -> tuple[float, ...]:
    """The automatic horizon grid for a log spanning `span_days` before the cut-off.

    The ladder's horizons up to ``min(365, span / 2)``, plus that limit itself when it is
    well past the last rung (so a 160-day log trains up to 80 days, not 60 only).
    """
    top = min(_MAX_HORIZON_DAYS, _SPAN_SHARE * span_days)
    grid = [h for h in _LADDER_DAYS if h <= top * (1 + 1e-9)]
    if not grid or top > 1.25 * grid[-1]:
        grid.append(top)
    return tuple(grid)


class GBDTModel(Model):
    """Classifiers for P(return), P(buy) and P(engage with a category) within any horizon.

    Attributes
    ----------
    classifiers_ : dict
        One classifier per target it had training rows for (``return``, ``buy``,
        ``engage``); inputs are the features plus `HORIZON_FEATURE`.
    horizons_days_ : np.ndarray
        The horizons it was trained on (days); answers beyond them are the nearest end's.
    """

    name = "gbdt"
    config_class = GBDTConfig
    #: 3: one classifier per target over every horizon (2 was one horizon per model).
    format_version = 3
    answers = frozenset({"p_return", "p_buy", "interest"})
    state_attributes = ("horizons_days_",)

    def _fit(self, events: EventArrays, progress: Progress | None) -> None:
        cut = self.cutoff_.timestamp() / 86_400
        plan = self._plan(events, cut)
        n_blocks = sum(len(horizons) for horizons in plan.values())
        share = max(1, self.config.max_rows // n_blocks)
        rng = np.random.default_rng(self.config.seed)
        # Early stopping validates on whole users: a user's rows at other horizons and
        # anchors nearly give its labels away, so a row-level split would never stop.
        validation_users = rng.random(events.n_users) < _VALIDATION_SHARE
        rows: dict[str, list[tuple[dict[str, np.ndarray], np.ndarray]]] = {t: [] for t in _TARGETS}
        offered = dict.fromkeys(_TARGETS, 0)
        for m in sorted(plan):
            anchor = cut - m
            history = events.select(events.t < anchor)
            users = np.flatnonzero(history.lengths() > 0)
            later = events.select(events.t >= anchor)
            features = user_features(history, users, anchor) | {"user_idx": users}
            next_any = _first_time(later.user_idx, later.t, events.n_users)[users] - anchor
            buy = later.behavior == Behavior.BUY.code
            next_buy = (
                _first_time(later.user_idx[buy], later.t[buy], events.n_users)[users] - anchor
            )
            pairs = pair_features(history, anchor)
            next_pair = _next_pair_time(pairs, later) - anchor
            for horizon in plan[m]:
                for target, table, until in (
                    ("return", features, next_any),
                    ("buy", features, next_buy),
                    ("engage", pairs, next_pair),
                ):
                    n = until.size
                    if n == 0:
                        continue
                    offered[target] += n
                    keep = np.sort(rng.choice(n, share, replace=False)) if n > share else None
                    rows[target].append(_block(table, until, horizon, keep))
            if progress is not None:
                progress(f"training windows from {m:g} days before the cut-off", math.nan)
        self.horizons_days_ = np.array(sorted({h for hs in plan.values() for h in hs}))
        self.classifiers_ = {}
        no_buys = not np.any(events.behavior == Behavior.BUY.code)
        for target in _TARGETS:
            if not rows[target] or (target == "buy" and no_buys):
                # e.g. a log without purchases (ratings, views): the target is left out
                # and its query answers "unsupported" rather than 0 for everyone.
                continue
            x, y, row_users = _stack(rows[target])
            fewest = int(np.bincount(y, minlength=2).min())
            if fewest < _MIN_CLASS_ROWS:
                if fewest > 0:
                    warnings.warn(
                        f"gbdt {target}: only {fewest} training rows of the rarer outcome "
                        f"(of {y.size}), too few to learn from: it answers the base rate "
                        f"per horizon ({y.mean():.3g} overall); a longer log or longer "
                        "horizons (GBDTConfig.horizons_days, `ebbtide train --horizons`) "
                        "give it more",
                        DataQualityWarning,
                        stacklevel=3,
                    )
                self.classifiers_[target] = BaseRates.fit(x[:, -1], y)
            else:
                self.classifiers_[target] = self._boost(x, y, validation_users[row_users])
            if progress is not None:
                progress(f"fitted {target}", math.nan)
        self._restrict_answers()
        self.metrics_ = {"horizons_days": [float(h) for h in self.horizons_days_]}
        for target in _TARGETS:
            if rows[target]:
                labels = np.concatenate([y for _, y in rows[target]])
                self.metrics_[f"{target}_rows"] = int(labels.size)
                self.metrics_[f"{target}_rows_before_cap"] = int(offered[target])
                self.metrics_[f"{target}_base_rate"] = float(labels.mean())

    def _plan(self, events: EventArrays, cut: float) -> dict[int, list[float]]:
        """Training windows: whole days ``m`` before the cut-off -> horizons starting there.

        A horizon ``H`` starts windows at ``m = k * max(1, ceil(H))`` days before the
        cut-off, ``k = 1 .. anchors``, keeping those with history before them; the window
        ``[cut - m, cut - m + H)`` then ends at or before the cut-off.
        """
        # The log's bulk start (1st percentile of time), so that a few stray early
        # timestamps neither stretch the grid nor open windows with almost no history.
        first = float(np.quantile(events.t, _BULK_START_QUANTILE))
        config = self.config
        grid = config.horizons_days or default_horizons(cut - first)
        if config.horizon_days is not None:
            grid = (*grid, config.horizon_days)
        plan: dict[int, list[float]] = {}
        dropped = []
        for horizon in sorted(set(grid)):
            step = max(1, math.ceil(horizon - 1e-9))
            starts = [k * step for k in range(1, config.anchors + 1) if cut - k * step > first]
            if not starts:
                dropped.append(horizon)
            for m in starts:
                plan.setdefault(m, []).append(horizon)
        if not plan:
            raise EbbtideError(
                f"the log before the cut-off spans {cut - first:.3g} days, too short for a"
                f" training window of any horizon in {sorted(set(grid))} (days; each starts"
                " whole days before the cut-off, after the first event): pass a later"
                " cut-off or shorter horizons"
            )
        if dropped:
            warnings.warn(
                f"gbdt: no training window fits horizons {dropped} (days) in a log spanning"
                f" {cut - first:.3g} days before the cut-off; they are left out and asked"
                " for, answer as the longest trained horizon",
                DataQualityWarning,
                stacklevel=4,
            )
        return plan

    def _restrict_answers(self) -> None:
        """Answer only what there were training rows for (no categories: no interest)."""
        self.answers = frozenset(q for q, t in _QUERY_TARGET.items() if t in self.classifiers_)

    def _boost(self, x: np.ndarray, y: np.ndarray, held_out: np.ndarray) -> object:
        """Boosted trees, early-stopped on the held-out users' rows (all rows when too
        few of them, or of one outcome, are held out)."""
        c = self.config
        validate = bool(held_out.any()) and np.unique(y[held_out]).size == 2
        validate = validate and np.unique(y[~held_out]).size == 2
        trees = HistGradientBoostingClassifier(
            max_iter=c.max_iter,
            learning_rate=c.learning_rate,
            max_leaf_nodes=c.max_leaf_nodes,
            l2_regularization=c.l2_regularization,
            monotonic_cst=[0] * (x.shape[1] - 1) + [1],  # non-decreasing in log(horizon)
            early_stopping=validate,
            random_state=c.seed,
        )
        if not validate:
            return trees.fit(x, y)
        return trees.fit(x[~held_out], y[~held_out], X_val=x[held_out], y_val=y[held_out])

    def _predict(self, target: str, features: dict[str, np.ndarray], horizon: float) -> np.ndarray:
        if target not in self.classifiers_:
            raise UnsupportedQueryError(
                f"the gbdt model had no training rows for {target} (e.g. a log without"
                " categories), so it does not answer it"
            )
        names = _feature_names(features)
        n = len(next(iter(features.values()))) if features else 0
        x = np.column_stack([features[name] for name in names] + [np.full(n, math.log(horizon))])
        return self.classifiers_[target].predict_proba(x)[:, 1]

    def _p_return(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        return self._predict("return", user_features(events, users, at), horizon)

    def _p_buy(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        return self._predict("buy", user_features(events, users, at), horizon)

    def _interest(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> dict[str, np.ndarray]:
        pairs = pair_features(events, at)
        keep = np.isin(pairs["user_idx"], users)
        pairs = {name: values[keep] for name, values in pairs.items()}
        p = self._predict("engage", pairs, horizon)
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


@dataclass(frozen=True, slots=True)
class BaseRates:
    """Stands in for a classifier when one outcome is (nearly) absent: the base rate per
    trained horizon, made non-decreasing, for everyone.

    Boosting cannot learn from a handful of examples (or refuses a single class); the
    honest prediction is the rate at the nearest trained horizon (in log scale).
    """

    log_horizons: np.ndarray
    rates: np.ndarray

    @classmethod
    def fit(cls, log_horizon: np.ndarray, y: np.ndarray) -> BaseRates:
        grid, which = np.unique(log_horizon, return_inverse=True)
        rates = np.bincount(which, y, minlength=grid.size) / np.bincount(which, minlength=grid.size)
        return cls(grid, np.maximum.accumulate(rates))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.log_horizons, x[:, -1])
        below = np.clip(position - 1, 0, self.log_horizons.size - 1)
        above = np.clip(position, 0, self.log_horizons.size - 1)
        nearer = np.where(
            np.abs(x[:, -1] - self.log_horizons[below])
            <= np.abs(self.log_horizons[above] - x[:, -1]),
            below,
            above,
        )
        p = self.rates[nearer]
        return np.column_stack([1.0 - p, p])


def _first_time(user_idx: np.ndarray, t: np.ndarray, n_users: int) -> np.ndarray:
    """Each user's first time in (user, time)-sorted arrays; inf for users without one."""
    first = np.full(n_users, np.inf)
    users, start = np.unique(user_idx, return_index=True)
    first[users] = t[start]
    return first


def _next_pair_time(pairs: dict[str, np.ndarray], later: EventArrays) -> np.ndarray:
    """Each (user, category) pair's first time in `later` (inf when it does not come back)."""
    n_categories = max(later.n_categories, 1)
    has = later.category_idx >= 0
    code = later.user_idx[has].astype(np.int64) * n_categories + later.category_idx[has]
    # Events are sorted by (user, time): a pair's first occurrence is its earliest.
    seen, start = np.unique(code, return_index=True)
    wanted = pairs["user_idx"] * n_categories + pairs["category_idx"]
    out = np.full(wanted.size, np.inf)
    if seen.size:
        position = np.minimum(np.searchsorted(seen, wanted), seen.size - 1)
        hit = seen[position] == wanted
        out[hit] = later.t[has][start[position[hit]]]
    return out


def _feature_names(features: dict[str, np.ndarray]) -> list[str]:
    return sorted(name for name in features if not name.endswith("_idx"))


def _block(
    table: dict[str, np.ndarray], until: np.ndarray, horizon: float, keep: np.ndarray | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows of one (anchor, horizon) window: features, log horizon, label (event within H)."""
    if keep is not None:
        table, until = {name: values[keep] for name, values in table.items()}, until[keep]
    rows = dict(table)
    rows[HORIZON_FEATURE] = np.full(until.size, math.log(horizon))
    return rows, until < horizon


def _stack(
    rows: list[tuple[dict[str, np.ndarray], np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (sorted names, then the log horizon last), labels and user of every row."""
    names = [n for n in _feature_names(rows[0][0]) if n != HORIZON_FEATURE] + [HORIZON_FEATURE]
    x = np.concatenate([np.column_stack([f[name] for name in names]) for f, _ in rows])
    y = np.concatenate([labels for _, labels in rows]).astype(np.int64)
    users = np.concatenate([f["user_idx"] for f, _ in rows])
    return x, y, users
