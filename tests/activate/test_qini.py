"""Uplift and Qini curves: hand-computed numbers, oracle = 1, random ≈ 0, row-order invariance."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from ebbtide.activate.qini import (
    NORMALISATION,
    auuc,
    qini_coefficient,
    qini_curve,
    random_targeting_baseline,
    uplift_at_k,
    uplift_by_decile,
    uplift_curve,
    uplift_metrics,
)
from ebbtide.errors import CampaignLogError, CampaignWarning, ConfigError

# Six customers, already in score order: treated responder, control non-responder, treated
# responder, treated non-responder, control responder, control non-responder.
SCORE = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
TREATED = np.array([True, False, True, True, False, False])
OUTCOME = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary outcomes; the true effect is 0.4 for x > 0.5 and 0 elsewhere."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    tau = np.where(x > 0.5, 0.4, 0.0)
    treated = rng.random(n) < 0.5
    outcome = (rng.random(n) < 0.2 + tau * treated).astype(float)
    return tau, treated, outcome


def test_uplift_curve_by_hand() -> None:
    fraction, gain = uplift_curve(SCORE, TREATED, OUTCOME)
    np.testing.assert_allclose(fraction, np.arange(7) / 6)
    # k=1: treated mean 1, no control (0) → 1; k=4: (2/3 − 0)·4; k=5: (2/3 − 1/2)·5
    np.testing.assert_allclose(gain, [0, 1, 2, 3, 8 / 3, 5 / 6, 2])


def test_qini_curve_by_hand() -> None:
    _, q = qini_curve(SCORE, TREATED, OUTCOME)
    # k=5: Y_T=2, N_T=3, Y_C=1, N_C=2 → 2 − 1·3/2; k=6: 2 − 1·3/3
    np.testing.assert_allclose(q, [0, 1, 1, 2, 2, 0.5, 1])


def test_coefficients_by_hand() -> None:
    # trapezoids of width 1/6 under the Qini curve sum to 7/6; the random line's area is
    # 1/2; (7/6 − 1/2) / 6 = 1/9 incremental responders per customer
    assert qini_coefficient(SCORE, TREATED, OUTCOME) == pytest.approx(1 / 9)
    # uplift curve: area 10.5/6, random line 1, (1.75 − 1) / 6
    assert auuc(SCORE, TREATED, OUTCOME) == pytest.approx(0.125)
    # perfect Qini ranks [r1, r3] (score 1), [r2, r4, r6] (0), [r5] (−1): knots at
    # k = 0, 2, 5, 6 with values 0, 2, 2, 1 → area (2 + 6 + 1.5)/6 − 1/2, over 6 = 6.5/36
    assert qini_coefficient(SCORE, TREATED, OUTCOME, normalised=True) == pytest.approx(
        (1 / 9) / (6.5 / 36)
    )
    # perfect uplift ranks [r1, r3], [r2, r6], [r4], [r5] (treated non-responders before
    # control responders as there are not more of the latter): knots k = 0, 2, 4, 5, 6 with
    # values 0, 2, 4, 10/3, 2 → area 43/18 − 1, over 6 = 25/108
    assert auuc(SCORE, TREATED, OUTCOME, normalised=True) == pytest.approx(0.125 / (25 / 108))


def test_ties_form_one_block_with_a_linear_curve() -> None:
    score = np.array([1.0, 1.0, 0.0, 0.0])
    treated = np.array([True, False, False, True])
    outcome = np.array([1.0, 0.0, 0.0, 0.0])
    _, q = qini_curve(score, treated, outcome)
    # block ends at k=2 (Y_T=1, Y_C=0 → 1) and k=4 (1 − 0) → k=1 lies halfway
    np.testing.assert_allclose(q, [0, 0.5, 1, 1, 1])
    swapped = [1, 0, 3, 2]
    _, q_swapped = qini_curve(score[swapped], treated[swapped], outcome[swapped])
    np.testing.assert_allclose(q_swapped, q)


def test_uplift_at_k_by_hand() -> None:
    assert uplift_at_k(SCORE, TREATED, OUTCOME, 0.5) == pytest.approx(1.0)  # top 3
    assert uplift_at_k(SCORE, TREATED, OUTCOME, 0.3) == pytest.approx(1.0)  # ceil(1.8) = 2
    assert uplift_at_k(SCORE, TREATED, OUTCOME, 1.0) == pytest.approx(2 / 3 - 1 / 3)
    with pytest.warns(CampaignWarning, match="0 control"):
        assert math.isnan(uplift_at_k(SCORE, TREATED, OUTCOME, 1 / 6))


def test_uplift_by_decile_by_hand() -> None:
    table = uplift_by_decile(SCORE, TREATED, OUTCOME, bins=2)
    assert table.decile.tolist() == [1, 2]
    assert table.n_treated.tolist() == [2, 1]
    assert table.n_control.tolist() == [1, 2]
    np.testing.assert_allclose(table.rate_treated, [1.0, 0.0])
    np.testing.assert_allclose(table.rate_control, [0.0, 0.5])
    np.testing.assert_allclose(table.uplift, [1.0, -0.5])
    with pytest.warns(CampaignWarning, match=r"deciles \[2, 3\]"):
        # [r3, r4] are all treated, [r5, r6] all control
        thirds = uplift_by_decile(SCORE, TREATED, OUTCOME, bins=3)
    assert math.isnan(thirds.uplift[1])
    assert len(uplift_by_decile(*_data(1000, 0))) == 10


def test_random_baseline_and_metric_keys_match() -> None:
    baseline = random_targeting_baseline(TREATED, OUTCOME)
    assert baseline["qini"] == baseline["auuc"] == baseline["qini_normalised"] == 0.0
    assert baseline["uplift_at_20pct"] == pytest.approx(1 / 3)  # overall ATE
    assert set(baseline) == set(uplift_metrics(*_data(200, 0)))
    assert "normalised" in NORMALISATION.lower() and "per customer" in NORMALISATION


def test_oracle_ranking_scores_one() -> None:
    tau, treated, outcome = _data(2000, 1)
    perfect_qini = outcome * np.where(treated, 1.0, -1.0)
    assert qini_coefficient(perfect_qini, treated, outcome, normalised=True) == pytest.approx(1)
    responders = treated == (outcome == 1)  # treated responders, control non-responders
    perfect_uplift = 2.0 * responders + treated  # scikit-uplift's ordering here
    assert (outcome[~treated] == 1).sum() <= (outcome[treated] == 0).sum()
    assert auuc(perfect_uplift, treated, outcome, normalised=True) == pytest.approx(1)
    # true effect as score: well above random, below the oracle, which also sees outcomes
    assert 0.15 < qini_coefficient(tau, treated, outcome, normalised=True) < 1


def test_true_effect_on_noiseless_data_by_hand() -> None:
    # effect +1 on the first four (treated buy, control not), no effect and no purchase after
    tau = np.array([1.0, 1, 1, 1, 0, 0, 0, 0])
    treated = np.array([True, False, True, False, True, False, True, False])
    outcome = np.where(tau > 0, treated, 0).astype(float)
    # curve 0 → 2 at half, then flat: area 1.5 − 1, over 8; oracle reaches 2 at a quarter
    assert qini_coefficient(tau, treated, outcome) == pytest.approx(1 / 16)
    assert qini_coefficient(tau, treated, outcome, normalised=True) == pytest.approx(2 / 3)
    assert qini_coefficient(-tau, treated, outcome) < 0


def test_random_scores_average_near_zero() -> None:
    tau, treated, outcome = _data(2000, 2)
    rng = np.random.default_rng(0)
    draws = [
        qini_coefficient(rng.random(tau.size), treated, outcome, normalised=True) for _ in range(40)
    ]
    assert abs(np.mean(draws)) < 0.03
    assert qini_coefficient(tau, treated, outcome, normalised=True) > 10 * abs(np.mean(draws))


def test_shuffling_rows_changes_nothing() -> None:
    tau, treated, outcome = _data(500, 3)
    score = tau + np.random.default_rng(1).normal(scale=0.1, size=tau.size)  # no ties
    perm = np.random.default_rng(2).permutation(tau.size)
    before = uplift_metrics(score, treated, outcome)
    after = uplift_metrics(score[perm], treated[perm], outcome[perm])
    assert after == pytest.approx(before)
    shuffled = (score[perm], treated[perm], outcome[perm])
    np.testing.assert_allclose(uplift_curve(*shuffled)[1], uplift_curve(score, treated, outcome)[1])
    # with ties (the coarse true effect) the curves' areas are still order-free
    assert qini_coefficient(tau[perm], treated[perm], outcome[perm]) == pytest.approx(
        qini_coefficient(tau, treated, outcome)
    )


def test_shift_and_scale_of_a_continuous_outcome() -> None:
    tau, treated, outcome = _data(500, 4)
    amount = outcome * 30.0 + np.random.default_rng(0).gamma(2.0, size=tau.size)
    base = qini_coefficient(tau, treated, amount)
    assert qini_coefficient(tau, treated, 2 * amount + 5) == pytest.approx(2 * base)
    assert auuc(tau, treated, 2 * amount + 5) == pytest.approx(2 * auuc(tau, treated, amount))
    # the perfect uplift curve starts with treated rows only (control mean taken as 0), so
    # its normalised value survives a change of unit but not a shift
    assert auuc(tau, treated, 100 * amount, normalised=True) == pytest.approx(
        auuc(tau, treated, amount, normalised=True)
    )


def test_constant_outcome_has_no_normalised_value() -> None:
    with pytest.warns(CampaignWarning, match="perfect curve"):
        assert math.isnan(qini_coefficient(SCORE, TREATED, np.zeros(6), normalised=True))


@pytest.mark.parametrize(
    ("score", "treated", "outcome", "error", "match"),
    [
        (SCORE[:5], TREATED, OUTCOME, ConfigError, "5 rows"),
        (np.r_[SCORE[:5], np.nan], TREATED, OUTCOME, ConfigError, "non-finite"),
        (SCORE, TREATED, np.r_[OUTCOME[:5], np.nan], CampaignLogError, "missing"),
        (SCORE, np.ones(6, dtype=bool), OUTCOME, CampaignLogError, "0 control"),
        (SCORE, np.array([0, 1, 2, 0, 1, 0]), OUTCOME, CampaignLogError, "bool or 0/1"),
        (SCORE, TREATED, OUTCOME[:5], ConfigError, "one value per row"),
    ],
)
def test_bad_inputs_say_what_to_fix(score, treated, outcome, error, match) -> None:
    with pytest.raises(error, match=match):
        qini_coefficient(score, treated, outcome)


def test_bad_k_and_bins() -> None:
    for k in (0, 1.5, math.nan):
        with pytest.raises(ConfigError, match="share targeted"):
            uplift_at_k(SCORE, TREATED, OUTCOME, k)
    with pytest.raises(ConfigError, match="bins"):
        uplift_by_decile(SCORE, TREATED, OUTCOME, bins=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert uplift_at_k(SCORE, [1, 0, 1, 1, 0, 0], OUTCOME, 0.5) == pytest.approx(1.0)
