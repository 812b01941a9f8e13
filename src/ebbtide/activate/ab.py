"""A/B numbers of a campaign: each arm against control, per outcome, plus a sample-ratio check.

Why these tests: they are the ones an analyst would check by hand, and they come from
statsmodels and scipy, not from formulas of ours, so every number can be reproduced there.

- **Binary outcomes** (all values 0/1): difference of rates ``p_arm − p_control`` with an
  unpooled Wald interval, ``diff ± z·sqrt(p₁(1−p₁)/n₁ + p₀(1−p₀)/n₀)`` (statsmodels
  ``confint_proportions_2indep(method="wald", compare="diff")``), and the two-sided p-value of
  the pooled two-proportion z-test (statsmodels ``proportions_ztest``, equal to
  ``test_proportions_2indep(method="score", compare="diff", correction=False)``). The pooled
  test is the classic A/B test under the null of equal rates; the unpooled interval is the
  one that is right away from it, so the two may disagree when p is close to ``alpha``.
- **Continuous outcomes** (e.g. spend, refunds included): Welch's t-test and interval
  (statsmodels ``CompareMeans.ttest_ind`` and ``tconfint_diff`` with ``usevar="unequal"``,
  the same numbers as ``scipy.stats.ttest_ind(arm, control, equal_var=False)``), which does
  not assume equal variances across arms.
- **Relative difference** ``mean_arm / mean_control − 1`` with a delta-method normal interval,
  ``Var ≈ se₁²/m₀² + m₁²·se₀²/m₀⁴`` (ours: statsmodels' ratio intervals are for two
  proportions only and on the log scale, and one method for rates and means keeps the column
  comparable).
- **Several arms**: Holm-adjusted p-values across arms, per outcome (statsmodels
  ``multipletests(method="holm")``; a NaN p-value is left out of the family).
- **Sample-ratio mismatch (SRM)**: chi-square goodness of fit of arm counts against the
  planned shares (``scipy.stats.chisquare``; the logged propensities when they are fixed per
  arm); for targeted logs, whose propensities vary per user, an inverse-propensity count per
  arm instead (see `_srm`). ``p < 0.001`` means assignment or logging broke and no effect in
  the table should be trusted until that is explained.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from ebbtide.activate.campaign_log import CampaignData
from ebbtide.errors import CampaignWarning, ConfigError
from ebbtide.jsonable import to_jsonable

__all__ = ["COLUMNS", "SRM_THRESHOLD", "ABResult", "analyze_ab", "holm_adjust", "metric_name"]

#: SRM is flagged below this chi-square p-value (the usual, deliberately strict, level).
SRM_THRESHOLD = 0.001
#: Continuous outcomes whose name contains one of these read as revenue.
_REVENUE_WORDS = ("spend", "revenue", "sales", "amount", "gmv")
#: Below this many rows per arm the normal approximations are shaky (a warning, not NaN).
_SMALL_ARM = 30

COLUMNS = [
    "arm",
    "outcome",
    "metric",
    "test",
    "n_control",
    "n_arm",
    "mean_control",
    "mean_arm",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "rel_diff",
    "rel_diff_ci_low",
    "rel_diff_ci_high",
    "statistic",
    "df",
    "p_value",
    "p_value_holm",
]


@dataclass(frozen=True)
class ABResult:
    """Per arm × outcome effects against control, and the sample-ratio check.

    Attributes
    ----------
    table : DataFrame
        One row per treatment arm × outcome; columns in `COLUMNS` (``diff`` = arm − control,
        ``rel_diff`` = arm / control − 1, intervals at ``1 − alpha``).
    srm : dict
        ``method, chi2, df, p_value, srm_detected, threshold, observed, expected,
        expected_shares``; for targeted logs (propensities varying within arms) also
        ``ipw_counts`` and ``z`` per arm, and ``chi2`` is NaN (see `_srm`).
    control : str
    alpha : float
    notes : list of str
        Every warning raised while computing the table, for reports.
    """

    table: pd.DataFrame
    srm: dict[str, Any]
    control: str
    alpha: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain Python numbers, NaN as None."""
        return to_jsonable(
            {
                "control": self.control,
                "alpha": self.alpha,
                "table": self.table.to_dict(orient="records"),
                "srm": self.srm,
                "notes": list(self.notes),
            }
        )

    def to_markdown(self, digits: int = 4) -> str:
        """A Markdown table (one line per arm × outcome), the SRM line and the notes."""
        level = f"{1 - self.alpha:.0%}"
        header = [
            "arm",
            "metric",
            "n_control",
            "n_arm",
            "control",
            "arm",
            f"diff ({level} CI)",
            f"relative ({level} CI)",
            "p",
            "p (Holm)",
            "test",
        ]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.table.itertuples(index=False):
            cells = [
                row.arm,
                row.metric,
                str(row.n_control),
                str(row.n_arm),
                _fmt(row.mean_control, digits),
                _fmt(row.mean_arm, digits),
                _interval(row.diff, row.diff_ci_low, row.diff_ci_high, digits),
                _interval(row.rel_diff, row.rel_diff_ci_low, row.rel_diff_ci_high, digits, True),
                _fmt(row.p_value, digits),
                _fmt(row.p_value_holm, digits),
                row.test,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        srm = self.srm
        verdict = "MISMATCH" if srm["srm_detected"] else "ok"
        lines += [
            "",
            f"Sample ratio ({srm['method']}): chi² = {_fmt(srm['chi2'], digits)}, "
            f"df = {srm['df']}, p = {_fmt(srm['p_value'], digits)} ({verdict}, threshold "
            f"{srm['threshold']}); observed {srm['observed']}",
        ]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def analyze_ab(
    data: CampaignData,
    *,
    expected_shares: Mapping[str, float] | None = None,
    alpha: float = 0.05,
) -> ABResult:
    """Compare each treatment arm with control on every outcome, and check the sample ratio.

    Parameters
    ----------
    data : CampaignData
        From `prepare_campaign`.
    expected_shares : dict of arm -> share, optional
        Planned assignment shares (every arm once, summing to 1 within 1e-6; rescaled to sum
        exactly 1) for the SRM check; default equal shares.
    alpha : float
        Intervals are ``1 − alpha``; in (0, 1).

    Returns
    -------
    ABResult

    Raises
    ------
    ConfigError
        ``alpha`` outside (0, 1) or ``expected_shares`` not matching the arms.

    Warns
    -----
    CampaignWarning
        Arms too small or outcomes without variation (those numbers are NaN), a control mean
        of 0 (relative difference NaN), small arms, a sample-ratio mismatch, or non-uniform
        logged propensities (the comparison is then confounded).

    Examples
    --------
    >>> from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign
    >>> from ebbtide.activate.campaign_log import prepare_campaign
    >>> log = generate_campaign(CampaignConfig(customers=3000, seed=1)).log
    >>> data = prepare_campaign(log, arm_col="arm", control="control", outcomes=["conversion"])
    >>> analyze_ab(data).table.metric.tolist()
    ['conversion_rate', 'conversion_rate']
    """
    if not isinstance(alpha, float | int) or not 0 < alpha < 1:
        raise ConfigError(f"alpha={alpha!r}: use a number in (0, 1), e.g. 0.05")
    alpha = float(alpha)
    notes: list[str] = []
    counts = data.arm_counts()
    for arm, n in counts.items():
        if 2 <= n < _SMALL_ARM:
            notes.append(
                f"arm {arm!r} has only {n} rows: the normal approximations behind the intervals"
                " are rough; collect more data before acting on it"
            )
    if data.propensity is not None:
        spread = pd.Series(data.propensity).groupby(data.arm).agg(lambda p: p.max() - p.min())
        if (spread > 1e-9).any():
            notes.append(
                "logged propensities vary within an arm: assignment was not uniformly random, so"
                " these raw differences are confounded; use estimate_policy_value (IPW/DR)"
            )

    control_mask = data.arm == data.control
    rows = []
    for outcome in data.outcomes:
        y = data.outcome_values(outcome)
        binary = bool(np.isin(y, (0.0, 1.0)).all())
        metric = metric_name(outcome, binary=binary)
        outcome_rows = []
        for arm in data.treatments:
            y_arm, y_control = y[data.arm == arm], y[control_mask]
            compare = _two_proportions if binary else _welch
            row = compare(y_arm, y_control, alpha, notes, f"{arm!r} on {outcome!r}")
            row.update(arm=arm, outcome=outcome, metric=metric)
            outcome_rows.append(row)
        adjusted = holm_adjust([row["p_value"] for row in outcome_rows])
        for row, p_holm in zip(outcome_rows, adjusted, strict=True):
            row["p_value_holm"] = p_holm
        rows += outcome_rows
    table = pd.DataFrame(rows, columns=COLUMNS)
    table[["n_control", "n_arm"]] = table[["n_control", "n_arm"]].astype(np.int64)

    srm = _srm(counts, expected_shares, data.arm, data.propensity)
    if srm["srm_detected"]:
        if "ipw_counts" in srm:
            counted = {k: round(v, 1) for k, v in srm["ipw_counts"].items()}
            expected = f"inverse-propensity counts {counted}, each expected near {len(data.arm)}"
        else:
            expected = f"expected { {k: round(v, 1) for k, v in srm['expected'].items()} }"
        notes.append(
            f"sample ratio mismatch: observed {srm['observed']} vs {expected} (p = "
            f"{srm['p_value']:.2g}, {srm['method']}); check assignment and logging before "
            "trusting any effect"
        )
    for note in notes:
        warnings.warn(note, CampaignWarning, stacklevel=2)
    return ABResult(table=table, srm=srm, control=data.control, alpha=alpha, notes=notes)


def metric_name(outcome: str, *, binary: bool) -> str:
    """Readable metric name: ``visit_rate``, ``conversion_rate``, ``revenue_per_user``...

    A binary outcome ``x`` is ``x_rate``; a continuous one is ``revenue_per_user`` when its
    name reads as money (spend, revenue, sales, amount, gmv), else ``x_per_user``.
    """
    if binary:
        return f"{outcome}_rate"
    if any(word in outcome.lower() for word in _REVENUE_WORDS):
        return "revenue_per_user"
    return f"{outcome}_per_user"


def holm_adjust(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaNs are left out of the family and stay NaN.

    statsmodels ``multipletests(method="holm")`` on the non-NaN values (it has no NaN rule).

    Examples
    --------
    >>> holm_adjust([0.01, float("nan"), 0.04, 0.03]).round(2).tolist()
    [0.03, nan, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        out[valid] = multipletests(p[valid], method="holm")[1]
    return out


def _empty_row(n_arm: int, n_control: int, mean_arm: float, mean_control: float) -> dict:
    return {
        "n_control": n_control,
        "n_arm": n_arm,
        "mean_control": mean_control,
        "mean_arm": mean_arm,
        "diff": mean_arm - mean_control,
        "diff_ci_low": math.nan,
        "diff_ci_high": math.nan,
        "rel_diff": math.nan,
        "rel_diff_ci_low": math.nan,
        "rel_diff_ci_high": math.nan,
        "statistic": math.nan,
        "df": math.nan,
        "p_value": math.nan,
    }


def _mean(y: np.ndarray) -> float:
    return float(y.mean()) if y.size else math.nan


def _too_small(y_arm: np.ndarray, y_control: np.ndarray, notes: list[str], what: str) -> bool:
    if y_arm.size >= 2 and y_control.size >= 2:
        return False
    notes.append(
        f"{what}: {y_arm.size} arm and {y_control.size} control rows; a test needs at least 2 "
        "in each, so its interval and p-value are NaN"
    )
    return True


def _two_proportions(
    y_arm: np.ndarray, y_control: np.ndarray, alpha: float, notes: list[str], what: str
) -> dict:
    """Rate difference, unpooled Wald interval, pooled z-test p-value."""
    n1, n0 = y_arm.size, y_control.size
    p1, p0 = _mean(y_arm), _mean(y_control)
    row = _empty_row(n1, n0, p1, p0)
    row["test"] = "two_proportion_z"
    if _too_small(y_arm, y_control, notes, what):
        return row
    x1, x0 = float(y_arm.sum()), float(y_control.sum())
    pooled = (x1 + x0) / (n1 + n0)
    if pooled in (0.0, 1.0):  # statsmodels would divide by a zero standard error
        notes.append(
            f"{what}: the outcome is {pooled:g} for every row in both groups; no test is "
            "possible, interval and p-value are NaN"
        )
        return row
    z, p_value = proportions_ztest([x1, x0], [n1, n0])
    low, high = confint_proportions_2indep(
        x1, n1, x0, n0, method="wald", compare="diff", alpha=alpha
    )
    row.update(
        diff_ci_low=float(low),
        diff_ci_high=float(high),
        statistic=float(z),
        p_value=float(p_value),
    )
    z_crit = stats.norm.ppf(1 - alpha / 2)
    var1, var0 = p1 * (1 - p1) / n1, p0 * (1 - p0) / n0
    row.update(_relative(p1, p0, var1, var0, z_crit, notes, what))
    return row


def _welch(
    y_arm: np.ndarray, y_control: np.ndarray, alpha: float, notes: list[str], what: str
) -> dict:
    """Welch t-test and interval for a difference in means."""
    m1, m0 = _mean(y_arm), _mean(y_control)
    row = _empty_row(y_arm.size, y_control.size, m1, m0)
    row["test"] = "welch_t"
    if _too_small(y_arm, y_control, notes, what):
        return row
    var1, var0 = y_arm.var(ddof=1) / y_arm.size, y_control.var(ddof=1) / y_control.size
    if var1 + var0 == 0:
        notes.append(
            f"{what}: no variation within either group (arm {m1:g}, control {m0:g}); the "
            "Welch test is undefined, interval and p-value are NaN"
        )
        return row
    compare = CompareMeans(DescrStatsW(y_arm), DescrStatsW(y_control))
    t, p_value, df = compare.ttest_ind(usevar="unequal")
    low, high = compare.tconfint_diff(alpha=alpha, usevar="unequal")
    row.update(
        diff_ci_low=float(low),
        diff_ci_high=float(high),
        statistic=float(t),
        df=float(df),
        p_value=float(p_value),
    )
    z_crit = stats.norm.ppf(1 - alpha / 2)
    row.update(_relative(m1, m0, var1, var0, z_crit, notes, what))
    return row


def _relative(
    m1: float, m0: float, var1: float, var0: float, z_crit: float, notes: list[str], what: str
) -> dict:
    """``m1/m0 − 1`` with a delta-method interval (var = squared standard errors of the means)."""
    if m0 == 0:
        notes.append(f"{what}: the control mean is 0, so the relative difference is NaN")
        return {}
    ratio = m1 / m0
    se = math.sqrt(var1 / m0**2 + m1**2 * var0 / m0**4)
    return {
        "rel_diff": ratio - 1,
        "rel_diff_ci_low": ratio - 1 - z_crit * se,
        "rel_diff_ci_high": ratio - 1 + z_crit * se,
    }


def _srm(
    counts: pd.Series,
    expected_shares: Mapping[str, float] | None,
    arm: np.ndarray,
    propensity: np.ndarray | None,
) -> dict[str, Any]:
    """Chi-square of arm counts against planned shares, or an inverse-propensity check.

    Planned shares are `expected_shares` when given; else the logged propensities when they
    are constant within each arm (a fixed unequal split); else equal shares. When logged
    propensities vary within arms (targeted assignment) no fixed share is right, so each arm
    is checked instead by its Horvitz-Thompson count ``N̂_k = Σ_{a_i=k} 1/p_i``, which
    estimates the number of rows n if assignment and logging are intact: ``z_k = (N̂_k −
    n) / sqrt(Σ_{a_i=k} (1 − p_i)/p_i²)``, two-sided normal p-values, Bonferroni over arms.
    """
    arms = list(counts.index)
    observed = counts.to_numpy(dtype=float)
    base = {
        "threshold": SRM_THRESHOLD,
        "observed": {name: int(n) for name, n in counts.items()},
    }
    if expected_shares is None and propensity is not None:
        by_arm = pd.Series(propensity).groupby(arm)
        if (by_arm.agg(lambda p: p.max() - p.min()) > 1e-9).any():
            return base | _propensity_srm(arms, arm, propensity)
        logged = by_arm.mean().reindex(arms)
        expected_shares = (logged / logged.sum()).to_dict()
        method = "chi-square against the logged propensities"
    elif expected_shares is None:
        expected_shares = {name: 1 / len(arms) for name in arms}
        method = "chi-square against equal shares"
    else:
        method = "chi-square against the given shares"
    shares = _check_shares(expected_shares, arms)
    expected = np.array([shares[name] for name in arms]) * observed.sum()
    chi2, p_value = stats.chisquare(observed, expected)
    return base | {
        "method": method,
        "chi2": float(chi2),
        "df": len(arms) - 1,
        "p_value": float(p_value),
        "srm_detected": bool(p_value < SRM_THRESHOLD),
        "expected": {name: float(e) for name, e in zip(arms, expected, strict=True)},
        "expected_shares": shares,
    }


def _propensity_srm(arms: list[str], arm: np.ndarray, propensity: np.ndarray) -> dict[str, Any]:
    n = arm.size
    z, totals = {}, {}
    for name in arms:
        p = propensity[arm == name]
        totals[name] = float((1.0 / p).sum())
        variance = float(((1.0 - p) / p**2).sum())
        z[name] = (totals[name] - n) / math.sqrt(variance) if variance > 0 else 0.0
    worst = max(abs(value) for value in z.values())
    p_value = min(1.0, len(arms) * 2 * float(stats.norm.sf(worst)))
    return {
        "method": "inverse-propensity counts per arm (Bonferroni)",
        "chi2": math.nan,
        "df": len(arms) - 1,
        "p_value": p_value,
        "srm_detected": bool(p_value < SRM_THRESHOLD),
        "expected": {name: float(n) for name in arms},
        "ipw_counts": totals,
        "z": z,
        "expected_shares": None,
    }


def _check_shares(expected_shares: Mapping[str, float], arms: list[str]) -> dict[str, float]:
    given = {str(arm): share for arm, share in dict(expected_shares).items()}
    if set(given) != set(arms):
        raise ConfigError(
            f"expected_shares has arms {sorted(given)}, the log has {arms}; give one share "
            "per analysed arm"
        )
    try:
        values = np.array([float(given[arm]) for arm in arms])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expected_shares={given}: every share must be a number ({exc})") from exc
    if not np.isfinite(values).all() or (values <= 0).any() or abs(values.sum() - 1) > 1e-6:
        raise ConfigError(
            f"expected_shares={given}: use positive shares that sum to 1 "
            f"(these sum to {values.sum():g})"
        )
    # Rescale away the tolerated rounding (e.g. 0.3333333 × 3): scipy's chisquare rejects
    # expected counts whose total differs from the observed one by more than ~1e-8.
    values = values / values.sum()
    return {arm: float(share) for arm, share in zip(arms, values, strict=True)}


def _fmt(value: float, digits: int, *, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if pct:
        return f"{value:+.{max(digits - 2, 1)}%}"
    return f"{value:.{digits}g}"


def _interval(value: float, low: float, high: float, digits: int, pct: bool = False) -> str:
    value_text, low_text, high_text = (_fmt(v, digits, pct=pct) for v in (value, low, high))
    return f"{value_text} [{low_text}, {high_text}]"
