"""`ebbtide segments` and `ebbtide plan`: who is drifting away, and whom to contact how.

Like every command module, it only turns options into library calls; `ebbtide.cli.main`
adds these commands to the app (the campaign commands are in `ebbtide.cli.campaign`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from ebbtide.cli.options import (
    CatalogueOption,
    DbOption,
    DebugOption,
    DpEpsilonOption,
    MinGroupUsersOption,
    ModelDirOption,
    err,
    key_value_table,
    load_model,
    out,
    parse_duration,
    parse_instant,
    release_config,
    require_store,
    write_frame,
    write_json,
)
from ebbtide.errors import ConfigError
from ebbtide.store import EventStore

app = typer.Typer()


@app.command()
def segments(
    model_dir: ModelDirOption,
    at: Annotated[str, typer.Option(help="Segment at this instant (ISO 8601; UTC default).")],
    db: DbOption = Path("ebbtide.duckdb"),
    horizon: Annotated[str, typer.Option(help="Return window after --at: 24h, 7d.")] = "7d",
    compare_at: Annotated[
        str | None,
        typer.Option(
            help="Earlier instant: also rank the users whose interest is furthest under their"
            " usual level, with the fall since then and a reason per user."
        ),
    ] = None,
    out_file: Annotated[
        Path, typer.Option("--out", help="Per-user segments: .parquet, .csv or .json.")
    ] = Path("segments.parquet"),
    warning_out: Annotated[
        Path | None,
        typer.Option(
            help="Churn early-warning list (with --compare-at; default: early_warning.csv"
            " beside --out)."
        ),
    ] = None,
    k: Annotated[int, typer.Option(help="Users in the early-warning list.")] = 100,
    sizes_out: Annotated[
        Path | None,
        typer.Option(
            help="Also write users per segment: .parquet, .csv or .json (under --dp-epsilon"
            " the only file written; default segment_sizes.csv beside --out).",
        ),
    ] = None,
    dp_epsilon: DpEpsilonOption = None,
    min_group_users: MinGroupUsersOption = None,
    _debug: DebugOption = False,
) -> None:
    """Put every user with history before --at in a segment, with the numbers behind it.

    With --dp-epsilon the segment sizes are released with user-level differential privacy
    (segments under 10 users, or --min-group-users, left out) and no per-user file is
    written; --min-group-users alone leaves small segments out of the sizes.

    With --compare-at before the model's cut-off, the model's family and settings are
    fitted again at --compare-at for the earlier scores: the saved model knows what
    happened after that instant.
    """
    from ebbtide.activate.segments import SEGMENTS, assign_segments, early_warning
    from ebbtide.aggregates import Release
    from ebbtide.features.history import snapshot
    from ebbtide.models.scoring import score_users

    privacy = release_config(dp_epsilon, min_group_users, default_k=None)
    if privacy is not None and privacy.epsilon is not None and compare_at is not None:
        raise ConfigError(
            "--compare-at writes an early-warning list of single users, which a release under"
            " --dp-epsilon leaves out: drop --compare-at, or --dp-epsilon"
        )
    require_store(db)
    when, window = parse_instant(at, "--at"), parse_duration(horizon, "--horizon")
    before = parse_instant(compare_at, "--compare-at") if compare_at is not None else None
    model = load_model(model_dir)
    with EventStore(db, read_only=True) as store:
        users, categories = score_users(model, snapshot(store, at=when), horizon=window, k=1)
        table = assign_segments(users, categories, horizon=window)
        warning = None
        if before is not None:
            then = snapshot(store, at=before)
            earlier_model = model
            if before < model.cutoff_:  # same family and config, fitted at --compare-at
                earlier_model = type(model)(model.config).fit(then)
            earlier = score_users(earlier_model, then, horizon=window, k=1)
            warning = early_warning(
                None, None, before=before, at=when, horizon=window, top=k,
                earlier=earlier, now=(users, categories),
            )  # fmt: skip
    private = privacy is not None and privacy.epsilon is not None
    if not private:
        write_frame(table, out_file)
    if warning is not None:
        write_frame(warning, warning_out or out_file.with_name("early_warning.csv"))
    if privacy is None:
        counts = table["segment"].value_counts()
        sizes = pd.DataFrame({"segment": counts.index, "users": counts.to_numpy()})
        notes: list[str] = []
    else:
        release = Release(privacy, tables=1)
        domain = pd.DataFrame({"segment": list(SEGMENTS)})
        released = release.counts(
            table, ["segment"], name="users per segment", rows=None, events=False,
            domain=domain, max_groups=1,
        )  # fmt: skip
        sizes, notes = released.table, [released.note()]
    if sizes_out is not None or private:
        write_frame(sizes, sizes_out or out_file.with_name("segment_sizes.csv"))
    rows = [(name, f"{n:,}") for name, n in zip(sizes["segment"], sizes["users"], strict=True)]
    out().print(key_value_table(f"Segments at {when.isoformat()} ({horizon})", rows))
    for note in notes:
        err().print(note, highlight=False, markup=False)


@app.command()
def plan(
    model_dir: ModelDirOption,
    at: Annotated[str, typer.Option(help="Plan as of this instant (ISO 8601; UTC default).")],
    db: DbOption = Path("ebbtide.duckdb"),
    budget: Annotated[
        float | None, typer.Option(help="Spend limit; overrides the catalogue's budget.")
    ] = None,
    catalogue_file: CatalogueOption = None,
    objective: Annotated[
        str | None, typer.Option(help="conversions or margin; overrides the catalogue.")
    ] = None,
    horizon: Annotated[str, typer.Option(help="Return window after --at: 24h, 7d.")] = "7d",
    effects_file: Annotated[
        Path | None,
        typer.Option(
            "--effects",
            help="Learned effects (user_id, action, uplift[, p_conversion]), e.g. from"
            " `campaign uplift --effects-out`; default: the prior response model, flagged as"
            " an assumption.",
        ),
    ] = None,
    contacts_file: Annotated[
        Path | None,
        typer.Option(
            "--contacts",
            help="Contact history (user_id, last_contact time) for the frequency cap.",
        ),
    ] = None,
    order_value: Annotated[
        float | None,
        typer.Option(help="Mean order value; default: the mean purchase in the log."),
    ] = None,
    k: Annotated[int, typer.Option(help="Items to show each contacted user.")] = 5,
    method: Annotated[str, typer.Option(help="auto, exact or greedy.")] = "auto",
    out_file: Annotated[
        Path, typer.Option("--out", help="The plan, one row per user: .parquet, .csv or .json.")
    ] = Path("plan.parquet"),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the headline numbers as JSON.")
    ] = None,
    _debug: DebugOption = False,
) -> None:
    """Choose at most one action per user, within budget and caps, and the items to show."""
    from ebbtide.activate.actions import default_actions, load_actions, override
    from ebbtide.activate.reactivation import plan_reactivation

    require_store(db)
    when, window = parse_instant(at, "--at"), parse_duration(horizon, "--horizon")
    catalogue = load_actions(catalogue_file) if catalogue_file else default_actions()
    catalogue = override(catalogue, budget=budget, objective=objective)
    effects = _read_table(effects_file, "effects table") if effects_file else None
    history = _days_since_contact(contacts_file, when) if contacts_file else None
    with EventStore(db, read_only=True) as store:
        model = load_model(model_dir)
        result = plan_reactivation(
            model, store, at=when, horizon=window, catalogue=catalogue, effects=effects,
            last_contact_days_ago=history, order_value=order_value, top_k=k, method=method,
        )  # fmt: skip
    write_frame(result.table, out_file)
    write_json(json_out, result.summary())
    _print_plan(result, out_file)


def _read_table(path: Path, what: str):
    from ebbtide.activate.campaign_log import read_campaign_log

    return read_campaign_log(path, what=what)


def _days_since_contact(path: Path, at: datetime):
    """Days from each user's last contact to `at` (the planner's frequency-cap input)."""
    import pandas as pd

    table = _read_table(path, "contact history")
    missing = [name for name in ("user_id", "last_contact") if name not in table.columns]
    if missing:
        raise ConfigError(
            f"contact history {path} lacks column(s) {missing}; need user_id, last_contact"
        )
    when = pd.to_datetime(table["last_contact"], utc=True, errors="coerce")
    if when.isna().any():
        bad = table.loc[when.isna(), "last_contact"].iloc[0]
        raise ConfigError(f"contact history {path}: last_contact {bad!r} is not a time")
    days = (pd.Timestamp(at) - when).dt.total_seconds() / 86_400
    if (days < 0).any():
        row = table.loc[days < 0].iloc[0]
        raise ConfigError(
            f"contact history {path}: user {row.user_id!r} was contacted at {row.last_contact},"
            " after --at; plan at a later time or fix the history"
        )
    return days.groupby(table["user_id"].to_numpy()).min()


def _print_plan(result, out_file: Path) -> None:
    summary = result.summary()
    currency = summary["currency"]
    rows = [
        ("users", f"{summary['users']:,}"),
        ("contacts", f"{summary['contacts']:,}"),
        ("budget", f"{summary['budget']:,.2f} {currency}"),
        ("spend", f"{summary['spend']:,.2f} {currency}"),
        ("expected extra conversions", f"{summary['expected_conversions']:,.2f}"),
        ("solver", f"{summary['method']} (gap {summary['gap']:.3g})"),
    ]
    console = out()
    console.print(key_value_table(f"Plan at {summary['at']} -> {out_file}", rows))
    table = Table(title="By action and segment")
    for name in ("action", "segment", "users", "cost", "extra conversions"):
        table.add_column(name, justify="left" if name in ("action", "segment") else "right")
    for row in result.by_action_and_segment().itertuples():
        table.add_row(
            row.action, row.segment, f"{row.users:,}", f"{row.cost:,.2f}",
            f"{row.expected_conversions:,.2f}",
        )  # fmt: skip
    console.print(table)
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
