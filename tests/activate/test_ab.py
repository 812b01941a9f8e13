"""A/B table: every number reproducible with scipy/statsmodels, edge cases warn instead of crash."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from ebbtide.activate.ab import (
    COLUMNS,
    SRM_THRESHOLD,
    ABResult,
    analyze_ab,
    holm_adjust,
    metric_name,
)
from ebbtide.activate.campaign_log import CampaignData, prepare_campaign
from ebbtide.errors import CampaignWarning, ConfigError
from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign

Z95 = stats.norm.ppf(0.975)


def _prepare(frame: pd.DataFrame, outcomes, **kwargs) -> CampaignData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        return prepare_campaign(
            frame, arm_col="arm", control="control", outcomes=outcomes, **kwargs
        )


def _quiet_ab(data: CampaignData, **kwargs) -> ABResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        return analyze_ab(data, **kwargs)


def _warned_ab(data: CampaignData, **kwargs) -> tuple[ABResult, str]:
    """The result and every CampaignWarning message it raised, joined."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = analyze_ab(data, **kwargs)
    messages = [str(w.message) for w in record if issubclass(w.category, CampaignWarning)]
    assert messages == result.notes  # every note is also raised, and nothing else
    return result, " | ".join(messages)


@pytest.fixture(scope="module")
def campaign_data() -> CampaignData:
    """A randomised 3-arm synthetic campaign, binary and continuous outcomes."""
    log = generate_campaign(CampaignConfig(customers=6000, seed=7)).log
    return _prepare(log, ["visit", "conversion", "spend"])


@pytest.fixture(scope="module")
def campaign_result(campaign_data: CampaignData) -> ABResult:
    return analyze_ab(campaign_data, alpha=0.1)


def _small_frame() -> pd.DataFrame:
    """Control 2/10 converted, push 5/10, coupon 3/12; spend with unequal variances."""
    conversion = [1, 1] + [0] * 8 + [1] * 5 + [0] * 5 + [1] * 3 + [0] * 9
    spend_control = [3.0, 5.0, 0.0, 1.0, 2.0, 0.5, 0.0, 4.0, 1.5, 0.0]
    spend_push = [10.0, 0.0, 8.0, 7.5, 0.0, 12.0, 3.0, 0.0, 9.0, 1.0]
    spend_coupon = [2.0, 2.5, 0.0, 6.0, 1.0, 0.0, 4.0, 3.5, 0.0, 2.0, 1.0, 5.0]
    spend = [*spend_control, *spend_push, *spend_coupon]
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(32)],
            "arm": ["control"] * 10 + ["push"] * 10 + ["coupon"] * 12,
            "conversion": conversion,
            "spend": spend,
        }
    )


def _row(result: ABResult, arm: str, outcome: str) -> pd.Series:
    table = result.table
    pick = table[(table.arm == arm) & (table.outcome == outcome)]
    assert len(pick) == 1
    return pick.iloc[0]


def _check_against_references(data: CampaignData, result: ABResult) -> None:
    """Every row of the table against statsmodels / scipy on the same split."""
    alpha = result.alpha
    control = data.arm == data.control
    for outcome in data.outcomes:
        y = data.outcome_values(outcome)
        for arm in data.treatments:
            row = _row(result, arm, outcome)
            y1, y0 = y[data.arm == arm], y[control]
            if row.test == "two_proportion_z":
                low, high = confint_proportions_2indep(
                    y1.sum(),
                    y1.size,
                    y0.sum(),
                    y0.size,
                    method="wald",
                    compare="diff",
                    alpha=alpha,
                )
                z, p = proportions_ztest([y1.sum(), y0.sum()], [y1.size, y0.size])
                assert row.diff_ci_low == pytest.approx(low, rel=1e-9, abs=1e-12)
                assert row.diff_ci_high == pytest.approx(high, rel=1e-9, abs=1e-12)
                assert row.statistic == pytest.approx(z, rel=1e-9)
                assert row.p_value == pytest.approx(p, rel=1e-9)
            else:
                assert row.test == "welch_t"
                ref = stats.ttest_ind(y1, y0, equal_var=False)
                ci = ref.confidence_interval(confidence_level=1 - alpha)
                assert row.statistic == pytest.approx(ref.statistic, rel=1e-9)
                assert row.df == pytest.approx(ref.df, rel=1e-9)
                assert row.p_value == pytest.approx(ref.pvalue, rel=1e-9)
                assert row.diff_ci_low == pytest.approx(ci.low, rel=1e-9)
                assert row.diff_ci_high == pytest.approx(ci.high, rel=1e-9)
                means = CompareMeans(DescrStatsW(y1), DescrStatsW(y0))
                t, p, df = means.ttest_ind(usevar="unequal")
                low, high = means.tconfint_diff(alpha=alpha, usevar="unequal")
                assert (row.statistic, row.p_value, row.df) == pytest.approx((t, p, df), rel=1e-12)
                assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((low, high), rel=1e-12)
            assert row.n_arm == y1.size and row.n_control == y0.size
            assert row["diff"] == pytest.approx(y1.mean() - y0.mean(), rel=1e-12, abs=1e-15)
        table = result.table[result.table.outcome == outcome]
        expected_holm = multipletests(table.p_value.to_numpy(), method="holm")[1]
        np.testing.assert_allclose(table.p_value_holm.to_numpy(), expected_holm, rtol=1e-12)


# --- against the references ----------------------------------------------------------------------


def test_synthetic_campaign_matches_statsmodels_and_scipy(
    campaign_data: CampaignData, campaign_result: ABResult
) -> None:
    """Both binary outcomes and spend, 2 arms each, at a non-default alpha."""
    table = campaign_result.table
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 3
    assert set(table.test) == {"two_proportion_z", "welch_t"}
    assert table.set_index("outcome").metric.to_dict() == {
        "visit": "visit_rate",
        "conversion": "conversion_rate",
        "spend": "revenue_per_user",
    }
    _check_against_references(campaign_data, campaign_result)


def test_small_frame_matches_statsmodels_and_scipy() -> None:
    data = _prepare(_small_frame(), ["conversion", "spend"])
    result, messages = _warned_ab(data)
    assert "'push' has only 10 rows" in messages and "'coupon' has only 12 rows" in messages
    _check_against_references(data, result)


def test_hand_computed_rates_and_delta_method() -> None:
    """Push 5/10 vs control 2/10, worked out on paper."""
    data = _prepare(_small_frame(), ["conversion"])
    result = _quiet_ab(data)
    row = _row(result, "push", "conversion")
    assert (row.mean_arm, row.mean_control) == (0.5, 0.2)
    assert row["diff"] == pytest.approx(0.3)
    # se = sqrt(0.5·0.5/10 + 0.2·0.8/10) = sqrt(0.041)
    assert row.diff_ci_low == pytest.approx(0.3 - Z95 * math.sqrt(0.041))
    assert row.diff_ci_high == pytest.approx(0.3 + Z95 * math.sqrt(0.041))
    # pooled p = 7/20, z = 0.3 / sqrt(0.35·0.65·(1/10 + 1/10))
    assert row.statistic == pytest.approx(0.3 / math.sqrt(0.35 * 0.65 * 0.2))
    # relative: 0.5/0.2 − 1 = 1.5; var = 0.025/0.2² + 0.5²·0.016/0.2⁴ = 0.625 + 2.5
    assert row.rel_diff == pytest.approx(1.5)
    assert row.rel_diff_ci_low == pytest.approx(1.5 - Z95 * math.sqrt(3.125))
    assert row.rel_diff_ci_high == pytest.approx(1.5 + Z95 * math.sqrt(3.125))


def test_hand_computed_relative_diff_for_means() -> None:
    """Welch rows use the same delta method with the sample standard errors."""
    data = _prepare(_small_frame(), ["spend"])
    row = _row(_quiet_ab(data), "coupon", "spend")
    frame = _small_frame()
    y1 = frame.spend[frame.arm == "coupon"].to_numpy()
    y0 = frame.spend[frame.arm == "control"].to_numpy()
    m1, m0 = y1.mean(), y0.mean()
    se = math.sqrt(y1.var(ddof=1) / 12 / m0**2 + m1**2 * y0.var(ddof=1) / 10 / m0**4)
    assert row.rel_diff == pytest.approx(m1 / m0 - 1)
    assert row.rel_diff_ci_low == pytest.approx(m1 / m0 - 1 - Z95 * se)
    assert row.rel_diff_ci_high == pytest.approx(m1 / m0 - 1 + Z95 * se)


def test_holm_matches_statsmodels() -> None:
    rng = np.random.default_rng(3)
    for size in (1, 2, 5, 9):
        p = rng.uniform(0, 0.2, size)
        np.testing.assert_allclose(holm_adjust(p), multipletests(p, method="holm")[1], rtol=1e-12)
    ties = [0.01, 0.01, 0.5, 0.4]
    np.testing.assert_allclose(holm_adjust(ties), multipletests(ties, method="holm")[1])


def test_holm_leaves_nan_out_of_the_family() -> None:
    """A NaN p-value (no test possible) neither counts as a test nor gets a value."""
    p = np.array([0.01, np.nan, 0.04, 0.03])
    adjusted = holm_adjust(p)
    assert np.isnan(adjusted[1])
    valid = ~np.isnan(p)
    np.testing.assert_allclose(adjusted[valid], multipletests(p[valid], method="holm")[1])
    np.testing.assert_allclose(adjusted[valid], [0.03, 0.06, 0.06])
    assert np.isnan(holm_adjust([np.nan, np.nan])).all()


def test_srm_matches_scipy_default_and_custom_shares(campaign_data: CampaignData) -> None:
    counts = campaign_data.arm_counts()
    observed = counts.to_numpy()
    default = _quiet_ab(campaign_data).srm
    chi2, p = stats.chisquare(observed)
    assert default["chi2"] == pytest.approx(chi2, rel=1e-12)
    assert default["p_value"] == pytest.approx(p, rel=1e-12)
    assert default["df"] == 2
    assert default["observed"] == counts.to_dict()

    shares = {"control": 0.2, "push": 0.3, "coupon": 0.5}
    custom = _quiet_ab(campaign_data, expected_shares=shares).srm
    expected = np.array([shares[arm] for arm in counts.index]) * observed.sum()
    chi2, p = stats.chisquare(observed, expected)
    assert custom["chi2"] == pytest.approx(chi2, rel=1e-12)
    assert custom["p_value"] == pytest.approx(p, rel=1e-12)
    assert custom["expected"] == pytest.approx(dict(zip(counts.index, expected, strict=True)))
    assert custom["srm_detected"]  # an equal split is far from 20/30/50


def test_shares_rounded_to_seven_digits_are_accepted(campaign_data: CampaignData) -> None:
    """0.3333333 × 3 is within tolerance; it must not trip scipy's own sum check."""
    third = 0.3333333
    srm = _quiet_ab(
        campaign_data, expected_shares={"control": third, "push": third, "coupon": third}
    ).srm
    assert srm["chi2"] == pytest.approx(stats.chisquare(campaign_data.arm_counts()).statistic)


# --- sample ratio mismatch ---------------------------------------------------------------------


def _split(n_control: int, n_push: int, seed: int = 0) -> CampaignData:
    rng = np.random.default_rng(seed)
    n = n_control + n_push
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "arm": ["control"] * n_control + ["push"] * n_push,
            "conversion": (rng.random(n) < 0.1).astype(int),
        }
    )
    return _prepare(frame, ["conversion"])


def test_srm_detected_on_a_skewed_split() -> None:
    with pytest.warns(CampaignWarning, match="sample ratio mismatch"):
        result = analyze_ab(_split(1800, 1200))
    assert result.srm["srm_detected"]
    assert result.srm["p_value"] < 1e-6
    assert any("sample ratio mismatch" in note for note in result.notes)


def test_skewed_split_is_fine_when_planned() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CampaignWarning)
        result = analyze_ab(_split(1800, 1200), expected_shares={"control": 0.6, "push": 0.4})
    assert not result.srm["srm_detected"]
    assert result.srm["chi2"] == pytest.approx(0.0, abs=1e-12)


def test_no_srm_on_a_balanced_split() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CampaignWarning)
        result = analyze_ab(_split(1510, 1490))
    assert not result.srm["srm_detected"]
    assert result.srm["p_value"] > 0.5
    assert result.notes == []


# --- edge cases ----------------------------------------------------------------------------------


def test_constant_outcome_gives_nan_and_a_warning() -> None:
    frame = _small_frame().assign(conversion=0, spend=2.5)
    data = _prepare(frame, ["conversion", "spend"])
    result, messages = _warned_ab(data)
    assert "no test is possible" in messages
    assert "no variation within either group" in messages
    table = result.table
    for column in ("diff_ci_low", "diff_ci_high", "p_value", "p_value_holm", "rel_diff"):
        assert table[column].isna().all(), column
    assert (table["diff"] == 0).all()


def test_constant_but_different_means_still_nan() -> None:
    """Spend 1 in control, 3 in push, no spread: Welch undefined, not a crash or p = 0."""
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(8)],
            "arm": ["control"] * 4 + ["push"] * 4,
            "spend": [1.0] * 4 + [3.0] * 4,
        }
    )
    result, messages = _warned_ab(_prepare(frame, ["spend"]))
    assert "no variation within either group (arm 3, control 1)" in messages
    row = result.table.iloc[0]
    assert row["diff"] == 2.0
    assert math.isnan(row.p_value) and math.isnan(row.diff_ci_low)


def test_control_mean_zero_gives_nan_relative() -> None:
    frame = _small_frame()
    frame.loc[frame.arm == "control", ["conversion", "spend"]] = 0
    data = _prepare(frame, ["conversion", "spend"])
    result, messages = _warned_ab(data)
    assert messages.count("the control mean is 0") == 4  # 2 arms × 2 outcomes
    table = result.table
    assert table.rel_diff.isna().all() and table.rel_diff_ci_low.isna().all()
    # The absolute comparison is still made.
    assert table.p_value.notna().all()
    assert (table.p_value < 0.05).any()


def test_arm_with_one_row_gives_nan_and_a_warning() -> None:
    frame = _small_frame().iloc[:21]  # control 10, push 10, coupon 1
    data = _prepare(frame, ["conversion", "spend"])
    result, messages = _warned_ab(data)
    assert messages.count("'coupon' on") == 2
    assert "1 arm and 10 control rows" in messages
    coupon = result.table[result.table.arm == "coupon"]
    assert coupon.p_value.isna().all() and coupon.diff_ci_low.isna().all()
    assert coupon.p_value_holm.isna().all()
    push = result.table[result.table.arm == "push"]
    # Holm for push is over a family of one: unadjusted.
    np.testing.assert_allclose(push.p_value_holm, push.p_value)


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, "0.05", None, math.nan])
def test_bad_alpha_is_a_config_error(campaign_data: CampaignData, alpha) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        analyze_ab(campaign_data, alpha=alpha)


@pytest.mark.parametrize(
    "shares",
    [
        {"control": 0.5, "push": 0.5},  # an arm missing
        {"control": 0.25, "push": 0.25, "coupon": 0.25, "email": 0.25},  # an unknown arm
        {"control": 0.5, "push": 0.5, "coupon": 0.0},
        {"control": 0.6, "push": 0.6, "coupon": -0.2},
        {"control": 0.4, "push": 0.4, "coupon": 0.4},
        {"control": math.nan, "push": 0.5, "coupon": 0.5},
        {"control": "half", "push": 0.25, "coupon": 0.25},
    ],
)
def test_bad_expected_shares_are_a_config_error(campaign_data: CampaignData, shares) -> None:
    with pytest.raises(ConfigError, match="expected_shares"):
        _quiet_ab(campaign_data, expected_shares=shares)


def test_varying_propensities_warn_about_confounding() -> None:
    log = generate_campaign(CampaignConfig(customers=3000, seed=2, targeted=True)).log
    data = _prepare(log, ["conversion"], propensity_col="propensity")
    with pytest.warns(CampaignWarning, match="confounded"):
        analyze_ab(data)


def test_constant_propensities_do_not_warn() -> None:
    """Unequal but fixed shares are still a randomised test."""
    log = generate_campaign(CampaignConfig(customers=3000, seed=2, shares=(0.5, 0.25, 0.25))).log
    data = _prepare(log, ["conversion"], propensity_col="propensity")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CampaignWarning)
        analyze_ab(data, expected_shares={"control": 0.5, "push": 0.25, "coupon": 0.25})


def test_metric_names() -> None:
    assert metric_name("visit", binary=True) == "visit_rate"
    assert metric_name("Total_Revenue", binary=False) == "revenue_per_user"
    assert metric_name("sessions", binary=False) == "sessions_per_user"


# --- output --------------------------------------------------------------------------------------


def test_to_dict_is_strict_json(campaign_result: ABResult) -> None:
    text = json.dumps(campaign_result.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert len(back["table"]) == len(campaign_result.table)
    assert back["srm"]["observed"] == campaign_result.srm["observed"]
    assert back["alpha"] == 0.1


def test_to_dict_turns_nan_into_null() -> None:
    frame = _small_frame().iloc[:21]
    result = _quiet_ab(_prepare(frame, ["conversion", "spend"]))
    text = json.dumps(result.to_dict(), allow_nan=False)
    coupon = [row for row in json.loads(text)["table"] if row["arm"] == "coupon"]
    assert coupon and all(row["p_value"] is None for row in coupon)
    assert any(note for note in json.loads(text)["notes"])


def test_to_markdown_lists_every_arm_and_the_srm_line(campaign_result: ABResult) -> None:
    text = campaign_result.to_markdown()
    lines = text.splitlines()
    body = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert len(body) == len(campaign_result.table)
    for arm in ("push", "coupon"):
        assert sum(line.startswith(f"| {arm} |") for line in body) == 3
    assert "90% CI" in lines[0]
    assert any(line.startswith("Sample ratio (chi-square against equal shares):") for line in lines)


def test_to_markdown_shows_missing_numbers_as_dashes() -> None:
    frame = _small_frame().iloc[:21]
    text = _quiet_ab(_prepare(frame, ["conversion"])).to_markdown()
    coupon = next(line for line in text.splitlines() if line.startswith("| coupon |"))
    assert "–" in coupon and "nan" not in coupon.lower()


def test_fixed_unequal_propensities_are_the_planned_shares() -> None:
    frame = _split(1800, 1200).frame.assign(p=lambda f: np.where(f.arm == "control", 0.6, 0.4))
    data = prepare_campaign(
        frame, arm_col="arm", control="control", outcomes=["conversion"], propensity_col="p"
    )
    result = analyze_ab(data)
    assert result.srm["method"] == "chi-square against the logged propensities"
    assert not result.srm["srm_detected"]


def _targeted(drop_coupon: float = 0.0) -> CampaignData:
    log = generate_campaign(CampaignConfig(customers=20_000, seed=5, targeted=True)).log
    if drop_coupon:
        coupon = np.flatnonzero(log.arm == "coupon")
        lost = np.random.default_rng(0).choice(coupon, int(drop_coupon * coupon.size), False)
        log = log.drop(index=log.index[lost])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        return prepare_campaign(
            log, arm_col="arm", control="control", outcomes=["conversion"],
            propensity_col="propensity",
        )  # fmt: skip


def test_targeted_logs_are_checked_by_inverse_propensity_counts() -> None:
    # equal shares would flag a targeted split; its own propensities explain it
    intact = _targeted()
    assert stats.chisquare(intact.arm_counts()).pvalue < SRM_THRESHOLD
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        srm = analyze_ab(intact).srm
    assert srm["method"].startswith("inverse-propensity") and not srm["srm_detected"]
    n = len(intact.arm)
    for arm, total in srm["ipw_counts"].items():
        p = intact.propensity[intact.arm == arm]
        assert total == pytest.approx((1 / p).sum()) and abs(total - n) < 0.1 * n
    # losing 8% of one arm's rows in logging is caught
    with pytest.warns(CampaignWarning, match="sample ratio mismatch"):
        broken = analyze_ab(_targeted(drop_coupon=0.08)).srm
    assert broken["srm_detected"] and broken["z"]["coupon"] < -3


def test_interval_is_statsmodels_wald_not_its_default_newcombe() -> None:
    """statsmodels' default interval for a difference of proportions is Newcombe's; ours is
    the documented unpooled Wald one. Numbers: 30/200 visits vs 18/210 in control."""
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(410)],
            "arm": ["mail"] * 200 + ["control"] * 210,
            "visit": [1] * 30 + [0] * 170 + [1] * 18 + [0] * 192,
        }
    )
    row = _row(_quiet_ab(_prepare(frame, ["visit"])), "mail", "visit")
    p1, p0 = 30 / 200, 18 / 210
    se = math.sqrt(p1 * (1 - p1) / 200 + p0 * (1 - p0) / 210)
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx(
        (p1 - p0 - Z95 * se, p1 - p0 + Z95 * se), rel=1e-9
    )
    wald = confint_proportions_2indep(30, 200, 18, 210, method="wald", compare="diff")
    newcombe = confint_proportions_2indep(30, 200, 18, 210, compare="diff")
    assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx(wald, rel=1e-12)
    assert abs(row.diff_ci_low - newcombe[0]) > 1e-4  # a different method, visibly
    z, p = proportions_ztest([30, 18], [200, 210])
    assert (row.statistic, row.p_value) == pytest.approx((z, p), rel=1e-12)
    assert row.p_value == pytest.approx(0.0430, abs=1e-4)


def test_statsmodels_is_a_runtime_dependency() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads(
        (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    )["project"]
    assert any(dep.startswith("statsmodels") for dep in project["dependencies"])
