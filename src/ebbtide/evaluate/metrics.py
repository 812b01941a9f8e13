"""Metrics of the evaluation harness: ranking, classification, concordance and BTYD holdout.

Every function takes whole arrays and works on them at once (numpy sorts, ``searchsorted``,
``bincount``); loops run only over chunks of users or over the ``log2(n)`` levels of a
counting scheme, never over users, items or rows.

Conventions, chosen so that numbers cannot flatter a model:

- **Full ranking.** A user's target is ranked against *every* item (no sampled negatives).
  Items in ``exclude`` (already seen) are removed from the list; a target is never removed,
  so a repeat purchase is still ranked.
- **Ties are broken against the model.** Among equal scores the relevant items come last:
  a target's rank is ``1 + #(higher score) + #(other items with the same score)``. A model
  that scores everything alike therefore ranks every target last, not first. RecBole breaks
  ties however ``torch.topk`` happens to order them, so its numbers can be higher on ties.
- **Users without targets** (multi-target metrics) are NaN per user and left out of means.
- **Undefined numbers are NaN with a `DataQualityWarning`** (AUC with one class, a
  correlation of a constant, a C-index with no comparable pair), never a crash.

ROC-AUC, PR-AUC (average precision), log-loss and Brier are scikit-learn's, and HR / NDCG /
MRR the one implementation that model training also uses for early stopping: both live in
`ebbtide.metrics_core` (below the models, which may not import this package) and are
re-exported here. What is ours is what no library has in this form: full ranking in chunks
with pessimistic ties, calibration tables, the censored concordance index in O(n log n).
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from ebbtide.errors import ConfigError, DataQualityWarning
from ebbtide.metrics_core import (
    ArrayLike,
    _check_k,
    _check_labels,
    _check_values,
    _to_numpy,
    brier,
    dcg_discount,
    hit_rate_at_k,
    log_loss,
    mrr_at_k,
    ndcg_at_k,
    ndcg_from_hits,
    pr_auc,
    ranking_metrics,
    recall_from_hits,
    roc_auc,
)

__all__ = [
    "brier",
    "btyd_holdout_metrics",
    "classification_metrics",
    "concordance_index",
    "dcg_discount",
    "expected_calibration_error",
    "hit_rate_at_k",
    "kaplan_meier",
    "log_loss",
    "mrr_at_k",
    "ndcg_at_k",
    "ndcg_at_k_multi",
    "ndcg_from_hits",
    "pr_auc",
    "rank_of_targets",
    "ranking_metrics",
    "recall_at_k",
    "recall_from_hits",
    "reliability_table",
    "roc_auc",
]

# Scores are read in chunks of about this many cells, so memory stays bounded (a few
# hundred MB at most) whatever the number of users.
_CHUNK_CELLS = 1 << 22


# ----------------------------------------------------------------------------- ranking


def rank_of_targets(
    scores: Any,
    targets: ArrayLike,
    exclude: Any = None,
    *,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """1-based rank of each user's target item in a full ranking over all items.

    Ties are broken against the model: ``rank = 1 + #(items scored higher) + #(other items
    scored the same)``, the pessimistic rule (RecBole leaves ties to ``torch.topk``). Items in
    `exclude` are taken out of the list, as if scored −inf and placed after the target;
    the target itself is never excluded. Users are processed in chunks of rows, so a
    6040 × 3706 matrix costs no more memory than a small one.

    Parameters
    ----------
    scores : array or torch.Tensor, shape (n_users, n_items)
        Higher means recommended first. NaN and +inf are refused; −inf is allowed and ranks
        below every finite score.
    targets : array of int, shape (n_users,)
        The held-out item index of each user (row).
    exclude : optional
        Items to take out of each user's list (e.g. the training history): a boolean array
        or tensor of the shape of `scores`, a scipy sparse matrix of that shape (stored
        non-zeros are excluded), or a pair ``(user_idx, item_idx)`` of equal-length int arrays.
    chunk_rows : int, optional
        Users per chunk; by default about four million cells per chunk.

    Returns
    -------
    ndarray of int64, shape (n_users,)
        Ranks from 1 (top) to the number of items left in the user's list.

    Raises
    ------
    ConfigError
        Wrong shapes, non-integer or out-of-range targets, NaN or +inf scores.

    Examples
    --------
    >>> scores = [[0.9, 0.5, 0.5, 0.1],
    ...           [0.2, 0.8, 0.4, 0.4]]
    >>> rank_of_targets(scores, [1, 3]).tolist()  # ties count against the target
    [3, 3]
    >>> rank_of_targets(scores, [1, 3], exclude=([0, 1], [0, 1])).tolist()
    [2, 2]
    """
    src, (n_users, n_items) = _score_source(scores)
    tg = _check_item_index(targets, n_users, n_items)
    excl = None if exclude is None else _item_sets(exclude, (n_users, n_items), "exclude")
    step = _chunk_rows(chunk_rows, n_items)
    ranks = np.empty(n_users, dtype=np.int64)
    for start in range(0, n_users, step):
        stop = min(start + step, n_users)
        s = _score_rows(src, start, stop)
        rows = np.arange(stop - start)
        at_least = s >= s[rows, tg[start:stop]][:, None]
        if excl is not None:
            seen = _dense_rows(excl, start, stop, n_items)
            seen[rows, tg[start:stop]] = False
            at_least &= ~seen
        ranks[start:stop] = at_least.sum(axis=1)
    return ranks


def recall_at_k(
    scores: Any,
    targets: Any,
    k: int,
    *,
    exclude: Any = None,
    per_user: bool = False,
    chunk_rows: int | None = None,
) -> float | np.ndarray:
    """Recall@k with several targets per user: ``|top k ∩ targets| / |targets|``.

    The denominator is the number of targets (as RecBole), so a user with more than ``k``
    targets cannot reach 1. The top ``k`` is a full ranking with ties broken against the
    model (relevant items last among equal scores); see `rank_of_targets` for `exclude`.

    Parameters
    ----------
    scores : array or torch.Tensor, shape (n_users, n_items)
        Higher means recommended first.
    targets : optional forms
        Relevant items per user: a sequence of ``n_users`` int sequences, a boolean array of
        the shape of `scores`, or a scipy sparse matrix of that shape (non-zeros relevant).
    k : int
        List length, at least 1.
    exclude : optional
        As in `rank_of_targets`; targets are never excluded.
    per_user : bool
        Return every user's value (NaN for users without targets) instead of the mean over
        users with targets.
    chunk_rows : int, optional
        Users per chunk, as in `rank_of_targets`.

    Raises
    ------
    ConfigError
        Bad shapes or indices, NaN scores, ``k < 1``, or no user with a target.

    Examples
    --------
    >>> scores = [[0.9, 0.8, 0.7, 0.1],
    ...           [0.5, 0.5, 0.5, 0.9]]
    >>> recall_at_k(scores, [[0, 3], [1]], 2, per_user=True).tolist()
    [0.5, 0.0]
    """
    hits, n_targets = _top_k_relevance(scores, targets, k, exclude, chunk_rows)
    return recall_from_hits(hits, n_targets, per_user=per_user)


def ndcg_at_k_multi(
    scores: Any,
    targets: Any,
    k: int,
    *,
    exclude: Any = None,
    per_user: bool = False,
    chunk_rows: int | None = None,
) -> float | np.ndarray:
    """NDCG@k with several targets per user and binary relevance.

    ``DCG = Σ 1 / log2(position + 1)`` over targets in the top ``k``, divided by the ideal
    DCG of ``min(|targets|, k)`` hits at the top. Ties and exclusions as in `recall_at_k`;
    with one target per user it equals `ndcg_at_k` of `rank_of_targets`.

    Parameters
    ----------
    scores, targets, k, exclude, per_user, chunk_rows : as in `recall_at_k`.

    Examples
    --------
    >>> scores = [[0.9, 0.8, 0.7, 0.1]]
    >>> round(ndcg_at_k_multi(scores, [[1, 3]], 3), 6)  # (1/log2 3) / (1 + 1/log2 3)
    0.386853
    """
    hits, n_targets = _top_k_relevance(scores, targets, k, exclude, chunk_rows)
    return ndcg_from_hits(hits, n_targets, per_user=per_user)


def _top_k_relevance(
    scores: Any, targets: Any, k: int, exclude: Any, chunk_rows: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, which of the top ``min(k, n_items)`` positions hold a target, and |targets|.

    Worst-case tie order, without a full sort: the ``k``-th best score ``v`` splits a row
    into items above ``v`` (all in the list, sorted with targets last among equals) and the
    tie group at ``v``, whose free slots go to non-targets first.
    """
    src, (n_users, n_items) = _score_source(scores)
    k = _check_k(k)
    tg = _item_sets(targets, (n_users, n_items), "targets", lists=True)
    excl = None if exclude is None else _item_sets(exclude, (n_users, n_items), "exclude")
    kk = min(k, n_items)
    step = _chunk_rows(chunk_rows, n_items)
    hits = np.empty((n_users, kk), dtype=bool)
    n_targets = np.empty(n_users, dtype=np.int64)
    position = np.arange(1, kk + 1)[None, :]
    for start in range(0, n_users, step):
        stop = min(start + step, n_users)
        s = np.array(_score_rows(src, start, stop), copy=True)
        relevant = _dense_rows(tg, start, stop, n_items)
        candidate = np.ones_like(relevant)
        if excl is not None:
            candidate = ~(_dense_rows(excl, start, stop, n_items) & ~relevant)
            s[~candidate] = -np.inf
        rows = np.arange(stop - start)[:, None]
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        top_s, top_rel = s[rows, top], relevant[rows, top]
        v = top_s.min(axis=1)[:, None]
        above = (s > v).sum(axis=1)[:, None]
        tied = (s == v) & candidate
        tied_rel = (tied & relevant).sum(axis=1)[:, None]
        tied_other = tied.sum(axis=1)[:, None] - tied_rel
        order = np.lexsort((top_rel, -top_s), axis=1)
        in_tie_slots = (position > above + tied_other) & (position <= above + tied_other + tied_rel)
        hits[start:stop] = np.where(
            position <= above, np.take_along_axis(top_rel, order, axis=1), in_tie_slots
        )
        n_targets[start:stop] = relevant.sum(axis=1)
    return hits, n_targets


# ----------------------------------------------------------------------- classification


def reliability_table(
    y: ArrayLike,
    p: ArrayLike,
    *,
    bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> pd.DataFrame:
    """Mean prediction and observed rate per probability bin: the data of a calibration plot.

    Bins follow scikit-learn's ``calibration_curve``: edges ``linspace(0, 1, bins + 1)``
    (``"uniform"``) or percentiles of `p` (``"quantile"``, equal counts unless values
    tie); a value on an inner edge goes to the lower bin. Empty bins are kept with count 0
    and NaN means, so the table always has ``bins`` rows.

    Parameters
    ----------
    y, p : as in `log_loss`.
    bins : int
        Number of bins, at least 1.
    strategy : {"uniform", "quantile"}
        How the edges are placed.

    Returns
    -------
    DataFrame
        ``bin`` (0-based), ``lower``, ``upper`` (edges), ``mean_p``, ``frac_pos``, ``count``.

    Examples
    --------
    >>> reliability_table([0, 1, 1, 0], [0.1, 0.2, 0.8, 0.9], bins=2)[["mean_p", "frac_pos"]]
       mean_p  frac_pos
    0    0.15       0.5
    1    0.85       0.5
    """
    yb = _check_labels(y)
    q = _check_values(p, yb.size, "p", probability=True)
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ConfigError(f"bins={bins!r}: use a whole number of bins >= 1, such as 10")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif strategy == "quantile":
        edges = np.percentile(q, np.linspace(0.0, 1.0, bins + 1) * 100)
    else:
        raise ConfigError(f"strategy={strategy!r}: use 'uniform' or 'quantile'")
    which = np.searchsorted(edges[1:-1], q)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=q, minlength=bins) / count
        frac_pos = np.bincount(which, weights=yb, minlength=bins) / count
    return pd.DataFrame(
        {
            "bin": np.arange(bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "mean_p": mean_p,
            "frac_pos": frac_pos,
            "count": count.astype(np.int64),
        }
    )


def expected_calibration_error(
    y: ArrayLike,
    p: ArrayLike,
    *,
    bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
    return_table: bool = False,
) -> float | tuple[float, pd.DataFrame]:
    """Expected calibration error: ``Σ (count_b / n) · |mean_p_b − frac_pos_b|`` over bins.

    How far, on average over customers, a stated probability is from the rate observed among
    customers given a similar probability. Bins as in `reliability_table`.

    Parameters
    ----------
    y, p : as in `log_loss`.
    bins, strategy : as in `reliability_table`.
    return_table : bool
        Also return the `reliability_table`, for a calibration plot.

    Returns
    -------
    float, or (float, DataFrame) when `return_table`.

    Examples
    --------
    >>> round(expected_calibration_error([0, 1, 1, 0], [0.1, 0.2, 0.8, 0.9], bins=2), 6)
    0.35
    """
    table = reliability_table(y, p, bins=bins, strategy=strategy)
    full = table[table["count"] > 0]
    gap = (full["mean_p"] - full["frac_pos"]).abs()
    ece = float(np.dot(full["count"], gap) / full["count"].sum())
    return (ece, table) if return_table else ece


def classification_metrics(y: ArrayLike, p: ArrayLike, *, bins: int = 10) -> dict[str, float]:
    """Every headline number for predicted probabilities of a binary outcome.

    Returns
    -------
    dict
        ``roc_auc``, ``pr_auc``, ``log_loss``, ``brier``, ``ece`` (uniform bins) and
        ``positive_rate`` (the base rate PR-AUC should be read against).

    Examples
    --------
    >>> m = classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> m["roc_auc"], m["positive_rate"]
    (0.75, 0.5)
    """
    yb = _check_labels(y)
    q = _check_values(p, yb.size, "p", probability=True)
    return {
        "roc_auc": roc_auc(yb, q),
        "pr_auc": pr_auc(yb, q),
        "log_loss": log_loss(yb, q),
        "brier": brier(yb, q),
        "ece": float(expected_calibration_error(yb, q, bins=bins)),
        "positive_rate": float(yb.mean()),
    }


# --------------------------------------------------------------------------- concordance


def concordance_index(
    event_times: ArrayLike,
    predicted: ArrayLike,
    observed: ArrayLike,
    *,
    higher_is_later: bool = True,
) -> float:
    """Harrell's C for right-censored times (e.g. time to return): the share of comparable
    pairs that the prediction orders correctly.

    A pair is comparable when the earlier time is an observed event: ``T_i < T_j`` with
    ``i`` observed, or ``T_i == T_j`` with ``i`` observed and ``j`` censored (two events at
    the same time are not compared), exactly as ``lifelines.utils.concordance_index``. A
    tie in prediction counts one half. O(n log n): each subject counts the earlier events
    below its prediction through ``log2(n)`` rounds of sort and ``searchsorted``.

    Parameters
    ----------
    event_times : array of float
        Time of the event, or of censoring.
    predicted : array of float
        Predicted time (higher = later) or a risk score (pass ``higher_is_later=False``).
    observed : array of bool or 0/1
        True where the event was seen, False where the time is censored. Required: a
        forgotten censoring flag would silently score censored times as events.
    higher_is_later : bool
        Whether a higher `predicted` means a later event.

    Returns
    -------
    float
        In [0, 1]; 0.5 is random. NaN, with a `DataQualityWarning`, when no pair is
        comparable (lifelines raises ``ZeroDivisionError`` there).

    Examples
    --------
    >>> concordance_index([1, 2, 3], [1, 3, 2], [1, 1, 1])  # 2 of 3 pairs in order
    0.6666666666666666
    >>> concordance_index([1, 2, 3], [1, 3, 2], [1, 1, 0])  # same pairs, 3 censored
    0.6666666666666666
    >>> concordance_index([1, 2, 3], [1, 3, 2], [0, 1, 0])  # only (2, 3) comparable
    0.0
    """
    t = _check_values(event_times, None, "event_times")
    p = _check_values(predicted, t.size, "predicted")
    e = _check_labels(observed, "observed", n=t.size)
    correct, tied, pairs = _concordance_counts(t, p if higher_is_later else -p, e)
    if pairs == 0:
        warnings.warn(
            f"concordance index is NaN: no comparable pair among {t.size} rows ({int(e.sum())}"
            " observed events); a pair needs an observed event before another time",
            DataQualityWarning,
            stacklevel=2,
        )
        return math.nan
    return (correct + tied / 2) / pairs


def _concordance_counts(t: np.ndarray, p: np.ndarray, e: np.ndarray) -> tuple[int, int, int]:
    """Correct, tied and comparable pair counts.

    Every subject is a *query*; every observed event is also an *insert*. Sorted by time,
    with event queries before inserts before censored queries at equal times, a query's
    comparable partners are exactly the inserts before it. Those are counted by the binary
    decomposition of positions: at level ``L`` a query in the right half of a block of
    ``2^(L+1)`` positions counts the inserts in the left half, by ``searchsorted`` on
    (block, prediction rank) keys; each earlier insert is counted at exactly one level.
    """
    _, rank = np.unique(p, return_inverse=True)
    width = int(rank.max()) + 1
    died = np.flatnonzero(e)
    n_events = t.size + died.size
    kind = np.concatenate([np.where(e, 0, 2), np.ones(died.size, dtype=np.int64)])
    order = np.lexsort((kind, np.concatenate([t, t[died]])))
    position = np.empty(n_events, dtype=np.int64)
    position[order] = np.arange(n_events)
    ev_rank = np.concatenate([rank, rank[died]]).astype(np.int64)
    is_insert = np.arange(n_events) >= t.size
    correct = tied = pairs = 0
    for level in range(max(1, (n_events - 1).bit_length())):
        block = position >> (level + 1)
        right = ((position >> level) & 1).astype(bool)
        inserts = is_insert & ~right
        queries = ~is_insert & right
        keys = np.sort(block[inserts] * width + ev_rank[inserts])
        base = block[queries] * width
        mine = base + ev_rank[queries]
        first = np.searchsorted(keys, base)
        below = np.searchsorted(keys, mine)
        up_to = np.searchsorted(keys, mine, side="right")
        end = np.searchsorted(keys, base + width)
        correct += int((below - first).sum())
        tied += int((up_to - below).sum())
        pairs += int((end - first).sum())
    return correct, tied, pairs


def kaplan_meier(times: ArrayLike, observed: ArrayLike) -> pd.DataFrame:
    """The Kaplan-Meier estimate of the share still waiting, at each distinct event time.

    Used to draw the observed return curve next to a model's: users who had not come back
    by the end of the data are censored there, not counted as never returning.

    Parameters
    ----------
    times : array of float
        Time of the event, or of censoring (non-negative).
    observed : array of bool
        True where the event happened at that time, False where the subject was censored.

    Returns
    -------
    DataFrame
        ``time`` (0, then each distinct event time, increasing), ``at_risk``, ``events``,
        ``survival`` (share without the event just after ``time``).

    Examples
    --------
    >>> kaplan_meier([1, 2, 2, 3], [True, True, False, False])["survival"].tolist()
    [1.0, 0.75, 0.5]
    """
    t = _check_values(times, None, "times")
    e = _check_labels(observed, "observed", n=t.size)
    if (t < 0).any():
        raise ConfigError("times must be >= 0 (time since the start of follow-up)")
    event_times, events = np.unique(t[e.astype(bool)], return_counts=True)
    at_risk = t.size - np.searchsorted(np.sort(t), event_times, side="left")
    survival = np.cumprod(1.0 - events / at_risk)
    return pd.DataFrame(
        {
            "time": np.concatenate([[0.0], event_times]),
            "at_risk": np.concatenate([[t.size], at_risk]).astype(np.int64),
            "events": np.concatenate([[0], events]).astype(np.int64),
            "survival": np.concatenate([[1.0], survival]),
        }
    )


# ------------------------------------------------------------------------------- BTYD


def btyd_holdout_metrics(actual: ArrayLike, predicted: ArrayLike) -> dict[str, float]:
    """How well predicted holdout transactions match the observed ones, per customer and in total.

    The BTYD protocol (CDNOW: 39 calibration, 39 holdout weeks) judges a model on each
    customer's count (MAE, RMSE, Pearson correlation), on the total the business would
    plan with (relative aggregate error), and on telling buyers from non-buyers (AUC of the
    prediction against ``actual > 0``).

    Parameters
    ----------
    actual : array of float >= 0
        Transactions each customer made in the holdout.
    predicted : array of float >= 0
        Expected transactions the model predicted for the same customers, same order.

    Returns
    -------
    dict
        ``n_customers``, ``mae``, ``rmse``, ``correlation``, ``actual_total``,
        ``predicted_total``, ``aggregate_relative_error`` (``(pred − actual) / actual``
        totals), ``auc_any_transaction``. Undefined values (a constant input, no holdout
        transaction, a single class) are NaN with a `DataQualityWarning`.

    Examples
    --------
    >>> m = btyd_holdout_metrics([0, 2, 1], [0.5, 1.5, 1.0])
    >>> round(m["mae"], 6), m["aggregate_relative_error"], m["auc_any_transaction"]
    (0.333333, 0.0, 1.0)
    """
    a = _check_values(actual, None, "actual")
    f = _check_values(predicted, a.size, "predicted")
    for name, x in (("actual", a), ("predicted", f)):
        if (x < 0).any():
            i = int(np.argmax(x < 0))
            raise ConfigError(
                f"{name} has a negative transaction count ({x[i]} at row {i}): pass counts"
                " (actual) and expected counts (predicted), both >= 0"
            )
    err = f - a
    actual_total, predicted_total = float(a.sum()), float(f.sum())
    if a.std() == 0 or f.std() == 0:
        warnings.warn(
            "holdout correlation is NaN: actual or predicted transactions are constant",
            DataQualityWarning,
            stacklevel=2,
        )
        correlation = math.nan
    else:
        correlation = float(np.corrcoef(a, f)[0, 1])
    if actual_total == 0:
        warnings.warn(
            "aggregate relative error is NaN: no transaction in the holdout; check the window",
            DataQualityWarning,
            stacklevel=2,
        )
        relative = math.nan
    else:
        relative = (predicted_total - actual_total) / actual_total
    return {
        "n_customers": float(a.size),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "correlation": correlation,
        "actual_total": actual_total,
        "predicted_total": predicted_total,
        "aggregate_relative_error": relative,
        "auc_any_transaction": roc_auc(a > 0, f),
    }


# ---------------------------------------------------------------------------- helpers


def _score_source(scores: Any) -> tuple[Any, tuple[int, int]]:
    """The score matrix kept as given (numpy or torch, no copy) and its shape, checked."""
    torch = sys.modules.get("torch")
    if not (torch is not None and isinstance(scores, torch.Tensor)):
        scores = np.asarray(scores)
        if scores.dtype.kind not in "biuf":
            raise ConfigError(
                f"scores must be numbers, got dtype {scores.dtype}: pass a float array of"
                " shape (n_users, n_items)"
            )
    shape = tuple(scores.shape)
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise ConfigError(
            f"scores has shape {shape}: pass one row per user and one column per item,"
            " shape (n_users, n_items), both at least 1"
        )
    return scores, (int(shape[0]), int(shape[1]))


def _score_rows(src: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the scores as floats, refusing NaN and +inf."""
    s = _to_numpy(src[start:stop])
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    bad = np.isnan(s) | np.isposinf(s)
    if bad.any():
        row, item = np.argwhere(bad)[0]
        raise ConfigError(
            f"scores has NaN or +inf (user row {start + row}, item {item}: {s[row, item]}):"
            " fix the model output; use -inf only to push an item to the bottom"
        )
    return s


def _chunk_rows(chunk_rows: int | None, n_items: int) -> int:
    if chunk_rows is None:
        return max(1, _CHUNK_CELLS // n_items)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer):
        raise ConfigError(f"chunk_rows={chunk_rows!r}: use a whole number of users >= 1")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows!r}: use a whole number of users >= 1")
    return int(chunk_rows)


def _check_item_index(targets: ArrayLike, n_users: int, n_items: int) -> np.ndarray:
    tg = np.asarray(_to_numpy(targets))
    if tg.ndim != 1 or tg.size != n_users:
        raise ConfigError(
            f"targets has shape {tg.shape} but scores has {n_users} user rows: pass one"
            " item index per user, in the same order"
        )
    if tg.dtype.kind not in "iu":
        raise ConfigError(
            f"targets must be integer item indices, got dtype {tg.dtype}: convert with"
            " .astype(int) after checking there are no missing targets"
        )
    _check_in_range(tg, n_items, "targets")
    return tg.astype(np.int64)


def _check_in_range(idx: np.ndarray, n: int, name: str) -> None:
    bad = np.flatnonzero((idx < 0) | (idx >= n))
    if bad.size:
        raise ConfigError(
            f"{name} has an index out of range ({idx[bad[0]]} at position {bad[0]}); valid"
            f" indices are 0 to {n - 1}: map ids with the same index as the score matrix"
        )


class _Sets:
    """Item sets per user in compressed-row form (duplicates allowed)."""

    __slots__ = ("indices", "indptr")

    def __init__(self, indptr: np.ndarray, indices: np.ndarray) -> None:
        self.indptr, self.indices = indptr, indices


def _item_sets(
    obj: Any, shape: tuple[int, int], name: str, *, lists: bool = False
) -> np.ndarray | _Sets:
    """A dense boolean mask, or `_Sets` built from a sparse matrix, pairs or per-user lists."""
    n_users, n_items = shape
    if sparse.issparse(obj):
        if obj.shape != shape:
            raise ConfigError(
                f"{name} is a sparse matrix of shape {obj.shape}, scores has {shape}:"
                " use one row per user and one column per item"
            )
        csr = sparse.csr_array(obj, copy=True)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        return _Sets(csr.indptr.astype(np.int64), csr.indices.astype(np.int64))
    obj = _to_numpy(obj)
    if isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.dtype == bool:
        if obj.shape != shape:
            raise ConfigError(
                f"{name} is a boolean mask of shape {obj.shape}, scores has {shape}:"
                " pass a mask of the same shape"
            )
        return obj
    if lists:
        if isinstance(obj, np.ndarray) and obj.ndim != 1:
            raise ConfigError(
                f"{name} has shape {obj.shape}: pass a boolean mask shaped like scores, a"
                " sparse matrix, or one list of item indices per user"
            )
        if len(obj) != n_users:
            raise ConfigError(
                f"{name} has {len(obj)} entries but scores has {n_users} user rows: pass one"
                " list of item indices per user (empty for a user without targets)"
            )
        parts = [np.asarray(_to_numpy(x)).reshape(-1) for x in obj]
        kinds = {x.dtype for x in parts if x.size and x.dtype.kind not in "iu"}
        if kinds:
            raise ConfigError(
                f"{name} must hold integer item indices, got dtype {kinds.pop()}: convert"
                " each user's list with .astype(int)"
            )
        lengths = np.fromiter((x.size for x in parts), dtype=np.int64, count=n_users)
        indices = np.concatenate([x.astype(np.int64) for x in parts])
        _check_in_range(indices, n_items, name)
        return _Sets(np.concatenate([[0], np.cumsum(lengths)]), indices)
    if not (isinstance(obj, tuple | list) and len(obj) == 2):
        raise ConfigError(
            f"{name} must be a boolean mask shaped like scores, a scipy sparse matrix, or a"
            " pair (user_idx, item_idx) of int arrays"
        )
    users, items = (np.asarray(_to_numpy(x)) for x in obj)
    if users.ndim != 1 or users.shape != items.shape:
        raise ConfigError(
            f"{name}=(user_idx, item_idx) must be two 1-d arrays of the same length, got"
            f" shapes {users.shape} and {items.shape}"
        )
    if users.size and (users.dtype.kind not in "iu" or items.dtype.kind not in "iu"):
        raise ConfigError(f"{name}=(user_idx, item_idx) must hold integer indices")
    users, items = users.astype(np.int64), items.astype(np.int64)
    _check_in_range(users, n_users, f"{name} user_idx")
    _check_in_range(items, n_items, f"{name} item_idx")
    order = np.argsort(users, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
    return _Sets(indptr, items[order])


def _dense_rows(sets: np.ndarray | _Sets, start: int, stop: int, n_items: int) -> np.ndarray:
    """Rows ``start:stop`` of an item-set collection as a fresh boolean mask."""
    if isinstance(sets, np.ndarray):
        return np.array(sets[start:stop], dtype=bool, copy=True)
    mask = np.zeros((stop - start, n_items), dtype=bool)
    lo, hi = sets.indptr[start], sets.indptr[stop]
    rows = np.repeat(np.arange(stop - start), np.diff(sets.indptr[start : stop + 1]))
    mask[rows, sets.indices[lo:hi]] = True
    return mask
