"""`ebbtide evaluate`: several models on one split (temporal holdout or leave-one-out).

Like every command module, it only turns options into library calls; `ebbtide.cli.main`
adds the command to the app.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ebbtide.cli.engagement import (
    HEADING,
    AttributionWindowOption,
    ClickWindowOption,
    print_rates,
    rates_config,
    store_rates,
)
from ebbtide.cli.options import (
    DbOption,
    DebugOption,
    QuietOption,
    after_last_event,
    names,
    neural_budget,
    out,
    parse_duration,
    parse_instant,
    require_store,
    stages,
    write_json,
    write_text,
)
from ebbtide.errors import ConfigError
from ebbtide.store import EventStore

app = typer.Typer()

#: Columns shown in the terminal; JSON and Markdown carry every metric.
_SHOWN = (
    ("return_auc", "return AUC"),
    ("return_brier", "return Brier"),
    ("return_ece", "return ECE"),
    ("return_c_index", "return C"),
    ("buy_auc", "buy AUC"),
    ("engage_auc", "re-engage AUC"),
    ("reactivation_auc", "re-activate AUC"),
    ("recall_at_k", "recall@K"),
    ("ndcg_at_k", "NDCG@K"),
    ("fit_seconds", "fit s"),
    ("score_seconds", "score s"),
)


@app.command()
def evaluate(
    db: DbOption = Path("ebbtide.duckdb"),
    models: Annotated[
        str, typer.Option(help="Families to compare, comma-separated.")
    ] = "popular,btyd,gbdt,decay,neural",
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="Fit before this instant (ISO 8601); default: one horizon before the end."
        ),
    ] = None,
    horizon: Annotated[str, typer.Option(help="Target window after the cut-off: 24h, 7d.")] = "1d",
    protocol: Annotated[
        str, typer.Option(help="holdout (fit before a cut-off) or loo (last event per user).")
    ] = "holdout",
    k: Annotated[
        int | None, typer.Option(help="Length of the item lists; default 20 (holdout), 10 (loo).")
    ] = None,
    dormant_days: Annotated[
        float, typer.Option(help="A category untouched this long counts as dormant.")
    ] = 3.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every metric as JSON.")
    ] = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Write the table as Markdown.")
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(help="Training budget of the neural model, in seconds (default: its own)."),
    ] = None,
    click_window: ClickWindowOption = "1h",
    attribution_window: AttributionWindowOption = "1d",
    quiet: QuietOption = False,
    _debug: DebugOption = False,
) -> None:
    """Fit each model on one split and score all of them on the same held-out events.

    holdout: fit before --cutoff, score return, purchase, time to return, category
    re-engagement and next items in the --horizon after it; when the store has impressions,
    clicks or ratings in that window, also the click-through rate, conversion and mean
    rating per placement. loo: each user's last event is the test target and the one before
    it validation (RecBole's protocol), full ranking.
    """
    from ebbtide.evaluate.leave_one_out import leave_one_out
    from ebbtide.evaluate.temporal import temporal_holdout
    from ebbtide.models.scoring import available_families, build_model

    if protocol not in ("holdout", "loo"):
        raise ConfigError(f"--protocol {protocol!r}: use holdout or loo")
    require_store(db)
    available_families()
    families: list = names(models)
    if max_seconds is not None:
        budget = neural_budget(max_seconds)
        families = [build_model(f, **budget) if f == "neural" else f for f in families]
    window = parse_duration(horizon, "--horizon")
    when = parse_instant(cutoff, "--cutoff") if cutoff else None
    config = rates_config(click_window, attribution_window)
    rates = None
    with (
        EventStore(db, read_only=True) as store,
        stages(quiet, "evaluating") as stage,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # fits' convergence notes; the table speaks
        if protocol == "loo":
            result = leave_one_out(store, families, k=k or 10, on_stage=stage)
        else:
            when = when or _default_cutoff(store, window)
            result = temporal_holdout(
                store, families, cutoff=when, horizon=window, k=k or 20,
                dormant_days=dormant_days, on_stage=stage,
            )  # fmt: skip
            stage("clicks, conversion and ratings in the window")
            rates = store_rates(store, since=when, until=when + window, config=config)
    payload, markdown = result.to_dict(), result.to_markdown()
    if protocol == "loo":
        _print_leave_one_out(result)
    else:
        _print_evaluation(result)
    if rates is not None:
        print_rates(rates, "in the test window")
        payload["engagement"] = rates.to_dict()
        markdown += f"\n{HEADING}\n\n{rates.to_markdown()}"
    write_json(json_out, payload)
    if markdown_out is not None:
        write_text(markdown_out, markdown)


def _default_cutoff(store: EventStore, window: timedelta) -> datetime:
    return after_last_event(store) - window


def _print_evaluation(result) -> None:
    """Metrics as rows and models as columns: five models fit an 80-column terminal."""
    split = result.split
    title = (
        f"Temporal holdout at {split['cutoff']} (+{split['horizon_days']:g} d): "
        f"{split['users']:,} users, {split['history_events']:,} + {split['window_events']:,} "
        "events"
    )
    table = Table(title=title)
    table.add_column("metric")
    records = result.table.to_dict(orient="records")
    for row in records:
        table.add_column(row["model"], justify="right")
    for column, label in _SHOWN:
        if column not in result.table.columns:
            continue
        cells = []
        for row in records:
            value = row[column]
            if value is None or value != value:
                cells.append("–")
            else:
                cells.append(f"{value:.1f}" if column.endswith("seconds") else f"{value:.3f}")
        table.add_row(label.replace("K", str(result.k)), *cells)
    out().print(table)
    out().print(
        f"To beat on return: days since the last event ranks at AUC"
        f" {split['recency_return_auc']:.3f}; the base rate for everyone has Brier"
        f" {split['base_rate_return_brier']:.4f}.",
        highlight=False,
    )
    out().print("–: the model does not answer that query. Every metric: --json or --markdown.")


def _print_leave_one_out(result) -> None:
    split = result.split
    table = Table(
        title=f"Leave-one-out: {split['users']:,} users, {split['items']:,} items (full ranking)"
    )
    table.add_column("metric")
    records = result.table.to_dict(orient="records")
    for row in records:
        table.add_column(row["model"], justify="right")
    for column in result.table.columns[1:]:
        fmt = "{:.1f}" if column.endswith("seconds") else "{:.4f}"
        label = column.replace("_seconds", " s").replace("_", " ")
        table.add_row(label, *(fmt.format(row[column]) for row in records))
    out().print(table)
    for note in result.notes:
        out().print(f"note: {note}", highlight=False, markup=False)
