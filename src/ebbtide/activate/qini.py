"""Uplift evaluation: uplift and Qini curves, their areas, uplift@k and deciles.

Why these: nobody is both treated and not treated, so a per-customer effect is never
observed; what can be checked is the *ranking*. Sort customers by predicted uplift
(highest first) and, among the top ``k``, compare the treated with the control rows. The
curves follow scikit-uplift (Rzepakowski & Jaroszewicz 2012; Radcliffe 2007):

- **uplift curve** ``gain(k) = (Ȳ_T(k) − Ȳ_C(k)) · k`` (means over the top ``k``; an empty
  group's mean counts as 0);
- **Qini curve** ``qini(k) = Y_T(k) − Y_C(k) · N_T(k) / N_C(k)`` (sums ``Y`` and counts ``N``
  over the top ``k``; the second term is 0 while ``N_C(k) = 0``).

Rows with tied scores form one block that is targeted together: the curve is evaluated at
block ends and is linear across a block, so results do not depend on row order (as in
scikit-uplift, which puts curve points only at distinct scores). `uplift_at_k` and
`uplift_by_decile` cut at a row count instead and break ties by a stable sort on ``−score``.

Areas are measured against the **random line**, the straight line from ``(0, 0)`` to
``(1, curve(n))``, with the fraction targeted on the x-axis, and divided by ``n``: a
coefficient is then "incremental outcomes per customer" and random targeting scores 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from ebbtide.errors import CampaignLogError, CampaignWarning, ConfigError

__all__ = [
    "NORMALISATION",
    "auuc",
    "effect_qini",
    "qini_coefficient",
    "qini_curve",
    "random_targeting_baseline",
    "uplift_at_k",
    "uplift_by_decile",
    "uplift_curve",
    "uplift_metrics",
]

#: How the coefficients are scaled; reports print this next to the numbers.
NORMALISATION = (
    "Qini coefficient and AUUC: area between the model's curve and the random line (from (0, 0)"
    " to (1, curve at 100%)) with the fraction targeted on the x-axis, divided by the number of"
    " customers n, i.e. incremental outcomes per customer (random targeting = 0). Normalised"
    " versions divide that area by the same area of the perfect curve built from the observed"
    " outcomes as scikit-uplift does (perfect_qini_curve with negative effects: treated"
    " responders first, control responders last; perfect_uplift_curve), so 1 = the best"
    " ranking these outcomes allow."
)

ArrayLike = npt.ArrayLike


def uplift_curve(
    score: ArrayLike, treated: ArrayLike, outcome: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """The uplift curve: incremental outcomes if the top ``k`` by score were targeted.

    Parameters
    ----------
    score : array of float
        Predicted uplift; higher is targeted first.
    treated : array of bool (or 0/1)
        Whether each row got the treatment.
    outcome : array of float
        Observed outcome (binary or continuous).

    Returns
    -------
    fraction : ndarray, shape (n + 1,)
        ``k / n`` for ``k = 0..n``.
    gain : ndarray, shape (n + 1,)
        ``(Ȳ_T(k) − Ȳ_C(k)) · k``, linear across tied scores, ``gain[0] = 0``.

    Raises
    ------
    ConfigError, CampaignLogError
        Unequal lengths or non-finite scores; non-finite outcomes or a missing arm.

    Examples
    --------
    >>> fraction, gain = uplift_curve([3, 2, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0])
    >>> gain.tolist()
    [0.0, 1.0, 2.0, 1.5, 2.0]
    """
    s, t, y = _check(score, treated, outcome)
    return _on_every_row(*_knots(s, t, y, _uplift_gain), s.size)


def qini_curve(
    score: ArrayLike, treated: ArrayLike, outcome: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """The Qini curve: treated outcomes minus control outcomes scaled to the treated count.

    Unlike the uplift curve it does not rescale by ``k``, so early noise in a small control
    group weighs less. Parameters, Raises as `uplift_curve`.

    Returns
    -------
    fraction : ndarray, shape (n + 1,)
        ``k / n`` for ``k = 0..n``.
    qini : ndarray, shape (n + 1,)
        ``Y_T(k) − Y_C(k) · N_T(k) / N_C(k)``, linear across tied scores.

    Examples
    --------
    >>> fraction, q = qini_curve([3, 2, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0])
    >>> q.tolist()
    [0.0, 1.0, 1.0, 1.0, 1.0]
    """
    s, t, y = _check(score, treated, outcome)
    return _on_every_row(*_knots(s, t, y, _qini_gain), s.size)


def auuc(
    score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, *, normalised: bool = False
) -> float:
    """Area under the uplift curve above the random line: one number to rank models by.

    Raw: the area between the uplift curve and the random line, fraction targeted on the
    x-axis, divided by ``n`` (incremental outcomes per customer). Normalised: that area
    divided by the same area of scikit-uplift's ``perfect_uplift_curve`` on these rows
    (for a non-binary outcome the same ordering with the outcome rescaled to [0, 1]).

    Parameters
    ----------
    score, treated, outcome : as in `uplift_curve`.
    normalised : bool
        Divide by the perfect curve's area (1 = best ranking possible on these outcomes).

    Returns
    -------
    float
        NaN, with a `CampaignWarning`, when normalising and the perfect area is not > 0.

    Examples
    --------
    >>> round(auuc([3, 2, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0]), 4)
    0.0938
    """
    s, t, y = _check(score, treated, outcome)
    area = _excess_area(*_knots(s, t, y, _uplift_gain), s.size)
    if not normalised:
        return area
    perfect = _excess_area(*_knots(_perfect_uplift_score(t, y), t, y, _uplift_gain), s.size)
    return _ratio(area, perfect, "AUUC")


def qini_coefficient(
    score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, *, normalised: bool = False
) -> float:
    """Area under the Qini curve above the random line.

    Raw: the area between the Qini curve and the random line, fraction targeted on the
    x-axis, divided by ``n`` (incremental outcomes per customer). Normalised: that area
    divided by the same area of scikit-uplift's ``perfect_qini_curve(negative_effect=True)``
    on these rows (score ``outcome · (2·treated − 1)``: treated responders first, control
    responders last), as scikit-uplift's ``qini_auc_score``.

    Parameters
    ----------
    score, treated, outcome : as in `uplift_curve`.
    normalised : bool
        Divide by the perfect curve's area (1 = best ranking possible on these outcomes).

    Returns
    -------
    float
        NaN, with a `CampaignWarning`, when normalising and the perfect area is not > 0.

    Examples
    --------
    >>> round(qini_coefficient([3, 2, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0]), 4)
    0.0938
    """
    s, t, y = _check(score, treated, outcome)
    area = _excess_area(*_knots(s, t, y, _qini_gain), s.size)
    if not normalised:
        return area
    perfect = _excess_area(*_knots(y * np.where(t, 1.0, -1.0), t, y, _qini_gain), s.size)
    return _ratio(area, perfect, "Qini coefficient")


def uplift_at_k(score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, k: float) -> float:
    """Treated minus control mean outcome among the top ``ceil(k · n)`` rows by score.

    The effect a campaign sent to that share would show in its own A/B read-out
    (scikit-uplift ``uplift_at_k``, ``strategy="overall"``, but rounding the count up).

    Parameters
    ----------
    score, treated, outcome : as in `uplift_curve`.
    k : float
        Share targeted, in (0, 1].

    Returns
    -------
    float
        NaN, with a `CampaignWarning`, when the top part has no treated or no control row.

    Raises
    ------
    ConfigError
        ``k`` outside (0, 1].

    Examples
    --------
    >>> uplift_at_k([3, 2, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0], 0.5)
    1.0
    """
    s, t, y = _check(score, treated, outcome)
    top = np.argsort(-s, kind="stable")[: _top_count(k, s.size)]
    t_top, y_top = t[top], y[top]
    n_t, n_c = int(t_top.sum()), int((~t_top).sum())
    if n_t == 0 or n_c == 0:
        warnings.warn(
            f"uplift@{k:g}: the top {top.size} rows have {n_t} treated and {n_c} control;"
            " uplift is NaN there, use a larger k or more rows",
            CampaignWarning,
            stacklevel=2,
        )
        return math.nan
    return float(y_top[t_top].mean() - y_top[~t_top].mean())


def uplift_by_decile(
    score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, *, bins: int = 10
) -> pd.DataFrame:
    """Outcome rates of treated and control per score decile: the table behind the curves.

    Rows are sorted by score (stable on ``−score``) and cut into ``bins`` groups whose sizes
    differ by at most one; decile 1 holds the highest scores. A well-ranked model shows
    uplift falling from decile 1 to the last.

    Parameters
    ----------
    score, treated, outcome : as in `uplift_curve`.
    bins : int
        Number of groups (10 for deciles); at most the number of rows.

    Returns
    -------
    DataFrame
        ``decile, n_treated, n_control, rate_treated, rate_control, uplift``; rates are NaN,
        with a `CampaignWarning`, where a group is empty.

    Examples
    --------
    >>> uplift_by_decile([3, 2, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0], bins=2).uplift.tolist()
    [1.0, 0.0]
    """
    s, t, y = _check(score, treated, outcome)
    if not isinstance(bins, int | np.integer) or not 1 <= bins <= s.size:
        raise ConfigError(f"bins={bins!r}: use an integer from 1 to the number of rows ({s.size})")
    order = np.argsort(-s, kind="stable")
    label = np.empty(s.size, dtype=np.int64)
    label[order] = (np.arange(s.size) * bins) // s.size
    n_t = np.bincount(label, weights=t, minlength=bins)
    n_c = np.bincount(label, minlength=bins) - n_t
    y_t = np.bincount(label, weights=np.where(t, y, 0.0), minlength=bins)
    y_c = np.bincount(label, weights=np.where(t, 0.0, y), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_t = np.where(n_t > 0, y_t / n_t, np.nan)
        rate_c = np.where(n_c > 0, y_c / n_c, np.nan)
    empty = np.flatnonzero((n_t == 0) | (n_c == 0)) + 1
    if empty.size:
        warnings.warn(
            f"deciles {empty.tolist()} lack a treated or a control row; their rates are NaN:"
            " use fewer bins or more rows",
            CampaignWarning,
            stacklevel=2,
        )
    return pd.DataFrame(
        {
            "decile": np.arange(1, bins + 1),
            "n_treated": n_t.astype(np.int64),
            "n_control": n_c.astype(np.int64),
            "rate_treated": rate_t,
            "rate_control": rate_c,
            "uplift": rate_t - rate_c,
        }
    )


def uplift_metrics(
    score: ArrayLike,
    treated: ArrayLike,
    outcome: ArrayLike,
    ks: Sequence[float] = (0.1, 0.2, 0.3),
) -> dict[str, float]:
    """Every headline number for one score, keyed as the comparison tables name them.

    Returns
    -------
    dict
        ``qini``, ``qini_normalised``, ``auuc``, ``auuc_normalised`` and one
        ``uplift_at_{100k}pct`` per ``k`` (``uplift_at_10pct`` for 0.1); see `NORMALISATION`.
    """
    metrics = {
        "qini": qini_coefficient(score, treated, outcome),
        "qini_normalised": qini_coefficient(score, treated, outcome, normalised=True),
        "auuc": auuc(score, treated, outcome),
        "auuc_normalised": auuc(score, treated, outcome, normalised=True),
    }
    for k in ks:
        metrics[_k_name(k)] = uplift_at_k(score, treated, outcome, k)
    return metrics


def random_targeting_baseline(
    treated: ArrayLike, outcome: ArrayLike, ks: Sequence[float] = (0.1, 0.2, 0.3)
) -> dict[str, float]:
    """What targeting at random scores, in `uplift_metrics`'s keys, for a "random" table row.

    Computed analytically, not by simulation: a random ranking follows the random line in
    expectation, so its Qini and AUUC (raw and normalised) are 0, and any top share shows the
    overall difference in means (the average treatment effect).

    Examples
    --------
    >>> random_targeting_baseline([1, 0, 1, 0], [1, 0, 0, 0], ks=(0.5,))["uplift_at_50pct"]
    0.5
    """
    t, y = _check_arms(treated, outcome)
    ate = float(y[t].mean() - y[~t].mean())
    metrics = {"qini": 0.0, "qini_normalised": 0.0, "auuc": 0.0, "auuc_normalised": 0.0}
    for k in ks:
        _top_count(k, t.size)
        metrics[_k_name(k)] = ate
    return metrics


def effect_qini(score: ArrayLike, effect: ArrayLike, *, normalised: bool = True) -> float:
    """Qini of targeting by `score` measured with *known* per-customer effects.

    Why: on synthetic campaigns the true effect of every customer is known, so the value of
    a ranking need not be estimated from noisy outcomes. The curve is the cumulative true
    effect of the top ``k`` divided by n; the area is taken against the random line as
    above. ``normalised`` divides by the area of ranking by the effect itself (1 = oracle).
    """
    score = np.asarray(score, dtype=float)
    effect = np.asarray(effect, dtype=float)
    if score.shape != effect.shape or score.ndim != 1 or score.size == 0:
        raise ConfigError("effect_qini: score and effect must be 1-d arrays of the same length")

    def area(order: np.ndarray) -> float:
        gain = np.concatenate([[0.0], np.cumsum(effect[order])]) / effect.size
        x = np.linspace(0.0, 1.0, effect.size + 1)
        return float(np.trapezoid(gain - x * gain[-1], x))

    value = area(np.argsort(-score, kind="stable"))
    if not normalised:
        return value
    best = area(np.argsort(-effect, kind="stable"))
    return value / best if best > 0 else math.nan


def _k_name(k: float) -> str:
    return f"uplift_at_{round(100 * k, 6):g}pct"


def _top_count(k: float, n: int) -> int:
    if not isinstance(k, int | float | np.floating) or not (math.isfinite(k) and 0 < k <= 1):
        raise ConfigError(f"k={k!r}: use the share targeted, a number in (0, 1] such as 0.1")
    return max(1, math.ceil(round(k * n, 9)))  # round: 0.3 * 10 is 3.0000000000000004


def _check(
    score: ArrayLike, treated: ArrayLike, outcome: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores as float, treated as bool, outcome as float, or an error saying what to fix."""
    try:
        s = np.asarray(score, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"score must be numbers (predicted uplift): {exc}") from None
    if s.ndim != 1:
        raise ConfigError(f"score must be one-dimensional, got shape {s.shape}")
    t, y = _check_arms(treated, outcome)
    if s.size != t.size:
        raise ConfigError(
            f"score has {s.size} rows but treated/outcome have {t.size}: pass one score per row"
        )
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise ConfigError(
            f"score has {bad.size} non-finite values (first at row {bad[0]}: {s[bad[0]]});"
            " fix the model or fill them before evaluating"
        )
    return s, t, y


def _check_arms(treated: ArrayLike, outcome: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(treated)
    if t.ndim != 1:
        raise CampaignLogError(f"treated must be one-dimensional, got shape {t.shape}")
    if t.dtype != bool:
        if t.dtype.kind not in "iuf" or not np.isin(t, (0, 1)).all():
            raise CampaignLogError(
                f"treated must be bool or 0/1, got values like {np.unique(t)[:5].tolist()}:"
                " map the arm column to treated = True / control = False"
            )
        t = t.astype(bool)
    try:
        y = np.asarray(outcome, dtype=float)
    except (TypeError, ValueError) as exc:
        raise CampaignLogError(f"outcome must be numbers (0/1 or an amount): {exc}") from None
    if y.shape != t.shape:
        raise ConfigError(
            f"treated has shape {t.shape} but outcome has {y.shape}: pass one value per row"
        )
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise CampaignLogError(
            f"outcome has {bad.size} missing or infinite values (first at row {bad[0]}):"
            " drop those rows or fill the outcome (e.g. 0 for no conversion)"
        )
    n_t = int(t.sum())
    if n_t == 0 or n_t == t.size:
        raise CampaignLogError(
            f"need both treated and control rows, got {n_t} treated and {t.size - n_t} control:"
            " uplift needs a control group (check the arm column and any filters)"
        )
    return t, y


def _knots(s: np.ndarray, t: np.ndarray, y: np.ndarray, gain) -> tuple[np.ndarray, np.ndarray]:
    """Cut sizes at the ends of tied-score blocks (with 0) and the curve there."""
    order = np.argsort(-s, kind="stable")
    s, t, y = s[order], t[order], y[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) + 1
    k = np.r_[0, ends]
    n_t = np.r_[0, np.cumsum(t)][k].astype(float)
    y_t = np.r_[0.0, np.cumsum(np.where(t, y, 0.0))][k]
    y_c = np.r_[0.0, np.cumsum(np.where(t, 0.0, y))][k]
    return k, gain(k.astype(float), n_t, y_t, k - n_t, y_c)


def _uplift_gain(k, n_t, y_t, n_c, y_c) -> np.ndarray:
    mean_t = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t > 0)
    mean_c = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    return (mean_t - mean_c) * k


def _qini_gain(k, n_t, y_t, n_c, y_c) -> np.ndarray:
    return y_t - np.divide(y_c * n_t, n_c, out=np.zeros_like(y_c), where=n_c > 0)


def _on_every_row(k: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    every = np.arange(n + 1)
    return every / n, np.interp(every, k, values)


def _excess_area(k: np.ndarray, values: np.ndarray, n: int) -> float:
    """Trapezoid area above the random line, fraction on the x-axis, divided by ``n``."""
    area = float(np.sum(np.diff(k / n) * (values[1:] + values[:-1]) / 2))
    return (area - float(values[-1]) / 2) / n


def _perfect_uplift_score(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """scikit-uplift's ``perfect_uplift_curve`` ordering, the outcome rescaled to [0, 1].

    For 0/1 outcomes: treated responders, then control non-responders, then treated
    non-responders and control responders in the order that helps more.
    """
    low, high = float(y.min()), float(y.max())
    r = (y - low) / (high - low) if high > low else np.zeros_like(y)
    agrees = np.where(t, r, 1.0 - r)  # 1 for treated responders and control non-responders
    control_responders, treated_non_responders = r[~t].sum(), (1.0 - r[t]).sum()
    summand = r if control_responders > treated_non_responders else t.astype(float)
    return 2.0 * agrees + summand


def _ratio(area: float, perfect: float, name: str) -> float:
    if not perfect > 0:
        warnings.warn(
            f"normalised {name} is NaN: the perfect curve is not above the random line"
            f" (area {perfect:.3g}), e.g. the outcome is constant; report the raw value",
            CampaignWarning,
            stacklevel=3,
        )
        return math.nan
    return area / perfect
