"""Evaluation: what actually happened after an instant, to score models against."""

from ebbtide.evaluate.holdout import engagement_labels, purchase_labels
from ebbtide.evaluate.metrics import (
    brier,
    btyd_holdout_metrics,
    classification_metrics,
    concordance_index,
    expected_calibration_error,
    hit_rate_at_k,
    log_loss,
    mrr_at_k,
    ndcg_at_k,
    ndcg_at_k_multi,
    pr_auc,
    rank_of_targets,
    ranking_metrics,
    recall_at_k,
    reliability_table,
    roc_auc,
)

__all__ = [
    "brier",
    "btyd_holdout_metrics",
    "classification_metrics",
    "concordance_index",
    "engagement_labels",
    "expected_calibration_error",
    "hit_rate_at_k",
    "log_loss",
    "mrr_at_k",
    "ndcg_at_k",
    "ndcg_at_k_multi",
    "pr_auc",
    "purchase_labels",
    "rank_of_targets",
    "ranking_metrics",
    "recall_at_k",
    "reliability_table",
    "roc_auc",
]
