"""What a campaign did: the A/B table, uplift and Qini curves, and the value of a better plan.

Why one entry point: the questions come together after every campaign ("did it work, for
whom, and what would a targeted plan have bought?"), and each answer needs the others'
context: an uplift curve means little when the sample ratio is broken, an off-policy value
little without the logged mean beside it. `analyze_campaign` runs, on one validated log:

1. `ab.analyze_ab`: each arm against control on every outcome, with the SRM check;
2. per treatment arm, the uplift and Qini curves, AUUC/Qini (normalisation stated),
   uplift@10/20/30% and uplift by decile, for a score: a column of the log (e.g. the score
   the campaign was targeted with), or an out-of-fold uplift learned from ``features``
   (2-fold cross-fitting, so no row is scored by a model that saw it);
3. `off_policy.estimate_policy_value` for a proposed plan (a column of arms, or, with
   features, "each row's arm of highest positive out-of-fold uplift, else control").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ebbtide.activate import qini
from ebbtide.activate.ab import ABResult, analyze_ab
from ebbtide.activate.campaign_log import CampaignData
from ebbtide.activate.off_policy import PolicyValue, estimate_policy_value
from ebbtide.activate.uplift import build_learner
from ebbtide.errors import ConfigError
from ebbtide.jsonable import to_jsonable

__all__ = ["CURVE_POINTS", "ArmUplift", "CampaignAnalysis", "analyze_campaign"]

#: Curves are reported at this many evenly spaced fractions targeted (0%, 1%, ..., 100%).
CURVE_POINTS = 101
_FOLDS = 2


@dataclass(frozen=True)
class ArmUplift:
    """How well a score ranks one treatment arm's effect against control.

    Attributes
    ----------
    arm, outcome, score : str
        The arm, the outcome, and where the score came from.
    metrics : dict
        ``qini, qini_normalised, auuc, auuc_normalised, uplift_at_10pct, ...``.
    random : dict
        The same keys for random targeting.
    curves : DataFrame
        ``fraction, uplift, qini`` at `CURVE_POINTS` fractions.
    deciles : DataFrame
        `qini.uplift_by_decile`.
    """

    arm: str
    outcome: str
    score: str
    metrics: dict[str, float]
    random: dict[str, float]
    curves: pd.DataFrame
    deciles: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "arm": self.arm,
                "outcome": self.outcome,
                "score": self.score,
                "metrics": self.metrics,
                "random": self.random,
                "curves": self.curves.to_dict(orient="list"),
                "deciles": self.deciles.to_dict(orient="records"),
            }
        )


@dataclass(frozen=True)
class CampaignAnalysis:
    """Everything `analyze_campaign` found; `to_dict` for JSON, `to_markdown` for people.

    ``scores`` holds, per treatment arm, the ranking score of every kept row (in
    ``CampaignData.frame`` order); ``policy`` the arm the valued plan gives each row.
    """

    ab: ABResult
    uplift: list[ArmUplift]
    scores: dict[str, np.ndarray]
    policy: np.ndarray | None
    policy_source: str | None
    policy_values: list[PolicyValue]
    n_rows: int
    n_dropped: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        policy_counts = None
        if self.policy is not None:
            policy_counts = pd.Series(self.policy).value_counts().sort_index().to_dict()
        return to_jsonable(
            {
                "rows_used": self.n_rows,
                "rows_dropped": self.n_dropped,
                "ab": self.ab.to_dict(),
                "normalisation": qini.NORMALISATION,
                "uplift": [arm.to_dict() for arm in self.uplift],
                "policy": {"source": self.policy_source, "arms": policy_counts},
                "off_policy": [value.to_dict() for value in self.policy_values],
                "notes": list(self.notes),
            }
        )

    def to_markdown(self) -> str:
        lines = [f"Rows used: {self.n_rows:,} (dropped: {self.n_dropped:,})", ""]
        lines += [self.ab.to_markdown(), ""]
        if self.uplift:
            ks = [key for key in self.uplift[0].metrics if key.startswith("uplift_at_")]
            header = ["arm", "outcome", "score", "qini", "qini (norm.)", "auuc", *ks]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for arm in self.uplift:
                for name, numbers in (("model", arm.metrics), ("random", arm.random)):
                    score = arm.score if name == "model" else "random"
                    cells = [arm.arm, arm.outcome, score]
                    cells += [
                        f"{numbers[key]:.4g}" for key in ("qini", "qini_normalised", "auuc", *ks)
                    ]
                    lines.append("| " + " | ".join(cells) + " |")
            lines += ["", qini.NORMALISATION, ""]
        for value in self.policy_values:
            lines += [
                f"Off-policy value of the plan ({self.policy_source}) on {value.outcome!r}, "
                f"mean per user, {1 - value.alpha:.0%} bootstrap intervals "
                f"({value.n_matched:,} rows follow the plan):",
                "",
                "| estimator | value | interval |",
                "|---|---:|---|",
            ]
            for row in value.table.itertuples(index=False):
                lines.append(
                    f"| {row.estimator} | {row.value:.4g} | [{row.ci_low:.4g}, {row.ci_high:.4g}] |"
                )
            lines.append("")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def analyze_campaign(
    data: CampaignData,
    *,
    features: Sequence[str] | None = None,
    score_col: str | None = None,
    policy_col: str | None = None,
    uplift_outcome: str | None = None,
    learner: str = "x",
    expected_shares: dict[str, float] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    ks: Sequence[float] = (0.1, 0.2, 0.3),
) -> CampaignAnalysis:
    """A/B table, uplift curves and off-policy plan values for one validated campaign log.

    Parameters
    ----------
    data : CampaignData
        From `campaign_log.prepare_campaign`.
    features : sequence of str, optional
        Pre-campaign columns: an out-of-fold uplift score is learned from them (per arm) and
        used for the curves, the default plan and the doubly robust outcome model.
    score_col : str, optional
        A column of the log to rank by instead (higher = more uplift expected).
    policy_col : str, optional
        A column holding the arm a proposed plan gives each row; its value is estimated.
    uplift_outcome : str, optional
        Outcome the curves and the learned plan use; default the first of ``data.outcomes``.
    learner : {"t", "x", "dr"}
        Meta-learner for the learned score.
    expected_shares : dict, optional
        Planned arm shares for the sample-ratio check (default equal).
    n_bootstrap, seed : int
        Bootstrap resamples for the off-policy intervals; seed of folds, learners, resamples.
    ks : sequence of float
        Shares for uplift@k.

    Returns
    -------
    CampaignAnalysis

    Raises
    ------
    ConfigError
        Unknown columns or outcome, or a policy naming arms the log does not have.
    """
    outcome = uplift_outcome or data.outcomes[0]
    if outcome not in data.outcomes:
        raise ConfigError(f"uplift outcome {outcome!r} is not one of {data.outcomes}")
    feature_list = list(features or [])
    for name in [*feature_list, score_col, policy_col]:
        if name is not None and name not in data.frame.columns:
            raise ConfigError(
                f"column {name!r} is not in the campaign log; available: {list(data.frame)}"
            )
    notes: list[str] = []
    ab = analyze_ab(data, expected_shares=expected_shares)
    y = data.outcome_values(outcome)

    scores: dict[str, np.ndarray] = {}
    if score_col is not None:
        column = pd.to_numeric(data.frame[score_col], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(column).all():
            raise ConfigError(f"score column {score_col!r} must be a finite number on every row")
        scores = {arm: column for arm in data.treatments}
        source = f"column {score_col}"
    elif feature_list:
        scores = {
            arm: _out_of_fold_uplift(data, arm, y, feature_list, learner, seed)
            for arm in data.treatments
        }
        source = f"{learner}-learner on {', '.join(feature_list)}, {_FOLDS}-fold out-of-fold"
    else:
        notes.append(
            "no features and no score column: uplift curves need a ranking, give one of them"
        )
    uplift = [_arm_uplift(data, arm, y, outcome, scores[arm], source, ks) for arm in sorted(scores)]

    policy, policy_source = None, None
    if policy_col is not None:
        policy = data.frame[policy_col].astype(str).to_numpy()
        policy_source = f"column {policy_col}"
    elif feature_list and score_col is None:
        stacked = np.column_stack([scores[arm] for arm in data.treatments])
        best = stacked.argmax(axis=1)
        treat = stacked[np.arange(len(best)), best] > 0
        policy = np.where(treat, np.array(data.treatments)[best], data.control)
        policy_source = f"highest positive learned uplift on {outcome}, else {data.control}"
    values = []
    if policy is not None:
        values = [
            estimate_policy_value(
                data,
                name,
                policy,
                features=feature_list or None,
                n_bootstrap=n_bootstrap,
                seed=seed,
            )
            for name in data.outcomes
        ]
    return CampaignAnalysis(
        ab=ab,
        uplift=uplift,
        scores=scores,
        policy=policy,
        policy_source=policy_source,
        policy_values=values,
        n_rows=len(data.frame),
        n_dropped=len(data.dropped),
        notes=list(data.notes) + ab.notes + notes,
    )


def _out_of_fold_uplift(
    data: CampaignData,
    arm: str,
    y: np.ndarray,
    features: list[str],
    learner: str,
    seed: int,
) -> np.ndarray:
    """Predicted effect of `arm` vs control for every row, each by a model that never saw it."""
    rows = np.isin(data.arm, [arm, data.control])
    fold = np.random.default_rng(seed).integers(0, _FOLDS, size=len(y))
    x = data.frame[features]
    treated = data.arm == arm
    # The logged propensity of a row's own arm does not give P(arm | arm or control, x),
    # so the learners estimate that from the features (propensity=None).
    tau = np.empty(len(y))
    for k in range(_FOLDS):
        train = rows & (fold != k)
        model = build_learner(learner, random_state=seed)
        model.fit(x[train], treated[train], y[train], None)
        tau[fold == k] = model.predict(x[fold == k])
    return tau


def _arm_uplift(
    data: CampaignData,
    arm: str,
    y: np.ndarray,
    outcome: str,
    score: np.ndarray,
    source: str,
    ks: Sequence[float],
) -> ArmUplift:
    rows = np.isin(data.arm, [arm, data.control])
    s, t, target = score[rows], data.arm[rows] == arm, y[rows]
    fraction, gain = qini.uplift_curve(s, t, target)
    _, q = qini.qini_curve(s, t, target)
    grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    curves = pd.DataFrame(
        {
            "fraction": grid,
            "uplift": np.interp(grid, fraction, gain),
            "qini": np.interp(grid, fraction, q),
        }
    )
    return ArmUplift(
        arm=arm,
        outcome=outcome,
        score=source,
        metrics=qini.uplift_metrics(s, t, target, ks),
        random=qini.random_targeting_baseline(t, target, ks),
        curves=curves,
        deciles=qini.uplift_by_decile(s, t, target, bins=min(10, int(rows.sum()))),
    )
