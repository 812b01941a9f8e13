"""The temporal holdout: fit before a cut, ask at the cut, check against what happened next.

Why this protocol first: it is the question the product answers ("who comes back, buys,
re-engages with what, in the next H"), and it cannot leak: every model is fitted on events
strictly before ``cutoff`` and scored at ``cutoff``; the targets are read from
``[cutoff, cutoff + horizon)`` only, after scoring.

Per model, whatever it answers (a family that does not answer a query gets "–", not an
invented number):

- **return**: p_return vs "anything the user did in the window" (an impression is not
  something they did), over users with history, an item event before the cut (ROC-AUC,
  PR-AUC, log-loss, Brier, expected calibration error);
- **time to return**: expected_return_days vs the days to the first event in the window,
  censored at the window's end (Harrell's C);
- **purchase**: p_buy vs "bought in the window" (the same five numbers);
- **category re-engagement**: p_engage of every (user, category) touched before the cut vs
  "an event in that category in the window" (ROC-AUC); **re-activated interest**: the same
  over the pairs that were dormant, untouched for `dormant_days` before the cut;
- **next items**: Recall@K and NDCG@K of the items each returning user engaged with in the
  window, from the model's top-K over the whole catalogue (full ranking; items bought before
  are not excluded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ebbtide.errors import ConfigError
from ebbtide.evaluate import metrics
from ebbtide.evaluate.comparison import Comparison, timed_fit
from ebbtide.features.history import History, snapshot
from ebbtide.models.base import Model
from ebbtide.models.scoring import build_model
from ebbtide.schema import Behavior
from ebbtide.store import ITEM_ENGAGEMENT, USER_ACTIVITY, EventStore

__all__ = [
    "METRICS",
    "HoldoutEvaluation",
    "HoldoutTargets",
    "evaluate_model",
    "holdout_targets",
    "temporal_holdout",
]

#: Columns of `HoldoutEvaluation.table`, after ``model``, in order.
METRICS = (
    "return_auc",
    "return_pr_auc",
    "return_log_loss",
    "return_brier",
    "return_ece",
    "return_c_index",
    "buy_auc",
    "buy_pr_auc",
    "buy_log_loss",
    "buy_brier",
    "buy_ece",
    "engage_auc",
    "reactivation_auc",
    "recall_at_k",
    "ndcg_at_k",
    "fit_seconds",
    "score_seconds",
)


@dataclass(frozen=True)
class HoldoutTargets:
    """What happened in ``[cutoff, cutoff + horizon)`` for the users with history before it.

    Attributes
    ----------
    users : DataFrame
        user_id, returned, bought, days_to_return (the horizon when censored),
        days_since_last (from the user's last event before the cut).
    pairs : DataFrame
        user_id, category_id, dormant (untouched for `dormant_days` before the cut),
        engaged.
    items : DataFrame
        user_id, item_id of every item a user with history engaged with in the window.
    """

    cutoff: datetime
    horizon: timedelta
    dormant_days: float
    users: pd.DataFrame
    pairs: pd.DataFrame
    items: pd.DataFrame
    n_history_events: int
    n_window_events: int

    def describe(self) -> dict[str, Any]:
        """The split in numbers, for the table's header."""
        return {
            "cutoff": self.cutoff.isoformat(),
            "horizon_days": self.horizon / timedelta(days=1),
            "history_events": self.n_history_events,
            "window_events": self.n_window_events,
            "users": len(self.users),
            "returned": float(self.users["returned"].mean()),
            "bought": float(self.users["bought"].mean()),
            "pairs": len(self.pairs),
            "dormant_pairs": int(self.pairs["dormant"].sum()),
            "engaged_pairs": float(self.pairs["engaged"].mean()),
            **self.reference(),
        }

    def reference(self) -> dict[str, float]:
        """What a model must beat on return: ranking by days since the last event
        (ROC-AUC) and predicting the base rate for everyone (Brier = rate · (1 − rate))."""
        returned = self.users["returned"].to_numpy()
        rate = float(returned.mean())
        return {
            "recency_return_auc": metrics.roc_auc(
                returned, -self.users["days_since_last"].to_numpy()
            ),
            "base_rate_return_brier": rate * (1.0 - rate),
        }


def holdout_targets(
    store: EventStore, *, cutoff: datetime, horizon: timedelta, dormant_days: float = 3.0
) -> HoldoutTargets:
    """Read the targets of the temporal holdout at `cutoff` (SQL over the store)."""
    if horizon <= timedelta(0):
        raise ConfigError(f"horizon={horizon}: use a positive window, e.g. 1d")
    end = cutoff + horizon
    con = store.con
    counts = con.execute(
        "SELECT count(*) FILTER (WHERE ts < ?), count(*) FILTER (WHERE ts >= ? AND ts < ?)"
        f" FROM events WHERE {USER_ACTIVITY}",
        [cutoff, cutoff, end],
    ).fetchone()
    if counts[0] == 0:
        raise ConfigError(f"no events before {cutoff.isoformat()}: choose a later cut-off")
    users = con.execute(
        f"""WITH activity AS (SELECT * FROM events WHERE {USER_ACTIVITY}),
        history AS (
            SELECT user_idx, max(ts) AS last FROM events WHERE ts < ? AND {ITEM_ENGAGEMENT}
            GROUP BY ALL
        ),
        in_window AS (
            SELECT user_idx, min(ts) AS first, bool_or(behavior = ?) AS bought
            FROM activity WHERE ts >= ? AND ts < ? GROUP BY user_idx
        )
        SELECT u.user_id, w.user_idx IS NOT NULL AS returned,
               coalesce(w.bought, false) AS bought,
               coalesce(epoch(w.first - ?::TIMESTAMPTZ) / 86400, ?) AS days_to_return,
               epoch(?::TIMESTAMPTZ - h.last) / 86400 AS days_since_last
        FROM history h JOIN users u USING (user_idx) LEFT JOIN in_window w USING (user_idx)
        ORDER BY u.user_id""",
        [cutoff, Behavior.BUY.code, cutoff, end, cutoff, horizon / timedelta(days=1), cutoff],
    ).df()
    pairs = con.execute(
        f"""WITH activity AS (SELECT * FROM events WHERE {USER_ACTIVITY}),
        touched AS (
            SELECT user_idx, category_idx, max(ts) AS last FROM activity
            WHERE ts < ? AND category_idx IS NOT NULL GROUP BY ALL
        ),
        in_window AS (
            SELECT DISTINCT user_idx, category_idx FROM activity
            WHERE ts >= ? AND ts < ? AND category_idx IS NOT NULL
        )
        SELECT u.user_id, c.category_id,
               t.last < ?::TIMESTAMPTZ - to_seconds(?::DOUBLE) AS dormant,
               w.user_idx IS NOT NULL AS engaged
        FROM touched t JOIN users u USING (user_idx) JOIN categories c USING (category_idx)
        LEFT JOIN in_window w USING (user_idx, category_idx)
        ORDER BY u.user_id, c.category_id""",
        [cutoff, cutoff, end, cutoff, dormant_days * 86_400],
    ).df()
    items = con.execute(
        f"""SELECT DISTINCT u.user_id, i.item_id FROM events e
        JOIN users u USING (user_idx) JOIN items i USING (item_idx)
        WHERE e.ts >= ? AND e.ts < ? AND e.{USER_ACTIVITY}
          AND e.user_idx IN (SELECT user_idx FROM events WHERE ts < ? AND {ITEM_ENGAGEMENT})
        ORDER BY ALL""",
        [cutoff, end, cutoff],
    ).df()
    return HoldoutTargets(
        cutoff=cutoff,
        horizon=horizon,
        dormant_days=dormant_days,
        users=users,
        pairs=pairs,
        items=items,
        n_history_events=int(counts[0]),
        n_window_events=int(counts[1]),
    )


def evaluate_model(
    model: Model, history: History, targets: HoldoutTargets, *, k: int = 20
) -> dict[str, float]:
    """Every holdout metric the fitted `model` answers (see the module docstring).

    `history` is the snapshot at the targets' cut-off, shared by every query.
    """
    if history.at != targets.cutoff:
        raise ConfigError(
            f"the history ends at {history.at.isoformat()}, the targets start at"
            f" {targets.cutoff.isoformat()}: take the snapshot at the cut-off"
        )
    horizon = targets.horizon
    users = targets.users
    answers = model.answers
    row: dict[str, float] = {}
    if "p_return" in answers:
        p = _aligned(users, model.p_return(history, horizon=horizon), "p_return")
        row.update(_classification("return", users["returned"].to_numpy(), p))
    if "expected_return_time" in answers:
        days = _aligned(users, model.expected_return_time(history), "expected_return_days")
        row["return_c_index"] = metrics.concordance_index(
            users["days_to_return"].to_numpy(), days, users["returned"].to_numpy()
        )
    if "p_buy" in answers:
        p = _aligned(users, model.p_buy(history, horizon=horizon), "p_buy")
        row.update(_classification("buy", users["bought"].to_numpy(), p))
    if "interest" in answers:
        row.update(_engagement(model, history, targets))
    if "recommend" in answers:
        row.update(_next_items(model, history, targets, k))
    return row


def _engagement(model: Model, history: History, targets: HoldoutTargets) -> dict[str, float]:
    """Re-engagement and re-activation AUC over the (user, category) pairs; none without
    categories (a log of purchases only has nothing to re-engage with)."""
    if targets.pairs.empty:
        return {}
    row: dict[str, float] = {}
    interest = model.interest(history, horizon=targets.horizon)
    pairs = targets.pairs.merge(
        interest[["user_id", "category_id", "p_engage"]],
        on=["user_id", "category_id"],
        how="left",
    )
    p = pairs["p_engage"].fillna(0.0).to_numpy()
    engaged = pairs["engaged"].to_numpy()
    row["engage_auc"] = metrics.roc_auc(engaged, p)
    dormant = pairs["dormant"].to_numpy()
    if dormant.any():
        row["reactivation_auc"] = metrics.roc_auc(engaged[dormant], p[dormant])
    return row


def _aligned(users: pd.DataFrame, answer: pd.DataFrame, column: str) -> np.ndarray:
    """The model's answer in the order of `users` (a user it skipped would be a bug)."""
    values = users[["user_id"]].merge(answer, on="user_id", how="left")[column]
    if values.isna().any():
        raise ConfigError(
            f"the model gave no {column} for {int(values.isna().sum())} users with history"
        )
    return values.to_numpy(dtype=float)


def _classification(prefix: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    p = np.clip(p, 0.0, 1.0)
    scores = metrics.classification_metrics(y, p)
    return {
        f"{prefix}_{name}": scores[key]
        for name, key in (
            ("auc", "roc_auc"),
            ("pr_auc", "pr_auc"),
            ("log_loss", "log_loss"),
            ("brier", "brier"),
            ("ece", "ece"),
        )
    }


def _next_items(
    model: Model, history: History, targets: HoldoutTargets, k: int
) -> dict[str, float]:
    """Recall@K and NDCG@K of the window's items from the model's top-K (full ranking)."""
    wanted = targets.items
    if wanted.empty:
        return {}
    users = pd.Index(wanted["user_id"].unique())
    recs = model.recommend(history, users.tolist(), k=k, exclude_bought=False)
    found = recs.merge(wanted, on=["user_id", "item_id"], how="inner")
    hits = np.zeros((len(users), k), dtype=bool)
    hits[users.get_indexer(found["user_id"]), found["rank"].to_numpy(dtype=np.int64) - 1] = True
    n_targets = wanted.groupby("user_id").size().reindex(users).to_numpy(dtype=np.int64)
    return {
        "recall_at_k": metrics.recall_from_hits(hits, n_targets),
        "ndcg_at_k": metrics.ndcg_from_hits(hits, n_targets),
    }


class HoldoutEvaluation(Comparison):
    """Several models on one temporal holdout: the comparison table and the split."""

    protocol: ClassVar[str] = "temporal holdout"

    def describe(self) -> str:
        split = self.split
        return (
            f"Temporal holdout: fit before {split['cutoff']}, targets in the next "
            f"{split['horizon_days']:g} days; {split['users']:,} users with history "
            f"({split['returned']:.1%} returned, {split['bought']:.1%} bought), "
            f"{split['history_events']:,} history events, {split['window_events']:,} in the "
            f"window; {split['pairs']:,} (user, category) pairs ({split['dormant_pairs']:,} "
            f"dormant for {split['dormant_days']:g} days). Items: top-{self.k} over the whole "
            "catalogue. Return references: days since the last event ranks at ROC-AUC "
            f"{split['recency_return_auc']:.3f}; the base rate for everyone has Brier "
            f"{split['base_rate_return_brier']:.4f}."
        )


def temporal_holdout(
    store: EventStore,
    models: Sequence[str | Model],
    *,
    cutoff: datetime,
    horizon: timedelta,
    k: int = 20,
    dormant_days: float = 3.0,
    on_stage: Callable[[str], None] | None = None,
) -> HoldoutEvaluation:
    """Fit each model on events before `cutoff` and score it on the same targets.

    Parameters
    ----------
    store : EventStore
    models : sequence of str or Model
        Family names (fitted with their defaults) or unfitted `Model` objects.
    cutoff : datetime
        Models see events strictly before it.
    horizon : timedelta
        The window after `cutoff` whose events are the targets.
    k : int
        Length of the item lists.
    dormant_days : float
        A (user, category) pair untouched this long before the cut counts as dormant.
    on_stage : callable, optional
        Called with a short description before each stage (for a progress display).

    Returns
    -------
    HoldoutEvaluation
    """
    if not models:
        raise ConfigError("no models to evaluate: name at least one family, e.g. decay")
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r}: use an integer >= 1")
    stage = on_stage or (lambda _text: None)
    stage("reading the targets")
    targets = holdout_targets(store, cutoff=cutoff, horizon=horizon, dormant_days=dormant_days)
    history = snapshot(store, at=cutoff)
    rows = []
    for entry in models:
        model = build_model(entry) if isinstance(entry, str) else entry
        fit_seconds = timed_fit(model, history, stage)
        clock = time.perf_counter()
        row = evaluate_model(model, history, targets, k=k)
        row |= {"fit_seconds": fit_seconds, "score_seconds": time.perf_counter() - clock}
        rows.append({"model": model.name, **row})
    table = pd.DataFrame(rows).reindex(columns=["model", *METRICS])
    table = table.dropna(axis=1, how="all")
    split = targets.describe() | {"dormant_days": dormant_days}
    notes = [
        "–: the model does not answer that query.",
        "ECE: expected calibration error over 10 equal-width bins of the probability.",
    ]
    return HoldoutEvaluation(table=table, split=split, k=k, notes=notes)
