"""The main job on one store: evaluate, score, segment, plan, and gather the report's numbers.

Why one function: a new user asks one question ("what does ebbtide see in my log?") and the
answer needs every stage in order. The models are fitted once, on events before a holdout
cut-off, so the same fitted main model answers both the honest checks (its return curve and
calibration against what happened after the cut) and the planning at the end of the log
(the state at scoring uses every event before that instant; the parameters only the
earlier ones). Nothing here draws: `report.html` renders the `ReportData` this returns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from ebbtide.activate.actions import NONE, ActionCatalogue
from ebbtide.activate.campaign_analysis import CampaignAnalysis
from ebbtide.activate.engagement_rates import (
    EngagementRates,
    engagement_events,
    engagement_rates,
)
from ebbtide.activate.reactivation import ReactivationPlan, plan_reactivation
from ebbtide.activate.segments import assign_segments, early_warning
from ebbtide.aggregates import Release, ReleaseConfig
from ebbtide.errors import (
    ConfigError,
    ConvergenceWarning,
    DataQualityWarning,
    EbbtideError,
)
from ebbtide.evaluate.metrics import kaplan_meier, reliability_table
from ebbtide.evaluate.temporal import holdout_targets, temporal_holdout
from ebbtide.features.history import History, snapshot
from ebbtide.models.base import Model
from ebbtide.models.scoring import build_model, score_users
from ebbtide.report.data import ReportData, UserDrilldown
from ebbtide.schema import BEHAVIORS
from ebbtide.store import ITEM_ENGAGEMENT, EventStore, StoreStats

__all__ = ["DEFAULT_MODELS", "build_report_data", "default_holdout"]

#: Families fitted and compared by default; the last one is the main model.
DEFAULT_MODELS = ("popular", "btyd", "gbdt", "decay", "neural")

_HOUR = timedelta(hours=1)
_CALIBRATION_BINS = 10
_SEGMENT_ORDER = ("lost", "dormant", "at_risk", "cooling", "active")


def default_holdout(span: timedelta) -> timedelta:
    """One day for logs shorter than a month, else one week: a holdout that keeps most of
    the log for fitting and still sees a full cycle of the shop's rhythm."""
    return timedelta(days=1) if span < timedelta(days=30) else timedelta(days=7)


def build_report_data(
    store: EventStore,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    main: str | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    holdout: timedelta | None = None,
    plan_horizon: timedelta = timedelta(days=7),
    catalogue: ActionCatalogue | None = None,
    campaign: CampaignAnalysis | Mapping[str, Any] | None = None,
    title: str = "ebbtide report",
    source: str = "",
    tz: str = "UTC",
    top_categories: int = 6,
    drilldown_users: int = 3,
    privacy: ReleaseConfig | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ReportData:
    """Fit, evaluate, score, segment and plan on `store`; every number of the report.

    Parameters
    ----------
    store : EventStore
    models : sequence of str
        Families compared on the holdout.
    main : str, optional
        The family whose answers the report draws; default the last of `models` that
        forecasts returns (see `_main_family`).
    settings : mapping, optional
        Per family, config changes, e.g. ``{"neural": {"max_train_seconds": 90}}``.
    holdout : timedelta, optional
        Length of the holdout window at the end of the log; default `default_holdout`.
    plan_horizon : timedelta
        Horizon of the return probabilities behind segments and the plan.
    catalogue : ActionCatalogue, optional
        Actions and budget of the plan; default `activate.actions.default_actions()`.
    campaign : CampaignAnalysis or dict, optional
        A campaign that ran (`activate.campaign_analysis.analyze_campaign`, or its
        ``to_dict()``), shown as its own section.
    title, source : str
        The report's title and a description of where the events came from.
    tz : str
        Time zone of the "events by day" figure.
    top_categories, drilldown_users : int
        How many categories the decay figure shows, and how many users are drilled into.
    privacy : ReleaseConfig, optional
        How the count tables are released (`ebbtide.aggregates`); default k = 10
        suppression of true counts. With an ``epsilon`` every count is noisy and the
        per-user content (early warnings, contacts, drill-downs, plan table) is left out.
    on_stage : callable, optional
        Called with a short description before each stage (for a progress display).

    Returns
    -------
    ReportData
    """
    stage = on_stage or (lambda _text: None)
    privacy = privacy or ReleaseConfig()
    names = list(models)
    main, added = _main_family(names, main)
    names += added
    stats = store.stats(tz=tz)
    first, last = stats.first_event, stats.last_event
    if first is None or last is None:
        raise EbbtideError("the store holds no events yet: ingest a file first")
    scored_at = last + timedelta(seconds=1)
    start = _bulk_start(store)
    holdout = holdout or default_holdout(last - start)
    cutoff = scored_at - holdout
    if cutoff <= first:
        raise ConfigError(
            f"the log spans {last - first}, not more than the {holdout} holdout:"
            " pass a shorter holdout or a longer log"
        )
    chosen_settings = {name: dict((settings or {}).get(name, {})) for name in names}
    if "gbdt" in chosen_settings:  # the horizon it is checked on joins its training grid
        chosen_settings["gbdt"].setdefault("horizon_days", holdout / timedelta(days=1))
    if "neural" in chosen_settings:  # its daily cycle runs on the shop's clock
        chosen_settings["neural"].setdefault("time_zone", tz)
    fitted = {name: build_model(name, **chosen_settings[name]) for name in names}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # kept for the notes, not printed
        comparison = temporal_holdout(
            store, list(fitted.values()), cutoff=cutoff, horizon=holdout, on_stage=stage
        )
        model = fitted[main]

        stage("checking the return forecast")
        targets = holdout_targets(store, cutoff=cutoff, horizon=holdout)
        at_cutoff, at_end = snapshot(store, at=cutoff), snapshot(store, at=scored_at)
        return_curves = _return_curves(model, at_cutoff, targets.users, holdout)
        p_holdout = model.p_return(at_cutoff, horizon=holdout)
        calibration = _calibration(targets.users, p_holdout)

        stage(f"scoring users at {scored_at:%Y-%m-%d %H:%M} UTC")
        now = score_users(model, at_end, horizon=plan_horizon, k=1)
        categories = now[1]
        earlier = score_users(model, at_cutoff, horizon=plan_horizon, k=1)
        segments_now = assign_segments(*now, horizon=plan_horizon)
        segments_before = assign_segments(*earlier, horizon=plan_horizon)
        warning_list = early_warning(
            model, store, before=cutoff, at=scored_at, horizon=plan_horizon, top=20,
            earlier=earlier, now=now,
        )  # fmt: skip

        stage("planning the re-activation campaign")
        plan = plan_reactivation(
            model, store, at=scored_at, horizon=plan_horizon, catalogue=catalogue
        )
        private = privacy.epsilon is not None
        drilldowns: list[UserDrilldown] = []
        if not private:  # per-user content is never part of a private release
            stage("drawing users' interest over time")
            chosen = _drilldown_choice(warning_list, plan, drilldown_users)
            drilldowns = _drilldowns(model, store, at_end, chosen, plan, segments_now, start)

    stage("measuring clicks, conversion and ratings")
    engagement, engagement_notes = _engagement(store, cutoff, segments_before, privacy)

    stage("releasing the counts")
    release = Release(privacy, tables=_RELEASED_TABLES)
    by_day = _release_events_by_day(release, store, tz, start)
    categories, category_users = _release_categories(release, categories)
    curves, half_lives = _decay_curves(categories, top_categories, model)
    if category_users is not None:
        half_lives = _with_users(half_lives, category_users)
    sizes = _release_segments(release, segments_now)
    flows = _release_flows(release, segments_before, segments_now)
    by_action = _release_plan(release, plan, private)
    calibration = _release_calibration(release, calibration, targets.users, p_holdout)
    notes = [
        *(
            f"{', '.join(names[:-1])} does not forecast returns: the return, segment and plan"
            f" sections use {main}, added to the comparison for them."
            for _ in added
        ),
        f"Models were fitted on events before {cutoff.isoformat()} and checked on the "
        f"{holdout / timedelta(days=1):g} days after it; users were scored, segmented and "
        f"planned at {scored_at.isoformat()} with every event before it.",
        *plan.notes,
        *_warning_notes(caught),
        *engagement_notes,
    ]
    overview = _overview(stats)
    summary = plan.summary()
    if private:
        overview = _private_overview(by_day, sizes)
        summary = _private_plan_summary(summary, by_action)
        notes = [*notes, *_PRIVATE_NOTES]
        warning_list, contacts, plan_table = warning_list.head(0), _contacts(plan).head(0), None
    else:
        contacts, plan_table = _contacts(plan), plan.table
    return ReportData(
        title=title,
        source=source,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model=main,
        cutoff=cutoff.isoformat(),
        scored_at=scored_at.isoformat(),
        overview=overview,
        events_by_day=by_day,
        decay_curves=curves,
        category_half_lives=half_lives,
        half_lives_days=_half_lives_days(categories) if not private else _no_half_lives(),
        return_curves=return_curves,
        return_calibration=calibration,
        return_horizon_hours=holdout / _HOUR,
        comparison=comparison,
        segments=sizes,
        segment_flows=flows,
        early_warning=warning_list,
        plan_summary=summary,
        plan_by_action=by_action,
        plan_contacts=contacts,
        drilldowns=drilldowns,
        campaign=_released_campaign(campaign, privacy),
        engagement=engagement,
        plan_table=plan_table,
        timezone=tz,
        notes=notes,
        privacy=_privacy_summary(release),
        model_privacy={
            name: (getattr(m, "metrics_", None) or {}).get("privacy") for name, m in fitted.items()
        },
    )


#: Count tables a report releases, each with an equal share of the budget: events by day
#: and behaviour, users per category, segment sizes, segment flows, plan per action and
#: segment, users per calibration bin.
_RELEASED_TABLES = 6

_PRIVATE_NOTES = (
    "Differential privacy: per-user content (early-warning list, contacts, drill-downs, the"
    " plan table) is left out of this report, and so are the distribution of half-lives,"
    " item and category totals, exact first and last events, and the campaign section.",
    "Differential privacy covers the counts of users and events per group; a noisy count can"
    " also show a group of a public list (a day, segment or action) that has no users, and"
    " contribution bounds make event totals lower than the log's. Model-evaluation"
    " numbers (comparison metrics, return curve, calibration shares, half-life medians and"
    " interest curves of the released categories) are computed from the data and are not"
    " noised.",
)


def _release_events_by_day(
    release: Release, store: EventStore, tz: str, start: datetime
) -> pd.DataFrame:
    """day, behavior, users, events: released per (local day, behaviour).

    Under a budget the domain is every day from the log's bulk start (`_bulk_start`, so a
    few stray early events do not add months of noise-only days) to its last day, the span
    the report covers, treated as public, times the four behaviours: a pure ε-DP table.
    Events before the bulk start are left out of it.
    """
    frame = store.con.execute(
        """SELECT user_idx, strftime(timezone(?, ts), '%Y-%m-%d') AS day, behavior,
        count(*) AS rows FROM events GROUP BY ALL""",
        [tz],
    ).df()
    frame = _named_behaviors(frame)
    domain = None
    if release.config.epsilon is not None and not frame.empty:
        first = pd.Timestamp(start).tz_convert(tz).strftime("%Y-%m-%d")
        days = pd.date_range(first, frame["day"].max(), freq="D").strftime("%Y-%m-%d")
        domain = pd.MultiIndex.from_product(
            [days, [b.value for b in BEHAVIORS]], names=["day", "behavior"]
        ).to_frame(index=False)
    released = release.counts(
        frame, ["day", "behavior"], name="events by day and behaviour", user="user_idx",
        domain=domain,
    )  # fmt: skip
    return released.table


def _release_categories(
    release: Release, categories: pd.DataFrame | None
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The (user, category) pairs of released categories, and their released user counts.

        Categories come from the data, so under a budget a category needs a noisy user count
        over the threshold τ (`aggregates`), which also bounds the chance that a category only
        one user touched is named at all. Each user counts in one category (their highest
    interest level now):
        τ grows with the groups a user may join, and with four it passes most shops' users.
    """
    if categories is None or categories.empty:
        release.counts(
            pd.DataFrame({"user_id": [], "category_id": []}), ["category_id"],
            name="users per category", rows=None, events=False,
        )  # fmt: skip
        return categories, None
    released = release.counts(
        categories, ["category_id"], name="users per category", rows="level", events=False,
        max_groups=1,
    )  # fmt: skip
    kept = categories[categories["category_id"].isin(released.table["category_id"])]
    return kept, released.table


def _with_users(half_lives: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """The half-life table with released user counts, busiest released categories first."""
    merged = half_lives.drop(columns="users").merge(users, on="category_id", how="inner")
    return merged.sort_values(
        ["users", "category_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)[half_lives.columns]


def _release_segments(release: Release, segments: pd.DataFrame) -> pd.DataFrame:
    """segment, users, share: released sizes (one segment per user, a public domain)."""
    domain = pd.DataFrame({"segment": list(_SEGMENT_ORDER)})
    released = release.counts(
        segments, ["segment"], name="users per segment", rows=None, events=False,
        domain=domain, max_groups=1,
    ).table  # fmt: skip
    order = {name: i for i, name in enumerate(_SEGMENT_ORDER)}
    released = released.sort_values(
        "segment", key=lambda s: s.map(order).fillna(len(order)), kind="stable"
    ).reset_index(drop=True)
    total = released["users"].sum()
    return released.assign(share=released["users"] / total if total else 0.0)


def _release_flows(release: Release, before: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """segment_before, segment_now, users: released flows (one flow per user)."""
    joined = now[["user_id", "segment"]].merge(
        before[["user_id", "segment"]], on="user_id", how="left", suffixes=("_now", "_before")
    )
    joined["segment_before"] = joined["segment_before"].fillna("new")
    domain = pd.MultiIndex.from_product(
        [["new", *_SEGMENT_ORDER], list(_SEGMENT_ORDER)], names=["segment_before", "segment_now"]
    ).to_frame(index=False)
    return release.counts(
        joined, ["segment_before", "segment_now"], name="segment flows", rows=None,
        events=False, domain=domain, max_groups=1,
    ).table  # fmt: skip


def _release_plan(release: Release, plan: ReactivationPlan, private: bool) -> pd.DataFrame:
    """action, segment, users (+ cost, expected_conversions, value without a budget).

    The sums of spend and conversions move with single users, so under a budget only the
    released user counts are shown.
    """
    table = plan.table
    actions = [a.name for a in plan.catalogue.actions]
    actions += sorted(set(table["action"]) - set(actions))
    domain = pd.MultiIndex.from_product(
        [actions, list(_SEGMENT_ORDER)], names=["action", "segment"]
    ).to_frame(index=False)
    released = release.counts(
        table, ["action", "segment"], name="plan per action and segment", rows=None,
        events=False, domain=domain, max_groups=1,
    ).table  # fmt: skip
    if private:
        return released
    sums = plan.by_action_and_segment().drop(columns="users")
    return released.merge(sums, on=["action", "segment"], how="left")


def _release_calibration(
    release: Release, calibration: pd.DataFrame, users: pd.DataFrame, answer: pd.DataFrame
) -> pd.DataFrame:
    """The calibration bins with released user counts (bins under k left out)."""
    joined = users[["user_id"]].merge(answer, on="user_id", how="inner")
    joined["bin"] = _calibration_bins(joined["p_return"].to_numpy())
    released = release.counts(
        joined, ["bin"], name="users per calibration bin", rows=None, events=False,
        domain=pd.DataFrame({"bin": range(_CALIBRATION_BINS)}), max_groups=1,
    ).table  # fmt: skip
    shown = calibration.drop(columns="users").merge(released, on="bin", how="inner")
    return shown[["p_mean", "observed", "users"]].reset_index(drop=True)


def _calibration_bins(p: np.ndarray) -> np.ndarray:
    """`reliability_table`'s uniform bins: a value on an inner edge goes to the lower bin."""
    edges = np.linspace(0.0, 1.0, _CALIBRATION_BINS + 1)
    return np.searchsorted(edges[1:-1], p, side="left")


def _released_campaign(
    campaign: CampaignAnalysis | Mapping[str, Any] | None, privacy: ReleaseConfig
) -> dict[str, Any] | None:
    """The campaign section: left out under a budget; else A/B rows of arms under k users
    dropped (and noted), and arm sizes under k hidden in the sample ratio check."""
    if campaign is None or privacy.epsilon is not None:
        return None
    data = dict(campaign.to_dict() if isinstance(campaign, CampaignAnalysis) else campaign)
    k = privacy.min_group_users
    ab = dict(data.get("ab") or {})
    rows = list(ab.get("table") or [])
    kept = [r for r in rows if min(r.get("n_control") or 0, r.get("n_arm") or 0) >= k]
    if len(kept) < len(rows):
        ab["notes"] = [
            *(ab.get("notes") or []),
            f"{len(rows) - len(kept)} A/B row(s) with an arm under {k} users left out.",
        ]
    ab["table"] = kept
    srm = dict(ab.get("srm") or {})
    if srm.get("observed"):
        srm["observed"] = {
            arm: (n if n >= k else f"under {k}") for arm, n in srm["observed"].items()
        }
        ab["srm"] = srm
    data["ab"] = ab
    return data


def _engagement(
    store: EventStore, cutoff: datetime, segments: pd.DataFrame, privacy: ReleaseConfig
) -> tuple[dict[str, Any] | None, list[str]]:
    """CTR, conversion and satisfaction for the report, and the notes about it.

    Overall and per placement over the whole log; per segment over the events after the
    cut-off, by each user's segment at the cut-off (a segment computed later would already
    know those clicks). Groups under k users are left out; a private report leaves the
    section out, since its rates are not noised.
    """
    events = engagement_events(store)
    whole = engagement_rates(events)
    if whole.empty:
        return None, []
    if privacy.epsilon is not None:
        return None, [
            "Differential privacy: clicks, conversion and satisfaction are left out; their"
            " rates and counts are not noised."
        ]
    after = engagement_rates(
        events, segments=segments.set_index("user_id")["segment"], since=cutoff
    )
    funnel = after.funnel[after.funnel["by"] == "segment"].assign(by="segment at cut-off")
    ratings = after.satisfaction[after.satisfaction["by"] == "segment"]
    combined = EngagementRates(
        funnel=pd.concat([whole.funnel, funnel], ignore_index=True),
        satisfaction=pd.concat(
            [whole.satisfaction, ratings.assign(by="segment at cut-off")], ignore_index=True
        ),
        arm_effects=whole.arm_effects,
        config=whole.config,
        notes=whole.notes,
    )
    return combined.without_small_groups(privacy.min_group_users).to_dict(), []


def _private_overview(by_day: pd.DataFrame, sizes: pd.DataFrame) -> dict[str, Any]:
    """The overview from released tables only: totals are their sums (post-processing)."""
    days = sorted(by_day["day"]) if not by_day.empty else []
    return {
        "users": int(sizes["users"].sum()),
        "items": None,
        "categories": None,
        "events": int(by_day["events"].sum()) if not by_day.empty else 0,
        "first_event": days[0] if days else None,
        "last_event": days[-1] if days else None,
    }


def _private_plan_summary(summary: dict[str, Any], by_action: pd.DataFrame) -> dict[str, Any]:
    """The plan's headline without sums over single users; counts from the released table."""
    contacted = by_action[by_action["action"] != NONE]["users"].sum()
    hidden = ("spend", "expected_conversions", "value")
    return (
        summary
        | {key: None for key in hidden if key in summary}
        | {
            "users": int(by_action["users"].sum()),
            "contacts": int(contacted),
        }
    )


def _privacy_summary(release: Release) -> dict[str, Any]:
    """The release's guarantee, and a sentence per table, for the report's privacy section."""
    return release.summary() | {"notes": [table.note() for table in release.released]}


def _no_half_lives() -> pd.Series:
    return pd.Series(dtype=float, name="half_life_days")


def _main_family(names: list[str], main: str | None) -> tuple[str, list[str]]:
    """The family the report draws, and any family added for it.

    Default: the last listed that forecasts returns (segments and the plan rest on it).
    When none does (``popular`` alone), `decay` is added: fast, and it answers everything.
    """
    if not names:
        raise ConfigError("no models to compare: name at least one family, e.g. decay")
    if main is not None:
        if main not in names:
            raise ConfigError(f"main model {main!r} must be one of the models compared: {names}")
        if "p_return" not in build_model(main).answers:
            raise ConfigError(
                f"main model {main!r} does not forecast returns, which segments and the plan"
                " need: choose one that does (btyd, gbdt, decay, neural)"
            )
        return main, []
    forecasting = [name for name in names if "p_return" in build_model(name).answers]
    if forecasting:
        return forecasting[-1], []
    return "decay", ["decay"]


def _warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """ebbtide's own warnings (data quality, doubtful fits), once each, for the notes."""
    ours = (DataQualityWarning, ConvergenceWarning)
    seen = dict.fromkeys(
        f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, ours)
    )
    return list(seen)


# -- overview ----------------------------------------------------------------------------


def _bulk_start(store: EventStore) -> datetime:
    """Where the log really starts: its 1st percentile of time, so that a few stray early
    timestamps (common in raw logs) do not stretch the holdout rule or the drill-down axis."""
    return store.con.execute(
        f"SELECT quantile_disc(ts, 0.01) FROM events WHERE {ITEM_ENGAGEMENT}"
    ).fetchone()[0]


def _overview(stats: StoreStats) -> dict[str, Any]:
    counts = {name: getattr(stats, name) for name in ("users", "items", "categories", "events")}
    return counts | {
        "first_event": stats.first_event.isoformat(),
        "last_event": stats.last_event.isoformat(),
    }


# -- interest decay ----------------------------------------------------------------------


def _decay_curves(
    categories: pd.DataFrame | None, top: int, model: Model | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Projected interest with no new events, per top category, relative to now, and the
    top categories' half-lives.

    The population curve of a category sums its users' ``baseline + excitation · 2^(−t/h)``
    (plus ``session · 2^(−t/h_s)`` where the model has a session scale) and divides by their
    summed level now: where it flattens is the long-run level, how fast it gets there is
    the interest half-life. Half-lives are medians over the category's users, in days
    (session ones in hours), with the model's 95% interval where it gives one.
    """
    columns = [
        "category_id",
        "half_life_days",
        "half_life_low",
        "half_life_high",
        "session_half_life_hours",
        "users",
    ]
    if categories is None or categories.empty:
        empty = pd.DataFrame(columns=["category_id", "hours", "relative_interest"])
        return empty, pd.DataFrame(columns=columns)
    if "session_half_life_days" not in categories.columns:
        categories = categories.assign(session=0.0, session_half_life_days=np.nan)
    by_category = categories.groupby("category_id", sort=False)
    half_lives = (
        by_category.agg(
            half_life_days=("half_life_days", "median"),
            session_half_life_hours=("session_half_life_days", "median"),
            users=("user_id", "nunique"),
        )
        .reset_index()
        .assign(session_half_life_hours=lambda f: f["session_half_life_hours"] * 24.0)
        .sort_values(["users", "category_id"], ascending=[False, True], kind="stable")
        .head(top)
        .reset_index(drop=True)
    )
    intervals = _half_life_intervals(model)
    half_lives = half_lives.merge(intervals, on="category_id", how="left")
    horizon_hours = float(np.clip(4 * 24 * half_lives["half_life_days"].max(), 24.0, 24.0 * 30))
    hours = np.linspace(0.0, horizon_hours, 97)
    rows = []
    for category in half_lives["category_id"]:
        pairs = categories[categories["category_id"] == category]
        projected = pairs["baseline"].sum()
        for size, life in (("excitation", "half_life_days"), ("session", "session_half_life_days")):
            lives = pairs[life].fillna(1.0).clip(lower=1e-9).to_numpy()
            projected = projected + np.exp2(-np.outer(hours / 24.0, 1.0 / lives)) @ pairs[
                size
            ].to_numpy(dtype=float)
        now = max(float(pairs["level"].sum()), 1e-12)
        rows.append(
            pd.DataFrame(
                {"category_id": category, "hours": hours, "relative_interest": projected / now}
            )
        )
    return pd.concat(rows, ignore_index=True), half_lives[columns]


def _half_life_intervals(model: Model | None) -> pd.DataFrame:
    """category_id, half_life_low, half_life_high: the model's 95% interval of each
    category's interest half-life (days), empty for a family that gives none."""
    if model is None or not hasattr(model, "half_lives"):
        return pd.DataFrame(columns=["category_id", "half_life_low", "half_life_high"])
    table = model.half_lives()
    return table.rename(
        columns={"interest_low": "half_life_low", "interest_high": "half_life_high"}
    )[["category_id", "half_life_low", "half_life_high"]]


def _half_lives_days(categories: pd.DataFrame | None) -> pd.Series:
    if categories is None or categories.empty:
        return pd.Series(dtype=float, name="half_life_days")
    days = categories["half_life_days"].to_numpy(dtype=float)
    return pd.Series(days[np.isfinite(days) & (days > 0)], name="half_life_days")


# -- return ------------------------------------------------------------------------------


def _return_curves(
    model: Model, history: History, users: pd.DataFrame, holdout: timedelta
) -> pd.DataFrame:
    """Observed (Kaplan-Meier, censored at the window's end) and predicted share returned."""
    days = users["days_to_return"].to_numpy(dtype=float)
    observed = users["returned"].to_numpy(dtype=bool)
    survival = kaplan_meier(days, observed)
    hours = np.linspace(0.0, holdout / _HOUR, 25)
    step = np.searchsorted(survival["time"].to_numpy() * 24.0, hours, side="right") - 1
    returned = 1.0 - survival["survival"].to_numpy()[step]
    predicted = [0.0]
    for h in hours[1:]:
        answer = model.p_return(history, users["user_id"].tolist(), horizon=h * _HOUR)
        predicted.append(float(answer["p_return"].mean()))
    return pd.DataFrame({"hours": hours, "observed": returned, "predicted": predicted})


def _calibration(users: pd.DataFrame, answer: pd.DataFrame) -> pd.DataFrame:
    """bin, p_mean, observed, users: the holdout's non-empty calibration bins."""
    joined = users[["user_id", "returned"]].merge(answer, on="user_id", how="inner")
    table = reliability_table(
        joined["returned"].to_numpy(), joined["p_return"].to_numpy(), bins=_CALIBRATION_BINS
    )
    table = table[table["count"] > 0]
    return pd.DataFrame(
        {
            "bin": table["bin"],
            "p_mean": table["mean_p"],
            "observed": table["frac_pos"],
            "users": table["count"],
        }
    ).reset_index(drop=True)


# -- plan and drill-down -----------------------------------------------------------------


def _contacts(plan: ReactivationPlan, rows: int = 20) -> pd.DataFrame:
    table = plan.table[plan.table["action"] != NONE]
    return table.sort_values("expected_uplift", ascending=False, kind="stable").head(rows)


def _drilldown_choice(warnings_list: pd.DataFrame, plan: ReactivationPlan, n: int) -> list[str]:
    """The most alarming early warning, the most promising contact, the most active user."""
    candidates: list[str] = []
    candidates += warnings_list["user_id"].head(1).tolist()
    candidates += _contacts(plan, rows=1)["user_id"].tolist()
    active = plan.table[plan.table["segment"] == "active"]
    candidates += active["user_id"].head(1).tolist()
    candidates += plan.table["user_id"].tolist()
    chosen: list[str] = []
    for user in candidates:
        if user not in chosen:
            chosen.append(user)
        if len(chosen) == n:
            break
    return chosen


def _drilldowns(
    model: Model,
    store: EventStore,
    history: History,
    users: list[str],
    plan: ReactivationPlan,
    segments: pd.DataFrame,
    start: datetime,
    categories_per_user: int = 3,
) -> list[UserDrilldown]:
    """Each chosen user's interest in their top categories over the log.

    The curves before the model's cut-off are in-sample (asked so explicitly): they draw
    the past with parameters fitted on events up to the cut-off, and the report says so.
    """
    if "interest" not in model.answers:  # btyd, popular: no per-category interest to draw
        return []
    scored_at = history.at
    history = history.for_users(users)
    now = model.interest(history, users, horizon=timedelta(days=1))
    if now.empty:
        return []
    top = (
        now.sort_values(["user_id", "level"], ascending=[True, False], kind="stable")
        .groupby("user_id", sort=False)
        .head(categories_per_user)
    )
    events = _user_events(store, users, scored_at)
    levels = _interest_paths(model, history, users, events["ts"], start).merge(
        top[["user_id", "category_id"]], on=["user_id", "category_id"]
    )
    plan_rows = plan.table.set_index("user_id")
    segment_rows = segments.set_index("user_id")
    result = []
    for user in users:
        mine = top[top["user_id"] == user]
        in_top = (events["user_id"] == user) & events["category_id"].isin(mine["category_id"])
        result.append(
            UserDrilldown(
                user_id=user,
                segment=str(segment_rows.at[user, "segment"]),
                action=str(plan_rows.at[user, "action"]),
                reason=str(segment_rows.at[user, "reason"]),
                curves=levels[levels["user_id"] == user].drop(columns="user_id"),
                events=events[in_top].drop(columns="user_id"),
                half_lives={
                    str(c): float(h) * 24.0
                    for c, h in zip(mine["category_id"], mine["half_life_days"], strict=True)
                },
            )
        )
    return result


def _interest_paths(
    model: Model,
    history: History,
    users: list[str],
    event_times: pd.Series,
    start: datetime,
    max_states: int = 600,
    grid: int = 60,
) -> pd.DataFrame:
    """Interest paths that keep every jump: the state just after each event, then its decay.

    Between two events the model's interest in a category is ``baseline + excitation ·
    2^(−τ/half-life)``, so one query right after each event (and at a coarse grid, for the
    quiet stretches) gives the exact curve, drawn at a few points per gap. The latest
    `max_states` event instants are kept for very active users. Each instant reads the
    part of `history` before it; instants before the model's cut-off are in-sample.
    """
    end = history.at
    after_events = pd.DatetimeIndex(event_times.drop_duplicates()) + pd.Timedelta(seconds=1)
    after_events = after_events[after_events >= start].sort_values()[-max_states:]
    coarse = pd.date_range(start, end, periods=grid, tz=UTC)
    instants = after_events.union(coarse).sort_values()
    instants = instants[(instants > pd.Timestamp(start)) & (instants <= pd.Timestamp(end))]
    states = []
    for instant, following in zip(instants, [*instants[1:], pd.Timestamp(end)], strict=True):
        past = history.until(instant.to_pydatetime())
        if past.events.n_events == 0:  # before these users' first event: nothing to draw
            continue
        answer = model.interest(
            past,
            users,
            horizon=timedelta(days=1),
            in_sample=True,
        )
        gap_days = (following - instant) / pd.Timedelta(days=1)
        offsets = np.geomspace(1 / 1440, gap_days, 6) if gap_days > 1 / 1440 else np.zeros(1)
        for offset in np.concatenate([[0.0], offsets[:-1]]):
            level = answer["baseline"] + answer["excitation"] * np.exp2(
                -offset / answer["half_life_days"].clip(lower=1e-9)
            )
            states.append(
                pd.DataFrame(
                    {
                        "user_id": answer["user_id"],
                        "category_id": answer["category_id"],
                        "ts": instant + pd.Timedelta(days=float(offset)),
                        "level": level,
                    }
                )
            )
    if not states:
        return pd.DataFrame(columns=["user_id", "category_id", "ts", "level"])
    return pd.concat(states, ignore_index=True).sort_values(["user_id", "category_id", "ts"])


def _named_behaviors(frame: pd.DataFrame) -> pd.DataFrame:
    """The store's behaviour codes (0-3) in a query result as their names (view ... buy)."""
    return frame.assign(behavior=frame["behavior"].map({b.code: b.value for b in BEHAVIORS}))


def _user_events(store: EventStore, users: list[str], before: datetime) -> pd.DataFrame:
    frame = store.con.execute(
        f"""SELECT u.user_id, e.ts, c.category_id, e.behavior FROM events e
        JOIN users u USING (user_idx) JOIN categories c USING (category_idx)
        WHERE u.user_id IN (SELECT unnest(?)) AND e.ts < ? AND e.{ITEM_ENGAGEMENT}
        ORDER BY u.user_id, e.ts""",
        [users, before],
    ).df()
    return _named_behaviors(frame)
