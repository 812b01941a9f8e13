"""Click-through, conversion and satisfaction in the terminal, for `campaign analyze` and
`evaluate`: the options, the store read, the tables. Not a command of its own."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ebbtide.cli.options import err, out, parse_duration
from ebbtide.store import EventStore

ClickWindowOption = Annotated[
    str,
    typer.Option(help="With --db: a click counts for an impression shown this long before it."),
]
AttributionWindowOption = Annotated[
    str, typer.Option(help="With --db: a buy converts a click made this long before it.")
]

#: Categories printed in the satisfaction table (those with the most ratings).
CATEGORIES_SHOWN = 10

#: The markdown heading of the section, the same in every command's --markdown.
HEADING = "## Clicks, conversion and satisfaction"


def rates_config(click_window: str, attribution_window: str) -> Any:
    """The `RatesConfig` of the two window options."""
    from ebbtide.activate.engagement_rates import RatesConfig

    return RatesConfig(
        click_window=parse_duration(click_window, "--click-window"),
        attribution_window=parse_duration(attribution_window, "--attribution-window"),
    )


def store_rates(
    store: EventStore,
    *,
    since: datetime | None,
    until: datetime | None = None,
    config: Any = None,
    **groups: Any,
) -> Any:
    """`engagement_rates` over the store's events in ``[since, until)``, or None when it
    holds no impression, click or rating there (``groups``: arms, segments, control)."""
    from ebbtide.activate.engagement_rates import engagement_events, engagement_rates

    events = engagement_events(store, since=since, until=until, config=config)
    rates = engagement_rates(events, since=since, until=until, config=config, **groups)
    return None if rates.empty else rates


def print_rates(rates: Any, title: str) -> None:
    """The funnel, satisfaction and arm-difference tables, the method and the notes."""
    from ebbtide.activate.engagement_rates import RATES, format_rate, format_value

    console = out()
    if not rates.funnel.empty:
        table = Table(title=f"Clicks and conversion {title}")
        for name in ("by", "group", "users", "impressions", "clicks", "unattributed"):
            table.add_column(name, justify="left" if name in ("by", "group") else "right")
        for name in ("conversions", "CTR [95%]", "conversion [95%]", "buys/impression [95%]"):
            table.add_column(name, justify="right")
        for row in rates.funnel.to_dict(orient="records"):
            counts = ("users", "impressions", "clicks", "unattributed_clicks", "conversions")
            table.add_row(
                row["by"],
                escape(str(row["group"])),
                *(f"{row[name]:,}" for name in counts),
                *(format_rate(row, name) for name, _, _ in RATES),
            )
        console.print(table)
    if not rates.satisfaction.empty:
        shown, hidden = _top_categories(rates.satisfaction)
        table = Table(title=f"Satisfaction (ratings) {title}")
        for name in ("by", "group", "users", "ratings", "mean rating [95%]"):
            table.add_column(name, justify="left" if name in ("by", "group") else "right")
        for row in shown.to_dict(orient="records"):
            table.add_row(
                row["by"],
                escape(str(row["group"])),
                f"{row['users']:,}",
                f"{row['ratings']:,}",
                format_rate(row, "mean_rating", percent=False),
            )
        console.print(table)
        if hidden:
            console.print(
                f"… and {hidden:,} categories with fewer ratings: every one in --json and"
                " --markdown.",
                highlight=False,
            )
    if not rates.arm_effects.empty:
        control = escape(str(rates.arm_effects["control"].iloc[0]))
        table = Table(title=f"Each arm against the control arm {control}")
        for name in ("arm", "metric", "control value", "arm value", "arm − control [95%]"):
            table.add_column(name, justify="left" if name in ("arm", "metric") else "right")
        for row in rates.arm_effects.to_dict(orient="records"):
            percent = row["metric"] != "mean_rating"
            table.add_row(
                escape(str(row["arm"])),
                row["metric"],
                format_value(row["control_value"], percent),
                format_value(row["arm_value"], percent),
                format_rate(row, "diff", percent=percent, signed=True),
            )
        console.print(table)
    console.print(rates.method(), highlight=False, markup=False)
    for note in rates.notes:
        err().print(f"note: {note}", highlight=False, markup=False)


def _top_categories(satisfaction: Any) -> tuple[Any, int]:
    """The rows to print: every row but the categories past the `CATEGORIES_SHOWN` with the
    most ratings (a shop has hundreds); and how many categories were left out."""
    is_category = satisfaction["by"] == "category"
    categories = satisfaction[is_category].sort_values(
        ["ratings", "group"], ascending=[False, True], kind="stable"
    )
    kept = categories.head(CATEGORIES_SHOWN)
    shown = satisfaction[~is_category | satisfaction.index.isin(kept.index)]
    return shown, len(categories) - len(kept)
