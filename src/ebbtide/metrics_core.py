"""The one implementation of the metrics that both training and evaluation compute.

Why a module of its own, below ``models``: data flows one way (models -> evaluate), yet
models select epochs on the same numbers the evaluation reports (``neural`` on ROC-AUC and
log-loss of a validation window, ``next_item`` on NDCG@10). Keeping a single copy here, which
`ebbtide.evaluate.metrics` re-exports, means an early-stopping score and a reported score can
never disagree by definition.

- **Classification** (ROC-AUC, PR-AUC as average precision, log-loss, Brier) are thin wrappers
  over ``sklearn.metrics``; what they add is input checks that name the bad value, NaN with a
  `DataQualityWarning` where a number is undefined (one class) instead of an exception, and a
  fixed log-loss clip.
- **Ranking** (HR, NDCG, MRR at k from 1-based ranks; NDCG and recall from a top-k hit
  matrix) share one discount, ``1 / log2(position + 1)``.

Examples
--------
>>> round(roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 6)
0.75
>>> ranking_metrics([1, 2, 30], ks=(10,))["hr@10"]
0.6666666666666666
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ebbtide.errors import ConfigError, DataQualityWarning

__all__ = [
    "PROBABILITY_CLIP",
    "brier",
    "dcg_discount",
    "hit_rate_at_k",
    "log_loss",
    "mrr_at_k",
    "ndcg_at_k",
    "ndcg_from_hits",
    "pr_auc",
    "ranking_metrics",
    "recall_from_hits",
    "roc_auc",
]

ArrayLike = npt.ArrayLike

#: Probabilities are clipped to ``[PROBABILITY_CLIP, 1 − PROBABILITY_CLIP]`` in `log_loss`.
PROBABILITY_CLIP = 1e-15


# ----------------------------------------------------------------------------- ranking


def dcg_discount(positions: ArrayLike) -> np.ndarray:
    """The DCG weight of a hit at 1-based list `positions`: ``1 / log2(position + 1)``.

    Examples
    --------
    >>> dcg_discount([1, 3]).tolist()
    [1.0, 0.5]
    """
    return 1.0 / np.log2(np.asarray(positions, dtype=float) + 1.0)


def hit_rate_at_k(ranks: ArrayLike, k: int, *, per_user: bool = False) -> float | np.ndarray:
    """Share of users whose target is in the top ``k`` (HR@k, leave-one-out protocol).

    Parameters
    ----------
    ranks : array of int
        1-based ranks, as from `ebbtide.evaluate.metrics.rank_of_targets`; a target outside
        a top-k list can be given rank ``k + 1``.
    k : int
        List length, at least 1.
    per_user : bool
        Return the 0/1 value of every user instead of the mean.

    Examples
    --------
    >>> hit_rate_at_k([1, 3, 12], 10)
    0.6666666666666666
    """
    r, k = _check_ranks(ranks), _check_k(k)
    return _mean_or_all((r <= k).astype(float), per_user)


def ndcg_at_k(ranks: ArrayLike, k: int, *, per_user: bool = False) -> float | np.ndarray:
    """NDCG@k with one relevant item per user: ``1 / log2(rank + 1)`` if ``rank <= k``, else 0.

    With a single target the ideal DCG is 1, so no normalisation is needed; rewards a hit
    near the top more than one near position ``k``.

    Parameters
    ----------
    ranks, k, per_user : as in `hit_rate_at_k`.

    Examples
    --------
    >>> ndcg_at_k([1, 3, 12], 10, per_user=True).tolist()
    [1.0, 0.5, 0.0]
    """
    r, k = _check_ranks(ranks), _check_k(k)
    return _mean_or_all(np.where(r <= k, dcg_discount(r), 0.0), per_user)


def mrr_at_k(ranks: ArrayLike, k: int, *, per_user: bool = False) -> float | np.ndarray:
    """Mean reciprocal rank cut at ``k``: ``1 / rank`` if ``rank <= k``, else 0.

    Parameters
    ----------
    ranks, k, per_user : as in `hit_rate_at_k`.

    Examples
    --------
    >>> mrr_at_k([1, 4, 12], 10)
    0.4166666666666667
    """
    r, k = _check_ranks(ranks), _check_k(k)
    return _mean_or_all(np.where(r <= k, 1.0 / r, 0.0), per_user)


def ranking_metrics(ranks: ArrayLike, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """HR, NDCG and MRR at every ``k``, keyed as comparison tables name them.

    Parameters
    ----------
    ranks : array of int
        1-based ranks, as in `hit_rate_at_k`.
    ks : sequence of int
        List lengths.

    Returns
    -------
    dict
        ``hr@k``, ``ndcg@k``, ``mrr@k`` for each ``k`` in order.

    Examples
    --------
    >>> m = ranking_metrics([1, 2, 30], ks=(1, 10))
    >>> list(m)
    ['hr@1', 'ndcg@1', 'mrr@1', 'hr@10', 'ndcg@10', 'mrr@10']
    >>> round(m["ndcg@10"], 4)  # (1 + 1/log2 3 + 0) / 3
    0.5436
    """
    if isinstance(ks, int | np.integer) or len(ks) == 0:
        raise ConfigError(f"ks={ks!r}: pass a non-empty sequence of list lengths, e.g. (5, 10, 20)")
    r = _check_ranks(ranks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = float(hit_rate_at_k(r, k))
        out[f"ndcg@{k}"] = float(ndcg_at_k(r, k))
        out[f"mrr@{k}"] = float(mrr_at_k(r, k))
    return out


def ndcg_from_hits(
    hits: ArrayLike, n_targets: ArrayLike, *, per_user: bool = False
) -> float | np.ndarray:
    """NDCG@k with several targets per user and binary relevance, from a top-k hit matrix.

    ``DCG = Σ dcg_discount(position)`` over the positions holding a target, divided by the
    ideal DCG of ``min(n_targets, k)`` hits at the top, where ``k = hits.shape[1]``. With one
    target per user it equals `ndcg_at_k` of that target's rank.

    Parameters
    ----------
    hits : array of bool, shape (n_users, k)
        Whether list position ``j + 1`` of each user holds one of the user's targets.
    n_targets : array of int, shape (n_users,)
        Relevant items per user (found in the list or not); users with 0 are NaN per user and
        left out of the mean.
    per_user : bool
        Return every user's value instead of the mean over users with targets.

    Raises
    ------
    ConfigError
        Shapes that do not match, more hits than targets, or no user with a target (for
        the mean).

    Examples
    --------
    >>> round(ndcg_from_hits([[False, True, False]], [2]), 6)  # (1/log2 3) / (1 + 1/log2 3)
    0.386853
    """
    h, n = _check_hits(hits, n_targets)
    discount = dcg_discount(np.arange(1, h.shape[1] + 1))
    ideal = np.cumsum(discount)[np.clip(np.minimum(n, h.shape[1]), 1, None) - 1]
    ndcg = np.where(n > 0, (h @ discount) / ideal, np.nan)
    return _nanmean_or_all(ndcg, per_user)


def recall_from_hits(
    hits: ArrayLike, n_targets: ArrayLike, *, per_user: bool = False
) -> float | np.ndarray:
    """Recall@k with several targets per user: ``hits in the top k / n_targets``.

    The denominator is the number of targets (as RecBole), so a user with more than ``k``
    targets cannot reach 1. Arguments as in `ndcg_from_hits`.

    Examples
    --------
    >>> recall_from_hits([[True, False], [False, False]], [2, 1], per_user=True).tolist()
    [0.5, 0.0]
    """
    h, n = _check_hits(hits, n_targets)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n > 0, h.sum(axis=1) / n, np.nan)
    return _nanmean_or_all(recall, per_user)


# ----------------------------------------------------------------------- classification


def roc_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative.

    ``sklearn.metrics.roc_auc_score`` (tied scores count one half), after checking the
    inputs.

    Parameters
    ----------
    y : array of bool or 0/1
        Observed outcome.
    score : array of float
        Any finite score; only its order matters.

    Returns
    -------
    float
        NaN, with a `DataQualityWarning`, when `y` holds a single class (scikit-learn
        raises there).

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1, 1], [0.5, 0.5, 0.9])  # the tie counts one half
    0.75
    """
    from sklearn.metrics import roc_auc_score

    yb = _check_labels(y)
    s = _check_values(score, yb.size, "score")
    n_pos = int(yb.sum())
    if n_pos == 0 or n_pos == yb.size:
        _warn_one_class("ROC-AUC", n_pos, yb.size - n_pos)
        return math.nan
    return float(roc_auc_score(yb.astype(np.int8), s))


def pr_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Area under the precision–recall curve as average precision (step-wise, no interpolation).

    ``AP = Σ (R_i − R_{i−1}) · P_i`` over distinct score thresholds, from the highest:
    ``sklearn.metrics.average_precision_score``, not the trapezoid ``auc(recall,
    precision)``, which interpolates linearly between points and so is optimistic. Unlike
    ROC-AUC it moves with the base rate, so read it next to the share of positives.

    Parameters
    ----------
    y, score : as in `roc_auc`.

    Returns
    -------
    float
        NaN, with a `DataQualityWarning`, when there is no positive (scikit-learn answers 0
        with a warning there). All positive is 1.

    Examples
    --------
    >>> round(pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 6)  # (1 + 2/3) / 2
    0.833333
    """
    from sklearn.metrics import average_precision_score

    yb = _check_labels(y)
    s = _check_values(score, yb.size, "score")
    n_pos = int(yb.sum())
    if n_pos == 0:
        _warn_one_class("PR-AUC (average precision)", n_pos, yb.size)
        return math.nan
    return float(average_precision_score(yb.astype(np.int8), s))


def log_loss(y: ArrayLike, p: ArrayLike) -> float:
    """Mean negative log-likelihood of binary outcomes (natural log).

    ``sklearn.metrics.log_loss``, with the probability given to what happened (``p`` or
    ``1 − p``) clipped to ``[1e-15, 1 − 1e-15]`` first, so one confident miss costs
    ``−ln 1e-15 ≈ 34.5`` whichever way it misses, a fixed cost that does not depend on the
    float type (scikit-learn alone clips at the dtype's epsilon, ``−ln 2.2e-16 ≈ 36``).

    Parameters
    ----------
    y : array of bool or 0/1
        Observed outcome; one class only is fine.
    p : array of float in [0, 1]
        Predicted probability of the outcome.

    Examples
    --------
    >>> round(log_loss([1, 0], [0.8, 0.3]), 6)  # -(ln 0.8 + ln 0.7) / 2
    0.289909
    """
    from sklearn.metrics import log_loss as sk_log_loss

    yb = _check_labels(y)
    q = _check_values(p, yb.size, "p", probability=True)
    # Clip the probability of what happened, not p: 1 − (1 − 1e-15) is not 1e-15 in floats,
    # so clipping p would charge a miss at 1 more than one at 0. Scored as "all happened".
    given = np.clip(np.where(yb, q, 1.0 - q), PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    return float(sk_log_loss(np.ones(yb.size, dtype=np.int8), given, labels=[0, 1]))


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score: mean squared difference between probability and outcome (lower is better).

    ``sklearn.metrics.brier_score_loss`` with 1 as the positive class.

    Parameters
    ----------
    y, p : as in `log_loss`.

    Examples
    --------
    >>> round(brier([1, 0], [0.8, 0.3]), 6)  # (0.2² + 0.3²) / 2
    0.065
    """
    from sklearn.metrics import brier_score_loss

    yb = _check_labels(y)
    q = _check_values(p, yb.size, "p", probability=True)
    return float(brier_score_loss(yb.astype(np.int8), q, pos_label=1))


# ---------------------------------------------------------------------------- helpers


def _to_numpy(x: Any) -> Any:
    """A torch tensor as a numpy array (detached, on the CPU); anything else unchanged."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.double()  # float16 / bfloat16 have no exact numpy counterpart
        return x.cpu().numpy()
    return x


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k={k!r}: use a whole number of list positions >= 1, such as 10")
    return int(k)


def _check_ranks(ranks: ArrayLike) -> np.ndarray:
    try:
        r = np.asarray(_to_numpy(ranks), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"ranks must be numbers (1 = top of the list): {exc}") from None
    if r.ndim != 1 or r.size == 0:
        raise ConfigError(f"ranks has shape {r.shape}: pass one rank per user, at least one")
    bad = np.flatnonzero(~np.isfinite(r) | (r < 1) | (r != np.floor(r)))
    if bad.size:
        raise ConfigError(
            f"ranks must be whole numbers >= 1 (1 = top), got {r[bad[0]]} at position"
            f" {bad[0]}: compute them with rank_of_targets"
        )
    return r.astype(np.int64)


def _check_hits(hits: ArrayLike, n_targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(_to_numpy(hits))
    if h.ndim != 2 or h.shape[1] == 0 or h.dtype != bool:
        raise ConfigError(
            f"hits has shape {h.shape} and dtype {h.dtype}: pass a boolean array of shape"
            " (n_users, k), True where a list position holds a target"
        )
    n = np.asarray(_to_numpy(n_targets))
    if n.shape != (h.shape[0],) or (n.size and n.dtype.kind not in "iu"):
        raise ConfigError(
            f"n_targets has shape {n.shape} and dtype {n.dtype}: pass one whole number of"
            f" targets per user ({h.shape[0]} users)"
        )
    n = n.astype(np.int64)
    over = np.flatnonzero(h.sum(axis=1) > n)
    if over.size:
        raise ConfigError(
            f"user row {over[0]} has {int(h[over[0]].sum())} hits but {n[over[0]]} targets:"
            " count every relevant item of the user in n_targets"
        )
    return h, n


def _check_labels(y: ArrayLike, name: str = "y", *, n: int | None = None) -> np.ndarray:
    a = np.asarray(_to_numpy(y))
    if a.ndim != 1 or a.size == 0:
        raise ConfigError(f"{name} has shape {a.shape}: pass a non-empty 1-d array of 0/1")
    if n is not None and a.size != n:
        raise ConfigError(f"{name} has {a.size} rows but the other inputs have {n}")
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "iuf" or not np.isin(a, (0, 1)).all():
        raise ConfigError(
            f"{name} must be bool or 0/1, got values like {np.unique(a)[:5].tolist()}:"
            " map the outcome to 1 = happened, 0 = did not"
        )
    return a.astype(bool)


def _check_values(
    x: ArrayLike, n: int | None, name: str, *, probability: bool = False
) -> np.ndarray:
    try:
        a = np.asarray(_to_numpy(x), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numbers: {exc}") from None
    if a.ndim != 1 or a.size == 0:
        raise ConfigError(f"{name} has shape {a.shape}: pass a non-empty 1-d array")
    if n is not None and a.size != n:
        raise ConfigError(
            f"{name} has {a.size} rows but the other inputs have {n}: pass one value per row,"
            " in the same order"
        )
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ConfigError(
            f"{name} has {bad.size} missing or infinite values (first at row {bad[0]}):"
            " fix the model output or drop those rows before evaluating"
        )
    if probability:
        bad = np.flatnonzero((a < 0) | (a > 1))
        if bad.size:
            raise ConfigError(
                f"{name} must be probabilities in [0, 1], got {a[bad[0]]} at row {bad[0]}:"
                " pass probabilities (e.g. after a sigmoid), not raw scores or logits"
            )
    return a


def _warn_one_class(metric: str, n_pos: int, n_neg: int) -> None:
    warnings.warn(
        f"{metric} is NaN: the outcome has {n_pos} positive and {n_neg} negative rows;"
        " it needs both (evaluate on more users or a longer window)",
        DataQualityWarning,
        stacklevel=3,
    )


def _mean_or_all(values: np.ndarray, per_user: bool) -> float | np.ndarray:
    return values if per_user else float(values.mean())


def _nanmean_or_all(values: np.ndarray, per_user: bool) -> float | np.ndarray:
    if per_user:
        return values
    has = ~np.isnan(values)
    if not has.any():
        raise ConfigError(
            "no user has a target: pass at least one relevant item for some user (users"
            " without targets are left out of the mean)"
        )
    return float(values[has].mean())
