"""`ebbtide ingest`, `stats`, `quarantine`, `forget`, `retain` and `synth`: data in and out.

Loading a log, looking at what was loaded and what was not, deleting a user or old events,
and writing a synthetic log with known truth to load. Like every command module, it only
turns options into library calls; `ebbtide.cli.main` adds these commands to the app.
"""

from __future__ import annotations

import shutil
import warnings
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ebbtide.cli.options import (
    DbOption,
    DebugOption,
    DpEpsilonOption,
    JsonOption,
    MinGroupUsersOption,
    NewDbOption,
    QuietOption,
    TimeZoneOption,
    err,
    key_value_table,
    out,
    parse_duration,
    parse_instant,
    release_config,
    require_store,
    stages,
    write_frame,
    write_json,
    write_table,
)
from ebbtide.errors import ConfigError, DataQualityWarning
from ebbtide.ingest import REASONS, ColumnMapping, FormatName, Pseudonymiser, ingest_file
from ebbtide.store import DAYS_UP_TO, WEEKS_UP_TO, EventStore, IngestSummary, Period, StoreStats

if TYPE_CHECKING:
    from ebbtide.synthetic_behaviours import BehaviourConfig

app = typer.Typer()


@app.command()
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Log files: CSV, whitespace text, JSON Lines or Parquet; gzip is fine."
            " Each loads in its own transaction, in the order given."
        ),
    ],
    fmt: Annotated[
        FormatName, typer.Option("--format", "-f", help="Source format.")
    ] = FormatName.TAOBAO,
    db: NewDbOption = Path("ebbtide.duckdb"),
    user_col: Annotated[
        str | None, typer.Option(rich_help_panel="Generic format", help="generic: user id column.")
    ] = None,
    item_col: Annotated[
        str | None, typer.Option(rich_help_panel="Generic format", help="generic: item id column.")
    ] = None,
    category_col: Annotated[
        str | None, typer.Option(rich_help_panel="Generic format", help="generic: category column.")
    ] = None,
    behavior_col: Annotated[
        str | None,
        typer.Option(rich_help_panel="Generic format", help="generic: behaviour column."),
    ] = None,
    behavior: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Generic format",
            help="generic: one behaviour for all rows (view|cart|fav|buy|search|click|"
            "impression|rate).",
        ),
    ] = None,
    time_col: Annotated[
        str | None, typer.Option(rich_help_panel="Generic format", help="generic: time column.")
    ] = None,
    time_format: Annotated[
        str,
        typer.Option(
            rich_help_panel="Generic format",
            help="generic: epoch_s | epoch_ms | iso | a strftime pattern.",
        ),
    ] = "iso",
    behavior_map: Annotated[
        str,
        typer.Option(
            rich_help_panel="Generic format",
            help="generic: extra behaviour words, e.g. pv=view,addtocart=cart.",
        ),
    ] = "",
    price_col: Annotated[
        str | None,
        typer.Option(rich_help_panel="Generic format", help="generic: unit price column."),
    ] = None,
    quantity_col: Annotated[
        str | None, typer.Option(rich_help_panel="Generic format", help="generic: quantity column.")
    ] = None,
    brand_col: Annotated[
        str | None, typer.Option(rich_help_panel="Generic format", help="generic: brand column.")
    ] = None,
    session_col: Annotated[
        str | None,
        typer.Option(rich_help_panel="Generic format", help="generic: session id column."),
    ] = None,
    order_col: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Generic format",
            help="generic: order id column (fills the session id; same as --session-col)."
            " Keeps lines of different orders with the same user, item and time apart.",
        ),
    ] = None,
    delimiter: Annotated[
        str, typer.Option(rich_help_panel="Generic format", help="generic CSV: field separator.")
    ] = ",",
    quote: Annotated[
        str,
        typer.Option(
            rich_help_panel="Generic format",
            help="generic CSV: quote character; '' if fields are never quoted.",
        ),
    ] = '"',
    query_col: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Generic format",
            help="generic: a search's words (needed on search rows, where the item may be empty).",
        ),
    ] = None,
    value_col: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Generic format",
            help="generic: a rating's value (needed on rate rows; e.g. stars or a survey score).",
        ),
    ] = None,
    placement_col: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Generic format",
            help="generic: where a click or impression happened (a slot or campaign id).",
        ),
    ] = None,
    rating_range: Annotated[
        str,
        typer.Option(
            metavar="LOW,HIGH",
            rich_help_panel="Generic format",
            help="generic: inclusive range of ratings; a rate row outside it is quarantined.",
        ),
    ] = "0,10",
    keep_repeats: Annotated[
        bool, typer.Option(help="Keep identical rows of a file as separate events.")
    ] = False,
    pseudonymise: Annotated[
        bool,
        typer.Option(
            help="Replace user ids by HMAC-SHA256 pseudonyms (key: EBBTIDE_PSEUDONYM_KEY)."
        ),
    ] = False,
    key_file: Annotated[
        Path | None, typer.Option(help="File holding the pseudonymisation key.")
    ] = None,
    json_out: JsonOption = None,
    quiet: QuietOption = False,
    _debug: DebugOption = False,
) -> None:
    """Load a behaviour log into the event store, accounting for every row.

    Each row read is loaded, dropped as an exact duplicate, or quarantined with a reason
    (see `ebbtide quarantine`). Loading the same file twice changes nothing. Rows are
    duplicates when equal on every mapped column: for an order log (several lines per
    order, all with the order's time) map the order id with --order-col, or lines of
    different orders with the same user, item and second collapse into one. A file that is
    refused (not in the stated format) writes nothing: a store this command would have
    created is not left behind.

    Examples: `ebbtide ingest UserBehavior.csv.gz --format taobao --db shop.duckdb`;
    `ebbtide ingest orders.parquet --format generic --user-col customer --item-col sku
    --time-col ordered_at --order-col order_id --behavior buy`. Searches, clicks,
    impressions and ratings: add --query-col, --placement-col and --value-col.
    """
    mapping = None
    generic_only = {
        "--user-col": user_col, "--item-col": item_col, "--category-col": category_col,
        "--behavior-col": behavior_col, "--behavior": behavior, "--time-col": time_col,
        "--time-format": time_format != "iso", "--behavior-map": behavior_map,
        "--price-col": price_col, "--quantity-col": quantity_col, "--brand-col": brand_col,
        "--session-col": session_col, "--order-col": order_col, "--delimiter": delimiter != ",",
        "--quote": quote != '"', "--keep-repeats": keep_repeats, "--query-col": query_col,
        "--value-col": value_col, "--placement-col": placement_col,
        "--rating-range": rating_range != "0,10",
    }  # fmt: skip
    ignored = [flag for flag, value in generic_only.items() if value]
    if fmt is not FormatName.GENERIC and ignored:
        raise ConfigError(
            f"{', '.join(ignored)} {'applies' if len(ignored) == 1 else 'apply'} only to"
            f" --format generic; the {fmt.value} format"
            " fixes its columns. Leave them out, or describe the file with --format generic"
        )
    if fmt is FormatName.GENERIC:
        missing = [
            flag
            for flag, value in (
                ("--user-col", user_col),
                ("--item-col", item_col),
                ("--time-col", time_col),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(f"--format generic needs {', '.join(missing)}")
        mapping = ColumnMapping(
            user_col=user_col,  # type: ignore[arg-type]
            item_col=item_col,  # type: ignore[arg-type]
            time_col=time_col,  # type: ignore[arg-type]
            category_col=category_col,
            behavior_col=behavior_col,
            behavior=behavior,
            behavior_map=behavior_map,
            time_format=time_format,
            price_col=price_col,
            quantity_col=quantity_col,
            brand_col=brand_col,
            session_col=session_col,
            order_col=order_col,
            delimiter=delimiter,
            quote=quote,
            keep_repeats=keep_repeats,
            query_col=query_col,
            value_col=value_col,
            placement_col=placement_col,
            rating_range=_min_max(rating_range, "--rating-range", "LOW,HIGH, such as 1,5"),
        )
    pseudonymiser = Pseudonymiser.from_env_or_file(key_file) if pseudonymise else None
    summaries = []
    created = _store_files_absent(db)
    try:
        with EventStore(db) as store:
            for file in files:
                with stages(quiet, f"ingesting {file.name}") as stage, warnings.catch_warnings():
                    warnings.simplefilter("ignore", DataQualityWarning)  # shown as notes
                    summary = ingest_file(
                        store,
                        file,
                        fmt,
                        mapping=mapping,
                        pseudonymiser=pseudonymiser,
                        progress=stage,
                    )
                _print_summary(summary, db)
                summaries.append(summary.to_dict())
    except BaseException:
        if not summaries:  # nothing was committed: a store this command made goes again
            _remove(created)
        raise
    write_json(json_out, summaries[0] if len(summaries) == 1 else {"files": summaries})


def _store_files_absent(db: Path) -> list[Path]:
    """The store file, its write-ahead log and its spill folder, those that do not exist yet."""
    paths = [db, db.with_name(db.name + ".wal"), db.with_name(db.name + ".tmp")]
    return [] if db.exists() else [p for p in paths if not p.exists()]


def _remove(paths: list[Path]) -> None:
    """Delete files and folders this command created (never one that existed before)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _print_summary(summary: IngestSummary, db: Path) -> None:
    rows = [
        ("rows read", f"{summary.rows_read:,}"),
        ("loaded", f"{summary.loaded:,}"),
        ("duplicates", f"{summary.duplicates:,}"),
        *_duplicate_rows(summary),
        ("quarantined", f"{summary.quarantined:,}"),
        *((f"  {reason}", f"{count:,}") for reason, count in summary.reasons.items()),
        (
            "new users / items / categories",
            f"{summary.new_users:,} / {summary.new_items:,} / {summary.new_categories:,}",
        ),
        ("time", f"{summary.seconds:.2f} s"),
    ]
    console = out()
    console.print(key_value_table(f"{Path(summary.source).name} -> {db}", rows))
    if summary.already_ingested:
        console.print("This file was already ingested with the same options: nothing changed.")
    if summary.quarantined:
        console.print(f"See the quarantined rows with: ebbtide quarantine --db {db}", markup=False)
    for note in summary.notes:
        err().print(f"Note: {note}", highlight=False, markup=False)


def _duplicate_rows(summary: IngestSummary) -> list[tuple[str, str]]:
    """Where the duplicates were: earlier in the same file (purchases among them), or stored."""
    if not summary.duplicates or summary.already_ingested:
        return []
    rows = [
        ("  repeats within the file", f"{summary.duplicates_in_file:,}"),
        ("  already in the store", f"{summary.duplicates - summary.duplicates_in_file:,}"),
    ]
    if summary.duplicate_buys_in_file:
        rows.insert(1, ("    of them purchases", f"{summary.duplicate_buys_in_file:,}"))
    return rows


@app.command()
def stats(
    db: DbOption = Path("ebbtide.duckdb"),
    tz: TimeZoneOption = "UTC",
    per: Annotated[
        Period | None,
        typer.Option(
            help="Count events per day, week (from Monday) or month. Default: per day up to"
            f" {DAYS_UP_TO} days with events, per week up to {WEEKS_UP_TO} weeks, else per"
            " month.",
        ),
    ] = None,
    json_out: JsonOption = None,
    categories_out: Annotated[
        Path | None,
        typer.Option(
            help="Also write users and events per category: .parquet, .csv or .json.",
        ),
    ] = None,
    dp_epsilon: DpEpsilonOption = None,
    min_group_users: MinGroupUsersOption = None,
    _debug: DebugOption = False,
) -> None:
    """Users, items, categories, events per behaviour, time span, per user and over time.

    The time table counts events per day for short logs, per week for logs up to a year
    and per month beyond (--per chooses); --json writes the same rows. With --dp-epsilon
    or --min-group-users the counts are released privately (`ebbtide.aggregates`): groups
    under 10 users (or --min-group-users) left out, noisy counts under --dp-epsilon, and
    nothing about single users (per-user quantiles, first and last event) is shown.
    """
    from ebbtide.aggregates import ReleaseConfig, release_store_counts

    privacy = release_config(dp_epsilon, min_group_users, default_k=None)
    require_store(db)
    released = None
    with EventStore(db, read_only=True) as store:
        result = store.stats(tz=tz, per=per)
        if privacy is not None or categories_out is not None:
            # without a private release, the category export has every category, exactly
            config = privacy or ReleaseConfig(min_group_users=1)
            released = release_store_counts(store, config, tz=tz, per=result.period)
    if privacy is None or released is None:
        _print_stats(result, db)
        write_json(json_out, result.to_dict())
    else:
        _print_released(released, db)
        write_json(
            json_out,
            {k: v for k, v in released.items() if k not in ("per_period", "per_category")}
            | {"events_per_category": released["per_category"].to_dict(orient="records")},
        )
    if categories_out is not None and released is not None:
        write_frame(released["per_category"], categories_out)


def _print_released(released: dict, db: Path) -> None:
    """The released counts, and one line per table on how it was released."""
    privacy = released["privacy"]
    rows = [("users", f"{released['users']:,}"), ("events", f"{released['events']:,}")]
    for behavior, count in released["events_by_behavior"].items():
        rows.append((f"  {behavior}", f"{count:,}"))
    rows.append(("categories shown", f"{len(released['per_category']):,}"))
    if privacy["epsilon"] is None:
        rows.append(("privacy", f"true counts, groups under {privacy['min_group_users']} users"
                     " left out"))  # fmt: skip
    else:
        rows.append(
            (
                "privacy",
                f"ε = {privacy['epsilon']:g} ({privacy['epsilon_per_table']:.4g} per table),"
                f" δ = {privacy['delta']:.2g}, per user",
            )
        )
    console = out()
    console.print(key_value_table(f"Event store {db} (released counts)", rows))
    table = Table(title=f"Events per {released['period']} ({released['timezone']})")
    table.add_column(released["period"])
    table.add_column("users", justify="right")
    table.add_column("events", justify="right")
    for row in released["per_period"].itertuples(index=False):
        table.add_row(str(row.period), f"{row.users:,}", f"{row.events:,}")
    console.print(table)
    for note in privacy["notes"]:
        err().print(note, highlight=False, markup=False)


def _print_stats(s: StoreStats, db: Path) -> None:
    rows = [
        ("users", f"{s.users:,}"),
        ("items", f"{s.items:,}"),
        ("categories", f"{s.categories:,}"),
        ("events", f"{s.events:,}"),
    ]
    for behavior, count in s.events_by_behavior.items():
        share = count / s.events if s.events else 0.0
        rows.append((f"  {behavior}", f"{count:,} ({share:.1%})"))
    if s.first_event is not None and s.last_event is not None:
        span = (s.last_event - s.first_event).total_seconds() / 86400
        rows += [
            ("first event (UTC)", s.first_event.isoformat()),
            ("last event (UTC)", s.last_event.isoformat()),
            ("time span", f"{span:.1f} days"),
        ]
    if s.events_per_user:
        q = s.events_per_user
        quantiles = " · ".join(f"{k} {v:.0f}" for k, v in q.items() if k != "mean")
        rows.append(("events per user", f"{quantiles} · mean {q['mean']:.1f}"))
    rows += [
        ("quarantined rows", f"{sum(s.quarantined.values()):,}"),
        ("ingests", f"{s.ingests:,}"),
        ("pseudonymised ids", {None: "not yet decided", True: "yes", False: "no"}[s.pseudonymised]),
    ]
    console = out()
    console.print(key_value_table(f"Event store {db}", rows))
    if s.events_per_period:
        console.print(_period_table(s))


def _period_table(s: StoreStats) -> Table:
    """Events per day, week or month; the title says which and, if chosen, why."""
    period = Period(s.period)
    title = f"Events per {period.value} ({s.timezone})"
    if s.period_chosen and period is not Period.DAY:
        title += f", folded from {s.days_with_events:,} days (--per day for daily counts)"
    table = Table(title=title)
    table.add_column({Period.WEEK: "week from (Monday)"}.get(period, period.value))
    table.add_column("events", justify="right")
    for label, count in s.events_per_period:
        table.add_row(label, f"{count:,}")
    return table


@app.command()
def quarantine(
    db: DbOption = Path("ebbtide.duckdb"),
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write all quarantined rows (.csv or .parquet).")
    ] = None,
    _debug: DebugOption = False,
) -> None:
    """Show the rows that were not loaded, with their reason and raw text."""
    require_store(db)
    with EventStore(db, read_only=True) as store:
        rows = store.quarantine()
    if out_file is not None:
        write_table(rows, out_file)
    counts: dict[str, int] = {}
    for reason in rows.column("reason").to_pylist():
        counts[reason] = counts.get(reason, 0) + 1
    summary = Table(title=f"Quarantine of {db}: {rows.num_rows:,} rows")
    summary.add_column("reason")
    summary.add_column("rows", justify="right")
    summary.add_column("meaning")
    for reason, count in sorted(counts.items()):
        summary.add_row(reason, f"{count:,}", REASONS.get(reason, ""))
    console = out()
    console.print(summary)
    shown = rows.slice(0, limit).to_pylist()
    if shown:
        detail = Table(title=f"First {len(shown)} rows")
        for column in ("line", "reason", "detail", "raw"):
            detail.add_column(column, overflow="fold")
        for row in shown:
            detail.add_row(
                *(
                    str(row[c]) if row[c] is not None else ""
                    for c in ("line", "reason", "detail", "raw")
                )
            )
        console.print(detail)


@app.command()
def forget(
    user_id: Annotated[
        str, typer.Argument(help="The user's id as it appears in your source files.")
    ],
    db: DbOption = Path("ebbtide.duckdb"),
    key_file: Annotated[
        Path | None, typer.Option(help="Pseudonymisation key file (pseudonymised stores).")
    ] = None,
    pseudonym: Annotated[
        bool, typer.Option(help="USER_ID is already the stored pseudonym, not the raw id.")
    ] = False,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            help="Also forget the user in this model folder (repeatable); folders `ebbtide"
            " train` saved from this store are reached without it.",
        ),
    ] = None,
    compact: Annotated[
        bool,
        typer.Option(
            help="Rewrite the store into a fresh file afterwards: DuckDB leaves deleted rows'"
            " bytes in the file until then. --no-compact skips the copy (faster on a large"
            " store; the id stays readable in the file's free blocks)."
        ),
    ] = True,
    _debug: DebugOption = False,
) -> None:
    """Delete one user from the store and from the models saved from it, and say what went.

    The store loses the user's events, quarantined rows and id entry; every model folder
    `ebbtide train` recorded (and each --model) has the user's id replaced by a tombstone
    and their per-user parameters reset, so they score as a stranger. Score, plan and
    report files written before are not touched: delete or rewrite them.
    """
    from ebbtide.models.base import forget_in_models

    require_store(db)
    with EventStore(db) as store:
        stored_id = user_id
        if store.pseudonymised and not pseudonym:
            stored_id = Pseudonymiser.from_env_or_file(key_file)(user_id)
        report = store.forget(stored_id)
        recorded = [saved.path for saved in store.saved_models()]
        if compact:
            store.compact()
    models = forget_in_models([*recorded, *(model or [])], [stored_id])
    console = out()
    if report.user_entry or report.quarantined_rows:
        console.print(
            f"Forgot user {user_id!r}: {report.events:,} events, {report.quarantined_rows:,}"
            f" quarantined rows and the id entry removed from {db}"
            f"{'' if compact else ' (not compacted: the file still holds their bytes)'}.",
            highlight=False,
            markup=False,
        )
    else:
        console.print(
            f"No data for user {user_id!r} in {db}: nothing removed from the store.",
            highlight=False,
            markup=False,
        )
    for label, paths in (
        ("Models rewritten without the user", models.updated),
        ("Models that did not know the user", models.unchanged),
        ("Recorded model folders that are gone", models.gone),
    ):
        if paths:
            console.print(f"{label}: {', '.join(paths)}", highlight=False, markup=False)
    console.print(
        "Score, segment, plan and report files written before now may still name the user:"
        " delete them or write them again.",
        highlight=False,
        markup=False,
    )
    if models.failed:
        for path, reason in models.failed:
            err().print(
                f"Error: could not rewrite the model in {path}: {reason}",
                highlight=False,
                markup=False,
            )
        err().print(
            "Those models still hold the user: fix the folder and run `ebbtide forget` again"
            " with --model FOLDER, or delete it.",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(code=1)


@app.command()
def retain(
    older_than: Annotated[
        str | None,
        typer.Option(help="Delete events older than this, counted back from now: 180d, 26w, 12h."),
    ] = None,
    before: Annotated[
        str | None,
        typer.Option(help="Delete events before this instant instead (ISO 8601; UTC by default)."),
    ] = None,
    db: DbOption = Path("ebbtide.duckdb"),
    dry_run: Annotated[bool, typer.Option(help="Count what would go, delete nothing.")] = False,
    compact: Annotated[
        bool,
        typer.Option(
            help="Rewrite the store into a fresh file afterwards, so no free block still"
            " holds deleted rows (costs a copy of the store)."
        ),
    ] = False,
    json_out: JsonOption = None,
    quiet: QuietOption = False,
    _debug: DebugOption = False,
) -> None:
    """Delete events older than a horizon, their loads' quarantined rows and emptied users.

    One transaction: it all goes or nothing does. A quarantined row goes when the load it
    came in finished before the horizon (its own time may be what could not be read).
    Users left without events lose their id entry; items and categories stay. Models
    already trained keep what they learnt: retrain them.
    """
    from datetime import UTC, datetime

    if (older_than is None) == (before is None):
        raise ConfigError(
            "give one of --older-than (e.g. --older-than 180d) or --before (e.g. --before"
            " 2024-01-01)"
        )
    if older_than is not None:
        cut = datetime.now(UTC) - parse_duration(older_than, "--older-than")
    else:
        cut = parse_instant(before or "", "--before")
    require_store(db)
    with EventStore(db) as store, stages(quiet, "retaining") as stage:
        report = store.retain(cut, dry_run=dry_run, progress=stage)
        if compact and not dry_run:
            stage("compacting")
            store.compact()
    verb = "would delete" if dry_run else "deleted"
    oldest = report.oldest_remaining.isoformat() if report.oldest_remaining else "none"
    rows = [
        ("horizon (UTC)", cut.isoformat()),
        (f"events {verb}", f"{report.events:,}"),
        (f"quarantined rows {verb}", f"{report.quarantined_rows:,}"),
        (f"users {verb}", f"{report.users:,}"),
        ("events left", f"{report.events_left:,}"),
        ("oldest event left (UTC)", oldest),
    ]
    title = f"Retention of {db}{' (dry run: nothing deleted)' if dry_run else ''}"
    out().print(key_value_table(title, rows))
    write_json(json_out, report.to_dict())


class SynthPreset(StrEnum):
    """Named synthetic configurations (`ebbtide.synthetic`)."""

    TWO_SCALE = "two-scale"


class SynthBehaviours(StrEnum):
    """Which behaviours `synth` writes (`ebbtide.synthetic_behaviours` for ``all``)."""

    TAOBAO = "taobao"
    ALL = "all"


#: `SynthConfig` field -> the `synth` option that sets it, to name the option in errors.
_SYNTH_FLAGS = {
    "users": "--users",
    "days": "--days",
    "seed": "--seed",
    "session_half_life_hours": "--session-half-life",
    "session_branching_range": "--session-branching",
    "daily_amplitude": "--daily-amplitude",
    "peak_hour": "--peak-hour",
    "weekly_amplitude": "--weekly-amplitude",
    "peak_day": "--peak-day",
    "time_zone": "--time-zone",
    "fading_share": "--fading-share",
    "fading_factor": "--fading-factor",
    "fading_window": "--fading-window",
}
#: `BehaviourConfig` field -> the `synth` option that sets it.
_BEHAVIOUR_FLAGS = {"ctr": "--ctr", "conversion": "--conversion"}


def _min_max(
    text: str, flag: str, expected: str = "MIN,MAX, two numbers such as 0.2,2"
) -> tuple[float, float]:
    """``"MIN,MAX"`` (or another pair, as ``expected`` says) as two floats."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give {expected}") from None
    return low, high


_CYCLE = "Daily/weekly cycle"
_SCALES = "Two time scales"
_FADING = "Fading users"
_FEEDBACK = "Searches, clicks and ratings (--behaviours all)"


@app.command()
def synth(
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Events file to write: Taobao format, or a generic CSV with --behaviours all"
            " (.gz to compress).",
        ),
    ] = Path("synthetic.csv"),
    users: Annotated[int, typer.Option(help="Number of users.")] = 1000,
    days: Annotated[
        float | None,
        typer.Option(help="Length of the log in days. Default: 9, or the preset's (20)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed; same seed, same file. Default: 0, or the preset's (2)."),
    ] = None,
    preset: Annotated[
        SynthPreset | None,
        typer.Option(
            help="Start from a named configuration; the options given override it. two-scale:"
            " 20 days, 30 categories, about 10 events per user-day, interest half-lives 1-10"
            " days and session half-lives 0.2-2 hours, a daily cycle (0.6, peak 21:00) and a"
            " weekly one (0.2), China time; the log the main model's recovery is checked on."
        ),
    ] = None,
    session_half_life: Annotated[
        str | None,
        typer.Option(
            metavar="MIN,MAX",
            rich_help_panel=_SCALES,
            help="Range of the per-category session half-lives, in hours (log-uniform)."
            " Default 0.2,2. Used only with --session-branching.",
        ),
    ] = None,
    session_branching: Annotated[
        str | None,
        typer.Option(
            metavar="MIN,MAX",
            rich_help_panel=_SCALES,
            help="Range of the session kernel's branching ratio (uniform); turns the short"
            " kernel on. Its MAX plus the interest kernel's (0.8 by default) must be at most"
            " 0.99. Default 0,0 (off).",
        ),
    ] = None,
    daily_amplitude: Annotated[
        float | None,
        typer.Option(
            rich_help_panel=_CYCLE,
            help="Amplitude of the time-of-day cycle of every rate, in [0, 1). Default 0 (off).",
        ),
    ] = None,
    peak_hour: Annotated[
        float | None,
        typer.Option(
            rich_help_panel=_CYCLE, help="Local hour of the daily peak, in [0, 24). Default 21."
        ),
    ] = None,
    weekly_amplitude: Annotated[
        float | None,
        typer.Option(
            rich_help_panel=_CYCLE,
            help="Amplitude of the day-of-week cycle, in [0, 1). Default 0 (off).",
        ),
    ] = None,
    peak_day: Annotated[
        float | None,
        typer.Option(
            rich_help_panel=_CYCLE,
            help="Local time of the weekly peak in days after Monday 00:00, in [0, 7)."
            " Default 6 (Sunday 00:00).",
        ),
    ] = None,
    time_zone: Annotated[
        str | None,
        typer.Option(
            rich_help_panel=_CYCLE,
            help="IANA zone whose clock the cycle follows, at its UTC offset on the first day"
            " (fixed). Default Asia/Shanghai.",
        ),
    ] = None,
    fading_share: Annotated[
        float | None,
        typer.Option(
            rich_help_panel=_FADING,
            help="Share of users whose interest fades at a random time. Default 0.",
        ),
    ] = None,
    fading_factor: Annotated[
        float | None,
        typer.Option(
            rich_help_panel=_FADING,
            help="Factor on a fading user's baseline and excitation from then on, in [0, 1]."
            " Default 0.2.",
        ),
    ] = None,
    fading_window: Annotated[
        str | None,
        typer.Option(
            metavar="MIN,MAX",
            rich_help_panel=_FADING,
            help="When users fade, as fractions of the log's length (uniform). Default 0.6,0.9.",
        ),
    ] = None,
    behaviours: Annotated[
        SynthBehaviours,
        typer.Option(
            rich_help_panel=_FEEDBACK,
            help="taobao: view, cart, fav and buy as a Taobao file. all: also searches (their"
            " words from per-category vocabularies, some shared), impressions and clicks of"
            " recommendations in two arms with known CTR and conversion, and 1-5 ratings, as"
            " a generic CSV (user_id,item_id,category_id,behavior,timestamp,query,value,"
            "placement); their truth goes beside the log's.",
        ),
    ] = SynthBehaviours.TAOBAO,
    ctr: Annotated[
        str | None,
        typer.Option(
            metavar="CONTROL,PERSONALISED",
            rich_help_panel=_FEEDBACK,
            help="True click probability of an impression in each arm. Default 0.04,0.08.",
        ),
    ] = None,
    conversion: Annotated[
        str | None,
        typer.Option(
            metavar="CONTROL,PERSONALISED",
            rich_help_panel=_FEEDBACK,
            help="True probability that a click is followed by a buy of its item within a day,"
            " in each arm. Default 0.1,0.2.",
        ),
    ] = None,
    truth_dir: Annotated[
        Path | None,
        typer.Option(
            "--truth-dir", help="Folder for the ground-truth Parquet files (default: OUT.truth)."
        ),
    ] = None,
    quiet: QuietOption = False,
    _debug: DebugOption = False,
) -> None:
    """Write a synthetic log with known interest, excitation and decay rates (and, with
    --behaviours all, searches, recommendation clicks and ratings with known truth)."""
    from ebbtide.synthetic import (
        SynthConfig,
        generate,
        two_scale_config,
        write_taobao_csv,
        write_truth,
    )
    from ebbtide.synthetic_behaviours import BehaviourConfig

    given: dict[str, object] = {
        "days": days,
        "seed": seed,
        "daily_amplitude": daily_amplitude,
        "peak_hour": peak_hour,
        "weekly_amplitude": weekly_amplitude,
        "peak_day": peak_day,
        "time_zone": time_zone,
        "fading_share": fading_share,
        "fading_factor": fading_factor,
    }
    for name, flag, text in (
        ("session_half_life_hours", "--session-half-life", session_half_life),
        ("session_branching_range", "--session-branching", session_branching),
        ("fading_window", "--fading-window", fading_window),
    ):
        given[name] = None if text is None else _min_max(text, flag)
    overrides = {name: value for name, value in given.items() if value is not None}
    arm_pairs = {
        name: _min_max(text, flag, "CONTROL,PERSONALISED, two numbers such as 0.04,0.08")
        for name, flag, text in (("ctr", "--ctr", ctr), ("conversion", "--conversion", conversion))
        if text is not None
    }
    if arm_pairs and behaviours is not SynthBehaviours.ALL:
        flags = " and ".join(_BEHAVIOUR_FLAGS[name] for name in arm_pairs)
        raise ConfigError(f"{flags}: only with --behaviours all (they shape its clicks)")
    behaviour_config: BehaviourConfig | None = None
    try:
        if preset is SynthPreset.TWO_SCALE:
            config = two_scale_config(users=users, **overrides)
        else:
            config = SynthConfig(users=users, **overrides)  # type: ignore[arg-type]
        if behaviours is SynthBehaviours.ALL:
            behaviour_config = BehaviourConfig(log=config, **arm_pairs)  # type: ignore[arg-type]
    except ConfigError as exc:
        flag = next(
            (
                f
                for prefix, flags in (
                    ("SynthConfig", _SYNTH_FLAGS),
                    ("BehaviourConfig", _BEHAVIOUR_FLAGS),
                )
                for name, f in flags.items()
                if str(exc).startswith(f"{prefix}.{name} ")
            ),
            None,
        )
        if flag is None:
            raise
        raise ConfigError(f"{flag}: {exc}") from None
    if behaviour_config is not None:
        _synth_all_behaviours(behaviour_config, out_file, truth_dir, quiet)
        return
    with stages(quiet, "synthesising") as stage:
        stage("simulating")
        log = generate(
            config, progress=lambda done, total: stage(f"simulating users {done:,}/{total:,}")
        )
        stage(f"writing {out_file.name}")
        rows = write_taobao_csv(log, out_file)
        folder = truth_dir or out_file.with_name(out_file.name.split(".")[0] + ".truth")
        stage("writing ground truth")
        truth_files = write_truth(log, folder)
    console = out()
    console.print(
        f"wrote {rows:,} events of {config.users:,} users over {config.days:g} days to {out_file}",
        highlight=False,
        markup=False,
    )
    console.print(
        f"ground truth: {', '.join(str(p) for p in truth_files)}", highlight=False, markup=False
    )
    console.print(
        f"load it with: ebbtide ingest {out_file} --format taobao", highlight=False, markup=False
    )


def _synth_all_behaviours(
    config: BehaviourConfig, out_file: Path, truth_dir: Path | None, quiet: bool
) -> None:
    """`synth --behaviours all`: the log with searches, clicks and ratings, and its truth."""
    from ebbtide.synthetic_behaviours import (
        generate_behaviours,
        write_behaviour_truth,
        write_generic_csv,
    )

    with stages(quiet, "synthesising") as stage:
        stage("simulating")
        log = generate_behaviours(
            config,
            progress=lambda done, total: stage(f"simulating users {done:,}/{total:,}"),
        )
        stage(f"writing {out_file.name}")
        rows = write_generic_csv(log, out_file)
        folder = truth_dir or out_file.with_name(out_file.name.split(".")[0] + ".truth")
        stage("writing ground truth")
        truth_files = write_behaviour_truth(log, folder)
    console = out()
    users, days = config.log.users, config.log.days
    for line in (
        f"wrote {rows:,} events of {users:,} users over {days:g} days to {out_file}",
        f"ground truth: {', '.join(str(p) for p in truth_files)}",
        f"load it with: ebbtide ingest {out_file} --format generic --user-col user_id"
        " --item-col item_id --category-col category_id --behavior-col behavior"
        " --time-col timestamp --time-format epoch_s --query-col query --value-col value"
        " --placement-col placement",
    ):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
