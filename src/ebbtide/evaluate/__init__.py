"""Evaluation: what actually happened after an instant, to score models against."""

from ebbtide.evaluate.holdout import engagement_labels, purchase_labels

__all__ = ["engagement_labels", "purchase_labels"]
