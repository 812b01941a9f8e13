"""The `ebbtide` command: a thin shell over the library.

Options become library arguments, the library does the work, Rich draws progress on
stderr and results on stdout (so ``ebbtide stats > stats.txt`` stays clean). Any
`EbbtideError` becomes one ``Error: ...`` line on stderr and exit code 1; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ebbtide.errors import EbbtideError
from ebbtide.ingest import REASONS, ColumnMapping, FormatName, Pseudonymiser, ingest_file
from ebbtide.store import EventStore, IngestSummary, StoreStats

app = typer.Typer(
    name="ebbtide",
    help="Interest decay, return prediction and re-activation planning from behaviour logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
out = Console()
err = Console(stderr=True)
_state = {"debug": False}

DbOption = Annotated[
    Path, typer.Option("--db", help="Event store file (DuckDB); created if missing.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
JsonOption = Annotated[
    Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")
]


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """ebbtide: who is drifting away, and what would bring them back."""
    _state["debug"] = debug


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn library errors into one clear line and exit code 1."""
    try:
        yield
    except EbbtideError as exc:
        if _state["debug"]:
            err.print_exception()
        err.print(f"[bold red]Error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1) from None


def _display(quiet: bool, *extra: Any) -> Progress:
    """The one progress style: spinner, description, `extra` columns, elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        *extra,
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet or not err.is_terminal,
    )


@contextmanager
def _stages(quiet: bool, title: str) -> Iterator[Any]:
    """A spinner showing the current stage and elapsed time; yields a stage callback."""
    progress = _display(quiet)
    with progress:
        task = progress.add_task(title, total=None)
        yield lambda stage: progress.update(task, description=f"{title}: {stage}")


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        err.print(f"wrote {path}")


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
    db: DbOption = Path("ebbtide.duckdb"),
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
            help="generic: one behaviour for all rows (view|cart|fav|buy).",
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
) -> None:
    """Load a behaviour log into the event store, accounting for every row.

    Each row read is loaded, dropped as an exact duplicate, or quarantined with a reason
    (see `ebbtide quarantine`). Loading the same file twice changes nothing.

    Examples: `ebbtide ingest UserBehavior.csv.gz --format taobao --db shop.duckdb`;
    `ebbtide ingest orders.parquet --format generic --user-col customer --item-col sku
    --time-col ordered_at --behavior buy`.
    """
    with _user_errors():
        mapping = None
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
                raise typer.BadParameter(f"--format generic needs {', '.join(missing)}")
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
                delimiter=delimiter,
                quote=quote,
                keep_repeats=keep_repeats,
            )
        pseudonymiser = Pseudonymiser.from_env_or_file(key_file) if pseudonymise else None
        summaries = []
        with EventStore(db) as store:
            for file in files:
                with _stages(quiet, f"ingesting {file.name}") as stage:
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
        _write_json(json_out, summaries[0] if len(summaries) == 1 else {"files": summaries})


def _key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column table: what, and its value (right-aligned)."""
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def _print_summary(summary: IngestSummary, db: Path) -> None:
    rows = [
        ("rows read", f"{summary.rows_read:,}"),
        ("loaded", f"{summary.loaded:,}"),
        ("duplicates", f"{summary.duplicates:,}"),
        ("quarantined", f"{summary.quarantined:,}"),
        *((f"  {reason}", f"{count:,}") for reason, count in summary.reasons.items()),
        (
            "new users / items / categories",
            f"{summary.new_users:,} / {summary.new_items:,} / {summary.new_categories:,}",
        ),
        ("time", f"{summary.seconds:.2f} s"),
    ]
    out.print(_key_value_table(f"{Path(summary.source).name} -> {db}", rows))
    if summary.already_ingested:
        out.print("This file was already ingested with the same options: nothing changed.")
    if summary.quarantined:
        out.print(f"See the quarantined rows with: ebbtide quarantine --db {db}")


@app.command()
def stats(
    db: DbOption = Path("ebbtide.duckdb"),
    tz: Annotated[
        str, typer.Option(help="Time zone for per-day counts, e.g. Asia/Shanghai.")
    ] = "UTC",
    json_out: JsonOption = None,
) -> None:
    """Users, items, categories, events per behaviour, time span, per user and per day."""
    with _user_errors():
        _require_store(db)
        with EventStore(db, read_only=True) as store:
            result = store.stats(tz=tz)
        _print_stats(result, db)
        _write_json(json_out, result.to_dict())


def _require_store(db: Path) -> None:
    if not db.exists():
        raise EbbtideError(f"no store at {db}; create one with `ebbtide ingest FILE --db {db}`")


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
    out.print(_key_value_table(f"Event store {db}", rows))
    if s.events_per_day:
        days = Table(title=f"Events per day ({s.timezone})")
        days.add_column("day")
        days.add_column("events", justify="right")
        for day, count in s.events_per_day:
            days.add_row(day, f"{count:,}")
        out.print(days)


@app.command()
def quarantine(
    db: DbOption = Path("ebbtide.duckdb"),
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write all quarantined rows (.csv or .parquet).")
    ] = None,
) -> None:
    """Show the rows that were not loaded, with their reason and raw text."""
    with _user_errors():
        _require_store(db)
        with EventStore(db, read_only=True) as store:
            rows = store.quarantine()
        if out_file is not None:
            _write_table(rows, out_file)
        counts: dict[str, int] = {}
        for reason in rows.column("reason").to_pylist():
            counts[reason] = counts.get(reason, 0) + 1
        summary = Table(title=f"Quarantine of {db}: {rows.num_rows:,} rows")
        summary.add_column("reason")
        summary.add_column("rows", justify="right")
        summary.add_column("meaning")
        for reason, count in sorted(counts.items()):
            summary.add_row(reason, f"{count:,}", REASONS.get(reason, ""))
        out.print(summary)
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
            out.print(detail)


def _write_table(table: Any, path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        pq.write_table(table, path)
    elif path.suffix.lower() == ".csv":
        pacsv.write_csv(table, path)
    else:
        raise EbbtideError(f"--out {path}: use a .csv or .parquet file name")
    err.print(f"wrote {path}")


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
) -> None:
    """Delete one user's events, quarantined rows and id entry, and say what went."""
    with _user_errors():
        _require_store(db)
        with EventStore(db) as store:
            stored_id = user_id
            if store.pseudonymised and not pseudonym:
                stored_id = Pseudonymiser.from_env_or_file(key_file)(user_id)
            report = store.forget(stored_id)
        if not report.user_entry and not report.quarantined_rows:
            out.print(f"No data for user {user_id!r} in {db}: nothing removed.")
            return
        out.print(
            f"Forgot user {user_id!r}: {report.events:,} events, {report.quarantined_rows:,}"
            f" quarantined rows and the id entry removed from {db}."
            " Models and score files made before now still hold what they learnt: retrain them."
        )


@app.command()
def synth(
    out_file: Annotated[
        Path, typer.Option("--out", help="Events file to write (Taobao format; .gz to compress).")
    ] = Path("synthetic.csv"),
    users: Annotated[int, typer.Option(help="Number of users.")] = 1000,
    days: Annotated[float, typer.Option(help="Length of the log in days.")] = 9.0,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same file.")] = 0,
    truth: Annotated[
        Path | None,
        typer.Option(help="Folder for the ground-truth Parquet files (default: OUT.truth)."),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Write a synthetic log with known interest, excitation and decay rates."""
    from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv, write_truth

    with _user_errors():
        config = SynthConfig(users=users, days=days, seed=seed)
        with _stages(quiet, "synthesising") as stage:
            stage("simulating")
            log = generate(
                config, progress=lambda done, total: stage(f"simulating users {done:,}/{total:,}")
            )
            stage(f"writing {out_file.name}")
            rows = write_taobao_csv(log, out_file)
            truth_dir = truth or out_file.with_name(out_file.name.split(".")[0] + ".truth")
            stage("writing ground truth")
            truth_files = write_truth(log, truth_dir)
        out.print(f"wrote {rows:,} events of {users:,} users over {days:g} days to {out_file}")
        out.print(f"ground truth: {', '.join(str(p) for p in truth_files)}")
        out.print(f"load it with: ebbtide ingest {out_file} --format taobao")


def parse_instant(text: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time; use e.g. 2017-12-02 or 2017-12-02T00:00+08:00"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_UNITS = {"m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """A duration such as 90m, 24h, 3d or 1w."""
    number, unit = text[:-1], text[-1:].lower()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not value > 0:
        raise typer.BadParameter(f"{text!r} is not a duration; use e.g. 90m, 24h, 3d or 1w")
    return timedelta(seconds=value * _UNITS[unit])


@app.command()
def train(
    model_name: Annotated[
        str, typer.Option("--model", "-m", help="Family: popular, btyd, gbdt, decay, neural.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to save the model in.")],
    db: DbOption = Path("ebbtide.duckdb"),
    until: Annotated[
        str | None,
        typer.Option(
            help="Train on events strictly before this instant (ISO 8601; default: all), so"
            " that `score --at` that instant is an honest forecast."
        ),
    ] = None,
    device: Annotated[
        str, typer.Option(help="neural only: cpu, cuda or cuda:N (mixed precision on CUDA).")
    ] = "cpu",
    seed: Annotated[int | None, typer.Option(help="Seed of the seeded families.")] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            help="neural only: wall-clock budget in seconds of each training stage (point"
            " process, next-item head)."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="neural only: continue the run whose checkpoint is in --out (written after"
            " every epoch) instead of starting over."
        ),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Fit a model on the store's events before --until and save it to --out."""
    from ebbtide.models.scoring import build_model

    with _user_errors():
        _require_store(db)
        settings: dict[str, Any] = {}
        if device != "cpu":
            settings["device"] = device
        if max_seconds is not None:
            settings["max_train_seconds"] = max_seconds
            if model_name == "neural":
                settings["item_max_seconds"] = max_seconds
        if seed is not None:
            settings["seed"] = seed
        with EventStore(db, read_only=True) as store:
            cutoff = parse_instant(until) if until else _after_last_event(store)
            model = build_model(model_name, **settings)
            checkpoint = out_dir / "checkpoint.pt"
            with _training_bar(quiet, f"training {model_name}") as report:
                model.fit(
                    store, cutoff=cutoff, progress=report, checkpoint=checkpoint, resume=resume
                )
            model.save(out_dir)
        metrics = getattr(model, "metrics_", {})
        rows = [("family", model_name), ("trained on events before", cutoff.isoformat())]
        rows += [
            (name, f"{value:,}" if isinstance(value, int) else _number(value))
            for name, value in metrics.items()
            if not isinstance(value, list)  # per-epoch curves: in the saved config.json
        ]
        rows.append(("saved to", str(out_dir)))
        out.print(_key_value_table("Trained", rows))


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextmanager
def _training_bar(quiet: bool, title: str) -> Iterator[Any]:
    """A bar filled by the fit's reported fraction, with its message (loss, events/s, ETA)."""
    progress = _display(quiet, BarColumn())
    with progress:
        task = progress.add_task(title, total=None)

        def report(message: str, fraction: float) -> None:
            known = fraction == fraction
            progress.update(
                task,
                description=f"{title}: {message}",
                total=1.0 if known else None,
                completed=min(max(fraction, 0.0), 1.0) if known else 0,
            )

        yield report


def _after_last_event(store: EventStore) -> datetime:
    last = store.last_event()
    if last is None:
        raise EbbtideError("the store holds no events yet: ingest a file first")
    return last + timedelta(seconds=1)


@app.command()
def score(
    model_dir: Annotated[Path, typer.Option("--model", "-m", help="A folder written by train.")],
    at: Annotated[str, typer.Option(help="Score at this instant (ISO 8601; UTC by default).")],
    db: DbOption = Path("ebbtide.duckdb"),
    horizon: Annotated[str, typer.Option(help="Window after --at: 90m, 24h, 3d, 1w.")] = "1d",
    k: Annotated[int, typer.Option(help="Items to recommend per user.")] = 10,
    out_file: Annotated[
        Path, typer.Option("--out", help="Per-user scores: .parquet, .csv or .json.")
    ] = Path("scores.parquet"),
    per_category: Annotated[
        Path | None,
        typer.Option(help="Also write one row per (user, category touched before --at)."),
    ] = None,
) -> None:
    """Score every user with history before --at: return, purchase, interests, items."""
    from ebbtide.models.base import Model
    from ebbtide.models.scoring import available_families, score_users

    with _user_errors():
        _require_store(db)
        available_families()  # register the families so that load finds them
        when, window = parse_instant(at), parse_duration(horizon)
        with EventStore(db, read_only=True) as store:
            model = Model.load(model_dir, store)
            users, categories = score_users(model, at=when, horizon=window, k=k)
        _write_frame(users, out_file)
        if per_category is not None:
            if categories is None:
                raise EbbtideError(f"the {model.name} model has no per-category interest")
            _write_frame(categories, per_category)
        rows = [("users scored", f"{len(users):,}"), ("at", when.isoformat()), ("horizon", horizon)]
        for column in ("p_return", "p_buy", "expected_return_days"):
            if column in users:
                rows.append((f"mean {column}", f"{users[column].mean():.3f}"))
        out.print(_key_value_table(f"Scores from {model_dir}", rows))


def _write_frame(frame: Any, path: Path) -> None:
    """Write a DataFrame as Parquet, CSV (lists joined by ';') or JSON Lines."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix == ".csv":
        flat = frame.copy()
        for column in flat.columns:
            if flat[column].map(lambda v: isinstance(v, list)).any():
                flat[column] = flat[column].map(
                    lambda v: ";".join(map(str, v)) if isinstance(v, list) else v
                )
        flat.to_csv(path, index=False)
    elif suffix in (".json", ".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    else:
        raise EbbtideError(f"{path}: use a .parquet, .csv or .json file name")
    err.print(f"wrote {path}")


# the activation, evaluation and report commands register themselves on `app`
from ebbtide import cli_activate, cli_evaluate, cli_report  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    app()
