"""Off-policy value of a plan: intervals that cover the true value, numbers checkable by hand."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from ebbtide.activate.campaign_log import CampaignData, prepare_campaign
from ebbtide.activate.off_policy import ESTIMATORS, PolicyValue, estimate_policy_value
from ebbtide.errors import CampaignLogError, CampaignWarning, ConfigError
from ebbtide.synthetic_campaigns import CampaignConfig, SyntheticCampaign, generate_campaign

#: Estimators that target the plan's value (the other two rows are references).
PLAN_ESTIMATORS = ("ipw", "snipw", "dr")
COVERAGE_REPS = 60
COVERAGE_CUSTOMERS = 3000


def _prepare(log: pd.DataFrame, outcomes, propensity: bool = False) -> CampaignData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        return prepare_campaign(
            log,
            arm_col="arm",
            control="control",
            outcomes=outcomes,
            propensity_col="propensity" if propensity else None,
        )


def _estimate(data: CampaignData, outcome: str, policy, **kwargs) -> PolicyValue:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        return estimate_policy_value(data, outcome, policy, **kwargs)


def _plan(log: pd.DataFrame) -> np.ndarray:
    """Coupon to fading customers, push to push-channel ones, the rest left alone."""
    return np.where(
        log.interest_trend < -0.5,
        "coupon",
        np.where(log.channel == "push", "push", "control"),
    )


def _campaign(seed: int, targeted: bool, customers: int = COVERAGE_CUSTOMERS) -> SyntheticCampaign:
    return generate_campaign(CampaignConfig(customers=customers, seed=seed, targeted=targeted))


# --- coverage of the true value ------------------------------------------------------------------


@pytest.fixture(scope="module")
def coverage_runs() -> pd.DataFrame:
    """One row per repetition × design × outcome × estimator: estimate, interval, truth.

    Randomised logs use empirical arm shares; targeted logs their logged propensities.
    """
    rows = []
    for rep in range(COVERAGE_REPS):
        for targeted in (False, True):
            campaign = _campaign(10_000 + rep, targeted)
            data = _prepare(campaign.log, ["conversion", "spend"], propensity=targeted)
            plan = _plan(data.frame)
            for outcome in ("conversion", "spend"):
                truth = campaign.policy_value(plan, outcome)
                result = _estimate(data, outcome, plan, n_bootstrap=200, seed=rep)
                for row in result.table.itertuples(index=False):
                    if row.estimator in PLAN_ESTIMATORS:
                        rows.append(
                            {
                                "design": "targeted" if targeted else "randomised",
                                "outcome": outcome,
                                "estimator": row.estimator,
                                "truth": truth,
                                "value": row.value,
                                "low": row.ci_low,
                                "high": row.ci_high,
                            }
                        )
    runs = pd.DataFrame(rows)
    runs["covered"] = (runs.low <= runs.truth) & (runs.truth <= runs.high)
    return runs


@pytest.mark.parametrize("estimator", PLAN_ESTIMATORS)
def test_intervals_cover_the_true_plan_value(coverage_runs: pd.DataFrame, estimator: str) -> None:
    """The bar: 95% intervals cover the truth in >= 90% of fresh campaigns.

    240 intervals per estimator (60 campaigns × randomised/targeted × conversion/spend): a
    correct 95% interval falls below 90% here with probability ~0.1%, one that truly covers
    85% passes with ~2%. Per design the bound is looser (120 intervals each) but still catches
    an estimator that breaks on one kind of log, e.g. mishandled logged propensities.
    """
    runs = coverage_runs[coverage_runs.estimator == estimator]
    assert len(runs) == 2 * 2 * COVERAGE_REPS
    assert runs.covered.mean() >= 0.9, runs.groupby(["design", "outcome"]).covered.mean()
    per_design = runs.groupby("design").covered.mean()
    assert (per_design >= 0.85).all(), per_design.to_dict()


@pytest.mark.parametrize("estimator", PLAN_ESTIMATORS)
def test_intervals_are_not_just_wide(coverage_runs: pd.DataFrame, estimator: str) -> None:
    """Coverage is earned: widths match the spread of the estimates, and there is no bias.

    A 95% normal interval is about 3.92 standard deviations wide; the mean width over the
    repetitions should be that, within the noise of 60 repetitions.
    """
    runs = coverage_runs[coverage_runs.estimator == estimator]
    for (design, outcome), group in runs.groupby(["design", "outcome"]):
        error = group.value - group.truth
        width = (group.high - group.low).mean()
        assert 0.75 < width / (3.92 * error.std()) < 1.35, (design, outcome)
        assert abs(error.mean()) < 3.5 * error.std() / np.sqrt(len(error)), (design, outcome)


# --- hand computations ---------------------------------------------------------------------------


def _tiny_log(propensity: list[float] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(6)],
            "arm": ["control", "control", "push", "push", "coupon", "coupon"],
            "conversion": [1, 0, 1, 1, 0, 1],
        }
    )
    if propensity is not None:
        frame["propensity"] = propensity
    return frame


TINY_POLICY = np.array(["push", "control", "push", "coupon", "coupon", "control"])


def test_tiny_log_by_hand_with_empirical_shares() -> None:
    """Every arm is 2/6 of the log, so each matched row weighs 3.

    matched rows 1, 2, 4 with y = 0, 1, 0: IPW = (0 + 3 + 0)/6, SNIPW = 3/9; DR with per-arm
    means (control 0.5, push 1, coupon 0.5): mean q̂(π) = 4/6, correction (3·(−0.5) + 0 +
    3·(−0.5))/6 = −0.5.
    """
    data = _prepare(_tiny_log(), ["conversion"])
    result = _estimate(data, "conversion", TINY_POLICY, n_bootstrap=20)
    expected = {
        "ipw": 0.5,
        "snipw": 1 / 3,
        "dr": 4 / 6 - 0.5,
        "logged_mean": 4 / 6,
        "all_control": 0.5,
    }
    for estimator, value in expected.items():
        assert result.value(estimator) == pytest.approx(value), estimator
    assert result.n == 6 and result.n_matched == 3
    assert result.effective_n == pytest.approx(3.0)
    assert result.propensity_source == "empirical arm shares"
    assert result.outcome_model == "per-arm mean"


def _reference(y, arm, policy, p) -> dict[str, float]:
    """The module docstring's formulas, written out row by row."""
    n = len(y)
    arms = sorted(set(arm))
    mean = {k: np.mean([y[i] for i in range(n) if arm[i] == k]) for k in arms}
    w = [(arm[i] == policy[i]) / p[i] for i in range(n)]
    control = [i for i in range(n) if arm[i] == "control"]
    return {
        "ipw": sum(w[i] * y[i] for i in range(n)) / n,
        "snipw": sum(w[i] * y[i] for i in range(n)) / sum(w),
        "dr": sum(mean[policy[i]] + w[i] * (y[i] - mean[arm[i]]) for i in range(n)) / n,
        "logged_mean": sum(y) / n,
        "all_control": sum(y[i] / p[i] for i in control) / sum(1 / p[i] for i in control),
    }


def test_tiny_log_with_logged_propensities_matches_the_formulas() -> None:
    p = [0.5, 0.25, 0.4, 0.2, 0.5, 0.8]
    data = _prepare(_tiny_log(p), ["conversion"], propensity=True)
    result = _estimate(data, "conversion", TINY_POLICY, n_bootstrap=20)
    expected = _reference([1, 0, 1, 1, 0, 1], list(data.arm), list(TINY_POLICY), p)
    assert expected["ipw"] == pytest.approx((1 / 0.4) / 6)  # only row 2 is matched with y = 1
    for estimator in ESTIMATORS:
        assert result.value(estimator) == pytest.approx(expected[estimator]), estimator
    w = np.array([0, 1 / 0.25, 1 / 0.4, 0, 1 / 0.5, 0])
    assert result.effective_n == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert result.propensity_source == "logged"


def test_synthetic_log_matches_the_formulas() -> None:
    """Same check on a real-sized targeted log, spend as the outcome."""
    campaign = _campaign(3, targeted=True, customers=2000)
    data = _prepare(campaign.log, ["spend"], propensity=True)
    plan = _plan(data.frame)
    result = _estimate(data, "spend", plan, n_bootstrap=50)
    y = data.outcome_values("spend")
    expected = _reference(list(y), list(data.arm), list(plan), list(data.propensity))
    for estimator in ESTIMATORS:
        assert result.value(estimator) == pytest.approx(expected[estimator], rel=1e-9)


def test_tiny_log_warns_about_few_rows_and_thin_resamples() -> None:
    data = _prepare(_tiny_log(), ["conversion"])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = estimate_policy_value(data, "conversion", TINY_POLICY, n_bootstrap=200)
    messages = [str(w.message) for w in record if issubclass(w.category, CampaignWarning)]
    assert messages == result.notes
    assert any("only 3 rows follow the policy" in m for m in messages)
    assert any("resamples left" in m for m in messages)
    assert result.table[["ci_low", "ci_high"]].notna().all().all()


# --- reference policies --------------------------------------------------------------------------


@pytest.mark.parametrize("targeted", [False, True])
def test_all_control_policy_recovers_the_control_mean(targeted: bool) -> None:
    campaign = _campaign(5, targeted, customers=3000)
    data = _prepare(campaign.log, ["conversion"], propensity=targeted)
    y = data.outcome_values("conversion")
    control = data.arm == "control"
    result = _estimate(data, "conversion", np.full(len(y), "control"), n_bootstrap=100)
    if targeted:
        w = 1 / data.propensity[control]
        expected = float((w * y[control]).sum() / w.sum())
    else:
        expected = float(y[control].mean())
    # The self-normalised estimators are the (weighted) control mean exactly.
    for estimator in ("snipw", "all_control"):
        assert result.value(estimator) == pytest.approx(expected, rel=1e-12)
    if not targeted:
        for estimator in ("ipw", "dr"):
            assert result.value(estimator) == pytest.approx(expected, rel=1e-12)
    # ... and the "all control" row is the same whatever plan is asked about.
    other = _estimate(data, "conversion", _plan(data.frame), n_bootstrap=100)
    assert other.value("all_control") == pytest.approx(expected, rel=1e-12)
    # All of them estimate the true no-treatment value.
    truth = campaign.policy_value(np.full(len(y), "control"))
    table = result.table.set_index("estimator")
    for estimator in PLAN_ESTIMATORS:
        assert table.at[estimator, "ci_low"] <= truth <= table.at[estimator, "ci_high"]


def test_logged_mean_is_the_observed_mean_with_an_interval() -> None:
    campaign = _campaign(6, targeted=False, customers=3000)
    data = _prepare(campaign.log, ["spend"])
    result = _estimate(data, "spend", _plan(data.frame), n_bootstrap=300)
    y = data.outcome_values("spend")
    row = result.table.set_index("estimator").loc["logged_mean"]
    assert row.value == pytest.approx(y.mean(), rel=1e-12)
    half = 1.96 * y.std(ddof=1) / np.sqrt(y.size)
    assert row.ci_low == pytest.approx(y.mean() - half, rel=0.05)
    assert row.ci_high == pytest.approx(y.mean() + half, rel=0.05)


def test_a_plan_that_follows_the_log_everywhere_matches_the_logged_mean() -> None:
    """With equal arm shares, weighting every row by 3 and normalising gives back the plain
    mean: SNIPW of "what was logged" is the logged mean."""
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(9)],
            "arm": ["control", "push", "coupon"] * 3,
            "conversion": [1, 0, 0, 1, 1, 0, 0, 1, 1],
        }
    )
    data = _prepare(frame, ["conversion"])
    result = _estimate(data, "conversion", data.arm, n_bootstrap=20)
    assert result.value("snipw") == pytest.approx(result.value("logged_mean"))
    # IPW is not: the "plan" is the assignment itself, each arm's rows weigh 3 and all match.
    assert result.value("ipw") == pytest.approx(3 * 5 / 9)
    assert result.n_matched == 9


def test_bootstrap_width_matches_the_analytic_standard_error() -> None:
    """With logged propensities IPW is a plain mean of w·y, so its interval is known."""
    campaign = _campaign(8, targeted=True, customers=4000)
    data = _prepare(campaign.log, ["conversion"], propensity=True)
    plan = _plan(data.frame)
    result = _estimate(data, "conversion", plan, n_bootstrap=2000, seed=1)
    y = data.outcome_values("conversion")
    wy = (data.arm == plan) / data.propensity * y
    se = wy.std(ddof=1) / np.sqrt(wy.size)
    row = result.table.set_index("estimator").loc["ipw"]
    assert row.ci_high - row.ci_low == pytest.approx(2 * 1.96 * se, rel=0.08)
    assert row.ci_low < row.value < row.ci_high


# --- DR with an outcome model --------------------------------------------------------------------


def test_dr_with_features_covers_the_truth() -> None:
    campaign = _campaign(21, targeted=True, customers=4000)
    data = _prepare(campaign.log, ["conversion"], propensity=True)
    plan = _plan(data.frame)
    features = ["recency_days", "frequency", "monetary", "interest_trend", "channel"]
    result = _estimate(data, "conversion", plan, features=features, n_bootstrap=200, seed=2)
    assert "HistGradientBoostingRegressor" in result.outcome_model
    assert "channel" in result.outcome_model
    truth = campaign.policy_value(plan, "conversion")
    row = result.table.set_index("estimator").loc["dr"]
    assert row.ci_low <= truth <= row.ci_high
    # The model is used: the estimate differs from the per-arm-mean DR.
    plain = _estimate(data, "conversion", plan, n_bootstrap=10, seed=2)
    assert result.value("dr") != pytest.approx(plain.value("dr"), rel=1e-6)
    assert result.value("ipw") == pytest.approx(plain.value("ipw"), rel=1e-12)


def test_unknown_feature_is_a_config_error() -> None:
    data = _prepare(_campaign(1, False, customers=500).log, ["conversion"])
    with pytest.raises(ConfigError, match="not in the campaign log"):
        estimate_policy_value(data, "conversion", _plan(data.frame), features="loyalty")


# --- errors, warnings, determinism ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_data() -> CampaignData:
    return _prepare(_campaign(4, targeted=False, customers=1500).log, ["conversion"])


def test_policy_of_wrong_length_is_a_config_error(small_data: CampaignData) -> None:
    plan = _plan(small_data.frame)
    with pytest.raises(ConfigError, match="one arm per kept row"):
        estimate_policy_value(small_data, "conversion", plan[:-1])
    with pytest.raises(ConfigError, match="one arm per kept row"):
        estimate_policy_value(small_data, "conversion", plan.reshape(-1, 1))


def test_unknown_arm_or_outcome_is_a_config_error(small_data: CampaignData) -> None:
    plan = _plan(small_data.frame)
    plan[7] = "sms"
    with pytest.raises(ConfigError, match="unknown arm"):
        estimate_policy_value(small_data, "conversion", plan)
    with pytest.raises(ConfigError, match="was not prepared"):
        estimate_policy_value(small_data, "spend", _plan(small_data.frame))


def _rotated(arm: np.ndarray) -> np.ndarray:
    """A plan that gives every row an arm other than its logged one."""
    nxt = {"control": "push", "push": "coupon", "coupon": "control"}
    return np.array([nxt[a] for a in arm])


def test_no_overlap_is_a_campaign_log_error(small_data: CampaignData) -> None:
    with pytest.raises(CampaignLogError, match="no row the arm it was logged with"):
        estimate_policy_value(small_data, "conversion", _rotated(small_data.arm))


def test_few_matched_rows_warn(small_data: CampaignData) -> None:
    plan = _rotated(small_data.arm)
    plan[:12] = small_data.arm[:12]
    with pytest.warns(CampaignWarning, match="only 12 rows follow the policy"):
        result = estimate_policy_value(small_data, "conversion", plan, n_bootstrap=50)
    assert result.n_matched == 12


def test_enough_overlap_does_not_warn(small_data: CampaignData) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CampaignWarning)
        result = estimate_policy_value(small_data, "conversion", _plan(small_data.frame))
    assert result.notes == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("n_bootstrap", 0),
        ("n_bootstrap", -5),
        ("n_bootstrap", 2.5),
        ("n_bootstrap", "200"),
        ("seed", -1),
        ("seed", 1.5),
        ("seed", "7"),
        ("alpha", 0),
        ("alpha", 1),
        ("alpha", 1.2),
        ("alpha", "0.05"),
    ],
)
def test_bad_options_are_config_errors(small_data: CampaignData, option: str, value) -> None:
    with pytest.raises(ConfigError, match=option):
        estimate_policy_value(small_data, "conversion", _plan(small_data.frame), **{option: value})


def test_deterministic_given_seed(small_data: CampaignData) -> None:
    plan = pd.Series(_plan(small_data.frame))  # a Series works as well as an array
    first = _estimate(small_data, "conversion", plan, n_bootstrap=100, seed=11)
    again = _estimate(small_data, "conversion", plan, n_bootstrap=100, seed=11)
    pd.testing.assert_frame_equal(first.table, again.table)
    other = _estimate(small_data, "conversion", plan, n_bootstrap=100, seed=12)
    np.testing.assert_array_equal(first.table.value, other.table.value)
    assert not np.array_equal(first.table.ci_low, other.table.ci_low)


def test_lower_confidence_gives_narrower_intervals(small_data: CampaignData) -> None:
    plan = _plan(small_data.frame)
    wide = _estimate(small_data, "conversion", plan, n_bootstrap=300, alpha=0.05).table
    narrow = _estimate(small_data, "conversion", plan, n_bootstrap=300, alpha=0.5).table
    assert ((narrow.ci_high - narrow.ci_low) < (wide.ci_high - wide.ci_low)).all()
    assert (wide.ci_low <= narrow.ci_low).all() and (narrow.ci_high <= wide.ci_high).all()


def test_result_is_json_ready(small_data: CampaignData) -> None:
    result = _estimate(small_data, "conversion", _plan(small_data.frame), n_bootstrap=50)
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert [row["estimator"] for row in payload["table"]] == list(ESTIMATORS)
    assert payload["n"] == result.n and payload["seed"] == 0
    with pytest.raises(ConfigError, match="estimator"):
        result.value("direct")
