"""Click-through, conversion and satisfaction: what people did with what they were shown.

Why its own module: an activation (a recommendation shown, a message sent) is judged by
how often it was clicked, how often a click became a purchase and how the people it
reached rated what they got. `campaign analyze`, `evaluate` and the report all need those
numbers, per placement, campaign arm and segment, with intervals that do not pretend a
person's tenth impression is news.

The funnel, one impression at a time:

1. **Impression → click.** A click is matched to an impression of the same user and item
   (an item-less click, e.g. on a message, to an item-less impression) and the same
   placement when both name one, shown at most `RatesConfig.click_window` before it (the
   same instant counts). Clicks are taken in time order and each takes the latest
   impression not yet taken (last touch), so an impression is clicked at most once and
   CTR ≤ 1. A click no impression explains (nothing shown, shown too long before, or a
   second click on one impression) is an *unattributed click*, counted apart.
2. **Click → conversion.** A buy by the same user of the clicked item (of any item, for an
   item-less click) at most `RatesConfig.attribution_window` after the click converts it;
   each buy goes to the latest matched click before it, so conversions ≤ buys.

Rates: CTR = clicks / impressions, conversion = converted clicks / clicks, buys per
impression = converted clicks / impressions; satisfaction = the mean of the ``rate``
values, with the number of ratings.

Intervals (95% by default). One user's impressions are not independent (some people click
everything), and campaign arms are assigned per user, so by default every interval is
**user-clustered** (`RatesConfig.cluster_by_user`):

- a proportion gets the Wilson score interval on its *effective sample size* n / deff,
  where the design effect deff is the user-clustered variance of the ratio (the delta
  method on per-user sums: ``G/(G−1) · Σ_u (y_u − p·n_u)² / N²`` over G users and N
  trials) over the binomial one ``p(1−p)/N``, floored at 1. This is the survey
  statisticians' effective-sample-size adjustment (Kish; Korn & Graubard 1998 apply it to
  Clopper–Pearson); Wilson keeps the interval inside [0, 1] and non-degenerate at 0/n and
  n/n, where the delta method alone gives [0, 0]. At 0/n and n/n, where deff is 0/0,
  deff = 1; with one user, n_eff = 1.
- a mean rating gets a t interval with the clustered standard error and G − 1 degrees of
  freedom (with one rating per user this is the textbook t interval);
- an arm against control gets the normal interval of the difference, the two clustered
  variances added (arms hold disjoint users).

With ``cluster_by_user=False`` impressions, clicks and ratings are treated as independent:
the plain Wilson interval (statsmodels' ``proportion_confint(method="wilson")``) and the
textbook t interval, narrower whenever users differ from one another.

Examples
--------
>>> ts = pd.Timestamp("2024-05-01 12:00", tz="UTC")
>>> events = pd.DataFrame({
...     "user_id": ["u1", "u1", "u1", "u2"], "item_id": ["i1", "i1", "i1", "i1"],
...     "behavior": ["impression", "click", "buy", "impression"],
...     "ts": [ts, ts + pd.Timedelta(minutes=2), ts + pd.Timedelta(hours=3), ts],
...     "placement": ["home", "home", None, "home"], "value": None})
>>> rates = engagement_rates(events)
>>> rates.funnel[["by", "group", "impressions", "clicks", "conversions"]].to_dict("split")["data"]
[['overall', 'all', 2, 1, 1], ['placement', 'home', 2, 1, 1]]
>>> float(rates.funnel.at[0, "ctr"]), float(rates.funnel.at[0, "conversion"])
(0.5, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numba
import numpy as np
import pandas as pd
from scipy import stats

from ebbtide.errors import ConfigError
from ebbtide.jsonable import to_jsonable
from ebbtide.schema import BEHAVIORS, Behavior
from ebbtide.store import EventStore

__all__ = [
    "FUNNEL_COLUMNS",
    "RATES",
    "SATISFACTION_COLUMNS",
    "EngagementRates",
    "RatesConfig",
    "engagement_events",
    "engagement_rates",
    "format_rate",
    "format_value",
    "wilson_interval",
]

_IMPRESSION, _CLICK, _BUY, _RATE = Behavior.IMPRESSION, Behavior.CLICK, Behavior.BUY, Behavior.RATE
_KNOWN = frozenset(b.value for b in BEHAVIORS)
#: The label of an impression or click without a placement, in the per-placement rows.
NO_PLACEMENT = "(none)"

#: Rates of the funnel table: (name, numerator, denominator).
RATES = (
    ("ctr", "clicks", "impressions"),
    ("conversion", "conversions", "clicks"),
    ("buys_per_impression", "conversions", "impressions"),
)
FUNNEL_COLUMNS = [
    "by",
    "group",
    "users",
    "impressions",
    "clicks",
    "unattributed_clicks",
    "conversions",
    *(f"{name}{end}" for name, _, _ in RATES for end in ("", "_low", "_high")),
]
SATISFACTION_COLUMNS = [
    "by",
    "group",
    "users",
    "ratings",
    "mean_rating",
    "mean_rating_low",
    "mean_rating_high",
]
_EFFECT_COLUMNS = [
    "arm",
    "metric",
    "control",
    "control_value",
    "arm_value",
    "diff",
    "diff_low",
    "diff_high",
]
_US = pd.Timedelta(microseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class RatesConfig:
    """How clicks and buys are attributed, and how sure the intervals are.

    Parameters
    ----------
    click_window : timedelta
        A click counts for an impression shown at most this long before it.
    attribution_window : timedelta
        A buy converts a click made at most this long before it.
    alpha : float
        Intervals cover ``1 − alpha``.
    cluster_by_user : bool
        User-clustered intervals (the default, see the module docstring); False treats
        every impression, click and rating as independent.
    """

    click_window: timedelta = timedelta(hours=1)
    attribution_window: timedelta = timedelta(days=1)
    alpha: float = 0.05
    cluster_by_user: bool = True

    def __post_init__(self) -> None:
        for name in ("click_window", "attribution_window"):
            window = getattr(self, name)
            if not isinstance(window, timedelta) or window < timedelta(0):
                raise ConfigError(f"{name}={window!r}: use a duration >= 0, e.g. 1h or 1d")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha={self.alpha!r}: use a level in (0, 1), e.g. 0.05")

    @property
    def follow(self) -> timedelta:
        """How long after an impression its click and that click's buy may come."""
        return self.click_window + self.attribution_window

    def interval_method(self) -> str:
        """The intervals in words, for tables and JSON."""
        level = f"{1 - self.alpha:.0%}"
        if self.cluster_by_user:
            return (
                f"{level} intervals clustered by user: Wilson on the effective sample size"
                " (n / design effect) for rates, t with users − 1 df for mean ratings,"
                " normal for differences"
            )
        return (
            f"{level} intervals treating impressions, clicks and ratings as independent:"
            " Wilson for rates, t for mean ratings, normal for differences"
        )


@dataclass(frozen=True)
class EngagementRates:
    """CTR, conversion and satisfaction per group; `to_dict` for JSON, `to_markdown` for people.

    Attributes
    ----------
    funnel : DataFrame
        `FUNNEL_COLUMNS`: one row per ``by`` (``overall``, ``placement``, ``arm``,
        ``segment``) and ``group``; ``users`` saw an impression in the group;
        ``unattributed_clicks`` are counted apart from ``clicks`` (see the module
        docstring). Empty without impressions.
    satisfaction : DataFrame
        `SATISFACTION_COLUMNS` per ``by`` (``overall``, ``arm``, ``segment``,
        ``category``). Empty without ratings.
    arm_effects : DataFrame
        ``arm, metric, control, control_value, arm_value, diff, diff_low, diff_high``: each
        arm minus the control arm on ctr, conversion, buys_per_impression and mean_rating
        (only when a control was named).
    config : RatesConfig
    notes : list of str
    """

    funnel: pd.DataFrame
    satisfaction: pd.DataFrame
    arm_effects: pd.DataFrame
    config: RatesConfig
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when there was nothing to measure: no impressions, clicks or ratings."""
        stray = self.funnel.empty or not self.funnel["unattributed_clicks"].any()
        return self.funnel.empty and self.satisfaction.empty and stray

    def without_small_groups(self, min_users: int) -> EngagementRates:
        """A copy without the groups of fewer than `min_users` users (and their effects),
        saying how many rows were left out: what a report may publish."""
        funnel = self.funnel[self.funnel["users"] >= min_users]
        satisfaction = self.satisfaction[self.satisfaction["users"] >= min_users]
        kept_arms = set(funnel.loc[funnel["by"] == "arm", "group"])
        kept_arms |= set(satisfaction.loc[satisfaction["by"] == "arm", "group"])
        effects = self.arm_effects[
            self.arm_effects["arm"].isin(kept_arms) & self.arm_effects["control"].isin(kept_arms)
        ]
        dropped = len(self.funnel) - len(funnel) + len(self.satisfaction) - len(satisfaction)
        notes = list(self.notes)
        if dropped:
            notes.append(f"{dropped} group(s) of fewer than {min_users} users left out.")
        return EngagementRates(
            funnel=funnel.reset_index(drop=True),
            satisfaction=satisfaction.reset_index(drop=True),
            arm_effects=effects.reset_index(drop=True),
            config=self.config,
            notes=notes,
        )

    def method(self) -> str:
        """The attribution windows and the intervals, in one sentence."""
        return (
            f"Clicks within {_duration(self.config.click_window)} of an impression, buys"
            f" within {_duration(self.config.attribution_window)} of a click;"
            f" {self.config.interval_method()}."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the windows, the interval method, the three tables (NaN as null)."""
        return to_jsonable(
            {
                "click_window_hours": self.config.click_window / timedelta(hours=1),
                "attribution_window_hours": self.config.attribution_window / timedelta(hours=1),
                "alpha": self.config.alpha,
                "intervals": self.config.interval_method(),
                "funnel": self.funnel.to_dict(orient="records"),
                "satisfaction": self.satisfaction.to_dict(orient="records"),
                "arm_effects": self.arm_effects.to_dict(orient="records"),
                "notes": list(self.notes),
            }
        )

    def to_markdown(self) -> str:
        """The three tables in Markdown, the method and the notes."""
        lines: list[str] = []
        if not self.funnel.empty:
            lines += [
                "| by | group | users | impressions | clicks | unattributed | conversions "
                "| CTR | conversion | buys/impression |",
                "|---|---|---:|---:|---:|---:|---:|---|---|---|",
            ]
            for row in self.funnel.to_dict(orient="records"):
                cells = [row["by"], str(row["group"])]
                cells += [
                    f"{row[c]:,}" for c in ("users", "impressions", "clicks", "unattributed_clicks")
                ]
                cells += [f"{row['conversions']:,}"]
                cells += [format_rate(row, name) for name, _, _ in RATES]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        if not self.satisfaction.empty:
            lines += ["| by | group | users | ratings | mean rating |", "|---|---|---:|---:|---|"]
            for row in self.satisfaction.to_dict(orient="records"):
                cells = [row["by"], str(row["group"]), f"{row['users']:,}", f"{row['ratings']:,}"]
                cells.append(format_rate(row, "mean_rating", percent=False))
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        if not self.arm_effects.empty:
            lines += [
                "| arm | metric | control | control value | arm value | arm − control |",
                "|---|---|---|---:|---:|---|",
            ]
            for row in self.arm_effects.to_dict(orient="records"):
                percent = row["metric"] != "mean_rating"
                value = format_rate(row, "diff", percent=percent, signed=True)
                lines.append(
                    f"| {row['arm']} | {row['metric']} | {row['control']} | "
                    f"{format_value(row['control_value'], percent)} | "
                    f"{format_value(row['arm_value'], percent)} | {value} |"
                )
            lines.append("")
        if lines:
            lines.append(self.method())
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def format_rate(
    row: Mapping[str, Any], name: str, *, percent: bool = True, signed: bool = False
) -> str:
    """``value [low, high]`` of column `name` and its interval in `row` ("–" when NaN)."""
    value = row[name]
    if value is None or value != value:
        return "–"
    low, high = row[f"{name}_low"], row[f"{name}_high"]
    sign = "+" if signed else ""
    fmt = (lambda v: f"{v:{sign}.2%}") if percent else (lambda v: f"{v:{sign}.2f}")
    if low is None or low != low:
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def format_value(value: Any, percent: bool = True) -> str:
    """A rate as a percent (or a rating with 2 decimals); "–" when missing."""
    if value is None or value != value:
        return "–"
    return f"{value:.2%}" if percent else f"{value:.2f}"


def _duration(window: timedelta) -> str:
    hours = window / timedelta(hours=1)
    return f"{hours / 24:g} d" if hours >= 24 and hours % 24 == 0 else f"{hours:g} h"


def wilson_interval(
    successes: np.ndarray | float, trials: np.ndarray | float, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of a proportion; `trials` may be an effective (real) size.

    NaN where ``trials <= 0``.

    Examples
    --------
    >>> low, high = wilson_interval(0, 10)
    >>> float(low), round(float(high), 4)
    (0.0, 0.2775)
    """
    x = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    z2 = stats.norm.ppf(1 - alpha / 2) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n > 0, x / n, np.nan)
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = np.sqrt(z2 * p * (1 - p) / n + z2**2 / (4 * n**2)) / (1 + z2 / n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def engagement_rates(
    events: pd.DataFrame,
    *,
    arms: Mapping[str, str] | pd.Series | None = None,
    segments: Mapping[str, str] | pd.Series | None = None,
    control: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    config: RatesConfig | None = None,
) -> EngagementRates:
    """CTR, conversion and satisfaction overall, per placement, arm and segment.

    Parameters
    ----------
    events : DataFrame
        ``user_id``, ``behavior`` (canonical words), ``ts`` (timezone-aware), and, where
        they apply, ``item_id``, ``placement`` (free text, NA for none), ``value`` (the
        rating of a ``rate`` event), ``category_id`` (satisfaction per category). Rows of
        other behaviours are ignored, except ``buy``, which converts clicks.
    arms, segments : mapping or Series, optional
        user_id -> campaign arm / segment. Users not in it are left out of those rows.
    control : str, optional
        The control arm: each other arm's difference to it, in ``arm_effects``.
    since, until : datetime, optional
        Count impressions and ratings in ``[since, until)`` (and the clicks and buys that
        follow them, even after `until`); events outside only complete the funnels
        (an impression just before `since` keeps its click from looking unattributed).
        `engagement_events` reads the margins this needs.
    config : RatesConfig, optional

    Returns
    -------
    EngagementRates

    Raises
    ------
    ConfigError
        Missing columns, naive timestamps, unknown behaviours, a rating without a value,
        a user in two arms, or a control arm no user is in.
    """
    config = config or RatesConfig()
    frame = _checked(events)
    arm_of = _mapping(arms, "arms")
    segment_of = _mapping(segments, "segments")
    if control is not None and (arm_of is None or control not in set(arm_of)):
        known = sorted(set(arm_of)) if arm_of is not None else []
        raise ConfigError(f"control arm {control!r} is not an arm of any user; arms: {known}")
    in_window = _window(frame["ts"], since, until)
    notes: list[str] = []

    shown, stray = _match_clicks(frame, config.click_window)
    shown["converted"] = _converted(frame, shown, config.attribution_window)
    shown = shown[in_window.loc[shown.index]]
    stray = stray[in_window.loc[stray.index]]
    ratings = frame[(frame["behavior"] == _RATE) & in_window]

    dimensions = {
        "overall": lambda f: pd.Series("all", index=f.index),
        "placement": lambda f: f["placement"].fillna(NO_PLACEMENT),
        "arm": (lambda f: f["user_id"].map(arm_of)) if arm_of is not None else None,
        "segment": (lambda f: f["user_id"].map(segment_of)) if segment_of is not None else None,
    }
    funnel = _funnel_table(shown, stray, dimensions, config, notes)
    del dimensions["placement"]  # a rating rates an item, not a placement
    if "category_id" in ratings.columns and ratings["category_id"].notna().any():
        dimensions["category"] = lambda f: f["category_id"]
    satisfaction = _satisfaction_table(ratings, dimensions, config)
    if arm_of is not None:
        missing = set(shown["user_id"]) | set(ratings["user_id"])
        missing -= set(arm_of.index)
        if missing:
            notes.append(f"{len(missing):,} users with impressions or ratings have no arm.")
    effects = _arm_effects(funnel, satisfaction, control, config.alpha)
    return EngagementRates(
        funnel=funnel.drop(columns=list(_VARIANCES)).reset_index(drop=True),
        satisfaction=satisfaction.drop(columns="mean_rating_var").reset_index(drop=True),
        arm_effects=effects,
        config=config,
        notes=notes,
    )


_Labeler = Callable[[pd.DataFrame], pd.Series]


def _funnel_table(
    shown: pd.DataFrame,
    stray: pd.DataFrame,
    dimensions: dict[str, _Labeler | None],
    config: RatesConfig,
    notes: list[str],
) -> pd.DataFrame:
    """The funnel rows of every dimension (with the variances `_arm_effects` needs)."""
    if shown.empty:
        notes.append(
            "no impressions in the events: no click-through or conversion rate"
            + (f" ({len(stray):,} clicks without one)" if len(stray) else "")
        )
        return pd.DataFrame(columns=[*FUNNEL_COLUMNS, *_VARIANCES])
    if len(stray):
        notes.append(
            f"{len(stray):,} clicks match no impression (none of that user and item"
            f" shown in the {_duration(config.click_window)} before, or a second click"
            " on one impression): counted as unattributed, not in CTR."
        )
    return pd.concat(
        [
            _funnel_rows(name, label(shown), label(stray), shown, stray, config)
            for name, label in dimensions.items()
            if label is not None
        ],
        ignore_index=True,
    )


def _satisfaction_table(
    ratings: pd.DataFrame, dimensions: dict[str, _Labeler | None], config: RatesConfig
) -> pd.DataFrame:
    """The satisfaction rows of every dimension (with their variances)."""
    if ratings.empty:
        return pd.DataFrame(columns=[*SATISFACTION_COLUMNS, "mean_rating_var"])
    return pd.concat(
        [
            _rating_rows(name, label(ratings), ratings, config)
            for name, label in dimensions.items()
            if label is not None
        ],
        ignore_index=True,
    )


def engagement_events(
    store: EventStore,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    config: RatesConfig | None = None,
) -> pd.DataFrame:
    """The impressions, clicks, ratings and buys `engagement_rates` reads, from the store.

    Pass the same `since`, `until` and `config` to `engagement_rates`: this reads a margin
    around ``[since, until)`` (one click window before it, for the impressions that explain
    its first clicks; a click and an attribution window after it, for the clicks and buys
    that follow its last impressions), which `engagement_rates` uses but does not count.
    Buys are read only for users who clicked, which keeps a big store's read small.

    Returns
    -------
    DataFrame
        ``user_id, item_id, category_id, behavior`` (words), ``ts`` (UTC), ``placement``,
        ``value``, ordered by time; empty when the store has none of these behaviours.
    """
    config = config or RatesConfig()
    start = since - config.click_window if since is not None else None
    end = until + config.follow if until is not None else None
    frame = store.con.execute(
        """WITH span AS (
            SELECT * FROM events
            WHERE ($start IS NULL OR ts >= $start) AND ($end IS NULL OR ts < $end)
        )
        SELECT u.user_id, i.item_id, c.category_id, e.behavior, e.ts, e.placement, e.value
        FROM span e JOIN users u USING (user_idx)
        LEFT JOIN items i USING (item_idx) LEFT JOIN categories c USING (category_idx)
        WHERE e.behavior IN ($click, $impression, $rate)
           OR (e.behavior = $buy
               AND e.user_idx IN (SELECT user_idx FROM span WHERE behavior = $click))
        ORDER BY e.ts, u.user_id, i.item_id""",
        {
            "start": start,
            "end": end,
            "click": _CLICK.code,
            "impression": _IMPRESSION.code,
            "rate": _RATE.code,
            "buy": _BUY.code,
        },
    ).df()
    words = {b.code: b.value for b in (_CLICK, _IMPRESSION, _RATE, _BUY)}
    return frame.assign(
        behavior=frame["behavior"].map(words).astype(object),
        ts=pd.to_datetime(frame["ts"], utc=True),
    )


# -- input ---------------------------------------------------------------------------------


def _checked(events: pd.DataFrame) -> pd.DataFrame:
    """The events this module reads, with ids as strings and timestamps in UTC."""
    missing = [c for c in ("user_id", "behavior", "ts") if c not in events.columns]
    if missing:
        raise ConfigError(
            f"events lack column(s) {missing}; they need user_id, behavior, ts (and item_id,"
            " placement, value where they apply)"
        )
    ts = events["ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ConfigError(
            f"events' ts must be timezone-aware timestamps, got {ts.dtype}: localise to UTC"
        )
    behavior = events["behavior"].astype(str)
    unknown = sorted(set(behavior.unique()) - _KNOWN)
    if unknown:
        raise ConfigError(f"unknown behaviour(s) {unknown}; canonical words: {sorted(_KNOWN)}")
    frame = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str),
            "item_id": _text(events, "item_id"),
            "behavior": behavior,
            "ts": ts.dt.tz_convert("UTC"),
            "placement": _text(events, "placement"),
            "value": pd.to_numeric(events["value"], errors="coerce")
            if "value" in events.columns
            else np.nan,
        },
        index=pd.RangeIndex(len(events)),
    )
    if "category_id" in events.columns:
        frame["category_id"] = _text(events, "category_id")
    unrated = int(((frame["behavior"] == _RATE) & frame["value"].isna()).sum())
    if unrated:
        raise ConfigError(f"{unrated:,} rate events have no numeric value: give each one")
    return frame


def _text(events: pd.DataFrame, column: str) -> pd.Series:
    """A column as strings with NA (missing or empty text both mean 'none')."""
    if column not in events.columns:
        return pd.Series(pd.NA, index=pd.RangeIndex(len(events)), dtype="string")
    text = events[column].astype("string").reset_index(drop=True)
    return text.mask(text.str.strip() == "")


def _mapping(values: Mapping[str, str] | pd.Series | None, what: str) -> pd.Series | None:
    """user_id -> label as a Series indexed by string user ids, one label per user."""
    if values is None:
        return None
    series = values if isinstance(values, pd.Series) else pd.Series(dict(values), dtype=object)
    series = series.dropna()
    series.index = series.index.astype(str)
    series = series.astype(str)
    twice = series.index[series.index.duplicated()].unique()
    clash = [u for u in twice if series.loc[u].nunique() > 1]
    if clash:
        raise ConfigError(
            f"{len(clash)} users have more than one of the {what}, e.g. {clash[:3]}:"
            " give each user one"
        )
    return series[~series.index.duplicated()]


def _window(ts: pd.Series, since: datetime | None, until: datetime | None) -> pd.Series:
    keep = pd.Series(True, index=ts.index)
    if since is not None:
        keep &= ts >= pd.Timestamp(since)
    if until is not None:
        keep &= ts < pd.Timestamp(until)
    return keep


# -- matching ------------------------------------------------------------------------------


def _micros(ts: pd.Series) -> np.ndarray:
    return ((ts - pd.Timestamp(0, tz="UTC")) // _US).to_numpy(dtype=np.int64)


def _match_clicks(frame: pd.DataFrame, window: timedelta) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every impression with ``clicked`` and its click's row, and the unattributed clicks.

    Both keep `frame`'s index. One sort by (user, item, time, impression first) and one
    compiled pass (`_greedy_clicks`) do the matching of the module docstring.
    """
    rows = frame[frame["behavior"].isin([_IMPRESSION, _CLICK])]
    user = pd.factorize(rows["user_id"])[0]
    item = pd.factorize(rows["item_id"], use_na_sentinel=True)[0]
    placement = pd.factorize(rows["placement"], use_na_sentinel=True)[0]
    is_click = (rows["behavior"] == _CLICK).to_numpy()
    t = _micros(rows["ts"])
    order = np.lexsort((is_click, t, item, user))
    group = np.r_[0, np.cumsum((np.diff(user[order]) != 0) | (np.diff(item[order]) != 0))]
    matched = _greedy_clicks(
        group.astype(np.int64),
        t[order],
        is_click[order],
        placement[order].astype(np.int64),
        window // pd.Timedelta(microseconds=1),
    )
    index = rows.index.to_numpy()[order]
    clicks = matched >= 0
    click_of = pd.Series(-1, index=index[~is_click[order]], dtype=np.int64)
    click_of.loc[index[matched[clicks]]] = index[clicks]
    shown = frame.loc[click_of.index, ["user_id", "item_id", "placement", "ts"]].copy()
    shown["click_row"] = click_of
    shown["clicked"] = click_of >= 0
    stray_rows = index[is_click[order] & ~clicks]
    stray = frame.loc[np.sort(stray_rows), ["user_id", "placement"]]
    return shown.sort_index(), stray


@numba.njit(cache=True)
def _greedy_clicks(group, t, is_click, placement, window):  # pragma: no cover
    """For each click row, the row of its impression (or -1): rows sorted by (group, t),
    each click in turn takes the latest untaken compatible impression within `window`."""
    n = t.size
    matched = np.full(n, -1, dtype=np.int64)
    taken = np.zeros(n, dtype=np.bool_)
    start = 0
    for r in range(n):
        if r > 0 and group[r] != group[r - 1]:
            start = r
        if not is_click[r]:
            continue
        j = r - 1
        while j >= start and t[r] - t[j] <= window:
            if (
                not is_click[j]
                and not taken[j]
                and (placement[j] < 0 or placement[r] < 0 or placement[j] == placement[r])
            ):
                taken[j] = True
                matched[r] = j
                break
            j -= 1
    return matched


def _converted(frame: pd.DataFrame, shown: pd.DataFrame, window: timedelta) -> pd.Series:
    """Per impression, whether its click was converted by a buy (the latest matched click of
    the same user and item, or an item-less one, before the buy takes it)."""
    clicks = frame.loc[shown.loc[shown["clicked"], "click_row"], ["user_id", "item_id", "ts"]]
    clicks = clicks.rename_axis("click_row").reset_index()
    buys = frame[frame["behavior"] == _BUY][["user_id", "item_id", "ts"]]
    if clicks.empty or buys.empty:
        return pd.Series(False, index=shown.index)
    buys = buys.sort_values("ts", kind="stable")
    candidates = []
    for keys, with_item in ((["user_id", "item_id"], True), (["user_id"], False)):
        pool = clicks[clicks["item_id"].notna() == with_item].sort_values("ts", kind="stable")
        wanted = buys[buys["item_id"].notna()] if with_item else buys
        if pool.empty or wanted.empty:
            continue
        found = pd.merge_asof(
            wanted.rename(columns={"ts": "buy_ts"}).sort_values("buy_ts", kind="stable"),
            pool[[*keys, "ts", "click_row"]],
            left_on="buy_ts",
            right_on="ts",
            by=keys,
            direction="backward",
            tolerance=pd.Timedelta(window),
            allow_exact_matches=True,
        )
        candidates.append(found.dropna(subset=["click_row"]).reset_index(names="buy"))
    if not candidates:
        return pd.Series(False, index=shown.index)
    found = pd.concat(candidates, ignore_index=True)
    # per buy, the later of the item click and the item-less click
    latest = found.sort_values(["buy", "ts", "click_row"], kind="stable").groupby("buy").tail(1)
    converting = set(latest["click_row"].astype(np.int64))
    return shown["click_row"].isin(converting) & shown["clicked"]


# -- tables --------------------------------------------------------------------------------

_VARIANCES = tuple(f"{name}_var" for name, _, _ in RATES)


def _funnel_rows(
    by: str,
    shown_group: pd.Series,
    stray_group: pd.Series,
    shown: pd.DataFrame,
    stray: pd.DataFrame,
    config: RatesConfig,
) -> pd.DataFrame:
    """One dimension's rows of the funnel table: groups with impressions or stray clicks,
    ``users`` those with either in the group."""
    counts = ["impressions", "clicks", "conversions", "unattributed_clicks"]
    shown_counts = (
        shown.assign(group=shown_group.astype(object))
        .dropna(subset=["group"])
        .groupby(["group", "user_id"], sort=True)
        .agg(
            impressions=("clicked", "size"),
            clicks=("clicked", "sum"),
            conversions=("converted", "sum"),
        )
    )
    stray_counts = (
        stray.assign(group=stray_group.astype(object))
        .dropna(subset=["group"])
        .groupby(["group", "user_id"], sort=True)
        .size()
        .rename("unattributed_clicks")
    )
    per_user = (
        shown_counts.join(stray_counts, how="outer")
        .reindex(columns=counts)
        .fillna(0)
        .astype(np.int64)
        .reset_index()
    )
    table = per_user.groupby("group", sort=True)[counts].sum()
    table["users"] = per_user.groupby("group", sort=True).size()
    for name, numerator, denominator in RATES:
        rate, var, low, high = _proportion(per_user, table, numerator, denominator, config)
        table[name], table[f"{name}_var"] = rate, var
        table[f"{name}_low"], table[f"{name}_high"] = low, high
    table = table.reset_index().assign(by=by)
    return table[[*FUNNEL_COLUMNS, *_VARIANCES]]


def _clustered_variance(
    per_user: pd.DataFrame, totals: pd.DataFrame, numerator: str, denominator: str
) -> pd.Series:
    """Delta-method variance of Σy/Σn per group over its users' sums (NaN for one user)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = totals[numerator] / totals[denominator]
    rows = per_user[per_user[denominator] > 0]
    expected = rate.reindex(rows["group"]).to_numpy(dtype=float) * rows[denominator]
    residual = rows[numerator].astype(float) - expected
    squares = (residual**2).groupby(rows["group"]).sum().reindex(totals.index)
    users = rows.groupby("group").size().reindex(totals.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        return users / (users - 1) * squares / totals[denominator] ** 2


def _proportion(
    per_user: pd.DataFrame,
    totals: pd.DataFrame,
    numerator: str,
    denominator: str,
    config: RatesConfig,
) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray]:
    """Rate, its variance and its Wilson interval (on the effective size when clustered)."""
    x = totals[numerator].astype(float)
    n = totals[denominator].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        binomial = p * (1 - p) / n
    if not config.cluster_by_user:
        low, high = wilson_interval(x, n, config.alpha)
        return p, binomial, low, high
    clustered = _clustered_variance(per_user, totals, numerator, denominator)
    users = per_user[per_user[denominator] > 0].groupby("group").size().reindex(totals.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        deff = (clustered / binomial).where(binomial > 0, 1.0).clip(lower=1.0)
    effective = (n / deff).where(users >= 2, np.minimum(n, 1.0))
    low, high = wilson_interval(p * effective, effective, config.alpha)
    return p, clustered.where(users >= 2, np.nan), low, high


def _rating_rows(
    by: str, group: pd.Series, ratings: pd.DataFrame, config: RatesConfig
) -> pd.DataFrame:
    """One dimension's rows of the satisfaction table."""
    frame = ratings.assign(group=group.astype(object)).dropna(subset=["group"])
    per_user = (
        frame.groupby(["group", "user_id"], sort=True)
        .agg(total=("value", "sum"), ratings=("value", "size"))
        .reset_index()
    )
    table = frame.groupby("group", sort=True).agg(
        users=("user_id", "nunique"),
        ratings=("value", "size"),
        mean_rating=("value", "mean"),
        sd=("value", "std"),
    )
    if config.cluster_by_user:
        table["total"] = per_user.groupby("group")["total"].sum()
        var = _clustered_variance(per_user, table, "total", "ratings")
        df = table["users"] - 1
    else:
        var = table["sd"] ** 2 / table["ratings"]
        df = table["ratings"] - 1
    with np.errstate(invalid="ignore"):
        half = stats.t.ppf(1 - config.alpha / 2, df.where(df > 0)) * np.sqrt(var)
    table["mean_rating_var"] = var
    table["mean_rating_low"] = table["mean_rating"] - half
    table["mean_rating_high"] = table["mean_rating"] + half
    table = table.reset_index().assign(by=by)
    table[["users", "ratings"]] = table[["users", "ratings"]].astype(np.int64)
    return table[[*SATISFACTION_COLUMNS, "mean_rating_var"]]


def _arm_effects(
    funnel: pd.DataFrame, satisfaction: pd.DataFrame, control: str | None, alpha: float
) -> pd.DataFrame:
    """Each arm minus control per rate, with the normal interval of a difference of two
    independent estimates (arms hold disjoint users)."""
    if control is None:
        return pd.DataFrame(columns=_EFFECT_COLUMNS)
    z = stats.norm.ppf(1 - alpha / 2)
    rows = []
    sources = [(funnel, name) for name, _, _ in RATES] + [(satisfaction, "mean_rating")]
    for table, metric in sources:
        arms = table[table["by"] == "arm"].set_index("group")
        if control not in arms.index:
            continue
        base, base_var = arms.at[control, metric], arms.at[control, f"{metric}_var"]
        for arm in arms.index.drop(control):
            diff = arms.at[arm, metric] - base
            se = math.sqrt(arms.at[arm, f"{metric}_var"] + base_var)
            rows.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "control": control,
                    "arm_value": arms.at[arm, metric],
                    "control_value": base,
                    "diff": diff,
                    "diff_low": diff - z * se,
                    "diff_high": diff + z * se,
                }
            )
    return pd.DataFrame(rows, columns=_EFFECT_COLUMNS)
