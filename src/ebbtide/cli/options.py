"""What every command module shares: option types, consoles, progress, parsing, writing.

Why one module: a flag that means the same thing must be spelt and explained the same way in
every command (`--db`, `--model-dir`, `--at`, `--cutoff`, `--k`, `--out`/`--out-dir`), so
the `Annotated` types live here and command modules import them; so do the helpers that turn
option text into library values and results into files. Nothing here registers a command.

Naming rules of the options (the README's CLI sections follow them):

- ``--cutoff`` is the instant a model is fitted before; ``--at`` the instant a question is
  asked at (a second query instant is ``--<what>-at``); durations are ``--horizon``.
- ``--k`` is the length of a list (items per user, users in a list).
- ``--out`` is a file and ``--out-dir`` a folder; other outputs are ``--<what>-out`` (a file)
  or ``--<what>-dir`` (a folder); ``--model-dir`` is a folder written by ``train``;
  ``--json FILE`` also writes the result as JSON.
- A plural name (``--models``, ``--outcomes``, ``--treatments``, ``--learners``) takes a
  comma-separated list; a command that handles one value says so and refuses more.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ebbtide.errors import ConfigError, EbbtideError

if TYPE_CHECKING:
    from ebbtide.store import EventStore

#: Width of the consoles when they do not write to a terminal (a file, a pipe, a test). On a
#: terminal Rich fits the window; anywhere else it would take COLUMNS or the width of the
#: terminal the process happens to have, so a message with a long path would wrap there and
#: not here. A fixed width, with messages never wrapped, makes the text independent of both.
NOT_A_TERMINAL_WIDTH = 200

#: Key in the click context's `meta` (shared by the app and its subcommands) set by --debug.
DEBUG_KEY = "ebbtide.debug"


def _console(stream: Any, *, stderr: bool) -> Console:
    if getattr(stream, "isatty", lambda: False)():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=NOT_A_TERMINAL_WIDTH, soft_wrap=True)


def out() -> Console:
    """The results console (stdout), so ``ebbtide stats > stats.txt`` holds only results.

    Built on each call: the current ``sys.stdout`` (a test runner swaps it) and environment
    decide whether it is a terminal.
    """
    return _console(sys.stdout, stderr=False)


def err() -> Console:
    """The console for progress, notes, ``wrote FILE`` lines and errors (stderr)."""
    return _console(sys.stderr, stderr=True)


def _remember_debug(ctx: typer.Context, value: bool) -> bool:
    if value:
        ctx.meta[DEBUG_KEY] = True
    return value


#: On every command as well as before it, so ``ebbtide stats --db x --debug`` works too; the
#: app reads the flag from the context when an error reaches it (the value is not used).
DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug", help="Show the traceback of an error.", callback=_remember_debug, is_eager=True
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
JsonOption = Annotated[
    Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")
]
NewDbOption = Annotated[
    Path, typer.Option("--db", help="Event store file (DuckDB); created if missing.")
]
DbOption = Annotated[
    Path,
    typer.Option(
        "--db", help="Event store file (DuckDB); must exist (`ebbtide ingest` creates it)."
    ),
]
ModelDirOption = Annotated[
    Path, typer.Option("--model-dir", help="A model folder written by `ebbtide train`.")
]
CatalogueOption = Annotated[
    Path | None,
    typer.Option("--catalogue", help="Action catalogue (TOML file); default: the shipped one."),
]
ArmColOption = Annotated[str, typer.Option(help="Column holding each row's arm.")]


class Engine(StrEnum):
    """Where the batch work runs: this process on a store, or Spark on a lake."""

    LOCAL = "local"
    SPARK = "spark"


EngineOption = Annotated[
    Engine,
    typer.Option(
        help="local: this process, reading --db; spark: Apache Spark, reading the Parquet or"
        " CSV lake named by --input (decay only)."
    ),
]
SparkMasterOption = Annotated[
    str,
    typer.Option(
        help="With --engine spark: local[*] (every core here), local[N], or a cluster URL"
        " (spark://host:7077, yarn, k8s://...)."
    ),
]
InputOption = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        help="With --engine spark: a lake of canonical events (user_id, item_id,"
        " category_id, behavior, ts): Parquet or CSV files, folders or globs (repeatable).",
    ),
]


def require_lake(engine: Engine, inputs: list[str] | None) -> list[str]:
    """The lake paths of a Spark run; refuses --input without --engine spark and the reverse."""
    if engine is Engine.LOCAL:
        if inputs:
            raise ConfigError(
                "--input names a lake for --engine spark; the local engine reads the store"
                " named by --db (or add --engine spark)"
            )
        return []
    if not inputs:
        raise ConfigError(
            "--engine spark reads a lake: name its Parquet or CSV files with --input PATH"
        )
    return list(inputs)


def parse_time_zone(text: str, flag: str = "--tz") -> str:
    """An IANA time zone name (Europe/Berlin, Asia/Shanghai, UTC), else a `ConfigError`.

    DuckDB, which converts the times, decides which names exist; the error names `flag`.
    """
    from ebbtide.store import check_time_zone

    try:
        return check_time_zone(text)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _time_zone_callback(value: str) -> str:
    return parse_time_zone(value, "--tz")


#: A time zone option, checked while the options are parsed (before any work starts).
TimeZoneOption = Annotated[
    str,
    typer.Option(
        "--tz",
        help="IANA time zone of the dates shown, e.g. Europe/Berlin or Asia/Shanghai.",
        callback=_time_zone_callback,
    ),
]
ControlOption = Annotated[str, typer.Option(help="Arm value of the control group.")]


def require_store(db: Path) -> None:
    """Refuse a store path that does not exist, naming the command that creates one."""
    if not db.is_file():
        raise ConfigError(f"no store at {db}; create one with `ebbtide ingest FILE --db {db}`")


def record_saved_model(db: Path, model_dir: Path, family: str) -> None:
    """Note in the store that a model learnt from it lives in `model_dir`, so `ebbtide
    forget` reaches it; when the store is busy (a service loading it), say how instead."""
    from ebbtide.errors import StoreError
    from ebbtide.store import EventStore

    try:
        with EventStore(db) as store:
            store.record_model(model_dir, family)
    except StoreError as exc:
        err().print(
            f"Note: the model was saved, but {db} could not record where ({exc}); pass"
            f" --model {model_dir} to `ebbtide forget` so it forgets users there too.",
            highlight=False,
            markup=False,
        )


def after_last_event(store: EventStore) -> datetime:
    """One second after the store's last event: "now" for a store that stopped growing."""
    last = store.last_event()
    if last is None:
        raise EbbtideError("the store holds no events yet: ingest a file first")
    return last + timedelta(seconds=1)


def load_model(model_dir: Path) -> Any:
    """A model saved by ``train``, with every family registered so that load finds it."""
    from ebbtide.models.base import Model
    from ebbtide.models.scoring import available_families

    available_families()
    return Model.load(model_dir)


def names(text: str | None) -> list[str]:
    """A comma-separated option as a list (blank entries dropped)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def one_name(text: str, flag: str, why: str) -> str:
    """The single entry of a plural option where a command handles one value only."""
    given = names(text)
    if len(given) != 1:
        raise ConfigError(f"{flag} {text!r}: give exactly one; {why}")
    return given[0]


def parse_instant(text: str, flag: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} is not an ISO 8601 time; use e.g. 2017-12-02 or"
            " 2017-12-02T00:00+08:00"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_UNITS = {"m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_LONGEST_SECONDS = 100 * 365.25 * 86_400


def parse_duration(text: str, flag: str) -> timedelta:
    """A duration such as 90m, 24h, 3d or 1w."""
    number, unit = text[:-1], text[-1:].lower()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not 0 < value * _UNITS[unit] <= _LONGEST_SECONDS:
        raise ConfigError(
            f"{flag} {text!r} is not a duration; use e.g. 90m, 24h, 3d or 1w (at most 100 years)"
        )
    return timedelta(seconds=value * _UNITS[unit])


def _display(quiet: bool, *extra: Any) -> Progress:
    """The one progress style: spinner, description, `extra` columns, elapsed time."""
    console = err()
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        *extra,
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )


@contextmanager
def stages(quiet: bool, title: str) -> Iterator[Callable[[str], None]]:
    """A spinner showing the current stage and elapsed time; yields a stage callback."""
    progress = _display(quiet)
    with progress:
        task = progress.add_task(title, total=None)
        yield lambda stage: progress.update(task, description=f"{title}: {stage}")


@contextmanager
def training_bar(quiet: bool, title: str) -> Iterator[Callable[[str, float], None]]:
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


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column table: what, and its value (right-aligned)."""
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def write_json(path: Path | None, data: Any) -> None:
    """Write `data` as indented JSON to `path` (if given) and say so on stderr."""
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        err().print(f"wrote {path}", highlight=False, markup=False)


def write_text(path: Path | None, text: str) -> None:
    """Write `text` (Markdown, say) to `path` (if given) and say so on stderr."""
    if path is not None:
        path.write_text(text, encoding="utf-8")
        err().print(f"wrote {path}", highlight=False, markup=False)


def write_frame(frame: Any, path: Path) -> None:
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
        raise ConfigError(f"{path}: use a .parquet, .csv or .json file name")
    err().print(f"wrote {path}", highlight=False, markup=False)


def write_table(table: Any, path: Path) -> None:
    """Write an Arrow table as CSV or Parquet, chosen by the file name."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        pq.write_table(table, path)
    elif path.suffix.lower() == ".csv":
        pacsv.write_csv(table, path)
    else:
        raise ConfigError(f"--out {path}: use a .csv or .parquet file name")
    err().print(f"wrote {path}", highlight=False, markup=False)


DpEpsilonOption = Annotated[
    float | None,
    typer.Option(
        "--dp-epsilon",
        help="Release every count with user-level differential privacy under this total"
        " budget (e.g. 1; smaller is more private and noisier); per-user output is left out.",
        rich_help_panel="Privacy",
    ),
]


MinGroupUsersOption = Annotated[
    int | None,
    typer.Option(
        "--min-group-users",
        help="Leave out groups with fewer users than this (noisy counts under --dp-epsilon);"
        " 1 turns it off. Default 10 where a count table is released privately.",
        rich_help_panel="Privacy",
    ),
]


def release_config(dp_epsilon: float | None, min_group_users: int | None, default_k: int | None):
    """`--dp-epsilon` and `--min-group-users` as an `aggregates.ReleaseConfig`, or None when
    neither asks for a private release (`default_k` None: suppression only when asked)."""
    from ebbtide.aggregates import DEFAULT_MIN_GROUP_USERS, ReleaseConfig

    if dp_epsilon is not None and not dp_epsilon > 0:
        raise ConfigError(
            f"--dp-epsilon must be > 0, got {dp_epsilon:g}: pass a budget such as 1 (smaller"
            " is more private and noisier), or leave it out for true counts"
        )
    if min_group_users is not None and min_group_users < 1:
        raise ConfigError(
            f"--min-group-users must be at least 1, got {min_group_users}: 1 turns"
            f" suppression off, {DEFAULT_MIN_GROUP_USERS} is the default"
        )
    k = min_group_users if min_group_users is not None else default_k
    if dp_epsilon is None and k is None:
        return None
    return ReleaseConfig(epsilon=dp_epsilon, min_group_users=k or DEFAULT_MIN_GROUP_USERS)


MaxSecondsOption = Annotated[
    float, typer.Option(help="Training budget of the neural model, in seconds.")
]


def neural_budget(max_seconds: float) -> dict[str, float]:
    """`--max-seconds` as neural settings: two thirds for the point process, one third for
    the next-item head."""
    if not max_seconds > 0:
        raise ConfigError(f"--max-seconds {max_seconds}: use a positive number of seconds")
    return {"max_train_seconds": max_seconds * 2 / 3, "item_max_seconds": max_seconds / 3}
