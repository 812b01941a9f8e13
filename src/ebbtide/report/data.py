"""What the report shows, as plain tables: computed by `report.pipeline`, drawn by `report.html`.

Kept apart from both so the numbers can be tested without drawing and the drawing without
training a model: every figure and table of the report reads one field of `ReportData`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ebbtide.evaluate.comparison import Comparison

__all__ = ["ReportData", "UserDrilldown"]


@dataclass(frozen=True)
class UserDrilldown:
    """One user's interest over time, for the drill-down section.

    Attributes
    ----------
    user_id, segment, action, reason : str
        The user (original id), the segment now, the planned action (``"none"`` when not
        contacted) and the segment's reason in words.
    curves : DataFrame
        ``ts`` (UTC datetime), ``category_id``, ``level`` (events/day the model expects at
        ``ts`` for that category): one row per (instant, top category).
    events : DataFrame
        ``ts``, ``category_id``, ``behavior``: the user's events in those categories.
    half_lives : dict
        Category id -> the user's interest half-life in hours at the end of the log.
    """

    user_id: str
    segment: str
    action: str
    reason: str
    curves: pd.DataFrame
    events: pd.DataFrame
    half_lives: dict[str, float]


@dataclass(frozen=True)
class ReportData:
    """Every number of the report.

    Attributes
    ----------
    title, source : str
        Report title; where the events came from (file and format, or store path).
    generated_at : str
        ISO instant the report was computed.
    model : str
        The model whose answers the report draws (the main model, normally ``neural``).
    cutoff, scored_at : str
        ISO instants: models were fitted on events before ``cutoff`` (the holdout starts
        there); users are scored, segmented and planned at ``scored_at`` (end of the log).
    overview : dict
        ``users, items, categories, events, first_event, last_event`` (ISO strings).
    events_by_day : DataFrame
        ``day`` (YYYY-MM-DD in `timezone`), ``behavior``, ``events``.
    decay_curves : DataFrame
        ``category_id``, ``hours`` after ``scored_at`` with no new events (0..),
        ``relative_interest`` (the category's users' summed interest relative to its value
        at 0 hours), for the top categories.
    category_half_lives : DataFrame
        ``category_id``, ``half_life_days`` (interest half-life, median over the category's
        users), ``half_life_low``, ``half_life_high`` (the model's 95% interval, NaN when
        it gives none), ``session_half_life_hours`` (NaN for a model with one time scale),
        ``users``.
    half_lives_days : Series
        Per (user, category) interest half-life in days (the distribution figure).
    return_curves : DataFrame
        ``hours`` after the cut-off, ``observed`` (Kaplan-Meier share of users returned),
        ``predicted`` (the model's mean P(return within that many hours)).
    return_calibration : DataFrame
        ``p_mean`` (mean predicted p_return in the bin), ``observed`` (share that returned),
        ``users``: equal-width bins of the holdout's p_return.
    return_horizon_hours : float
        The holdout horizon of the calibration plot.
    comparison : Comparison
        The `ebbtide evaluate` table on the same holdout.
    segments : DataFrame
        ``segment``, ``users``, ``share`` at ``scored_at``.
    segment_flows : DataFrame
        ``segment_before`` (at ``cutoff``), ``segment_now`` (at ``scored_at``), ``users``.
    early_warning : DataFrame
        `activate.segments.early_warning` between ``cutoff`` and ``scored_at`` (top rows,
        most alarming first, each with its ``reason``).
    plan_summary : dict
        `ReactivationPlan.summary()`.
    plan_by_action : DataFrame
        ``action, segment, users, cost, expected_conversions, value``.
    plan_contacts : DataFrame
        The first rows of the plan's contacted users (user_id, segment, action, items, ...).
    drilldowns : list of UserDrilldown
    campaign : dict, optional
        `CampaignAnalysis.to_dict()` when a campaign analysis was given.
    engagement : dict, optional
        `EngagementRates.to_dict()` (groups under k users left out) when the store has
        impressions, clicks or ratings and the report is not private: overall and per
        placement over the whole log, per segment (at the cut-off) over the events after it.
    timezone : str
        Time zone of the days of ``events_by_day``.
    plan_table : DataFrame, optional
        The whole plan, one row per user (`ReactivationPlan.table`), for export.
    notes : list of str
        What was assumed or left out, in words.
    privacy : dict
        How the count tables were released (`aggregates.Release.summary` plus ``notes``,
        one sentence per table); ``epsilon`` None means true counts with k-suppression.
    model_privacy : dict
        Per fitted family, its ``metrics_["privacy"]`` (how it was trained with
        differential privacy), or None when it was trained without.
    """

    title: str
    source: str
    generated_at: str
    model: str
    cutoff: str
    scored_at: str
    overview: dict[str, Any]
    events_by_day: pd.DataFrame
    decay_curves: pd.DataFrame
    category_half_lives: pd.DataFrame
    half_lives_days: pd.Series
    return_curves: pd.DataFrame
    return_calibration: pd.DataFrame
    return_horizon_hours: float
    comparison: Comparison
    segments: pd.DataFrame
    segment_flows: pd.DataFrame
    early_warning: pd.DataFrame
    plan_summary: dict[str, Any]
    plan_by_action: pd.DataFrame
    plan_contacts: pd.DataFrame
    drilldowns: list[UserDrilldown]
    campaign: dict[str, Any] | None = None
    engagement: dict[str, Any] | None = None
    plan_table: pd.DataFrame | None = None
    timezone: str = "UTC"
    notes: list[str] = field(default_factory=list)
    privacy: dict[str, Any] = field(default_factory=dict)
    model_privacy: dict[str, dict[str, Any] | None] = field(default_factory=dict)
