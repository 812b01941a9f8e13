"""Evaluation metrics: hand-computed numbers, and agreement with scikit-learn, scipy and
brute-force references written here (lifelines' pair rules for the concordance index)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import sparse, stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from ebbtide.errors import ConfigError, DataQualityWarning
from ebbtide.evaluate.metrics import (
    brier,
    btyd_holdout_metrics,
    classification_metrics,
    concordance_index,
    expected_calibration_error,
    hit_rate_at_k,
    kaplan_meier,
    log_loss,
    mrr_at_k,
    ndcg_at_k,
    ndcg_at_k_multi,
    ndcg_from_hits,
    pr_auc,
    rank_of_targets,
    ranking_metrics,
    recall_at_k,
    recall_from_hits,
    reliability_table,
    roc_auc,
)

# Three users, five items. User 0: target 2 ties with item 1; user 1: target 4 is the best;
# user 2: every score equal, so the target ranks last under the pessimistic rule.
SCORES = np.array(
    [
        [0.9, 0.5, 0.5, 0.1, 0.3],
        [0.2, 0.1, 0.4, 0.3, 0.8],
        [0.7, 0.7, 0.7, 0.7, 0.7],
    ]
)
TARGETS = np.array([2, 4, 0])


# ------------------------------------------------------------------ references (tests only)


def _reference_ranks(scores: np.ndarray, targets: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Pessimistic rank via scipy: 'max' gives a tie group its last position."""
    masked = np.where(seen & (np.arange(scores.shape[1]) != targets[:, None]), -np.inf, scores)
    ranked = stats.rankdata(-masked, method="max", axis=1)
    return ranked[np.arange(scores.shape[0]), targets].astype(int)


def _reference_top_k(
    scores: np.ndarray, relevant: np.ndarray, seen: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recall@k and NDCG@k per user by sorting each user's whole list (one user at a time)."""
    recall, ndcg = [], []
    for s, rel, excl in zip(scores, relevant, seen, strict=True):
        keep = ~excl | rel
        order = np.lexsort((rel[keep], -s[keep]))  # by score, relevant last among ties
        top = rel[keep][order][:k]
        n = int(rel.sum())
        gains = top / np.log2(np.arange(2, top.size + 2))
        ideal = (1 / np.log2(np.arange(2, min(n, k) + 2))).sum()
        recall.append(top.sum() / n if n else np.nan)
        ndcg.append(gains.sum() / ideal if n else np.nan)
    return np.array(recall), np.array(ndcg)


def _reference_concordance(t: np.ndarray, p: np.ndarray, e: np.ndarray) -> float:
    """Harrell's C over all pairs, with lifelines' rules for tied and censored times."""
    correct = tied = pairs = 0.0
    for i in range(t.size):
        for j in range(t.size):
            earlier_event = e[i] and (t[i] < t[j] or (t[i] == t[j] and not e[j]))
            if not earlier_event:
                continue
            pairs += 1
            if p[i] == p[j]:
                tied += 1
            elif p[i] < p[j]:
                correct += 1
    return (correct + tied / 2) / pairs


def _concordance_numpy(t: np.ndarray, p: np.ndarray, e: np.ndarray) -> float:
    """The same definition as a dense O(n²) numpy comparison, for medium n."""
    comparable = e[:, None] & ((t[:, None] < t) | ((t[:, None] == t) & ~e[None, :]))
    correct = (comparable & (p[:, None] < p)).sum()
    tied = (comparable & (p[:, None] == p)).sum()
    return (correct + tied / 2) / comparable.sum()


def _survival_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer times (many ties), coarse predictions (ties), about a third censored."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t = np.ceil(rng.exponential(5 * np.exp(risk))).clip(max=25)
    e = rng.random(n) > 0.35
    p = np.round(np.exp(risk) + rng.normal(scale=0.5, size=n), 1)
    return t, p, e


# ------------------------------------------------------------------------------- ranking


def test_rank_of_targets_by_hand() -> None:
    np.testing.assert_array_equal(rank_of_targets(SCORES, TARGETS), [3, 1, 5])


def test_rank_of_targets_excludes_seen_but_never_the_target() -> None:
    # user 0 saw items 0 and 2 (its own target, kept); user 2 saw items 1 and 3
    seen = ([0, 0, 2, 2], [0, 2, 1, 3])
    np.testing.assert_array_equal(rank_of_targets(SCORES, TARGETS, exclude=seen), [2, 1, 3])


def test_exclude_forms_agree() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 30))
    targets = rng.integers(0, 30, size=40)
    mask = rng.random((40, 30)) < 0.3
    users, items = np.nonzero(mask)
    by_mask = rank_of_targets(scores, targets, exclude=mask)
    np.testing.assert_array_equal(by_mask, _reference_ranks(scores, targets, mask))
    np.testing.assert_array_equal(by_mask, rank_of_targets(scores, targets, (users, items)))
    np.testing.assert_array_equal(by_mask, rank_of_targets(scores, targets, sparse.csr_array(mask)))
    # duplicated pairs and a COO matrix with duplicates still exclude each item once
    twice = (np.r_[users, users], np.r_[items, items])
    np.testing.assert_array_equal(by_mask, rank_of_targets(scores, targets, twice))
    coo = sparse.coo_matrix((np.ones(2 * users.size), twice), shape=mask.shape)
    np.testing.assert_array_equal(by_mask, rank_of_targets(scores, targets, coo))


def test_rank_of_targets_matches_scipy_on_ties_and_chunks() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=(57, 23)), 1)  # many ties
    targets = rng.integers(0, 23, size=57)
    seen = rng.random((57, 23)) < 0.2
    expected = _reference_ranks(scores, targets, seen)
    for chunk_rows in (None, 1, 7, 57, 1000):
        got = rank_of_targets(scores, targets, seen, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(got, expected)


def test_rank_of_targets_accepts_torch_and_float32() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(20, 15)).astype(np.float32)
    targets = rng.integers(0, 15, size=20)
    expected = rank_of_targets(scores.astype(np.float64), targets)
    np.testing.assert_array_equal(rank_of_targets(scores, targets), expected)
    got = rank_of_targets(torch.from_numpy(scores), torch.from_numpy(targets), chunk_rows=6)
    np.testing.assert_array_equal(got, expected)
    half = torch.from_numpy(scores).to(torch.bfloat16)
    np.testing.assert_array_equal(
        rank_of_targets(half, targets), rank_of_targets(half.double().numpy(), targets)
    )


def test_rank_of_targets_ml1m_size_in_chunks() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((6040, 3706), dtype=np.float32)
    targets = rng.integers(0, 3706, size=6040)
    ranks = rank_of_targets(scores, targets)
    rows = np.array([0, 1234, 2047, 6039])
    np.testing.assert_array_equal(
        ranks[rows], _reference_ranks(scores[rows], targets[rows], np.zeros((4, 3706), bool))
    )
    assert ranks.min() >= 1 and ranks.max() <= 3706


def test_minus_inf_ranks_below_finite_scores() -> None:
    scores = np.array([[-np.inf, 0.0, 1.0], [-np.inf, -np.inf, 1.0]])
    np.testing.assert_array_equal(rank_of_targets(scores, np.array([0, 0])), [3, 3])


@pytest.mark.parametrize(
    ("scores", "targets", "match"),
    [
        (np.zeros(5), np.array([0]), "shape"),
        (np.zeros((2, 3)), np.array([0]), r"one\s+item index per user"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "integer"),
        (np.zeros((2, 3)), np.array([0, 3]), "out of range"),
        (np.array([[0.0, np.nan], [0.0, 1.0]]), np.array([0, 0]), "NaN"),
        (np.array([[0.0, 1.0], [np.inf, 1.0]]), np.array([0, 0]), "user row 1"),
    ],
)
def test_rank_of_targets_rejects_bad_input(scores, targets, match) -> None:
    with pytest.raises(ConfigError, match=match):
        rank_of_targets(scores, targets)


def test_rank_of_targets_rejects_bad_exclude() -> None:
    with pytest.raises(ConfigError, match="same shape"):
        rank_of_targets(SCORES, TARGETS, exclude=np.zeros((2, 5), bool))
    with pytest.raises(ConfigError, match="out of range"):
        rank_of_targets(SCORES, TARGETS, exclude=([0], [5]))
    with pytest.raises(ConfigError, match="boolean mask"):
        rank_of_targets(SCORES, TARGETS, exclude=np.zeros((3, 5)))
    with pytest.raises(ConfigError, match="chunk_rows"):
        rank_of_targets(SCORES, TARGETS, chunk_rows=0)


def test_single_target_metrics_by_hand() -> None:
    ranks = np.array([1, 2, 3, 11])
    assert hit_rate_at_k(ranks, 3) == 0.75
    assert hit_rate_at_k(ranks, 1) == 0.25
    np.testing.assert_allclose(ndcg_at_k(ranks, 10, per_user=True), [1, 1 / math.log2(3), 0.5, 0])
    assert mrr_at_k(ranks, 2) == pytest.approx((1 + 0.5) / 4)
    assert mrr_at_k(ranks, 20) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 11) / 4)


def test_ranking_metrics_dict() -> None:
    m = ranking_metrics([1, 4, 30], ks=(3, 10))
    assert list(m) == ["hr@3", "ndcg@3", "mrr@3", "hr@10", "ndcg@10", "mrr@10"]
    assert m["hr@3"] == pytest.approx(1 / 3)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert m["mrr@10"] == pytest.approx((1 + 0.25) / 3)


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "10"])
def test_bad_k_is_refused(k) -> None:
    with pytest.raises(ConfigError, match="k="):
        hit_rate_at_k([1, 2], k)
    with pytest.raises(ConfigError, match="k="):
        recall_at_k(SCORES, [[0], [1], [2]], k)


@pytest.mark.parametrize("ranks", [[0, 1], [1.5], [np.nan], [], [[1, 2]]])
def test_bad_ranks_are_refused(ranks) -> None:
    with pytest.raises(ConfigError, match="rank"):
        ndcg_at_k(ranks, 10)


def test_ranking_metrics_needs_a_sequence_of_ks() -> None:
    with pytest.raises(ConfigError, match="ks="):
        ranking_metrics([1, 2], ks=10)
    with pytest.raises(ConfigError, match="ks="):
        ranking_metrics([1, 2], ks=())


def test_multi_target_metrics_by_hand() -> None:
    # user 0: targets {1, 2}, top 3 = [0, then the 0.5 tie with 1 and 2 both targets] → both
    # in, at positions 2 and 3. user 1: target {3}, at position 3 (0.8 > 0.4 > 0.3).
    # user 2: target {4} in a five-way tie: pessimistic position 5, out of the top 3.
    targets = [[1, 2], [3], [4]]
    np.testing.assert_allclose(recall_at_k(SCORES, targets, 3, per_user=True), [1, 1, 0])
    ndcg = ndcg_at_k_multi(SCORES, targets, 3, per_user=True)
    d2, d3 = 1 / math.log2(3), 1 / math.log2(4)
    np.testing.assert_allclose(ndcg, [(d2 + d3) / (1 + d2), d3, 0])
    # k = 2: user 0 keeps one of its two tied targets (one slot left after item 0)
    np.testing.assert_allclose(recall_at_k(SCORES, targets, 2, per_user=True), [0.5, 0, 0])
    assert ndcg_at_k_multi(SCORES, targets, 2) == pytest.approx(d2 / (1 + d2) / 3)
    # a user without targets is NaN and left out of the mean
    with_empty = [[1, 2], [], [4]]
    np.testing.assert_allclose(recall_at_k(SCORES, with_empty, 3, per_user=True), [1, np.nan, 0])
    assert recall_at_k(SCORES, with_empty, 3) == 0.5


def test_multi_target_ties_fill_free_slots_with_non_targets_first() -> None:
    # five items tied; two are targets; k = 4 leaves 4 slots, 3 go to the non-targets
    scores = np.zeros((1, 5))
    assert recall_at_k(scores, [[0, 4]], 4) == 0.5
    assert recall_at_k(scores, [[0, 4]], 3) == 0.0
    assert recall_at_k(scores, [[0, 4]], 5) == 1.0
    assert recall_at_k(scores, [[0, 4]], 50) == 1.0


def test_multi_target_equals_single_target_with_one_target() -> None:
    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=(60, 25)), 1)
    targets = rng.integers(0, 25, size=60)
    seen = rng.random((60, 25)) < 0.25
    ranks = rank_of_targets(scores, targets, seen)
    lists = [[t] for t in targets]
    for k in (1, 5, 25, 40):
        assert recall_at_k(scores, lists, k, exclude=seen) == pytest.approx(hit_rate_at_k(ranks, k))
        np.testing.assert_allclose(
            ndcg_at_k_multi(scores, lists, k, exclude=seen, per_user=True),
            ndcg_at_k(ranks, k, per_user=True),
        )


def test_multi_target_matches_brute_force_with_ties_and_exclusions() -> None:
    rng = np.random.default_rng(5)
    scores = np.round(rng.normal(size=(80, 30)), 1)
    relevant = rng.random((80, 30)) < 0.15
    relevant[0] = False  # a user without targets: NaN, left out of the mean
    seen = rng.random((80, 30)) < 0.3
    users, items = np.nonzero(seen)
    lists = [np.flatnonzero(r) for r in relevant]
    for k in (1, 3, 10, 30):
        exp_recall, exp_ndcg = _reference_top_k(scores, relevant, seen, k)
        for targets in (lists, relevant, sparse.csr_array(relevant)):
            got = recall_at_k(scores, targets, k, exclude=(users, items), per_user=True)
            np.testing.assert_allclose(got, exp_recall)
            got = ndcg_at_k_multi(scores, targets, k, exclude=seen, per_user=True, chunk_rows=9)
            np.testing.assert_allclose(got, exp_ndcg)
        assert recall_at_k(scores, lists, k, exclude=seen) == pytest.approx(np.nanmean(exp_recall))


def test_ndcg_multi_matches_sklearn_without_ties() -> None:
    rng = np.random.default_rng(6)
    scores = rng.normal(size=(50, 40))
    relevant = rng.random((50, 40)) < 0.2
    relevant[np.arange(50), rng.integers(0, 40, size=50)] = True  # every user has one
    for k in (1, 5, 10, 40):
        expected = skm.ndcg_score(relevant.astype(float), scores, k=k)
        assert ndcg_at_k_multi(scores, relevant, k) == pytest.approx(expected, abs=1e-12)


def test_multi_target_rejects_bad_targets() -> None:
    with pytest.raises(ConfigError, match=r"one\s+list of item indices per user"):
        recall_at_k(SCORES, [[0], [1]], 3)
    with pytest.raises(ConfigError, match="out of range"):
        recall_at_k(SCORES, [[0], [1], [7]], 3)
    with pytest.raises(ConfigError, match="integer"):
        recall_at_k(SCORES, [[0.5], [1], [2]], 3)
    with pytest.raises(ConfigError, match="no user has a target"):
        ndcg_at_k_multi(SCORES, [[], [], []], 3)


# ------------------------------------------------------------------------ classification


def _binary(n: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y - 0.8)))
    return y.astype(int), (np.round(p, decimals) if decimals is not None else p)


def test_classification_by_hand() -> None:
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert roc_auc(y, p) == 0.75  # 3 of 4 positive-negative pairs in order
    assert pr_auc(y, p) == pytest.approx((1 + 2 / 3) / 2)  # P=1 at R=0.5, P=2/3 at R=1
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert brier([1, 0], [0.8, 0.3]) == pytest.approx(0.065)
    assert roc_auc([0, 1, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(0.875)  # one tie


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 2), (2, 1), (3, 0)])
def test_classification_matches_sklearn(seed: int, decimals: int | None) -> None:
    y, p = _binary(3000, seed, decimals)
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert pr_auc(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    if decimals is None:  # rounding makes exact 0/1, where the clipping rules differ
        assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=[0, 1]), abs=1e-12)


def test_auc_on_a_million_rows_matches_sklearn() -> None:
    y, p = _binary(1_000_000, 7, decimals=3)
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)


def test_log_loss_clips_certain_mistakes() -> None:
    expected = -math.log(1e-15) / 2
    assert log_loss([1, 0], [0.0, 0.0]) == pytest.approx(expected)
    assert log_loss([0, 1], [1.0, 1.0]) == pytest.approx(expected)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-15))


def test_single_class_gives_nan_and_a_warning() -> None:
    with pytest.warns(DataQualityWarning, match="ROC-AUC is NaN"):
        assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    with pytest.warns(DataQualityWarning, match="PR-AUC"):
        assert math.isnan(pr_auc([0, 0], [0.2, 0.5]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pr_auc([1, 1], [0.2, 0.5]) == 1.0  # all positive: precision is always 1


def test_ece_by_hand_and_table() -> None:
    y, p = [0, 1, 1, 0], [0.1, 0.2, 0.8, 0.9]
    ece, table = expected_calibration_error(y, p, bins=2, return_table=True)
    assert ece == pytest.approx(0.35)  # both bins: |0.15 − 0.5|, |0.85 − 0.5|
    assert list(table.columns) == ["bin", "lower", "upper", "mean_p", "frac_pos", "count"]
    assert table["count"].tolist() == [2, 2]
    # four bins: [0, .25] holds .1 and .2 (mean .15, rate .5), (.75, 1] holds .8 and .9
    table = reliability_table(y, p, bins=4)
    assert table["count"].tolist() == [2, 0, 0, 2]
    assert np.isnan(table["mean_p"][1])
    assert expected_calibration_error(y, p, bins=4) == pytest.approx(0.35)
    # a value on an inner edge goes to the lower bin, as scikit-learn
    assert reliability_table([1], [0.5], bins=2)["count"].tolist() == [1, 0]


def test_perfect_calibration_has_zero_ece() -> None:
    p = np.repeat([0.25, 0.75], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_table_matches_sklearn_calibration_curve(strategy: str) -> None:
    y, p = _binary(2000, 8, decimals=2)
    table = reliability_table(y, p, bins=8, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=8, strategy=strategy)
    full = table[table["count"] > 0]
    np.testing.assert_allclose(full["frac_pos"], prob_true, atol=1e-12)
    np.testing.assert_allclose(full["mean_p"], prob_pred, atol=1e-12)
    expected = np.sum(full["count"] * np.abs(prob_true - prob_pred)) / 2000
    assert expected_calibration_error(y, p, bins=8, strategy=strategy) == pytest.approx(expected)


def test_classification_metrics_dict() -> None:
    y, p = _binary(500, 9)
    m = classification_metrics(y, p, bins=5)
    assert list(m) == ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "positive_rate"]
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m["ece"] == pytest.approx(expected_calibration_error(y, p, bins=5))
    assert m["positive_rate"] == pytest.approx(y.mean())


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1], [0.5], "other inputs have 2"),
        ([0, 2], [0.5, 0.5], "bool or 0/1"),
        (["a", "b"], [0.5, 0.5], "bool or 0/1"),
        ([0, 1], [0.5, np.nan], "missing or infinite"),
        ([0, 1], [0.5, 1.2], "probabilities in \\[0, 1\\]"),
        ([0, 1], [-0.1, 0.5], "probabilities"),
        ([], [], "non-empty"),
    ],
)
def test_classification_rejects_bad_input(y, p, match) -> None:
    with pytest.raises(ConfigError, match=match):
        classification_metrics(y, p)


def test_auc_accepts_any_score_but_ece_checks_bins() -> None:
    assert roc_auc([0, 1], [-3.0, 7.0]) == 1.0  # scores, not probabilities
    with pytest.raises(ConfigError, match="bins="):
        expected_calibration_error([0, 1], [0.2, 0.6], bins=0)
    with pytest.raises(ConfigError, match="strategy="):
        expected_calibration_error([0, 1], [0.2, 0.6], strategy="kmeans")


# --------------------------------------------------------------------------- concordance


def test_concordance_by_hand() -> None:
    t, e = [1, 2, 3, 4], [1, 1, 1, 1]
    assert concordance_index(t, [1, 2, 3, 4], e) == 1.0
    assert concordance_index(t, [4, 3, 2, 1], e) == 0.0
    assert concordance_index(t, [4, 3, 2, 1], e, higher_is_later=False) == 1.0
    assert concordance_index(t, [1, 1, 1, 1], e) == 0.5
    # censored at 2: pairs (1,2) (1,3) (1,4) (3,4); (2, later) not comparable
    assert concordance_index(t, [1, 0, 2, 3], [1, 0, 1, 1]) == 0.75
    # tied times: two events at 2 are not compared; event 2 vs censored 2 is (event first)
    assert concordance_index([1, 2, 2, 2], [1, 3, 2, 5], [1, 1, 1, 0]) == 1.0
    assert concordance_index([1, 2, 2, 2], [1, 3, 2, 2.5], [1, 1, 1, 0]) == pytest.approx(4 / 5)


@pytest.mark.parametrize("seed", range(5))
def test_concordance_matches_brute_force_with_censoring_and_ties(seed: int) -> None:
    t, p, e = _survival_data(250, seed)
    expected = _reference_concordance(t, p, e)
    assert concordance_index(t, p, e) == pytest.approx(expected, abs=1e-12)
    assert concordance_index(t, -p, e, higher_is_later=False) == pytest.approx(expected, abs=1e-12)


def test_concordance_matches_dense_numpy_on_medium_data() -> None:
    t, p, e = _survival_data(3001, 11)
    assert concordance_index(t, p, e) == pytest.approx(_concordance_numpy(t, p, e), abs=1e-12)


def test_concordance_without_censoring_or_ties_is_kendall() -> None:
    rng = np.random.default_rng(12)
    t, p = rng.normal(size=400), rng.normal(size=400)
    tau = stats.kendalltau(t, p).statistic
    assert concordance_index(t, p, np.ones(400, bool)) == pytest.approx((1 + tau) / 2)


def test_concordance_runs_on_50k_rows() -> None:
    t, p, e = _survival_data(50_000, 13)
    c = concordance_index(t, p, e)
    assert 0.5 < c < 1.0  # predictions follow the simulated risk


def test_concordance_without_comparable_pairs_warns() -> None:
    with pytest.warns(DataQualityWarning, match="no comparable pair"):
        assert math.isnan(concordance_index([1, 2, 3], [1, 2, 3], [0, 0, 0]))
    with pytest.warns(DataQualityWarning, match="no comparable pair"):
        assert math.isnan(concordance_index([2, 2], [1, 2], [1, 1]))


def test_concordance_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="2 rows but the other inputs have 3"):
        concordance_index([1, 2, 3], [1, 2], [1, 1, 1])
    with pytest.raises(ConfigError, match="observed"):
        concordance_index([1, 2, 3], [1, 2, 3], [1, 1])
    with pytest.raises(ConfigError, match="observed must be bool or 0/1"):
        concordance_index([1, 2, 3], [1, 2, 3], [1, 2, 1])
    with pytest.raises(ConfigError, match="event_times has 1 missing"):
        concordance_index([1, np.nan, 3], [1, 2, 3], [1, 1, 1])


# ---------------------------------------------------------------------------------- BTYD


def test_btyd_holdout_by_hand() -> None:
    m = btyd_holdout_metrics([0, 2, 1], [0.5, 1.5, 1.0])
    assert m["n_customers"] == 3
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5 / 3))
    assert m["correlation"] == pytest.approx(1.0)  # predicted = 0.5 + actual / 2
    assert (m["actual_total"], m["predicted_total"]) == (3.0, 3.0)
    assert m["aggregate_relative_error"] == 0.0
    assert m["auc_any_transaction"] == 1.0
    m = btyd_holdout_metrics([0, 2, 2], [1.0, 0.5, 3.5])
    assert m["aggregate_relative_error"] == pytest.approx(0.25)  # (5 − 4) / 4
    assert m["auc_any_transaction"] == pytest.approx(0.5)  # 0.5 < 1.0 < 3.5


def test_btyd_holdout_matches_sklearn_and_scipy() -> None:
    rng = np.random.default_rng(14)
    actual = rng.poisson(rng.gamma(0.5, 2.0, size=2000)).astype(float)
    predicted = np.clip(actual + rng.normal(scale=0.8, size=2000), 0, None)
    m = btyd_holdout_metrics(actual, predicted)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(actual, predicted), abs=1e-12)
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(actual, predicted), abs=1e-12)
    assert m["correlation"] == pytest.approx(stats.pearsonr(actual, predicted).statistic)
    assert m["auc_any_transaction"] == pytest.approx(
        skm.roc_auc_score(actual > 0, predicted), abs=1e-12
    )
    assert m["aggregate_relative_error"] == pytest.approx(
        (predicted.sum() - actual.sum()) / actual.sum()
    )


def test_btyd_holdout_undefined_values_warn() -> None:
    with pytest.warns(DataQualityWarning) as caught:
        m = btyd_holdout_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(m["correlation"])
    assert math.isnan(m["aggregate_relative_error"])
    assert math.isnan(m["auc_any_transaction"])
    assert m["mae"] == pytest.approx(0.2)
    assert len(caught) == 3


def test_btyd_holdout_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="negative transaction count"):
        btyd_holdout_metrics([1, 2], [-0.5, 1.0])
    with pytest.raises(ConfigError, match="one value per row"):
        btyd_holdout_metrics([1, 2], [1.0])
    with pytest.raises(ConfigError, match="missing or infinite"):
        btyd_holdout_metrics([1, np.inf], [1.0, 1.0])


# ------------------------------------------------------------------------ Kaplan-Meier


def test_kaplan_meier_matches_statsmodels_with_ties_and_censoring():
    from statsmodels.duration.survfunc import SurvfuncRight

    rng = np.random.default_rng(3)
    times = rng.integers(1, 20, size=300).astype(float)
    observed = rng.random(300) < 0.6
    ours = kaplan_meier(times, observed)
    reference = SurvfuncRight(times, observed.astype(int))
    np.testing.assert_allclose(ours["time"].to_numpy()[1:], reference.surv_times)
    np.testing.assert_allclose(ours["survival"].to_numpy()[1:], reference.surv_prob)
    assert ours["at_risk"].iloc[0] == 300


def test_kaplan_meier_without_events_stays_at_one_and_rejects_negative_times():
    table = kaplan_meier([1.0, 2.0], [False, False])
    assert table["survival"].tolist() == [1.0]
    with pytest.raises(ConfigError, match=">= 0"):
        kaplan_meier([-1.0, 2.0], [True, True])


# ------------------------------------------------- one implementation, from scikit-learn


@pytest.mark.parametrize("seed", range(6))
def test_classification_wrappers_equal_sklearn_on_random_data(seed: int) -> None:
    """The wrappers are scikit-learn's numbers, for bool, int and float labels, any size,
    ties and exact 0/1 probabilities included (log-loss after our documented clip)."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 5000))
    y = rng.random(n) < rng.uniform(0.05, 0.95)
    y[:2] = [True, False]  # both classes
    p = rng.random(n) ** rng.uniform(0.2, 3.0)
    p[rng.random(n) < 0.05] = rng.choice([0.0, 1.0])
    p = np.round(p, int(rng.integers(1, 6)))  # ties
    for labels in (y, y.astype(int), y.astype(float)):
        assert roc_auc(labels, p) == skm.roc_auc_score(y, p)
        assert pr_auc(labels, p) == skm.average_precision_score(y, p)
        assert brier(labels, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-15)
        given = np.clip(np.where(y, p, 1 - p), 1e-15, 1 - 1e-15)
        expected = skm.log_loss(np.ones(n, dtype=int), given, labels=[0, 1])
        assert log_loss(labels, p) == pytest.approx(expected, rel=1e-15)
        inside = (p > 1e-6) & (p < 1 - 1e-6)  # away from the clip, plain sklearn
        assert log_loss(labels[inside], p[inside]) == pytest.approx(
            skm.log_loss(y[inside], p[inside], labels=[0, 1]), rel=1e-12
        )


def test_classification_wrappers_accept_torch_tensors() -> None:
    y, p = _binary(500, 11)
    assert roc_auc(torch.as_tensor(y), torch.as_tensor(p)) == skm.roc_auc_score(y, p)
    assert log_loss(torch.as_tensor(y), torch.as_tensor(p)) == pytest.approx(log_loss(y, p))


def test_ndcg_and_recall_from_hits_by_hand_and_against_single_target() -> None:
    hits = np.array([[False, True, True], [False, False, False], [True, False, False]])
    n_targets = np.array([3, 2, 1])
    d = 1 / np.log2(np.arange(2, 5))
    np.testing.assert_allclose(
        ndcg_from_hits(hits, n_targets, per_user=True), [(d[1] + d[2]) / d.sum(), 0, 1]
    )
    np.testing.assert_allclose(recall_from_hits(hits, n_targets, per_user=True), [2 / 3, 0, 1])
    # one target per user: the multi-target NDCG of the hit matrix is ndcg_at_k of the ranks
    ranks = np.random.default_rng(3).integers(1, 15, size=200)
    one_hot = ranks[:, None] == np.arange(1, 11)[None, :]
    np.testing.assert_allclose(
        ndcg_from_hits(one_hot, np.ones(200, dtype=int), per_user=True),
        ndcg_at_k(ranks, 10, per_user=True),
    )
    assert recall_from_hits(one_hot, np.ones(200, dtype=int)) == hit_rate_at_k(ranks, 10)
    with pytest.raises(ConfigError, match="hits but 1 targets"):
        ndcg_from_hits([[True, True]], [1])
    with pytest.raises(ConfigError, match="boolean array"):
        ndcg_from_hits([[1, 0]], [1])
    with pytest.raises(ConfigError, match="one whole number of targets per user"):
        recall_from_hits([[True, False]], [1, 2])


def test_both_protocols_and_training_use_the_one_ranking_and_classification_code() -> None:
    """Leave-one-out, the temporal holdout, the bench and early stopping in models call the
    very functions of `ebbtide.metrics_core` that `ebbtide.evaluate.metrics` re-exports."""
    from ebbtide import metrics_core
    from ebbtide.evaluate import leave_one_out, metrics, temporal
    from ebbtide.models import neural, next_item

    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "ranking_metrics", "ndcg_at_k"):
        assert getattr(metrics, name) is getattr(metrics_core, name)
    assert leave_one_out.ranking_metrics is metrics_core.ranking_metrics
    assert temporal.metrics.ndcg_from_hits is metrics_core.ndcg_from_hits
    assert temporal.metrics.recall_from_hits is metrics_core.recall_from_hits
    assert next_item.ndcg_at_k is metrics_core.ndcg_at_k
    assert (neural.roc_auc, neural.log_loss) == (metrics_core.roc_auc, metrics_core.log_loss)
    ranks = np.array([1, 3, 11, 2])
    assert leave_one_out._scores(ranks, 10) == ranking_metrics(ranks, ks=(10,))


def test_no_second_auc_log_loss_or_ndcg_implementation_in_the_package() -> None:
    """The issue's bar as a test: only `metrics_core` computes a DCG discount or calls
    scikit-learn's classification metrics; everything else imports them from there."""
    import re
    from pathlib import Path

    import ebbtide

    root = Path(ebbtide.__file__).parent
    pattern = re.compile(
        r"(np|torch|math)\.log2\(|roc_auc_score|average_precision_score|brier_score_loss"
        r"|sklearn\.metrics import[^\n]*log_loss|def _?log_?loss|def _?(roc_)?auc\b"
    )
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "metrics_core.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
