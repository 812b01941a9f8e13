"""Off-policy value: what a proposed plan would have achieved, estimated from a logged campaign.

Why: before a new targeting plan goes out, the last campaign already holds the answer for the
users whose logged arm happens to equal the arm the plan would give them. Reweighting those
rows by the inverse probability of their arm makes them stand for everyone (Horvitz-Thompson;
Dudík, Langford & Li 2011 for the doubly robust form).

With ``m_i = 1[a_i = π(x_i)]`` (logged arm equals the plan's arm), ``w_i = m_i / p_i`` and
``q̂(x, a)`` an outcome model:

- **IPW** ``(1/n) Σ w_i y_i``: unbiased when ``p_i`` is right; noisy when weights are large.
- **Self-normalised IPW** ``Σ w_i y_i / Σ w_i``: a little biased, usually much less variable.
- **Doubly robust** ``(1/n) Σ [q̂(x_i, π(x_i)) + w_i (y_i − q̂(x_i, a_i))]``: right if either the
  propensities or the outcome model are, and tighter than IPW when ``q̂`` is good.
- References: the logged policy's observed mean ``(1/n) Σ y_i``, and the "all control" value
  (self-normalised IPW of the plan that treats no one).

Propensity ``p_i`` of the logged arm: ``CampaignData.propensity`` when the log carries it, else
the empirical share of that arm — right only for a randomised experiment whose assignment did
not depend on the user. Empirical shares are recomputed inside each bootstrap resample, as the
estimator would on new data; logged propensities are fixed per row.

Outcome model: without ``features`` the per-arm mean of the outcome; with them, one
``HistGradientBoostingRegressor`` per arm, 2-fold cross-fitted (each row predicted by models that
did not see it) so the correction term stays honest. Its predictions are then **held fixed**
across bootstrap resamples (refitting 6 models × ``n_bootstrap`` would cost minutes), so the
DR interval ignores the outcome model's own fitting noise; with cross-fitting that noise is
second order.

Intervals: percentile bootstrap over rows, ``n_bootstrap`` resamples, computed as one matrix
product of resample counts with per-row columns (in chunks), deterministic given ``seed``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from ebbtide.activate.campaign_log import CampaignData
from ebbtide.errors import CampaignLogError, CampaignWarning, ConfigError
from ebbtide.jsonable import to_jsonable

__all__ = ["ESTIMATORS", "PolicyValue", "estimate_policy_value"]

#: Rows of `PolicyValue.table`, in order.
ESTIMATORS = ("ipw", "snipw", "dr", "logged_mean", "all_control")
#: Fewer matched rows than this and the estimate is warned about.
_FEW_MATCHED = 30
#: Resample-count entries per chunk (bounds memory at ~32 MB of float64).
_CHUNK_ENTRIES = 1 << 22
#: HistGradientBoosting handles at most this many categories per feature.
_MAX_CATEGORIES = 255


@dataclass(frozen=True)
class PolicyValue:
    """Estimated mean outcome per user under a proposed policy, with bootstrap intervals.

    Attributes
    ----------
    table : DataFrame
        ``estimator, value, ci_low, ci_high``; estimators in `ESTIMATORS`.
    outcome : str
    n : int
        Rows used.
    n_matched : int
        Rows whose logged arm equals the policy's arm (the only rows IPW sees).
    effective_n : float
        Kish effective sample size of the IPW weights, ``(Σw)² / Σw²``.
    propensity_source : str
        ``"logged"`` or ``"empirical arm shares"``.
    outcome_model : str
        What the DR estimator's ``q̂`` was.
    n_bootstrap, seed, alpha
        How the intervals were drawn.
    notes : list of str
        Warnings raised on the way.
    """

    table: pd.DataFrame
    outcome: str
    n: int
    n_matched: int
    effective_n: float
    propensity_source: str
    outcome_model: str
    n_bootstrap: int
    seed: int
    alpha: float
    notes: list[str] = field(default_factory=list)

    def value(self, estimator: str = "dr") -> float:
        """The point estimate of one estimator."""
        if estimator not in ESTIMATORS:
            raise ConfigError(f"estimator={estimator!r}: use one of {list(ESTIMATORS)}")
        return float(self.table.set_index("estimator").at[estimator, "value"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain Python numbers, NaN as None."""
        records = to_jsonable(self.table.to_dict(orient="records"))
        return {
            "outcome": self.outcome,
            "n": self.n,
            "n_matched": self.n_matched,
            "effective_n": to_jsonable(self.effective_n),
            "propensity_source": self.propensity_source,
            "outcome_model": self.outcome_model,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "alpha": self.alpha,
            "table": records,
            "notes": list(self.notes),
        }


def estimate_policy_value(
    data: CampaignData,
    outcome: str,
    policy: npt.ArrayLike,
    *,
    features: Sequence[str] | str | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> PolicyValue:
    """Estimate the mean ``outcome`` per user had the campaign followed ``policy``.

    Parameters
    ----------
    data : CampaignData
        From `prepare_campaign`.
    outcome : str
        One of ``data.outcomes``.
    policy : array of str
        The arm the proposed plan gives each kept row, in ``data.frame`` order.
    features : list of str, optional
        Columns of ``data.frame`` for the doubly robust outcome model; non-numeric columns are
        treated as categorical. Default: per-arm means.
    n_bootstrap : int
        Bootstrap resamples for the percentile intervals.
    seed : int
        Seeds the resamples and the cross-fitting folds.
    alpha : float
        Intervals are ``1 − alpha``.

    Returns
    -------
    PolicyValue

    Raises
    ------
    ConfigError
        Unknown outcome, feature or arm, policy of the wrong length, bad ``n_bootstrap``,
        ``seed`` or ``alpha``.
    CampaignLogError
        No row's logged arm agrees with the policy (the log says nothing about this plan).

    Warns
    -----
    CampaignWarning
        Few matched rows or a small effective sample size; resamples without a needed arm.

    Examples
    --------
    >>> import numpy as np
    >>> from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign
    >>> from ebbtide.activate.campaign_log import prepare_campaign
    >>> log = generate_campaign(CampaignConfig(customers=2000, seed=1)).log
    >>> data = prepare_campaign(log, arm_col="arm", control="control", outcomes="conversion")
    >>> plan = np.where(data.frame.interest_trend < -0.5, "coupon", "push")
    >>> result = estimate_policy_value(data, "conversion", plan, n_bootstrap=50)
    >>> result.table.estimator.tolist()
    ['ipw', 'snipw', 'dr', 'logged_mean', 'all_control']
    """
    _check_options(data, outcome, n_bootstrap, seed, alpha)
    arms = data.arms
    n = len(data.arm)
    pi = _check_policy(policy, arms, n)
    y = data.outcome_values(outcome)
    a_idx = pd.Index(arms).get_indexer(data.arm)
    pi_idx = pd.Index(arms).get_indexer(pi)
    matched = a_idx == pi_idx
    notes: list[str] = []
    if not matched.any():
        raise CampaignLogError(
            "the policy gives no row the arm it was logged with, so the log holds no evidence "
            "about it; propose a plan that overlaps the logged assignment"
        )

    if data.propensity is not None:
        propensity_source = "logged"
        row_weight = 1.0 / data.propensity
        p = data.propensity
    else:
        propensity_source = "empirical arm shares"
        row_weight = np.ones(n)
        p = np.bincount(a_idx, minlength=len(arms))[a_idx] / n
    w = matched / p
    effective_n = float(w.sum() ** 2 / (w**2).sum())
    if matched.sum() < _FEW_MATCHED or effective_n < _FEW_MATCHED:
        notes.append(
            f"only {int(matched.sum())} rows follow the policy (effective n {effective_n:.1f});"
            " the estimates are unstable, collect more overlap before trusting them"
        )

    feature_list = [features] if isinstance(features, str) else list(features or [])
    if feature_list:
        q = _cross_fit(data.frame, feature_list, a_idx, y, len(arms), seed)
        outcome_model = (
            f"HistGradientBoostingRegressor per arm on {feature_list}, 2-fold cross-fitted"
        )
    else:
        means = np.bincount(a_idx, weights=y, minlength=len(arms)) / np.bincount(
            a_idx, minlength=len(arms)
        )
        q = np.broadcast_to(means, (n, len(arms)))
        outcome_model = "per-arm mean"
    rows = np.arange(n)
    q_logged, q_policy = q[rows, a_idx], q[rows, pi_idx]

    columns = _columns(y, a_idx, matched, row_weight, q_logged, q_policy, len(arms))
    empirical = data.propensity is None
    point = _estimates(np.ones((1, n)) @ columns, n, len(arms), empirical)[0]
    boot = _bootstrap(columns, n, len(arms), empirical, n_bootstrap, seed)
    undefined = np.isnan(boot).any(axis=0)
    if undefined.any():
        names = [ESTIMATORS[j] for j in np.flatnonzero(undefined)]
        notes.append(
            f"{int(np.isnan(boot).any(axis=1).sum())} of {n_bootstrap} resamples left {names} "
            "undefined (an arm without rows); their intervals use the rest"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    table = pd.DataFrame(
        {"estimator": list(ESTIMATORS), "value": point, "ci_low": low, "ci_high": high}
    )
    for note in notes:
        warnings.warn(note, CampaignWarning, stacklevel=2)
    return PolicyValue(
        table=table,
        outcome=outcome,
        n=n,
        n_matched=int(matched.sum()),
        effective_n=effective_n,
        propensity_source=propensity_source,
        outcome_model=outcome_model,
        n_bootstrap=n_bootstrap,
        seed=seed,
        alpha=alpha,
        notes=notes,
    )


def _check_options(
    data: CampaignData, outcome: str, n_bootstrap: int, seed: int, alpha: float
) -> None:
    if outcome not in data.outcomes:
        raise ConfigError(f"outcome {outcome!r} was not prepared; use one of {data.outcomes}")
    if not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 1:
        raise ConfigError(f"n_bootstrap={n_bootstrap!r}: use an integer >= 1 (200 is usual)")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed={seed!r}: use an integer >= 0")
    if not isinstance(alpha, float | int) or not 0 < alpha < 1:
        raise ConfigError(f"alpha={alpha!r}: use a number in (0, 1), e.g. 0.05")


def _check_policy(policy: npt.ArrayLike, arms: list[str], n: int) -> np.ndarray:
    values = policy.to_numpy() if isinstance(policy, pd.Series) else np.asarray(policy)
    if values.ndim != 1 or values.size != n:
        raise ConfigError(
            f"policy has shape {values.shape}; give one arm per kept row ({n}, in "
            "CampaignData.frame order)"
        )
    values = values.astype(str)
    unknown = sorted(set(np.unique(values)) - set(arms))
    if unknown:
        raise ConfigError(f"policy uses unknown arm(s) {unknown}; use arms from {arms}")
    return values


def _columns(
    y: np.ndarray,
    a_idx: np.ndarray,
    matched: np.ndarray,
    row_weight: np.ndarray,
    q_logged: np.ndarray,
    q_policy: np.ndarray,
    n_arms: int,
) -> np.ndarray:
    """Per-row columns whose resample-weighted sums give every estimator.

    Per arm ``k`` (3 columns each): ``1[a=k]·m·u·y``, ``1[a=k]·m·u``, ``1[a=k]·m·u·(y − q̂_a)``;
    then ``1[a=k]`` per arm, ``q̂_π``, ``y``, and ``1[a=control]·u·y``, ``1[a=control]·u``.
    ``u`` is ``1/p`` for logged propensities and 1 for empirical shares (applied per arm later).
    """
    onehot = np.zeros((y.size, n_arms))
    onehot[np.arange(y.size), a_idx] = 1.0
    mu = matched * row_weight
    per_arm = np.concatenate(
        [
            onehot * (mu * y)[:, None],
            onehot * mu[:, None],
            onehot * (mu * (y - q_logged))[:, None],
        ],
        axis=1,
    )
    control = onehot[:, 0] * row_weight
    rest = np.stack([q_policy, y, control * y, control], axis=1)
    return np.concatenate([per_arm, onehot, rest], axis=1)


def _estimates(sums: np.ndarray, n: int, n_arms: int, empirical: bool) -> np.ndarray:
    """Turn column sums (one row per resample) into the `ESTIMATORS` values."""
    k = n_arms
    ys, ms, rs, counts = (
        sums[:, :k],
        sums[:, k : 2 * k],
        sums[:, 2 * k : 3 * k],
        sums[:, 3 * k : 4 * k],
    )
    q_policy, y_sum, control_y, control_w = sums[:, 4 * k :].T
    if empirical:
        # p = count_k / n, so each arm's sums are divided by count_k; an arm absent from a
        # resample contributes nothing (its sums are 0 too).
        factor = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    else:
        factor = np.full_like(counts, 1.0 / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ipw = (ys * factor).sum(axis=1)
        norm = (ms * factor).sum(axis=1)
        snipw = np.where(norm > 0, ipw / np.where(norm > 0, norm, 1.0), np.nan)
        dr = q_policy / n + (rs * factor).sum(axis=1)
        all_control = np.where(
            control_w > 0, control_y / np.where(control_w > 0, control_w, 1), np.nan
        )
    return np.stack([ipw, snipw, dr, y_sum / n, all_control], axis=1)


def _bootstrap(
    columns: np.ndarray, n: int, n_arms: int, empirical: bool, n_bootstrap: int, seed: int
) -> np.ndarray:
    """Estimates on ``n_bootstrap`` row resamples, as resample counts @ columns, in chunks."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    chunk = max(1, _CHUNK_ENTRIES // max(n, 1))
    out = np.empty((n_bootstrap, len(ESTIMATORS)))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(float)
        out[start : start + b] = _estimates(counts @ columns, n, n_arms, empirical)
    return out


def _cross_fit(
    frame: pd.DataFrame,
    features: list[str],
    a_idx: np.ndarray,
    y: np.ndarray,
    n_arms: int,
    seed: int,
) -> np.ndarray:
    """Out-of-fold predictions ``q̂(x_i, k)`` for every row and arm (2 folds, one model per arm)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, categorical = _encode(frame, features)
    n = y.size
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    fold = np.zeros(n, dtype=np.int64)
    fold[rng.permutation(n)[: n // 2]] = 1
    binary = bool(np.isin(y, (0.0, 1.0)).all())
    q = np.empty((n, n_arms))
    for f in (0, 1):
        target = fold == f
        for k in range(n_arms):
            train = (fold != f) & (a_idx == k)
            if train.sum() < 2:
                # Too few rows to fit: fall back to the arm's mean over all rows.
                q[target, k] = y[a_idx == k].mean()
                continue
            model = HistGradientBoostingRegressor(
                categorical_features=categorical if categorical.any() else None,
                random_state=seed,
            )
            model.fit(x[train], y[train])
            q[target, k] = model.predict(x[target])
    return np.clip(q, 0.0, 1.0) if binary else q


def _encode(frame: pd.DataFrame, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Features as floats; non-numeric columns become category codes (missing → NaN)."""
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise ConfigError(
            f"feature column(s) {missing} not in the campaign log; available: {list(frame.columns)}"
        )
    x = np.empty((len(frame), len(features)))
    categorical = np.zeros(len(features), dtype=bool)
    for j, name in enumerate(features):
        column = frame[name]
        if is_numeric_dtype(column) and not is_bool_dtype(column):
            x[:, j] = column.to_numpy(dtype=float, na_value=np.nan)
            continue
        codes = pd.Categorical(column).codes.astype(float)
        if codes.max(initial=-1) >= _MAX_CATEGORIES:
            raise ConfigError(
                f"feature {name!r} has {int(codes.max()) + 1} categories; the outcome model "
                f"takes at most {_MAX_CATEGORIES}: bucket it or leave it out"
            )
        codes[codes < 0] = np.nan
        x[:, j] = codes
        categorical[j] = True
    return x, categorical
