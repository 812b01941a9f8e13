"""The report's figures: one function per figure, each turning one `ReportData` field into SVG.

Why SVG text and not images: the report must be one file that works offline, stays sharp when
zoomed and stays small, so every figure is inline SVG with text kept as text
(``svg.fonttype: none``). Figures are drawn on `matplotlib.figure.Figure` objects, never through
pyplot, so no global figure state leaks between reports or tests; the few rcParams that matter
are set in an `rc_context` around each drawing only. ``text.parse_math`` is off because category
and user ids come from users' files and may contain ``$``; ``svg.hashsalt`` makes the output
the same on every run, so a report can be diffed.

Every function returns the SVG markup, or None when its data is empty: the page then says so in
a sentence instead of drawing an empty axis.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from html import escape
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)

from ebbtide.activate.segments import SEGMENTS
from ebbtide.schema import BEHAVIORS

__all__ = [
    "SEGMENT_ORDER",
    "decay_curves",
    "events_by_day",
    "half_life_distribution",
    "plan_by_action",
    "qini_curves",
    "return_calibration",
    "return_curve",
    "segment_flows",
    "segment_sizes",
    "uplift_curves",
    "user_interest",
]

#: Segments from the most worrying to the most engaged, the order of every segment axis.
SEGMENT_ORDER: tuple[str, ...] = tuple(reversed(SEGMENTS))

_WIDE = (7.0, 3.5)
_SQUARE = (5.0, 4.0)
_LABEL_CHARS = 40

_RC = {
    "svg.hashsalt": "ebbtide",
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.family": "sans-serif",
    # Text is laid out with matplotlib's bundled DejaVu Sans and written once per <text>:
    # a short fallback list keeps the SVG small.
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
}

_SEGMENT_COLOURS = {
    "lost": "#b2182b",
    "dormant": "#ef8a62",
    "at_risk": "#e6b800",
    "cooling": "#67a9cf",
    "active": "#1b7837",
    "new": "#999999",
}

_BEHAVIOUR_MARKERS = {"view": "o", "cart": "s", "fav": "^", "buy": "*"}

_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_TAG = re.compile(r"<[^<>]*>")
_ID = re.compile(r'\bid="([^"]*)"')
_URL = re.compile(r"url\(#([^)]*)\)")
_HREF = re.compile(r'href="#([^"]*)"')


def _thousands() -> FuncFormatter:
    """Whole numbers with thousands separators (a new formatter per axis: they hold state)."""
    return FuncFormatter(lambda value, _: f"{value:,.0f}")


# -- drawing plumbing --------------------------------------------------------------------


@contextmanager
def _style() -> Iterator[None]:
    """The report's rcParams, for one drawing only (matplotlib reads them at draw time)."""
    with mpl.rc_context(_RC):
        yield


def _svg(figure: Figure, prefix: str, label: str) -> str:
    """The figure as an ``<svg>`` element ready to inline in HTML.

    The XML prolog, DOCTYPE and RDF metadata (which names external URIs) are dropped, and
    every id is prefixed so that several SVGs on one page cannot share clip paths or markers
    by accident. Ids are only rewritten inside tags: text content is escaped by matplotlib
    and never holds a ``<``, so a user id that looks like ``id="x"`` is left as it is.
    """
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    text = _METADATA.sub("", text[text.index("<svg") :], count=1)
    text = _TAG.sub(lambda tag: _prefix_ids(tag.group(0), prefix), text)
    attributes = f'<svg role="img" aria-label="{escape(label, quote=True)}" '
    return text.replace("<svg ", attributes, 1).strip()


def _prefix_ids(tag: str, prefix: str) -> str:
    tag = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', tag)
    tag = _URL.sub(lambda m: f"url(#{prefix}-{m.group(1)})", tag)
    return _HREF.sub(lambda m: f'href="#{prefix}-{m.group(1)}"', tag)


def _short(label: Any) -> str:
    """A label that fits a legend: long ids are cut, never dropped."""
    text = str(label)
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def _hours(value: float) -> str:
    """Half-lives (hours or days): whole units from 10 up, one decimal below."""
    if not math.isfinite(value):
        return "–"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}"


def _ordered(values: Sequence[Any], order: Sequence[str]) -> list[Any]:
    """`values` in `order` first, the rest sorted after it (unknown names are kept)."""
    present = [name for name in order if name in set(values)]
    return present + sorted(set(values) - set(present), key=str)


def _share_axis(axis: Any) -> None:
    """Shares (0..1) shown as whole percents."""
    axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def _count_axis(axis: Any) -> None:
    """Counts: whole-number ticks with thousands separators (no "0, 0, 1, 1" on small data)."""
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(_thousands())


def _log_axis(axis: Any) -> None:
    """Plain 1-2-5 labels on a log axis: matplotlib's default labels are mathtext, which
    ``text.parse_math: False`` would print as raw TeX."""
    axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,g}"))
    axis.set_minor_formatter(NullFormatter())


# -- 1. overview -------------------------------------------------------------------------


def events_by_day(frame: pd.DataFrame, timezone: str = "UTC") -> str | None:
    """Stacked bars of events per day by behaviour: shows the log's span, gaps and mix."""
    if frame.empty:
        return None
    table = frame.pivot_table(
        index="day", columns="behavior", values="events", aggfunc="sum", fill_value=0
    ).sort_index()
    behaviours = _ordered(list(table.columns), [b.value for b in BEHAVIORS])
    with _style():
        figure = Figure(figsize=_WIDE)
        axes = figure.add_subplot()
        positions = np.arange(len(table))
        bottom = np.zeros(len(table))
        for behaviour in behaviours:
            counts = table[behaviour].to_numpy(dtype=float)
            axes.bar(positions, counts, 0.8, bottom=bottom, label=_short(behaviour))
            bottom += counts
        step = max(1, math.ceil(len(table) / 12))
        axes.set_xticks(positions[::step], [str(day) for day in table.index[::step]])
        axes.tick_params(axis="x", labelrotation=30)
        _count_axis(axes.yaxis)
        axes.set(
            title="Events per day", xlabel=f"day (YYYY-MM-DD, {timezone})", ylabel="events (count)"
        )
        axes.legend(title="behaviour", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return _svg(figure, "events-by-day", "Stacked bars of events per day by behaviour")


# -- 2. interest decay -------------------------------------------------------------------


def decay_curves(curves: pd.DataFrame, half_lives: pd.DataFrame) -> str | None:
    """Population interest, hours ahead with no new events, one line per top category."""
    if curves.empty:
        return None
    known = {}
    if not half_lives.empty:
        known = dict(zip(half_lives["category_id"], half_lives["half_life_days"], strict=True))
    order = [c for c in known if c in set(curves["category_id"])]
    order += [c for c in curves["category_id"].drop_duplicates() if c not in known]
    with _style():
        figure = Figure(figsize=_WIDE)
        axes = figure.add_subplot()
        for category in order:
            rows = curves[curves["category_id"] == category].sort_values("hours")
            label = f"category {_short(category)}"
            if category in known:
                label += f" (half-life {_hours(float(known[category]))} d)"
            axes.plot(rows["hours"], rows["relative_interest"], label=label)
        axes.set_ylim(bottom=0)
        axes.set(
            title="How interest fades with no new events (top categories)",
            xlabel="hours from now, with no new events (h)",
            ylabel="relative interest (1 = now)",
        )
        axes.legend(loc="upper right")
        return _svg(figure, "decay-curves", "Interest decay curves of the top categories")


def half_life_distribution(half_lives_days: pd.Series) -> str | None:
    """Histogram of (user, category) interest half-lives on a log axis, the median marked."""
    days = pd.to_numeric(half_lives_days, errors="coerce").to_numpy(dtype=float)
    days = days[np.isfinite(days) & (days > 0)]
    if days.size == 0:
        return None
    low, high = float(days.min()) / 1.1, float(days.max()) * 1.1
    median = float(np.median(days))
    with _style():
        figure = Figure(figsize=_WIDE)
        axes = figure.add_subplot()
        axes.hist(days, bins=np.geomspace(low, high, 31), color="#4c72b0", label="pairs")
        axes.axvline(median, color="#c44e52", linestyle="--", label=f"median {_hours(median)} d")
        axes.set_xscale("log")
        _log_axis(axes.xaxis)
        _count_axis(axes.yaxis)
        axes.set(
            title="Interest half-lives over (user, category) pairs",
            xlabel="interest half-life (days, log scale)",
            ylabel="(user, category) pairs (count)",
        )
        axes.legend(loc="upper right")
        return _svg(figure, "half-life-distribution", "Histogram of interest half-lives")


# -- 3. return ---------------------------------------------------------------------------


def return_curve(curves: pd.DataFrame, model: str) -> str | None:
    """Observed (Kaplan-Meier) against predicted share of users returned after the cut-off."""
    if curves.empty:
        return None
    curves = curves.sort_values("hours")
    with _style():
        figure = Figure(figsize=_WIDE)
        axes = figure.add_subplot()
        axes.step(
            curves["hours"],
            curves["observed"],
            where="post",
            color="#333333",
            label="observed (Kaplan-Meier)",
        )
        axes.plot(
            curves["hours"], curves["predicted"], color="#dd8452", label=f"predicted ({model})"
        )
        axes.set_ylim(bottom=0)
        _share_axis(axes.yaxis)
        axes.set(
            title="Users returned after the cut-off",
            xlabel="hours after the cut-off (h)",
            ylabel="users returned (% of users)",
        )
        axes.legend(loc="lower right")
        return _svg(figure, "return-curve", "Observed and predicted share of users returned")


def return_calibration(bins: pd.DataFrame, horizon_hours: float) -> str | None:
    """Predicted P(return) per bin against the share that returned; point size is users."""
    if bins.empty:
        return None
    users = bins["users"].to_numpy(dtype=float)
    sizes = 20.0 + 280.0 * users / max(float(users.max()), 1.0)
    with _style():
        figure = Figure(figsize=_SQUARE)
        axes = figure.add_subplot()
        axes.plot([0, 1], [0, 1], color="#999999", linestyle="--", label="perfect calibration")
        axes.scatter(
            bins["p_mean"], bins["observed"], s=sizes, color="#4c72b0", alpha=0.8, label="bin"
        )
        for x, y, n in zip(bins["p_mean"], bins["observed"], users, strict=True):
            axes.annotate(f"{n:,.0f}", (x, y), textcoords="offset points", xytext=(6, -10))
        axes.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.05))
        _share_axis(axes.xaxis)
        _share_axis(axes.yaxis)
        axes.set(
            title=f"Calibration of P(return within {_hours(horizon_hours)} h)",
            xlabel="predicted P(return) (%)",
            ylabel="observed share returned (%)",
        )
        axes.legend(loc="upper left", title="labels: users per bin")
        return _svg(figure, "return-calibration", "Calibration of the return probability")


# -- 4. segments -------------------------------------------------------------------------


def segment_sizes(segments: pd.DataFrame) -> str | None:
    """Users per segment, from lost to active, each bar labelled with its count."""
    if segments.empty:
        return None
    counts = segments.groupby("segment", sort=False)["users"].sum()
    order = _ordered(list(counts.index), SEGMENT_ORDER)
    values = counts.reindex(order).to_numpy(dtype=float)
    with _style():
        figure = Figure(figsize=_WIDE)
        axes = figure.add_subplot()
        colours = [_SEGMENT_COLOURS.get(str(name), "#777777") for name in order]
        bars = axes.bar([_short(name) for name in order], values, color=colours, label="users")
        axes.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=2)
        _count_axis(axes.yaxis)
        axes.margins(y=0.12)
        axes.set(title="Users per segment", xlabel="segment", ylabel="users (count)")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return _svg(figure, "segment-sizes", "Bar chart of users per segment")


def segment_flows(flows: pd.DataFrame) -> str | None:
    """Heatmap of users moving from their segment at the cut-off to their segment now."""
    if flows.empty:
        return None
    table = flows.pivot_table(
        index="segment_before", columns="segment_now", values="users", aggfunc="sum", fill_value=0
    )
    table = table.reindex(
        index=_ordered(list(table.index), SEGMENT_ORDER),
        columns=_ordered(list(table.columns), SEGMENT_ORDER),
        fill_value=0,
    )
    counts = table.to_numpy(dtype=float)
    with _style():
        figure = Figure(figsize=(6.0, 4.0))
        axes = figure.add_subplot()
        axes.grid(False)
        image = axes.imshow(counts, cmap="Blues", aspect="auto", vmin=0)
        _annotate_cells(axes, counts)
        axes.set_xticks(range(len(table.columns)), [_short(c) for c in table.columns])
        axes.set_yticks(range(len(table.index)), [_short(c) for c in table.index])
        axes.set(
            title="Segment at the cut-off → segment now",
            xlabel="segment now (at scored_at)",
            ylabel="segment at the cut-off",
        )
        figure.colorbar(image, ax=axes, label="users (count)", format=_thousands())
        return _svg(figure, "segment-flows", "Heatmap of users moving between segments")


def _annotate_cells(axes: Axes, counts: np.ndarray) -> None:
    """Write each cell's count, white on dark cells so it stays readable."""
    dark = counts.max() / 2 if counts.size else 0.0
    for (row, column), value in np.ndenumerate(counts):
        colour = "white" if value > dark else "black"
        axes.text(column, row, f"{value:,.0f}", ha="center", va="center", color=colour)


# -- 5. plan -----------------------------------------------------------------------------


def plan_by_action(frame: pd.DataFrame, currency: str) -> str | None:
    """Spend and expected incremental conversions per action, stacked by segment.

    Users without an action cost nothing and convert nothing extra, so "none" is left out
    of the figure (the table beside it still counts them).
    """
    contacted = frame[frame["action"] != "none"] if not frame.empty else frame
    if contacted.empty:
        return None
    with _style():
        figure = Figure(figsize=(9.0, 3.5))
        spend, conversions = figure.subplots(1, 2)
        _stacked_by_segment(spend, contacted, "cost")
        _stacked_by_segment(conversions, contacted, "expected_conversions")
        spend.set(title="Spend", xlabel="action", ylabel=f"spend ({currency})")
        conversions.set(
            title="Expected incremental conversions",
            xlabel="action",
            ylabel="incremental conversions (count)",
        )
        conversions.legend(title="segment", loc="upper left", bbox_to_anchor=(1.02, 1.0))
        return _svg(figure, "plan-by-action", "Spend and expected conversions per action")


def _stacked_by_segment(axes: Axes, frame: pd.DataFrame, value: str) -> None:
    table = frame.pivot_table(
        index="action", columns="segment", values=value, aggfunc="sum", fill_value=0.0
    )
    segments = _ordered(list(table.columns), SEGMENT_ORDER)
    bottom = np.zeros(len(table))
    labels = [_short(action) for action in table.index]
    for segment in segments:
        heights = table[segment].to_numpy(dtype=float)
        colour = _SEGMENT_COLOURS.get(str(segment))
        axes.bar(labels, heights, bottom=bottom, color=colour, label=_short(segment))
        bottom += heights
    axes.tick_params(axis="x", labelrotation=20)


# -- 6. drill-down -----------------------------------------------------------------------


def user_interest(
    user_id: str,
    curves: pd.DataFrame,
    events: pd.DataFrame,
    half_lives: Mapping[str, float],
    index: int,
) -> str | None:
    """One user's expected events/day per category over time, with their events on the curves.

    Each event sits on its category's curve at its instant (so markers show what pushed the
    curve up) and its marker says the behaviour. `index` keeps the SVG ids of several users
    apart on one page.
    """
    if curves.empty:
        return None
    curves = curves.assign(ts=_naive_utc(curves["ts"])).sort_values("ts")
    events = events.assign(ts=_naive_utc(events["ts"])) if not events.empty else events
    with _style():
        figure = Figure(figsize=_WIDE)
        axes = figure.add_subplot()
        handles = []
        for category, rows in curves.groupby("category_id", sort=False):
            half_life = half_lives.get(str(category))
            label = f"category {_short(category)}"
            if half_life is not None:
                label += f" (half-life {_hours(float(half_life))} h)"
            (line,) = axes.plot(rows["ts"], rows["level"], label=label)
            handles.append(line)
            _mark_events(axes, rows, events, category, line.get_color())
        handles += _behaviour_handles(events)
        locator = mdates.AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        axes.set_ylim(bottom=0)
        axes.set(
            title=f"Interest of user {_short(user_id)}",
            xlabel="time (UTC)",
            ylabel="expected events per day (1/day)",
        )
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        label = f"Interest over time of user {user_id}"
        return _svg(figure, f"user-interest-{index}", label)


def _naive_utc(values: pd.Series) -> pd.Series:
    """UTC instants without a zone: matplotlib's date axis reads them as UTC."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None)


def _mark_events(
    axes: Axes, curve: pd.DataFrame, events: pd.DataFrame, category: Any, colour: str
) -> None:
    """Draw the category's events on its curve, one marker shape per behaviour."""
    if events.empty:
        return
    mine = events[events["category_id"] == category]
    if mine.empty:
        return
    x_curve = mdates.date2num(curve["ts"])
    for behaviour, rows in mine.groupby("behavior", sort=False):
        x = mdates.date2num(rows["ts"])
        y = np.interp(x, x_curve, curve["level"].to_numpy(dtype=float))
        marker = _BEHAVIOUR_MARKERS.get(str(behaviour), "x")
        axes.scatter(rows["ts"], y, marker=marker, color=colour, edgecolors="black", zorder=3)


def _behaviour_handles(events: pd.DataFrame) -> list[Line2D]:
    """Legend entries for the marker shapes, in behaviour order."""
    if events.empty:
        return []
    present = _ordered(list(events["behavior"].unique()), [b.value for b in BEHAVIORS])
    return [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=_BEHAVIOUR_MARKERS.get(str(name), "x"),
            color="#777777",
            markeredgecolor="black",
            label=f"event: {_short(name)}",
        )
        for name in present
    ]


# -- 7. campaign -------------------------------------------------------------------------


def qini_curves(campaign: Mapping[str, Any]) -> str | None:
    """Qini curve per arm against random targeting (the straight line to its end point)."""
    return _gain_curves(campaign, "qini", "Qini curves", "Qini")


def uplift_curves(campaign: Mapping[str, Any]) -> str | None:
    """Uplift curve per arm against random targeting (the straight line to its end point)."""
    return _gain_curves(campaign, "uplift", "Uplift curves", "uplift curve")


def _outcome_unit(campaign: Mapping[str, Any], outcomes: list[str]) -> str:
    """ "count" for yes/no outcomes (the A/B table calls them rates), else the outcome's unit."""
    metrics = {
        str(row.get("outcome")): str(row.get("metric", ""))
        for row in (campaign.get("ab") or {}).get("table") or []
    }
    if all(metrics.get(o, "").endswith("_rate") for o in outcomes):
        return "count"
    if all(metrics.get(o) == "revenue_per_user" for o in outcomes):
        return "currency"
    return "outcome units"


def _gain_curves(campaign: Mapping[str, Any], key: str, title: str, what: str) -> str | None:
    arms = [arm for arm in campaign.get("uplift") or [] if arm.get("curves", {}).get(key)]
    if not arms:
        return None
    outcomes = sorted({str(arm.get("outcome", "outcome")) for arm in arms})
    with _style():
        figure = Figure(figsize=_WIDE)
        axes = figure.add_subplot()
        axes.axhline(0.0, color="#999999", linewidth=0.8)
        for arm in arms:
            fraction = np.asarray(arm["curves"]["fraction"], dtype=float)
            gain = np.asarray(arm["curves"][key], dtype=float)
            name = f"{_short(arm.get('arm', '?'))} ({_short(arm.get('outcome', ''))})"
            (line,) = axes.plot(fraction, gain, label=name)
            axes.plot(
                [0.0, 1.0],
                [0.0, gain[-1]],
                color=line.get_color(),
                linestyle="--",
                label=f"{_short(arm.get('arm', '?'))}: random targeting",
            )
        _share_axis(axes.xaxis)
        axes.set(
            title=f"{title}: incremental outcomes when targeting by predicted uplift",
            xlabel="users targeted (% of arm and control, highest uplift first)",
            ylabel=f"incremental {', '.join(_short(o) for o in outcomes)}"
            f" ({what}, {_outcome_unit(campaign, outcomes)})",
        )
        axes.legend(loc="upper left")
        return _svg(figure, f"{key}-curves", f"{title} per arm against random targeting")
