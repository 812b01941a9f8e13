"""Uplift meta-learners: near-oracle Qini on a known effect, determinism, categories, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from ebbtide.activate.qini import qini_coefficient
from ebbtide.activate.uplift import (
    LEARNERS,
    DRLearner,
    TLearner,
    UpliftComparison,
    UpliftConfig,
    XLearner,
    build_learner,
    compare_learners,
)
from ebbtide.errors import CampaignLogError, ConfigError, NotFittedError

FEATURES = ["x0", "x1", "x2", "cat"]
FAST = UpliftConfig(max_iter=30, min_samples_leaf=20)


def _campaign(n: int, seed: int) -> pd.DataFrame:
    """A randomised campaign (p = 0.5) with a binary outcome and a known effect ``tau``:
    +0.5 where x0 > 0 in categories a and b, −0.15 in a small region x1 > 1.2, else 0."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x0": rng.normal(size=n),
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "cat": rng.choice(["a", "b", "c", "d"], size=n),
        }
    )
    tau = np.where((frame.x0 > 0) & frame.cat.isin(["a", "b"]), 0.5, 0.0)
    tau = np.where((tau == 0) & (frame.x1 > 1.2), -0.15, tau)
    treated = rng.random(n) < 0.5
    base = 0.2 + 0.1 * (frame.x2 > 0)
    frame["treated"] = treated
    frame["bought"] = (rng.random(n) < base + tau * treated).astype(float)
    frame["tau"] = tau
    return frame


@pytest.fixture(scope="module")
def comparison() -> tuple[pd.DataFrame, UpliftComparison]:
    # 12,000 rows: at 4,000 the doubly robust learner's Qini is too noisy to sit reliably
    # within 20% of the oracle's
    frame = _campaign(12_000, 0)
    return frame, compare_learners(frame, "treated", "bought", FEATURES, seed=0)


def test_every_learner_is_near_the_oracle(comparison) -> None:
    frame, result = comparison
    scores = result.test_scores
    oracle = qini_coefficient(frame.loc[scores.index, "tau"], scores.treated, scores.outcome)
    table = result.table.set_index("learner")
    assert list(table.index) == ["t", "x", "dr", "random"]
    assert table.loc["random", "qini"] == 0.0
    for name in ("t", "x", "dr"):
        assert table.loc[name, "qini"] > 0.5 * oracle  # far above random
        assert table.loc[name, "qini"] == pytest.approx(oracle, rel=0.2), name
        assert table.loc[name, "uplift_at_20pct"] > table.loc["random", "uplift_at_20pct"] + 0.1
        assert table.loc[name, "fit_seconds"] > 0  # timing itself belongs in bench/


def test_comparison_outputs(comparison) -> None:
    frame, result = comparison
    assert result.n_test == len(result.test_scores) == 3600
    assert result.n_train == 8400
    assert list(result.test_scores.columns) == ["treated", "outcome", "t", "x", "dr"]
    assert result.test_scores.treated.mean() == pytest.approx(frame.treated.mean(), abs=0.01)
    np.testing.assert_array_equal(
        result.test_scores.outcome, frame.loc[result.test_scores.index, "bought"]
    )
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["normalisation"] == result.normalisation
    assert as_dict["learners"][-1]["fit_seconds"] is None  # random: nothing fitted
    assert {"qini_normalised", "auuc_normalised", "uplift_at_30pct"} <= set(as_dict["learners"][0])


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_same_seed_same_predictions(name: str) -> None:
    frame = _campaign(1500, 1)
    x = frame[FEATURES]
    first = build_learner(name, config=FAST, random_state=3).fit(x, frame.treated, frame.bought)
    again = build_learner(name, config=FAST, random_state=3).fit(x, frame.treated, frame.bought)
    np.testing.assert_array_equal(first.predict(x), again.predict(x))
    assert first.predict(x).shape == (1500,)
    assert clone(first).get_params() == first.get_params()


def test_unseen_and_missing_categories_count_as_missing() -> None:
    frame = _campaign(1500, 2)
    model = TLearner(config=FAST).fit(frame[FEATURES], frame.treated, frame.bought)
    rows = frame[FEATURES].head(5).copy()
    rows["cat"] = ["zzz", None, "a", "zzz", "b"]
    as_missing = rows.assign(cat=[None, None, "a", None, "b"])
    tau = model.predict(rows)
    assert np.isfinite(tau).all()
    np.testing.assert_array_equal(tau, model.predict(as_missing))
    # a category dtype and NaN numbers are fine too
    typed = frame[FEATURES].assign(cat=frame.cat.astype("category"))
    typed.loc[:10, "x2"] = np.nan
    model = XLearner(config=FAST).fit(typed, frame.treated, frame.bought)
    assert np.isfinite(model.predict(typed)).all()


def test_given_propensities() -> None:
    frame = _campaign(1500, 3)
    x, t, y = frame[FEATURES], frame.treated, frame.bought
    per_row = np.linspace(0.4, 0.6, len(frame))
    model = XLearner(config=FAST).fit(x, t, y, propensity=per_row)
    with pytest.raises(ConfigError, match="pass propensity="):
        model.predict(x)  # the new rows' propensities cannot be read off the fitted ones
    halves = np.full(len(frame), 0.5)
    constant = XLearner(config=FAST).fit(x, t, y, propensity=0.5)
    np.testing.assert_allclose(constant.predict(x), model.predict(x, propensity=halves))
    assert np.isfinite(DRLearner(config=FAST).fit(x, t, y, propensity=0.5).predict(x)).all()
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        DRLearner(config=FAST).fit(x, t, y, propensity=1.0)


def test_clear_errors() -> None:
    frame = _campaign(400, 4)
    with pytest.raises(ConfigError, match=r"\['nope'\] are not in the frame; available"):
        compare_learners(frame, "treated", "bought", ["x0", "nope"])
    with pytest.raises(ConfigError, match="no feature columns"):
        compare_learners(frame, "treated", "bought", [])
    with pytest.raises(ConfigError, match=r"\['dr', 't', 'x'\]"):
        build_learner("s")
    with pytest.raises(CampaignLogError, match="0 control"):
        TLearner().fit(frame[FEATURES], np.ones(400, dtype=bool), frame.bought)
    with pytest.raises(CampaignLogError, match="0 control"):
        compare_learners(frame.assign(treated=True), "treated", "bought", FEATURES)
    with pytest.raises(CampaignLogError, match="outcome has 1 missing"):
        TLearner().fit(frame[FEATURES], frame.treated, frame.bought.where(frame.index != 7))
    with pytest.raises(ConfigError, match="entirely missing"):
        TLearner().fit(frame[FEATURES].assign(x2=np.nan), frame.treated, frame.bought)
    with pytest.raises(NotFittedError, match="call fit"):
        DRLearner().predict(frame[FEATURES])
    model = TLearner(config=FAST).fit(frame[FEATURES], frame.treated, frame.bought)
    with pytest.raises(ConfigError, match=r"\['x1'\] seen in fit are not in these rows"):
        model.predict(frame[["x0", "x2", "cat"]])
    with pytest.raises(ConfigError, match="n_folds"):
        UpliftConfig(n_folds=1)


def test_learned_targeting_on_a_synthetic_campaign_nears_the_oracle() -> None:
    """The issue's bar, against known effects: every learner's ranking of held-out customers
    beats random by a wide margin and is within 20% of ranking by the true effect."""
    from ebbtide.activate.qini import effect_qini
    from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign

    campaign = generate_campaign(CampaignConfig(customers=64_000, seed=0))
    log = campaign.log
    keep = log["arm"].isin(["control", "coupon"]).to_numpy()
    pair, effect = log[keep], campaign.true_effect("coupon")[keep]
    features = ["recency_days", "frequency", "monetary", "interest_trend", "channel", "segment"]
    result = compare_learners(
        pair, (pair["arm"] == "coupon").to_numpy(), "conversion", features, seed=0
    )
    held = effect[pair.index.get_indexer(result.test_scores.index)]
    random_ranking = effect_qini(np.random.default_rng(0).random(held.size), held)
    assert abs(random_ranking) < 0.1
    for learner in ("t", "x", "dr"):
        assert effect_qini(result.test_scores[learner].to_numpy(), held) >= 0.8, learner
    observed = result.table.set_index("learner")["qini"]
    assert (observed.drop("random") > 0.003).all()  # random targeting scores 0
