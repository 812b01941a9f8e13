"""Segments and the churn early warning, read off a model's answers at one instant.

Why here and not in the models: a segment is a business reading of the predictions (which
thresholds count as "at risk" is a shop's choice), so it works on the tables any family's
`score_users` returns, and every user's segment comes with the numbers that put it there.

Rules, first match wins (thresholds in `SegmentRules`):

- **lost**: ``p_return < lost_below``;
- **dormant**: ``p_return < dormant_below`` (unlikely to return unaided, not lost);
- **at_risk**: ``p_return < at_risk_below``;
- **cooling**: projected interest change over the horizon ``≤ cooling_change`` — the
  interest is falling: with no new events, ``Σ_c (baseline_c + excitation_c · 2^(−H / h_c))``
  over ``Σ_c level_c``, minus 1;
- **active**: everyone else.

A family without `interest` (btyd, gbdt) gets no *cooling*: its ``interest_change`` is NaN.

Early warning
-------------
`early_warning` ranks the users scored at both ``before`` and ``at`` by how far their
interest has fallen under their own usual level, most alarming first:

- **interest vs usual** at an instant is ``Σ_c level_c / Σ_c usual_c`` over the user's
  categories in `interest` (``level``: the intensity now; ``usual``: the user's average
  rate in the category over the time they have been seen, given by `neural`; families
  without it, such as `decay`, use ``baseline``, the long-run level that never fades).
  1 is the usual level, 0.25 a quarter of it. It is
  ``interest_vs_usual`` at ``at`` and ``interest_vs_usual_before`` at ``before``.
- **Rule**: rank by ``interest_vs_usual`` in whole percent, as the reason shows it
  (lowest first); ties by its relative change since ``before`` (largest fall first), then
  by the ``p_return`` change (largest drop first), then by ``user_id``. In `decay` the
  level is the baseline plus a non-negative excitation, so the ratio never goes under
  100%: a fading user's ratio falls back towards 100%, and among the users there the
  fall since ``before`` decides.
- Users whose usual level is 0 or unknown (no categories, ``Σ baseline = 0``) go last,
  among themselves by the ``p_return`` change.
- **A family without interest** (btyd; gbdt, whose interest has no level) is ranked by
  the rise of the expected days to the next event (``expected_return_days`` at ``at``
  minus at ``before``, largest rise first) when both scorings have it, else by the
  ``p_return`` change (largest drop first); ties by the ``p_return`` change, then
  ``user_id``.

Each row's ``reason`` says which rule ranked it and with which numbers, e.g. "interest at
23% of usual (was 80% at 2017-11-30T16:00+00:00); fell most in 4521 (-85%), 1032 (-60%);
P(return 1 d) 0.62 -> 0.41". Why not the ``p_return`` change alone: over a short horizon
a busy user's P(return) stays near 1 while their interest fades, so its changes are mostly
noise; the level against the user's own usual is what a fading user lowers first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from ebbtide.errors import ConfigError
from ebbtide.features.history import snapshot
from ebbtide.models.base import Model
from ebbtide.models.scoring import score_users
from ebbtide.store import EventStore

__all__ = [
    "SEGMENTS",
    "SegmentRules",
    "assign_segments",
    "early_warning",
    "interest_summary",
    "segment_of",
]

#: Segment names, most engaged first.
SEGMENTS = ("active", "cooling", "at_risk", "dormant", "lost")


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentRules:
    """Thresholds of the segment rules (see the module docstring).

    lost_below, dormant_below, at_risk_below : float
        Increasing cut-offs on ``p_return`` over the scoring horizon.
    cooling_change : float
        Projected relative interest change at or below which an otherwise healthy user is
        cooling (−0.3: the interest falls by 30% or more over the horizon).
    """

    lost_below: float = 0.05
    dormant_below: float = 0.2
    at_risk_below: float = 0.5
    cooling_change: float = -0.3

    def __post_init__(self) -> None:
        cuts = (self.lost_below, self.dormant_below, self.at_risk_below)
        if not all(isinstance(c, int | float) and 0.0 <= c <= 1.0 for c in cuts) or not (
            cuts[0] <= cuts[1] <= cuts[2]
        ):
            raise ConfigError(
                f"SegmentRules: need 0 <= lost_below <= dormant_below <= at_risk_below <= 1,"
                f" got {cuts}"
            )
        if not isinstance(self.cooling_change, int | float) or not -1.0 <= self.cooling_change <= 0:
            raise ConfigError(
                f"SegmentRules.cooling_change={self.cooling_change!r}: use a number in [-1, 0]"
            )


def interest_summary(categories: pd.DataFrame | None, horizon_days: float) -> pd.DataFrame:
    """Per user: ``interest_now`` (events/day over touched categories) and ``interest_change``,
    the relative change of that interest over the horizon if nothing new happens."""
    if categories is None or categories.empty:
        return pd.DataFrame(columns=["user_id", "interest_now", "interest_change"])
    faded = categories["excitation"] * np.exp2(
        -horizon_days / categories["half_life_days"].clip(lower=1e-9)
    )
    frame = pd.DataFrame(
        {
            "user_id": categories["user_id"],
            "now": categories["level"],
            "later": categories["baseline"] + faded,
        }
    )
    totals = frame.groupby("user_id", sort=False)[["now", "later"]].sum()
    now, later = totals["now"].to_numpy(), totals["later"].to_numpy()
    change = np.divide(later, now, out=np.ones_like(now), where=now > 0) - 1.0
    return pd.DataFrame(
        {
            "user_id": totals.index,
            "interest_now": now,
            "interest_change": change,
        }
    )


def segment_of(
    p_return: float, interest_change: float, rules: SegmentRules, days: float
) -> tuple[str, str]:
    """One user's segment and its reason (the rules above; a NaN change is no cooling).

    Examples
    --------
    >>> segment_of(0.9, -0.5, SegmentRules(), 1.0)
    ('cooling', 'interest -50% over 1 d (<= -30%)')
    """
    text = f"p_return {p_return:.2f}"
    for segment, cut in (
        ("lost", rules.lost_below),
        ("dormant", rules.dormant_below),
        ("at_risk", rules.at_risk_below),
    ):
        if p_return < cut:
            return segment, f"{text} < {cut:g} over {days:g} d"
    if interest_change <= rules.cooling_change:
        return "cooling", (
            f"interest {interest_change:+.0%} over {days:g} d (<= {rules.cooling_change:+.0%})"
        )
    trend = (
        "" if np.isnan(interest_change) else f", interest {interest_change:+.0%} over {days:g} d"
    )
    return "active", f"{text} >= {rules.at_risk_below:g}{trend}"


def assign_segments(
    users: pd.DataFrame,
    categories: pd.DataFrame | None,
    *,
    horizon: timedelta,
    rules: SegmentRules | None = None,
) -> pd.DataFrame:
    """A segment and its reason for every user of `users` (a `score_users` table).

    Returns
    -------
    DataFrame
        user_id, segment, p_return, interest_now, interest_change, reason.
    """
    rules = rules or SegmentRules()
    if "p_return" not in users.columns:
        raise ConfigError(
            "segments need p_return: score with a model that answers it (neural, decay, gbdt, btyd)"
        )
    summary = interest_summary(categories, horizon / timedelta(days=1))
    table = users[["user_id", "p_return"]].merge(summary, on="user_id", how="left")
    days = horizon / timedelta(days=1)
    decided = [
        segment_of(p, c, rules, days)
        for p, c in zip(
            table["p_return"].to_numpy(dtype=float),
            table["interest_change"].to_numpy(dtype=float),
            strict=True,
        )
    ]
    table["segment"] = [segment for segment, _ in decided]
    table["reason"] = [text for _, text in decided]
    columns = ["user_id", "segment", "p_return", "interest_now", "interest_change", "reason"]
    return table[columns]


def early_warning(
    model: Model | None,
    store: EventStore | None,
    *,
    before: datetime,
    at: datetime,
    horizon: timedelta,
    top: int | None = 100,
    faded_categories: int = 3,
    earlier: tuple[pd.DataFrame, pd.DataFrame | None] | None = None,
    now: tuple[pd.DataFrame, pd.DataFrame | None] | None = None,
) -> pd.DataFrame:
    """Users whose interest fell furthest under their own usual level, ranked, each with
    the reason (rules in the module docstring).

    Both scorings use only events before their own instant, and the model must be fitted at
    or before `before` (a later fit knows what happened after `before`: the query is
    refused). One model scoring both instants shows the change the users' own events made.
    `earlier` and `now`, `score_users` results at `before` and `at` with the same horizon
    (each from a model fitted no later than its instant), replace the scoring; then `model`
    and `store` may be None. Users need history before `before`.

    Returns
    -------
    DataFrame
        rank, user_id, p_return_before, p_return_now, p_return_change, interest_before,
        interest_now, interest_change (relative), faded_categories (list of category ids
        whose interest fell the most), faded_change (list of their relative changes),
        interest_vs_usual_before, interest_vs_usual (Σ level / Σ baseline at `before` and
        `at`; NaN without interest or usual level), expected_return_days_before and
        expected_return_days_now (when both scorings have them), reason (plain text).
    """
    if not before < at:
        raise ConfigError(f"early warning needs before < at, got {before} and {at}")
    if (earlier is None or now is None) and (model is None or store is None):
        raise ConfigError("early warning needs a model and a store, or both scorings")
    if earlier is None:
        earlier = score_users(model, snapshot(store, at=before), horizon=horizon, k=1)
    if now is None:
        now = score_users(model, snapshot(store, at=at), horizon=horizon, k=1)
    return _compare(
        earlier, now, before=before, horizon=horizon, top=top, faded_categories=faded_categories
    )


def _compare(
    earlier: tuple[pd.DataFrame, pd.DataFrame | None],
    now: tuple[pd.DataFrame, pd.DataFrame | None],
    *,
    before: datetime,
    horizon: timedelta,
    top: int | None = 100,
    faded_categories: int = 3,
) -> pd.DataFrame:
    """The early-warning list from two `score_users` results."""
    (earlier_users, earlier_cats), (now_users, now_cats) = earlier, now
    table = earlier_users[["user_id", "p_return"]].merge(
        now_users[["user_id", "p_return"]], on="user_id", suffixes=("_before", "_now")
    )
    table["p_return_change"] = table["p_return_now"] - table["p_return_before"]
    days = horizon / timedelta(days=1)
    level_before = interest_summary(earlier_cats, days)[["user_id", "interest_now"]]
    level_now = interest_summary(now_cats, days)[["user_id", "interest_now"]]
    levels = level_before.merge(level_now, on="user_id", how="outer", suffixes=("_b", "_n"))
    levels = levels.rename(
        columns={"interest_now_b": "interest_before", "interest_now_n": "interest_now"}
    )
    levels["interest_change"] = levels["interest_now"] / levels["interest_before"] - 1
    table = table.merge(levels, on="user_id", how="left")
    table = table.merge(_faded(earlier_cats, now_cats, faded_categories), on="user_id", how="left")
    usual_before = _vs_usual(earlier_cats).rename("interest_vs_usual_before")
    usual_now = _vs_usual(now_cats).rename("interest_vs_usual")
    table = table.merge(usual_before, on="user_id", how="left")
    table = table.merge(usual_now, on="user_id", how="left")
    ert = "expected_return_days"
    has_ert = ert in earlier_users.columns and ert in now_users.columns
    if has_ert:
        table = table.merge(
            earlier_users[["user_id", ert]].merge(
                now_users[["user_id", ert]], on="user_id", suffixes=("_before", "_now")
            ),
            on="user_id",
            how="left",
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        usual_change = table["interest_vs_usual"] / table["interest_vs_usual_before"] - 1
    if table["interest_vs_usual"].notna().any():
        mode = "interest"
        # whole percent, as the reason shows it: decay's level never falls under its
        # baseline, so many users sit at 100% and the fall since `before` orders them
        keys = [table["interest_vs_usual"].round(2), usual_change]
    elif has_ert:
        mode = "return_time"
        keys = [-(table[f"{ert}_now"] - table[f"{ert}_before"])]
    else:
        mode = "p_return"
        keys = []
    order = pd.DataFrame(
        {f"k{i}": key.to_numpy(dtype=float) for i, key in enumerate(keys)}
        | {"p": table["p_return_change"].to_numpy(dtype=float), "u": table["user_id"]}
    )
    order = order.sort_values(list(order.columns), kind="stable", na_position="last")
    table = table.loc[order.index].reset_index(drop=True)
    table["reason"] = [
        _reason(row, mode, before=before, days=days) for row in table.to_dict(orient="records")
    ]
    if top is not None:
        table = table.head(top)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def _vs_usual(categories: pd.DataFrame | None) -> pd.Series:
    """Per user, ``Σ_c level_c / Σ_c usual_c`` (``baseline`` without ``usual``); NaN where
    the sum of usual levels is not positive or a level is unknown (gbdt's interest has
    none)."""
    if categories is None or categories.empty:
        return pd.Series(dtype=float, index=pd.Index([], name="user_id"))
    reference = "usual" if "usual" in categories.columns else "baseline"
    sums = categories.groupby("user_id", sort=False)[["level", reference]].sum(min_count=1)
    level, usual = sums["level"].to_numpy(dtype=float), sums[reference].to_numpy(dtype=float)
    ok = np.isfinite(level) & np.isfinite(usual) & (usual > 0)
    ratio = np.divide(level, usual, out=np.full(level.shape, np.nan), where=ok)
    return pd.Series(ratio, index=sums.index)


def _times(ratio: float) -> str:
    """A ratio to the usual level as people read it: 23%, 250%, then 14x."""
    return f"{ratio:.0%}" if ratio < 10 else f"{ratio:.0f}x"


def _reason(row: dict, mode: str, *, before: datetime, days: float) -> str:
    """One user's line: what ranked them, with the numbers (rules in the module docstring)."""
    p_text = f"P(return {days:g} d) {row['p_return_before']:.2f} -> {row['p_return_now']:.2f}"
    if mode == "interest":
        ratio, earlier = row["interest_vs_usual"], row["interest_vs_usual_before"]
        if not np.isfinite(ratio):
            return f"usual interest level is 0 or unknown: ranked last, by the {p_text}"
        was = _times(earlier) if np.isfinite(earlier) else "unknown"
        then = before.isoformat(timespec="minutes")
        parts = [f"interest at {_times(ratio)} of usual (was {was} at {then})"]
        faded = row.get("faded_categories")
        if isinstance(faded, list) and faded:
            falls = ", ".join(
                f"{category} ({change:+.0%})"
                for category, change in zip(faded, row["faded_change"], strict=True)
            )
            parts.append(f"fell most in {falls}")
        return "; ".join([*parts, p_text])
    if mode == "return_time":
        then, later = row["expected_return_days_before"], row["expected_return_days_now"]
        return (
            "no interest per category from this model: ranked by the rise in expected days"
            f" to return, {then:.1f} -> {later:.1f} d; {p_text}"
        )
    return f"no interest per category from this model: ranked by the change in {p_text}"


def _faded(earlier: pd.DataFrame | None, now: pd.DataFrame | None, n: int) -> pd.DataFrame:
    """Per user, the `n` categories whose level fell the most (relative), with the change."""
    if earlier is None or now is None:
        return pd.DataFrame(columns=["user_id", "faded_categories", "faded_change"])
    pairs = earlier[["user_id", "category_id", "level"]].merge(
        now[["user_id", "category_id", "level"]],
        on=["user_id", "category_id"],
        suffixes=("_b", "_n"),
    )
    pairs = pairs[pairs["level_b"] > 0]
    pairs["change"] = pairs["level_n"] / pairs["level_b"] - 1
    pairs = pairs[pairs["change"] < 0].sort_values(
        ["user_id", "change", "category_id"], kind="stable"
    )
    top = pairs.groupby("user_id", sort=False).head(n)
    return (
        top.groupby("user_id", sort=False)
        .agg(faded_categories=("category_id", list), faded_change=("change", list))
        .reset_index()
    )
