"""The report as one self-contained HTML page: `ReportData` in, a string (or a file) out.

Why one file with nothing external: a report is mailed, archived and opened on laptops without
network, so figures are inline SVG, the stylesheet is inlined, and there is no script, font or
image to fetch. Every number is formatted here in Python (thousands separators, "–" for a
missing value) and handed to the Jinja2 template as text, so the template only lays out; it
runs with autoescape on, because user, category and item ids come from users' files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from ebbtide.activate.engagement_rates import format_rate
from ebbtide.features.history import UNCATEGORISED
from ebbtide.report import figures
from ebbtide.report.data import ReportData, UserDrilldown
from ebbtide.schema import BEHAVIORS

__all__ = ["render_report", "write_html"]

_TEMPLATES = ("report", "templates")
_MISSING = "–"
_ROWS = 20

#: Metric names (the last words of a comparison column) where a larger value is better.
_HIGHER_IS_BETTER = ("auc", "recall", "ndcg", "hr", "mrr", "c_index", "precision", "map")
#: ... and where a smaller value is better.
_LOWER_IS_BETTER = ("ece", "brier", "log_loss", "mae", "rmse")

Formatter = Callable[[Any], str]


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, its kind (the CSS class: ``num`` right-aligned, ``text``,
    ``list`` and ``long`` for lists and sentences that need room), bold when the best."""

    text: str
    kind: str = "text"
    best: bool = False


@dataclass(frozen=True)
class Table:
    """A table ready to print: header cells and rows of cells; `compact` for many columns."""

    headers: list[Cell]
    rows: list[list[Cell]]
    compact: bool = False


@dataclass(frozen=True)
class Drawing:
    """A figure slot: the SVG, or the sentence shown when there was nothing to draw."""

    name: str
    svg: Markup | None
    caption: str
    fallback: str


@dataclass(frozen=True)
class Column:
    """How one column of a frame is shown: its header and how each value becomes text."""

    name: str
    header: str
    format: Formatter
    kind: str = "num"


@dataclass(frozen=True)
class Section:
    """What one `<section>` shows; `extra` holds the section's own items for the template."""

    id: str
    title: str
    extra: dict[str, Any] = field(default_factory=dict)


# -- public API --------------------------------------------------------------------------


def render_report(data: ReportData) -> str:
    """The whole report as one HTML page that needs no network to display.

    Parameters
    ----------
    data : ReportData
        Every number of the report (see `ebbtide.report.data`).

    Returns
    -------
    str
        An HTML5 document: inline CSS, inline SVG figures, no scripts.
    """
    environment = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    template = environment.from_string(_resource("report.html.j2"))
    return template.render(
        title=data.title,
        generated_at=data.generated_at,
        css=Markup(_resource("report.css")),
        sections=_sections(data),
    )


def write_html(data: ReportData, path: str | Path) -> Path:
    """Render the report and write it to `path` as UTF-8; returns the path written.

    Parameters
    ----------
    data : ReportData
    path : str or Path
        The HTML file to write; its folder must exist.

    Returns
    -------
    Path
    """
    target = Path(path)
    target.write_text(render_report(data), encoding="utf-8")
    return target


def _resource(name: str) -> str:
    """A file shipped beside the template (read through the package, so wheels work)."""
    folder = files("ebbtide").joinpath(*_TEMPLATES)
    return folder.joinpath(name).read_text(encoding="utf-8")


def _sections(data: ReportData) -> list[Section]:
    """The report's sections in page order; the campaign only when one was analysed."""
    sections = [
        _overview(data),
        _privacy(data),
        _decay(data),
        _return(data),
        _segments(data),
        _plan(data),
        _drilldown(data.drilldowns, data.cutoff, _private(data)),
    ]
    if data.engagement is not None:
        sections.append(_engagement(data.engagement))
    if data.campaign is not None:
        sections.append(_campaign(data.campaign))
    shown = {str(n) for n in (data.plan_summary or {}).get("notes") or []}  # in the plan
    items = [str(n) for n in data.notes if str(n) not in shown]
    sections.append(Section("notes", "Notes", {"items": items}))
    return sections


# -- sections ----------------------------------------------------------------------------

#: What stands where a per-user table or figure would be in a private report.
_LEFT_OUT = "Left out under differential privacy (--dp-epsilon): it shows individual users."


def _private(data: ReportData) -> bool:
    """Whether the report's counts were released with a privacy budget."""
    return (data.privacy or {}).get("epsilon") is not None


def _privacy(data: ReportData) -> Section:
    """How the counts were released, and each model's training guarantee."""
    privacy = data.privacy or {}
    k = privacy.get("min_group_users")
    epsilon = privacy.get("epsilon")
    if epsilon is None:
        counts = "true counts (no differential privacy)"
    else:
        delta = privacy.get("delta") or 0.0
        counts = (
            f"user-level differential privacy, {_text(privacy.get('mechanism'))} noise:"
            f" ε = {epsilon:g} in total, {privacy.get('epsilon_per_table'):.4g} per count table"
            + (f", δ = {delta:.2g}" if delta else ", δ = 0")
        )
    facts = [
        ("counts", counts),
        ("groups shown", "all" if k in (None, 1) else f"with at least {k} users"),
    ]
    if epsilon is not None:
        facts.append(
            (
                "contribution bounds",
                f"each user in at most {privacy.get('max_groups')} groups per table, at most"
                f" {privacy.get('max_rows')} events per group",
            )
        )
    models = [
        (name, _model_guarantee(guarantee))
        for name, guarantee in sorted((data.model_privacy or {}).items())
    ]
    extra = {
        "private": epsilon is not None,
        "facts": facts,
        "notes": [str(note) for note in privacy.get("notes") or []],
        "models": models,
    }
    return Section("privacy", "Privacy", extra)


def _model_guarantee(guarantee: Mapping[str, Any] | None) -> str:
    """A model's `metrics_["privacy"]` in words, or that it has none."""
    if not guarantee:
        return "no differential privacy"
    parts = [
        f"ε = {_decimal(3)(guarantee.get('epsilon'))}",
        f"δ = {_text(guarantee.get('delta'))}",
        f"per {_text(guarantee.get('unit'))}",
        f"noise multiplier {_decimal(3)(guarantee.get('noise_multiplier'))}",
        f"max grad norm {_decimal(3)(guarantee.get('max_grad_norm'))}",
        f"sample rate {_decimal(4)(guarantee.get('sample_rate'))}",
        f"{_integer(guarantee.get('steps'))} steps",
        f"accountant {_text(guarantee.get('accountant'))}",
    ]
    return "differentially private training: " + ", ".join(parts)


def _by_behaviour(events_by_day: pd.DataFrame) -> str:
    """ "view 75,872 · cart 4,497 · ...": the totals behind the stacked bars."""
    if events_by_day.empty:
        return _MISSING
    totals = events_by_day.groupby("behavior", sort=False)["events"].sum()
    order = [b.value for b in BEHAVIORS if b.value in totals.index]
    order += [b for b in totals.index if b not in order]
    return " · ".join(f"{b} {_integer(totals[b])}" for b in order)


def _overview(data: ReportData) -> Section:
    overview = data.overview
    facts = [
        ("users", _integer(overview.get("users"))),
        ("items", _integer(overview.get("items"))),
        ("categories", _integer(overview.get("categories"))),
        ("events", _integer(overview.get("events"))),
        ("events by behaviour", _by_behaviour(data.events_by_day)),
        ("first event", _text(overview.get("first_event"))),
        ("last event", _text(overview.get("last_event"))),
        ("source", _text(data.source)),
        ("cut-off (models fitted before)", _text(data.cutoff)),
        ("scored at", _text(data.scored_at)),
        ("model", _text(data.model)),
    ]
    figure = _drawing(
        "events-by-day",
        figures.events_by_day(data.events_by_day, data.timezone),
        "Events per day, stacked by behaviour: the span of the log, its gaps and its mix.",
        "No events to show per day.",
    )
    return Section("overview", "Data overview", {"facts": facts, "figures": [figure]})


def _decay(data: ReportData) -> Section:
    drawings = [
        _drawing(
            "decay-curves",
            figures.decay_curves(data.decay_curves, data.category_half_lives),
            "Interest relative to now if the top categories' users had no new events.",
            "No category passed the release threshold: no interest curve to show."
            if _private(data)
            else "No category interest to show: the model gives no per-category interest.",
        ),
        _drawing(
            "half-life-distribution",
            figures.half_life_distribution(data.half_lives_days),
            "How fast interest fades over (user, category) pairs, in days; the dashed line is"
            " the median.",
            "Not drawn under differential privacy: its bins count (user, category) pairs."
            if _private(data)
            else "No half-lives to show.",
        ),
    ]
    table = _table(
        data.category_half_lives,
        [
            Column("category_id", "category", _text, kind="text"),
            Column("half_life_days", "interest half-life (days)", _decimal(1)),
            Column("half_life_low", "95% interval from", _decimal(1)),
            Column("half_life_high", "to", _decimal(1)),
            Column("session_half_life_hours", "session half-life (h)", _decimal(2)),
            Column("users", "users", _integer),
        ],
    )
    notes = []
    if data.overview.get("categories") == 0:
        notes.append(
            f"This log has no categories: interest is modelled per user, as one implicit"
            f" category {UNCATEGORISED!r}."
        )
    extra = {
        "figures": drawings,
        "table": table,
        "empty": "No category half-lives to show.",
        "notes": notes,
    }
    return Section("decay", "Interest decay", extra)


def _return(data: ReportData) -> Section:
    drawings = [
        _drawing(
            "return-curve",
            figures.return_curve(data.return_curves, data.model),
            "Share of users back after the cut-off: observed (step) against the model.",
            "No return curve to show.",
        ),
        _drawing(
            "return-calibration",
            figures.return_calibration(data.return_calibration, data.return_horizon_hours),
            "Predicted return probability per bin against the share that returned.",
            "No calibration bins to show.",
        ),
    ]
    comparison = data.comparison
    extra = {
        "figures": drawings,
        "describe": comparison.describe(),
        "table": _comparison_table(comparison.table, comparison.k),
        "notes": [str(note) for note in comparison.notes],
    }
    return Section("return", "Return prediction and model comparison", extra)


def _segments(data: ReportData) -> Section:
    drawings = [
        _drawing(
            "segment-sizes",
            figures.segment_sizes(data.segments),
            "Users per segment at the scoring instant, from lost to active.",
            "No segments to show.",
        ),
        _drawing(
            "segment-flows",
            figures.segment_flows(data.segment_flows),
            "How many users moved from each segment at the cut-off to each segment now.",
            "No segment flows to show.",
        ),
    ]
    warnings = _table(
        data.early_warning,
        [
            Column("rank", "rank", _integer),
            Column("user_id", "user", _text, kind="text"),
            Column("interest_vs_usual_before", "interest vs usual, before", _share),
            Column("interest_vs_usual", "interest vs usual, now", _share),
            Column("p_return_before", "P(return) before", _decimal(3)),
            Column("p_return_now", "P(return) now", _decimal(3)),
            Column("faded_categories", "faded categories", _listed, kind="list"),
            Column("reason", "why", _text, kind="long"),
        ],
        limit=_ROWS,
    )
    extra = {
        "figures": drawings,
        "table": warnings,
        "empty": _LEFT_OUT
        if _private(data)
        else "No early warnings: no user was scored at both the cut-off and now.",
    }
    return Section("segments", "Segments and early warning", extra)


def _plan(data: ReportData) -> Section:
    summary = data.plan_summary
    currency = str(summary.get("currency") or "")
    private = _private(data)
    drawing = _drawing(
        "plan-by-action",
        None if private else figures.plan_by_action(data.plan_by_action, currency),
        "Spend and expected incremental conversions per action, stacked by segment.",
        "Not drawn under differential privacy: spend and conversions are sums over single users."
        if private
        else "Nobody is contacted: no spend or conversions to show.",
    )
    by_action = _table(
        data.plan_by_action,
        [
            Column("action", "action", _text, kind="text"),
            Column("segment", "segment", _text, kind="text"),
            Column("users", "users", _integer),
            Column("cost", f"spend ({currency})".replace(" ()", ""), _decimal(2)),
            Column("expected_conversions", "expected conversions", _decimal(2)),
            Column("value", "value", _decimal(2)),
        ],
    )
    extra = {
        "facts": _plan_facts(summary, currency),
        "assumed": bool(summary.get("assumed_effects", False)),
        "notes": [str(note) for note in summary.get("notes") or []],
        "figures": [drawing],
        "by_action": by_action,
        "contacts": _table(data.plan_contacts, _auto_columns(data.plan_contacts), limit=_ROWS),
        "no_contacts": _LEFT_OUT if private else "Nobody is contacted by this plan.",
    }
    return Section("plan", "Activation plan", extra)


def _plan_facts(summary: Mapping[str, Any], currency: str) -> list[tuple[str, str]]:
    def money(key: str) -> str:
        amount = _decimal(2)(summary.get(key))
        return f"{amount} {currency}".strip() if amount != _MISSING else amount

    return [
        ("budget", money("budget")),
        ("spend", money("spend")),
        ("users scored", _integer(summary.get("users"))),
        ("contacts", _integer(summary.get("contacts"))),
        ("expected incremental conversions", _decimal(2)(summary.get("expected_conversions"))),
        ("value", _decimal(2)(summary.get("value"))),
        ("objective", _text(summary.get("objective"))),
        ("method", _text(summary.get("method"))),
        ("horizon (days)", _decimal(1)(summary.get("horizon_days"))),
    ]


def _drilldown(drilldowns: Sequence[UserDrilldown], cutoff: str, private: bool = False) -> Section:
    users = [_user(index, drilldown) for index, drilldown in enumerate(drilldowns)]
    empty = _LEFT_OUT if private else "No users to show in the drill-down."
    in_sample = (
        f"In-sample before {cutoff}: the curves draw the past with the parameters the model"
        " learned from events up to that instant, so up to there they describe, not forecast."
    )
    extra = {"users": users, "in_sample": in_sample, "empty": empty}
    return Section("drilldown", "User drill-down", extra)


def _user(index: int, drilldown: UserDrilldown) -> dict[str, Any]:
    svg = figures.user_interest(
        drilldown.user_id, drilldown.curves, drilldown.events, drilldown.half_lives, index
    )
    drawing = _drawing(
        "user-interest",
        svg,
        "Expected events per day in the user's top categories; markers are their events.",
        "No interest curve for this user.",
    )
    return {
        "user_id": drilldown.user_id,
        "segment": drilldown.segment,
        "action": drilldown.action,
        "reason": drilldown.reason,
        "figure": drawing,
    }


def _campaign(campaign: Mapping[str, Any]) -> Section:
    ab = campaign.get("ab") or {}
    drawings = [
        _drawing(
            "qini-curves",
            figures.qini_curves(campaign),
            "Incremental conversions as more users are targeted by predicted uplift, "
            "against random targeting (dashed).",
            "No uplift model was scored: no Qini curves to show.",
        ),
        _drawing(
            "uplift-curves",
            figures.uplift_curves(campaign),
            "Incremental outcomes among the targeted users, by fraction targeted, "
            "against random targeting (dashed).",
            "No uplift model was scored: no uplift curves to show.",
        ),
    ]
    notes = [*(ab.get("notes") or []), *(campaign.get("notes") or [])]
    extra = {
        "ab": _ab_table(ab.get("table") or []),
        "srm": _srm_line(ab.get("srm")),
        "srm_detected": bool((ab.get("srm") or {}).get("srm_detected", False)),
        "figures": drawings,
        "uplift": _uplift_table(campaign.get("uplift") or []),
        "normalisation": _text(campaign.get("normalisation")),
        "notes": [str(note) for note in notes],
    }
    return Section("campaign", "Campaign analysis", extra)


def _engagement(engagement: Mapping[str, Any]) -> Section:
    """CTR, conversion and satisfaction, each rate with its interval in one cell."""
    funnel = pd.DataFrame(list(engagement.get("funnel") or []))
    satisfaction = pd.DataFrame(list(engagement.get("satisfaction") or []))
    counts = [
        Column(name, header, _integer)
        for name, header in (
            ("users", "users"),
            ("impressions", "impressions"),
            ("clicks", "clicks"),
            ("unattributed_clicks", "unattributed clicks"),
            ("conversions", "conversions"),
        )
    ]
    level = f"{1 - (engagement.get('alpha') or 0.05):.0%}"
    rates = [
        Column(name, f"{header} [{level}]", _text)
        for name, header in (
            ("ctr", "CTR"),
            ("conversion", "conversion"),
            ("buys_per_impression", "buys per impression"),
        )
    ]
    funnel = _with_intervals(funnel, [column.name for column in rates], percent=True)
    satisfaction = _with_intervals(satisfaction, ["mean_rating"], percent=False)
    groups = [Column("by", "by", _text, kind="text"), Column("group", "group", _text, kind="text")]
    extra = {
        "funnel": _table(funnel, [*groups, *counts, *rates]),
        "satisfaction": _table(
            satisfaction,
            [
                *groups,
                Column("users", "users", _integer),
                Column("ratings", "ratings", _integer),
                Column("mean_rating", f"mean rating [{level}]", _text),
            ],
        ),
        "scope": "Overall and per placement over the whole log; per segment over the events"
        " after the cut-off, by the segment each user was in at the cut-off.",
        "method": _engagement_method(engagement),
        "notes": [str(note) for note in engagement.get("notes") or []],
    }
    return Section("engagement", "Clicks, conversion and satisfaction", extra)


def _with_intervals(frame: pd.DataFrame, names: Sequence[str], *, percent: bool) -> pd.DataFrame:
    """The frame with each named rate as one text cell: ``value [low, high]``."""
    if frame.empty:
        return frame
    records = frame.to_dict(orient="records")
    return frame.assign(
        **{name: [format_rate(row, name, percent=percent) for row in records] for name in names}
    )


def _engagement_method(engagement: Mapping[str, Any]) -> str:
    click = _decimal(0)(engagement.get("click_window_hours"))
    attribution = _decimal(0)(engagement.get("attribution_window_hours"))
    return (
        f"A click counts for an impression of the same user and item shown at most {click} h"
        f" before it; a buy of that item at most {attribution} h after a click converts it;"
        f" {_text(engagement.get('intervals'))}."
    )


def _ab_table(rows: Sequence[Mapping[str, Any]]) -> Table | None:
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return None
    frame["diff_ci"] = [_with_interval(row) for row in frame.to_dict(orient="records")]
    return _table(
        frame,
        [
            Column("arm", "arm", _text, kind="text"),
            Column("outcome", "outcome", _text, kind="text"),
            Column("metric", "metric", _text, kind="text"),
            Column("n_control", "n control", _integer),
            Column("n_arm", "n arm", _integer),
            Column("mean_control", "mean control", _decimal(4)),
            Column("mean_arm", "mean arm", _decimal(4)),
            Column("diff_ci", "diff [95% CI]", _text),
            Column("rel_diff", "relative diff", _percent),
            Column("p_value_holm", "p (Holm)", _p_value),
        ],
    )


def _with_interval(row: Mapping[str, Any]) -> str:
    diff = _signed(4)(row.get("diff"))
    low, high = _signed(4)(row.get("diff_ci_low")), _signed(4)(row.get("diff_ci_high"))
    return diff if _MISSING in (low, high) else f"{diff} [{low}, {high}]"


def _srm_line(srm: Mapping[str, Any] | None) -> str:
    """One sentence on the sample ratio check, so a broken randomisation is not missed."""
    if not srm:
        return "No sample ratio check was run."
    observed = ", ".join(f"{arm} {_integer(n)}" for arm, n in (srm.get("observed") or {}).items())
    verdict = "MISMATCH detected" if srm.get("srm_detected") else "no mismatch"
    return (
        f"Sample ratio check ({_text(srm.get('method'))}): observed {observed}; "
        f"chi² = {_decimal(2)(srm.get('chi2'))}, df = {_integer(srm.get('df'))}, "
        f"p = {_p_value(srm.get('p_value'))}: {verdict} at threshold "
        f"{_text(srm.get('threshold'))}."
    )


def _uplift_table(arms: Sequence[Mapping[str, Any]]) -> Table | None:
    rows = [
        {"arm": arm.get("arm"), "score": arm.get("score"), **(arm.get("metrics") or {})}
        for arm in arms
    ]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return None
    return _table(
        frame,
        [
            Column("arm", "arm", _text, kind="text"),
            Column("score", "ranked by", _text, kind="text"),
            Column("qini", "Qini", _decimal(4)),
            Column("qini_normalised", "Qini (norm.)", _decimal(4)),
            Column("auuc", "AUUC", _decimal(4)),
            Column("auuc_normalised", "AUUC (norm.)", _decimal(4)),
        ],
    )


# -- tables ------------------------------------------------------------------------------


def _table(
    frame: pd.DataFrame, columns: Sequence[Column], limit: int | None = None
) -> Table | None:
    """The frame's columns that exist, formatted; None when there is nothing to show."""
    shown = [column for column in columns if column.name in frame.columns]
    if frame.empty or not shown:
        return None
    rows = frame.head(limit) if limit is not None else frame
    headers = [Cell(column.header, column.kind) for column in shown]
    body = [
        [Cell(column.format(record[column.name]), column.kind) for column in shown]
        for record in rows.to_dict(orient="records")
    ]
    return Table(headers, body)


def _auto_columns(frame: pd.DataFrame) -> list[Column]:
    """Columns of a frame whose layout is not fixed (the plan's contacts), by their values.

    Headers show ``_`` as spaces so they can wrap; sentences and lists get room
    (`_text_kind`), so a reason does not become a narrow tower of words.
    """
    columns = []
    for name in frame.columns:
        values = frame[name]
        header = str(name).replace("_", " ")
        if pd.api.types.is_bool_dtype(values):
            columns.append(Column(name, header, _yes_no, kind="text"))
        elif pd.api.types.is_integer_dtype(values):
            columns.append(Column(name, header, _integer))
        elif pd.api.types.is_float_dtype(values):
            columns.append(Column(name, header, _decimal(3)))
        else:
            columns.append(Column(name, header, _listed, kind=_text_kind(values)))
    return columns


def _text_kind(values: pd.Series) -> str:
    """``long`` for sentences, ``list`` for lists of ids, else ``text`` (CSS gives room)."""
    if values.map(lambda value: isinstance(value, list | tuple | np.ndarray)).any():
        return "list"
    sentences = values.map(lambda value: isinstance(value, str)).all()
    return "long" if sentences and values.str.len().median() > 30 else "text"


def _comparison_table(table: pd.DataFrame, k: int) -> Table | None:
    """The model comparison, formatted as `Comparison.to_markdown` does, best values bold."""
    if table.empty:
        return None
    metrics = [column for column in table.columns if column != "model"]
    best = {column: _best(table[column], column) for column in metrics}
    headers = [Cell("model")] + [Cell(_metric_header(column, k), "num") for column in metrics]
    rows = []
    for position, record in enumerate(table.to_dict(orient="records")):
        cells = [Cell(_text(record.get("model")))]
        for column in metrics:
            text = _metric_cell(record[column], column)
            cells.append(Cell(text, "num", best[column] == position and text != _MISSING))
        rows.append(cells)
    return Table(headers, rows, compact=len(metrics) > 8)


def _metric_header(column: str, k: int) -> str:
    """As `Comparison.to_markdown` names columns, with spaces for ``_`` so headers wrap."""
    return column.replace("_at_k", f"@{k}").replace("_seconds", " s").replace("_", " ")


def _metric_cell(value: Any, column: str) -> str:
    """Like `evaluate.comparison`'s cells: 4 decimals, seconds with 1, "–" when missing."""
    number = _as_float(value)
    if number is None:
        return _MISSING
    return f"{number:,.1f}" if column.endswith("seconds") else f"{number:.4f}"


def _best(values: pd.Series, column: str) -> int | None:
    """Row position of the best value of a metric column; None for timings or unknown names."""
    direction = _direction(column)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if direction == 0 or not np.isfinite(numbers).any():
        return None
    finite = np.where(np.isfinite(numbers), numbers * direction, -np.inf)
    return int(np.argmax(finite))


def _direction(column: str) -> int:
    """+1 when larger is better, -1 when smaller is better, 0 when neither is known."""
    name = re.sub(r"(_at_k|@\d+|_at_\d+)$", "", column.lower())
    if name.endswith("seconds"):
        return 0
    if any(name == m or name.endswith("_" + m) for m in _HIGHER_IS_BETTER):
        return 1
    if any(name == m or name.endswith("_" + m) for m in _LOWER_IS_BETTER):
        return -1
    return 0


# -- cells -------------------------------------------------------------------------------


def _as_float(value: Any) -> float | None:
    """A finite number, or None for missing values (None, NaN, NA, inf, text)."""
    if value is None or isinstance(value, bool | str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return _MISSING
    return str(value)


def _integer(value: Any) -> str:
    number = _as_float(value)
    return _MISSING if number is None else f"{round(number):,}"


def _decimal(digits: int) -> Formatter:
    def format_number(value: Any) -> str:
        number = _as_float(value)
        return _MISSING if number is None else f"{number:,.{digits}f}"

    return format_number


def _signed(digits: int) -> Formatter:
    def format_change(value: Any) -> str:
        number = _as_float(value)
        return _MISSING if number is None else f"{number:+,.{digits}f}"

    return format_change


def _percent(value: Any) -> str:
    number = _as_float(value)
    return _MISSING if number is None else f"{number:+.1%}"


def _share(value: Any) -> str:
    """A ratio as a whole percent (1 → 100%)."""
    number = _as_float(value)
    return _MISSING if number is None else f"{number:.0%}"


def _p_value(value: Any) -> str:
    number = _as_float(value)
    if number is None:
        return _MISSING
    return "< 0.0001" if number < 1e-4 else f"{number:.4f}"


def _yes_no(value: Any) -> str:
    return _MISSING if _text(value) == _MISSING else ("yes" if bool(value) else "no")


def _listed(value: Any) -> str:
    """Lists comma-joined (numbers with 3 decimals); scalars as text."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        return _text(value)
    items = list(value)
    if not items:
        return _MISSING
    return ", ".join(_text(x) if _as_float(x) is None else f"{float(x):.3f}" for x in items)


def _drawing(name: str, svg: str | None, caption: str, fallback: str) -> Drawing:
    """A figure slot; the SVG is trusted markup (matplotlib escapes every text it draws)."""
    return Drawing(name, Markup(svg) if svg is not None else None, caption, fallback)
